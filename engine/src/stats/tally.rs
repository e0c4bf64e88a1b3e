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

/// Count and mean of a stream of observations, for when only the mean is wanted:
/// their deviations from the first observation are summed with Neumaier's
/// compensation, as accurately as if the sum were kept in about twice the precision
/// whatever the count, at a few additions per observation and no division (a [`Tally`]
/// divides on every observation to keep its running mean and variance). Equal
/// observations give exactly their value as the mean.
///
/// ```
/// use infersim_engine::stats::CompensatedSum;
/// let mut s = CompensatedSum::new();
/// for x in [1e16, 1.0, -1e16] {
///     s.add(x);
/// }
/// assert_eq!(s.sum(), 1.0); // a plain f64 sum gives 0
/// assert_eq!(s.mean(), Some(1.0 / 3.0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompensatedSum {
    count: u64,
    /// The first observation, which every other is taken relative to.
    shift: f64,
    /// The sum of the deviations from `shift`.
    deviations: f64,
    /// The low-order parts `deviations` could not hold.
    compensation: f64,
}

impl CompensatedSum {
    /// No observations.
    pub const fn new() -> Self {
        CompensatedSum { count: 0, shift: 0.0, deviations: 0.0, compensation: 0.0 }
    }

    /// Adds one observation.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.shift = x;
        }
        self.count += 1;
        // The deviation and what its rounding lost (Knuth's two-sum), then the
        // deviation added to the running sum and what that rounding lost (Neumaier).
        let y = x - self.shift;
        let z = y - x;
        let lost_y = (x - (y - z)) + (-self.shift - z);
        let t = self.deviations + y;
        let lost_t =
            if self.deviations.abs() >= y.abs() { (self.deviations - t) + y } else { (y - t) + self.deviations };
        self.compensation += lost_y + lost_t;
        self.deviations = t;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        (self.shift * self.count as f64 + self.deviations) + self.compensation
    }

    /// Their mean; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count as f64;
        (self.count > 0).then(|| (self.shift + self.deviations / n) + self.compensation / n)
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
    fn compensated_sums_keep_what_a_plain_sum_loses() {
        // A million tenths: the plain sum drifts by about 1e-6, the compensated one
        // lands on the double nearest 100,000.
        let mut s = CompensatedSum::new();
        let mut plain = 0.0;
        for _ in 0..1_000_000 {
            s.add(0.1);
            plain += 0.1;
        }
        assert!((plain - 100_000.0f64).abs() > 1e-7);
        assert_eq!(s.sum(), 100_000.0);
        assert_eq!(s.mean(), Some(0.1));
        assert_eq!(s.count(), 1_000_000);
        assert_eq!(CompensatedSum::new().mean(), None);
        // Spread values, against their exact sum: every i / 7 here is a whole number
        // of 2^-55, so the doubles add exactly as integers.
        let n = 1_000_001u32;
        let mut s = CompensatedSum::new();
        let (mut plain, mut exact) = (0.0, 0i128);
        for i in 1..=n {
            let x = f64::from(i) / 7.0;
            s.add(x);
            plain += x;
            exact += (x * 2f64.powi(55)) as i128;
        }
        let reference = exact as f64 / 2f64.powi(55) / f64::from(n);
        let ulp = reference.next_up() - reference;
        assert!((s.mean().unwrap() - reference).abs() <= ulp, "{:?} against {reference}", s.mean());
        assert!((plain / f64::from(n) - reference).abs() <= 64.0 * ulp, "the reference is right");
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
