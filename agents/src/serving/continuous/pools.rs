//! A pool's keys as scenario files write them: the one-pool keys of `[serving]`
//! (`model`, `gpu`, `tp`, `nodes` x `replicas_per_node`) or a `[[serving.pools]]`
//! table, whose `engine`, `step_time`, `context_limit_tokens`, `failures` and
//! `gpu_usd_per_hour` default to the `[serving]` ones. Both resolve through one
//! function, so a scenario written as one pool is the shorthand's pool exactly.

use serde::Deserialize;

use super::file::{DEFAULT_RETRIES, EngineTable, FailuresTable, GpuTable, Named, StepTimeTable};
use super::{Autoscale, LlmPool, Placement, PoolRole, ScaleSignal};
use crate::error::ConfigError;
use crate::failures::Failures;
use crate::input::Inputs;
use crate::llm::{ModelSpec, Roofline, catalog};
use crate::serving::int_in;

/// GPUs per node when a pool gives `replicas` alone (an HGX or DGX node).
pub const DEFAULT_GPUS_PER_NODE: u32 = 8;

/// What every pool inherits from `[serving]`.
pub(super) struct PoolDefaults<'a> {
    pub engine: &'a EngineTable,
    pub step_time: Option<&'a StepTimeTable>,
    pub context_limit_tokens: Option<i64>,
    pub failures: Option<FailuresTable>,
    pub gpu_usd_per_hour: f64,
    /// `serving.power_cap_w`.
    pub power_cap_w: Option<f64>,
    /// `[serving.autoscale]` (for the one-pool keys only).
    pub autoscale: Option<AutoscaleTable>,
}

/// `[[serving.pools]]`: a pool of replicas of one model on one GPU type.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolTable {
    name: String,
    gpu: Named<GpuTable>,
    model: Named<ModelSpec>,
    tp: Option<i64>,
    replicas: Option<i64>,
    gpus_per_node: Option<i64>,
    nodes: Option<i64>,
    replicas_per_node: Option<i64>,
    engine: Option<EngineTable>,
    step_time: Option<StepTimeTable>,
    context_limit_tokens: Option<i64>,
    failures: Option<FailuresTable>,
    gpu_usd_per_hour: Option<f64>,
    serves: Option<String>,
    role: Option<String>,
    power_cap_w: Option<f64>,
    autoscale: Option<AutoscaleTable>,
    miner: Option<super::miners::MinerTable>,
    accuracy: Option<f64>,
}

/// A pool's `autoscale` table.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AutoscaleTable {
    min_replicas: Option<i64>,
    max_replicas: i64,
    signal: ScaleSignal,
    target: f64,
    tolerance: Option<f64>,
    interval_s: Option<f64>,
    scale_down_delay_s: Option<f64>,
    load_gb_per_s: Option<f64>,
    engine_start_s: Option<f64>,
}

/// Weights load bandwidth of a new replica (GB/s): Llama-3.1-8B's 16 GB in 18 s,
/// from a local cache into an L40S (Tensorfuse's vLLM cold-start measurements).
pub const DEFAULT_LOAD_GB_PER_S: f64 = 0.9;
/// A new replica's engine start apart from its weights (s): the same measurements
/// with torch.compile's cache warm (bytecode 10 s, graph compilation 13 s, CUDA graph
/// capture 7 s, engine and imports 34 s).
pub const DEFAULT_ENGINE_START_S: f64 = 64.0;
/// How far the signal per replica may stray from its target before the replicas
/// change, unless given: Kubernetes' horizontal pod autoscaler's default tolerance
/// (`--horizontal-pod-autoscaler-tolerance`, 0.1).
pub const DEFAULT_SCALE_TOLERANCE: f64 = 0.1;
/// Time between autoscaling decisions unless given (s): Kubernetes' horizontal pod
/// autoscaler's default sync period.
pub const DEFAULT_SCALE_INTERVAL_S: f64 = 15.0;
/// How long fewer replicas must be wanted before any are removed unless given (s):
/// Kubernetes' default downscale stabilisation window.
pub const DEFAULT_SCALE_DOWN_DELAY_S: f64 = 300.0;

/// The one pool `[serving]`'s own keys describe.
pub(super) struct OnePool {
    pub gpu: Named<GpuTable>,
    pub model: Named<ModelSpec>,
    pub tp: Option<i64>,
    pub nodes: u32,
    pub per_node: u32,
}

/// How many replicas, on what nodes.
enum Size {
    PerNode { nodes: u32, per_node: u32 },
    Replicas { replicas: u32, gpus_per_node: u32 },
}

/// A pool's keys, wherever they were written.
struct Parts<'a> {
    /// Where its keys are: `serving` or `serving.pools[i]`.
    key: String,
    name: Option<String>,
    gpu: Named<GpuTable>,
    model: Named<ModelSpec>,
    tp: Option<i64>,
    size: Size,
    engine: EngineTable,
    step_time: Option<&'a StepTimeTable>,
    context_limit_tokens: Option<i64>,
    failures: Option<FailuresTable>,
    gpu_usd_per_hour: f64,
    serves: Option<String>,
    role: PoolRole,
    power_cap_w: Option<f64>,
    autoscale: Option<AutoscaleTable>,
    miner: Option<super::miners::MinerTable>,
    accuracy: Option<f64>,
}

impl OnePool {
    /// The pool.
    pub(super) fn resolve(self, shared: &PoolDefaults<'_>, inputs: &dyn Inputs) -> Result<LlmPool, ConfigError> {
        let parts = Parts {
            key: "serving".into(),
            name: None,
            gpu: self.gpu,
            model: self.model,
            tp: self.tp,
            size: Size::PerNode { nodes: self.nodes, per_node: self.per_node },
            engine: shared.engine.clone(),
            step_time: shared.step_time,
            context_limit_tokens: shared.context_limit_tokens,
            failures: shared.failures,
            gpu_usd_per_hour: shared.gpu_usd_per_hour,
            serves: None,
            role: PoolRole::Mixed,
            power_cap_w: shared.power_cap_w,
            autoscale: shared.autoscale,
            miner: None,
            accuracy: None,
        };
        parts.resolve(inputs)
    }
}

impl PoolTable {
    /// Pool `i`, the `[serving]` keys filling in what it leaves out.
    pub(super) fn resolve(
        self,
        i: usize,
        shared: &PoolDefaults<'_>,
        inputs: &dyn Inputs,
    ) -> Result<LlmPool, ConfigError> {
        let key = format!("serving.pools[{i}]");
        let role = match self.role.as_deref() {
            None | Some("mixed") => PoolRole::Mixed,
            Some("prefill") => PoolRole::Prefill,
            Some("decode") => PoolRole::Decode,
            Some("training") => PoolRole::Training,
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("{key}.role"),
                    other,
                    "\"mixed\", \"prefill\", \"decode\" or \"training\"",
                ));
            }
        };
        let size = match (self.replicas, self.nodes) {
            (Some(replicas), None) => {
                if let Some(n) = self.replicas_per_node {
                    return Err(ConfigError::invalid(format!("{key}.replicas_per_node"), n, "none with replicas"));
                }
                Size::Replicas {
                    replicas: int_in(&format!("{key}.replicas"), replicas, 1, 1_000_000)?,
                    gpus_per_node: match self.gpus_per_node {
                        None => DEFAULT_GPUS_PER_NODE,
                        Some(g) => int_in(&format!("{key}.gpus_per_node"), g, 1, 1024)?,
                    },
                }
            }
            (None, Some(nodes)) => Size::PerNode {
                nodes: int_in(&format!("{key}.nodes"), nodes, 1, 100_000)?,
                per_node: int_in(&format!("{key}.replicas_per_node"), self.replicas_per_node.unwrap_or(1), 1, 1024)?,
            },
            (given, _) => {
                return Err(ConfigError::invalid(
                    format!("{key}.replicas"),
                    if given.is_some() { "(given with nodes)" } else { "(missing)" },
                    "either replicas (packed onto nodes of gpus_per_node GPUs, 8 by default) or nodes x replicas_per_node",
                ));
            }
        };
        let parts = Parts {
            key,
            name: Some(self.name),
            gpu: self.gpu,
            model: self.model,
            tp: self.tp,
            size,
            engine: self.engine.unwrap_or_default().over(shared.engine),
            step_time: self.step_time.as_ref().or(shared.step_time),
            context_limit_tokens: self.context_limit_tokens.or(shared.context_limit_tokens),
            failures: self.failures.or(shared.failures),
            gpu_usd_per_hour: self.gpu_usd_per_hour.unwrap_or(shared.gpu_usd_per_hour),
            serves: self.serves,
            role,
            power_cap_w: self.power_cap_w.or(shared.power_cap_w),
            autoscale: self.autoscale,
            miner: self.miner,
            accuracy: self.accuracy,
        };
        parts.resolve(inputs)
    }
}

impl AutoscaleTable {
    /// The autoscaler of a pool of `model` whose `replicas` (or nodes x replicas per
    /// node) serve at the start.
    fn resolve(self, key: &str, size: &Size, model: &ModelSpec) -> Result<Autoscale, ConfigError> {
        let k = |name: &str| format!("{key}.autoscale.{name}");
        let max_replicas = int_in(&k("max_replicas"), self.max_replicas, 1, 1_000_000)?;
        let min_replicas = int_in(&k("min_replicas"), self.min_replicas.unwrap_or(1), 0, 1_000_000)?;
        let load_gb_per_s = self.load_gb_per_s.unwrap_or(DEFAULT_LOAD_GB_PER_S);
        if !(load_gb_per_s.is_finite() && load_gb_per_s > 0.0) {
            return Err(ConfigError::invalid(k("load_gb_per_s"), load_gb_per_s, "a finite number of GB/s > 0"));
        }
        let engine_start_s = self.engine_start_s.unwrap_or(DEFAULT_ENGINE_START_S);
        if !(engine_start_s.is_finite() && engine_start_s >= 0.0) {
            return Err(ConfigError::invalid(k("engine_start_s"), engine_start_s, "seconds >= 0"));
        }
        Ok(Autoscale {
            min_replicas,
            max_replicas,
            initial_replicas: match *size {
                Size::PerNode { nodes, per_node } => nodes * per_node,
                Size::Replicas { replicas, .. } => replicas,
            },
            signal: self.signal,
            target: self.target,
            tolerance: self.tolerance.unwrap_or(DEFAULT_SCALE_TOLERANCE),
            interval_s: self.interval_s.unwrap_or(DEFAULT_SCALE_INTERVAL_S),
            scale_down_delay_s: self.scale_down_delay_s.unwrap_or(DEFAULT_SCALE_DOWN_DELAY_S),
            cold_start_s: model.weight_bytes() / (load_gb_per_s * 1e9) + engine_start_s,
        })
    }
}

impl Parts<'_> {
    fn resolve(self, inputs: &dyn Inputs) -> Result<LlmPool, ConfigError> {
        let key = &self.key;
        let model = match self.model {
            Named::Name(name) => catalog::model(&format!("{key}.model"), &name)?,
            Named::Spec(m) => m,
        };
        model.validate().map_err(|e| e.within(&format!("{key}.model")))?;
        let gpu = match self.gpu {
            Named::Name(name) => catalog::gpu(&format!("{key}.gpu"), &name)?,
            Named::Spec(g) => g.resolve(&format!("{key}.gpu"))?,
        };
        gpu.validate().map_err(|e| e.within(&format!("{key}.gpu")))?;
        let tp = int_in(&format!("{key}.tp"), self.tp.unwrap_or(1), 1, 64)?;
        let (limits, max_queued_requests, step_overhead_s, step_overhead_per_seq_s) =
            self.engine.resolve(&format!("{key}.engine"), &gpu, &model, tp)?;
        let step_model = self.step_time.cloned().unwrap_or_default().resolve(
            &format!("{key}.step_time"),
            &gpu,
            &model,
            tp,
            inputs,
        )?;
        let autoscale = match self.autoscale {
            None => None,
            Some(a) => Some(a.resolve(key, &self.size, &model)?),
        };
        let initial = match self.size {
            Size::PerNode { nodes, per_node } => nodes * per_node,
            Size::Replicas { replicas, .. } => replicas,
        };
        let miner = match self.miner {
            None => None,
            Some(table) => Some(table.resolve(key, initial)?),
        };
        let size = match (&autoscale, self.size) {
            // An autoscaled pool has a slot for each replica it may have.
            (Some(a), Size::Replicas { gpus_per_node, .. }) => {
                Size::Replicas { replicas: a.max_replicas, gpus_per_node }
            }
            (Some(a), Size::PerNode { per_node, .. }) => {
                Size::PerNode { nodes: a.max_replicas.div_ceil(per_node), per_node }
            }
            // A pool of miners has a slot for each miner it may have.
            (None, Size::Replicas { gpus_per_node, .. }) if miner.is_some_and(|(_, slots)| slots > initial) => {
                Size::Replicas { replicas: miner.map_or(initial, |(_, slots)| slots), gpus_per_node }
            }
            (None, Size::PerNode { per_node, .. }) if miner.is_some_and(|(_, slots)| slots > initial) => {
                Size::PerNode { nodes: miner.map_or(initial, |(_, slots)| slots).div_ceil(per_node), per_node }
            }
            (None, size) => size,
        };
        let (replicas, nodes, placement) = match size {
            Size::PerNode { nodes, per_node } => (nodes * per_node, nodes, Placement::PerNode(per_node)),
            Size::Replicas { replicas, gpus_per_node } => {
                let gpus = u64::from(replicas) * u64::from(tp);
                let nodes = gpus.div_ceil(u64::from(gpus_per_node)).min(u64::from(u32::MAX)) as u32;
                (replicas, nodes, Placement::Packed(gpus_per_node))
            }
        };
        let power_cap_w = match self.power_cap_w {
            None => None,
            Some(cap) if cap.is_finite() && cap > gpu.static_w && cap <= gpu.tdp_w => Some(cap),
            Some(cap) => {
                return Err(ConfigError::invalid(
                    format!("{key}.power_cap_w"),
                    cap,
                    format!(
                        "watts per GPU above the GPU's static power ({:.1} W) and at most its board limit ({:.1} W)",
                        gpu.static_w, gpu.tdp_w
                    ),
                ));
            }
        };
        let relative = key.strip_prefix("serving").unwrap_or(key).trim_start_matches('.');
        Ok(LlmPool {
            name: self.name.unwrap_or_else(|| model.name.clone()),
            serves: self.serves.unwrap_or_else(|| model.name.clone()),
            role: self.role,
            key: if relative.is_empty() { String::new() } else { format!("{relative}.") },
            replicas,
            nodes,
            placement,
            tp,
            limits,
            max_queued_requests,
            // vLLM's max_model_len defaults to the model's context length.
            context_limit_tokens: match self.context_limit_tokens {
                None => model.context_tokens,
                Some(n) => Some(int_in(&format!("{key}.context_limit_tokens"), n, 2, i64::from(u32::MAX))?),
            },
            step_overhead_s,
            step_overhead_per_seq_s,
            step_model,
            demand: Roofline { gpu: gpu.clone(), model: model.clone(), tp }.terms(),
            power_cap_w,
            gpu,
            model,
            gpu_usd_per_hour: self.gpu_usd_per_hour,
            failures: self.failures.map(|f| Failures { mtbf_h: f.mtbf_h, mttr_h: f.mttr_h }),
            retries: match self.failures.and_then(|f| f.retries) {
                None => DEFAULT_RETRIES as u32,
                Some(n) => int_in(&format!("{key}.failures.retries"), n, 0, 100)?,
            },
            autoscale,
            miner: miner.map(|(class, _)| class),
            accuracy: match self.accuracy {
                Some(a) if !a.is_finite() => {
                    return Err(ConfigError::invalid(format!("{key}.accuracy"), a, "a finite score"));
                }
                a => a,
            },
            adapted: false,
        })
    }
}
