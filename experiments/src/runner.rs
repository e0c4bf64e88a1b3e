//! Monte Carlo batches: replications in parallel, results independent of the thread
//! count (each replication's streams depend only on the master seed and its index,
//! and results are collected in index order).

use std::time::{Duration, Instant};

use infersim_agents::station::{DurationDistribution, StationConfig, StationError, StationRun, run_station, theory};
use infersim_engine::replication_seed;
use infersim_engine::stats::ConfidenceInterval;
use rayon::prelude::*;

use crate::scenario::Scenario;

/// Per-replication metrics of the station, in output order.
pub const STATION_METRICS: &[&str] =
    &["wait_s", "sojourn_s", "queue_len", "in_system", "p_wait", "p_block", "utilisation", "sojourn_p99_s", "events"];

/// One replication's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Replication {
    /// Index within the batch.
    pub replication: u64,
    /// The 64-bit seed its streams derive from (recorded for reproduction).
    pub seed: u64,
    /// Values of [`STATION_METRICS`], in order; `None` where undefined for this run.
    pub metrics: Vec<Option<f64>>,
}

fn station_metrics(run: &StationRun) -> Vec<Option<f64>> {
    vec![
        run.wait_s,
        run.sojourn_s,
        run.queue_len,
        run.in_system,
        run.p_wait,
        run.p_block,
        run.utilisation,
        run.sojourn_p99_s,
        Some(run.events as f64),
    ]
}

/// A finished batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Replications in index order.
    pub replications: Vec<Replication>,
    /// Wall-clock time of the batch.
    pub elapsed: Duration,
    /// Threads used.
    pub threads: usize,
}

/// Summary of one metric across replications.
#[derive(Clone, Debug)]
pub struct MetricSummary {
    /// Metric name.
    pub name: &'static str,
    /// Replications where the metric was defined.
    pub n: usize,
    /// The Student-t interval (needs n >= 2).
    pub ci: Option<ConfidenceInterval>,
}

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// `--reps 0`.
    #[error("--reps must be at least 1")]
    NoReplications,
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    NoThreads,
    /// The thread pool could not start.
    #[error("cannot start {threads} worker threads: {message}")]
    ThreadPool {
        /// Requested threads.
        threads: usize,
        /// Why.
        message: String,
    },
    /// A replication failed.
    #[error("replication {replication}: {error}")]
    Replication {
        /// Which.
        replication: u64,
        /// Why.
        error: StationError,
    },
}

/// Confidence level of printed intervals.
pub const CONFIDENCE: f64 = 0.95;

/// Runs `replications` replications of `scenario` under `seed` on `threads` threads.
pub fn run_batch(scenario: &Scenario, replications: u64, seed: u64, threads: usize) -> Result<Batch, RunError> {
    if replications == 0 {
        return Err(RunError::NoReplications);
    }
    if threads == 0 {
        return Err(RunError::NoThreads);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RunError::ThreadPool { threads, message: e.to_string() })?;
    let start = Instant::now();
    let config = scenario.station;
    let replications = pool.install(|| {
        (0..replications)
            .into_par_iter()
            .map(|replication| {
                let run = run_station(&config, seed, replication)
                    .map_err(|error| RunError::Replication { replication, error })?;
                Ok(Replication {
                    replication,
                    seed: replication_seed(seed, replication),
                    metrics: station_metrics(&run),
                })
            })
            .collect::<Result<Vec<_>, RunError>>()
    })?;
    Ok(Batch { replications, elapsed: start.elapsed(), threads })
}

impl Batch {
    /// The summary of metric `name`, or `None` if there is no such metric.
    pub fn summary(&self, name: &str) -> Option<MetricSummary> {
        let index = STATION_METRICS.iter().position(|m| *m == name)?;
        let values: Vec<f64> = self.replications.iter().filter_map(|r| r.metrics[index]).collect();
        Some(MetricSummary {
            name: STATION_METRICS[index],
            n: values.len(),
            ci: ConfidenceInterval::from_samples(&values, CONFIDENCE).ok(),
        })
    }

    /// Summaries of every metric, in output order.
    pub fn summaries(&self) -> Vec<MetricSummary> {
        STATION_METRICS.iter().filter_map(|m| self.summary(m)).collect()
    }

    /// Total events over all replications.
    pub fn events(&self) -> u64 {
        let index = STATION_METRICS.iter().position(|m| *m == "events").expect("events is a metric");
        self.replications.iter().filter_map(|r| r.metrics[index]).sum::<f64>() as u64
    }
}

/// Steady-state values from queueing theory, where the station has a closed form:
/// M/M/c (Erlang C), M/G/1 (Pollaczek-Khinchine), and loss systems M/M/c/c (Erlang B).
pub fn analytic(config: &StationConfig) -> Vec<(&'static str, f64)> {
    let DurationDistribution::Exponential { mean_s: interarrival_s } = config.interarrival else {
        return Vec::new();
    };
    let lambda = 1.0 / interarrival_s;
    let service_s = config.service.mean_s();
    let c = config.servers;
    let exponential = matches!(config.service, DurationDistribution::Exponential { .. });
    let waiting = match config.capacity {
        None if exponential => theory::mmc(lambda, 1.0 / service_s, c),
        None if c == 1 => theory::mg1(lambda, service_s, config.service.cv()),
        Some(k) if k == c => {
            // Erlang B holds for any service distribution (insensitivity).
            let b = theory::erlang_b(c, lambda * service_s);
            return vec![
                ("wait_s", 0.0),
                ("sojourn_s", service_s),
                ("queue_len", 0.0),
                ("in_system", lambda * (1.0 - b) * service_s),
                ("p_wait", 0.0),
                ("p_block", b),
                ("utilisation", lambda * (1.0 - b) * service_s / f64::from(c)),
            ];
        }
        _ => None,
    };
    match waiting {
        Some(m) => vec![
            ("wait_s", m.wait_s),
            ("sojourn_s", m.sojourn_s),
            ("queue_len", m.queue_len),
            ("in_system", m.in_system),
            ("p_wait", m.p_wait),
            ("p_block", 0.0),
            ("utilisation", lambda * service_s / f64::from(c)),
        ],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Scenario {
        let mut s = Scenario::builtin("mmc").unwrap();
        s.apply_overrides(&["simulation.customers=3000", "simulation.warmup_customers=300"]).unwrap();
        s
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let s = small();
        let one = run_batch(&s, 6, 9, 1).unwrap();
        let two = run_batch(&s, 6, 9, 2).unwrap();
        assert_eq!(one.replications, two.replications);
        assert_eq!(one.replications[3].seed, replication_seed(9, 3));
    }

    #[test]
    fn bad_counts_are_errors() {
        assert!(matches!(run_batch(&small(), 0, 1, 1), Err(RunError::NoReplications)));
        assert!(matches!(run_batch(&small(), 1, 1, 0), Err(RunError::NoThreads)));
    }

    #[test]
    fn analytic_values_exist_where_theory_does() {
        let s = small();
        let a = analytic(&s.station);
        let wait = a.iter().find(|(m, _)| *m == "wait_s").unwrap().1;
        assert!((wait - theory::mmc(3.6, 1.0, 4).unwrap().wait_s).abs() < 1e-12);
        let mut lossy = s.station;
        lossy.capacity = Some(6);
        assert!(analytic(&lossy).is_empty(), "M/M/4/6 has no formula here");
    }
}
