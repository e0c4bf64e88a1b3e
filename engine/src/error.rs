//! Errors of the engine API.

use crate::queue::EventId;
use crate::time::SimTime;

/// Why an event could not be scheduled, or a duration could not be converted.
///
/// Every variant is fatal for the run that produced it: it means the model computed a
/// time it must not use. The engine never clamps such a time silently.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The requested instant is before the current simulation time.
    #[error("cannot schedule at {at}: the simulation is already at {now}")]
    InPast {
        /// The current time.
        now: SimTime,
        /// The requested instant.
        at: SimTime,
    },
    /// A duration in seconds was negative.
    #[error("duration {secs} s is negative")]
    NegativeDuration {
        /// The offending value.
        secs: f64,
    },
    /// A duration in seconds was NaN or infinite.
    #[error("duration {secs} s is not a finite number")]
    NonFiniteDuration {
        /// The offending value.
        secs: f64,
    },
    /// The instant lies beyond the 584 years a `u64` of nanoseconds holds.
    #[error("simulated time overflows u64 nanoseconds (about 584 years)")]
    Overflow,
    /// The event was already handled or cancelled.
    #[error("event {0:?} is not pending")]
    NotPending(EventId),
}
