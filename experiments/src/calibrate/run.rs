//! `infersim calibrate` as a library call: checks the request, owns the output
//! directory, runs the calibration (resuming it from its journal when asked) and writes
//! what it found. The command line only parses arguments and prints the [`Report`].

use std::fs;
use std::path::{Path, PathBuf};

use infersim_engine::Interrupt;

use super::{
    CalibrateError, Calibration, Fitted, Interval, Journal, Objective, Observed, Param, calibrate, failed, input,
    plot_calibration, plot_distributions, simulate, write_evaluations,
};
use crate::inputs::FileInputs;
use crate::lock::{DirLock, occupied};
use crate::scenario::Scenario;
use crate::trace::TraceLevel;

/// What to calibrate, as `infersim calibrate` takes it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The scenario, with any `--set` applied.
    pub scenario: Scenario,
    /// Measured files (read relative to the current directory), merged.
    pub observed: Vec<String>,
    /// `KEY=LOW..HIGH` per parameter.
    pub params: Vec<String>,
    /// Keys searched on a log scale.
    pub log: Vec<String>,
    /// What to compare.
    pub objective: Objective,
    /// Replications per evaluation.
    pub reps: u64,
    /// Master seed (default: the scenario's).
    pub seed: Option<u64>,
    /// Most evaluations in all.
    pub budget: usize,
    /// Replications at the optimum for the intervals' threshold.
    pub interval_reps: u64,
    /// Coverage of the intervals.
    pub confidence: f64,
    /// Output directory (default: `out/calibrate-<scenario>-<date>-<time>`).
    pub out: Option<PathBuf>,
    /// Continue the calibration journaled in `out`.
    pub resume: bool,
}

/// What a calibration found and where it wrote it.
#[derive(Clone, Debug)]
pub struct Report {
    /// The output directory.
    pub out: PathBuf,
    /// The parameters, as fitted.
    pub params: Vec<Param>,
    /// Every evaluation, the best, the noise and the intervals.
    pub fitted: Fitted,
    /// Whether a calibrated `scenario.toml` was written (some parameter moved the
    /// objective).
    pub calibrated: bool,
}

impl Request {
    /// The parameters, checked against the scenario: each names a number in it (an
    /// integer key is fitted in whole numbers) and both bounds are values the scenario
    /// accepts.
    fn checked_params(&self) -> Result<Vec<Param>, CalibrateError> {
        let s = &self.scenario;
        for key in &self.log {
            if !self.params.iter().any(|p| p.split_once('=').is_some_and(|(k, _)| k.trim() == key)) {
                return Err(input(format!("--log {key}: not one of the --param keys")));
            }
        }
        let mut params = Vec::new();
        for text in &self.params {
            let mut p = Param::parse(text, &self.log)?;
            match s.value_at(&p.key) {
                Some(v) if v.is_integer() => p.integer = true,
                Some(v) if v.is_float() => {}
                Some(v) => return Err(input(format!("--param {}: the scenario's value is {v}, not a number", p.key))),
                None => {
                    return Err(input(format!(
                        "--param {}: the scenario has no such key (set it first with --set)",
                        p.key
                    )));
                }
            }
            if p.integer && p.high.floor() < p.low.ceil() {
                return Err(input(format!("--param {text}: {} takes whole numbers, and none lies between", p.key)));
            }
            let mut probe = s.clone();
            for v in [p.at(0.0), p.at(1.0)] {
                probe.apply_overrides(&[p.set_arg(v)]).map_err(|e| input(format!("--param {}: {e}", p.key)))?;
            }
            params.push(p);
        }
        Ok(params)
    }

    /// Everything that can be checked before anything is written.
    fn check(&self) -> Result<(Vec<Param>, Observed), CalibrateError> {
        if self.reps == 0 || self.budget == 0 {
            return Err(input("--reps and --budget must be at least 1"));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(input(format!("--confidence {}: expected a number between 0 and 1", self.confidence)));
        }
        let s = &self.scenario;
        if s.point_count() != 1 {
            return Err(input(format!(
                "{}: calibrate one point; this scenario sweeps {} (remove its [sweep])",
                s.source_name,
                s.point_count()
            )));
        }
        let params = self.checked_params()?;
        let mut observed = Observed::default();
        let world = s.registry.get(s.first_point().model.world()).expect("a scenario's world is in its registry");
        let inputs = FileInputs::new(Path::new("."), s.registry.data());
        for path in &self.observed {
            observed.merge(Observed::read(path, &inputs, world.as_ref())?);
        }
        Ok((params, observed))
    }

    /// The journal's first line: what it is a calibration of.
    fn header(&self, seed: u64) -> String {
        serde_json::json!({
            "scenario": self.scenario.to_toml(),
            "seed": seed,
            "params": self.params,
            "log": self.log,
            "objective": format!("{:?}", self.objective),
            "reps": self.reps,
            "observed": self.observed,
            "interval_reps": self.interval_reps,
            "confidence": self.confidence,
            "budget": self.budget,
        })
        .to_string()
    }

    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let dir = crate::batch::default_out_dir(&self.scenario);
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            dir.with_file_name(format!("calibrate-{name}"))
        })
    }
}

/// Takes the output directory: a new (or empty) one, or with `resume` one holding an
/// interrupted calibration. Its state is read only under its lock.
fn claim(out: &Path, resume: bool) -> Result<DirLock, CalibrateError> {
    let lock = |out: &Path, command: &str| DirLock::acquire(out, command).map_err(|e| input(e.to_string()));
    let nothing = || input(format!("{}: no interrupted calibration to resume", out.display()));
    if resume {
        if !out.is_dir() {
            return Err(nothing());
        }
        let held = lock(out, "calibrate --resume")?;
        return if journal_path(out).is_file() { Ok(held) } else { Err(nothing()) };
    }
    let occupied_error = || {
        input(format!(
            "{}: already exists and is not empty; choose another --out, or add --resume to continue the calibration in it",
            out.display()
        ))
    };
    if occupied(out) {
        return Err(occupied_error());
    }
    fs::create_dir_all(out)
        .map_err(|e| input(format!("{}: cannot create the output directory: {e}", out.display())))?;
    let held = lock(out, "calibrate")?;
    if occupied(out) {
        return Err(occupied_error());
    }
    Ok(held)
}

fn journal_path(out: &Path) -> PathBuf {
    out.join(".work").join("evaluations.jsonl")
}

/// Runs a calibration and writes its outputs into the request's directory:
/// `calibration.parquet`, `fitted.csv`, `scenario.toml` (when some parameter moved the
/// objective) and `plots/`. Interrupted, it stops with [`CalibrateError::Interrupted`]
/// and keeps its journal for `resume`; failing before any evaluation finished, it
/// leaves nothing behind.
pub fn run(
    request: &Request,
    progress: indicatif::ProgressBar,
    interrupt: &Interrupt,
) -> Result<Report, CalibrateError> {
    let (params, observed) = request.check()?;
    let out = request.out_dir();
    let _lock = claim(&out, request.resume)?;
    let seed = request.seed.unwrap_or(request.scenario.seed);
    let work = out.join(".work");
    let journal = Journal::open(&journal_path(&out), &request.header(seed))?;
    let calibration = Calibration {
        params: params.clone(),
        objective: request.objective.clone(),
        reps: request.reps,
        seed,
        budget: request.budget,
        interval_reps: request.interval_reps,
        confidence: request.confidence,
        progress,
        interrupt: interrupt.clone(),
    };
    let fitted = match calibrate(&request.scenario, &calibration, &observed, &work, &journal) {
        Ok(f) => f,
        Err(e) => {
            if journal.is_empty() && !matches!(e, CalibrateError::Interrupted) {
                let _ = fs::remove_dir_all(&out);
            }
            return Err(e);
        }
    };
    calibration.progress.finish_and_clear();
    let calibrated = write_outputs(request, &calibration, &observed, &fitted, &out)?;
    let _ = fs::remove_dir_all(&work);
    Ok(Report { out, params, fitted, calibrated })
}

/// Writes a finished calibration's files; returns whether a calibrated scenario was
/// written.
fn write_outputs(
    request: &Request,
    calibration: &Calibration,
    observed: &Observed,
    fitted: &Fitted,
    out: &Path,
) -> Result<bool, CalibrateError> {
    let plots = out.join("plots");
    fs::create_dir_all(&plots).map_err(|e| failed(format!("{}: {e}", plots.display())))?;
    write_evaluations(&out.join("calibration.parquet"), &calibration.params, fitted)?;
    let csv = super::fitted_csv(&calibration.params, fitted)?;
    fs::write(out.join("fitted.csv"), csv).map_err(|e| failed(format!("{}: {e}", out.display())))?;
    let best = &fitted.evaluations[fitted.best];
    let sets: Vec<String> = calibration
        .params
        .iter()
        .zip(&fitted.intervals)
        .zip(&best.values)
        .filter(|((_, interval), _)| **interval != Interval::Flat)
        .map(|((p, _), &v)| p.set_arg(v))
        .collect();
    if !sets.is_empty() {
        let mut calibrated = request.scenario.clone();
        calibrated.apply_overrides(&sets).map_err(|e| failed(e.to_string()))?;
        fs::write(out.join("scenario.toml"), calibrated.to_toml())
            .map_err(|e| failed(format!("{}: {e}", out.display())))?;
        if let Objective::Distribution(columns) = &calibration.objective {
            let dir = out.join(".work").join("best");
            let (reps, seed) = (calibration.reps, calibration.seed);
            let simulated = simulate(&calibrated, seed, (0, reps), TraceLevel::Requests, &dir, &calibration.interrupt)?;
            plot_distributions(&plots, observed, &simulated, columns)?;
        }
    }
    plot_calibration(&plots, &calibration.params, fitted)?;
    Ok(!sets.is_empty())
}
