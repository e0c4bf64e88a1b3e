//! Tallies of observations and plain counters.

/// Count, mean, variance, minimum and maximum of a stream of observations, updated in
/// O(1) with Welford's algorithm (numerically stable for long runs), mergeable with
/// Chan et al.'s pairwise formula.
///
/// ```
/// use infersim_engine::stats::Tally;
/// let mut t = Tally::new();
/// for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] { t.add(x); }
/// assert_eq!(t.mean(), Some(5.0));
/// assert_eq!(t.variance(), Some(32.0 / 7.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tally {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for Tally {
    /// An empty tally, as [`Tally::new`] (a derived default would start min and max
    /// at zero instead of at the infinities).
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// An empty tally.
    pub const fn new() -> Self {
        Tally { count: 0, mean: 0.0, m2: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }

    /// Adds one observation.
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        // Plain comparisons: the same result as `f64::min`/`max` (a NaN is ignored
        // either way) in fewer instructions on this hot path.
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
    }

    /// Combines another tally into this one, as if its observations had been added.
    pub fn merge(&mut self, other: &Tally) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count as f64 / n;
        self.m2 += other.m2 + delta * delta * self.count as f64 * other.count as f64 / n;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sample mean; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Unbiased sample variance (divisor n - 1); `None` below two observations.
    pub fn variance(&self) -> Option<f64> {
        (self.count > 1).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// Sample standard deviation; `None` below two observations.
    pub fn std_dev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    /// Smallest observation; `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest observation; `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

/// A count of occurrences, with its rate over an observation window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    count: u64,
}

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter { count: 0 }
    }

    /// Counts one occurrence.
    #[inline]
    pub fn incr(&mut self) {
        self.count += 1;
    }

    /// Counts `n` occurrences.
    #[inline]
    pub fn add(&mut self, n: u64) {
        self.count += n;
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.count
    }

    /// Occurrences per second over a window of `window_s` seconds; `None` for an
    /// empty window.
    pub fn rate_per_s(&self, window_s: f64) -> Option<f64> {
        (window_s > 0.0).then(|| self.count as f64 / window_s)
    }

    /// `self / total` as a fraction; `None` when `total` is zero.
    pub fn fraction_of(&self, total: u64) -> Option<f64> {
        (total > 0).then(|| self.count as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_empty_with_extremes_from_the_first_observation() {
        let mut t = Tally::default();
        assert_eq!(t, Tally::new());
        t.add(3.0);
        assert_eq!((t.min(), t.max()), (Some(3.0), Some(3.0)));
    }

    #[test]
    fn empty_and_single() {
        let mut t = Tally::new();
        assert_eq!((t.mean(), t.variance(), t.min()), (None, None, None));
        t.add(3.0);
        assert_eq!((t.mean(), t.variance(), t.min(), t.max()), (Some(3.0), None, Some(3.0), Some(3.0)));
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        // The naive sum-of-squares formula loses every digit here.
        let mut t = Tally::new();
        for x in [1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0] {
            t.add(x);
        }
        assert_eq!(t.variance(), Some(30.0));
    }

    #[test]
    fn merge_equals_adding_everything() {
        let xs: Vec<f64> = (0..101).map(|i| ((i * 37) % 17) as f64 * 0.5).collect();
        let mut whole = Tally::new();
        xs.iter().for_each(|&x| whole.add(x));
        let (mut a, mut b) = (Tally::new(), Tally::new());
        xs[..40].iter().for_each(|&x| a.add(x));
        xs[40..].iter().for_each(|&x| b.add(x));
        a.merge(&b);
        assert_eq!(a.count(), whole.count());
        assert!((a.mean().unwrap() - whole.mean().unwrap()).abs() < 1e-12);
        assert!((a.variance().unwrap() - whole.variance().unwrap()).abs() < 1e-12);
        assert_eq!((a.min(), a.max()), (whole.min(), whole.max()));
        let mut empty = Tally::new();
        empty.merge(&whole);
        assert_eq!(empty, whole);
    }

    #[test]
    fn counter_rates() {
        let mut c = Counter::new();
        c.incr();
        c.add(3);
        assert_eq!(c.get(), 4);
        assert_eq!(c.rate_per_s(2.0), Some(2.0));
        assert_eq!(c.rate_per_s(0.0), None);
        assert_eq!(c.fraction_of(8), Some(0.5));
        assert_eq!(c.fraction_of(0), None);
    }
}
