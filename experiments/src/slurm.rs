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
}
