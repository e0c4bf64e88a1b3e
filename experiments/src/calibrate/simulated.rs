//! The simulation's side of a comparison: replications of the scenario at one setting
//! of the parameters, reduced to what the objective compares, and the objective itself.

use std::fs;
use std::path::Path;

use infersim_engine::Interrupt;
use rayon::prelude::*;

use super::observed::{Observed, ks_distance};
use super::{CalibrateError, Objective, failed, input};
use crate::output::{MetricCell, ReplicationRecord};
use crate::runner::{TraceSpec, run_interruptible};
use crate::scenario::Scenario;
use crate::trace::{TraceLevel, trace_dir};

/// What replications at one setting produced, as the objective reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Simulated {
    /// Each replication's metrics.
    pub metrics: Vec<Vec<(String, f64)>>,
    /// Each replication's traced requests or time series, read as an observed file is.
    pub traces: Vec<Observed>,
}

/// The trace level an objective needs.
pub fn trace_level(objective: &Objective) -> TraceLevel {
    match objective {
        Objective::Metrics(_) => TraceLevel::Summary,
        Objective::Distribution(_) => TraceLevel::Requests,
        Objective::Series(_) => TraceLevel::Timeseries,
    }
}

/// Replications `first..first + count` of the scenario's point under `seed`, traced as
/// `level` asks in `dir` (emptied first) and read back. Stops with
/// [`CalibrateError::Interrupted`] when `interrupt` is raised.
pub fn simulate(
    s: &Scenario,
    seed: u64,
    (first, count): (u64, u64),
    level: TraceLevel,
    dir: &Path,
    interrupt: &Interrupt,
) -> Result<Simulated, CalibrateError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    }
    let sample_every = infersim_engine::SimDuration::from_secs_f64(s.sample_interval_s).map_err(failed)?;
    let trace = TraceSpec { level, out: dir.to_path_buf(), sample_every };
    let point = s.first_point();
    let records: Vec<Option<ReplicationRecord>> =
        (first..first + count).into_par_iter().map(|r| run_interruptible(&point, seed, r, &trace, interrupt)).collect();
    let mut out = Simulated::default();
    for (r, record) in (first..first + count).zip(records) {
        let record = record.ok_or(CalibrateError::Interrupted)?;
        if let Some(e) = &record.error {
            return Err(failed(format!("a replication failed: {e}")));
        }
        out.metrics.push(
            record
                .metrics
                .iter()
                .filter_map(|(n, v)| match v {
                    MetricCell::Number(x) => x.map(|x| (n.to_string(), x)),
                    MetricCell::Flag(b) => Some((n.to_string(), f64::from(u8::from(*b)))),
                })
                .collect(),
        );
        let file = match level {
            TraceLevel::Summary => continue,
            TraceLevel::Requests => "requests.parquet",
            TraceLevel::Timeseries => "timeseries.parquet",
        };
        let path = trace_dir(dir, 0, r).join(file);
        let table = crate::inputs::read_parquet(&path.display().to_string()).map_err(failed)?;
        out.traces.push(Observed::from_trace(&table));
    }
    Ok(out)
}

/// The simulated time series `y(t)` at `at`, linearly interpolated (held flat beyond
/// the ends).
fn interpolate(t: &[f64], y: &[f64], at: f64) -> f64 {
    let i = t.partition_point(|&ti| ti < at).min(t.len().saturating_sub(1));
    if i == 0 || t[i] <= at {
        return y.get(i).copied().unwrap_or(f64::NAN);
    }
    let (t0, t1) = (t[i - 1], t[i]);
    y[i - 1] + (at - t0) / (t1 - t0) * (y[i] - y[i - 1])
}

/// The objective: how far `simulated` is from `observed`, with each target's error.
/// Metrics: the mean of squared relative errors of the replications' means;
/// distributions: the mean Kolmogorov-Smirnov distance of pooled samples; time series:
/// the mean over columns of the squared error at the observed instants relative to
/// the observed mean square.
pub fn score(
    objective: &Objective,
    observed: &Observed,
    simulated: &Simulated,
) -> Result<(f64, Vec<(String, f64)>), CalibrateError> {
    let mut errors = Vec::new();
    match objective {
        Objective::Metrics(names) => {
            for name in names {
                let real = observed.metric(name).ok_or_else(|| {
                    input(format!(
                        "--target {name}: the observed file gives no {name} (it gives {})",
                        observed.metrics.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let values: Vec<f64> = simulated
                    .metrics
                    .iter()
                    .filter_map(|m| m.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                    .collect();
                if values.is_empty() {
                    return Err(input(format!("--target {name}: the simulation reports no {name}")));
                }
                let sim = values.iter().sum::<f64>() / values.len() as f64;
                errors.push((name.clone(), if real != 0.0 { (sim - real) / real } else { sim - real }));
            }
        }
        Objective::Distribution(columns) => {
            for name in columns {
                let mut real = observed
                    .sample(name)
                    .ok_or_else(|| input(format!("--distribution {name}: the observed file has no {name}")))?
                    .to_vec();
                let mut sim: Vec<f64> = Vec::new();
                for trace in &simulated.traces {
                    let column = trace.sample(name).ok_or_else(|| {
                        input(format!("--distribution {name}: the simulated requests have no {name}"))
                    })?;
                    sim.extend_from_slice(column);
                }
                sim.sort_by(f64::total_cmp);
                real.sort_by(f64::total_cmp);
                errors.push((name.clone(), ks_distance(&sim, &real)));
            }
        }
        Objective::Series(columns) => series_errors(columns, observed, simulated, &mut errors)?,
    }
    let value = match objective {
        Objective::Metrics(_) => errors.iter().map(|(_, e)| e * e).sum::<f64>() / errors.len() as f64,
        Objective::Distribution(_) | Objective::Series(_) => {
            errors.iter().map(|(_, e)| e).sum::<f64>() / errors.len() as f64
        }
    };
    Ok((value, errors))
}

/// Each time-series column's squared error at the observed times, relative to the
/// observed values' squares (or per point where they are all zero).
fn series_errors(
    columns: &[String],
    observed: &Observed,
    simulated: &Simulated,
    errors: &mut Vec<(String, f64)>,
) -> Result<(), CalibrateError> {
    let (t_h, series) =
        observed.series.as_ref().ok_or_else(|| input("--series: the observed file has no t_h column"))?;
    for name in columns {
        let real = series
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| input(format!("--series {name}: the observed file has no {name}")))?;
        let mut mean = vec![0.0; t_h.len()];
        for trace in &simulated.traces {
            let (t, columns) = trace.series.as_ref().ok_or_else(|| failed("the simulation gave no time series"))?;
            let y = columns
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| input(format!("--series {name}: the simulated time series has no {name}")))?;
            for (k, &at) in t_h.iter().enumerate() {
                mean[k] += interpolate(t, y, at) / simulated.traces.len() as f64;
            }
        }
        let (mut sq, mut norm, mut n) = (0.0_f64, 0.0_f64, 0.0_f64);
        for (a, b) in mean.iter().zip(real) {
            if a.is_finite() && b.is_finite() {
                sq += (a - b).powi(2);
                norm += b * b;
                n += 1.0;
            }
        }
        errors.push((name.clone(), if norm > 0.0 { sq / norm } else { sq / n.max(1.0) }));
    }
    Ok(())
}

/// Pooled simulated samples of `column` (for charts).
pub fn pooled(simulated: &Simulated, column: &str) -> Vec<f64> {
    let mut all: Vec<f64> = simulated.traces.iter().filter_map(|t| t.sample(column)).flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    all
}
