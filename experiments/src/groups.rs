//! Tables of a batch's parts: a world that reports metrics per part of a replication
//! (a fleet's pools and models) gets one tidy table per kind of part beside
//! replications.parquet, `OUT/<kind>s.parquet` (point, replication, seed, the part's
//! name in a `<kind>` column, then its metrics), with `OUT/<kind>s_summary.parquet`
//! and `.csv` (a row per point, part and metric: n, mean, std and the interval).
//!
//! While the batch runs, each replication's parts are appended to `OUT/groups.jsonl`
//! before its record reaches the journal, so an interrupted batch keeps them; a part
//! written twice (its replication ran again after an interruption between the two
//! appends) is read once, the last time. The file goes once the tables are written.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use infersim_engine::stats::Tally;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::{AnalysisError, reshape_summary, write_csv, write_frame_parquet};
use crate::output::OutputError;
use crate::output::{MetricCell, ReplicationRecord};

/// One part of one replication, as `groups.jsonl` keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// What kind of part (`pool`, `model`).
    pub kind: String,
    /// Which one.
    pub name: String,
    /// Its metrics, in the order the world reports them.
    pub metrics: Vec<(Cow<'static, str>, MetricCell)>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    point: u32,
    replication: u64,
    seed: u64,
    #[serde(flatten)]
    group: GroupRecord,
}

/// A part of a replication: (kind, point, replication, name).
type PartKey = (String, u32, u64, String);

/// Metric names and values.
type Cells = Vec<(Cow<'static, str>, MetricCell)>;

/// Where the parts of a batch under way are kept.
pub fn groups_path(out: &Path) -> PathBuf {
    out.join("groups.jsonl")
}

/// Appends a replication's parts (if it has any) to `OUT/groups.jsonl`.
pub fn append_groups(out: &Path, record: &ReplicationRecord) -> Result<(), OutputError> {
    if record.groups.is_empty() {
        return Ok(());
    }
    let path = groups_path(out);
    let io = |error| OutputError::Io { path: path.clone(), error };
    let mut text = Vec::new();
    for group in &record.groups {
        let line =
            Line { point: record.point, replication: record.replication, seed: record.seed, group: group.clone() };
        serde_json::to_writer(&mut text, &line).expect("a part's record serialises");
        text.push(b'\n');
    }
    let mut file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    file.write_all(&text).map_err(io)
}

/// Every part of a batch, by (kind, point, replication, name): its seed and metrics.
type Parts = BTreeMap<PartKey, (u64, Cells)>;

/// Writes `<kind>s.parquet` and its summaries for every kind of part in
/// `OUT/groups.jsonl`, then removes it; returns the tables written.
pub fn write_group_tables(out: &Path, confidence: f64) -> Result<Vec<PathBuf>, AnalysisError> {
    let path = groups_path(out);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(OutputError::Io { path, error }.into()),
    };
    // The last line of a part wins.
    let mut parts = Parts::new();
    let mut kinds: Vec<String> = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|error| OutputError::Io { path: path.clone(), error })?;
        let Ok(l) = serde_json::from_str::<Line>(&line) else {
            // A line cut short by an interruption: its replication ran again.
            continue;
        };
        if !kinds.contains(&l.group.kind) {
            kinds.push(l.group.kind.clone());
        }
        parts.insert((l.group.kind, l.point, l.replication, l.group.name), (l.seed, l.group.metrics));
    }
    let written = write_parts(out, &kinds, &parts, confidence)?;
    fs::remove_file(&path).map_err(|error| OutputError::Io { path, error })?;
    Ok(written)
}

/// The kinds of part whose tables a finished batch directory holds (`pool` for
/// `pools.parquet` beside `pools_summary.parquet`), in name order.
pub fn table_kinds(dir: &Path) -> Result<Vec<String>, OutputError> {
    let io = |error| OutputError::Io { path: dir.to_path_buf(), error };
    let mut kinds = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
        if let Some(kind) = name.strip_suffix("s_summary.parquet")
            && !kind.is_empty()
            && dir.join(format!("{kind}s.parquet")).is_file()
        {
            kinds.push(kind.to_string());
        }
    }
    kinds.sort();
    Ok(kinds)
}

/// Merges the part tables of shards of one batch into `out`: every row of every
/// shard's `<kind>s.parquet`, in (point, replication, part) order, and summaries over
/// them all, as one unsharded batch would have written them. Returns the tables written.
pub fn merge_group_tables(dirs: &[PathBuf], out: &Path, confidence: f64) -> Result<Vec<PathBuf>, AnalysisError> {
    let mut kinds: Vec<String> = Vec::new();
    for dir in dirs {
        for kind in table_kinds(dir)? {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    let mut parts = Parts::new();
    for dir in dirs {
        for kind in &kinds {
            let path = dir.join(format!("{kind}s.parquet"));
            if path.is_file() {
                read_table(&path, kind, &mut parts)?;
            }
        }
    }
    write_parts(out, &kinds, &parts, confidence)
}

/// Reads the rows of a part table back into `parts`.
fn read_table(path: &Path, kind: &str, parts: &mut Parts) -> Result<(), AnalysisError> {
    let format = |message: String| OutputError::Format { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|error| OutputError::Io { path: path.to_path_buf(), error })?;
    let table = ParquetReader::new(file).finish().map_err(|e| format(e.to_string()))?;
    let column = |name: &str| table.column(name).map_err(|e| format(e.to_string()));
    let as_u64 = |name: &str| -> Result<Vec<u64>, OutputError> {
        let c = column(name)?.cast(&DataType::UInt64).map_err(|e| format(e.to_string()))?;
        let c = c.u64().map_err(|e| format(e.to_string()))?.clone();
        c.iter().map(|v| v.ok_or_else(|| format(format!("`{name}` has an empty cell")))).collect()
    };
    let (points, replications, seeds) = (as_u64("point")?, as_u64("replication")?, as_u64("seed")?);
    let names: Vec<String> = {
        let c = column(kind)?.str().map_err(|e| format(e.to_string()))?.clone();
        c.iter().map(|v| v.unwrap_or_default().to_string()).collect()
    };
    let mut metrics: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for c in table.columns() {
        let name = c.name().as_str();
        if ["point", "replication", "seed", kind].contains(&name) {
            continue;
        }
        let values = c.cast(&DataType::Float64).map_err(|e| format(e.to_string()))?;
        let values = values.f64().map_err(|e| format(e.to_string()))?.clone();
        metrics.push((name.to_string(), values.iter().collect()));
    }
    for i in 0..table.height() {
        let point = u32::try_from(points[i]).map_err(|_| format(format!("point {} out of range", points[i])))?;
        let cells: Cells =
            metrics.iter().map(|(m, values)| (Cow::Owned(m.clone()), MetricCell::Number(values[i]))).collect();
        parts.insert((kind.to_string(), point, replications[i], names[i].clone()), (seeds[i], cells));
    }
    Ok(())
}

/// Writes `<kind>s.parquet` and `<kind>s_summary.parquet`/`.csv` for each kind.
fn write_parts(out: &Path, kinds: &[String], parts: &Parts, confidence: f64) -> Result<Vec<PathBuf>, AnalysisError> {
    let mut written = Vec::new();
    for kind in kinds {
        let kind = kind.clone();
        let rows: Vec<_> = parts.iter().filter(|((k, ..), _)| *k == kind).collect();
        let mut metrics: Vec<String> = Vec::new();
        for (_, (_, values)) in &rows {
            for (name, _) in values {
                if !metrics.iter().any(|m| m == name) {
                    metrics.push(name.to_string());
                }
            }
        }
        let value = |values: &[(Cow<'static, str>, MetricCell)], m: &str| {
            values.iter().find(|(n, _)| n == m).and_then(|(_, v)| match v {
                MetricCell::Number(x) => *x,
                MetricCell::Flag(b) => Some(f64::from(u8::from(*b))),
            })
        };
        let mut columns = vec![
            Column::new("point".into(), rows.iter().map(|((_, p, ..), _)| *p).collect::<Vec<u32>>()),
            Column::new("replication".into(), rows.iter().map(|((_, _, r, _), _)| *r).collect::<Vec<u64>>()),
            Column::new("seed".into(), rows.iter().map(|(_, (s, _))| *s).collect::<Vec<u64>>()),
            Column::new(kind.as_str().into(), rows.iter().map(|((.., n), _)| n.as_str()).collect::<Vec<&str>>()),
        ];
        for m in &metrics {
            let cells: Vec<Option<f64>> = rows.iter().map(|(_, (_, values))| value(values, m)).collect();
            columns.push(Column::new(m.as_str().into(), cells));
        }
        let mut table = DataFrame::new(rows.len(), columns)
            .map_err(|e| OutputError::Format { path: out.join(format!("{kind}s.parquet")), message: e.to_string() })?;
        let table_path = out.join(format!("{kind}s.parquet"));
        write_frame_parquet(&table_path, &mut table)?;
        written.push(table_path);
        // (point, name) -> a tally per metric.
        let mut tallies: BTreeMap<(u32, &str), Vec<Tally>> = BTreeMap::new();
        for ((_, point, _, name), (_, values)) in &rows {
            let t = tallies.entry((*point, name.as_str())).or_insert_with(|| vec![Tally::new(); metrics.len()]);
            for (j, m) in metrics.iter().enumerate() {
                if let Some(x) = value(values, m) {
                    t[j].add(x);
                }
            }
        }
        let mut wide = vec![
            Column::new("point".into(), tallies.keys().map(|(p, _)| *p).collect::<Vec<u32>>()),
            Column::new(kind.as_str().into(), tallies.keys().map(|(_, n)| *n).collect::<Vec<&str>>()),
        ];
        for (j, m) in metrics.iter().enumerate() {
            let t = || tallies.values().map(move |t| t[j]);
            wide.push(Column::new(format!("{m}\u{1}n").into(), t().map(|t| t.count()).collect::<Vec<u64>>()));
            wide.push(Column::new(format!("{m}\u{1}mean").into(), t().map(|t| t.mean()).collect::<Vec<_>>()));
            wide.push(Column::new(format!("{m}\u{1}std").into(), t().map(|t| t.std_dev()).collect::<Vec<_>>()));
        }
        let wide = DataFrame::new(tallies.len(), wide).map_err(|e| OutputError::Format {
            path: out.join(format!("{kind}s_summary.parquet")),
            message: e.to_string(),
        })?;
        let mut summary = reshape_summary(&wide, &["point".to_string(), kind.clone()], &metrics, confidence)?;
        write_frame_parquet(&out.join(format!("{kind}s_summary.parquet")), &mut summary)?;
        write_csv(&out.join(format!("{kind}s_summary.csv")), &summary)?;
    }
    Ok(written)
}
