use super::*;
use infersim_engine::VecObserver;

const POWERS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

#[test]
fn shipped_profiles_trade_latency_for_energy_as_batches_grow() {
    let config = PipelineConfig::video();
    let busy_w = config.resources.busy_w;
    for stage in &config.stages {
        for (v, variant) in stage.variants.iter().enumerate() {
            let latency: Vec<f64> = POWERS.iter().map(|&b| stage.latency_s(v, b)).collect();
            let energy: Vec<f64> = POWERS.iter().map(|&b| busy_w * stage.latency_s(v, b) / b).collect();
            assert!(latency.windows(2).all(|w| w[1] > w[0]), "{}: latency {latency:?}", variant.name);
            assert!(energy.windows(2).all(|w| w[1] < w[0]), "{}: energy per input {energy:?}", variant.name);
            // Convex: the fall per extra input slows down.
            let slopes: Vec<f64> =
                POWERS.windows(2).zip(energy.windows(2)).map(|(b, e)| (e[1] - e[0]) / (b[1] - b[0])).collect();
            assert!(slopes.windows(2).all(|s| s[1] >= s[0]), "{}: slopes {slopes:?}", variant.name);
        }
    }
}

/// One stage, one variant whose batch of one takes exactly `service_s`.
fn single_stage(service_s: f64, rate_per_s: f64, replicas: u32) -> PipelineConfig {
    let mut config = PipelineConfig::video();
    let points = vec![(1.0, service_s), (2.0, 2.0 * service_s), (4.0, 4.0 * service_s)];
    config.stages =
        vec![Stage::new("only", vec![Variant { name: "v".into(), accuracy: 1.0, points, replica: None }]).unwrap()];
    config.load = Load {
        rate_per_s,
        arrivals: None,
        amplitude: 0.0,
        period_h: 24.0,
        peak_h: 0.0,
        bursts_per_h: 0.0,
        burst_s: 60.0,
        burst_factor: 1.0,
    };
    config.adapter.policy = AdapterPolicy::Fixed(vec![("v".into(), 1, replicas)]);
    config.feedback.fraction = 0.0;
    config.duration_s = 20_000.0;
    config
}

fn traced(config: &PipelineConfig, seed: u64, rep: u64) -> (PipelineRun, Vec<PipelineRequest>, Vec<PipelineSample>) {
    let mut sim = build_pipeline(config, VecObserver::default(), Some(VecObserver::default()), seed, rep).unwrap();
    let run = finish_pipeline(&mut sim).unwrap();
    let (requests, samples) = sim.into_model().into_observers();
    (run, requests.rows, samples.unwrap().rows)
}

#[test]
fn one_replica_at_batch_one_is_an_m_d_1_queue() {
    // Deterministic service 0.5 s, Poisson 1.2/s: rho 0.6, Pollaczek-Khinchine
    // W = 0.5 + rho x 0.5 / (2 (1 - rho)) = 0.875 s. 20 replications, 99% interval.
    let config = single_stage(0.5, 1.2, 1);
    let means: Vec<f64> = (0..20)
        .map(|rep| {
            let (_, requests, _) = traced(&config, 3, rep);
            requests.iter().map(|r| r.finish_s - r.arrival_s).sum::<f64>() / requests.len() as f64
        })
        .collect();
    let ci = infersim_engine::stats::ConfidenceInterval::from_samples(&means, 0.99).unwrap();
    assert!(ci.contains(0.875), "{ci:?}");
}

#[test]
fn energy_is_idle_power_while_alive_plus_busy_power_while_serving() {
    let config = single_stage(0.25, 2.0, 3);
    let (run, requests, _) = traced(&config, 4, 0);
    let r = &config.resources;
    // Every finished input was served alone for 0.25 s (a few still in service at the
    // end add at most one batch per replica).
    let served_s = requests.len() as f64 * 0.25;
    let want_kwh = (3.0 * r.idle_w * config.duration_s + (r.busy_w - r.idle_w) * served_s) / 3.6e6;
    let slack_kwh = 3.0 * (r.busy_w - r.idle_w) * 0.25 / 3.6e6;
    assert!(run.energy_kwh >= want_kwh - 1e-12 && run.energy_kwh <= want_kwh + slack_kwh + 1e-12, "{run:?}");
    let cost =
        3.0 * config.duration_s / 3600.0 * r.cores_per_replica * r.usd_per_core_h + run.energy_kwh * r.usd_per_kwh;
    assert!((run.cost_usd.unwrap() - cost).abs() < 1e-9);
    assert_eq!(run.cores_mean, 3.0 * r.cores_per_replica);
}

#[test]
fn the_adapter_follows_the_load_and_energy_weight_saves_energy() {
    let mut config = PipelineConfig::video();
    config.duration_s = 3.0 * 3600.0;
    let ipa = run_pipeline(&config, 8, 0).unwrap();
    assert!(ipa.reconfigurations > 5, "{ipa:?}");
    assert!(ipa.slo_attainment.unwrap() > 0.95, "{ipa:?}");
    config.adapter.objective.delta = 5.0;
    let green = run_pipeline(&config, 8, 0).unwrap();
    assert!(green.energy_per_request_kwh.unwrap() < ipa.energy_per_request_kwh.unwrap(), "{green:?} vs {ipa:?}");
    assert!(green.accuracy_mean.unwrap() <= ipa.accuracy_mean.unwrap() + 1e-9);
    assert!(green.slo_attainment.unwrap() > 0.95);
}

#[test]
fn a_fixed_plan_never_reconfigures_and_the_trace_shows_it() {
    let mut config = PipelineConfig::video();
    config.duration_s = 600.0;
    config.adapter.policy = AdapterPolicy::Fixed(vec![("yolov5s".into(), 8, 8), ("resnet50".into(), 8, 2)]);
    let (run, requests, samples) = traced(&config, 2, 0);
    assert_eq!(run.reconfigurations, 0);
    assert_eq!(samples.len(), 60);
    assert!(samples.iter().all(|s| s.plan == "yolov5s/8x8 + resnet50/8x2"), "{:?}", samples[0].plan);
    // Every input is served by yolov5s (0.25) and resnet50 (0.5).
    assert!(requests.iter().all(|r| (r.accuracy - 0.75).abs() < 1e-12));
    assert_eq!(run.accuracy_mean, Some(0.75));
}

#[test]
fn user_scores_follow_quality_on_a_one_to_five_scale() {
    let mut config = single_stage(0.01, 5.0, 1);
    config.feedback = Feedback { fraction: 0.5, noise_sd: 0.0 };
    config.duration_s = 2000.0;
    let (run, requests, _) = traced(&config, 1, 0);
    // One variant: normalised accuracy 1, so a noiseless user scores 5.
    let scored: Vec<u8> = requests.iter().filter_map(|r| r.score).collect();
    assert!(scored.len() > 4000 && scored.len() < 6000, "about half: {}", scored.len());
    assert!(scored.iter().all(|&s| s == 5));
    assert_eq!(run.ics_mean, Some(5.0));
}

#[test]
fn efficiency_rises_with_quality_and_falls_with_cost() {
    let thresholds = Efficiency { quality: 0.5, cost_per_1k_usd: 0.01 };
    for (q, c) in [(0.2, 0.005), (0.6, 0.02), (0.9, 0.001)] {
        assert!(efficiency(q + 0.1, c).unwrap() > efficiency(q, c).unwrap());
        assert!(efficiency(q, c * 2.0).unwrap() < efficiency(q, c).unwrap());
    }
    assert_eq!(efficiency(0.5, 0.0), None);
    assert_eq!(quadrant(0.5, 0.01, &thresholds), 1);
    assert_eq!(quadrant(0.9, 0.02, &thresholds), 2);
    assert_eq!(quadrant(0.1, 0.02, &thresholds), 3);
    assert_eq!(quadrant(0.1, 0.001, &thresholds), 4);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let mut config = PipelineConfig::video();
    config.duration_s = 900.0;
    assert_eq!(traced(&config, 5, 1), traced(&config, 5, 1));
    assert_ne!(traced(&config, 5, 1).0, traced(&config, 5, 2).0);
}
