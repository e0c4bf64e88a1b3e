//! The `infersim` command line, as a library: [`main`] runs it with any registry of
//! worlds, so a crate that adds its own world ships the same command with it.
//!
//! ```no_run
//! // The whole of a binary that runs infersim with its built-in worlds.
//! fn main() -> std::process::ExitCode {
//!     infersim::cli::main(infersim::registry::Registry::builtin())
//! }
//! ```
//!
//! Exit codes: 0 success, 1 a failed run, 2 bad input ([`ErrorKind`]), 130
//! interrupted (finished work kept).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use infersim_engine::Interrupt;

use crate::analysis::AnalysisError;
use crate::batch::BatchError;
use crate::calibrate::CalibrateError;
pub use crate::error::ErrorKind;
use crate::lock::LockError;
use crate::output::OutputError;
use crate::plot::PlotError;
use crate::registry::Registry;
use crate::runner::PlanError;
use crate::scenario::{Scenario, ScenarioError};
use crate::slurm::SlurmError;
use crate::trace::TraceLevel;

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

mod analyze;
mod calibrate;
mod compare;

pub use calibrate::{CorrespondenceTable, correspondence_table};
pub use compare::{Comparison, Part, comparison, comparison_by};
pub mod print;
mod run;
mod slurm;

/// infersim: discrete-event simulation of AI inference fleets.
#[derive(Parser)]
#[command(name = "infersim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Monte Carlo batch of a scenario, write it to an output directory and print its summary.
    Run(run::RunArgs),
    /// Summarise one or more output directories (e.g. the shards of one batch) as one batch.
    Analyze(analyze::AnalyzeArgs),
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
        /// Compare part by part: `pool` or `model` (a fleet's pools.parquet or models.parquet), each part's metrics paired by (point, replication).
        #[arg(long, value_name = "KIND")]
        by: Option<String>,
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
        /// Sweep charts part by part: `pool` or `model` (a fleet's pools_summary.parquet
        /// or models_summary.parquet), a line per part.
        #[arg(long, value_name = "KIND")]
        by: Option<String>,
    },
    /// Fit numeric keys of a scenario to measurements: writes the calibrated scenario,
    /// every evaluation (calibration.parquet), the fitted values with profile
    /// intervals (fitted.csv) and charts to --out.
    Calibrate(calibrate::CalibrateArgs),
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
        /// Part by part: `pool` or `model` (the observed file's column of that name
        /// groups its rows; each group is compared with that part of the batch).
        #[arg(long, value_name = "KIND")]
        by: Option<String>,
    },
    /// Write (and with --submit, submit) a Slurm job array that runs a batch in shards,
    /// plus a job that merges them once every shard has succeeded.
    Slurm {
        /// A built-in scenario name or a path to a TOML file.
        scenario: String,
        #[command(flatten)]
        options: slurm::SlurmOptions,
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

/// Why a command failed: the library's errors, typed to here, and the command
/// line's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The scenario does not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The batch's parameters.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The batch could not run or be written.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Analysis failed.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// Charts failed.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Calibration failed.
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    /// The Slurm batch failed.
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// An output directory is in use.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Results could not be written or read back.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// An option or argument the command cannot use.
    #[error("{0}")]
    Usage(String),
    /// A directory that holds no batch, or not one the command can use.
    #[error("{dir}: {problem}")]
    NotABatch {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file the command writes could not be written.
    #[error("{path}: cannot write: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl CliError {
    /// What kind of failure it is: bad input or a failed run.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CliError::Scenario(e) => e.kind(),
            CliError::Plan(e) => e.kind(),
            CliError::Batch(e) => e.kind(),
            CliError::Analysis(e) => e.kind(),
            CliError::Plot(e) => e.kind(),
            CliError::Calibrate(e) => e.kind(),
            CliError::Slurm(e) => e.kind(),
            CliError::Lock(e) => e.kind(),
            CliError::Output(e) => e.kind(),
            CliError::Usage(_) | CliError::NotABatch { .. } => ErrorKind::Input,
            CliError::Write { .. } => ErrorKind::Failed,
        }
    }
}

/// Runs the command line of the process with the worlds of `registry`.
pub fn main(registry: Registry) -> ExitCode {
    main_with(registry, std::env::args_os())
}

/// Runs the command line `args` (the program's name first) with the worlds of
/// `registry`: what [`main`] does, callable from tests and other programs.
pub fn main_with(registry: Registry, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    ExitCode::from(exit_code_of(registry, args))
}

/// What [`main_with`] does, giving the exit code as a number (for front ends that
/// pass it on, such as `python -m infersim`).
pub fn exit_code_of(registry: Registry, args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> u8 {
    // The default scenario is the registry's: shown in `run --help` like any default.
    let mut command = Cli::command();
    if let Some(name) = registry.default_scenario() {
        command = command.mut_subcommand("run", |run| run.mut_arg("scenario", |arg| arg.default_value(name)));
    }
    let parsed = command.try_get_matches_from(args).and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ErrorKind::Input.exit_code() } else { 0 };
        }
    };
    match dispatch(&registry, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("infersim: error: {e}");
            e.kind().exit_code()
        }
    }
}

fn dispatch(registry: &Registry, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Run(args) => run::run(registry, args),
        Command::Analyze(args) => analyze::analyze(registry, args),
        Command::Compare { base, candidate, fail_on, confidence, by } => {
            compare::compare(&base, &candidate, &fail_on, confidence, by.as_deref())
        }
        Command::Plot { dir, to, confidence, x, by } => {
            compare::plot(registry, &dir, to, confidence, x.as_deref(), by.as_deref())
        }
        Command::Calibrate(args) => calibrate::calibrate(registry, args),
        Command::Correspond { out, observed, confidence, by } => {
            calibrate::correspond(registry, &out, &observed, confidence, by.as_deref())
        }
        Command::Slurm { scenario, options, submit } => slurm::slurm(registry, scenario, options, submit),
        Command::List => {
            // The default first, then world by world.
            let mut scenarios = registry.scenarios();
            scenarios.sort_by_key(|(name, _)| Some(*name) != registry.default_scenario());
            let width = scenarios.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
            for (name, _) in scenarios {
                let s = Scenario::load_with(registry, name)?;
                say!("{name:<width$}  {}", s.description);
            }
            Ok(0)
        }
        Command::Validate { scenario, overrides } => {
            let s = load(registry, &scenario, &overrides)?;
            say!("{}", s.to_toml().trim_end());
            Ok(0)
        }
    }
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

/// A scenario by built-in name or path, with `--set` overrides applied.
fn load(registry: &Registry, scenario: &str, overrides: &[String]) -> Result<Scenario, ScenarioError> {
    let mut s = Scenario::load_with(registry, scenario)?;
    if !overrides.is_empty() {
        s.apply_overrides(overrides)?;
    }
    Ok(s)
}

/// Ctrl-C (or SIGTERM, SIGHUP) once: stop the batch, keeping every finished
/// replication (the running ones stop within a few thousand events and run again on
/// resume) and writing the manifest; twice: exit at once. (A second program in one
/// process keeps the first handler: its interrupt is never raised.)
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
