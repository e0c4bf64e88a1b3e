//! Intervals of fitted values with a stated coverage, by inverting a Monte Carlo test.
//!
//! At the optimum θ̂, `interval_reps` replications that the evaluations never use
//! (indices from `reps` on, so independent of the common random numbers) are each
//! taken in turn as if they were the observed data, and scored against the
//! evaluations' own replications at θ̂ exactly as the observed data are. Their scores
//! are the objective's spread when the data come from the model: the noise of the
//! observed run itself (it is one run, like a replication) and of the simulation's few
//! replications. The threshold `c` is their `confidence` quantile (the order
//! statistic of rank ⌈(n + 1) × confidence⌉, as for a Monte Carlo test). The interval
//! of a parameter is then the set of its values, the others at their fitted values,
//! where the objective against the observed data stays at or below `c`: the values a
//! test at that level does not reject. Its coverage is `confidence` when the spread at
//! θ̂ stands for the spread at the true value (the test's null distribution changes
//! little across the interval); a test on a station with exponential service checks
//! it over many datasets. The pseudo-observations are read as the observed file is
//! (served requests after warm-up, or the time series), so their size should be the
//! observed run's: the scenario should run as long as the observed system did.
//!
//! Each side of the interval is found by steps that double outward from θ̂ (from 0.5%
//! of the range) until the objective passes `c`, then six halvings; the boundary is
//! interpolated between the last value inside and the first outside. A side that
//! reaches the end of the range, or runs out of budget, is reported open.

use super::{CalibrateError, Evaluation, Param, Problem, score, simulate, trace_level};
use crate::trace::TraceLevel;

/// The objective's spread at the optimum when the data come from the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Noise {
    /// The objective of each pseudo-observation, in order.
    pub scores: Vec<f64>,
    /// Their `confidence` quantile: the interval's threshold.
    pub threshold: f64,
    /// The coverage the threshold is for.
    pub confidence: f64,
}

/// A fitted parameter's interval.
#[derive(Clone, Debug, PartialEq)]
pub enum Interval {
    /// The objective does not change with the parameter: it is not identifiable from
    /// this target, and no value is fitted.
    Flat,
    /// Every replication gives the same output (a deterministic model): there is no
    /// noise to set a threshold with, so no interval.
    NoNoise,
    /// The observed data are farther from the model at its optimum than the model's own
    /// replications are (objective above the threshold): no value is consistent with
    /// the data at this confidence, so no interval.
    Misfit,
    /// The values the test does not reject; a bound is `open` when the search stopped
    /// at the end of the range or of the budget before the objective passed the
    /// threshold (the interval extends at least that far).
    Range {
        /// Lower end.
        low: f64,
        /// Upper end.
        high: f64,
        /// The lower end is where the search stopped, not where the objective crossed.
        low_open: bool,
        /// The upper end is where the search stopped, not where the objective crossed.
        high_open: bool,
    },
}

impl Interval {
    /// How the interval came out, as fitted.csv writes it.
    pub fn status(&self) -> &'static str {
        match self {
            Interval::Flat => "flat",
            Interval::NoNoise => "no_noise",
            Interval::Misfit => "misfit",
            Interval::Range { low_open: false, high_open: false, .. } => "closed",
            Interval::Range { low_open: true, high_open: false, .. } => "open_low",
            Interval::Range { low_open: false, high_open: true, .. } => "open_high",
            Interval::Range { .. } => "open_both",
        }
    }
}

/// The noise threshold at `optimum`: scores of the pseudo-observations (journaled, so
/// a resumed calibration does not run them again); `None` when they do not vary.
pub(super) fn noise(problem: &Problem<'_>, optimum: &[f64]) -> Result<Option<Noise>, CalibrateError> {
    let c = problem.calibration;
    let n = c.interval_reps;
    if n == 0 {
        return Ok(None);
    }
    let journaled: Vec<Option<Evaluation>> = (0..n).map(|j| problem.journal.find(optimum, Some(j))).collect();
    let scores: Vec<f64> = if journaled.iter().all(Option::is_some) {
        journaled.into_iter().map(|e| e.expect("all journaled").objective).collect()
    } else {
        let s = problem.scenario_at(optimum)?;
        let level = match trace_level(&c.objective) {
            TraceLevel::Summary => TraceLevel::Requests,
            other => other,
        };
        let here = simulate(&s, c.seed, (0, c.reps), trace_level(&c.objective), &problem.work, &c.interrupt)?;
        let pseudo = simulate(&s, c.seed, (c.reps, n), level, &problem.work.join("pseudo"), &c.interrupt)?;
        let mut scores = Vec::with_capacity(n as usize);
        for (j, observed) in pseudo.traces.iter().enumerate() {
            let (objective, errors) = score(&c.objective, observed, &here)?;
            let e = Evaluation { values: optimum.to_vec(), objective, errors, pseudo: Some(j as u64) };
            problem.journal.record(&e)?;
            scores.push(objective);
        }
        scores
    };
    let (lo, hi) = scores.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    if hi - lo <= 1e-12 * hi.abs().max(1e-300) {
        return Ok(None);
    }
    let mut sorted = scores.clone();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() + 1) as f64 * c.confidence).ceil() as usize;
    let threshold = sorted[rank.clamp(1, sorted.len()) - 1];
    Ok(Some(Noise { scores, threshold, confidence: c.confidence }))
}

/// Each parameter's interval around `optimum`, given the noise threshold.
pub(super) fn intervals(
    problem: &Problem<'_>,
    optimum: &Evaluation,
    noise: Option<&Noise>,
) -> Result<Vec<Interval>, CalibrateError> {
    let c = problem.calibration;
    let mut out = Vec::with_capacity(c.params.len());
    for (i, param) in c.params.iter().enumerate() {
        let flat = |values: &[(f64, f64)]| values.iter().all(|(_, o)| same(*o, optimum.objective));
        let interval = match noise {
            None => {
                // Whether the objective moves along the parameter at all.
                let mut along = Vec::new();
                for u in [0.0, 1.0] {
                    let mut v = optimum.values.clone();
                    v[i] = param.at(u);
                    if problem.spent() < c.budget {
                        along.push((v[i], problem.run(&v)?));
                    }
                }
                if flat(&along) { Interval::Flat } else { Interval::NoNoise }
            }
            Some(noise) if optimum.objective > noise.threshold => Interval::Misfit,
            Some(noise) => {
                let mut seen = Vec::new();
                let (low, low_open) = side(problem, optimum, i, param, -1.0, noise.threshold, &mut seen)?;
                let (high, high_open) = side(problem, optimum, i, param, 1.0, noise.threshold, &mut seen)?;
                if flat(&seen) && low_open && high_open {
                    Interval::Flat
                } else {
                    Interval::Range { low, high, low_open, high_open }
                }
            }
        };
        out.push(interval);
    }
    Ok(out)
}

/// Whether two objectives are the same to rounding.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

/// One side of parameter `i`'s interval: its end, and whether it is open. Every
/// evaluation made is added to `seen` as (value, objective).
fn side(
    problem: &Problem<'_>,
    optimum: &Evaluation,
    i: usize,
    param: &Param,
    direction: f64,
    threshold: f64,
    seen: &mut Vec<(f64, f64)>,
) -> Result<(f64, bool), CalibrateError> {
    let budget = problem.calibration.budget;
    let u0 = param.to_unit(optimum.values[i]);
    let mut evaluate = |u: f64| -> Result<Option<f64>, CalibrateError> {
        if problem.spent() >= budget {
            return Ok(None);
        }
        let mut v = optimum.values.clone();
        v[i] = param.at(u);
        let o = problem.run(&v)?;
        seen.push((v[i], o));
        Ok(Some(o))
    };
    let end = if direction < 0.0 { 0.0 } else { 1.0 };
    let (mut inside, mut inside_o) = (u0, optimum.objective);
    let mut outside = None;
    let mut step = 0.005;
    for _ in 0..8 {
        let u = (u0 + direction * step).clamp(0.0, 1.0);
        if param.at(u) == param.at(inside) {
            // The range ends here (or an integer key did not move): try a larger step.
            if u == end {
                break;
            }
            step *= 2.0;
            continue;
        }
        let Some(o) = evaluate(u)? else { return Ok((param.at(inside), true)) };
        if o > threshold {
            outside = Some((u, o));
            break;
        }
        (inside, inside_o) = (u, o);
        if u == end {
            break;
        }
        step *= 2.0;
    }
    let Some((mut out_u, mut out_o)) = outside else { return Ok((param.at(inside), true)) };
    for _ in 0..6 {
        let mid = 0.5 * (inside + out_u);
        if param.at(mid) == param.at(inside) || param.at(mid) == param.at(out_u) {
            break;
        }
        let Some(o) = evaluate(mid)? else { break };
        if o > threshold {
            (out_u, out_o) = (mid, o);
        } else {
            (inside, inside_o) = (mid, o);
        }
    }
    if param.integer {
        return Ok((param.at(inside), false));
    }
    // Where the objective crosses the threshold, between the last value inside and the
    // first outside.
    let t = if out_o > inside_o { ((threshold - inside_o) / (out_o - inside_o)).clamp(0.0, 1.0) } else { 0.5 };
    Ok((param.at(inside + t * (out_u - inside)), false))
}
