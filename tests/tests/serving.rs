//! The serving world against queueing theory: with batches of one request, no batch
//! wait, a constant service time and Poisson arrivals on one GPU, it is an M/D/1 queue.
//! Student-t intervals over 30 replications at 99%, fixed seeds.

use infersim_agents::arrivals::ArrivalProcess;
use infersim_agents::serving::batched::{BatchTime, BatchedConfig, BatchedRun, build_batched, run_batched};
use infersim_agents::station::theory;
use infersim_engine::stats::ConfidenceInterval;

fn md1(rate_per_s: f64, service_s: f64) -> BatchedConfig {
    let mut config = BatchedConfig::single_gpu(ArrivalProcess::Poisson { rate_per_s }, service_s, 40_000.0);
    config.tasks[0].slo_s = 10.0;
    config.gpu_idle_w = 60.0;
    config.gpu_max_w = 300.0;
    config.warmup_s = 2_000.0;
    config
}

fn interval(config: &BatchedConfig, seed: u64, measure: impl Fn(&BatchedRun) -> f64) -> ConfidenceInterval {
    let values: Vec<f64> = (0..30).map(|r| measure(&run_batched(config, seed, r).unwrap())).collect();
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
    alone.service = BatchTime::Affine { base_s: 0.2, per_request_s: 0.05, per_token_s: 0.0 };
    alone.duration_s = 4_000.0;
    alone.warmup_s = 200.0;
    let mut batched = alone.clone();
    batched.max_batch = 4;
    batched.max_wait_s = 2.0;
    let energy = |c: &BatchedConfig| interval(c, 9, |r| r.energy_gpu_busy_kwh / r.served as f64).mean;
    let latency = |c: &BatchedConfig| interval(c, 9, |r| r.latency_mean_s.unwrap()).mean;
    assert!(energy(&batched) < 0.6 * energy(&alone), "{} vs {}", energy(&batched), energy(&alone));
    assert!(latency(&batched) > latency(&alone));
}

fn arrivals_only(arrivals: ArrivalProcess, duration_s: f64) -> BatchedConfig {
    // One fast GPU with big batches: capacity far above any arrival rate used here.
    let mut c = md1(1.0, 0.0001);
    c.arrivals = arrivals;
    c.max_batch = 64;
    c.duration_s = duration_s;
    c.warmup_s = 0.0;
    c
}

fn arrival_times(config: &BatchedConfig, seed: u64) -> Vec<f64> {
    let mut sim = build_batched(config, infersim_engine::VecObserver::default(), seed, 0).unwrap();
    sim.run(Default::default()).unwrap();
    let mut t: Vec<f64> = sim.model().observer().rows.iter().map(|r| r.arrival_s).collect();
    t.sort_by(f64::total_cmp);
    t
}

/// Variance over mean of the counts in consecutive windows: 1 for Poisson.
fn index_of_dispersion(times: &[f64], window_s: f64, duration_s: f64) -> f64 {
    let mut counts = vec![0.0; (duration_s / window_s) as usize];
    for t in times {
        if let Some(c) = counts.get_mut((t / window_s) as usize) {
            *c += 1.0;
        }
    }
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<f64>() / n;
    counts.iter().map(|c| (c - mean) * (c - mean)).sum::<f64>() / (n - 1.0) / mean
}

#[test]
fn diurnal_arrivals_follow_their_rate_curve() {
    let process = ArrivalProcess::Diurnal { rate_per_s: 50.0, amplitude: 0.8, period_h: 0.5, peak_h: 0.1 };
    // 1.5 periods, so the cosine term of the integral does not cancel.
    let config = arrivals_only(process.clone(), 2_700.0);
    let counts = interval(&config, 17, |r| r.requests as f64);
    let exact = process.expected_count(2_700.0);
    assert!(counts.contains(exact), "{counts:?} misses the integral of the rate, {exact}");
    // Shape: the half-period centred on the peak gets 1/2 + amplitude/pi of the arrivals.
    let long = arrivals_only(process, 9_000.0);
    let times = arrival_times(&long, 3);
    let period_s = 1_800.0;
    let near_peak = times
        .iter()
        .filter(|t| {
            let phase = ((*t - 360.0) / period_s).rem_euclid(1.0);
            !(0.25..0.75).contains(&phase)
        })
        .count() as f64
        / times.len() as f64;
    let exact_share = 0.5 + 0.8 / std::f64::consts::PI;
    // About 450 000 arrivals: the share's standard error is under 0.001.
    assert!((near_peak - exact_share).abs() < 0.005, "peak share {near_peak} vs {exact_share}");
}

#[test]
fn mmpp_arrivals_have_their_mean_rate_and_are_bursty() {
    let process = ArrivalProcess::Mmpp { rates_per_s: vec![2.0, 20.0], mean_sojourn_s: vec![50.0, 10.0] };
    assert!((process.rate_per_s() - 5.0).abs() < 1e-12, "stationary mean: 2 x 5/6 + 20 x 1/6");
    let config = arrivals_only(process, 20_000.0);
    let rate = interval(&config, 23, |r| r.requests as f64 / 20_000.0);
    assert!(rate.contains(5.0), "{rate:?}");
    let bursty = index_of_dispersion(&arrival_times(&config, 1), 10.0, 20_000.0);
    let poisson = index_of_dispersion(
        &arrival_times(&arrivals_only(ArrivalProcess::Poisson { rate_per_s: 5.0 }, 20_000.0), 1),
        10.0,
        20_000.0,
    );
    assert!(bursty > 5.0, "MMPP counts should be overdispersed: {bursty}");
    assert!((0.85..1.15).contains(&poisson), "Poisson counts have dispersion 1: {poisson}");
}

#[test]
fn piecewise_arrivals_step_at_their_times() {
    // 2/s for 1,000 s, none for 500 s, then 10/s: a step up, a gap, a step up again.
    let process = ArrivalProcess::Piecewise { at_s: vec![0.0, 1_000.0, 1_500.0], rates_per_s: vec![2.0, 0.0, 10.0] };
    process.validate().unwrap();
    assert_eq!(process.expected_count(2_000.0), 2.0 * 1_000.0 + 10.0 * 500.0);
    let config = arrivals_only(process.clone(), 2_000.0);
    let counts = interval(&config, 29, |r| r.requests as f64);
    assert!(counts.contains(7_000.0), "{counts:?} misses the integral of the rate, 7000");
    // Within each step the arrivals are Poisson at its rate, and none come in the gap.
    let times = arrival_times(&config, 4);
    let within = |a: f64, b: f64| times.iter().filter(|t| (a..b).contains(*t)).count() as f64;
    assert_eq!(within(1_000.0, 1_500.0), 0.0);
    // Counts of 2,000 and 5,000 have standard deviations of 45 and 71: 4 sigma.
    assert!((within(0.0, 1_000.0) - 2_000.0).abs() < 180.0, "{}", within(0.0, 1_000.0));
    assert!((within(1_500.0, 2_000.0) - 5_000.0).abs() < 283.0, "{}", within(1_500.0, 2_000.0));
    let late: Vec<f64> = times.iter().filter(|t| **t >= 1_500.0).map(|t| t - 1_500.0).collect();
    let dispersion = index_of_dispersion(&late, 5.0, 500.0);
    assert!((0.8..1.2).contains(&dispersion), "Poisson within a step: {dispersion}");
    // Starts out of order, or rates and starts that do not pair, are refused by key.
    let bad = ArrivalProcess::Piecewise { at_s: vec![0.0, 10.0, 5.0], rates_per_s: vec![1.0, 2.0, 3.0] };
    assert!(bad.validate().unwrap_err().to_string().contains("at_s"));
    let unpaired = ArrivalProcess::Piecewise { at_s: vec![0.0, 10.0], rates_per_s: vec![1.0] };
    assert!(unpaired.validate().unwrap_err().to_string().contains("rates_per_s"));
}
