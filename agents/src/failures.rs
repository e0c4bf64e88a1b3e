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
    pub fn time_to_failure_h(&self, rng: &mut SimRng) -> f64 {
        Distribution::<f64>::sample(&Exp1, rng) * self.mtbf_h
    }

    /// Time to repair (h), drawn from `rng`.
    pub fn time_to_repair_h(&self, rng: &mut SimRng) -> f64 {
        Distribution::<f64>::sample(&Exp1, rng) * self.mttr_h
    }

    /// Time to the next failure (s), drawn from `rng`.
    pub fn time_to_failure_s(&self, rng: &mut SimRng) -> f64 {
        self.time_to_failure_h(rng) * 3600.0
    }

    /// Time to repair (s), drawn from `rng`.
    pub fn time_to_repair_s(&self, rng: &mut SimRng) -> f64 {
        self.time_to_repair_h(rng) * 3600.0
    }
}
