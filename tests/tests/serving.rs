//! The serving world against queueing theory: with batches of one request, no batch
//! wait, a constant service time and Poisson arrivals on one GPU, it is an M/D/1 queue.
//! Student-t intervals over 30 replications at 99%, fixed seeds.

use infersim_agents::serving::{ArrivalProcess, Routing, ServingConfig, Task, TokenCount, run_serving};
use infersim_agents::station::theory;
use infersim_engine::stats::ConfidenceInterval;

fn md1(rate_per_s: f64, service_s: f64) -> ServingConfig {
    ServingConfig {
        arrivals: ArrivalProcess::Poisson { rate_per_s },
        tasks: vec![Task {
            name: "t".into(),
            weight: 1.0,
            prompt_tokens: TokenCount::Fixed { tokens: 1 },
            output_tokens: TokenCount::Fixed { tokens: 1 },
            slo_s: 10.0,
        }],
        routing: Routing::RoundRobin,
        nodes: 1,
        gpus_per_node: 1,
        max_batch: 1,
        max_wait_s: 0.0,
        base_s: 0.0,
        per_request_s: service_s,
        per_token_s: 0.0,
        gpu_idle_w: 60.0,
        gpu_max_w: 300.0,
        node_baseline_w: 0.0,
        pue: 1.0,
        grid_kg_per_kwh: 0.0,
        energy_usd_per_kwh: 0.0,
        gpu_usd_per_hour: 0.0,
        duration_s: 40_000.0,
        warmup_s: 2_000.0,
    }
}

fn interval(
    config: &ServingConfig,
    seed: u64,
    measure: impl Fn(&infersim_agents::serving::ServingRun) -> f64,
) -> ConfidenceInterval {
    let values: Vec<f64> = (0..30).map(|r| measure(&run_serving(config, seed, r).unwrap())).collect();
    ConfidenceInterval::from_samples(&values, 0.99).unwrap()
}

#[test]
fn unbatched_serving_is_md1() {
    let config = md1(0.7, 1.0);
    let exact = theory::md1(0.7, 1.0).unwrap().sojourn_s;
    let ci = interval(&config, 31, |r| r.latency_mean_s.unwrap());
    assert!(ci.contains(exact), "latency {ci:?} misses P-K {exact}");
    // Utilisation over the run is the offered load (up to the short drain at the end).
    let util = interval(&config, 31, |r| r.gpu_utilisation);
    assert!((util.mean - 0.7).abs() < 0.01, "{util:?}");
    // Energy per request: 300 W for its 1 s of service, plus 60 W over the idle time
    // per request, 1/lambda - 1 s in the long run. The run's edges (an empty start, a
    // drain without arrivals) move it by well under 1%; an accounting error would not.
    let per_request = interval(&config, 31, |r| r.energy_per_request_kwh.unwrap());
    let exact_kwh = (300.0 * 1.0 + 60.0 * (1.0 / 0.7 - 1.0)) / 3.6e6;
    assert!((per_request.mean - exact_kwh).abs() < 0.01 * exact_kwh, "{per_request:?} vs {exact_kwh}");
}

#[test]
fn batching_lowers_energy_per_request_and_raises_latency_at_low_load() {
    // A batch costs 0.2 s plus 0.05 s per request: serving four at once is cheaper
    // per request than four alone, but the first waits for the others.
    let mut alone = md1(2.0, 0.05);
    alone.base_s = 0.2;
    alone.duration_s = 4_000.0;
    alone.warmup_s = 200.0;
    let mut batched = alone.clone();
    batched.max_batch = 4;
    batched.max_wait_s = 2.0;
    let energy = |c: &ServingConfig| interval(c, 9, |r| r.energy_gpu_busy_kwh / r.served as f64).mean;
    let latency = |c: &ServingConfig| interval(c, 9, |r| r.latency_mean_s.unwrap()).mean;
    assert!(energy(&batched) < 0.6 * energy(&alone), "{} vs {}", energy(&batched), energy(&alone));
    assert!(latency(&batched) > latency(&alone));
}
