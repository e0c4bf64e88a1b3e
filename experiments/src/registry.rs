//! The worlds infersim knows, and the one way the experiments crate runs any of them.
//!
//! A world is a type implementing [`World`] in the agents crate; registering it here
//! ([`Registry::builtin`], or [`Registry::with`] for one's own) is all the experiments
//! crate needs: scenarios name it with `world = "..."`, and runs, traces, summaries,
//! comparisons and plots go through [`AnyWorld`] and [`PointModel`], never through a
//! list of worlds.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use infersim_agents::input::{DataTable, Inputs};
use infersim_agents::world::{
    Charts, ConfigError, Estimate, Metrics, NESTED, Note, Observation, Replication, RunError, Traces, World, Worlds,
    struct_fields,
};
use infersim_engine::NullObserver;

use crate::trace::{ParquetSink, TraceLevel};

/// A world, its type erased: what scenarios need to find and resolve it.
pub trait AnyWorld: Send + Sync {
    /// The name scenario files give it.
    fn name(&self) -> &'static str;
    /// Its top-level tables, read from its schema (for telling which world a file
    /// without `world = ...` describes).
    fn tables(&self) -> &'static [&'static str];
    /// Reads and resolves one point's tables.
    fn resolve(&self, table: toml::Table, inputs: &dyn Inputs) -> Result<Arc<dyn PointModel>, ResolveError>;
    /// What to tell the user after a batch (see [`World::notes`]).
    fn notes(&self, estimates: &[Estimate]) -> Vec<Note>;
    /// The charts it draws by default (see [`World::charts`]).
    fn charts(&self) -> Charts;
    /// Reads a measured file of its real systems (see [`World::observe`]).
    fn observe(&self, table: &DataTable) -> Option<Observation>;
    /// Its built-in scenarios (name, TOML text).
    fn scenarios(&self) -> &'static [(&'static str, &'static str)];
    /// Its built-in data files (name, text).
    fn data(&self) -> &'static [(&'static str, &'static str)];
}

/// Why a point's tables could not be resolved.
#[derive(Debug)]
pub enum ResolveError {
    /// The tables do not fit the schema: an unknown or missing key, a wrong type, a
    /// name that is not one of the choices. `path` is the dotted path serde reached.
    Schema {
        /// Where, as a dotted path (`serving.arrivals`, `node_classes[0]`).
        path: String,
        /// The reader's message.
        message: String,
    },
    /// A value the world refuses.
    Config(ConfigError),
}

/// One resolved point of a scenario: a configuration of some world, ready to run.
pub trait PointModel: Send + Sync + fmt::Debug {
    /// Its world's name.
    fn world(&self) -> &'static str;
    /// Runs one replication, writing the traces `trace` asks for.
    fn run(&self, replication: Replication, trace: &TraceTarget) -> Result<Metrics, ReplicationError>;
    /// Exact values from theory, where the world has them.
    fn analytic(&self) -> Vec<(&'static str, f64)>;
    /// A real run's measured values (source, (metric, value) pairs), if the scenario
    /// names one.
    fn reference(&self) -> Option<(String, Vec<(String, f64)>)>;
    /// Latency objectives (name, seconds), for charts.
    fn latency_objectives(&self) -> Vec<(String, f64)>;
    /// What a user should know before it runs (see [`World::warnings`]).
    fn warnings(&self) -> Vec<String>;
    /// The configuration, printed.
    fn describe(&self) -> String;
}

/// Why a replication gave no metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The world could not run it, or it was interrupted ([`RunError::Interrupted`]).
    #[error(transparent)]
    Run(#[from] RunError),
    /// A trace file could not be written.
    #[error(transparent)]
    Trace(#[from] crate::output::OutputError),
}

impl ReplicationError {
    /// Whether the replication was interrupted rather than failed.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, ReplicationError::Run(RunError::Interrupted))
    }
}

/// Where one replication's traces go.
#[derive(Clone, Debug)]
pub struct TraceTarget {
    /// How much to record.
    pub level: TraceLevel,
    /// The replication's trace directory (created by the caller, empty).
    pub dir: std::path::PathBuf,
    /// Spacing of sampled state.
    pub sample_every: infersim_engine::SimDuration,
}

/// The registered worlds.
#[derive(Clone)]
pub struct Registry {
    worlds: Vec<Arc<dyn AnyWorld>>,
    default_scenario: Option<&'static str>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.worlds.iter().map(|w| w.name())).finish()
    }
}

impl Registry {
    /// No worlds.
    pub fn empty() -> Self {
        Registry { worlds: Vec::new(), default_scenario: None }
    }

    /// The worlds infersim ships, and the scenario run when none is named (both
    /// listed by the agents crate).
    pub fn builtin() -> Self {
        infersim_agents::builtin_worlds(Registry::empty()).with_default_scenario(infersim_agents::DEFAULT_SCENARIO)
    }

    /// This registry and world `W`. Panics if `W`, or a built-in scenario or data
    /// file of the same name as one of `W`'s, is registered already: a program
    /// error, found the first time it runs.
    pub fn with<W: World>(mut self) -> Self {
        assert!(self.get(W::NAME).is_none(), "world {} registered twice", W::NAME);
        for (name, _) in W::scenarios() {
            assert!(self.scenario(name).is_none(), "two worlds ship a scenario called {name}");
        }
        for (name, _) in W::data() {
            assert!(self.data().iter().all(|(n, _)| n != name), "two worlds ship a data file called {name}");
        }
        self.worlds.push(Arc::new(Entry::<W>(PhantomData)));
        self
    }

    /// This registry, running built-in scenario `name` when none is named. Panics if
    /// no registered world ships it (a program error).
    pub fn with_default_scenario(mut self, name: &'static str) -> Self {
        assert!(self.scenario(name).is_some(), "no registered world ships a scenario called {name}");
        self.default_scenario = Some(name);
        self
    }

    /// The scenario run when none is named: the one set, else the first world's
    /// first built-in scenario.
    pub fn default_scenario(&self) -> Option<&'static str> {
        self.default_scenario.or_else(|| self.scenarios().first().map(|(name, _)| *name))
    }

    /// Every built-in scenario (name, TOML text), world by world.
    pub fn scenarios(&self) -> Vec<(&'static str, &'static str)> {
        self.worlds.iter().flat_map(|w| w.scenarios().iter().copied()).collect()
    }

    /// The TOML text of built-in scenario `name`.
    pub fn scenario(&self, name: &str) -> Option<&'static str> {
        self.worlds.iter().flat_map(|w| w.scenarios()).find(|(n, _)| *n == name).map(|(_, text)| *text)
    }

    /// Every built-in data file (name, text).
    pub fn data(&self) -> Vec<(&'static str, &'static str)> {
        self.worlds.iter().flat_map(|w| w.data().iter().copied()).collect()
    }

    /// The world called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn AnyWorld>> {
        self.worlds.iter().find(|w| w.name() == name)
    }

    /// Every world.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn AnyWorld>> {
        self.worlds.iter()
    }

    /// The names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.worlds.iter().map(|w| w.name()).collect()
    }
}

struct Entry<W: World>(PhantomData<fn() -> W>);

impl<W: World> AnyWorld for Entry<W> {
    fn name(&self) -> &'static str {
        W::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        struct_fields::<W::File>()
    }

    fn resolve(&self, table: toml::Table, inputs: &dyn Inputs) -> Result<Arc<dyn PointModel>, ResolveError> {
        let file: W::File = serde_path_to_error::deserialize(table).map_err(|e| {
            let (path, message) = (e.path().to_string(), e.inner().message().trim().to_string());
            // A table the world read nested (one of several schemas): its own path
            // continues the outer one.
            match message.strip_prefix(NESTED).and_then(|m| m.split_once(NESTED)) {
                Some((inner, message)) => {
                    let path = match (path.as_str(), inner) {
                        ("." | "", inner) => inner.to_string(),
                        (outer, "." | "") => outer.to_string(),
                        (outer, inner) => format!("{outer}.{inner}"),
                    };
                    ResolveError::Schema { path, message: message.to_string() }
                }
                None => ResolveError::Schema { path, message },
            }
        })?;
        let config = W::resolve(file, inputs).map_err(ResolveError::Config)?;
        Ok(Arc::new(Resolved::<W> { config }))
    }

    fn notes(&self, estimates: &[Estimate]) -> Vec<Note> {
        W::notes(estimates)
    }

    fn charts(&self) -> Charts {
        W::charts()
    }

    fn observe(&self, table: &DataTable) -> Option<Observation> {
        W::observe(table)
    }

    fn scenarios(&self) -> &'static [(&'static str, &'static str)] {
        W::scenarios()
    }

    fn data(&self) -> &'static [(&'static str, &'static str)] {
        W::data()
    }
}

impl Worlds for Registry {
    fn with<W: World>(self) -> Self {
        Registry::with::<W>(self)
    }
}

/// A resolved configuration of world `W`.
pub struct Resolved<W: World> {
    /// The configuration.
    pub config: W::Config,
}

impl<W: World> fmt::Debug for Resolved<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", W::NAME, self.config)
    }
}

impl<W: World> PointModel for Resolved<W> {
    fn world(&self) -> &'static str {
        W::NAME
    }

    fn run(&self, replication: Replication, trace: &TraceTarget) -> Result<Metrics, ReplicationError> {
        run_traced::<W>(&self.config, replication, trace)
    }

    fn analytic(&self) -> Vec<(&'static str, f64)> {
        W::analytic(&self.config)
    }

    fn reference(&self) -> Option<(String, Vec<(String, f64)>)> {
        W::reference(&self.config)
    }

    fn latency_objectives(&self) -> Vec<(String, f64)> {
        W::latency_objectives(&self.config)
    }

    fn warnings(&self) -> Vec<String> {
        W::warnings(&self.config)
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// Runs one replication of `config`, writing `requests.parquet` and
/// `timeseries.parquet` into the trace directory as the level asks. The one traced
/// runner for every world.
pub fn run_traced<W: World>(
    config: &W::Config,
    replication: Replication,
    trace: &TraceTarget,
) -> Result<Metrics, ReplicationError> {
    if trace.level == TraceLevel::Summary {
        let traces = Traces { requests: &mut NullObserver, samples: &mut NullObserver, sample_every: None };
        return Ok(W::run(config, replication, traces)?);
    }
    let (labels, omitted) = (W::labels(config), W::omitted_columns(config));
    let mut samples = ParquetSink::<W::Sample>::create(trace.dir.join("timeseries.parquet"), &labels, &omitted)?;
    let metrics = if trace.level >= TraceLevel::Requests {
        let mut requests = ParquetSink::<W::Request>::create(trace.dir.join("requests.parquet"), &labels, &omitted)?;
        let traces = Traces { requests: &mut requests, samples: &mut samples, sample_every: Some(trace.sample_every) };
        let metrics = W::run(config, replication, traces)?;
        requests.finish()?;
        metrics
    } else {
        let traces =
            Traces { requests: &mut NullObserver, samples: &mut samples, sample_every: Some(trace.sample_every) };
        W::run(config, replication, traces)?
    };
    samples.finish()?;
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_of_a_world_come_from_its_schema() {
        let r = Registry::builtin();
        assert_eq!(r.get("station").unwrap().tables(), ["station", "simulation"]);
        assert_eq!(r.get("serving").unwrap().tables(), ["serving", "simulation"]);
        assert!(r.get("network").unwrap().tables().contains(&"node_classes"));
        assert_eq!(r.names(), ["station", "serving", "retraining", "network", "pipeline"]);
    }
}
