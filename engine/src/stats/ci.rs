//! Student-t confidence intervals across independent replications.

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::{StatsError, Tally};

/// A two-sided Student-t confidence interval for a mean.
///
/// Valid for independent, identically distributed observations, such as one value per
/// replication; by the central limit theorem it is approximately right for other
/// distributions once `n` is moderate.
///
/// ```
/// use infersim_engine::stats::ConfidenceInterval;
/// let ci = ConfidenceInterval::from_samples(&[9.0, 10.0, 11.0], 0.95)?;
/// assert_eq!(ci.mean, 10.0);
/// // t(0.975, 2) = 4.3027; std = 1; half-width = 4.3027 / sqrt(3)
/// assert!((ci.half_width - 2.4842).abs() < 1e-4);
/// assert!(ci.contains(12.0) && !ci.contains(12.5));
/// # Ok::<(), infersim_engine::stats::StatsError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConfidenceInterval {
    /// Number of observations.
    pub n: u64,
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (divisor n - 1).
    pub std_dev: f64,
    /// Half the width: t(1 - (1 - confidence) / 2, n - 1) x std_dev / sqrt(n).
    pub half_width: f64,
    /// mean - half_width.
    pub low: f64,
    /// mean + half_width.
    pub high: f64,
    /// The nominal coverage, e.g. 0.95.
    pub confidence: f64,
}

/// The `p`-quantile of Student's t with `df` degrees of freedom.
pub fn student_t_quantile(p: f64, df: f64) -> Result<f64, StatsError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(StatsError::BadConfidence(p));
    }
    let t =
        StudentsT::new(0.0, 1.0, df).map_err(|_| StatsError::BadParameter("degrees of freedom must be positive"))?;
    Ok(t.inverse_cdf(p))
}

impl ConfidenceInterval {
    /// The interval from a tally of independent observations.
    pub fn from_tally(tally: &Tally, confidence: f64) -> Result<Self, StatsError> {
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(StatsError::BadConfidence(confidence));
        }
        let n = tally.count();
        let (Some(mean), Some(std_dev)) = (tally.mean(), tally.std_dev()) else {
            return Err(StatsError::TooFewObservations { needed: 2, have: n as usize });
        };
        let t = student_t_quantile(1.0 - (1.0 - confidence) / 2.0, (n - 1) as f64)?;
        let half_width = t * std_dev / (n as f64).sqrt();
        Ok(ConfidenceInterval {
            n,
            mean,
            std_dev,
            half_width,
            low: mean - half_width,
            high: mean + half_width,
            confidence,
        })
    }

    /// The interval from a slice of independent observations, all finite.
    pub fn from_samples(samples: &[f64], confidence: f64) -> Result<Self, StatsError> {
        let mut tally = Tally::new();
        for (index, &value) in samples.iter().enumerate() {
            if !value.is_finite() {
                return Err(StatsError::NonFinite { index, value });
            }
            tally.add(value);
        }
        Self::from_tally(&tally, confidence)
    }

    /// Whether `x` lies inside the closed interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // Standard table values.
        for (p, df, table) in
            [(0.975, 1.0, 12.7062), (0.975, 29.0, 2.0452), (0.995, 29.0, 2.7564), (0.95, 10.0, 1.8125)]
        {
            let t = student_t_quantile(p, df).unwrap();
            assert!((t - table).abs() < 1e-4, "t({p}, {df}) = {t}, table {table}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            ConfidenceInterval::from_samples(&[1.0], 0.95),
            Err(StatsError::TooFewObservations { needed: 2, have: 1 })
        );
        assert_eq!(ConfidenceInterval::from_samples(&[1.0, 2.0], 1.0), Err(StatsError::BadConfidence(1.0)));
        assert!(matches!(
            ConfidenceInterval::from_samples(&[1.0, f64::NAN], 0.9),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
    }
}
