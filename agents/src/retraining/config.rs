//! Configuration of the drift-and-retraining world, validated before a run.

use rand_distr::{Gamma, LogNormal};
use serde::{Deserialize, Serialize};

use crate::arrivals::ArrivalProcess;
use crate::distributions::lognormal_from_mean_cv;
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

/// The drift each served request adds to the model's loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drift {
    /// Mean drift per served request (loss units).
    pub per_request: f64,
    /// How the drift of one request is distributed around its mean.
    pub distribution: DriftDistribution,
    /// Loss at time zero.
    pub initial_loss: f64,
    /// A loss above this (or a non-finite value anywhere in the model state) is a
    /// runaway: the replication stops and is flagged `diverged`.
    pub diverge_above: f64,
}

/// The distribution of one request's drift, with mean [`Drift::per_request`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DriftDistribution {
    /// Exactly the mean.
    Constant,
    /// Gamma with this coefficient of variation (shape 1/cv^2).
    Gamma {
        /// Standard deviation over mean, > 0.
        cv: f64,
    },
    /// Log-normal with this coefficient of variation.
    LogNormal {
        /// Standard deviation over mean, > 0.
        cv: f64,
    },
}

/// Quality of the model's answers as a function of its loss, in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Quality {
    /// 1 at `best_loss` or below, 0 at `worst_loss` or above, linear between.
    Linear {
        /// Loss of a perfect model.
        best_loss: f64,
        /// Loss of a useless one.
        worst_loss: f64,
    },
    /// `exp(-loss)`: the inverse of perplexity, for a cross-entropy loss.
    InversePerplexity,
}

impl Quality {
    /// The quality at `loss`.
    pub fn at(&self, loss: f64) -> f64 {
        match *self {
            Quality::Linear { best_loss, worst_loss } => {
                ((worst_loss - loss) / (worst_loss - best_loss)).clamp(0.0, 1.0)
            }
            Quality::InversePerplexity => (-loss).exp(),
        }
    }
}

/// The monitoring controller: when it looks and what it decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Monitor {
    /// The decision rule.
    pub policy: Policy,
    /// Upper bound of the loss band.
    pub upper: f64,
    /// Lower bound of the loss band.
    pub lower: f64,
    /// Time between ticks (h); the model file's Euler step.
    pub interval_h: f64,
    /// What the controller watches: the loss against [lower, upper], or users' scores.
    pub signal: Signal,
}

/// What tells the controller that the model is bad, and good again.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Signal {
    /// The loss: bad above `monitor.upper`, good again below `monitor.lower`.
    #[default]
    Loss,
    /// The inference confidence score: a share of served requests get a user score
    /// from 1 to 5 (round(1 + 4 x (quality + noise)), quality from the loss at the
    /// time); each tick averages the scores of its interval. Bad below `start_below`,
    /// good again above `stop_above`. The controller sees quality only through users,
    /// late and noisy.
    Ics {
        /// ICS under which retraining starts.
        start_below: f64,
        /// ICS over which a campaign stops.
        stop_above: f64,
        /// Share of served requests that get a score.
        fraction: f64,
        /// Noise on a user's perception of quality (before scaling to 1..5).
        noise_sd: f64,
    },
}

/// When retraining starts and stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// The Vensim model's rules exactly: `loss monitoring` is +0.5 above the band,
    /// -0.5 below it, 0 inside; training GPUs are a continuous stock adjusted by it;
    /// the loss function applies while monitoring is positive.
    Vensim,
    /// Start a campaign of back-to-back jobs when a tick sees the loss above `upper`;
    /// keep starting jobs until one finishes with the loss below `lower`.
    Hysteresis,
    /// Start a job every `period_h`, whatever the loss.
    Periodic {
        /// Time between job starts (h).
        period_h: f64,
    },
    /// Like hysteresis, but once triggered wait for grid intensity at or below the
    /// threshold, never longer than `deadline_h` after the trigger.
    CarbonAware {
        /// Start as soon as a tick sees intensity at or below this (kg CO2e/kWh).
        threshold_kg_per_kwh: f64,
        /// Longest wait after the trigger (h).
        deadline_h: f64,
    },
}

impl Policy {
    /// The policy's name as scenarios spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Vensim => "vensim",
            Policy::Hysteresis => "hysteresis",
            Policy::Periodic { .. } => "periodic",
            Policy::CarbonAware { .. } => "carbon_aware",
        }
    }
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

/// How retraining lowers the loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossFunction {
    /// The model file's: a change of `scale x (ln D - offset) / D^2` for D samples
    /// (per hour of retraining under the `vensim` policy, per job otherwise).
    Vensim {
        /// 3398 in the model file.
        scale: f64,
        /// 1400 in the model file.
        offset: f64,
    },
    /// A finished job sets the loss to `a x D^-b + c`, D being every sample trained
    /// on so far (`base_samples` plus each finished job's); drift since is undone.
    PowerLaw {
        /// Scale.
        a: f64,
        /// Exponent.
        b: f64,
        /// Irreducible loss.
        c: f64,
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

/// A ready-to-draw drift distribution.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DriftSampler {
    Constant(f64),
    Gamma(Gamma<f64>),
    LogNormal(LogNormal<f64>),
}

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
        let d = &self.drift;
        if !finite_non_neg(d.per_request) {
            bad("drift.per_request", d.per_request, "a finite number >= 0")?;
        }
        match d.distribution {
            DriftDistribution::Constant => {}
            DriftDistribution::Gamma { cv } | DriftDistribution::LogNormal { cv } => {
                if !(finite_pos(cv) && (1e-3..=100.0).contains(&cv)) {
                    bad("drift.cv", cv, "a number from 0.001 to 100 for gamma and lognormal drift")?;
                }
            }
        }
        if !d.initial_loss.is_finite() {
            bad("drift.initial_loss", d.initial_loss, "a finite number")?;
        }
        if !(d.diverge_above.is_finite() && d.diverge_above > d.initial_loss) {
            bad("drift.diverge_above", d.diverge_above, "a finite number above drift.initial_loss")?;
        }
        if let Quality::Linear { best_loss, worst_loss } = self.quality
            && !(best_loss.is_finite() && worst_loss.is_finite() && worst_loss > best_loss)
        {
            bad("quality.worst_loss", worst_loss, "a finite number above quality.best_loss")?;
        }
        let m = &self.monitor;
        if !finite_pos(m.interval_h) {
            bad("monitor.interval_h", m.interval_h, "a finite number of hours > 0")?;
        }
        if !(m.lower.is_finite() && m.upper.is_finite() && m.lower <= m.upper) {
            bad("monitor.lower", m.lower, "a finite number at most monitor.upper")?;
        }
        if let Signal::Ics { start_below, stop_above, fraction, noise_sd } = m.signal {
            if !(1.0..=5.0).contains(&start_below) {
                bad("monitor.ics_start_below", start_below, "a score from 1 to 5")?;
            }
            if !(start_below..=5.0).contains(&stop_above) {
                bad("monitor.ics_stop_above", stop_above, "a score from monitor.ics_start_below to 5")?;
            }
            if !(fraction > 0.0 && fraction <= 1.0) {
                bad("monitor.feedback_fraction", fraction, "a share in (0, 1]")?;
            }
            if !finite_non_neg(noise_sd) {
                bad("monitor.feedback_noise_sd", noise_sd, "a finite number >= 0")?;
            }
        }
        match m.policy {
            Policy::Periodic { period_h } if !finite_pos(period_h) => {
                bad("monitor.period_h", period_h, "a finite number of hours > 0")?;
            }
            Policy::CarbonAware { threshold_kg_per_kwh, deadline_h } => {
                if !finite_non_neg(threshold_kg_per_kwh) {
                    bad("monitor.threshold_kg_per_kwh", threshold_kg_per_kwh, "a finite number >= 0")?;
                }
                if !finite_non_neg(deadline_h) {
                    bad("monitor.deadline_h", deadline_h, "a finite number of hours >= 0")?;
                }
            }
            _ => {}
        }
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
        match t.loss {
            LossFunction::Vensim { scale, offset } => {
                if !(scale.is_finite() && offset.is_finite()) {
                    bad("training.loss.scale", scale, "finite scale and offset")?;
                }
            }
            LossFunction::PowerLaw { a, b, c } => {
                if !(finite_non_neg(a) && finite_non_neg(b) && c.is_finite()) {
                    bad("training.loss.a", a, "a >= 0, b >= 0 and c finite")?;
                }
            }
        }
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
        let mean = self.drift.per_request;
        match self.drift.distribution {
            _ if mean == 0.0 => DriftSampler::Constant(0.0),
            DriftDistribution::Constant => DriftSampler::Constant(mean),
            DriftDistribution::Gamma { cv } => {
                let shape = 1.0 / (cv * cv);
                DriftSampler::Gamma(Gamma::new(shape, mean / shape).expect("validated gamma drift"))
            }
            DriftDistribution::LogNormal { cv } => DriftSampler::LogNormal(lognormal_from_mean_cv(mean, cv)),
        }
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
