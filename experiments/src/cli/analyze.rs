//! `infersim analyze`: one or more output directories (the shards of a batch, say)
//! summarised as one batch.

use std::path::{Path, PathBuf};

use infersim_engine::stats::Warmup;

use super::CliError;
use super::print::{print_batch_means, print_notes, print_summary};
use crate::analysis::{batch_means_frame, batch_means_of_traces, write_csv};
use crate::batch::{BatchStatus, Manifest, read_manifest, same_batch, summarize_dirs, write_merged};
use crate::registry::Registry;
use crate::scenario::Scenario;

/// Summarise one or more output directories (e.g. the shards of one batch) as one batch.
#[derive(clap::Args)]
pub(super) struct AnalyzeArgs {
    /// Output directories of the same batch.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write the merged batch (needed for several directories).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Also a batch-means interval of this traced column (e.g. latency_s, wait_s,
    /// queue_len) for each replication: one long run, no replications needed.
    /// Repeatable; writes batch_means.csv.
    #[arg(long = "batch-means", value_name = "COLUMN")]
    batch_means: Vec<String>,
    /// Batches for --batch-means.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Warm-up rule for --batch-means: mser5 (delete the prefix that minimises the
    /// marginal standard error), none, or a number of leading observations.
    #[arg(long, default_value = "mser5", value_parser = parse_warmup)]
    warmup: Warmup,
}

fn parse_warmup(text: &str) -> Result<Warmup, String> {
    match text {
        "mser5" => Ok(Warmup::Mser5),
        "none" => Ok(Warmup::None),
        n => n.parse().map(Warmup::Fixed).map_err(|_| format!("`{n}`: expected mser5, none or a whole number")),
    }
}

/// Checks that the directories are the complete, distinct shards of one batch.
fn check_shards(dirs: &[PathBuf]) -> Result<Vec<Manifest>, CliError> {
    let bad = |dir: &PathBuf, problem: String| CliError::NotABatch { dir: dir.clone(), problem };
    // Shards that never ran (or failed before writing anything) have no manifest: name
    // them all at once rather than failing on the first.
    let absent: Vec<String> =
        dirs.iter().filter(|d| !d.join("manifest.json").exists()).map(|d| d.display().to_string()).collect();
    if !absent.is_empty() {
        return Err(CliError::Usage(format!(
            "the batch is incomplete: no batch in {} (never run, or failed before writing); run those shards, then \
             merge again",
            absent.join(", ")
        )));
    }
    let manifests: Vec<Manifest> = dirs
        .iter()
        .map(|d| read_manifest(d).map_err(|e| bad(d, format!("not an infersim output: {e}"))))
        .collect::<Result<_, _>>()?;
    let first = &manifests[0];
    for (dir, m) in dirs.iter().zip(&manifests) {
        if !same_batch(m, first) {
            let problem = "belongs to another batch than {} (scenario, seed or replications differ)";
            return Err(bad(dir, problem.replace("{}", &dirs[0].display().to_string())));
        }
        if m.status != BatchStatus::Complete {
            let (done, expected) = (m.completed, m.expected);
            let problem =
                format!("the batch there is not complete ({done} of {expected} replications); finish it with --resume");
            return Err(bad(dir, problem));
        }
    }
    let count = first.shard[1];
    let have: std::collections::BTreeSet<u64> = manifests.iter().map(|m| m.shard[0]).collect();
    let missing: Vec<String> = (1..=count).filter(|i| !have.contains(i)).map(|i| format!("{i}/{count}")).collect();
    if manifests.iter().any(|m| m.shard[1] != count) || have.len() != manifests.len() {
        return Err(CliError::Usage("the directories are not distinct shards of one batch".into()));
    }
    if !missing.is_empty() {
        return Err(CliError::Usage(format!("the batch is incomplete: shards {} are missing", missing.join(", "))));
    }
    Ok(manifests)
}

/// Summarises the batch; writes the merged batch where it may.
pub(super) fn analyze(registry: &Registry, args: AnalyzeArgs) -> Result<u8, CliError> {
    let AnalyzeArgs { dirs, out, confidence, batch_means, batches, warmup } = args;
    let manifests = check_shards(&dirs)?;
    let first = &manifests[0];
    let summary = summarize_dirs(&dirs, first, confidence)?;
    // Computed before anything is written, so a bad column leaves nothing behind.
    let mut series_rows = Vec::new();
    for series in &batch_means {
        series_rows.extend(batch_means_of_traces(&dirs, series, warmup, batches, confidence)?);
    }
    let mut merged = first.clone();
    merged.shard = [1, 1];
    merged.expected = manifests.iter().map(|m| m.expected).sum();
    merged.completed = manifests.iter().map(|m| m.completed).sum();
    merged.failed = manifests.iter().flat_map(|m| m.failed.clone()).collect();
    // Never rewrite a batch's own files: a single directory's analysis goes to
    // DIR/analysis unless --out says where.
    let target = match (out, dirs.as_slice()) {
        (Some(out), _) => Some(out),
        (None, [only]) => Some(only.join("analysis")),
        (None, _) => None,
    };
    if let Some(target) = target {
        write_merged(&dirs, &target, &merged, summary.clone(), confidence)?;
        if !series_rows.is_empty() {
            let frame = batch_means_frame(&series_rows, warmup)?;
            write_csv(&target.join("batch_means.csv"), &frame)?;
        }
        say!("wrote {}", target.display());
    } else {
        say!("(several directories and no --out: summary printed, nothing written)");
    }
    say!("infersim {} | scenario {} | {}", merged.version, merged.scenario, merged.description);
    let scenario = Scenario::parse_with(registry, &merged.scenario, &merged.scenario_toml, Path::new("")).ok();
    print_summary(&summary, &merged, scenario.as_ref());
    print_notes(&summary, &merged, registry);
    print_batch_means(&series_rows, confidence);
    Ok(0)
}
