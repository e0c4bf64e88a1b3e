//! Engine benchmarks: the classic hold model on both future-event lists, M/M/1 events
//! per second on both, the engine beside the bare loop on M/M/4 and M/M/1000, and the
//! round trip of two threads meeting.
//! Results and their reading are in benches/README.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infersim_agents::station::{StationConfig, build_station};
use infersim_benches::bare_mmc;
use infersim_engine::{
    EventQueue, HeapQueue, IndexedQueue, NullObserver, QueueKind, SimDuration, SimTime, StreamId, derive_stream,
};
use rand_distr::{Distribution, Exp};

/// Hold: pop the earliest event and push one at its time plus Exp(1): the queue size
/// stays at `pending` while the time distribution reaches its steady state.
fn hold<Q: EventQueue<u32> + Default>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    pending: usize,
) {
    const OPS: u64 = 100_000;
    let exp = Exp::new(1.0).unwrap();
    let mut rng = derive_stream(1, 0, StreamId(0));
    let mut queue = Q::default();
    for i in 0..pending {
        queue.push(SimTime::ZERO + SimDuration::from_secs_f64(exp.sample(&mut rng)).unwrap(), i as u32);
    }
    c.throughput(Throughput::Elements(OPS));
    c.bench_function(BenchmarkId::new(name, pending), |b| {
        b.iter(|| {
            for _ in 0..OPS {
                let s = queue.pop().unwrap();
                let dt = SimDuration::from_secs_f64(exp.sample(&mut rng)).unwrap();
                queue.push(s.time + dt, black_box(s.event));
            }
        })
    });
}

fn fel_hold(c: &mut Criterion) {
    let mut group = c.benchmark_group("hold");
    for pending in [1_000, 100_000] {
        hold::<HeapQueue<u32>>(&mut group, "binary_heap", pending);
        hold::<IndexedQueue<u32>>(&mut group, "priority_queue", pending);
    }
    group.finish();
}

fn station_events(config: &StationConfig, queue: QueueKind) -> u64 {
    let mut sim = build_station(config, NullObserver, queue, 42, 0).unwrap();
    sim.run(Default::default()).unwrap();
    black_box(sim.model().results(sim.events_handled()));
    sim.events_handled()
}

fn mm1(c: &mut Criterion) {
    let config = StationConfig::mmc(0.8, 1.0, 1, 200_000, 0);
    let events = station_events(&config, QueueKind::BinaryHeap);
    let mut group = c.benchmark_group("mm1_rho0.8");
    group.throughput(Throughput::Elements(events));
    group.bench_function("engine_binary_heap", |b| b.iter(|| station_events(&config, QueueKind::BinaryHeap)));
    group.bench_function("engine_priority_queue", |b| b.iter(|| station_events(&config, QueueKind::PriorityQueue)));
    group.finish();
}

fn engine_vs_bare(c: &mut Criterion) {
    for (name, lambda, servers, customers) in
        [("mm4_rho0.9", 3.6, 4u32, 200_000u64), ("mm1000_rho0.98", 980.0, 1000, 400_000)]
    {
        let config = StationConfig::mmc(lambda, 1.0, servers, customers, 0);
        let events = station_events(&config, QueueKind::BinaryHeap);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(events));
        group.bench_function("bare_loop", |b| b.iter(|| bare_mmc(lambda, 1.0, servers, customers, 0, 42, 0)));
        group.bench_function("engine", |b| b.iter(|| station_events(&config, QueueKind::BinaryHeap)));
        group.finish();
    }
}

/// Two threads meeting, each waiting for the other's step by spinning on one atomic:
/// the round trip a parallel event loop pays each time its halves meet (what it
/// would cost the fleet benchmark to meet at every arrival is in benches/README.md).
fn handoff(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    let mut group = c.benchmark_group("handoff");
    group.bench_function("round_trip", |b| {
        b.iter_custom(|trips| {
            // The main thread writes odd values, the other answers with the next even.
            let turn = Arc::new(AtomicU64::new(0));
            let other = Arc::clone(&turn);
            let answerer = std::thread::spawn(move || {
                for k in 0..trips {
                    while other.load(Ordering::Acquire) != 2 * k + 1 {
                        std::hint::spin_loop();
                    }
                    other.store(2 * k + 2, Ordering::Release);
                }
            });
            let start = Instant::now();
            for k in 0..trips {
                turn.store(2 * k + 1, Ordering::Release);
                while turn.load(Ordering::Acquire) != 2 * k + 2 {
                    std::hint::spin_loop();
                }
            }
            let elapsed: Duration = start.elapsed();
            answerer.join().expect("the answering thread ends");
            elapsed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = fel_hold, mm1, engine_vs_bare, handoff
}
criterion_main!(benches);
