//! Calibration and sim-to-real correspondence.
//!
//! [`calibrate`] fits a scenario's numeric keys to what a real system measured: it
//! runs the scenario at candidate values (every evaluation on the same seeds, common
//! random numbers, so the objective is smooth in the parameters), measures the distance
//! between simulated and observed summaries, distributions or time series, and
//! searches the bounds with Nelder-Mead (argmin). Each fitted value then gets an
//! interval with a stated coverage, by inverting a Monte Carlo test
//! ([`interval`]): replications at the optimum, taken one at a time as if they were
//! the observed data, give the objective's spread when the model is right; a value is
//! in the interval when the observed data are no farther from the model at that value
//! than that spread allows (its `confidence` quantile). [`correspondence`] gives the
//! sim-to-real table of a finished batch against an observed file.
//!
//! Observed files are read like any data file (CSV, Parquet, JSON Lines). A requests
//! file gives per-request `ttft_s`, `tpot_s`, `e2e_s` (or vLLM's per-request records,
//! `queued_ts`, `first_token_ts`, `last_token_ts`, `output_toks`, from which they are
//! computed) and any other column in seconds (`*_s`), summarised as
//! `<stem>_mean_s`, `<stem>_p50_s`, `<stem>_p90_s`, `<stem>_p95_s`, `<stem>_p99_s`,
//! with `makespan_s` when arrival and finish times are known: the names of
//! replications.parquet. A time series gives `t_h` and its columns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use infersim_engine::Interrupt;

use crate::scenario::Scenario;

pub mod interval;
mod journal;
mod observed;
mod report;
pub mod run;
mod simulated;

pub use interval::{Interval, Noise};
pub use journal::{Evaluation, Journal};
pub use observed::{Columns, Observed, ks_distance, quantile};
pub use report::{
    Correspondence, FittedRow, correspondence, correspondence_csv, fitted_csv, fitted_rows, plot_calibration,
    plot_distributions, read_replications, trace_ks, write_evaluations,
};
pub use simulated::{Simulated, score, simulate, trace_level};

/// Bad input to `calibrate` or `correspond` (exit 2), a run that failed (exit 1), or
/// an interruption (exit 130: what finished is journaled for `--resume`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrateError {
    /// A `--param`, `--target` or observed file that cannot be used.
    #[error("{0}")]
    Input(String),
    /// A replication, a file or a computation failed.
    #[error("{0}")]
    Failed(String),
    /// The calibration was interrupted; its finished evaluations are journaled.
    #[error("interrupted")]
    Interrupted,
}

fn input(message: impl Into<String>) -> CalibrateError {
    CalibrateError::Input(message.into())
}

fn failed(message: impl ToString) -> CalibrateError {
    CalibrateError::Failed(message.to_string())
}

/// A parameter to fit: a numeric key of the scenario and its bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Dotted key, as `--set` takes it.
    pub key: String,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Searched on a log scale.
    pub log: bool,
    /// The key takes whole numbers: values are rounded, and set as integers.
    pub integer: bool,
}

impl Param {
    /// Reads `KEY=LOW..HIGH`.
    pub fn parse(text: &str, log_keys: &[String]) -> Result<Param, CalibrateError> {
        let bad =
            || input(format!("--param {text}: expected KEY=LOW..HIGH, e.g. serving.engine.step_overhead_s=0..0.01"));
        let (key, range) = text.split_once('=').ok_or_else(bad)?;
        let (low, high) = range.split_once("..").ok_or_else(bad)?;
        let (low, high): (f64, f64) = (low.trim().parse().map_err(|_| bad())?, high.trim().parse().map_err(|_| bad())?);
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(input(format!("--param {text}: the bounds must be finite numbers with LOW < HIGH")));
        }
        let log = log_keys.iter().any(|k| k == key.trim());
        if log && low <= 0.0 {
            return Err(input(format!("--param {text}: a --log parameter needs LOW > 0")));
        }
        Ok(Param { key: key.trim().to_string(), low, high, log, integer: false })
    }

    /// The value at position `u` in [0, 1] of the (log) range; whole for an integer key.
    pub fn at(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0);
        let x = if self.log {
            (self.low.ln() + u * (self.high.ln() - self.low.ln())).exp()
        } else {
            self.low + u * (self.high - self.low)
        };
        if self.integer { x.round().clamp(self.low.ceil(), self.high.floor()) } else { x }
    }

    /// The position of `x` in the (log) range.
    pub fn to_unit(&self, x: f64) -> f64 {
        if self.log {
            (x.ln() - self.low.ln()) / (self.high.ln() - self.low.ln())
        } else {
            (x - self.low) / (self.high - self.low)
        }
    }

    /// The `--set` argument that gives the key value `x`.
    pub fn set_arg(&self, x: f64) -> String {
        if self.integer { format!("{}={}", self.key, x as i64) } else { format!("{}={x:e}", self.key) }
    }
}

/// What the objective compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// Relative error of these per-replication metrics (mean over replications)
    /// against the observed summary.
    Metrics(Vec<String>),
    /// Kolmogorov-Smirnov distance of these request columns.
    Distribution(Vec<String>),
    /// Squared error of these time-series columns at the observed `t_h`, relative to
    /// the observed mean square.
    Series(Vec<String>),
}

/// What `calibrate` was asked.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// The parameters.
    pub params: Vec<Param>,
    /// The objective.
    pub objective: Objective,
    /// Replications per evaluation (replications 0 to `reps - 1` of `seed`, the same
    /// at every evaluation).
    pub reps: u64,
    /// Master seed of the evaluations' replications.
    pub seed: u64,
    /// Most evaluations in all, the search's and the intervals': a hard cap.
    pub budget: usize,
    /// Replications at the optimum taken as pseudo-observations for the intervals.
    pub interval_reps: u64,
    /// Coverage the intervals are built for, in (0, 1).
    pub confidence: f64,
    /// Counts evaluations as they finish (hidden when not wanted).
    pub progress: indicatif::ProgressBar,
    /// Raised to stop: the calibration ends with [`CalibrateError::Interrupted`].
    pub interrupt: Interrupt,
}

impl Calibration {
    /// Evaluations kept for the intervals out of the budget: up to 28 per parameter
    /// (each side: up to 8 steps outward, doubling, then 6 halvings), at most half.
    pub fn interval_budget(&self) -> usize {
        (28 * self.params.len()).min(self.budget / 2)
    }
}

/// The result of a calibration.
#[derive(Clone, Debug)]
pub struct Fitted {
    /// Every evaluation against the observed data, in order.
    pub evaluations: Vec<Evaluation>,
    /// Index of the best: the lowest objective of them all.
    pub best: usize,
    /// The objective's spread at the optimum, when there is one.
    pub noise: Option<Noise>,
    /// Per parameter, its interval.
    pub intervals: Vec<Interval>,
}

/// One calibration's evaluations: every one is journaled, and the log keeps them in
/// order.
struct Problem<'a> {
    base: &'a Scenario,
    calibration: &'a Calibration,
    observed: &'a Observed,
    work: PathBuf,
    log: Mutex<Vec<Evaluation>>,
    error: Mutex<Option<CalibrateError>>,
    journal: &'a Journal,
}

impl Problem<'_> {
    fn values(&self, u: &[f64]) -> Vec<f64> {
        self.calibration.params.iter().zip(u).map(|(p, &u)| p.at(u)).collect()
    }

    /// The scenario with the parameters at `values`.
    fn scenario_at(&self, values: &[f64]) -> Result<Scenario, CalibrateError> {
        let mut s = self.base.clone();
        let sets: Vec<String> = self.calibration.params.iter().zip(values).map(|(p, &v)| p.set_arg(v)).collect();
        s.apply_overrides(&sets).map_err(|e| input(e.to_string()))?;
        Ok(s)
    }

    /// Evaluations so far (the budget counts them).
    fn spent(&self) -> usize {
        self.log.lock().expect("not poisoned").len()
    }

    /// The objective at `values`, from the journal if it was evaluated before.
    fn run(&self, values: &[f64]) -> Result<f64, CalibrateError> {
        if let Some(e) = self.journal.find(values, None) {
            let objective = e.objective;
            self.log.lock().expect("not poisoned").push(e);
            self.calibration.progress.inc(1);
            return Ok(objective);
        }
        let c = self.calibration;
        let s = self.scenario_at(values)?;
        let level = trace_level(&c.objective);
        let simulated = simulate(&s, c.seed, (0, c.reps), level, &self.work, &c.interrupt)?;
        let (objective, errors) = score(&c.objective, self.observed, &simulated)?;
        let evaluation = Evaluation { values: values.to_vec(), objective, errors, pseudo: None };
        self.journal.record(&evaluation)?;
        self.log.lock().expect("not poisoned").push(evaluation);
        c.progress.inc(1);
        Ok(objective)
    }

    fn best(&self) -> usize {
        let log = self.log.lock().expect("not poisoned");
        (0..log.len()).min_by(|&a, &b| log[a].objective.total_cmp(&log[b].objective)).expect("one evaluation")
    }

    fn evaluation(&self, i: usize) -> Evaluation {
        self.log.lock().expect("not poisoned")[i].clone()
    }
}

/// The problem as argmin holds it (argmin takes its problem by value; the log stays
/// with the caller), with the evaluations it may reach.
struct Search<'p, 'a> {
    problem: &'p Problem<'a>,
    budget: usize,
}

impl argmin::core::CostFunction for Search<'_, '_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, u: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let problem = self.problem;
        if problem.spent() >= self.budget {
            return Err(argmin::core::Error::msg("budget"));
        }
        // Outside the unit cube: the value at the nearest bound, plus a penalty that
        // keeps the simplex inside.
        let outside: f64 = u.iter().map(|x| (x - x.clamp(0.0, 1.0)).abs()).sum();
        match problem.run(&problem.values(u)) {
            Ok(v) => Ok(v + outside),
            Err(e) => {
                *problem.error.lock().expect("not poisoned") = Some(e);
                Err(argmin::core::Error::msg("stopped"))
            }
        }
    }
}

/// Nelder-Mead in the unit cube from `start`, its simplex `step` wide along each
/// parameter, until the evaluations reach `budget` or it converges.
fn search(problem: &Problem<'_>, start: &[f64], step: f64, budget: usize) -> Result<(), CalibrateError> {
    use argmin::core::Executor;
    use argmin::solver::neldermead::NelderMead;
    if problem.spent() >= budget {
        return Ok(());
    }
    let mut simplex = vec![start.to_vec()];
    for i in 0..start.len() {
        let mut p = start.to_vec();
        // Inward, so that the simplex starts inside the cube.
        p[i] += if start[i] + step <= 1.0 { step } else { -step };
        simplex.push(p);
    }
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-7).map_err(failed)?;
    let result =
        Executor::new(Search { problem, budget }, solver).configure(|state| state.max_iters(budget as u64)).run();
    if let Some(e) = problem.error.lock().expect("not poisoned").take() {
        return Err(e);
    }
    match result {
        Err(e) if !e.to_string().contains("budget") => Err(failed(e)),
        _ => Ok(()),
    }
}

/// Fits the parameters: Nelder-Mead in the unit cube of the (log) bounds from its
/// centre, then each parameter's interval around the optimum ([`interval`]); when the
/// simulation has no noise (so no interval), the evaluations kept for the intervals
/// go to a second search from the optimum instead. Evaluations already in `journal`
/// are not run again. At most `budget` evaluations in all.
pub fn calibrate(
    base: &Scenario,
    calibration: &Calibration,
    observed: &Observed,
    work: &Path,
    journal: &Journal,
) -> Result<Fitted, CalibrateError> {
    let d = calibration.params.len();
    let problem = Problem {
        base,
        calibration,
        observed,
        work: work.join("eval"),
        log: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        journal,
    };
    // Check the inputs on the first point before searching.
    problem.run(&problem.values(&vec![0.5; d]))?;
    let budget = calibration.budget;
    search(&problem, &vec![0.5; d], 0.3, budget - calibration.interval_budget())?;
    let mut optimum = problem.evaluation(problem.best());
    let noise = interval::noise(&problem, &optimum.values)?;
    if noise.is_none() {
        // Two evaluations per parameter tell whether it moves the objective at all.
        let start: Vec<f64> = calibration.params.iter().zip(&optimum.values).map(|(p, &v)| p.to_unit(v)).collect();
        search(&problem, &start, 0.05, budget.saturating_sub(2 * d))?;
        optimum = problem.evaluation(problem.best());
    }
    let intervals = interval::intervals(&problem, &optimum, noise.as_ref())?;
    let _ = std::fs::remove_dir_all(work.join("eval"));
    let best = problem.best();
    Ok(Fitted { evaluations: problem.log.into_inner().expect("not poisoned"), best, noise, intervals })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_map_the_unit_interval() {
        let p = Param::parse("a.b=1..100", &["a.b".into()]).unwrap();
        assert!(p.log && (p.at(0.5) - 10.0).abs() < 1e-9 && (p.at(2.0) - 100.0).abs() < 1e-9);
        assert!((p.to_unit(10.0) - 0.5).abs() < 1e-12);
        let q = Param::parse("x=0..0.01", &[]).unwrap();
        assert!((q.at(0.25) - 0.0025).abs() < 1e-15);
        for bad in ["x=1..0", "x", "x=a..b", "x=1..1"] {
            assert!(Param::parse(bad, &[]).is_err(), "{bad}");
        }
        assert!(Param::parse("x=0..1", &["x".into()]).unwrap_err().to_string().contains("LOW > 0"));
        let n = Param { integer: true, ..Param::parse("engine.max_num_seqs=8..256", &[]).unwrap() };
        assert_eq!((n.at(0.0), n.at(0.5), n.at(1.0)), (8.0, 132.0, 256.0));
        assert_eq!(n.set_arg(132.0), "engine.max_num_seqs=132");
    }
}
