//! Running replications: one (point, replication) work item at a time, many in
//! parallel. A replication's random streams depend only on the master seed and its
//! index (the same at every point: common random numbers), so what a replication
//! produces does not depend on which thread runs it or in which order.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use infersim_agents::world::Replication;
use infersim_engine::{SimDuration, replication_seed};
use rayon::prelude::*;

use crate::output::{MetricCell, ReplicationRecord};
use crate::registry::TraceTarget;
use crate::scenario::Point;
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

/// Every (point, replication) of a batch that belongs to `shard`, point-major.
pub fn work_items(points: usize, replications: u64, shard: Shard) -> Vec<(u32, u64)> {
    (0..points as u32)
        .flat_map(|p| (0..replications).map(move |r| (p, r)))
        .enumerate()
        .filter(|(g, _)| shard.owns(*g as u64))
        .map(|(_, item)| item)
        .collect()
}

/// Runs one replication of one point. A failure, including a panic inside the model,
/// becomes a record with an error and no metrics, so it cannot take the batch down.
pub fn run_replication(point: &Point, master_seed: u64, replication: u64, trace: &TraceSpec) -> ReplicationRecord {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let dir = if trace.level == TraceLevel::Summary {
            PathBuf::new()
        } else {
            fresh_trace_dir(trace, point.index, replication)?
        };
        let target = TraceTarget { level: trace.level, dir, sample_every: trace.sample_every };
        point.model.run(Replication { master_seed, index: replication }, &target)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("panicked: {message}"))
    });
    let (metrics, error) = match outcome {
        Ok(metrics) => {
            (metrics.iter().map(|(name, value)| (name.to_string(), MetricCell::from(value))).collect(), None)
        }
        Err(e) => (Vec::new(), Some(e)),
    };
    ReplicationRecord {
        point: point.index,
        replication,
        seed: replication_seed(master_seed, replication),
        metrics,
        error,
    }
}

/// Why replications could not be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// `--reps 0`.
    #[error("--reps must be at least 1")]
    NoReplications,
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    NoThreads,
    /// More replications than one process can hold the records of.
    #[error(
        "{points} points x {replications} replications is {total} replications for this process; at most \
         {MAX_REPLICATIONS} can run in one (each one's record is kept until replications.parquet is written, about \
         2 KB each): split the batch with --shard I/N"
    )]
    TooManyReplications {
        /// Points of the scenario.
        points: usize,
        /// --reps.
        replications: u64,
        /// This process's share.
        total: u128,
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

/// The most replications one process runs: their records (about 2 KB each) stay in
/// memory until replications.parquet is written, so 10 million is about 20 GB.
pub const MAX_REPLICATIONS: u64 = 10_000_000;

/// Refuses a batch whose share for this process exceeds [`MAX_REPLICATIONS`], before
/// anything is allocated or written.
pub fn check_batch_size(points: usize, replications: u64, shard: Shard) -> Result<(), RunError> {
    let total = (points as u128 * u128::from(replications)).div_ceil(u128::from(shard.count.max(1)));
    if total > u128::from(MAX_REPLICATIONS) {
        return Err(RunError::TooManyReplications { points, replications, total });
    }
    Ok(())
}

/// Runs `items` on `threads` threads, handing each finished record to `done` (which
/// may be called from any worker, in any order). Items not yet started when `cancel`
/// becomes true are skipped. Returns the first error `done` returned, if any.
pub fn run_items<E: Send>(
    points: &[Point],
    items: &[(u32, u64)],
    master_seed: u64,
    threads: usize,
    trace: &TraceSpec,
    cancel: &AtomicBool,
    done: impl Fn(ReplicationRecord) -> Result<(), E> + Sync,
) -> Result<Result<(), E>, RunError> {
    if threads == 0 {
        return Err(RunError::NoThreads);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| RunError::ThreadPool { threads, message: e.to_string() })?;
    Ok(pool.install(|| {
        items.par_iter().with_max_len(1).try_for_each(|&(p, r)| {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            done(run_replication(&points[p as usize], master_seed, r, trace))
        })
    }))
}

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

    fn collect(s: &Scenario, items: &[(u32, u64)], threads: usize) -> Vec<ReplicationRecord> {
        let out = Mutex::new(Vec::new());
        run_items(&s.points, items, 9, threads, &TraceSpec::none(), &AtomicBool::new(false), |r| {
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
        let items = work_items(1, 6, Shard::ALL);
        let one = collect(&s, &items, 1);
        assert_eq!(one, collect(&s, &items, 2));
        assert_eq!(one[3].seed, replication_seed(9, 3));
        assert!(one.iter().all(|r| r.error.is_none()));
    }

    #[test]
    fn shards_partition_the_batch() {
        let all = work_items(3, 5, Shard::ALL);
        assert_eq!(all.len(), 15);
        let mut union: Vec<_> = (1..=4).flat_map(|i| work_items(3, 5, Shard { index: i, count: 4 })).collect();
        union.sort();
        assert_eq!(union, all);
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        for bad in ["3/2", "0/2", "1/0", "x", "1/x"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cancellation_skips_unstarted_items() {
        let s = small();
        let cancel = AtomicBool::new(true);
        let count = Mutex::new(0);
        run_items(&s.points, &work_items(1, 4, Shard::ALL), 1, 1, &TraceSpec::none(), &cancel, |_| {
            *count.lock().unwrap() += 1;
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(*count.lock().unwrap(), 0);
    }

    #[test]
    fn analytic_values_exist_where_theory_does() {
        use infersim_agents::station::theory;
        let a = small().points[0].model.analytic();
        let wait = a.iter().find(|(m, _)| *m == "wait_s").unwrap().1;
        assert!((wait - theory::mmc(3.6, 1.0, 4).unwrap().wait_s).abs() < 1e-12);
        let mut lossy = small();
        lossy.apply_overrides(&["station.capacity=6"]).unwrap();
        assert!(lossy.points[0].model.analytic().is_empty(), "M/M/4/6 has no formula here");
    }
}
