//! Latency quantiles with a stated precision.

use hdrhistogram::Histogram;

use crate::time::SimDuration;

/// Significant decimal digits kept by [`LatencyHistogram`]: every recorded value, and so
/// every quantile, is exact to within 10^-3 relative (0.1%).
pub const QUANTILE_SIGNIFICANT_DIGITS: u8 = 3;

/// Quantiles of durations (latencies, waits), recorded in nanoseconds in an HDR
/// histogram: O(1) per record, memory independent of the number of records, and a
/// relative error of at most 0.1% ([`QUANTILE_SIGNIFICANT_DIGITS`]) on every quantile,
/// from a nanosecond to centuries.
///
/// ```
/// use infersim_engine::{stats::LatencyHistogram, SimDuration};
/// let mut h = LatencyHistogram::new();
/// for ms in 1..=100 { h.record(SimDuration::from_nanos(ms * 1_000_000)); }
/// let p99 = h.quantile_s(0.99).unwrap();
/// assert!((p99 - 0.099).abs() <= 0.099 * 1e-3);
/// ```
///
/// While it holds few records (256 or fewer) it also keeps them, and answers
/// quantiles from them: the same values the histogram gives (the top of the sample's
/// bucket), without scanning the histogram's buckets, which dominated short
/// replications.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
    /// Every record while there are at most `SMALL` of them; empty (and unused) after.
    small: Vec<u64>,
}

/// Records up to which [`LatencyHistogram`] also keeps them.
pub const SMALL: usize = 256;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram that grows to whatever range it is given.
    pub fn new() -> Self {
        let mut histogram = Histogram::new(QUANTILE_SIGNIFICANT_DIGITS)
            .expect("3 significant digits is a valid HDR histogram precision");
        histogram.auto(true);
        LatencyHistogram { histogram, small: Vec::new() }
    }

    /// Whether `small` holds every record.
    fn small_is_complete(&self) -> bool {
        self.small.len() as u64 == self.histogram.len()
    }

    /// Records one duration.
    #[inline]
    pub fn record(&mut self, d: SimDuration) {
        if self.small_is_complete() {
            if self.small.len() < SMALL {
                self.small.push(d.as_nanos());
            } else {
                self.small = Vec::new();
            }
        }
        // Auto-resizing histograms accept any u64, so this cannot fail.
        self.histogram.record(d.as_nanos()).expect("auto-resizing HDR histogram rejected a value: broken invariant");
    }

    /// Adds every record of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.small_is_complete() && other.small_is_complete() && self.small.len() + other.small.len() <= SMALL {
            self.small.extend_from_slice(&other.small);
        } else {
            self.small = Vec::new();
        }
        self.histogram.add(&other.histogram).expect("auto-resizing HDR histogram rejected a merge: broken invariant");
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `q`-quantile in seconds (`q` in [0, 1]); `None` when empty.
    pub fn quantile_s(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let nanos = if self.small_is_complete() {
            // The histogram's rule: the first bucket whose cumulative count reaches
            // ceil(q x count) (at least 1), reported as its highest value (lowest at q = 0).
            let k = ((q * count as f64).ceil() as u64).max(1) as usize;
            let mut sorted = self.small.clone();
            let (_, &mut v, _) = sorted.select_nth_unstable(k - 1);
            if q == 0.0 { self.histogram.lowest_equivalent(v) } else { self.histogram.highest_equivalent(v) }
        } else {
            self.histogram.value_at_quantile(q)
        };
        Some(nanos as f64 / 1e9)
    }

    /// The median in seconds.
    pub fn p50_s(&self) -> Option<f64> {
        self.quantile_s(0.50)
    }

    /// The 95th percentile in seconds.
    pub fn p95_s(&self) -> Option<f64> {
        self.quantile_s(0.95)
    }

    /// The 99th percentile in seconds.
    pub fn p99_s(&self) -> Option<f64> {
        self.quantile_s(0.99)
    }

    /// The mean in seconds (from the histogram, so within the stated precision).
    pub fn mean_s(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.histogram.mean() / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_records_give_the_histograms_own_quantiles() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        for n in [1_usize, 2, 7, 100, SMALL, SMALL + 1, 1000] {
            let mut h = LatencyHistogram::new();
            let mut halves = (LatencyHistogram::new(), LatencyHistogram::new());
            for i in 0..n {
                let d = SimDuration::from_nanos(rng.random_range(1..10_000_000_000_u64));
                h.record(d);
                if i % 2 == 0 { halves.0.record(d) } else { halves.1.record(d) }
            }
            halves.0.merge(&halves.1);
            for q in [0.0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let from_buckets = h.histogram.value_at_quantile(q) as f64 / 1e9;
                assert_eq!(h.quantile_s(q), Some(from_buckets), "n {n}, q {q}");
                assert_eq!(halves.0.quantile_s(q), Some(from_buckets), "merged, n {n}, q {q}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_the_stated_precision() {
        let mut h = LatencyHistogram::new();
        // 1..=10_000 microseconds: the exact q-quantile is q * 10 ms.
        for us in 1..=10_000u64 {
            h.record(SimDuration::from_nanos(us * 1000));
        }
        for (q, exact) in [(0.5, 5e-3), (0.95, 9.5e-3), (0.99, 9.9e-3)] {
            let got = h.quantile_s(q).unwrap();
            assert!((got - exact).abs() <= exact * 1e-3, "q={q}: {got} vs {exact}");
        }
        assert_eq!(LatencyHistogram::new().p50_s(), None);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(SimDuration::from_nanos(10));
        b.record(SimDuration::from_nanos(1_000_000_000_000));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!((a.quantile_s(1.0).unwrap() - 1000.0).abs() <= 1.0);
    }
}
