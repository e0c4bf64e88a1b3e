//! Running replications: one (point, replication) work item at a time, many in
//! parallel. A replication's random streams depend only on the master seed and its
//! index (the same at every point: common random numbers), so what a replication
//! produces does not depend on which thread runs it or in which order.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use std::path::PathBuf;

use infersim_agents::network::{NetworkConfig, NetworkRun, build_network, finish_network, run_network};
use infersim_agents::pipeline::{PipelineConfig, PipelineRun, build_pipeline, finish_pipeline, run_pipeline};
use infersim_agents::retraining::{
    RetrainingConfig, RetrainingRun, build_retraining, finish_retraining, run_retraining,
};
use infersim_agents::serving::{RequestRecord, ServingConfig, ServingRun, build_sampled_serving, run_serving};
use infersim_agents::station::{
    CustomerRecord, DurationDistribution, StationConfig, StationRun, build_sampled_station, run_station, theory,
};
use infersim_engine::{NullObserver, Observer, QueueKind, SimDuration, replication_seed};
use rayon::prelude::*;

use crate::output::ReplicationRecord;
use crate::scenario::{ModelConfig, Point};
use crate::trace::{
    NetworkPeriodColumns, NetworkQueryColumns, ParquetSink, PipelineRequestColumns, PipelineSampleColumns,
    RetrainingRequestColumns, RetrainingSampleColumns, ServingRequestColumns, ServingSampleColumns,
    StationRequestColumns, StationSampleColumns, TraceLevel, trace_dir,
};

/// What to trace and where.
#[derive(Clone, Debug)]
pub struct TraceSpec {
    /// How much to record.
    pub level: TraceLevel,
    /// The batch's output directory (traces go below it).
    pub out: PathBuf,
    /// Spacing of sampled state.
    pub sample_every: SimDuration,
}

impl TraceSpec {
    /// No traces: metrics only.
    pub fn none() -> TraceSpec {
        TraceSpec { level: TraceLevel::Summary, out: PathBuf::new(), sample_every: SimDuration::ZERO }
    }
}

/// Runs a station with the given observers and hands them back for finishing.
fn run_observed<O: Observer<CustomerRecord>>(
    config: &StationConfig,
    requests: O,
    samples: ParquetSink<StationSampleColumns>,
    every: SimDuration,
    seed: u64,
    replication: u64,
) -> Result<(StationRun, O, ParquetSink<StationSampleColumns>), String> {
    let mut sim = build_sampled_station(config, requests, every, samples, QueueKind::default(), seed, replication)
        .map_err(|e| e.to_string())?;
    sim.run(Default::default()).map_err(|e| e.to_string())?;
    let run = sim.model().results(sim.events_handled());
    let (requests, samples) = sim.into_model().into_observers();
    Ok((run, requests, samples.expect("sampling was switched on")))
}

fn run_station_traced(
    config: &StationConfig,
    seed: u64,
    point: u32,
    replication: u64,
    trace: &TraceSpec,
) -> Result<StationRun, String> {
    if trace.level == TraceLevel::Summary {
        return run_station(config, seed, replication).map_err(|e| e.to_string());
    }
    let dir = fresh_trace_dir(trace, point, replication)?;
    let samples =
        ParquetSink::<StationSampleColumns>::create(dir.join("timeseries.parquet")).map_err(|e| e.to_string())?;
    let run = if trace.level >= TraceLevel::Requests {
        let requests =
            ParquetSink::<StationRequestColumns>::create(dir.join("requests.parquet")).map_err(|e| e.to_string())?;
        let (run, requests, samples) = run_observed(config, requests, samples, trace.sample_every, seed, replication)?;
        requests.finish().map_err(|e| e.to_string())?;
        samples.finish().map_err(|e| e.to_string())?;
        run
    } else {
        let (run, NullObserver, samples) =
            run_observed(config, NullObserver, samples, trace.sample_every, seed, replication)?;
        samples.finish().map_err(|e| e.to_string())?;
        run
    };
    Ok(run)
}

/// Per-replication metrics of the station, in column order.
pub const STATION_METRICS: &[&str] =
    &["wait_s", "sojourn_s", "queue_len", "in_system", "p_wait", "p_block", "utilisation", "sojourn_p99_s", "events"];

/// Per-replication metrics of the serving world, in column order.
pub const SERVING_METRICS: &[&str] = &[
    "requests",
    "served",
    "rejected",
    "timed_out",
    "lost",
    "gpu_failures",
    "truncated",
    "throughput_per_s",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "slo_attainment",
    "quality_mean",
    "batch_size_mean",
    "extrapolated_lookups",
    "gpu_utilisation",
    "energy_kwh",
    "energy_gpu_busy_kwh",
    "energy_gpu_idle_kwh",
    "energy_baseline_kwh",
    "energy_overhead_kwh",
    "energy_per_request_kwh",
    "carbon_kg",
    "cost_usd",
    "events",
];

/// Per-replication metrics of the drift-and-retraining world, in column order.
pub const RETRAINING_METRICS: &[&str] = &[
    "final_loss",
    "min_loss",
    "max_loss",
    "mean_loss",
    "quality_mean",
    "ics_mean",
    "retrain_starts",
    "retrain_completed",
    "retrain_failed",
    "retrain_preempted",
    "hours_above_upper",
    "drift_per_h",
    "requests",
    "served",
    "lost",
    "gpu_failures",
    "latency_mean_s",
    "latency_p99_s",
    "energy_kwh",
    "energy_serving_kwh",
    "energy_idle_kwh",
    "energy_training_kwh",
    "carbon_kg",
    "cost_usd",
    "diverged",
    "diverged_at_h",
    "simulated_h",
    "events",
];

/// Per-replication metrics of the miner network, in column order.
pub const NETWORK_METRICS: &[&str] = &[
    "organic_queries",
    "answered",
    "answer_rate",
    "quality_mean",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p99_s",
    "slo_attainment",
    "synthetic_queries",
    "requests",
    "attempts_per_query",
    "rate_429",
    "rate_500",
    "share_good",
    "share_poor",
    "share_flaky",
    "cold_start_h",
    "energy_kwh",
    "energy_per_query_kwh",
    "nodes_joined",
    "nodes_left",
    "node_failures",
    "periods",
    "simulated_h",
    "events",
];

/// Per-replication metrics of the adaptive pipeline, in column order.
pub const PIPELINE_METRICS: &[&str] = &[
    "requests",
    "energy_kwh",
    "energy_per_request_kwh",
    "accuracy_mean",
    "latency_p50_s",
    "latency_p99_s",
    "slo_attainment",
    "cost_usd",
    "cost_per_1k_usd",
    "efficiency",
    "quadrant",
    "ics_mean",
    "reconfigurations",
    "infeasible_intervals",
    "cores_mean",
    "simulated_h",
    "events",
];

/// Metrics that are true or false: kept as 1 or 0 in part files, written as Boolean
/// columns, summarised as the fraction of replications where they hold.
pub const BOOLEAN_METRICS: &[&str] = &["diverged"];

/// The metric columns a model produces.
pub fn metric_names(model: &ModelConfig) -> &'static [&'static str] {
    match model {
        ModelConfig::Station(_) => STATION_METRICS,
        ModelConfig::Serving(_) => SERVING_METRICS,
        ModelConfig::Retraining(_) => RETRAINING_METRICS,
        ModelConfig::Network(_) => NETWORK_METRICS,
        ModelConfig::Pipeline(_) => PIPELINE_METRICS,
    }
}

fn pipeline_metrics(run: &PipelineRun) -> Vec<Option<f64>> {
    vec![
        Some(run.requests as f64),
        Some(run.energy_kwh),
        run.energy_per_request_kwh,
        run.accuracy_mean,
        run.latency_p50_s,
        run.latency_p99_s,
        run.slo_attainment,
        Some(run.cost_usd),
        run.cost_per_1k_usd,
        run.efficiency,
        run.quadrant,
        run.ics_mean,
        Some(run.reconfigurations as f64),
        Some(run.infeasible_intervals as f64),
        Some(run.cores_mean),
        Some(run.simulated_h),
        Some(run.events as f64),
    ]
}

/// Runs the adaptive pipeline; its timeseries is one row per adapter interval.
fn run_pipeline_traced(
    config: &PipelineConfig,
    seed: u64,
    point: u32,
    replication: u64,
    trace: &TraceSpec,
) -> Result<PipelineRun, String> {
    if trace.level == TraceLevel::Summary {
        return run_pipeline(config, seed, replication);
    }
    let dir = fresh_trace_dir(trace, point, replication)?;
    let samples =
        ParquetSink::<PipelineSampleColumns>::create(dir.join("timeseries.parquet")).map_err(|e| e.to_string())?;
    let requests = if trace.level >= TraceLevel::Requests {
        Some(ParquetSink::<PipelineRequestColumns>::create(dir.join("requests.parquet")).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut sim = build_pipeline(config, requests, Some(samples), seed, replication).map_err(|e| e.to_string())?;
    let run = finish_pipeline(&mut sim).map_err(|e| e.to_string())?;
    let (requests, samples) = sim.into_model().into_observers();
    if let Some(requests) = requests {
        requests.finish().map_err(|e| e.to_string())?;
    }
    samples.expect("sampling was switched on").finish().map_err(|e| e.to_string())?;
    Ok(run)
}

fn network_metrics(run: &NetworkRun) -> Vec<Option<f64>> {
    vec![
        Some(run.organic_queries as f64),
        Some(run.answered as f64),
        run.answer_rate,
        run.quality_mean,
        run.latency_mean_s,
        run.latency_p50_s,
        run.latency_p99_s,
        run.slo_attainment,
        Some(run.synthetic_queries as f64),
        Some(run.requests as f64),
        run.attempts_per_query,
        run.rate_429,
        run.rate_500,
        run.share_good,
        run.share_poor,
        run.share_flaky,
        run.cold_start_h,
        Some(run.energy_kwh),
        run.energy_per_query_kwh,
        Some(run.nodes_joined as f64),
        Some(run.nodes_left as f64),
        Some(run.node_failures as f64),
        Some(run.periods as f64),
        Some(run.simulated_h),
        Some(run.events as f64),
    ]
}

/// Runs the miner network; its timeseries is one row per contender and scoring period,
/// its requests trace one row per query.
fn run_network_traced(
    config: &NetworkConfig,
    seed: u64,
    point: u32,
    replication: u64,
    trace: &TraceSpec,
) -> Result<NetworkRun, String> {
    if trace.level == TraceLevel::Summary {
        return run_network(config, seed, replication);
    }
    let dir = fresh_trace_dir(trace, point, replication)?;
    let tasks: Vec<String> = config.tasks.iter().map(|t| t.name.clone()).collect();
    let classes: Vec<String> = config.node_classes.iter().map(|c| c.name.clone()).collect();
    let periods = ParquetSink::with_columns(
        dir.join("timeseries.parquet"),
        NetworkPeriodColumns::new(tasks.clone(), classes.clone()),
    )
    .map_err(|e| e.to_string())?;
    let queries = if trace.level >= TraceLevel::Requests {
        Some(
            ParquetSink::with_columns(dir.join("requests.parquet"), NetworkQueryColumns::new(tasks, classes))
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let mut sim = build_network(config, queries, Some(periods), seed, replication).map_err(|e| e.to_string())?;
    let run = finish_network(&mut sim).map_err(|e| e.to_string())?;
    let (queries, periods) = sim.into_model().into_observers();
    if let Some(queries) = queries {
        queries.finish().map_err(|e| e.to_string())?;
    }
    periods.expect("period scores were switched on").finish().map_err(|e| e.to_string())?;
    Ok(run)
}

fn retraining_metrics(run: &RetrainingRun) -> Vec<Option<f64>> {
    vec![
        Some(run.final_loss),
        Some(run.min_loss),
        Some(run.max_loss),
        Some(run.mean_loss),
        Some(run.quality_mean),
        run.ics_mean,
        Some(run.retrain_starts as f64),
        Some(run.retrain_completed as f64),
        Some(run.retrain_failed as f64),
        Some(run.retrain_preempted as f64),
        Some(run.hours_above_upper),
        Some(run.drift_per_h),
        Some(run.requests as f64),
        Some(run.served as f64),
        Some(run.lost as f64),
        Some(run.gpu_failures as f64),
        run.latency_mean_s,
        run.latency_p99_s,
        Some(run.energy_kwh),
        Some(run.energy_serving_kwh),
        Some(run.energy_idle_kwh),
        Some(run.energy_training_kwh),
        Some(run.carbon_kg),
        Some(run.cost_usd),
        Some(if run.diverged { 1.0 } else { 0.0 }),
        run.diverged_at_h,
        Some(run.simulated_h),
        Some(run.events as f64),
    ]
}

/// Runs the drift-and-retraining world; its timeseries is one row per monitor tick.
fn run_retraining_traced(
    config: &RetrainingConfig,
    seed: u64,
    point: u32,
    replication: u64,
    trace: &TraceSpec,
) -> Result<RetrainingRun, String> {
    if trace.level == TraceLevel::Summary {
        return run_retraining(config, seed, replication);
    }
    let dir = fresh_trace_dir(trace, point, replication)?;
    let samples =
        ParquetSink::<RetrainingSampleColumns>::create(dir.join("timeseries.parquet")).map_err(|e| e.to_string())?;
    let requests = if trace.level >= TraceLevel::Requests {
        Some(ParquetSink::<RetrainingRequestColumns>::create(dir.join("requests.parquet")).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut sim = build_retraining(config, requests, Some(samples), seed, replication).map_err(|e| e.to_string())?;
    let run = finish_retraining(&mut sim).map_err(|e| e.to_string())?;
    let (requests, samples) = sim.into_model().into_observers();
    if let Some(requests) = requests {
        requests.finish().map_err(|e| e.to_string())?;
    }
    samples.expect("sampling was switched on").finish().map_err(|e| e.to_string())?;
    Ok(run)
}

fn serving_metrics(run: &ServingRun) -> Vec<Option<f64>> {
    vec![
        Some(run.requests as f64),
        Some(run.served as f64),
        Some(run.rejected as f64),
        Some(run.timed_out as f64),
        Some(run.lost as f64),
        Some(run.gpu_failures as f64),
        Some(run.truncated as f64),
        Some(run.throughput_per_s),
        run.latency_mean_s,
        run.latency_p50_s,
        run.latency_p95_s,
        run.latency_p99_s,
        run.slo_attainment,
        run.quality_mean,
        run.batch_size_mean,
        Some(run.extrapolated_lookups as f64),
        Some(run.gpu_utilisation),
        Some(run.energy_kwh),
        Some(run.energy_gpu_busy_kwh),
        Some(run.energy_gpu_idle_kwh),
        Some(run.energy_baseline_kwh),
        Some(run.energy_overhead_kwh),
        run.energy_per_request_kwh,
        Some(run.carbon_kg),
        Some(run.cost_usd),
        Some(run.events as f64),
    ]
}

/// Runs a serving world with the given request observer and a timeseries sink, and
/// hands both back for finishing.
fn run_serving_observed<O: Observer<RequestRecord>>(
    config: &ServingConfig,
    requests: O,
    samples: ParquetSink<ServingSampleColumns>,
    every: SimDuration,
    seed: u64,
    replication: u64,
) -> Result<(ServingRun, O, ParquetSink<ServingSampleColumns>), String> {
    let mut sim =
        build_sampled_serving(config, requests, every, samples, seed, replication).map_err(|e| e.to_string())?;
    sim.run(Default::default()).map_err(|e| e.to_string())?;
    let run = sim.model().results(sim.now(), sim.events_handled());
    let (requests, samples) = sim.into_model().into_observers();
    Ok((run, requests, samples.expect("sampling was switched on")))
}

fn run_serving_traced(
    config: &ServingConfig,
    seed: u64,
    point: u32,
    replication: u64,
    trace: &TraceSpec,
) -> Result<ServingRun, String> {
    if trace.level == TraceLevel::Summary {
        return run_serving(config, seed, replication);
    }
    let dir = fresh_trace_dir(trace, point, replication)?;
    let samples =
        ParquetSink::<ServingSampleColumns>::create(dir.join("timeseries.parquet")).map_err(|e| e.to_string())?;
    let every = trace.sample_every;
    let run = if trace.level >= TraceLevel::Requests {
        let names = config.tasks.iter().map(|t| t.name.clone()).collect();
        let requests = ParquetSink::with_columns(dir.join("requests.parquet"), ServingRequestColumns::new(names))
            .map_err(|e| e.to_string())?;
        let (run, requests, samples) = run_serving_observed(config, requests, samples, every, seed, replication)?;
        requests.finish().map_err(|e| e.to_string())?;
        samples.finish().map_err(|e| e.to_string())?;
        run
    } else {
        let (run, NullObserver, samples) =
            run_serving_observed(config, NullObserver, samples, every, seed, replication)?;
        samples.finish().map_err(|e| e.to_string())?;
        run
    };
    Ok(run)
}

/// The trace directory of one replication, emptied: a replication rerun after an
/// interruption starts its traces afresh, dropping any temporary file the
/// interrupted attempt left.
fn fresh_trace_dir(trace: &TraceSpec, point: u32, replication: u64) -> Result<PathBuf, String> {
    let dir = trace_dir(&trace.out, point, replication);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
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

/// The I-th of N disjoint slices of a batch (`--shard I/N`, I from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which slice, 1..=count.
    pub index: u64,
    /// How many slices.
    pub count: u64,
}

impl Shard {
    /// The whole batch.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `I/N` with 1 <= I <= N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 2/8");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether the work item with global position `g` belongs to this shard. Items are
    /// dealt round-robin, so every shard gets a similar mix of points.
    pub fn owns(&self, g: u64) -> bool {
        g % self.count == self.index - 1
    }
}

/// Every (point, replication) of a batch that belongs to `shard`, point-major.
pub fn work_items(points: usize, replications: u64, shard: Shard) -> Vec<(u32, u64)> {
    (0..points as u32)
        .flat_map(|p| (0..replications).map(move |r| (p, r)))
        .enumerate()
        .filter(|(g, _)| shard.owns(*g as u64))
        .map(|(_, item)| item)
        .collect()
}

/// Runs one replication of one point. A failure, including a panic inside the model,
/// becomes a record with an error and no metrics, so it cannot take the batch down.
pub fn run_replication(point: &Point, master_seed: u64, replication: u64, trace: &TraceSpec) -> ReplicationRecord {
    let metrics = metric_names(&point.model);
    let outcome =
        catch_unwind(AssertUnwindSafe(|| match &point.model {
            ModelConfig::Station(config) => run_station_traced(config, master_seed, point.index, replication, trace)
                .map(|run| station_metrics(&run)),
            ModelConfig::Serving(config) => run_serving_traced(config, master_seed, point.index, replication, trace)
                .map(|run| serving_metrics(&run)),
            ModelConfig::Retraining(config) => {
                run_retraining_traced(config, master_seed, point.index, replication, trace)
                    .map(|run| retraining_metrics(&run))
            }
            ModelConfig::Network(config) => run_network_traced(config, master_seed, point.index, replication, trace)
                .map(|run| network_metrics(&run)),
            ModelConfig::Pipeline(config) => run_pipeline_traced(config, master_seed, point.index, replication, trace)
                .map(|run| pipeline_metrics(&run)),
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("panicked: {message}"))
        });
    let (metrics, error) = match outcome {
        Ok(values) => (values, None),
        Err(e) => (vec![None; metrics.len()], Some(e)),
    };
    ReplicationRecord {
        point: point.index,
        replication,
        seed: replication_seed(master_seed, replication),
        metrics,
        error,
    }
}

/// Why replications could not be run at all.
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
}

/// Runs `items` on `threads` threads, handing each finished record to `done` (which
/// may be called from any worker, in any order). Items not yet started when `cancel`
/// becomes true are skipped. Returns the first error `done` returned, if any.
pub fn run_items<E: Send>(
    points: &[Point],
    items: &[(u32, u64)],
    master_seed: u64,
    threads: usize,
    trace: &TraceSpec,
    cancel: &AtomicBool,
    done: impl Fn(ReplicationRecord) -> Result<(), E> + Sync,
) -> Result<Result<(), E>, RunError> {
    if threads == 0 {
        return Err(RunError::NoThreads);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RunError::ThreadPool { threads, message: e.to_string() })?;
    Ok(pool.install(|| {
        items.par_iter().with_max_len(1).try_for_each(|&(p, r)| {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            done(run_replication(&points[p as usize], master_seed, r, trace))
        })
    }))
}

/// Steady-state values from queueing theory where the station has a closed form:
/// M/M/c (Erlang C), M/G/1 (Pollaczek-Khinchine) and loss systems M/G/c/c (Erlang B).
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
            let carried = lambda * (1.0 - b) * service_s;
            return vec![
                ("wait_s", 0.0),
                ("sojourn_s", service_s),
                ("queue_len", 0.0),
                ("in_system", carried),
                ("p_wait", 0.0),
                ("p_block", b),
                ("utilisation", carried / f64::from(c)),
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
    use crate::scenario::Scenario;
    use std::sync::Mutex;

    fn small() -> Scenario {
        let mut s = Scenario::builtin("mmc").unwrap();
        s.apply_overrides(&["simulation.customers=3000", "simulation.warmup_customers=300"]).unwrap();
        s
    }

    fn collect(s: &Scenario, items: &[(u32, u64)], threads: usize) -> Vec<ReplicationRecord> {
        let out = Mutex::new(Vec::new());
        run_items(&s.points, items, 9, threads, &TraceSpec::none(), &AtomicBool::new(false), |r| {
            out.lock().unwrap().push(r);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        let mut v = out.into_inner().unwrap();
        v.sort_by_key(|r| (r.point, r.replication));
        v
    }

    #[test]
    fn records_do_not_depend_on_the_thread_count() {
        let s = small();
        let items = work_items(1, 6, Shard::ALL);
        let one = collect(&s, &items, 1);
        assert_eq!(one, collect(&s, &items, 2));
        assert_eq!(one[3].seed, replication_seed(9, 3));
        assert!(one.iter().all(|r| r.error.is_none()));
    }

    #[test]
    fn shards_partition_the_batch() {
        let all = work_items(3, 5, Shard::ALL);
        assert_eq!(all.len(), 15);
        let mut union: Vec<_> = (1..=4).flat_map(|i| work_items(3, 5, Shard { index: i, count: 4 })).collect();
        union.sort();
        assert_eq!(union, all);
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        for bad in ["3/2", "0/2", "1/0", "x", "1/x"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cancellation_skips_unstarted_items() {
        let s = small();
        let cancel = AtomicBool::new(true);
        let count = Mutex::new(0);
        run_items(&s.points, &work_items(1, 4, Shard::ALL), 1, 1, &TraceSpec::none(), &cancel, |_| {
            *count.lock().unwrap() += 1;
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(*count.lock().unwrap(), 0);
    }

    #[test]
    fn analytic_values_exist_where_theory_does() {
        let ModelConfig::Station(station) = small().points[0].model.clone() else { panic!("mmc is a station") };
        let a = analytic(&station);
        let wait = a.iter().find(|(m, _)| *m == "wait_s").unwrap().1;
        assert!((wait - theory::mmc(3.6, 1.0, 4).unwrap().wait_s).abs() < 1e-12);
        let mut lossy = station;
        lossy.capacity = Some(6);
        assert!(analytic(&lossy).is_empty(), "M/M/4/6 has no formula here");
    }
}
