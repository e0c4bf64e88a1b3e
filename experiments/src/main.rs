//! The `infersim` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infersim::runner::{CONFIDENCE, analytic, run_batch};
use infersim::scenario::{BUILTIN, DEFAULT_SCENARIO, Scenario};

/// infersim: discrete-event simulation of AI inference fleets.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Monte Carlo batch of a scenario and print its results with confidence intervals.
    Run {
        /// A built-in scenario name or a path to a TOML file.
        #[arg(default_value = DEFAULT_SCENARIO)]
        scenario: String,
        /// Replications (default: the scenario's simulation.replications).
        #[arg(long)]
        reps: Option<u64>,
        /// Master seed (default: the scenario's simulation.seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Worker threads (default: all cores). Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Override a scenario key by its dotted path, e.g. --set station.servers=8.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
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

fn run(
    scenario: &str,
    reps: Option<u64>,
    seed: Option<u64>,
    threads: Option<usize>,
    overrides: &[String],
) -> anyhow::Result<()> {
    let s = load(scenario, overrides)?;
    let reps = reps.unwrap_or(s.replications);
    let seed = seed.unwrap_or(s.seed);
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let batch = run_batch(&s, reps, seed, threads)?;
    let secs = batch.elapsed.as_secs_f64();
    println!("infersim {} | scenario {} | {}", env!("CARGO_PKG_VERSION"), s.source_name, s.description);
    println!(
        "{reps} replications, seed {seed}, {threads} threads: {secs:.2} s, {:.1} million events/s",
        batch.events() as f64 / secs / 1e6
    );
    let theory = analytic(&s.station);
    println!();
    println!(
        "{:<14} {:>4} {:>12} {:>27} {:>12}",
        "metric",
        "n",
        "mean",
        format!("{:.0}% CI", CONFIDENCE * 100.0),
        "analytic"
    );
    for m in batch.summaries() {
        let exact = theory.iter().find(|(name, _)| *name == m.name).map(|(_, v)| fmt_value(*v)).unwrap_or_default();
        let (mean, ci) = match m.ci {
            Some(ci) => (fmt_value(ci.mean), format!("[{}, {}]", fmt_value(ci.low), fmt_value(ci.high))),
            None => ("-".into(), "(needs 2 replications)".into()),
        };
        println!("{:<14} {:>4} {:>12} {:>27} {:>12}", m.name, m.n, mean, ci, exact);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { scenario, reps, seed, threads, overrides } => run(&scenario, reps, seed, threads, &overrides),
        Command::List => {
            for (name, _) in BUILTIN {
                let s = Scenario::builtin(name).expect("built-in scenarios are valid (tested)");
                println!("{name:<12} {}", s.description);
            }
            Ok(())
        }
        Command::Validate { scenario, overrides } => load(&scenario, &overrides).map(|s| print!("{}", s.to_toml())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infersim: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
