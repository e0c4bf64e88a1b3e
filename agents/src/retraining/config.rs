//! Configuration of the drift-and-retraining world, validated before a run.

use serde::{Deserialize, Serialize};

use crate::arrivals::ArrivalProcess;
pub use crate::drift::{Drift, DriftDistribution, DriftSampler, LossFunction, Monitor, Policy, Quality, Signal};
use crate::failures::Failures;
use crate::grid::CarbonIntensity;

/// Everything one replication of the drift-and-retraining world needs.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrainingConfig {
    /// How inference requests arrive.
    pub arrivals: ArrivalProcess,
    /// The serving GPUs.
    pub fleet: Fleet,
    /// How serving moves the model's loss.
    pub drift: Drift,
    /// Quality as a function of loss.
    pub quality: Quality,
    /// The monitoring controller.
    pub monitor: Monitor,
    /// Retraining jobs.
    pub training: Training,
    /// Energy of serving and idling.
    pub energy: Energy,
    /// Carbon intensity of the grid over time.
    pub grid: CarbonIntensity,
    /// Energy and GPU prices.
    pub prices: Prices,
    /// Length of the run (s); the last monitor tick falls on it.
    pub duration_s: f64,
}

/// The serving GPUs: how long a request takes on one, and how they fail.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Serving GPUs.
    pub gpus: u32,
    /// Mean service time of one request (s); 0 serves every request the instant it
    /// arrives (the system-dynamics model's view, in which GPUs never queue).
    #[serde(default)]
    pub service_s: f64,
    /// Coefficient of variation of the service time: 0 is deterministic, above 0
    /// log-normal.
    #[serde(default)]
    pub service_cv: f64,
    /// GPU failures and repairs (serving and dedicated training GPUs alike).
    pub failures: Option<Failures>,
}

/// Where retraining jobs get their GPUs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainingPool {
    /// From the serving fleet: serving capacity dips while a job trains.
    Shared,
    /// From a pool of this many GPUs kept for training.
    Dedicated {
        /// GPUs in the pool.
        gpus: u32,
    },
}

/// Retraining jobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Training {
    /// Where a job's GPUs come from.
    pub pool: TrainingPool,
    /// GPUs one job takes; under `vensim`, the GPUs a start adds to an empty stock.
    pub gpus_per_job: u32,
    /// Samples one GPU processes per hour.
    pub samples_per_gpu_h: f64,
    /// Samples one job trains on.
    pub samples_per_job: f64,
    /// Samples the deployed model was trained on (the model file's 5000).
    pub base_samples: f64,
    /// How training lowers the loss.
    pub loss: LossFunction,
    /// Energy per sample processed (kWh).
    pub energy_per_sample_kwh: f64,
    /// Power of one training GPU (kW), on top of the per-sample energy.
    pub gpu_power_kw: f64,
    /// With a shared pool: a tick that sees more requests waiting than this preempts
    /// the running job (its progress is lost) to give the GPUs back to serving.
    pub preempt_above_queue: Option<u32>,
}

/// Energy of serving and idling; training energy is in [`Training`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Energy {
    /// Energy per served request (kWh).
    pub per_request_kwh: f64,
    /// Drawn at every hour whatever the load (kWh per hour).
    pub idle_kwh_per_h: f64,
    /// Facility overhead: every figure above is multiplied by it.
    #[serde(default = "one")]
    pub pue: f64,
}

fn one() -> f64 {
    1.0
}

/// Prices for cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// USD per kWh.
    pub energy_usd_per_kwh: f64,
    /// USD per GPU-hour, for every GPU of the fleet and the dedicated pool.
    pub gpu_usd_per_hour: f64,
}

use crate::error::ConfigError;

impl RetrainingConfig {
    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &str, value: impl ToString, allowed: &'static str) -> Result<(), ConfigError> {
            Err(ConfigError::invalid(key, value, allowed))
        }
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        let finite_non_neg = |x: f64| x.is_finite() && x >= 0.0;
        self.arrivals.validate().and_then(|()| self.arrivals.require_open_loop()).map_err(|e| e.within("arrivals"))?;
        if self.fleet.gpus == 0 {
            bad("fleet.gpus", 0, "an integer >= 1")?;
        }
        // Service times whose tails the clock holds.
        if !(finite_non_neg(self.fleet.service_s) && self.fleet.service_s <= 10_000.0) {
            bad("fleet.service_s", self.fleet.service_s, "seconds from 0 to 10,000")?;
        }
        if !(finite_non_neg(self.fleet.service_cv) && self.fleet.service_cv <= 10.0) {
            bad("fleet.service_cv", self.fleet.service_cv, "a number from 0 to 10")?;
        }
        if let Some(f) = self.fleet.failures {
            f.validate().map_err(|e| e.within("fleet.failures"))?;
        }
        self.drift.validate("drift")?;
        if self.drift.per_token != 0.0 {
            bad("drift.per_token", self.drift.per_token, "0: this world's requests have no tokens (use per_request)")?;
        }
        self.quality.validate("quality")?;
        self.monitor.validate("monitor")?;
        let m = &self.monitor;
        let t = &self.training;
        if t.gpus_per_job == 0 {
            bad("training.gpus_per_job", 0, "an integer >= 1")?;
        }
        match t.pool {
            TrainingPool::Shared if m.policy != Policy::Vensim && t.gpus_per_job > self.fleet.gpus => {
                bad("training.gpus_per_job", t.gpus_per_job, "at most fleet.gpus with a shared pool")?;
            }
            TrainingPool::Dedicated { gpus } if gpus < t.gpus_per_job => {
                bad("training.dedicated_gpus", gpus, "an integer >= training.gpus_per_job")?;
            }
            _ => {}
        }
        if !finite_pos(t.samples_per_gpu_h) {
            bad("training.samples_per_gpu_h", t.samples_per_gpu_h, "a finite number > 0")?;
        }
        if !finite_pos(t.samples_per_job) {
            bad("training.samples_per_job", t.samples_per_job, "a finite number > 0")?;
        }
        if !finite_pos(t.base_samples) {
            bad("training.base_samples", t.base_samples, "a finite number > 0")?;
        }
        t.loss.validate("training.loss")?;
        if m.policy == Policy::Vensim && !matches!(t.loss, LossFunction::Vensim { .. }) {
            bad("training.loss.kind", "power_law", "vensim when monitor.policy = \"vensim\"")?;
        }
        if !finite_non_neg(t.energy_per_sample_kwh) {
            bad("training.energy_per_sample_kwh", t.energy_per_sample_kwh, "a finite number >= 0")?;
        }
        if !finite_non_neg(t.gpu_power_kw) {
            bad("training.gpu_power_kw", t.gpu_power_kw, "a finite number >= 0")?;
        }
        let e = &self.energy;
        if !finite_non_neg(e.per_request_kwh) {
            bad("energy.per_request_kwh", e.per_request_kwh, "a finite number >= 0")?;
        }
        if !finite_non_neg(e.idle_kwh_per_h) {
            bad("energy.idle_kwh_per_h", e.idle_kwh_per_h, "a finite number >= 0")?;
        }
        if !(e.pue.is_finite() && e.pue >= 1.0) {
            bad("energy.pue", e.pue, "a finite number >= 1")?;
        }
        self.grid.validate().map_err(|e| e.within("grid"))?;
        if !finite_non_neg(self.prices.energy_usd_per_kwh) {
            bad("prices.energy_usd_per_kwh", self.prices.energy_usd_per_kwh, "a finite number >= 0")?;
        }
        if !finite_non_neg(self.prices.gpu_usd_per_hour) {
            bad("prices.gpu_usd_per_hour", self.prices.gpu_usd_per_hour, "a finite number >= 0")?;
        }
        if !(finite_pos(self.duration_s) && self.duration_s < 584.0 * 365.0 * 86_400.0) {
            bad("duration_s", self.duration_s, "a finite number of seconds > 0, under 584 years")?;
        }
        Ok(())
    }

    pub(crate) fn drift_sampler(&self) -> DriftSampler {
        self.drift.sampler(self.drift.per_request)
    }

    /// GPUs that exist: the fleet plus any dedicated training pool.
    pub(crate) fn total_gpus(&self) -> u32 {
        match self.training.pool {
            TrainingPool::Shared => self.fleet.gpus,
            TrainingPool::Dedicated { gpus } => self.fleet.gpus + gpus,
        }
    }
}

impl RetrainingConfig {
    /// The Vensim model of BLOOM's deployment (`bloom_simple.mdl`) with 1e-6 drift per
    /// request: 558 requests/h served instantly, the [1.9, 2] band, the model file's
    /// loss function and energy constants, 2080 h.
    pub fn bloom() -> RetrainingConfig {
        RetrainingConfig {
            arrivals: ArrivalProcess::Deterministic { rate_per_s: 0.155, first_gap_fraction: 0.5 },
            fleet: Fleet { gpus: 16, service_s: 0.0, service_cv: 0.0, failures: None },
            drift: Drift {
                per_token: 0.0,
                per_request: 1e-6,
                distribution: DriftDistribution::Constant,
                initial_loss: 1.931,
                diverge_above: 10.0,
            },
            quality: Quality::Linear { best_loss: 1.8, worst_loss: 2.8 },
            monitor: Monitor { policy: Policy::Vensim, upper: 2.0, lower: 1.9, interval_h: 1.0, signal: Signal::Loss },
            training: Training {
                pool: TrainingPool::Dedicated { gpus: 2 },
                gpus_per_job: 2,
                samples_per_gpu_h: 0.43157,
                samples_per_job: 5000.0,
                base_samples: 5000.0,
                loss: LossFunction::Vensim { scale: 3398.0, offset: 1400.0 },
                energy_per_sample_kwh: 0.00242012,
                gpu_power_kw: 0.0,
                preempt_above_queue: None,
            },
            energy: Energy { per_request_kwh: 0.04784, idle_kwh_per_h: 0.28, pue: 1.0 },
            grid: CarbonIntensity::Constant { kg_per_kwh: 0.394 },
            prices: Prices { energy_usd_per_kwh: 0.12, gpu_usd_per_hour: 0.0 },
            duration_s: 2080.0 * 3600.0,
        }
    }

    /// The built-in `bloom-stochastic` scenario: [`RetrainingConfig::bloom`] with
    /// Poisson arrivals, gamma drift (cv 1), requests queueing for 16 GPUs (5 s, cv
    /// 0.5), hysteresis retraining in one-hour jobs on 8 GPUs taken from the fleet, and
    /// GPU failures (MTBF 2000 h, MTTR 8 h).
    pub fn bloom_stochastic() -> RetrainingConfig {
        let mut c = RetrainingConfig::bloom();
        c.arrivals = ArrivalProcess::Poisson { rate_per_s: 0.155 };
        c.fleet = Fleet {
            gpus: 16,
            service_s: 5.0,
            service_cv: 0.5,
            failures: Some(crate::failures::Failures { mtbf_h: 2000.0, mttr_h: 8.0 }),
        };
        c.drift.distribution = DriftDistribution::Gamma { cv: 1.0 };
        c.monitor.policy = Policy::Hysteresis;
        c.training.pool = TrainingPool::Shared;
        c.training.gpus_per_job = 8;
        c.training.samples_per_gpu_h = 625.0;
        c.training.preempt_above_queue = Some(200);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_is_bounded_and_falls_with_loss() {
        let q = Quality::Linear { best_loss: 1.8, worst_loss: 2.8 };
        assert_eq!((q.at(1.0), q.at(2.8), q.at(9.0)), (1.0, 0.0, 0.0));
        assert!((q.at(2.3) - 0.5).abs() < 1e-12);
        let p = Quality::InversePerplexity;
        assert!(p.at(2.0) < p.at(1.9));
    }
}
