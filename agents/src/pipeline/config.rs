//! The pipeline's configuration: load, adapter, resources, feedback and what
//! counts as efficient, and the checks of every value.

use super::*;
use crate::error::{ConfigError, DURATION_S as SECS, check, is_duration_s as secs};

/// The load: a daily cycle with random bursts, or any shared arrival process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Mean arrivals per second over a cycle (bursts excluded); 0 with `arrivals`.
    #[serde(default)]
    pub rate_per_s: f64,
    /// Inputs from a shared arrival process (poisson, deterministic, diurnal, mmpp,
    /// piecewise, trace) instead of the cycle with bursts: `[load.arrivals]`.
    #[serde(default)]
    pub arrivals: Option<crate::arrivals::ArrivalProcess>,
    /// Relative swing of the cycle, in [0, 1].
    #[serde(default)]
    pub amplitude: f64,
    /// Length of the cycle (h).
    #[serde(default = "default_period_h")]
    pub period_h: f64,
    /// When the cycle peaks (h).
    #[serde(default = "default_peak_h")]
    pub peak_h: f64,
    /// Bursts per hour (Poisson); 0: none.
    #[serde(default)]
    pub bursts_per_h: f64,
    /// Length of a burst (s).
    #[serde(default = "default_burst_s")]
    pub burst_s: f64,
    /// Rate multiplier during a burst (>= 1).
    #[serde(default = "default_burst_factor")]
    pub burst_factor: f64,
}

pub(super) fn default_period_h() -> f64 {
    24.0
}
pub(super) fn default_peak_h() -> f64 {
    14.0
}
pub(super) fn default_burst_s() -> f64 {
    60.0
}
pub(super) fn default_burst_factor() -> f64 {
    1.0
}

/// How the adapter predicts the next interval's load from observed rates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Predictor {
    /// The last interval's rate.
    Last,
    /// The largest rate of the last `window` intervals.
    MovingMax {
        /// Intervals.
        window: u32,
    },
    /// Exponentially weighted moving average.
    Ewma {
        /// Weight of the newest interval, in (0, 1].
        weight: f64,
    },
}

/// Which plan serves.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterPolicy {
    /// One plan throughout: per stage (variant name, batch, replicas).
    Fixed(Vec<(String, u32, u32)>),
    /// Re-plan every interval by [`adapter::solve`] (delta = 0: IPA; > 0: energy-aware).
    Ipa,
}

/// The adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// Fixed or IPA.
    pub policy: AdapterPolicy,
    /// Objective weights.
    pub objective: Objective,
    /// Time between plans (s).
    pub interval_s: f64,
    /// Load prediction.
    pub predictor: Predictor,
    /// Time a new plan takes to take effect (s).
    pub reconfig_delay_s: f64,
    /// Largest batch size (a power of two).
    pub batch_cap: u32,
    /// Most replicas per stage.
    pub max_replicas: u32,
    /// Share of the SLA a plan's latency model (service plus batch filling) may use;
    /// the rest is left for queueing, which the model ignores.
    pub sla_share: f64,
}

/// Cores, power and prices.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Cores of one replica (the profiles' measurement setting).
    pub cores_per_replica: f64,
    /// Power of a replica while it serves (W).
    pub busy_w: f64,
    /// Power of a replica while it exists and waits (W).
    pub idle_w: f64,
    /// Price of a core-hour (USD).
    pub usd_per_core_h: f64,
    /// Price of energy (USD/kWh).
    pub usd_per_kwh: f64,
}

/// User feedback: the inference confidence score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// Share of finished inputs whose user leaves a score.
    pub fraction: f64,
    /// Noise on the user's perception of quality (quality in [0, 1] before scaling).
    pub noise_sd: f64,
}

/// Thresholds of the efficiency quadrants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Efficiency {
    /// Quality (mean normalised accuracy per stage, 0..1) at or above which a run is
    /// "high quality".
    pub quality: f64,
    /// Cost per 1000 inputs (USD) at or below which a run is "low cost".
    pub cost_per_1k_usd: f64,
}

/// Everything one replication of the pipeline needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// The stages, in order, with fitted profiles.
    pub stages: Vec<Stage>,
    /// The load.
    pub load: Load,
    /// The adapter.
    pub adapter: Adapter,
    /// End-to-end latency objective (s).
    pub sla_s: f64,
    /// Cores, power, prices.
    pub resources: Resources,
    /// User feedback.
    pub feedback: Feedback,
    /// Quadrant thresholds.
    pub efficiency: Efficiency,
    /// Grid carbon intensity where the replicas run; no carbon metric without one.
    pub grid: Option<CarbonIntensity>,
    /// Replica failures and repairs; none by default.
    pub failures: Option<crate::failures::Failures>,
    /// Length of the run (s).
    pub duration_s: f64,
}

impl PipelineConfig {
    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pos = |x: f64| x.is_finite() && x > 0.0;
        let non_neg = |x: f64| x.is_finite() && x >= 0.0;
        check(!self.stages.is_empty(), "stages", "[]", "at least one [[stages]] table")?;
        for (i, s) in self.stages.iter().enumerate() {
            check(!s.variants.is_empty(), format!("stages[{i}].profile"), &s.name, "a profile with variants")?;
        }
        let l = &self.load;
        if let Some(process) = &l.arrivals {
            check(l.rate_per_s == 0.0, "load.rate_per_s", l.rate_per_s, "no value with [load.arrivals]")?;
            check(l.bursts_per_h == 0.0, "load.bursts_per_h", l.bursts_per_h, "no value with [load.arrivals]")?;
            process.validate().and_then(|()| process.require_open_loop()).map_err(|e| e.within("load.arrivals"))?;
        }
        check(
            l.arrivals.is_some() || pos(l.rate_per_s) && l.rate_per_s <= 1e5,
            "load.rate_per_s",
            l.rate_per_s,
            "a rate > 0, at most 100,000 per second",
        )?;
        check((0.0..=1.0).contains(&l.amplitude), "load.amplitude", l.amplitude, "a number from 0 to 1")?;
        check(secs(l.period_h * 3600.0), "load.period_h", l.period_h, "hours > 0, at most 100 years")?;
        check(
            l.peak_h.is_finite() && l.peak_h.abs() <= 1e6,
            "load.peak_h",
            l.peak_h,
            "hours from -1,000,000 to 1,000,000",
        )?;
        check(
            non_neg(l.bursts_per_h) && l.bursts_per_h <= 10_000.0,
            "load.bursts_per_h",
            l.bursts_per_h,
            "a rate from 0 to 10,000 per hour",
        )?;
        check(secs(l.burst_s), "load.burst_s", l.burst_s, SECS)?;
        check(
            l.burst_factor.is_finite() && (1.0..=100.0).contains(&l.burst_factor),
            "load.burst_factor",
            l.burst_factor,
            "a number from 1 to 100",
        )?;
        let a = &self.adapter;
        let o = &a.objective;
        for (key, v) in [
            ("adapter.alpha", o.alpha),
            ("adapter.beta", o.beta),
            ("adapter.gamma", o.gamma),
            ("adapter.delta", o.delta),
        ] {
            check(non_neg(v) && v <= 1e12, key, v, "a number from 0 to 1e12")?;
        }
        check(
            secs(a.interval_s) && a.interval_s >= 1e-3 && self.duration_s / a.interval_s <= 1e7,
            "adapter.interval_s",
            a.interval_s,
            "seconds from 0.001 to 100 years, at most 10,000,000 intervals per run",
        )?;
        check(
            a.reconfig_delay_s == 0.0 || secs(a.reconfig_delay_s),
            "adapter.reconfig_delay_s",
            a.reconfig_delay_s,
            "seconds from 0 to 100 years",
        )?;
        check(
            a.batch_cap.is_power_of_two() && a.batch_cap <= 65_536,
            "adapter.batch_cap",
            a.batch_cap,
            "a power of two from 1 to 65536",
        )?;
        check(
            (1..=10_000).contains(&a.max_replicas),
            "adapter.max_replicas",
            a.max_replicas,
            "an integer from 1 to 10,000",
        )?;
        check(a.sla_share > 0.0 && a.sla_share <= 1.0, "adapter.sla_share", a.sla_share, "a share in (0, 1]")?;
        match a.predictor {
            Predictor::Last => {}
            Predictor::MovingMax { window } => check(
                (1..=10_000).contains(&window),
                "adapter.predictor.window",
                window,
                "an integer from 1 to 10,000",
            )?,
            Predictor::Ewma { weight } => {
                check(weight > 0.0 && weight <= 1.0, "adapter.predictor.weight", weight, "a number in (0, 1]")?
            }
        }
        if let AdapterPolicy::Fixed(plan) = &a.policy {
            check(plan.len() == self.stages.len(), "adapter.fixed", plan.len(), "one entry per stage")?;
            for (i, ((variant, batch, replicas), stage)) in plan.iter().zip(&self.stages).enumerate() {
                check(
                    stage.variants.iter().any(|v| &v.name == variant),
                    format!("adapter.fixed[{i}].variant"),
                    variant,
                    "a variant of the stage's profile",
                )?;
                check(
                    (1..=65_536).contains(batch),
                    format!("adapter.fixed[{i}].batch"),
                    batch,
                    "an integer from 1 to 65536",
                )?;
                check(
                    (1..=10_000).contains(replicas),
                    format!("adapter.fixed[{i}].replicas"),
                    replicas,
                    "an integer from 1 to 10,000",
                )?;
            }
        }
        check(secs(self.sla_s), "sla_s", self.sla_s, SECS)?;
        let r = &self.resources;
        check(
            pos(r.cores_per_replica) && r.cores_per_replica <= 1e6,
            "resources.cores_per_replica",
            r.cores_per_replica,
            "a number > 0, at most 1,000,000",
        )?;
        for (key, v) in [
            ("resources.busy_w", r.busy_w),
            ("resources.idle_w", r.idle_w),
            ("resources.usd_per_core_h", r.usd_per_core_h),
            ("resources.usd_per_kwh", r.usd_per_kwh),
        ] {
            check(non_neg(v), key, v, "a finite number >= 0")?;
        }
        check(
            (0.0..=1.0).contains(&self.feedback.fraction),
            "feedback.fraction",
            self.feedback.fraction,
            "a share from 0 to 1",
        )?;
        check(
            non_neg(self.feedback.noise_sd) && self.feedback.noise_sd <= 100.0,
            "feedback.noise_sd",
            self.feedback.noise_sd,
            "a number from 0 to 100",
        )?;
        if let Some(failures) = &self.failures {
            failures.validate().map_err(|e| e.within("failures"))?;
        }
        if let Some(grid) = &self.grid {
            grid.validate().map_err(|e| e.within("grid"))?;
        }
        check(pos(self.duration_s), "duration_s", self.duration_s, "a finite number of seconds > 0")?;
        Ok(())
    }

    pub(super) fn limits(&self) -> Limits {
        Limits {
            sla_s: self.sla_s * self.adapter.sla_share,
            batch_cap: self.adapter.batch_cap,
            max_replicas: self.adapter.max_replicas,
            cores_per_replica: self.resources.cores_per_replica,
            busy_w: self.resources.busy_w,
        }
    }

    /// The video pipeline (YOLOv5 detector, then ResNet classifier) of the built-in
    /// `ipa-video` scenario, from the profiles in data/profiles/, under IPA with
    /// delta = 0; a test keeps it equal to the scenario.
    pub fn video() -> PipelineConfig {
        let stage = |name: &str, csv: &str| {
            let variants = parse_profile_csv(csv).expect("the shipped profiles parse (tested)");
            Stage::new(name, variants).expect("the shipped profiles fit")
        };
        PipelineConfig {
            stages: vec![stage("detector", BUILTIN_PROFILES[0].1), stage("classifier", BUILTIN_PROFILES[1].1)],
            load: Load {
                arrivals: None,
                rate_per_s: 20.0,
                amplitude: 0.6,
                period_h: 24.0,
                peak_h: 14.0,
                bursts_per_h: 2.0,
                burst_s: 120.0,
                burst_factor: 2.0,
            },
            adapter: Adapter {
                policy: AdapterPolicy::Ipa,
                objective: Objective { alpha: 10.0, beta: 0.05, gamma: 0.001, delta: 0.0 },
                interval_s: 10.0,
                predictor: Predictor::MovingMax { window: 6 },
                reconfig_delay_s: 5.0,
                batch_cap: 64,
                max_replicas: 32,
                sla_share: 0.5,
            },
            sla_s: 4.0,
            resources: Resources {
                cores_per_replica: 2.0,
                busy_w: 30.0,
                idle_w: 10.0,
                usd_per_core_h: 0.02,
                usd_per_kwh: 0.15,
            },
            feedback: Feedback { fraction: 0.05, noise_sd: 0.1 },
            efficiency: Efficiency { quality: 0.5, cost_per_1k_usd: 0.01 },
            grid: Some(CarbonIntensity::Constant { kg_per_kwh: 0.394 }),
            failures: None,
            duration_s: 6.0 * 3600.0,
        }
    }
}
