//! A Monte Carlo batch written to an output directory.
//!
//! Every finished replication is appended at once to a journal (`parts.jsonl`, one
//! line each, see [`crate::journal`]), so an interrupted batch loses only the
//! replications that were running; `--resume` runs what is missing. A fresh batch
//! also writes `replications.parquet` as records arrive, a row group at a time
//! ([`crate::replications::InOrderWriter`]); a resumed one sorts the journal into
//! (point, replication) order when every replication of the shard is done. Both give
//! identical bytes whatever the thread count or the interruptions. Then the summary is
//! computed and the journal removed. Nothing here holds the batch's records or work
//! items in memory: a batch of any size runs in the memory of one replication and one
//! row group (or sorting chunk), plus the Parquet footer.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use infersim_engine::Interrupt;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::analysis::{AnalysisError, merge_replications, summarize_parquet, write_csv, write_frame_parquet};
use crate::journal::{Journal, JournalScan, JournalWriter, MetricColumn, journal_path};
use crate::lock::{DirLock, LockError, occupied};
use crate::output::{OutputError, ReplicationRecord, parameter_column_name, write_atomically};
use crate::replications::InOrderWriter;
use crate::runner::{PlanError, Shard, TraceSpec, Watch, WorkPlan, run_items};
use crate::scenario::Scenario;
use crate::sweep::SweepGrid;
use crate::trace::TraceLevel;

/// The manifest's statement of how seeds are derived.
pub const SEED_RULE: &str = "replication r (at every point) runs on infersim_engine::replication_seed(seed, r): \
     SplitMix64's finaliser folded over (seed, r) from a fixed domain constant; each of its random streams is \
     derived from that and the stream's id (engine/src/rng.rs)";

/// How to run a batch.
#[derive(Clone, Debug)]
pub struct BatchSpec {
    /// Replications per point.
    pub replications: u64,
    /// Master seed.
    pub seed: u64,
    /// Worker threads (results do not depend on it).
    pub threads: usize,
    /// Which slice of the batch to run.
    pub shard: Shard,
    /// The output directory.
    pub out: PathBuf,
    /// Continue the batch already in `out` instead of starting a new one.
    pub resume: bool,
    /// Confidence level of the summary intervals.
    pub confidence: f64,
    /// How much of each replication to record.
    pub trace: TraceLevel,
}

/// Where a batch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Replications are being run.
    Running,
    /// Stopped early; `--resume` completes it.
    Interrupted,
    /// Every replication of the shard is done and the outputs are written.
    Complete,
}

/// A point of the batch, as manifests before the sweep was stated listed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestPoint {
    /// Point index.
    pub point: u32,
    /// Swept key -> value at this point.
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A replication that failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedReplication {
    /// Point index.
    pub point: u32,
    /// Replication index.
    pub replication: u64,
    /// Why.
    pub error: String,
}

/// `manifest.json`: everything needed to reproduce, resume and read a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "infersim".
    pub tool: String,
    /// infersim's version.
    pub version: String,
    /// The scenario's built-in name or path.
    pub scenario: String,
    /// The world it describes.
    #[serde(default)]
    pub world: String,
    /// Its one-line description.
    pub description: String,
    /// The resolved scenario (also in scenario.toml).
    pub scenario_toml: String,
    /// Master seed.
    pub seed: u64,
    /// Replications per point.
    pub replications: u64,
    /// How each replication's 64-bit seed (the `seed` column of
    /// replications.parquet) follows from the master seed and its index: a rule
    /// rather than a list, so the manifest does not grow with the replications.
    #[serde(default)]
    pub seed_rule: String,
    /// This directory's slice of the batch, `[I, N]`.
    pub shard: [u64; 2],
    /// Threads used by the latest run.
    pub threads: usize,
    /// Swept keys, in order.
    pub sweep_keys: Vec<String>,
    /// Their column names in replications.parquet.
    pub parameter_columns: Vec<String>,
    /// Each swept key's values, in the order of `sweep_keys`: point `p` takes the
    /// values of `p` in mixed radix, the last key fastest ([`SweepGrid`]).
    #[serde(default)]
    pub sweep_values: Vec<Vec<serde_json::Value>>,
    /// Points of the batch (0 in manifests that list them in `points`).
    #[serde(default)]
    pub point_count: u64,
    /// Every point with its values: how manifests listed them before they stated the
    /// sweep (still read, so that such batches resume and plot); empty now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<ManifestPoint>,
    /// Metric columns, in order (known once the batch is complete).
    pub metrics: Vec<String>,
    /// Trace level: summary, timeseries or requests.
    pub trace: TraceLevel,
    /// Replications this shard must run.
    pub expected: u64,
    /// Replications finished (successfully or not).
    pub completed: u64,
    /// Replications that failed; they are not in replications.parquet.
    pub failed: Vec<FailedReplication>,
    /// Where the batch stands.
    pub status: BatchStatus,
    /// When the batch was first started (seconds since the Unix epoch).
    pub started_unix_s: u64,
    /// Wall time of the latest run (s).
    pub elapsed_s: f64,
    /// For a batch `infersim analyze` merged: the directories it was merged from
    /// (absolute paths); empty for a batch that ran here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

impl Manifest {
    /// Points of the batch.
    pub fn point_count(&self) -> u64 {
        if self.point_count > 0 { self.point_count } else { self.points.len().max(1) as u64 }
    }

    /// Point `point`'s swept values, by key.
    pub fn point_params(&self, point: u32) -> Vec<(String, serde_json::Value)> {
        if let Some(listed) = self.points.get(point as usize) {
            return listed.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        let grid = SweepGrid::new(self.sweep_keys.iter().cloned().zip(self.sweep_values.iter().cloned()).collect());
        self.sweep_keys.iter().cloned().zip(grid.params(u64::from(point))).collect()
    }
}

/// Why a batch could not run or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Bad run parameters.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A file could not be read or written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Analysis failed.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// The output directory already holds something and `--resume` was not given.
    #[error("{0}: already exists and is not empty; choose another --out, or add --resume to continue the batch in it")]
    OutputExists(PathBuf),
    /// Another process is writing the output directory.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The output directory cannot be created.
    #[error("{path}: cannot create the output directory: {error}")]
    OutputUnusable {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `analyze --out` names a directory the merge must not write.
    #[error("{path}: cannot write the merged batch there: {why}; choose another --out")]
    MergeTarget {
        /// The directory.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// `--resume` on a directory without a batch.
    #[error("{0}: no manifest.json here, so there is no batch to resume")]
    NothingToResume(PathBuf),
    /// `--resume` with another scenario: the keys that differ.
    #[error(
        "{path}: cannot resume: the batch there is of another scenario; it differs in {}; resume with the \
         scenario and --set options it ran with",
        differences.join(", ")
    )]
    ResumeOtherScenario {
        /// The directory.
        path: PathBuf,
        /// `key: there -> here`, for each key that differs.
        differences: Vec<String>,
    },
    /// `--resume` with a different seed, replications, trace level or shard.
    #[error("{path}: cannot resume: the batch there has {what} {there}, this run asks for {here}")]
    ResumeMismatch {
        /// The directory.
        path: PathBuf,
        /// Which setting differs.
        what: &'static str,
        /// The recorded value.
        there: String,
        /// The requested value.
        here: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |error| OutputError::Io { path: path.to_path_buf(), error }
}

/// Reads `DIR/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, OutputError> {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| OutputError::Format { path, message: e.to_string() })
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), OutputError> {
    let path = dir.join("manifest.json");
    write_atomically(&path, |w| {
        serde_json::to_writer_pretty(&mut *w, manifest)
            .map_err(|e| OutputError::Format { path: path.clone(), message: e.to_string() })?;
        std::io::Write::write_all(w, b"\n").map_err(io_err(&path))
    })
}

fn new_manifest(scenario: &Scenario, spec: &BatchSpec, expected: u64) -> Manifest {
    let keys = scenario.sweep_keys();
    Manifest {
        tool: "infersim".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        scenario: scenario.source_name.clone(),
        world: scenario.world.to_string(),
        description: scenario.description.clone(),
        scenario_toml: scenario.to_toml(),
        seed: spec.seed,
        replications: spec.replications,
        seed_rule: SEED_RULE.to_string(),
        shard: [spec.shard.index, spec.shard.count],
        threads: spec.threads,
        parameter_columns: keys.iter().map(|k| parameter_column_name(k)).collect(),
        sweep_values: scenario
            .sweep
            .entries()
            .map(|(_, values)| {
                values.iter().map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null)).collect()
            })
            .collect(),
        point_count: u64::from(scenario.point_count()),
        points: Vec::new(),
        sweep_keys: keys,
        metrics: Vec::new(),
        trace: spec.trace,
        expected,
        completed: 0,
        failed: Vec::new(),
        status: BatchStatus::Running,
        started_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        elapsed_s: 0.0,
        merged_from: Vec::new(),
    }
}

/// What a batch run produced.
#[derive(Debug)]
pub struct BatchReport {
    /// The manifest as last written.
    pub manifest: Manifest,
    /// The summary, once the batch is complete.
    pub summary: Option<DataFrame>,
}

fn check_resumable(dir: &Path, there: &Manifest, here: &Manifest) -> Result<(), BatchError> {
    let mismatch =
        |what, a: String, b: String| BatchError::ResumeMismatch { path: dir.to_path_buf(), what, there: a, here: b };
    if there.scenario_toml != here.scenario_toml {
        let differences = crate::scenario::differences(&there.scenario_toml, &here.scenario_toml);
        return Err(BatchError::ResumeOtherScenario { path: dir.to_path_buf(), differences });
    }
    if there.seed != here.seed {
        return Err(mismatch("seed", there.seed.to_string(), here.seed.to_string()));
    }
    if there.replications != here.replications {
        return Err(mismatch("replications", there.replications.to_string(), here.replications.to_string()));
    }
    if there.trace != here.trace {
        return Err(mismatch("trace level", format!("{:?}", there.trace), format!("{:?}", here.trace)));
    }
    if there.shard != here.shard {
        let show = |s: [u64; 2]| format!("{}/{}", s[0], s[1]);
        return Err(mismatch("shard", show(there.shard), show(here.shard)));
    }
    Ok(())
}

/// Runs (or resumes) a batch into `spec.out`. `progress` is called with every finished
/// replication. Raising `cancel` stops the batch: no replication starts, the running
/// ones stop within a few thousand events, and what finished is kept for `--resume`.
pub fn run_batch(
    scenario: &Scenario,
    spec: &BatchSpec,
    cancel: &Interrupt,
    progress: &(dyn Fn(&ReplicationRecord) + Sync),
) -> Result<BatchReport, BatchError> {
    run_batch_watched(scenario, spec, cancel, progress, &Watch::default())
}

/// [`run_batch`], with each replication's clock in `watch` while it runs (a progress
/// bar reads how far the replications under way have got).
pub fn run_batch_watched(
    scenario: &Scenario,
    spec: &BatchSpec,
    cancel: &Interrupt,
    progress: &(dyn Fn(&ReplicationRecord) + Sync),
    watch: &Watch,
) -> Result<BatchReport, BatchError> {
    if spec.replications == 0 {
        return Err(PlanError::NoReplications.into());
    }
    if spec.threads == 0 {
        return Err(PlanError::NoThreads.into());
    }
    if !(spec.confidence > 0.0 && spec.confidence < 1.0) {
        return Err(AnalysisError::BadConfidence(spec.confidence).into());
    }
    let plan = WorkPlan::new(scenario.point_count() as usize, spec.replications, spec.shard)?;
    let started = Instant::now();
    let out = &spec.out;
    let mut manifest = new_manifest(scenario, spec, plan.len());
    // Held until the batch returns: a second process on this directory stops here,
    // before it reads or writes anything.
    let _lock = match claim_output(scenario, spec, &mut manifest)? {
        Claimed::Finished(report) => return Ok(*report),
        Claimed::Locked(lock) => lock,
    };
    let journal = Journal::new(out);
    let previous = journal.scan(|p, r| plan.position(p, r))?;
    if !previous.failed.is_empty() || (spec.resume && journal.exists()) {
        // Failed replications are tried again on resume; this also drops a line cut
        // short by the interruption.
        journal.drop_failures()?;
    }
    manifest.completed = previous.succeeded;
    write_manifest(out, &manifest)?;

    let trace = trace_spec(scenario, spec)?;
    let mut writer = JournalWriter::open(out)?;
    // What the journal holds: the previous scan (its failures were dropped from the
    // journal above and run again), then every record appended now.
    let mut scan = JournalScan { failed: Vec::new(), ..previous.clone() };
    let parquet = out.join("replications.parquet");
    // A fresh batch writes replications.parquet as it goes; one resumed from a journal
    // sorts the journal into it at the end.
    let fresh = previous.succeeded == 0 && previous.failed.is_empty();
    let mut in_order = fresh.then(|| InOrderWriter::new(&parquet, &scenario.sweep));
    run_items(scenario, &plan, &previous.done, spec.seed, spec.threads, &trace, cancel, watch, |record| {
        // A replication's parts go first: one journalled is complete.
        crate::groups::append_groups(out, &record)?;
        writer.append(&record)?;
        let position = plan.position(record.point, record.replication);
        scan.note_record(&record, position);
        progress(&record);
        match &mut in_order {
            Some(in_order) => in_order.offer(plan.index_of(position), record),
            None => Ok(()),
        }
    })??;
    writer.sync()?;
    drop(previous);

    manifest.completed = scan.succeeded + scan.failed.len() as u64;
    manifest.failed = scan
        .failed
        .into_iter()
        .map(|(point, replication, error)| FailedReplication { point, replication, error })
        .collect();
    manifest.elapsed_s = started.elapsed().as_secs_f64();
    if manifest.completed < manifest.expected {
        manifest.status = BatchStatus::Interrupted;
        write_manifest(out, &manifest)?;
        return Ok(BatchReport { manifest, summary: None });
    }
    manifest.metrics = scan.metrics.iter().map(|(name, _)| name.clone()).collect();
    write_replications(in_order, plan.len(), &journal, scenario, &scan.metrics, out)?;
    crate::groups::write_group_tables(out, spec.confidence)?;
    let summary = summarize_dir(out, &manifest, spec.confidence)?;
    manifest.status = BatchStatus::Complete;
    write_manifest(out, &manifest)?;
    fs::remove_file(journal_path(out)).map_err(io_err(&journal_path(out)))?;
    Ok(BatchReport { manifest, summary: Some(summary) })
}

/// What to trace, where, and how often to sample.
fn trace_spec(scenario: &Scenario, spec: &BatchSpec) -> Result<TraceSpec, BatchError> {
    Ok(TraceSpec {
        level: spec.trace,
        out: spec.out.clone(),
        sample_every: infersim_engine::SimDuration::from_secs_f64(scenario.sample_interval_s).map_err(|e| {
            OutputError::Format { path: spec.out.clone(), message: format!("simulation.sample_interval_s: {e}") }
        })?,
    })
}

/// Finishes `replications.parquet`: the in-order writer's when it had every record,
/// else sorted from the journal (through `.work/sort`, removed after).
fn write_replications(
    in_order: Option<InOrderWriter<'_>>,
    items: u64,
    journal: &Journal,
    scenario: &Scenario,
    metrics: &[MetricColumn],
    out: &Path,
) -> Result<(), BatchError> {
    let written = match in_order {
        Some(in_order) => in_order.finish(items)?,
        None => false,
    };
    if !written {
        let work = out.join(".work").join("sort");
        journal.write_parquet(&out.join("replications.parquet"), &work, &scenario.sweep, metrics)?;
    }
    // Sorted runs went to .work/sort; the directory goes too when nothing else uses it.
    let _ = fs::remove_dir(out.join(".work"));
    Ok(())
}

/// What claiming the output directory found.
enum Claimed {
    /// The directory is this process's until the lock drops.
    Locked(DirLock),
    /// A resumed batch that had finished: its report.
    Finished(Box<BatchReport>),
}

/// Claims the output directory: a fresh one (refused when it holds anything), or the
/// batch to resume (refused when it is another's), locked against other processes.
fn claim_output(scenario: &Scenario, spec: &BatchSpec, manifest: &mut Manifest) -> Result<Claimed, BatchError> {
    let out = &spec.out;
    if spec.resume {
        if !out.join("manifest.json").is_file() {
            return Err(BatchError::NothingToResume(out.clone()));
        }
        let lock = DirLock::acquire(out, "run --resume")?;
        let previous = read_manifest(out).map_err(|_| BatchError::NothingToResume(out.clone()))?;
        check_resumable(out, &previous, manifest)?;
        manifest.started_unix_s = previous.started_unix_s;
        if previous.status == BatchStatus::Complete {
            let summary = summarize_dir(out, &previous, spec.confidence)?;
            return Ok(Claimed::Finished(Box::new(BatchReport { manifest: previous, summary: Some(summary) })));
        }
        Ok(Claimed::Locked(lock))
    } else {
        if occupied(out) {
            return Err(BatchError::OutputExists(out.clone()));
        }
        // A directory that cannot be made is a bad --out (exit 2), not a failed run.
        fs::create_dir_all(out).map_err(|error| BatchError::OutputUnusable { path: out.clone(), error })?;
        let lock = DirLock::acquire(out, "run")?;
        // Another process may have filled it between the look and the lock.
        if occupied(out) {
            return Err(BatchError::OutputExists(out.clone()));
        }
        fs::write(out.join("scenario.toml"), scenario.to_toml()).map_err(io_err(&out.join("scenario.toml")))?;
        Ok(Claimed::Locked(lock))
    }
}

/// Computes and writes `summary.parquet` and `summary.csv` for one directory.
fn summarize_dir(out: &Path, manifest: &Manifest, confidence: f64) -> Result<DataFrame, BatchError> {
    let mut summary = summarize_dirs(&[out.to_path_buf()], manifest, confidence)?;
    write_frame_parquet(&out.join("summary.parquet"), &mut summary)?;
    write_csv(&out.join("summary.csv"), &summary)?;
    Ok(summary)
}

/// The summary of one or more directories holding (parts of) the same batch.
pub fn summarize_dirs(dirs: &[PathBuf], manifest: &Manifest, confidence: f64) -> Result<DataFrame, AnalysisError> {
    let ids: Vec<String> =
        std::iter::once("point".to_string()).chain(manifest.parameter_columns.iter().cloned()).collect();
    summarize_parquet(dirs, &ids, &manifest.metrics, confidence)
}

/// A default output directory: `out/<scenario>-<UTC date>-<time>`, made unique.
pub fn default_out_dir(scenario: &Scenario) -> PathBuf {
    let name: String = Path::new(&scenario.source_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let base = format!("out/{name}-{y:04}{mo:02}{d:02}-{:02}{:02}{:02}", t / 3600, t / 60 % 60, t % 60);
    let mut dir = PathBuf::from(&base);
    let mut k = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{base}-{k}"));
        k += 1;
    }
    dir
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc_timestamp(unix_s: u64) -> String {
    let (y, mo, d) = civil_from_days((unix_s / 86_400) as i64);
    let t = unix_s % 86_400;
    format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// Days since 1970-01-01 to a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whether two paths name the same directory (either may not exist yet).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    }
}

/// Checks that `out` may receive the merge of `dirs`: it is none of them and holds
/// nothing, or a merge of this same batch that `analyze` wrote before (a retried merge
/// job writes it again). Then takes its lock.
fn claim_merge_target(dirs: &[PathBuf], out: &Path, manifest: &Manifest) -> Result<DirLock, BatchError> {
    let refuse = |why: String| BatchError::MergeTarget { path: out.to_path_buf(), why };
    if let Some(input) = dirs.iter().find(|d| same_dir(d, out)) {
        return Err(refuse(format!("it is one of the directories being merged ({})", input.display())));
    }
    let check = || match read_manifest(out) {
        _ if !occupied(out) => Ok(()),
        Ok(there) if there.merged_from.is_empty() => {
            Err(refuse("it holds a batch that ran there, which the merge would replace".into()))
        }
        Ok(there) if !same_batch(&there, manifest) => {
            Err(refuse("it holds the merge of another batch (scenario, seed or replications differ)".into()))
        }
        Ok(_) => Ok(()),
        Err(_) => Err(refuse("it already exists and is not empty".into())),
    };
    check()?;
    fs::create_dir_all(out).map_err(|error| BatchError::OutputUnusable { path: out.to_path_buf(), error })?;
    let lock = DirLock::acquire(out, "analyze")?;
    check()?;
    Ok(lock)
}

/// Whether two manifests describe (parts of) the same batch.
pub fn same_batch(a: &Manifest, b: &Manifest) -> bool {
    a.scenario_toml == b.scenario_toml && a.seed == b.seed && a.replications == b.replications
}

/// Writes a merged batch (from several shard directories, or a copy of one):
/// `replications.parquet` sorted by (point, replication), the summary, the manifest
/// (with `merged_from` set) and the scenario. `out` must not be one of `dirs`, and
/// holds nothing or an earlier merge of the same batch ([`BatchError::MergeTarget`]).
pub fn write_merged(
    dirs: &[PathBuf],
    out: &Path,
    manifest: &Manifest,
    mut summary: DataFrame,
    confidence: f64,
) -> Result<(), BatchError> {
    let mut manifest = manifest.clone();
    manifest.merged_from =
        dirs.iter().map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()).display().to_string()).collect();
    let manifest = &manifest;
    let _lock = claim_merge_target(dirs, out, manifest)?;
    merge_replications(dirs, &out.join("replications.parquet"))?;
    // The shards' pools.parquet, models.parquet (whatever parts the world reports).
    crate::groups::merge_group_tables(dirs, out, confidence)?;
    write_frame_parquet(&out.join("summary.parquet"), &mut summary)?;
    write_csv(&out.join("summary.csv"), &summary)?;
    fs::write(out.join("scenario.toml"), &manifest.scenario_toml).map_err(io_err(&out.join("scenario.toml")))?;
    write_manifest(out, manifest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests written before the sweep was stated listed every point; they still
    /// read, with the same points.
    #[test]
    fn manifests_that_list_points_still_read() {
        let mut scenario = Scenario::builtin("mmc").unwrap();
        scenario.apply_overrides(&["simulation.customers=500", "simulation.warmup_customers=0"]).unwrap();
        let text = scenario.to_toml()
            + "[sweep]\nstation.servers = [4, 5]\n\"station.service\" = [\"exponential\", \"deterministic\"]\n";
        let swept = Scenario::parse("s.toml", &text).unwrap();
        let spec = BatchSpec {
            replications: 2,
            seed: 1,
            threads: 1,
            shard: crate::runner::Shard::ALL,
            out: PathBuf::new(),
            resume: false,
            confidence: 0.95,
            trace: TraceLevel::Summary,
        };
        let stated = new_manifest(&swept, &spec, 8);
        assert_eq!(stated.point_count(), 4);
        let mut json: serde_json::Value = serde_json::to_value(&stated).unwrap();
        let listed: Vec<serde_json::Value> = (0..4)
            .map(|p| {
                let params: serde_json::Map<String, serde_json::Value> = stated.point_params(p).into_iter().collect();
                serde_json::json!({"point": p, "params": params})
            })
            .collect();
        let object = json.as_object_mut().unwrap();
        object.remove("sweep_values");
        object.remove("point_count");
        object.insert("points".into(), serde_json::Value::Array(listed));
        let old: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(old.point_count(), 4);
        for p in 0..4 {
            assert_eq!(old.point_params(p), stated.point_params(p), "point {p}");
        }
        assert_eq!(stated.point_params(1)[0], ("station.servers".to_string(), serde_json::json!(4)));
        assert_eq!(stated.point_params(1)[1].1, serde_json::json!("deterministic"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(utc_timestamp(1_764_979_200 + 3_723), "2025-12-06 01:02:03");
    }
}
