//! Grid carbon intensity over time: constant, a daily cycle, or a recorded series.
//!
//! Carbon of an energy flow is the integral of power times intensity, so besides the
//! value at an instant this module integrates intensity over an interval exactly
//! (closed form for the cycle, segment by segment for a series).

use std::f64::consts::TAU;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::input::{DataTable, Inputs};

/// Carbon intensity of the electricity drawn (kg CO2e per kWh) as a function of time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CarbonIntensity {
    /// The same at every hour.
    Constant {
        /// kg CO2e per kWh.
        kg_per_kwh: f64,
    },
    /// A daily (or any periodic) cycle around the mean `kg_per_kwh`:
    /// `kg_per_kwh x (1 + amplitude x cos(2 pi (t_h - peak_h) / period_h))`.
    Diurnal {
        /// The mean over a period (kg CO2e per kWh); named as the constant's value so
        /// that `--set grid.kind=diurnal` turns a constant grid into a cycle around it.
        kg_per_kwh: f64,
        /// Relative swing around the mean, in [0, 1].
        amplitude: f64,
        /// Hour of the cycle with the highest intensity.
        peak_h: f64,
        /// Length of the cycle (h); 24 by default.
        #[serde(default = "day_h")]
        period_h: f64,
    },
    /// A recorded series, piecewise constant: each value holds from its hour until the
    /// next one; the first holds before it and the last after it. Scenario files name
    /// a table (`t_h,kg_per_kwh`); [`CarbonIntensity::load`] reads it.
    Series {
        /// The file as the scenario names it (empty for a series built in code).
        #[serde(default)]
        path: String,
        /// (hour, kg CO2e per kWh), hours strictly increasing.
        #[serde(skip)]
        points: Arc<[(f64, f64)]>,
    },
}

fn day_h() -> f64 {
    24.0
}

impl CarbonIntensity {
    /// Zero intensity everywhere: for accounting energy where a scenario gives no grid
    /// (and so reports no carbon).
    pub(crate) const NONE: CarbonIntensity = CarbonIntensity::Constant { kg_per_kwh: 0.0 };

    /// Reads a series' points through `inputs` (`key` is the grid table's); other
    /// kinds are left as they are.
    pub fn load(&mut self, key: &str, inputs: &dyn Inputs) -> Result<(), ConfigError> {
        if let CarbonIntensity::Series { path, points } = self {
            let table = inputs.table(&format!("{key}.path"), path)?;
            *points = read_series(&table)?.into();
        }
        Ok(())
    }

    /// Checks every value; keys are relative to the grid table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn ToString, allowed: &'static str| {
            Err(ConfigError::invalid(key, value.to_string(), allowed))
        };
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        match self {
            CarbonIntensity::Constant { kg_per_kwh } => {
                if !non_negative(*kg_per_kwh) {
                    return bad("kg_per_kwh", kg_per_kwh, "a finite number >= 0");
                }
            }
            CarbonIntensity::Diurnal { kg_per_kwh, amplitude, peak_h, period_h } => {
                if !non_negative(*kg_per_kwh) {
                    return bad("kg_per_kwh", kg_per_kwh, "a finite number >= 0");
                }
                if !(0.0..=1.0).contains(amplitude) {
                    return bad("amplitude", amplitude, "a number from 0 to 1");
                }
                if !peak_h.is_finite() {
                    return bad("peak_h", peak_h, "a finite number of hours");
                }
                if !(period_h.is_finite() && *period_h > 0.0) {
                    return bad("period_h", period_h, "a finite number of hours > 0");
                }
            }
            CarbonIntensity::Series { points, .. } => {
                if points.is_empty() {
                    return bad("path", &"(no rows)", "a series with at least one row");
                }
                if !points.iter().all(|(t, v)| t.is_finite() && non_negative(*v)) {
                    return bad("path", &"(bad values)", "finite hours and intensities >= 0");
                }
                if !points.windows(2).all(|w| w[0].0 < w[1].0) {
                    return bad("path", &"(unordered hours)", "strictly increasing t_h");
                }
            }
        }
        Ok(())
    }

    /// The intensity, if it is the same at every hour: carbon is then energy times it,
    /// exactly, with no integral to round.
    pub fn constant(&self) -> Option<f64> {
        match self {
            CarbonIntensity::Constant { kg_per_kwh } => Some(*kg_per_kwh),
            _ => None,
        }
    }

    /// The intensity at hour `t_h` (kg CO2e per kWh).
    pub fn at(&self, t_h: f64) -> f64 {
        match self {
            CarbonIntensity::Constant { kg_per_kwh } => *kg_per_kwh,
            CarbonIntensity::Diurnal { kg_per_kwh, amplitude, peak_h, period_h } => {
                kg_per_kwh * (1.0 + amplitude * (TAU * (t_h - peak_h) / period_h).cos())
            }
            CarbonIntensity::Series { points, .. } => {
                // The last point at or before t_h, or the first point.
                let i = points.partition_point(|(t, _)| *t <= t_h);
                points[i.saturating_sub(1)].1
            }
        }
    }

    /// The integral of intensity over hours [`from_h`, `to_h`] (kg CO2e per kWh x h):
    /// a constant power `p_kw` drawn over the interval emits `p_kw x integral` kg.
    pub fn integral(&self, from_h: f64, to_h: f64) -> f64 {
        if to_h <= from_h {
            return 0.0;
        }
        match self {
            CarbonIntensity::Constant { kg_per_kwh } => kg_per_kwh * (to_h - from_h),
            CarbonIntensity::Diurnal { kg_per_kwh, amplitude, peak_h, period_h } => {
                let phase = |t: f64| TAU * (t - peak_h) / period_h;
                kg_per_kwh * ((to_h - from_h) + amplitude * period_h / TAU * (phase(to_h).sin() - phase(from_h).sin()))
            }
            CarbonIntensity::Series { points, .. } => {
                let mut total = 0.0;
                let mut t = from_h;
                let mut i = points.partition_point(|(p, _)| *p <= from_h);
                // Segment k runs from points[k-1].0 (or -inf) to points[k].0 (or +inf)
                // with the value of points[k-1] (or points[0]).
                while t < to_h {
                    let value = points[i.saturating_sub(1)].1;
                    let end = points.get(i).map_or(to_h, |p| p.0.min(to_h));
                    total += value * (end - t);
                    t = end;
                    i += 1;
                }
                total
            }
        }
    }

    /// The mean intensity over hours [0, `horizon_h`].
    pub fn mean(&self, horizon_h: f64) -> f64 {
        if horizon_h > 0.0 { self.integral(0.0, horizon_h) / horizon_h } else { self.at(0.0) }
    }
}

/// A carbon-intensity series from a table with `t_h` (hours from the start of the
/// run, strictly increasing) and `kg_per_kwh` (>= 0); other columns are ignored.
pub(crate) fn read_series(table: &DataTable) -> Result<Vec<(f64, f64)>, ConfigError> {
    let (t_col, v_col) = (table.require("t_h")?, table.require("kg_per_kwh")?);
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(table.rows());
    for row in 0..table.rows() {
        let number = |col: usize, name: &str| {
            table.number(col, row).ok().filter(|x| x.is_finite()).ok_or_else(|| {
                table.at(row, format!("{name} = {:?} is not a finite number", table.text(col, row).unwrap_or_default()))
            })
        };
        let (t_h, value) = (number(t_col, "t_h")?, number(v_col, "kg_per_kwh")?);
        if value < 0.0 {
            return Err(table.at(row, format!("kg_per_kwh = {value} is negative")));
        }
        if let Some(&(previous, _)) = points.last()
            && t_h <= previous
        {
            return Err(table.at(row, format!("t_h = {t_h} does not increase (the previous row has {previous})")));
        }
        points.push((t_h, value));
    }
    if points.is_empty() {
        return Err(table.error("no rows after the header"));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_cycle_integrate_in_closed_form() {
        let c = CarbonIntensity::Constant { kg_per_kwh: 0.4 };
        assert!((c.integral(2.0, 5.0) - 1.2).abs() < 1e-12);
        let d = CarbonIntensity::Diurnal { kg_per_kwh: 0.3, amplitude: 0.5, peak_h: 18.0, period_h: 24.0 };
        assert!((d.at(18.0) - 0.45).abs() < 1e-12 && (d.at(6.0) - 0.15).abs() < 1e-12);
        // A whole period integrates to the mean times its length.
        assert!((d.integral(3.0, 27.0) - 0.3 * 24.0).abs() < 1e-9);
        // Against a midpoint sum over a partial interval.
        let n = 100_000;
        let (a, b) = (1.3, 10.7);
        let h = (b - a) / n as f64;
        let numeric: f64 = (0..n).map(|i| d.at(a + (i as f64 + 0.5) * h) * h).sum();
        assert!((d.integral(a, b) - numeric).abs() < 1e-8, "{} vs {numeric}", d.integral(a, b));
    }

    #[test]
    fn series_is_piecewise_constant_and_held_at_both_ends() {
        let s =
            CarbonIntensity::Series { path: String::new(), points: vec![(0.0, 0.5), (2.0, 0.1), (3.0, 0.3)].into() };
        assert_eq!((s.at(-1.0), s.at(0.0), s.at(1.99), s.at(2.0), s.at(100.0)), (0.5, 0.5, 0.5, 0.1, 0.3));
        // 1 h at 0.5, 1 h at 0.1, 2 h at 0.3.
        assert!((s.integral(1.0, 5.0) - (0.5 + 0.1 + 0.6)).abs() < 1e-12);
        assert!((s.integral(-2.0, 0.5) - 1.25).abs() < 1e-12);
        assert_eq!(s.integral(4.0, 4.0), 0.0);
        assert!(s.validate().is_ok());
        let unordered = CarbonIntensity::Series { path: String::new(), points: vec![(1.0, 0.5), (1.0, 0.1)].into() };
        assert_eq!(unordered.validate().unwrap_err().key(), "path");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let d = CarbonIntensity::Diurnal { kg_per_kwh: 0.3, amplitude: 1.5, peak_h: 0.0, period_h: 24.0 };
        let e = d.validate().unwrap_err().within("grid");
        assert_eq!(e.key(), "grid.amplitude");
        assert!(e.to_string().contains("grid.amplitude = 1.5"), "{e}");
    }
}
