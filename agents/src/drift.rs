//! A served model's quality over time, shared by every world that has one (the
//! drift-and-retraining world, the token-level fleet): the loss each served request
//! adds ([`Drift`]), quality as a function of the loss ([`Quality`]), the monitoring
//! controller's band and policy ([`Monitor`]), and what a finished retraining job does
//! to the loss ([`LossFunction`]). Keys and meanings are documented here once; each
//! world reads its tables through [`DriftTable`] and [`MonitorTable`], so that
//! `drift.cv` and `serving.drift.cv` are checked by the same code.
//!
//! ```
//! use infersim_agents::drift::{LossFunction, Quality};
//! let q = Quality::Linear { best_loss: 1.8, worst_loss: 2.8 };
//! assert!((q.at(2.3) - 0.5).abs() < 1e-12);
//! // The BLOOM model file's loss function after a job of 5,000 samples.
//! let vensim = LossFunction::Vensim { scale: 3398.0, offset: 1400.0 };
//! let after = vensim.after_job(2.0, 5000.0, 10_000.0);
//! assert!((after - (2.0 + 3398.0 * (5000f64.ln() - 1400.0) / 25e6)).abs() < 1e-12);
//! ```

use rand_distr::{Distribution, Gamma, LogNormal};
use serde::{Deserialize, Serialize};

use crate::distributions::lognormal_from_mean_cv;
use crate::error::ConfigError;
use infersim_engine::{Context, EventId, ScheduleError, SimDuration, SimRng, SimTime};

/// The drift each served request adds to the model's loss: mean `per_request +
/// per_token x output tokens`, spread as `distribution` says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drift {
    /// Mean drift per served request (loss units).
    pub per_request: f64,
    /// Mean drift per output token of a served request, on top of `per_request`
    /// (loss units; worlds whose requests have no tokens refuse it).
    pub per_token: f64,
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
    /// Never retrain: the monitor only watches (the baseline a sweep compares with).
    None,
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
            Policy::None => "none",
            Policy::Vensim => "vensim",
            Policy::Hysteresis => "hysteresis",
            Policy::Periodic { .. } => "periodic",
            Policy::CarbonAware { .. } => "carbon_aware",
        }
    }
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

/// A ready-to-draw drift distribution.
#[derive(Clone, Copy, Debug)]
pub enum DriftSampler {
    /// Always this value.
    Constant(f64),
    /// Gamma-distributed.
    Gamma(Gamma<f64>),
    /// Log-normal.
    LogNormal(LogNormal<f64>),
}

impl DriftSampler {
    /// One draw (none from `rng` when the drift is constant).
    pub fn draw(&self, rng: &mut SimRng) -> f64 {
        match *self {
            DriftSampler::Constant(x) => x,
            DriftSampler::Gamma(d) => d.sample(rng),
            DriftSampler::LogNormal(d) => d.sample(rng),
        }
    }
}

impl Drift {
    /// A sampler of drift with mean `mean` and this drift's distribution.
    pub fn sampler(&self, mean: f64) -> DriftSampler {
        match self.distribution {
            _ if mean == 0.0 => DriftSampler::Constant(0.0),
            DriftDistribution::Constant => DriftSampler::Constant(mean),
            DriftDistribution::Gamma { cv } => {
                let shape = 1.0 / (cv * cv);
                DriftSampler::Gamma(Gamma::new(shape, mean / shape).expect("validated gamma drift"))
            }
            DriftDistribution::LogNormal { cv } => DriftSampler::LogNormal(lognormal_from_mean_cv(mean, cv)),
        }
    }

    /// Checks every value; keys are named under `at` (`drift`, `serving.drift`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let k = |name: &str| format!("{at}.{name}");
        let finite_non_neg = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_non_neg(self.per_request) {
            return Err(ConfigError::invalid(k("per_request"), self.per_request, "a finite number >= 0"));
        }
        if !finite_non_neg(self.per_token) {
            return Err(ConfigError::invalid(k("per_token"), self.per_token, "a finite number >= 0"));
        }
        match self.distribution {
            DriftDistribution::Constant => {}
            DriftDistribution::Gamma { cv } | DriftDistribution::LogNormal { cv } => {
                if !(cv.is_finite() && (1e-3..=100.0).contains(&cv)) {
                    return Err(ConfigError::invalid(
                        k("cv"),
                        cv,
                        "a number from 0.001 to 100 for gamma and lognormal drift",
                    ));
                }
            }
        }
        if !self.initial_loss.is_finite() {
            return Err(ConfigError::invalid(k("initial_loss"), self.initial_loss, "a finite number"));
        }
        if !(self.diverge_above.is_finite() && self.diverge_above > self.initial_loss) {
            return Err(ConfigError::invalid(
                k("diverge_above"),
                self.diverge_above,
                format!("a finite number above {at}.initial_loss"),
            ));
        }
        Ok(())
    }
}

impl Quality {
    /// Checks the bounds; keys are named under `at` (`quality`, `serving.quality`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if let Quality::Linear { best_loss, worst_loss } = *self
            && !(best_loss.is_finite() && worst_loss.is_finite() && worst_loss > best_loss)
        {
            return Err(ConfigError::invalid(
                format!("{at}.worst_loss"),
                worst_loss,
                format!("a finite number above {at}.best_loss"),
            ));
        }
        Ok(())
    }
}

impl LossFunction {
    /// The loss after a job trained on `samples_per_job` samples, `processed_samples`
    /// being every sample trained on so far, this job's included.
    pub fn after_job(&self, loss: f64, samples_per_job: f64, processed_samples: f64) -> f64 {
        match *self {
            LossFunction::Vensim { scale, offset } => {
                let d = samples_per_job;
                loss + scale * (d.ln() - offset) / (d * d)
            }
            LossFunction::PowerLaw { a, b, c } => loss.min(a * processed_samples.powf(-b) + c),
        }
    }

    /// Checks the coefficients; keys are named under `at` (`training.loss`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match *self {
            LossFunction::Vensim { scale, offset } if !(scale.is_finite() && offset.is_finite()) => {
                Err(ConfigError::invalid(format!("{at}.scale"), scale, "finite scale and offset"))
            }
            LossFunction::PowerLaw { a, b, c }
                if !(a.is_finite() && a >= 0.0 && b.is_finite() && b >= 0.0 && c.is_finite()) =>
            {
                Err(ConfigError::invalid(format!("{at}.a"), a, "a >= 0, b >= 0 and c finite"))
            }
            _ => Ok(()),
        }
    }
}

impl Monitor {
    /// Checks every value; keys are named under `at` (`monitor`, `serving.monitor`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let k = |name: &str| format!("{at}.{name}");
        let bad = |name: &str, value: f64, allowed: &'static str| Err(ConfigError::invalid(k(name), value, allowed));
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        let finite_non_neg = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_pos(self.interval_h) {
            return bad("interval_h", self.interval_h, "a finite number of hours > 0");
        }
        if !(self.lower.is_finite() && self.upper.is_finite() && self.lower <= self.upper) {
            return Err(ConfigError::invalid(k("lower"), self.lower, format!("a finite number at most {at}.upper")));
        }
        if let Signal::Ics { start_below, stop_above, fraction, noise_sd } = self.signal {
            if !(1.0..=5.0).contains(&start_below) {
                return bad("ics_start_below", start_below, "a score from 1 to 5");
            }
            if !(start_below..=5.0).contains(&stop_above) {
                return Err(ConfigError::invalid(
                    k("ics_stop_above"),
                    stop_above,
                    format!("a score from {at}.ics_start_below to 5"),
                ));
            }
            if !(fraction > 0.0 && fraction <= 1.0) {
                return bad("feedback_fraction", fraction, "a share in (0, 1]");
            }
            if !finite_non_neg(noise_sd) {
                return bad("feedback_noise_sd", noise_sd, "a finite number >= 0");
            }
        }
        match self.policy {
            Policy::Periodic { period_h } if !finite_pos(period_h) => {
                bad("period_h", period_h, "a finite number of hours > 0")
            }
            Policy::CarbonAware { threshold_kg_per_kwh, .. } if !finite_non_neg(threshold_kg_per_kwh) => {
                bad("threshold_kg_per_kwh", threshold_kg_per_kwh, "a finite number >= 0")
            }
            Policy::CarbonAware { deadline_h, .. } if !finite_non_neg(deadline_h) => {
                bad("deadline_h", deadline_h, "a finite number of hours >= 0")
            }
            _ => Ok(()),
        }
    }

    /// Checks that a run of `duration_s` can hold this monitor: ticks, periods and
    /// carbon-aware waits from 1 ms to 100 years (shorter ones round to no time and
    /// never advance the clock), and at most [`MAX_MONITOR_TICKS`] ticks. Keys are
    /// named under `at`.
    pub fn check_run(&self, at: &str, duration_s: f64) -> Result<(), ConfigError> {
        let k = |name: &str| format!("{at}.{name}");
        let holds = |h: f64| (1e-3..=crate::world::MAX_DURATION_S).contains(&(h * 3600.0));
        if !(holds(self.interval_h) && duration_s / (self.interval_h * 3600.0) <= MAX_MONITOR_TICKS) {
            return Err(ConfigError::invalid(
                k("interval_h"),
                self.interval_h,
                "hours from 1 ms to 100 years, and at least the run's length / 10,000,000 (more ticks would not end)",
            ));
        }
        match self.policy {
            Policy::Periodic { period_h } if !holds(period_h) => {
                Err(ConfigError::invalid(k("period_h"), period_h, "hours from 1 ms to 100 years"))
            }
            Policy::CarbonAware { deadline_h, .. } if deadline_h * 3600.0 > crate::world::MAX_DURATION_S => {
                Err(ConfigError::invalid(k("deadline_h"), deadline_h, "hours up to 100 years"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the watched signal says the model is bad: the loss above the band, or
    /// users' mean score (`ics`, none before any) below its threshold.
    pub fn retrain_due(&self, loss: f64, ics: Option<f64>) -> bool {
        match self.signal {
            Signal::Loss => loss > self.upper,
            Signal::Ics { start_below, .. } => ics.is_some_and(|ics| ics < start_below),
        }
    }

    /// Whether the watched signal says the model is good again (a campaign stops).
    pub fn good_again(&self, loss: f64, ics: Option<f64>) -> bool {
        match self.signal {
            Signal::Loss => loss < self.lower,
            Signal::Ics { stop_above, .. } => ics.is_some_and(|ics| ics > stop_above),
        }
    }
}

/// The most monitor ticks a run may have: beyond it a run is a hang, not a study.
pub const MAX_MONITOR_TICKS: f64 = 1e7;

/// What the monitor carries from tick to tick under the discrete-job policies: a
/// campaign under way (jobs back to back until one leaves the model good again), a
/// carbon-aware wait and its deadline, the next periodic start. One rule for every
/// world with a monitor; each world starts the jobs.
#[derive(Clone, Copy, Debug)]
pub struct Campaign {
    /// Jobs run back to back until one leaves the model good again.
    pub active: bool,
    /// A carbon-aware wait's deadline event.
    pub carbon_wait: Option<EventId>,
    /// When the next periodic job is due (the first one period in).
    pub next_periodic: SimTime,
}

impl Campaign {
    /// Nothing under way.
    pub fn new(monitor: &Monitor) -> Self {
        let next_periodic = match monitor.policy {
            Policy::Periodic { period_h } => SimTime::from_secs_f64(period_h * 3600.0).unwrap_or(SimTime::MAX),
            _ => SimTime::MAX,
        };
        Campaign { active: false, carbon_wait: None, next_periodic }
    }

    /// A tick under `policy` at `ctx.now()`, the signal saying retraining is `due`, the
    /// grid at `intensity_kg_per_kwh`: whether a job should start now if none runs.
    /// A carbon-aware wait, when it begins, schedules `deadline` (the world's event for
    /// [`Campaign::deadline_reached`]). Under `vensim` and `none` it never asks for one.
    pub fn tick<E>(
        &mut self,
        policy: Policy,
        due: bool,
        intensity_kg_per_kwh: f64,
        ctx: &mut Context<'_, E>,
        deadline: E,
    ) -> Result<bool, ScheduleError> {
        let now = ctx.now();
        Ok(match policy {
            Policy::None | Policy::Vensim => false,
            Policy::Hysteresis => {
                self.active |= due;
                self.active
            }
            Policy::Periodic { period_h } => {
                let starts = now >= self.next_periodic;
                if starts {
                    let period = SimDuration::from_secs_f64(period_h * 3600.0)?;
                    while self.next_periodic <= now {
                        self.next_periodic = self.next_periodic.checked_add(period).unwrap_or(SimTime::MAX);
                    }
                }
                starts
            }
            Policy::CarbonAware { threshold_kg_per_kwh, deadline_h } => {
                if !self.active && self.carbon_wait.is_none() && due {
                    let wait = SimDuration::from_secs_f64(deadline_h * 3600.0)?;
                    self.carbon_wait = Some(ctx.schedule(wait, deadline)?);
                }
                if let Some(wait) = self.carbon_wait
                    && intensity_kg_per_kwh <= threshold_kg_per_kwh
                {
                    ctx.cancel(wait);
                    self.carbon_wait = None;
                    self.active = true;
                }
                self.active
            }
        })
    }

    /// A carbon-aware wait has lasted its longest: the campaign starts.
    pub fn deadline_reached(&mut self) {
        self.carbon_wait = None;
        self.active = true;
    }

    /// A job has finished: whether another follows (a campaign goes on until the
    /// model is `good` again).
    pub fn after_job(&mut self, good: bool) -> bool {
        if self.active && good {
            self.active = false;
        }
        self.active
    }
}

/// A `[drift]` table as scenario files write it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftTable {
    #[serde(default)]
    per_request: f64,
    #[serde(default)]
    per_token: f64,
    #[serde(default = "default_drift_distribution")]
    distribution: String,
    cv: Option<f64>,
    initial_loss: f64,
    #[serde(default = "default_diverge_above")]
    diverge_above: f64,
}

fn default_drift_distribution() -> String {
    "constant".into()
}

/// A loss above this stops a replication as a runaway unless the scenario says
/// otherwise.
fn default_diverge_above() -> f64 {
    10.0
}

impl DriftTable {
    /// The drift it describes, checked; keys are named under `at`.
    pub fn resolve(&self, at: &str) -> Result<Drift, ConfigError> {
        let k = |name: &str| format!("{at}.{name}");
        let distribution = match (self.distribution.as_str(), self.cv) {
            ("constant", None) => DriftDistribution::Constant,
            ("gamma", Some(cv)) => DriftDistribution::Gamma { cv },
            ("lognormal", Some(cv)) => DriftDistribution::LogNormal { cv },
            ("gamma" | "lognormal", None) => {
                return Err(ConfigError::invalid(k("cv"), "(missing)", "a number > 0 for gamma and lognormal drift"));
            }
            ("constant", Some(cv)) => return Err(ConfigError::invalid(k("cv"), cv, "no value for constant drift")),
            (other, _) => {
                return Err(ConfigError::invalid(k("distribution"), other, "one of constant, gamma, lognormal"));
            }
        };
        let drift = Drift {
            per_request: self.per_request,
            per_token: self.per_token,
            distribution,
            initial_loss: self.initial_loss,
            diverge_above: self.diverge_above,
        };
        drift.validate(at)?;
        Ok(drift)
    }
}

/// A `[monitor]` table as scenario files write it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorTable {
    policy: String,
    upper: f64,
    lower: f64,
    #[serde(default = "default_interval_h")]
    interval_h: f64,
    period_h: Option<f64>,
    threshold_kg_per_kwh: Option<f64>,
    deadline_h: Option<f64>,
    #[serde(default = "default_signal")]
    signal: String,
    ics_start_below: Option<f64>,
    ics_stop_above: Option<f64>,
    feedback_fraction: Option<f64>,
    #[serde(default)]
    feedback_noise_sd: f64,
}

fn default_signal() -> String {
    "loss".into()
}

/// The model file's Euler step, and the monitor's tick unless given (h).
fn default_interval_h() -> f64 {
    1.0
}

impl MonitorTable {
    /// The policy's name as written.
    pub fn policy_name(&self) -> &str {
        &self.policy
    }

    /// The monitor it describes, checked; keys are named under `at`; `policies` are
    /// the policies the world runs (a world without the Vensim stocks leaves
    /// `vensim` out).
    pub fn resolve(&self, at: &str, policies: &[&str]) -> Result<Monitor, ConfigError> {
        let k = |name: &str| format!("{at}.{name}");
        let need = |name: &str, v: Option<f64>| {
            v.ok_or_else(|| {
                ConfigError::invalid(k(name), "(missing)", format!("a number when {at}.policy = \"{}\"", self.policy))
            })
        };
        let policy = match self.policy.as_str() {
            name if !policies.contains(&name) => {
                return Err(ConfigError::invalid(k("policy"), name, format!("one of {}", policies.join(", "))));
            }
            "none" => Policy::None,
            "vensim" => Policy::Vensim,
            "hysteresis" => Policy::Hysteresis,
            "periodic" => Policy::Periodic { period_h: need("period_h", self.period_h)? },
            "carbon_aware" => Policy::CarbonAware {
                threshold_kg_per_kwh: need("threshold_kg_per_kwh", self.threshold_kg_per_kwh)?,
                deadline_h: need("deadline_h", self.deadline_h)?,
            },
            other => unreachable!("policy {other} listed but not known"),
        };
        let ics_key = |name: &str, v: Option<f64>| {
            v.ok_or_else(|| ConfigError::invalid(k(name), "(missing)", format!("a number when {at}.signal = \"ics\"")))
        };
        let signal = match self.signal.as_str() {
            "loss" => {
                for (name, v) in [
                    ("ics_start_below", self.ics_start_below),
                    ("ics_stop_above", self.ics_stop_above),
                    ("feedback_fraction", self.feedback_fraction),
                ] {
                    if let Some(v) = v {
                        return Err(ConfigError::invalid(k(name), v, format!("no value unless {at}.signal = \"ics\"")));
                    }
                }
                Signal::Loss
            }
            "ics" => Signal::Ics {
                start_below: ics_key("ics_start_below", self.ics_start_below)?,
                stop_above: ics_key("ics_stop_above", self.ics_stop_above)?,
                fraction: ics_key("feedback_fraction", self.feedback_fraction)?,
                noise_sd: self.feedback_noise_sd,
            },
            other => return Err(ConfigError::invalid(k("signal"), other, "loss or ics")),
        };
        let monitor = Monitor { policy, upper: self.upper, lower: self.lower, interval_h: self.interval_h, signal };
        monitor.validate(at)?;
        Ok(monitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(policy: Policy, interval_h: f64) -> Monitor {
        Monitor { policy, upper: 2.0, lower: 1.9, interval_h, signal: Signal::Loss }
    }

    #[test]
    fn a_run_must_be_able_to_hold_the_monitors_clock() {
        let day_s = 86_400.0;
        assert!(monitor(Policy::Hysteresis, 1.0).check_run("monitor", day_s).is_ok());
        // A tick, or a period, that rounds to no time would never move the clock on.
        let e = monitor(Policy::Hysteresis, 1e-12).check_run("monitor", day_s).unwrap_err();
        assert_eq!(e.key(), "monitor.interval_h");
        let e = monitor(Policy::Periodic { period_h: 1e-12 }, 1.0).check_run("serving.monitor", day_s).unwrap_err();
        assert_eq!(e.key(), "serving.monitor.period_h");
        // More than ten million ticks: a hang, not a study.
        let e = monitor(Policy::Hysteresis, 1e-3).check_run("monitor", 1e4 * day_s).unwrap_err();
        assert_eq!(e.key(), "monitor.interval_h");
        let carbon = Policy::CarbonAware { threshold_kg_per_kwh: 0.3, deadline_h: 1e9 };
        assert_eq!(monitor(carbon, 1.0).check_run("monitor", day_s).unwrap_err().key(), "monitor.deadline_h");
    }

    #[test]
    fn a_campaign_runs_until_a_job_leaves_the_model_good() {
        let mut campaign = Campaign::new(&monitor(Policy::Hysteresis, 1.0));
        campaign.active = true;
        assert!(campaign.after_job(false), "still bad: another job");
        assert!(!campaign.after_job(true), "good again: the campaign ends");
        assert!(!campaign.after_job(false), "no campaign, no job");
    }
}
