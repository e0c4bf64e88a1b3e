//! The output directory of a batch (DESIGN section 4):
//!
//! ```text
//! OUT/manifest.json          tool version, resolved scenario, seeds, points, progress, times
//! OUT/scenario.toml          the resolved scenario
//! OUT/replications.parquet   one row per (point, replication)
//! OUT/summary.parquet, .csv  one row per (point, metric)
//! OUT/parts.jsonl            one line per finished replication while a batch is under way
//! ```
//!
//! Every file appears atomically: it is written under a temporary name in the same
//! directory and renamed into place, so a reader (or a crash) never sees half a file.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use toml::Value;

/// Failures of reading or writing outputs, with the path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// A file-system operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// Parquet or Arrow refused the data.
    #[error("{path}: {message}")]
    Format {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |error| OutputError::Io { path: path.to_path_buf(), error }
}

fn format_err(path: &Path) -> impl FnOnce(String) -> OutputError + '_ {
    move |message| OutputError::Format { path: path.to_path_buf(), message }
}

/// Writes `path` atomically: `write` fills a temporary file beside it, which is then
/// flushed, synced and renamed over `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), OutputError>,
) -> Result<(), OutputError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| OutputError::Io { path: tmp.clone(), error: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Zstandard level for every Parquet file infersim writes.
const ZSTD_LEVEL: i32 = 3;

/// Zstandard level for trace files.
const TRACE_ZSTD_LEVEL: i32 = 1;

/// Parquet settings shared by every file infersim writes: zstd, and infersim as the creator.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).expect("3 is a valid zstd level")))
        .set_created_by(format!("infersim {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Settings for streaming trace files: as [`writer_properties`], row groups of
/// [`crate::trace::ROW_GROUP_ROWS`], and dictionary encoding only for text columns. Numbers in a trace (times, latencies, energies)
/// rarely repeat, so a dictionary would hash every value only to be abandoned; text
/// (task names, outcomes) takes a few values and compresses well with one.
pub fn trace_writer_properties(schema: &Schema) -> WriterProperties {
    // One row group per buffer the sink hands over, so the writer never holds more
    // than that (its default would gather a million rows before writing).
    let mut builder = writer_properties()
        .into_builder()
        .set_max_row_group_row_count(Some(crate::trace::ROW_GROUP_ROWS))
        // Level 1: traces are large and written while the simulation runs; level 3
        // cost a quarter of a traced run for a few percent smaller files.
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(TRACE_ZSTD_LEVEL).expect("1 is a valid zstd level")))
        .set_dictionary_enabled(false);
    for field in schema.fields().iter().filter(|f| f.data_type() == &DataType::Utf8) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
    }
    builder.build()
}

/// Writes one record batch to `path` as Parquet, atomically.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), OutputError> {
    write_atomically(path, |w| {
        let mut writer = ArrowWriter::try_new(w, batch.schema(), Some(writer_properties()))
            .map_err(|e| format_err(path)(e.to_string()))?;
        writer.write(batch).map_err(|e| format_err(path)(e.to_string()))?;
        writer.close().map_err(|e| format_err(path)(e.to_string()))?;
        Ok(())
    })
}

/// A column of swept parameter values, typed by the TOML values it holds.
pub fn parameter_column(values: &[&Value]) -> (DataType, ArrayRef) {
    if values.iter().all(|v| v.is_integer()) {
        let a: Int64Array = values.iter().map(|v| v.as_integer()).collect();
        (DataType::Int64, Arc::new(a))
    } else if values.iter().all(|v| v.is_float() || v.is_integer()) {
        let a: Float64Array =
            values.iter().map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64))).collect();
        (DataType::Float64, Arc::new(a))
    } else if values.iter().all(|v| v.is_bool()) {
        let a: BooleanArray = values.iter().map(|v| v.as_bool()).collect();
        (DataType::Boolean, Arc::new(a))
    } else {
        let a: StringArray =
            values.iter().map(|v| Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect();
        (DataType::Utf8, Arc::new(a))
    }
}

/// The column name of a swept key: dots become underscores (`station.servers` ->
/// `station_servers`), so names stay snake_case for every reader.
pub fn parameter_column_name(key: &str) -> String {
    key.replace('.', "_")
}

/// One finished replication, as kept in `parts.jsonl` and in `replications.parquet`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicationRecord {
    /// Point index in the sweep (0 without a sweep).
    pub point: u32,
    /// Replication index.
    pub replication: u64,
    /// The 64-bit seed its streams derive from.
    pub seed: u64,
    /// Metric names and values, in the order the world reports them.
    pub metrics: Vec<(String, MetricCell)>,
    /// Why the replication failed, if it did (it then has no metrics).
    pub error: Option<String>,
}

/// One metric's value as part files keep it: a number (`None` where undefined) or a
/// flag.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricCell {
    /// A number.
    Number(Option<f64>),
    /// True or false.
    Flag(bool),
}

impl From<infersim_agents::world::MetricValue> for MetricCell {
    fn from(value: infersim_agents::world::MetricValue) -> Self {
        match value {
            infersim_agents::world::MetricValue::Number(x) => MetricCell::Number(x),
            infersim_agents::world::MetricValue::Flag(b) => MetricCell::Flag(b),
        }
    }
}

impl MetricCell {
    /// The value as a number (a flag as 1 or 0).
    pub fn number(self) -> Option<f64> {
        match self {
            MetricCell::Number(x) => x,
            MetricCell::Flag(b) => Some(f64::from(u8::from(b))),
        }
    }
}

impl ReplicationRecord {
    /// The value of metric `name`, as a number.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.number())
    }
}

/// The metric names of a batch's records, in order of first appearance, with whether
/// each is a flag.
pub fn metric_columns(records: &[ReplicationRecord]) -> Vec<(String, bool)> {
    let mut names: Vec<(String, bool)> = Vec::new();
    for r in records {
        for (name, value) in &r.metrics {
            if !names.iter().any(|(n, _)| n == name) {
                names.push((name.clone(), matches!(value, MetricCell::Flag(_))));
            }
        }
    }
    names
}

/// The journal of finished replications in a batch's directory: one JSON line each,
/// appended as they finish, removed once replications.parquet is written.
pub fn parts_path(out: &Path) -> PathBuf {
    out.join("parts.jsonl")
}

/// Appends finished replications to `parts.jsonl`: one `write` per record (the
/// kernel keeps it when the process is killed), and the file synced to disk at most
/// once a second (so a power cut loses at most the last second), instead of a file
/// created, synced and renamed per replication.
#[derive(Debug)]
pub struct PartsWriter {
    path: PathBuf,
    file: File,
    synced: std::time::Instant,
}

impl PartsWriter {
    /// Opens the journal for appending, creating it if needed.
    pub fn open(out: &Path) -> Result<PartsWriter, OutputError> {
        let path = parts_path(out);
        let file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        Ok(PartsWriter { path, file, synced: std::time::Instant::now() })
    }

    /// Saves one finished replication.
    pub fn append(&mut self, record: &ReplicationRecord) -> Result<(), OutputError> {
        let mut line = serde_json::to_vec(record).map_err(|e| format_err(&self.path)(e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        if self.synced.elapsed() >= std::time::Duration::from_secs(1) {
            self.file.sync_data().map_err(io(&self.path))?;
            self.synced = std::time::Instant::now();
        }
        Ok(())
    }

    /// Syncs what was appended.
    pub fn sync(&mut self) -> Result<(), OutputError> {
        self.file.sync_data().map_err(io(&self.path))
    }
}

/// Reads the journal of finished replications, sorted by (point, replication). A
/// last line cut short by an interruption is ignored (that replication runs again);
/// any other bad line is an error.
pub fn read_parts(out: &Path) -> Result<Vec<ReplicationRecord>, OutputError> {
    let path = parts_path(out);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&path)(e)),
    };
    let mut records = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<ReplicationRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(format_err(&path)(format!("line {}: {e}", i + 1))),
        }
    }
    records.sort_by_key(|r| (r.point, r.replication));
    Ok(records)
}

/// Replaces the journal with these records (resume drops failed replications, to run
/// them again).
pub fn rewrite_parts(out: &Path, records: &[ReplicationRecord]) -> Result<(), OutputError> {
    let path = parts_path(out);
    write_atomically(&path, |w| {
        for r in records {
            serde_json::to_writer(&mut *w, r).map_err(|e| format_err(&path)(e.to_string()))?;
            w.write_all(b"\n").map_err(io(&path))?;
        }
        w.flush().map_err(io(&path))
    })
}

/// Builds the `replications.parquet` batch: point, replication, seed, the swept
/// parameters of each row's point, then every metric.
pub fn replications_batch(
    records: &[ReplicationRecord],
    sweep_keys: &[String],
    point_params: &[Vec<Value>],
    metric_names: &[(String, bool)],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields = vec![
        Field::new("point", DataType::UInt32, false),
        Field::new("replication", DataType::UInt64, false),
        Field::new("seed", DataType::UInt64, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(records.iter().map(|r| r.point).collect::<UInt32Array>()),
        Arc::new(records.iter().map(|r| r.replication).collect::<UInt64Array>()),
        Arc::new(records.iter().map(|r| r.seed).collect::<UInt64Array>()),
    ];
    for (k, key) in sweep_keys.iter().enumerate() {
        let values: Vec<&Value> = records.iter().map(|r| &point_params[r.point as usize][k]).collect();
        let (dtype, array) = parameter_column(&values);
        fields.push(Field::new(parameter_column_name(key), dtype, false));
        columns.push(array);
    }
    for (name, flag) in metric_names {
        if *flag {
            fields.push(Field::new(name, DataType::Boolean, true));
            columns.push(Arc::new(records.iter().map(|r| r.metric(name).map(|x| x != 0.0)).collect::<BooleanArray>()));
        } else {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(Arc::new(records.iter().map(|r| r.metric(name)).collect::<Float64Array>()));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("infersim-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("parts")).unwrap();
        dir
    }

    #[test]
    fn parts_round_trip_exactly_and_sorted() {
        let dir = tmp("parts");
        let a = ReplicationRecord {
            point: 1,
            replication: 0,
            seed: 7,
            metrics: vec![("a".into(), MetricCell::Number(Some(0.1 + 0.2))), ("b".into(), MetricCell::Flag(true))],
            error: None,
        };
        let b = ReplicationRecord {
            point: 0,
            replication: 3,
            seed: 9,
            metrics: vec![
                ("a".into(), MetricCell::Number(Some(f64::MIN_POSITIVE))),
                ("b".into(), MetricCell::Number(None)),
            ],
            error: None,
        };
        let mut w = PartsWriter::open(&dir).unwrap();
        w.append(&a).unwrap();
        w.append(&b).unwrap();
        w.sync().unwrap();
        assert_eq!(read_parts(&dir).unwrap(), vec![b.clone(), a.clone()]);
        // A line cut short by an interruption is dropped; a bad line elsewhere is an error.
        let text = fs::read_to_string(parts_path(&dir)).unwrap();
        fs::write(parts_path(&dir), format!("{text}{{\"point\": 2, \"repl")).unwrap();
        assert_eq!(read_parts(&dir).unwrap(), vec![b.clone(), a.clone()]);
        fs::write(parts_path(&dir), format!("garbage\n{text}")).unwrap();
        assert!(read_parts(&dir).unwrap_err().to_string().contains("line 1"));
        rewrite_parts(&dir, std::slice::from_ref(&a)).unwrap();
        assert_eq!(read_parts(&dir).unwrap(), vec![a]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let dir = tmp("atomic");
        let path = dir.join("x.txt");
        let r = write_atomically(&path, |_| Err(OutputError::Format { path: path.clone(), message: "no".into() }));
        assert!(r.is_err());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "only parts/ remains");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parameter_columns_keep_their_types() {
        let ints = [Value::Integer(1), Value::Integer(2)];
        assert_eq!(parameter_column(&ints.iter().collect::<Vec<_>>()).0, DataType::Int64);
        let mixed = [Value::Integer(1), Value::Float(2.5)];
        assert_eq!(parameter_column(&mixed.iter().collect::<Vec<_>>()).0, DataType::Float64);
        let words = [Value::String("a".into())];
        assert_eq!(parameter_column(&words.iter().collect::<Vec<_>>()).0, DataType::Utf8);
        assert_eq!(parameter_column_name("station.servers"), "station_servers");
    }
}
