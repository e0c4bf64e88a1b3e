//! `infersim compare` (two batches, replication by replication, with gates) and
//! `infersim plot` (a batch's charts).

use std::path::{Path, PathBuf};

use super::CliError;
use super::print::{fmt_value, signed};
use crate::analysis::{ComparisonRow, Gate, compare as compare_batches, scan_replications};
use crate::batch::{BatchStatus, Manifest, read_manifest, summarize_dirs};
use crate::lock::DirLock;
use crate::plot::{plot_batch, plot_parts};
use crate::registry::Registry;
use crate::scenario::differences;

/// A scenario's name without the mark `--set` adds.
fn scenario_name(name: &str) -> &str {
    name.strip_suffix(" (with --set)").unwrap_or(name)
}

/// The manifest of a complete, unsharded batch in `dir`.
fn complete_manifest(dir: &Path) -> Result<Manifest, CliError> {
    let bad = |problem: String| CliError::NotABatch { dir: dir.to_path_buf(), problem };
    if !dir.is_dir() {
        return Err(bad("no such directory".into()));
    }
    // A directory without a readable manifest is bad input, not a failed run.
    let m = read_manifest(dir).map_err(|e| bad(format!("not an infersim output ({e})")))?;
    if m.status != BatchStatus::Complete || m.shard[1] != 1 {
        return Err(bad(
            "not a complete, unsharded batch (merge shards with `infersim analyze DIR... --out MERGED` first)".into(),
        ));
    }
    Ok(m)
}

/// Two complete batches compared replication by replication: what `infersim compare`
/// prints, for other front ends.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The baseline's manifest.
    pub base: Manifest,
    /// The candidate's manifest.
    pub candidate: Manifest,
    /// The metrics both batches report, in the baseline's order.
    pub metrics: Vec<String>,
    /// A row per (point, metric).
    pub rows: Vec<ComparisonRow>,
}

/// Compares the complete, unsharded batches in `base` and `candidate` (bad input when
/// either is not one).
pub fn comparison(base: &Path, candidate: &Path, confidence: f64) -> Result<Comparison, CliError> {
    let (bm, cm) = (complete_manifest(base)?, complete_manifest(candidate)?);
    let metrics: Vec<String> = bm.metrics.iter().filter(|m| cm.metrics.contains(m)).cloned().collect();
    let rows = compare_batches(
        scan_replications(&[base.to_path_buf()])?,
        scan_replications(&[candidate.to_path_buf()])?,
        &metrics,
        confidence,
    )?;
    Ok(Comparison { base: bm, candidate: cm, metrics, rows })
}

/// One part's comparison: its name (empty for the whole batch) and its rows.
pub type Part = (String, Vec<ComparisonRow>);

/// A batch's table of parts of kind `by` (`pool`: pools.parquet; `model`:
/// models.parquet).
pub(super) fn part_table(dir: &Path, by: &str) -> Result<polars::prelude::DataFrame, CliError> {
    use polars::prelude::*;
    let file = format!("{by}s.parquet");
    let path = dir.join(&file);
    if !path.is_file() {
        return Err(CliError::Usage(format!(
            "--by {by}: {} has no {file} (only fleets of several pools or models have one; `pool` and `model` are the kinds)",
            dir.display()
        )));
    }
    let text = path.to_string_lossy().into_owned();
    LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default())
        .and_then(LazyFrame::collect)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// The parts a part table names, in order of first appearance.
pub(super) fn part_names(df: &polars::prelude::DataFrame, by: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Ok(column) = df.column(by).and_then(|c| c.str().cloned()) {
        for name in column.iter().flatten() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// The batches compared part by part (`by`: `pool` or `model`): a (name, rows) per
/// part both have, in the baseline's order, and the metrics both parts' tables have.
pub fn comparison_by(
    base: &Path,
    candidate: &Path,
    by: &str,
    confidence: f64,
) -> Result<(Vec<String>, Vec<Part>), CliError> {
    use polars::prelude::*;
    let (b, c) = (part_table(base, by)?, part_table(candidate, by)?);
    let ids = ["point", "replication", "seed", by];
    let names_of = |df: &DataFrame| part_names(df, by);
    let candidate_names = names_of(&c);
    let columns = |df: &DataFrame| -> Vec<String> {
        df.get_column_names().iter().map(|n| n.to_string()).filter(|n| !ids.contains(&n.as_str())).collect()
    };
    let candidate_columns = columns(&c);
    let metrics: Vec<String> = columns(&b).into_iter().filter(|m| candidate_columns.contains(m)).collect();
    let mut parts = Vec::new();
    for name in names_of(&b).into_iter().filter(|n| candidate_names.contains(n)) {
        let only = |df: &DataFrame| df.clone().lazy().filter(col(by).eq(lit(name.clone())));
        parts.push((name.clone(), compare_batches(only(&b), only(&c), &metrics, confidence)?));
    }
    Ok((metrics, parts))
}

/// Compares the batches (part by part with `by`); 1 when a gate fails.
pub(super) fn compare(
    base: &Path,
    candidate: &Path,
    fail_on: &[String],
    confidence: f64,
    by: Option<&str>,
) -> Result<u8, CliError> {
    let gates: Vec<Gate> = fail_on.iter().map(|g| Gate::parse(g).map_err(CliError::Usage)).collect::<Result<_, _>>()?;
    let Comparison { base: bm, candidate: cm, metrics, rows } = comparison(base, candidate, confidence)?;
    let (metrics, parts) = match by {
        None => (metrics, vec![(String::new(), rows)]),
        Some(kind) => comparison_by(base, candidate, kind, confidence)?,
    };
    if let Some(g) = gates.iter().find(|g| !metrics.contains(&g.metric)) {
        let have = metrics.join(", ");
        return Err(CliError::Usage(format!(
            "--fail-on {}: no such metric in both batches; they have: {have}",
            g.metric
        )));
    }
    let crn = bm.seed == cm.seed;
    if bm.world != cm.world || scenario_name(&bm.scenario) != scenario_name(&cm.scenario) {
        eprintln!(
            "infersim: warning: the batches are of different scenarios ({} and {}): their metrics may not mean the same",
            bm.scenario, cm.scenario
        );
    }
    say!("compare {} -> {}", base.display(), candidate.display());
    let differences = differences(&bm.scenario_toml, &cm.scenario_toml);
    if !differences.is_empty() {
        let shown: Vec<&str> = differences.iter().take(6).map(String::as_str).collect();
        let more = differences.len().saturating_sub(shown.len());
        say!(
            "differences: {}{}",
            shown.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        );
    }
    say!(
        "paired by (point, replication); {}",
        if crn { "same seed: common random numbers" } else { "different seeds: independent pairs, wider intervals" }
    );
    let mut failures = Vec::new();
    for (name, rows) in &parts {
        if let Some(kind) = by {
            say!("");
            say!("{kind} {name}");
        }
        print_rows(rows, bm.point_count() > 1, confidence);
        let mut failed = gate_failures(&gates, rows);
        if by.is_some() {
            failed.iter_mut().for_each(|f| *f = format!("{name}: {f}"));
        }
        failures.extend(failed);
    }
    say!("");
    say!("* the interval of the difference excludes zero");
    if failures.is_empty() {
        if !gates.is_empty() {
            say!("gates passed: {}", fail_on.join(", "));
        }
        Ok(0)
    } else {
        for f in &failures {
            eprintln!("infersim: gate failed: {f}");
        }
        Ok(1)
    }
}

/// The comparison, a block per point (headed by the point where there are several).
fn print_rows(rows: &[ComparisonRow], several_points: bool, confidence: f64) {
    let mut current = None;
    let width = rows.iter().map(|r| r.metric.len()).max().unwrap_or(6).max(6);
    for r in rows {
        if current != Some(r.point) {
            current = Some(r.point);
            say!("");
            if several_points {
                say!("point {}", r.point);
            }
            say!(
                "{:<width$} {:>5} {:>12} {:>12} {:>34} {:>9}",
                "metric",
                "pairs",
                "base",
                "candidate",
                format!("difference [{:.0}% CI]", confidence * 100.0),
                "change"
            );
        }
        let diff = match r.difference {
            Some(ci) => format!("{} [{}, {}]", signed(ci.mean), signed(ci.low), signed(ci.high)),
            None => "(needs 2 pairs)".into(),
        };
        let change = r.relative_change().map_or(String::new(), |c| format!("{:+.2}%", c * 100.0));
        let mark = if r.significant() { " *" } else { "" };
        say!(
            "{:<width$} {:>5} {:>12} {:>12} {:>34} {:>9}{mark}",
            r.metric,
            r.pairs,
            fmt_value(r.base_mean),
            fmt_value(r.candidate_mean),
            diff,
            change
        );
    }
}

/// What each gate that fails says: the metric, the point, the change and what was
/// allowed.
fn gate_failures(gates: &[Gate], rows: &[ComparisonRow]) -> Vec<String> {
    gates
        .iter()
        .flat_map(|g| {
            rows.iter().filter(move |r| r.metric == g.metric && g.fails(r)).map(move |r| {
                format!(
                    "{} at point {}: {} (allowed {}{:.2}%)",
                    r.metric,
                    r.point,
                    r.relative_change().map_or("-".into(), |c| format!("{:+.2}%", c * 100.0)),
                    if g.direction > 0.0 { "+" } else { "-" },
                    g.tolerance * 100.0
                )
            })
        })
        .collect()
}

/// Draws the batch's charts with its world's defaults.
pub(super) fn plot(
    registry: &Registry,
    dir: &Path,
    to: Option<PathBuf>,
    confidence: f64,
    x: Option<&str>,
    by: Option<&str>,
) -> Result<u8, CliError> {
    let manifest = complete_manifest(dir)?;
    let _lock = DirLock::acquire(dir, "plot")?;
    let target = to.unwrap_or_else(|| dir.join("plots"));
    let written = match by {
        Some(kind) => plot_parts(dir, &manifest, kind, &target, confidence, x)?,
        None => {
            let summary = summarize_dirs(&[dir.to_path_buf()], &manifest, confidence)?;
            plot_batch(dir, &manifest, &summary, &target, confidence, x, registry)?
        }
    };
    if written.is_empty() {
        match by {
            Some(kind) => say!("nothing to plot by {kind}: part charts need a [sweep] for their x axis"),
            None => say!("nothing to plot: run with --trace timeseries or --trace requests, or with a [sweep]"),
        }
    }
    for path in written {
        say!("{}", path.display());
    }
    Ok(0)
}
