//! The validator's book of contenders (nineteen PR #75), shared below the worlds: the
//! miner network keeps its nodes' contenders here, and so does a fleet whose replicas
//! are miners. A contender is a (node, task) pair; the book keeps each one's counters
//! for the scoring period, the history rows its periods left, and its decayed glob, and
//! orders a task's contenders for a query by the policies that need nothing but the
//! book (decayed score, least processed, round robin, random). What a node is, how it
//! answers and what it costs is the world's.
//!
//! Decay multiplies every history row by the same factor between two refreshes, so
//! globs are computed when a period ends (or a row leaves the window) and scaled per
//! query: exact, and cheap.
//!
//! ```
//! use infersim_agents::contenders::ContenderBook;
//! use infersim_agents::scoring::DecayParams;
//! use infersim_engine::SimTime;
//! // Two nodes serving one task; node 1 answered well last period.
//! let mut book: ContenderBook<()> = ContenderBook::new(DecayParams::default(), 1.0, vec![vec![0.0]]);
//! let a = book.add(0, 0, 100.0, ());
//! let b = book.add(1, 0, 100.0, ());
//! for c in [a, b] {
//!     book.requested(c);
//!     book.accepted(c);
//! }
//! book.observed(a, 0.2);
//! book.observed(b, 0.9);
//! book.end_period(SimTime::from_secs_f64(600.0).unwrap());
//! let order = book.decayed_score(0, SimTime::from_secs_f64(601.0).unwrap(), 2);
//! assert_eq!(order, vec![b, a]);
//! ```

use std::collections::VecDeque;

use infersim_engine::{Arena, Id, SimDuration, SimRng, SimTime};
use rand::RngExt;

use crate::scoring::{self, DecayParams, HistoryRow, PeriodCounts};

/// The label of a class of nodes (miners), counted by the share metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Good answers, reliably (fast or slow).
    Good,
    /// Poor answers.
    Poor,
    /// Fails often.
    Flaky,
}

impl Category {
    /// The label as scenario files and traces spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Good => "good",
            Category::Poor => "poor",
            Category::Flaky => "flaky",
        }
    }

    /// Its place in per-category counters.
    pub fn index(self) -> usize {
        match self {
            Category::Good => 0,
            Category::Poor => 1,
            Category::Flaky => 2,
        }
    }
}

/// A (node, task) pair the validator can route to, with its counters and history;
/// `X` is what the world keeps beside them.
#[derive(Clone, Debug)]
pub struct Contender<X> {
    /// Its node, as the world numbers nodes.
    pub node: u32,
    /// Its task.
    pub task: u16,
    /// Whether its node is still in the network.
    pub active: bool,
    /// This period's counters.
    pub period: PeriodCounts,
    quality_sum: f64,
    quality_n: u64,
    /// Its scored periods within the window, oldest first.
    pub history: VecDeque<HistoryRow>,
    /// glob at the book's last refresh; decays by a common factor until the next.
    glob: f64,
    /// The world's own state of the contender.
    pub extra: X,
}

impl<X> Contender<X> {
    /// Its glob at the book's last refresh (see [`ContenderBook::glob_decay`]).
    pub fn glob(&self) -> f64 {
        self.glob
    }
}

/// What a contender's period came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeriodRow<X> {
    /// The contender.
    pub contender: Id<Contender<X>>,
    /// Its counters.
    pub counts: PeriodCounts,
    /// nineteen's period score (none when nothing was requested).
    pub period_score: Option<f64>,
    /// Mean observed quality of its answers.
    pub observed_quality: Option<f64>,
    /// The history row written: period score x observed quality ^ exponent.
    pub score: Option<f64>,
}

/// Every contender of a validator, by node and by task.
#[derive(Clone, Debug)]
pub struct ContenderBook<X> {
    decay: DecayParams,
    quality_exponent: f64,
    /// sim(from -> to), `similarity[from][to]`.
    similarity: Vec<Vec<f64>>,
    contenders: Arena<Contender<X>>,
    /// Each node's contenders.
    by_node: Vec<Vec<Id<Contender<X>>>>,
    /// Active contenders per task, in creation order.
    by_task: Vec<Vec<Id<Contender<X>>>>,
    round_robin: Vec<usize>,
    /// When the cached globs were computed, and until when they are exact.
    glob_at: SimTime,
    glob_valid_until: SimTime,
}

impl<X> ContenderBook<X> {
    /// An empty book for `similarity.len()` tasks; `similarity[from][to]` in [0, 1].
    pub fn new(decay: DecayParams, quality_exponent: f64, similarity: Vec<Vec<f64>>) -> Self {
        let tasks = similarity.len();
        ContenderBook {
            decay,
            quality_exponent,
            similarity,
            contenders: Arena::new(),
            by_node: Vec::new(),
            by_task: vec![Vec::new(); tasks],
            round_robin: vec![0; tasks],
            glob_at: SimTime::ZERO,
            glob_valid_until: SimTime::MAX,
        }
    }

    /// The decay constants.
    pub fn decay(&self) -> &DecayParams {
        &self.decay
    }

    /// A new contender of `node` for `task`, declaring `capacity` requests a period.
    pub fn add(&mut self, node: u32, task: u16, capacity: f64, extra: X) -> Id<Contender<X>> {
        let c = self.contenders.push(Contender {
            node,
            task,
            active: true,
            period: PeriodCounts { capacity, ..PeriodCounts::default() },
            quality_sum: 0.0,
            quality_n: 0,
            history: VecDeque::new(),
            glob: 0.0,
            extra,
        });
        let n = node as usize;
        if self.by_node.len() <= n {
            self.by_node.resize_with(n + 1, Vec::new);
        }
        self.by_node[n].push(c);
        self.by_task[usize::from(task)].push(c);
        c
    }

    /// Node `node` has left: its contenders are no longer offered.
    pub fn retire(&mut self, node: u32) {
        for &c in self.by_node.get(node as usize).map_or(&[][..], Vec::as_slice) {
            let contender = &mut self.contenders[c];
            contender.active = false;
            self.by_task[usize::from(contender.task)].retain(|&x| x != c);
        }
    }

    /// The active contenders of `task`, in creation order.
    pub fn of_task(&self, task: u16) -> &[Id<Contender<X>>] {
        &self.by_task[usize::from(task)]
    }

    /// Node `node`'s contenders, active or not.
    pub fn of_node(&self, node: u32) -> &[Id<Contender<X>>] {
        self.by_node.get(node as usize).map_or(&[][..], Vec::as_slice)
    }

    /// Every active contender, task by task.
    pub fn active(&self) -> Vec<Id<Contender<X>>> {
        self.by_task.iter().flatten().copied().collect()
    }

    /// A request is made to contender `c`.
    pub fn requested(&mut self, c: Id<Contender<X>>) {
        self.contenders[c].period.requests += 1;
    }

    /// Contender `c` accepted a request: it used a unit of its declared capacity.
    pub fn accepted(&mut self, c: Id<Contender<X>>) {
        self.contenders[c].period.consumed += 1.0;
    }

    /// Whether contender `c` has used up its declared capacity for the period.
    pub fn over_declared(&self, c: Id<Contender<X>>) -> bool {
        let period = &self.contenders[c].period;
        period.consumed >= period.capacity
    }

    /// Contender `c` answered 429 (`rate_limited`) or 500.
    pub fn refused(&mut self, c: Id<Contender<X>>, rate_limited: bool) {
        let period = &mut self.contenders[c].period;
        if rate_limited {
            period.rate_limited += 1;
        } else {
            period.failed += 1;
        }
    }

    /// The validator scored one of contender `c`'s answers `quality`.
    pub fn observed(&mut self, c: Id<Contender<X>>, quality: f64) {
        let contender = &mut self.contenders[c];
        contender.quality_sum += quality;
        contender.quality_n += 1;
    }

    /// Round robin: `top` contenders of `task` from the one after the last start.
    pub fn round_robin(&mut self, task: u16, top: usize) -> Vec<Id<Contender<X>>> {
        let t = usize::from(task);
        let n = self.by_task[t].len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.round_robin[t] % n;
        self.round_robin[t] = start + 1;
        (0..top.min(n)).map(|k| self.by_task[t][(start + k) % n]).collect()
    }

    /// `top` contenders of `task` drawn without replacement.
    pub fn random(&self, task: u16, top: usize, rng: &mut SimRng) -> Vec<Id<Contender<X>>> {
        let mut pool = self.by_task[usize::from(task)].clone();
        let (n, k) = (pool.len(), top.min(pool.len()));
        for i in 0..k {
            let j = rng.random_range(i..n);
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }

    /// least_processed (nineteen's original): the `top` contenders of `task` with the
    /// fewest requests this period, the oldest first on ties.
    pub fn least_processed(&self, task: u16, top: usize) -> Vec<Id<Contender<X>>> {
        let keyed: Vec<(u64, u32)> =
            self.of_task(task).iter().map(|&c| (self.contenders[c].period.requests, c.index())).collect();
        smallest(keyed, top, Ord::cmp).into_iter().map(|(_, c)| Id::from_index(c)).collect()
    }

    /// decayed_score: the `top` contenders of `task` by rank = requests this period -
    /// weight x glob, smallest first (the oldest on ties). With no history every glob
    /// is 0 and this is least_processed (the cold start).
    pub fn decayed_score(&mut self, task: u16, now: SimTime, top: usize) -> Vec<Id<Contender<X>>> {
        self.refresh_globs(now);
        let decay = self.glob_decay(now);
        let weight = self.decay.weight;
        let ranked: Vec<(f64, u32)> = self
            .of_task(task)
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                (scoring::rank(contender.period.requests, contender.glob * decay, weight), c.index())
            })
            .collect();
        smallest(ranked, top, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .into_iter()
            .map(|(_, c)| Id::from_index(c))
            .collect()
    }

    /// The factor by which every cached glob has decayed since it was computed.
    pub fn glob_decay(&self, now: SimTime) -> f64 {
        let age_s = (now - self.glob_at).as_secs_f64();
        (-age_s / self.decay.half_life_s).exp2()
    }

    /// Recomputes every active contender's glob at `now` if the cache is stale (a period
    /// ended, or a history row has left the window since it was computed).
    pub fn refresh_globs(&mut self, now: SimTime) {
        if now < self.glob_valid_until {
            return;
        }
        let now_s = now.as_secs_f64();
        let window_s = self.decay.window_s;
        let mut valid_until_s = f64::INFINITY;
        let active = self.active();
        let mut iso = vec![0.0; self.contenders.len()];
        for &c in &active {
            let contender = &mut self.contenders[c];
            while contender.history.front().is_some_and(|row| now_s - row.at_s >= window_s) {
                contender.history.pop_front();
            }
            if let Some(row) = contender.history.front() {
                valid_until_s = valid_until_s.min(row.at_s + window_s);
            }
            iso[c.index() as usize] = scoring::iso(contender.history.make_contiguous(), now_s, &self.decay);
        }
        for &c in &active {
            let contender = &self.contenders[c];
            let own = iso[c.index() as usize];
            let sim = &self.similarity[usize::from(contender.task)];
            let others = self.by_node[contender.node as usize]
                .iter()
                .filter(|&&r| r != c)
                .map(|&r| (iso[r.index() as usize], sim[usize::from(self.contenders[r].task)]));
            let glob = scoring::glob(own, others);
            self.contenders[c].glob = glob;
        }
        self.glob_at = now;
        self.glob_valid_until = if valid_until_s.is_finite() {
            // The first instant at which the oldest row no longer counts.
            SimTime::from_secs_f64(valid_until_s).map_or(SimTime::MAX, |t| t.max(now + SimDuration::from_nanos(1)))
        } else {
            SimTime::MAX
        };
    }

    /// Forces the next [`refresh_globs`](Self::refresh_globs) to recompute.
    pub fn invalidate_globs(&mut self) {
        self.glob_valid_until = SimTime::ZERO;
    }

    /// Ends the scoring period at `now`: every active contender's counters become its
    /// period row (a history row where it was requested), and restart. Globs are left
    /// stale: refresh them when needed.
    pub fn end_period(&mut self, now: SimTime) -> Vec<PeriodRow<X>> {
        let now_s = now.as_secs_f64();
        let active = self.active();
        let mut rows = Vec::with_capacity(active.len());
        for c in active {
            let contender = &mut self.contenders[c];
            let counts = contender.period;
            let observed = (contender.quality_n > 0).then(|| contender.quality_sum / contender.quality_n as f64);
            let period_score = scoring::period_score(&counts);
            let score = period_score.map(|p| p * observed.unwrap_or(0.0).powf(self.quality_exponent));
            if let Some(score) = score {
                contender.history.push_back(HistoryRow { at_s: now_s, score });
            }
            rows.push(PeriodRow { contender: c, counts, period_score, observed_quality: observed, score });
            contender.period = PeriodCounts { capacity: counts.capacity, ..PeriodCounts::default() };
            contender.quality_sum = 0.0;
            contender.quality_n = 0;
        }
        self.invalidate_globs();
        rows
    }

    /// The decayed-score rank of every active contender of `task` at `now`, computed
    /// from scratch with [`scoring`] (no cache): what the cached ranks must equal.
    pub fn ranks_from_history(&self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        let now_s = now.as_secs_f64();
        let iso_of = |c: Id<Contender<X>>| {
            let rows: Vec<HistoryRow> = self.contenders[c].history.iter().copied().collect();
            scoring::iso(&rows, now_s, &self.decay)
        };
        self.of_task(task)
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                let sim = &self.similarity[usize::from(task)];
                let others = self.by_node[contender.node as usize]
                    .iter()
                    .filter(|&&r| r != c && self.contenders[r].active)
                    .map(|&r| (iso_of(r), sim[usize::from(self.contenders[r].task)]));
                let glob = scoring::glob(iso_of(c), others);
                (c.index(), scoring::rank(contender.period.requests, glob, self.decay.weight))
            })
            .collect()
    }

    /// The same ranks from the cached globs, as [`decayed_score`](Self::decayed_score)
    /// computes them.
    pub fn ranks_cached(&mut self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        self.refresh_globs(now);
        let decay = self.glob_decay(now);
        self.of_task(task)
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                (c.index(), scoring::rank(contender.period.requests, contender.glob * decay, self.decay.weight))
            })
            .collect()
    }
}

impl<X> std::ops::Index<Id<Contender<X>>> for ContenderBook<X> {
    type Output = Contender<X>;
    fn index(&self, c: Id<Contender<X>>) -> &Contender<X> {
        &self.contenders[c]
    }
}

impl<X> std::ops::IndexMut<Id<Contender<X>>> for ContenderBook<X> {
    fn index_mut(&mut self, c: Id<Contender<X>>) -> &mut Contender<X> {
        &mut self.contenders[c]
    }
}

/// The `top` smallest keys, in order: a partial selection, then a sort of the few kept.
pub(crate) fn smallest<K: Copy>(mut keyed: Vec<K>, top: usize, order: impl Fn(&K, &K) -> std::cmp::Ordering) -> Vec<K> {
    if keyed.len() > top {
        keyed.select_nth_unstable_by(top, &order);
        keyed.truncate(top);
    }
    keyed.sort_unstable_by(order);
    keyed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> SimTime {
        SimTime::from_secs_f64(s).unwrap()
    }

    #[test]
    fn a_node_s_other_task_lends_its_history_by_similarity() {
        // sim(1 -> 0) = 0.5: task 1's contender borrows half of task 0's iso on its node.
        let mut book: ContenderBook<()> =
            ContenderBook::new(DecayParams::default(), 1.0, vec![vec![0.0, 0.0], vec![0.5, 0.0]]);
        let a0 = book.add(0, 0, 10.0, ());
        let a1 = book.add(0, 1, 10.0, ());
        book[a0].history.push_back(HistoryRow { at_s: 0.0, score: 1.0 });
        book.invalidate_globs();
        let hour = at(3600.0);
        let cached = book.ranks_cached(1, hour);
        let scratch = book.ranks_from_history(1, hour);
        assert_eq!(cached, scratch);
        // iso(a0) = 0.5 an hour later; glob(a1) = 0.5 x 0.5; rank = 0 - 50 x 0.25.
        assert_eq!(cached, vec![(a1.index(), -12.5)]);
    }

    #[test]
    fn a_period_scores_requests_refusals_and_quality() {
        let mut book: ContenderBook<()> = ContenderBook::new(DecayParams::default(), 1.0, vec![vec![0.0]]);
        let c = book.add(0, 0, 4.0, ());
        for _ in 0..4 {
            book.requested(c);
        }
        book.refused(c, true);
        for _ in 0..3 {
            book.accepted(c);
        }
        book.observed(c, 0.5);
        book.observed(c, 1.0);
        let rows = book.end_period(at(600.0));
        // good 3/4, r429 1/4, unqueried (4 - 3) / 4: 0.75 x (1 - 1/16) x 0.75 quality.
        let expected = 0.75 * (1.0 - 0.25 * 0.25) * 0.75;
        assert!((rows[0].score.unwrap() - expected).abs() < 1e-15);
        assert_eq!(book[c].period.requests, 0);
        assert_eq!(book[c].history.len(), 1);
        // A node that leaves is not offered again.
        book.retire(0);
        assert!(book.of_task(0).is_empty());
        assert!(book.end_period(at(1200.0)).is_empty());
    }
}
