//! The serving world as scenario files write it (`world = "serving"`): the schema of
//! `[serving]` and `[simulation]`, its resolution into a [`ServingConfig`], and the
//! world's trace rows and metrics.

use infersim_engine::Observer;
use serde::Deserialize;

use super::continuous::{Disaggregation, LlmRouting, LlmServingConfig, Measured, run_continuous};
use super::{
    ArrivalProcess, BatchTime, Failures, History, OverLimit, RequestRecord, Routing, ServingConfig, ServingRun,
    ServingSample, Task, build_sampled_serving, build_serving, finish_serving,
};
use crate::error::{ConfigError, RunError};
use crate::grid::CarbonIntensity;
use crate::input::Inputs;
use crate::llm::{Affine, EngineLimits, GpuSpec, ModelSpec, Profile, Roofline, StepModel, catalog};
use crate::world::{Label, Labels, Metrics, Replication, Traces, Window, World};

/// `[serving]` and `[simulation]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingFile {
    serving: ServingTable,
    simulation: Window,
}

/// `[serving]`: the keys of both engines. `engine.kind` picks one (`continuous` by
/// default, `static` when the table has the static engine's `max_batch`); each
/// engine refuses the other's keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServingTable {
    nodes: i64,
    gpus_per_node: Option<i64>,
    replicas_per_node: Option<i64>,
    routing: LlmRouting,
    engine: Option<EngineTable>,
    max_batch: Option<i64>,
    max_wait_s: Option<f64>,
    context_limit_tokens: Option<i64>,
    over_limit: Option<OverLimit>,
    history: Option<History>,
    failures: Option<Failures>,
    arrivals: ArrivalProcess,
    tasks: Vec<Task>,
    service: Option<BatchTime>,
    model: Option<Named<ModelSpec>>,
    gpu: Option<Named<GpuTable>>,
    tp: Option<i64>,
    step_time: Option<StepTimeTable>,
    measured: Option<String>,
    disaggregation: Option<Disaggregation>,
    power: Power,
    grid: CarbonIntensity,
    prices: Prices,
}

/// A catalogue entry by name, or a table that defines one.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Named<T> {
    Name(String),
    Spec(T),
}

/// `[serving.gpu]`: a built-in GPU by `name` with some numbers replaced (efficiency
/// factors to calibrate, say), or a new GPU with every number given.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuTable {
    name: String,
    peak_bf16_tflops: Option<f64>,
    memory_gb_per_s: Option<f64>,
    memory_gb: Option<f64>,
    bandwidth_efficiency: Option<f64>,
    prefill_mfu: Option<f64>,
    decode_mfu: Option<f64>,
    tdp_w: Option<f64>,
    idle_w: Option<f64>,
    active_base_w: Option<f64>,
    active_max_w: Option<f64>,
    power_tokens_scale: Option<f64>,
    link_gb_per_s: Option<f64>,
    link_latency_us: Option<f64>,
}

impl GpuTable {
    fn resolve(self) -> Result<GpuSpec, ConfigError> {
        let base = catalog::builtin_gpus().into_iter().find(|g| g.name == self.name);
        let field = |key: &str, given: Option<f64>, built_in: Option<f64>| {
            given.or(built_in).ok_or_else(|| {
                ConfigError::invalid(
                    format!("serving.gpu.{key}"),
                    "(missing)",
                    format!("a value ({} is not a built-in GPU, so every number is needed)", self.name),
                )
            })
        };
        let b = base.as_ref();
        Ok(GpuSpec {
            name: self.name.clone(),
            peak_bf16_tflops: field("peak_bf16_tflops", self.peak_bf16_tflops, b.map(|g| g.peak_bf16_tflops))?,
            memory_gb_per_s: field("memory_gb_per_s", self.memory_gb_per_s, b.map(|g| g.memory_gb_per_s))?,
            memory_gb: field("memory_gb", self.memory_gb, b.map(|g| g.memory_gb))?,
            bandwidth_efficiency: field(
                "bandwidth_efficiency",
                self.bandwidth_efficiency,
                b.map(|g| g.bandwidth_efficiency),
            )?,
            prefill_mfu: field("prefill_mfu", self.prefill_mfu, b.map(|g| g.prefill_mfu))?,
            decode_mfu: field("decode_mfu", self.decode_mfu, b.map(|g| g.decode_mfu))?,
            tdp_w: field("tdp_w", self.tdp_w, b.map(|g| g.tdp_w))?,
            idle_w: field("idle_w", self.idle_w, b.map(|g| g.idle_w))?,
            active_base_w: field("active_base_w", self.active_base_w, b.map(|g| g.active_base_w))?,
            active_max_w: field("active_max_w", self.active_max_w, b.map(|g| g.active_max_w))?,
            power_tokens_scale: field("power_tokens_scale", self.power_tokens_scale, b.map(|g| g.power_tokens_scale))?,
            link_gb_per_s: field("link_gb_per_s", self.link_gb_per_s, b.map(|g| g.link_gb_per_s))?,
            link_latency_us: field("link_latency_us", self.link_latency_us, b.map(|g| g.link_latency_us))?,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EngineKind {
    #[default]
    Continuous,
    Static,
}

/// `[serving.engine]` of the continuous engine.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineTable {
    #[serde(default)]
    kind: EngineKind,
    max_num_seqs: Option<i64>,
    max_num_batched_tokens: Option<i64>,
    block_size: Option<i64>,
    num_gpu_blocks: Option<i64>,
    gpu_memory_utilization: Option<f64>,
    step_overhead_s: Option<f64>,
    step_overhead_per_seq_s: Option<f64>,
    max_queued_requests: Option<i64>,
}

/// `[serving.step_time]`: one table per model, picked by `kind`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StepTimeTable {
    /// Measured per-layer tables in a directory.
    Profile { profile_dir: String },
    /// From the GPU and model specifications.
    Roofline {},
    /// A formula.
    Affine { base_s: Option<f64>, per_token_s: Option<f64>, per_sequence_s: Option<f64>, per_kv_token_s: Option<f64> },
}

impl Default for StepTimeTable {
    fn default() -> Self {
        StepTimeTable::Roofline {}
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Power {
    gpu_idle_w: Option<f64>,
    gpu_max_w: Option<f64>,
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

/// A resolved serving world: one of its two engines.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per point, never in bulk
pub enum ServingSetup {
    /// Request-level batches.
    Static(ServingConfig),
    /// Token-level LLM replicas.
    Continuous(LlmServingConfig),
}

impl ServingSetup {
    /// The static engine's configuration, if that is the engine.
    pub fn into_static(self) -> Option<ServingConfig> {
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
}

/// Fails if a key of the other engine is present.
fn refuse(present: bool, key: &str, engine: &str) -> Result<(), ConfigError> {
    if present {
        return Err(ConfigError::invalid(
            format!("serving.{key}"),
            "(set)",
            format!("no value: it belongs to the other engine (serving.engine.kind = \"{engine}\" is in use)"),
        ));
    }
    Ok(())
}

fn resolve_static(s: ServingTable, simulation: &Window, inputs: &dyn Inputs) -> Result<ServingConfig, ConfigError> {
    for (present, key) in [
        (s.replicas_per_node.is_some(), "replicas_per_node"),
        (
            s.engine.as_ref().is_some_and(|e| {
                e.max_num_seqs.is_some()
                    || e.max_num_batched_tokens.is_some()
                    || e.block_size.is_some()
                    || e.num_gpu_blocks.is_some()
                    || e.gpu_memory_utilization.is_some()
                    || e.step_overhead_s.is_some()
            }),
            "engine",
        ),
        (s.model.is_some(), "model"),
        (s.gpu.is_some(), "gpu"),
        (s.tp.is_some(), "tp"),
        (s.step_time.is_some(), "step_time"),
        (s.measured.is_some(), "measured"),
        (s.disaggregation.is_some(), "disaggregation"),
    ] {
        refuse(present, key, "static")?;
    }
    let required =
        |key: &str| ConfigError::invalid(format!("serving.{key}"), "(missing)", "a value (the static engine needs it)");
    let routing = match s.routing {
        LlmRouting::RoundRobin => Routing::RoundRobin,
        LlmRouting::LeastOutstandingRequests => Routing::LeastLoaded,
        LlmRouting::Random => Routing::Random,
        other => {
            return Err(ConfigError::invalid(
                "serving.routing",
                format!("{other:?}"),
                "round_robin, least_loaded or random (the static engine's routers)",
            ));
        }
    };
    let max_queued = s.engine.as_ref().and_then(|e| e.max_queued_requests);
    let s = ResolvedStatic {
        max_queued_per_gpu: max_queued,
        nodes: s.nodes,
        gpus_per_node: s.gpus_per_node.ok_or_else(|| required("gpus_per_node"))?,
        routing,
        max_batch: s.max_batch.ok_or_else(|| required("max_batch"))?,
        max_wait_s: s.max_wait_s.ok_or_else(|| required("max_wait_s"))?,
        context_limit_tokens: s.context_limit_tokens,
        over_limit: s.over_limit.unwrap_or_default(),
        history: s.history.unwrap_or_default(),
        failures: s.failures,
        arrivals: s.arrivals,
        tasks: s.tasks,
        service: s.service.ok_or_else(|| required("service"))?,
        gpu_idle_w: s.power.gpu_idle_w.ok_or_else(|| required("power.gpu_idle_w"))?,
        gpu_max_w: s.power.gpu_max_w.ok_or_else(|| required("power.gpu_max_w"))?,
        node_baseline_w: s.power.node_baseline_w,
        pue: s.power.pue,
        grid: s.grid,
        prices: s.prices,
    };
    resolve_static_values(s, simulation, inputs)
}

struct ResolvedStatic {
    max_queued_per_gpu: Option<i64>,
    nodes: i64,
    gpus_per_node: i64,
    routing: Routing,
    max_batch: i64,
    max_wait_s: f64,
    context_limit_tokens: Option<i64>,
    over_limit: OverLimit,
    history: History,
    failures: Option<Failures>,
    arrivals: ArrivalProcess,
    tasks: Vec<Task>,
    service: BatchTime,
    gpu_idle_w: f64,
    gpu_max_w: f64,
    node_baseline_w: f64,
    pue: f64,
    grid: CarbonIntensity,
    prices: Prices,
}

fn int_in(key: &str, v: i64, low: i64, high: i64) -> Result<u32, ConfigError> {
    u32::try_from(v)
        .ok()
        .filter(|&n| i64::from(n) >= low && i64::from(n) <= high)
        .ok_or_else(|| ConfigError::invalid(key, v, format!("an integer from {low} to {high}")))
}

fn resolve_continuous(
    s: ServingTable,
    simulation: &Window,
    inputs: &dyn Inputs,
) -> Result<LlmServingConfig, ConfigError> {
    for (present, key) in [
        (s.gpus_per_node.is_some(), "gpus_per_node"),
        (s.max_batch.is_some(), "max_batch"),
        (s.max_wait_s.is_some(), "max_wait_s"),
        (s.service.is_some(), "service"),
        (s.over_limit.is_some(), "over_limit"),
        (s.history.is_some(), "history"),
        (s.power.gpu_idle_w.is_some(), "power.gpu_idle_w"),
        (s.power.gpu_max_w.is_some(), "power.gpu_max_w"),
    ] {
        refuse(present, key, "continuous")?;
    }
    let model = match s.model {
        None => {
            return Err(ConfigError::invalid(
                "serving.model",
                "(missing)",
                "a built-in model's name or a [serving.model] table",
            ));
        }
        Some(Named::Name(name)) => catalog::model("serving.model", &name)?,
        Some(Named::Spec(m)) => m,
    };
    model.validate().map_err(|e| e.within("serving.model"))?;
    let gpu = match s.gpu {
        None => {
            return Err(ConfigError::invalid(
                "serving.gpu",
                "(missing)",
                "a built-in GPU's name or a [serving.gpu] table",
            ));
        }
        Some(Named::Name(name)) => catalog::gpu("serving.gpu", &name)?,
        Some(Named::Spec(g)) => g.resolve()?,
    };
    gpu.validate().map_err(|e| e.within("serving.gpu"))?;
    let tp = int_in("serving.tp", s.tp.unwrap_or(1), 1, 64)?;
    let e = s.engine.unwrap_or_default();
    let max_num_seqs = int_in("serving.engine.max_num_seqs", e.max_num_seqs.unwrap_or(256), 1, 65_536)?;
    let max_num_batched_tokens =
        int_in("serving.engine.max_num_batched_tokens", e.max_num_batched_tokens.unwrap_or(8192), 1, 1 << 20)?;
    let block_size = int_in("serving.engine.block_size", e.block_size.unwrap_or(16), 1, 4096)?;
    let utilisation = e.gpu_memory_utilization.unwrap_or(0.9);
    if !(utilisation.is_finite() && utilisation > 0.0 && utilisation <= 1.0) {
        return Err(ConfigError::invalid("serving.engine.gpu_memory_utilization", utilisation, "a share in (0, 1]"));
    }
    let num_gpu_blocks = match e.num_gpu_blocks {
        Some(n) => int_in("serving.engine.num_gpu_blocks", n, 2, i64::from(u32::MAX))?,
        None => {
            let derived = gpu.kv_blocks(&model, tp, utilisation, (max_num_batched_tokens, max_num_seqs), block_size);
            if derived < 2 {
                return Err(ConfigError::invalid(
                    "serving.tp",
                    tp,
                    format!(
                        "enough GPUs for {} ({:.1} GB of weights) and a KV cache on {} x {} GB at utilisation {utilisation}",
                        model.name,
                        model.weight_bytes() / 1e9,
                        tp,
                        gpu.memory_gb
                    ),
                ));
            }
            derived
        }
    };
    let step_model = match s.step_time.clone().unwrap_or_default() {
        StepTimeTable::Roofline {} => StepModel::Roofline(Roofline { gpu: gpu.clone(), model: model.clone(), tp }),
        StepTimeTable::Affine { base_s, per_token_s, per_sequence_s, per_kv_token_s } => {
            let a = Affine {
                base_s: base_s.unwrap_or(0.0),
                per_token_s: per_token_s.unwrap_or(0.0),
                per_sequence_s: per_sequence_s.unwrap_or(0.0),
                per_kv_token_s: per_kv_token_s.unwrap_or(0.0),
            };
            a.validate().map_err(|e| e.within("serving.step_time"))?;
            StepModel::Affine(a)
        }
        StepTimeTable::Profile { profile_dir } => {
            let link = (gpu.link_gb_per_s, gpu.link_latency_us);
            let key = "serving.step_time.profile_dir";
            StepModel::Profile(Box::new(Profile::load(key, &profile_dir, inputs, &model, tp, link)?))
        }
    };
    let names: Vec<&str> = s.tasks.iter().map(|t| t.name.as_str()).collect();
    let mut arrivals = s.arrivals.clone();
    arrivals.load("serving.arrivals", inputs, &names)?;
    let mut grid = s.grid.clone();
    grid.load("serving.grid", inputs)?;
    let (duration_s, warmup_s) = (simulation.duration_s()?, simulation.warmup_s.unwrap_or(0.0));
    // `--set serving.measured=""` takes a scenario's measured run away.
    let measured = match s.measured.as_deref() {
        None | Some("") => None,
        Some(path) => Some(read_measured(&inputs.table("serving.measured", path)?, warmup_s, duration_s)?),
    };
    let config = LlmServingConfig {
        arrivals,
        tasks: s.tasks.clone(),
        routing: s.routing,
        nodes: int_in("serving.nodes", s.nodes, 1, 100_000)?,
        replicas_per_node: int_in("serving.replicas_per_node", s.replicas_per_node.unwrap_or(1), 1, 1024)?,
        tp,
        limits: EngineLimits { max_num_seqs, max_num_batched_tokens, block_size, num_gpu_blocks },
        max_queued_requests: match e.max_queued_requests {
            None => super::DEFAULT_MAX_QUEUED,
            Some(n) => int_in("serving.engine.max_queued_requests", n, 1, i64::from(super::MAX_QUEUED))?,
        },
        // vLLM's max_model_len defaults to the model's context length.
        context_limit_tokens: match s.context_limit_tokens {
            None => model.context_tokens,
            Some(n) => Some(int_in("serving.context_limit_tokens", n, 2, i64::from(u32::MAX))?),
        },
        step_overhead_s: e.step_overhead_s.unwrap_or(0.0),
        step_overhead_per_seq_s: e.step_overhead_per_seq_s.unwrap_or(0.0),
        step_model,
        gpu,
        model,
        node_baseline_w: s.power.node_baseline_w,
        pue: s.power.pue,
        grid,
        energy_usd_per_kwh: s.prices.energy_usd_per_kwh,
        gpu_usd_per_hour: s.prices.gpu_usd_per_hour,
        failures: s.failures,
        duration_s: simulation.duration_s()?,
        warmup_s: simulation.warmup_s.unwrap_or(0.0),
        measured,
        disaggregation: s.disaggregation,
    };
    config.validate().map_err(|e| {
        e.rekey(|key| match key {
            "duration_s" | "warmup_s" => format!("simulation.{key}"),
            other => format!("serving.{other}"),
        })
    })?;
    Ok(config)
}

/// The summary of a measured run from its per-request records (vLLM's
/// `requests.jsonl`: `queued_ts`, `first_token_ts`, `last_token_ts`, `output_toks`),
/// over the requests a simulated replay of it runs and measures: those queued (counted
/// from the first) before `duration_s`, and of those, for the latency statistics, the
/// ones queued from `warmup_s` on. The makespan spans every request that runs.
pub fn read_measured(table: &crate::input::DataTable, warmup_s: f64, duration_s: f64) -> Result<Measured, ConfigError> {
    let col = |name: &str| table.require(name);
    let (queued, first, last, output) = (
        col("queued_ts")?,
        col("first_token_ts")?,
        col("last_token_ts")?,
        table.column_any(&["output_toks", "output_tokens"]).ok_or_else(|| table.missing("output_toks"))?,
    );
    let mut ttft = Vec::new();
    let mut tpot = Vec::new();
    let mut e2e = Vec::new();
    let (mut start, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut rows = Vec::with_capacity(table.rows());
    for row in 0..table.rows() {
        let v = |c: usize| table.number(c, row).map_err(|e| table.at(row, e));
        rows.push((v(queued)?, v(first)?, v(last)?, v(output)?));
    }
    let origin = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    for &(q, f, l, n) in rows.iter().filter(|r| r.0 - origin < duration_s) {
        start = start.min(q);
        end = end.max(l);
        if q - origin < warmup_s {
            continue;
        }
        ttft.push(f - q);
        e2e.push(l - q);
        if n > 1.0 {
            tpot.push((l - f) / (n - 1.0));
        }
    }
    if ttft.is_empty() {
        return Err(table.error(format!(
            "no request queued between the warm-up's end ({warmup_s} s) and simulation.duration_s ({duration_s} s) \
             of the replay, counted from the first: nothing to compare with"
        )));
    }
    let mut values = Vec::new();
    for (name, mut xs) in [("ttft", ttft), ("tpot", tpot), ("e2e", e2e)] {
        if xs.is_empty() {
            continue;
        }
        xs.sort_by(f64::total_cmp);
        values.push((format!("{name}_mean_s"), xs.iter().sum::<f64>() / xs.len() as f64));
        for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
            values.push((format!("{name}_{label}_s"), quantile(&xs, q)));
        }
    }
    values.push(("makespan_s".into(), end - start));
    Ok(Measured { source: table.file().to_string(), values })
}

/// The `q` quantile of sorted values, by linear interpolation between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

impl World for ServingWorld {
    const NAME: &'static str = "serving";
    type File = ServingFile;
    type Config = ServingSetup;
    type Request = RequestRecord;
    type Sample = ServingSample;

    fn resolve(file: ServingFile, inputs: &dyn Inputs) -> Result<ServingSetup, ConfigError> {
        let kind = match file.serving.engine.as_ref().map(|e| e.kind) {
            Some(kind) => kind,
            None if file.serving.max_batch.is_some() => EngineKind::Static,
            None => EngineKind::Continuous,
        };
        match kind {
            EngineKind::Static => Ok(ServingSetup::Static(resolve_static(file.serving, &file.simulation, inputs)?)),
            EngineKind::Continuous => {
                Ok(ServingSetup::Continuous(resolve_continuous(file.serving, &file.simulation, inputs)?))
            }
        }
    }

    fn run<R: Observer<RequestRecord>, S: Observer<ServingSample>>(
        config: &ServingSetup,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        match config {
            ServingSetup::Static(c) => run_static(c, replication, traces),
            ServingSetup::Continuous(c) => run_continuous(
                c,
                &replication,
                traces.requests,
                traces.sample_every.map(|every| (every, traces.samples)),
            ),
        }
    }

    fn latency_objectives(config: &ServingSetup) -> Vec<(String, f64)> {
        let tasks = match config {
            ServingSetup::Static(c) => &c.tasks,
            ServingSetup::Continuous(c) => &c.tasks,
        };
        tasks.iter().map(|t| (t.name.clone(), t.slo_s)).collect()
    }

    fn labels(config: &ServingSetup) -> Labels {
        let tasks = match config {
            ServingSetup::Static(c) => &c.tasks,
            ServingSetup::Continuous(c) => &c.tasks,
        };
        Labels(vec![("task", tasks.iter().map(|t| t.name.clone()).collect())])
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
}

fn run_static<R: Observer<RequestRecord>, S: Observer<ServingSample>>(
    config: &ServingConfig,
    replication: Replication,
    traces: Traces<'_, R, S>,
) -> Result<Metrics, RunError> {
    let (seed, rep) = (replication.master_seed, replication.index);
    let run = match traces.sample_every {
        Some(every) => {
            let mut sim = build_sampled_serving(config, traces.requests, every, traces.samples, seed, rep)?;
            sim.set_interrupt(replication.interrupt.clone());
            finish_serving(&mut sim)?
        }
        None => {
            let mut sim = build_serving(config, traces.requests, seed, rep)?;
            sim.set_interrupt(replication.interrupt.clone());
            finish_serving(&mut sim)?
        }
    };
    replication.finished(run.metrics())
}

fn resolve_static_values(
    s: ResolvedStatic,
    simulation: &Window,
    inputs: &dyn Inputs,
) -> Result<ServingConfig, ConfigError> {
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
        max_queued_per_gpu: match s.max_queued_per_gpu {
            None => super::DEFAULT_MAX_QUEUED,
            Some(n) => int_in("serving.engine.max_queued_requests", n, 1, i64::from(super::MAX_QUEUED))?,
        },
        over_limit: s.over_limit,
        history: s.history,
        failures: s.failures,
        service: s.service,
        gpu_idle_w: s.gpu_idle_w,
        gpu_max_w: s.gpu_max_w,
        node_baseline_w: s.node_baseline_w,
        pue: s.pue,
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
    input_tokens: Option<u32> = r.input_tokens,
    output_tokens: Option<u32> = r.output_tokens,
    first_scheduled_s: Option<f64> = r.first_scheduled_s,
    first_token_s: Option<f64> = r.first_token_s,
    ttft_s: Option<f64> = r.first_token_s.map(|f| f - r.arrival_s),
    tpot_s: Option<f64> = match (r.first_token_s, r.finish_s, r.output_tokens) {
        (Some(first), Some(last), Some(n)) if n > 1 && r.outcome == super::RequestOutcome::Served => Some((last - first) / f64::from(n - 1)),
        _ => None,
    },
    e2e_s: Option<f64> = r.finish_s.filter(|_| r.outcome == super::RequestOutcome::Served && r.first_token_s.is_some()).map(|f| f - r.arrival_s),
    preemptions: Option<u32> = r.preemptions,
    replica: Option<u32> = r.replica,
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
});
