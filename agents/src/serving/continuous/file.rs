//! The continuous engine's keys as scenario files write them (`[serving]` with a
//! `model` and a `gpu`), resolved into an [`LlmServingConfig`]; and the summary of a
//! measured run to print beside a replay's.

use serde::Deserialize;

use super::miners::{MinerTable, SimilarityRow, ValidatorTable, check_miners};
use super::pools::{AutoscaleTable, OnePool, PoolDefaults, PoolTable};
use super::retraining::{RetrainingTables, TrainingTable};
use super::{Disaggregation, LlmPool, LlmRouting, LlmServingConfig, Measured};
use crate::arrivals::ArrivalProcess;
use crate::drift::{DriftTable, MonitorTable, Quality};
use crate::error::ConfigError;
use crate::grid::CarbonIntensity;
use crate::input::{DataTable, Inputs};
use crate::llm::{Affine, EngineLimits, GpuSpec, ModelSpec, Profile, Roofline, StepModel, catalog};
use crate::requests::{DEFAULT_MAX_QUEUED, MAX_QUEUED, Task};
use crate::serving::{Prices, int_in};
use crate::world::Window;

/// `[serving]` of the continuous engine: one pool written with the `[serving]` keys
/// (`model`, `gpu`, `tp`, `nodes` x `replicas_per_node`), or `[[serving.pools]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContinuousTable {
    nodes: Option<i64>,
    replicas_per_node: Option<i64>,
    routing: LlmRouting,
    kv_overlap_score_weight: Option<f64>,
    /// How often the router routes (s); 0: each request as it arrives.
    routing_interval_s: Option<f64>,
    /// Whether replicas in steady decode run their steps on one event per run.
    coalesce_steps: Option<bool>,
    /// Most each GPU may draw (W); every pool's unless it sets its own.
    power_cap_w: Option<f64>,
    #[serde(default)]
    engine: EngineTable,
    context_limit_tokens: Option<i64>,
    failures: Option<FailuresTable>,
    arrivals: ArrivalProcess,
    tasks: Vec<Task>,
    model: Option<Named<ModelSpec>>,
    gpu: Option<Named<GpuTable>>,
    tp: Option<i64>,
    step_time: Option<StepTimeTable>,
    pools: Option<Vec<PoolTable>>,
    autoscale: Option<AutoscaleTable>,
    measured: Option<String>,
    disaggregation: Option<Disaggregation>,
    power: Power,
    grid: CarbonIntensity,
    prices: Prices,
    drift: Option<DriftTable>,
    quality: Option<Quality>,
    monitor: Option<MonitorTable>,
    training: Option<TrainingTable>,
    validator: Option<ValidatorTable>,
    adaptation: Option<super::adaptation::AdaptationTable>,
    #[serde(default)]
    similarity: Vec<SimilarityRow>,
}

/// `[serving.power]` of the continuous engine: GPU power comes from the GPU's
/// catalogue entry (its curve), so only the node and the facility are given here.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Power {
    node_baseline_w: f64,
    pue: f64,
}

/// `[serving.engine]` of the continuous engine (its `kind` was read to choose it), and
/// a pool's `engine`, whose keys replace those of `[serving.engine]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EngineTable {
    max_num_seqs: Option<i64>,
    max_num_batched_tokens: Option<i64>,
    block_size: Option<i64>,
    num_gpu_blocks: Option<i64>,
    gpu_memory_utilization: Option<f64>,
    step_overhead_s: Option<f64>,
    step_overhead_per_seq_s: Option<f64>,
    max_queued_requests: Option<i64>,
    enable_prefix_caching: Option<bool>,
}

impl EngineTable {
    /// These keys where given, `base`'s elsewhere.
    pub(super) fn over(&self, base: &EngineTable) -> EngineTable {
        EngineTable {
            max_num_seqs: self.max_num_seqs.or(base.max_num_seqs),
            max_num_batched_tokens: self.max_num_batched_tokens.or(base.max_num_batched_tokens),
            block_size: self.block_size.or(base.block_size),
            num_gpu_blocks: self.num_gpu_blocks.or(base.num_gpu_blocks),
            gpu_memory_utilization: self.gpu_memory_utilization.or(base.gpu_memory_utilization),
            step_overhead_s: self.step_overhead_s.or(base.step_overhead_s),
            step_overhead_per_seq_s: self.step_overhead_per_seq_s.or(base.step_overhead_per_seq_s),
            max_queued_requests: self.max_queued_requests.or(base.max_queued_requests),
            enable_prefix_caching: self.enable_prefix_caching.or(base.enable_prefix_caching),
        }
    }

    /// The engine limits, queue cap and host overheads of a pool of `tp` x `gpu`
    /// serving `model`, errors naming keys under `key` (`serving.engine`, or a pool's
    /// `engine`).
    pub(super) fn resolve(
        &self,
        key: &str,
        gpu: &GpuSpec,
        model: &ModelSpec,
        tp: u32,
    ) -> Result<(EngineLimits, u32, f64, f64), ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let max_num_seqs = int_in(&k("max_num_seqs"), self.max_num_seqs.unwrap_or(256), 1, 65_536)?;
        let max_num_batched_tokens =
            int_in(&k("max_num_batched_tokens"), self.max_num_batched_tokens.unwrap_or(8192), 1, 1 << 20)?;
        let block_size = int_in(&k("block_size"), self.block_size.unwrap_or(16), 1, 4096)?;
        let utilisation = self.gpu_memory_utilization.unwrap_or(0.9);
        if !(utilisation.is_finite() && utilisation > 0.0 && utilisation <= 1.0) {
            return Err(ConfigError::invalid(k("gpu_memory_utilization"), utilisation, "a share in (0, 1]"));
        }
        let num_gpu_blocks = match self.num_gpu_blocks {
            Some(n) => int_in(&k("num_gpu_blocks"), n, 2, i64::from(u32::MAX))?,
            None => {
                let limits = (max_num_batched_tokens, max_num_seqs);
                let derived = gpu.kv_blocks(model, tp, utilisation, limits, block_size);
                if derived < 2 {
                    let tp_key = key.strip_suffix("engine").unwrap_or("serving.").to_string() + "tp";
                    return Err(ConfigError::invalid(
                        tp_key,
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
        let limits = EngineLimits {
            max_num_seqs,
            max_num_batched_tokens,
            block_size,
            num_gpu_blocks,
            prefix_caching: self.enable_prefix_caching.unwrap_or(true),
        };
        let max_queued = match self.max_queued_requests {
            None => DEFAULT_MAX_QUEUED,
            Some(n) => int_in(&k("max_queued_requests"), n, 1, i64::from(MAX_QUEUED))?,
        };
        Ok((limits, max_queued, self.step_overhead_s.unwrap_or(0.0), self.step_overhead_per_seq_s.unwrap_or(0.0)))
    }
}

impl StepTimeTable {
    /// The step-time model of a pool of `tp` x `gpu` serving `model`, errors naming
    /// keys under `key` (`serving.step_time`, or a pool's `step_time`).
    pub(super) fn resolve(
        &self,
        key: &str,
        gpu: &GpuSpec,
        model: &ModelSpec,
        tp: u32,
        inputs: &dyn Inputs,
    ) -> Result<StepModel, ConfigError> {
        Ok(match self.clone() {
            StepTimeTable::Roofline {} => StepModel::Roofline(Roofline { gpu: gpu.clone(), model: model.clone(), tp }),
            StepTimeTable::Affine { base_s, per_token_s, per_sequence_s, per_kv_token_s } => {
                let a = Affine {
                    base_s: base_s.unwrap_or(0.0),
                    per_token_s: per_token_s.unwrap_or(0.0),
                    per_sequence_s: per_sequence_s.unwrap_or(0.0),
                    per_kv_token_s: per_kv_token_s.unwrap_or(0.0),
                };
                a.validate().map_err(|e| e.within(key))?;
                StepModel::Affine(a)
            }
            StepTimeTable::Profile { profile_dir } => {
                let link = (gpu.link_gb_per_s, gpu.link_latency_us);
                let dir_key = format!("{key}.profile_dir");
                StepModel::Profile(Box::new(Profile::load(&dir_key, &profile_dir, inputs, model, tp, link)?))
            }
        })
    }
}

/// `[serving.step_time]`: one table per model, picked by `kind`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum StepTimeTable {
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

/// A catalogue entry by name, or a table that defines one.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Named<T> {
    Name(String),
    Spec(T),
}

/// `[serving.failures]`: the shared failure model and how often a request on a failed
/// replica is retried elsewhere.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailuresTable {
    pub mtbf_h: f64,
    pub mttr_h: f64,
    pub retries: Option<i64>,
}

/// A request on a failed replica is sent once more, to another replica, by default
/// (a router's retry, as production routers do).
pub(super) const DEFAULT_RETRIES: i64 = 1;

/// `[serving.gpu]`: a built-in GPU by `name` with some numbers replaced (efficiency
/// factors to calibrate, say), or a new GPU with every number given.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GpuTable {
    name: String,
    peak_bf16_tflops: Option<f64>,
    memory_gb_per_s: Option<f64>,
    memory_gb: Option<f64>,
    bandwidth_efficiency: Option<f64>,
    kv_bandwidth_efficiency: Option<f64>,
    layer_latency_us: Option<f64>,
    prefill_mfu: Option<f64>,
    decode_mfu: Option<f64>,
    tdp_w: Option<f64>,
    idle_w: Option<f64>,
    static_w: Option<f64>,
    compute_w: Option<f64>,
    memory_w: Option<f64>,
    link_w: Option<f64>,
    link_gb_per_s: Option<f64>,
    link_latency_us: Option<f64>,
}

impl GpuTable {
    /// The GPU, errors naming keys under `key` (`serving.gpu`, or a pool's `gpu`).
    pub(super) fn resolve(self, key: &str) -> Result<GpuSpec, ConfigError> {
        let base = catalog::builtin_gpus().into_iter().find(|g| g.name == self.name);
        let field = |field_key: &str, given: Option<f64>, built_in: Option<f64>| {
            given.or(built_in).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}.{field_key}"),
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
            // Optional for a new GPU: the KV cache read at the weights' efficiency, and
            // no layer latency (its efficiency then taken as measured on whole steps).
            kv_bandwidth_efficiency: self.kv_bandwidth_efficiency.or(b.and_then(|g| g.kv_bandwidth_efficiency)),
            layer_latency_us: self.layer_latency_us.or(b.map(|g| g.layer_latency_us)).unwrap_or(0.0),
            prefill_mfu: field("prefill_mfu", self.prefill_mfu, b.map(|g| g.prefill_mfu))?,
            decode_mfu: field("decode_mfu", self.decode_mfu, b.map(|g| g.decode_mfu))?,
            tdp_w: field("tdp_w", self.tdp_w, b.map(|g| g.tdp_w))?,
            idle_w: field("idle_w", self.idle_w, b.map(|g| g.idle_w))?,
            static_w: field("static_w", self.static_w, b.map(|g| g.static_w))?,
            compute_w: field("compute_w", self.compute_w, b.map(|g| g.compute_w))?,
            memory_w: field("memory_w", self.memory_w, b.map(|g| g.memory_w))?,
            link_w: field("link_w", self.link_w, b.map(|g| g.link_w))?,
            link_gb_per_s: field("link_gb_per_s", self.link_gb_per_s, b.map(|g| g.link_gb_per_s))?,
            link_latency_us: field("link_latency_us", self.link_latency_us, b.map(|g| g.link_latency_us))?,
        })
    }
}

/// Resolves the continuous engine's tables: catalogue entries, profiles, traces and
/// measured runs read through `inputs`, every value checked; errors name the key as
/// the file spells it.
pub(crate) fn resolve(
    s: ContinuousTable,
    simulation: &Window,
    inputs: &dyn Inputs,
) -> Result<LlmServingConfig, ConfigError> {
    let shared = PoolDefaults {
        engine: &s.engine,
        step_time: s.step_time.as_ref(),
        context_limit_tokens: s.context_limit_tokens,
        failures: s.failures,
        gpu_usd_per_hour: s.prices.gpu_usd_per_hour,
        power_cap_w: s.power_cap_w,
        autoscale: s.autoscale,
    };
    let pools = match s.pools {
        Some(tables) => {
            let given = [
                ("model", s.model.is_some()),
                ("gpu", s.gpu.is_some()),
                ("tp", s.tp.is_some()),
                ("nodes", s.nodes.is_some()),
                ("replicas_per_node", s.replicas_per_node.is_some()),
                ("autoscale", s.autoscale.is_some()),
            ];
            if let Some((key, _)) = given.iter().find(|(_, given)| *given) {
                return Err(ConfigError::invalid(
                    format!("serving.{key}"),
                    "(given)",
                    "none with [[serving.pools]]: each pool names its own model, gpu, tp, size and autoscaler",
                ));
            }
            if tables.is_empty() {
                return Err(ConfigError::invalid("serving.pools", "[]", "at least one pool"));
            }
            let pools: Result<Vec<LlmPool>, ConfigError> =
                tables.into_iter().enumerate().map(|(i, t)| t.resolve(i, &shared, inputs)).collect();
            pools?
        }
        None => {
            let missing = |key: &str| {
                ConfigError::invalid(format!("serving.{key}"), "(missing)", "a value (or [[serving.pools]])")
            };
            let nodes = int_in("serving.nodes", s.nodes.ok_or_else(|| missing("nodes"))?, 1, 100_000)?;
            let per_node = int_in("serving.replicas_per_node", s.replicas_per_node.unwrap_or(1), 1, 1024)?;
            let one = OnePool {
                gpu: s.gpu.ok_or_else(|| missing("gpu"))?,
                model: s.model.ok_or_else(|| missing("model"))?,
                tp: s.tp,
                nodes,
                per_node,
            };
            vec![one.resolve(&shared, inputs)?]
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
    let mut config = LlmServingConfig {
        arrivals,
        tasks: s.tasks.clone(),
        routing: s.routing,
        kv_overlap_score_weight: s.kv_overlap_score_weight.unwrap_or(1.0),
        routing_interval_s: s.routing_interval_s.unwrap_or(0.0),
        coalesce_steps: s.coalesce_steps.unwrap_or(true),
        pools,
        node_baseline_w: s.power.node_baseline_w,
        pue: s.power.pue,
        grid,
        energy_usd_per_kwh: s.prices.energy_usd_per_kwh,
        duration_s,
        warmup_s,
        measured,
        disaggregation: s.disaggregation,
        retraining: None,
        validator: None,
        adaptation: None,
    };
    config.validate().map_err(|e| {
        e.rekey(|key| match key {
            "duration_s" | "warmup_s" => format!("simulation.{key}"),
            other => format!("serving.{other}"),
        })
    })?;
    let tables = RetrainingTables { drift: s.drift, quality: s.quality, monitor: s.monitor, training: s.training };
    config.retraining = tables.resolve(&config.pools, &config.served_names(), config.duration_s)?;
    if let Some(table) = s.validator {
        if config.routing_interval_s > 0.0 {
            // A validator asks its contenders at once; the router's rounds do not apply.
            return Err(ConfigError::invalid(
                "serving.routing_interval_s",
                config.routing_interval_s,
                "0 with [serving.validator], which picks its contenders itself as each request arrives",
            ));
        }
        if !s.similarity.is_empty() && config.tasks.len() < 2 {
            return Err(ConfigError::invalid("serving.similarity", "(given)", "rows between two tasks or more"));
        }
        config.validator = Some(table.resolve(&names, &s.similarity)?);
        // Every pool that serves is a miner class; `miner` left out: good, quality 1,
        // reliable, unlimited capacity.
        for (i, pool) in config.pools.iter_mut().enumerate() {
            if pool.miner.is_none() && pool.role == super::PoolRole::Mixed {
                pool.miner = Some(MinerTable::default().resolve(&format!("serving.pools[{i}]"), pool.replicas)?.0);
            }
        }
    } else if !s.similarity.is_empty() {
        return Err(ConfigError::invalid("serving.similarity", "(given)", "only with [serving.validator]"));
    }
    if let Some(table) = &s.adaptation {
        if config.validator.is_some() || config.retraining.is_some() || config.disaggregation.is_some() {
            return Err(ConfigError::invalid(
                "serving.adaptation",
                "(given)",
                "not with [serving.validator], [serving.drift] or disaggregation yet",
            ));
        }
        let adaptation = table.resolve(&config.pools, &config.tasks, &config.served_names())?;
        for &p in &adaptation.pools {
            config.pools[p].adapted = true;
        }
        config.adaptation = Some(adaptation);
    }
    let disaggregated = config.disaggregation.is_some();
    check_miners(
        config.validator.is_some(),
        config.routing,
        &config.pools,
        config.retraining.is_some(),
        disaggregated,
    )?;
    Ok(config)
}

/// One of vLLM's per-request records (its `requests.jsonl`): when the request was
/// queued, gave its first token and its last (s, on one clock), and how many tokens it
/// gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VllmRecord {
    /// `queued_ts`.
    pub queued_s: f64,
    /// `first_token_ts`.
    pub first_token_s: f64,
    /// `last_token_ts`.
    pub last_token_s: f64,
    /// `output_toks` (or `output_tokens`).
    pub output_tokens: f64,
}

impl VllmRecord {
    /// The columns of vLLM's records, in the order of the fields.
    pub const COLUMNS: [&str; 4] = ["queued_ts", "first_token_ts", "last_token_ts", "output_toks"];

    /// The column of each field in `table`, where it has them all.
    pub fn columns(table: &DataTable) -> Option<[usize; 4]> {
        let [q, f, l, _] = Self::COLUMNS.map(|c| table.column(c));
        Some([q?, f?, l?, table.column_any(&["output_toks", "output_tokens"])?])
    }

    /// The record in row `row`; an error names what is not a number.
    pub fn read(table: &DataTable, [q, f, l, n]: [usize; 4], row: usize) -> Result<VllmRecord, String> {
        let v = |c: usize| table.number(c, row);
        Ok(VllmRecord { queued_s: v(q)?, first_token_s: v(f)?, last_token_s: v(l)?, output_tokens: v(n)? })
    }

    /// Time to first token (s).
    pub fn ttft_s(&self) -> f64 {
        self.first_token_s - self.queued_s
    }

    /// Queued to last token (s).
    pub fn e2e_s(&self) -> f64 {
        self.last_token_s - self.queued_s
    }

    /// Mean time per output token after the first (s); none for a single token.
    pub fn tpot_s(&self) -> Option<f64> {
        (self.output_tokens > 1.0).then(|| (self.last_token_s - self.first_token_s) / (self.output_tokens - 1.0))
    }
}

/// Samples of TTFT, TPOT and end-to-end latency (s) of `records`, by the request
/// column each matches.
pub fn vllm_samples<'a>(records: impl Iterator<Item = &'a VllmRecord>) -> [(&'static str, Vec<f64>); 3] {
    let (mut ttft, mut tpot, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    for r in records {
        ttft.push(r.ttft_s());
        e2e.push(r.e2e_s());
        tpot.extend(r.tpot_s());
    }
    [("ttft_s", ttft), ("tpot_s", tpot), ("e2e_s", e2e)]
}

/// First queued to last token over `records` (s).
pub fn vllm_makespan_s<'a>(records: impl Iterator<Item = &'a VllmRecord>) -> f64 {
    let (start, end) =
        records.fold((f64::INFINITY, f64::NEG_INFINITY), |(s, e), r| (s.min(r.queued_s), e.max(r.last_token_s)));
    end - start
}

/// The summary of a measured run from its per-request records ([`VllmRecord`]), over
/// the requests a simulated replay of it runs and measures: those queued (counted from
/// the first) before `duration_s`, and of those, for the latency statistics, the ones
/// queued from `warmup_s` on. The makespan spans every request that runs.
pub fn read_measured(table: &DataTable, warmup_s: f64, duration_s: f64) -> Result<Measured, ConfigError> {
    let columns = VllmRecord::columns(table).ok_or_else(|| {
        let absent = VllmRecord::COLUMNS.into_iter().find(|c| table.column(c).is_none()).unwrap_or("output_toks");
        table.missing(absent)
    })?;
    let records: Vec<VllmRecord> = (0..table.rows())
        .map(|row| VllmRecord::read(table, columns, row).map_err(|e| table.at(row, e)))
        .collect::<Result<_, _>>()?;
    let origin = records.iter().map(|r| r.queued_s).fold(f64::INFINITY, f64::min);
    let run: Vec<&VllmRecord> = records.iter().filter(|r| r.queued_s - origin < duration_s).collect();
    let measured = run.iter().copied().filter(|r| r.queued_s - origin >= warmup_s);
    let samples = vllm_samples(measured);
    if samples[0].1.is_empty() {
        return Err(table.error(format!(
            "no request queued between the warm-up's end ({warmup_s} s) and simulation.duration_s ({duration_s} s) \
             of the replay, counted from the first: nothing to compare with"
        )));
    }
    let mut values = Vec::new();
    for (column, mut xs) in samples {
        if xs.is_empty() {
            continue;
        }
        let name = column.trim_end_matches("_s");
        xs.sort_by(f64::total_cmp);
        values.push((format!("{name}_mean_s"), xs.iter().sum::<f64>() / xs.len() as f64));
        for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
            values.push((format!("{name}_{label}_s"), quantile(&xs, q)));
        }
    }
    values.push(("makespan_s".into(), vllm_makespan_s(run.into_iter())));
    Ok(Measured { source: table.file().to_string(), values })
}

/// The `q` quantile of sorted values, by linear interpolation between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}
