//! The drift-and-retraining world as scenario files write it (`world = "retraining"`):
//! top-level `[arrivals]`, `[fleet]`, `[drift]`, `[quality]`, `[monitor]`, `[training]`,
//! `[energy]`, `[grid]`, `[prices]` and `[simulation]`.

use infersim_engine::Observer;
use serde::Deserialize;

use super::{
    Energy, Fleet, LossFunction, Prices, Quality, RetrainingConfig, RetrainingRequest, RetrainingSample, Training,
    TrainingPool, build_retraining, finish_retraining,
};
use crate::arrivals::ArrivalProcess;
use crate::error::{ConfigError, RunError};
use crate::grid::CarbonIntensity;
use crate::input::Inputs;
use crate::world::{Charts, DistributionChart, Estimate, Metrics, Note, Replication, Traces, Window, World};

/// The tables of a drift-and-retraining scenario, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainingFile {
    arrivals: ArrivalProcess,
    fleet: Fleet,
    drift: crate::drift::DriftTable,
    quality: Quality,
    monitor: crate::drift::MonitorTable,
    training: TrainingTable,
    energy: Energy,
    grid: CarbonIntensity,
    prices: Prices,
    simulation: Window,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingTable {
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

/// Drift and retraining as a world.
#[derive(Clone, Copy, Debug)]
pub struct RetrainingWorld;

impl World for RetrainingWorld {
    const NAME: &'static str = "retraining";
    type File = RetrainingFile;
    type Config = RetrainingConfig;
    type Request = RetrainingRequest;
    type Sample = RetrainingSample;

    /// Where the loss ran away: such replications stop early and carry
    /// `diverged = true`, so their other metrics cover a shorter run.
    fn notes(estimates: &[Estimate]) -> Vec<Note> {
        let diverged = estimates.iter().filter(|e| e.metric == "diverged" && e.mean > 0.0);
        diverged
            .map(|e| {
                Note::Finding(format!(
                    "RUNAWAY at point {}: the loss diverged in {:.0} of {} replications (diverged = true); those \
                     stopped when it did, so their other metrics cover fewer hours (see diverged_at_h)",
                    e.point,
                    (e.mean * e.replications as f64).round(),
                    e.replications
                ))
            })
            .collect()
    }

    fn charts() -> Charts {
        Charts { distributions: &[DistributionChart::LATENCY], tradeoffs: &[] }
    }

    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[
            ("bloom-sd", include_str!("../../../data/scenarios/bloom-sd.toml")),
            ("bloom-stochastic", include_str!("../../../data/scenarios/bloom-stochastic.toml")),
            ("bloom-deployment", include_str!("../../../data/scenarios/bloom-deployment.toml")),
            ("bloom-sweep", include_str!("../../../data/scenarios/bloom-sweep.toml")),
        ]
    }

    fn resolve(file: RetrainingFile, inputs: &dyn Inputs) -> Result<RetrainingConfig, ConfigError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, allowed: &str| {
            ConfigError::invalid(key, value, allowed.to_string())
        };
        let (d, m, t) = (&file.drift, &file.monitor, &file.training);
        let drift = d.resolve("drift")?;
        let monitor = m.resolve("monitor", &["vensim", "hysteresis", "periodic", "carbon_aware"])?;
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
        let mut arrivals = file.arrivals.clone();
        arrivals.load("arrivals", inputs, &[])?;
        let mut grid = file.grid.clone();
        grid.load("grid", inputs)?;
        file.simulation.no_warmup()?;
        let duration_s = file.simulation.duration_s()?;
        monitor.check_run("monitor", duration_s)?;
        let config = RetrainingConfig {
            arrivals,
            fleet: file.fleet,
            drift,
            quality: file.quality,
            monitor,
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
            energy: file.energy,
            grid,
            prices: file.prices,
            duration_s,
        };
        config
            .validate()
            .map_err(|e| e.rekey(|k| if k == "duration_s" { "simulation.duration_s".into() } else { k.into() }))?;
        Ok(config)
    }

    fn run<R: Observer<RetrainingRequest>, S: Observer<RetrainingSample>>(
        config: &RetrainingConfig,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        let samples = traces.sample_every.map(|_| traces.samples);
        let mut sim = build_retraining(config, traces.requests, samples, replication.master_seed, replication.index)?;
        replication.attach(&mut sim, infersim_engine::SimTime::from_secs_f64(config.duration_s).ok());
        let metrics = finish_retraining(&mut sim)?.metrics();
        replication.finished(metrics)
    }
}

crate::trace_row!(RetrainingSample, |s| {
    t_h: f64 = s.t_h,
    loss: f64 = s.loss,
    training_gpus: f64 = s.training_gpus,
    processed_data: f64 = s.processed_data,
    energy_kwh: f64 = s.energy_kwh,
    requests: u64 = s.requests,
    loss_monitoring: f64 = s.loss_monitoring,
    quality: f64 = s.quality,
    queue_len: u32 = s.queue_len,
    carbon_kg: f64 = s.carbon_kg,
    ics: Option<f64> = s.ics,
});

crate::trace_row!(RetrainingRequest, |r| {
    request_id: u64 = r.request_id,
    arrival_s: f64 = r.arrival_s,
    start_s: f64 = r.start_s,
    finish_s: f64 = r.finish_s,
    gpu: Option<u32> = r.gpu,
    latency_s: Option<f64> = r.served.then_some(r.latency_s),
    loss: f64 = r.loss,
    drift: f64 = r.drift,
    energy_kwh: f64 = r.energy_kwh,
    outcome: &str = if r.served { "served" } else { "lost" },
});
