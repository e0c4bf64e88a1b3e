//! Exact statistics of durations, kept in integer nanoseconds.
//!
//! Simulated time is whole nanoseconds, so sums of durations can be kept exactly in a
//! `u128` and rounded once, when read. That is both more exact and cheaper than
//! floating-point accumulation: an addition per observation, no division, no
//! conversion to seconds on the hot path.
//!
//! - [`DurationSum`]: count, total and mean of durations (a wait, a sojourn).
//! - [`FixedSum`]: count, total and mean of non-negative quantities that are not whole
//!   nanoseconds (a time per token, an energy), each rounded to 2^-32 of its unit and
//!   summed as an integer: the same bits in any order of addition, so partial sums
//!   (per replica, per thread) merge into exactly the whole.
//! - [`Occupancy`]: the time integral of a count (customers waiting, servers busy)
//!   built from the intervals during which each unit is present, clipped to an
//!   observation window. It gives the same time average as a [`TimeWeighted`] of
//!   the count, with one addition per interval instead of an update at every change.
//!
//! [`TimeWeighted`]: super::TimeWeighted

use crate::time::{SimDuration, SimTime};

const NANOS_PER_SEC: f64 = 1e9;

/// Count, total and mean of durations, exact: whole nanoseconds summed in a `u128`,
/// which cannot overflow (fewer than 2^64 observations of fewer than 2^64 ns each).
///
/// ```
/// use infersim_engine::{SimDuration, stats::DurationSum};
/// let mut waits = DurationSum::new();
/// waits.add(SimDuration::from_nanos(1_500_000_000));
/// waits.add(SimDuration::from_nanos(500_000_000));
/// assert_eq!(waits.count(), 2);
/// assert_eq!(waits.mean_s(), Some(1.0));
/// assert_eq!(waits.total_ns(), 2_000_000_000);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurationSum {
    count: u64,
    total_ns: u128,
}

impl DurationSum {
    /// No observations.
    pub const fn new() -> Self {
        DurationSum { count: 0, total_ns: 0 }
    }

    /// Adds one duration.
    #[inline]
    pub fn add(&mut self, d: SimDuration) {
        self.count += 1;
        self.total_ns += u128::from(d.as_nanos());
    }

    /// Combines another sum into this one, as if its durations had been added.
    pub fn merge(&mut self, other: &DurationSum) {
        self.count += other.count;
        self.total_ns += other.total_ns;
    }

    /// Number of durations added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their total, in nanoseconds, exact.
    pub fn total_ns(&self) -> u128 {
        self.total_ns
    }

    /// Their mean in seconds (the exact total divided by the count, rounded to the
    /// nearest `f64` in two steps); `None` when empty.
    pub fn mean_s(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total_ns as f64 / self.count as f64 / NANOS_PER_SEC)
    }
}

/// Count, total and mean of non-negative quantities, each rounded to the nearest
/// 2^-32 of its unit (about 2.3e-10: a quarter of a nanosecond for seconds) and summed
/// as an integer, so that the result does not depend on the order of the additions
/// (a floating-point sum does, in its last bits). Values up to 2^31 units each.
///
/// ```
/// use infersim_engine::stats::FixedSum;
/// let (mut forward, mut backward) = (FixedSum::new(), FixedSum::new());
/// let xs = [0.1, 1e-3, 2.5, 1e6, 3.3e-7];
/// xs.iter().for_each(|&x| forward.add(x));
/// xs.iter().rev().for_each(|&x| backward.add(x));
/// assert_eq!(forward, backward);
/// assert!((forward.total() - xs.iter().sum::<f64>()).abs() < 1e-8);
/// assert_eq!(forward.count(), 5);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedSum {
    count: u64,
    units: u128,
}

/// Units of a [`FixedSum`] per unit of what it sums.
const FIXED_UNITS: f64 = (1u64 << 32) as f64;

impl FixedSum {
    /// No observations.
    pub const fn new() -> Self {
        FixedSum { count: 0, units: 0 }
    }

    /// Adds `x` (finite, at least 0 and below 2^31), rounded to 2^-32.
    #[inline]
    pub fn add(&mut self, x: f64) {
        debug_assert!((0.0..2_147_483_648.0).contains(&x), "a FixedSum takes values in [0, 2^31): {x}");
        self.count += 1;
        self.units += (x * FIXED_UNITS).round() as u64 as u128;
    }

    /// Combines another sum into this one, as if its values had been added.
    pub fn merge(&mut self, other: &FixedSum) {
        self.count += other.count;
        self.units += other.units;
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their total (of the rounded values).
    pub fn total(&self) -> f64 {
        self.units as f64 / FIXED_UNITS
    }

    /// Their mean; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.units as f64 / FIXED_UNITS / self.count as f64)
    }
}

/// The time integral of a count over an observation window, from the intervals
/// during which each counted unit is present, exact in integer nanoseconds.
///
/// Each interval `[from, to)` is clipped to the window `[start, end]`; `end` may be
/// set later with [`close`](Self::close), and intervals added after that are clipped
/// to it. Adding every unit's interval once it is over gives the integral of the
/// count, as a time-weighted average would, so the time average is
/// [`mean`](Self::mean) = integral / window length.
///
/// ```
/// use infersim_engine::{SimTime, stats::Occupancy};
/// let s = |x: f64| SimTime::from_secs_f64(x).unwrap();
/// let mut waiting = Occupancy::new(s(1.0));
/// waiting.add(s(0.0), s(2.0)); // present before the window opened: counts from 1 s
/// waiting.add(s(1.5), s(3.0));
/// waiting.close(s(5.0));
/// waiting.add(s(4.0), s(9.0)); // still there at the end: counts until 5 s
/// assert_eq!(waiting.mean(), Some((1.0 + 1.5 + 1.0) / 4.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    start: SimTime,
    /// [`SimTime::MAX`] while the window is open.
    end: SimTime,
    area_ns: u128,
}

impl Occupancy {
    /// An empty integral over a window opening at `start`.
    pub const fn new(start: SimTime) -> Self {
        Occupancy { start, end: SimTime::MAX, area_ns: 0 }
    }

    /// Ends the window at `end` (not before its start, before the last instant);
    /// later intervals are clipped to it. Intervals added before must not reach past
    /// it.
    pub fn close(&mut self, end: SimTime) {
        debug_assert!(end >= self.start && end < SimTime::MAX, "window closed before it opened or at the end of time");
        self.end = end;
    }

    /// Adds a unit present during `[from, to)`, clipped to the window.
    #[inline]
    pub fn add(&mut self, from: SimTime, to: SimTime) {
        let from = from.max(self.start);
        let to = to.min(self.end);
        if to > from {
            self.area_ns += u128::from((to - from).as_nanos());
        }
    }

    /// The integral so far, in unit x nanoseconds, exact.
    pub fn area_ns(&self) -> u128 {
        self.area_ns
    }

    /// The time average over the closed window; `None` while the window is open or
    /// when it is empty.
    pub fn mean(&self) -> Option<f64> {
        let span_ns = (self.end - self.start).as_nanos();
        (self.end < SimTime::MAX && span_ns > 0).then(|| self.area_ns as f64 / span_ns as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::TimeWeighted;

    /// Partial sums over any split, merged in any order, are the whole sum to the bit,
    /// and the mean is within a rounding unit of the exact one.
    #[test]
    fn fixed_sums_do_not_depend_on_the_order_or_the_split() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let xs: Vec<f64> =
            (0..10_000).map(|_| rng.random_range(0.0..100.0) * rng.random_range(0.0..1.0f64).powi(6)).collect();
        let mut whole = FixedSum::new();
        xs.iter().for_each(|&x| whole.add(x));
        let (mut odd, mut even) = (FixedSum::new(), FixedSum::new());
        for (i, &x) in xs.iter().enumerate().rev() {
            if i % 2 == 1 { odd.add(x) } else { even.add(x) }
        }
        even.merge(&odd);
        assert_eq!(even, whole);
        let exact: f64 = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((whole.mean().unwrap() - exact).abs() <= 1e-9 * exact.max(1.0), "{:?} vs {exact}", whole.mean());
        assert_eq!(FixedSum::new().mean(), None);
    }

    #[test]
    fn duration_sums_are_exact_where_floats_are_not() {
        // 10^7 durations of 0.1 s + 1 ns: a float running sum drifts, the integer does not.
        let mut sum = DurationSum::new();
        let mut float_s = 0.0;
        for _ in 0..10_000_000 {
            sum.add(SimDuration::from_nanos(100_000_001));
            float_s += 0.100_000_001;
        }
        assert_eq!(sum.total_ns(), 1_000_000_010_000_000);
        assert_eq!(sum.mean_s(), Some(0.100_000_001));
        assert_ne!(float_s / 1e7, 0.100_000_001, "the float sum was expected to drift");
        let (mut a, b) = (DurationSum::new(), sum);
        a.merge(&b);
        assert_eq!(a, sum);
        assert_eq!(DurationSum::new().mean_s(), None);
    }

    #[test]
    fn occupancy_equals_the_time_weighted_count() {
        // Random overlapping intervals; the window opens and closes inside them.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % bound
        };
        let intervals: Vec<(u64, u64)> = (0..2_000)
            .map(|_| {
                let from = next(1_000_000);
                (from, from + next(50_000))
            })
            .collect();
        let (start, end) = (SimTime::from_nanos(200_000), SimTime::from_nanos(700_000));
        // The count as a step signal, integrated by a TimeWeighted over the window.
        let mut changes: Vec<(u64, i64)> = intervals.iter().flat_map(|&(f, t)| [(f, 1), (t, -1)]).collect();
        changes.sort();
        let mut count = 0i64;
        let mut weighted: Option<TimeWeighted> = None;
        for &(t, delta) in &changes {
            let now = SimTime::from_nanos(t);
            if now >= start && weighted.is_none() {
                weighted = Some(TimeWeighted::new(start, count as f64));
            }
            if now > end {
                break;
            }
            count += delta;
            if let Some(w) = weighted.as_mut() {
                w.update(now, count as f64);
            }
        }
        let expected = weighted.unwrap().mean_until(end).unwrap();
        // The same from intervals, half of them added after the window closed.
        let mut occupancy = Occupancy::new(start);
        let (before, after) = intervals.split_at(1_000);
        for &(f, t) in before.iter().filter(|&&(_, t)| t <= 700_000) {
            occupancy.add(SimTime::from_nanos(f), SimTime::from_nanos(t));
        }
        assert_eq!(occupancy.mean(), None, "an open window has no mean");
        occupancy.close(end);
        for &(f, t) in before.iter().filter(|&&(_, t)| t > 700_000).chain(after) {
            occupancy.add(SimTime::from_nanos(f), SimTime::from_nanos(t));
        }
        let mean = occupancy.mean().unwrap();
        assert!((mean - expected).abs() <= 1e-12 * expected, "{mean} vs {expected}");
    }

    #[test]
    fn an_empty_window_has_no_mean() {
        let mut o = Occupancy::new(SimTime::from_nanos(5));
        o.close(SimTime::from_nanos(5));
        o.add(SimTime::from_nanos(0), SimTime::from_nanos(10));
        assert_eq!((o.area_ns(), o.mean()), (0, None));
    }
}
