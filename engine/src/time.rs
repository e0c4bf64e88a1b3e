//! Integer simulation time.
//!
//! [`SimTime`] is an instant and [`SimDuration`] a span, both whole nanoseconds in a
//! `u64` (about 584 years). Integer time never loses resolution as a run grows longer
//! and makes event order exact. Durations drawn from distributions arrive as `f64`
//! seconds and pass through exactly one conversion, [`SimDuration::from_secs_f64`].

use std::fmt;
use std::ops::{Add, Sub};

use crate::error::ScheduleError;

const NANOS_PER_SEC: f64 = 1e9;
const SECS_PER_HOUR: f64 = 3600.0;

/// Rounds a non-negative finite `x < 2^64` to the nearest integer, halves up: the same
/// as `f64::round` there, without the library call `round` compiles to on baseline
/// x86-64 (it sits on the hot path of every sampled duration).
#[inline]
fn round_half_up(x: f64) -> u64 {
    const EXACT: f64 = 4_503_599_627_370_496.0; // 2^52: from here on every f64 is an integer
    if x >= EXACT {
        return x as u64;
    }
    // Truncation, exact below 2^52; through i64 because x86-64 converts signed
    // integers in one instruction and unsigned ones in several.
    let whole = x as i64;
    (if x - whole as f64 >= 0.5 { whole + 1 } else { whole }) as u64
}

/// An instant of simulated time: whole nanoseconds since the start of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(u64);

/// A span of simulated time in whole nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDuration(u64);

impl SimTime {
    /// The start of every run.
    pub const ZERO: SimTime = SimTime(0);
    /// The last representable instant.
    pub const MAX: SimTime = SimTime(u64::MAX);

    /// The instant `nanos` nanoseconds after the start.
    #[inline]
    pub const fn from_nanos(nanos: u64) -> Self {
        SimTime(nanos)
    }

    /// The instant `secs` seconds after the start, rounded as [`SimDuration::from_secs_f64`].
    #[inline]
    pub fn from_secs_f64(secs: f64) -> Result<Self, ScheduleError> {
        SimDuration::from_secs_f64(secs).map(|d| SimTime(d.0))
    }

    /// Nanoseconds since the start.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Seconds since the start (exact below 2^53 ns, about 104 days).
    #[inline]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC
    }

    /// Hours since the start.
    #[inline]
    pub fn as_hours_f64(self) -> f64 {
        self.as_secs_f64() / SECS_PER_HOUR
    }

    /// `self + d`, or `None` past [`SimTime::MAX`].
    #[inline]
    pub fn checked_add(self, d: SimDuration) -> Option<SimTime> {
        self.0.checked_add(d.0).map(SimTime)
    }

    /// `self - d`, or `None` before [`SimTime::ZERO`].
    #[inline]
    pub fn checked_sub(self, d: SimDuration) -> Option<SimTime> {
        self.0.checked_sub(d.0).map(SimTime)
    }

    /// The span from `earlier` to `self`, or `None` if `earlier` is later.
    #[inline]
    pub fn checked_duration_since(self, earlier: SimTime) -> Option<SimDuration> {
        self.0.checked_sub(earlier.0).map(SimDuration)
    }
}

impl SimDuration {
    /// No time at all.
    pub const ZERO: SimDuration = SimDuration(0);
    /// The longest representable span.
    pub const MAX: SimDuration = SimDuration(u64::MAX);

    /// A span of `nanos` nanoseconds.
    #[inline]
    pub const fn from_nanos(nanos: u64) -> Self {
        SimDuration(nanos)
    }

    /// A span of whole seconds; `None` if it does not fit.
    #[inline]
    pub const fn from_secs(secs: u64) -> Option<Self> {
        match secs.checked_mul(1_000_000_000) {
            Some(n) => Some(SimDuration(n)),
            None => None,
        }
    }

    /// The one conversion from sampled `f64` seconds to integer time.
    ///
    /// Rounds to the nearest nanosecond, halves away from zero (`f64::round`), so a
    /// sample below 0.5 ns becomes zero and its event runs at the same instant, after
    /// the events already scheduled there (FIFO). Negative, NaN, infinite and too large
    /// values are errors rather than clamps: a model producing them is broken.
    #[inline]
    pub fn from_secs_f64(secs: f64) -> Result<Self, ScheduleError> {
        if !secs.is_finite() {
            return Err(ScheduleError::NonFiniteDuration { secs });
        }
        if secs < 0.0 {
            return Err(ScheduleError::NegativeDuration { secs });
        }
        let nanos = secs * NANOS_PER_SEC;
        // u64::MAX as f64 rounds up to 2^64, so `<` excludes every value that would saturate.
        if nanos < u64::MAX as f64 { Ok(SimDuration(round_half_up(nanos))) } else { Err(ScheduleError::Overflow) }
    }

    /// Nanoseconds in this span.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Seconds in this span.
    #[inline]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC
    }

    /// Hours in this span.
    #[inline]
    pub fn as_hours_f64(self) -> f64 {
        self.as_secs_f64() / SECS_PER_HOUR
    }

    /// `self + other`, or `None` on overflow.
    #[inline]
    pub fn checked_add(self, other: SimDuration) -> Option<SimDuration> {
        self.0.checked_add(other.0).map(SimDuration)
    }
}

/// Panics on overflow past 584 years, which only a broken model reaches; use
/// [`SimTime::checked_add`] where the duration comes from input.
impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    #[inline]
    fn add(self, d: SimDuration) -> SimTime {
        self.checked_add(d).expect("SimTime overflow: more than 584 years of simulated time")
    }
}

/// Panics before time zero; use [`SimTime::checked_sub`] where that can happen.
impl Sub<SimDuration> for SimTime {
    type Output = SimTime;
    #[inline]
    fn sub(self, d: SimDuration) -> SimTime {
        self.checked_sub(d).expect("SimTime went before zero")
    }
}

/// Panics if `earlier` is later than `self`; use [`SimTime::checked_duration_since`]
/// when the order is not an invariant.
impl Sub<SimTime> for SimTime {
    type Output = SimDuration;
    #[inline]
    fn sub(self, earlier: SimTime) -> SimDuration {
        self.checked_duration_since(earlier).expect("SimTime subtraction went negative")
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.9} s", self.as_secs_f64())
    }
}

impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.9} s", self.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_rounds_to_nearest_nanosecond() {
        assert_eq!(SimDuration::from_secs_f64(1.5).unwrap().as_nanos(), 1_500_000_000);
        assert_eq!(SimDuration::from_secs_f64(0.4e-9).unwrap().as_nanos(), 0);
        assert_eq!(SimDuration::from_secs_f64(0.6e-9).unwrap().as_nanos(), 1);
        assert_eq!(SimDuration::from_secs_f64(2.5e-9).unwrap().as_nanos(), 3);
        assert_eq!(SimDuration::from_secs_f64(0.0).unwrap(), SimDuration::ZERO);
    }

    #[test]
    fn rounding_equals_f64_round() {
        let cases =
            [0.0, 0.49999999999999994, 0.5, 1.5, 2.5, 1e15 + 0.5, 4503599627370495.5, 9007199254740993.0, 1.8e19];
        for x in cases {
            assert_eq!(round_half_up(x), x.round() as u64, "{x}");
        }
        let mut x = 1e-3;
        while x < 1e19 {
            assert_eq!(round_half_up(x), x.round() as u64, "{x}");
            x *= 1.37;
        }
    }

    #[test]
    fn conversion_rejects_what_a_model_should_never_produce() {
        assert_eq!(SimDuration::from_secs_f64(-1.0), Err(ScheduleError::NegativeDuration { secs: -1.0 }));
        assert!(matches!(SimDuration::from_secs_f64(f64::NAN), Err(ScheduleError::NonFiniteDuration { .. })));
        assert!(matches!(SimDuration::from_secs_f64(f64::INFINITY), Err(ScheduleError::NonFiniteDuration { .. })));
        // 600 years does not fit in u64 nanoseconds.
        assert_eq!(SimDuration::from_secs_f64(600.0 * 365.25 * 86400.0), Err(ScheduleError::Overflow));
    }

    #[test]
    fn arithmetic_is_checked() {
        let t = SimTime::from_nanos(10);
        assert_eq!(t.checked_add(SimDuration::from_nanos(5)), Some(SimTime::from_nanos(15)));
        assert_eq!(SimTime::MAX.checked_add(SimDuration::from_nanos(1)), None);
        assert_eq!(t.checked_duration_since(SimTime::from_nanos(11)), None);
        assert_eq!(t - SimTime::from_nanos(4), SimDuration::from_nanos(6));
        assert_eq!(SimDuration::from_secs(2).unwrap().as_secs_f64(), 2.0);
        assert_eq!(SimTime::from_secs_f64(7200.0).unwrap().as_hours_f64(), 2.0);
    }
}
