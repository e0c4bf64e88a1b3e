//! Per-replication traces, streamed to Parquet in row groups so that a run with
//! millions of requests never holds its trace in memory.
//!
//! ```text
//! OUT/traces/point=P/rep=R/timeseries.parquet   sampled state, t_h first
//! OUT/traces/point=P/rep=R/requests.parquet     one row per request (customer)
//! ```
//!
//! The `point=P/rep=R` directories follow the hive layout, so
//! `polars.scan_parquet("OUT/traces/**/*.parquet", hive_partitioning=True)` reads
//! every trace at once with `point` and `rep` as columns.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use infersim_agents::world::{Cells, ColumnKind, Label, Labels, TraceRow};
use infersim_engine::Observer;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

use crate::output::{OutputError, trace_writer_properties};

/// How much of each replication to record. Levels are cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceLevel {
    /// Per-replication metrics only.
    #[default]
    Summary,
    /// Also the state sampled on a time grid (timeseries.parquet).
    Timeseries,
    /// Also one row per request (requests.parquet).
    Requests,
}

/// Rows per Parquet row group: the most a trace holds in memory.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Column buffers for the rows of one trace file, built from the row type's declared
/// columns ([`TraceRow::columns`]) and the world's labels; columns the configuration
/// does not fill ([`infersim_agents::world::World::omitted_columns`]) are skipped.
pub struct Columns<R: TraceRow> {
    schema: SchemaRef,
    buffers: Vec<Buffer>,
    /// The column the next cell goes to.
    cursor: usize,
    rows: usize,
    _row: PhantomData<fn(R)>,
}

/// One column's cells so far.
enum Buffer {
    F64(Vec<f64>),
    OptF64(Vec<Option<f64>>),
    U64(Vec<u64>),
    U32(Vec<u32>),
    OptU32(Vec<Option<u32>>),
    Bool(Vec<bool>),
    Text(Vec<String>),
    Label(Vec<u16>, Arc<[String]>),
    OptLabel(Vec<Option<u16>>, Arc<[String]>),
    /// A column left out of the file: its cells are dropped.
    Skip,
}

impl<R: TraceRow> Columns<R> {
    /// Buffers for `R`'s columns but `omitted`; label columns are named by `labels`.
    pub fn new(labels: &Labels, omitted: &[&str]) -> Self {
        let names = |name: &str| -> Arc<[String]> { labels.of(name).unwrap_or_default().into() };
        let mut fields = Vec::new();
        let buffers = R::columns()
            .iter()
            .map(|c| {
                if omitted.contains(&c.name) {
                    return Buffer::Skip;
                }
                let (dtype, nullable, buffer) = match c.kind {
                    ColumnKind::F64 => (DataType::Float64, false, Buffer::F64(Vec::new())),
                    ColumnKind::OptF64 => (DataType::Float64, true, Buffer::OptF64(Vec::new())),
                    ColumnKind::U64 => (DataType::UInt64, false, Buffer::U64(Vec::new())),
                    ColumnKind::U32 => (DataType::UInt32, false, Buffer::U32(Vec::new())),
                    ColumnKind::OptU32 => (DataType::UInt32, true, Buffer::OptU32(Vec::new())),
                    ColumnKind::Bool => (DataType::Boolean, false, Buffer::Bool(Vec::new())),
                    ColumnKind::Text => (DataType::Utf8, false, Buffer::Text(Vec::new())),
                    ColumnKind::Label => (DataType::Utf8, false, Buffer::Label(Vec::new(), names(c.name))),
                    ColumnKind::OptLabel => (DataType::Utf8, true, Buffer::OptLabel(Vec::new(), names(c.name))),
                };
                fields.push(Field::new(c.name, dtype, nullable));
                buffer
            })
            .collect();
        Columns { schema: Arc::new(Schema::new(fields)), buffers, cursor: 0, rows: 0, _row: PhantomData }
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn push(&mut self, row: &R) {
        self.cursor = 0;
        row.write(self);
        debug_assert_eq!(self.cursor, self.buffers.len(), "a row writes every column once");
        self.rows += 1;
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The buffered rows as arrays in schema order, emptying the buffers.
    fn take(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.buffers
            .iter_mut()
            .filter(|b| !matches!(b, Buffer::Skip))
            .map(|b| -> ArrayRef {
                match b {
                    Buffer::F64(v) => Arc::new(Float64Array::from(std::mem::take(v))),
                    Buffer::OptF64(v) => Arc::new(Float64Array::from(std::mem::take(v))),
                    Buffer::U64(v) => Arc::new(UInt64Array::from(std::mem::take(v))),
                    Buffer::U32(v) => Arc::new(UInt32Array::from(std::mem::take(v))),
                    Buffer::OptU32(v) => Arc::new(UInt32Array::from(std::mem::take(v))),
                    Buffer::Bool(v) => Arc::new(BooleanArray::from(std::mem::take(v))),
                    Buffer::Text(v) => Arc::new(StringArray::from(std::mem::take(v))),
                    Buffer::Label(v, names) => {
                        Arc::new(StringArray::from_iter_values(std::mem::take(v).into_iter().map(|i| label(names, i))))
                    }
                    Buffer::OptLabel(v, names) => Arc::new(StringArray::from_iter(
                        std::mem::take(v).into_iter().map(|i| i.map(|i| label(names, i))),
                    )),
                    Buffer::Skip => unreachable!("skipped columns are filtered out above"),
                }
            })
            .collect()
    }

    /// The next buffer; a row that writes a cell of the wrong kind is a broken
    /// invariant of its `TraceRow` (the `trace_row!` macro rules it out).
    fn next(&mut self) -> &mut Buffer {
        let b = &mut self.buffers[self.cursor];
        self.cursor += 1;
        b
    }
}

/// The name at `index` (of a task or a class), or the index itself if the names do not
/// cover it.
fn label(names: &[String], index: u16) -> std::borrow::Cow<'_, str> {
    match names.get(usize::from(index)) {
        Some(name) => std::borrow::Cow::Borrowed(name.as_str()),
        None => std::borrow::Cow::Owned(index.to_string()),
    }
}

macro_rules! cells {
    ($($method:ident($ty:ty) => $variant:ident $(|$v:ident| $conv:expr)?;)+) => {
        impl<R: TraceRow> Cells for Columns<R> {
            $(
                #[inline]
                fn $method(&mut self, value: $ty) {
                    match self.next() {
                        Buffer::$variant(v, ..) => v.push(cells!(@conv value $(|$v| $conv)?)),
                        Buffer::Skip => {}
                        _ => panic!(concat!("trace row wrote ", stringify!($method), " into a column of another kind")),
                    }
                }
            )+
        }
    };
    (@conv $value:ident) => { $value };
    (@conv $value:ident |$v:ident| $conv:expr) => {{ let $v = $value; $conv }};
}

cells! {
    f64(f64) => F64;
    opt_f64(Option<f64>) => OptF64;
    u64(u64) => U64;
    u32(u32) => U32;
    opt_u32(Option<u32>) => OptU32;
    bool(bool) => Bool;
    text(&str) => Text |s| s.to_string();
    label(Label) => Label |l| l.0;
    opt_label(Option<Label>) => OptLabel |l| l.map(|l| l.0);
}

/// Where a sink's row groups go: written by the simulation's own thread while the
/// trace is small, handed to a writer thread once it has filled a row group.
enum Writer {
    Inline(Box<ArrowWriter<File>>),
    Threaded { batches: SyncSender<RecordBatch>, thread: JoinHandle<Result<(), String>> },
}

/// A trace file being written: rows are buffered and written a row group at a time
/// to a temporary file, which [`ParquetSink::finish`] renames into place. A trace that
/// outgrows one row group gets a writer thread, so the simulation goes on while a
/// group is encoded and compressed (at most two groups wait: memory stays bounded);
/// a smaller one is written at `finish`, without a thread, which is cheaper when many
/// replications already keep every core busy. A write error is kept and reported by
/// `finish` (observers cannot fail mid-run).
pub struct ParquetSink<R: TraceRow> {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<Writer>,
    columns: Columns<R>,
    rows: u64,
    error: Option<OutputError>,
}

/// Writes every batch it receives, then closes the file. After a failure it keeps
/// receiving (so the simulation never blocks) and reports the first error.
fn write_batches(mut writer: ArrowWriter<File>, batches: Receiver<RecordBatch>) -> Result<(), String> {
    let mut result = Ok(());
    for batch in batches {
        if result.is_ok() {
            result = writer.write(&batch).map_err(|e| e.to_string());
        }
    }
    result.and_then(|()| writer.close().map(|_| ()).map_err(|e| e.to_string()))
}

impl<R: TraceRow> ParquetSink<R> {
    /// Starts writing the trace that will appear at `path`; label columns are named
    /// by `labels`, and the columns `omitted` are left out.
    pub fn create(path: PathBuf, labels: &Labels, omitted: &[&str]) -> Result<Self, OutputError> {
        let columns = Columns::<R>::new(labels, omitted);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("trace");
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|error| OutputError::Io { path: tmp.clone(), error })?;
        let schema = columns.schema();
        let writer =
            ArrowWriter::try_new(file, schema.clone(), Some(trace_writer_properties(&schema))).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                OutputError::Format { path: tmp.clone(), message: e.to_string() }
            })?;
        Ok(ParquetSink { path, tmp, writer: Some(Writer::Inline(Box::new(writer))), columns, rows: 0, error: None })
    }

    /// Hands the buffered rows on: to the writer thread (started on the first full row
    /// group), or, at `finish` of a small trace, to the inline writer.
    fn flush(&mut self, finishing: bool) {
        if self.columns.is_empty() || self.error.is_some() {
            return;
        }
        let batch = match RecordBatch::try_new(self.columns.schema(), self.columns.take()) {
            Ok(batch) => batch,
            Err(e) => {
                self.error = Some(OutputError::Format { path: self.tmp.clone(), message: e.to_string() });
                return;
            }
        };
        if !finishing && let Some(Writer::Inline(_)) = self.writer {
            let Some(Writer::Inline(writer)) = self.writer.take() else { unreachable!("matched above") };
            let (batches, received) = sync_channel::<RecordBatch>(1);
            match std::thread::Builder::new()
                .name("trace-writer".into())
                .spawn(move || write_batches(*writer, received))
            {
                Ok(thread) => self.writer = Some(Writer::Threaded { batches, thread }),
                Err(error) => {
                    self.error = Some(OutputError::Io { path: self.tmp.clone(), error });
                    return;
                }
            }
        }
        let written = match self.writer.as_mut() {
            Some(Writer::Inline(writer)) => writer.write(&batch).map_err(|e| e.to_string()),
            Some(Writer::Threaded { batches, .. }) => {
                batches.send(batch).map_err(|_| "the trace writer stopped".to_string())
            }
            None => Ok(()),
        };
        if let Err(message) = written {
            self.error = Some(OutputError::Format { path: self.tmp.clone(), message });
        }
    }

    /// Writes what is buffered, closes the file and renames it into place; returns
    /// the number of rows.
    pub fn finish(mut self) -> Result<u64, OutputError> {
        self.flush(true);
        let written = match self.writer.take() {
            Some(Writer::Inline(writer)) => writer.close().map(|_| ()).map_err(|e| e.to_string()),
            Some(Writer::Threaded { batches, thread }) => {
                // Closing the channel ends the writer thread's loop.
                drop(batches);
                thread.join().unwrap_or_else(|_| Err("the trace writer panicked".to_string()))
            }
            None => Ok(()),
        };
        let result = match (self.error.take(), written) {
            (Some(e), _) => Err(e),
            (None, Err(message)) => Err(OutputError::Format { path: self.tmp.clone(), message }),
            (None, Ok(())) => {
                fs::rename(&self.tmp, &self.path).map_err(|error| OutputError::Io { path: self.path.clone(), error })
            }
        };
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result.map(|()| self.rows)
    }
}

impl<R: TraceRow> Drop for ParquetSink<R> {
    /// A sink dropped without `finish` (its replication failed or panicked) leaves no
    /// temporary file behind.
    fn drop(&mut self) {
        if self.writer.is_some() {
            if let Some(Writer::Threaded { batches, thread }) = self.writer.take() {
                drop(batches);
                let _ = thread.join();
            }
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl<R: TraceRow> Observer<R> for ParquetSink<R> {
    fn observe(&mut self, row: R) {
        self.columns.push(&row);
        self.rows += 1;
        if self.columns.len() >= ROW_GROUP_ROWS {
            self.flush(false);
        }
    }
}

/// The trace directory of one replication.
pub fn trace_dir(out: &Path, point: u32, replication: u64) -> PathBuf {
    out.join("traces").join(format!("point={point}")).join(format!("rep={replication}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use infersim_agents::station::StationSample;

    fn sample(i: u32) -> StationSample {
        StationSample { t_s: f64::from(i), queue_len: i, busy_servers: i % 4, in_system: i + i % 4 }
    }

    fn written(rows: u32) -> (tempfile::TempDir, PathBuf, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timeseries.parquet");
        let mut sink = ParquetSink::<StationSample>::create(path.clone(), &Labels::default(), &[]).unwrap();
        (0..rows).for_each(|i| sink.observe(sample(i)));
        let count = sink.finish().unwrap();
        (dir, path, count)
    }

    #[test]
    fn a_small_trace_is_one_row_group_written_at_finish() {
        let (dir, path, count) = written(1000);
        assert_eq!(count, 1000);
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn a_large_trace_streams_row_groups_in_order_through_the_writer_thread() {
        let rows = 3 * ROW_GROUP_ROWS as u32 + 17;
        let (dir, path, count) = written(rows);
        assert_eq!(count, u64::from(rows));
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        let full = ROW_GROUP_ROWS as i64;
        assert_eq!(groups, vec![full, full, full, 17]);
        // Every row, in order.
        let batches =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let mut next = 0u32;
        for batch in batches {
            let batch = batch.unwrap();
            let queue = batch.column_by_name("queue_len").unwrap().as_primitive::<arrow::datatypes::UInt32Type>();
            for value in queue.values() {
                assert_eq!(*value, next);
                next += 1;
            }
        }
        assert_eq!(next, rows);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}
