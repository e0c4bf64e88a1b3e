//! Batches beyond one machine: a Monte Carlo batch as a Slurm job array.
//!
//! `infersim slurm` writes three files into the batch directory:
//!
//! ```text
//! DIR/shards.sbatch   a job array of N tasks; task I runs `infersim run ... --shard I/N`
//!                     into DIR/shard-I (with --resume when that directory has a batch)
//! DIR/merge.sbatch    one `infersim analyze DIR/shard-1 ... DIR/shard-N --out DIR/merged`
//! DIR/submit.sh       submits both, the merge with --dependency=afterok on the array
//! ```
//!
//! The scripts name the binary by its absolute path and scenario files by theirs, so
//! they run from any directory of the cluster's shared file system.
//!
//! ```
//! use infersim::slurm::{SlurmBatch, sbatch_scripts};
//! let batch = SlurmBatch {
//!     binary: "/opt/infersim".into(),
//!     scenario: "mmc".into(),
//!     run_args: vec!["--reps".into(), "40".into()],
//!     shards: 4,
//!     dir: "/scratch/mmc".into(),
//!     cpus_per_task: 2,
//!     ..SlurmBatch::default()
//! };
//! let scripts = sbatch_scripts(&batch);
//! assert!(scripts.shards.contains("#SBATCH --array=1-4"));
//! assert!(scripts.shards.contains("--shard \"$I/4\""));
//! assert!(scripts.merge.contains("'/scratch/mmc/shard-4' --out '/scratch/mmc/merged'"));
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::registry::Registry;
use crate::scenario::{Scenario, ScenarioError};
use crate::trace::TraceLevel;

/// What a Slurm batch runs and asks the scheduler for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlurmBatch {
    /// The infersim binary, as the compute nodes see it.
    pub binary: PathBuf,
    /// A built-in scenario name or an absolute path to a scenario file.
    pub scenario: String,
    /// Options passed to every `infersim run` (`--reps`, `--seed`, `--set`, `--trace`, ...).
    pub run_args: Vec<String>,
    /// Array tasks: the batch is split into this many shards.
    pub shards: u64,
    /// The batch directory (absolute).
    pub dir: PathBuf,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (e.g. `02:00:00`), per task and for the merge.
    pub time: Option<String>,
    /// CPUs per array task; also each task's `--threads`.
    pub cpus_per_task: u32,
    /// `--mem` (e.g. `4G`), per task and for the merge.
    pub mem: Option<String>,
    /// Extra `#SBATCH` lines, written as given (with or without the `#SBATCH ` prefix).
    pub extra: Vec<String>,
    /// Confidence level of the merged summary.
    pub confidence: f64,
}

/// The generated files' text.
#[derive(Clone, Debug, PartialEq)]
pub struct SbatchScripts {
    /// The job array.
    pub shards: String,
    /// The merge job.
    pub merge: String,
    /// Submits both.
    pub submit: String,
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn quote_path(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

impl SlurmBatch {
    /// The output directory of shard `i` (1-based).
    pub fn shard_dir(&self, i: u64) -> PathBuf {
        self.dir.join(format!("shard-{i}"))
    }

    /// Where the merged batch goes.
    pub fn merged_dir(&self) -> PathBuf {
        self.dir.join("merged")
    }

    fn directives(&self, out: &mut String) {
        if let Some(p) = &self.partition {
            let _ = writeln!(out, "#SBATCH --partition={p}");
        }
        if let Some(t) = &self.time {
            let _ = writeln!(out, "#SBATCH --time={t}");
        }
        if let Some(m) = &self.mem {
            let _ = writeln!(out, "#SBATCH --mem={m}");
        }
        for line in &self.extra {
            let line = line.trim();
            if line.starts_with("#SBATCH") {
                let _ = writeln!(out, "{line}");
            } else {
                let _ = writeln!(out, "#SBATCH {line}");
            }
        }
    }
}

/// The job array, the merge job and the submit script of a batch.
pub fn sbatch_scripts(b: &SlurmBatch) -> SbatchScripts {
    let name = format!("infersim-{}", b.scenario.rsplit('/').next().unwrap_or("batch").trim_end_matches(".toml"));
    let logs = b.dir.join("logs");
    let bin = quote_path(&b.binary);
    let run_args: Vec<String> = b.run_args.iter().map(|a| shell_quote(a)).collect();

    let mut shards = String::from("#!/bin/bash\n");
    let _ = writeln!(shards, "# Written by `infersim slurm`: shard I of {} of the batch, into shard-I.", b.shards);
    let _ = writeln!(
        shards,
        "# Re-run one failed or preempted task alone with: sbatch --array=I {}",
        b.dir.join("shards.sbatch").display()
    );
    let _ = writeln!(shards, "#SBATCH --job-name={name}");
    let _ = writeln!(shards, "#SBATCH --array=1-{}", b.shards);
    let _ = writeln!(shards, "#SBATCH --cpus-per-task={}", b.cpus_per_task);
    let _ = writeln!(shards, "#SBATCH --output={}", logs.join("shard-%a.out").display());
    b.directives(&mut shards);
    shards.push_str("set -euo pipefail\n");
    shards.push_str("I=\"$SLURM_ARRAY_TASK_ID\"\n");
    let _ = writeln!(shards, "OUT={}/shard-\"$I\"", quote_path(&b.dir));
    shards.push_str("# A task that ran before (failed, preempted, requeued) continues its own batch.\n");
    shards.push_str("RESUME=()\nif [ -f \"$OUT/manifest.json\" ]; then RESUME=(--resume); fi\n");
    let _ = writeln!(
        shards,
        "exec {bin} run {} --out \"$OUT\" --shard \"$I/{}\" --threads \"${{SLURM_CPUS_PER_TASK:-{}}}\" -q{}{} \"${{RESUME[@]}}\"",
        shell_quote(&b.scenario),
        b.shards,
        b.cpus_per_task,
        if run_args.is_empty() { "" } else { " " },
        run_args.join(" ")
    );

    let mut merge = String::from("#!/bin/bash\n");
    let _ = writeln!(merge, "# Written by `infersim slurm`: merges the {} shards into merged/.", b.shards);
    let _ = writeln!(merge, "# It refuses an incomplete batch and names the missing shards.");
    let _ = writeln!(merge, "#SBATCH --job-name={name}-merge");
    merge.push_str("#SBATCH --cpus-per-task=1\n");
    let _ = writeln!(merge, "#SBATCH --output={}", logs.join("merge.out").display());
    b.directives(&mut merge);
    merge.push_str("set -euo pipefail\n");
    let dirs: Vec<String> = (1..=b.shards).map(|i| quote_path(&b.shard_dir(i))).collect();
    let _ = writeln!(
        merge,
        "exec {bin} analyze {} --out {} --confidence {}",
        dirs.join(" "),
        quote_path(&b.merged_dir()),
        b.confidence
    );

    let mut submit = String::from("#!/bin/bash\n");
    submit.push_str("# Written by `infersim slurm`: submits the array, then the merge once every task succeeded.\n");
    submit.push_str("set -euo pipefail\n");
    let _ = writeln!(submit, "cd {}", quote_path(&b.dir));
    submit.push_str("array=$(sbatch --parsable shards.sbatch)\narray=${array%%;*}\n");
    submit.push_str("merge=$(sbatch --parsable --dependency=afterok:\"$array\" merge.sbatch)\nmerge=${merge%%;*}\n");
    submit.push_str("echo \"array job $array, merge job $merge\"\n");

    SbatchScripts { shards, merge, submit }
}

/// What `infersim slurm` is asked for, as given.
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmRequest {
    /// A built-in scenario name or a path to a scenario file.
    pub scenario: String,
    /// `--set` overrides.
    pub overrides: Vec<String>,
    /// Array tasks.
    pub shards: u64,
    /// The batch directory (relative paths are made absolute).
    pub dir: PathBuf,
    /// Replications per point (default: the scenario's).
    pub reps: Option<u64>,
    /// Master seed (default: the scenario's).
    pub seed: Option<u64>,
    /// What each shard records.
    pub trace: TraceLevel,
    /// Confidence level of the merged summary.
    pub confidence: f64,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time`.
    pub time: Option<String>,
    /// CPUs per array task.
    pub cpus_per_task: u32,
    /// `--mem`.
    pub mem: Option<String>,
    /// Extra `#SBATCH` lines.
    pub sbatch: Vec<String>,
    /// The binary as the compute nodes see it (default: the running one).
    pub binary: Option<PathBuf>,
}

/// Why a Slurm batch could not be written or submitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlurmError {
    /// The scenario does not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// An option is out of range, or the directory is occupied.
    #[error("{0}")]
    Input(String),
    /// A file could not be written.
    #[error("{path}: cannot {what}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why not.
        error: std::io::Error,
    },
    /// `sbatch` failed or answered what it should not.
    #[error("{0}")]
    Sbatch(String),
}

/// A checked batch: its scripts' settings and how many replications it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedBatch {
    /// What the scripts run.
    pub batch: SlurmBatch,
    /// Replications in all (points x replications).
    pub replications: u64,
}

/// Checks everything the scripts will run, as `run` would, before anything is
/// written; built-in scenario names stay names, files are named by absolute path.
pub fn prepare(registry: &Registry, r: &SlurmRequest) -> Result<PreparedBatch, SlurmError> {
    let mut s = Scenario::load_with(registry, &r.scenario)?;
    if !r.overrides.is_empty() {
        s.apply_overrides(&r.overrides)?;
    }
    let input = |message: String| Err(SlurmError::Input(message));
    if r.shards == 0 {
        return input("--shards must be at least 1".into());
    }
    if r.cpus_per_task == 0 {
        return input("--cpus-per-task must be at least 1".into());
    }
    if !(r.confidence > 0.0 && r.confidence < 1.0) {
        return input(format!("--confidence {} is invalid: expected a number between 0 and 1", r.confidence));
    }
    let replications = r.reps.unwrap_or(s.replications);
    if replications == 0 {
        return input("--reps must be at least 1".into());
    }
    let items = u64::from(s.point_count()).saturating_mul(replications);
    if r.shards > items {
        return input(format!(
            "--shards {} is more than the batch's {items} replications: some shards would be empty",
            r.shards
        ));
    }
    let absolute =
        |p: &Path| std::path::absolute(p).map_err(|error| SlurmError::Io { path: p.into(), what: "resolve", error });
    let dir = absolute(&r.dir)?;
    if std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return input(format!("{}: already exists and is not empty; choose another --dir", dir.display()));
    }
    let binary = match &r.binary {
        Some(b) => absolute(b)?,
        None => std::env::current_exe().map_err(|error| SlurmError::Io {
            path: "infersim".into(),
            what: "find this binary (give --binary)",
            error,
        })?,
    };
    let scenario = match registry.scenario(&r.scenario) {
        Some(_) => r.scenario.clone(),
        None => absolute(Path::new(&r.scenario))?.to_string_lossy().into_owned(),
    };
    let mut run_args =
        vec!["--reps".to_string(), replications.to_string(), "--seed".into(), r.seed.unwrap_or(s.seed).to_string()];
    for set in &r.overrides {
        run_args.extend(["--set".to_string(), set.clone()]);
    }
    if r.trace != TraceLevel::Summary {
        run_args.extend(["--trace".to_string(), format!("{:?}", r.trace).to_lowercase()]);
    }
    run_args.extend(["--confidence".to_string(), r.confidence.to_string()]);
    let batch = SlurmBatch {
        binary,
        scenario,
        run_args,
        shards: r.shards,
        dir,
        partition: r.partition.clone(),
        time: r.time.clone(),
        cpus_per_task: r.cpus_per_task,
        mem: r.mem.clone(),
        extra: r.sbatch.clone(),
        confidence: r.confidence,
    };
    Ok(PreparedBatch { batch, replications: items })
}

/// Writes the batch's scripts (executable) and its logs directory.
pub fn write_scripts(batch: &SlurmBatch) -> Result<(), SlurmError> {
    fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SlurmError {
        let path = path.to_path_buf();
        move |error| SlurmError::Io { path, what, error }
    }
    let scripts = sbatch_scripts(batch);
    let logs = batch.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs, "create"))?;
    for (name, text) in
        [("shards.sbatch", &scripts.shards), ("merge.sbatch", &scripts.merge), ("submit.sh", &scripts.submit)]
    {
        let path = batch.dir.join(name);
        std::fs::write(&path, text).map_err(io(&path, "write"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path, "make executable"))?;
        }
    }
    Ok(())
}

/// What `sbatch ARGS` printed on success, run in `dir`; an error says why it failed.
pub type Sbatch<'a> = &'a dyn Fn(&[&str], &Path) -> Result<String, String>;

/// Runs the real `sbatch` in `dir`.
pub fn system_sbatch(args: &[&str], dir: &Path) -> Result<String, String> {
    let output = std::process::Command::new("sbatch")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run sbatch: is Slurm installed and on PATH? ({e})"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Submits the array, then the merge with `--dependency=afterok` on it, through
/// `sbatch`; returns both job ids.
pub fn submit(batch: &SlurmBatch, sbatch: Sbatch<'_>) -> Result<(String, String), SlurmError> {
    let job = |args: &[&str]| -> Result<String, SlurmError> {
        let text =
            sbatch(args, &batch.dir).map_err(|e| SlurmError::Sbatch(format!("sbatch {}: {e}", args.join(" "))))?;
        // --parsable prints "id" or "id;cluster".
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(SlurmError::Sbatch(format!("sbatch {}: unexpected answer {text:?}", args.join(" "))));
        }
        Ok(id)
    };
    let array = job(&["--parsable", "shards.sbatch"])?;
    let merge = job(&["--parsable", &format!("--dependency=afterok:{array}"), "merge.sbatch"])?;
    Ok((array, merge))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> SlurmBatch {
        SlurmBatch {
            binary: "/opt/bin/infersim".into(),
            scenario: "/home/u/my sweep.toml".into(),
            run_args: vec!["--reps".into(), "40".into(), "--set".into(), "routing.policy=decayed_score".into()],
            shards: 8,
            dir: "/scratch/u/batch".into(),
            partition: Some("cpu".into()),
            time: Some("01:00:00".into()),
            cpus_per_task: 4,
            mem: Some("4G".into()),
            extra: vec!["--account=sim".into(), "#SBATCH --qos=low".into()],
            confidence: 0.95,
        }
    }

    #[test]
    fn the_array_runs_one_shard_per_task_and_resumes_its_own_directory() {
        let s = sbatch_scripts(&batch()).shards;
        for line in [
            "#SBATCH --array=1-8",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --partition=cpu",
            "#SBATCH --time=01:00:00",
            "#SBATCH --mem=4G",
            "#SBATCH --account=sim",
            "#SBATCH --qos=low",
            "#SBATCH --output=/scratch/u/batch/logs/shard-%a.out",
            "OUT='/scratch/u/batch'/shard-\"$I\"",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} in\n{s}");
        }
        let exec = s.lines().find(|l| l.starts_with("exec ")).unwrap();
        assert_eq!(
            exec,
            "exec '/opt/bin/infersim' run '/home/u/my sweep.toml' --out \"$OUT\" --shard \"$I/8\" \
             --threads \"${SLURM_CPUS_PER_TASK:-4}\" -q --reps 40 --set routing.policy=decayed_score \"${RESUME[@]}\""
        );
        // Directives come before the first command, or sbatch ignores them.
        let first_command = s.lines().position(|l| l.starts_with("set -e")).unwrap();
        assert!(s.lines().enumerate().all(|(i, l)| !l.starts_with("#SBATCH") || i < first_command));
    }

    #[test]
    fn the_merge_analyzes_every_shard_and_submit_chains_it_after_the_array() {
        let scripts = sbatch_scripts(&batch());
        let exec = scripts.merge.lines().find(|l| l.starts_with("exec ")).unwrap();
        let dirs: Vec<String> = (1..=8).map(|i| format!("'/scratch/u/batch/shard-{i}'")).collect();
        assert_eq!(
            exec,
            format!(
                "exec '/opt/bin/infersim' analyze {} --out '/scratch/u/batch/merged' --confidence 0.95",
                dirs.join(" ")
            )
        );
        assert!(scripts.submit.contains("sbatch --parsable --dependency=afterok:\"$array\" merge.sbatch"));
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("station.servers=8"), "station.servers=8");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("tasks=[{name = \"x\"}]"), "'tasks=[{name = \"x\"}]'");
        assert_eq!(shell_quote(""), "''");
    }

    fn request(dir: &Path) -> SlurmRequest {
        SlurmRequest {
            scenario: "mmc".into(),
            overrides: vec!["station.servers=3".into()],
            shards: 4,
            dir: dir.join("batch"),
            reps: Some(8),
            seed: None,
            trace: TraceLevel::Timeseries,
            confidence: 0.9,
            partition: None,
            time: None,
            cpus_per_task: 2,
            mem: None,
            sbatch: Vec::new(),
            binary: Some("/opt/infersim".into()),
        }
    }

    #[test]
    fn a_batch_is_checked_written_and_submitted_with_the_merge_after_the_array() {
        let tmp = tempfile::tempdir().unwrap();
        let prepared = prepare(&Registry::builtin(), &request(tmp.path())).unwrap();
        assert_eq!(prepared.replications, 8);
        assert_eq!(prepared.batch.scenario, "mmc", "a built-in name stays a name");
        assert_eq!(
            prepared.batch.run_args,
            [
                "--reps",
                "8",
                "--seed",
                "42",
                "--set",
                "station.servers=3",
                "--trace",
                "timeseries",
                "--confidence",
                "0.9"
            ]
        );
        write_scripts(&prepared.batch).unwrap();
        for name in ["shards.sbatch", "merge.sbatch", "submit.sh", "logs"] {
            assert!(tmp.path().join("batch").join(name).exists(), "{name}");
        }
        let calls = std::sync::Mutex::new(Vec::new());
        let fake = |args: &[&str], dir: &Path| -> Result<String, String> {
            assert_eq!(dir, prepared.batch.dir);
            let mut calls = calls.lock().unwrap();
            calls.push(args.join(" "));
            Ok(format!("{};cluster\n", 100 + calls.len()))
        };
        assert_eq!(submit(&prepared.batch, &fake).unwrap(), ("101".into(), "102".into()));
        assert_eq!(
            *calls.lock().unwrap(),
            ["--parsable shards.sbatch", "--parsable --dependency=afterok:101 merge.sbatch"]
        );
        let refusing = |_: &[&str], _: &Path| -> Result<String, String> { Err("invalid partition".into()) };
        let e = submit(&prepared.batch, &refusing).unwrap_err();
        assert_eq!(e.to_string(), "sbatch --parsable shards.sbatch: invalid partition");
        assert_eq!(e.kind(), crate::error::ErrorKind::Failed);
    }

    #[test]
    fn bad_options_and_occupied_directories_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::builtin();
        let refused = |change: &dyn Fn(&mut SlurmRequest)| {
            let mut r = request(tmp.path());
            change(&mut r);
            let e = prepare(&registry, &r).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Input, "{e}");
            e.to_string()
        };
        assert_eq!(refused(&|r| r.shards = 0), "--shards must be at least 1");
        assert!(refused(&|r| r.shards = 9).contains("more than the batch's 8 replications"));
        assert!(refused(&|r| r.confidence = 1.0).contains("between 0 and 1"));
        assert!(refused(&|r| r.scenario = "no-such".into()).contains("no-such"));
        std::fs::create_dir_all(tmp.path().join("batch/shard-1")).unwrap();
        assert!(refused(&|_| ()).contains("already exists and is not empty"));
        assert!(!tmp.path().join("batch/shards.sbatch").exists());
    }
}
