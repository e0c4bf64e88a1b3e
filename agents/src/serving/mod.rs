//! The serving world (`world = "serving"`): inference requests arriving at a fleet
//! that serves them, with energy, carbon and cost. It has two engines, each a module
//! with its own schema, chosen by `serving.engine.kind`:
//!
//! - [`continuous`] (the default): LLM replicas running engine iterations with
//!   vLLM's scheduling and a paged KV cache, token by token;
//! - [`batched`] (`"static"`, and the default of a `[serving]` table with
//!   `max_batch`): nodes of GPUs serving requests in whole batches.
//!
//! Both draw their requests alike (tasks, token counts, a replayed trace: the shared
//! [`crate::requests`]), from the same streams, and write the same trace rows, so
//! scenarios and outputs read the same whichever engine runs. What one engine does
//! not measure is left out of its traces rather than written empty.
//!
//! Streams: arrivals [`ARRIVAL_STREAM`], request attributes (task, tokens)
//! [`REQUEST_STREAM`], routing [`ROUTING_STREAM`]: adding GPUs changes none of the
//! requests a replication presents.

use infersim_engine::{Observer, StreamId};
use serde::Deserialize;

use crate::error::{ConfigError, RunError};
use crate::input::Inputs;
use crate::requests::{RequestOutcome, RequestRecord};
use crate::world::{
    Charts, DataTable, DistributionChart, Estimate, Label, Labels, Metrics, Note, Observation, PART_COLUMN,
    Replication, Traces, Tradeoff, Window, World, read_nested, struct_fields,
};

pub mod batched;
pub mod continuous;

use batched::{BatchedConfig, BatchedTable};
use continuous::{ContinuousTable, LlmServingConfig};

/// Stream of inter-arrival times.
pub const ARRIVAL_STREAM: StreamId = StreamId(0);
/// Stream of request attributes: task and token counts.
pub const REQUEST_STREAM: StreamId = StreamId(1);
/// Stream of routing decisions.
pub const ROUTING_STREAM: StreamId = StreamId(2);

/// The serving world's state at one instant of the sampling grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServingSample {
    /// The grid instant (s).
    pub t_s: f64,
    /// Requests waiting, all nodes.
    pub queue_len: u32,
    /// GPUs serving a batch.
    pub busy_gpus: u32,
    /// Facility power (kW).
    pub power_kw: f64,
    /// Facility energy since the start (kWh).
    pub energy_kwh: f64,
    /// Carbon since the start (kg CO2e).
    pub carbon_kg: f64,
    /// Token-level engines: sequences running, all replicas.
    pub running: Option<u32>,
    /// Token-level engines: share of KV blocks in use, mean over replicas.
    pub kv_usage: Option<f64>,
    /// Token-level engines: prompt tokens computed per second since the last instant.
    pub prompt_tokens_per_s: Option<f64>,
    /// Token-level engines: output tokens per second since the last instant.
    pub generation_tokens_per_s: Option<f64>,
    /// Token-level engines: power of all GPUs (W).
    pub gpu_power_w: Option<f64>,
    /// Token-level engines: replicas provisioned (serving, starting or draining).
    pub replicas: Option<u32>,
    /// The pool the row describes (an index in the pools), for fleets of several
    /// pools; `None` for the whole fleet.
    pub part: Option<u16>,
    /// A fleet with a drifting model: its loss (the fleet's row only).
    pub loss: Option<f64>,
    /// A fleet with a drifting model: replicas training now.
    pub replicas_training: Option<u32>,
}

/// `[serving.prices]`, the same for both engines.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Prices {
    pub(crate) energy_usd_per_kwh: f64,
    pub(crate) gpu_usd_per_hour: f64,
}

/// A whole number of `key` in [low, high].
pub(crate) fn int_in(key: &str, v: i64, low: i64, high: i64) -> Result<u32, ConfigError> {
    u32::try_from(v)
        .ok()
        .filter(|&n| i64::from(n) >= low && i64::from(n) <= high)
        .ok_or_else(|| ConfigError::invalid(key, v, format!("an integer from {low} to {high}")))
}

/// `serving.engine.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineKind {
    Continuous,
    Static,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Continuous => "continuous",
            EngineKind::Static => "static",
        }
    }
}

/// `[serving]` as written: one engine's schema, chosen by `serving.engine.kind`
/// (`continuous` unless the table has the static engine's `max_batch`).
#[derive(Clone, Debug)]
pub(crate) enum ServingTable {
    /// The static engine's keys.
    Static(Box<BatchedTable>),
    /// The continuous engine's keys.
    Continuous(Box<ContinuousTable>),
}

impl<'de> Deserialize<'de> for ServingTable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let engine = table.get_mut("engine").and_then(toml::Value::as_table_mut);
        let kind = match engine.and_then(|e| e.remove("kind")) {
            Some(toml::Value::String(k)) if k == "static" => EngineKind::Static,
            Some(toml::Value::String(k)) if k == "continuous" => EngineKind::Continuous,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "{}engine.kind{}unknown variant `{}`, expected `continuous` or `static`",
                    crate::world::NESTED,
                    crate::world::NESTED,
                    other.as_str().map_or_else(|| other.to_string(), str::to_string)
                )));
            }
            None if table.contains_key("max_batch") => EngineKind::Static,
            None => EngineKind::Continuous,
        };
        // A key of the other engine: say so, rather than only that it is unknown here.
        let (this_fields, other_fields) = match kind {
            EngineKind::Static => (struct_fields::<BatchedTable>(), struct_fields::<ContinuousTable>()),
            EngineKind::Continuous => (struct_fields::<ContinuousTable>(), struct_fields::<BatchedTable>()),
        };
        if let Some(key) =
            table.keys().find(|k| !this_fields.contains(&k.as_str()) && other_fields.contains(&k.as_str()))
        {
            let other = match kind {
                EngineKind::Static => EngineKind::Continuous,
                EngineKind::Continuous => EngineKind::Static,
            };
            return Err(D::Error::custom(format!(
                "{n}{key}{n}it belongs to the other engine (the {} one); serving.engine.kind = \"{}\" is in use",
                other.name(),
                kind.name(),
                n = crate::world::NESTED
            )));
        }
        match kind {
            EngineKind::Static => read_nested(table).map(|t| ServingTable::Static(Box::new(t))),
            EngineKind::Continuous => read_nested(table).map(|t| ServingTable::Continuous(Box::new(t))),
        }
    }
}

/// `[serving]` and `[simulation]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingFile {
    serving: ServingTable,
    simulation: Window,
}

/// The serving fleet as a world.
#[derive(Clone, Copy, Debug)]
pub struct ServingWorld;

/// A resolved serving world: one of its two engines.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per point, never in bulk
pub enum ServingSetup {
    /// Request-level batches.
    Static(BatchedConfig),
    /// Token-level LLM replicas.
    Continuous(LlmServingConfig),
}

impl ServingSetup {
    /// The static engine's configuration, if that is the engine.
    pub fn into_static(self) -> Option<BatchedConfig> {
        match self {
            ServingSetup::Static(c) => Some(c),
            ServingSetup::Continuous(_) => None,
        }
    }

    /// The continuous engine's configuration, if that is the engine.
    pub fn into_continuous(self) -> Option<LlmServingConfig> {
        match self {
            ServingSetup::Continuous(c) => Some(c),
            ServingSetup::Static(_) => None,
        }
    }

    fn tasks(&self) -> &[crate::requests::Task] {
        match self {
            ServingSetup::Static(c) => &c.tasks,
            ServingSetup::Continuous(c) => &c.tasks,
        }
    }
}

/// Trace columns the static engine does not fill (they are the token-level
/// engine's), and those the continuous engine does not (a replica of `tp` GPUs has no
/// one GPU, and batches change every step).
const TOKEN_COLUMNS: [&str; 10] = [
    "input_tokens",
    "output_tokens",
    "first_scheduled_s",
    "first_token_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "preemptions",
    "cached_tokens",
    "replica",
];
/// A request's pool and a time-series row's: only fleets of several pools have them.
const POOL_COLUMNS: [&str; 2] = ["pool", PART_COLUMN];
/// A drifting model's sampled state and its requests' scores: only fleets with one
/// have them (and, with one, a request's `quality` is its model's when it was served).
const RETRAINING_COLUMNS: [&str; 3] = ["loss", "replicas_training", "user_score"];
const BATCH_COLUMNS: [&str; 5] = ["gpu", "batch_size", "truncated", "history_tokens", "quality"];
const SAMPLED_TOKEN_COLUMNS: [&str; 6] =
    ["running", "kv_usage", "prompt_tokens_per_s", "generation_tokens_per_s", "gpu_power_w", "replicas"];

impl World for ServingWorld {
    const NAME: &'static str = "serving";
    type File = ServingFile;
    type Config = ServingSetup;
    type Request = RequestRecord;
    type Sample = ServingSample;

    fn resolve(file: ServingFile, inputs: &dyn Inputs) -> Result<ServingSetup, ConfigError> {
        match file.serving {
            ServingTable::Static(t) => Ok(ServingSetup::Static(batched::resolve(*t, &file.simulation, inputs)?)),
            ServingTable::Continuous(t) => {
                Ok(ServingSetup::Continuous(continuous::resolve(*t, &file.simulation, inputs)?))
            }
        }
    }

    fn run<R: Observer<RequestRecord>, S: Observer<ServingSample>>(
        config: &ServingSetup,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        match config {
            ServingSetup::Static(c) => batched::run_traced(c, replication, traces),
            ServingSetup::Continuous(c) => continuous::run_continuous(
                c,
                &replication,
                traces.requests,
                traces.sample_every.map(|every| (every, traces.samples)),
            ),
        }
    }

    fn latency_objectives(config: &ServingSetup) -> Vec<(String, f64)> {
        config.tasks().iter().map(|t| (t.name.clone(), t.slo_s)).collect()
    }

    fn labels(config: &ServingSetup) -> Labels {
        let pools = match config {
            ServingSetup::Continuous(c) => c.pools.iter().map(|p| p.name.clone()).collect(),
            ServingSetup::Static(_) => Vec::new(),
        };
        let tasks = config.tasks().iter().map(|t| t.name.clone()).collect();
        Labels(vec![("task", tasks), (PART_COLUMN, pools.clone()), ("pool", pools)])
    }

    fn omitted_columns(config: &ServingSetup) -> Vec<&'static str> {
        match config {
            ServingSetup::Static(_) => TOKEN_COLUMNS
                .iter()
                .chain(&SAMPLED_TOKEN_COLUMNS)
                .chain(&POOL_COLUMNS)
                .chain(&RETRAINING_COLUMNS)
                .copied()
                .collect(),
            // Fleets of several pools name each request's pool and sample each pool
            // too; fleets with a drifting model sample its loss.
            ServingSetup::Continuous(c) => {
                let pools: &[&str] = if c.pools.len() > 1 { &[] } else { &POOL_COLUMNS };
                let retraining: &[&str] = if c.retraining.is_some() { &[] } else { &RETRAINING_COLUMNS };
                let quality = c.retraining.is_some() || c.validator.is_some();
                let batch = BATCH_COLUMNS.iter().filter(|&&b| b != "quality" || !quality);
                batch.chain(pools).chain(retraining).copied().collect()
            }
        }
    }

    fn warnings(config: &ServingSetup) -> Vec<String> {
        let (arrivals, warmup_s, duration_s) = match config {
            ServingSetup::Static(c) => (&c.arrivals, c.warmup_s, c.duration_s),
            ServingSetup::Continuous(c) => (&c.arrivals, c.warmup_s, c.duration_s),
        };
        arrivals.trace_cut("serving.arrivals.path", warmup_s, duration_s).into_iter().collect()
    }

    fn reference(config: &ServingSetup) -> Option<(String, Vec<(String, f64)>)> {
        match config {
            ServingSetup::Continuous(c) => c.measured.as_ref().map(|m| (m.source.clone(), m.values.clone())),
            ServingSetup::Static(_) => None,
        }
    }

    /// Silent extrapolation is the commonest way such simulations go wrong: says so
    /// where a service profile was looked up outside its measured batch sizes.
    fn notes(estimates: &[Estimate]) -> Vec<Note> {
        let outside = estimates.iter().find(|e| e.metric == "extrapolated_lookups" && e.mean > 0.0);
        outside
            .map(|e| {
                Note::Warning(format!(
                    "the service profile was used outside its measured batch sizes (extrapolated_lookups > 0 at \
                     point {}); results there rest on extrapolation",
                    e.point
                ))
            })
            .into_iter()
            .collect()
    }

    fn charts() -> Charts {
        Charts {
            distributions: &[
                DistributionChart::LATENCY,
                DistributionChart { column: "ttft_s", title: "Time to first token (TTFT)", objectives: false },
                DistributionChart { column: "tpot_s", title: "Time per output token (TPOT)", objectives: false },
            ],
            tradeoffs: &[Tradeoff {
                name: "pareto_latency_energy",
                metric: "latency_p99_s",
                against: &["energy_per_output_token_j", "energy_per_request_kwh"],
            }],
        }
    }

    /// vLLM's per-request records, as TTFT, TPOT and end-to-end samples and the
    /// makespan; rows missing a time are left out.
    fn observe(table: &DataTable) -> Option<Observation> {
        let columns = continuous::VllmRecord::columns(table)?;
        let records: Vec<continuous::VllmRecord> =
            (0..table.rows()).filter_map(|row| continuous::VllmRecord::read(table, columns, row).ok()).collect();
        let samples = continuous::vllm_samples(records.iter()).map(|(c, xs)| (c.to_string(), xs)).into();
        let values = vec![("makespan_s".to_string(), continuous::vllm_makespan_s(records.iter()))];
        Some(Observation { samples, values })
    }

    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[
            ("llm-serving", include_str!("../../../data/scenarios/llm-serving.toml")),
            ("serving", include_str!("../../../data/scenarios/serving.toml")),
            ("llm-history", include_str!("../../../data/scenarios/llm-history.toml")),
            ("vllm-replay", include_str!("../../../data/scenarios/vllm-replay.toml")),
            ("llm-fleet", include_str!("../../../data/scenarios/llm-fleet.toml")),
            ("mooncake-replay", include_str!("../../../data/scenarios/mooncake-replay.toml")),
            ("hetero-fleet", include_str!("../../../data/scenarios/hetero-fleet.toml")),
            ("fleet-retraining", include_str!("../../../data/scenarios/fleet-retraining.toml")),
            ("fleet-miners", include_str!("../../../data/scenarios/fleet-miners.toml")),
            ("fleet-adaptation", include_str!("../../../data/scenarios/fleet-adaptation.toml")),
            ("closed-loop-h100", include_str!("../../../data/scenarios/closed-loop-h100.toml")),
        ]
    }

    fn data() -> &'static [(&'static str, &'static str)] {
        crate::llm::BUILTIN_DATA
    }
}

crate::trace_row!(RequestRecord, |r| {
    request_id: u64 = r.request_id,
    task: Label = Label(r.task),
    tokens: u32 = r.tokens,
    truncated: bool = r.truncated,
    history_tokens: u32 = r.history_tokens,
    quality: Option<f64> = r.quality,
    user_score: Option<f64> = r.user_score,
    arrival_s: f64 = r.arrival_s,
    start_s: Option<f64> = r.start_s,
    finish_s: Option<f64> = r.finish_s,
    node: Option<u32> = r.node,
    gpu: Option<u32> = r.gpu,
    batch_size: Option<u32> = r.batch_size,
    latency_s: Option<f64> = r.finish_s.filter(|_| r.outcome == RequestOutcome::Served).map(|f| f - r.arrival_s),
    energy_kwh: f64 = r.energy_kwh,
    outcome: &str = r.outcome.as_str(),
    slo_met: bool = r.slo_met,
    warmup: bool = r.warmup,
    input_tokens: Option<u32> = r.input_tokens,
    output_tokens: Option<u32> = r.output_tokens,
    first_scheduled_s: Option<f64> = r.first_scheduled_s,
    first_token_s: Option<f64> = r.first_token_s,
    ttft_s: Option<f64> = r.first_token_s.map(|f| f - r.arrival_s),
    tpot_s: Option<f64> = match (r.first_token_s, r.finish_s, r.output_tokens) {
        (Some(first), Some(last), Some(n)) if n > 1 && r.outcome == RequestOutcome::Served => Some((last - first) / f64::from(n - 1)),
        _ => None,
    },
    e2e_s: Option<f64> = r.finish_s.filter(|_| r.outcome == RequestOutcome::Served && r.first_token_s.is_some()).map(|f| f - r.arrival_s),
    preemptions: Option<u32> = r.preemptions,
    cached_tokens: Option<u32> = r.cached_tokens,
    replica: Option<u32> = r.replica,
    pool: Option<Label> = r.pool.map(Label),
});

crate::trace_row!(ServingSample, |s| {
    t_h: f64 = s.t_s / 3600.0,
    t_s: f64 = s.t_s,
    queue_len: u32 = s.queue_len,
    busy_gpus: u32 = s.busy_gpus,
    power_kw: f64 = s.power_kw,
    energy_kwh: f64 = s.energy_kwh,
    carbon_kg: f64 = s.carbon_kg,
    running: Option<u32> = s.running,
    waiting: u32 = s.queue_len,
    kv_usage: Option<f64> = s.kv_usage,
    prompt_tokens_per_s: Option<f64> = s.prompt_tokens_per_s,
    generation_tokens_per_s: Option<f64> = s.generation_tokens_per_s,
    gpu_power_w: Option<f64> = s.gpu_power_w,
    replicas: Option<u32> = s.replicas,
    part: Option<Label> = s.part.map(Label),
    loss: Option<f64> = s.loss,
    replicas_training: Option<u32> = s.replicas_training,
});
