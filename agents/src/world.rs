//! What a world is to the rest of infersim: one trait, [`World`].
//!
//! A world (the queueing station, the serving fleet, the drift-and-retraining loop,
//! the miner network, the adaptive pipeline) is one module of this crate. It says how
//! its scenario tables read ([`World::File`], plain serde), how they resolve into a
//! configuration (reading any data files through [`Inputs`], checking every value),
//! how one replication runs, which trace rows it emits ([`TraceRow`]) and which
//! metrics it reports ([`Metrics`], names and values produced together). The
//! experiments crate runs, traces, summarises and plots any world through this trait
//! alone; registering a world there is one line.
//!
//! ```
//! use infersim_agents::world::{Metrics, MetricValue};
//! let mut m = Metrics::new();
//! m.count("requests", 3).number("latency_mean_s", 0.25).optional("cold_start_h", None).flag("diverged", false);
//! assert_eq!(m.names().collect::<Vec<_>>(), ["requests", "latency_mean_s", "cold_start_h", "diverged"]);
//! assert_eq!(m.get("requests"), Some(MetricValue::Number(Some(3.0))));
//! ```

use std::fmt::Debug;

use infersim_engine::{Interrupt, Model, Observer, RunClock, SimDuration, SimTime, Simulation};
use serde::de::DeserializeOwned;

use serde::Deserialize;

pub use crate::error::{ConfigError, RunError};
pub use crate::input::{DataTable, Inputs};

/// One kind of simulated system.
pub trait World: 'static {
    /// The name scenario files give it: `world = "serving"`.
    const NAME: &'static str;
    /// The scenario's tables for this world as written (with `deny_unknown_fields`
    /// throughout, so the schema is the list of allowed keys). The experiments crate
    /// removes the batch's own keys (`description`, `world`, `simulation.replications`,
    /// `simulation.seed`, `simulation.sample_interval_s`) before reading it.
    type File: DeserializeOwned;
    /// A resolved, validated configuration: what one point of a scenario runs.
    type Config: Clone + Debug + PartialEq + Send + Sync + 'static;
    /// A row of `requests.parquet`.
    type Request: TraceRow;
    /// A row of `timeseries.parquet`.
    type Sample: TraceRow;

    /// Resolves the tables: reads the data files they name through `inputs` and checks
    /// every value. Errors name the dotted key as the file spells it.
    fn resolve(file: Self::File, inputs: &dyn Inputs) -> Result<Self::Config, ConfigError>;

    /// Runs one replication, handing trace rows to `traces`.
    fn run<R: Observer<Self::Request>, S: Observer<Self::Sample>>(
        config: &Self::Config,
        replication: Replication,
        traces: Traces<'_, R, S>,
    ) -> Result<Metrics, RunError>;

    /// The names behind the label columns of its trace rows (task names, say).
    fn labels(config: &Self::Config) -> Labels {
        let _ = config;
        Labels::default()
    }

    /// Trace columns (of requests or samples) this configuration does not fill: they
    /// are left out of its trace files rather than written empty (what one engine of a
    /// world with two does not measure, say).
    fn omitted_columns(config: &Self::Config) -> Vec<&'static str> {
        let _ = config;
        Vec::new()
    }

    /// Latency objectives (name, seconds), marked on latency charts.
    fn latency_objectives(config: &Self::Config) -> Vec<(String, f64)> {
        let _ = config;
        Vec::new()
    }

    /// A real system's measured values to print beside the estimates (where they come
    /// from, and (metric, value) pairs), where the scenario names a measured run.
    fn reference(config: &Self::Config) -> Option<(String, Vec<(String, f64)>)> {
        let _ = config;
        None
    }

    /// Exact values from theory to print beside the estimates, where there are any.
    fn analytic(config: &Self::Config) -> Vec<(&'static str, f64)> {
        let _ = config;
        Vec::new()
    }

    /// What a user should know about a configuration before it runs, though it is
    /// valid (a replayed trace that the run's window cuts, say): each is said once.
    fn warnings(config: &Self::Config) -> Vec<String> {
        let _ = config;
        Vec::new()
    }

    /// What a user should know after a batch, read from its estimates (the points
    /// where a run ran away, say).
    fn notes(estimates: &[Estimate]) -> Vec<Note> {
        let _ = estimates;
        Vec::new()
    }

    /// The charts `infersim plot` draws for this world besides time series and sweeps.
    fn charts() -> Charts {
        Charts::default()
    }

    /// Reads a measured file in a format of this world's real systems (vLLM's
    /// per-request records, say) as samples and values to calibrate against; `None`
    /// when the table is not in such a format (infersim then reads it as requests with
    /// columns in seconds, or as a time series).
    fn observe(table: &DataTable) -> Option<Observation> {
        let _ = table;
        None
    }

    /// Built-in scenarios (name, TOML text): `infersim run NAME` runs them.
    fn scenarios() -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Built-in data files (name, text) that scenarios may name instead of a path.
    fn data() -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// A collection of worlds (the experiments crate's registry): what
/// [`crate::builtin_worlds`] adds infersim's worlds to.
pub trait Worlds: Sized {
    /// This collection and world `W`.
    fn with<W: World>(self) -> Self;
}

/// One metric's estimate at one point of a batch, for [`World::notes`].
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// The point, from 0.
    pub point: u32,
    /// The metric's name.
    pub metric: String,
    /// Its mean over replications.
    pub mean: f64,
    /// Replications it was measured in.
    pub replications: u64,
}

/// Something a user should know after a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    /// A caution about how far the numbers can be trusted (written to stderr once).
    Warning(String),
    /// A finding to read beside the table (printed after it).
    Finding(String),
}

/// A request column whose distribution is charted (its CDF and its tail).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistributionChart {
    /// The column of `requests.parquet`, in seconds.
    pub column: &'static str,
    /// What it is, for the title: "Time to first token (TTFT)".
    pub title: &'static str,
    /// Whether the world's latency objectives are marked on it.
    pub objectives: bool,
}

impl DistributionChart {
    /// End-to-end latency (`latency_s`), the objectives marked: every world's requests
    /// have it.
    pub const LATENCY: DistributionChart =
        DistributionChart { column: "latency_s", title: "Latency (arrival to finish)", objectives: true };
}

/// A trade-off charted across a sweep: a metric against a cost, a marker per point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tradeoff {
    /// The chart's file stem.
    pub name: &'static str,
    /// The metric on the vertical axis.
    pub metric: &'static str,
    /// The metric on the horizontal axis: the first of these the batch reports.
    pub against: &'static [&'static str],
}

/// The charts a world draws by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Charts {
    /// Request columns whose distributions are drawn.
    pub distributions: &'static [DistributionChart],
    /// Trade-offs drawn across a sweep.
    pub tradeoffs: &'static [Tradeoff],
}

/// What a measured file holds, read by [`World::observe`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Samples by the name of the request column they match (`ttft_s`).
    pub samples: Vec<(String, Vec<f64>)>,
    /// Single values by metric name (`makespan_s`).
    pub values: Vec<(String, f64)>,
}

/// The request-trace column that flags rows inside the warm-up (not measured):
/// charts and calibration leave those rows out.
pub const WARMUP_COLUMN: &str = "warmup";

/// The time-series column that names the part of the system a row describes (a
/// fleet's pool): rows without one describe the whole, and what reads a time series
/// as one (charts, batch means, calibration) reads those; charts draw the parts'
/// rows apart.
pub const PART_COLUMN: &str = "part";

/// Marks a schema error that happened in a table read by [`read_nested`]: the message
/// is `NESTED path NESTED message`, the path relative to where the table sits. The
/// experiments crate joins it to the table's own path.
pub const NESTED: char = '\u{1e}';

/// Reads `T` from a table already buffered by a world whose tables take one of several
/// schemas (chosen by a key it read first): a schema error keeps its key path, in the
/// form [`NESTED`] describes.
pub fn read_nested<T: DeserializeOwned, E: serde::de::Error>(table: toml::Table) -> Result<T, E> {
    serde_path_to_error::deserialize(table)
        .map_err(|e| E::custom(format!("{NESTED}{}{NESTED}{}", e.path(), e.inner().message().trim())))
}

/// The field names of a struct type's serde schema, read by deserializing it from a
/// probe that records what the struct asks for (no value is ever built).
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Deserializer, Visitor};
    #[derive(Debug)]
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// `[simulation]` of the worlds that run for a stretch of time: `duration_s` or
/// `duration_h` (exactly one) and an optional warm-up.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Length of the run (s).
    pub duration_s: Option<f64>,
    /// Length of the run (h).
    pub duration_h: Option<f64>,
    /// Warm-up left out of statistics (s).
    pub warmup_s: Option<f64>,
}

/// The longest run a scenario may ask for: a century, far inside the clock's 584
/// years, so that every instant derived from it stays representable.
pub const MAX_DURATION_S: f64 = 100.0 * 365.25 * 86_400.0;

impl Window {
    /// `duration_s` or `duration_h`, in seconds, checked.
    pub fn duration_s(&self) -> Result<f64, ConfigError> {
        let within = |s: f64| s.is_finite() && s > 0.0 && s <= MAX_DURATION_S;
        match (self.duration_s, self.duration_h) {
            (Some(s), None) if within(s) => Ok(s),
            (Some(s), None) => Err(ConfigError::invalid("simulation.duration_s", s, "seconds from 1 ns to 100 years")),
            (None, Some(h)) if within(h * 3600.0) => Ok(h * 3600.0),
            (None, Some(h)) => Err(ConfigError::invalid("simulation.duration_h", h, "hours from 1 ns to 100 years")),
            (Some(_), Some(_)) => {
                Err(ConfigError::invalid("simulation.duration_h", "(set)", "no value when duration_s is set"))
            }
            (None, None) => Err(ConfigError::invalid(
                "simulation.duration_s",
                "(missing)",
                "duration_s (seconds) or duration_h (hours)",
            )),
        }
    }

    /// A run that has no warm-up: `warmup_s` must be absent.
    pub fn no_warmup(&self) -> Result<(), ConfigError> {
        match self.warmup_s {
            None => Ok(()),
            Some(w) => Err(ConfigError::invalid("simulation.warmup_s", w, "no value: this world has no warm-up")),
        }
    }
}

/// Which replication to run: its streams derive from (master seed, index); its run
/// stops early when `interrupt` is raised, and shows how far it got on `clock`.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    /// The batch's master seed.
    pub master_seed: u64,
    /// The replication's index.
    pub index: u64,
    /// Raised to end the run early (Ctrl-C): a world installs it in its simulation
    /// ([`Replication::attach`]) and reports [`RunError::Interrupted`] through
    /// [`Replication::finished`].
    pub interrupt: Interrupt,
    /// Where the run publishes its simulated clock and horizon, for a progress bar.
    pub clock: RunClock,
}

impl Replication {
    /// Replication `index` under `master_seed`, never interrupted, watched by nobody.
    pub fn new(master_seed: u64, index: u64) -> Self {
        Replication { master_seed, index, interrupt: Interrupt::default(), clock: RunClock::default() }
    }

    /// Installs the interrupt and the clock in a world's simulation, with where its
    /// run ends (its last arrival, say), if the world knows.
    pub fn attach<M: Model>(&self, sim: &mut Simulation<M>, horizon: Option<SimTime>) {
        sim.set_interrupt(self.interrupt.clone());
        sim.watch(self.clock.clone());
        if let Some(h) = horizon {
            self.clock.set_horizon(h);
        }
    }

    /// What a run produced, or [`RunError::Interrupted`] when the interrupt was
    /// raised (the run may have stopped early, so its numbers stand for nothing).
    pub fn finished<T>(&self, result: T) -> Result<T, RunError> {
        if self.interrupt.is_raised() { Err(RunError::Interrupted) } else { Ok(result) }
    }
}

/// Where a replication's trace rows go. `sample_every` is the spacing of sampled
/// state for worlds that sample on a time grid (others emit a row per tick, period or
/// interval whenever samples are wanted); `None` means no samples are wanted.
pub struct Traces<'a, R, S> {
    /// Receives a row per request.
    pub requests: &'a mut R,
    /// Receives sampled state.
    pub samples: &'a mut S,
    /// Spacing of sampled state, when samples are wanted.
    pub sample_every: Option<SimDuration>,
}

/// A declared metric: its name, its unit and its Rust type.
pub type MetricDeclaration = (&'static str, &'static str, &'static str);

/// A result field that reports itself as a metric: a count (`u64`), a number
/// (`f64`), a number that may be undefined (`Option<f64>`) or a flag (`bool`).
pub trait Metric {
    /// Adds this value to `metrics` under `name`.
    fn report(&self, metrics: &mut Metrics, name: &'static str);
}

impl Metric for u64 {
    fn report(&self, metrics: &mut Metrics, name: &'static str) {
        metrics.count(name, *self);
    }
}

impl Metric for f64 {
    fn report(&self, metrics: &mut Metrics, name: &'static str) {
        metrics.number(name, *self);
    }
}

impl Metric for Option<f64> {
    fn report(&self, metrics: &mut Metrics, name: &'static str) {
        metrics.optional(name, *self);
    }
}

impl Metric for bool {
    fn report(&self, metrics: &mut Metrics, name: &'static str) {
        metrics.flag(name, *self);
    }
}

/// Declares what one replication of a world measures, each metric once: a struct
/// whose fields, in order, are the metrics (name, type, unit), then the fields that
/// are not reported (after `also`). It gets `metrics()`, the [`Metrics`] of a value,
/// and `UNITS`, each metric's name, unit and type.
///
/// ```
/// infersim_agents::metrics! {
///     /// What a toy queue measured.
///     #[derive(Debug)]
///     pub struct ToyRun {
///         /// Customers served.
///         served: u64 = "customers",
///         /// Mean wait (s); none without a customer.
///         wait_mean_s: Option<f64> = "s",
///     }
///     also {
///         /// Events handled.
///         events: u64,
///     }
/// }
/// let run = ToyRun { served: 3, wait_mean_s: None, events: 10 };
/// assert_eq!(run.metrics().names().collect::<Vec<_>>(), ["served", "wait_mean_s"]);
/// assert_eq!(ToyRun::UNITS[1], ("wait_mean_s", "s", "Option<f64>"));
/// ```
#[macro_export]
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $unit:literal ),* $(,)?
        }
        $( also { $( $(#[$xmeta:meta])* $xfield:ident : $xty:ty ),* $(,)? } )?
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $( $( $(#[$xmeta])* pub $xfield: $xty, )* )?
        }

        impl $name {
            /// Each metric's name, unit and type, in the order they are reported.
            pub const UNITS: &'static [$crate::world::MetricDeclaration] =
                &[$( (stringify!($field), $unit, stringify!($ty)) ),*];

            /// The per-replication metrics, by name, in the order declared.
            pub fn metrics(&self) -> $crate::world::Metrics {
                let mut metrics = $crate::world::Metrics::new();
                $( $crate::world::Metric::report(&self.$field, &mut metrics, stringify!($field)); )*
                metrics
            }
        }
    };
}

/// The units a metric's name may end in, and the unit it then must declare: a test
/// holds every world's metrics to it, so that a name never says one unit and the
/// declaration another.
pub const UNIT_SUFFIXES: [(&str, &str); 11] = [
    ("_per_s", "per s"),
    ("_per_h", "per h"),
    ("_kwh", "kWh"),
    ("_usd", "USD"),
    ("_kg", "kg CO2e"),
    ("_w", "W"),
    ("_j", "J"),
    ("_gb", "GB"),
    ("_h", "h"),
    ("_s", "s"),
    ("_tokens", "tokens"),
];

/// The value of one metric of one replication.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetricValue {
    /// A number; `None` where the replication does not define it (no request served,
    /// say).
    Number(Option<f64>),
    /// True or false; summarised as the fraction of replications where it holds.
    Flag(bool),
}

/// A replication's metrics: names and values, in the order the world reports them;
/// and, for a world whose parts are worth a table of their own (a fleet's pools and
/// models), the same metrics per part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    values: Vec<(&'static str, MetricValue)>,
    groups: Vec<MetricGroup>,
}

/// One part's metrics: its kind (`pool`, `model`: the name of its table and of the
/// column that names it), its name, and its metrics (without parts of their own).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricGroup {
    /// What kind of part.
    pub kind: &'static str,
    /// Which one.
    pub name: String,
    /// Its metrics.
    pub metrics: Metrics,
}

impl Metrics {
    /// No metrics yet.
    pub fn new() -> Self {
        // Room for a world's usual count: growing by doubling costs a batch of tiny
        // replications several reallocations each.
        Metrics { values: Vec::with_capacity(32), groups: Vec::new() }
    }

    /// Adds a part's metrics (see [`MetricGroup`]).
    pub fn group(&mut self, kind: &'static str, name: impl Into<String>, metrics: Metrics) -> &mut Self {
        self.groups.push(MetricGroup { kind, name: name.into(), metrics });
        self
    }

    /// The parts' metrics, in the order they were added.
    pub fn groups(&self) -> &[MetricGroup] {
        &self.groups
    }

    /// A number.
    pub fn number(&mut self, name: &'static str, value: f64) -> &mut Self {
        self.push(name, MetricValue::Number(Some(value)))
    }

    /// A number that may be undefined.
    pub fn optional(&mut self, name: &'static str, value: Option<f64>) -> &mut Self {
        self.push(name, MetricValue::Number(value))
    }

    /// A count.
    pub fn count(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.push(name, MetricValue::Number(Some(value as f64)))
    }

    /// True or false.
    pub fn flag(&mut self, name: &'static str, value: bool) -> &mut Self {
        self.push(name, MetricValue::Flag(value))
    }

    /// Adds `values` after these (another run's, say), each as it was reported.
    pub fn extend(&mut self, values: impl IntoIterator<Item = (&'static str, MetricValue)>) -> &mut Self {
        for (name, value) in values {
            self.push(name, value);
        }
        self
    }

    fn push(&mut self, name: &'static str, value: MetricValue) -> &mut Self {
        debug_assert!(self.get(name).is_none(), "metric {name} reported twice");
        self.values.push((name, value));
        self
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.iter().map(|(n, _)| *n)
    }

    /// Every (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, MetricValue)> + '_ {
        self.values.iter().copied()
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<MetricValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The number `name`, if it is one and defined.
    pub fn value(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            MetricValue::Number(v) => v,
            MetricValue::Flag(b) => Some(f64::from(u8::from(b))),
        }
    }
}

/// The kind of one trace column. `Label` columns hold a small index whose name the
/// world supplies through [`World::labels`] (task and class names are written as text
/// without copying a string per row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// 64-bit float.
    F64,
    /// 64-bit float or null.
    OptF64,
    /// Unsigned 64-bit.
    U64,
    /// Unsigned 32-bit.
    U32,
    /// Unsigned 32-bit or null.
    OptU32,
    /// Boolean.
    Bool,
    /// Text.
    Text,
    /// An index written as its label's text.
    Label,
    /// An index written as its label's text, or null.
    OptLabel,
}

/// One trace column: its name (snake_case, unit as suffix) and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// What it holds.
    pub kind: ColumnKind,
}

/// A label index (task, class): written as the name [`World::labels`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(pub u16);

/// Receives one row's cells, in column order. The experiments crate implements it
/// with Arrow buffers; tests may implement it with anything.
pub trait Cells {
    /// A float.
    fn f64(&mut self, value: f64);
    /// A float or null.
    fn opt_f64(&mut self, value: Option<f64>);
    /// An unsigned 64-bit integer.
    fn u64(&mut self, value: u64);
    /// An unsigned 32-bit integer.
    fn u32(&mut self, value: u32);
    /// An unsigned 32-bit integer or null.
    fn opt_u32(&mut self, value: Option<u32>);
    /// A Boolean.
    fn bool(&mut self, value: bool);
    /// Text.
    fn text(&mut self, value: &str);
    /// A label index.
    fn label(&mut self, value: Label);
    /// A label index or null.
    fn opt_label(&mut self, value: Option<Label>);
}

/// A value that fills one cell; its column kind follows from its type, so a row's
/// declared columns and the values it writes cannot disagree.
pub trait Cell {
    /// The column kind of this type.
    const KIND: ColumnKind;
    /// Writes the value.
    fn put<C: Cells + ?Sized>(self, cells: &mut C);
}

macro_rules! cell {
    ($ty:ty, $kind:ident, $method:ident) => {
        impl Cell for $ty {
            const KIND: ColumnKind = ColumnKind::$kind;
            #[inline]
            fn put<C: Cells + ?Sized>(self, cells: &mut C) {
                cells.$method(self)
            }
        }
    };
}
cell!(f64, F64, f64);
cell!(Option<f64>, OptF64, opt_f64);
cell!(u64, U64, u64);
cell!(u32, U32, u32);
cell!(Option<u32>, OptU32, opt_u32);
cell!(bool, Bool, bool);
cell!(&str, Text, text);
cell!(Label, Label, label);
cell!(Option<Label>, OptLabel, opt_label);

/// A row of a trace file.
pub trait TraceRow: Send + 'static {
    /// Its columns, in order.
    fn columns() -> &'static [Column];
    /// Writes its cells in column order.
    fn write<C: Cells + ?Sized>(&self, cells: &mut C);
}

/// The names behind label columns: (column, names by index).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels(pub Vec<(&'static str, Vec<String>)>);

impl Labels {
    /// The names for `column`, if any.
    pub fn of(&self, column: &str) -> Option<&[String]> {
        self.0.iter().find(|(c, _)| *c == column).map(|(_, names)| names.as_slice())
    }
}

/// Declares a [`TraceRow`] from one line per column: `name: type = value`, where
/// `value` reads the row `$r`. The column kind follows from the type.
///
/// ```
/// use infersim_agents::trace_row;
/// use infersim_agents::world::{Column, ColumnKind, TraceRow};
/// struct Tick { t_s: f64, queue: u32 }
/// trace_row!(Tick, |r| { t_h: f64 = r.t_s / 3600.0, queue_len: u32 = r.queue });
/// assert_eq!(Tick::columns()[1], Column { name: "queue_len", kind: ColumnKind::U32 });
/// ```
#[macro_export]
macro_rules! trace_row {
    ($row:ty, |$r:ident| { $($name:ident : $ty:ty = $value:expr),+ $(,)? }) => {
        impl $crate::world::TraceRow for $row {
            fn columns() -> &'static [$crate::world::Column] {
                &[$($crate::world::Column {
                    name: stringify!($name),
                    kind: <$ty as $crate::world::Cell>::KIND,
                }),+]
            }
            #[inline]
            fn write<C: $crate::world::Cells + ?Sized>(&self, cells: &mut C) {
                let $r = self;
                $(<$ty as $crate::world::Cell>::put($value, cells);)+
            }
        }
    };
}

/// A row type for worlds that write no trace of that kind.
#[derive(Clone, Copy, Debug)]
pub enum NoRow {}

impl TraceRow for NoRow {
    fn columns() -> &'static [Column] {
        &[]
    }
    fn write<C: Cells + ?Sized>(&self, _cells: &mut C) {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row {
        t_s: f64,
        task: u16,
        node: Option<u32>,
    }
    crate::trace_row!(Row, |r| { t_h: f64 = r.t_s / 3600.0, task: Label = Label(r.task), node: Option<u32> = r.node });

    #[derive(Default)]
    struct Text(Vec<String>);
    impl Cells for Text {
        fn f64(&mut self, v: f64) {
            self.0.push(format!("{v}"));
        }
        fn opt_f64(&mut self, v: Option<f64>) {
            self.0.push(format!("{v:?}"));
        }
        fn u64(&mut self, v: u64) {
            self.0.push(format!("{v}"));
        }
        fn u32(&mut self, v: u32) {
            self.0.push(format!("{v}"));
        }
        fn opt_u32(&mut self, v: Option<u32>) {
            self.0.push(format!("{v:?}"));
        }
        fn bool(&mut self, v: bool) {
            self.0.push(format!("{v}"));
        }
        fn text(&mut self, v: &str) {
            self.0.push(v.into());
        }
        fn label(&mut self, v: Label) {
            self.0.push(format!("#{}", v.0));
        }
        fn opt_label(&mut self, v: Option<Label>) {
            self.0.push(format!("{:?}", v.map(|l| l.0)));
        }
    }

    #[test]
    fn a_row_declares_its_columns_and_writes_them_in_order() {
        let kinds: Vec<ColumnKind> = Row::columns().iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ColumnKind::F64, ColumnKind::Label, ColumnKind::OptU32]);
        let mut out = Text::default();
        Row { t_s: 7200.0, task: 3, node: None }.write(&mut out);
        assert_eq!(out.0, ["2", "#3", "None"]);
    }

    #[test]
    fn metrics_keep_names_and_values_together() {
        let mut m = Metrics::new();
        m.count("served", 2).flag("diverged", true).optional("p99_s", None);
        assert_eq!(m.value("served"), Some(2.0));
        assert_eq!(m.value("diverged"), Some(1.0));
        assert_eq!(m.value("p99_s"), None);
        assert_eq!(m.get("nothing"), None);
    }
}
