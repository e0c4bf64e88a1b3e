//! Paired comparison of two batches, replication by replication, and the gates that
//! fail a comparison.

use super::*;

/// One (point, metric) of a paired comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct ComparisonRow {
    /// Point index.
    pub point: u32,
    /// Metric name.
    pub metric: String,
    /// Pairs (same point and replication) where both values exist.
    pub pairs: u64,
    /// Mean of the baseline over the pairs.
    pub base_mean: f64,
    /// Mean of the candidate over the pairs.
    pub candidate_mean: f64,
    /// Interval of the mean paired difference, candidate - base (needs 2 pairs).
    pub difference: Option<infersim_engine::stats::ConfidenceInterval>,
}

impl ComparisonRow {
    /// The mean difference relative to the baseline mean; `None` when the baseline
    /// mean is zero.
    pub fn relative_change(&self) -> Option<f64> {
        (self.base_mean != 0.0).then(|| (self.candidate_mean - self.base_mean) / self.base_mean.abs())
    }

    /// Whether the interval of the difference excludes zero.
    pub fn significant(&self) -> bool {
        self.difference.is_some_and(|ci| !ci.contains(0.0))
    }
}

pub(super) fn collect_sorted(frame: LazyFrame, what: &str) -> Result<DataFrame, AnalysisError> {
    frame
        .sort(["point", "replication"], SortMultipleOptions::default())
        .collect()
        .map_err(polars_err(format!("reading the {what} batch")))
}

/// Pairs two batches by (point, replication) and gives, per point and metric, the
/// interval of the mean difference candidate - base. With common random numbers (the
/// same master seed) the pairs share their randomness, and the difference is far
/// more precise than two independent intervals would suggest.
pub fn compare(
    base: LazyFrame,
    candidate: LazyFrame,
    metrics: &[String],
    confidence: f64,
) -> Result<Vec<ComparisonRow>, AnalysisError> {
    use infersim_engine::stats::{ConfidenceInterval, Tally};
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(AnalysisError::BadConfidence(confidence));
    }
    let (base, candidate) = (collect_sorted(base, "baseline")?, collect_sorted(candidate, "candidate")?);
    let keys = |df: &DataFrame| -> Result<Vec<(u32, u64)>, AnalysisError> {
        let p = df.column("point").and_then(|c| c.u32().cloned()).map_err(polars_err("reading point"))?;
        let r = df.column("replication").and_then(|c| c.u64().cloned()).map_err(polars_err("reading replication"))?;
        Ok(p.into_no_null_iter().zip(r.into_no_null_iter()).collect())
    };
    let (base_keys, cand_keys) = (keys(&base)?, keys(&candidate)?);
    let cand_row: std::collections::HashMap<(u32, u64), usize> =
        cand_keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut rows = Vec::new();
    let points: std::collections::BTreeSet<u32> = base_keys.iter().map(|k| k.0).collect();
    for metric in metrics {
        // Flags (Boolean columns such as `diverged`) compare as 0/1.
        let numbers = |c: &Column| c.cast(&DataType::Float64).and_then(|c| c.f64().cloned());
        let b = base.column(metric).and_then(numbers).map_err(polars_err(format!("baseline {metric}")))?;
        let c = candidate
            .column(metric)
            .and_then(numbers)
            .map_err(polars_err(format!("candidate {metric} (is it the same model?)")))?;
        for &point in &points {
            let (mut diff, mut bt, mut ct) = (Tally::new(), Tally::new(), Tally::new());
            for (i, key) in base_keys.iter().enumerate().filter(|(_, k)| k.0 == point) {
                let Some(&j) = cand_row.get(key) else { continue };
                if let (Some(x), Some(y)) = (b.get(i), c.get(j)) {
                    diff.add(y - x);
                    bt.add(x);
                    ct.add(y);
                }
            }
            if diff.count() == 0 {
                continue;
            }
            rows.push(ComparisonRow {
                point,
                metric: metric.clone(),
                pairs: diff.count(),
                base_mean: bt.mean().unwrap_or(0.0),
                candidate_mean: ct.mean().unwrap_or(0.0),
                difference: ConfidenceInterval::from_tally(&diff, confidence).ok(),
            });
        }
    }
    rows.sort_by_key(|r| r.point);
    Ok(rows)
}

/// A `--fail-on METRIC:+X%` gate: the candidate fails when the metric is worse than
/// the tolerance with significance, that is when the whole interval of the difference
/// lies beyond `tolerance x |base mean|` in the bad direction (`+`: higher is worse,
/// `-`: lower is worse).
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// The metric.
    pub metric: String,
    /// +1 when an increase is bad, -1 when a decrease is.
    pub direction: f64,
    /// Allowed relative change in the bad direction, e.g. 0.05.
    pub tolerance: f64,
}

impl Gate {
    /// Parses `METRIC:+5%` or `METRIC:-2.5%`.
    pub fn parse(text: &str) -> Result<Gate, String> {
        let bad = || format!("--fail-on {text}: expected METRIC:+X% or METRIC:-X%, e.g. --fail-on sojourn_p99_s:+5%");
        let (metric, rule) = text.rsplit_once(':').ok_or_else(bad)?;
        let rule = rule.trim().strip_suffix('%').ok_or_else(bad)?;
        let direction = match rule.chars().next() {
            Some('+') => 1.0,
            Some('-') => -1.0,
            _ => return Err(bad()),
        };
        let tolerance: f64 = rule[1..].parse().map_err(|_| bad())?;
        if !(tolerance.is_finite() && tolerance >= 0.0) || metric.is_empty() {
            return Err(bad());
        }
        Ok(Gate { metric: metric.to_string(), direction, tolerance: tolerance / 100.0 })
    }

    /// Whether `row` breaks this gate.
    pub fn fails(&self, row: &ComparisonRow) -> bool {
        let Some(ci) = row.difference else { return false };
        let allowed = self.tolerance * row.base_mean.abs();
        if self.direction > 0.0 { ci.low > allowed } else { ci.high < -allowed }
    }
}
