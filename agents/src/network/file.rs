//! The miner network as scenario files write it (`world = "network"`): `[validator]`,
//! `[routing]`, `[[tasks]]`, `[[node_classes]]`, `[[similarity]]`, `[[events]]` and
//! `[simulation]`.

use infersim_engine::Observer;
use serde::Deserialize;

use super::{
    NetworkConfig, NetworkPeriod, NetworkQuery, NodeClass, Routing, ScheduledEvent, Similarity, TaskConfig, Validator,
    build_network, finish_network,
};
use crate::error::{ConfigError, RunError};
use crate::grid::CarbonIntensity;
use crate::input::Inputs;
use crate::world::{Charts, DistributionChart, Label, Labels, Metrics, Replication, Traces, Window, World};

/// The tables of a miner-network scenario, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    validator: Validator,
    routing: Routing,
    tasks: Vec<TaskConfig>,
    node_classes: Vec<NodeClass>,
    #[serde(default)]
    similarity: Vec<Similarity>,
    #[serde(default)]
    events: Vec<ScheduledEvent>,
    grid: Option<CarbonIntensity>,
    prices: Option<EnergyPrice>,
    simulation: Window,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnergyPrice {
    energy_usd_per_kwh: f64,
}

/// The miner network as a world.
#[derive(Clone, Copy, Debug)]
pub struct NetworkWorld;

impl World for NetworkWorld {
    const NAME: &'static str = "network";
    type File = NetworkFile;
    type Config = NetworkConfig;
    type Request = NetworkQuery;
    type Sample = NetworkPeriod;

    fn charts() -> Charts {
        Charts { distributions: &[DistributionChart::LATENCY], tradeoffs: &[] }
    }

    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[("nineteen-contenders", include_str!("../../../data/scenarios/nineteen-contenders.toml"))]
    }

    fn resolve(file: NetworkFile, inputs: &dyn Inputs) -> Result<NetworkConfig, ConfigError> {
        file.simulation.no_warmup()?;
        let mut tasks = file.tasks;
        for (i, t) in tasks.iter_mut().enumerate() {
            if let Some(process) = &mut t.organic {
                process.load(&format!("tasks[{i}].organic"), inputs, &[])?;
            }
        }
        let mut grid = file.grid;
        if let Some(grid) = &mut grid {
            grid.load("grid", inputs)?;
        }
        let config = NetworkConfig {
            tasks,
            node_classes: file.node_classes,
            similarity: file.similarity,
            validator: file.validator,
            routing: file.routing,
            events: file.events,
            grid,
            energy_usd_per_kwh: file.prices.map(|p| p.energy_usd_per_kwh),
            duration_s: file.simulation.duration_s()?,
        };
        config
            .validate()
            .map_err(|e| e.rekey(|k| if k == "duration_s" { "simulation.duration_s".into() } else { k.into() }))?;
        Ok(config)
    }

    fn run<R: Observer<NetworkQuery>, S: Observer<NetworkPeriod>>(
        config: &NetworkConfig,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError> {
        let periods = traces.sample_every.map(|_| traces.samples);
        let mut sim = build_network(config, traces.requests, periods, replication.master_seed, replication.index)?;
        replication.attach(&mut sim, infersim_engine::SimTime::from_secs_f64(config.duration_s).ok());
        let metrics = finish_network(&mut sim)?.metrics();
        replication.finished(metrics)
    }

    fn latency_objectives(config: &NetworkConfig) -> Vec<(String, f64)> {
        vec![("validator".into(), config.validator.slo_s)]
    }

    fn labels(config: &NetworkConfig) -> Labels {
        Labels(vec![
            ("task", config.tasks.iter().map(|t| t.name.clone()).collect()),
            ("class", config.node_classes.iter().map(|c| c.name.clone()).collect()),
        ])
    }
}

crate::trace_row!(NetworkQuery, |q| {
    query_id: u64 = q.query_id,
    task: Label = Label(q.task),
    synthetic: bool = q.synthetic,
    arrival_s: f64 = q.arrival_s,
    finish_s: f64 = q.finish_s,
    latency_s: Option<f64> = q.quality.map(|_| q.finish_s - q.arrival_s),
    attempts: u32 = q.attempts,
    node: Option<u32> = q.node,
    class: Option<Label> = q.class.map(Label),
    outcome: &str = q.outcome.as_str(),
    quality: Option<f64> = q.quality,
    observed_quality: Option<f64> = q.observed_quality,
});

crate::trace_row!(NetworkPeriod, |r| {
    t_h: f64 = r.t_h,
    node: u32 = r.node,
    class: Label = Label(r.class),
    task: Label = Label(r.task),
    requests: u64 = r.requests,
    rate_limited: u64 = r.rate_limited,
    failed: u64 = r.failed,
    consumed: f64 = r.consumed,
    capacity: f64 = r.capacity,
    period_score: Option<f64> = r.period_score,
    observed_quality: Option<f64> = r.observed_quality,
    score: Option<f64> = r.score,
    glob: f64 = r.glob,
});
