//! The validator's scoring rules (nineteen PR #75), as pure functions of a contender's
//! counters and history, so that they can be checked by hand. Shared below the worlds:
//! the miner network uses them, and a fleet whose replicas are miners will.
//!
//! ```
//! use infersim_agents::scoring::{iso, period_score, DecayParams, HistoryRow, PeriodCounts};
//! let params = DecayParams::default();
//! // One row scored 1.0, an hour old: half its weight is left.
//! assert_eq!(iso(&[HistoryRow { at_s: 0.0, score: 1.0 }], 3600.0, &params), 0.5);
//! // 100 requests, 10 rate-limited, half the declared 50 consumed: 0.9 x 0.95.
//! let counts = PeriodCounts { requests: 100, rate_limited: 10, failed: 0, capacity: 50.0, consumed: 25.0 };
//! assert!((period_score(&counts).unwrap() - 0.855).abs() < 1e-12);
//! ```

/// A contender's score for one past period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoryRow {
    /// When the period ended (s since the start of the run).
    pub at_s: f64,
    /// The score it got.
    pub score: f64,
}

/// The constants of the decayed score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecayParams {
    /// A row's weight halves every `half_life_s`.
    pub half_life_s: f64,
    /// Rows this old or older count nothing.
    pub window_s: f64,
    /// Requests that one unit of score is worth in the rank.
    pub weight: f64,
}

impl Default for DecayParams {
    /// nineteen's constants: a 1-hour half-life, a 1-day window, weight 50.
    fn default() -> Self {
        DecayParams { half_life_s: 3600.0, window_s: 86_400.0, weight: 50.0 }
    }
}

/// iso(c) = sum over rows with age < window of score x 2^(-age / half-life), at `now_s`.
/// Rows from the future (age < 0) are a broken invariant of the caller and count as
/// age 0.
pub fn iso(rows: &[HistoryRow], now_s: f64, params: &DecayParams) -> f64 {
    rows.iter()
        .map(|row| (now_s - row.at_s).max(0.0))
        .zip(rows)
        .filter(|(age_s, _)| *age_s < params.window_s)
        .map(|(age_s, row)| row.score * (-age_s / params.half_life_s).exp2())
        .sum()
}

/// glob(c) = iso(c) + sum over the other contenders r on c's node of
/// iso(r) x sim(task(c) -> task(r)). `others` pairs each such iso with its similarity.
pub fn glob(own_iso: f64, others: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    own_iso + others.into_iter().map(|(iso_r, sim)| iso_r * sim).sum::<f64>()
}

/// rank(c) = requests made - weight x glob(c); the lowest ranks are tried first.
pub fn rank(requests_made: u64, glob: f64, weight: f64) -> f64 {
    requests_made as f64 - weight * glob
}

/// One contender's counters over a scoring period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeriodCounts {
    /// Requests made to it.
    pub requests: u64,
    /// Of which answered 429 (rate-limited).
    pub rate_limited: u64,
    /// Of which answered 500 (failed).
    pub failed: u64,
    /// Its declared capacity for the period.
    pub capacity: f64,
    /// Capacity it used: requests it accepted.
    pub consumed: f64,
}

/// The period score: max(good x (1 - r429 x unqueried) x (1 - r500 x unqueried), 0),
/// where good, r429 and r500 are shares of the period's requests and unqueried =
/// max(capacity - consumed, 0) / capacity. A 429 or 500 costs more the more declared
/// capacity went unused. None when nothing was requested (or no capacity declared).
pub fn period_score(c: &PeriodCounts) -> Option<f64> {
    if c.requests == 0 || c.capacity <= 0.0 {
        return None;
    }
    let n = c.requests as f64;
    let unqueried = (c.capacity - c.consumed).max(0.0) / c.capacity;
    let r429 = c.rate_limited as f64 / n;
    let r500 = c.failed as f64 / n;
    let good = (n - c.rate_limited as f64 - c.failed as f64) / n;
    Some((good * (1.0 - r429 * unqueried) * (1.0 - r500 * unqueried)).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_S: f64 = 3600.0;

    fn one_row(score: f64) -> Vec<HistoryRow> {
        vec![HistoryRow { at_s: 0.0, score }]
    }

    #[test]
    fn one_row_halves_every_hour_and_is_gone_after_a_day() {
        let p = DecayParams::default();
        let rows = one_row(1.0);
        assert_eq!(iso(&rows, 0.0, &p), 1.0);
        assert_eq!(iso(&rows, HOUR_S, &p), 0.5);
        assert_eq!(iso(&rows, 2.0 * HOUR_S, &p), 0.25);
        // Just inside the window it still counts (2^-24), at and beyond it nothing.
        assert!(iso(&rows, 24.0 * HOUR_S - 1.0, &p) > 0.0);
        assert_eq!(iso(&rows, 24.0 * HOUR_S, &p), 0.0);
        assert_eq!(iso(&rows, 25.0 * HOUR_S, &p), 0.0);
    }

    #[test]
    fn iso_sums_rows_each_with_its_own_age() {
        let p = DecayParams::default();
        let rows = [
            HistoryRow { at_s: 0.0, score: 0.8 },
            HistoryRow { at_s: HOUR_S, score: 0.4 },
            HistoryRow { at_s: 2.0 * HOUR_S, score: 1.0 },
        ];
        // At 2 h: 0.8 / 4 + 0.4 / 2 + 1.0.
        assert_eq!(iso(&rows, 2.0 * HOUR_S, &p), 0.2 + 0.2 + 1.0);
    }

    #[test]
    fn rank_of_100_requests_and_iso_0_9375_is_53_125() {
        // iso 0.9375 = 0.5 + 0.25 + 0.125 + 0.0625: four rows 1, 2, 3, 4 h old.
        let p = DecayParams::default();
        let rows: Vec<HistoryRow> = (1..=4).map(|k| HistoryRow { at_s: -f64::from(k) * HOUR_S, score: 1.0 }).collect();
        let iso_c = iso(&rows, 0.0, &p);
        assert_eq!(iso_c, 0.9375);
        assert_eq!(rank(100, glob(iso_c, []), p.weight), 53.125);
    }

    #[test]
    fn period_score_of_the_worked_example_is_0_855() {
        let c = PeriodCounts { requests: 100, rate_limited: 10, failed: 0, capacity: 50.0, consumed: 25.0 };
        assert!((period_score(&c).unwrap() - 0.855).abs() < 1e-15);
    }

    #[test]
    fn period_score_edges() {
        // Nothing requested: no score.
        assert_eq!(period_score(&PeriodCounts { capacity: 50.0, ..Default::default() }), None);
        // Capacity fully used: 429s and 500s cost only their share of good requests.
        let full = PeriodCounts { requests: 100, rate_limited: 10, failed: 10, capacity: 50.0, consumed: 80.0 };
        assert!((period_score(&full).unwrap() - 0.8).abs() < 1e-15);
        // Nothing consumed, everything failed: clamped at 0, never negative.
        let dead = PeriodCounts { requests: 10, rate_limited: 0, failed: 10, capacity: 50.0, consumed: 0.0 };
        assert_eq!(period_score(&dead), Some(0.0));
        // All good: 1 whatever the capacity.
        let good = PeriodCounts { requests: 7, rate_limited: 0, failed: 0, capacity: 50.0, consumed: 7.0 };
        assert_eq!(period_score(&good), Some(1.0));
    }
}
