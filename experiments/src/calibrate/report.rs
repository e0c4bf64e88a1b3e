//! What a calibration writes (every evaluation, the fitted values with their intervals,
//! charts) and the sim-to-real table of a finished batch.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use polars::prelude::*;

use super::simulated::{Simulated, pooled};
use super::{CalibrateError, Fitted, Interval, Observed, Param, failed, input, ks_distance};
use crate::plot::{Line, line_chart, scatter_chart};

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

/// One fitted parameter as fitted.csv and the Python package give it.
#[derive(Clone, Debug, PartialEq)]
pub struct FittedRow {
    /// The dotted key.
    pub param: String,
    /// The fitted value; none when the objective does not move with it.
    pub value: Option<f64>,
    /// The search's lower bound.
    pub low: f64,
    /// The search's upper bound.
    pub high: f64,
    /// The interval, when there is one.
    pub ci: Option<(f64, f64)>,
    /// The interval's confidence, when there is noise to set one by.
    pub confidence: Option<f64>,
    /// How the interval came out ([`Interval::status`]).
    pub interval: &'static str,
    /// Whether the objective moves with it.
    pub identifiable: bool,
}

/// Per parameter, its value, bounds, interval, the interval's confidence and how it
/// came out.
pub fn fitted_rows(params: &[Param], fitted: &Fitted) -> Vec<FittedRow> {
    let best = &fitted.evaluations[fitted.best];
    let confidence = fitted.noise.as_ref().map(|n| n.confidence);
    params
        .iter()
        .zip(&fitted.intervals)
        .zip(&best.values)
        .map(|((p, interval), &value)| FittedRow {
            param: p.key.clone(),
            value: (*interval != Interval::Flat).then_some(value),
            low: p.low,
            high: p.high,
            ci: match interval {
                Interval::Range { low, high, .. } => Some((*low, *high)),
                _ => None,
            },
            confidence,
            interval: interval.status(),
            identifiable: *interval != Interval::Flat,
        })
        .collect()
}

/// fitted.csv: [`fitted_rows`], empty cells where a value is none.
pub fn fitted_csv(params: &[Param], fitted: &Fitted) -> Result<String, CalibrateError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = ["param", "value", "low", "high", "ci_low", "ci_high", "confidence", "interval", "identifiable"];
    w.write_record(header).map_err(failed)?;
    let cell = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
    for r in fitted_rows(params, fitted) {
        let row = [
            r.param,
            cell(r.value),
            r.low.to_string(),
            r.high.to_string(),
            cell(r.ci.map(|c| c.0)),
            cell(r.ci.map(|c| c.1)),
            cell(r.confidence),
            r.interval.to_string(),
            r.identifiable.to_string(),
        ];
        w.write_record(row).map_err(failed)?;
    }
    String::from_utf8(w.into_inner().map_err(failed)?).map_err(failed)
}

/// Charts of a calibration: the objective against each parameter (every evaluation),
/// with the interval's threshold when there is one.
pub fn plot_calibration(dir: &Path, params: &[Param], fitted: &Fitted) -> Result<Vec<PathBuf>, CalibrateError> {
    let mut written = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let mut points: Vec<(f64, f64, f64, f64)> =
            fitted.evaluations.iter().map(|e| (e.values[i], e.objective, e.objective, e.objective)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lines = [Line { label: "evaluations".into(), points }];
        let threshold: Vec<(String, f64)> = fitted
            .noise
            .iter()
            .map(|n| (format!(" {:.0}% threshold: the interval lies below", n.confidence * 100.0), n.threshold))
            .collect();
        let stem = format!("objective_{}", p.key.replace('.', "_"));
        let title = format!("objective against {}", p.key);
        written.extend(scatter_chart(dir, &stem, &title, (&p.key, "objective"), &lines, &threshold).map_err(failed)?);
    }
    Ok(written)
}

/// Draws observed against simulated CDFs of the request columns `columns`.
pub fn plot_distributions(
    dir: &Path,
    observed: &Observed,
    simulated: &Simulated,
    columns: &[String],
) -> Result<Vec<PathBuf>, CalibrateError> {
    let cdf = |label: &str, sorted: &[f64]| {
        let n = sorted.len() as f64;
        let step = (sorted.len() / 400).max(1);
        let points = sorted.iter().enumerate().step_by(step).map(|(i, &x)| {
            let y = (i + 1) as f64 / n;
            (x, y, y, y)
        });
        Line { label: label.into(), points: points.collect() }
    };
    let mut written = Vec::new();
    for name in columns {
        let Some(real) = observed.sample(name) else { continue };
        let sim = pooled(simulated, name);
        if sim.is_empty() || real.is_empty() {
            continue;
        }
        let mut real = real.to_vec();
        real.sort_by(f64::total_cmp);
        let lines = [cdf("observed", &real), cdf("simulated", &sim)];
        let title = format!("{name}: simulated and observed");
        let x_label = crate::plot::axis_label(name);
        written.extend(
            line_chart(dir, &format!("cdf_{name}"), &title, &x_label, "share of requests", &lines).map_err(failed)?,
        );
    }
    Ok(written)
}

/// One row of the sim-to-real table.
#[derive(Clone, Debug, PartialEq)]
pub struct Correspondence {
    /// The pool or model the row compares (`correspond --by`); none for the whole.
    pub part: Option<String>,
    /// Metric name (as in replications.parquet).
    pub metric: String,
    /// The observed value.
    pub observed: f64,
    /// Mean over replications.
    pub simulated_mean: f64,
    /// Confidence interval of the mean; `None` from one replication.
    pub ci: Option<(f64, f64)>,
    /// (simulated - observed) / observed.
    pub relative_error: f64,
    /// Whether the observed value lies within the replications' range; none from one
    /// replication (a range of one value says nothing).
    pub inside: Option<bool>,
}

fn column_f64(df: &DataFrame, name: &str) -> Option<Vec<Option<f64>>> {
    let c = df.column(name).ok()?.cast(&polars::prelude::DataType::Float64).ok()?;
    let ca = c.f64().ok()?;
    Some((0..ca.len()).map(|i| ca.get(i)).collect())
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
        let ci =
            infersim_engine::stats::ConfidenceInterval::from_samples(&values, confidence).ok().map(|c| (c.low, c.high));
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let tolerance = 1e-9 * real.abs().max(1e-12);
        rows.push(Correspondence {
            part: None,
            metric: metric.clone(),
            observed: *real,
            simulated_mean: mean,
            ci,
            relative_error: if *real != 0.0 { (mean - real) / real } else { mean - real },
            inside: (values.len() > 1).then_some(*real >= lo - tolerance && *real <= hi + tolerance),
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
    let file = fs::File::open(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    ParquetReader::new(file).finish().map_err(|e| failed(format!("{}: {e}", path.display())))
}

/// The table as CSV (columns metric, observed, simulated_mean, ci_low, ci_high,
/// relative_error, inside; the interval and inside empty from one replication), then a row per
/// KS distance.
pub fn correspondence_csv(
    rows: &[Correspondence],
    ks: &[(String, f64)],
    by: Option<&str>,
) -> Result<String, CalibrateError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = ["metric", "observed", "simulated_mean", "ci_low", "ci_high", "relative_error", "inside"];
    // With parts (`correspond --by pool`), their column comes first.
    let by = by.map(|kind| [kind]);
    w.write_record(by.iter().flatten().chain(&header)).map_err(failed)?;
    for r in rows {
        let (lo, hi) = r.ci.map_or((String::new(), String::new()), |(a, b)| (a.to_string(), b.to_string()));
        let part = by.map(|_| r.part.clone().unwrap_or_default());
        let row = [
            r.metric.clone(),
            r.observed.to_string(),
            r.simulated_mean.to_string(),
            lo,
            hi,
            r.relative_error.to_string(),
            r.inside.map_or(String::new(), |inside| inside.to_string()),
        ];
        w.write_record(part.iter().chain(&row)).map_err(failed)?;
    }
    for (name, d) in ks {
        let d = d.to_string();
        let row = [format!("ks_{name}"), "0".into(), d.clone(), d.clone(), d, String::new(), String::new()];
        let part = by.map(|_| String::new());
        w.write_record(part.iter().chain(&row)).map_err(failed)?;
    }
    String::from_utf8(w.into_inner().map_err(failed)?).map_err(failed)
}

/// KS distances of the request columns of a batch's traces (point 0, replications
/// `0..reps`) against the observed samples.
pub fn trace_ks(out: &Path, reps: u64, observed: &Observed) -> Vec<(String, f64)> {
    let mut traces = Vec::new();
    for r in 0..reps {
        let path = crate::trace::trace_dir(out, 0, r).join("requests.parquet");
        let Ok(table) = crate::inputs::read_parquet(&path.display().to_string()) else { return Vec::new() };
        traces.push(Observed::from_trace(&table));
    }
    let simulated = Simulated { metrics: Vec::new(), traces };
    let mut result = Vec::new();
    for (name, real) in &observed.samples {
        let sim = pooled(&simulated, name);
        if sim.is_empty() {
            continue;
        }
        let mut real = real.clone();
        real.sort_by(f64::total_cmp);
        result.push((name.clone(), ks_distance(&sim, &real)));
    }
    result
}
