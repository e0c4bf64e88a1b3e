//! Running replications: one (point, replication) work item at a time, many in
//! parallel. A replication's random streams depend only on the master seed and its
//! index (the same at every point: common random numbers), so what a replication
//! produces does not depend on which thread runs it or in which order.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;

use infersim_agents::world::Replication;
use infersim_engine::{Interrupt, RunClock, SimDuration, replication_seed};

use crate::output::{MetricCell, ReplicationRecord};
use crate::registry::TraceTarget;
use crate::scenario::{Point, Scenario};
use crate::trace::{TraceLevel, trace_dir};

/// What to trace and where.
#[derive(Clone, Debug)]
pub struct TraceSpec {
    /// How much to record.
    pub level: TraceLevel,
    /// The batch's output directory (traces go below it).
    pub out: PathBuf,
    /// Spacing of sampled state.
    pub sample_every: SimDuration,
}

impl TraceSpec {
    /// No traces: metrics only.
    pub fn none() -> TraceSpec {
        TraceSpec { level: TraceLevel::Summary, out: PathBuf::new(), sample_every: SimDuration::ZERO }
    }
}

/// The trace directory of one replication, emptied: a replication rerun after an
/// interruption starts its traces afresh, dropping any temporary file the
/// interrupted attempt left.
fn fresh_trace_dir(trace: &TraceSpec, point: u32, replication: u64) -> Result<PathBuf, String> {
    let dir = trace_dir(&trace.out, point, replication);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The I-th of N disjoint slices of a batch (`--shard I/N`, I from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which slice, 1..=count.
    pub index: u64,
    /// How many slices.
    pub count: u64,
}

impl Shard {
    /// The whole batch.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `I/N` with 1 <= I <= N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 2/8");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether the work item with global position `g` belongs to this shard. Items are
    /// dealt round-robin, so every shard gets a similar mix of points.
    pub fn owns(&self, g: u64) -> bool {
        g % self.count == self.index - 1
    }
}

/// The work items of a batch that belong to one shard, produced as they are consumed:
/// item `k` of the shard is computed from `k`, never stored, so a batch of any size
/// costs the same memory. Global positions run point-major (point x replications + r)
/// and are dealt round-robin to shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkPlan {
    replications: u64,
    shard: Shard,
    total: u64,
}

impl WorkPlan {
    /// The plan of `points` x `replications` for `shard`, refused when the number of
    /// work items cannot be represented.
    pub fn new(points: usize, replications: u64, shard: Shard) -> Result<WorkPlan, PlanError> {
        if replications == 0 {
            return Err(PlanError::NoReplications);
        }
        let total =
            (points as u64).checked_mul(replications).ok_or(PlanError::TooManyReplications { points, replications })?;
        Ok(WorkPlan { replications, shard, total })
    }

    /// Work items of this shard.
    pub fn len(&self) -> u64 {
        let first = self.shard.index - 1;
        if self.total <= first { 0 } else { (self.total - first).div_ceil(self.shard.count) }
    }

    /// Whether this shard has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global position of this shard's `k`-th item.
    pub fn global(&self, k: u64) -> u64 {
        k * self.shard.count + (self.shard.index - 1)
    }

    /// Which of this shard's items global position `g` is (`g` must be one of them).
    pub fn index_of(&self, g: u64) -> u64 {
        (g - (self.shard.index - 1)) / self.shard.count
    }

    /// (point, replication) at global position `g`.
    pub fn item_at(&self, g: u64) -> (u32, u64) {
        ((g / self.replications) as u32, g % self.replications)
    }

    /// The global position of (point, replication).
    pub fn position(&self, point: u32, replication: u64) -> u64 {
        u64::from(point) * self.replications + replication
    }

    /// This shard's items in order.
    pub fn items(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        (0..self.len()).map(|k| self.item_at(self.global(k)))
    }
}

/// Runs one replication of one point to its end. A failure, including a panic inside
/// the model, becomes a record with an error and no metrics, so it cannot take the
/// batch down.
pub fn run_replication(point: &Point, master_seed: u64, replication: u64, trace: &TraceSpec) -> ReplicationRecord {
    run_interruptible(point, master_seed, replication, trace, &Interrupt::default())
        .expect("a replication without an interrupt runs to its end")
}

/// Like [`run_replication`], but `None` when `interrupt` was raised before the
/// replication ended: it stopped early, its traces are incomplete, and it must run
/// again (its trace directory is emptied when it does).
pub fn run_interruptible(
    point: &Point,
    master_seed: u64,
    replication: u64,
    trace: &TraceSpec,
    interrupt: &Interrupt,
) -> Option<ReplicationRecord> {
    run_watched(point, master_seed, replication, trace, interrupt, &Watch::default())
}

/// The replications running now, each by its clock, for a progress bar: a
/// replication shows how far it has got while it runs, not only once it is done.
#[derive(Debug, Default)]
pub struct Watch {
    running: std::sync::Mutex<Vec<(u64, RunClock)>>,
    next: AtomicU64,
}

impl Watch {
    /// The replications under way, each as the share of its horizon its clock has
    /// passed (`None` for one whose world sets no horizon: how far it got is unknown).
    pub fn running(&self) -> Vec<Option<f64>> {
        let running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        running.iter().map(|(_, clock)| clock.fraction()).collect()
    }

    fn start(&self) -> (u64, RunClock) {
        let (id, clock) = (self.next.fetch_add(1, Ordering::Relaxed), RunClock::new());
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, clock.clone()));
        (id, clock)
    }

    fn end(&self, id: u64) {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|(k, _)| *k != id);
    }
}

/// [`run_interruptible`], with the replication's clock in `watch` while it runs.
pub fn run_watched(
    point: &Point,
    master_seed: u64,
    replication: u64,
    trace: &TraceSpec,
    interrupt: &Interrupt,
    watch: &Watch,
) -> Option<ReplicationRecord> {
    let (id, clock) = watch.start();
    let record = run_clocked(point, master_seed, replication, trace, interrupt, clock);
    watch.end(id);
    record
}

fn run_clocked(
    point: &Point,
    master_seed: u64,
    replication: u64,
    trace: &TraceSpec,
    interrupt: &Interrupt,
    clock: RunClock,
) -> Option<ReplicationRecord> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let dir = if trace.level == TraceLevel::Summary {
            PathBuf::new()
        } else {
            fresh_trace_dir(trace, point.index, replication)?
        };
        let target = TraceTarget { level: trace.level, dir, sample_every: trace.sample_every };
        let run = Replication { master_seed, index: replication, interrupt: interrupt.clone(), clock: clock.clone() };
        match point.model.run(run, &target) {
            Err(e) if e.is_interrupted() => Ok(None),
            other => other.map(Some).map_err(|e| e.to_string()),
        }
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("panicked: {message}"))
    });
    let cells = |m: &infersim_agents::world::Metrics| {
        m.iter().map(|(name, value)| (std::borrow::Cow::Borrowed(name), MetricCell::from(value))).collect()
    };
    let (metrics, groups, error) = match outcome {
        Ok(None) => return None,
        Ok(Some(metrics)) => {
            let groups = metrics
                .groups()
                .iter()
                .map(|g| crate::groups::GroupRecord {
                    kind: g.kind.into(),
                    name: g.name.clone(),
                    metrics: cells(&g.metrics),
                })
                .collect();
            (cells(&metrics), groups, None)
        }
        Err(e) => (Vec::new(), Vec::new(), Some(e)),
    };
    Some(ReplicationRecord {
        point: point.index,
        replication,
        seed: replication_seed(master_seed, replication),
        metrics,
        error,
        groups,
    })
}

/// The record of a replication that could not run at all.
fn failed_record(point: u32, master_seed: u64, replication: u64, error: String) -> ReplicationRecord {
    ReplicationRecord {
        point,
        replication,
        seed: replication_seed(master_seed, replication),
        metrics: Vec::new(),
        error: Some(error),
        groups: Vec::new(),
    }
}

/// Why replications could not be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `--reps 0`.
    #[error("--reps must be at least 1")]
    NoReplications,
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    NoThreads,
    /// More work items than a 64-bit count holds.
    #[error(
        "{points} points x {replications} replications is more than 2^64 replications, which cannot be counted; \
         ask for fewer --reps"
    )]
    TooManyReplications {
        /// Points of the scenario.
        points: usize,
        /// --reps.
        replications: u64,
    },
    /// The thread pool could not start.
    #[error("cannot start {threads} worker threads: {message}")]
    ThreadPool {
        /// Requested threads.
        threads: usize,
        /// Why.
        message: String,
    },
}

/// Runs this shard's work items on `threads` threads, handing each finished record to
/// `done` on the calling thread (in the order they finish), so that writing records
/// down overlaps the simulation instead of taking turns with it on a worker. Workers
/// take the next item from a shared counter, so items start in order and finish
/// nearly in order (the journal then stays a few ranges), and none is ever listed.
/// Records wait in a bounded channel, so memory does not grow with the batch. Items
/// in `skip` (global positions finished earlier) are passed over. Once `cancel` is
/// raised no item starts, and the running ones stop within a few thousand events and
/// give no record (they run again on resume). Returns the first error `done` returned,
/// if any; after it no new item starts.
#[allow(clippy::too_many_arguments)]
pub fn run_items<E>(
    scenario: &Scenario,
    plan: &WorkPlan,
    skip: &crate::journal::RangeSet,
    master_seed: u64,
    threads: usize,
    trace: &TraceSpec,
    cancel: &Interrupt,
    watch: &Watch,
    mut done: impl FnMut(ReplicationRecord) -> Result<(), E>,
) -> Result<Result<(), E>, PlanError> {
    if threads == 0 {
        return Err(PlanError::NoThreads);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| PlanError::ThreadPool { threads, message: e.to_string() })?;
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (finished, records) = std::sync::mpsc::sync_channel::<ReplicationRecord>(RECORDS_IN_FLIGHT);
    let mut first_error = None;
    std::thread::scope(|scope| {
        let (stop, next) = (&stop, &next);
        scope.spawn(move || {
            let work = Work { scenario, plan, skip, master_seed, trace, cancel, watch, stop, next };
            pool.broadcast(|_| work.run(&finished));
            // `finished` drops here, which ends the loop below.
        });
        // Polled rather than waited on: a worker sending to a waiting receiver must
        // wake it (a system call and a context switch per record, which doubled the
        // cost of a batch of tiny replications); a receiver that looks every
        // millisecond is never asleep in the channel, so sending stays a memory write.
        loop {
            match records.try_recv() {
                Ok(record) if first_error.is_none() => {
                    if let Err(e) = done(record) {
                        stop.store(true, Ordering::Relaxed);
                        first_error = Some(e);
                    }
                }
                Ok(_) => {} // drain, so that no worker waits on a full channel
                Err(TryRecvError::Empty) => std::thread::sleep(POLL_EVERY),
                Err(TryRecvError::Disconnected) => break,
            }
        }
    });
    Ok(match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    })
}

/// What every worker of [`run_items`] shares.
struct Work<'a> {
    scenario: &'a Scenario,
    plan: &'a WorkPlan,
    skip: &'a crate::journal::RangeSet,
    master_seed: u64,
    trace: &'a TraceSpec,
    cancel: &'a Interrupt,
    watch: &'a Watch,
    /// Raised when the calling thread stops taking records.
    stop: &'a AtomicBool,
    /// The next item to take.
    next: &'a AtomicU64,
}

impl Work<'_> {
    /// One worker: takes items in turn until none is left or the batch stops, sending
    /// each record to `finished`.
    fn run(&self, finished: &std::sync::mpsc::SyncSender<ReplicationRecord>) {
        // Each worker keeps the point it ran last: items run point by point,
        // so a point is resolved about once per worker.
        let mut current: Option<Point> = None;
        loop {
            if self.cancel.is_raised() || self.stop.load(Ordering::Relaxed) {
                return;
            }
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.plan.len() {
                return;
            }
            let g = self.plan.global(k);
            if self.skip.contains(g) {
                continue;
            }
            let (p, r) = self.plan.item_at(g);
            if current.as_ref().is_none_or(|c| c.index != p) {
                current = self.scenario.point(p).map_err(|e| (p, e.to_string())).map_or_else(
                    |(p, message)| {
                        let record = failed_record(p, self.master_seed, r, message);
                        finished.send(record).expect("the batch stopped listening: broken invariant");
                        None
                    },
                    Some,
                );
            }
            let Some(point) = &current else { continue };
            let Some(record) = run_watched(point, self.master_seed, r, self.trace, self.cancel, self.watch) else {
                return;
            };
            // The receiver lives until every worker has returned.
            finished.send(record).expect("the batch stopped listening: broken invariant");
        }
    }
}

/// Finished records waiting for the calling thread: enough for a millisecond of tiny
/// replications on many threads, few enough that memory stays flat.
const RECORDS_IN_FLIGHT: usize = 1024;

/// How long the calling thread sleeps when no record is waiting.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use std::sync::Mutex;

    fn small() -> Scenario {
        let mut s = Scenario::builtin("mmc").unwrap();
        s.apply_overrides(&["simulation.customers=3000", "simulation.warmup_customers=300"]).unwrap();
        s
    }

    fn collect(s: &Scenario, plan: &WorkPlan, threads: usize) -> Vec<ReplicationRecord> {
        let out = Mutex::new(Vec::new());
        let skip = crate::journal::RangeSet::default();
        run_items(s, plan, &skip, 9, threads, &TraceSpec::none(), &Interrupt::default(), &Watch::default(), |r| {
            out.lock().unwrap().push(r);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        let mut v = out.into_inner().unwrap();
        v.sort_by_key(|r| (r.point, r.replication));
        v
    }

    #[test]
    fn records_do_not_depend_on_the_thread_count() {
        let s = small();
        let plan = WorkPlan::new(1, 6, Shard::ALL).unwrap();
        let one = collect(&s, &plan, 1);
        assert_eq!(one, collect(&s, &plan, 2));
        assert_eq!(one[3].seed, replication_seed(9, 3));
        assert!(one.iter().all(|r| r.error.is_none()));
    }

    #[test]
    fn shards_partition_the_batch() {
        let all: Vec<_> = WorkPlan::new(3, 5, Shard::ALL).unwrap().items().collect();
        assert_eq!(all.len(), 15);
        assert_eq!(all[7], (1, 2));
        for count in [1, 4, 15, 16] {
            let plans: Vec<_> = (1..=count).map(|i| WorkPlan::new(3, 5, Shard { index: i, count }).unwrap()).collect();
            let mut union: Vec<_> = plans.iter().flat_map(|p| p.items()).collect();
            assert_eq!(plans.iter().map(WorkPlan::len).sum::<u64>(), 15, "{count} shards");
            union.sort();
            assert_eq!(union, all);
        }
        // Counts that do not fit in 64 bits are refused; large ones cost nothing.
        assert!(WorkPlan::new(3, u64::MAX / 2, Shard::ALL).is_err());
        let huge = WorkPlan::new(2, 100_000_000_000, Shard { index: 3, count: 7 }).unwrap();
        assert_eq!(huge.item_at(huge.global(1_000_000_000)), (0, 7_000_000_002));
        assert_eq!(huge.len(), 28_571_428_572);
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        for bad in ["3/2", "0/2", "1/0", "x", "1/x"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cancellation_skips_unstarted_items() {
        let s = small();
        let cancel = Interrupt::new();
        cancel.raise();
        let count = Mutex::new(0);
        let plan = WorkPlan::new(1, 4, Shard::ALL).unwrap();
        let skip = crate::journal::RangeSet::default();
        run_items(&s, &plan, &skip, 1, 1, &TraceSpec::none(), &cancel, &Watch::default(), |_| {
            *count.lock().unwrap() += 1;
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(*count.lock().unwrap(), 0);
    }

    /// A replication that would run for hours stops once the interrupt is raised, from
    /// another thread while it runs, and gives no record: it did not finish.
    #[test]
    fn an_interrupt_stops_a_running_replication_and_it_gives_no_record() {
        let mut s = Scenario::builtin("mmc").unwrap();
        s.apply_overrides(&["simulation.customers=10000000000", "simulation.warmup_customers=0"]).unwrap();
        let interrupt = Interrupt::new();
        let raiser = interrupt.clone();
        let record = std::thread::scope(|scope| {
            let run = scope.spawn(|| run_interruptible(&s.first_point(), 1, 0, &TraceSpec::none(), &interrupt));
            std::thread::sleep(std::time::Duration::from_millis(50));
            raiser.raise();
            run.join().unwrap()
        });
        assert!(record.is_none(), "an interrupted replication is not a finished one");
        // Never raised, the same point runs to its end (a small one).
        let done = run_interruptible(&small().first_point(), 1, 0, &TraceSpec::none(), &Interrupt::new()).unwrap();
        assert!(done.error.is_none() && !done.metrics.is_empty());
    }

    /// While a replication runs, the watch holds its clock, which moves through its
    /// horizon; the clock is gone once the replication returns.
    #[test]
    fn a_watch_sees_a_running_replication_move() {
        let mut s = Scenario::builtin("llm-serving").unwrap();
        s.apply_overrides(&["simulation.duration_s=100000"]).unwrap();
        let (interrupt, watch) = (Interrupt::new(), Watch::default());
        let seen = std::thread::scope(|scope| {
            let run = scope.spawn(|| run_watched(&s.first_point(), 1, 0, &TraceSpec::none(), &interrupt, &watch));
            let mut seen = Vec::new();
            for _ in 0..4000 {
                seen = watch.running();
                if seen.first().is_some_and(|f| f.is_some_and(|f| f > 0.0)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            interrupt.raise();
            assert!(run.join().unwrap().is_none(), "interrupted");
            seen
        });
        assert!(seen.len() == 1 && seen[0].is_some_and(|f| f > 0.0 && f < 1.0), "{seen:?}");
        assert!(watch.running().is_empty());
    }

    #[test]
    fn analytic_values_exist_where_theory_does() {
        use infersim_agents::station::theory;
        let a = small().first_point().model.analytic();
        let wait = a.iter().find(|(m, _)| *m == "wait_s").unwrap().1;
        assert!((wait - theory::mmc(3.6, 1.0, 4).unwrap().wait_s).abs() < 1e-12);
        let mut lossy = small();
        lossy.apply_overrides(&["station.capacity=6"]).unwrap();
        assert!(lossy.first_point().model.analytic().is_empty(), "M/M/4/6 has no formula here");
    }
}
