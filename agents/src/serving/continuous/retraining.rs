//! A served model whose loss drifts with what the fleet serves, a monitor that
//! retrains it, and retraining jobs as agents of the fleet's own event loop.
//!
//! The drift law, the quality function, the monitor's band and policies and the loss
//! after a job are the drift-and-retraining world's ([`crate::drift`], documented
//! there once). What the fleet adds is where a job's GPUs come from:
//! - `training.pool = "dedicated"`: the GPUs of a pool of `role = "training"`, which
//!   serve nothing and draw their idle power between jobs;
//! - `training.pool = "shared"`: `training.shared_replicas` (1 by default) replicas
//!   taken out of a serving pool (the least loaded): they stop taking requests, drain, train, and come back
//!   through a cold start with the new weights.
//!
//! A job lasts `samples_per_job / (samples_per_gpu_h x GPUs)` hours, as in the
//! retraining world, or, without `samples_per_gpu_h`, the work of training on its
//! samples: `samples x tokens_per_sample x 6 x parameters / (GPUs x peak x MFU)`.
//! Its GPUs draw `gpu_power_share x TDP` while they train.
//!
//! Every served request of the drifting model adds drift with mean `per_request +
//! per_token x output tokens`; its quality is the model's at the loss it was served
//! with. A loss above `drift.diverge_above` stops the run at the tick that sees it
//! (`diverged_at_h`).

use infersim_engine::stats::{LatencyHistogram, Tally};
use infersim_engine::{Context, EventId, Observer, ScheduleError, SimDuration, SimTime, StreamId};
use serde::Deserialize;

use super::autoscale::Mode;
use super::{LlmEvent, LlmPool, LlmServing, PoolRole};
use crate::drift::{Campaign, Drift, DriftSampler, DriftTable, LossFunction, Monitor, MonitorTable, Quality, Signal};
use crate::error::{ConfigError, hours};
use crate::power::PowerMeter;
use crate::requests::RequestRecord;
use crate::serving::ServingSample;
use crate::world::MAX_DURATION_S;

/// Stream of the drift each served request adds.
pub const DRIFT_STREAM: StreamId = StreamId(4);
/// Stream of users' scores (the `ics` signal).
pub const FEEDBACK_STREAM: StreamId = StreamId(5);

/// Share of its TDP a GPU draws while training, unless `training.gpu_power_share`
/// says otherwise: an 8-GPU H100 HGX node training Llama-2-13B peaked at 8.4 kW of its
/// rated 10.2 kW (Latif et al., IEEE Access 13, 2025), and compute-heavy training ran
/// at 76% of the node's rating (Newkirk et al., arXiv 2506.14551, 2025); the node's
/// share is taken for its GPUs.
pub const TRAINING_POWER_SHARE: f64 = 0.76;

/// Model FLOPs utilisation of training unless `training.mfu` says otherwise: Llama 3
/// 405B trained at 38-43% BF16 MFU on H100s (Dubey et al., "The Llama 3 Herd of
/// Models", 2024, table 4).
pub const TRAINING_MFU: f64 = 0.40;

/// The policies a fleet's monitor runs: the retraining world's, without the Vensim
/// model's continuous stocks, and `none`.
const FLEET_POLICIES: [&str; 4] = ["none", "hysteresis", "periodic", "carbon_aware"];

/// A served model that drifts and is retrained.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetRetraining {
    /// The model (an index in the served names).
    pub model: usize,
    /// How its loss drifts.
    pub drift: Drift,
    /// Its answers' quality by loss.
    pub quality: Quality,
    /// The monitor (`Policy::None` watches and never retrains).
    pub monitor: Monitor,
    /// Its retraining jobs.
    pub training: FleetTraining,
}

/// Where a retraining job's GPUs come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainingPlace {
    /// Every GPU of a pool of `role = "training"`.
    Dedicated {
        /// The pool.
        pool: usize,
    },
    /// Replicas taken out of a serving pool.
    Shared {
        /// The pool.
        pool: usize,
        /// Replicas a job takes.
        replicas: u32,
    },
}

/// A fleet's retraining jobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FleetTraining {
    /// Where their GPUs come from.
    pub place: TrainingPlace,
    /// GPUs a job trains on.
    pub gpus: u32,
    /// How long a job trains once it has its GPUs (s).
    pub job_s: f64,
    /// Samples one job trains on.
    pub samples_per_job: f64,
    /// Samples the deployed model was trained on.
    pub base_samples: f64,
    /// How a finished job changes the loss.
    pub loss: LossFunction,
    /// Power of one GPU while it trains (W).
    pub gpu_power_w: f64,
    /// A shared job's replicas: time from the job's end to serving again (s).
    pub cold_start_s: f64,
}

/// `[serving.training]` as scenario files write it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainingTable {
    pool: String,
    model: Option<String>,
    from_pool: Option<String>,
    shared_replicas: Option<i64>,
    samples_per_job: f64,
    base_samples: f64,
    loss: LossFunction,
    samples_per_gpu_h: Option<f64>,
    tokens_per_sample: Option<f64>,
    mfu: Option<f64>,
    gpu_power_share: Option<f64>,
}

/// The `[serving]` tables of a drifting model, as written.
pub(crate) struct RetrainingTables {
    pub drift: Option<DriftTable>,
    pub quality: Option<Quality>,
    pub monitor: Option<MonitorTable>,
    pub training: Option<TrainingTable>,
}

impl RetrainingTables {
    /// The drifting model the tables describe, or none if none is given; all four
    /// come together.
    pub(crate) fn resolve(
        self,
        pools: &[LlmPool],
        names: &[&str],
        duration_s: f64,
    ) -> Result<Option<FleetRetraining>, ConfigError> {
        let given = [
            ("drift", self.drift.is_some()),
            ("quality", self.quality.is_some()),
            ("monitor", self.monitor.is_some()),
            ("training", self.training.is_some()),
        ];
        if given.iter().all(|(_, g)| !g) {
            if let Some(p) = pools.iter().find(|p| p.role == PoolRole::Training) {
                let allowed = "mixed, prefill or decode without [serving.training] (a training pool trains its jobs)";
                return Err(ConfigError::invalid(format!("serving.{}role", p.key), "training", allowed));
            }
            return Ok(None);
        }
        if let Some((key, _)) = given.iter().find(|(_, g)| !g) {
            return Err(ConfigError::invalid(
                format!("serving.{key}"),
                "(missing)",
                "a table: [serving.drift], [serving.quality], [serving.monitor] and [serving.training] come together",
            ));
        }
        let (Some(drift), Some(quality), Some(monitor), Some(t)) =
            (self.drift, self.quality, self.monitor, self.training)
        else {
            unreachable!("checked above")
        };
        let drift = drift.resolve("serving.drift")?;
        quality.validate("serving.quality")?;
        let monitor = monitor.resolve("serving.monitor", &FLEET_POLICIES)?;
        monitor.check_run("serving.monitor", duration_s)?;
        let model = match &t.model {
            Some(m) => names.iter().position(|n| n == m).ok_or_else(|| {
                ConfigError::invalid(
                    "serving.training.model",
                    m,
                    format!("a model the pools serve ({})", names.join(", ")),
                )
            })?,
            None if names.len() == 1 => 0,
            None => {
                return Err(ConfigError::invalid(
                    "serving.training.model",
                    "(missing)",
                    format!("the model that drifts: the pools serve several ({})", names.join(", ")),
                ));
            }
        };
        let training = t.resolve(pools, names[model])?;
        Ok(Some(FleetRetraining { model, drift, quality, monitor, training }))
    }
}

impl TrainingTable {
    fn resolve(&self, pools: &[LlmPool], model: &str) -> Result<FleetTraining, ConfigError> {
        let k = |name: &str| format!("serving.training.{name}");
        let (place, pool) = self.place(pools, model)?;
        let p = &pools[pool];
        if p.failures.is_some() {
            let allowed = "none on a pool that trains (failures of training GPUs are not built yet)";
            return Err(ConfigError::invalid(format!("serving.{}failures", p.key), "(given)", allowed));
        }
        let gpus = match place {
            TrainingPlace::Dedicated { .. } => p.gpus(),
            TrainingPlace::Shared { replicas, .. } => replicas * p.tp,
        };
        let samples_per_job = positive(&k("samples_per_job"), self.samples_per_job)?;
        positive(&k("base_samples"), self.base_samples)?;
        self.loss.validate("serving.training.loss")?;
        let job_s = self.job_s(&pools[pool], gpus, samples_per_job)?;
        if !(1e-3..=MAX_DURATION_S).contains(&job_s) {
            let allowed = "a job from 1 ms to 100 years long (with the rate or work given)";
            return Err(ConfigError::invalid(k("samples_per_job"), samples_per_job, allowed));
        }
        let share = self.gpu_power_share.unwrap_or(TRAINING_POWER_SHARE);
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::invalid(k("gpu_power_share"), share, "a share of TDP in (0, 1]"));
        }
        let cold_start_s = p.cold_start_s();
        Ok(FleetTraining {
            place,
            gpus,
            job_s,
            samples_per_job,
            base_samples: self.base_samples,
            loss: self.loss,
            gpu_power_w: share * p.gpu.tdp_w,
            cold_start_s,
        })
    }

    /// Where the jobs train, and the pool that is: a training pool (dedicated) or a
    /// mixed pool serving the drifting model (shared).
    fn place(&self, pools: &[LlmPool], model: &str) -> Result<(TrainingPlace, usize), ConfigError> {
        let k = |name: &str| format!("serving.training.{name}");
        let find = |name: &str| {
            pools.iter().position(|p| p.name == name).ok_or_else(|| {
                let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                ConfigError::invalid(k("from_pool"), name, format!("the name of a pool ({})", names.join(", ")))
            })
        };
        Ok(match self.pool.as_str() {
            "dedicated" => {
                let pool = match &self.from_pool {
                    Some(name) => find(name)?,
                    None => pools.iter().position(|p| p.role == PoolRole::Training).ok_or_else(|| {
                        ConfigError::invalid(k("pool"), "dedicated", "shared, or a pool of role = \"training\"")
                    })?,
                };
                if pools[pool].role != PoolRole::Training {
                    return Err(ConfigError::invalid(
                        k("from_pool"),
                        &pools[pool].name,
                        "a pool of role = \"training\"",
                    ));
                }
                (TrainingPlace::Dedicated { pool }, pool)
            }
            "shared" => {
                let pool = match &self.from_pool {
                    Some(name) => find(name)?,
                    None => {
                        pools.iter().position(|p| p.serves == model && p.role == PoolRole::Mixed).ok_or_else(|| {
                            ConfigError::invalid(
                                k("pool"),
                                "shared",
                                format!("a mixed pool serving {model} to take from"),
                            )
                        })?
                    }
                };
                let p = &pools[pool];
                if p.serves != model || p.role != PoolRole::Mixed {
                    let allowed = format!("a mixed pool serving {model}");
                    return Err(ConfigError::invalid(k("from_pool"), &p.name, allowed));
                }
                let replicas =
                    crate::serving::int_in(&k("shared_replicas"), self.shared_replicas.unwrap_or(1), 1, 1_000_000)?;
                if replicas >= p.replicas {
                    let allowed = format!("fewer than the pool's {} replicas (one at least keeps serving)", p.replicas);
                    return Err(ConfigError::invalid(k("shared_replicas"), replicas, allowed));
                }
                (TrainingPlace::Shared { pool, replicas }, pool)
            }
            other => return Err(ConfigError::invalid(k("pool"), other, "dedicated or shared")),
        })
    }

    /// How long a job of `samples_per_job` trains on `gpus` GPUs of pool `p` (s): from
    /// the samples a GPU trains on per hour, or from the work of its tokens.
    fn job_s(&self, p: &LlmPool, gpus: u32, samples_per_job: f64) -> Result<f64, ConfigError> {
        let k = |name: &str| format!("serving.training.{name}");
        Ok(match (self.samples_per_gpu_h, self.tokens_per_sample) {
            (Some(rate), None) => {
                samples_per_job / (positive(&k("samples_per_gpu_h"), rate)? * f64::from(gpus)) * 3600.0
            }
            (None, Some(tokens)) => {
                let mfu = self.mfu.unwrap_or(TRAINING_MFU);
                if !(mfu > 0.0 && mfu <= 1.0) {
                    return Err(ConfigError::invalid(k("mfu"), mfu, "a share in (0, 1]"));
                }
                let flops = samples_per_job * positive(&k("tokens_per_sample"), tokens)? * 6.0 * p.model.params();
                flops / (f64::from(gpus) * p.gpu.peak_bf16_tflops * 1e12 * mfu)
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(k("tokens_per_sample"), "(given)", "none with samples_per_gpu_h"));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    k("samples_per_gpu_h"),
                    "(missing)",
                    "samples a GPU trains on per hour, or tokens_per_sample (the job's work from the catalogue)",
                ));
            }
        })
    }
}

/// `v` if it is a finite number above 0; else the error names `key`.
fn positive(key: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err(ConfigError::invalid(key, v, "a finite number > 0")) }
}

/// A job under way: its replicas, those still draining, since when it trains (all its
/// replicas drained), and its end.
struct Job {
    replicas: Vec<usize>,
    draining: u32,
    training_since: Option<SimTime>,
    done: Option<EventId>,
}

/// The drifting model's state and what it measured.
pub(super) struct Retrainer {
    config: FleetRetraining,
    loss: f64,
    processed_samples: f64,
    campaign: Campaign,
    job: Option<Job>,
    /// Drift of mean 1, scaled by each request's mean.
    unit_drift: DriftSampler,
    interval: SimDuration,
    tick_loss: Tally,
    quality: Tally,
    /// Users' scores: all, and since the last tick; their mean at the last tick.
    scores: Tally,
    interval_scores: Tally,
    ics: Option<f64>,
    retrainings: u64,
    training_gpu_s: f64,
    training_meter: PowerMeter,
    training_w: f64,
    /// Training windows: from a job's start to its replicas serving again (a shared
    /// job's after their cold start); the one under way, if any, and until when the
    /// last one closed lasts.
    windows: Vec<(SimTime, SimTime)>,
    window_open: Option<SimTime>,
    window_until: SimTime,
    ttft_in: LatencyHistogram,
    ttft_out: LatencyHistogram,
    /// Counted requests served, met their objectives (goodput), and met their SLO,
    /// inside and outside windows.
    served_in: [u64; 3],
    served_out: [u64; 3],
    diverged_at: Option<SimTime>,
}

impl Retrainer {
    pub(super) fn new(config: &FleetRetraining) -> Result<Self, ScheduleError> {
        let interval_h = config.monitor.interval_h;
        Ok(Retrainer {
            loss: config.drift.initial_loss,
            processed_samples: config.training.base_samples,
            campaign: Campaign::new(&config.monitor),
            job: None,
            unit_drift: config.drift.sampler(1.0),
            interval: SimDuration::from_secs_f64(interval_h * 3600.0)?,
            tick_loss: Tally::new(),
            quality: Tally::new(),
            scores: Tally::new(),
            interval_scores: Tally::new(),
            ics: None,
            retrainings: 0,
            training_gpu_s: 0.0,
            training_meter: PowerMeter::default(),
            training_w: 0.0,
            windows: Vec::new(),
            window_open: None,
            window_until: SimTime::ZERO,
            ttft_in: LatencyHistogram::default(),
            ttft_out: LatencyHistogram::default(),
            served_in: [0; 3],
            served_out: [0; 3],
            diverged_at: None,
            config: config.clone(),
        })
    }

    /// How long the job under way has trained by `t` (s): 0 without one, or while its
    /// replicas still drain.
    fn training_s_at(&self, t: SimTime) -> f64 {
        let since = self.job.as_ref().and_then(|j| j.training_since);
        since.map_or(0.0, |s| (t - s).as_secs_f64())
    }

    /// The model's loss now.
    pub(super) fn loss(&self) -> f64 {
        self.loss
    }

    fn in_window(&self, now: SimTime) -> bool {
        self.window_open.is_some() || now < self.window_until
    }

    /// Notes a first token's TTFT at `now`, inside or outside a training window.
    pub(super) fn note_ttft(&mut self, now: SimTime, ttft: SimDuration) {
        if self.in_window(now) { self.ttft_in.record(ttft) } else { self.ttft_out.record(ttft) }
    }

    /// Notes a counted request served at `now`, whether it met its objectives (`good`)
    /// and its SLO, inside or outside a window.
    pub(super) fn note_served(&mut self, now: SimTime, good: bool, slo_met: bool) {
        let counts = if self.in_window(now) { &mut self.served_in } else { &mut self.served_out };
        counts[0] += 1;
        counts[1] += u64::from(good);
        counts[2] += u64::from(slo_met);
    }

    /// What the drifting model measured over a run whose measured window is
    /// `[from, to]` and that ended at `end`.
    pub(super) fn results(&self, from: SimTime, to: SimTime, end: SimTime) -> FleetRetrainingRun {
        let mut in_s = 0.0;
        let windows = self.windows.iter().copied().chain(self.window_open.map(|s| (s, end)));
        for (a, b) in windows {
            let (a, b) = (a.max(from), b.min(to));
            if b > a {
                in_s += (b - a).as_secs_f64();
            }
        }
        let measured_s = if to > from { (to - from).as_secs_f64() } else { 0.0 };
        let out_s = measured_s - in_s;
        let per_s = |n: u64, s: f64| (s > 0.0).then(|| n as f64 / s);
        let share = |c: [u64; 3]| (c[0] > 0).then(|| c[2] as f64 / c[0] as f64);
        FleetRetrainingRun {
            loss_mean: self.tick_loss.mean(),
            final_loss: self.loss,
            quality_mean: self.quality.mean(),
            ics_mean: self.scores.mean(),
            retrainings: self.retrainings,
            training_gpu_hours: (self.training_gpu_s + self.training_s_at(end) * f64::from(self.config.training.gpus))
                / 3600.0,
            training_energy_kwh: self.training_meter.energy_kwh_at(end, self.training_w),
            training_window_h: in_s / 3600.0,
            ttft_p99_training_s: self.ttft_in.quantile_s(0.99),
            ttft_p99_outside_s: self.ttft_out.quantile_s(0.99),
            goodput_training_per_s: per_s(self.served_in[1], in_s),
            goodput_outside_per_s: per_s(self.served_out[1], out_s),
            slo_attainment_training: share(self.served_in),
            slo_attainment_outside: share(self.served_out),
            diverged: self.diverged_at.is_some(),
            diverged_at_h: self.diverged_at.map(hours),
        }
    }
}

crate::metrics! {
    /// What a fleet's drifting model measured: added to the fleet's metrics when the
    /// scenario has one.
    #[derive(Clone, Debug, PartialEq)]
    pub struct FleetRetrainingRun {
        /// Loss, mean over the monitor's ticks.
        loss_mean: Option<f64> = "loss",
        /// Loss at the end.
        final_loss: f64 = "loss",
        /// Quality of the answers served after warm-up, mean.
        quality_mean: Option<f64> = "share",
        /// Users' mean score (with the `ics` signal).
        ics_mean: Option<f64> = "score 1-5",
        /// Retraining jobs that finished.
        retrainings: u64 = "jobs",
        /// GPU-hours spent training.
        training_gpu_hours: f64 = "h",
        /// Energy of the training GPUs while they trained (kWh, GPUs only).
        training_energy_kwh: f64 = "kWh",
        /// Hours of the measured window inside training windows (a job's start to its
        /// replicas serving again).
        training_window_h: f64 = "h",
        /// 99th percentile of TTFT of first tokens inside training windows (s).
        ttft_p99_training_s: Option<f64> = "s",
        /// 99th percentile of TTFT outside them (s).
        ttft_p99_outside_s: Option<f64> = "s",
        /// Requests that met their objectives per second inside training windows.
        goodput_training_per_s: Option<f64> = "per s",
        /// The same outside them.
        goodput_outside_per_s: Option<f64> = "per s",
        /// Share of the requests finished inside training windows that met their SLO.
        slo_attainment_training: Option<f64> = "share",
        /// The same outside them.
        slo_attainment_outside: Option<f64> = "share",
        /// Whether the loss ran away and the run stopped early.
        diverged: bool = "flag",
        /// When it did (h).
        diverged_at_h: Option<f64> = "h",
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Schedules the monitor's first tick (at the start, as the retraining world's).
    pub(super) fn start_monitor(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        if self.retrainer.is_some() {
            ctx.schedule(SimTime::ZERO, LlmEvent::Monitor)?;
        }
        Ok(())
    }

    /// A served request of model `model` with `output` tokens: its quality is the
    /// model's now (counted when `counted`), a user may score it (the `ics` signal),
    /// then its drift moves the loss. Returns its quality and score (none for a model
    /// that does not drift: nothing models its quality).
    pub(super) fn served_drifts(
        &mut self,
        model: usize,
        output: u32,
        counted: bool,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> (Option<f64>, Option<f64>) {
        let Some(rt) = self.retrainer.as_mut().filter(|rt| rt.config.model == model) else { return (None, None) };
        let quality = rt.config.quality.at(rt.loss);
        if counted {
            rt.quality.add(quality);
        }
        let mut score = None;
        if let Signal::Ics { fraction, noise_sd, .. } = rt.config.monitor.signal {
            score = crate::feedback::user_score(quality, noise_sd, fraction, ctx.rng(FEEDBACK_STREAM));
            if let Some(s) = score {
                rt.scores.add(s);
                rt.interval_scores.add(s);
            }
        }
        let d = &rt.config.drift;
        let mean = d.per_request + d.per_token * f64::from(output);
        rt.loss += rt.unit_drift.draw(ctx.rng(DRIFT_STREAM)) * mean;
        (Some(quality), score)
    }

    /// The monitor looks at the loss and applies its policy.
    pub(super) fn on_monitor(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let rt = self.retrainer.as_mut().expect("ticks only with a drifting model");
        let monitor = rt.config.monitor;
        if !rt.loss.is_finite() || rt.loss > rt.config.drift.diverge_above {
            rt.diverged_at = Some(now);
            ctx.stop();
            return Ok(());
        }
        rt.tick_loss.add(rt.loss);
        if let Some(ics) = rt.interval_scores.mean() {
            rt.ics = Some(ics);
        }
        rt.interval_scores = Tally::new();
        let (due, intensity) = (monitor.retrain_due(rt.loss, rt.ics), self.config.grid.at(hours(now)));
        let start = rt.campaign.tick(monitor.policy, due, intensity, ctx, LlmEvent::CarbonDeadline)?;
        let next = now.checked_add(rt.interval).ok_or(ScheduleError::Overflow)?;
        if next <= self.horizon {
            ctx.schedule(next, LlmEvent::Monitor)?;
        }
        if start && self.retrainer.as_ref().is_some_and(|rt| rt.job.is_none()) {
            self.start_job(ctx)?;
        }
        Ok(())
    }

    /// A carbon-aware wait has lasted its longest: the campaign starts.
    pub(super) fn on_carbon_deadline(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let rt = self.retrainer.as_mut().expect("a drifting model");
        rt.campaign.deadline_reached();
        if rt.job.is_none() {
            self.start_job(ctx)?;
        }
        Ok(())
    }

    /// Starts a job: a dedicated pool's replicas train at once; a shared job's
    /// replicas (the least loaded) stop taking requests and train once drained. A
    /// shared job that would leave its pool no replica serving waits for the next
    /// tick.
    fn start_job(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let rt = self.retrainer.as_ref().expect("a drifting model");
        let replicas: Vec<usize> = match rt.config.training.place {
            TrainingPlace::Dedicated { pool } => {
                (0..self.replicas.len()).filter(|&r| usize::from(self.replicas[r].pool) == pool).collect()
            }
            TrainingPlace::Shared { pool, replicas } => {
                let mut serving: Vec<usize> = (0..self.replicas.len())
                    .filter(|&r| usize::from(self.replicas[r].pool) == pool && self.accepting(r))
                    .collect();
                // It never takes a pool's last serving replica: it waits (for the next
                // tick) while the pool has no more serving than it would take.
                if serving.len() <= replicas as usize {
                    return Ok(());
                }
                serving.sort_by_key(|&r| (self.replicas[r].engine.waiting() + self.replicas[r].engine.running(), r));
                serving.truncate(replicas as usize);
                serving
            }
        };
        let rt = self.retrainer.as_mut().expect("a drifting model");
        // A job that starts while the last one's replicas are still starting continues
        // its window.
        rt.window_open = Some(match rt.windows.last() {
            Some(&(since, until)) if until > now => {
                rt.windows.pop();
                since
            }
            _ => now,
        });
        let draining = replicas.len() as u32;
        rt.job = Some(Job { draining, replicas: replicas.clone(), training_since: None, done: None });
        for r in replicas {
            match self.replicas[r].mode {
                Mode::Reserved => self.train(r, ctx)?,
                _ => {
                    self.set_mode(r, Mode::ToTrain);
                    self.kick(r, ctx)?;
                }
            }
        }
        Ok(())
    }

    /// Replica `r`, taken by the job, has nothing left to serve: it trains; the job's
    /// clock starts when all its replicas do.
    pub(super) fn train(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.set_mode(r, Mode::Training);
        let tp = f64::from(self.pool(r).tp);
        let rt = self.retrainer.as_mut().expect("a drifting model");
        let power_w = tp * rt.config.training.gpu_power_w;
        rt.training_meter.hold(now, rt.training_w, &self.config.grid);
        rt.training_w += power_w;
        let job = rt.job.as_mut().expect("a replica trains for a job");
        job.draining -= 1;
        if job.draining == 0 {
            job.training_since = Some(now);
            let job_s = SimDuration::from_secs_f64(rt.config.training.job_s)?;
            job.done = Some(ctx.schedule(job_s, LlmEvent::TrainingDone)?);
        }
        self.set_power(now, r, power_w);
        Ok(())
    }

    /// The job has trained: the loss falls as the training loss model says, its
    /// replicas go back (a shared job's through a cold start), and a campaign goes on
    /// until the loss is below the band.
    pub(super) fn on_training_done(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let rt = self.retrainer.as_mut().expect("a drifting model");
        let t = rt.config.training;
        rt.training_gpu_s += rt.training_s_at(now) * f64::from(t.gpus);
        let job = rt.job.take().expect("a job ends");
        rt.retrainings += 1;
        rt.processed_samples += t.samples_per_job;
        rt.loss = t.loss.after_job(rt.loss, t.samples_per_job, rt.processed_samples);
        rt.training_meter.hold(now, rt.training_w, &self.config.grid);
        rt.training_w = 0.0;
        let back = match t.place {
            TrainingPlace::Dedicated { .. } => now,
            TrainingPlace::Shared { .. } => {
                now.checked_add(SimDuration::from_secs_f64(t.cold_start_s)?).ok_or(ScheduleError::Overflow)?
            }
        };
        if let Some(since) = rt.window_open.take() {
            rt.windows.push((since, back));
        }
        rt.window_until = back;
        let again = rt.campaign.after_job(rt.config.monitor.good_again(rt.loss, rt.ics));
        for r in job.replicas {
            let pool = self.pool(r);
            let idle_w = pool.gpu.idle_w * f64::from(pool.tp);
            match t.place {
                TrainingPlace::Dedicated { .. } => self.set_mode(r, Mode::Reserved),
                TrainingPlace::Shared { .. } => {
                    let started = ctx.schedule(back, LlmEvent::Started(r as u32))?;
                    self.set_mode(r, Mode::Starting(started));
                }
            }
            self.set_power(now, r, idle_w);
        }
        if again {
            self.start_job(ctx)?;
        }
        Ok(())
    }

    /// Replicas training now, of pool `pool` or of the fleet.
    pub(super) fn replicas_training(&self, pool: Option<usize>) -> Option<u32> {
        self.retrainer.as_ref()?;
        let training = self.replicas.iter().filter(|s| pool.is_none_or(|p| usize::from(s.pool) == p));
        Some(training.filter(|s| s.mode == Mode::Training).count() as u32)
    }
}
