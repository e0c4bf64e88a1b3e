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
/// While it holds few records (256 or fewer) it keeps them instead, and counts them
/// in buckets only when a 257th arrives: short replications (a hundred customers) then
/// never allocate and zero the buckets, nor scan them for a quantile. Quantiles and
/// the mean from the records are exactly the histogram's (each value reported as its
/// bucket would report it, summed in the histogram's order).
///
/// Recording is the hot path (a request, a customer): it counts into the buckets of
/// the `hdrhistogram` crate's layout directly (an index from the value's leading
/// zeros, an increment), and reading builds that crate's histogram from the counts,
/// so quantiles and means are the crate's, bit for bit. Each read builds it anew: ask
/// for several quantiles in one [`quantiles_s`](Self::quantiles_s) call.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    /// Built once there are more than [`SMALL`] records.
    buckets: Option<Box<BucketCounts>>,
    /// Every record while there are no buckets; empty after.
    small: Vec<u64>,
}

/// Records up to which [`LatencyHistogram`] keeps them instead of counting buckets.
pub const SMALL: usize = 256;

/// Sub-buckets in the upper half of each bucket, as a power of two: the crate derives
/// 2 x 10^3 distinguishable values per bucket for 3 significant digits, so 2^11
/// sub-buckets, of which each bucket past the first uses the upper 2^10.
const HALF_BUCKET_MAGNITUDE: u32 = 10;
const HALF_BUCKET: u64 = 1 << HALF_BUCKET_MAGNITUDE;
/// Values below 2^11 are counted one by one in bucket 0.
const SUB_BUCKET_MASK: u64 = (1 << (HALF_BUCKET_MAGNITUDE + 1)) - 1;

/// Counts per bucket in the layout of an `hdrhistogram` histogram of
/// [`QUANTILE_SIGNIFICANT_DIGITS`] with a lowest discernible value of 1 (what
/// `Histogram::new` builds). `tests` checks that a value's bucket holds exactly the
/// values the crate considers equivalent to it.
#[derive(Clone, Debug, Default)]
struct BucketCounts {
    counts: Vec<u64>,
    total: u64,
}

impl BucketCounts {
    /// The counts index of `value`: the crate's `index_for`.
    #[inline(always)]
    fn index(value: u64) -> usize {
        // Powers of two past what fits in bucket 0, then the position in the bucket.
        let bucket = 64 - HALF_BUCKET_MAGNITUDE - 1 - (value | SUB_BUCKET_MASK).leading_zeros();
        let sub_bucket = value >> bucket;
        (((u64::from(bucket) + 1) << HALF_BUCKET_MAGNITUDE) + sub_bucket - HALF_BUCKET) as usize
    }

    /// The lowest value counted at `index`: the inverse of [`index`](Self::index).
    fn lowest_value(index: usize) -> u64 {
        let index = index as u64;
        let sub_bucket = (index & (HALF_BUCKET - 1)) + HALF_BUCKET;
        match (index >> HALF_BUCKET_MAGNITUDE).checked_sub(1) {
            Some(bucket) => sub_bucket << bucket,
            None => sub_bucket - HALF_BUCKET,
        }
    }

    #[inline(always)]
    fn add(&mut self, value: u64, n: u64) {
        let index = Self::index(value);
        match self.counts.get_mut(index) {
            Some(count) => *count = count.saturating_add(n),
            None => self.grow_and_add(index, n),
        }
        self.total = self.total.saturating_add(n);
    }

    #[cold]
    fn grow_and_add(&mut self, index: usize, n: u64) {
        self.counts.resize(index + 1, 0);
        self.counts[index] = n;
    }

    fn merge(&mut self, other: &BucketCounts) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// The crate's histogram holding these counts.
    fn histogram(&self) -> Histogram<u64> {
        let mut histogram = empty_histogram();
        for (index, &count) in self.counts.iter().enumerate().filter(|(_, count)| **count > 0) {
            histogram
                .record_n(Self::lowest_value(index), count)
                .expect("auto-resizing HDR histogram rejected a value: broken invariant");
        }
        histogram
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty histogram of infersim's precision.
fn empty_histogram() -> Histogram<u64> {
    let mut histogram =
        Histogram::new(QUANTILE_SIGNIFICANT_DIGITS).expect("3 significant digits is a valid HDR histogram precision");
    histogram.auto(true);
    histogram
}

/// An empty histogram shared by every [`LatencyHistogram`] that has not built its own:
/// its bucket arithmetic (which values share a bucket) depends only on the precision.
fn bucket_rule() -> &'static Histogram<u64> {
    static RULE: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    RULE.get_or_init(empty_histogram)
}

impl LatencyHistogram {
    /// An empty histogram that grows to whatever range it is given.
    pub fn new() -> Self {
        LatencyHistogram { buckets: None, small: Vec::new() }
    }

    /// The buckets, counting the records kept so far.
    fn buckets_mut(&mut self) -> &mut BucketCounts {
        let small = &mut self.small;
        self.buckets.get_or_insert_with(|| {
            let mut buckets = BucketCounts::default();
            for &v in small.iter() {
                buckets.add(v, 1);
            }
            *small = Vec::new();
            Box::new(buckets)
        })
    }

    /// Records one duration.
    #[inline]
    pub fn record(&mut self, d: SimDuration) {
        match self.buckets.as_deref_mut() {
            Some(buckets) => buckets.add(d.as_nanos(), 1),
            None if self.small.len() < self.small.capacity().min(SMALL) => self.small.push(d.as_nanos()),
            None => self.record_past_capacity(d),
        }
    }

    /// Reserves room for [`SMALL`] records at the first (one allocation instead of
    /// seven doublings), or counts the buckets when this is the first past it.
    #[cold]
    fn record_past_capacity(&mut self, d: SimDuration) {
        if self.small.len() < SMALL {
            self.small.reserve_exact(SMALL);
            self.small.push(d.as_nanos());
        } else {
            self.buckets_mut().add(d.as_nanos(), 1);
        }
    }

    /// Records `n` equal durations.
    pub fn record_n(&mut self, d: SimDuration, n: u64) {
        if self.buckets.is_none() && self.small.len() as u64 + n <= SMALL as u64 {
            for _ in 0..n {
                self.record(d);
            }
        } else {
            self.buckets_mut().add(d.as_nanos(), n);
        }
    }

    /// Adds every record of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.buckets.is_none() && other.buckets.is_none() && self.small.len() + other.small.len() <= SMALL {
            self.small.extend_from_slice(&other.small);
            return;
        }
        let mine = self.buckets_mut();
        match &other.buckets {
            Some(theirs) => mine.merge(theirs),
            None => other.small.iter().for_each(|&v| mine.add(v, 1)),
        }
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.buckets.as_ref().map_or(self.small.len() as u64, |b| b.total)
    }

    /// The `q`-quantile in seconds (`q` in [0, 1]); `None` when empty.
    pub fn quantile_s(&self, q: f64) -> Option<f64> {
        self.quantiles_s([q])[0]
    }

    /// Several quantiles at once (each `q` in [0, 1]), in seconds; `None` when empty.
    /// Cheaper than one call per quantile: the histogram is built (or the kept
    /// records sorted) once.
    pub fn quantiles_s<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        let count = self.count();
        if count == 0 {
            return [None; N];
        }
        if let Some(buckets) = &self.buckets {
            let histogram = buckets.histogram();
            return qs.map(|q| Some(histogram.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1e9));
        }
        // The histogram's rule on the kept records: the first bucket whose cumulative
        // count reaches ceil(q x count) (at least 1), reported as its highest value
        // (lowest at q = 0). The k-th smallest record is found by selection, each
        // quantile searching only above the one before (ranks in increasing order),
        // which costs less than sorting the records.
        let qs = qs.map(|q| q.clamp(0.0, 1.0));
        let ranks = qs.map(|q| ((q * count as f64).ceil() as u64).max(1) as usize - 1);
        let mut order: [usize; N] = std::array::from_fn(|i| i);
        order.sort_unstable_by_key(|&i| ranks[i]);
        // On the stack: a batch of short replications reads quantiles once each.
        let mut buffer = [0u64; SMALL];
        let records = &mut buffer[..self.small.len()];
        records.copy_from_slice(&self.small);
        let mut selected = [0u64; N];
        let mut from = 0;
        for i in order {
            let rank = ranks[i];
            let (_, v, _) = records[from..].select_nth_unstable(rank - from);
            selected[i] = *v;
            from = rank;
        }
        std::array::from_fn(|i| {
            let v = selected[i];
            let nanos =
                if qs[i] == 0.0 { bucket_rule().lowest_equivalent(v) } else { bucket_rule().highest_equivalent(v) };
            Some(nanos as f64 / 1e9)
        })
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
        let count = self.count();
        if count == 0 {
            return None;
        }
        let nanos = match &self.buckets {
            Some(b) => b.histogram().mean(),
            None => {
                // As `Histogram::mean`: buckets in increasing order, each adding its
                // median value x its count / the total.
                let rule = bucket_rule();
                let mut sorted = self.small.clone();
                sorted.sort_unstable();
                let mut total = 0.0_f64;
                let mut i = 0;
                while i < sorted.len() {
                    let top = rule.highest_equivalent(sorted[i]);
                    let j = i + sorted[i..].iter().take_while(|&&v| v <= top).count();
                    total += rule.median_equivalent(top) as f64 * (j - i) as f64 / count as f64;
                    i = j;
                }
                total
            }
        };
        Some(nanos / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_records_and_buckets_give_the_crates_own_quantiles() {
        // Against the crate's histogram fed every value: below SMALL (records kept),
        // past it (bucket counts), and merged.
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        for n in [1_usize, 2, 7, 100, SMALL, SMALL + 1, 1000, 100_000] {
            let mut all = empty_histogram();
            let mut h = LatencyHistogram::new();
            let mut halves = (LatencyHistogram::new(), LatencyHistogram::new());
            for i in 0..n {
                // A third of them crowded into a few buckets, the rest spread over ten decades.
                let d = SimDuration::from_nanos(if i % 3 == 0 {
                    rng.random_range(1000..1010)
                } else {
                    rng.random_range(1..10_000_000_000_u64)
                });
                h.record(d);
                all.record(d.as_nanos()).unwrap();
                if i % 2 == 0 { halves.0.record(d) } else { halves.1.record(d) }
            }
            halves.0.merge(&halves.1);
            assert_eq!((h.count(), halves.0.count()), (n as u64, n as u64));
            assert_eq!(h.mean_s(), Some(all.mean() / 1e9), "mean, n {n}");
            assert_eq!(halves.0.mean_s(), Some(all.mean() / 1e9), "merged mean, n {n}");
            for q in [0.0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let from_buckets = all.value_at_quantile(q) as f64 / 1e9;
                assert_eq!(h.quantile_s(q), Some(from_buckets), "n {n}, q {q}");
                assert_eq!(halves.0.quantile_s(q), Some(from_buckets), "merged, n {n}, q {q}");
            }
            assert_eq!(h.quantiles_s([0.5, 0.99]), [h.p50_s(), h.p99_s()]);
            // Several at once, in any order and repeated, as one by one.
            let qs = [0.99, 0.0, 0.5, 0.99, 1.0, 0.25];
            assert_eq!(h.quantiles_s(qs), qs.map(|q| h.quantile_s(q)), "n {n}");
            // record_n is n records, below the kept-records limit or past it.
            let (mut one_by_one, mut at_once) = (h.clone(), h.clone());
            for _ in 0..300 {
                one_by_one.record(SimDuration::from_nanos(12_345));
            }
            at_once.record_n(SimDuration::from_nanos(12_345), 300);
            assert_eq!(at_once.count(), one_by_one.count());
            assert_eq!(at_once.quantiles_s([0.0, 0.5, 0.99, 1.0]), one_by_one.quantiles_s([0.0, 0.5, 0.99, 1.0]));
            assert_eq!(at_once.mean_s(), one_by_one.mean_s());
        }
    }

    #[test]
    fn buckets_hold_what_the_crate_considers_equivalent() {
        // The layout is the crate's: a value's bucket starts at the crate's lowest
        // equivalent value, and the next value past the crate's highest equivalent
        // falls in the next bucket. Every magnitude, bucket edges and random values.
        use rand::{RngExt, SeedableRng};
        assert_eq!(QUANTILE_SIGNIFICANT_DIGITS, 3, "the layout constants are derived for 3 digits");
        let rule = bucket_rule();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        let mut values: Vec<u64> = (0..64).flat_map(|k| [1u64 << k, (1u64 << k) - 1, (1u64 << k) + 1]).collect();
        values.extend([0, 2047, 2048, 2049, 4095, 4096, u64::MAX - 1, u64::MAX]);
        values.extend((0..20_000).map(|_| rng.random::<u64>() >> rng.random_range(0..64)));
        for v in values {
            let index = BucketCounts::index(v);
            assert_eq!(BucketCounts::lowest_value(index), rule.lowest_equivalent(v), "lowest of {v}");
            let top = rule.highest_equivalent(v);
            assert_eq!(BucketCounts::index(top), index, "highest of {v}");
            if let Some(next) = top.checked_add(1) {
                // The next value shares the bucket exactly when the crate says so (only
                // at the top of the range, where the crate's highest value is capped).
                let same = rule.lowest_equivalent(next) == rule.lowest_equivalent(v);
                assert_eq!(BucketCounts::index(next) == index, same, "past {v}");
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
