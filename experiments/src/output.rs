//! The output directory of a batch (DESIGN section 4):
//!
//! ```text
//! OUT/manifest.json          tool version, resolved scenario, seeds, points, progress, times
//! OUT/scenario.toml          the resolved scenario
//! OUT/replications.parquet   one row per (point, replication)
//! OUT/summary.parquet, .csv  one row per (point, metric)
//! OUT/parts.jsonl            one line per finished replication while a batch is under way
//!                            (see [`crate::journal`])
//! ```
//!
//! Every file appears atomically: it is written under a temporary name in the same
//! directory and renamed into place, so a reader (or a crash) never sees half a file.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Schema};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
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
/// [`crate::trace::ROW_GROUP_ROWS`], zstd level 1, and dictionaries only for text
/// columns (task names, outcomes; times, latencies and energies rarely repeat).
pub fn trace_writer_properties(schema: &Schema) -> WriterProperties {
    // One row group per buffer the sink hands over, so the writer never holds more
    // than that (its default would gather a million rows before writing).
    let builder = writer_properties()
        .into_builder()
        .set_max_row_group_row_count(Some(crate::trace::ROW_GROUP_ROWS))
        // Level 1: traces are large and written while the simulation runs; level 3
        // cost a quarter of a traced run for a few percent smaller files.
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(TRACE_ZSTD_LEVEL).expect("1 is a valid zstd level")));
    dictionaries_for_text_only(builder, schema).build()
}

/// Dictionary encoding for the text columns of `schema` only: numbers rarely repeat,
/// so a dictionary would hash every value only to be abandoned, while text takes a few
/// values and compresses well with one.
fn dictionaries_for_text_only(builder: WriterPropertiesBuilder, schema: &Schema) -> WriterPropertiesBuilder {
    let mut builder = builder.set_dictionary_enabled(false);
    for field in schema.fields().iter().filter(|f| f.data_type() == &DataType::Utf8) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
    }
    builder
}

/// Settings for replications.parquet, which a batch fills one row group at a time as
/// replications finish: as [`writer_properties`], with dictionaries only for text
/// columns (a dictionary per metric column held a hash table of every value of the
/// row group, doubling the memory of a running batch) and statistics per column
/// chunk but no page index (one page per chunk here; the index would add to the
/// footer, which the writer holds until the file closes, for every row group).
pub fn replication_writer_properties(schema: &Schema) -> WriterProperties {
    let builder = writer_properties()
        .into_builder()
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true);
    dictionaries_for_text_only(builder, schema).build()
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
    pub metrics: Vec<(Cow<'static, str>, MetricCell)>,
    /// Why the replication failed, if it did (it then has no metrics).
    pub error: Option<String>,
    /// The metrics of its parts (a fleet's pools and models), if the world reports any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<crate::groups::GroupRecord>,
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
