//! Batch means: a confidence interval from one long, autocorrelated run.

use super::{ConfidenceInterval, StatsError, Tally};

/// How much of the start of a run to delete as warm-up before batching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmup {
    /// Keep everything.
    None,
    /// Delete this many leading observations.
    Fixed(usize),
    /// MSER-5 (White, 1997): average the series in groups of 5 and delete the prefix
    /// `d` (at most half the series) that minimises the marginal standard error of the
    /// rest, `sum((z_j - mean)^2) / (m - d)^2`.
    Mser5,
}

/// The result of [`batch_means`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchMeans {
    /// Leading observations deleted as warm-up (including any remainder that did not
    /// fill a batch).
    pub deleted: usize,
    /// Observations per batch.
    pub batch_size: usize,
    /// The interval over batch means.
    pub ci: ConfidenceInterval,
    /// Lag-1 autocorrelation of the batch means: well above 0.2 says the batches are
    /// too short to be independent and the interval too narrow.
    pub lag1_autocorrelation: Option<f64>,
}

/// Number of observations MSER-5 groups together.
const MSER_GROUP: usize = 5;

fn mser5_deletion(observations: &[f64]) -> usize {
    let groups: Vec<f64> =
        observations.chunks_exact(MSER_GROUP).map(|c| c.iter().sum::<f64>() / MSER_GROUP as f64).collect();
    let m = groups.len();
    if m < 2 {
        return 0;
    }
    // Suffix sums give every candidate's statistic in O(m).
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    let mut best = (f64::INFINITY, 0);
    let mut stats = vec![0.0; m];
    for d in (0..m).rev() {
        sum += groups[d];
        sum_sq += groups[d] * groups[d];
        let k = (m - d) as f64;
        stats[d] = (sum_sq - sum * sum / k).max(0.0) / (k * k);
    }
    for (d, &s) in stats.iter().enumerate().take(m / 2 + 1) {
        if s < best.0 {
            best = (s, d);
        }
    }
    best.1 * MSER_GROUP
}

/// Splits a single run's observations (after warm-up deletion) into `batches`
/// contiguous batches and builds a Student-t interval over the batch means.
///
/// Use 10 to 30 batches; check [`BatchMeans::lag1_autocorrelation`].
pub fn batch_means(
    observations: &[f64],
    warmup: Warmup,
    batches: usize,
    confidence: f64,
) -> Result<BatchMeans, StatsError> {
    if batches < 2 {
        return Err(StatsError::BadParameter("batch means needs at least 2 batches"));
    }
    if let Some((index, &value)) = observations.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(StatsError::NonFinite { index, value });
    }
    let warm = match warmup {
        Warmup::None => 0,
        Warmup::Fixed(n) => n,
        Warmup::Mser5 => mser5_deletion(observations),
    };
    let kept = observations.len().saturating_sub(warm);
    let batch_size = kept / batches;
    if batch_size == 0 {
        return Err(StatsError::TooFewObservations { needed: warm + batches, have: observations.len() });
    }
    // Drop the remainder from the front: a little more warm-up is the safe side.
    let deleted = observations.len() - batch_size * batches;
    let means: Vec<f64> =
        observations[deleted..].chunks_exact(batch_size).map(|c| c.iter().sum::<f64>() / batch_size as f64).collect();
    let ci = ConfidenceInterval::from_samples(&means, confidence)?;
    Ok(BatchMeans { deleted, batch_size, ci, lag1_autocorrelation: lag1_autocorrelation(&means) })
}

fn lag1_autocorrelation(xs: &[f64]) -> Option<f64> {
    let mut t = Tally::new();
    xs.iter().for_each(|&x| t.add(x));
    let (mean, var) = (t.mean()?, t.variance()?);
    if var == 0.0 {
        return None;
    }
    let cov: f64 = xs.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum::<f64>() / (xs.len() - 1) as f64;
    Some(cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mser5_finds_an_initial_transient() {
        // 200 observations decaying from 100 towards 0, then 2000 alternating 1, -1.
        let mut xs: Vec<f64> = (0..200).map(|i| 100.0 * (1.0 - i as f64 / 200.0)).collect();
        xs.extend((0..2000).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }));
        let d = mser5_deletion(&xs);
        assert!((180..=260).contains(&d), "deleted {d}");
        let bm = batch_means(&xs, Warmup::Mser5, 20, 0.95).unwrap();
        assert!(bm.ci.contains(0.0), "{:?}", bm.ci);
        assert_eq!(bm.deleted + bm.batch_size * 20, xs.len());
    }

    #[test]
    fn fixed_warmup_and_batches() {
        let xs: Vec<f64> = (0..105).map(|i| i as f64).collect();
        let bm = batch_means(&xs, Warmup::Fixed(5), 10, 0.9).unwrap();
        assert_eq!((bm.deleted, bm.batch_size, bm.ci.n), (5, 10, 10));
        assert_eq!(bm.ci.mean, 54.5);
        assert!(bm.lag1_autocorrelation.unwrap() > 0.5, "a trend is strongly autocorrelated");
        assert!(batch_means(&xs, Warmup::None, 1, 0.9).is_err());
        assert!(batch_means(&xs[..3], Warmup::None, 5, 0.9).is_err());
    }
}
