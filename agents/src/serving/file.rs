//! The serving world as scenario files write it (`world = "serving"`): the schema of
//! `[serving]` and `[simulation]`, its resolution into a [`ServingConfig`], and the
//! world's trace rows and metrics.

use infersim_engine::Observer;
use serde::Deserialize;

use super::{
    ArrivalProcess, BatchTime, Failures, History, OverLimit, RequestRecord, Routing, ServingConfig, ServingRun,
    ServingSample, Task, build_sampled_serving, build_serving, finish_serving,
};
use crate::error::{ConfigError, RunError};
use crate::grid::CarbonIntensity;
use crate::input::Inputs;
use crate::world::{Label, Labels, Metrics, Replication, Traces, Window, World};

/// `[serving]` and `[simulation]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingFile {
    serving: ServingTable,
    simulation: Window,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServingTable {
    nodes: i64,
    gpus_per_node: i64,
    routing: Routing,
    max_batch: i64,
    max_wait_s: f64,
    context_limit_tokens: Option<i64>,
    #[serde(default)]
    over_limit: OverLimit,
    #[serde(default)]
    history: History,
    failures: Option<Failures>,
    arrivals: ArrivalProcess,
    tasks: Vec<Task>,
    service: BatchTime,
    power: Power,
    grid: CarbonIntensity,
    prices: Prices,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Power {
    gpu_idle_w: f64,
    gpu_max_w: f64,
    node_baseline_w: f64,
    pue: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Prices {
    energy_usd_per_kwh: f64,
    gpu_usd_per_hour: f64,
}

/// The serving fleet as a world.
#[derive(Clone, Copy, Debug)]
pub struct ServingWorld;

impl World for ServingWorld {
    const NAME: &'static str = "serving";
    type File = ServingFile;
    type Config = ServingConfig;
    type Request = RequestRecord;
    type Sample = ServingSample;

    fn resolve(file: ServingFile, inputs: &dyn Inputs) -> Result<ServingConfig, ConfigError> {
        let s = file.serving;
        let count = |key: &str, v: i64| {
            u32::try_from(v)
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| ConfigError::invalid(key, v, "an integer from 1 to 4294967295"))
        };
        let names: Vec<&str> = s.tasks.iter().map(|t| t.name.as_str()).collect();
        let mut arrivals = s.arrivals.clone();
        arrivals.load("serving.arrivals", inputs, &names)?;
        let mut grid = s.grid.clone();
        grid.load("serving.grid", inputs)?;
        let config = ServingConfig {
            arrivals,
            tasks: s.tasks.clone(),
            routing: s.routing,
            nodes: count("serving.nodes", s.nodes)?,
            gpus_per_node: count("serving.gpus_per_node", s.gpus_per_node)?,
            max_batch: count("serving.max_batch", s.max_batch)?,
            max_wait_s: s.max_wait_s,
            context_limit_tokens: match s.context_limit_tokens {
                None => None,
                Some(n) => Some(u32::try_from(n).ok().filter(|&n| n >= 2).ok_or_else(|| {
                    ConfigError::invalid("serving.context_limit_tokens", n, "an integer from 2 to 4294967295")
                })?),
            },
            over_limit: s.over_limit,
            history: s.history,
            failures: s.failures,
            service: s.service,
            gpu_idle_w: s.power.gpu_idle_w,
            gpu_max_w: s.power.gpu_max_w,
            node_baseline_w: s.power.node_baseline_w,
            pue: s.power.pue,
            grid,
            energy_usd_per_kwh: s.prices.energy_usd_per_kwh,
            gpu_usd_per_hour: s.prices.gpu_usd_per_hour,
            duration_s: file.simulation.duration_s()?,
            warmup_s: file.simulation.warmup_s.unwrap_or(0.0),
        };
        config.validate().map_err(|e| {
            // Name the key as the scenario file spells it.
            e.rekey(|key| match key {
                "gpu_idle_w" | "gpu_max_w" | "node_baseline_w" | "pue" => format!("serving.power.{key}"),
                "energy_usd_per_kwh" | "gpu_usd_per_hour" => format!("serving.prices.{key}"),
                "duration_s" | "warmup_s" => format!("simulation.{key}"),
                other => format!("serving.{other}"),
            })
        })?;
        Ok(config)
    }

    fn run<R: Observer<RequestRecord>, S: Observer<ServingSample>>(
        config: &ServingConfig,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        let (seed, rep) = (replication.master_seed, replication.index);
        let run = match traces.sample_every {
            Some(every) => {
                finish_serving(&mut build_sampled_serving(config, traces.requests, every, traces.samples, seed, rep)?)?
            }
            None => finish_serving(&mut build_serving(config, traces.requests, seed, rep)?)?,
        };
        Ok(run.metrics())
    }

    fn latency_objectives(config: &ServingConfig) -> Vec<(String, f64)> {
        config.tasks.iter().map(|t| (t.name.clone(), t.slo_s)).collect()
    }

    fn labels(config: &ServingConfig) -> Labels {
        Labels(vec![("task", config.tasks.iter().map(|t| t.name.clone()).collect())])
    }
}

impl ServingRun {
    /// The per-replication metrics, by name.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        m.count("requests", self.requests)
            .count("served", self.served)
            .count("rejected", self.rejected)
            .count("timed_out", self.timed_out)
            .count("lost", self.lost)
            .count("gpu_failures", self.gpu_failures)
            .count("truncated", self.truncated)
            .number("throughput_per_s", self.throughput_per_s)
            .optional("latency_mean_s", self.latency_mean_s)
            .optional("latency_p50_s", self.latency_p50_s)
            .optional("latency_p95_s", self.latency_p95_s)
            .optional("latency_p99_s", self.latency_p99_s)
            .optional("slo_attainment", self.slo_attainment)
            .optional("quality_mean", self.quality_mean)
            .optional("batch_size_mean", self.batch_size_mean)
            .count("extrapolated_lookups", self.extrapolated_lookups)
            .number("gpu_utilisation", self.gpu_utilisation)
            .number("energy_kwh", self.energy_kwh)
            .number("energy_gpu_busy_kwh", self.energy_gpu_busy_kwh)
            .number("energy_gpu_idle_kwh", self.energy_gpu_idle_kwh)
            .number("energy_baseline_kwh", self.energy_baseline_kwh)
            .number("energy_overhead_kwh", self.energy_overhead_kwh)
            .optional("energy_per_request_kwh", self.energy_per_request_kwh)
            .number("carbon_kg", self.carbon_kg)
            .number("cost_usd", self.cost_usd)
            .count("events", self.events);
        m
    }
}

crate::trace_row!(RequestRecord, |r| {
    request_id: u64 = r.request_id,
    task: Label = Label(r.task),
    tokens: u32 = r.tokens,
    truncated: bool = r.truncated,
    history_tokens: u32 = r.history_tokens,
    quality: f64 = r.quality,
    arrival_s: f64 = r.arrival_s,
    start_s: Option<f64> = r.start_s,
    finish_s: Option<f64> = r.finish_s,
    node: Option<u32> = r.node,
    gpu: Option<u32> = r.gpu,
    batch_size: Option<u32> = r.batch_size,
    latency_s: Option<f64> = r.finish_s.filter(|_| r.outcome == super::RequestOutcome::Served).map(|f| f - r.arrival_s),
    energy_kwh: f64 = r.energy_kwh,
    outcome: &str = r.outcome.as_str(),
    slo_met: bool = r.slo_met,
    warmup: bool = r.warmup,
});

crate::trace_row!(ServingSample, |s| {
    t_h: f64 = s.t_s / 3600.0,
    t_s: f64 = s.t_s,
    queue_len: u32 = s.queue_len,
    busy_gpus: u32 = s.busy_gpus,
    power_kw: f64 = s.power_kw,
    energy_kwh: f64 = s.energy_kwh,
    carbon_kg: f64 = s.carbon_kg,
});
