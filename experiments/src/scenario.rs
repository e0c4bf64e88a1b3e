//! Scenario files: TOML read into a raw table, checked key by key against the schema
//! (so an unknown key names the file, the line and the nearest valid key), overridden
//! with `--set key=value`, then resolved into typed configuration with range checks.
//!
//! A `[sweep]` table maps dotted keys to lists of values; the scenario then has one
//! point per combination (the cartesian product, keys in alphabetical order, the last
//! key varying fastest). Every point is resolved and checked when the scenario loads,
//! so a bad value fails before anything runs or is written.

use std::fmt;
use std::path::{Path, PathBuf};

use infersim_agents::grid::CarbonIntensity;
use infersim_agents::network::{self, NetworkConfig, NodeClass, ScheduledEvent, Similarity, TaskConfig, Validator};
use infersim_agents::pipeline::{
    Adapter, AdapterPolicy, Objective, PipelineConfig, Predictor, Stage, parse_profile_csv,
};
use infersim_agents::retraining::{
    Drift, DriftDistribution, Energy, Fleet, LossFunction, Monitor, Policy, Prices, Quality, RetrainingConfig, Signal,
    Training, TrainingPool,
};
use infersim_agents::serving::{ArrivalProcess, BatchTime, Failures, History, OverLimit, Routing, ServingConfig, Task};
use infersim_agents::station::{DurationDistribution, StationConfig};
use serde::Deserialize;
use toml::{Table, Value};

/// Built-in scenarios: name and TOML text, embedded in the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("serving", include_str!("../../data/scenarios/serving.toml")),
    ("mmc", include_str!("../../data/scenarios/mmc.toml")),
    ("bloom-sd", include_str!("../../data/scenarios/bloom-sd.toml")),
    ("bloom-stochastic", include_str!("../../data/scenarios/bloom-stochastic.toml")),
    ("bloom-deployment", include_str!("../../data/scenarios/bloom-deployment.toml")),
    ("bloom-sweep", include_str!("../../data/scenarios/bloom-sweep.toml")),
    ("nineteen-contenders", include_str!("../../data/scenarios/nineteen-contenders.toml")),
    ("ipa-video", include_str!("../../data/scenarios/ipa-video.toml")),
    ("llm-history", include_str!("../../data/scenarios/llm-history.toml")),
];

/// The scenario `infersim run` uses when none is named.
pub const DEFAULT_SCENARIO: &str = "serving";

/// Keys that cannot be swept: they describe the batch, not a point.
const UNSWEEPABLE: &[&str] =
    &["description", "simulation.replications", "simulation.seed", "simulation.sample_interval_s"];

/// Every key a scenario may contain, as dotted paths.
const KNOWN_KEYS: &[&str] = &[
    "description",
    // The miner network: arrays of tables are checked field by field when read.
    "tasks",
    "node_classes",
    "similarity",
    "events",
    "validator.period_s",
    "validator.quality_noise_sd",
    "validator.rtt_s",
    "validator.slo_s",
    "validator.concentration",
    "routing.policy",
    "routing.top",
    "routing.half_life_s",
    "routing.window_s",
    "routing.weight",
    "routing.quality_exponent",
    // The adaptive pipeline.
    "pipeline.sla_s",
    "stages",
    "load.rate_per_s",
    "load.amplitude",
    "load.period_h",
    "load.peak_h",
    "load.bursts_per_h",
    "load.burst_s",
    "load.burst_factor",
    "adapter.policy",
    "adapter.alpha",
    "adapter.beta",
    "adapter.gamma",
    "adapter.delta",
    "adapter.interval_s",
    "adapter.predictor",
    "adapter.reconfig_delay_s",
    "adapter.batch_cap",
    "adapter.max_replicas",
    "adapter.sla_share",
    "adapter.fixed",
    "resources.cores_per_replica",
    "resources.busy_w",
    "resources.idle_w",
    "resources.usd_per_core_h",
    "resources.usd_per_kwh",
    "feedback.fraction",
    "feedback.noise_sd",
    "efficiency.quality",
    "efficiency.cost_per_1k_usd",
    "station.servers",
    "station.arrival_rate_per_s",
    "station.service_rate_per_s",
    "station.service",
    "station.service_cv",
    "station.capacity",
    "serving.nodes",
    "serving.gpus_per_node",
    "serving.routing",
    "serving.max_batch",
    "serving.max_wait_s",
    "serving.context_limit_tokens",
    "serving.over_limit",
    "serving.history.keep_share",
    "serving.history.quality_loss",
    "serving.failures.mtbf_h",
    "serving.failures.mttr_h",
    "serving.arrivals.kind",
    "serving.arrivals.rate_per_s",
    "serving.arrivals.amplitude",
    "serving.arrivals.period_h",
    "serving.arrivals.peak_h",
    "serving.arrivals.rates_per_s",
    "serving.arrivals.mean_sojourn_s",
    "serving.arrivals.path",
    "serving.arrivals.first_gap_fraction",
    "serving.tasks",
    "serving.service.kind",
    "serving.service.batch_sizes",
    "serving.service.batch_latency_s",
    "serving.service.base_s",
    "serving.service.per_request_s",
    "serving.service.per_token_s",
    "serving.power.gpu_idle_w",
    "serving.power.gpu_max_w",
    "serving.power.node_baseline_w",
    "serving.power.pue",
    "serving.grid.kind",
    "serving.grid.kg_per_kwh",
    "serving.grid.amplitude",
    "serving.grid.peak_h",
    "serving.grid.period_h",
    "serving.grid.path",
    "serving.prices.energy_usd_per_kwh",
    "serving.prices.gpu_usd_per_hour",
    "arrivals.kind",
    "arrivals.rate_per_s",
    "arrivals.first_gap_fraction",
    "arrivals.amplitude",
    "arrivals.period_h",
    "arrivals.peak_h",
    "arrivals.rates_per_s",
    "arrivals.mean_sojourn_s",
    "arrivals.path",
    "fleet.gpus",
    "fleet.service_s",
    "fleet.service_cv",
    "fleet.failures.mtbf_h",
    "fleet.failures.mttr_h",
    "drift.per_request",
    "drift.distribution",
    "drift.cv",
    "drift.initial_loss",
    "drift.diverge_above",
    "quality.kind",
    "quality.best_loss",
    "quality.worst_loss",
    "monitor.policy",
    "monitor.upper",
    "monitor.lower",
    "monitor.interval_h",
    "monitor.period_h",
    "monitor.threshold_kg_per_kwh",
    "monitor.deadline_h",
    "monitor.signal",
    "monitor.ics_start_below",
    "monitor.ics_stop_above",
    "monitor.feedback_fraction",
    "monitor.feedback_noise_sd",
    "training.pool",
    "training.dedicated_gpus",
    "training.gpus_per_job",
    "training.samples_per_gpu_h",
    "training.samples_per_job",
    "training.base_samples",
    "training.loss.kind",
    "training.loss.scale",
    "training.loss.offset",
    "training.loss.a",
    "training.loss.b",
    "training.loss.c",
    "training.energy_per_sample_kwh",
    "training.gpu_power_kw",
    "training.preempt_above_queue",
    "energy.per_request_kwh",
    "energy.idle_kwh_per_h",
    "energy.pue",
    "grid.kind",
    "grid.kg_per_kwh",
    "grid.amplitude",
    "grid.peak_h",
    "grid.period_h",
    "grid.path",
    "prices.energy_usd_per_kwh",
    "prices.gpu_usd_per_hour",
    "simulation.duration_h",
    "simulation.customers",
    "simulation.warmup_customers",
    "simulation.duration_s",
    "simulation.warmup_s",
    "simulation.replications",
    "simulation.seed",
    "simulation.sample_interval_s",
];

/// Why a scenario could not be loaded. Every message names the source (file path or
/// built-in name) and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{source_name}: cannot read: {error}")]
    Read {
        /// The path.
        source_name: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Not a built-in name and not an existing file.
    #[error("no scenario named `{0}`: not a built-in (see `infersim list`) and no such file")]
    Unknown(String),
    /// The text is not valid TOML.
    #[error("{source_name}: malformed TOML: {message}")]
    Malformed {
        /// Where it came from.
        source_name: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that the schema does not have.
    #[error("{source_name}{line}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// Where it came from.
        source_name: String,
        /// The dotted key.
        key: String,
        /// ":LINE" when known.
        line: LineHint,
        /// ", did you mean `...`?" when a key is close.
        hint: NearestHint,
    },
    /// A trace file with a bad row.
    #[error("{path}:{line}: {message}")]
    Trace {
        /// The trace file.
        path: String,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A trace file that cannot be used, or a bad row of a Parquet trace (the message
    /// names the row).
    #[error("{path}: {message}")]
    TraceFile {
        /// The trace file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A `--set` argument without `=`.
    #[error("--set {0}: expected KEY=VALUE, e.g. --set station.servers=8")]
    BadOverride(String),
    /// A sweep entry that is not a non-empty list, or names a key that cannot vary.
    #[error("{source_name}: sweep.{key}: {problem}")]
    BadSweep {
        /// Where it came from.
        source_name: String,
        /// The swept key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A table (or one table of an array) that does not fit its schema: an unknown or
    /// missing field, a value of the wrong type, a name that is not one of the choices.
    #[error("{source_name}: {key}: {message}")]
    Table {
        /// Where it came from.
        source_name: String,
        /// The table, e.g. `routing` or `node_classes[2]`.
        key: String,
        /// The reader's message.
        message: String,
    },
    /// A value of the wrong type or out of range.
    #[error("{source_name}: {key} = {value} is invalid: expected {expected}")]
    Invalid {
        /// Where it came from.
        source_name: String,
        /// The dotted key.
        key: String,
        /// The value as written.
        value: String,
        /// What is allowed.
        expected: String,
    },
}

/// A line number suffix for messages.
#[derive(Debug, Default)]
pub struct LineHint(Option<usize>);

impl fmt::Display for LineHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// A "did you mean" suffix for messages.
#[derive(Debug, Default)]
pub struct NearestHint(Option<String>);

impl fmt::Display for NearestHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(key) => write!(f, "; did you mean `{key}`?"),
            None => write!(f, "; valid keys: {}", KNOWN_KEYS.join(", ")),
        }
    }
}

/// Edit distance, for suggesting the nearest valid key.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn nearest_key(key: &str) -> NearestHint {
    let best = KNOWN_KEYS.iter().map(|k| (levenshtein(key, k), *k)).min();
    NearestHint(best.filter(|(d, _)| *d <= key.len().max(4) / 2).map(|(_, k)| k.to_string()))
}

/// The 1-based line where `key`'s last component is assigned, if it can be found.
fn line_of(text: &str, key: &str) -> LineHint {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let index = text.lines().position(|l| {
        let l = l.trim_start();
        l.strip_prefix(leaf).is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    LineHint(index.map(|i| i + 1))
}

/// Dotted paths of every leaf in a table.
fn leaf_keys(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(t) if !KNOWN_KEYS.contains(&path.as_str()) => leaf_keys(t, &path, out),
            _ => out.push(path),
        }
    }
}

/// What one point of a scenario simulates: a closed set of models, dispatched with an
/// exhaustive `match` by the runner.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// The queueing station (`[station]`).
    Station(StationConfig),
    /// The serving world (`[serving]`).
    Serving(ServingConfig),
    /// The drift-and-retraining world (`[drift]` with `[monitor]`, `[training]`, ...).
    Retraining(RetrainingConfig),
    /// The miner network (`[validator]`, `[routing]`, `[[tasks]]`, `[[node_classes]]`).
    Network(NetworkConfig),
    /// The adaptive inference pipeline (`[pipeline]`, `[[stages]]`, `[load]`, `[adapter]`, ...).
    Pipeline(PipelineConfig),
}

/// One point of a (possibly swept) scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Position in the sweep, from 0.
    pub index: u32,
    /// The value of each swept key at this point, in [`Scenario::sweep_keys`] order.
    pub params: Vec<Value>,
    /// The resolved model.
    pub model: ModelConfig,
}

/// A scenario: its validated configuration plus where it came from.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The built-in name or the file path.
    pub source_name: String,
    /// The raw table after overrides, without the sweep.
    pub table: Table,
    /// Swept keys with their values, in alphabetical key order.
    pub sweep: Vec<(String, Vec<Value>)>,
    /// One line on what the scenario is.
    pub description: String,
    /// Every point; exactly one without a sweep.
    pub points: Vec<Point>,
    /// Replications to run unless the command line says otherwise.
    pub replications: u64,
    /// Master seed unless the command line says otherwise.
    pub seed: u64,
    /// Spacing of the sampled state in timeseries traces (s).
    pub sample_interval_s: f64,
    /// Where relative paths in the scenario (trace files) are resolved: the scenario
    /// file's directory, or the current directory for built-ins.
    pub base_dir: PathBuf,
}

/// One resolved point, before it is placed in the sweep.
#[derive(Clone)]
struct ResolvedPoint {
    description: String,
    model: ModelConfig,
    replications: u64,
    seed: u64,
    sample_interval_s: f64,
}

/// Flattens a sweep table into (dotted key, values) pairs.
fn flatten_sweep(table: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(t) if !KNOWN_KEYS.contains(&path.as_str()) => flatten_sweep(t, &path, out),
            _ => out.push((path, v.clone())),
        }
    }
}

/// Sets a dotted key in a table, creating intermediate tables.
fn set_key(table: &mut Table, key: &str, value: Value) -> Option<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        node = node.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new())).as_table_mut()?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Some(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: String,
    station: Option<RawStation>,
    serving: Option<RawServing>,
    simulation: RawSimulation,
    // The drift-and-retraining world.
    arrivals: Option<Value>,
    fleet: Option<Fleet>,
    drift: Option<RawDrift>,
    quality: Option<Quality>,
    monitor: Option<RawMonitor>,
    training: Option<RawTraining>,
    energy: Option<Energy>,
    grid: Option<Value>,
    prices: Option<Prices>,
    // The miner network.
    // Read table by table, so that an error names the table.
    validator: Option<Value>,
    routing: Option<Value>,
    tasks: Option<Value>,
    node_classes: Option<Value>,
    similarity: Option<Value>,
    events: Option<Value>,
    // The adaptive pipeline, also read table by table.
    pipeline: Option<Value>,
    stages: Option<Value>,
    load: Option<Value>,
    adapter: Option<Value>,
    resources: Option<Value>,
    feedback: Option<Value>,
    efficiency: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    sla_s: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    /// A built-in profile name or a path to a profile CSV.
    profile: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    policy: String,
    alpha: f64,
    beta: f64,
    gamma: f64,
    #[serde(default)]
    delta: f64,
    #[serde(default = "default_adapter_interval_s")]
    interval_s: f64,
    #[serde(default = "default_predictor")]
    predictor: Predictor,
    #[serde(default)]
    reconfig_delay_s: f64,
    #[serde(default = "default_batch_cap")]
    batch_cap: u32,
    #[serde(default = "default_max_replicas")]
    max_replicas: u32,
    #[serde(default = "default_sla_share")]
    sla_share: f64,
    fixed: Option<Vec<RawFixedStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixedStage {
    variant: String,
    batch: u32,
    replicas: u32,
}

fn default_adapter_interval_s() -> f64 {
    10.0
}
fn default_predictor() -> Predictor {
    Predictor::MovingMax { window: 6 }
}
fn default_batch_cap() -> u32 {
    64
}
fn default_max_replicas() -> u32 {
    32
}
fn default_sla_share() -> f64 {
    0.5
}

/// Reads one table of a scenario; an error names it.
fn table_as<T: serde::de::DeserializeOwned>(source_name: &str, key: &str, value: &Value) -> Result<T, ScenarioError> {
    value.clone().try_into().map_err(|e: toml::de::Error| ScenarioError::Table {
        source_name: source_name.into(),
        key: key.into(),
        message: e.message().trim().to_string(),
    })
}

/// Reads an array of tables (`[[key]]`); an error names the table by its index.
fn tables_as<T: serde::de::DeserializeOwned>(
    source_name: &str,
    key: &str,
    value: Option<&Value>,
) -> Result<Vec<T>, ScenarioError> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, item)| table_as(source_name, &format!("{key}[{i}]"), item)).collect()
        }
        Some(other) => Err(ScenarioError::Table {
            source_name: source_name.into(),
            key: key.into(),
            message: format!("expected an array of tables ([[{key}]]), found {}", other.type_str()),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrift {
    per_request: f64,
    #[serde(default = "default_drift_distribution")]
    distribution: String,
    cv: Option<f64>,
    initial_loss: f64,
    #[serde(default = "default_diverge_above")]
    diverge_above: f64,
}

fn default_drift_distribution() -> String {
    "constant".into()
}

fn default_diverge_above() -> f64 {
    10.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    policy: String,
    upper: f64,
    lower: f64,
    #[serde(default = "default_interval_h")]
    interval_h: f64,
    period_h: Option<f64>,
    threshold_kg_per_kwh: Option<f64>,
    deadline_h: Option<f64>,
    #[serde(default = "default_signal")]
    signal: String,
    ics_start_below: Option<f64>,
    ics_stop_above: Option<f64>,
    feedback_fraction: Option<f64>,
    #[serde(default)]
    feedback_noise_sd: f64,
}

fn default_signal() -> String {
    "loss".into()
}

fn default_interval_h() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraining {
    pool: String,
    dedicated_gpus: Option<i64>,
    gpus_per_job: i64,
    samples_per_gpu_h: f64,
    samples_per_job: f64,
    base_samples: f64,
    loss: LossFunction,
    #[serde(default)]
    energy_per_sample_kwh: f64,
    #[serde(default)]
    gpu_power_kw: f64,
    preempt_above_queue: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServing {
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
    /// An [`ArrivalProcess`], or `{ kind = "trace", path = "..." }`.
    arrivals: Value,
    tasks: Vec<Task>,
    service: BatchTime,
    power: RawPower,
    /// A [`CarbonIntensity`] table.
    grid: Value,
    prices: RawPrices,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    gpu_idle_w: f64,
    gpu_max_w: f64,
    node_baseline_w: f64,
    pue: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    energy_usd_per_kwh: f64,
    gpu_usd_per_hour: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    servers: i64,
    arrival_rate_per_s: f64,
    service_rate_per_s: f64,
    service: String,
    service_cv: Option<f64>,
    capacity: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    customers: Option<i64>,
    warmup_customers: Option<i64>,
    duration_s: Option<f64>,
    duration_h: Option<f64>,
    warmup_s: Option<f64>,
    #[serde(default = "default_replications")]
    replications: i64,
    #[serde(default = "default_seed")]
    seed: i64,
    #[serde(default = "default_sample_interval_s")]
    sample_interval_s: f64,
}

fn default_sample_interval_s() -> f64 {
    1.0
}

fn default_replications() -> i64 {
    30
}

fn default_seed() -> i64 {
    42
}

impl Scenario {
    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Result<Scenario, ScenarioError> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| ScenarioError::Unknown(name.into()))?;
        Scenario::parse(name, text)
    }

    /// A built-in name, or else a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if BUILTIN.iter().any(|(n, _)| *n == name_or_path) {
            return Scenario::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ScenarioError::Unknown(name_or_path.into()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| ScenarioError::Read { source_name: name_or_path.into(), error })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Scenario::parse_in(name_or_path, &text, &base_dir)
    }

    /// Parses and validates scenario text.
    pub fn parse(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_in(source_name, text, Path::new(""))
    }

    /// Like [`Scenario::parse`], resolving relative paths against `base_dir`.
    pub fn parse_in(source_name: &str, text: &str, base_dir: &Path) -> Result<Scenario, ScenarioError> {
        let mut table: Table = text.parse().map_err(|e: toml::de::Error| ScenarioError::Malformed {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        let sweep_table = match table.remove("sweep") {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                return Err(ScenarioError::BadSweep {
                    source_name: source_name.into(),
                    key: String::new(),
                    problem: format!("expected a table of key = [values], found {other}"),
                });
            }
        };
        let mut keys = Vec::new();
        leaf_keys(&table, "", &mut keys);
        let mut sweep_entries = Vec::new();
        flatten_sweep(&sweep_table, "", &mut sweep_entries);
        let unknown =
            keys.iter().chain(sweep_entries.iter().map(|(k, _)| k)).find(|k| !KNOWN_KEYS.contains(&k.as_str()));
        if let Some(key) = unknown {
            return Err(ScenarioError::UnknownKey {
                source_name: source_name.into(),
                line: line_of(text, key),
                hint: nearest_key(key),
                key: key.clone(),
            });
        }
        let mut sweep = Vec::new();
        for (key, value) in sweep_entries {
            let bad = |problem: String| ScenarioError::BadSweep {
                source_name: source_name.into(),
                key: key.clone(),
                problem,
            };
            if UNSWEEPABLE.contains(&key.as_str()) {
                return Err(bad("this key describes the batch and cannot be swept".into()));
            }
            match value {
                Value::Array(values) if !values.is_empty() => sweep.push((key, values)),
                Value::Array(_) => return Err(bad("the list of values is empty".into())),
                other => return Err(bad(format!("expected a list of values, found {other}"))),
            }
        }
        Scenario::resolve(source_name, base_dir, table, sweep)
    }

    /// Applies `key=value` overrides (dotted TOML paths; values in TOML syntax, bare
    /// words taken as strings) and re-validates.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<(), ScenarioError> {
        let mut table = self.table.clone();
        let mut sweep = self.sweep.clone();
        for o in overrides {
            let o = o.as_ref();
            let (key, raw) = o.split_once('=').ok_or_else(|| ScenarioError::BadOverride(o.into()))?;
            let key = key.trim();
            if !KNOWN_KEYS.contains(&key) {
                return Err(ScenarioError::UnknownKey {
                    source_name: "--set".into(),
                    key: key.into(),
                    line: LineHint::default(),
                    hint: nearest_key(key),
                });
            }
            let value = format!("v = {}", raw.trim())
                .parse::<Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| Value::String(raw.trim().into()));
            set_key(&mut table, key, value).ok_or_else(|| ScenarioError::BadOverride(o.into()))?;
            // Setting a swept key pins it: it leaves the sweep.
            sweep.retain(|(k, _)| k != key);
        }
        let source_name = if self.source_name.ends_with("(with --set)") {
            self.source_name.clone()
        } else {
            format!("{} (with --set)", self.source_name)
        };
        let base_dir = self.base_dir.clone();
        *self = Scenario::resolve(&source_name, &base_dir, table, sweep)?;
        Ok(())
    }

    /// The swept keys, in point-parameter order.
    pub fn sweep_keys(&self) -> Vec<String> {
        self.sweep.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Resolves the base table and every point of the sweep.
    fn resolve(
        source_name: &str,
        base_dir: &Path,
        table: Table,
        sweep: Vec<(String, Vec<Value>)>,
    ) -> Result<Scenario, ScenarioError> {
        let base = Scenario::resolve_point(source_name, base_dir, table.clone())?;
        let total: usize = sweep.iter().map(|(_, v)| v.len()).product();
        let too_many = || ScenarioError::BadSweep {
            source_name: source_name.into(),
            key: String::new(),
            problem: "more than 2^32 points".into(),
        };
        let mut points = Vec::with_capacity(total);
        for index in 0..total {
            // Mixed radix, last key fastest.
            let mut rest = index;
            let mut params = vec![Value::Boolean(false); sweep.len()];
            let mut point_table = table.clone();
            for (k, (key, values)) in sweep.iter().enumerate().rev() {
                let value = values[rest % values.len()].clone();
                rest /= values.len();
                set_key(&mut point_table, key, value.clone()).ok_or_else(|| ScenarioError::BadSweep {
                    source_name: source_name.into(),
                    key: key.clone(),
                    problem: "cannot be set".into(),
                })?;
                params[k] = value;
            }
            let model = if sweep.is_empty() {
                base.model.clone()
            } else {
                Scenario::resolve_point(&format!("{source_name} (sweep point {index})"), base_dir, point_table)?.model
            };
            points.push(Point { index: u32::try_from(index).map_err(|_| too_many())?, params, model });
        }
        Ok(Scenario {
            source_name: source_name.into(),
            table,
            sweep,
            description: base.description,
            points,
            replications: base.replications,
            seed: base.seed,
            sample_interval_s: base.sample_interval_s,
            base_dir: base_dir.to_path_buf(),
        })
    }

    fn resolve_point(source_name: &str, base_dir: &Path, table: Table) -> Result<ResolvedPoint, ScenarioError> {
        let raw: RawScenario = table.clone().try_into().map_err(|e: toml::de::Error| ScenarioError::Malformed {
            source_name: source_name.into(),
            message: e.message().to_string(),
        })?;
        let invalid = |key: &str, value: &dyn fmt::Display, expected: &str| ScenarioError::Invalid {
            source_name: source_name.into(),
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        };
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 { Ok(v) } else { Err(invalid(key, &v, "a finite number > 0")) }
        };
        let sim = &raw.simulation;
        let replications = u64::try_from(sim.replications)
            .ok()
            .filter(|&r| r >= 1)
            .ok_or_else(|| invalid("simulation.replications", &sim.replications, "an integer >= 1"))?;
        let seed = u64::try_from(sim.seed).map_err(|_| invalid("simulation.seed", &sim.seed, "an integer >= 0"))?;
        let only = |key: &str, present: bool, model: &str| {
            if present {
                Err(invalid(key, &"(set)", &format!("no value: it applies to [{model}] scenarios")))
            } else {
                Ok(())
            }
        };
        let retraining_sections = [
            ("arrivals", raw.arrivals.is_some()),
            ("fleet", raw.fleet.is_some()),
            ("drift", raw.drift.is_some()),
            ("quality", raw.quality.is_some()),
            ("monitor", raw.monitor.is_some()),
            ("training", raw.training.is_some()),
            ("energy", raw.energy.is_some()),
            ("grid", raw.grid.is_some()),
            ("prices", raw.prices.is_some()),
        ];
        let retraining = retraining_sections.iter().any(|(_, present)| *present);
        let network_sections = [
            ("validator", raw.validator.is_some()),
            ("routing", raw.routing.is_some()),
            ("tasks", raw.tasks.is_some()),
            ("node_classes", raw.node_classes.is_some()),
        ];
        let network =
            network_sections.iter().any(|(_, present)| *present) || raw.similarity.is_some() || raw.events.is_some();
        let pipeline_sections = [
            ("pipeline", raw.pipeline.is_some()),
            ("stages", raw.stages.is_some()),
            ("load", raw.load.is_some()),
            ("adapter", raw.adapter.is_some()),
            ("resources", raw.resources.is_some()),
            ("feedback", raw.feedback.is_some()),
            ("efficiency", raw.efficiency.is_some()),
        ];
        let pipeline = pipeline_sections.iter().any(|(_, present)| *present);
        let model = match (&raw.station, &raw.serving, retraining) {
            _ if pipeline => {
                if raw.station.is_some() || raw.serving.is_some() || retraining || network {
                    return Err(invalid(
                        "[pipeline] / [adapter]",
                        &"",
                        "exactly one model: the pipeline's tables cannot stand beside another model's",
                    ));
                }
                if let Some((section, _)) = pipeline_sections.iter().find(|(_, present)| !present) {
                    return Err(invalid(
                        &format!("[{section}]"),
                        &"(missing)",
                        "a table: a pipeline scenario needs [pipeline], [[stages]], [load], [adapter], [resources], \
                         [feedback] and [efficiency]",
                    ));
                }
                only("simulation.customers", sim.customers.is_some(), "station")?;
                only("simulation.warmup_customers", sim.warmup_customers.is_some(), "station")?;
                only("simulation.warmup_s", sim.warmup_s.is_some(), "serving")?;
                ModelConfig::Pipeline(Scenario::resolve_pipeline(source_name, &raw, sim, base_dir, &invalid)?)
            }
            _ if network => {
                if raw.station.is_some() || raw.serving.is_some() || retraining {
                    return Err(invalid(
                        "[validator] / [routing]",
                        &"",
                        "exactly one model: the miner network's tables cannot stand beside [station], \
                         [serving] or the drift-and-retraining tables",
                    ));
                }
                if let Some((section, _)) = network_sections.iter().find(|(_, present)| !present) {
                    return Err(invalid(
                        &format!("[{section}]"),
                        &"(missing)",
                        "a table: a miner-network scenario needs [validator], [routing], [[tasks]] and \
                         [[node_classes]]",
                    ));
                }
                only("simulation.customers", sim.customers.is_some(), "station")?;
                only("simulation.warmup_customers", sim.warmup_customers.is_some(), "station")?;
                only("simulation.warmup_s", sim.warmup_s.is_some(), "serving")?;
                let present = "checked present";
                let config = NetworkConfig {
                    tasks: tables_as::<TaskConfig>(source_name, "tasks", raw.tasks.as_ref())?,
                    node_classes: tables_as::<NodeClass>(source_name, "node_classes", raw.node_classes.as_ref())?,
                    similarity: tables_as::<Similarity>(source_name, "similarity", raw.similarity.as_ref())?,
                    validator: table_as::<Validator>(source_name, "validator", raw.validator.as_ref().expect(present))?,
                    routing: table_as::<network::Routing>(
                        source_name,
                        "routing",
                        raw.routing.as_ref().expect(present),
                    )?,
                    events: tables_as::<ScheduledEvent>(source_name, "events", raw.events.as_ref())?,
                    duration_s: Scenario::duration_s(sim, &invalid)?,
                };
                config.validate().map_err(|e| {
                    let key = if e.key == "duration_s" { "simulation.duration_s".to_string() } else { e.key.clone() };
                    invalid(&key, &e.value, e.allowed)
                })?;
                ModelConfig::Network(config)
            }
            (Some(s), None, false) => {
                only("simulation.duration_s", sim.duration_s.is_some(), "serving")?;
                only("simulation.duration_h", sim.duration_h.is_some(), "serving")?;
                only("simulation.warmup_s", sim.warmup_s.is_some(), "serving")?;
                ModelConfig::Station(Scenario::resolve_station(s, sim, &invalid)?)
            }
            (None, Some(s), false) => {
                only("simulation.customers", sim.customers.is_some(), "station")?;
                only("simulation.warmup_customers", sim.warmup_customers.is_some(), "station")?;
                ModelConfig::Serving(Scenario::resolve_serving(s, sim, base_dir, &invalid)?)
            }
            (None, None, true) => {
                if let Some((section, _)) = retraining_sections.iter().find(|(_, present)| !present) {
                    return Err(invalid(
                        &format!("[{section}]"),
                        &"(missing)",
                        "a table: a drift-and-retraining scenario needs [arrivals], [fleet], [drift], \
                         [quality], [monitor], [training], [energy], [grid] and [prices]",
                    ));
                }
                only("simulation.customers", sim.customers.is_some(), "station")?;
                only("simulation.warmup_customers", sim.warmup_customers.is_some(), "station")?;
                only("simulation.warmup_s", sim.warmup_s.is_some(), "serving")?;
                ModelConfig::Retraining(Scenario::resolve_retraining(&raw, sim, base_dir, &invalid)?)
            }
            _ => {
                return Err(invalid(
                    "[station] / [serving] / [drift]",
                    &"",
                    "exactly one model: [station], [serving], or the drift-and-retraining tables ([drift], \
                     [monitor], [training], ...)",
                ));
            }
        };
        Ok(ResolvedPoint {
            description: raw.description,
            model,
            replications,
            seed,
            sample_interval_s: positive("simulation.sample_interval_s", sim.sample_interval_s)?,
        })
    }

    fn resolve_station(
        s: &RawStation,
        sim: &RawSimulation,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<StationConfig, ScenarioError> {
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 { Ok(v) } else { Err(invalid(key, &v, "a finite number > 0")) }
        };
        let servers = u32::try_from(s.servers)
            .ok()
            .filter(|&c| c >= 1)
            .ok_or_else(|| invalid("station.servers", &s.servers, "an integer from 1 to 4294967295"))?;
        let lambda = positive("station.arrival_rate_per_s", s.arrival_rate_per_s)?;
        let mu = positive("station.service_rate_per_s", s.service_rate_per_s)?;
        let service = match (s.service.as_str(), s.service_cv) {
            ("exponential", None) => DurationDistribution::Exponential { mean_s: 1.0 / mu },
            ("deterministic", None) => DurationDistribution::Deterministic { value_s: 1.0 / mu },
            ("lognormal", Some(cv)) if cv.is_finite() && cv >= 0.0 => {
                DurationDistribution::LogNormal { mean_s: 1.0 / mu, cv }
            }
            ("lognormal", Some(cv)) => return Err(invalid("station.service_cv", &cv, "a finite number >= 0")),
            ("lognormal", None) => {
                return Err(invalid("station.service_cv", &"(missing)", "a number >= 0 when service = \"lognormal\""));
            }
            ("exponential" | "deterministic", Some(cv)) => {
                return Err(invalid("station.service_cv", &cv, "no value unless service = \"lognormal\""));
            }
            (other, _) => {
                return Err(invalid("station.service", &other, "one of exponential, deterministic, lognormal"));
            }
        };
        let capacity = match s.capacity {
            None => None,
            Some(k) => Some(
                u32::try_from(k)
                    .ok()
                    .filter(|&k| k >= servers)
                    .ok_or_else(|| invalid("station.capacity", &k, "an integer >= station.servers"))?,
            ),
        };
        let warmup_raw = sim.warmup_customers.unwrap_or(0);
        let warmup = u64::try_from(warmup_raw)
            .map_err(|_| invalid("simulation.warmup_customers", &warmup_raw, "an integer >= 0"))?;
        let customers_raw = sim
            .customers
            .ok_or_else(|| invalid("simulation.customers", &"(missing)", "an integer >= 2 for [station]"))?;
        let customers = u64::try_from(customers_raw).ok().filter(|&n| n >= warmup + 2).ok_or_else(|| {
            invalid("simulation.customers", &customers_raw, "an integer >= simulation.warmup_customers + 2")
        })?;
        Ok(StationConfig {
            servers,
            interarrival: DurationDistribution::exponential_rate(lambda),
            service,
            capacity,
            customers,
            warmup_customers: warmup,
        })
    }

    fn resolve_serving(
        s: &RawServing,
        sim: &RawSimulation,
        base_dir: &Path,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<ServingConfig, ScenarioError> {
        let count = |key: &str, v: i64| {
            u32::try_from(v).ok().filter(|&n| n >= 1).ok_or_else(|| invalid(key, &v, "an integer from 1 to 4294967295"))
        };
        let duration_s = Scenario::duration_s(sim, invalid)?;
        let config =
            ServingConfig {
                arrivals: Scenario::resolve_arrivals(&s.arrivals, &s.tasks, base_dir, invalid)?,
                tasks: s.tasks.clone(),
                routing: s.routing,
                nodes: count("serving.nodes", s.nodes)?,
                gpus_per_node: count("serving.gpus_per_node", s.gpus_per_node)?,
                max_batch: count("serving.max_batch", s.max_batch)?,
                max_wait_s: s.max_wait_s,
                context_limit_tokens: match s.context_limit_tokens {
                    None => None,
                    Some(n) => Some(u32::try_from(n).ok().filter(|&n| n >= 2).ok_or_else(|| {
                        invalid("serving.context_limit_tokens", &n, "an integer from 2 to 4294967295")
                    })?),
                },
                over_limit: s.over_limit,
                history: s.history,
                failures: s.failures,
                service: s.service.clone(),
                gpu_idle_w: s.power.gpu_idle_w,
                gpu_max_w: s.power.gpu_max_w,
                node_baseline_w: s.power.node_baseline_w,
                pue: s.power.pue,
                grid: Scenario::resolve_grid("serving.grid", &s.grid, base_dir, invalid)?,
                energy_usd_per_kwh: s.prices.energy_usd_per_kwh,
                gpu_usd_per_hour: s.prices.gpu_usd_per_hour,
                duration_s,
                warmup_s: sim.warmup_s.unwrap_or(0.0),
            };
        config.validate().map_err(|e| {
            // Name the key as the scenario file spells it.
            let key = match e.key.as_str() {
                key if key.starts_with("arrivals.") => format!("serving.{key}"),
                key if key.starts_with("service.") => format!("serving.{key}"),
                "gpu_idle_w" | "gpu_max_w" | "node_baseline_w" | "pue" => format!("serving.power.{}", e.key),
                "energy_usd_per_kwh" | "gpu_usd_per_hour" => format!("serving.prices.{}", e.key),
                "duration_s" | "warmup_s" => format!("simulation.{}", e.key),
                other => format!("serving.{other}"),
            };
            invalid(&key, &e.value, e.allowed)
        })?;
        Ok(config)
    }

    /// `simulation.duration_s` or `simulation.duration_h` (exactly one), in seconds.
    fn duration_s(
        sim: &RawSimulation,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<f64, ScenarioError> {
        match (sim.duration_s, sim.duration_h) {
            (Some(s), None) => Ok(s),
            (None, Some(h)) if h.is_finite() && h > 0.0 => Ok(h * 3600.0),
            (None, Some(h)) => Err(invalid("simulation.duration_h", &h, "a finite number of hours > 0")),
            (Some(_), Some(_)) => Err(invalid("simulation.duration_h", &"(set)", "no value when duration_s is set")),
            (None, None) => {
                Err(invalid("simulation.duration_s", &"(missing)", "duration_s (seconds) or duration_h (hours)"))
            }
        }
    }

    fn resolve_pipeline(
        source_name: &str,
        raw: &RawScenario,
        sim: &RawSimulation,
        base_dir: &Path,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<PipelineConfig, ScenarioError> {
        let present = "checked present";
        let p: RawPipeline = table_as(source_name, "pipeline", raw.pipeline.as_ref().expect(present))?;
        let raw_stages: Vec<RawStage> = tables_as(source_name, "stages", raw.stages.as_ref())?;
        let mut stages = Vec::with_capacity(raw_stages.len());
        for (i, st) in raw_stages.iter().enumerate() {
            let variants = match infersim_agents::pipeline::BUILTIN_PROFILES.iter().find(|(n, _)| *n == st.profile) {
                Some((_, text)) => parse_profile_csv(text).map_err(|e| ScenarioError::TraceFile {
                    path: format!("built-in profile {}", st.profile),
                    message: e.to_string(),
                })?,
                None => {
                    let path = base_dir.join(&st.profile);
                    if !path.exists() {
                        let names: Vec<&str> =
                            infersim_agents::pipeline::BUILTIN_PROFILES.iter().map(|(n, _)| *n).collect();
                        return Err(invalid(
                            &format!("stages[{i}].profile"),
                            &st.profile,
                            &format!("a built-in profile ({}) or a CSV file", names.join(", ")),
                        ));
                    }
                    let text = std::fs::read_to_string(&path)
                        .map_err(|error| ScenarioError::Read { source_name: path.display().to_string(), error })?;
                    parse_profile_csv(&text).map_err(|e| ScenarioError::Trace {
                        path: path.display().to_string(),
                        line: e.line,
                        message: e.message,
                    })?
                }
            };
            let stage = Stage::new(st.name.clone(), variants).map_err(|variant| {
                invalid(
                    &format!("stages[{i}].profile"),
                    &st.profile,
                    &format!("at least 3 batch sizes per variant ({variant} has fewer)"),
                )
            })?;
            stages.push(stage);
        }
        let a: RawAdapter = table_as(source_name, "adapter", raw.adapter.as_ref().expect(present))?;
        let policy = match (a.policy.as_str(), &a.fixed) {
            ("ipa", _) => AdapterPolicy::Ipa,
            ("fixed", Some(plan)) => {
                AdapterPolicy::Fixed(plan.iter().map(|f| (f.variant.clone(), f.batch, f.replicas)).collect())
            }
            ("fixed", None) => {
                return Err(invalid(
                    "adapter.fixed",
                    &"(missing)",
                    "one {variant, batch, replicas} per stage with policy = \"fixed\"",
                ));
            }
            (other, _) => return Err(invalid("adapter.policy", &other, "fixed or ipa")),
        };
        let config = PipelineConfig {
            stages,
            load: table_as(source_name, "load", raw.load.as_ref().expect(present))?,
            adapter: Adapter {
                policy,
                objective: Objective { alpha: a.alpha, beta: a.beta, gamma: a.gamma, delta: a.delta },
                interval_s: a.interval_s,
                predictor: a.predictor,
                reconfig_delay_s: a.reconfig_delay_s,
                batch_cap: a.batch_cap,
                max_replicas: a.max_replicas,
                sla_share: a.sla_share,
            },
            sla_s: p.sla_s,
            resources: table_as(source_name, "resources", raw.resources.as_ref().expect(present))?,
            feedback: table_as(source_name, "feedback", raw.feedback.as_ref().expect(present))?,
            efficiency: table_as(source_name, "efficiency", raw.efficiency.as_ref().expect(present))?,
            duration_s: Scenario::duration_s(sim, invalid)?,
        };
        config.validate().map_err(|e| {
            let key = match e.key.as_str() {
                "duration_s" => "simulation.duration_s".to_string(),
                "sla_s" => "pipeline.sla_s".to_string(),
                other => other.to_string(),
            };
            invalid(&key, &e.value, e.allowed)
        })?;
        Ok(config)
    }

    fn resolve_retraining(
        raw: &RawScenario,
        sim: &RawSimulation,
        base_dir: &Path,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<RetrainingConfig, ScenarioError> {
        let present = "checked present";
        let (d, m, t) = (
            raw.drift.as_ref().expect(present),
            raw.monitor.as_ref().expect(present),
            raw.training.as_ref().expect(present),
        );
        let need = |key: &str, v: Option<f64>, policy: &str| {
            v.ok_or_else(|| invalid(key, &"(missing)", &format!("a number when monitor.policy = \"{policy}\"")))
        };
        let policy = match m.policy.as_str() {
            "vensim" => Policy::Vensim,
            "hysteresis" => Policy::Hysteresis,
            "periodic" => Policy::Periodic { period_h: need("monitor.period_h", m.period_h, "periodic")? },
            "carbon_aware" => Policy::CarbonAware {
                threshold_kg_per_kwh: need("monitor.threshold_kg_per_kwh", m.threshold_kg_per_kwh, "carbon_aware")?,
                deadline_h: need("monitor.deadline_h", m.deadline_h, "carbon_aware")?,
            },
            other => {
                return Err(invalid("monitor.policy", &other, "one of vensim, hysteresis, periodic, carbon_aware"));
            }
        };
        let ics_key = |key: &str, v: Option<f64>| {
            v.ok_or_else(|| invalid(key, &"(missing)", "a number when monitor.signal = \"ics\""))
        };
        let signal = match m.signal.as_str() {
            "loss" => {
                for (key, v) in [
                    ("monitor.ics_start_below", m.ics_start_below),
                    ("monitor.ics_stop_above", m.ics_stop_above),
                    ("monitor.feedback_fraction", m.feedback_fraction),
                ] {
                    if let Some(v) = v {
                        return Err(invalid(key, &v, "no value unless monitor.signal = \"ics\""));
                    }
                }
                Signal::Loss
            }
            "ics" => Signal::Ics {
                start_below: ics_key("monitor.ics_start_below", m.ics_start_below)?,
                stop_above: ics_key("monitor.ics_stop_above", m.ics_stop_above)?,
                fraction: ics_key("monitor.feedback_fraction", m.feedback_fraction)?,
                noise_sd: m.feedback_noise_sd,
            },
            other => return Err(invalid("monitor.signal", &other, "loss or ics")),
        };
        let distribution = match (d.distribution.as_str(), d.cv) {
            ("constant", None) => DriftDistribution::Constant,
            ("gamma", Some(cv)) => DriftDistribution::Gamma { cv },
            ("lognormal", Some(cv)) => DriftDistribution::LogNormal { cv },
            ("gamma" | "lognormal", None) => {
                return Err(invalid("drift.cv", &"(missing)", "a number > 0 for gamma and lognormal drift"));
            }
            ("constant", Some(cv)) => return Err(invalid("drift.cv", &cv, "no value for constant drift")),
            (other, _) => return Err(invalid("drift.distribution", &other, "one of constant, gamma, lognormal")),
        };
        let gpus = |key: &str, v: i64| {
            u32::try_from(v).ok().filter(|&n| n >= 1).ok_or_else(|| invalid(key, &v, "an integer from 1 to 4294967295"))
        };
        let pool = match (t.pool.as_str(), t.dedicated_gpus) {
            ("shared", None) => TrainingPool::Shared,
            ("dedicated", Some(n)) => TrainingPool::Dedicated { gpus: gpus("training.dedicated_gpus", n)? },
            ("dedicated", None) => {
                return Err(invalid("training.dedicated_gpus", &"(missing)", "an integer >= 1 with a dedicated pool"));
            }
            ("shared", Some(n)) => return Err(invalid("training.dedicated_gpus", &n, "no value with a shared pool")),
            (other, _) => return Err(invalid("training.pool", &other, "shared or dedicated")),
        };
        let preempt_above_queue = match t.preempt_above_queue {
            None => None,
            Some(n) => Some(
                u32::try_from(n)
                    .map_err(|_| invalid("training.preempt_above_queue", &n, "an integer from 0 to 4294967295"))?,
            ),
        };
        let config = RetrainingConfig {
            arrivals: Scenario::resolve_arrivals_at(
                "arrivals",
                raw.arrivals.as_ref().expect(present),
                &[],
                base_dir,
                invalid,
            )?,
            fleet: raw.fleet.expect(present),
            drift: Drift {
                per_request: d.per_request,
                distribution,
                initial_loss: d.initial_loss,
                diverge_above: d.diverge_above,
            },
            quality: raw.quality.expect(present),
            monitor: Monitor { policy, upper: m.upper, lower: m.lower, interval_h: m.interval_h, signal },
            training: Training {
                pool,
                gpus_per_job: gpus("training.gpus_per_job", t.gpus_per_job)?,
                samples_per_gpu_h: t.samples_per_gpu_h,
                samples_per_job: t.samples_per_job,
                base_samples: t.base_samples,
                loss: t.loss,
                energy_per_sample_kwh: t.energy_per_sample_kwh,
                gpu_power_kw: t.gpu_power_kw,
                preempt_above_queue,
            },
            energy: raw.energy.expect(present),
            grid: Scenario::resolve_grid("grid", raw.grid.as_ref().expect(present), base_dir, invalid)?,
            prices: raw.prices.expect(present),
            duration_s: Scenario::duration_s(sim, invalid)?,
        };
        config.validate().map_err(|e| {
            let key = if e.key == "duration_s" { "simulation.duration_s".to_string() } else { e.key.clone() };
            invalid(&key, &e.value, e.allowed)
        })?;
        Ok(config)
    }

    /// A grid table at `key`: `{ kind = "constant" | "diurnal" | "series", ... }`
    /// (without `kind`: constant); a series names a CSV with `t_h,kg_per_kwh` rows,
    /// relative to the scenario file.
    fn resolve_grid(
        key: &str,
        value: &Value,
        base_dir: &Path,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<CarbonIntensity, ScenarioError> {
        let malformed = |message: String| invalid(key, &"(table)", &message);
        let mut value = value.clone();
        if let Value::Table(table) = &mut value
            && !table.contains_key("kind")
        {
            table.insert("kind".into(), Value::String("constant".into()));
        }
        if value.get("kind").and_then(Value::as_str) == Some("series") {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct RawSeries {
                #[allow(dead_code)]
                kind: String,
                path: String,
            }
            let raw: RawSeries = value.try_into().map_err(|e: toml::de::Error| malformed(e.message().to_string()))?;
            let points = crate::replay::read_intensity_csv(&base_dir.join(&raw.path))?;
            return Ok(CarbonIntensity::Series { points: points.into() });
        }
        value
            .try_into()
            .map_err(|e: toml::de::Error| malformed(format!("{} (kinds: constant, diurnal, series)", e.message())))
    }

    fn resolve_arrivals(
        value: &Value,
        tasks: &[Task],
        base_dir: &Path,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<ArrivalProcess, ScenarioError> {
        Scenario::resolve_arrivals_at("serving.arrivals", value, tasks, base_dir, invalid)
    }

    /// An arrivals table at `key`: a process, or `{ kind = "trace", path = "..." }`.
    fn resolve_arrivals_at(
        key: &str,
        value: &Value,
        tasks: &[Task],
        base_dir: &Path,
        invalid: &dyn Fn(&str, &dyn fmt::Display, &str) -> ScenarioError,
    ) -> Result<ArrivalProcess, ScenarioError> {
        let malformed = |message: String| invalid(key, &"(table)", &message);
        if value.get("kind").and_then(Value::as_str) == Some("trace") {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct RawTrace {
                #[allow(dead_code)]
                kind: String,
                path: String,
            }
            let raw: RawTrace =
                value.clone().try_into().map_err(|e: toml::de::Error| malformed(e.message().to_string()))?;
            let path = base_dir.join(&raw.path);
            let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
            let is_parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
            let requests = if is_parquet {
                crate::replay::read_trace_parquet(&path, &names)?
            } else {
                crate::replay::read_trace_csv(&path, &names)?
            };
            return Ok(ArrivalProcess::Replay { requests: requests.into() });
        }
        value.clone().try_into().map_err(|e: toml::de::Error| {
            malformed(format!("{} (kinds: poisson, deterministic, diurnal, mmpp, trace)", e.message()))
        })
    }

    /// The resolved scenario as TOML text, sweep included.
    pub fn to_toml(&self) -> String {
        let mut table = self.table.clone();
        if !self.sweep.is_empty() {
            let mut sweep = Table::new();
            for (key, values) in &self.sweep {
                set_key(&mut sweep, key, Value::Array(values.clone())).expect("sweep keys are valid paths");
            }
            table.insert("sweep".into(), Value::Table(sweep));
        }
        toml::to_string_pretty(&table).expect("a TOML table always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Scenario::parse("t.toml", text).unwrap_err().to_string()
    }

    const GOOD: &str = include_str!("../../data/scenarios/mmc.toml");

    #[test]
    fn builtins_parse() {
        for (name, _) in BUILTIN {
            Scenario::builtin(name).unwrap();
        }
        assert!(Scenario::builtin(DEFAULT_SCENARIO).is_ok());
    }

    #[test]
    fn the_serving_scenario_resolves_and_checks_its_keys() {
        let s = Scenario::builtin("serving").unwrap();
        let ModelConfig::Serving(c) = &s.points[0].model else { panic!("serving is a serving scenario") };
        assert_eq!((c.nodes, c.gpus_per_node, c.max_batch), (2, 4, 8));
        assert_eq!(c.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["chat", "code"]);
        let text = include_str!("../../data/scenarios/serving.toml");
        let e =
            Scenario::parse("s.toml", &text.replace("gpus_per_node = 4", "gpus_per_nod = 4")).unwrap_err().to_string();
        assert!(e.contains("unknown key `serving.gpus_per_nod`; did you mean `serving.gpus_per_node`?"), "{e}");
        let e = Scenario::parse("s.toml", &text.replace("weight = 3.0", "wieght = 3.0")).unwrap_err().to_string();
        assert!(e.contains("wieght"), "{e}");
        let mut changed = s.clone();
        changed.apply_overrides(&["serving.arrivals.rate_per_s=30", "serving.power.gpu_max_w=300"]).unwrap();
        let ModelConfig::Serving(c) = &changed.points[0].model else { unreachable!() };
        assert_eq!((c.arrivals.rate_per_s(), c.gpu_max_w), (30.0, 300.0));
        let mut diurnal = s.clone();
        let cycle = [
            "serving.arrivals.kind=diurnal",
            "serving.arrivals.amplitude=0.5",
            "serving.arrivals.period_h=24",
            "serving.arrivals.peak_h=14",
        ];
        diurnal.apply_overrides(&cycle).unwrap();
        let ModelConfig::Serving(c) = &diurnal.points[0].model else { unreachable!() };
        assert!(matches!(c.arrivals, ArrivalProcess::Diurnal { amplitude: 0.5, .. }));
        let e = diurnal.apply_overrides(&["serving.arrivals.amplitude=2"]).unwrap_err().to_string();
        assert!(e.contains("serving.arrivals.amplitude = 2 is invalid: expected a number from 0 to 1"), "{e}");
        // --set cannot delete keys, so switching to mmpp that way leaves the old rate behind.
        let mut bursty = s.clone();
        let e = bursty.apply_overrides(&["serving.arrivals.kind=mmpp"]).unwrap_err().to_string();
        assert!(e.contains("unknown field `rate_per_s`, expected `rates_per_s` or `mean_sojourn_s`"), "{e}");
        let mmpp = text.replace(
            "kind = \"poisson\"\nrate_per_s = 20.0",
            "kind = \"mmpp\"\nrates_per_s = [5.0, 50.0]\nmean_sojourn_s = [300.0]",
        );
        let e = Scenario::parse("s.toml", &mmpp).unwrap_err().to_string();
        assert!(
            e.contains("serving.arrivals.rates_per_s") && e.contains("as many mean_sojourn_s as rates_per_s"),
            "{e}"
        );
        let both = format!(
            "{text}\n[station]\nservers = 1\narrival_rate_per_s = 1.0\nservice_rate_per_s = 2.0\nservice = \"exponential\"\n"
        );
        assert!(Scenario::parse("s.toml", &both).unwrap_err().to_string().contains("exactly one model"));
    }

    #[test]
    fn grid_intensity_can_vary_by_hour_or_come_from_a_csv() {
        let mut s = Scenario::builtin("serving").unwrap();
        s.apply_overrides(&[
            "serving.grid.kind=diurnal",
            "serving.grid.kg_per_kwh=0.3",
            "serving.grid.amplitude=0.5",
            "serving.grid.peak_h=19",
        ])
        .unwrap();
        let ModelConfig::Serving(c) = &s.points[0].model else { unreachable!() };
        assert_eq!(c.grid, CarbonIntensity::Diurnal { kg_per_kwh: 0.3, amplitude: 0.5, peak_h: 19.0, period_h: 24.0 });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("grid.csv"), "t_h,kg_per_kwh\n0,0.5\n6,0.2\n").unwrap();
        let text =
            BUILTIN[0].1.replace("kind = \"constant\"\nkg_per_kwh = 0.394", "kind = \"series\"\npath = \"grid.csv\"");
        let s = Scenario::parse_in("s.toml", &text, dir.path()).unwrap();
        let ModelConfig::Serving(c) = &s.points[0].model else { unreachable!() };
        assert_eq!(c.grid, CarbonIntensity::Series { points: vec![(0.0, 0.5), (6.0, 0.2)].into() });
        std::fs::write(dir.path().join("grid.csv"), "t_h,kg_per_kwh\n0,0.5\n0,0.2\n").unwrap();
        let e = Scenario::parse_in("s.toml", &text, dir.path()).unwrap_err().to_string();
        assert!(e.contains("grid.csv:3: t_h = 0 does not increase"), "{e}");
    }

    #[test]
    fn bloom_scenarios_are_the_documented_configurations() {
        use infersim_agents::retraining::RetrainingConfig;
        let model = |name: &str| Scenario::builtin(name).unwrap().points[0].model.clone();
        assert_eq!(model("bloom-sd"), ModelConfig::Retraining(RetrainingConfig::bloom()));
        assert_eq!(model("bloom-stochastic"), ModelConfig::Retraining(RetrainingConfig::bloom_stochastic()));
        let sweep = Scenario::builtin("bloom-sweep").unwrap();
        assert_eq!(sweep.points.len(), 21);
        assert_eq!(sweep.sweep_keys(), ["drift.per_request", "monitor.upper"]);
        let grid = Scenario::parse(
            "g.toml",
            &BUILTIN.iter().find(|(n, _)| *n == "bloom-sd").unwrap().1.replace(
                "kind = \"constant\"\nkg_per_kwh = 0.394",
                "kind = \"diurnal\"\nkg_per_kwh = 0.3\namplitude = 1.5\npeak_h = 18.0",
            ),
        );
        assert!(
            grid.unwrap_err().to_string().contains("grid.amplitude = 1.5 is invalid: expected a number from 0 to 1")
        );
    }

    #[test]
    fn the_nineteen_scenario_sweeps_every_policy_and_a_set_pins_one() {
        use infersim_agents::network::RoutingPolicy;
        let s = Scenario::load("nineteen-contenders").unwrap();
        let policies: Vec<RoutingPolicy> = s
            .points
            .iter()
            .map(|p| match &p.model {
                ModelConfig::Network(c) => c.routing.policy,
                other => panic!("a network scenario, not {other:?}"),
            })
            .collect();
        assert_eq!(policies, RoutingPolicy::ALL);
        // The decayed-score point is the agents crate's constructor (used by benchmarks).
        assert_eq!(
            s.points[5].model,
            ModelConfig::Network(infersim_agents::network::NetworkConfig::nineteen_contenders())
        );
        let ModelConfig::Network(c) = &s.points[0].model else { unreachable!() };
        assert_eq!((c.tasks.len(), c.node_classes.iter().map(|k| k.count).sum::<u32>()), (3, 19));
        assert_eq!(c.similarity_matrix()[1][0], 0.5, "sim(70b -> 3b)");
        let mut pinned = s.clone();
        pinned.apply_overrides(&["routing.policy=least_processed", "routing.weight=10"]).unwrap();
        assert_eq!(pinned.points.len(), 1);
        let ModelConfig::Network(c) = &pinned.points[0].model else { unreachable!() };
        assert_eq!((c.routing.policy, c.routing.weight), (RoutingPolicy::LeastProcessed, 10.0));
        let e = s.clone().apply_overrides(&["routing.top=0"]).unwrap_err().to_string();
        assert!(e.contains("routing.top = 0 is invalid: expected an integer >= 1"), "{e}");
        let text = BUILTIN.iter().find(|(n, _)| *n == "nineteen-contenders").unwrap().1;
        let e = Scenario::parse("x.toml", &text.replace("slots = 8", "slotz = 8")).unwrap_err().to_string();
        assert!(e.starts_with("x.toml: node_classes[0]: unknown field `slotz`"), "{e}");
        let e = Scenario::parse("x.toml", &text.replace("[validator]", "[validatr]")).unwrap_err().to_string();
        assert!(e.contains("unknown key `validatr.") && e.contains("did you mean `validator."), "{e}");
    }

    #[test]
    fn the_history_scenario_sweeps_the_share_of_history_kept() {
        let s = Scenario::load("llm-history").unwrap();
        let shares: Vec<f64> = s
            .points
            .iter()
            .map(|p| match &p.model {
                ModelConfig::Serving(c) => c.history.keep_share,
                other => panic!("a serving scenario, not {other:?}"),
            })
            .collect();
        assert_eq!(shares, [0.0, 0.25, 0.5, 0.75, 1.0]);
        let e = s.clone().apply_overrides(&["serving.history.keep_share=1.5"]).unwrap_err().to_string();
        assert!(e.contains("serving.history.keep_share = 1.5 is invalid: expected a share from 0 to 1"), "{e}");
    }

    #[test]
    fn retraining_can_watch_user_scores() {
        use infersim_agents::retraining::Signal;
        let mut s = Scenario::load("bloom-stochastic").unwrap();
        let e = s.clone().apply_overrides(&["monitor.ics_start_below=4.2"]).unwrap_err().to_string();
        assert!(e.contains("monitor.ics_start_below = 4.2 is invalid: expected no value unless"), "{e}");
        let e = s.clone().apply_overrides(&["monitor.signal=ics"]).unwrap_err().to_string();
        assert!(e.contains("monitor.ics_start_below = (missing)"), "{e}");
        s.apply_overrides(&[
            "monitor.signal=ics",
            "monitor.ics_start_below=4.2",
            "monitor.ics_stop_above=4.6",
            "monitor.feedback_fraction=0.2",
            "monitor.feedback_noise_sd=0.1",
        ])
        .unwrap();
        let ModelConfig::Retraining(c) = &s.points[0].model else { unreachable!() };
        assert_eq!(c.monitor.signal, Signal::Ics { start_below: 4.2, stop_above: 4.6, fraction: 0.2, noise_sd: 0.1 });
        let e = s.clone().apply_overrides(&["monitor.ics_stop_above=4.0"]).unwrap_err().to_string();
        assert!(e.contains("monitor.ics_stop_above = 4 is invalid"), "{e}");
    }

    #[test]
    fn the_ipa_scenario_sweeps_delta_and_reads_its_profiles() {
        use infersim_agents::pipeline::{AdapterPolicy, PipelineConfig};
        let s = Scenario::load("ipa-video").unwrap();
        let deltas: Vec<f64> = s
            .points
            .iter()
            .map(|p| match &p.model {
                ModelConfig::Pipeline(c) => c.adapter.objective.delta,
                other => panic!("a pipeline scenario, not {other:?}"),
            })
            .collect();
        assert_eq!(deltas, [0.0, 0.1, 0.5, 2.0, 10.0]);
        // The delta = 0 point is the agents crate's constructor (used by its tests).
        assert_eq!(s.points[0].model, ModelConfig::Pipeline(PipelineConfig::video()));
        let mut fixed = s.clone();
        fixed.apply_overrides(&["adapter.policy=fixed", "adapter.delta=0"]).unwrap();
        let ModelConfig::Pipeline(c) = &fixed.points[0].model else { unreachable!() };
        assert_eq!(c.adapter.policy, AdapterPolicy::Fixed(vec![("yolov5m".into(), 4, 16), ("resnet50".into(), 4, 4)]));
        let e = s.clone().apply_overrides(&["adapter.policy=magic"]).unwrap_err().to_string();
        assert!(e.contains("adapter.policy = magic is invalid: expected fixed or ipa"), "{e}");
        let text = BUILTIN.iter().find(|(n, _)| *n == "ipa-video").unwrap().1;
        let e =
            Scenario::parse("x.toml", &text.replace("\"video-classifier\"", "\"nope.csv\"")).unwrap_err().to_string();
        assert!(e.contains("stages[1].profile = nope.csv is invalid: expected a built-in profile"), "{e}");
        // A profile file of one's own, with its errors named by file and line.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.csv"), "variant,accuracy,batch,latency_s\na,1,1,0.1\na,1,2,x\n").unwrap();
        let e = Scenario::parse_in("x.toml", &text.replace("\"video-classifier\"", "\"p.csv\""), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("p.csv:3: latency_s = \"x\" is not valid"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_nearest_key() {
        let text = GOOD.replace("servers = 4", "servrs = 4");
        let line = text.lines().position(|l| l.starts_with("servrs")).unwrap() + 1;
        assert_eq!(err(&text), format!("t.toml:{line}: unknown key `station.servrs`; did you mean `station.servers`?"));
    }

    #[test]
    fn out_of_range_values_name_key_and_range() {
        assert_eq!(
            err(&GOOD.replace("arrival_rate_per_s = 3.6", "arrival_rate_per_s = -1.0")),
            "t.toml: station.arrival_rate_per_s = -1 is invalid: expected a finite number > 0"
        );
        assert!(err(&GOOD.replace("servers = 4", "servers = 0")).contains("station.servers = 0"));
        assert!(err(&GOOD.replace("\"exponential\"", "\"weibull\"")).contains("one of exponential, deterministic"));
        assert!(err(&GOOD.replace("# capacity = 10", "capacity = 2")).contains("station.capacity = 2"));
        assert!(err("description = [").contains("malformed TOML"));
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let mut s = Scenario::builtin("mmc").unwrap();
        s.apply_overrides(&["station.servers=8", "station.service=deterministic", "station.capacity=20"]).unwrap();
        let ModelConfig::Station(station) = s.points[0].model.clone() else { panic!("a station scenario") };
        assert_eq!(station.servers, 8);
        assert_eq!(station.capacity, Some(20));
        assert!(matches!(station.service, DurationDistribution::Deterministic { .. }));
        assert!(s.to_toml().contains("capacity = 20"));
        let e = s.apply_overrides(&["station.sevrers=2"]).unwrap_err().to_string();
        assert_eq!(e, "--set: unknown key `station.sevrers`; did you mean `station.servers`?");
        assert!(s.apply_overrides(&["station.servers"]).is_err());
        let e = s.apply_overrides(&["station.service_rate_per_s=0"]).unwrap_err().to_string();
        assert!(e.contains("station.service_rate_per_s = 0 is invalid"), "{e}");
        assert_eq!(servers(&s.points[0]), 8, "a failed override leaves the scenario unchanged");
    }

    fn servers(p: &Point) -> u32 {
        let ModelConfig::Station(s) = &p.model else { panic!("a station scenario") };
        s.servers
    }

    #[test]
    fn a_sweep_is_the_cartesian_product_last_key_fastest() {
        let text = format!(
            "{GOOD}\n[sweep]\nstation.servers = [4, 5]\nstation.service = [\"exponential\", \"deterministic\"]\n"
        );
        let s = Scenario::parse("t.toml", &text).unwrap();
        assert_eq!(s.sweep_keys(), ["station.servers", "station.service"]);
        assert_eq!(s.points.len(), 4);
        let labels: Vec<(u32, String)> =
            s.points.iter().map(|p| (servers(p), p.params[1].as_str().unwrap().to_string())).collect();
        assert_eq!(labels[0], (4, "exponential".into()));
        assert_eq!(labels[1], (4, "deterministic".into()));
        assert_eq!(labels[3], (5, "deterministic".into()));
        // The resolved text reads back as the same sweep.
        let again = Scenario::parse("again.toml", &s.to_toml()).unwrap();
        assert_eq!(again.points, s.points);
        // --set pins a swept key.
        let mut pinned = s.clone();
        pinned.apply_overrides(&["station.servers=6"]).unwrap();
        assert_eq!(pinned.points.len(), 2);
        assert!(pinned.points.iter().all(|p| servers(p) == 6));
    }

    #[test]
    fn bad_sweeps_are_reported_before_anything_runs() {
        let with =
            |sweep: &str| Scenario::parse("t.toml", &format!("{GOOD}\n[sweep]\n{sweep}\n")).unwrap_err().to_string();
        assert_eq!(with("station.servers = []"), "t.toml: sweep.station.servers: the list of values is empty");
        assert!(with("station.servers = 3").contains("expected a list of values"));
        assert!(with("simulation.seed = [1, 2]").contains("cannot be swept"));
        assert!(with("station.srvers = [1]").contains("did you mean `station.servers`"));
        let e = with("station.servers = [4, 0]");
        assert!(e.contains("sweep point 1") && e.contains("station.servers = 0"), "{e}");
    }
}
