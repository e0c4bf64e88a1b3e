//! The practical limit the engine is measured against: a bare, hand-written
//! `BinaryHeap` M/M/c loop with no model trait, no context and no event-list
//! abstraction, drawing the same random numbers in the same order as the engine's
//! station and computing the same statistics. `tests/` checks that both give
//! bit-identical results, so the benchmarks compare equal work.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use infersim_agents::station::{ARRIVAL_STREAM, SERVICE_STREAM};
use infersim_engine::stats::{DurationSum, LatencyHistogram, Occupancy};
use infersim_engine::{SimDuration, SimTime, derive_stream};
use rand_distr::{Distribution, Exp};

/// What the bare loop measures (a subset of the station's measures).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BareRun {
    /// Mean time in queue (s).
    pub wait_s: f64,
    /// Mean time in system (s).
    pub sojourn_s: f64,
    /// Time-average queue length.
    pub queue_len: f64,
    /// Time-average number in system.
    pub in_system: f64,
    /// Time-average fraction of servers busy.
    pub utilisation: f64,
    /// Fraction of customers that waited.
    pub p_wait: f64,
    /// 99th percentile of time in system (s).
    pub sojourn_p99_s: f64,
    /// Events handled.
    pub events: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Arrival,
    Departure(u32),
}

#[derive(Clone, Copy)]
struct Customer {
    index: u64,
    arrival: SimTime,
    service: SimDuration,
}

/// Runs M/M/c with `customers` arrivals, statistics from customer `warmup` on, on the
/// random streams of (`seed`, `replication`).
pub fn bare_mmc(
    arrival_rate_per_s: f64,
    service_rate_per_s: f64,
    servers: u32,
    customers: u64,
    warmup: u64,
    seed: u64,
    replication: u64,
) -> BareRun {
    let mut arrival_rng = derive_stream(seed, replication, ARRIVAL_STREAM);
    let mut service_rng = derive_stream(seed, replication, SERVICE_STREAM);
    let interarrival = Exp::new(arrival_rate_per_s).expect("positive rate");
    let service = Exp::new(service_rate_per_s).expect("positive rate");
    let secs = |s: f64| SimDuration::from_secs_f64(s).expect("finite sample");

    let mut heap: BinaryHeap<Reverse<(SimTime, u64, Kind)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut serving: Vec<Option<Customer>> = vec![None; servers as usize];
    let mut idle: Vec<u32> = (0..servers).rev().collect();
    let mut queue: VecDeque<Customer> = VecDeque::new();
    let (mut arrived, mut events) = (0u64, 0u64);
    let (mut wait, mut sojourn, mut hist) = (DurationSum::new(), DurationSum::new(), LatencyHistogram::new());
    // Customers waiting and servers busy, integrated from each wait and each service.
    let (mut waiting, mut busy) = (Occupancy::new(SimTime::ZERO), Occupancy::new(SimTime::ZERO));
    let mut waited = 0u64;

    heap.push(Reverse((SimTime::ZERO + secs(interarrival.sample(&mut arrival_rng)), seq, Kind::Arrival)));
    seq += 1;
    while let Some(Reverse((now, _, kind))) = heap.pop() {
        events += 1;
        match kind {
            Kind::Arrival => {
                let index = arrived;
                arrived += 1;
                if index == warmup {
                    (waiting, busy) = (Occupancy::new(now), Occupancy::new(now));
                }
                let c = Customer { index, arrival: now, service: secs(service.sample(&mut service_rng)) };
                match idle.pop() {
                    Some(s) => {
                        if index >= warmup {
                            wait.add(SimDuration::ZERO);
                        }
                        heap.push(Reverse((now + c.service, seq, Kind::Departure(s))));
                        seq += 1;
                        serving[s as usize] = Some(c);
                    }
                    None => queue.push_back(c),
                }
                if arrived < customers {
                    heap.push(Reverse((now + secs(interarrival.sample(&mut arrival_rng)), seq, Kind::Arrival)));
                    seq += 1;
                } else {
                    waiting.close(now);
                    busy.close(now);
                }
            }
            Kind::Departure(s) => {
                let done = serving[s as usize].take().expect("busy server");
                busy.add(now - done.service, now);
                if done.index >= warmup {
                    let d = now - done.arrival;
                    sojourn.add(d);
                    hist.record(d);
                }
                match queue.pop_front() {
                    Some(next) => {
                        waiting.add(next.arrival, now);
                        if next.index >= warmup {
                            let w = now - next.arrival;
                            wait.add(w);
                            waited += u64::from(w > SimDuration::ZERO);
                        }
                        heap.push(Reverse((now + next.service, seq, Kind::Departure(s))));
                        seq += 1;
                        serving[s as usize] = Some(next);
                    }
                    None => idle.push(s),
                }
            }
        }
    }
    let queue_len = waiting.mean().unwrap_or(0.0);
    let busy = busy.mean().unwrap_or(0.0);
    BareRun {
        wait_s: wait.mean_s().unwrap_or(0.0),
        sojourn_s: sojourn.mean_s().unwrap_or(0.0),
        queue_len,
        in_system: queue_len + busy,
        utilisation: busy / f64::from(servers),
        p_wait: waited as f64 / sojourn.count() as f64,
        sojourn_p99_s: hist.p99_s().unwrap_or(0.0),
        events,
    }
}
