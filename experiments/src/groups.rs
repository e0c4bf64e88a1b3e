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
    let mut parts: BTreeMap<PartKey, (u64, Cells)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|error| OutputError::Io { path: path.clone(), error })?;
        let Ok(l) = serde_json::from_str::<Line>(&line) else {
            // A line cut short by an interruption: its replication ran again.
            continue;
        };
        if !order.contains(&l.group.kind) {
            order.push(l.group.kind.clone());
        }
        parts.insert((l.group.kind, l.point, l.replication, l.group.name), (l.seed, l.group.metrics));
    }
    let mut written = Vec::new();
    for kind in order {
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
    fs::remove_file(&path).map_err(|error| OutputError::Io { path, error })?;
    Ok(written)
}
