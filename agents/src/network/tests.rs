use super::*;
use crate::scoring::HistoryRow;
use infersim_engine::VecObserver;

const HOUR: f64 = 3600.0;

type Traced = Simulation<Network<VecObserver<NetworkQuery>, VecObserver<NetworkPeriod>>>;

fn traced(config: &NetworkConfig, seed: u64, rep: u64) -> Traced {
    build_network(config, VecObserver::default(), Some(VecObserver::default()), seed, rep).unwrap()
}

fn run_traced(config: &NetworkConfig, seed: u64, rep: u64) -> (NetworkRun, Vec<NetworkQuery>, Vec<NetworkPeriod>) {
    let mut sim = traced(config, seed, rep);
    let run = finish_network(&mut sim).unwrap();
    let (queries, periods) = sim.into_model().into_observers();
    (run, queries.rows, periods.unwrap().rows)
}

/// One node class serving one task, for the analytic checks.
fn single_node(slots: u32, capacity: u32, reliability: f64, rate_per_s: f64, work_s: f64) -> NetworkConfig {
    let mut config = NetworkConfig::example();
    config.tasks.truncate(1);
    config.tasks[0].organic_per_s = rate_per_s;
    config.tasks[0].synthetic_per_s = 0.0;
    config.tasks[0].work_s = work_s;
    config.tasks[0].work_cv = 1.0;
    config.similarity.clear();
    config.node_classes.truncate(1);
    let class = &mut config.node_classes[0];
    class.count = 1;
    class.tasks.truncate(1);
    class.slots = slots;
    class.capacity = capacity;
    class.speed = [1.0, 1.0];
    class.reliability = [reliability, reliability];
    config.routing.top = 1;
    config
}

#[test]
fn with_no_history_decayed_score_routes_exactly_as_least_processed() {
    // Within the first period nobody has history: every query must go to the same
    // contenders under both policies.
    let mut config = NetworkConfig::example();
    config.duration_s = config.validator.period_s - 1.0;
    config.routing.policy = RoutingPolicy::LeastProcessed;
    let (_, least, _) = run_traced(&config, 3, 0);
    config.routing.policy = RoutingPolicy::DecayedScore;
    let (_, decayed, _) = run_traced(&config, 3, 0);
    assert!(least.len() > 1000, "{} queries", least.len());
    assert_eq!(least, decayed);
}

/// A world after its Start event: nodes and contenders exist, nothing has happened.
fn started(config: &NetworkConfig) -> Traced {
    let mut sim = traced(config, 1, 0);
    sim.step().unwrap();
    sim
}

fn contender_of(
    world: &Network<VecObserver<NetworkQuery>, VecObserver<NetworkPeriod>>,
    node: u32,
    task: u16,
) -> Id<Contender> {
    world.book.of_node(node).iter().copied().find(|&c| world.book[c].task == task).unwrap()
}

fn rank_of(ranks: &[(u32, f64)], c: Id<Contender>) -> f64 {
    ranks.iter().find(|(i, _)| *i == c.index()).unwrap().1
}

#[test]
fn hand_built_histories_give_the_formulas_values() {
    // Task 0 = 3b, task 1 = 70b, sim(70b -> 3b) = 0.5 and nothing else.
    let config = NetworkConfig::example();
    let mut sim = started(&config);
    let world = sim.model_mut();
    let (a3, a70) = (contender_of(world, 0, 0), contender_of(world, 0, 1));
    let (b3, b70) = (contender_of(world, 1, 0), contender_of(world, 1, 1));
    let now = SimTime::from_secs_f64(HOUR).unwrap();
    // No history: rank = requests made.
    world.book[a3].period.requests = 100;
    assert_eq!(rank_of(&world.ranks_from_history(0, now), a3), 100.0);
    // One row scored 1.0 at age 1 h: iso 0.5, rank 100 - 25.
    world.book[a3].history.push_back(HistoryRow { at_s: 0.0, score: 1.0 });
    assert_eq!(rank_of(&world.ranks_from_history(0, now), a3), 75.0);
    // glob(70b) = 0.5 x iso(3b) on the same node, while 70b has no history of its own.
    assert_eq!(rank_of(&world.ranks_from_history(1, now), a70), -50.0 * 0.5 * 0.5);
    // 70b's history does not move glob(3b): sim(3b -> 70b) is missing, so 0.
    world.book[a70].history.push_back(HistoryRow { at_s: 0.0, score: 1.0 });
    assert_eq!(rank_of(&world.ranks_from_history(0, now), a3), 75.0);
    assert_eq!(rank_of(&world.ranks_from_history(1, now), a70), -50.0 * (0.5 + 0.5 * 0.5));
    // Contenders on another node add nothing.
    world.book[b3].history.push_back(HistoryRow { at_s: 0.0, score: 1.0 });
    world.book[b70].history.push_back(HistoryRow { at_s: 0.0, score: 1.0 });
    assert_eq!(rank_of(&world.ranks_from_history(1, now), a70), -50.0 * (0.5 + 0.5 * 0.5));
    assert_eq!(rank_of(&world.ranks_from_history(0, now), a3), 75.0);
    // Four rows 1..4 h old: iso 0.9375; with 100 requests made, rank 53.125.
    world.book[a3].history = (1..=4).map(|k| HistoryRow { at_s: HOUR * (5 - k) as f64 - HOUR, score: 1.0 }).collect();
    let at_4h = SimTime::from_secs_f64(4.0 * HOUR).unwrap();
    assert_eq!(rank_of(&world.ranks_from_history(0, at_4h), a3), 53.125);
    // And the cached ranks the policy uses agree.
    world.book.invalidate_globs();
    assert_eq!(rank_of(&world.ranks_cached(0, at_4h), a3), 53.125);
    // Beyond a day every row is gone.
    let later = SimTime::from_secs_f64(30.0 * HOUR).unwrap();
    assert_eq!(rank_of(&world.ranks_from_history(0, later), a3), 100.0);
}

#[test]
fn cached_ranks_equal_ranks_recomputed_from_history_all_run_long() {
    let mut config = NetworkConfig::example();
    config.duration_s = 30.0 * HOUR;
    config.validator.period_s = 700.0; // not a divisor of the window: rows expire mid-period
    let mut sim = traced(&config, 11, 0);
    let mut checked = 0;
    let mut t_s = 1234.5;
    while t_s < config.duration_s {
        let at = SimTime::from_secs_f64(t_s).unwrap();
        sim.run_until(at).unwrap();
        let world = sim.model_mut();
        for task in 0..2 {
            let exact = world.ranks_from_history(task, at);
            let cached = world.ranks_cached(task, at);
            assert_eq!(exact.len(), cached.len());
            for ((c, a), (d, b)) in exact.iter().zip(&cached) {
                assert_eq!(c, d);
                assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "t {t_s} s, contender {c}: {a} vs cached {b}");
            }
            checked += exact.len();
        }
        t_s += 977.3;
    }
    assert!(checked > 1000);
}

#[test]
fn declared_capacity_rate_limits_exactly_the_excess_of_each_period() {
    // Plenty of slots, perfect reliability: a period's 429s are its requests beyond 20.
    let config = single_node(1000, 20, 1.0, 0.1, 1.0);
    let (_, _, periods) = run_traced(&config, 5, 0);
    assert!(periods.len() >= 10);
    let mut excess_seen = false;
    for p in &periods {
        assert_eq!(p.rate_limited, p.requests.saturating_sub(20), "{p:?}");
        assert_eq!(p.failed, 0);
        excess_seen |= p.rate_limited > 0;
    }
    assert!(excess_seen, "the load exceeds the declared capacity in some period");
}

#[test]
fn slot_blocking_matches_erlang_b() {
    // One node with 4 slots, infinite declared capacity, one attempt per query: an
    // M/G/4/4 loss system, whose blocking is Erlang B(4, a) whatever the work's law.
    // 20 replications of 20 h at a = 3 erlangs; 99% interval.
    let (slots, rate, work_s) = (4, 1.5, 2.0);
    let mut config = single_node(slots, u32::MAX, 1.0, rate, work_s);
    config.duration_s = 20.0 * HOUR;
    let exact = crate::theory::erlang_b(slots, rate * work_s);
    let samples: Vec<f64> = (0..20).map(|rep| run_network(&config, 9, rep).unwrap().rate_429.unwrap()).collect();
    let ci = infersim_engine::stats::ConfidenceInterval::from_samples(&samples, 0.99).unwrap();
    assert!(ci.contains(exact), "Erlang B {exact} outside {ci:?}");
}

#[test]
fn unreliable_nodes_fail_their_share_of_requests() {
    let mut config = single_node(1000, u32::MAX, 0.7, 2.0, 0.5);
    config.duration_s = 10.0 * HOUR;
    let run = run_network(&config, 2, 0).unwrap();
    // 72,000 Bernoulli(0.3) draws: standard error 0.0017; allow 4 of them.
    let rate = run.rate_500.unwrap();
    assert!((rate - 0.3).abs() < 0.007, "{rate}");
    assert_eq!(run.rate_429, Some(0.0));
}

#[test]
fn the_same_seed_gives_the_same_run_and_trace() {
    let mut config = NetworkConfig::example();
    config.node_classes[0].leave_per_h = 0.2;
    config.node_classes[1].join_per_h = 1.0;
    let a = run_traced(&config, 17, 3);
    let b = run_traced(&config, 17, 3);
    assert_eq!(a, b);
    let c = run_traced(&config, 17, 4);
    assert_ne!(a.0, c.0);
}

#[test]
fn nodes_and_their_churn_are_common_to_every_policy() {
    let mut config = NetworkConfig::example();
    config.node_classes[0].leave_per_h = 0.3;
    config.node_classes[2].join_per_h = 2.0;
    let mut nodes = |policy| {
        config.routing.policy = policy;
        let mut sim = traced(&config, 23, 1);
        finish_network(&mut sim).unwrap();
        let world = sim.into_model();
        world
            .nodes
            .iter()
            .map(|(_, n)| (n.class, n.speed, n.quality, n.reliability, n.joined, n.left))
            .collect::<Vec<_>>()
    };
    let reference = nodes(RoutingPolicy::RoundRobin);
    assert!(reference.len() > 12, "some nodes joined");
    assert!(reference.iter().any(|n| n.5.is_some()), "some nodes left");
    for policy in RoutingPolicy::ALL {
        assert_eq!(nodes(policy), reference, "{policy:?}");
    }
}

#[test]
fn a_leaving_node_is_never_routed_to_again() {
    let mut config = NetworkConfig::example();
    config.events.push(ScheduledEvent { at_h: 1.0, action: NodeAction::Leave, class: "good".into(), count: 4 });
    for policy in RoutingPolicy::ALL {
        config.routing.policy = policy;
        let (run, queries, _) = run_traced(&config, 4, 0);
        assert_eq!(run.nodes_left, 4);
        let late_on_good = queries.iter().filter(|q| q.arrival_s > HOUR && q.class == Some(0)).count();
        assert_eq!(late_on_good, 0, "{policy:?}");
    }
}

#[test]
fn failed_nodes_answer_500_until_repaired() {
    let mut config = NetworkConfig::example();
    config.node_classes[2].reliability = [1.0, 1.0];
    config.events.push(ScheduledEvent { at_h: 0.5, action: NodeAction::Fail, class: "flaky".into(), count: 4 });
    config.node_classes[2].mttr_h = 1000.0;
    config.routing.policy = RoutingPolicy::RoundRobin;
    let (run, queries, _) = run_traced(&config, 8, 0);
    assert!(run.node_failures >= 4);
    // After the failure no query is answered by a flaky node; before it some were.
    let answered_by_flaky = |from: f64, to: f64| {
        queries
            .iter()
            .filter(|q| q.arrival_s > from && q.arrival_s < to)
            .filter(|q| q.class == Some(2) && q.outcome == QueryOutcome::Answered)
            .count()
    };
    assert!(answered_by_flaky(0.0, 0.5 * HOUR) > 100);
    assert_eq!(answered_by_flaky(0.5 * HOUR + 60.0, 2.0 * HOUR), 0);
    assert!(run.rate_500.unwrap() > 0.1);
}

#[test]
fn decayed_score_delivers_better_quality_than_least_processed() {
    // Common random numbers: the same seeds for both policies; 10 replications.
    let mut config = NetworkConfig::example();
    let mut diffs = Vec::new();
    for rep in 0..10 {
        config.routing.policy = RoutingPolicy::LeastProcessed;
        let least = run_network(&config, 31, rep).unwrap();
        config.routing.policy = RoutingPolicy::DecayedScore;
        let decayed = run_network(&config, 31, rep).unwrap();
        assert!(decayed.share_poor.unwrap() < least.share_poor.unwrap());
        diffs.push(decayed.quality_mean.unwrap() - least.quality_mean.unwrap());
    }
    let ci = infersim_engine::stats::ConfidenceInterval::from_samples(&diffs, 0.99).unwrap();
    assert!(ci.low > 0.0, "quality gain {ci:?}");
}

#[test]
fn a_late_similar_task_starts_warm_under_decayed_score_only() {
    let mut config = NetworkConfig::example();
    config.duration_s = 4.0 * HOUR;
    let mut late = config.tasks[0].clone();
    late.name = "chat-llama-3-1-8b".into();
    late.start_h = 2.0;
    config.tasks.push(late);
    for class in &mut config.node_classes {
        class.tasks.push("chat-llama-3-1-8b".into());
    }
    config.similarity.push(Similarity { from: "chat-llama-3-1-8b".into(), to: "chat-llama-3-2-3b".into(), value: 0.8 });
    config.routing.policy = RoutingPolicy::DecayedScore;
    let t0 = std::time::Instant::now();
    let warm = run_network(&config, 41, 0).unwrap().cold_start_h;
    eprintln!("one run {:?}", t0.elapsed());
    config.similarity.pop();
    let cold = run_network(&config, 41, 0).unwrap().cold_start_h;
    config.routing.policy = RoutingPolicy::LeastProcessed;
    let least = run_network(&config, 41, 0).unwrap().cold_start_h;
    eprintln!("warm {warm:?} cold {cold:?} least {least:?}");
    // Similarity lends the new task its node's history: it concentrates on good nodes
    // sooner than it does from its own history alone; least-processed never does.
    assert!(warm.is_some_and(|w| cold.is_none_or(|c| w < c)), "{warm:?} vs {cold:?}");
    assert_eq!(least, None);
}

#[test]
fn energy_aware_routing_spends_less_energy_per_query_than_round_robin() {
    let mut config = NetworkConfig::example();
    // Classes differ in busy power: the poor class is the most frugal, the flaky the
    // hungriest.
    config.node_classes[0].busy_w = 300.0;
    config.node_classes[1].busy_w = 150.0;
    config.node_classes[2].busy_w = 600.0;
    config.routing.policy = RoutingPolicy::RoundRobin;
    let rr = run_network(&config, 13, 0).unwrap();
    config.routing.policy = RoutingPolicy::EnergyAware;
    let ea = run_network(&config, 13, 0).unwrap();
    assert!(
        ea.energy_per_query_kwh.unwrap() < 0.9 * rr.energy_per_query_kwh.unwrap(),
        "{:?} vs {:?}",
        ea.energy_per_query_kwh,
        rr.energy_per_query_kwh
    );
    assert!(ea.slo_attainment.unwrap() > 0.95);
}

#[test]
fn every_policy_runs_and_accounts_every_request() {
    let config = NetworkConfig::example();
    for policy in RoutingPolicy::ALL {
        let mut config = config.clone();
        config.routing.policy = policy;
        let (run, queries, periods) = run_traced(&config, 6, 0);
        let requests: u64 = queries.iter().map(|q| u64::from(q.attempts)).sum();
        // Requests of queries still in flight at the end are not in the trace.
        assert!(run.requests >= requests && run.requests - requests < 200, "{policy:?}");
        let period_requests: u64 = periods.iter().map(|p| p.requests).sum();
        assert!(period_requests <= run.requests);
        let shares = run.share_good.unwrap() + run.share_poor.unwrap() + run.share_flaky.unwrap();
        assert!((shares - 1.0).abs() < 1e-12);
        assert!(run.answer_rate.unwrap() > 0.95, "{policy:?}: {:?}", run.answer_rate);
        assert_eq!(run.organic_queries + run.synthetic_queries, queries.len() as u64);
    }
}

#[test]
fn bad_values_are_named_by_key() {
    let mut config = NetworkConfig::example();
    config.node_classes[1].tasks.push("nope".into());
    let e = config.validate().unwrap_err();
    assert_eq!(e.key(), "node_classes[1].tasks[2]");
    let mut config = NetworkConfig::example();
    config.similarity[0].value = 1.5;
    assert_eq!(config.validate().unwrap_err().key(), "similarity[0].value");
    let mut config = NetworkConfig::example();
    config.node_classes[0].quality = [0.9, 0.8];
    assert_eq!(config.validate().unwrap_err().key(), "node_classes[0].quality");
}

#[test]
fn rank_queues_and_scans_route_identically() {
    // 66 contenders per task: above RANK_QUEUE_MIN_CONTENDERS, so the queues are used
    // by default; a second run forced to scan must route every query the same way.
    let mut config = NetworkConfig::example();
    config.duration_s = 1.5 * HOUR;
    for class in &mut config.node_classes {
        class.count = 22;
        class.leave_per_h = 0.5;
        class.join_per_h = 2.0;
    }
    assert!(config.initial_contenders_per_task() >= RANK_QUEUE_MIN_CONTENDERS);
    for policy in [RoutingPolicy::LeastProcessed, RoutingPolicy::JoinShortestQueue] {
        config.routing.policy = policy;
        let queued = run_traced(&config, 12, 0);
        let mut sim = traced(&config, 12, 0);
        assert!(sim.model().ranks.is_some(), "queues by default at this size");
        sim.model_mut().ranks = None;
        let run = finish_network(&mut sim).unwrap();
        let (queries, periods) = sim.into_model().into_observers();
        assert!(queued.1.len() > 10_000);
        assert_eq!(queued, (run, queries.rows, periods.unwrap().rows), "{policy:?}");
    }
}
