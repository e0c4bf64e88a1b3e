//! Whole-replication benchmarks of domain scenarios. Results are in benches/README.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infersim_agents::network::{NetworkConfig, RoutingPolicy, run_network};
use infersim_agents::retraining::{RetrainingConfig, run_retraining};

/// `bloom-stochastic` stretched to one year (8760 h, about 4.9 million requests).
fn bloom_year() -> RetrainingConfig {
    let mut config = RetrainingConfig::bloom_stochastic();
    config.duration_s = 8760.0 * 3600.0;
    config
}

fn bloom_stochastic_year(c: &mut Criterion) {
    let config = bloom_year();
    let run = run_retraining(&config, 42, 0).unwrap();
    let mut group = c.benchmark_group("bloom_stochastic_8760h");
    group.sample_size(10);
    group.throughput(Throughput::Elements(run.events));
    group.bench_function("one_replication_one_core", |b| b.iter(|| black_box(run_retraining(&config, 42, 0).unwrap())));
    // Replications on two cores at once: with linear scaling, the time of one.
    group.throughput(Throughput::Elements(2 * run.events));
    group.bench_function("two_replications_two_cores", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> =
                    (0..2).map(|r| s.spawn(move || black_box(run_retraining(&bloom_year(), 42, r).unwrap()))).collect();
                handles.into_iter().for_each(|h| {
                    h.join().unwrap();
                });
            })
        })
    });
    group.finish();
}

/// `nineteen-contenders` (24 h, 19 nodes, about 250 000 queries) under each policy.
fn nineteen_contenders_day(c: &mut Criterion) {
    let mut group = c.benchmark_group("nineteen_contenders_24h");
    group.sample_size(10);
    for policy in RoutingPolicy::ALL {
        let config = NetworkConfig {
            routing: infersim_agents::network::Routing { policy, ..NetworkConfig::nineteen_contenders().routing },
            ..NetworkConfig::nineteen_contenders()
        };
        let run = run_network(&config, 42, 0).unwrap();
        group.throughput(Throughput::Elements(run.events));
        let name = format!("{policy:?}");
        group.bench_function(name, |b| b.iter(|| black_box(run_network(&config, 42, 0).unwrap())));
    }
    group.finish();
}

/// The same network at the scale of a full subnet: 13 times the nodes (247) and the load.
fn nineteen_contenders_247_nodes(c: &mut Criterion) {
    let mut group = c.benchmark_group("nineteen_contenders_247_nodes_2h");
    group.sample_size(10);
    for policy in [RoutingPolicy::LeastProcessed, RoutingPolicy::JoinShortestQueue, RoutingPolicy::DecayedScore] {
        let mut config = NetworkConfig::nineteen_contenders();
        config.routing.policy = policy;
        config.duration_s = 2.0 * 3600.0;
        for class in &mut config.node_classes {
            class.count *= 13;
        }
        for task in &mut config.tasks {
            task.organic_per_s *= 13.0;
            task.synthetic_per_s *= 13.0;
            task.start_h = 1.0;
        }
        let run = run_network(&config, 42, 0).unwrap();
        group.throughput(Throughput::Elements(run.events));
        group.bench_function(format!("{policy:?}"), |b| b.iter(|| black_box(run_network(&config, 42, 0).unwrap())));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(20));
    targets = bloom_stochastic_year, nineteen_contenders_day, nineteen_contenders_247_nodes
}
criterion_main!(benches);
