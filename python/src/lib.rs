//! `infersim._infersim`: the extension module behind the `infersim` Python package.
//! It runs infersim's library (the same code as the `infersim` command) and hands
//! results to Python as Arrow; the package's Python layer (python/infersim) turns
//! them into polars DataFrames and adds temporary directories and progress bars.
//!
//! ```python
//! import infersim
//! batch = infersim.run("mmc", reps=3, seed=1)
//! print(batch.summary)
//! ```

mod background;
mod convert;
mod errors;
mod scenario;
mod table;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use infersim::batch::{BatchSpec, BatchStatus, run_batch as run_library_batch};
use infersim::calibrate::run::{Request, run as run_calibration};
use infersim::calibrate::{CalibrateError, FittedRow, Objective, fitted_rows};
use infersim::cli::{Comparison, CorrespondenceTable, comparison, comparison_by, correspondence_table};
use infersim::runner::{Shard, WorkPlan};
use infersim::trace::TraceLevel;
use infersim_engine::Interrupt;
use pyo3::prelude::*;

use background::run_in_background;
use errors::{RunError, ScenarioError, py as lift, run_error, scenario_error};
use scenario::{PyScenario, registry, scenario_of};
use table::{ArrowTable, Column};

/// The built-in scenarios: name, world and description (`infersim list`), the
/// default first.
#[pyfunction]
fn scenarios() -> PyResult<ArrowTable> {
    let registry = registry();
    let mut names = registry.scenarios();
    names.sort_by_key(|(name, _)| Some(*name) != registry.default_scenario());
    let (mut name, mut world, mut description) = (Vec::new(), Vec::new(), Vec::new());
    for (n, _) in names {
        let s = infersim::scenario::Scenario::load_with(&registry, n).map_err(|e| errors::from_scenario(&e))?;
        name.push(n.to_string());
        world.push(s.world.to_string());
        description.push(s.description);
    }
    Ok(ArrowTable::from_columns(vec![
        ("name", Column::Text(name)),
        ("world", Column::Text(world)),
        ("description", Column::Text(description)),
    ]))
}

/// The name of the built-in scenario `infersim run` runs when given none.
#[pyfunction]
fn default_scenario() -> Option<&'static str> {
    registry().default_scenario()
}

fn trace_level(trace: Option<&str>) -> PyResult<TraceLevel> {
    match trace.unwrap_or("summary") {
        "summary" => Ok(TraceLevel::Summary),
        "timeseries" => Ok(TraceLevel::Timeseries),
        "requests" => Ok(TraceLevel::Requests),
        other => Err(scenario_error(
            format!("trace={other:?}: expected one of 'summary', 'timeseries', 'requests'"),
            None,
            Some("summary, timeseries, requests".into()),
        )),
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs a Monte Carlo batch into `out` (as `infersim run --out`) and returns its
/// manifest as JSON. The GIL is released while it runs; Ctrl-C stops it, keeping
/// the finished replications, and raises KeyboardInterrupt. `progress(done, total)`
/// is called as replications finish.
#[pyfunction]
#[pyo3(signature = (scenario, out, reps = None, seed = None, threads = None, trace = None, confidence = 0.95, resume = false, progress = None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per CLI option.
fn run_batch(
    py: Python<'_>,
    scenario: &Bound<'_, PyAny>,
    out: PathBuf,
    reps: Option<u64>,
    seed: Option<u64>,
    threads: Option<usize>,
    trace: Option<&str>,
    confidence: f64,
    resume: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let s = scenario_of(scenario)?;
    let spec = BatchSpec {
        replications: reps.unwrap_or(s.replications),
        seed: seed.unwrap_or(s.seed),
        threads: threads.unwrap_or_else(all_cores),
        shard: Shard::ALL,
        out,
        resume,
        confidence,
        trace: trace_level(trace)?,
    };
    let total = WorkPlan::new(s.point_count() as usize, spec.replications, spec.shard).map_err(lift)?.len();
    let done = AtomicU64::new(0);
    let cancel = Interrupt::new();
    let report = run_in_background(py, &cancel, progress, &|| (done.load(Ordering::Relaxed), total), || {
        run_library_batch(&s, &spec, &cancel, &|_| {
            done.fetch_add(1, Ordering::Relaxed);
        })
    })?
    .map_err(lift)?;
    let m = &report.manifest;
    if m.status == BatchStatus::Interrupted {
        // Only an interrupt raised outside Python (none is, today) gets here.
        return Err(run_error(format!("interrupted: {} of {} replications done and kept", m.completed, m.expected)));
    }
    if let Some(first) = m.failed.first() {
        return Err(run_error(format!(
            "{} replications failed (first: point {} replication {}: {}); see {}",
            m.failed.len(),
            first.point,
            first.replication,
            first.error,
            spec.out.join("manifest.json").display()
        )));
    }
    serde_json::to_string(m).map_err(|e| run_error(e.to_string()))
}

/// Reads a Parquet file that infersim wrote as an Arrow table.
#[pyfunction]
fn read_parquet(path: PathBuf) -> PyResult<ArrowTable> {
    ArrowTable::read_parquet(&path)
}

/// Pairs two complete batches by (point, replication), as `infersim compare`: per
/// point and metric the means, the mean difference candidate - base with its
/// interval, the relative change and whether the interval excludes zero. With `by`
/// (`pool` or `model`), per part of a fleet too: a row per part, point and metric.
#[pyfunction]
#[pyo3(signature = (base, candidate, confidence = 0.95, by = None))]
fn compare(
    py: Python<'_>,
    base: PathBuf,
    candidate: PathBuf,
    confidence: f64,
    by: Option<String>,
) -> PyResult<ArrowTable> {
    let parts = py
        .detach(|| match &by {
            None => {
                comparison(&base, &candidate, confidence).map(|Comparison { rows, .. }| vec![(String::new(), rows)])
            }
            Some(kind) => {
                // Both batches complete, as the CLI checks first.
                comparison(&base, &candidate, confidence)?;
                comparison_by(&base, &candidate, kind, confidence).map(|(_, parts)| parts)
            }
        })
        .map_err(lift)?;
    let rows: Vec<(&str, &infersim::analysis::ComparisonRow)> =
        parts.iter().flat_map(|(name, rows)| rows.iter().map(move |r| (name.as_str(), r))).collect();
    let number = |f: &dyn Fn(&infersim::analysis::ComparisonRow) -> Option<f64>| {
        Column::Number(rows.iter().map(|(_, r)| f(r)).collect())
    };
    let mut columns = vec![("point", Column::Count(rows.iter().map(|(_, r)| u64::from(r.point)).collect()))];
    if let Some(kind) = &by {
        columns.push((kind.as_str(), Column::Text(rows.iter().map(|(n, _)| n.to_string()).collect())));
    }
    columns.extend([
        ("metric", Column::Text(rows.iter().map(|(_, r)| r.metric.clone()).collect())),
        ("pairs", Column::Count(rows.iter().map(|(_, r)| r.pairs).collect())),
        ("base_mean", number(&|r| Some(r.base_mean))),
        ("candidate_mean", number(&|r| Some(r.candidate_mean))),
        ("difference", number(&|r| Some(r.candidate_mean - r.base_mean))),
        ("ci_low", number(&|r| r.difference.map(|d| d.low))),
        ("ci_high", number(&|r| r.difference.map(|d| d.high))),
        ("relative_change", number(&|r| r.relative_change())),
        ("significant", Column::Flag(rows.iter().map(|(_, r)| Some(r.significant())).collect())),
    ]);
    Ok(ArrowTable::from_columns(columns))
}

/// The sim-to-real table of the batch in `out` against a measured file, as
/// `infersim correspond` (also written to out/correspondence.csv): per observed
/// metric the simulated mean, its interval, the relative error and whether the
/// observed value lies within the replications; request columns' KS distances as
/// rows named ks_<column>.
#[pyfunction]
#[pyo3(signature = (out, observed, confidence = 0.95, by = None))]
fn correspond(
    py: Python<'_>,
    out: PathBuf,
    observed: String,
    confidence: f64,
    by: Option<String>,
) -> PyResult<ArrowTable> {
    let registry = registry();
    let CorrespondenceTable { rows, ks, .. } =
        py.detach(|| correspondence_table(&registry, &out, &observed, confidence, by.as_deref())).map_err(lift)?;
    let parts: Vec<String> = rows.iter().map(|r| r.part.clone().unwrap_or_default()).collect();
    let mut metric: Vec<String> = rows.iter().map(|r| r.metric.clone()).collect();
    let mut observed_v: Vec<Option<f64>> = rows.iter().map(|r| Some(r.observed)).collect();
    let mut mean: Vec<Option<f64>> = rows.iter().map(|r| Some(r.simulated_mean)).collect();
    let mut low: Vec<Option<f64>> = rows.iter().map(|r| r.ci.map(|c| c.0)).collect();
    let mut high: Vec<Option<f64>> = rows.iter().map(|r| r.ci.map(|c| c.1)).collect();
    let mut error: Vec<Option<f64>> = rows.iter().map(|r| Some(r.relative_error)).collect();
    let mut inside: Vec<Option<bool>> = rows.iter().map(|r| r.inside).collect();
    // As correspondence.csv writes them: the distance as the simulated value and
    // its interval, against an observed 0.
    for (name, d) in ks {
        metric.push(format!("ks_{name}"));
        observed_v.push(Some(0.0));
        mean.push(Some(d));
        low.push(Some(d));
        high.push(Some(d));
        error.push(None);
        inside.push(None);
    }
    let mut columns = vec![
        ("metric", Column::Text(metric)),
        ("observed", Column::Number(observed_v)),
        ("simulated_mean", Column::Number(mean)),
        ("ci_low", Column::Number(low)),
        ("ci_high", Column::Number(high)),
        ("relative_error", Column::Number(error)),
        ("inside", Column::Flag(inside)),
    ];
    // Part by part, the part's column first (as correspondence.csv).
    if let Some(kind) = by {
        let kind: &'static str = if kind == "model" { "model" } else { "pool" };
        columns.insert(0, (kind, Column::Text(parts)));
    }
    Ok(ArrowTable::from_columns(columns))
}

/// Fits numeric keys of a scenario to measured files, as `infersim calibrate --out`;
/// returns whether a calibrated scenario.toml was written and the fitted values
/// (param, value, low, high, ci_low, ci_high, confidence, interval, identifiable),
/// as fitted.csv. Ctrl-C stops it (finished evaluations are journaled for resume)
/// and raises KeyboardInterrupt.
#[pyfunction]
#[pyo3(signature = (scenario, observed, params, out, log = Vec::new(), target = Vec::new(), distribution = Vec::new(), series = Vec::new(), reps = 3, seed = None, budget = 60, interval_reps = 40, confidence = 0.9, resume = false, progress = None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments, one per CLI option.
fn calibrate(
    py: Python<'_>,
    scenario: &Bound<'_, PyAny>,
    observed: Vec<String>,
    params: Vec<String>,
    out: PathBuf,
    log: Vec<String>,
    target: Vec<String>,
    distribution: Vec<String>,
    series: Vec<String>,
    reps: u64,
    seed: Option<u64>,
    budget: usize,
    interval_reps: u64,
    confidence: f64,
    resume: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(bool, ArrowTable)> {
    let objective = match (target.is_empty(), distribution.is_empty(), series.is_empty()) {
        (false, true, true) => Objective::Metrics(target),
        (true, false, true) => Objective::Distribution(distribution),
        (true, true, false) => Objective::Series(series),
        _ => return Err(scenario_error("give exactly one of target, distribution or series".into(), None, None)),
    };
    let request = Request {
        scenario: scenario_of(scenario)?,
        observed,
        params,
        log,
        objective,
        reps,
        seed,
        budget,
        interval_reps,
        confidence,
        out: Some(out),
        resume,
    };
    let bar = indicatif::ProgressBar::hidden();
    let cancel = Interrupt::new();
    let report = run_in_background(py, &cancel, progress, &|| (bar.position(), budget as u64), || {
        run_calibration(&request, bar.clone(), &cancel)
    })?;
    let report = match report {
        Err(CalibrateError::Interrupted) => return Err(run_error("interrupted: finished evaluations are kept")),
        other => other.map_err(lift)?,
    };
    // As fitted.csv has them.
    let rows = fitted_rows(&report.params, &report.fitted);
    let number = |f: &dyn Fn(&FittedRow) -> Option<f64>| Column::Number(rows.iter().map(f).collect());
    let fitted = ArrowTable::from_columns(vec![
        ("param", Column::Text(rows.iter().map(|r| r.param.clone()).collect())),
        ("value", number(&|r| r.value)),
        ("low", number(&|r| Some(r.low))),
        ("high", number(&|r| Some(r.high))),
        ("ci_low", number(&|r| r.ci.map(|c| c.0))),
        ("ci_high", number(&|r| r.ci.map(|c| c.1))),
        ("confidence", number(&|r| r.confidence)),
        ("interval", Column::Text(rows.iter().map(|r| r.interval.to_string()).collect())),
        ("identifiable", Column::Flag(rows.iter().map(|r| Some(r.identifiable)).collect())),
    ]);
    Ok((report.calibrated, fitted))
}

/// Runs the `infersim` command line with `argv` (the program's name first) and
/// returns its exit code: what `python -m infersim` and the `infersim` script do.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| infersim::cli::exit_code_of(registry(), argv))
}

/// infersim's version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _infersim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyScenario>()?;
    m.add_class::<ArrowTable>()?;
    m.add("ScenarioError", py.get_type::<ScenarioError>())?;
    m.add("RunError", py.get_type::<RunError>())?;
    m.add_function(wrap_pyfunction!(scenarios, m)?)?;
    m.add_function(wrap_pyfunction!(default_scenario, m)?)?;
    m.add_function(wrap_pyfunction!(run_batch, m)?)?;
    m.add_function(wrap_pyfunction!(read_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(correspond, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
