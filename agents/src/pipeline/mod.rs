//! An inference pipeline whose adapter re-plans model variants, batch sizes and
//! replicas as load changes (IPA), optionally with energy in its objective.
//!
//! Agents: a load source (a daily cycle with random bursts), one queue and a pool of
//! replicas per stage (a replica takes a batch when `batch` inputs wait, or when the
//! oldest has waited the planned fill time (b - 1) / lambda), and the adapter, which
//! every `interval_s` predicts the load (last value, moving maximum or EWMA of the
//! observed rate) and solves [`adapter::solve`]; a new plan takes effect after
//! `reconfig_delay_s`, the old one serving meanwhile. A `fixed` policy keeps one plan.
//!
//! Each finished input records its end-to-end latency, the normalised accuracy of the
//! variants that served it (summed over stages), and, for a fraction of inputs, a
//! user score from 1 to 5 (quality plus noise): the inference confidence score (ICS).
//! Energy is every replica's idle power while it exists plus its busy power while it
//! serves; cost is core-hours plus energy.
//!
//! Streams: load [`LOAD_STREAM`], bursts [`BURST_STREAM`], feedback [`FEEDBACK_STREAM`].
//!
//! ```
//! use infersim_agents::pipeline::{run_pipeline, PipelineConfig};
//! let mut config = PipelineConfig::video();
//! config.duration_s = 1800.0;
//! let run = run_pipeline(&config, 1, 0).unwrap();
//! assert!(run.requests > 10_000);
//! assert!(run.slo_attainment.unwrap() > 0.9, "{:?}", run.slo_attainment);
//! ```

use std::collections::VecDeque;
use std::f64::consts::TAU;

use infersim_engine::stats::{LatencyHistogram, Tally};
use infersim_engine::{
    Context, EventId, Model, NullObserver, Observer, QueueKind, ScheduleError, SimDuration, SimTime, Simulation, Slab,
    StreamId,
};
use rand::RngExt;
use rand_distr::{Distribution, Exp1};
use serde::{Deserialize, Serialize};

use crate::failures::Lifecycle;
use crate::grid::CarbonIntensity;
use crate::power::PowerMeter;

pub mod adapter;
mod file;
mod profile;
pub use file::{PipelineFile, PipelineWorld};

pub use adapter::{Limits, Objective, Plan, StagePlan};
pub use profile::{
    ProfileError, Quadratic, Stage, Variant, fit_quadratic, normalised_accuracies, parse_profile_csv, read_profile,
};

/// The built-in profiles, by name: CSV text as in data/profiles/.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("video-detector", include_str!("../../../data/profiles/video-detector.csv")),
    ("video-classifier", include_str!("../../../data/profiles/video-classifier.csv")),
];

/// Stream of arrivals.
pub const LOAD_STREAM: StreamId = StreamId(0);
/// Stream of burst times.
pub const BURST_STREAM: StreamId = StreamId(1);
/// Stream of user feedback.
pub const FEEDBACK_STREAM: StreamId = StreamId(2);
/// Replica slot `r` of stage `s` fails and is repaired with stream
/// `FAILURE_STREAM_BASE + 100,000 s + r`, so other replicas' failures stay put.
pub const FAILURE_STREAM_BASE: u32 = 1_000_000;

/// The load: a daily cycle with random bursts, or any shared arrival process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Mean arrivals per second over a cycle (bursts excluded); 0 with `arrivals`.
    #[serde(default)]
    pub rate_per_s: f64,
    /// Inputs from a shared arrival process (poisson, deterministic, diurnal, mmpp,
    /// trace) instead of the cycle with bursts: `[load.arrivals]`.
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

fn default_period_h() -> f64 {
    24.0
}
fn default_peak_h() -> f64 {
    14.0
}
fn default_burst_s() -> f64 {
    60.0
}
fn default_burst_factor() -> f64 {
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

use crate::error::{ConfigError, DURATION_S as SECS, check, is_duration_s as secs};

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

    fn limits(&self) -> Limits {
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

/// The events of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipelineEvent {
    /// Time zero: the first plan's replicas start their lives, the first input and
    /// the first adapter tick are scheduled.
    Start,
    /// An input arrives at the first stage.
    Arrival,
    /// A replica of a stage finishes its batch.
    BatchDone {
        /// Stage index.
        stage: u16,
        /// Replica index within the stage.
        replica: u32,
    },
    /// The oldest waiting input of a stage has waited its planned fill time.
    BatchTimer(u16),
    /// The adapter plans.
    Tick,
    /// A plan decided earlier takes effect.
    Reconfigure,
    /// A replica fails: its batch is lost, and it is down until repaired.
    ReplicaFails {
        /// Stage index.
        stage: u16,
        /// Replica index within the stage.
        replica: u32,
        /// The replica's life this event belongs to (stale ones are ignored).
        epoch: u32,
    },
    /// A failed replica is back.
    ReplicaRepaired {
        /// Stage index.
        stage: u16,
        /// Replica index within the stage.
        replica: u32,
        /// The replica's life this event belongs to.
        epoch: u32,
    },
}

#[derive(Clone, Debug)]
struct Input {
    arrival: SimTime,
    accuracy: f64,
}

#[derive(Clone, Debug, Default)]
struct Replica {
    alive: bool,
    retiring: bool,
    /// The pending end of its batch, cancelled if it fails first.
    done: Option<EventId>,
    /// The batch it serves: inputs and their variant.
    batch: Vec<infersim_engine::Id<Input>>,
}

#[derive(Clone, Debug)]
struct StageState {
    plan: StagePlan,
    queue: VecDeque<(infersim_engine::Id<Input>, SimTime)>,
    replicas: Vec<Replica>,
    /// Each replica slot's unit in the pipeline's failure lifecycle: a failed replica
    /// serves nothing, draws no power and costs nothing until repaired; its epoch tells
    /// failure and repair events of an ended life.
    units: Vec<usize>,
    timer: Option<EventId>,
    /// Longest an input waits for a batch to fill (s).
    max_wait_s: f64,
}

/// The adapter's state per interval, for the timeseries trace.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSample {
    /// Time (h).
    pub t_h: f64,
    /// Arrivals per second over the last interval.
    pub observed_per_s: f64,
    /// The predicted rate the plan was made for.
    pub predicted_per_s: f64,
    /// The plan in force: per stage `variant/batch x replicas`, joined by ` + `.
    pub plan: String,
    /// Whether the adapter found a feasible plan this interval.
    pub feasible: bool,
    /// Inputs waiting, all stages.
    pub queued: u32,
    /// Cores in use.
    pub cores: f64,
    /// Mean user score of the interval's feedback (1..5).
    pub ics: Option<f64>,
    /// Energy so far (kWh).
    pub energy_kwh: f64,
}

/// One finished input, for the requests trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PipelineRequest {
    /// Arrival (s).
    pub arrival_s: f64,
    /// Finish (s).
    pub finish_s: f64,
    /// Normalised accuracy summed over stages.
    pub accuracy: f64,
    /// The user's score, if one was given.
    pub score: Option<u8>,
}

crate::metrics! {
    /// Per-replication results.
    #[derive(Clone, Debug, PartialEq)]
    pub struct PipelineRun {
        /// Inputs finished.
        requests: u64 = "requests",
        /// Energy of all replicas (kWh).
        energy_kwh: f64 = "kWh",
        /// energy_kwh per finished input.
        energy_per_request_kwh: Option<f64> = "kWh",
        /// Carbon of that energy, with the grid's intensity when it was drawn (kg CO2e);
        /// `None` without a `[grid]`.
        carbon_kg: Option<f64> = "kg CO2e",
        /// Replica failures.
        replica_failures: u64 = "failures",
        /// Inputs lost with the batch of a failing replica.
        lost: u64 = "requests",
        /// Mean normalised accuracy of finished inputs, summed over stages (0..stages).
        accuracy_mean: Option<f64> = "accuracy",
        /// Latency quantiles (s).
        latency_p50_s: Option<f64> = "s",
        /// 99th percentile.
        latency_p99_s: Option<f64> = "s",
        /// Share of finished inputs within the SLA.
        slo_attainment: Option<f64> = "share",
        /// Core-hours and energy (USD).
        cost_usd: Option<f64> = "USD",
        /// cost per 1000 finished inputs (USD).
        cost_per_1k_usd: Option<f64> = "USD",
        /// Quality (accuracy_mean / stages) per USD per 1000 inputs.
        efficiency: Option<f64> = "accuracy per USD per 1000 inputs",
        /// 1: high quality, low cost; 2: high quality, high cost; 3: low quality, high
        /// cost; 4: low quality, low cost (thresholds in `[efficiency]`).
        quadrant: Option<f64> = "quadrant 1-4",
        /// Mean user score (1..5).
        ics_mean: Option<f64> = "score 1-5",
        /// Plans put into effect after the first.
        reconfigurations: u64 = "plans",
        /// Intervals in which no plan met the SLA and the load.
        infeasible_intervals: u64 = "intervals",
        /// Time-average cores in use.
        cores_mean: f64 = "cores",
        /// Simulated time (h).
        simulated_h: f64 = "h",
        /// Events handled.
        events: u64 = "events",
    }
}

#[derive(Default)]
struct Stats {
    requests: u64,
    slo_met: u64,
    accuracy: Tally,
    latency: LatencyHistogram,
    scores: Tally,
    interval_scores: Tally,
    /// Energy and carbon: the replicas' idle power up to `replicas_since`, plus every
    /// batch's power above idle.
    meter: PowerMeter,
    reconfigurations: u64,
    infeasible: u64,
    /// Integral of replicas alive over time (replica-seconds), and when last updated.
    replica_s: f64,
    replicas_since: SimTime,
    arrivals_in_interval: u64,
    /// Inputs lost with the batches of failing replicas.
    lost: u64,
}

/// The pipeline world.
pub struct Pipeline<O = NullObserver, S = NullObserver> {
    /// The load's shared arrival process, when it has one.
    arrivals: Option<crate::arrivals::ArrivalGenerator>,
    config: PipelineConfig,
    limits: Limits,
    horizon: SimTime,
    interval: SimDuration,
    delay: SimDuration,
    /// Burst windows (s), drawn at the start.
    bursts: Vec<(f64, f64)>,
    stages: Vec<StageState>,
    inputs: Slab<Input>,
    pending: Option<Plan>,
    predicted_per_s: f64,
    history: VecDeque<f64>,
    feasible: bool,
    stats: Stats,
    /// Which replica slots are down (see [`StageState`]'s `units`).
    life: Lifecycle,
    observer: O,
    samples: Option<S>,
}

impl<O: Observer<PipelineRequest>, S: Observer<PipelineSample>> Pipeline<O, S> {
    /// A validated world with the initial plan in force.
    pub fn new(config: PipelineConfig, observer: O, samples: Option<S>) -> Result<Self, ConfigError> {
        config.validate()?;
        let too_long = |key: &str, v: f64| ConfigError::invalid(key, v, "at most 584 years");
        let horizon = SimTime::from_secs_f64(config.duration_s)
            .map_err(|_| too_long("simulation.duration_s", config.duration_s))?;
        let interval = SimDuration::from_secs_f64(config.adapter.interval_s)
            .map_err(|_| too_long("adapter.interval_s", config.adapter.interval_s))?;
        let delay = SimDuration::from_secs_f64(config.adapter.reconfig_delay_s)
            .map_err(|_| too_long("adapter.reconfig_delay_s", config.adapter.reconfig_delay_s))?;
        let limits = config.limits();
        let predicted_per_s = match &config.load.arrivals {
            Some(process) => process.rate_per_s(),
            None => config.load.rate_per_s,
        };
        let (plan, feasible) = match &config.adapter.policy {
            AdapterPolicy::Fixed(fixed) => (
                fixed
                    .iter()
                    .zip(&config.stages)
                    .map(|((name, batch, replicas), stage)| StagePlan {
                        variant: stage.variants.iter().position(|v| &v.name == name).expect("validated"),
                        batch: *batch,
                        replicas: *replicas,
                    })
                    .collect::<Vec<_>>(),
                true,
            ),
            AdapterPolicy::Ipa => {
                let plan = adapter::solve(&config.stages, predicted_per_s, &config.adapter.objective, &limits);
                (plan.stages, plan.feasible)
            }
        };
        let mut life = Lifecycle::new(0);
        let stages = plan
            .into_iter()
            .map(|p| StageState {
                plan: p,
                queue: VecDeque::new(),
                replicas: (0..p.replicas).map(|_| Replica { alive: true, ..Replica::default() }).collect(),
                units: (0..p.replicas).map(|_| life.push()).collect(),
                timer: None,
                max_wait_s: fill_wait_s(p.batch, predicted_per_s),
            })
            .collect();
        Ok(Pipeline {
            arrivals: config.load.arrivals.clone().map(crate::arrivals::ArrivalGenerator::new),
            limits,
            horizon,
            interval,
            delay,
            bursts: Vec::new(),
            stages,
            inputs: Slab::new(),
            pending: None,
            predicted_per_s,
            history: VecDeque::new(),
            feasible,
            stats: Stats::default(),
            life,
            observer,
            samples,
            config,
        })
    }

    /// Consumes the world, returning its observers.
    pub fn into_observers(self) -> (O, Option<S>) {
        (self.observer, self.samples)
    }

    fn rate_at(&self, t_s: f64) -> f64 {
        let l = &self.config.load;
        let cycle = 1.0 + l.amplitude * (TAU * (t_s / 3600.0 - l.peak_h) / l.period_h).cos();
        // Bursts are in time order and of equal length: only the last one to start by
        // t can cover it.
        let started = self.bursts.partition_point(|&(start, _)| start <= t_s);
        let in_burst = started > 0 && t_s < self.bursts[started - 1].1;
        let burst = if in_burst { l.burst_factor } else { 1.0 };
        l.rate_per_s * cycle * burst
    }

    /// The next arrival after `now`, by thinning against the highest possible rate.
    fn next_arrival(&mut self, now: SimTime, ctx: &mut Context<'_, PipelineEvent>) -> Result<SimTime, ScheduleError> {
        if let Some(process) = self.arrivals.as_mut() {
            let next = process.next_after(now, ctx.rng(LOAD_STREAM))?;
            return Ok(if next.as_secs_f64() >= self.config.duration_s { SimTime::MAX } else { next });
        }
        let l = &self.config.load;
        let max = l.rate_per_s * (1.0 + l.amplitude) * l.burst_factor;
        let mut t = now.as_secs_f64();
        loop {
            t += Distribution::<f64>::sample(&Exp1, ctx.rng(LOAD_STREAM)) / max;
            if t >= self.config.duration_s {
                return Ok(SimTime::MAX);
            }
            if ctx.rng(LOAD_STREAM).random::<f64>() * max <= self.rate_at(t) {
                return SimTime::from_secs_f64(t);
            }
        }
    }

    fn alive_replicas(&self) -> u32 {
        let up = |s: &StageState, r: usize| s.replicas[r].alive && !self.life.is_down(s.units[r]);
        self.stages.iter().map(|s| (0..s.replicas.len()).filter(|&r| up(s, r)).count() as u32).sum()
    }

    fn account_replicas(&mut self, now: SimTime) {
        let alive = f64::from(self.alive_replicas());
        self.stats.replica_s += alive * (now - self.stats.replicas_since).as_secs_f64();
        let grid = self.config.grid.as_ref().unwrap_or(&CarbonIntensity::NONE);
        self.stats.meter.hold(now, alive * self.config.resources.idle_w, grid);
        self.stats.replicas_since = now;
    }

    fn on_arrival(&mut self, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.stats.arrivals_in_interval += 1;
        let next = self.next_arrival(now, ctx)?;
        if next < self.horizon {
            ctx.schedule(next, PipelineEvent::Arrival)?;
        }
        let input = self.inputs.insert(Input { arrival: now, accuracy: 0.0 });
        self.stages[0].queue.push_back((input, now));
        self.dispatch(0, ctx)
    }

    /// Starts batches on idle replicas of stage `s` while a batch is due.
    fn dispatch(&mut self, s: usize, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        loop {
            let stage = &self.stages[s];
            let Some(&(_, oldest)) = stage.queue.front() else { break };
            let life = &self.life;
            let free = |r: usize| {
                let replica = &stage.replicas[r];
                replica.alive && !replica.retiring && !life.is_down(stage.units[r]) && replica.batch.is_empty()
            };
            let Some(r) = (0..stage.replicas.len()).find(|&r| free(r)) else {
                break;
            };
            let batch = stage.plan.batch as usize;
            // Compared in integer time, so the timer's own instant is always due.
            let due =
                oldest.checked_add(SimDuration::from_secs_f64(stage.max_wait_s.min(1e9))?).unwrap_or(SimTime::MAX);
            if stage.queue.len() < batch && now < due {
                // Not due yet: make sure a timer will look again.
                if stage.timer.is_none() {
                    self.stages[s].timer = Some(ctx.schedule(due, PipelineEvent::BatchTimer(s as u16))?);
                }
                break;
            }
            let k = batch.min(stage.queue.len());
            let variant = stage.plan.variant;
            let service_s = self.config.stages[s].latency_s(variant, k as f64);
            let accuracy = self.config.stages[s].normalised_accuracy[variant];
            let taken: Vec<_> = self.stages[s].queue.drain(..k).map(|(i, _)| i).collect();
            for &i in &taken {
                self.inputs[i].accuracy += accuracy;
            }
            let extra_w = self.config.resources.busy_w - self.config.resources.idle_w;
            let done = now.checked_add(SimDuration::from_secs_f64(service_s)?).ok_or(ScheduleError::Overflow)?;
            let grid = self.config.grid.as_ref().unwrap_or(&CarbonIntensity::NONE);
            self.stats.meter.add(now, done, extra_w, grid);
            self.stages[s].replicas[r].batch = taken;
            let handle = ctx.schedule(done, PipelineEvent::BatchDone { stage: s as u16, replica: r as u32 })?;
            self.stages[s].replicas[r].done = Some(handle);
        }
        Ok(())
    }

    fn on_batch_done(&mut self, s: usize, r: usize, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let done = std::mem::take(&mut self.stages[s].replicas[r].batch);
        self.stages[s].replicas[r].done = None;
        if self.stages[s].replicas[r].retiring {
            self.account_replicas(now);
            self.retire(s, r, now);
        }
        if s + 1 < self.stages.len() {
            self.stages[s + 1].queue.extend(done.into_iter().map(|i| (i, now)));
            self.dispatch(s + 1, ctx)?;
        } else {
            for i in done {
                self.finish(i, now, ctx);
            }
        }
        self.dispatch(s, ctx)
    }

    fn finish(&mut self, i: infersim_engine::Id<Input>, now: SimTime, ctx: &mut Context<'_, PipelineEvent>) {
        let input = self.inputs.remove(i);
        let latency = now - input.arrival;
        self.stats.requests += 1;
        self.stats.latency.record(latency);
        self.stats.accuracy.add(input.accuracy);
        if latency.as_secs_f64() <= self.config.sla_s {
            self.stats.slo_met += 1;
        }
        let fb = self.config.feedback;
        let quality = input.accuracy / self.stages.len() as f64;
        let score = if let Some(score) =
            crate::feedback::user_score(quality, fb.noise_sd, fb.fraction, ctx.rng(FEEDBACK_STREAM))
        {
            self.stats.scores.add(score);
            self.stats.interval_scores.add(score);
            Some(score as u8)
        } else {
            None
        };
        self.observer.observe(PipelineRequest {
            arrival_s: input.arrival.as_secs_f64(),
            finish_s: now.as_secs_f64(),
            accuracy: input.accuracy,
            score,
        });
    }

    fn on_timer(&mut self, s: usize, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        self.stages[s].timer = None;
        self.dispatch(s, ctx)
    }

    fn plan_text(&self) -> String {
        self.stages
            .iter()
            .zip(&self.config.stages)
            .map(|(s, p)| format!("{}/{}x{}", p.variants[s.plan.variant].name, s.plan.batch, s.plan.replicas))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let observed = self.stats.arrivals_in_interval as f64 / self.config.adapter.interval_s;
        self.stats.arrivals_in_interval = 0;
        self.history.push_back(observed);
        let predicted = match self.config.adapter.predictor {
            Predictor::Last => observed,
            Predictor::MovingMax { window } => {
                while self.history.len() > window as usize {
                    self.history.pop_front();
                }
                self.history.iter().copied().fold(0.0, f64::max)
            }
            Predictor::Ewma { weight } => weight * observed + (1.0 - weight) * self.predicted_per_s,
        };
        self.predicted_per_s = predicted;
        if self.config.adapter.policy == AdapterPolicy::Ipa {
            let plan =
                adapter::solve(&self.config.stages, predicted.max(1e-9), &self.config.adapter.objective, &self.limits);
            self.feasible = plan.feasible;
            if !plan.feasible {
                self.stats.infeasible += 1;
            }
            let current: Vec<StagePlan> = self.stages.iter().map(|s| s.plan).collect();
            let pending_same = self.pending.as_ref().is_some_and(|p| p.stages == plan.stages);
            if plan.stages != current && !pending_same {
                if self.pending.is_none() {
                    ctx.schedule(self.delay, PipelineEvent::Reconfigure)?;
                }
                self.pending = Some(plan);
            } else if plan.stages == current {
                // The load went back: nothing to change any more.
                self.pending = None;
            }
        }
        if self.samples.is_some() {
            let sample = PipelineSample {
                t_h: now.as_secs_f64() / 3600.0,
                observed_per_s: observed,
                predicted_per_s: predicted,
                plan: self.plan_text(),
                feasible: self.feasible,
                queued: self.stages.iter().map(|s| s.queue.len() as u32).sum(),
                cores: f64::from(self.alive_replicas()) * self.config.resources.cores_per_replica,
                ics: self.stats.interval_scores.mean(),
                energy_kwh: self.energy_kwh(now),
            };
            if let Some(samples) = &mut self.samples {
                samples.observe(sample);
            }
        }
        self.stats.interval_scores = Tally::new();
        if now + self.interval <= self.horizon {
            ctx.schedule(self.interval, PipelineEvent::Tick)?;
        }
        Ok(())
    }

    fn on_reconfigure(&mut self, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let Some(plan) = self.pending.take() else { return Ok(()) };
        let now = ctx.now();
        self.account_replicas(now);
        self.stats.reconfigurations += 1;
        let mut started = Vec::new();
        for (s, p) in plan.stages.iter().enumerate() {
            let stage = &mut self.stages[s];
            stage.plan = *p;
            stage.max_wait_s = fill_wait_s(p.batch, self.predicted_per_s);
            let mut alive: Vec<usize> =
                (0..stage.replicas.len()).filter(|&r| stage.replicas[r].alive && !stage.replicas[r].retiring).collect();
            let want = p.replicas as usize;
            while alive.len() < want {
                // Reuse a free slot (or a retiring replica) before growing.
                match stage.replicas.iter().position(|r| !r.alive || r.retiring) {
                    Some(r) if stage.replicas[r].retiring => stage.replicas[r].retiring = false,
                    Some(r) => {
                        stage.replicas[r] = Replica { alive: true, ..Replica::default() };
                        started.push((s, r));
                    }
                    None => {
                        stage.replicas.push(Replica { alive: true, ..Replica::default() });
                        stage.units.push(self.life.push());
                        started.push((s, stage.replicas.len() - 1));
                    }
                }
                alive = (0..stage.replicas.len())
                    .filter(|&r| stage.replicas[r].alive && !stage.replicas[r].retiring)
                    .collect();
            }
            // Too many: idle ones go at once, busy ones after their batch.
            alive.sort_by_key(|&r| !stage.replicas[r].batch.is_empty());
            for &r in alive.iter().take(alive.len().saturating_sub(want)) {
                if stage.replicas[r].batch.is_empty() {
                    stage.replicas[r] = Replica::default();
                    self.life.retire(stage.units[r], now);
                } else {
                    stage.replicas[r].retiring = true;
                }
            }
            if let Some(timer) = stage.timer.take() {
                ctx.cancel(timer);
            }
        }
        for (s, r) in started {
            self.start_life(s, r, ctx)?;
        }
        for s in 0..self.stages.len() {
            self.dispatch(s, ctx)?;
        }
        Ok(())
    }

    fn on_start(&mut self, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let slots: Vec<(usize, usize)> =
            (0..self.stages.len()).flat_map(|s| (0..self.stages[s].replicas.len()).map(move |r| (s, r))).collect();
        for (s, r) in slots {
            self.start_life(s, r, ctx)?;
        }
        let first = self.next_arrival(SimTime::ZERO, ctx)?;
        if first < self.horizon {
            ctx.schedule(first, PipelineEvent::Arrival)?;
        }
        if SimTime::ZERO + self.interval <= self.horizon {
            ctx.schedule(self.interval, PipelineEvent::Tick)?;
        }
        Ok(())
    }

    /// The random stream of replica slot `r` of stage `s`.
    fn failure_stream(s: usize, r: usize) -> StreamId {
        StreamId(FAILURE_STREAM_BASE + (s as u32) * 100_000 + r as u32)
    }

    /// A replica starts a new life (its slot's epoch moved on when the last one
    /// ended): its first failure is scheduled.
    fn start_life(&mut self, s: usize, r: usize, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        let epoch = self.life.epoch(self.stages[s].units[r]);
        self.schedule_failure(s, r, epoch, ctx)
    }

    /// Replica slot `r` of stage `s` is emptied (retired, or lost while retiring).
    fn retire(&mut self, s: usize, r: usize, now: SimTime) {
        self.stages[s].replicas[r] = Replica::default();
        self.life.retire(self.stages[s].units[r], now);
    }

    fn schedule_failure(
        &mut self,
        s: usize,
        r: usize,
        epoch: u32,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let Some(failures) = self.config.failures else { return Ok(()) };
        let up_s = failures.time_to_failure_s(ctx.rng(Self::failure_stream(s, r)));
        self.schedule_within(up_s, PipelineEvent::ReplicaFails { stage: s as u16, replica: r as u32, epoch }, ctx)
    }

    /// Schedules `event` `after_s` from now, if that falls before the horizon.
    fn schedule_within(
        &self,
        after_s: f64,
        event: PipelineEvent,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(after_s)?).unwrap_or(SimTime::MAX);
        if at < self.horizon {
            ctx.schedule(at, event)?;
        }
        Ok(())
    }

    /// A replica fails: its batch's inputs are lost; it is down until repaired (a
    /// retiring one is simply gone).
    fn on_replica_fails(
        &mut self,
        s: usize,
        r: usize,
        epoch: u32,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = self.stages[s].units[r];
        if self.life.epoch(unit) != epoch || !self.stages[s].replicas[r].alive || self.life.is_down(unit) {
            return Ok(());
        }
        let now = ctx.now();
        self.account_replicas(now);
        let replica = &mut self.stages[s].replicas[r];
        if let Some(done) = replica.done.take() {
            ctx.cancel(done);
        }
        let lost = std::mem::take(&mut replica.batch);
        self.stats.lost += lost.len() as u64;
        for i in lost {
            self.inputs.remove(i);
        }
        let epoch = self.life.fail(unit, now);
        if self.stages[s].replicas[r].retiring {
            self.retire(s, r, now);
            return Ok(());
        }
        let failures = self.config.failures.expect("replicas fail only with failures configured");
        let repair_s = failures.time_to_repair_s(ctx.rng(Self::failure_stream(s, r)));
        self.schedule_within(
            repair_s,
            PipelineEvent::ReplicaRepaired { stage: s as u16, replica: r as u32, epoch },
            ctx,
        )
    }

    fn on_replica_repaired(
        &mut self,
        s: usize,
        r: usize,
        epoch: u32,
        ctx: &mut Context<'_, PipelineEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = self.stages[s].units[r];
        if self.life.epoch(unit) != epoch || !self.life.is_down(unit) {
            return Ok(());
        }
        self.account_replicas(ctx.now());
        let epoch = self.life.repair(unit, ctx.now());
        self.schedule_failure(s, r, epoch, ctx)?;
        self.dispatch(s, ctx)
    }

    fn energy_kwh(&self, now: SimTime) -> f64 {
        let idle_w = f64::from(self.alive_replicas()) * self.config.resources.idle_w;
        self.stats.meter.energy_kwh_at(now, idle_w)
    }

    /// The per-replication metrics at `end`.
    pub fn results(&self, end: SimTime, events: u64) -> PipelineRun {
        let s = &self.stats;
        let [latency_p50_s, latency_p99_s] = s.latency.quantiles_s([0.50, 0.99]);
        let alive = f64::from(self.alive_replicas());
        let replica_s = s.replica_s + alive * (end - s.replicas_since).as_secs_f64();
        let energy_kwh = self.energy_kwh(end);
        let r = &self.config.resources;
        let carbon_kg = self.config.grid.as_ref().map(|grid| s.meter.carbon_kg_at(end, alive * r.idle_w, grid));
        let cost_usd = replica_s / 3600.0 * r.cores_per_replica * r.usd_per_core_h + energy_kwh * r.usd_per_kwh;
        let per = |x: f64| (s.requests > 0).then(|| x / s.requests as f64);
        let accuracy_mean = s.accuracy.mean();
        let cost_per_1k_usd = per(cost_usd).map(|c| c * 1000.0);
        let quality = accuracy_mean.map(|a| a / self.stages.len() as f64);
        let (efficiency, quadrant) = match (quality, cost_per_1k_usd) {
            (Some(q), Some(c)) => (efficiency(q, c), Some(f64::from(quadrant(q, c, &self.config.efficiency)))),
            _ => (None, None),
        };
        PipelineRun {
            requests: s.requests,
            energy_kwh,
            carbon_kg,
            replica_failures: self.life.failures(),
            lost: s.lost,
            energy_per_request_kwh: per(energy_kwh),
            accuracy_mean,
            latency_p50_s,
            latency_p99_s,
            slo_attainment: per(s.slo_met as f64),
            cost_usd: Some(cost_usd),
            cost_per_1k_usd,
            efficiency,
            quadrant,
            ics_mean: s.scores.mean(),
            reconfigurations: s.reconfigurations,
            infeasible_intervals: s.infeasible,
            cores_mean: replica_s * r.cores_per_replica / end.as_secs_f64().max(1e-9),
            simulated_h: end.as_secs_f64() / 3600.0,
            events,
        }
    }
}

/// Model efficiency: quality (0..1) per USD per 1000 inputs; none when nothing was paid.
pub fn efficiency(quality: f64, cost_per_1k_usd: f64) -> Option<f64> {
    (cost_per_1k_usd > 0.0).then(|| quality / cost_per_1k_usd)
}

/// The efficiency quadrant: 1 high quality and low cost, 2 high quality and high cost,
/// 3 low quality and high cost, 4 low quality and low cost. At a threshold counts as
/// high quality, and as low cost.
pub fn quadrant(quality: f64, cost_per_1k_usd: f64, thresholds: &Efficiency) -> u8 {
    match (quality >= thresholds.quality, cost_per_1k_usd <= thresholds.cost_per_1k_usd) {
        (true, true) => 1,
        (true, false) => 2,
        (false, false) => 3,
        (false, true) => 4,
    }
}

/// How long a replica waits for a batch of `batch` to fill at `lambda` per second.
fn fill_wait_s(batch: u32, lambda: f64) -> f64 {
    if batch <= 1 { 0.0 } else { f64::from(batch - 1) / lambda.max(1e-9) }
}

impl<O: Observer<PipelineRequest>, S: Observer<PipelineSample>> Model for Pipeline<O, S> {
    type Event = PipelineEvent;
    type Error = ScheduleError;

    fn handle(&mut self, event: PipelineEvent, ctx: &mut Context<'_, PipelineEvent>) -> Result<(), ScheduleError> {
        match event {
            PipelineEvent::Start => self.on_start(ctx),
            PipelineEvent::Arrival => self.on_arrival(ctx),
            PipelineEvent::BatchDone { stage, replica } => {
                self.on_batch_done(usize::from(stage), replica as usize, ctx)
            }
            PipelineEvent::BatchTimer(stage) => self.on_timer(usize::from(stage), ctx),
            PipelineEvent::Tick => self.on_tick(ctx),
            PipelineEvent::Reconfigure => self.on_reconfigure(ctx),
            PipelineEvent::ReplicaFails { stage, replica, epoch } => {
                self.on_replica_fails(usize::from(stage), replica as usize, epoch, ctx)
            }
            PipelineEvent::ReplicaRepaired { stage, replica, epoch } => {
                self.on_replica_repaired(usize::from(stage), replica as usize, epoch, ctx)
            }
        }
    }
}

/// Builds one replication: bursts drawn, first arrival and first tick scheduled.
pub fn build_pipeline<O: Observer<PipelineRequest>, S: Observer<PipelineSample>>(
    config: &PipelineConfig,
    observer: O,
    samples: Option<S>,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<Pipeline<O, S>>, ConfigError> {
    let world = Pipeline::new(config.clone(), observer, samples)?;
    let mut sim = Simulation::with_queue(world, QueueKind::default(), master_seed, replication);
    if config.load.arrivals.is_none() {
        let load = &config.load;
        if load.bursts_per_h > 0.0 && load.burst_factor > 1.0 {
            let mut t_s = 0.0;
            let mut bursts = Vec::new();
            loop {
                t_s += Distribution::<f64>::sample(&Exp1, sim.rng(BURST_STREAM)) * 3600.0 / load.bursts_per_h;
                if t_s >= config.duration_s {
                    break;
                }
                bursts.push((t_s, t_s + load.burst_s));
            }
            sim.model_mut().bursts = bursts;
        }
    }
    sim.schedule(SimTime::ZERO, PipelineEvent::Start)
        .map_err(|e| ConfigError::invalid("simulation.duration_s", e, "times within 584 years"))?;
    Ok(sim)
}

/// Runs a built replication to its horizon.
pub fn finish_pipeline<O: Observer<PipelineRequest>, S: Observer<PipelineSample>>(
    sim: &mut Simulation<Pipeline<O, S>>,
) -> Result<PipelineRun, ScheduleError> {
    let horizon = sim.model().horizon;
    sim.run_until(horizon)?;
    let events = sim.events_handled();
    Ok(sim.model().results(horizon, events))
}

/// Runs one replication untraced.
pub fn run_pipeline(
    config: &PipelineConfig,
    master_seed: u64,
    replication: u64,
) -> Result<PipelineRun, crate::error::RunError> {
    let mut sim = build_pipeline::<NullObserver, NullObserver>(config, NullObserver, None, master_seed, replication)?;
    Ok(finish_pipeline(&mut sim)?)
}

#[cfg(test)]
mod tests;
