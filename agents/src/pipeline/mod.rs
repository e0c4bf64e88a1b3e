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

use crate::error::ConfigError;
use crate::failures::Lifecycle;
use crate::grid::CarbonIntensity;
use crate::power::PowerMeter;

pub use crate::adaptation::planner as adapter;
use crate::adaptation::profile;
mod config;
mod failures;
mod file;
mod results;
pub use file::{PipelineFile, PipelineWorld};
pub use results::PipelineRun;

pub use adapter::{Limits, Objective, Plan, StagePlan};
pub use config::{Adapter, AdapterPolicy, Efficiency, Feedback, Load, PipelineConfig, Predictor, Resources};
pub use profile::{
    ProfileError, Quadratic, Stage, Variant, fit_quadratic, normalised_accuracies, parse_profile_csv, read_profile,
};

/// The built-in profiles, by name: CSV text as in data/profiles/.
pub(crate) const BUILTIN_PROFILES: &[(&str, &str)] = &[
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

/// The events of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PipelineEvent {
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
pub(crate) struct Pipeline<O = NullObserver, S = NullObserver> {
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

    /// Consumes the world, returning its observers (for tests).
    #[cfg(test)]
    pub(crate) fn into_observers(self) -> (O, Option<S>) {
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
pub(crate) fn build_pipeline<O: Observer<PipelineRequest>, S: Observer<PipelineSample>>(
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
pub(crate) fn finish_pipeline<O: Observer<PipelineRequest>, S: Observer<PipelineSample>>(
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
