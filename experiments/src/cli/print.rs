//! How results read on a terminal: numbers, the summary table, notes after it.

use infersim_agents::world::{Estimate, Note};
use polars::prelude::{AnyValue, DataFrame};

use crate::analysis::cell;
use crate::batch::Manifest;
use crate::registry::Registry;
use crate::scenario::Scenario;

/// A number as the tables print it: whole numbers whole, very large and small ones
/// in scientific notation, others to five decimals.
pub fn fmt_value(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 1e6 || x.abs() < 1e-3 {
        format!("{x:.4e}")
    } else {
        format!("{x:.5}")
    }
}

/// A number of `column` in row `row`.
pub fn f64_at(df: &DataFrame, column: &str, row: usize) -> Option<f64> {
    match df.column(column).ok()?.get(row).ok()? {
        AnyValue::Float64(x) => Some(x),
        AnyValue::UInt64(x) => Some(x as f64),
        AnyValue::UInt32(x) => Some(f64::from(x)),
        _ => None,
    }
}

/// Prints the summary, a block per point, with analytic values where the model has them.
pub fn print_summary(summary: &DataFrame, manifest: &Manifest, scenario: Option<&Scenario>) {
    let confidence = f64_at(summary, "confidence", 0).unwrap_or(0.95);
    let metric_at =
        |row: usize| summary.column("metric").ok().and_then(|c| c.get(row).ok()).map(|v| cell(&v)).unwrap_or_default();
    let width = (0..summary.height()).map(|r| metric_at(r).len()).max().unwrap_or(6).max(6);
    let mut current = None;
    let mut theory = Vec::new();
    let mut measured: Option<(String, Vec<(String, f64)>)> = None;
    for row in 0..summary.height() {
        let point = f64_at(summary, "point", row).unwrap_or(0.0) as u32;
        if current != Some(point) {
            current = Some(point);
            let model = scenario.and_then(|s| s.point(point).ok()).map(|p| p.model);
            theory = model.as_ref().map(|m| m.analytic()).unwrap_or_default();
            measured = model.as_ref().and_then(|m| m.reference());
            say!("");
            if let Some((source, _)) = &measured {
                say!("measured: {source}");
            }
            let params: Vec<String> = manifest.point_params(point).iter().map(|(k, v)| format!("{k} = {v}")).collect();
            if !params.is_empty() {
                say!("point {point}: {}", params.join(", "));
            }
            let header = format!(
                "{:<width$} {:>4} {:>12} {:>27}",
                "metric",
                "n",
                "mean",
                format!("{:.0}% CI", confidence * 100.0)
            );
            if measured.is_some() {
                say!("{header} {:>12} {:>9}", "measured", "error")
            } else if theory.is_empty() {
                say!("{header}")
            } else {
                say!("{header} {:>12}", "analytic")
            }
        }
        let metric = metric_at(row);
        let n = f64_at(summary, "n", row).unwrap_or(0.0);
        let mean = f64_at(summary, "mean", row).map_or("-".into(), fmt_value);
        let ci = match (f64_at(summary, "ci_low", row), f64_at(summary, "ci_high", row)) {
            (Some(lo), Some(hi)) => format!("[{}, {}]", fmt_value(lo), fmt_value(hi)),
            _ if n == 0.0 => "(no replication has a value)".into(),
            _ => "(needs 2 replications)".into(),
        };
        let line = format!("{metric:<width$} {n:>4} {mean:>12} {ci:>27}");
        if let Some((_, values)) = &measured {
            match (values.iter().find(|(m, _)| *m == metric), f64_at(summary, "mean", row)) {
                (Some((_, real)), Some(sim)) if *real != 0.0 => {
                    say!("{line} {:>12} {:>+8.1}%", fmt_value(*real), (sim - real) / real * 100.0)
                }
                _ => say!("{line}"),
            }
        } else if theory.is_empty() {
            say!("{line}");
        } else {
            let exact = theory.iter().find(|(m, _)| *m == metric).map(|(_, v)| fmt_value(*v)).unwrap_or_default();
            say!("{line} {exact:>12}");
        }
    }
}

/// The estimates of a summary, for a world's notes.
pub fn estimates(summary: &DataFrame) -> Vec<Estimate> {
    let metric_at = |row: usize| summary.column("metric").ok().and_then(|c| c.get(row).ok()).map(|v| cell(&v));
    (0..summary.height())
        .filter_map(|row| {
            Some(Estimate {
                point: f64_at(summary, "point", row)? as u32,
                metric: metric_at(row)?,
                mean: f64_at(summary, "mean", row)?,
                replications: f64_at(summary, "n", row)? as u64,
            })
        })
        .collect()
}

/// What the batch's world says of its estimates: warnings on stderr, findings after
/// the table.
pub fn print_notes(summary: &DataFrame, manifest: &Manifest, registry: &Registry) {
    let Some(world) = registry.get(&manifest.world) else { return };
    for note in world.notes(&estimates(summary)) {
        match note {
            Note::Warning(text) => eprintln!("infersim: warning: {text}"),
            Note::Finding(text) => say!("{text}"),
        }
    }
}

/// One line per (series, point, replication): the batch-means interval and how it
/// was made.
pub fn print_batch_means(rows: &[crate::analysis::SeriesBatchMeans], confidence: f64) {
    if rows.is_empty() {
        return;
    }
    say!("");
    say!("batch means (one long run each; {:.0}% intervals over batch means):", confidence * 100.0);
    say!(
        "{:<14} {:>5} {:>4} {:>10} {:>9} {:>16} {:>12} {:>27} {:>6}",
        "series",
        "point",
        "rep",
        "observed",
        "deleted",
        "batches x size",
        "mean",
        "interval",
        "lag-1"
    );
    for r in rows {
        let ci = &r.result.ci;
        let lag1 = r.result.lag1_autocorrelation.map_or("-".into(), |x| format!("{x:.2}"));
        say!(
            "{:<14} {:>5} {:>4} {:>10} {:>9} {:>16} {:>12} {:>27} {:>6}",
            r.series,
            r.point,
            r.replication,
            r.observations,
            r.result.deleted,
            format!("{} x {}", ci.n, r.result.batch_size),
            fmt_value(ci.mean),
            format!("[{}, {}]", fmt_value(ci.low), fmt_value(ci.high)),
            lag1
        );
    }
    if rows.iter().any(|r| r.result.lag1_autocorrelation.is_some_and(|x| x > 0.2)) {
        say!("(lag-1 autocorrelation above 0.2: the batches are too short to be independent; use fewer batches)");
    }
}

/// A number with its sign.
pub fn signed(x: f64) -> String {
    if x >= 0.0 { format!("+{}", fmt_value(x)) } else { fmt_value(x) }
}
