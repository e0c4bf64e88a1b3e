//! The adaptive pipeline as scenario files write it (`world = "pipeline"`):
//! `[pipeline]`, `[[stages]]`, `[load]`, `[adapter]`, `[resources]`, `[feedback]`,
//! `[efficiency]` and `[simulation]`.

use infersim_engine::Observer;
use serde::Deserialize;

use super::{
    Adapter, AdapterPolicy, Efficiency, Feedback, Load, Objective, PipelineConfig, PipelineRequest, PipelineSample,
    Predictor, Resources, Stage, build_pipeline, finish_pipeline, read_profile,
};
use crate::error::{ConfigError, RunError};
use crate::failures::Failures;
use crate::grid::CarbonIntensity;
use crate::input::Inputs;
use crate::world::{Charts, DistributionChart, Metrics, Replication, Traces, Tradeoff, Window, World};

/// The tables of a pipeline scenario, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pipeline: PipelineTable,
    stages: Vec<StageTable>,
    load: Load,
    adapter: AdapterTable,
    resources: Resources,
    feedback: Feedback,
    efficiency: Efficiency,
    grid: Option<CarbonIntensity>,
    failures: Option<Failures>,
    simulation: Window,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineTable {
    sla_s: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageTable {
    name: String,
    /// A built-in profile name or a path to a profile table.
    profile: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdapterTable {
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
    fixed: Option<Vec<FixedStage>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedStage {
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

/// The adaptive pipeline as a world.
#[derive(Clone, Copy, Debug)]
pub struct PipelineWorld;

impl World for PipelineWorld {
    const NAME: &'static str = "pipeline";
    type File = PipelineFile;
    type Config = PipelineConfig;
    type Request = PipelineRequest;
    type Sample = PipelineSample;

    /// Accuracy and tail latency against energy across a sweep: the upper-left points
    /// of the accuracy chart are its Pareto front.
    fn charts() -> Charts {
        const ENERGY: &[&str] = &["energy_per_request_kwh"];
        Charts {
            distributions: &[DistributionChart::LATENCY],
            tradeoffs: &[
                Tradeoff { name: "pareto_accuracy_energy", metric: "accuracy_mean", against: ENERGY },
                Tradeoff { name: "pareto_latency_energy", metric: "latency_p99_s", against: ENERGY },
            ],
        }
    }

    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[("ipa-video", include_str!("../../../data/scenarios/ipa-video.toml"))]
    }

    fn data() -> &'static [(&'static str, &'static str)] {
        super::BUILTIN_PROFILES
    }

    fn resolve(file: PipelineFile, inputs: &dyn Inputs) -> Result<PipelineConfig, ConfigError> {
        let mut stages = Vec::with_capacity(file.stages.len());
        for (i, st) in file.stages.iter().enumerate() {
            let key = format!("stages[{i}].profile");
            let variants = read_profile(&inputs.table(&key, &st.profile)?)?;
            let stage = Stage::new(st.name.clone(), variants).map_err(|variant| {
                ConfigError::invalid(
                    key.clone(),
                    &st.profile,
                    format!("at least 3 batch sizes per variant ({variant} has fewer)"),
                )
            })?;
            stages.push(stage);
        }
        let a = &file.adapter;
        let policy = match (a.policy.as_str(), &a.fixed) {
            ("ipa", _) => AdapterPolicy::Ipa,
            ("fixed", Some(plan)) => {
                AdapterPolicy::Fixed(plan.iter().map(|f| (f.variant.clone(), f.batch, f.replicas)).collect())
            }
            ("fixed", None) => {
                return Err(ConfigError::invalid(
                    "adapter.fixed",
                    "(missing)",
                    "one {variant, batch, replicas} per stage with policy = \"fixed\"",
                ));
            }
            (other, _) => return Err(ConfigError::invalid("adapter.policy", other, "fixed or ipa")),
        };
        file.simulation.no_warmup()?;
        let mut load = file.load;
        if let Some(process) = &mut load.arrivals {
            process.load("load.arrivals", inputs, &[])?;
        }
        let mut grid = file.grid;
        if let Some(grid) = &mut grid {
            grid.load("grid", inputs)?;
        }
        let config = PipelineConfig {
            stages,
            load,
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
            sla_s: file.pipeline.sla_s,
            resources: file.resources,
            feedback: file.feedback,
            efficiency: file.efficiency,
            grid,
            failures: file.failures,
            duration_s: file.simulation.duration_s()?,
        };
        config.validate().map_err(|e| {
            e.rekey(|key| match key {
                "duration_s" => "simulation.duration_s".into(),
                "sla_s" => "pipeline.sla_s".into(),
                other => other.into(),
            })
        })?;
        Ok(config)
    }

    fn latency_objectives(config: &PipelineConfig) -> Vec<(String, f64)> {
        vec![("pipeline".into(), config.sla_s)]
    }

    fn run<R: Observer<PipelineRequest>, S: Observer<PipelineSample>>(
        config: &PipelineConfig,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        let samples = traces.sample_every.map(|_| traces.samples);
        let mut sim = build_pipeline(config, traces.requests, samples, replication.master_seed, replication.index)?;
        replication.attach(&mut sim, infersim_engine::SimTime::from_secs_f64(config.duration_s).ok());
        let metrics = finish_pipeline(&mut sim)?.metrics();
        replication.finished(metrics)
    }
}

crate::trace_row!(PipelineSample, |s| {
    t_h: f64 = s.t_h,
    observed_per_s: f64 = s.observed_per_s,
    predicted_per_s: f64 = s.predicted_per_s,
    plan: &str = s.plan.as_str(),
    feasible: bool = s.feasible,
    queued: u32 = s.queued,
    cores: f64 = s.cores,
    ics: Option<f64> = s.ics,
    energy_kwh: f64 = s.energy_kwh,
});

crate::trace_row!(PipelineRequest, |r| {
    arrival_s: f64 = r.arrival_s,
    finish_s: f64 = r.finish_s,
    latency_s: f64 = r.finish_s - r.arrival_s,
    accuracy: f64 = r.accuracy,
    score: Option<u32> = r.score.map(u32::from),
});
