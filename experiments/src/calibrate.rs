//! Calibration and sim-to-real correspondence.
//!
//! [`calibrate`] fits a scenario's numeric keys to what a real system measured: it
//! runs the scenario at candidate values (every evaluation on the same seeds, common
//! random numbers, so the objective is smooth in the parameters), measures the distance
//! between simulated and observed summaries, distributions or time series, and
//! searches the bounds with Nelder-Mead (argmin). [`correspondence`] gives the
//! sim-to-real table of a finished batch against an observed file.
//!
//! Observed files are read like any data file (CSV, Parquet, JSON Lines). A requests
//! file gives per-request `ttft_s`, `tpot_s`, `e2e_s` (or vLLM's per-request records,
//! `queued_ts`, `first_token_ts`, `last_token_ts`, `output_toks`, from which they are
//! computed) and any other column in seconds (`*_s`), summarised as
//! `<stem>_mean_s`, `<stem>_p50_s`, `<stem>_p90_s`, `<stem>_p95_s`, `<stem>_p99_s`,
//! with `makespan_s` when arrival and finish times are known: the names of
//! replications.parquet. A time series gives `t_h` and its columns.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use infersim_agents::input::{DataTable, Inputs};
use polars::prelude::*;
use rayon::prelude::*;

use crate::inputs::FileInputs;
use crate::output::MetricCell;
use crate::plot::{Line, line_chart, scatter_chart};
use crate::runner::{TraceSpec, run_replication};
use crate::scenario::Scenario;
use crate::trace::{TraceLevel, trace_dir};

/// Bad input to `calibrate` or `correspond` (exit 2), or a run that failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// A `--param`, `--target` or observed file that cannot be used.
    #[error("{0}")]
    Input(String),
    /// A replication, a file or a computation failed.
    #[error("{0}")]
    Failed(String),
}

fn input(message: impl Into<String>) -> CalibrateError {
    CalibrateError::Input(message.into())
}

fn failed(message: impl ToString) -> CalibrateError {
    CalibrateError::Failed(message.to_string())
}

/// A parameter to fit: a numeric key of the scenario and its bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Dotted key, as `--set` takes it.
    pub key: String,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Searched on a log scale.
    pub log: bool,
}

impl Param {
    /// Reads `KEY=LOW..HIGH`.
    pub fn parse(text: &str, log_keys: &[String]) -> Result<Param, CalibrateError> {
        let bad =
            || input(format!("--param {text}: expected KEY=LOW..HIGH, e.g. serving.engine.step_overhead_s=0..0.01"));
        let (key, range) = text.split_once('=').ok_or_else(bad)?;
        let (low, high) = range.split_once("..").ok_or_else(bad)?;
        let (low, high): (f64, f64) = (low.trim().parse().map_err(|_| bad())?, high.trim().parse().map_err(|_| bad())?);
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(input(format!("--param {text}: the bounds must be finite numbers with LOW < HIGH")));
        }
        let log = log_keys.iter().any(|k| k == key.trim());
        if log && low <= 0.0 {
            return Err(input(format!("--param {text}: a --log parameter needs LOW > 0")));
        }
        Ok(Param { key: key.trim().to_string(), low, high, log })
    }

    /// The value at position `u` in [0, 1] of the (log) range.
    pub fn at(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0);
        if self.log {
            (self.low.ln() + u * (self.high.ln() - self.low.ln())).exp()
        } else {
            self.low + u * (self.high - self.low)
        }
    }
}

/// What the objective compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// Relative error of these per-replication metrics (mean over replications)
    /// against the observed summary.
    Metrics(Vec<String>),
    /// Kolmogorov-Smirnov distance of these request columns.
    Distribution(Vec<String>),
    /// Squared error of these time-series columns at the observed `t_h`, relative to
    /// the observed mean square.
    Series(Vec<String>),
}

/// Named columns of numbers.
pub type Columns = Vec<(String, Vec<f64>)>;

/// What a real system measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Summary values by metric name.
    pub metrics: Vec<(String, f64)>,
    /// Per-request samples by column.
    pub samples: Vec<(String, Vec<f64>)>,
    /// Time series: `t_h` and columns.
    pub series: Option<(Vec<f64>, Columns)>,
}

fn numbers(table: &DataTable, col: usize) -> Vec<Option<f64>> {
    (0..table.rows()).map(|r| table.number(col, r).ok().filter(|x| x.is_finite())).collect()
}

/// Sample quantile by linear interpolation between order statistics of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Two-sample Kolmogorov-Smirnov distance of sorted samples.
pub fn ks_distance(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

fn summarise(stem: &str, mut xs: Vec<f64>, out: &mut Vec<(String, f64)>) {
    if xs.is_empty() {
        return;
    }
    xs.sort_by(f64::total_cmp);
    out.push((format!("{stem}_mean_s"), xs.iter().sum::<f64>() / xs.len() as f64));
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99")] {
        out.push((format!("{stem}_{label}_s"), quantile(&xs, q)));
    }
}

impl Observed {
    /// Reads an observed file through `inputs` (`key` names the option in errors).
    pub fn read(path: &str, inputs: &dyn Inputs) -> Result<Observed, CalibrateError> {
        let table = inputs.table("--observed", path).map_err(|e| input(e.to_string()))?;
        let mut observed = Observed::default();
        let names: Vec<String> = table.names().to_vec();
        // A time series.
        if let Some(t) = table.column("t_h") {
            let t_h: Vec<f64> = numbers(&table, t).into_iter().map(|x| x.unwrap_or(f64::NAN)).collect();
            let columns = names
                .iter()
                .enumerate()
                .filter(|(i, n)| *i != t && n.as_str() != "t_s")
                .map(|(i, n)| (n.clone(), numbers(&table, i).into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()))
                .collect();
            observed.series = Some((t_h, columns));
        }
        // Requests: infersim's own columns, or vLLM's per-request records.
        let vllm = ["queued_ts", "first_token_ts", "last_token_ts"].map(|c| table.column(c));
        let output = table.column_any(&["output_toks", "output_tokens"]);
        if let ([Some(q), Some(f), Some(l)], Some(n)) = (vllm, output) {
            let (q, f, l, n) = (numbers(&table, q), numbers(&table, f), numbers(&table, l), numbers(&table, n));
            let mut ttft = Vec::new();
            let mut tpot = Vec::new();
            let mut e2e = Vec::new();
            for r in 0..table.rows() {
                if let (Some(q), Some(f), Some(l)) = (q[r], f[r], l[r]) {
                    ttft.push(f - q);
                    e2e.push(l - q);
                    if let Some(n) = n[r].filter(|n| *n > 1.0) {
                        tpot.push((l - f) / (n - 1.0));
                    }
                }
            }
            let start = q.iter().flatten().fold(f64::INFINITY, |a, b| a.min(*b));
            let end = l.iter().flatten().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
            observed.samples = vec![("ttft_s".into(), ttft), ("tpot_s".into(), tpot), ("e2e_s".into(), e2e)];
            observed.metrics.push(("makespan_s".into(), end - start));
        } else if observed.series.is_none() {
            let served = table
                .column("outcome")
                .map(|c| (0..table.rows()).map(|r| table.text(c, r).as_deref() == Some("served")).collect::<Vec<_>>());
            let warm = table.column("warmup").map(|c| {
                (0..table.rows()).map(|r| matches!(table.text(c, r).as_deref(), Some("true" | "1"))).collect::<Vec<_>>()
            });
            let keep = |r: usize| served.as_ref().is_none_or(|s| s[r]) && warm.as_ref().is_none_or(|w| !w[r]);
            for (i, name) in names.iter().enumerate() {
                if name.ends_with("_s")
                    && !["arrival_s", "start_s", "finish_s", "first_scheduled_s", "first_token_s", "t_s"]
                        .contains(&name.as_str())
                {
                    let xs: Vec<f64> = numbers(&table, i)
                        .into_iter()
                        .enumerate()
                        .filter(|(r, _)| keep(*r))
                        .filter_map(|(_, x)| x)
                        .collect();
                    observed.samples.push((name.clone(), xs));
                }
            }
            if let (Some(a), Some(f)) = (table.column("arrival_s"), table.column("finish_s")) {
                let (a, f) = (numbers(&table, a), numbers(&table, f));
                let start = a.iter().flatten().fold(f64::INFINITY, |x, y| x.min(*y));
                let end = f.iter().flatten().fold(f64::NEG_INFINITY, |x, y| x.max(*y));
                if end > start {
                    observed.metrics.push(("makespan_s".into(), end - start));
                }
            }
        }
        for (name, xs) in observed.samples.clone() {
            summarise(name.trim_end_matches("_s"), xs, &mut observed.metrics);
        }
        if observed.metrics.is_empty() && observed.series.is_none() {
            return Err(input(format!(
                "--observed {path}: no columns to compare (a requests file with ttft_s, tpot_s, e2e_s or other *_s \
                 columns, vLLM's per-request records, or a time series with t_h); columns: {}",
                names.join(", ")
            )));
        }
        Ok(observed)
    }

    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// One evaluation of the objective.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Parameter values, in `--param` order.
    pub values: Vec<f64>,
    /// The objective.
    pub objective: f64,
    /// Per-target errors (relative error, KS distance or relative squared error).
    pub errors: Vec<(String, f64)>,
}

/// Runs `reps` replications of the scenario's first point with traces as `level`
/// needs, in `dir`; returns the records.
fn simulate(
    s: &Scenario,
    reps: u64,
    level: TraceLevel,
    dir: &Path,
) -> Result<Vec<crate::output::ReplicationRecord>, CalibrateError> {
    let trace = TraceSpec {
        level,
        out: dir.to_path_buf(),
        sample_every: infersim_engine::SimDuration::from_secs_f64(s.sample_interval_s).map_err(failed)?,
    };
    let point = s.first_point();
    let records: Vec<_> = (0..reps).into_par_iter().map(|r| run_replication(&point, s.seed, r, &trace)).collect();
    if let Some(e) = records.iter().find_map(|r| r.error.clone()) {
        return Err(failed(format!("a replication failed: {e}")));
    }
    Ok(records)
}

fn metric_of(record: &crate::output::ReplicationRecord, name: &str) -> Option<f64> {
    record.metrics.iter().find(|(n, _)| n == name).and_then(|(_, v)| match v {
        MetricCell::Number(x) => *x,
        MetricCell::Flag(b) => Some(f64::from(u8::from(*b))),
    })
}

fn read_frame(path: &Path) -> Result<DataFrame, CalibrateError> {
    let file = fs::File::open(path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    ParquetReader::new(file).finish().map_err(|e| failed(format!("{}: {e}", path.display())))
}

fn column_f64(df: &DataFrame, name: &str) -> Option<Vec<Option<f64>>> {
    let c = df.column(name).ok()?.cast(&polars::prelude::DataType::Float64).ok()?;
    let ca = c.f64().ok()?;
    Some((0..ca.len()).map(|i| ca.get(i)).collect())
}

/// Simulated request samples of `columns`, pooled over replications (served requests
/// after warm-up).
fn simulated_samples(dir: &Path, reps: u64, columns: &[String]) -> Result<Vec<(String, Vec<f64>)>, CalibrateError> {
    let mut pooled: Vec<(String, Vec<f64>)> = columns.iter().map(|c| (c.clone(), Vec::new())).collect();
    for r in 0..reps {
        let df = read_frame(&trace_dir(dir, 0, r).join("requests.parquet"))?;
        let n = df.height();
        let served: Vec<bool> = match df.column("outcome") {
            Ok(c) => {
                let ca = c.str().map_err(failed)?;
                (0..ca.len()).map(|i| ca.get(i) == Some("served")).collect()
            }
            Err(_) => vec![true; n],
        };
        let warm: Vec<bool> = match df.column("warmup") {
            Ok(c) => {
                let ca = c.bool().map_err(failed)?;
                (0..ca.len()).map(|i| ca.get(i) == Some(true)).collect()
            }
            Err(_) => vec![false; n],
        };
        for (name, xs) in &mut pooled {
            let values =
                column_f64(&df, name).ok_or_else(|| input(format!("the simulated requests have no column {name}")))?;
            xs.extend(values.into_iter().enumerate().filter(|(i, _)| served[*i] && !warm[*i]).filter_map(|(_, v)| v));
        }
    }
    Ok(pooled)
}

/// The simulated time series of `column` at `t_h`, mean over replications.
fn simulated_series(dir: &Path, reps: u64, column: &str, t_h: &[f64]) -> Result<Vec<f64>, CalibrateError> {
    let mut sum = vec![0.0; t_h.len()];
    for r in 0..reps {
        let df = read_frame(&trace_dir(dir, 0, r).join("timeseries.parquet"))?;
        let t: Vec<f64> = column_f64(&df, "t_h")
            .ok_or_else(|| failed("timeseries.parquet has no t_h"))?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect();
        let y: Vec<f64> = column_f64(&df, column)
            .ok_or_else(|| input(format!("the simulated time series has no column {column}")))?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect();
        for (k, &x) in t_h.iter().enumerate() {
            let i = t.partition_point(|&ti| ti < x).min(t.len().saturating_sub(1));
            let value = if i == 0 || t[i] <= x {
                y[i]
            } else {
                let (t0, t1) = (t[i - 1], t[i]);
                y[i - 1] + (x - t0) / (t1 - t0) * (y[i] - y[i - 1])
            };
            sum[k] += value;
        }
    }
    Ok(sum.into_iter().map(|v| v / reps as f64).collect())
}

/// The objective at the scenario as it is.
pub fn evaluate(
    s: &Scenario,
    objective: &Objective,
    observed: &Observed,
    reps: u64,
    dir: &Path,
) -> Result<(f64, Vec<(String, f64)>), CalibrateError> {
    let level = match objective {
        Objective::Metrics(_) => TraceLevel::Summary,
        Objective::Distribution(_) => TraceLevel::Requests,
        Objective::Series(_) => TraceLevel::Timeseries,
    };
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    }
    let records = simulate(s, reps, level, dir)?;
    let mut errors = Vec::new();
    match objective {
        Objective::Metrics(names) => {
            for name in names {
                let real = observed.metric(name).ok_or_else(|| {
                    input(format!(
                        "--target {name}: the observed file gives no {name} (it gives {})",
                        observed.metrics.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let values: Vec<f64> = records.iter().filter_map(|r| metric_of(r, name)).collect();
                if values.is_empty() {
                    return Err(input(format!("--target {name}: the simulation reports no {name}")));
                }
                let sim = values.iter().sum::<f64>() / values.len() as f64;
                errors.push((name.clone(), if real != 0.0 { (sim - real) / real } else { sim - real }));
            }
        }
        Objective::Distribution(columns) => {
            let sim = simulated_samples(dir, reps, columns)?;
            for (name, mut xs) in sim {
                let mut real = observed
                    .samples
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| input(format!("--distribution {name}: the observed file has no {name}")))?;
                xs.sort_by(f64::total_cmp);
                real.sort_by(f64::total_cmp);
                errors.push((name, ks_distance(&xs, &real)));
            }
        }
        Objective::Series(columns) => {
            let (t_h, series) =
                observed.series.as_ref().ok_or_else(|| input("--series: the observed file has no t_h column"))?;
            for name in columns {
                let real = series
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| input(format!("--series {name}: the observed file has no {name}")))?;
                let sim = simulated_series(dir, reps, name, t_h)?;
                let (mut sq, mut norm, mut n) = (0.0_f64, 0.0_f64, 0.0_f64);
                for (a, b) in sim.iter().zip(real) {
                    if a.is_finite() && b.is_finite() {
                        sq += (a - b).powi(2);
                        norm += b * b;
                        n += 1.0;
                    }
                }
                errors.push((name.clone(), if norm > 0.0 { sq / norm } else { sq / n.max(1.0) }));
            }
        }
    }
    let objective_value = match objective {
        Objective::Metrics(_) => errors.iter().map(|(_, e)| e * e).sum::<f64>() / errors.len() as f64,
        Objective::Distribution(_) | Objective::Series(_) => {
            errors.iter().map(|(_, e)| e).sum::<f64>() / errors.len() as f64
        }
    };
    Ok((objective_value, errors))
}

/// What `calibrate` was asked.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The parameters.
    pub params: Vec<Param>,
    /// The objective.
    pub objective: Objective,
    /// Replications per evaluation.
    pub reps: u64,
    /// Most evaluations of the search (the profile afterwards adds 10 per parameter).
    pub budget: usize,
    /// Counts evaluations as they finish (hidden when not wanted).
    pub progress: indicatif::ProgressBar,
}

/// The result of a calibration.
#[derive(Clone, Debug)]
pub struct Fitted {
    /// Every evaluation, in order.
    pub evaluations: Vec<Evaluation>,
    /// Index of the best.
    pub best: usize,
    /// Per parameter: (low, high) of the profile interval, or `None` when the
    /// objective does not change along it (not identifiable from this target).
    pub intervals: Vec<Option<(f64, f64)>>,
}

struct Problem<'a> {
    base: &'a Scenario,
    calibration: &'a Calibration,
    observed: &'a Observed,
    work: PathBuf,
    log: Mutex<Vec<Evaluation>>,
    error: Mutex<Option<CalibrateError>>,
    journal: &'a Journal,
}

/// Every finished evaluation, one JSON line each, after a first line naming the
/// calibration: an interrupted calibration resumes by replaying it (the search is
/// deterministic given the objective's values, so it retraces its path at no cost
/// and goes on where it stopped).
pub struct Journal {
    path: PathBuf,
    done: Mutex<Vec<Evaluation>>,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for the calibration `header` names;
    /// a journal of another calibration is refused.
    pub fn open(path: &Path, header: &str) -> Result<Journal, CalibrateError> {
        let mut done = Vec::new();
        match fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                if lines.next() != Some(header) {
                    return Err(input(format!(
                        "{}: the interrupted calibration there was of another scenario, parameters or target",
                        path.display()
                    )));
                }
                // A last line cut by the interruption is dropped.
                done.extend(lines.filter_map(|l| serde_json::from_str::<Evaluation>(l).ok()));
            }
            Err(_) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
                }
                fs::write(path, format!("{header}\n")).map_err(|e| failed(format!("{}: {e}", path.display())))?;
            }
        }
        Ok(Journal { path: path.to_path_buf(), done: Mutex::new(done) })
    }

    /// Evaluations it holds.
    pub fn len(&self) -> usize {
        self.done.lock().expect("not poisoned").len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, values: &[f64]) -> Option<Evaluation> {
        let same = |e: &Evaluation| e.values.iter().map(|v| v.to_bits()).eq(values.iter().map(|v| v.to_bits()));
        self.done.lock().expect("not poisoned").iter().find(|e| same(e)).cloned()
    }

    fn record(&self, e: &Evaluation) -> Result<(), CalibrateError> {
        use std::io::Write as _;
        let line = serde_json::to_string(e).map_err(failed)?;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| failed(format!("{}: {e}", self.path.display())))?;
        writeln!(file, "{line}").map_err(|e| failed(format!("{}: {e}", self.path.display())))?;
        self.done.lock().expect("not poisoned").push(e.clone());
        Ok(())
    }
}

impl Problem<'_> {
    fn values(&self, u: &[f64]) -> Vec<f64> {
        self.calibration.params.iter().zip(u).map(|(p, &u)| p.at(u)).collect()
    }

    fn run(&self, values: &[f64]) -> Result<f64, CalibrateError> {
        if let Some(e) = self.journal.find(values) {
            let objective = e.objective;
            self.log.lock().expect("not poisoned").push(e);
            self.calibration.progress.inc(1);
            return Ok(objective);
        }
        let mut s = self.base.clone();
        let sets: Vec<String> =
            self.calibration.params.iter().zip(values).map(|(p, v)| format!("{}={v:e}", p.key)).collect();
        s.apply_overrides(&sets).map_err(|e| input(e.to_string()))?;
        let (objective, errors) =
            evaluate(&s, &self.calibration.objective, self.observed, self.calibration.reps, &self.work)?;
        let evaluation = Evaluation { values: values.to_vec(), objective, errors };
        self.journal.record(&evaluation)?;
        self.log.lock().expect("not poisoned").push(evaluation);
        self.calibration.progress.inc(1);
        Ok(objective)
    }
}

/// The problem as argmin holds it (argmin takes its problem by value; the log stays
/// with the caller).
struct Search<'p, 'a>(&'p Problem<'a>);

impl argmin::core::CostFunction for Search<'_, '_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, u: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        self.0.cost(u)
    }
}

impl Problem<'_> {
    fn cost(&self, u: &[f64]) -> Result<f64, argmin::core::Error> {
        if self.log.lock().expect("not poisoned").len() >= self.calibration.budget {
            return Err(argmin::core::Error::msg("budget"));
        }
        // Outside the unit cube: the value at the nearest bound, plus a penalty that
        // keeps the simplex inside.
        let outside: f64 = u.iter().map(|x| (x - x.clamp(0.0, 1.0)).abs()).sum();
        match self.run(&self.values(u)) {
            Ok(v) => Ok(v + outside),
            Err(e) => {
                *self.error.lock().expect("not poisoned") = Some(e);
                Err(argmin::core::Error::msg("stopped"))
            }
        }
    }
}

/// Fits the parameters: Nelder-Mead in the unit cube of the (log) bounds from its
/// centre, then a profile of the objective along each parameter around the optimum.
/// Evaluations already in `journal` are not run again.
pub fn calibrate(
    base: &Scenario,
    calibration: &Calibration,
    observed: &Observed,
    work: &Path,
    journal: &Journal,
) -> Result<Fitted, CalibrateError> {
    use argmin::core::Executor;
    use argmin::solver::neldermead::NelderMead;
    let d = calibration.params.len();
    let problem = Problem {
        base,
        calibration,
        observed,
        work: work.join("eval"),
        log: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        journal,
    };
    // Check the inputs on the first point before searching.
    problem.run(&problem.values(&vec![0.5; d]))?;
    let mut simplex = vec![vec![0.5; d]];
    for i in 0..d {
        let mut p = vec![0.5; d];
        p[i] = 0.8;
        simplex.push(p);
    }
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-7).map_err(failed)?;
    let max_iters = calibration.budget as u64;
    let result = Executor::new(Search(&problem), solver).configure(|state| state.max_iters(max_iters)).run();
    if let Some(e) = problem.error.lock().expect("not poisoned").take() {
        return Err(e);
    }
    if let Err(e) = &result
        && !e.to_string().contains("budget")
    {
        return Err(failed(e));
    }
    let searched = problem.log.lock().expect("not poisoned").clone();
    let best = (0..searched.len())
        .min_by(|&a, &b| searched[a].objective.total_cmp(&searched[b].objective))
        .expect("one evaluation");
    // Profile: the objective at the optimum moved along each parameter.
    let best_values = searched[best].values.clone();
    let best_objective = searched[best].objective;
    let mut intervals = Vec::new();
    for (i, p) in calibration.params.iter().enumerate() {
        let to_u = |x: f64| {
            if p.log { (x.ln() - p.low.ln()) / (p.high.ln() - p.low.ln()) } else { (x - p.low) / (p.high - p.low) }
        };
        let u0 = to_u(best_values[i]);
        let mut along = vec![(best_values[i], best_objective)];
        for step in [-0.05, -0.02, -0.01, -0.005, -0.002, 0.002, 0.005, 0.01, 0.02, 0.05] {
            let mut v = best_values.clone();
            v[i] = p.at(u0 + step);
            along.push((v[i], problem.run(&v)?));
        }
        let all: Vec<f64> = searched.iter().map(|e| e.objective).chain(along.iter().map(|a| a.1)).collect();
        let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let flat = hi - lo <= 1e-12 + 1e-6 * lo.abs();
        let along_flat = along.iter().all(|(_, o)| (o - best_objective).abs() <= 1e-12 + 1e-6 * best_objective.abs());
        if flat || along_flat {
            intervals.push(None);
        } else {
            // Values whose objective stays within twice the minimum (or 1e-6 above a
            // minimum of zero).
            let threshold = best_objective + best_objective.max(1e-6);
            let inside: Vec<f64> = along.iter().filter(|(_, o)| *o <= threshold).map(|(x, _)| *x).collect();
            let (a, b) = inside.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            intervals.push(Some((a, b)));
        }
    }
    let evaluations = problem.log.into_inner().expect("not poisoned");
    let _ = fs::remove_dir_all(work.join("eval"));
    Ok(Fitted { evaluations, best, intervals })
}

/// Writes calibration.parquet: a row per evaluation (parameters, objective, errors).
pub fn write_evaluations(path: &Path, params: &[Param], fitted: &Fitted) -> Result<(), CalibrateError> {
    let mut fields = vec![Field::new("evaluation", DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> =
        vec![std::sync::Arc::new(UInt32Array::from_iter_values(0..fitted.evaluations.len() as u32))];
    for (i, p) in params.iter().enumerate() {
        fields.push(Field::new(p.key.as_str(), DataType::Float64, false));
        columns
            .push(std::sync::Arc::new(Float64Array::from_iter_values(fitted.evaluations.iter().map(|e| e.values[i]))));
    }
    fields.push(Field::new("objective", DataType::Float64, false));
    columns.push(std::sync::Arc::new(Float64Array::from_iter_values(fitted.evaluations.iter().map(|e| e.objective))));
    let names: Vec<String> = fitted.evaluations[0].errors.iter().map(|(n, _)| n.clone()).collect();
    for (k, name) in names.iter().enumerate() {
        fields.push(Field::new(format!("error_{name}"), DataType::Float64, true));
        columns.push(std::sync::Arc::new(Float64Array::from_iter(
            fitted.evaluations.iter().map(|e| e.errors.get(k).map(|x| x.1)),
        )));
    }
    fields.push(Field::new("best", DataType::Utf8, false));
    columns.push(std::sync::Arc::new(StringArray::from_iter_values(
        (0..fitted.evaluations.len()).map(|i| if i == fitted.best { "yes" } else { "" }),
    )));
    let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).map_err(failed)?;
    let tmp = path.with_extension("parquet.tmp");
    let file = fs::File::create(&tmp).map_err(|e| failed(format!("{}: {e}", tmp.display())))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(failed)?;
    writer.write(&batch).map_err(failed)?;
    writer.close().map_err(failed)?;
    fs::rename(&tmp, path).map_err(|e| failed(format!("{}: {e}", path.display())))
}

/// Charts of a calibration: the objective against each parameter (every evaluation),
/// and for distributions the simulated against the observed CDF at the optimum.
pub fn plot_calibration(dir: &Path, params: &[Param], fitted: &Fitted) -> Result<Vec<PathBuf>, CalibrateError> {
    let mut written = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let mut points: Vec<(f64, f64, f64, f64)> =
            fitted.evaluations.iter().map(|e| (e.values[i], e.objective, e.objective, e.objective)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line = Line { label: "evaluations".into(), points };
        let stem = format!("objective_{}", p.key.replace('.', "_"));
        written.extend(
            scatter_chart(dir, &stem, &format!("objective against {}", p.key), &p.key, "objective", &[line])
                .map_err(failed)?,
        );
    }
    Ok(written)
}

/// Draws observed against simulated CDFs of request columns.
pub fn plot_distributions(
    dir: &Path,
    observed: &Observed,
    simulated: &[(String, Vec<f64>)],
) -> Result<Vec<PathBuf>, CalibrateError> {
    let cdf = |label: &str, xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as f64;
        let step = (xs.len() / 400).max(1);
        Line {
            label: label.into(),
            points: xs.iter().enumerate().step_by(step).map(|(i, &x)| (x, (i + 1) as f64 / n, 0.0, 0.0)).collect(),
        }
    };
    let mut written = Vec::new();
    for (name, sim) in simulated {
        let Some((_, real)) = observed.samples.iter().find(|(n, _)| n == name) else { continue };
        if sim.is_empty() || real.is_empty() {
            continue;
        }
        let lines = [cdf("observed", real), cdf("simulated", sim)];
        written.extend(
            line_chart(
                dir,
                &format!("cdf_{name}"),
                &format!("{name}: simulated and observed"),
                name,
                "share of requests",
                &lines,
            )
            .map_err(failed)?,
        );
    }
    Ok(written)
}

/// One row of the sim-to-real table.
#[derive(Clone, Debug, PartialEq)]
pub struct Correspondence {
    /// Metric name (as in replications.parquet).
    pub metric: String,
    /// The observed value.
    pub observed: f64,
    /// Mean over replications.
    pub simulated_mean: f64,
    /// Confidence interval of the mean.
    pub ci: (f64, f64),
    /// (simulated - observed) / observed.
    pub relative_error: f64,
    /// Whether the observed value lies within the replications' range.
    pub inside: bool,
}

/// The sim-to-real table of a finished batch (its first point, from
/// replications.parquet) against `observed`: every observed metric the batch reports.
pub fn correspondence(replications: &DataFrame, observed: &Observed, confidence: f64) -> Vec<Correspondence> {
    let points: Vec<Option<f64>> =
        column_f64(replications, "point").unwrap_or_else(|| vec![Some(0.0); replications.height()]);
    let mut rows = Vec::new();
    for (metric, real) in &observed.metrics {
        let Some(column) = column_f64(replications, metric) else { continue };
        let values: Vec<f64> =
            column.into_iter().zip(&points).filter(|(_, p)| **p == Some(0.0)).filter_map(|(v, _)| v).collect();
        if values.is_empty() {
            continue;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let ci = infersim_engine::stats::ConfidenceInterval::from_samples(&values, confidence)
            .map_or((mean, mean), |c| (c.low, c.high));
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let tolerance = 1e-9 * real.abs().max(1e-12);
        rows.push(Correspondence {
            metric: metric.clone(),
            observed: *real,
            simulated_mean: mean,
            ci,
            relative_error: if *real != 0.0 { (mean - real) / real } else { mean - real },
            inside: *real >= lo - tolerance && *real <= hi + tolerance,
        });
    }
    rows
}

/// Reads a batch's replications.parquet.
pub fn read_replications(out: &Path) -> Result<DataFrame, CalibrateError> {
    let path = out.join("replications.parquet");
    if !path.is_file() {
        return Err(input(format!("{}: not a finished batch (no replications.parquet)", out.display())));
    }
    read_frame(&path)
}

/// The table as CSV text (columns metric, observed, simulated_mean, ci_low, ci_high,
/// relative_error, inside).
pub fn correspondence_csv(rows: &[Correspondence], ks: &[(String, f64)]) -> String {
    let mut text = String::from("metric,observed,simulated_mean,ci_low,ci_high,relative_error,inside\n");
    for r in rows {
        let _ = writeln!(
            text,
            "{},{},{},{},{},{},{}",
            r.metric, r.observed, r.simulated_mean, r.ci.0, r.ci.1, r.relative_error, r.inside
        );
    }
    for (name, d) in ks {
        let _ = writeln!(text, "ks_{name},0,{d},{d},{d},,");
    }
    text
}

/// KS distances of request columns of a batch's traces (point 0) against observed
/// samples, with the pooled simulated samples.
pub fn trace_ks(out: &Path, reps: u64, observed: &Observed) -> Vec<(String, f64, Vec<f64>)> {
    let mut result = Vec::new();
    for (name, real) in &observed.samples {
        let Ok(pooled) = simulated_samples(out, reps, std::slice::from_ref(name)) else { continue };
        let mut sim = pooled.into_iter().next().map(|p| p.1).unwrap_or_default();
        if sim.is_empty() {
            continue;
        }
        let mut real = real.clone();
        sim.sort_by(f64::total_cmp);
        real.sort_by(f64::total_cmp);
        result.push((name.clone(), ks_distance(&sim, &real), sim));
    }
    result
}

/// Reads an observed file relative to the current directory.
pub fn read_observed(path: &str) -> Result<Observed, CalibrateError> {
    Observed::read(path, &FileInputs::new(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_map_the_unit_interval() {
        let p = Param::parse("a.b=1..100", &["a.b".into()]).unwrap();
        assert!(p.log && (p.at(0.5) - 10.0).abs() < 1e-9 && (p.at(2.0) - 100.0).abs() < 1e-9);
        let q = Param::parse("x=0..0.01", &[]).unwrap();
        assert!((q.at(0.25) - 0.0025).abs() < 1e-15);
        for bad in ["x=1..0", "x", "x=a..b", "x=1..1"] {
            assert!(Param::parse(bad, &[]).is_err(), "{bad}");
        }
        assert!(Param::parse("x=0..1", &["x".into()]).unwrap_err().to_string().contains("LOW > 0"));
    }

    #[test]
    fn ks_distance_is_zero_for_equal_samples_and_one_for_disjoint() {
        let a = [1.0, 2.0, 3.0];
        assert_eq!(ks_distance(&a, &a), 0.0);
        assert_eq!(ks_distance(&a, &[4.0, 5.0]), 1.0);
        assert!((ks_distance(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
    }
}
