//! Analysis of finished batches with polars: summaries with Student-t intervals per
//! (point, metric), merging any number of output directories (for example the shards
//! of one batch), and paired comparisons of two batches.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use infersim_engine::stats::student_t_quantile;
use polars::prelude::*;

use crate::output::{OutputError, write_atomically};

/// Failures of reading or analysing outputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// polars could not read or compute.
    #[error("{context}: {error}")]
    Polars {
        /// What was being done.
        context: String,
        /// The polars error.
        error: PolarsError,
    },
    /// The confidence level is outside (0, 1).
    #[error("--confidence {0} is outside (0, 1)")]
    BadConfidence(f64),
    /// Writing a result failed.
    #[error(transparent)]
    Output(#[from] OutputError),
}

fn polars_err(context: impl Into<String>) -> impl FnOnce(PolarsError) -> AnalysisError {
    let context = context.into();
    move |error| AnalysisError::Polars { context, error }
}

/// Reads `replications.parquet` of every directory as one lazy frame.
pub fn scan_replications(dirs: &[PathBuf]) -> Result<LazyFrame, AnalysisError> {
    let frames = dirs
        .iter()
        .map(|dir| {
            let path = dir.join("replications.parquet");
            let text = path.to_string_lossy().into_owned();
            LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default())
                .map_err(polars_err(format!("{}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    concat(frames, UnionArgs::default()).map_err(polars_err("merging replications"))
}

/// Per (point, metric): n (replications where the metric is defined), mean, std,
/// and the Student-t interval at `confidence`; points in order, metrics in column
/// order. `id_columns` are `point` and the swept parameters.
pub fn summarize(
    replications: LazyFrame,
    id_columns: &[String],
    metrics: &[String],
    confidence: f64,
) -> Result<DataFrame, AnalysisError> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(AnalysisError::BadConfidence(confidence));
    }
    let aggregates: Vec<Expr> = metrics
        .iter()
        .flat_map(|m| {
            [
                col(m.as_str()).count().cast(DataType::UInt64).alias(format!("{m}\u{1}n")),
                col(m.as_str()).mean().alias(format!("{m}\u{1}mean")),
                col(m.as_str()).std(1).alias(format!("{m}\u{1}std")),
            ]
        })
        .collect();
    let keys: Vec<Expr> = id_columns.iter().map(|c| col(c.as_str())).collect();
    // Sorting first fixes the summation order, so a batch summarised from its shards
    // gives the same bits as the unsharded batch.
    let wide = replications
        .sort(["point", "replication"], SortMultipleOptions::default())
        .group_by_stable(keys)
        .agg(aggregates)
        .sort(["point"], SortMultipleOptions::default().with_maintain_order(true))
        .collect()
        .map_err(polars_err("summarising replications"))?;
    // Reshape to one row per (point, metric), metrics in column order.
    let rows = wide.height() * metrics.len();
    let repeat: Vec<IdxSize> =
        (0..wide.height() as IdxSize).flat_map(|i| std::iter::repeat_n(i, metrics.len())).collect();
    let mut df = wide
        .select(id_columns.iter().map(String::as_str))
        .and_then(|ids| ids.take(&IdxCa::from_vec("row".into(), repeat)))
        .map_err(polars_err("reshaping the summary"))?;
    let (mut metric, mut n, mut mean, mut std, mut low, mut high) =
        (Vec::with_capacity(rows), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let t_level = 1.0 - (1.0 - confidence) / 2.0;
    let get = |name: String| wide.column(&name).cloned().map_err(polars_err(format!("reading {name}")));
    let per_metric: Vec<(Column, Column, Column)> = metrics
        .iter()
        .map(|m| Ok((get(format!("{m}\u{1}n"))?, get(format!("{m}\u{1}mean"))?, get(format!("{m}\u{1}std"))?)))
        .collect::<Result<_, AnalysisError>>()?;
    for row in 0..wide.height() {
        for (m, (n_col, mean_col, std_col)) in metrics.iter().zip(&per_metric) {
            let count = n_col.u64().map_err(polars_err("reading n"))?.get(row).unwrap_or(0);
            let mu = mean_col.f64().map_err(polars_err("reading mean"))?.get(row);
            let sd = std_col.f64().map_err(polars_err("reading std"))?.get(row);
            let half = match sd {
                Some(sd) if count >= 2 => {
                    let t = student_t_quantile(t_level, (count - 1) as f64)
                        .map_err(|_| AnalysisError::BadConfidence(confidence))?;
                    Some(t * sd / (count as f64).sqrt())
                }
                _ => None,
            };
            metric.push(m.clone());
            n.push(count);
            mean.push(mu);
            std.push(if count >= 2 { sd } else { None });
            low.push(mu.zip(half).map(|(x, h)| x - h));
            high.push(mu.zip(half).map(|(x, h)| x + h));
        }
    }
    let columns = [
        Column::new("metric".into(), metric),
        Column::new("n".into(), n),
        Column::new("mean".into(), mean),
        Column::new("std".into(), std),
        Column::new("ci_low".into(), low),
        Column::new("ci_high".into(), high),
        Column::new("confidence".into(), vec![confidence; rows]),
    ];
    for c in columns {
        df.with_column(c).map_err(polars_err("building the summary"))?;
    }
    Ok(df)
}

/// Text of one cell for CSV and tables: strings bare, nulls empty.
pub fn cell(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(x) => format!("{x}"),
        other => other.to_string(),
    }
}

/// Writes a frame as CSV (header, comma-separated, no quoting needed for infersim's
/// snake_case names and numbers), atomically.
pub fn write_csv(path: &Path, df: &DataFrame) -> Result<(), AnalysisError> {
    let mut text = String::new();
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    text.push_str(&names.join(","));
    text.push('\n');
    for i in 0..df.height() {
        let row: Vec<String> = df.columns().iter().map(|c| cell(&c.get(i).unwrap_or(AnyValue::Null))).collect();
        let _ = writeln!(text, "{}", row.join(","));
    }
    write_atomically(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes()).map_err(|error| OutputError::Io { path: path.to_path_buf(), error })
    })?;
    Ok(())
}

/// Writes a frame as zstd Parquet with polars, atomically.
pub fn write_frame_parquet(path: &Path, df: &mut DataFrame) -> Result<(), AnalysisError> {
    let mut failure = None;
    write_atomically(path, |w| {
        if let Err(e) = ParquetWriter::new(w).with_compression(ParquetCompression::Zstd(None)).finish(df) {
            failure = Some(e.to_string());
            return Err(OutputError::Format { path: path.to_path_buf(), message: "polars could not write".into() });
        }
        Ok(())
    })
    .map_err(|e| match failure {
        Some(message) => AnalysisError::Output(OutputError::Format { path: path.to_path_buf(), message }),
        None => AnalysisError::Output(e),
    })
}
