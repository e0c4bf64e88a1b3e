//! `infersim run`: a Monte Carlo batch, its progress and its summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;

use indicatif::{ProgressBar, ProgressStyle};

use super::print::{print_notes, print_summary};
use super::{CliError, TraceArg, install_interrupt, load};
use crate::batch::{BatchSpec, BatchStatus, Manifest, default_out_dir, run_batch_watched};
use crate::registry::Registry;
use crate::runner::{Shard, Watch, WorkPlan};
use crate::scenario::Scenario;
use crate::slurm::shell_quote;
use crate::trace::TraceLevel;

/// Run a Monte Carlo batch of a scenario, write it to an output directory and print its summary.
#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// A built-in scenario name or a path to a TOML file.
    #[arg(value_name = "SCENARIO")]
    scenario: Option<String>,
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
}

/// Runs the batch; 130 when interrupted (what finished is kept), 1 when a
/// replication failed.
pub(super) fn run(registry: &Registry, args: RunArgs) -> Result<u8, CliError> {
    let RunArgs { scenario, reps, seed, out, threads, overrides, shard, resume, confidence, quiet, trace } = args;
    let scenario = match scenario.as_deref().or(registry.default_scenario()) {
        Some(name) => name.to_string(),
        None => return Err(CliError::Usage("name a scenario: these worlds ship none".into())),
    };
    let (overrides, trace): (&[String], TraceLevel) = (&overrides, trace.into());
    let s = load(registry, &scenario, overrides)?;
    let shard = match shard {
        Some(text) => Shard::parse(&text).map_err(CliError::Usage)?,
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
    let total = WorkPlan::new(s.point_count() as usize, spec.replications, spec.shard)?.len();
    warn_before_running(&s);
    let cancel = install_interrupt();
    let bar = progress_bar(quiet, total);
    let (events, done) = (AtomicU64::new(0), AtomicU64::new(0));
    let watch = Watch::default();
    let started = std::time::Instant::now();
    let report = std::thread::scope(|scope| {
        // The bar is redrawn five times a second until the batch returns (dropping
        // `_stop` ends the wait at once, so a short batch is not held back).
        let (_stop, stopped) = std::sync::mpsc::channel::<()>();
        if !bar.is_hidden() {
            let (bar, watch, done, events) = (&bar, &watch, &done, &events);
            scope.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW_EVERY) {
                    let (done, events) = (done.load(Ordering::Relaxed), events.load(Ordering::Relaxed));
                    show_progress(bar, watch, done, total, events, started);
                }
            });
        }
        run_batch_watched(
            &s,
            &spec,
            &cancel,
            &|record| {
                if let Some(e) = record.metric("events") {
                    events.fetch_add(e as u64, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            },
            &watch,
        )
    })?;
    bar.finish_and_clear();
    let m = &report.manifest;
    print_header(m, &spec, started.elapsed().as_secs_f64(), events.load(Ordering::Relaxed));
    if m.status == BatchStatus::Interrupted {
        say!(
            "interrupted: {} of {} replications done and kept; continue with: {}",
            m.completed,
            m.expected,
            resume_command(&scenario, &spec, overrides)
        );
        return Ok(130);
    }
    if let Some(summary) = &report.summary {
        print_summary(summary, m, Some(&s));
        print_notes(summary, m, registry);
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
        return Ok(1);
    }
    Ok(0)
}

/// What a user should know before a batch starts: the scenario's warnings, and swept
/// keys that `--set` pinned.
fn warn_before_running(s: &Scenario) {
    for warning in s.warnings() {
        eprintln!("infersim: warning: {warning}");
    }
    for key in &s.pinned {
        eprintln!(
            "infersim: note: --set {key} pins a swept key: the sweep over it is dropped, and every point takes the value set"
        );
    }
}

/// A bar of `total` replications on a terminal, in thousandths of a replication so
/// that one long replication moves it too; hidden with `--quiet` or when stderr is not
/// a terminal.
fn progress_bar(quiet: bool, total: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total * PER_REPLICATION);
    let style = ProgressStyle::with_template("{bar:40} {msg}  ETA {eta}");
    bar.set_style(style.expect("a valid progress template"));
    bar
}

/// Steps of the progress bar per replication.
const PER_REPLICATION: u64 = 1000;

/// How often the progress bar is redrawn.
const REDRAW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Sets the bar to the replications done plus the share of its horizon each one under
/// way has passed (its simulated clock), and says how many are done and how fast
/// events go.
fn show_progress(bar: &ProgressBar, watch: &Watch, done: u64, total: u64, events: u64, started: std::time::Instant) {
    // A replication whose world sets no horizon counts once it is done.
    let running: f64 = watch.running().into_iter().flatten().map(|f| f.min(0.999)).sum();
    let position = done * PER_REPLICATION + (running * PER_REPLICATION as f64) as u64;
    bar.set_position(position.min(total * PER_REPLICATION));
    let rate = match events {
        0 => String::new(),
        e => format!("  {:.1} M events/s", e as f64 / started.elapsed().as_secs_f64() / 1e6),
    };
    bar.set_message(format!("{done}/{total} replications{rate}"));
}

/// What ran, how fast, and where it went.
fn print_header(m: &Manifest, spec: &BatchSpec, secs: f64, events: u64) {
    say!("infersim {} | scenario {} | {}", m.version, m.scenario, m.description);
    say!(
        "{} points x {} replications (shard {}/{}), seed {}, {} threads: {secs:.2} s, {:.1} million events/s",
        m.point_count(),
        m.replications,
        m.shard[0],
        m.shard[1],
        m.seed,
        spec.threads,
        events as f64 / secs / 1e6
    );
    say!("output: {}", spec.out.display());
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
