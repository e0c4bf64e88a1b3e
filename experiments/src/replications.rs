//! `replications.parquet`: its columns, its row groups, and the writer that fills it
//! while a batch runs.
//!
//! The file is written one of two ways, to the same bytes. A fresh batch writes it as
//! it goes ([`InOrderWriter`]): finished replications reach the calling thread nearly
//! in the order they were started, so a small window puts them in order and a row
//! group is written as soon as it is full; nothing is left to do at the end. When
//! that cannot work (a resumed batch, whose journal already holds replications; a
//! replication so slow that the window overflows; worlds whose replications report
//! different metrics), the journal is sorted into the file at the end instead
//! ([`crate::journal::Journal::write_parquet`]). Either way memory holds one row group.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use toml::Value;

use crate::journal::MetricColumn;
use crate::output::{
    MetricCell, OutputError, ReplicationRecord, parameter_column, parameter_column_name, replication_writer_properties,
};
use crate::sweep::SweepGrid;

/// Rows per row group of replications.parquet: what a batch holds of its records at
/// once (about 8 bytes a value: 1.2 MB for mmc's nine metrics, 5 MB for forty).
pub const ROW_GROUP_ROWS: usize = 16_384;

/// Finished replications the in-order writer holds while an earlier one is still
/// running, before it gives up and leaves the file to the end of the batch.
const MAX_WAITING: usize = 4096;

/// The columns of replications.parquet: point, replication, seed, one per swept key,
/// then the metrics.
#[derive(Clone, Debug)]
pub(crate) struct Layout<'a> {
    /// Swept keys and their values: point `p`'s are `sweep.params(p)`.
    pub sweep: &'a SweepGrid,
    /// Metric columns, in order.
    pub metrics: Vec<MetricColumn>,
}

impl Layout<'_> {
    fn schema(&self) -> Arc<Schema> {
        let mut fields = vec![
            Field::new("point", DataType::UInt32, false),
            Field::new("replication", DataType::UInt64, false),
            Field::new("seed", DataType::UInt64, false),
        ];
        for (k, key) in self.sweep.keys().iter().enumerate() {
            let values: Vec<&Value> = self.sweep.values(k).iter().collect();
            fields.push(Field::new(parameter_column_name(key), parameter_column(&values).0, false));
        }
        for (name, flag) in &self.metrics {
            fields.push(Field::new(name, if *flag { DataType::Boolean } else { DataType::Float64 }, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// One row group's record batch; the buffers move into its arrays.
    fn batch(&self, schema: &Arc<Schema>, rows: RowGroup) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut parameters: Vec<ArrayRef> = Vec::with_capacity(self.sweep.keys().len());
        for k in 0..self.sweep.keys().len() {
            // Typed by every value of the key, so that every row group agrees.
            let all: Vec<&Value> = self.sweep.values(k).iter().collect();
            let dtype = parameter_column(&all).0;
            let values: Vec<&Value> = rows.points.iter().map(|&p| self.sweep.value(u64::from(p), k)).collect();
            let array = parameter_column(&values).1;
            parameters.push(arrow::compute::cast(&array, &dtype)?);
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(rows.points)),
            Arc::new(UInt64Array::from(rows.replications)),
            Arc::new(UInt64Array::from(rows.seeds)),
        ];
        columns.extend(parameters);
        let width = self.metrics.len();
        for (j, (_, flag)) in self.metrics.iter().enumerate() {
            let column = rows.values.iter().skip(j).step_by(width.max(1)).map(|&x| (!x.is_nan()).then_some(x));
            if *flag {
                columns.push(Arc::new(column.map(|x| x.map(|x| x != 0.0)).collect::<BooleanArray>()));
            } else {
                columns.push(Arc::new(column.collect::<Float64Array>()));
            }
        }
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}

/// A metric value as a row group keeps it: flags as 1 or 0, NaN where undefined (a
/// defined value is finite: the journal, too, keeps a non-finite value as undefined).
fn stored(cell: MetricCell) -> f64 {
    match cell {
        MetricCell::Number(Some(x)) if x.is_finite() => x,
        MetricCell::Number(_) => f64::NAN,
        MetricCell::Flag(b) => f64::from(u8::from(b)),
    }
}

/// Rows waiting to become one row group, column by column: eight bytes a value. A
/// full group's buffers become its Arrow arrays without a copy.
#[derive(Debug, Default)]
struct RowGroup {
    points: Vec<u32>,
    replications: Vec<u64>,
    seeds: Vec<u64>,
    /// Row-major metric values.
    values: Vec<f64>,
}

impl RowGroup {
    fn with_width(width: usize) -> RowGroup {
        RowGroup {
            points: Vec::with_capacity(ROW_GROUP_ROWS),
            replications: Vec::with_capacity(ROW_GROUP_ROWS),
            seeds: Vec::with_capacity(ROW_GROUP_ROWS),
            values: Vec::with_capacity(ROW_GROUP_ROWS * width),
        }
    }

    fn len(&self) -> usize {
        self.points.len()
    }
}

/// Writes rows, in the order given, into row groups of [`ROW_GROUP_ROWS`].
pub(crate) struct RowGroupWriter<'a, W: Write + Send> {
    layout: Layout<'a>,
    schema: Arc<Schema>,
    writer: ArrowWriter<W>,
    group: RowGroup,
    rows: u64,
    /// The file, for messages.
    path: PathBuf,
}

impl<'a, W: Write + Send> RowGroupWriter<'a, W> {
    /// A writer of `layout`'s columns into `sink`; `path` names it in errors.
    pub fn new(layout: Layout<'a>, sink: W, path: &Path) -> Result<Self, OutputError> {
        let schema = layout.schema();
        let writer = ArrowWriter::try_new(sink, Arc::clone(&schema), Some(replication_writer_properties(&schema)))
            .map_err(|e| format(path, &e))?;
        let group = RowGroup::with_width(layout.metrics.len());
        Ok(RowGroupWriter { layout, schema, writer, group, rows: 0, path: path.to_path_buf() })
    }

    /// Appends one row: `values` in the layout's metric order.
    pub fn push(
        &mut self,
        point: u32,
        replication: u64,
        seed: u64,
        values: impl Iterator<Item = MetricCell>,
    ) -> Result<(), OutputError> {
        self.group.points.push(point);
        self.group.replications.push(replication);
        self.group.seeds.push(seed);
        self.group.values.extend(values.map(stored));
        debug_assert_eq!(self.group.values.len(), self.group.len() * self.layout.metrics.len());
        self.rows += 1;
        if self.group.len() == ROW_GROUP_ROWS {
            self.flush(RowGroup::with_width(self.layout.metrics.len()))
        } else {
            Ok(())
        }
    }

    /// Writes the group under way as one row group and starts `next`.
    fn flush(&mut self, next: RowGroup) -> Result<(), OutputError> {
        let group = std::mem::replace(&mut self.group, next);
        let batch = self.layout.batch(&self.schema, group).map_err(|e| format(&self.path, &e))?;
        self.writer.write(&batch).map_err(|e| format(&self.path, &e))?;
        self.writer.flush().map_err(|e| format(&self.path, &e))
    }

    /// Writes what is left (an empty row group if nothing was written, so that the file
    /// still has its columns) and the footer; returns the sink and the rows written.
    pub fn finish(mut self) -> Result<(W, u64), OutputError> {
        if self.group.len() > 0 || self.rows == 0 {
            self.flush(RowGroup::default())?;
        }
        let sink = self.writer.into_inner().map_err(|e| format(&self.path, &e))?;
        Ok((sink, self.rows))
    }
}

fn format(path: &Path, e: &dyn std::fmt::Display) -> OutputError {
    OutputError::Format { path: path.to_path_buf(), message: e.to_string() }
}

/// Whether `record` reports exactly `columns`, in order.
pub(crate) fn same_columns(columns: &[MetricColumn], record: &ReplicationRecord) -> bool {
    columns.len() == record.metrics.len()
        && columns
            .iter()
            .zip(&record.metrics)
            .all(|((n, f), (name, v))| n == name && *f == matches!(v, MetricCell::Flag(_)))
}

/// `replications.parquet` written while a fresh batch runs: records are offered as they
/// finish, with their index among the batch's work items, and written in that order
/// (failed replications leave no row). The file is built under a temporary name and
/// renamed into place by [`InOrderWriter::finish`] once every item has been offered;
/// dropped before that, it leaves nothing behind.
pub struct InOrderWriter<'a> {
    sweep: &'a SweepGrid,
    path: PathBuf,
    tmp: PathBuf,
    /// The metrics of the first successful record: every other must report the same.
    metrics: Option<Vec<MetricColumn>>,
    writer: Option<RowGroupWriter<'a, File>>,
    /// The index of the next record to write.
    next: u64,
    /// Records that finished before `next`: `None` for a failure.
    waiting: BTreeMap<u64, Option<ReplicationRecord>>,
    /// Set when the records cannot be written in order here.
    gave_up: bool,
}

impl<'a> InOrderWriter<'a> {
    /// A writer of `path`, for a batch whose points sweep `sweep`.
    pub fn new(path: &Path, sweep: &'a SweepGrid) -> InOrderWriter<'a> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("replications.parquet");
        InOrderWriter {
            sweep,
            path: path.to_path_buf(),
            tmp: path.with_file_name(format!(".{name}.tmp-{}", std::process::id())),
            metrics: None,
            writer: None,
            next: 0,
            waiting: BTreeMap::new(),
            gave_up: false,
        }
    }

    /// Takes the record of work item `index` (each index once, in any order).
    pub fn offer(&mut self, index: u64, record: ReplicationRecord) -> Result<(), OutputError> {
        if self.gave_up {
            return Ok(());
        }
        if record.error.is_none() {
            match &self.metrics {
                None => {
                    let columns = record.metrics.iter().map(|(n, v)| (n.to_string(), matches!(v, MetricCell::Flag(_))));
                    self.metrics = Some(columns.collect());
                }
                Some(columns) if !same_columns(columns, &record) => {
                    self.give_up();
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        if index != self.next {
            self.waiting.insert(index, record.error.is_none().then_some(record));
            if self.waiting.len() > MAX_WAITING {
                self.give_up();
            }
            return Ok(());
        }
        self.write(record.error.is_none().then_some(record))?;
        while let Some(entry) = self.waiting.first_entry()
            && *entry.key() == self.next
        {
            let record = entry.remove();
            self.write(record)?;
        }
        Ok(())
    }

    fn write(&mut self, record: Option<ReplicationRecord>) -> Result<(), OutputError> {
        self.next += 1;
        let Some(record) = record else { return Ok(()) };
        if self.writer.is_none() {
            let metrics = self.metrics.clone().expect("set by the first successful record");
            let layout = Layout { sweep: self.sweep, metrics };
            let file = File::create(&self.tmp).map_err(|error| OutputError::Io { path: self.tmp.clone(), error })?;
            self.writer = Some(RowGroupWriter::new(layout, file, &self.tmp)?);
        }
        let writer = self.writer.as_mut().expect("created above");
        writer.push(record.point, record.replication, record.seed, record.metrics.iter().map(|(_, v)| *v))
    }

    fn give_up(&mut self) {
        self.gave_up = true;
        self.waiting = BTreeMap::new();
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }

    /// Completes the file once all `items` work items have been offered and at least
    /// one succeeded: returns whether `path` now holds every successful record in
    /// order. `false` leaves the file to the end-of-batch sort of the journal.
    pub fn finish(mut self, items: u64) -> Result<bool, OutputError> {
        if self.gave_up || self.next != items {
            return Ok(false);
        }
        let Some(writer) = self.writer.take() else { return Ok(false) };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| OutputError::Io { path, error }
        };
        let closed = writer.finish().and_then(|(file, _)| file.sync_all().map_err(io(&self.tmp)));
        let renamed = closed.and_then(|()| fs::rename(&self.tmp, &self.path).map_err(io(&self.path)));
        if renamed.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        renamed.map(|()| true)
    }
}

impl Drop for InOrderWriter<'_> {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes rows that are already in (point, replication) order into `path`, atomically.
pub(crate) fn write_sorted<I>(layout: Layout<'_>, path: &Path, rows: I) -> Result<u64, OutputError>
where
    I: Iterator<Item = Result<(u32, u64, u64, Vec<MetricCell>), OutputError>>,
{
    let mut count = 0;
    crate::output::write_atomically(path, |w| {
        let mut writer = RowGroupWriter::new(layout, w, path)?;
        for row in rows {
            let (point, replication, seed, values) = row?;
            writer.push(point, replication, seed, values.into_iter())?;
        }
        count = writer.finish()?.1;
        Ok(())
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalWriter};

    fn record(point: u32, replication: u64) -> ReplicationRecord {
        let x = (point as f64) * 100.0 + replication as f64 / 3.0;
        let metrics = vec![
            ("wait_s".into(), MetricCell::Number(Some(x))),
            (
                "empty_s".into(),
                MetricCell::Number(if replication.is_multiple_of(5) { None } else { Some(f64::INFINITY) }),
            ),
            ("stable".into(), MetricCell::Flag(replication.is_multiple_of(2))),
        ];
        ReplicationRecord { point, replication, seed: replication * 7 + 1, metrics, error: None, groups: Vec::new() }
    }

    fn failed(point: u32, replication: u64) -> ReplicationRecord {
        ReplicationRecord {
            point,
            replication,
            seed: 3,
            metrics: Vec::new(),
            error: Some("no".into()),
            groups: Vec::new(),
        }
    }

    /// Offers `records` (work item index, record) in the order given and also journals
    /// them; returns whether the in-order file was written, its bytes, and those of the
    /// journal sorted into the file at the end.
    fn both_ways(dir: &Path, records: Vec<(u64, ReplicationRecord)>, items: u64) -> (bool, Vec<u8>, Vec<u8>) {
        let sweep = SweepGrid::new(vec![("station.servers".to_string(), vec![Value::Integer(4), Value::Integer(5)])]);
        let streamed = dir.join("streamed.parquet");
        let mut writer = InOrderWriter::new(&streamed, &sweep);
        let mut journal = JournalWriter::open(dir).unwrap();
        for (k, r) in records {
            journal.append(&r).unwrap();
            writer.offer(k, r).unwrap();
        }
        let written = writer.finish(items).unwrap();
        let scan = Journal::new(dir).scan(|p, r| u64::from(p) * 1000 + r).unwrap();
        let sorted = dir.join("sorted.parquet");
        Journal::new(dir).write_parquet(&sorted, &dir.join("work"), &sweep, &scan.metrics).unwrap();
        assert_eq!(streamed.exists(), written);
        let streamed_bytes = if written { fs::read(&streamed).unwrap() } else { Vec::new() };
        let leftovers: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        (written, streamed_bytes, fs::read(sorted).unwrap())
    }

    #[test]
    fn records_finishing_out_of_order_make_the_bytes_of_the_sorted_journal() {
        let dir = tempfile::tempdir().unwrap();
        // Two points of 3 * ROW_GROUP_ROWS / 2 replications (row groups fill and spill
        // over the point boundary), finishing in a scrambled order within windows of
        // 37, with failures.
        let per_point = 3 * ROW_GROUP_ROWS as u64 / 2;
        let items = 2 * per_point;
        let mut order: Vec<u64> = (0..items).collect();
        for window in order.chunks_mut(37) {
            window.reverse();
            window.rotate_left(window.len() / 3);
        }
        let records = order
            .into_iter()
            .map(|k| {
                let (p, r) = ((k / per_point) as u32, k % per_point);
                (k, if r % 1000 == 17 { failed(p, r) } else { record(p, r) })
            })
            .collect();
        let (written, streamed, sorted) = both_ways(dir.path(), records, items);
        assert!(written);
        assert_eq!(streamed, sorted);
    }

    #[test]
    fn it_leaves_the_file_to_the_journal_when_it_cannot_write_in_order() {
        // A record that waits on one more than MAX_WAITING others.
        let dir = tempfile::tempdir().unwrap();
        let items = MAX_WAITING as u64 + 10;
        let records = (1..items).chain([0]).map(|k| (k, record(0, k))).collect();
        let (written, _, sorted) = both_ways(dir.path(), records, items);
        assert!(!written && !sorted.is_empty());

        // Replications that report different metrics.
        let dir = tempfile::tempdir().unwrap();
        let mut other = record(0, 1);
        other.metrics.pop();
        let (written, _, _) = both_ways(dir.path(), vec![(0, record(0, 0)), (1, other), (2, record(0, 2))], 3);
        assert!(!written);

        // Not every item offered (an interrupted batch), or none succeeded.
        let dir = tempfile::tempdir().unwrap();
        let (written, _, _) = both_ways(dir.path(), vec![(0, record(0, 0)), (1, record(0, 1))], 3);
        assert!(!written);
        let dir = tempfile::tempdir().unwrap();
        let (written, _, _) = both_ways(dir.path(), vec![(0, failed(0, 0))], 1);
        assert!(!written);
    }
}
