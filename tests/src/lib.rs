//! Helpers shared by the cross-crate tests in `tests/`.

use infersim_agents::station::{StationConfig, StationRun, run_station};
use infersim_engine::stats::ConfidenceInterval;

/// Runs replications `0..reps` of `config` under `seed`.
pub fn replicate(config: &StationConfig, seed: u64, reps: u64) -> Vec<StationRun> {
    (0..reps).map(|r| run_station(config, seed, r).expect("valid test configuration")).collect()
}

/// The Student-t interval of a per-replication measure.
pub fn interval(runs: &[StationRun], measure: impl Fn(&StationRun) -> f64, confidence: f64) -> ConfidenceInterval {
    let values: Vec<f64> = runs.iter().map(measure).collect();
    ConfidenceInterval::from_samples(&values, confidence).expect("at least two finite replications")
}

/// Asserts that the `confidence` interval of `measure` over `runs` contains `truth`.
pub fn assert_covers(
    name: &str,
    runs: &[StationRun],
    measure: impl Fn(&StationRun) -> f64,
    truth: f64,
    confidence: f64,
) {
    let ci = interval(runs, measure, confidence);
    assert!(
        ci.contains(truth),
        "{name}: the {:.0}% interval [{:.5}, {:.5}] (mean {:.5}, n {}) misses the analytic {truth:.5}",
        confidence * 100.0,
        ci.low,
        ci.high,
        ci.mean,
        ci.n
    );
}
