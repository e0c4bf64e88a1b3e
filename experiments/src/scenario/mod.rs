//! Scenario files: TOML read into a raw table, overridden with `--set key=value`, then
//! resolved by the world it names (`world = "serving"`) into typed configuration. The
//! world's serde schema is the list of allowed keys: an unknown key names the file,
//! the line and the nearest valid key of that table, from that world's keys only.
//!
//! A `[sweep]` table maps dotted keys to lists of values; the scenario then has one
//! point per combination (the cartesian product, keys in alphabetical order, the last
//! key varying fastest; see [`SweepGrid`]). Points are checked when the scenario loads,
//! so a bad value fails before anything runs or is written: every point of a sweep of
//! up to [`EAGER_POINTS`] points, and each swept value once in a larger one (whose
//! points are then resolved as replications reach them, so that a sweep of millions
//! of points costs no more memory than its value lists; a combination that only fails
//! together fails that point's replications, with the message).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use infersim_agents::world::{ConfigError, World};
use toml::{Table, Value};

use crate::inputs::FileInputs;
use crate::registry::{AnyWorld, PointModel, Registry, ResolveError};
use crate::sweep::SweepGrid;

mod keys;
pub use keys::{LineHint, NearestHint, differences};
use keys::{flatten_sweep, get_key, line_of, nearest, remove_key, set_key};

/// Sweeps of up to this many points are resolved whole when they load (and kept);
/// larger ones are checked value by value and resolved point by point as they run.
pub const EAGER_POINTS: u64 = 4096;

/// Keys of the batch rather than of a world: read here, removed before the world
/// reads its tables, and never swept.
const BATCH_KEYS: &[&str] =
    &["description", "world", "simulation.replications", "simulation.seed", "simulation.sample_interval_s"];

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
    /// A key that the world's schema does not have.
    #[error("{source_name}{line}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// Where it came from.
        source_name: String,
        /// The dotted key.
        key: String,
        /// ":LINE" when known.
        line: LineHint,
        /// ", did you mean `...`?" when a key is close, else the table's keys.
        hint: Box<NearestHint>,
    },
    /// A `--set` argument without `=`, or with a path that cannot be set.
    #[error("--set {0}: expected KEY=VALUE, e.g. --set station.servers=8 or --set node_classes[0].count=3")]
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
    /// A table that does not fit its schema: a missing field, a value of the wrong
    /// type, a name that is not one of the choices.
    #[error("{source_name}: {key}: {message}")]
    Table {
        /// Where it came from.
        source_name: String,
        /// The table, e.g. `routing` or `node_classes[2]`.
        key: String,
        /// The reader's message.
        message: String,
    },
    /// A value the world refuses, or a data file it cannot use.
    #[error("{source_name}: {error}")]
    Config {
        /// Where it came from.
        source_name: String,
        /// What the world says.
        error: Box<ConfigError>,
    },
    /// No world, or an unknown one, or tables of several.
    #[error("{source_name}: {message}")]
    World {
        /// Where it came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

impl ScenarioError {
    /// The dotted key at fault, where there is one (`serving.arrivals.rate_per_s`,
    /// `node_classes[2]`), or the data file a scenario names.
    pub fn key(&self) -> Option<&str> {
        match self {
            ScenarioError::UnknownKey { key, .. }
            | ScenarioError::BadSweep { key, .. }
            | ScenarioError::Table { key, .. } => Some(key),
            ScenarioError::BadOverride(text) => text.split_once('=').map(|(key, _)| key.trim()),
            ScenarioError::Config { error, .. } => Some(error.key()),
            ScenarioError::Read { .. }
            | ScenarioError::Unknown(_)
            | ScenarioError::Malformed { .. }
            | ScenarioError::World { .. } => None,
        }
    }

    /// What the key allows, where the error says: the range or choices of a value, or
    /// the keys of the table an unknown key was found in.
    pub fn allowed(&self) -> Option<String> {
        match self {
            ScenarioError::UnknownKey { hint, .. } if !hint.allowed.is_empty() => Some(hint.allowed.join(", ")),
            ScenarioError::Config { error, .. } => match error.as_ref() {
                ConfigError::Invalid { allowed, .. } => Some(allowed.to_string()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One point of a (possibly swept) scenario.
#[derive(Clone, Debug)]
pub struct Point {
    /// Position in the sweep, from 0.
    pub index: u32,
    /// The value of each swept key at this point, in [`Scenario::sweep_keys`] order.
    pub params: Vec<Value>,
    /// The resolved model.
    pub model: Arc<dyn PointModel>,
    /// The point's tables, sweep values in place.
    pub table: Table,
}

/// Two points are the same when they are the same world's tables at the same place
/// in the sweep: the model is resolved from the tables alone.
impl PartialEq for Point {
    fn eq(&self, other: &Point) -> bool {
        self.index == other.index
            && self.params == other.params
            && self.model.world() == other.model.world()
            && self.table == other.table
    }
}

/// A scenario: its validated configuration plus where it came from.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The built-in name or the file path.
    pub source_name: String,
    /// The world it describes.
    pub world: &'static str,
    /// The raw table after overrides, without the sweep.
    pub table: Table,
    /// Swept keys with their values, in alphabetical key order.
    pub sweep: SweepGrid,
    /// One line on what the scenario is.
    pub description: String,
    /// Points resolved when the scenario loaded: every point of a sweep of up to
    /// [`EAGER_POINTS`], else only the first.
    resolved: Vec<Arc<dyn PointModel>>,
    /// Keys set with `--set`, for messages about them.
    set: Vec<String>,
    /// Swept keys that a `--set` pinned to one value (they left the sweep).
    pub pinned: Vec<String>,
    /// Replications to run unless the command line says otherwise.
    pub replications: u64,
    /// Master seed unless the command line says otherwise.
    pub seed: u64,
    /// Spacing of the sampled state in timeseries traces (s).
    pub sample_interval_s: f64,
    /// Where relative paths in the scenario (trace files) are resolved: the scenario
    /// file's directory, or the current directory for built-ins.
    pub base_dir: PathBuf,
    /// The worlds it was read with.
    pub registry: Registry,
    /// The text it was read from (for line numbers in errors).
    text: String,
}

/// The batch's own settings, read before the world sees the tables.
struct BatchKeys {
    description: String,
    replications: u64,
    seed: u64,
    sample_interval_s: f64,
}

impl Scenario {
    /// A built-in scenario of infersim's worlds by name.
    pub fn builtin(name: &str) -> Result<Scenario, ScenarioError> {
        let registry = Registry::builtin();
        let text = registry.scenario(name).ok_or_else(|| ScenarioError::Unknown(name.into()))?;
        Scenario::parse_with(&registry, name, text, Path::new(""))
    }

    /// A built-in name, or else a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        Scenario::load_with(&Registry::builtin(), name_or_path)
    }

    /// Like [`Scenario::load`], with the worlds of `registry`.
    pub fn load_with(registry: &Registry, name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some(text) = registry.scenario(name_or_path) {
            return Scenario::parse_with(registry, name_or_path, text, Path::new(""));
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ScenarioError::Unknown(name_or_path.into()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| ScenarioError::Read { source_name: name_or_path.into(), error })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Scenario::parse_with(registry, name_or_path, &text, &base_dir)
    }

    /// Parses and validates scenario text.
    pub fn parse(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_in(source_name, text, Path::new(""))
    }

    /// Like [`Scenario::parse`], resolving relative paths against `base_dir`.
    pub fn parse_in(source_name: &str, text: &str, base_dir: &Path) -> Result<Scenario, ScenarioError> {
        Scenario::parse_with(&Registry::builtin(), source_name, text, base_dir)
    }

    /// Parses and validates scenario text with the worlds of `registry`.
    pub fn parse_with(
        registry: &Registry,
        source_name: &str,
        text: &str,
        base_dir: &Path,
    ) -> Result<Scenario, ScenarioError> {
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
        let mut sweep_entries = Vec::new();
        flatten_sweep(&sweep_table, "", &mut sweep_entries);
        let sweep = checked_sweep(source_name, sweep_entries)?;
        Scenario::resolve(registry, source_name, text, base_dir, table, SweepGrid::new(sweep), &[])
    }

    /// Adds swept keys (each with its list of values, as in a `[sweep]` table) to the
    /// scenario's sweep, replacing the values of a key it already sweeps, and
    /// re-validates. A key set before (`--set`) and now swept is swept.
    pub fn sweep_over(&mut self, entries: Vec<(String, Value)>) -> Result<(), ScenarioError> {
        let added = checked_sweep(&self.source_name, entries)?;
        let mut merged: Vec<(String, Vec<Value>)> = self
            .sweep
            .entries()
            .filter(|(key, _)| !added.iter().any(|(k, _)| k == *key))
            .map(|(key, values)| (key.clone(), values.clone()))
            .collect();
        merged.extend(added);
        // As a `[sweep]` table reads: keys in alphabetical order, so that the same
        // sweep gives the same points however it was written.
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        let pinned = self.pinned.iter().filter(|k| !merged.iter().any(|(m, _)| m == *k)).cloned().collect();
        let (registry, base_dir, text) = (self.registry.clone(), self.base_dir.clone(), self.text.clone());
        *self = Scenario::resolve(
            &registry,
            &self.source_name,
            &text,
            &base_dir,
            self.table.clone(),
            SweepGrid::new(merged),
            &self.set,
        )?;
        self.pinned = pinned;
        Ok(())
    }

    /// Applies `key=value` overrides (dotted TOML paths, `name[i]` for the i-th table
    /// of an array; values in TOML syntax, bare words taken as strings) and
    /// re-validates. Setting a `kind` that selects another variant drops the keys of
    /// the old variant that the new one does not have.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<(), ScenarioError> {
        let mut table = self.table.clone();
        let mut sweep = self.sweep.clone();
        let mut set = self.set.clone();
        let mut pinned = self.pinned.clone();
        for o in overrides {
            let o = o.as_ref();
            let (key, raw) = o.split_once('=').ok_or_else(|| ScenarioError::BadOverride(o.into()))?;
            let key = key.trim();
            let value = format!("v = {}", raw.trim())
                .parse::<Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| Value::String(raw.trim().into()));
            set_key(&mut table, key, value).ok_or_else(|| ScenarioError::BadOverride(o.into()))?;
            // Setting a swept key pins it: it leaves the sweep.
            if sweep.pin(key) {
                pinned.push(key.to_string());
            }
            set.push(key.to_string());
        }
        let source_name = if self.source_name.ends_with("(with --set)") {
            self.source_name.clone()
        } else {
            format!("{} (with --set)", self.source_name)
        };
        let (registry, base_dir, text) = (self.registry.clone(), self.base_dir.clone(), self.text.clone());
        *self = Scenario::resolve(&registry, &source_name, &text, &base_dir, table, sweep, &set)?;
        self.pinned = pinned;
        Ok(())
    }

    /// The value of a dotted key (`serving.engine.step_overhead_s`,
    /// `node_classes[0].count`) in the scenario's tables, after overrides.
    pub fn value_at(&self, key: &str) -> Option<&Value> {
        get_key(&self.table, key)
    }

    /// The swept keys, in point-parameter order.
    pub fn sweep_keys(&self) -> Vec<String> {
        self.sweep.keys().to_vec()
    }

    /// How many points the scenario has (one without a sweep).
    pub fn point_count(&self) -> u32 {
        u32::try_from(self.sweep.len().expect("checked when loaded")).expect("checked when loaded")
    }

    /// Point `index`: its swept values, its tables and its resolved model (resolved
    /// now, for a point of a large sweep that was not resolved when loading).
    pub fn point(&self, index: u32) -> Result<Point, ScenarioError> {
        let table = self.point_table(index)?;
        let model = match self.resolved.get(index as usize) {
            Some(model) => Arc::clone(model),
            None => {
                let world = self.registry.get(self.world).expect("the scenario's world is registered");
                let name = format!("{} (sweep point {index})", self.source_name);
                let inputs = FileInputs::new(&self.base_dir, self.registry.data());
                Scenario::resolve_point(
                    &self.registry,
                    world.as_ref(),
                    &name,
                    &self.text,
                    &inputs,
                    table.clone(),
                    &self.set,
                )?
                .0
            }
        };
        Ok(Point { index, params: self.sweep.params(u64::from(index)), model, table })
    }

    /// The points checked when the scenario loaded: all of them, or in a sweep of more
    /// than [`EAGER_POINTS`] those that take each swept value once.
    pub fn checked_points(&self) -> impl Iterator<Item = u32> + '_ {
        let all = u64::from(self.point_count()) <= EAGER_POINTS;
        let listed = if all { Vec::new() } else { self.sweep.covering_points() };
        (0..if all { self.point_count() } else { 0 }).chain(listed.into_iter().map(|p| p as u32))
    }

    /// The worlds' warnings about the points checked when the scenario loaded, each
    /// once.
    pub fn warnings(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for point in self.checked_points().filter_map(|p| self.point(p).ok()) {
            for w in point.model.warnings() {
                if !all.contains(&w) {
                    all.push(w);
                }
            }
        }
        all
    }

    /// Every point, resolved: for scenarios whose sweeps are small, and for tests.
    pub fn points(&self) -> Result<Vec<Point>, ScenarioError> {
        (0..self.point_count()).map(|p| self.point(p)).collect()
    }

    /// The first point (the only one without a sweep), resolved when the scenario
    /// loaded.
    pub fn first_point(&self) -> Point {
        self.point(0).expect("the first point is resolved when the scenario loads")
    }

    /// The tables of point `index`: the scenario's with the point's swept values set.
    fn point_table(&self, index: u32) -> Result<Table, ScenarioError> {
        let mut table = self.table.clone();
        for (k, key) in self.sweep.keys().iter().enumerate() {
            set_key(&mut table, key, self.sweep.value(u64::from(index), k).clone()).ok_or_else(|| {
                ScenarioError::BadSweep {
                    source_name: self.source_name.clone(),
                    key: key.clone(),
                    problem: "cannot be set".into(),
                }
            })?;
        }
        Ok(table)
    }

    /// Point `index`'s configuration, typed as world `W` (for tests and tools that
    /// know which world they hold).
    pub fn config<W: World>(&self, index: usize) -> Result<W::Config, ScenarioError> {
        let point_table = self.point_table(index as u32)?;
        let (world_table, _) = split_batch_keys(&self.source_name, point_table)?;
        let err = |message: String| ScenarioError::Table {
            source_name: self.source_name.clone(),
            key: W::NAME.into(),
            message,
        };
        let file: W::File = world_table.try_into().map_err(|e: toml::de::Error| err(e.message().to_string()))?;
        W::resolve(file, &FileInputs::new(&self.base_dir, self.registry.data()))
            .map_err(|error| ScenarioError::Config { source_name: self.source_name.clone(), error: Box::new(error) })
    }

    /// Resolves the base table and checks the points of the sweep (all of them up to
    /// [`EAGER_POINTS`], else every value once).
    fn resolve(
        registry: &Registry,
        source_name: &str,
        text: &str,
        base_dir: &Path,
        mut table: Table,
        sweep: SweepGrid,
        set: &[String],
    ) -> Result<Scenario, ScenarioError> {
        let world = Scenario::world_of(registry, source_name, &table)?;
        // A `kind` set on the command line replaces its variant: the old variant's
        // keys that the new one does not know are dropped (keys set alongside stay).
        let switched: Vec<String> = set.iter().filter_map(|k| k.strip_suffix(".kind")).map(str::to_string).collect();
        let inputs = FileInputs::new(base_dir, registry.data());
        let mut base = None;
        for _ in 0..64 {
            match Scenario::resolve_point(registry, world.as_ref(), source_name, text, &inputs, table.clone(), set) {
                Err(ScenarioError::UnknownKey { key, .. })
                    if !set.contains(&key)
                        && switched.iter().any(|t| key.rsplit_once('.').is_some_and(|(parent, _)| parent == t)) =>
                {
                    remove_key(&mut table, &key);
                }
                other => {
                    base = Some(other?);
                    break;
                }
            }
        }
        let (model, batch) = base.expect("a variant has fewer than 64 keys");
        let total = sweep.len().filter(|&n| n <= u64::from(u32::MAX)).ok_or_else(|| ScenarioError::BadSweep {
            source_name: source_name.into(),
            key: String::new(),
            problem: "more than 2^32 points".into(),
        })?;
        let mut scenario = Scenario {
            source_name: source_name.into(),
            world: world.name(),
            table,
            sweep,
            description: batch.description,
            resolved: vec![model],
            set: set.to_vec(),
            pinned: Vec::new(),
            replications: batch.replications,
            seed: batch.seed,
            sample_interval_s: batch.sample_interval_s,
            base_dir: base_dir.to_path_buf(),
            registry: registry.clone(),
            text: text.to_string(),
        };
        if scenario.sweep.is_empty() {
            return Ok(scenario);
        }
        // With a sweep, the base table is no point of its own: resolve the points.
        let eager = total <= EAGER_POINTS;
        let checked: Vec<u64> = if eager { (0..total).collect() } else { scenario.sweep.covering_points() };
        scenario.resolved.clear();
        let mut resolved = Vec::with_capacity(if eager { checked.len() } else { 1 });
        for index in checked {
            let point = scenario.point(index as u32)?;
            if eager || index == 0 {
                resolved.push(point.model);
            }
        }
        scenario.resolved = resolved;
        Ok(scenario)
    }

    /// The world a scenario describes: the one it names, or else the one whose tables
    /// it has (when exactly one world's do).
    fn world_of(registry: &Registry, source_name: &str, table: &Table) -> Result<Arc<dyn AnyWorld>, ScenarioError> {
        let err = |message: String| ScenarioError::World { source_name: source_name.into(), message };
        let names = registry.names().join(", ");
        match table.get("world") {
            Some(Value::String(name)) => registry
                .get(name)
                .cloned()
                .ok_or_else(|| err(format!("world = {name:?} is not a world; worlds: {names}"))),
            Some(other) => Err(err(format!("world = {other} is not a world's name; worlds: {names}"))),
            None => {
                let keys: Vec<&str> =
                    table.keys().map(String::as_str).filter(|k| !["description", "simulation"].contains(k)).collect();
                let candidates: Vec<&Arc<dyn AnyWorld>> = registry
                    .iter()
                    .filter(|w| keys.iter().any(|k| *k != "simulation" && w.tables().contains(k)))
                    .collect();
                match candidates.as_slice() {
                    [one] => Ok(Arc::clone(one)),
                    [] => Err(err(format!("cannot tell which world this is; name it with world = \"...\" ({names})"))),
                    several => Err(err(format!(
                        "its tables belong to several worlds ({}); a scenario describes exactly one model: remove the \
                         others' tables, or name it with world = \"...\"",
                        several.iter().map(|w| w.name()).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        }
    }

    fn resolve_point(
        registry: &Registry,
        world: &dyn AnyWorld,
        source_name: &str,
        text: &str,
        inputs: &FileInputs,
        table: Table,
        set: &[String],
    ) -> Result<(Arc<dyn PointModel>, BatchKeys), ScenarioError> {
        let (world_table, batch) = split_batch_keys(source_name, table.clone())?;
        let model = world.resolve(world_table, inputs).map_err(|e| match e {
            ResolveError::Config(error) => {
                ScenarioError::Config { source_name: source_name.into(), error: Box::new(error) }
            }
            ResolveError::Schema { path, message } => {
                // A top-level table of another world: the scenario mixes two models.
                let other = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .filter(|field| path.is_empty() || path == "." || path == *field)
                    .and_then(|field| {
                        registry
                            .iter()
                            .find(|w| w.name() != world.name() && w.tables().contains(&field))
                            .map(|w| (field, w))
                    });
                let from_set =
                    other.and_then(|(field, _)| set.iter().find(|k| k.split(['.', '[']).next() == Some(field)));
                match other {
                    Some((field, other)) if from_set.is_some() => ScenarioError::UnknownKey {
                        source_name: "--set".into(),
                        key: from_set.cloned().unwrap_or_default(),
                        line: LineHint::default(),
                        hint: Box::new(NearestHint {
                            note: Some(format!(
                                "[{field}] belongs to the {} world, and this scenario is a {} one",
                                other.name(),
                                world.name()
                            )),
                            ..NearestHint::default()
                        }),
                    },
                    Some((field, other)) => ScenarioError::World {
                        source_name: source_name.into(),
                        message: format!(
                            "[{field}] belongs to the {} world, but this scenario is a {} one: a scenario describes \
                             exactly one model",
                            other.name(),
                            world.name()
                        ),
                    },
                    None => schema_error(source_name, text, &table, set, &path, &message),
                }
            }
        })?;
        Ok((model, batch))
    }

    /// The resolved scenario as TOML text, sweep included.
    pub fn to_toml(&self) -> String {
        let mut table = self.table.clone();
        if !self.sweep.is_empty() {
            let mut sweep = Table::new();
            // Each key as the scenario writes it, quoted whole: a key into a list of
            // tables (`serving.pools[1].replicas`) has no nested form.
            for (key, values) in self.sweep.entries() {
                sweep.insert(key.clone(), Value::Array(values.clone()));
            }
            table.insert("sweep".into(), Value::Table(sweep));
        }
        toml::to_string_pretty(&table).expect("a TOML table always serialises")
    }
}

/// Sweep entries checked: each a non-empty list of values, none a key of the batch.
fn checked_sweep(source_name: &str, entries: Vec<(String, Value)>) -> Result<Vec<(String, Vec<Value>)>, ScenarioError> {
    let mut sweep = Vec::new();
    for (key, value) in entries {
        let bad =
            |problem: String| ScenarioError::BadSweep { source_name: source_name.into(), key: key.clone(), problem };
        if BATCH_KEYS.contains(&key.as_str()) {
            return Err(bad("this key describes the batch and cannot be swept".into()));
        }
        match value {
            Value::Array(values) if !values.is_empty() => sweep.push((key, values)),
            Value::Array(_) => return Err(bad("the list of values is empty".into())),
            other => return Err(bad(format!("expected a list of values, found {other}"))),
        }
    }
    Ok(sweep)
}

/// Splits the batch's keys off a scenario table; what is left is the world's.
fn split_batch_keys(source_name: &str, mut table: Table) -> Result<(Table, BatchKeys), ScenarioError> {
    let invalid = |key: &str, value: &dyn fmt::Display, expected: &str| ScenarioError::Config {
        source_name: source_name.into(),
        error: Box::new(ConfigError::invalid(key, value, expected.to_string())),
    };
    let description = match table.remove("description") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(invalid("description", &other, "a string")),
        None => return Err(invalid("description", &"(missing)", "one line on what the scenario is")),
    };
    table.remove("world");
    let mut simulation = match table.remove("simulation") {
        Some(Value::Table(t)) => t,
        Some(other) => return Err(invalid("simulation", &other, "a table")),
        None => Table::new(),
    };
    let int = |v: Option<Value>, key: &str, default: i64, min: i64| -> Result<u64, ScenarioError> {
        match v {
            None => Ok(default as u64),
            Some(Value::Integer(n)) if n >= min => Ok(n as u64),
            Some(other) => Err(invalid(key, &other, &format!("an integer >= {min}"))),
        }
    };
    let replications = int(simulation.remove("replications"), "simulation.replications", 30, 1)?;
    let seed = int(simulation.remove("seed"), "simulation.seed", 42, 0)?;
    let sample_interval_s = match simulation.remove("sample_interval_s") {
        None => 1.0,
        Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
            // At least a microsecond: a finer grid would write more rows than any run is worth.
            Some(x) if (1e-6..=3.15e9).contains(&x) => x,
            _ => return Err(invalid("simulation.sample_interval_s", &v, "seconds from 0.000001 to 100 years")),
        },
    };
    if !simulation.is_empty() {
        table.insert("simulation".into(), Value::Table(simulation));
    }
    Ok((table, BatchKeys { description, replications, seed, sample_interval_s }))
}

/// Turns a schema error into a message that names the key (with its line and the
/// nearest valid key) where serde found an unknown one.
fn schema_error(
    source_name: &str,
    text: &str,
    table: &Table,
    set: &[String],
    path: &str,
    message: &str,
) -> ScenarioError {
    let backticked: Vec<String> = message.split('`').skip(1).step_by(2).map(str::to_string).collect();
    let mut parent = if path == "." || path.is_empty() { String::new() } else { path.to_string() };
    let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}.{b}") };
    if let Some(field) = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) {
        // The path may already end at the unknown field.
        if parent == field {
            parent.clear();
        } else if let Some(p) = parent.strip_suffix(&format!(".{field}")) {
            parent = p.to_string();
        }
        let allowed: Vec<String> = backticked.iter().skip(1).cloned().collect();
        let mut key = join(&parent, field);
        let mut suggestion = nearest(field, &allowed).map(|n| join(&parent, n));
        // An unknown table: name its first leaf, and the same leaf under the nearest table.
        let mut node = get_key(table, &key);
        while let Some(Value::Table(t)) = node {
            let Some((leaf, value)) = t.iter().next() else { break };
            key = format!("{key}.{leaf}");
            suggestion = suggestion.map(|s| format!("{s}.{leaf}"));
            node = Some(value);
        }
        let from_set = set.contains(&key);
        return ScenarioError::UnknownKey {
            source_name: if from_set { "--set".into() } else { source_name.into() },
            line: if from_set { LineHint::default() } else { line_of(text, &key) },
            hint: Box::new(NearestHint {
                // Shown only without a suggestion; kept for callers (`.allowed` in Python).
                allowed: allowed.iter().map(|a| join(&parent, a)).collect(),
                nearest: suggestion,
                note: None,
            }),
            key,
        };
    }
    ScenarioError::Table {
        source_name: source_name.into(),
        key: if parent.is_empty() { "(top level)".into() } else { parent },
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infersim_agents::arrivals::ArrivalProcess;
    use infersim_agents::grid::CarbonIntensity;
    use infersim_agents::network::NetworkWorld;
    use infersim_agents::pipeline::PipelineWorld;
    use infersim_agents::retraining::RetrainingWorld;
    use infersim_agents::serving::ServingWorld;
    use infersim_agents::station::{DurationDistribution, StationWorld};

    fn err(text: &str) -> String {
        Scenario::parse("t.toml", text).unwrap_err().to_string()
    }

    const GOOD: &str = include_str!("../../../data/scenarios/mmc.toml");

    #[test]
    fn builtins_parse() {
        let registry = Registry::builtin();
        for (name, _) in registry.scenarios() {
            Scenario::builtin(name).unwrap();
        }
        assert_eq!(registry.scenarios().len(), 18);
        assert!(Scenario::builtin(registry.default_scenario().unwrap()).is_ok());
    }

    #[test]
    fn the_serving_scenario_resolves_and_checks_its_keys() {
        let s = Scenario::builtin("serving").unwrap();
        let c = &s.config::<ServingWorld>(0).unwrap().into_static().unwrap();
        assert_eq!((c.nodes, c.gpus_per_node, c.max_batch), (2, 4, 8));
        assert_eq!(c.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["chat", "code"]);
        let text = include_str!("../../../data/scenarios/serving.toml");
        let e =
            Scenario::parse("s.toml", &text.replace("gpus_per_node = 4", "gpus_per_nod = 4")).unwrap_err().to_string();
        assert!(e.contains("unknown key `serving.gpus_per_nod`; did you mean `serving.gpus_per_node`?"), "{e}");
        let e = Scenario::parse("s.toml", &text.replace("weight = 3.0", "wieght = 3.0")).unwrap_err().to_string();
        assert!(e.contains("wieght"), "{e}");
        let mut changed = s.clone();
        changed.apply_overrides(&["serving.arrivals.rate_per_s=30", "serving.power.gpu_max_w=300"]).unwrap();
        let c = &changed.config::<ServingWorld>(0).unwrap().into_static().unwrap();
        assert_eq!((c.arrivals.rate_per_s(), c.gpu_max_w), (30.0, 300.0));
        let mut diurnal = s.clone();
        let cycle = [
            "serving.arrivals.kind=diurnal",
            "serving.arrivals.amplitude=0.5",
            "serving.arrivals.period_h=24",
            "serving.arrivals.peak_h=14",
        ];
        diurnal.apply_overrides(&cycle).unwrap();
        let c = &diurnal.config::<ServingWorld>(0).unwrap().into_static().unwrap();
        assert!(matches!(c.arrivals, ArrivalProcess::Diurnal { amplitude: 0.5, .. }));
        let e = diurnal.apply_overrides(&["serving.arrivals.amplitude=2"]).unwrap_err().to_string();
        assert!(e.contains("serving.arrivals.amplitude = 2 is invalid: expected a number from 0 to 1"), "{e}");
        // Setting kind replaces the variant: the old rate is dropped, the new variant's
        // keys must be given.
        let mut bursty = s.clone();
        let e = bursty.apply_overrides(&["serving.arrivals.kind=mmpp"]).unwrap_err().to_string();
        assert!(e.contains("missing field `rates_per_s`"), "{e}");
        bursty
            .apply_overrides(&[
                "serving.arrivals.kind=mmpp",
                "serving.arrivals.rates_per_s=[5.0, 50.0]",
                "serving.arrivals.mean_sojourn_s=[300.0, 60.0]",
            ])
            .unwrap();
        let c = bursty.config::<ServingWorld>(0).unwrap().into_static().unwrap();
        assert!(matches!(c.arrivals, ArrivalProcess::Mmpp { .. }));
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
        let c = &s.config::<ServingWorld>(0).unwrap().into_static().unwrap();
        assert_eq!(c.grid, CarbonIntensity::Diurnal { kg_per_kwh: 0.3, amplitude: 0.5, peak_h: 19.0, period_h: 24.0 });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("grid.csv"), "t_h,kg_per_kwh\n0,0.5\n6,0.2\n").unwrap();
        let text = Registry::builtin()
            .scenario("serving")
            .unwrap()
            .replace("kind = \"constant\"\nkg_per_kwh = 0.394", "kind = \"series\"\npath = \"grid.csv\"");
        let s = Scenario::parse_in("s.toml", &text, dir.path()).unwrap();
        let c = &s.config::<ServingWorld>(0).unwrap().into_static().unwrap();
        assert_eq!(
            c.grid,
            CarbonIntensity::Series { path: "grid.csv".into(), points: vec![(0.0, 0.5), (6.0, 0.2)].into() }
        );
        std::fs::write(dir.path().join("grid.csv"), "t_h,kg_per_kwh\n0,0.5\n0,0.2\n").unwrap();
        let e = Scenario::parse_in("s.toml", &text, dir.path()).unwrap_err().to_string();
        assert!(e.contains("grid.csv:3: t_h = 0 does not increase"), "{e}");
    }

    #[test]
    fn bloom_scenarios_are_the_documented_configurations() {
        use infersim_agents::retraining::RetrainingConfig;
        let model = |name: &str| Scenario::builtin(name).unwrap().config::<RetrainingWorld>(0).unwrap();
        assert_eq!(model("bloom-sd"), RetrainingConfig::bloom());
        assert_eq!(model("bloom-stochastic"), RetrainingConfig::bloom_stochastic());
        let sweep = Scenario::builtin("bloom-sweep").unwrap();
        assert_eq!((sweep.point_count() as usize), 21);
        assert_eq!(sweep.sweep_keys(), ["drift.per_request", "monitor.upper"]);
        let grid = Scenario::parse(
            "g.toml",
            &Registry::builtin().scenario("bloom-sd").unwrap().replace(
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
            .points()
            .unwrap()
            .into_iter()
            .map(|p| s.config::<NetworkWorld>(p.index as usize).unwrap().routing.policy)
            .collect();
        assert_eq!(policies, RoutingPolicy::ALL);
        // The decayed-score point is the agents crate's constructor (used by benchmarks).
        assert_eq!(
            s.config::<NetworkWorld>(5).unwrap(),
            infersim_agents::network::NetworkConfig::nineteen_contenders()
        );
        let c = &s.config::<NetworkWorld>(0).unwrap();
        assert_eq!((c.tasks.len(), c.node_classes.iter().map(|k| k.count).sum::<u32>()), (3, 19));
        assert_eq!(c.similarity_matrix()[1][0], 0.5, "sim(70b -> 3b)");
        let mut pinned = s.clone();
        pinned.apply_overrides(&["routing.policy=least_processed", "routing.weight=10"]).unwrap();
        assert_eq!(pinned.point_count(), 1);
        let c = &pinned.config::<NetworkWorld>(0).unwrap();
        assert_eq!((c.routing.policy, c.routing.weight), (RoutingPolicy::LeastProcessed, 10.0));
        let e = s.clone().apply_overrides(&["routing.top=0"]).unwrap_err().to_string();
        assert!(e.contains("routing.top = 0 is invalid: expected an integer >= 1"), "{e}");
        let text = Registry::builtin().scenario("nineteen-contenders").unwrap();
        let e = Scenario::parse("x.toml", &text.replace("slots = 8", "slotz = 8")).unwrap_err().to_string();
        assert!(e.contains("unknown key `node_classes[0].slotz`; did you mean `node_classes[0].slots`?"), "{e}");
        // Elements of arrays of tables can be set by index.
        let mut more = s.clone();
        more.apply_overrides(&["node_classes[0].count=7"]).unwrap();
        assert_eq!(more.config::<NetworkWorld>(0).unwrap().node_classes[0].count, 7);
        let e = Scenario::parse("x.toml", &text.replace("[validator]", "[validatr]")).unwrap_err().to_string();
        assert!(e.contains("unknown key `validatr.") && e.contains("did you mean `validator."), "{e}");
    }

    #[test]
    fn the_history_scenario_sweeps_the_share_of_history_kept() {
        let s = Scenario::load("llm-history").unwrap();
        let shares: Vec<f64> = (0..s.point_count())
            .map(|p| s.config::<ServingWorld>(p as usize).unwrap().into_static().unwrap().history.keep_share)
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
        let c = &s.config::<RetrainingWorld>(0).unwrap();
        assert_eq!(c.monitor.signal, Signal::Ics { start_below: 4.2, stop_above: 4.6, fraction: 0.2, noise_sd: 0.1 });
        let e = s.clone().apply_overrides(&["monitor.ics_stop_above=4.0"]).unwrap_err().to_string();
        assert!(e.contains("monitor.ics_stop_above = 4 is invalid"), "{e}");
    }

    #[test]
    fn the_ipa_scenario_sweeps_delta_and_reads_its_profiles() {
        use infersim_agents::pipeline::{AdapterPolicy, PipelineConfig};
        let s = Scenario::load("ipa-video").unwrap();
        let deltas: Vec<f64> = (0..s.point_count())
            .map(|p| s.config::<PipelineWorld>(p as usize).unwrap().adapter.objective.delta)
            .collect();
        assert_eq!(deltas, [0.0, 0.1, 0.5, 2.0, 10.0]);
        // The delta = 0 point is the agents crate's constructor (used by its tests).
        assert_eq!(s.config::<PipelineWorld>(0).unwrap(), PipelineConfig::video());
        let mut fixed = s.clone();
        fixed.apply_overrides(&["adapter.policy=fixed", "adapter.delta=0"]).unwrap();
        let c = &fixed.config::<PipelineWorld>(0).unwrap();
        assert_eq!(c.adapter.policy, AdapterPolicy::Fixed(vec![("yolov5m".into(), 4, 16), ("resnet50".into(), 4, 4)]));
        let e = s.clone().apply_overrides(&["adapter.policy=magic"]).unwrap_err().to_string();
        assert!(e.contains("adapter.policy = magic is invalid: expected fixed or ipa"), "{e}");
        let text = Registry::builtin().scenario("ipa-video").unwrap();
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
            "t.toml: station.arrival_rate_per_s = -1 is invalid: expected a rate from 0.000001 to 1,000,000 per second"
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
        let station = s.config::<StationWorld>(0).unwrap();
        assert_eq!(station.servers, 8);
        assert_eq!(station.capacity, Some(20));
        assert!(matches!(station.service, DurationDistribution::Deterministic { .. }));
        assert!(s.to_toml().contains("capacity = 20"));
        let e = s.apply_overrides(&["station.sevrers=2"]).unwrap_err().to_string();
        assert_eq!(e, "--set: unknown key `station.sevrers`; did you mean `station.servers`?");
        assert!(s.apply_overrides(&["station.servers"]).is_err());
        let e = s.apply_overrides(&["station.service_rate_per_s=0"]).unwrap_err().to_string();
        assert!(e.contains("station.service_rate_per_s = 0 is invalid"), "{e}");
        assert_eq!(servers(&s.first_point()), 8, "a failed override leaves the scenario unchanged");
    }

    fn servers(p: &Point) -> u32 {
        let mut s = Scenario::builtin("mmc").unwrap();
        s.table = p.table.clone();
        s.config::<StationWorld>(0).unwrap().servers
    }

    #[test]
    fn a_sweep_is_the_cartesian_product_last_key_fastest() {
        let text = format!(
            "{GOOD}\n[sweep]\nstation.servers = [4, 5]\nstation.service = [\"exponential\", \"deterministic\"]\n"
        );
        let s = Scenario::parse("t.toml", &text).unwrap();
        assert_eq!(s.sweep_keys(), ["station.servers", "station.service"]);
        assert_eq!(s.point_count(), 4);
        let labels: Vec<(u32, String)> =
            s.points().unwrap().iter().map(|p| (servers(p), p.params[1].as_str().unwrap().to_string())).collect();
        assert_eq!(labels[0], (4, "exponential".into()));
        assert_eq!(labels[1], (4, "deterministic".into()));
        assert_eq!(labels[3], (5, "deterministic".into()));
        // The resolved text reads back as the same sweep.
        let again = Scenario::parse("again.toml", &s.to_toml()).unwrap();
        assert_eq!(again.points().unwrap(), s.points().unwrap());
        // --set pins a swept key.
        let mut pinned = s.clone();
        pinned.apply_overrides(&["station.servers=6"]).unwrap();
        assert_eq!(pinned.point_count(), 2);
        assert_eq!(pinned.pinned, ["station.servers"]);
        assert!(pinned.points().unwrap().iter().all(|p| servers(p) == 6));
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
