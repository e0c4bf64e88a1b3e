use super::*;
use crate::arrivals::ArrivalProcess;
use crate::grid::CarbonIntensity;
use infersim_engine::VecObserver;

const DRIFT_0: &str = include_str!("../../../data/reference/bloom-sd/drift-0.csv");
const DRIFT_1E6: &str = include_str!("../../../data/reference/bloom-sd/drift-1e-6.csv");

/// Rows of a reference CSV: t_h, loss, training_gpus, processed_data, energy_kwh, requests.
fn reference(text: &str) -> Vec<[f64; 6]> {
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3], v[4], v[5]]
        })
        .collect()
}

fn samples(config: &RetrainingConfig, seed: u64, rep: u64) -> (RetrainingRun, Vec<RetrainingSample>) {
    let mut sim = build_retraining(config, NullObserver, Some(VecObserver::default()), seed, rep).unwrap();
    let run = finish_retraining(&mut sim).unwrap();
    let (_, samples) = sim.into_model().into_observers();
    (run, samples.unwrap().rows)
}

fn assert_matches_reference(drift: f64, text: &str) {
    let mut config = RetrainingConfig::bloom();
    config.drift.per_request = drift;
    let (run, got) = samples(&config, 1, 0);
    let want = reference(text);
    assert_eq!(got.len(), want.len(), "one sample per hour, 0..=2080");
    let names = ["t_h", "loss", "training_gpus", "processed_data", "energy_kwh", "requests"];
    for (g, w) in got.iter().zip(&want) {
        let values = [g.t_h, g.loss, g.training_gpus, g.processed_data, g.energy_kwh, g.requests as f64];
        for (k, (a, b)) in values.iter().zip(w).enumerate() {
            let err = (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);
            assert!(
                a == b || err <= 1e-9,
                "drift {drift}, hour {}: {} = {a}, reference {b} (rel. error {err:e})",
                w[0],
                names[k]
            );
        }
    }
    assert!(!run.diverged);
}

#[test]
fn vensim_policy_reproduces_the_zero_drift_trajectory() {
    assert_matches_reference(0.0, DRIFT_0);
}

#[test]
fn vensim_policy_reproduces_the_1e_6_drift_trajectory() {
    assert_matches_reference(1e-6, DRIFT_1E6);
}

#[test]
fn zero_drift_energy_and_metrics() {
    let mut config = RetrainingConfig::bloom();
    config.drift.per_request = 0.0;
    let run = run_retraining(&config, 1, 0).unwrap();
    assert!((run.energy_kwh - 56107.4176).abs() < 1e-6, "{}", run.energy_kwh);
    assert_eq!((run.retrain_starts, run.hours_above_upper, run.requests), (0, 0.0, 1_160_640));
    assert_eq!((run.final_loss, run.min_loss, run.max_loss), (1.931, 1.931, 1.931));
    assert!((run.energy_idle_kwh - 0.28 * 2080.0).abs() < 1e-9);
    assert_eq!(run.energy_training_kwh, 0.0);
    assert!((run.carbon_kg.unwrap() - 0.394 * run.energy_kwh).abs() < 1e-6);
}

#[test]
fn vensim_metrics_at_1e_6_drift() {
    let run = run_retraining(&RetrainingConfig::bloom(), 1, 0).unwrap();
    // Starts at hours 124, 463, 802, 1141, 1480 and 1819, one hour above the band each.
    assert_eq!(run.retrain_starts, 6);
    assert_eq!(run.hours_above_upper, 6.0);
    assert!((run.final_loss - 1.9568579413915834).abs() < 1e-9);
    assert!((run.min_loss - 1.8116196568985845).abs() < 1e-9, "{}", run.min_loss);
    assert!((run.drift_per_h - 558e-6).abs() < 1e-12);
    assert!(run.energy_training_kwh > 0.0 && run.energy_training_kwh < 0.1, "{}", run.energy_training_kwh);
}

#[test]
fn runaway_is_detected_stopped_and_finite() {
    for policy in [Policy::Vensim, Policy::Hysteresis] {
        let mut config = RetrainingConfig::bloom();
        config.drift.per_request = 5e-4;
        config.monitor.policy = policy;
        config.training.samples_per_gpu_h = 2500.0;
        let (run, got) = samples(&config, 1, 0);
        assert!(run.diverged, "{policy:?}");
        let at = run.diverged_at_h.unwrap();
        assert!(at < 2080.0 && run.simulated_h == at, "{policy:?} stopped at {at}");
        assert!(run.final_loss > 10.0 && run.final_loss.is_finite());
        let finite = |x: f64| x.is_finite();
        assert!(got.iter().all(|s| finite(s.loss) && finite(s.training_gpus) && finite(s.processed_data)));
        for x in [run.mean_loss, run.energy_kwh, run.carbon_kg.unwrap(), run.cost_usd.unwrap(), run.drift_per_h] {
            assert!(x.is_finite());
        }
    }
}

fn stochastic() -> RetrainingConfig {
    let mut c = RetrainingConfig::bloom();
    c.arrivals = ArrivalProcess::Poisson { rate_per_s: 558.0 / 3600.0 };
    c.drift.distribution = DriftDistribution::Gamma { cv: 1.0 };
    c.monitor.policy = Policy::Hysteresis;
    c.training.samples_per_gpu_h = 2500.0;
    c.training.gpu_power_kw = 0.4;
    c.fleet.service_s = 2.0;
    c.fleet.service_cv = 0.5;
    c.duration_s = 1000.0 * 3600.0;
    c
}

#[test]
fn hysteresis_starts_only_above_the_band_and_stops_only_below_it() {
    let mut config = stochastic();
    config.drift.per_request = 2e-6;
    config.training.loss = LossFunction::Vensim { scale: 3398.0, offset: 1400.0 };
    config.training.samples_per_job = 20_000.0; // a smaller step: campaigns of several jobs
    let (run, ticks) = samples(&config, 3, 0);
    assert!(run.retrain_starts >= 3, "{}", run.retrain_starts);
    // A tick that sees training begin after a tick without any: the loss was above the band.
    for w in ticks.windows(2) {
        if w[0].training_gpus == 0.0 && w[1].training_gpus > 0.0 {
            assert!(w[0].loss > 2.0 || w[1].loss > 2.0, "started inside the band at {} h: {}", w[1].t_h, w[1].loss);
        }
    }
    // No tick ever sees the loss below the lower bound while a job still trains after it.
    for w in ticks.windows(2) {
        if w[0].loss < 1.9 && w[0].training_gpus == 0.0 {
            assert_eq!(w[1].training_gpus, 0.0, "restarted below the band at {} h", w[1].t_h);
        }
    }
}

#[test]
fn carbon_aware_waits_for_clean_power_but_never_past_its_deadline() {
    let mut config = stochastic();
    config.drift.per_request = 1e-6;
    config.fleet.service_s = 0.0;
    // Dirty at hours 6..18 of the day, clean otherwise; threshold between.
    config.grid = CarbonIntensity::Diurnal { kg_per_kwh: 0.4, amplitude: 0.5, peak_h: 12.0, period_h: 24.0 };
    let deadline_h = 5.0;
    config.monitor.policy = Policy::CarbonAware { threshold_kg_per_kwh: 0.3, deadline_h };
    let mut waits = Vec::new();
    for seed in 0..20 {
        let (run, ticks) = samples(&config, seed, 0);
        assert!(run.retrain_starts >= 1);
        let mut triggered: Option<f64> = None;
        for s in &ticks {
            if triggered.is_none() && s.loss > 2.0 && s.training_gpus == 0.0 {
                triggered = Some(s.t_h);
            }
            if let (Some(t0), true) = (triggered, s.training_gpus > 0.0 || s.loss < 1.95) {
                let waited = s.t_h - t0;
                // The job started between the previous tick and this one.
                assert!(waited <= deadline_h + 1.0, "seed {seed}: waited {waited} h");
                waits.push(waited);
                triggered = None;
            }
        }
    }
    assert!(waits.iter().any(|&w| w >= 1.0), "some trigger fell in dirty hours and waited");
}

#[test]
fn carbon_aware_deadline_is_exact() {
    // Always dirty: every start happens exactly at the deadline after its trigger.
    let mut config = stochastic();
    config.fleet.service_s = 0.0;
    config.arrivals = ArrivalProcess::Deterministic { rate_per_s: 558.0 / 3600.0, first_gap_fraction: 0.5 };
    config.drift.distribution = DriftDistribution::Constant;
    config.grid = CarbonIntensity::Constant { kg_per_kwh: 0.5 };
    config.monitor.policy = Policy::CarbonAware { threshold_kg_per_kwh: 0.3, deadline_h: 2.5 };
    config.duration_s = 200.0 * 3600.0;
    let (run, ticks) = samples(&config, 1, 0);
    assert_eq!(run.retrain_starts, 1);
    // Trigger at the tick of hour 124 (loss 2.000192); start at 126.5; the job lasts
    // 5000 / (2 x 2500) = 1 h, so hour 127 sees the GPUs training.
    let training: Vec<f64> = ticks.iter().filter(|s| s.training_gpus > 0.0).map(|s| s.t_h).collect();
    assert_eq!(training, vec![127.0]);
}

#[test]
fn stochastic_drift_per_hour_matches_its_deterministic_counterpart() {
    // 30 replications, 99% Student-t interval for the mean drift per hour, against
    // what the deterministic model predicts: 558 requests/h x 1e-6.
    let config = stochastic();
    let mut tally = Tally::default();
    for rep in 0..30 {
        tally.add(run_retraining(&config, 11, rep).unwrap().drift_per_h);
    }
    let ci = infersim_engine::stats::ConfidenceInterval::from_tally(&tally, 0.99).unwrap();
    let expected = 558.0 * 1e-6;
    assert!(ci.low <= expected && expected <= ci.high, "{ci:?} vs {expected}");
}

#[test]
fn shared_pool_takes_serving_capacity_while_training() {
    let mut config = stochastic();
    config.fleet.gpus = 2;
    config.training.pool = TrainingPool::Shared;
    config.training.gpus_per_job = 2;
    // Each job holds both serving GPUs for 10 h: requests queue meanwhile.
    config.training.samples_per_gpu_h = 250.0;
    let (run, ticks) = samples(&config, 5, 0);
    assert!(run.retrain_completed >= 1);
    let during = ticks.iter().filter(|s| s.training_gpus == 2.0).map(|s| s.queue_len).max().unwrap();
    // Ticks with no training for the last three hours (the backlog takes ~2 h to drain).
    let outside =
        ticks.windows(4).filter(|w| w.iter().all(|s| s.training_gpus == 0.0)).map(|w| w[3].queue_len).max().unwrap();
    assert!(during > 100 && outside < 10, "queue while training {during}, otherwise {outside}");
    assert!(run.latency_p99_s.unwrap() > 3600.0);
}

#[test]
fn preemption_gives_gpus_back_to_serving() {
    let mut config = stochastic();
    config.fleet.gpus = 2;
    config.training.pool = TrainingPool::Shared;
    config.training.samples_per_gpu_h = 250.0;
    config.training.preempt_above_queue = Some(50);
    let run = run_retraining(&config, 5, 0).unwrap();
    assert!(run.retrain_preempted >= 1, "{run:?}");
    assert!(run.latency_p99_s.unwrap() < 3600.0);
}

#[test]
fn failures_lose_requests_and_jobs_and_the_run_goes_on() {
    let mut config = stochastic();
    config.training.pool = TrainingPool::Dedicated { gpus: 2 };
    config.training.samples_per_gpu_h = 25.0; // 100 h jobs
    config.fleet.failures = Some(crate::failures::Failures { mtbf_h: 200.0, mttr_h: 5.0 });
    let mut requests = VecObserver::default();
    let run = {
        let mut sim = build_retraining(&config, std::mem::take(&mut requests), None::<NullObserver>, 2, 0).unwrap();
        let run = finish_retraining(&mut sim).unwrap();
        requests = sim.into_model().into_observers().0;
        run
    };
    assert!(run.gpu_failures > 10 && run.retrain_failed >= 1, "{run:?}");
    let records = requests.rows;
    let lost = records.iter().filter(|r| !r.served).count() as u64;
    assert_eq!(lost, run.lost);
    assert_eq!(records.len() as u64, run.served + run.lost);
    assert!(run.requests >= run.served + run.lost);
}

#[test]
fn periodic_retrains_on_schedule_whatever_the_loss() {
    let mut config = stochastic();
    config.drift.per_request = 0.0;
    config.monitor.policy = Policy::Periodic { period_h: 100.0 };
    let run = run_retraining(&config, 1, 0).unwrap();
    // Starts at 100, 200, ..., 1000 h: the last one has no time to finish.
    assert_eq!(run.retrain_starts, 10);
    assert_eq!(run.retrain_completed, 9);
    assert_eq!(run.hours_above_upper, 0.0);
}

#[test]
fn power_law_sets_the_loss_from_all_data_trained_on() {
    let mut config = stochastic();
    config.training.loss = LossFunction::PowerLaw { a: 10.0, b: 0.25, c: 1.0 };
    config.drift.per_request = 2e-6;
    let run = run_retraining(&config, 1, 0).unwrap();
    assert!(run.retrain_completed >= 1);
    // After k jobs of 5000 on top of 5000 samples, the loss restarts at 10 (5000(k+1))^-1/4 + 1.
    let floor = 10.0 * (5000.0 * (run.retrain_completed as f64 + 1.0)).powf(-0.25) + 1.0;
    assert!(run.min_loss >= floor - 1e-12, "{} vs {floor}", run.min_loss);
}

#[test]
fn same_seed_same_run_and_streams_are_independent() {
    let config = stochastic();
    assert_eq!(run_retraining(&config, 4, 1).unwrap(), run_retraining(&config, 4, 1).unwrap());
    assert_ne!(run_retraining(&config, 4, 1).unwrap(), run_retraining(&config, 4, 2).unwrap());
    // More serving GPUs leave the arrivals (and so the request count) unchanged.
    let mut more = config.clone();
    more.fleet.gpus = 32;
    assert_eq!(run_retraining(&config, 4, 1).unwrap().requests, run_retraining(&more, 4, 1).unwrap().requests);
}

#[test]
fn bad_values_name_their_key() {
    let mut config = RetrainingConfig::bloom();
    config.drift.per_request = -1.0;
    assert_eq!(config.validate().unwrap_err().key(), "drift.per_request");
    let mut config = RetrainingConfig::bloom();
    config.training.loss = LossFunction::PowerLaw { a: 1.0, b: 0.5, c: 1.0 };
    assert_eq!(config.validate().unwrap_err().key(), "training.loss.kind");
    let mut config = RetrainingConfig::bloom();
    config.monitor.lower = 2.5;
    assert_eq!(config.validate().unwrap_err().key(), "monitor.lower");
}

#[test]
fn users_scores_can_drive_retraining_instead_of_the_loss() {
    // Quality is linear: 1 at loss 1.8, 0 at 2.8, so a score of 1 + 4 q is 4.2 at loss
    // 2.0 and 4.6 at 1.9: the ICS thresholds mirror the loss band.
    let mut config = stochastic();
    config.drift.per_request = 2e-6;
    config.training.loss = LossFunction::Vensim { scale: 3398.0, offset: 1400.0 };
    config.training.samples_per_job = 20_000.0;
    let (by_loss, _) = samples(&config, 5, 0);
    config.monitor.signal = Signal::Ics { start_below: 4.2, stop_above: 4.6, fraction: 0.3, noise_sd: 0.1 };
    let (by_ics, ticks) = samples(&config, 5, 0);
    assert!(by_ics.retrain_starts >= 3, "{by_ics:?}");
    // Each tick's ICS is the mean score of its hour: about 1 + 4 x quality, give or take
    // the rounding to whole scores that the noise dithers.
    let ics: Vec<(f64, f64)> = ticks.iter().filter_map(|t| t.ics.map(|i| (i, t.quality))).collect();
    assert!(ics.len() > 900);
    let mean_gap = ics.iter().map(|(i, q)| (i - (1.0 + 4.0 * q)).abs()).sum::<f64>() / ics.len() as f64;
    assert!(mean_gap < 0.1, "{mean_gap}");
    // Scores lag and are noisy, so the loss strays a little further, but stays near the
    // band that the loss signal holds.
    assert!(by_ics.max_loss < 2.1 && by_loss.max_loss < 2.05, "{} / {}", by_ics.max_loss, by_loss.max_loss);
    assert!((by_ics.mean_loss - by_loss.mean_loss).abs() < 0.05);
    assert!(by_ics.ics_mean.is_some() && by_loss.ics_mean.is_none());
    // With a threshold no score can fall under, nothing retrains and the loss drifts away.
    config.monitor.signal = Signal::Ics { start_below: 1.0, stop_above: 4.6, fraction: 0.3, noise_sd: 0.1 };
    let (never, _) = samples(&config, 5, 0);
    assert_eq!(never.retrain_starts, 0);
    assert!(never.final_loss > 2.5);
}
