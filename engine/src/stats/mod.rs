//! Output statistics: within a run (tallies, time-weighted averages, counters,
//! quantiles) and across runs (Student-t confidence intervals, batch means).

mod batch_means;
mod ci;
mod exact;
mod quantiles;
mod tally;
mod time_weighted;

pub use batch_means::{BatchMeans, Warmup, batch_means};
pub use ci::{ConfidenceInterval, student_t_quantile};
pub use exact::{DurationSum, FixedSum, Occupancy};
pub use quantiles::{LatencyHistogram, QUANTILE_SIGNIFICANT_DIGITS};
pub use tally::{CompensatedSum, Counter, Tally};
pub use time_weighted::TimeWeighted;

/// Why a statistic could not be computed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// Not enough observations for the requested statistic.
    #[error("need at least {needed} observations, have {have}")]
    TooFewObservations {
        /// The minimum.
        needed: usize,
        /// What was supplied.
        have: usize,
    },
    /// The confidence level must lie strictly between 0 and 1.
    #[error("confidence level {0} is outside (0, 1)")]
    BadConfidence(f64),
    /// An observation was NaN or infinite.
    #[error("observation {index} is not finite ({value})")]
    NonFinite {
        /// Position of the observation.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// A parameter was out of its range.
    #[error("{0}")]
    BadParameter(&'static str),
}
