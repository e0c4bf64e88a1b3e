//! Closed-form results of queueing theory, against which the station (and any world
//! that reduces to a queue) is validated.
//!
//! Notation: arrival rate lambda, service rate mu per server, c servers, offered load
//! a = lambda / mu (Erlangs), utilisation rho = a / c.

/// Steady-state measures of a queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueMeasures {
    /// Mean time in queue, Wq.
    pub wait_s: f64,
    /// Mean time in system, W = Wq + 1/mu.
    pub sojourn_s: f64,
    /// Time-average number in queue, Lq = lambda Wq.
    pub queue_len: f64,
    /// Time-average number in system, L = lambda W.
    pub in_system: f64,
    /// Probability that an arrival waits.
    pub p_wait: f64,
}

/// Erlang B: the blocking probability of M/M/c/c (and M/G/c/c) with offered load
/// `a` Erlangs, by the stable recursion B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)).
pub fn erlang_b(servers: u32, offered_erlangs: f64) -> f64 {
    (1..=servers).fold(1.0, |b, k| offered_erlangs * b / (f64::from(k) + offered_erlangs * b))
}

/// Erlang C: the probability that an arrival waits in M/M/c; `None` unless rho < 1.
pub(crate) fn erlang_c(servers: u32, offered_erlangs: f64) -> Option<f64> {
    let c = f64::from(servers);
    let rho = offered_erlangs / c;
    if servers == 0 || !(0.0..1.0).contains(&rho) {
        return None;
    }
    let b = erlang_b(servers, offered_erlangs);
    Some(b / (1.0 - rho * (1.0 - b)))
}

/// M/M/c (M/M/1 when `servers` = 1); `None` unless the queue is stable (rho < 1).
pub fn mmc(arrival_rate_per_s: f64, service_rate_per_s: f64, servers: u32) -> Option<QueueMeasures> {
    let a = arrival_rate_per_s / service_rate_per_s;
    let p_wait = erlang_c(servers, a)?;
    let wait_s = p_wait / (f64::from(servers) * service_rate_per_s - arrival_rate_per_s);
    Some(measures(arrival_rate_per_s, service_rate_per_s, wait_s, p_wait))
}

/// M/D/1 by Pollaczek-Khinchine: Wq = rho / (2 mu (1 - rho)); `None` unless rho < 1.
pub fn md1(arrival_rate_per_s: f64, service_s: f64) -> Option<QueueMeasures> {
    mg1(arrival_rate_per_s, service_s, 0.0)
}

/// M/G/1 by Pollaczek-Khinchine with mean service `service_s` and coefficient of
/// variation `service_cv`: Wq = lambda E[S^2] / (2 (1 - rho)); `None` unless rho < 1.
pub fn mg1(arrival_rate_per_s: f64, service_s: f64, service_cv: f64) -> Option<QueueMeasures> {
    let rho = arrival_rate_per_s * service_s;
    if !(0.0..1.0).contains(&rho) {
        return None;
    }
    let second_moment = service_s * service_s * (1.0 + service_cv * service_cv);
    let wait_s = arrival_rate_per_s * second_moment / (2.0 * (1.0 - rho));
    Some(measures(arrival_rate_per_s, 1.0 / service_s, wait_s, rho))
}

fn measures(lambda: f64, mu: f64, wait_s: f64, p_wait: f64) -> QueueMeasures {
    let sojourn_s = wait_s + 1.0 / mu;
    QueueMeasures { wait_s, sojourn_s, queue_len: lambda * wait_s, in_system: lambda * sojourn_s, p_wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_values() {
        // M/M/1 at rho = 0.8, mu = 1: Wq = 4, W = 5, Lq = 3.2, L = 4.
        let m = mmc(0.8, 1.0, 1).unwrap();
        assert!((m.wait_s - 4.0).abs() < 1e-12 && (m.sojourn_s - 5.0).abs() < 1e-12);
        assert!((m.queue_len - 3.2).abs() < 1e-12 && (m.in_system - 4.0).abs() < 1e-12);
        assert!((m.p_wait - 0.8).abs() < 1e-12);
        // Erlang B with 5 servers and 4 Erlangs: 0.19907 (standard tables).
        assert!((erlang_b(5, 4.0) - 0.199_067).abs() < 1e-6);
        // Erlang C with 2 servers and 1 Erlang: 1/3.
        assert!((erlang_c(2, 1.0).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // M/D/1 at rho = 0.7, mu = 1: Wq = 0.7 / 0.6.
        assert!((md1(0.7, 1.0).unwrap().wait_s - 0.7 / 0.6).abs() < 1e-12);
        // M/G/1 with cv = 1 is M/M/1.
        assert!((mg1(0.8, 1.0, 1.0).unwrap().wait_s - 4.0).abs() < 1e-12);
        assert_eq!(mmc(1.0, 1.0, 1), None);
    }
}
