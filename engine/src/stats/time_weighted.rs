//! Time-weighted averages of piecewise-constant signals.

use crate::time::SimTime;

/// The time average of a piecewise-constant signal such as a queue length or a
/// number of busy GPUs: the integral of the signal over an observation window divided
/// by the window's length.
///
/// Call [`update`](Self::update) whenever the value changes; [`reset`](Self::reset)
/// restarts the window (warm-up deletion) keeping the current value.
///
/// ```
/// use infersim_engine::{stats::TimeWeighted, SimTime};
/// let s = |x: f64| SimTime::from_secs_f64(x).unwrap();
/// let mut q = TimeWeighted::new(s(0.0), 0.0);
/// q.update(s(1.0), 2.0); // 0 during [0, 1)
/// q.update(s(3.0), 1.0); // 2 during [1, 3)
/// assert_eq!(q.mean_until(s(4.0)), Some(5.0 / 4.0)); // 1 during [3, 4)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeWeighted {
    window_start: SimTime,
    last_change: SimTime,
    value: f64,
    /// Integral of the signal over [window_start, last_change), in value x nanoseconds:
    /// integer spans, so no division on the hot path.
    area_ns: f64,
    min: f64,
    max: f64,
}

impl TimeWeighted {
    /// Starts observing at `start` with the signal at `value`.
    pub fn new(start: SimTime, value: f64) -> Self {
        TimeWeighted { window_start: start, last_change: start, value, area_ns: 0.0, min: value, max: value }
    }

    /// The signal changes to `value` at `now`, which must not be before the previous
    /// change (checked in debug builds; the engine's clock never goes back).
    #[inline]
    pub fn update(&mut self, now: SimTime, value: f64) {
        debug_assert!(now >= self.last_change, "time-weighted signal updated in the past");
        let span_ns = now.as_nanos().wrapping_sub(self.last_change.as_nanos());
        self.area_ns += self.value * span_ns as f64;
        self.last_change = now;
        self.value = value;
        // Plain comparisons: the same result as `f64::min`/`max` (a NaN is ignored
        // either way) in fewer instructions on this hot path.
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
    }

    /// The current value of the signal.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Restarts the window at `now`, keeping the current value (warm-up deletion).
    pub fn reset(&mut self, now: SimTime) {
        *self = TimeWeighted::new(now, self.value);
    }

    /// The integral of the signal from the window start to `end` (value x seconds).
    pub fn integral_until(&self, end: SimTime) -> f64 {
        self.integral_ns_until(end) / 1e9
    }

    fn integral_ns_until(&self, end: SimTime) -> f64 {
        self.area_ns + self.value * (end - self.last_change).as_nanos() as f64
    }

    /// The time average over [window start, `end`]; `None` for an empty window.
    pub fn mean_until(&self, end: SimTime) -> Option<f64> {
        let span_ns = (end - self.window_start).as_nanos();
        (span_ns > 0).then(|| self.integral_ns_until(end) / span_ns as f64)
    }

    /// Smallest value taken in the window.
    pub fn min(&self) -> f64 {
        self.min
    }

    /// Largest value taken in the window.
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Start of the window.
    pub fn window_start(&self) -> SimTime {
        self.window_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> SimTime {
        SimTime::from_secs_f64(x).unwrap()
    }

    #[test]
    fn reset_deletes_the_warm_up() {
        let mut q = TimeWeighted::new(s(0.0), 10.0);
        q.update(s(5.0), 1.0);
        q.reset(s(5.0));
        q.update(s(7.0), 3.0);
        assert_eq!(q.mean_until(s(9.0)), Some(2.0));
        assert_eq!((q.min(), q.max()), (1.0, 3.0));
        assert_eq!(q.window_start(), s(5.0));
    }

    #[test]
    fn empty_window_has_no_mean() {
        let q = TimeWeighted::new(s(1.0), 4.0);
        assert_eq!(q.mean_until(s(1.0)), None);
        assert_eq!(q.integral_until(s(3.0)), 8.0);
    }
}
