//! `infersim calibrate` (fit a scenario's keys to measurements) and `infersim
//! correspond` (a finished batch beside measurements).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::print::fmt_value;
use super::{CliError, install_interrupt, load};
use crate::calibrate::run::{Report, Request};
use crate::calibrate::{
    CalibrateError, Correspondence, Interval, Objective, Observed, correspondence, correspondence_csv,
    read_replications, trace_ks,
};
use crate::inputs::FileInputs;
use crate::lock::DirLock;
use crate::registry::Registry;

/// Fit numeric keys of a scenario to measurements.
#[derive(clap::Args)]
pub(super) struct CalibrateArgs {
    /// A built-in scenario name or a path to a TOML file.
    scenario: String,
    /// A measured file: requests (CSV, Parquet, JSON Lines; vLLM's per-request
    /// records as they are) or a time series with t_h. Repeatable.
    #[arg(long, required = true, value_name = "FILE")]
    observed: Vec<String>,
    /// A key to fit and its bounds, KEY=LOW..HIGH. Repeatable.
    #[arg(long = "param", required = true, value_name = "KEY=LOW..HIGH")]
    params: Vec<String>,
    /// Search this --param on a log scale. Repeatable.
    #[arg(long = "log", value_name = "KEY")]
    log: Vec<String>,
    /// Metrics to match (relative error), e.g. ttft_mean_s,tpot_mean_s.
    #[arg(long, value_delimiter = ',', value_name = "METRIC")]
    target: Vec<String>,
    /// Request columns whose distributions to match (Kolmogorov-Smirnov), e.g. ttft_s.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    distribution: Vec<String>,
    /// Time-series columns to match at the observed t_h (squared error), e.g. loss.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    series: Vec<String>,
    /// Replications per evaluation (the same seeds at every evaluation).
    #[arg(long, default_value_t = 3)]
    reps: u64,
    /// Master seed (default: the scenario's simulation.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Most evaluations in all (the search's and the intervals'): a hard cap.
    #[arg(long, default_value_t = 60)]
    budget: usize,
    /// Replications at the optimum taken as observed data, for the intervals'
    /// threshold.
    #[arg(long, default_value_t = 40)]
    interval_reps: u64,
    /// Coverage of the intervals.
    #[arg(long, default_value_t = 0.9)]
    confidence: f64,
    /// Output directory (default: out/calibrate-<scenario>-<date>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a scenario key first, as for run.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the interrupted calibration in --out: evaluations it finished are not
    /// run again.
    #[arg(long, requires = "out")]
    resume: bool,
}

/// Calibrates and prints the fitted values; 130 when interrupted.
pub(super) fn calibrate(registry: &Registry, a: CalibrateArgs) -> Result<u8, CliError> {
    let scenario = load(registry, &a.scenario, &a.overrides)?;
    let objective = match (a.target.is_empty(), a.distribution.is_empty(), a.series.is_empty()) {
        (false, true, true) => Objective::Metrics(a.target.clone()),
        (true, false, true) => Objective::Distribution(a.distribution.clone()),
        (true, true, false) => Objective::Series(a.series.clone()),
        _ => {
            return Err(CalibrateError::Input("give exactly one of --target, --distribution or --series".into()).into());
        }
    };
    let request = Request {
        scenario,
        observed: a.observed.clone(),
        params: a.params.clone(),
        log: a.log.clone(),
        objective,
        reps: a.reps,
        seed: a.seed,
        budget: a.budget,
        interval_reps: a.interval_reps,
        confidence: a.confidence,
        out: a.out.clone(),
        resume: a.resume,
    };
    let progress = match std::io::stderr().is_terminal() {
        true => ProgressBar::new(a.budget as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} evaluations  {elapsed}")
                .expect("a valid progress template"),
        ),
        false => ProgressBar::hidden(),
    };
    say!(
        "infersim {} | calibrate {} | {} parameter(s), budget {} evaluations x {} replications",
        env!("CARGO_PKG_VERSION"),
        request.scenario.source_name,
        a.params.len(),
        a.budget,
        a.reps
    );
    let cancel = install_interrupt();
    let report = match crate::calibrate::run::run(&request, progress, &cancel) {
        Err(CalibrateError::Interrupted) => {
            let out = request.out.clone().map_or_else(|| "DIR".into(), |o| o.display().to_string());
            say!("interrupted: finished evaluations are kept; continue with the same command and --out {out} --resume");
            return Ok(130);
        }
        other => other?,
    };
    print_fitted(&report, a.confidence);
    say!("output: {}", report.out.display());
    Ok(0)
}

/// The fitted values with their intervals, the threshold and the fit.
fn print_fitted(report: &Report, confidence: f64) {
    let best = &report.fitted.evaluations[report.fitted.best];
    for (i, p) in report.params.iter().enumerate() {
        let value = fmt_value(best.values[i]);
        match &report.fitted.intervals[i] {
            Interval::Flat => say!(
                "{}: the objective does not change with it within [{}, {}]: it does not influence the target, so no value is fitted",
                p.key,
                fmt_value(p.low),
                fmt_value(p.high)
            ),
            Interval::NoNoise => say!(
                "{} = {value}  (no interval: every replication gives the same output, so there is no noise to set one by)",
                p.key
            ),
            Interval::Misfit => say!(
                "{} = {value}  (no interval: the observed data are farther from the model at its best than its own replications are)",
                p.key
            ),
            Interval::Range { low, high, low_open, high_open } => say!(
                "{} = {value}  ({:.0}% interval {}{} .. {}{})",
                p.key,
                confidence * 100.0,
                if *low_open { "<= " } else { "" },
                fmt_value(*low),
                if *high_open { ">= " } else { "" },
                fmt_value(*high)
            ),
        }
    }
    if let Some(noise) = &report.fitted.noise {
        say!(
            "threshold {} ({:.0}% quantile of the objective of {} replications at the optimum taken as observed data)",
            fmt_value(noise.threshold),
            noise.confidence * 100.0,
            noise.scores.len()
        );
    }
    say!("objective {} after {} evaluations", fmt_value(best.objective), report.fitted.evaluations.len());
    for (name, e) in &best.errors {
        say!("  {name}: {e:+.4}");
    }
}

/// A finished batch beside measurements: what `infersim correspond` prints.
#[derive(Clone, Debug)]
pub struct CorrespondenceTable {
    /// A row per observed metric the batch reports.
    pub rows: Vec<Correspondence>,
    /// The Kolmogorov-Smirnov distance of each observed request column the batch
    /// traced.
    pub ks: Vec<(String, f64)>,
    /// Where the table was written (OUT/correspondence.csv, or
    /// OUT/correspondence_by_pool.csv part by part).
    pub path: PathBuf,
}

/// The sim-to-real table of the batch in `out` against the measured file `observed`,
/// written to its correspondence.csv. With `by` (`pool` or `model`), part by part (to
/// correspondence_by_pool.csv or _by_model.csv, beside the whole batch's table): the
/// observed file's rows are grouped by its column of that name, and each group is
/// compared with that part's rows of the batch's pools.parquet or models.parquet
/// (request columns' KS distances are the whole batch's only, so none are given).
pub fn correspondence_table(
    registry: &Registry,
    out: &Path,
    observed: &str,
    confidence: f64,
    by: Option<&str>,
) -> Result<CorrespondenceTable, CliError> {
    if let Some(kind) = by.filter(|k| !["pool", "model"].contains(k)) {
        return Err(CliError::Usage(format!("--by {kind}: the kinds of parts are `pool` and `model`")));
    }
    let replications = read_replications(out)?;
    let _lock = DirLock::acquire(out, "correspond")?;
    let manifest = crate::batch::read_manifest(out)?;
    let world = registry.get(&manifest.world).ok_or_else(|| CliError::NotABatch {
        dir: out.to_path_buf(),
        problem: format!("a batch of the world `{}`, which this program does not know", manifest.world),
    })?;
    let inputs = FileInputs::new(Path::new("."), registry.data());
    let (rows, ks, observed) = match by {
        Some(kind) => {
            let rows = parts_correspondence(out, observed, kind, &inputs, world.as_ref(), confidence)?;
            (rows, Vec::new(), None)
        }
        None => {
            let observed = Observed::read(observed, &inputs, world.as_ref())?;
            let rows = correspondence(&replications, &observed, confidence);
            let ks = trace_ks(out, replications.height() as u64, &observed);
            (rows, ks, Some(observed))
        }
    };
    if rows.is_empty() && ks.is_empty() {
        let metrics = observed
            .map_or("per part".to_string(), |o| o.metrics.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", "));
        return Err(CliError::Calibrate(CalibrateError::Input(format!(
            "{}: reports none of the observed metrics ({metrics})",
            out.display()
        ))));
    }
    let name = by.map_or("correspondence.csv".to_string(), |kind| format!("correspondence_by_{kind}.csv"));
    let (path, tmp) = (out.join(&name), out.join(format!("{name}.tmp")));
    let write = |error| CliError::Write { path: path.clone(), error };
    std::fs::write(&tmp, correspondence_csv(&rows, &ks, by)?).map_err(write)?;
    std::fs::rename(&tmp, &path).map_err(write)?;
    Ok(CorrespondenceTable { rows, ks, path })
}

/// `correspond --by KIND`: each part named in the observed file's `KIND` column beside
/// the batch's rows of that part.
fn parts_correspondence(
    out: &Path,
    observed: &str,
    kind: &str,
    inputs: &FileInputs,
    world: &dyn crate::registry::AnyWorld,
    confidence: f64,
) -> Result<Vec<Correspondence>, CliError> {
    use polars::prelude::*;
    let parts = super::compare::part_table(out, kind)?;
    let input = |message: String| CliError::Calibrate(CalibrateError::Input(message));
    let table =
        infersim_agents::input::Inputs::table(inputs, "--observed", observed).map_err(|e| input(e.to_string()))?;
    let column = table.column(kind).ok_or_else(|| {
        input(format!(
            "--observed {observed}: no `{kind}` column to group its rows by (correspond --by {kind}); columns: {}",
            table.names().join(", ")
        ))
    })?;
    let known = super::compare::part_names(&parts, kind);
    let mut names: Vec<String> = Vec::new();
    for row in 0..table.rows() {
        if let Some(name) = table.text(column, row).filter(|n| !n.is_empty() && !names.contains(n)) {
            names.push(name);
        }
    }
    let mut rows = Vec::new();
    for name in names {
        if !known.contains(&name) {
            return Err(input(format!(
                "--observed {observed}: {kind} `{name}` is not one of the batch's ({})",
                known.join(", ")
            )));
        }
        let subset = table.rows_where(|r| table.text(column, r).as_deref() == Some(name.as_str()));
        let part_observed = Observed::from_table(&subset, world);
        let part = parts
            .clone()
            .lazy()
            .filter(col(kind).eq(lit(name.as_str())))
            .collect()
            .map_err(|e| input(format!("{}: {e}", out.display())))?;
        rows.extend(correspondence(&part, &part_observed, confidence).into_iter().map(|mut r| {
            r.part = Some(name.clone());
            r
        }));
    }
    Ok(rows)
}

/// Prints the sim-to-real table of the batch in `out`, written to its correspondence.csv.
pub(super) fn correspond(
    registry: &Registry,
    out: &Path,
    observed: &str,
    confidence: f64,
    by: Option<&str>,
) -> Result<u8, CliError> {
    let CorrespondenceTable { rows, ks, path } = correspondence_table(registry, out, observed, confidence, by)?;
    let width = rows.iter().map(|r| r.metric.len()).max().unwrap_or(6).max(6);
    say!(
        "{:<width$} {:>12} {:>12} {:>27} {:>9} {:>7}",
        "metric",
        "observed",
        "simulated",
        format!("{:.0}% CI", confidence * 100.0),
        "error",
        "inside"
    );
    let mut part = None;
    for r in &rows {
        if r.part.is_some() && r.part != part {
            part = r.part.clone();
            say!("{} {}:", by.unwrap_or("part"), part.as_deref().unwrap_or_default());
        }
        let ci =
            r.ci.map_or("(needs 2 replications)".into(), |(lo, hi)| format!("[{}, {}]", fmt_value(lo), fmt_value(hi)));
        say!(
            "{:<width$} {:>12} {:>12} {:>27} {:>+8.1}% {:>7}",
            r.metric,
            fmt_value(r.observed),
            fmt_value(r.simulated_mean),
            ci,
            r.relative_error * 100.0,
            r.inside.map_or("-", |inside| if inside { "yes" } else { "no" })
        );
    }
    for (name, d) in &ks {
        say!("KS distance of {name}: {d:.4}");
    }
    say!("written: {}", path.display());
    Ok(0)
}
