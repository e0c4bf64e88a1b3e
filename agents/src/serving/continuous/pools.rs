//! A pool's keys as scenario files write them: the one-pool keys of `[serving]`
//! (`model`, `gpu`, `tp`, `nodes` x `replicas_per_node`) or a `[[serving.pools]]`
//! table, whose `engine`, `step_time`, `context_limit_tokens`, `failures` and
//! `gpu_usd_per_hour` default to the `[serving]` ones. Both resolve through one
//! function, so a scenario written as one pool is the shorthand's pool exactly.

use serde::Deserialize;

use super::file::{DEFAULT_RETRIES, EngineTable, FailuresTable, GpuTable, Named, StepTimeTable};
use super::{LlmPool, Placement};
use crate::error::ConfigError;
use crate::failures::Failures;
use crate::input::Inputs;
use crate::llm::{ModelSpec, catalog};
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
}

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
        if let Some(role) = self.role.as_deref().filter(|r| *r != "mixed") {
            return Err(ConfigError::invalid(
                format!("{key}.role"),
                role,
                "\"mixed\" (prefill and decode pools are not built yet: use [serving.disaggregation] with one pool)",
            ));
        }
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
        };
        parts.resolve(inputs)
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
        let (replicas, nodes, placement) = match self.size {
            Size::PerNode { nodes, per_node } => (nodes * per_node, nodes, Placement::PerNode(per_node)),
            Size::Replicas { replicas, gpus_per_node } => {
                let gpus = u64::from(replicas) * u64::from(tp);
                let nodes = gpus.div_ceil(u64::from(gpus_per_node)).min(u64::from(u32::MAX)) as u32;
                (replicas, nodes, Placement::Packed(gpus_per_node))
            }
        };
        let relative = key.strip_prefix("serving").unwrap_or(key).trim_start_matches('.');
        Ok(LlmPool {
            name: self.name.unwrap_or_else(|| model.name.clone()),
            serves: self.serves.unwrap_or_else(|| model.name.clone()),
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
            gpu,
            model,
            gpu_usd_per_hour: self.gpu_usd_per_hour,
            failures: self.failures.map(|f| Failures { mtbf_h: f.mtbf_h, mttr_h: f.mttr_h }),
            retries: match self.failures.and_then(|f| f.retries) {
                None => DEFAULT_RETRIES as u32,
                Some(n) => int_in(&format!("{key}.failures.retries"), n, 0, 100)?,
            },
        })
    }
}
