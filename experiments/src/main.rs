//! The `infersim` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use infersim::analysis::{Gate, cell};
use infersim::batch::{BatchSpec, BatchStatus, Manifest, default_out_dir, read_manifest, run_batch, summarize_dirs};
use infersim::runner::Shard;
use infersim::scenario::{BUILTIN, DEFAULT_SCENARIO, Scenario};
use infersim::trace::TraceLevel;
use infersim_engine::Interrupt;
use infersim_engine::stats::Warmup;
use polars::prelude::{AnyValue, DataFrame};

/// infersim: discrete-event simulation of AI inference fleets.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Monte Carlo batch of a scenario, write it to an output directory and print its summary.
    Run {
        /// A built-in scenario name or a path to a TOML file.
        #[arg(default_value = DEFAULT_SCENARIO)]
        scenario: String,
        /// Replications per point (default: the scenario's simulation.replications).
        #[arg(long)]
        reps: Option<u64>,
        /// Master seed (default: the scenario's simulation.seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory (default: out/<scenario>-<date>-<time>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Worker threads (default: all cores). Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Override a scenario key by its dotted path, e.g. --set station.servers=8.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run only the I-th of N disjoint slices of the batch, e.g. --shard 2/8.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Continue the interrupted batch in --out.
        #[arg(long, requires = "out")]
        resume: bool,
        /// Confidence level of the intervals.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// What to record per replication (cumulative): summary, timeseries (sampled state), requests (a row per request).
        #[arg(long, value_enum, default_value_t = TraceArg::Summary)]
        trace: TraceArg,
    },
    /// Summarise one or more output directories (e.g. the shards of one batch) as one batch.
    Analyze {
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
    },
    /// Compare two batches replication by replication: the difference, its interval and the relative change.
    Compare {
        /// The baseline batch's output directory.
        base: PathBuf,
        /// The candidate batch's output directory.
        candidate: PathBuf,
        /// Exit 1 when METRIC is significantly worse than the tolerance, e.g. sojourn_p99_s:+5% (higher is worse) or utilisation:-2% (lower is worse). Repeatable.
        #[arg(long = "fail-on", value_name = "METRIC:+X%")]
        fail_on: Vec<String>,
        /// Confidence level of the intervals.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
    },
    /// Draw the charts of a batch (PNG and SVG): time series with bands, latency CDF, sweeps with intervals.
    Plot {
        /// The batch's output directory.
        dir: PathBuf,
        /// Where to put the charts (default: DIR/plots).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Confidence level of bands and bars.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
        /// The swept key on the x axis of sweep charts (default: the first swept key).
        #[arg(long, value_name = "KEY")]
        x: Option<String>,
    },
    /// Fit numeric keys of a scenario to measurements: writes the calibrated scenario,
    /// every evaluation (calibration.parquet), the fitted values with profile
    /// intervals (fitted.csv) and charts to --out.
    Calibrate(CalibrateArgs),
    /// The sim-to-real table of a finished batch: each observed metric beside the
    /// simulated mean, its interval and relative error (OUT/correspondence.csv).
    Correspond {
        /// The batch's output directory.
        out: PathBuf,
        /// The measured file (as for calibrate).
        #[arg(long, required = true, value_name = "FILE")]
        observed: String,
        /// Confidence level of the intervals.
        #[arg(long, default_value_t = 0.95)]
        confidence: f64,
    },
    /// Write (and with --submit, submit) a Slurm job array that runs a batch in shards,
    /// plus a job that merges them once every shard has succeeded.
    Slurm {
        /// A built-in scenario name or a path to a TOML file.
        scenario: String,
        #[command(flatten)]
        options: SlurmOptions,
        /// Submit both jobs with sbatch and print their ids.
        #[arg(long)]
        submit: bool,
    },
    /// List the built-in scenarios.
    List,
    /// Check a scenario and print it resolved.
    Validate {
        /// A built-in scenario name or a path to a TOML file.
        scenario: String,
        /// Override a scenario key by its dotted path.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

/// How much to record per replication, as the command line spells it (the library's
/// `TraceLevel` knows nothing of clap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TraceArg {
    /// Per-replication metrics only.
    Summary,
    /// Also the state sampled on a time grid (timeseries.parquet).
    Timeseries,
    /// Also one row per request (requests.parquet).
    Requests,
}

impl From<TraceArg> for TraceLevel {
    fn from(arg: TraceArg) -> Self {
        match arg {
            TraceArg::Summary => TraceLevel::Summary,
            TraceArg::Timeseries => TraceLevel::Timeseries,
            TraceArg::Requests => TraceLevel::Requests,
        }
    }
}

/// Everything the CLI prints on stdout goes through here, so that a closed pipe
/// (`infersim run | head`) ends the output quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("infersim: cannot write to stdout: {e}");
            }
        }
    }};
}

fn load(scenario: &str, overrides: &[String]) -> anyhow::Result<Scenario> {
    let mut s = Scenario::load(scenario)?;
    if !overrides.is_empty() {
        s.apply_overrides(overrides)?;
    }
    Ok(s)
}

fn fmt_value(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 1e6 || x.abs() < 1e-3 {
        format!("{x:.4e}")
    } else {
        format!("{x:.5}")
    }
}

fn f64_at(df: &DataFrame, column: &str, row: usize) -> Option<f64> {
    match df.column(column).ok()?.get(row).ok()? {
        AnyValue::Float64(x) => Some(x),
        AnyValue::UInt64(x) => Some(x as f64),
        AnyValue::UInt32(x) => Some(f64::from(x)),
        _ => None,
    }
}

/// Prints the summary, a block per point, with analytic values where the model has them.
fn print_summary(summary: &DataFrame, manifest: &Manifest, scenario: Option<&Scenario>) {
    let confidence = f64_at(summary, "confidence", 0).unwrap_or(0.95);
    let metric_at =
        |row: usize| summary.column("metric").ok().and_then(|c| c.get(row).ok()).map(|v| cell(&v)).unwrap_or_default();
    let width = (0..summary.height()).map(|r| metric_at(r).len()).max().unwrap_or(6).max(6);
    let mut current = None;
    let mut theory = Vec::new();
    let mut measured: Option<(String, Vec<(String, f64)>)> = None;
    for row in 0..summary.height() {
        let point = f64_at(summary, "point", row).unwrap_or(0.0) as u32;
        if current != Some(point) {
            current = Some(point);
            let model = scenario.and_then(|s| s.point(point).ok()).map(|p| p.model);
            theory = model.as_ref().map(|m| m.analytic()).unwrap_or_default();
            measured = model.as_ref().and_then(|m| m.reference());
            say!("");
            if let Some((source, _)) = &measured {
                say!("measured: {source}");
            }
            let params: Vec<String> = manifest.point_params(point).iter().map(|(k, v)| format!("{k} = {v}")).collect();
            if !params.is_empty() {
                say!("point {point}: {}", params.join(", "));
            }
            let header = format!(
                "{:<width$} {:>4} {:>12} {:>27}",
                "metric",
                "n",
                "mean",
                format!("{:.0}% CI", confidence * 100.0)
            );
            if measured.is_some() {
                say!("{header} {:>12} {:>9}", "measured", "error")
            } else if theory.is_empty() {
                say!("{header}")
            } else {
                say!("{header} {:>12}", "analytic")
            }
        }
        let metric = metric_at(row);
        let n = f64_at(summary, "n", row).unwrap_or(0.0);
        let mean = f64_at(summary, "mean", row).map_or("-".into(), fmt_value);
        let ci = match (f64_at(summary, "ci_low", row), f64_at(summary, "ci_high", row)) {
            (Some(lo), Some(hi)) => format!("[{}, {}]", fmt_value(lo), fmt_value(hi)),
            _ if n == 0.0 => "(no replication has a value)".into(),
            _ => "(needs 2 replications)".into(),
        };
        let line = format!("{metric:<width$} {n:>4} {mean:>12} {ci:>27}");
        if let Some((_, values)) = &measured {
            match (values.iter().find(|(m, _)| *m == metric), f64_at(summary, "mean", row)) {
                (Some((_, real)), Some(sim)) if *real != 0.0 => {
                    say!("{line} {:>12} {:>+8.1}%", fmt_value(*real), (sim - real) / real * 100.0)
                }
                _ => say!("{line}"),
            }
        } else if theory.is_empty() {
            say!("{line}");
        } else {
            let exact = theory.iter().find(|(m, _)| *m == metric).map(|(_, v)| fmt_value(*v)).unwrap_or_default();
            say!("{line} {exact:>12}");
        }
    }
}

/// Says once, on stderr, if any replication looked a service profile up outside its
/// measured range: silent extrapolation is the commonest way such simulations go wrong.
fn warn_on_extrapolation(summary: &DataFrame) {
    for row in 0..summary.height() {
        let metric = summary.column("metric").ok().and_then(|c| c.get(row).ok()).map(|v| cell(&v));
        if metric.as_deref() == Some("extrapolated_lookups") && f64_at(summary, "mean", row).is_some_and(|m| m > 0.0) {
            eprintln!(
                "infersim: warning: the service profile was used outside its measured batch sizes \
                 (extrapolated_lookups > 0 at point {}); results there rest on extrapolation",
                f64_at(summary, "point", row).unwrap_or(0.0)
            );
            return;
        }
    }
}

/// Says, after the table, at which points the loss ran away: such replications stop
/// early and carry `diverged = true`, so their other metrics cover a shorter run.
fn report_divergence(summary: &DataFrame) {
    for row in 0..summary.height() {
        let metric = summary.column("metric").ok().and_then(|c| c.get(row).ok()).map(|v| cell(&v));
        if metric.as_deref() != Some("diverged") {
            continue;
        }
        let (Some(fraction), Some(n)) = (f64_at(summary, "mean", row), f64_at(summary, "n", row)) else { continue };
        if fraction > 0.0 {
            say!(
                "RUNAWAY at point {}: the loss diverged in {:.0} of {n:.0} replications (diverged = true); \
                 those stopped when it did, so their other metrics cover fewer hours (see diverged_at_h)",
                f64_at(summary, "point", row).unwrap_or(0.0),
                (fraction * n).round()
            );
        }
    }
}

/// Ctrl-C (or SIGTERM, SIGHUP) once: stop the batch, keeping every finished
/// replication (the running ones stop within a few thousand events and run again on
/// resume) and writing the manifest; twice: exit at once.
fn install_interrupt() -> Interrupt {
    let cancel = Interrupt::new();
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.raise() {
            eprintln!("\ninfersim: interrupted again; stopping now");
            std::process::exit(130);
        }
        eprintln!("\ninfersim: stopping; finished replications are kept (Ctrl-C again to stop at once)");
    });
    cancel
}

#[allow(clippy::too_many_arguments)]
fn run(
    scenario: &str,
    reps: Option<u64>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    threads: Option<usize>,
    overrides: &[String],
    shard: Option<String>,
    resume: bool,
    confidence: f64,
    quiet: bool,
    trace: TraceLevel,
) -> anyhow::Result<ExitCode> {
    let s = load(scenario, overrides)?;
    let shard = match shard {
        Some(text) => Shard::parse(&text).map_err(anyhow::Error::msg)?,
        None => Shard::ALL,
    };
    let spec = BatchSpec {
        replications: reps.unwrap_or(s.replications),
        seed: seed.unwrap_or(s.seed),
        threads: threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        shard,
        out: out.unwrap_or_else(|| default_out_dir(&s)),
        resume,
        confidence,
        trace,
    };
    let total = infersim::runner::WorkPlan::new(s.point_count() as usize, spec.replications, spec.shard)?.len();
    for warning in s.warnings() {
        eprintln!("infersim: warning: {warning}");
    }
    for key in &s.pinned {
        eprintln!(
            "infersim: note: --set {key} pins a swept key: the sweep over it is dropped, and every point takes the value set"
        );
    }
    let cancel = install_interrupt();
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} replications  {msg}  ETA {eta}")
                .expect("a valid progress template"),
        );
        bar
    };
    let events = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let report = run_batch(&s, &spec, &cancel, &|record| {
        if let Some(e) = record.metric("events") {
            let total = events.fetch_add(e as u64, Ordering::Relaxed) + e as u64;
            // Formatting a message per replication is a measurable share of a batch of
            // tiny replications: only when someone sees it.
            if !bar.is_hidden() {
                bar.set_message(format!("{:.1} M events/s", total as f64 / started.elapsed().as_secs_f64() / 1e6));
            }
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let m = &report.manifest;
    let secs = started.elapsed().as_secs_f64();
    say!("infersim {} | scenario {} | {}", m.version, m.scenario, m.description);
    say!(
        "{} points x {} replications (shard {}/{}), seed {}, {} threads: {secs:.2} s, {:.1} million events/s",
        m.point_count(),
        m.replications,
        m.shard[0],
        m.shard[1],
        m.seed,
        spec.threads,
        events.load(Ordering::Relaxed) as f64 / secs / 1e6
    );
    say!("output: {}", spec.out.display());
    if m.status == BatchStatus::Interrupted {
        say!(
            "interrupted: {} of {} replications done and kept; continue with: {}",
            m.completed,
            m.expected,
            resume_command(scenario, &spec, overrides)
        );
        return Ok(ExitCode::from(130));
    }
    if let Some(summary) = &report.summary {
        print_summary(summary, m, Some(&s));
        warn_on_extrapolation(summary);
        report_divergence(summary);
    }
    if !m.failed.is_empty() {
        let first = &m.failed[0];
        eprintln!(
            "infersim: {} replications failed (first: point {} replication {}: {}); see manifest.json",
            m.failed.len(),
            first.point,
            first.replication,
            first.error
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// A scenario's name without the mark `--set` adds.
fn scenario_name(name: &str) -> &str {
    name.strip_suffix(" (with --set)").unwrap_or(name)
}

/// An argument as a shell reads it back: quoted when it holds anything but plain
/// characters.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The command that continues an interrupted batch: every option the batch depends
/// on, so that `--resume` accepts it.
fn resume_command(scenario: &str, spec: &BatchSpec, overrides: &[String]) -> String {
    let mut args = vec!["infersim".to_string(), "run".into(), shell_quote(scenario)];
    args.extend(["--out".into(), shell_quote(&spec.out.display().to_string())]);
    args.extend(["--reps".into(), spec.replications.to_string(), "--seed".into(), spec.seed.to_string()]);
    for set in overrides {
        args.extend(["--set".into(), shell_quote(set)]);
    }
    if spec.trace != TraceLevel::Summary {
        args.extend(["--trace".into(), format!("{:?}", spec.trace).to_lowercase()]);
    }
    if spec.shard != Shard::ALL {
        args.extend(["--shard".into(), format!("{}/{}", spec.shard.index, spec.shard.count)]);
    }
    args.push("--resume".into());
    args.join(" ")
}

/// What `analyze --batch-means` asks for.
struct BatchMeansSpec {
    series: Vec<String>,
    batches: usize,
    warmup: Warmup,
}

fn parse_warmup(text: &str) -> Result<Warmup, String> {
    match text {
        "mser5" => Ok(Warmup::Mser5),
        "none" => Ok(Warmup::None),
        n => n.parse().map(Warmup::Fixed).map_err(|_| format!("`{n}`: expected mser5, none or a whole number")),
    }
}

fn analyze(
    dirs: &[PathBuf],
    out: Option<PathBuf>,
    confidence: f64,
    batch_means: &BatchMeansSpec,
) -> anyhow::Result<ExitCode> {
    // Shards that never ran (or failed before writing anything) have no manifest: name
    // them all at once rather than failing on the first.
    let absent: Vec<String> =
        dirs.iter().filter(|d| !d.join("manifest.json").exists()).map(|d| d.display().to_string()).collect();
    if !absent.is_empty() {
        bail!(
            "the batch is incomplete: no batch in {} (never run, or failed before writing); run those shards, then merge again",
            absent.join(", ")
        );
    }
    let manifests: Vec<Manifest> = dirs
        .iter()
        .map(|d| read_manifest(d).with_context(|| format!("{}: not an infersim output", d.display())))
        .collect::<Result<_, _>>()?;
    let first = &manifests[0];
    for (dir, m) in dirs.iter().zip(&manifests) {
        if !infersim::batch::same_batch(m, first) {
            bail!(
                "{}: belongs to another batch than {} (scenario, seed or replications differ)",
                dir.display(),
                dirs[0].display()
            );
        }
        if m.status != BatchStatus::Complete {
            bail!(
                "{}: the batch there is not complete ({} of {} replications); finish it with --resume",
                dir.display(),
                m.completed,
                m.expected
            );
        }
    }
    let count = first.shard[1];
    let have: std::collections::BTreeSet<u64> = manifests.iter().map(|m| m.shard[0]).collect();
    let missing: Vec<String> = (1..=count).filter(|i| !have.contains(i)).map(|i| format!("{i}/{count}")).collect();
    if manifests.iter().any(|m| m.shard[1] != count) || have.len() != manifests.len() {
        bail!("the directories are not distinct shards of one batch");
    }
    if !missing.is_empty() {
        bail!("the batch is incomplete: shards {} are missing", missing.join(", "));
    }
    let summary = summarize_dirs(dirs, first, confidence)?;
    // Computed before anything is written, so a bad column leaves nothing behind.
    let mut series_rows = Vec::new();
    for series in &batch_means.series {
        series_rows.extend(infersim::analysis::batch_means_of_traces(
            dirs,
            series,
            batch_means.warmup,
            batch_means.batches,
            confidence,
        )?);
    }
    let mut merged = first.clone();
    merged.shard = [1, 1];
    merged.expected = manifests.iter().map(|m| m.expected).sum();
    merged.completed = manifests.iter().map(|m| m.completed).sum();
    merged.failed = manifests.iter().flat_map(|m| m.failed.clone()).collect();
    // Never rewrite a batch's own files: a single directory's analysis goes to
    // DIR/analysis unless --out says where.
    let target = match (out, dirs) {
        (Some(out), _) => Some(out),
        (None, [only]) => Some(only.join("analysis")),
        (None, _) => None,
    };
    if let Some(target) = target {
        infersim::batch::write_merged(dirs, &target, &merged, summary.clone())?;
        if !series_rows.is_empty() {
            let frame = infersim::analysis::batch_means_frame(&series_rows, batch_means.warmup)?;
            infersim::analysis::write_csv(&target.join("batch_means.csv"), &frame)?;
        }
        say!("wrote {}", target.display());
    } else {
        say!("(several directories and no --out: summary printed, nothing written)");
    }
    say!("infersim {} | scenario {} | {}", merged.version, merged.scenario, merged.description);
    let scenario = Scenario::parse(&merged.scenario, &merged.scenario_toml).ok();
    print_summary(&summary, &merged, scenario.as_ref());
    report_divergence(&summary);
    print_batch_means(&series_rows, confidence);
    Ok(ExitCode::SUCCESS)
}

/// One line per (series, point, replication): the batch-means interval and how it
/// was made.
fn print_batch_means(rows: &[infersim::analysis::SeriesBatchMeans], confidence: f64) {
    if rows.is_empty() {
        return;
    }
    say!("");
    say!("batch means (one long run each; {:.0}% intervals over batch means):", confidence * 100.0);
    say!(
        "{:<14} {:>5} {:>4} {:>10} {:>9} {:>16} {:>12} {:>27} {:>6}",
        "series",
        "point",
        "rep",
        "observed",
        "deleted",
        "batches x size",
        "mean",
        "interval",
        "lag-1"
    );
    for r in rows {
        let ci = &r.result.ci;
        let lag1 = r.result.lag1_autocorrelation.map_or("-".into(), |x| format!("{x:.2}"));
        say!(
            "{:<14} {:>5} {:>4} {:>10} {:>9} {:>16} {:>12} {:>27} {:>6}",
            r.series,
            r.point,
            r.replication,
            r.observations,
            r.result.deleted,
            format!("{} x {}", ci.n, r.result.batch_size),
            fmt_value(ci.mean),
            format!("[{}, {}]", fmt_value(ci.low), fmt_value(ci.high)),
            lag1
        );
    }
    if rows.iter().any(|r| r.result.lag1_autocorrelation.is_some_and(|x| x > 0.2)) {
        say!("(lag-1 autocorrelation above 0.2: the batches are too short to be independent; use fewer batches)");
    }
}

fn signed(x: f64) -> String {
    if x >= 0.0 { format!("+{}", fmt_value(x)) } else { fmt_value(x) }
}

fn complete_manifest(dir: &std::path::Path) -> anyhow::Result<Manifest> {
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    // A directory without a readable manifest is bad input, not a failed run.
    let m = read_manifest(dir).map_err(|e| anyhow::anyhow!("{}: not an infersim output ({e})", dir.display()))?;
    if m.status != BatchStatus::Complete || m.shard[1] != 1 {
        bail!(
            "{}: not a complete, unsharded batch (merge shards with `infersim analyze DIR... --out MERGED` first)",
            dir.display()
        );
    }
    Ok(m)
}

fn compare(
    base: &std::path::Path,
    candidate: &std::path::Path,
    fail_on: &[String],
    confidence: f64,
) -> anyhow::Result<ExitCode> {
    let gates: Vec<Gate> =
        fail_on.iter().map(|g| Gate::parse(g).map_err(anyhow::Error::msg)).collect::<Result<_, _>>()?;
    let (bm, cm) = (complete_manifest(base)?, complete_manifest(candidate)?);
    let metrics: Vec<String> = bm.metrics.iter().filter(|m| cm.metrics.contains(m)).cloned().collect();
    if let Some(g) = gates.iter().find(|g| !metrics.contains(&g.metric)) {
        bail!("--fail-on {}: no such metric in both batches; they have: {}", g.metric, metrics.join(", "));
    }
    let rows = infersim::analysis::compare(
        infersim::analysis::scan_replications(&[base.to_path_buf()])?,
        infersim::analysis::scan_replications(&[candidate.to_path_buf()])?,
        &metrics,
        confidence,
    )?;
    let crn = bm.seed == cm.seed;
    if bm.world != cm.world || scenario_name(&bm.scenario) != scenario_name(&cm.scenario) {
        eprintln!(
            "infersim: warning: the batches are of different scenarios ({} and {}): their metrics may not mean the same",
            bm.scenario, cm.scenario
        );
    }
    say!("compare {} -> {}", base.display(), candidate.display());
    let differences = infersim::scenario::differences(&bm.scenario_toml, &cm.scenario_toml);
    if !differences.is_empty() {
        let shown: Vec<&str> = differences.iter().take(6).map(String::as_str).collect();
        let more = differences.len().saturating_sub(shown.len());
        say!(
            "differences: {}{}",
            shown.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        );
    }
    say!(
        "paired by (point, replication); {}",
        if crn { "same seed: common random numbers" } else { "different seeds: independent pairs, wider intervals" }
    );
    let mut current = None;
    let width = rows.iter().map(|r| r.metric.len()).max().unwrap_or(6).max(6);
    for r in &rows {
        if current != Some(r.point) {
            current = Some(r.point);
            say!("");
            if bm.point_count() > 1 {
                say!("point {}", r.point);
            }
            say!(
                "{:<width$} {:>5} {:>12} {:>12} {:>34} {:>9}",
                "metric",
                "pairs",
                "base",
                "candidate",
                format!("difference [{:.0}% CI]", confidence * 100.0),
                "change"
            );
        }
        let diff = match r.difference {
            Some(ci) => format!("{} [{}, {}]", signed(ci.mean), signed(ci.low), signed(ci.high)),
            None => "(needs 2 pairs)".into(),
        };
        let change = r.relative_change().map_or(String::new(), |c| format!("{:+.2}%", c * 100.0));
        let mark = if r.significant() { " *" } else { "" };
        say!(
            "{:<width$} {:>5} {:>12} {:>12} {:>34} {:>9}{mark}",
            r.metric,
            r.pairs,
            fmt_value(r.base_mean),
            fmt_value(r.candidate_mean),
            diff,
            change
        );
    }
    say!("");
    say!("* the interval of the difference excludes zero");
    let failures: Vec<String> = gates
        .iter()
        .flat_map(|g| {
            rows.iter().filter(move |r| r.metric == g.metric && g.fails(r)).map(move |r| {
                format!(
                    "{} at point {}: {} (allowed {}{:.2}%)",
                    r.metric,
                    r.point,
                    r.relative_change().map_or("-".into(), |c| format!("{:+.2}%", c * 100.0)),
                    if g.direction > 0.0 { "+" } else { "-" },
                    g.tolerance * 100.0
                )
            })
        })
        .collect();
    if failures.is_empty() {
        if !gates.is_empty() {
            say!("gates passed: {}", fail_on.join(", "));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("infersim: gate failed: {f}");
        }
        Ok(ExitCode::from(1))
    }
}

fn plot(dir: &std::path::Path, to: Option<PathBuf>, confidence: f64, x: Option<&str>) -> anyhow::Result<ExitCode> {
    let manifest = complete_manifest(dir)?;
    let _lock = infersim::lock::DirLock::acquire(dir, "plot")?;
    let summary = summarize_dirs(&[dir.to_path_buf()], &manifest, confidence)?;
    let target = to.unwrap_or_else(|| dir.join("plots"));
    let written = infersim::plot::plot_batch(dir, &manifest, &summary, &target, confidence, x)?;
    if written.is_empty() {
        say!("nothing to plot: run with --trace timeseries or --trace requests, or with a [sweep]");
    }
    for path in written {
        say!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `infersim slurm`'s options, as given.
#[derive(clap::Args)]
struct SlurmOptions {
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
fn slurm(scenario: &str, o: SlurmOptions, submit: bool) -> anyhow::Result<ExitCode> {
    // The same checks as `run`, before anything is written.
    let s = load(scenario, &o.overrides)?;
    if o.shards == 0 {
        bail!("--shards must be at least 1");
    }
    if o.cpus_per_task == 0 {
        bail!("--cpus-per-task must be at least 1");
    }
    if !(o.confidence > 0.0 && o.confidence < 1.0) {
        bail!("--confidence {} is invalid: expected a number between 0 and 1", o.confidence);
    }
    let replications = o.reps.unwrap_or(s.replications);
    if replications == 0 {
        bail!("--reps must be at least 1");
    }
    let items = u64::from(s.point_count()).saturating_mul(replications);
    if o.shards > items {
        bail!("--shards {} is more than the batch's {items} replications: some shards would be empty", o.shards);
    }
    let absolute =
        |p: &std::path::Path| std::path::absolute(p).with_context(|| format!("{}: cannot resolve", p.display()));
    let dir = absolute(&o.dir)?;
    if std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        bail!("{}: already exists and is not empty; choose another --dir", dir.display());
    }
    let binary = match o.binary {
        Some(b) => absolute(&b)?,
        None => std::env::current_exe().context("cannot find this binary; give --binary")?,
    };
    // Built-in names stay names; files are named by absolute path, for the compute nodes.
    let scenario_arg = if BUILTIN.iter().any(|(name, _)| *name == scenario) {
        scenario.to_string()
    } else {
        absolute(std::path::Path::new(scenario))?.to_string_lossy().into_owned()
    };
    let mut run_args =
        vec!["--reps".to_string(), replications.to_string(), "--seed".into(), o.seed.unwrap_or(s.seed).to_string()];
    for set in &o.overrides {
        run_args.extend(["--set".to_string(), set.clone()]);
    }
    if o.trace != TraceArg::Summary {
        run_args.extend(["--trace".to_string(), format!("{:?}", o.trace).to_lowercase()]);
    }
    run_args.extend(["--confidence".to_string(), o.confidence.to_string()]);
    let batch = infersim::slurm::SlurmBatch {
        binary,
        scenario: scenario_arg,
        run_args,
        shards: o.shards,
        dir: dir.clone(),
        partition: o.partition,
        time: o.time,
        cpus_per_task: o.cpus_per_task,
        mem: o.mem,
        extra: o.sbatch,
        confidence: o.confidence,
    };
    let scripts = infersim::slurm::sbatch_scripts(&batch);
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("{}: cannot create", dir.display()))?;
    for (name, text) in
        [("shards.sbatch", &scripts.shards), ("merge.sbatch", &scripts.merge), ("submit.sh", &scripts.submit)]
    {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("{}: cannot make executable", path.display()))?;
        }
    }
    say!(
        "wrote {}/{{shards.sbatch, merge.sbatch, submit.sh}}: {} shards of {} replications",
        dir.display(),
        o.shards,
        items
    );
    if !submit {
        say!("submit with: {}", dir.join("submit.sh").display());
        return Ok(ExitCode::SUCCESS);
    }
    let sbatch = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new("sbatch")
            .args(args)
            .current_dir(&dir)
            .output()
            .context("cannot run sbatch: is Slurm installed and on PATH?")?;
        if !output.status.success() {
            bail!("sbatch {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
        }
        let text = String::from_utf8_lossy(&output.stdout);
        // --parsable prints "id" or "id;cluster".
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch {}: unexpected answer {text:?}", args.join(" "));
        }
        Ok(id)
    };
    let array = sbatch(&["--parsable", "shards.sbatch"])?;
    let merge = sbatch(&["--parsable", &format!("--dependency=afterok:{array}"), "merge.sbatch"])?;
    say!("submitted array job {array} ({} tasks) and merge job {merge} (runs once every task has succeeded)", o.shards);
    say!("merged output: {}", batch.merged_dir().display());
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct CalibrateArgs {
    /// A built-in scenario name or a path to a TOML file.
    scenario: String,
    /// A measured file: requests (CSV, Parquet, JSON Lines; vLLM's per-request
    /// records as they are) or a time series with t_h. Repeatable.
    #[arg(long, required = true, value_name = "FILE")]
    observed: Vec<String>,
    /// A key to fit and its bounds, KEY=LOW..HIGH. Repeatable.
    #[arg(long = "param", required = true, value_name = "KEY=LOW..HIGH")]
    params: Vec<String>,
    /// Search this --param on a log scale. Repeatable.
    #[arg(long = "log", value_name = "KEY")]
    log: Vec<String>,
    /// Metrics to match (relative error), e.g. ttft_mean_s,tpot_mean_s.
    #[arg(long, value_delimiter = ',', value_name = "METRIC")]
    target: Vec<String>,
    /// Request columns whose distributions to match (Kolmogorov-Smirnov), e.g. ttft_s.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    distribution: Vec<String>,
    /// Time-series columns to match at the observed t_h (squared error), e.g. loss.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    series: Vec<String>,
    /// Replications per evaluation (the same seeds at every evaluation).
    #[arg(long, default_value_t = 3)]
    reps: u64,
    /// Master seed (default: the scenario's simulation.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Most evaluations in all (the search's and the intervals'): a hard cap.
    #[arg(long, default_value_t = 60)]
    budget: usize,
    /// Replications at the optimum taken as observed data, for the intervals'
    /// threshold.
    #[arg(long, default_value_t = 40)]
    interval_reps: u64,
    /// Coverage of the intervals.
    #[arg(long, default_value_t = 0.9)]
    confidence: f64,
    /// Output directory (default: out/calibrate-<scenario>-<date>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a scenario key first, as for run.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the interrupted calibration in --out: evaluations it finished are not
    /// run again.
    #[arg(long, requires = "out")]
    resume: bool,
}

fn calibrate(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    use infersim::calibrate::{CalibrateError, Interval, Objective, run::Request};
    let scenario = load(&a.scenario, &a.overrides)?;
    let objective = match (a.target.is_empty(), a.distribution.is_empty(), a.series.is_empty()) {
        (false, true, true) => Objective::Metrics(a.target.clone()),
        (true, false, true) => Objective::Distribution(a.distribution.clone()),
        (true, true, false) => Objective::Series(a.series.clone()),
        _ => {
            return Err(CalibrateError::Input("give exactly one of --target, --distribution or --series".into()).into());
        }
    };
    let request = Request {
        scenario,
        observed: a.observed.clone(),
        params: a.params.clone(),
        log: a.log.clone(),
        objective,
        reps: a.reps,
        seed: a.seed,
        budget: a.budget,
        interval_reps: a.interval_reps,
        confidence: a.confidence,
        out: a.out.clone(),
        resume: a.resume,
    };
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(a.budget as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} evaluations  {elapsed}")
                .expect("a valid progress template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    say!(
        "infersim {} | calibrate {} | {} parameter(s), budget {} evaluations x {} replications",
        env!("CARGO_PKG_VERSION"),
        request.scenario.source_name,
        a.params.len(),
        a.budget,
        a.reps
    );
    let cancel = install_interrupt();
    let report = match infersim::calibrate::run::run(&request, progress, &cancel) {
        Err(CalibrateError::Interrupted) => {
            let out = request.out.clone().map_or_else(|| "DIR".into(), |o| o.display().to_string());
            say!("interrupted: finished evaluations are kept; continue with the same command and --out {out} --resume");
            return Ok(ExitCode::from(130));
        }
        other => other?,
    };
    let best = &report.fitted.evaluations[report.fitted.best];
    for (i, p) in report.params.iter().enumerate() {
        let value = fmt_value(best.values[i]);
        match &report.fitted.intervals[i] {
            Interval::Flat => say!(
                "{}: the objective does not change with it within [{}, {}]: it does not influence the target, so no value is fitted",
                p.key,
                fmt_value(p.low),
                fmt_value(p.high)
            ),
            Interval::NoNoise => say!(
                "{} = {value}  (no interval: every replication gives the same output, so there is no noise to set one by)",
                p.key
            ),
            Interval::Misfit => say!(
                "{} = {value}  (no interval: the observed data are farther from the model at its best than its own replications are)",
                p.key
            ),
            Interval::Range { low, high, low_open, high_open } => say!(
                "{} = {value}  ({:.0}% interval {}{} .. {}{})",
                p.key,
                a.confidence * 100.0,
                if *low_open { "<= " } else { "" },
                fmt_value(*low),
                if *high_open { ">= " } else { "" },
                fmt_value(*high)
            ),
        }
    }
    if let Some(noise) = &report.fitted.noise {
        say!(
            "threshold {} ({:.0}% quantile of the objective of {} replications at the optimum taken as observed data)",
            fmt_value(noise.threshold),
            noise.confidence * 100.0,
            noise.scores.len()
        );
    }
    say!("objective {} after {} evaluations", fmt_value(best.objective), report.fitted.evaluations.len());
    for (name, e) in &best.errors {
        say!("  {name}: {e:+.4}");
    }
    say!("output: {}", report.out.display());
    Ok(ExitCode::SUCCESS)
}

fn correspond(out: &std::path::Path, observed: &str, confidence: f64) -> anyhow::Result<ExitCode> {
    use infersim::calibrate::{Observed, correspondence, correspondence_csv, read_replications, trace_ks};
    let replications = read_replications(out)?;
    let _lock = infersim::lock::DirLock::acquire(out, "correspond")?;
    let observed = Observed::read(observed, &infersim::inputs::FileInputs::new(std::path::Path::new(".")))?;
    let rows = correspondence(&replications, &observed, confidence);
    let reps = replications.height() as u64;
    let ks = trace_ks(out, reps, &observed);
    if rows.is_empty() && ks.is_empty() {
        return Err(anyhow::Error::new(infersim::calibrate::CalibrateError::Input(format!(
            "{}: reports none of the observed metrics ({})",
            out.display(),
            observed.metrics.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
        ))));
    }
    let width = rows.iter().map(|r| r.metric.len()).max().unwrap_or(6).max(6);
    say!(
        "{:<width$} {:>12} {:>12} {:>27} {:>9} {:>7}",
        "metric",
        "observed",
        "simulated",
        format!("{:.0}% CI", confidence * 100.0),
        "error",
        "inside"
    );
    for r in &rows {
        let ci =
            r.ci.map_or("(needs 2 replications)".into(), |(lo, hi)| format!("[{}, {}]", fmt_value(lo), fmt_value(hi)));
        say!(
            "{:<width$} {:>12} {:>12} {:>27} {:>+8.1}% {:>7}",
            r.metric,
            fmt_value(r.observed),
            fmt_value(r.simulated_mean),
            ci,
            r.relative_error * 100.0,
            if r.inside { "yes" } else { "no" }
        );
    }
    for (name, d) in &ks {
        say!("KS distance of {name}: {d:.4}");
    }
    let path = out.join("correspondence.csv");
    let tmp = out.join("correspondence.csv.tmp");
    std::fs::write(&tmp, correspondence_csv(&rows, &ks)?)?;
    std::fs::rename(&tmp, &path)?;
    say!("written: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// 1 for a run that failed (a file that could not be written or read back, a
/// computation that failed), 2 for bad input (the scenario, the options, an output
/// directory that is occupied): what the README promises.
fn exit_code(e: &anyhow::Error) -> u8 {
    use infersim::analysis::AnalysisError;
    use infersim::batch::BatchError;
    use infersim::output::OutputError;
    use infersim::plot::PlotError;
    let failed = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<infersim::calibrate::CalibrateError>(),
            Some(infersim::calibrate::CalibrateError::Failed(_))
        ) || cause.is::<OutputError>()
            || cause.is::<std::io::Error>()
            || matches!(
                cause.downcast_ref::<AnalysisError>(),
                Some(AnalysisError::Polars { .. } | AnalysisError::Output(_))
            )
            || matches!(
                cause.downcast_ref::<PlotError>(),
                Some(PlotError::Draw { .. } | PlotError::Io { .. } | PlotError::Polars(_))
            )
            || matches!(cause.downcast_ref::<BatchError>(), Some(BatchError::Output(_)))
    });
    if failed { 1 } else { 2 }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { scenario, reps, seed, out, threads, overrides, shard, resume, confidence, quiet, trace } => {
            run(&scenario, reps, seed, out, threads, &overrides, shard, resume, confidence, quiet, trace.into())
        }
        Command::Analyze { dirs, out, confidence, batch_means, batches, warmup } => {
            analyze(&dirs, out, confidence, &BatchMeansSpec { series: batch_means, batches, warmup })
        }
        Command::Compare { base, candidate, fail_on, confidence } => compare(&base, &candidate, &fail_on, confidence),
        Command::Plot { dir, to, confidence, x } => plot(&dir, to, confidence, x.as_deref()),
        Command::Calibrate(args) => calibrate(args),
        Command::Correspond { out, observed, confidence } => correspond(&out, &observed, confidence),
        Command::Slurm { scenario, options, submit } => slurm(&scenario, options, submit),
        Command::List => {
            let width = BUILTIN.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
            for (name, _) in BUILTIN {
                let s = Scenario::builtin(name).expect("built-in scenarios are valid (tested)");
                say!("{name:<width$}  {}", s.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { scenario, overrides } => load(&scenario, &overrides).map(|s| {
            say!("{}", s.to_toml().trim_end());
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("infersim: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
