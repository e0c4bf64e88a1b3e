//! The static engine's keys as scenario files write them (`[serving]` with
//! `max_batch`, or `serving.engine.kind = "static"`), resolved into a
//! [`BatchedConfig`].

use serde::Deserialize;

use super::{BatchTime, BatchedConfig, History, OverLimit, Routing};
use crate::arrivals::ArrivalProcess;
use crate::error::ConfigError;
use crate::failures::Failures;
use crate::grid::CarbonIntensity;
use crate::input::Inputs;
use crate::requests::{DEFAULT_MAX_QUEUED, MAX_QUEUED, Task};
use crate::serving::{Prices, int_in};
use crate::world::Window;

/// `[serving]` of the static engine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchedTable {
    nodes: i64,
    gpus_per_node: i64,
    routing: Routing,
    #[serde(default)]
    engine: EngineTable,
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

/// `[serving.engine]` of the static engine (its `kind` was read to choose it).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineTable {
    max_queued_requests: Option<i64>,
}

/// `[serving.power]` of the static engine: a GPU draws one power serving a batch and
/// another idle.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Power {
    gpu_idle_w: f64,
    gpu_max_w: f64,
    node_baseline_w: f64,
    pue: f64,
}

/// Resolves the static engine's tables: reads its data files through `inputs` and
/// checks every value; errors name the key as the file spells it.
pub(crate) fn resolve(s: BatchedTable, simulation: &Window, inputs: &dyn Inputs) -> Result<BatchedConfig, ConfigError> {
    let count = |key: &str, v: i64| int_in(key, v, 1, i64::from(u32::MAX));
    let names: Vec<&str> = s.tasks.iter().map(|t| t.name.as_str()).collect();
    let mut arrivals = s.arrivals.clone();
    arrivals.load("serving.arrivals", inputs, &names)?;
    let mut grid = s.grid.clone();
    grid.load("serving.grid", inputs)?;
    let config = BatchedConfig {
        arrivals,
        tasks: s.tasks.clone(),
        routing: s.routing,
        nodes: count("serving.nodes", s.nodes)?,
        gpus_per_node: count("serving.gpus_per_node", s.gpus_per_node)?,
        max_batch: count("serving.max_batch", s.max_batch)?,
        max_wait_s: s.max_wait_s,
        context_limit_tokens: match s.context_limit_tokens {
            None => None,
            Some(n) => Some(int_in("serving.context_limit_tokens", n, 2, i64::from(u32::MAX))?),
        },
        max_queued_per_gpu: match s.engine.max_queued_requests {
            None => DEFAULT_MAX_QUEUED,
            Some(n) => int_in("serving.engine.max_queued_requests", n, 1, i64::from(MAX_QUEUED))?,
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
        duration_s: simulation.duration_s()?,
        warmup_s: simulation.warmup_s.unwrap_or(0.0),
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
