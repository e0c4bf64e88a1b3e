//! Analysis of finished batches with polars: summaries with Student-t intervals per
//! (point, metric), merging any number of output directories (for example the shards
//! of one batch), and paired comparisons of two batches.

use std::path::{Path, PathBuf};

use infersim_engine::stats::{BatchMeans, Warmup, batch_means, student_t_quantile};
use polars::prelude::*;

use crate::output::{OutputError, write_atomically};
use crate::replications::ROW_GROUP_ROWS;

mod batch_means;
mod compare;
pub use batch_means::{SeriesBatchMeans, batch_means_frame, batch_means_of_traces};
pub use compare::{ComparisonRow, Gate, compare};

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
    /// No trace of the batch has the series asked for.
    #[error(
        "no trace has a column `{0}`: batch means need a run with --trace requests (per-request columns such \
         as latency_s or wait_s) or --trace timeseries (sampled state such as queue_len)"
    )]
    NoSeries(String),
    /// A series too short for the batches asked for, or not finite.
    #[error("{path}: batch means of {series}: {message}")]
    BatchMeans {
        /// The trace file.
        path: String,
        /// The column.
        series: String,
        /// What is wrong.
        message: String,
    },
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
                // Boolean metrics (e.g. `diverged`) summarise as fractions.
                col(m.as_str()).cast(DataType::Float64).mean().alias(format!("{m}\u{1}mean")),
                col(m.as_str()).cast(DataType::Float64).std(1).alias(format!("{m}\u{1}std")),
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
    reshape_summary(&wide, id_columns, metrics, confidence)
}

/// One row per (point, metric) from a frame with one row per point: the id columns,
/// then `{metric}\u{1}n`, `\u{1}mean` and `\u{1}std` for every metric.
pub(crate) fn reshape_summary(
    wide: &DataFrame,
    id_columns: &[String],
    metrics: &[String],
    confidence: f64,
) -> Result<DataFrame, AnalysisError> {
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

/// The summary of the `replications.parquet` files of `dirs`, as [`summarize`] gives
/// it, read in one streaming pass: each file is sorted by (point, replication), the
/// files are merged in that order, and each (point, metric) keeps a running mean and
/// variance (Welford). Memory holds one row group per file and one accumulator per
/// (point, metric), however many replications there are; the order of the merge makes
/// a batch summarised from its shards give the bits of the unsharded batch.
pub fn summarize_parquet(
    dirs: &[PathBuf],
    id_columns: &[String],
    metrics: &[String],
    confidence: f64,
) -> Result<DataFrame, AnalysisError> {
    use std::collections::BTreeMap;

    use infersim_engine::stats::Tally;

    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(AnalysisError::BadConfidence(confidence));
    }
    let mut readers = dirs
        .iter()
        .map(|dir| SortedRows::open(&dir.join("replications.parquet"), id_columns, metrics))
        .collect::<Result<Vec<_>, _>>()?;
    // point -> (its id values, one tally per metric)
    let mut points: BTreeMap<u32, (Vec<AnyValue<'static>>, Vec<Tally>)> = BTreeMap::new();
    for_each_merged(&mut readers, |reader| {
        let (_, tallies) =
            points.entry(reader.point()).or_insert_with(|| (reader.ids(), vec![Tally::new(); metrics.len()]));
        for (j, tally) in tallies.iter_mut().enumerate() {
            if let Some(x) = reader.metric(j) {
                tally.add(x);
            }
        }
        Ok(())
    })?;
    let mut columns: Vec<Column> = Vec::new();
    for (k, name) in id_columns.iter().enumerate() {
        let values: Vec<AnyValue<'static>> = points.values().map(|(ids, _)| ids[k].clone()).collect();
        let series = Series::from_any_values(name.as_str().into(), &values, true)
            .map_err(polars_err(format!("reading {name}")))?;
        columns.push(series.into());
    }
    for (j, m) in metrics.iter().enumerate() {
        let tallies = || points.values().map(move |(_, t)| t[j]);
        columns.push(Column::new(format!("{m}\u{1}n").into(), tallies().map(|t| t.count()).collect::<Vec<u64>>()));
        columns.push(Column::new(format!("{m}\u{1}mean").into(), tallies().map(|t| t.mean()).collect::<Vec<_>>()));
        columns.push(Column::new(format!("{m}\u{1}std").into(), tallies().map(|t| t.std_dev()).collect::<Vec<_>>()));
    }
    let wide = DataFrame::new(points.len(), columns).map_err(polars_err("building the summary"))?;
    reshape_summary(&wide, id_columns, metrics, confidence)
}

/// Merges the sorted `replications.parquet` files of `dirs` (shards of one batch) into
/// one file at `path`, sorted by (point, replication), streaming: a k-way merge that
/// holds one row group per input and writes one per [`ROW_GROUP_ROWS`] rows. Returns the rows
/// written. The inputs must share their columns.
pub fn merge_replications(dirs: &[PathBuf], path: &Path) -> Result<u64, AnalysisError> {
    use arrow::record_batch::{RecordBatch, RecordBatchReader as _};
    use parquet::arrow::ArrowWriter;

    let inputs: Vec<PathBuf> = dirs.iter().map(|d| d.join("replications.parquet")).collect();
    let Some(first) = inputs.first() else { return Ok(0) };
    let names: Vec<String> = {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let file = std::fs::File::open(first).map_err(|error| OutputError::Io { path: first.clone(), error })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| OutputError::Format { path: first.clone(), message: e.to_string() })?;
        builder.schema().fields().iter().map(|f| f.name().clone()).collect()
    };
    let others: Vec<String> = names.iter().filter(|n| *n != "point" && *n != "replication").cloned().collect();
    let mut readers = inputs.iter().map(|p| SortedRows::open(p, &others, &[])).collect::<Result<Vec<_>, _>>()?;
    let schema = readers[0].batches.schema();
    let format = |e: &dyn std::fmt::Display| OutputError::Format { path: path.to_path_buf(), message: e.to_string() };
    let mut rows = 0;
    write_atomically(path, |w| {
        let mut writer =
            ArrowWriter::try_new(w, schema.clone(), Some(crate::output::replication_writer_properties(&schema)))
                .map_err(|e| format(&e))?;
        // The row groups the pending rows point into, and each input's place in it.
        let mut pool: Vec<RecordBatch> = Vec::new();
        let mut in_pool: Vec<Option<(u64, usize)>> = Vec::new();
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(ROW_GROUP_ROWS);
        let mut flush = |pool: &mut Vec<RecordBatch>, picks: &mut Vec<(usize, usize)>, in_pool: &mut Vec<_>| {
            let refs: Vec<&RecordBatch> = pool.iter().collect();
            let batch = arrow::compute::interleave_record_batch(&refs, picks).map_err(|e| format(&e))?;
            writer.write(&batch).map_err(|e| format(&e))?;
            writer.flush().map_err(|e| format(&e))?;
            pool.clear();
            picks.clear();
            in_pool.clear();
            Ok::<(), OutputError>(())
        };
        for_each_merged(&mut readers, |reader| {
            in_pool.resize(in_pool.len().max(reader.input + 1), None);
            let at = match in_pool[reader.input] {
                Some((generation, at)) if generation == reader.generation => at,
                _ => {
                    pool.push(reader.batch.clone().expect("a merged reader has a row"));
                    in_pool[reader.input] = Some((reader.generation, pool.len() - 1));
                    pool.len() - 1
                }
            };
            picks.push((at, reader.row));
            rows += 1;
            if picks.len() == ROW_GROUP_ROWS {
                flush(&mut pool, &mut picks, &mut in_pool)?;
            }
            Ok(())
        })
        .map_err(|e| format(&e))?;
        if !picks.is_empty() {
            flush(&mut pool, &mut picks, &mut in_pool)?;
        }
        writer.close().map_err(|e| format(&e))?;
        Ok(())
    })?;
    Ok(rows)
}

/// Visits the rows of sorted inputs in (point, replication) order (ties by input), a
/// k-way merge holding one row group per input.
fn for_each_merged(
    readers: &mut [SortedRows],
    mut visit: impl FnMut(&SortedRows) -> Result<(), AnalysisError>,
) -> Result<(), AnalysisError> {
    use std::cmp::Reverse;
    let mut heap = std::collections::BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        r.input = i;
        if let Some(key) = r.key()? {
            heap.push(Reverse((key, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let reader = &mut readers[i];
        visit(reader)?;
        reader.advance();
        if let Some(key) = reader.key()? {
            heap.push(Reverse((key, i)));
        }
    }
    Ok(())
}

/// The rows of one sorted replications.parquet, a row group at a time.
struct SortedRows {
    path: PathBuf,
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    batch: Option<arrow::record_batch::RecordBatch>,
    /// Counts the row groups read, so a merge knows when `batch` changed.
    generation: u64,
    /// Its place among the inputs of a merge.
    input: usize,
    row: usize,
    /// Column positions in the projected batch.
    point_column: usize,
    replication_column: usize,
    ids: Vec<usize>,
    metrics: Vec<usize>,
}

impl SortedRows {
    fn open(path: &Path, id_columns: &[String], metrics: &[String]) -> Result<SortedRows, AnalysisError> {
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let bad = |message: String| AnalysisError::Output(OutputError::Format { path: path.to_path_buf(), message });
        let file = std::fs::File::open(path).map_err(|error| OutputError::Io { path: path.to_path_buf(), error })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
        let schema = builder.schema().clone();
        let position =
            |name: &str| schema.index_of(name).map_err(|_| bad(format!("no column {name} in replications.parquet")));
        // point and replication first, then the ids (point among them), then metrics.
        let mut wanted = vec![position("point")?, position("replication")?];
        for name in id_columns.iter().chain(metrics) {
            wanted.push(position(name)?);
        }
        let mut roots = wanted.clone();
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let at = |file_index: usize| roots.binary_search(&file_index).expect("projected");
        let batches =
            builder.with_projection(mask).with_batch_size(ROW_GROUP_ROWS).build().map_err(|e| bad(e.to_string()))?;
        let ids = wanted[2..2 + id_columns.len()].iter().map(|&c| at(c)).collect();
        let metrics = wanted[2 + id_columns.len()..].iter().map(|&c| at(c)).collect();
        Ok(SortedRows {
            path: path.to_path_buf(),
            batches,
            batch: None,
            generation: 0,
            input: 0,
            row: 0,
            point_column: at(wanted[0]),
            replication_column: at(wanted[1]),
            ids,
            metrics,
        })
    }

    /// (point, replication) of the current row, reading the next row group when
    /// this one is used up; `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u64)>, AnalysisError> {
        use arrow::array::AsArray;
        use arrow::datatypes::{UInt32Type, UInt64Type};
        while self.batch.as_ref().is_none_or(|b| self.row >= b.num_rows()) {
            match self.batches.next() {
                Some(Ok(batch)) => {
                    self.batch = Some(batch);
                    self.generation += 1;
                    self.row = 0;
                }
                Some(Err(e)) => {
                    let message = e.to_string();
                    return Err(AnalysisError::Output(OutputError::Format { path: self.path.clone(), message }));
                }
                None => return Ok(None),
            }
        }
        let batch = self.batch.as_ref().expect("loaded above");
        let point = batch.column(self.point_column).as_primitive::<UInt32Type>().value(self.row);
        let replication = batch.column(self.replication_column).as_primitive::<UInt64Type>().value(self.row);
        Ok(Some((point, replication)))
    }

    fn advance(&mut self) {
        self.row += 1;
    }

    /// The point of the current row.
    fn point(&self) -> u32 {
        use arrow::array::AsArray;
        let batch = self.batch.as_ref().expect("a current row");
        batch.column(self.point_column).as_primitive::<arrow::datatypes::UInt32Type>().value(self.row)
    }

    /// The id columns' values in the current row.
    fn ids(&self) -> Vec<AnyValue<'static>> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType as ArrowType, Float64Type, Int64Type, UInt32Type};
        let batch = self.batch.as_ref().expect("a current row");
        self.ids
            .iter()
            .map(|&c| {
                let column = batch.column(c);
                if column.is_null(self.row) {
                    return AnyValue::Null;
                }
                match column.data_type() {
                    ArrowType::UInt32 => AnyValue::UInt32(column.as_primitive::<UInt32Type>().value(self.row)),
                    ArrowType::Int64 => AnyValue::Int64(column.as_primitive::<Int64Type>().value(self.row)),
                    ArrowType::Float64 => AnyValue::Float64(column.as_primitive::<Float64Type>().value(self.row)),
                    ArrowType::Boolean => AnyValue::Boolean(column.as_boolean().value(self.row)),
                    ArrowType::Utf8 => AnyValue::StringOwned(column.as_string::<i32>().value(self.row).into()),
                    ArrowType::LargeUtf8 => AnyValue::StringOwned(column.as_string::<i64>().value(self.row).into()),
                    ArrowType::Utf8View => AnyValue::StringOwned(column.as_string_view().value(self.row).into()),
                    other => AnyValue::StringOwned(format!("{other}").into()),
                }
            })
            .collect()
    }

    /// Metric `j` of the current row as a number (a flag as 1 or 0); `None` if null.
    fn metric(&self, j: usize) -> Option<f64> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::Float64Type;
        let batch = self.batch.as_ref().expect("a current row");
        let column = batch.column(self.metrics[j]);
        if column.is_null(self.row) {
            return None;
        }
        match column.data_type() {
            arrow::datatypes::DataType::Boolean => Some(f64::from(u8::from(column.as_boolean().value(self.row)))),
            _ => Some(column.as_primitive::<Float64Type>().value(self.row)),
        }
    }
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
    // The csv crate quotes what needs quoting (a swept list such as `[2.0, 20.0]`).
    let io = |e: csv::Error| OutputError::Format { path: path.to_path_buf(), message: e.to_string() };
    write_atomically(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        out.write_record(df.get_column_names().iter().map(|n| n.as_str())).map_err(io)?;
        for i in 0..df.height() {
            out.write_record(df.columns().iter().map(|c| cell(&c.get(i).unwrap_or(AnyValue::Null)))).map_err(io)?;
        }
        out.flush().map_err(|error| OutputError::Io { path: path.to_path_buf(), error })
    })?;
    Ok(())
}

/// Writes a frame as zstd Parquet, atomically.
pub fn write_frame_parquet(path: &Path, df: &mut DataFrame) -> Result<(), AnalysisError> {
    // A small frame of plain columns goes through arrow-rs: polars' writer gathers
    // small frames through a path that first zeroes an 8 MB buffer, which cost a
    // short run a third of its time.
    if let Some(batch) = frame_to_record_batch(df) {
        let format = |message: String| OutputError::Format { path: path.to_path_buf(), message };
        write_atomically(path, |w| {
            let properties = Some(crate::output::writer_properties());
            let mut writer = parquet::arrow::ArrowWriter::try_new(w, batch.schema(), properties)
                .map_err(|e| format(e.to_string()))?;
            writer.write(&batch).map_err(|e| format(e.to_string()))?;
            writer.close().map_err(|e| format(e.to_string()))?;
            Ok(())
        })?;
        return Ok(());
    }
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

/// The frame as one Arrow record batch, if every column has a plain type (numbers,
/// booleans, text); `None` otherwise.
fn frame_to_record_batch(df: &DataFrame) -> Option<arrow::record_batch::RecordBatch> {
    use std::sync::Arc;

    use arrow::array::{self as aa, ArrayRef};
    use arrow::datatypes::{DataType as ArrowType, Field, Schema};

    let mut fields = Vec::with_capacity(df.width());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(df.width());
    for column in df.columns() {
        let series = column.as_materialized_series();
        let (data_type, array): (ArrowType, ArrayRef) = match series.dtype() {
            DataType::Boolean => {
                (ArrowType::Boolean, Arc::new(series.bool().ok()?.iter().collect::<aa::BooleanArray>()))
            }
            DataType::UInt32 => (ArrowType::UInt32, Arc::new(series.u32().ok()?.iter().collect::<aa::UInt32Array>())),
            DataType::UInt64 => (ArrowType::UInt64, Arc::new(series.u64().ok()?.iter().collect::<aa::UInt64Array>())),
            DataType::Int32 => (ArrowType::Int32, Arc::new(series.i32().ok()?.iter().collect::<aa::Int32Array>())),
            DataType::Int64 => (ArrowType::Int64, Arc::new(series.i64().ok()?.iter().collect::<aa::Int64Array>())),
            DataType::Float64 => {
                (ArrowType::Float64, Arc::new(series.f64().ok()?.iter().collect::<aa::Float64Array>()))
            }
            DataType::String => (ArrowType::Utf8, Arc::new(series.str().ok()?.iter().collect::<aa::StringArray>())),
            _ => return None,
        };
        fields.push(Field::new(column.name().as_str(), data_type, true));
        arrays.push(array);
    }
    arrow::record_batch::RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming summary agrees with polars' on a swept batch with integer and
    /// text parameters, and on the same batch split into shards it gives the same bits.
    #[test]
    fn streaming_summary_matches_polars_and_shards() {
        use crate::batch::{BatchSpec, run_batch};
        use crate::runner::Shard;
        use infersim_engine::Interrupt;
        let text = include_str!("../../../data/scenarios/mmc.toml").to_string()
            + "\n[sweep]\nstation.servers = [4, 5]\nstation.service = [\"exponential\", \"deterministic\"]\n";
        let mut scenario = crate::scenario::Scenario::parse("sweep.toml", &text).unwrap();
        scenario.apply_overrides(&["simulation.customers=2000", "simulation.warmup_customers=200"]).unwrap();
        let root = std::env::temp_dir().join(format!("infersim-summary-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = |name: &str, shard| {
            let out = root.join(name);
            let spec = BatchSpec {
                replications: 7,
                seed: 3,
                threads: 2,
                shard,
                out: out.clone(),
                resume: false,
                confidence: 0.95,
                trace: Default::default(),
            };
            let manifest = run_batch(&scenario, &spec, &Interrupt::default(), &|_| {}).unwrap().manifest;
            (out, manifest)
        };
        let (whole, manifest) = run("whole", Shard::ALL);
        let ids: Vec<String> =
            std::iter::once("point".to_string()).chain(manifest.parameter_columns.iter().cloned()).collect();
        let streamed = summarize_parquet(std::slice::from_ref(&whole), &ids, &manifest.metrics, 0.9).unwrap();
        let lazy =
            summarize(scan_replications(std::slice::from_ref(&whole)).unwrap(), &ids, &manifest.metrics, 0.9).unwrap();
        assert_eq!(streamed.shape(), lazy.shape());
        assert!(streamed.select(ids.clone()).unwrap().equals(&lazy.select(ids.clone()).unwrap()));
        assert!(streamed.column("n").unwrap().equals(lazy.column("n").unwrap()));
        for name in ["mean", "std", "ci_low", "ci_high"] {
            let (a, b) = (streamed.column(name).unwrap().f64().unwrap(), lazy.column(name).unwrap().f64().unwrap());
            for (x, y) in a.iter().zip(b.iter()) {
                match (x, y) {
                    (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{name}: {x} vs {y}"),
                    (x, y) => assert_eq!(x, y, "{name}"),
                }
            }
        }
        let shards: Vec<PathBuf> = (1..=3).map(|i| run(&format!("shard{i}"), Shard { index: i, count: 3 }).0).collect();
        let merged = summarize_parquet(&shards, &ids, &manifest.metrics, 0.9).unwrap();
        assert!(merged.equals_missing(&streamed), "shards give the unsharded summary's bits");
        // Merging the shards' rows gives the unsharded file's rows.
        let merged_path = root.join("merged.parquet");
        assert_eq!(merge_replications(&shards, &merged_path).unwrap(), 4 * 7);
        let read = |p: &Path| {
            let text = p.to_string_lossy().into_owned();
            LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default())
                .unwrap()
                .collect()
                .unwrap()
        };
        assert!(read(&merged_path).equals_missing(&read(&whole.join("replications.parquet"))));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn gates_parse_and_judge() {
        let g = Gate::parse("sojourn_p99_s:+5%").unwrap();
        assert_eq!((g.metric.as_str(), g.direction, g.tolerance), ("sojourn_p99_s", 1.0, 0.05));
        assert_eq!(Gate::parse("throughput:-2.5%").unwrap().direction, -1.0);
        for bad in ["x", "x:5%", "x:+5", ":+5%", "x:+abc%"] {
            assert!(Gate::parse(bad).is_err(), "{bad}");
        }
        let ci = |low, high| infersim_engine::stats::ConfidenceInterval {
            n: 10,
            mean: (low + high) / 2.0,
            std_dev: 1.0,
            half_width: (high - low) / 2.0,
            low,
            high,
            confidence: 0.95,
        };
        let row = |low, high| ComparisonRow {
            point: 0,
            metric: "m".into(),
            pairs: 10,
            base_mean: 100.0,
            candidate_mean: 100.0,
            difference: Some(ci(low, high)),
        };
        assert!(g.fails(&row(6.0, 8.0)), "significantly more than +5%");
        assert!(!g.fails(&row(4.0, 8.0)), "not significantly beyond the tolerance");
        assert!(!g.fails(&row(-8.0, -6.0)), "an improvement");
        let down = Gate::parse("m:-5%").unwrap();
        assert!(down.fails(&row(-8.0, -6.0)) && !down.fails(&row(6.0, 8.0)));
    }
}
