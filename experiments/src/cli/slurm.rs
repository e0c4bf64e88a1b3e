//! `infersim slurm`: a batch as a Slurm job array and a merge job (the work is the
//! library's [`crate::slurm`]).

use std::path::PathBuf;

use super::{CliError, TraceArg};
use crate::registry::Registry;
use crate::slurm::{SlurmRequest, prepare, submit as submit_jobs, system_sbatch, write_scripts};

/// `infersim slurm`'s options, as given.
#[derive(clap::Args)]
pub(super) struct SlurmOptions {
    /// Array tasks: the batch is split into this many shards.
    #[arg(long)]
    shards: u64,
    /// The batch directory: scripts, logs, shard-I/ and merged/ go here.
    #[arg(long)]
    dir: PathBuf,
    /// Replications per point (default: the scenario's simulation.replications).
    #[arg(long)]
    reps: Option<u64>,
    /// Master seed (default: the scenario's simulation.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Override a scenario key by its dotted path.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// What each shard records (as for run).
    #[arg(long, value_enum, default_value_t = TraceArg::Summary)]
    trace: TraceArg,
    /// Confidence level of the merged summary.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Time limit per task and for the merge, e.g. 02:00:00.
    #[arg(long)]
    time: Option<String>,
    /// CPUs per array task; each task runs that many threads.
    #[arg(long, default_value_t = 1)]
    cpus_per_task: u32,
    /// Memory per task and for the merge, e.g. 4G.
    #[arg(long)]
    mem: Option<String>,
    /// An extra #SBATCH line, e.g. --sbatch=--account=sim. Repeatable.
    #[arg(long = "sbatch", value_name = "LINE", allow_hyphen_values = true)]
    sbatch: Vec<String>,
    /// The infersim binary as the compute nodes see it (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// Writes the batch's sbatch scripts after checking everything they will run; submits
/// them when asked.
pub(super) fn slurm(registry: &Registry, scenario: String, o: SlurmOptions, submit: bool) -> Result<u8, CliError> {
    let request = SlurmRequest {
        scenario,
        overrides: o.overrides,
        shards: o.shards,
        dir: o.dir,
        reps: o.reps,
        seed: o.seed,
        trace: o.trace.into(),
        confidence: o.confidence,
        partition: o.partition,
        time: o.time,
        cpus_per_task: o.cpus_per_task,
        mem: o.mem,
        sbatch: o.sbatch,
        binary: o.binary,
    };
    let prepared = prepare(registry, &request)?;
    let batch = &prepared.batch;
    write_scripts(batch)?;
    say!(
        "wrote {}/{{shards.sbatch, merge.sbatch, submit.sh}}: {} shards of {} replications",
        batch.dir.display(),
        batch.shards,
        prepared.replications
    );
    if !submit {
        say!("submit with: {}", batch.dir.join("submit.sh").display());
        return Ok(0);
    }
    let (array, merge) = submit_jobs(batch, &system_sbatch)?;
    say!(
        "submitted array job {array} ({} tasks) and merge job {merge} (runs once every task has succeeded)",
        batch.shards
    );
    say!("merged output: {}", batch.merged_dir().display());
    Ok(0)
}
