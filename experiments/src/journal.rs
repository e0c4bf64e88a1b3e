//! The journal of a batch under way (`OUT/parts.jsonl`) and its assembly into
//! `replications.parquet`, both in memory that does not grow with the batch.
//!
//! Each finished replication is one line, appended the moment it finishes. Metric names
//! are not repeated on every line: a schema line names them, and the record lines after
//! it hold values only, in that order:
//!
//! ```text
//! {"metrics":[["wait_s",false],["stable",true]]}
//! [0,17,4021855520719,null,[0.81,true]]
//! [0,18,9135226041731,"panicked: ...",[]]
//! ```
//!
//! A record line is `[point, replication, seed, error or null, [values]]`; a value is a
//! number, `null` (undefined) or a flag. A last line cut short by an interruption is
//! ignored, so that replication runs again.
//!
//! Assembly is an external sort: the journal is read in chunks of bounded size, each
//! chunk sorted by (point, replication); one chunk is written straight to Parquet, more
//! are written as sorted runs and merged. Memory is that of one chunk, however many
//! replications the batch has.
//!
//! ```
//! use infersim::journal::{Journal, JournalWriter};
//! use infersim::output::{MetricCell, ReplicationRecord};
//! let dir = std::env::temp_dir().join(format!("infersim-journal-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let mut w = JournalWriter::open(&dir).unwrap();
//! for r in [3u64, 1, 2] {
//!     let metrics = vec![("wait_s".into(), MetricCell::Number(Some(r as f64)))];
//!     w.append(&ReplicationRecord { point: 0, replication: r, seed: 7, metrics, error: None, groups: Vec::new() }).unwrap();
//! }
//! w.sync().unwrap();
//! let scan = Journal::new(&dir).scan(|p, r| u64::from(p) * 10 + r).unwrap();
//! assert_eq!((scan.succeeded, scan.metrics.len()), (3, 1));
//! # std::fs::remove_dir_all(dir).unwrap();
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::output::{MetricCell, OutputError, ReplicationRecord, write_atomically};
use crate::replications::{Layout, same_columns, write_sorted};
use crate::sweep::SweepGrid;

/// A metric column: its name and whether it is a flag.
pub type MetricColumn = (String, bool);

/// The journal file of an output directory.
pub fn journal_path(out: &Path) -> PathBuf {
    out.join("parts.jsonl")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |error| OutputError::Io { path: path.to_path_buf(), error }
}

fn bad(path: &Path, line: u64, message: impl std::fmt::Display) -> OutputError {
    OutputError::Format { path: path.to_path_buf(), message: format!("line {line}: {message}") }
}

/// Appends finished replications to the journal: one `write` per record (the kernel
/// keeps it if the process is killed), synced to disk at most once a second (a power
/// cut loses at most the last second).
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    synced: std::time::Instant,
    /// The metric columns of the last schema line this writer wrote.
    schema: Vec<MetricColumn>,
    line: Vec<u8>,
}

impl JournalWriter {
    /// Opens the journal of `out` for appending, creating it if needed.
    pub fn open(out: &Path) -> Result<JournalWriter, OutputError> {
        let path = journal_path(out);
        let file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        Ok(JournalWriter { path, file, synced: std::time::Instant::now(), schema: Vec::new(), line: Vec::new() })
    }

    /// Saves one finished replication.
    pub fn append(&mut self, record: &ReplicationRecord) -> Result<(), OutputError> {
        self.line.clear();
        if record.error.is_none() && !same_columns(&self.schema, record) {
            self.schema =
                record.metrics.iter().map(|(n, v)| (n.to_string(), matches!(v, MetricCell::Flag(_)))).collect();
            encode_schema(&mut self.line, &self.schema);
        }
        encode_record(&mut self.line, record.point, record.replication, record.seed, record.error.as_deref(), {
            record.metrics.iter().map(|(_, v)| *v)
        });
        self.file.write_all(&self.line).map_err(io(&self.path))?;
        if self.synced.elapsed() >= std::time::Duration::from_secs(1) {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs what was appended.
    pub fn sync(&mut self) -> Result<(), OutputError> {
        self.file.sync_data().map_err(io(&self.path))?;
        self.synced = std::time::Instant::now();
        Ok(())
    }
}

fn encode_schema(line: &mut Vec<u8>, schema: &[MetricColumn]) {
    let columns: Vec<(&str, bool)> = schema.iter().map(|(n, f)| (n.as_str(), *f)).collect();
    line.extend_from_slice(b"{\"metrics\":");
    serde_json::to_writer(&mut *line, &columns).expect("metric names serialise");
    line.extend_from_slice(b"}\n");
}

fn encode_record(
    line: &mut Vec<u8>,
    point: u32,
    replication: u64,
    seed: u64,
    error: Option<&str>,
    values: impl Iterator<Item = MetricCell>,
) {
    use std::io::Write as _;
    let _ = write!(line, "[{point},{replication},{seed},");
    match error {
        Some(e) => serde_json::to_writer(&mut *line, e).expect("a string serialises"),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",[");
    for (i, v) in values.enumerate() {
        if i > 0 {
            line.push(b',');
        }
        match v {
            // serde_json writes f64 with the shortest digits that read back exactly,
            // and non-finite values as null.
            MetricCell::Number(Some(x)) => serde_json::to_writer(&mut *line, &x).expect("a number serialises"),
            MetricCell::Number(None) => line.extend_from_slice(b"null"),
            MetricCell::Flag(b) => line.extend_from_slice(if b { b"true" } else { b"false" }),
        }
    }
    line.extend_from_slice(b"]]\n");
}

/// One replication as read back from a journal: its values in the order of the schema
/// line it followed (`schema`, an index into the reader's schemas).
#[derive(Clone, Debug, PartialEq)]
pub struct JournalRow {
    /// Point index.
    pub point: u32,
    /// Replication index.
    pub replication: u64,
    /// Its seed.
    pub seed: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Which schema its values follow.
    pub schema: usize,
    /// Metric values.
    pub values: Vec<MetricCell>,
}

impl JournalRow {
    fn key(&self) -> (u32, u64) {
        (self.point, self.replication)
    }
}

/// Reads a journal line by line.
struct JournalReader {
    path: PathBuf,
    lines: std::iter::Peekable<std::io::Lines<BufReader<File>>>,
    line_no: u64,
    /// Every distinct schema seen so far.
    schemas: Vec<Vec<MetricColumn>>,
    current: Option<usize>,
    /// Whether the file ends with a newline (else its last line may be cut short).
    ends_with_newline: bool,
}

impl JournalReader {
    fn open(path: &Path) -> Result<Option<JournalReader>, OutputError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        };
        let ends_with_newline = {
            use std::io::{Read, Seek, SeekFrom};
            let len = file.metadata().map_err(io(path))?.len();
            if len == 0 {
                true
            } else {
                file.seek(SeekFrom::End(-1)).map_err(io(path))?;
                let mut last = [0u8];
                file.read_exact(&mut last).map_err(io(path))?;
                file.seek(SeekFrom::Start(0)).map_err(io(path))?;
                last[0] == b'\n'
            }
        };
        Ok(Some(JournalReader {
            path: path.to_path_buf(),
            lines: BufReader::with_capacity(1 << 16, file).lines().peekable(),
            line_no: 0,
            schemas: Vec::new(),
            current: None,
            ends_with_newline,
        }))
    }

    /// The next record, `None` at the end. A cut last line ends the journal.
    fn next_row(&mut self) -> Result<Option<JournalRow>, OutputError> {
        loop {
            let Some(line) = self.lines.next() else { return Ok(None) };
            let line = line.map_err(io(&self.path))?;
            self.line_no += 1;
            let last = self.lines.peek().is_none();
            match self.parse(&line) {
                Ok(Some(row)) => return Ok(Some(row)),
                Ok(None) => {}
                Err(_) if last && !self.ends_with_newline => return Ok(None),
                Err(message) => return Err(bad(&self.path, self.line_no, message)),
            }
        }
    }

    /// A record, or `None` for a schema line.
    fn parse(&mut self, line: &str) -> Result<Option<JournalRow>, String> {
        if line.starts_with('{') {
            #[derive(serde::Deserialize)]
            struct SchemaLine {
                metrics: Vec<MetricColumn>,
            }
            let schema = serde_json::from_str::<SchemaLine>(line).map_err(|e| e.to_string())?.metrics;
            let index = match self.schemas.iter().position(|s| *s == schema) {
                Some(i) => i,
                None => {
                    self.schemas.push(schema);
                    self.schemas.len() - 1
                }
            };
            self.current = Some(index);
            return Ok(None);
        }
        let (point, replication, seed, error, values) = match parse_plain_record(line) {
            Some((point, replication, seed, values)) => (point, replication, seed, None, values),
            None => {
                let (point, replication, seed, error, values): (u32, u64, u64, Option<String>, Vec<Json>) =
                    serde_json::from_str(line).map_err(|e| e.to_string())?;
                let values = values
                    .into_iter()
                    .map(|v| match v {
                        Json::Null => Ok(MetricCell::Number(None)),
                        Json::Bool(b) => Ok(MetricCell::Flag(b)),
                        Json::Number(n) => Ok(MetricCell::Number(n.as_f64())),
                        other => Err(format!("{other} is not a metric value")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (point, replication, seed, error, values)
            }
        };
        let schema = match (self.current, &error) {
            (Some(s), _) => s,
            (None, Some(_)) => usize::MAX,
            (None, None) => return Err("a record before any schema line".into()),
        };
        let width = self.schemas.get(schema).map_or(0, Vec::len);
        if error.is_none() && values.len() != width {
            return Err(format!("{} values where the schema names {width}", values.len()));
        }
        Ok(Some(JournalRow { point, replication, seed, error, schema, values }))
    }
}

/// A successful record line as [`encode_record`] writes it, `[point,replication,seed,
/// null,[values]]`, read without building JSON values: reading the journal back was
/// most of the cost of finishing a batch of many small replications. Anything else
/// (a failure with its message, a line cut short) returns `None` and goes through
/// serde_json. Numbers parse correctly rounded (`str::parse`), as serde_json with
/// `float_roundtrip` does.
fn parse_plain_record(line: &str) -> Option<(u32, u64, u64, Vec<MetricCell>)> {
    let rest = line.strip_prefix('[')?;
    let (point, rest) = rest.split_once(',')?;
    let (replication, rest) = rest.split_once(',')?;
    let (seed, rest) = rest.split_once(',')?;
    let values = rest.strip_prefix("null,[")?.strip_suffix("]]")?;
    let cell = |v: &str| match v {
        "null" => Some(MetricCell::Number(None)),
        "true" => Some(MetricCell::Flag(true)),
        "false" => Some(MetricCell::Flag(false)),
        number => number.parse::<f64>().ok().filter(|x| x.is_finite()).map(|x| MetricCell::Number(Some(x))),
    };
    let cells = if values.is_empty() { Vec::new() } else { values.split(',').map(cell).collect::<Option<_>>()? };
    Some((point.parse().ok()?, replication.parse().ok()?, seed.parse().ok()?, cells))
}

/// Global positions of finished work items, kept as disjoint ranges: a batch's items
/// finish nearly in order, so this stays a handful of ranges however many finish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive).
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl RangeSet {
    /// Adds `x`.
    pub fn insert(&mut self, x: u64) {
        if self.contains(x) {
            return;
        }
        let mut start = x;
        let mut end = x + 1;
        if let Some((&s, &e)) = self.ranges.range(..x).next_back()
            && e == x
        {
            start = s;
            self.ranges.remove(&s);
        }
        if let Some(e) = self.ranges.remove(&end) {
            end = e;
        }
        self.ranges.insert(start, end);
        self.len += 1;
    }

    /// Whether `x` is in the set.
    pub fn contains(&self, x: u64) -> bool {
        self.ranges.range(..=x).next_back().is_some_and(|(_, &e)| x < e)
    }

    /// How many positions it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many disjoint ranges it is kept as.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// What a pass over a journal found.
#[derive(Clone, Debug, Default)]
pub struct JournalScan {
    /// Metric columns in order of first appearance.
    pub metrics: Vec<MetricColumn>,
    /// Replications that succeeded, by global position (point x replications + r).
    pub done: RangeSet,
    /// How many succeeded.
    pub succeeded: u64,
    /// Those that failed: point, replication, error.
    pub failed: Vec<(u32, u64, String)>,
}

impl JournalScan {
    /// Takes one replication into account, as a scan meeting it in the journal would:
    /// a batch keeps its scan up to date while it appends, instead of reading the
    /// journal again at the end.
    pub fn note<'a>(
        &mut self,
        point: u32,
        replication: u64,
        error: Option<String>,
        columns: impl Iterator<Item = (&'a str, bool)>,
        position: u64,
    ) {
        if let Some(error) = error {
            self.failed.push((point, replication, error));
            return;
        }
        for (name, flag) in columns {
            if !self.metrics.iter().any(|(n, _)| n == name) {
                self.metrics.push((name.to_string(), flag));
            }
        }
        self.done.insert(position);
        self.succeeded += 1;
    }

    /// Takes what a JournalWriter appended for `record` into account.
    pub fn note_record(&mut self, record: &ReplicationRecord, position: u64) {
        let columns = record.metrics.iter().map(|(n, v)| (n.as_ref(), matches!(v, MetricCell::Flag(_))));
        self.note(record.point, record.replication, record.error.clone(), columns, position);
    }
}

/// The journal of one output directory.
#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
}

/// Metric values held in memory at once while sorting. A row costs about 16 bytes per
/// value plus about 100 bytes of its own, so a chunk stays near 30 MB whatever the
/// batch's size (mmc's nine metrics: chunks of 111,111 rows).
const CHUNK_VALUES: usize = 1_000_000;

impl Journal {
    /// The journal of `out`.
    pub fn new(out: &Path) -> Journal {
        Journal { path: journal_path(out) }
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    fn for_each(&self, mut f: impl FnMut(JournalRow, &[Vec<MetricColumn>])) -> Result<bool, OutputError> {
        let Some(mut reader) = JournalReader::open(&self.path)? else { return Ok(false) };
        while let Some(row) = reader.next_row()? {
            f(row, &reader.schemas);
        }
        Ok(true)
    }

    /// One pass over the journal: metric columns, which replications succeeded and which
    /// failed. `position` turns (point, replication) into a global position (the batch's
    /// [`crate::runner::WorkPlan::position`]).
    pub fn scan(&self, position: impl Fn(u32, u64) -> u64) -> Result<JournalScan, OutputError> {
        let mut scan = JournalScan::default();
        self.for_each(|row, schemas| {
            let columns = schemas.get(row.schema).into_iter().flatten().map(|(n, f)| (n.as_str(), *f));
            scan.note(row.point, row.replication, row.error, columns, position(row.point, row.replication));
        })?;
        Ok(scan)
    }

    /// Rewrites the journal with its successful records only (failed replications are
    /// run again on resume), dropping a line cut short by an interruption.
    pub fn drop_failures(&self) -> Result<(), OutputError> {
        let Some(mut reader) = JournalReader::open(&self.path)? else { return Ok(()) };
        write_atomically(&self.path, |w| {
            let mut written_schema = usize::MAX;
            let mut line = Vec::new();
            while let Some(row) = reader.next_row()? {
                if row.error.is_some() {
                    continue;
                }
                line.clear();
                if row.schema != written_schema {
                    encode_schema(&mut line, &reader.schemas[row.schema]);
                    written_schema = row.schema;
                }
                encode_record(&mut line, row.point, row.replication, row.seed, None, row.values.into_iter());
                w.write_all(&line).map_err(io(&self.path))?;
            }
            w.flush().map_err(io(&self.path))
        })
    }

    /// Writes the successful records to `parquet` (atomically), sorted by (point,
    /// replication): point, replication, seed, one column per key of `sweep`, then
    /// `metrics`. Temporary sorted runs, when the journal is larger than one chunk, go
    /// to `work` and are removed.
    pub fn write_parquet(
        &self,
        parquet: &Path,
        work: &Path,
        sweep: &SweepGrid,
        metrics: &[MetricColumn],
    ) -> Result<u64, OutputError> {
        let chunk_rows = (CHUNK_VALUES / metrics.len().max(1)).max(1024);
        self.write_parquet_in_chunks(parquet, work, sweep, metrics, chunk_rows)
    }

    fn write_parquet_in_chunks(
        &self,
        parquet: &Path,
        work: &Path,
        sweep: &SweepGrid,
        metrics: &[MetricColumn],
        chunk_rows: usize,
    ) -> Result<u64, OutputError> {
        let mut chunk: Vec<(JournalRow, Arc<Vec<usize>>)> = Vec::new();
        let mut runs: Vec<PathBuf> = Vec::new();
        let mut mappings: Vec<Arc<Vec<usize>>> = Vec::new();
        let layout = Layout { sweep, metrics: metrics.to_vec() };
        let mut failure = None;
        let spill = |chunk: &mut Vec<(JournalRow, Arc<Vec<usize>>)>, runs: &mut Vec<PathBuf>| {
            chunk.sort_unstable_by_key(|(r, _)| r.key());
            fs::create_dir_all(work).map_err(io(work))?;
            let path = work.join(format!("sorted-run-{}.jsonl", runs.len()));
            let file = File::create(&path).map_err(io(&path))?;
            let mut w = BufWriter::new(file);
            let mut line = Vec::new();
            encode_schema(&mut line, metrics);
            for (row, map) in chunk.drain(..) {
                encode_record(&mut line, row.point, row.replication, row.seed, None, aligned(&row, &map));
                w.write_all(&line).map_err(io(&path))?;
                line.clear();
            }
            w.flush().map_err(io(&path))?;
            runs.push(path);
            Ok::<(), OutputError>(())
        };
        self.for_each(|row, schemas| {
            if row.error.is_some() || failure.is_some() {
                return;
            }
            while mappings.len() < schemas.len() {
                let s = &schemas[mappings.len()];
                let map = metrics.iter().map(|(n, _)| s.iter().position(|(m, _)| m == n).unwrap_or(usize::MAX));
                mappings.push(Arc::new(map.collect()));
            }
            let map = Arc::clone(&mappings[row.schema]);
            chunk.push((row, map));
            if chunk.len() >= chunk_rows
                && let Err(e) = spill(&mut chunk, &mut runs)
            {
                failure = Some(e);
            }
        })?;
        if let Some(e) = failure {
            let _ = fs::remove_dir_all(work);
            return Err(e);
        }
        let result = if runs.is_empty() {
            chunk.sort_unstable_by_key(|(r, _)| r.key());
            let rows = chunk.into_iter().map(|(row, map)| {
                let values = aligned(&row, &map).collect();
                Ok((row.point, row.replication, row.seed, values))
            });
            write_sorted(layout, parquet, rows)
        } else {
            let spilled = if chunk.is_empty() { Ok(()) } else { spill(&mut chunk, &mut runs) };
            spilled.and_then(|()| write_sorted(layout, parquet, merge_runs(&runs)?))
        };
        if !runs.is_empty() {
            let _ = fs::remove_dir_all(work);
        }
        result
    }
}

/// A row with its values in the batch's metric order: point, replication, seed, values.
type AlignedRow = (u32, u64, u64, Vec<MetricCell>);

/// Sorted runs merged into one sorted stream of rows.
fn merge_runs(runs: &[PathBuf]) -> Result<impl Iterator<Item = Result<AlignedRow, OutputError>>, OutputError> {
    let mut readers = Vec::new();
    let mut heap = BinaryHeap::new();
    for (i, path) in runs.iter().enumerate() {
        let mut reader = JournalReader::open(path)?.ok_or_else(|| io(path)(std::io::ErrorKind::NotFound.into()))?;
        if let Some(row) = reader.next_row()? {
            heap.push(Reverse(((row.point, row.replication), i)));
            readers.push((reader, Some(row)));
        } else {
            readers.push((reader, None));
        }
    }
    Ok(std::iter::from_fn(move || {
        let Reverse((_, i)) = heap.pop()?;
        let (reader, slot) = &mut readers[i];
        let row = slot.take().expect("a run in the heap holds its next row");
        match reader.next_row() {
            Ok(Some(next)) => {
                heap.push(Reverse(((next.point, next.replication), i)));
                *slot = Some(next);
            }
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok((row.point, row.replication, row.seed, row.values)))
    }))
}

/// `row`'s values in the batch's metric order (`map[j]`: where metric j is in the row's
/// own schema), undefined where its schema lacks one.
fn aligned<'r>(row: &'r JournalRow, map: &'r [usize]) -> impl Iterator<Item = MetricCell> + 'r {
    map.iter().map(|&k| row.values.get(k).copied().unwrap_or(MetricCell::Number(None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("infersim-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(point: u32, replication: u64, metrics: Vec<(&str, MetricCell)>) -> ReplicationRecord {
        let metrics = metrics.into_iter().map(|(n, v)| (n.to_string().into(), v)).collect();
        ReplicationRecord { point, replication, seed: replication * 3 + 1, metrics, error: None, groups: Vec::new() }
    }

    fn rows(dir: &Path) -> Vec<JournalRow> {
        let mut out = Vec::new();
        Journal::new(dir).for_each(|r, _| out.push(r)).unwrap();
        out
    }

    #[test]
    fn records_round_trip_exactly() {
        let dir = tmp("round-trip");
        let a = record(1, 0, vec![("a", MetricCell::Number(Some(0.1 + 0.2))), ("b", MetricCell::Flag(true))]);
        let b = record(0, 3, vec![("a", MetricCell::Number(Some(f64::MIN_POSITIVE))), ("b", MetricCell::Flag(false))]);
        let c = record(0, 4, vec![("a", MetricCell::Number(None))]);
        let mut failed = record(0, 5, vec![]);
        failed.error = Some("panicked: \"quoted\"\nline".into());
        let mut w = JournalWriter::open(&dir).unwrap();
        for r in [&a, &b, &c, &failed] {
            w.append(r).unwrap();
        }
        w.sync().unwrap();
        let back = rows(&dir);
        assert_eq!(back.len(), 4);
        assert_eq!(back[0].values, vec![MetricCell::Number(Some(0.1 + 0.2)), MetricCell::Flag(true)]);
        assert_eq!(back[1].values[0], MetricCell::Number(Some(f64::MIN_POSITIVE)));
        assert_eq!((back[2].schema, back[0].schema), (1, 0), "a record with other metrics starts a schema");
        assert_eq!(back[3].error, failed.error);
        let scan = Journal::new(&dir).scan(|p, r| u64::from(p) * 10 + r).unwrap();
        assert_eq!(scan.metrics, vec![("a".to_string(), false), ("b".to_string(), true)]);
        assert_eq!((scan.succeeded, scan.failed.len()), (3, 1));
        assert!(scan.done.contains(10) && scan.done.contains(3) && !scan.done.contains(5));
        // Names once per schema, not once per line.
        let text = fs::read_to_string(journal_path(&dir)).unwrap();
        assert_eq!(text.matches("\"a\"").count(), 2, "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_finite_number_reads_back_to_the_bit() {
        // serde_json parses floats correctly rounded only with its float_roundtrip
        // feature; without it some came back one ulp off (-1.0165176438012052e113
        // here, and metrics of mmc, serving and bloom-sweep in replications.parquet).
        let dir = tmp("bits");
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let values: Vec<f64> = std::iter::from_fn(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(f64::from_bits(x))
        })
        .filter(|v| v.is_finite())
        .take(5_000)
        .chain([0.1 + 0.2, 1.0 / 3.0, 5e-324, f64::MAX, -0.0, 1.8568697625498398])
        .collect();
        let names: Vec<String> = (0..values.len()).map(|i| format!("m{i}")).collect();
        let cells = names.iter().zip(&values).map(|(n, &v)| (n.as_str(), MetricCell::Number(Some(v)))).collect();
        let mut w = JournalWriter::open(&dir).unwrap();
        w.append(&record(0, 0, cells)).unwrap();
        w.sync().unwrap();
        let back = rows(&dir);
        for (got, want) in back[0].values.iter().zip(&values) {
            assert_eq!(got.number().map(f64::to_bits), Some(want.to_bits()), "{want:e}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cut_last_line_is_dropped_and_other_bad_lines_are_errors() {
        let dir = tmp("cut");
        let mut w = JournalWriter::open(&dir).unwrap();
        w.append(&record(0, 0, vec![("a", MetricCell::Number(Some(1.0)))])).unwrap();
        w.append(&record(0, 1, vec![("a", MetricCell::Number(Some(2.0)))])).unwrap();
        let path = journal_path(&dir);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{text}[0,2,7,null,[3.")).unwrap();
        assert_eq!(rows(&dir).len(), 2);
        Journal::new(&dir).drop_failures().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "the cut line is gone, the rest is as written");
        fs::write(&path, format!("garbage\n{text}")).unwrap();
        let e = Journal::new(&dir).scan(|p, r| u64::from(p) * 10 + r).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        fs::write(&path, "[0,0,1,null,[1.0]]\n").unwrap();
        assert!(
            Journal::new(&dir)
                .scan(|p, r| u64::from(p) * 10 + r)
                .unwrap_err()
                .to_string()
                .contains("before any schema")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drop_failures_keeps_every_success() {
        let dir = tmp("drop");
        let mut w = JournalWriter::open(&dir).unwrap();
        for r in 0..6 {
            let mut rec = record(0, r, vec![("a", MetricCell::Number(Some(r as f64)))]);
            if r % 2 == 1 {
                rec = record(0, r, vec![]);
                rec.error = Some("no".into());
            }
            w.append(&rec).unwrap();
        }
        Journal::new(&dir).drop_failures().unwrap();
        let back: Vec<u64> = rows(&dir).iter().map(|r| r.replication).collect();
        assert_eq!(back, vec![0, 2, 4]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn range_sets_merge_neighbours() {
        let mut s = RangeSet::default();
        for x in [5, 3, 4, 10, 0, 1, 2, 4] {
            s.insert(x);
        }
        assert_eq!((s.len(), s.ranges()), (7, 2));
        assert!((0..=5).all(|x| s.contains(x)) && s.contains(10));
        assert!(!s.contains(6) && !s.contains(9) && !s.contains(11));
        s.insert(6);
        s.insert(7);
        s.insert(9);
        s.insert(8);
        assert_eq!((s.len(), s.ranges()), (11, 1));
    }

    fn parquet_rows(path: &Path) -> Vec<(u32, u64, Option<f64>)> {
        use arrow::array::{Array, Float64Array, UInt32Array, UInt64Array};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let p = batch.column(0).as_any().downcast_ref::<UInt32Array>().unwrap();
            let r = batch.column(1).as_any().downcast_ref::<UInt64Array>().unwrap();
            let a = batch.column_by_name("a").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
            for i in 0..batch.num_rows() {
                out.push((p.value(i), r.value(i), (!a.is_null(i)).then(|| a.value(i))));
            }
        }
        out
    }

    #[test]
    fn assembly_sorts_in_one_chunk_or_many_runs_alike() {
        let dir = tmp("sort");
        let mut w = JournalWriter::open(&dir).unwrap();
        // Finished out of order, over two points, with a schema change and a failure.
        let n = 3000u64;
        for k in 0..2 * n {
            let (p, r) = ((k * 7919 % (2 * n)) as u32 % 2, (k * 7919 % (2 * n)) / 2);
            let rec = if r == 17 {
                let mut f = record(p, r, vec![]);
                f.error = Some("failed".into());
                f
            } else if r % 100 == 0 {
                record(p, r, vec![("b", MetricCell::Flag(true))])
            } else if r == 42 {
                // Non-finite: the journal holds it as undefined.
                record(p, r, vec![("a", MetricCell::Number(Some(f64::INFINITY))), ("b", MetricCell::Flag(false))])
            } else {
                let a = r as f64 / 7.0;
                record(p, r, vec![("a", MetricCell::Number(Some(a))), ("b", MetricCell::Flag(false))])
            };
            w.append(&rec).unwrap();
        }
        let journal = Journal::new(&dir);
        let scan = journal.scan(|p, r| u64::from(p) * n + r).unwrap();
        use toml::Value;
        let sweep = SweepGrid::new(vec![("x.y".to_string(), vec![Value::Integer(1), Value::Float(2.5)])]);
        let one = dir.join("one.parquet");
        assert_eq!(journal.write_parquet(&one, &dir.join("work"), &sweep, &scan.metrics).unwrap(), 2 * n - 2);
        let got = parquet_rows(&one);
        let want: Vec<_> = (0..2u32)
            .flat_map(|p| {
                (0..n).filter(|&r| r != 17).map(move |r| (p, r, (r % 100 != 0 && r != 42).then_some(r as f64 / 7.0)))
            })
            .collect();
        assert_eq!(got, want);
        // Sorted runs of 500 rows (12 of them) merge to the same bytes.
        let many = dir.join("many.parquet");
        journal.write_parquet_in_chunks(&many, &dir.join("work"), &sweep, &scan.metrics, 500).unwrap();
        assert_eq!(fs::read(&many).unwrap(), fs::read(&one).unwrap());
        assert!(!dir.join("work").exists(), "sorted runs are removed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
