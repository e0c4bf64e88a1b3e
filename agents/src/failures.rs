//! Failures and repairs of machines (GPUs, nodes), shared by every world that has
//! them: exponential times between failures and to repair, drawn from the failing
//! machine's own stream so that adding machines leaves the others' failures alone.

use infersim_engine::SimRng;
use rand_distr::{Distribution, Exp1};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, check};

/// Where the failure streams of machines begin, by convention: machine `m` (a GPU, a
/// replica's GPU) draws its failures and repairs from stream `FAILURE_STREAM_BASE +
/// m`, so that adding machines leaves the failures of the others unchanged. A world
/// whose other streams reach this far chooses a base of its own.
pub const FAILURE_STREAM_BASE: u32 = 1000;

/// GPU failures: each GPU fails after an exponential time with mean `mtbf_h` and is
/// repaired after an exponential time with mean `mttr_h`. A batch on a failing GPU is
/// lost; a GPU that is down draws no power.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failures {
    /// Mean time between failures of one GPU (h).
    pub mtbf_h: f64,
    /// Mean time to repair (h).
    pub mttr_h: f64,
}

impl Failures {
    /// Checks both means; keys are relative to the failures table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A failure at least every 3.6 s on average keeps a run's events bounded.
        check((1e-3..=1e6).contains(&self.mtbf_h), "mtbf_h", self.mtbf_h, "hours from 0.001 to 1,000,000")?;
        check((1e-6..=1e6).contains(&self.mttr_h), "mttr_h", self.mttr_h, "hours from 0.000001 to 1,000,000")
    }

    /// Time to the next failure (h), drawn from `rng`.
    pub(crate) fn time_to_failure_h(&self, rng: &mut SimRng) -> f64 {
        Distribution::<f64>::sample(&Exp1, rng) * self.mtbf_h
    }

    /// Time to repair (h), drawn from `rng`.
    pub(crate) fn time_to_repair_h(&self, rng: &mut SimRng) -> f64 {
        Distribution::<f64>::sample(&Exp1, rng) * self.mttr_h
    }

    /// Time to the next failure (s), drawn from `rng`.
    pub(crate) fn time_to_failure_s(&self, rng: &mut SimRng) -> f64 {
        self.time_to_failure_h(rng) * 3600.0
    }

    /// Time to repair (s), drawn from `rng`.
    pub(crate) fn time_to_repair_s(&self, rng: &mut SimRng) -> f64 {
        self.time_to_repair_h(rng) * 3600.0
    }
}

/// The up and down epochs of machines that fail and are repaired (GPUs, replicas,
/// miner nodes), shared by every world that has them: whether each unit is up, its
/// epoch (bumped at every failure and repair, so that an event scheduled in an earlier
/// epoch can be told stale), how many failures there were and how long units were
/// down. When units fail and come back is drawn from [`Failures`] on each unit's own
/// stream (by convention [`FAILURE_STREAM_BASE`] plus the unit, or its component);
/// what a failure does to the work on a unit is the world's own affair; what a unit
/// draws while down is not: [`DOWN_POWER_W`].
///
/// A unit may be made of several components that fail independently, each from its
/// own stream (a replica's GPUs): it fails when the first of them does
/// ([`first_failure`]), and is repaired from that component's stream.
///
/// ```
/// use infersim_agents::failures::Lifecycle;
/// use infersim_engine::SimTime;
/// let mut gpus = Lifecycle::new(2);
/// let t = |s: f64| SimTime::from_secs_f64(s).unwrap();
/// let epoch = gpus.fail(1, t(10.0));
/// assert!(gpus.is_down(1) && !gpus.is_down(0) && gpus.epoch(1) == epoch);
/// gpus.repair(1, t(40.0));
/// assert_eq!((gpus.failures(), gpus.down_s(t(50.0))), (1, 30.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Lifecycle {
    units: Vec<UnitLife>,
    failed: u64,
    /// Units down now.
    down: usize,
}

/// One unit's state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct UnitLife {
    down_since: Option<infersim_engine::SimTime>,
    /// Down time of its past failures (s).
    down_s: f64,
    epoch: u32,
}

/// Power a unit draws while it is down (W): none, its power is cut until it is
/// repaired.
pub const DOWN_POWER_W: f64 = 0.0;

/// Which of several components' times to failure comes first: its index and the time.
pub fn first_failure(times_s: impl IntoIterator<Item = f64>) -> (usize, f64) {
    times_s.into_iter().enumerate().fold((0, f64::INFINITY), |best, (k, t)| if t < best.1 { (k, t) } else { best })
}

impl Lifecycle {
    /// `units` units, all up, in epoch 0.
    pub fn new(units: usize) -> Self {
        Lifecycle { units: vec![UnitLife::default(); units], failed: 0, down: 0 }
    }

    /// Failures so far, every unit.
    pub fn failures(&self) -> u64 {
        self.failed
    }

    /// Adds a unit (up, epoch 0); returns its index.
    pub fn push(&mut self) -> usize {
        self.units.push(UnitLife::default());
        self.units.len() - 1
    }

    /// Whether unit `u` is down.
    pub fn is_down(&self, u: usize) -> bool {
        self.units[u].down_since.is_some()
    }

    /// Unit `u`'s epoch.
    pub fn epoch(&self, u: usize) -> u32 {
        self.units[u].epoch
    }

    /// Unit `u` fails at `now`: it goes down and its epoch moves on; returns the new
    /// epoch.
    pub fn fail(&mut self, u: usize, now: infersim_engine::SimTime) -> u32 {
        let unit = &mut self.units[u];
        debug_assert!(unit.down_since.is_none(), "a unit that is down cannot fail");
        unit.down_since = Some(now);
        unit.epoch += 1;
        self.failed += 1;
        self.down += 1;
        unit.epoch
    }

    /// Unit `u` is repaired at `now`: it comes up and its epoch moves on; returns the
    /// new epoch.
    pub fn repair(&mut self, u: usize, now: infersim_engine::SimTime) -> u32 {
        let unit = &mut self.units[u];
        if let Some(since) = unit.down_since.take() {
            unit.down_s += (now - since).as_secs_f64();
            self.down -= 1;
        }
        unit.epoch += 1;
        unit.epoch
    }

    /// Unit `u`'s life ends at `now` (a replica retired, a node gone): it is no longer
    /// down (its down time ends here) and its epoch moves on, so that events of the
    /// ended life are stale; returns the new epoch. A unit reused later starts up.
    pub(crate) fn retire(&mut self, u: usize, now: infersim_engine::SimTime) -> u32 {
        self.repair(u, now)
    }

    /// Time units spent down up to `end` (s), all units, a unit still down counted to
    /// `end`.
    pub fn down_s(&self, end: infersim_engine::SimTime) -> f64 {
        self.units.iter().map(|u| u.down_s + u.down_since.map_or(0.0, |t| (end - t).as_secs_f64())).sum()
    }

    /// Units down now.
    pub(crate) fn down_now(&self) -> usize {
        self.down
    }
}
