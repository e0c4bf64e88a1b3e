//! What a real system measured, read from a file: per-request samples and their
//! summaries, or a time series. The same reading serves the simulated
//! pseudo-observations of the interval ([`super::interval`]), so that both sides of a
//! comparison are computed alike.

use infersim_agents::input::{DataTable, Inputs};
use infersim_agents::world::{Observation, PART_COLUMN, WARMUP_COLUMN};

use crate::registry::AnyWorld;

use super::{CalibrateError, input};

/// Named columns of numbers.
pub type Columns = Vec<(String, Vec<f64>)>;

/// What a real system measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Summary values by metric name.
    pub metrics: Vec<(String, f64)>,
    /// Per-request samples by column.
    pub samples: Vec<(String, Vec<f64>)>,
    /// Time series: `t_h` and columns.
    pub series: Option<(Vec<f64>, Columns)>,
}

fn numbers(table: &DataTable, col: usize) -> Vec<Option<f64>> {
    (0..table.rows()).map(|r| table.number(col, r).ok().filter(|x| x.is_finite())).collect()
}

/// Sample quantile by linear interpolation between order statistics of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Two-sample Kolmogorov-Smirnov distance of sorted samples.
pub fn ks_distance(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Appends `<stem>_mean_s` and the percentiles of `xs` to `out`.
fn summarise(stem: &str, mut xs: Vec<f64>, out: &mut Vec<(String, f64)>) {
    if xs.is_empty() {
        return;
    }
    xs.sort_by(f64::total_cmp);
    out.push((format!("{stem}_mean_s"), xs.iter().sum::<f64>() / xs.len() as f64));
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99")] {
        out.push((format!("{stem}_{label}_s"), quantile(&xs, q)));
    }
}

/// Columns in seconds that are instants rather than durations.
const INSTANTS: [&str; 6] = ["arrival_s", "start_s", "finish_s", "first_scheduled_s", "first_token_s", "t_s"];

impl Observed {
    /// Reads an observed file through `inputs`, in a format of `world`'s real systems
    /// where it is one (see [`AnyWorld::observe`]).
    pub fn read(path: &str, inputs: &dyn Inputs, world: &dyn AnyWorld) -> Result<Observed, CalibrateError> {
        let table = inputs.table("--observed", path).map_err(|e| input(e.to_string()))?;
        let observed = Observed::from_table(&table, world);
        if observed.metrics.is_empty() && observed.series.is_none() {
            return Err(input(format!(
                "--observed {path}: no columns to compare (a requests file with ttft_s, tpot_s, e2e_s or other *_s \
                 columns, a {} world's measured records, or a time series with t_h); columns: {}",
                world.name(),
                table.names().join(", ")
            )));
        }
        Ok(observed)
    }

    /// What a table holds: a time series (with `t_h`), a measured file `world` reads
    /// (vLLM's per-request records for the serving world, say), or requests with
    /// columns in seconds (infersim's own `requests.parquet` included, whose served
    /// requests after warm-up are kept).
    pub fn from_table(table: &DataTable, world: &dyn AnyWorld) -> Observed {
        Observed::reading(table, world.observe(table))
    }

    /// One of infersim's own traces: requests with columns in seconds, or a time
    /// series.
    pub fn from_trace(table: &DataTable) -> Observed {
        Observed::reading(table, None)
    }

    /// What `table` holds, `observation` being what a world made of it.
    fn reading(table: &DataTable, observation: Option<Observation>) -> Observed {
        let mut observed = Observed::default();
        if let Some(t) = table.column("t_h") {
            // Rows of a part (a fleet's pool) are not the series.
            let whole: Vec<bool> = match table.column(PART_COLUMN) {
                Some(c) => (0..table.rows()).map(|r| table.text(c, r).is_none_or(|p| p.is_empty())).collect(),
                None => vec![true; table.rows()],
            };
            let kept = |values: Vec<Option<f64>>| -> Vec<f64> {
                values.into_iter().zip(&whole).filter(|(_, w)| **w).map(|(x, _)| x.unwrap_or(f64::NAN)).collect()
            };
            let t_h = kept(numbers(table, t));
            let columns = table
                .names()
                .iter()
                .enumerate()
                .filter(|(i, n)| *i != t && n.as_str() != "t_s" && n.as_str() != PART_COLUMN)
                .map(|(i, n)| (n.clone(), kept(numbers(table, i))))
                .collect();
            observed.series = Some((t_h, columns));
        }
        if let Some(observation) = observation {
            observed.samples = observation.samples;
            observed.metrics = observation.values;
        } else if observed.series.is_none() {
            observed.read_requests(table);
        }
        for (name, xs) in observed.samples.clone() {
            summarise(name.trim_end_matches("_s"), xs, &mut observed.metrics);
        }
        observed
    }

    /// Requests with durations in seconds (`*_s`); served ones after warm-up when the
    /// table says which.
    fn read_requests(&mut self, table: &DataTable) {
        let served = table
            .column("outcome")
            .map(|c| (0..table.rows()).map(|r| table.text(c, r).as_deref() == Some("served")).collect::<Vec<_>>());
        let warm = table.column(WARMUP_COLUMN).map(|c| {
            (0..table.rows()).map(|r| matches!(table.text(c, r).as_deref(), Some("true" | "1"))).collect::<Vec<_>>()
        });
        let keep = |r: usize| served.as_ref().is_none_or(|s| s[r]) && warm.as_ref().is_none_or(|w| !w[r]);
        for (i, name) in table.names().iter().enumerate() {
            if name.ends_with("_s") && !INSTANTS.contains(&name.as_str()) {
                let xs: Vec<f64> = numbers(table, i)
                    .into_iter()
                    .enumerate()
                    .filter(|(r, _)| keep(*r))
                    .filter_map(|(_, x)| x)
                    .collect();
                self.samples.push((name.clone(), xs));
            }
        }
        if let (Some(a), Some(f)) = (table.column("arrival_s"), table.column("finish_s")) {
            let (a, f) = (numbers(table, a), numbers(table, f));
            let start = a.iter().flatten().fold(f64::INFINITY, |x, y| x.min(*y));
            let end = f.iter().flatten().fold(f64::NEG_INFINITY, |x, y| x.max(*y));
            if end > start {
                self.metrics.push(("makespan_s".into(), end - start));
            }
        }
    }

    /// A summary value by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// A sample column by name.
    pub fn sample(&self, name: &str) -> Option<&[f64]> {
        self.samples.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// Several observed files as one: metrics and samples from all, the last series.
    pub fn merge(&mut self, other: Observed) {
        self.metrics.extend(other.metrics);
        self.samples.extend(other.samples);
        if other.series.is_some() {
            self.series = other.series;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_distance_is_zero_for_equal_samples_and_one_for_disjoint() {
        let a = [1.0, 2.0, 3.0];
        assert_eq!(ks_distance(&a, &a), 0.0);
        assert_eq!(ks_distance(&a, &[4.0, 5.0]), 1.0);
        assert!((ks_distance(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
    }
}
