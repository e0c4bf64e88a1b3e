//! The adapter's planning problem, solved exactly.
//!
//! Per stage choose a variant v, a batch size b (a power of two up to a cap) and a
//! replica count r to maximise
//!
//! ```text
//! alpha x sum acc(v) - beta x sum r x cores - gamma x sum b - delta x sum energy(v, b)
//! ```
//!
//! subject to `sum over stages of l(b) + (b - 1) / lambda <= SLA` and
//! `r x h(b) >= lambda` for every stage, with h(b) = b / l(b) and energy(v, b) the
//! joules one input costs (busy power x l(b) / b). Replicas cost, so each stage takes
//! the fewest that carry the load; what remains is a choice of (v, b) per stage under
//! one shared latency budget, enumerated depth first with two bounds: the best value
//! the remaining stages could still add, and the least latency they need.

use super::profile::Stage;

/// The weights of the objective.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Objective {
    /// Weight of normalised accuracy.
    pub alpha: f64,
    /// Weight of cores (replicas x cores per replica).
    pub beta: f64,
    /// Weight of batch size.
    pub gamma: f64,
    /// Weight of energy per input (J).
    pub delta: f64,
}

/// The limits every plan must respect and the constants it is priced with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// End-to-end latency objective (s).
    pub sla_s: f64,
    /// Largest batch size (batches are powers of two up to it).
    pub batch_cap: u32,
    /// Most replicas of one stage.
    pub max_replicas: u32,
    /// Cores of one replica.
    pub cores_per_replica: f64,
    /// Power of a busy replica (W).
    pub busy_w: f64,
}

/// What one stage runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StagePlan {
    /// Variant index in the stage's profile.
    pub variant: usize,
    /// Batch size.
    pub batch: u32,
    /// Replicas.
    pub replicas: u32,
}

/// A whole pipeline's plan with its objective value and latency.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// One entry per stage.
    pub stages: Vec<StagePlan>,
    /// The objective.
    pub value: f64,
    /// sum of l(b) + (b - 1) / lambda (s).
    pub latency_s: f64,
    /// Whether it meets the SLA and the load; an infeasible plan is the adapter's best
    /// effort when nothing does.
    pub feasible: bool,
}

/// One candidate (v, b) of a stage, with what it adds.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    plan: StagePlan,
    value: f64,
    latency_s: f64,
}

/// Batch sizes allowed: powers of two up to `cap`.
pub(crate) fn batch_sizes(cap: u32) -> impl Iterator<Item = u32> {
    (0..32).map(|k| 1u32 << k).take_while(move |&b| b <= cap.max(1))
}

/// Time to fill a batch of `b` at `lambda` per second: (b - 1) / lambda.
fn fill_s(b: u32, lambda: f64) -> f64 {
    if b <= 1 {
        0.0
    } else if lambda > 0.0 {
        f64::from(b - 1) / lambda
    } else {
        f64::INFINITY
    }
}

/// Cores and busy power of one replica of variant `v`, and its most replicas: its own
/// where it has them, else the limits'.
fn replica_terms(stage: &Stage, v: usize, limits: &Limits) -> (f64, f64, u32) {
    stage.variants[v].replica.map_or((limits.cores_per_replica, limits.busy_w, limits.max_replicas), |r| {
        (r.cores, r.busy_w, r.max_replicas.min(limits.max_replicas))
    })
}

/// The objective value and latency of variant `v` at batch `b` in `stage`, with the
/// fewest replicas that carry `lambda`; none if even `max_replicas` cannot.
pub(crate) fn stage_terms(
    stage: &Stage,
    v: usize,
    b: u32,
    lambda: f64,
    objective: &Objective,
    limits: &Limits,
) -> Option<(StagePlan, f64, f64)> {
    let bf = f64::from(b);
    let l = stage.latency_s(v, bf);
    let needed = (lambda * l / bf).ceil().max(1.0);
    let (cores, busy_w, max_replicas) = replica_terms(stage, v, limits);
    if needed > f64::from(max_replicas) {
        return None;
    }
    let replicas = needed as u32;
    let energy_j = busy_w * l / bf;
    let value = objective.alpha * stage.normalised_accuracy[v]
        - objective.beta * f64::from(replicas) * cores
        - objective.gamma * bf
        - objective.delta * energy_j;
    Some((StagePlan { variant: v, batch: b, replicas }, value, l + fill_s(b, lambda)))
}

fn candidates(stage: &Stage, lambda: f64, objective: &Objective, limits: &Limits) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = (0..stage.variants.len())
        .flat_map(|v| batch_sizes(limits.batch_cap).map(move |b| (v, b)))
        .filter_map(|(v, b)| stage_terms(stage, v, b, lambda, objective, limits))
        .filter(|(_, _, latency)| latency.is_finite())
        .map(|(plan, value, latency_s)| Candidate { plan, value, latency_s })
        .collect();
    // Best value first; ties: less latency, then fewer replicas, then profile order.
    out.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then(a.latency_s.total_cmp(&b.latency_s))
            .then((a.plan.variant, a.plan.batch).cmp(&(b.plan.variant, b.plan.batch)))
    });
    out
}

/// Whether plan `a` beats plan `b`: more value; ties broken by less latency, then by
/// the stages' (variant, batch) in order. Shared by the solver and the brute force.
fn better(a: (f64, f64, &[StagePlan]), b: (f64, f64, &[StagePlan])) -> bool {
    let key = |p: &[StagePlan]| p.iter().map(|s| (s.variant, s.batch)).collect::<Vec<_>>();
    match a.0.total_cmp(&b.0) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match a.1.total_cmp(&b.1) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => key(a.2) < key(b.2),
        },
    }
}

/// The best feasible plan for load `lambda`, or, if none is feasible, the plan with
/// the least latency among those that carry the load (else the fastest variants at
/// the largest batch and most replicas), marked infeasible.
pub fn solve(stages: &[Stage], lambda: f64, objective: &Objective, limits: &Limits) -> Plan {
    let options: Vec<Vec<Candidate>> = stages.iter().map(|s| candidates(s, lambda, objective, limits)).collect();
    let n = stages.len();
    // Bounds over the stages still to choose: best value, least latency.
    let mut best_rest = vec![0.0; n + 1];
    let mut least_rest = vec![0.0; n + 1];
    for i in (0..n).rev() {
        best_rest[i] = best_rest[i + 1] + options[i].first().map_or(f64::NEG_INFINITY, |c| c.value);
        least_rest[i] = least_rest[i + 1] + options[i].iter().map(|c| c.latency_s).fold(f64::INFINITY, f64::min);
    }
    let mut best: Option<(f64, f64, Vec<StagePlan>)> = None;
    let mut chosen = Vec::with_capacity(n);
    search(&options, limits.sla_s, &best_rest, &least_rest, 0, 0.0, 0.0, &mut chosen, &mut best);
    match best {
        Some((value, latency_s, stages)) => Plan { stages, value, latency_s, feasible: true },
        None => fallback(stages, lambda, objective, limits, &options),
    }
}

#[allow(clippy::too_many_arguments)]
fn search(
    options: &[Vec<Candidate>],
    sla_s: f64,
    best_rest: &[f64],
    least_rest: &[f64],
    stage: usize,
    value: f64,
    latency_s: f64,
    chosen: &mut Vec<StagePlan>,
    best: &mut Option<(f64, f64, Vec<StagePlan>)>,
) {
    if stage == options.len() {
        if best.as_ref().is_none_or(|b| better((value, latency_s, chosen), (b.0, b.1, &b.2))) {
            *best = Some((value, latency_s, chosen.clone()));
        }
        return;
    }
    for c in &options[stage] {
        // Options are sorted by value: once even the best completion cannot beat the
        // incumbent, neither can anything after this one.
        if let Some(b) = best
            && value + c.value + best_rest[stage + 1] < b.0
        {
            return;
        }
        if latency_s + c.latency_s + least_rest[stage + 1] > sla_s {
            continue;
        }
        chosen.push(c.plan);
        search(
            options,
            sla_s,
            best_rest,
            least_rest,
            stage + 1,
            value + c.value,
            latency_s + c.latency_s,
            chosen,
            best,
        );
        chosen.pop();
    }
}

fn fallback(stages: &[Stage], lambda: f64, objective: &Objective, limits: &Limits, options: &[Vec<Candidate>]) -> Plan {
    let mut plans = Vec::with_capacity(stages.len());
    let (mut value, mut latency_s) = (0.0, 0.0);
    for (i, stage) in stages.iter().enumerate() {
        let pick = options[i].iter().min_by(|a, b| a.latency_s.total_cmp(&b.latency_s)).copied().unwrap_or_else(|| {
            // Nothing carries the load: the highest throughput there is, at full size.
            let (v, b) = (0..stage.variants.len())
                .flat_map(|v| batch_sizes(limits.batch_cap).map(move |b| (v, b)))
                .max_by(|x, y| capacity(stage, limits, *x).total_cmp(&capacity(stage, limits, *y)))
                .expect("a stage has variants");
            let l = stage.latency_s(v, f64::from(b));
            let (cores, busy_w, max_replicas) = replica_terms(stage, v, limits);
            let plan = StagePlan { variant: v, batch: b, replicas: max_replicas };
            let value = objective.alpha * stage.normalised_accuracy[v]
                - objective.beta * f64::from(max_replicas) * cores
                - objective.gamma * f64::from(b)
                - objective.delta * busy_w * l / f64::from(b);
            Candidate { plan, value, latency_s: l + fill_s(b, lambda).min(limits.sla_s) }
        });
        plans.push(pick.plan);
        value += pick.value;
        latency_s += pick.latency_s;
    }
    Plan { stages: plans, value, latency_s, feasible: false }
}

/// What variant `v` at batch `b` serves at most: one replica's throughput, times its
/// most replicas where variants have their own (where they share the limits', the
/// throughput alone orders them the same).
fn capacity(stage: &Stage, limits: &Limits, (v, b): (usize, u32)) -> f64 {
    let throughput = stage.throughput_per_s(v, f64::from(b));
    match stage.variants[v].replica {
        Some(_) => throughput * f64::from(replica_terms(stage, v, limits).2),
        None => throughput,
    }
}

/// Every combination, for tests: the best feasible plan by the same tie rule.
pub fn brute_force(stages: &[Stage], lambda: f64, objective: &Objective, limits: &Limits) -> Option<Plan> {
    let options: Vec<Vec<Candidate>> = stages.iter().map(|s| candidates(s, lambda, objective, limits)).collect();
    let mut best: Option<(f64, f64, Vec<StagePlan>)> = None;
    let mut index = vec![0usize; stages.len()];
    if options.iter().any(Vec::is_empty) {
        return None;
    }
    loop {
        let picks: Vec<&Candidate> = index.iter().enumerate().map(|(s, &i)| &options[s][i]).collect();
        let value: f64 = picks.iter().map(|c| c.value).sum();
        let latency_s: f64 = picks.iter().map(|c| c.latency_s).sum();
        let plans: Vec<StagePlan> = picks.iter().map(|c| c.plan).collect();
        if latency_s <= limits.sla_s
            && best.as_ref().is_none_or(|b| better((value, latency_s, &plans), (b.0, b.1, &b.2)))
        {
            best = Some((value, latency_s, plans));
        }
        // Next combination (odometer).
        let mut s = 0;
        loop {
            if s == index.len() {
                return best.map(|(value, latency_s, stages)| Plan { stages, value, latency_s, feasible: true });
            }
            index[s] += 1;
            if index[s] < options[s].len() {
                break;
            }
            index[s] = 0;
            s += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptation::profile::{ReplicaCost, Variant};
    use infersim_engine::{StreamId, derive_stream};
    use rand::RngExt;

    pub(crate) fn video_stages() -> Vec<Stage> {
        crate::pipeline::PipelineConfig::video().stages
    }

    fn limits(sla_s: f64) -> Limits {
        Limits { sla_s, batch_cap: 64, max_replicas: 32, cores_per_replica: 1.0, busy_w: 30.0 }
    }

    /// Variants that carry their own replica cost are priced and bounded by it: the
    /// accurate one (4 cores a replica, at most 2) is chosen while 2 replicas carry
    /// the load, and no longer once 3 would be needed, though the limits allow 32.
    #[test]
    fn a_variant_s_own_replicas_price_and_bound_it() {
        // Latency 1 s at any batch: throughput b per replica.
        let flat = |name: &str, accuracy: f64, cores: f64, max_replicas: u32| Variant {
            name: name.into(),
            accuracy,
            points: vec![(1.0, 1.0), (2.0, 1.0), (4.0, 1.0)],
            replica: Some(ReplicaCost { cores, busy_w: 100.0, max_replicas }),
        };
        let stage = Stage::new("s", vec![flat("small", 1.0, 1.0, 8), flat("large", 2.0, 4.0, 2)]).unwrap();
        let objective = Objective { alpha: 1.0, beta: 0.01, gamma: 0.0, delta: 0.0 };
        let l = Limits { sla_s: 10.0, batch_cap: 1, max_replicas: 32, cores_per_replica: 1.0, busy_w: 0.0 };
        let plan = solve(std::slice::from_ref(&stage), 2.0, &objective, &l);
        assert_eq!(plan.stages[0], StagePlan { variant: 1, batch: 1, replicas: 2 });
        assert!((plan.value - (1.0 - 0.01 * 2.0 * 4.0)).abs() < 1e-12);
        let plan = solve(std::slice::from_ref(&stage), 3.0, &objective, &l);
        assert_eq!(plan.stages[0], StagePlan { variant: 0, batch: 1, replicas: 3 });
    }

    #[test]
    fn the_issue_s_objective_values() {
        let stages = video_stages();
        let unit = Objective { alpha: 1.0, beta: 1.0, gamma: 1.0, delta: 0.0 };
        let l = limits(100.0);
        // One core, one replica, batch 1 on both stages (lambda low enough for one
        // replica): yolov5n + resnet18 scores accuracy 0 and objective -4.
        let lambda = 0.1;
        let smallest: f64 = stages.iter().map(|s| stage_terms(s, 0, 1, lambda, &unit, &l).unwrap().1).sum();
        assert_eq!(smallest, -4.0);
        let largest: f64 = stages.iter().map(|s| stage_terms(s, 4, 1, lambda, &unit, &l).unwrap().1).sum();
        assert_eq!(largest, 2.0 - 4.0, "yolov5x + resnet152: accuracy 2");
        let accuracy = |v: usize| stages.iter().map(|s| s.normalised_accuracy[v]).sum::<f64>();
        assert_eq!((accuracy(0), accuracy(4)), (0.0, 2.0));
    }

    fn random_stage(rng: &mut infersim_engine::SimRng, name: &str) -> Stage {
        let variants = (0..rng.random_range(1..5usize))
            .map(|v| {
                let c0 = 0.01 + rng.random::<f64>() * 0.3;
                let c1 = 0.001 + rng.random::<f64>() * 0.05;
                let points = [1.0, 2.0, 8.0, 32.0].iter().map(|&b| (b, c0 + c1 * b)).collect();
                Variant { name: format!("{name}{v}"), accuracy: rng.random::<f64>() * 100.0, points, replica: None }
            })
            .collect();
        Stage::new(name, variants).unwrap()
    }

    #[test]
    fn the_solver_equals_brute_force_on_random_small_instances() {
        let mut rng = derive_stream(5, 0, StreamId(0));
        let (mut feasible, mut infeasible) = (0, 0);
        for case in 0..400 {
            let stages: Vec<Stage> =
                (0..rng.random_range(1..4usize)).map(|s| random_stage(&mut rng, &format!("s{s}"))).collect();
            let objective = Objective {
                alpha: rng.random::<f64>() * 10.0,
                beta: rng.random::<f64>(),
                gamma: rng.random::<f64>() * 0.1,
                delta: rng.random::<f64>() * 0.5,
            };
            let l = Limits {
                sla_s: 0.1 + rng.random::<f64>() * 3.0,
                batch_cap: 1 << rng.random_range(0..7u32),
                max_replicas: rng.random_range(1..20u32),
                cores_per_replica: 1.0 + f64::from(rng.random_range(0..4u32)),
                busy_w: 10.0 + rng.random::<f64>() * 100.0,
            };
            let lambda = rng.random::<f64>() * 200.0;
            let plan = solve(&stages, lambda, &objective, &l);
            match brute_force(&stages, lambda, &objective, &l) {
                Some(exact) => {
                    feasible += 1;
                    assert_eq!(plan, exact, "case {case}");
                    // The constraints hold.
                    assert!(plan.latency_s <= l.sla_s);
                    for (s, p) in stages.iter().zip(&plan.stages) {
                        assert!(
                            f64::from(p.replicas) * s.throughput_per_s(p.variant, f64::from(p.batch)) >= lambda - 1e-9
                        );
                        assert!(p.replicas <= l.max_replicas && p.batch <= l.batch_cap);
                    }
                }
                None => {
                    infeasible += 1;
                    assert!(!plan.feasible, "case {case}");
                }
            }
        }
        assert!(feasible > 100 && infeasible > 20, "both kinds covered: {feasible} / {infeasible}");
    }

    #[test]
    fn more_weight_on_energy_never_raises_energy_per_input() {
        let stages = video_stages();
        let l = limits(3.0);
        let energy = |delta: f64| {
            let plan = solve(&stages, 8.0, &Objective { alpha: 1.0, beta: 0.02, gamma: 0.001, delta }, &l);
            assert!(plan.feasible);
            stages
                .iter()
                .zip(&plan.stages)
                .map(|(s, p)| s.latency_s(p.variant, f64::from(p.batch)) / f64::from(p.batch))
                .sum::<f64>()
        };
        let values: Vec<f64> = [0.0, 0.01, 0.1, 1.0, 10.0].iter().map(|&d| energy(d)).collect();
        assert!(values.windows(2).all(|w| w[1] <= w[0] + 1e-12), "{values:?}");
        assert!(values[4] < values[0], "{values:?}");
    }
}
