//! Drift and retraining: a deployed model whose loss drifts with every request it
//! serves, a monitoring controller that retrains it, and the energy of both.
//!
//! Agents:
//! - a request source ([`ArrivalProcess`](crate::arrivals::ArrivalProcess)) whose requests queue for the serving
//!   GPUs (or are served the instant they arrive when `fleet.service_s` is 0); every
//!   served request adds drift to the loss;
//! - a monitoring controller that ticks every `monitor.interval_h`, samples the state
//!   and applies its [`Policy`];
//! - retraining jobs that take GPUs from a dedicated pool or from the serving fleet,
//!   process samples, lower the loss when they finish ([`LossFunction`]), and may be
//!   preempted or fail with a GPU;
//! - GPUs that fail and are repaired.
//!
//! Under the `vensim` policy the controller integrates the Vensim model's stocks
//! (training GPUs, processed data) with its own Euler step, so a deterministic run
//! reproduces the model file hour by hour. The other policies run discrete jobs.
//!
//! A runaway (loss above `drift.diverge_above`, or any state not finite) stops the
//! replication at the tick that sees it and flags it: no infinity or NaN ever leaves
//! the model.
//!
//! Streams: arrivals [`ARRIVAL_STREAM`], service times [`SERVICE_STREAM`], drift
//! [`DRIFT_STREAM`], GPU `g`'s failures `FAILURE_STREAM_BASE + g`.
//!
//! ```
//! use infersim_agents::retraining::{RetrainingConfig, run_retraining};
//! let mut config = RetrainingConfig::bloom();
//! config.duration_s = 200.0 * 3600.0;
//! let run = run_retraining(&config, 1, 0).unwrap();
//! // The Vensim model with 1e-6 drift per request first retrains at hour 124.
//! assert_eq!(run.retrain_starts, 1);
//! assert!(!run.diverged);
//! ```

use std::collections::VecDeque;

use infersim_engine::stats::{LatencyHistogram, Tally};
use infersim_engine::{
    Arena, Context, EventId, Id, Model, NullObserver, Observer, QueueKind, ScheduleError, SimDuration, SimTime,
    Simulation, StreamId,
};
use rand_distr::{Distribution, LogNormal};

mod config;
mod failures;
mod file;
mod results;
mod training;
use crate::drift::{Campaign, DriftSampler};
pub use crate::drift::{Drift, DriftDistribution, LossFunction, Monitor, Policy, Quality, Signal};
pub use config::{Energy, Fleet, Prices, RetrainingConfig, Training, TrainingPool};
pub use file::{RetrainingFile, RetrainingWorld};
pub use results::RetrainingRun;

use crate::arrivals::ArrivalGenerator;
use crate::distributions::lognormal_from_mean_cv;
use crate::failures::{FAILURE_STREAM_BASE, Lifecycle};

/// Stream of inter-arrival times.
pub const ARRIVAL_STREAM: StreamId = StreamId(0);
/// Stream of service times.
pub const SERVICE_STREAM: StreamId = StreamId(1);
/// Stream of per-request drift.
pub const DRIFT_STREAM: StreamId = StreamId(2);
/// Stream of user feedback (the ICS signal).
pub const FEEDBACK_STREAM: StreamId = StreamId(3);

const NS_PER_H: f64 = 3.6e12;

use crate::error::{ConfigError, hours};

/// The events of the drift-and-retraining world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetrainingEvent {
    /// The next request arrives.
    Arrival,
    /// A GPU finishes serving its request.
    ServiceDone(Id<Gpu>),
    /// The monitoring controller looks at the model.
    Tick,
    /// The running retraining job finishes.
    JobDone,
    /// A carbon-aware wait reaches its deadline.
    CarbonDeadline,
    /// A GPU fails.
    GpuFails(Id<Gpu>),
    /// A failed GPU is back.
    GpuRepaired(Id<Gpu>),
}

/// What a GPU is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum GpuState {
    #[default]
    Idle,
    /// Serving request `id` (arrival order), which arrived at `arrival` and started at
    /// `start`; `done` is its completion event.
    Serving {
        id: u64,
        arrival: SimTime,
        start: SimTime,
        done: EventId,
    },
    /// Held by the retraining job.
    Training,
    Down,
}

/// A GPU of the fleet or of the dedicated training pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gpu {
    /// Part of the serving fleet (else of the dedicated training pool).
    serving: bool,
    state: GpuState,
}

/// The retraining job under way.
#[derive(Clone, Debug)]
struct Job {
    gpus: Vec<Id<Gpu>>,
    /// Its completion, once it holds all its GPUs.
    done: Option<EventId>,
}

/// The Vensim model's training-GPU stock and last monitoring signal, under the
/// `vensim` policy (its processed-data stock is [`Retraining`]'s `processed_data`).
#[derive(Clone, Copy, Debug)]
struct VensimStocks {
    training_gpus: f64,
    monitoring: f64,
}

/// The state at one monitor tick: the columns of `timeseries.parquet`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetrainingSample {
    /// The tick (h).
    pub t_h: f64,
    /// Model loss.
    pub loss: f64,
    /// GPUs training.
    pub training_gpus: f64,
    /// Samples the model has been trained on.
    pub processed_data: f64,
    /// Energy since the start (kWh).
    pub energy_kwh: f64,
    /// Requests that have arrived since the start.
    pub requests: u64,
    /// The Vensim `loss monitoring` signal: +0.5 above the band, -0.5 below, else 0.
    pub loss_monitoring: f64,
    /// Quality at this loss.
    pub quality: f64,
    /// Requests waiting for a GPU.
    pub queue_len: u32,
    /// Carbon since the start (kg CO2e).
    pub carbon_kg: f64,
    /// Mean user score of the interval before the tick (ICS signal only).
    pub ics: Option<f64>,
}

/// One request, as recorded in `requests.parquet`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetrainingRequest {
    /// Arrival order, from 0.
    pub request_id: u64,
    /// Arrival (s).
    pub arrival_s: f64,
    /// Service start (s).
    pub start_s: f64,
    /// Completion, or the instant it was lost (s).
    pub finish_s: f64,
    /// GPU that served it; `None` for instant service.
    pub gpu: Option<u32>,
    /// `finish_s - arrival_s`.
    pub latency_s: f64,
    /// Loss of the model that answered, before this request's drift.
    pub loss: f64,
    /// Drift this request added.
    pub drift: f64,
    /// Energy (kWh, PUE included).
    pub energy_kwh: f64,
    /// Served, or lost to a GPU failure.
    pub served: bool,
}

#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    served: u64,
    lost: u64,
    drift_total: f64,
    latency_s: Tally,
    latency: LatencyHistogram,
    tick_loss: Tally,
    tick_quality: Tally,
    last_tick_loss: Option<f64>,
    hours_above_upper: f64,
    retrain_starts: u64,
    retrain_completed: u64,
    retrain_failed: u64,
    retrain_preempted: u64,
    energy_serving_kwh: f64,
    energy_idle_kwh: f64,
    energy_training_kwh: f64,
    carbon_kg: f64,
    diverged_at: Option<SimTime>,
    scores: Tally,
    interval_scores: Tally,
    /// The ICS the controller last computed.
    ics: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
enum ServiceSampler {
    Instant,
    Constant(f64),
    LogNormal(LogNormal<f64>),
}

/// The drift-and-retraining world; `O` receives a [`RetrainingRequest`] per request
/// and `S` a [`RetrainingSample`] per monitor tick.
pub struct Retraining<O = NullObserver, S = NullObserver> {
    config: RetrainingConfig,
    arrivals: ArrivalGenerator,
    drift: DriftSampler,
    service: ServiceSampler,
    gpus: Arena<Gpu>,
    /// Idle serving GPUs, used last-in first-out.
    idle_serving: Vec<Id<Gpu>>,
    queue: VecDeque<(u64, SimTime)>,
    horizon: SimTime,
    interval: SimDuration,
    loss: f64,
    /// Samples trained on: with discrete jobs, the base plus every finished job's;
    /// under `vensim`, the model's `processed data` stock.
    processed_data: f64,
    vensim: VensimStocks,
    job: Option<Job>,
    /// GPUs the job still waits for.
    job_claims: u32,
    /// The monitor's campaign, carbon-aware wait and periodic schedule.
    campaign: Campaign,
    /// Continuous power draws (kW, PUE included) since `flows_since`.
    idle_kw: f64,
    training_kw: f64,
    flows_since: SimTime,
    stats: Stats,
    /// The GPUs' up and down epochs (with failures configured).
    life: Option<Lifecycle>,
    observer: O,
    samples: Option<S>,
}

impl<O: Observer<RetrainingRequest>> Retraining<O> {
    /// A validated world with nothing scheduled yet.
    pub fn new(config: RetrainingConfig, observer: O) -> Result<Self, ConfigError> {
        Retraining::with_samples(config, observer, None)
    }
}

impl<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>> Retraining<O, S> {
    /// A validated world that also hands its per-tick state to `samples`.
    pub(crate) fn with_samples(config: RetrainingConfig, observer: O, samples: Option<S>) -> Result<Self, ConfigError> {
        config.validate()?;
        let out_of_range = |key: &str, value: f64| crate::error::ConfigError::invalid(key, value, "at most 584 years");
        let horizon = SimTime::from_secs_f64(config.duration_s)
            .map_err(|_| out_of_range("simulation.duration_s", config.duration_s))?;
        let interval = SimDuration::from_secs_f64(config.monitor.interval_h * 3600.0)
            .map_err(|_| out_of_range("monitor.interval_h", config.monitor.interval_h))?;
        let mut gpus = Arena::new();
        let mut idle_serving = Vec::new();
        for _ in 0..config.fleet.gpus {
            idle_serving.push(gpus.push(Gpu { serving: true, state: GpuState::Idle }));
        }
        if let TrainingPool::Dedicated { gpus: n } = config.training.pool {
            for _ in 0..n {
                gpus.push(Gpu { serving: false, state: GpuState::Idle });
            }
        }
        // Pop from the end: GPU 0 first.
        idle_serving.reverse();
        let (service_s, service_cv) = (config.fleet.service_s, config.fleet.service_cv);
        let service = if service_s == 0.0 {
            ServiceSampler::Instant
        } else if service_cv == 0.0 {
            ServiceSampler::Constant(service_s)
        } else {
            ServiceSampler::LogNormal(lognormal_from_mean_cv(service_s, service_cv))
        };
        Ok(Retraining {
            arrivals: ArrivalGenerator::new(config.arrivals.clone()),
            drift: config.drift_sampler(),
            service,
            gpus,
            idle_serving,
            queue: VecDeque::new(),
            horizon,
            interval,
            loss: config.drift.initial_loss,
            processed_data: config.training.base_samples,
            vensim: VensimStocks { training_gpus: 0.0, monitoring: 0.0 },
            job: None,
            job_claims: 0,
            campaign: Campaign::new(&config.monitor),
            idle_kw: config.energy.idle_kwh_per_h * config.energy.pue,
            training_kw: 0.0,
            flows_since: SimTime::ZERO,
            stats: Stats::default(),
            life: config.fleet.failures.map(|_| Lifecycle::new(config.total_gpus() as usize)),
            observer,
            samples,
            config,
        })
    }

    /// Consumes the world, returning its observers.
    pub fn into_observers(self) -> (O, Option<S>) {
        (self.observer, self.samples)
    }

    /// Accounts the continuous flows (idle and training power) up to `now`.
    fn advance_flows(&mut self, now: SimTime) {
        if now <= self.flows_since {
            return;
        }
        let (from_h, to_h) = (hours(self.flows_since), hours(now));
        let dt_h = (now - self.flows_since).as_nanos() as f64 / NS_PER_H;
        self.stats.energy_idle_kwh += self.idle_kw * dt_h;
        self.stats.energy_training_kwh += self.training_kw * dt_h;
        let power_kw = self.idle_kw + self.training_kw;
        if power_kw > 0.0 {
            self.stats.carbon_kg += power_kw * self.config.grid.integral(from_h, to_h);
        }
        self.flows_since = now;
    }

    fn set_training_kw(&mut self, now: SimTime, kw: f64) {
        self.advance_flows(now);
        self.training_kw = kw;
    }

    fn energy_kwh(&self) -> f64 {
        self.stats.energy_serving_kwh + self.stats.energy_idle_kwh + self.stats.energy_training_kwh
    }

    fn monitoring(&self) -> f64 {
        if self.above_band() {
            0.5
        } else if self.below_band() {
            -0.5
        } else {
            0.0
        }
    }

    /// Whether the watched signal says the model is bad (loss above the band, or ICS
    /// below its threshold).
    fn above_band(&self) -> bool {
        self.config.monitor.retrain_due(self.loss, self.stats.ics)
    }

    /// Whether the watched signal says the model is good again.
    fn below_band(&self) -> bool {
        self.config.monitor.good_again(self.loss, self.stats.ics)
    }

    fn on_arrival(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let id = self.stats.requests;
        self.stats.requests += 1;
        let next = self.arrivals.next_after(now, ctx.rng(ARRIVAL_STREAM))?;
        if next < self.horizon {
            ctx.schedule(next, RetrainingEvent::Arrival)?;
        }
        if let ServiceSampler::Instant = self.service {
            self.serve(id, now, now, None, ctx);
            return Ok(());
        }
        self.queue.push_back((id, now));
        self.dispatch(ctx)
    }

    /// Starts requests on idle serving GPUs while both exist.
    fn dispatch(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        while !self.queue.is_empty() {
            let Some(gpu) = self.idle_serving.pop() else { break };
            let (id, arrival) = self.queue.pop_front().expect("checked non-empty");
            let service_s = match self.service {
                ServiceSampler::Instant => 0.0,
                ServiceSampler::Constant(s) => s,
                ServiceSampler::LogNormal(d) => d.sample(ctx.rng(SERVICE_STREAM)),
            };
            let done = ctx.schedule(SimDuration::from_secs_f64(service_s)?, RetrainingEvent::ServiceDone(gpu))?;
            self.gpus[gpu].state = GpuState::Serving { id, arrival, start: ctx.now(), done };
        }
        Ok(())
    }

    /// A request is answered: drift, energy, latency.
    fn serve(
        &mut self,
        id: u64,
        arrival: SimTime,
        start: SimTime,
        gpu: Option<Id<Gpu>>,
        ctx: &mut Context<'_, RetrainingEvent>,
    ) {
        let now = ctx.now();
        let drift = self.drift.draw(ctx.rng(DRIFT_STREAM));
        let loss = self.loss;
        if let Signal::Ics { fraction, noise_sd, .. } = self.config.monitor.signal {
            let quality = self.config.quality.at(loss);
            if let Some(score) = crate::feedback::user_score(quality, noise_sd, fraction, ctx.rng(FEEDBACK_STREAM)) {
                self.stats.scores.add(score);
                self.stats.interval_scores.add(score);
            }
        }
        self.loss += drift;
        self.stats.drift_total += drift;
        self.stats.served += 1;
        let energy_kwh = self.config.energy.per_request_kwh * self.config.energy.pue;
        self.stats.energy_serving_kwh += energy_kwh;
        if energy_kwh > 0.0 {
            self.stats.carbon_kg += energy_kwh * self.config.grid.at(hours(now));
        }
        let latency = now - arrival;
        self.stats.latency_s.add(latency.as_secs_f64());
        self.stats.latency.record(latency);
        self.observer.observe(RetrainingRequest {
            request_id: id,
            arrival_s: arrival.as_secs_f64(),
            start_s: start.as_secs_f64(),
            finish_s: now.as_secs_f64(),
            gpu: gpu.map(|g| g.index()),
            latency_s: latency.as_secs_f64(),
            loss,
            drift,
            energy_kwh,
            served: true,
        });
    }

    fn on_service_done(&mut self, gpu: Id<Gpu>, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        let GpuState::Serving { id, arrival, start, .. } = self.gpus[gpu].state else {
            unreachable!("ServiceDone for a GPU that is not serving")
        };
        self.serve(id, arrival, start, Some(gpu), ctx);
        self.release(gpu, ctx)
    }

    /// A GPU becomes free: the job claims it if it waits for GPUs of its pool,
    /// otherwise a serving GPU takes the next request.
    fn release(&mut self, gpu: Id<Gpu>, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        self.gpus[gpu].state = GpuState::Idle;
        if self.job_claims > 0 && self.in_training_pool(gpu) {
            self.claim(gpu, ctx)?;
            return Ok(());
        }
        if self.gpus[gpu].serving {
            self.idle_serving.push(gpu);
            self.dispatch(ctx)?;
        }
        Ok(())
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.advance_flows(now);
        let finite = self.loss.is_finite()
            && self.vensim.training_gpus.is_finite()
            && self.processed_data.is_finite()
            && self.energy_kwh().is_finite()
            && self.stats.carbon_kg.is_finite();
        if !finite || self.loss > self.config.drift.diverge_above {
            self.stats.diverged_at = Some(now);
            if finite {
                self.record_tick(now);
            }
            ctx.stop();
            return Ok(());
        }
        if let Some(ics) = self.stats.interval_scores.mean() {
            self.stats.ics = Some(ics);
        }
        self.stats.interval_scores = Tally::new();
        self.record_tick(now);
        // Serving first: with a shared pool, a long queue preempts the running job and
        // keeps new ones from starting until it has shrunk.
        let overloaded = self.config.training.pool == TrainingPool::Shared
            && self.config.training.preempt_above_queue.is_some_and(|limit| self.queue.len() > limit as usize);
        if overloaded && self.job.is_some() {
            self.stats.retrain_preempted += 1;
            self.end_job(ctx)?;
        }
        let policy = self.config.monitor.policy;
        if policy == Policy::Vensim {
            self.vensim_step(now);
        }
        let (due, intensity) = (self.above_band(), self.config.grid.at(hours(now)));
        let wanted = self.campaign.tick(policy, due, intensity, ctx, RetrainingEvent::CarbonDeadline)?;
        if wanted && self.job.is_none() && !overloaded {
            self.start_job(ctx)?;
        }
        let next = now.checked_add(self.interval).ok_or(ScheduleError::Overflow)?;
        if next <= self.horizon {
            ctx.schedule(next, RetrainingEvent::Tick)?;
        }
        Ok(())
    }

    /// Metrics and the sample of one tick, before the controller acts.
    fn record_tick(&mut self, now: SimTime) {
        let monitoring = self.monitoring();
        let quality = self.config.quality.at(self.loss);
        self.stats.tick_loss.add(self.loss);
        self.stats.tick_quality.add(quality);
        self.stats.last_tick_loss = Some(self.loss);
        if self.loss > self.config.monitor.upper {
            self.stats.hours_above_upper += self.config.monitor.interval_h;
        }
        let training_gpus = match self.config.monitor.policy {
            Policy::Vensim => self.vensim.training_gpus,
            _ => self.job.as_ref().map_or(0.0, |j| j.gpus.len() as f64),
        };
        let energy_kwh = self.energy_kwh();
        let sample = RetrainingSample {
            t_h: hours(now),
            loss: self.loss,
            training_gpus,
            processed_data: self.processed_data,
            energy_kwh,
            requests: self.stats.requests,
            loss_monitoring: monitoring,
            quality,
            queue_len: self.queue.len() as u32,
            carbon_kg: self.stats.carbon_kg,
            ics: self.stats.ics,
        };
        if let Some(samples) = self.samples.as_mut() {
            samples.observe(sample);
        }
    }

    /// One Euler step of the Vensim model's controller and training stocks, with the
    /// model file's equations term by term (dt = the tick interval).
    fn vensim_step(&mut self, now: SimTime) {
        let t = self.config.training;
        let dt = self.config.monitor.interval_h;
        let v = self.vensim;
        let monitoring = self.monitoring();
        let p = self.processed_data;
        let LossFunction::Vensim { scale, offset } = t.loss else {
            unreachable!("validated: the vensim policy uses the vensim loss function")
        };
        let loss_function = if monitoring < 0.001 || p <= 0.0 { 0.0 } else { (scale * (p.ln() - offset)) / (p * p) };
        let loss_rate = if monitoring < 0.01 {
            if p > t.base_samples { p - t.base_samples } else { 0.0 }
        } else {
            p - t.base_samples
        };
        let data_rate = t.samples_per_gpu_h * v.training_gpus;
        let adjust = if monitoring == 0.0 {
            0.0
        } else if v.training_gpus == 0.0 {
            f64::from(t.gpus_per_job)
        } else {
            v.training_gpus * monitoring
        };
        let reduce = if v.training_gpus > 0.0 && adjust == 0.0 { v.training_gpus } else { 0.0 };
        if monitoring == 0.5 && v.monitoring != 0.5 {
            self.stats.retrain_starts += 1;
        }
        if loss_function != 0.0 {
            // An hour of the loss function at work: the model's counterpart of a job.
            self.stats.retrain_completed += 1;
        }
        self.loss += loss_function * dt;
        let kw = (data_rate * t.energy_per_sample_kwh + v.training_gpus * t.gpu_power_kw) * self.config.energy.pue;
        self.set_training_kw(now, kw);
        self.processed_data = p + (data_rate - loss_rate) * dt;
        self.vensim = VensimStocks { training_gpus: v.training_gpus + (adjust - reduce) * dt, monitoring };
    }

    fn on_carbon_deadline(&mut self, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        self.campaign.deadline_reached();
        if self.job.is_none() {
            self.start_job(ctx)?;
        }
        Ok(())
    }
}

impl<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>> Model for Retraining<O, S> {
    type Event = RetrainingEvent;
    type Error = ScheduleError;

    fn handle(&mut self, event: RetrainingEvent, ctx: &mut Context<'_, RetrainingEvent>) -> Result<(), ScheduleError> {
        match event {
            RetrainingEvent::Arrival => self.on_arrival(ctx),
            RetrainingEvent::ServiceDone(gpu) => self.on_service_done(gpu, ctx),
            RetrainingEvent::Tick => self.on_tick(ctx),
            RetrainingEvent::JobDone => self.on_job_done(ctx),
            RetrainingEvent::CarbonDeadline => self.on_carbon_deadline(ctx),
            RetrainingEvent::GpuFails(gpu) => self.on_gpu_fails(gpu, ctx),
            RetrainingEvent::GpuRepaired(gpu) => self.on_gpu_repaired(gpu, ctx),
        }
    }
}

/// Builds one replication: first arrival, first tick and first failures scheduled.
pub(crate) fn build_retraining<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>>(
    config: &RetrainingConfig,
    observer: O,
    samples: Option<S>,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<Retraining<O, S>>, ConfigError> {
    let world = Retraining::with_samples(config.clone(), observer, samples)?;
    let mut sim = Simulation::with_queue(world, QueueKind::default(), master_seed, replication);
    let err = |e: ScheduleError| crate::error::ConfigError::invalid("arrivals", e, "a first arrival within 584 years");
    let mut arrivals = sim.model().arrivals.clone();
    let first = arrivals.next_after(SimTime::ZERO, sim.rng(ARRIVAL_STREAM)).map_err(err)?;
    sim.model_mut().arrivals = arrivals;
    let horizon = sim.model().horizon;
    if first < horizon {
        sim.schedule(first, RetrainingEvent::Arrival).map_err(err)?;
    }
    sim.schedule(SimTime::ZERO, RetrainingEvent::Tick).map_err(err)?;
    if let Some(f) = config.fleet.failures {
        for gpu in sim.model().gpus.ids().collect::<Vec<_>>() {
            let up_s = f.time_to_failure_s(sim.rng(Retraining::<O, S>::failure_stream(gpu)));
            let at = SimTime::from_secs_f64(up_s).map_err(err)?;
            if at < horizon {
                sim.schedule(at, RetrainingEvent::GpuFails(gpu)).map_err(err)?;
            }
        }
    }
    Ok(sim)
}

/// Runs a built replication to its horizon (or its runaway) and returns its metrics.
pub(crate) fn finish_retraining<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>>(
    sim: &mut Simulation<Retraining<O, S>>,
) -> Result<RetrainingRun, ScheduleError> {
    let horizon = sim.model().horizon;
    sim.run_until(horizon)?;
    let end = sim.model().stats.diverged_at.unwrap_or(horizon);
    let events = sim.events_handled();
    Ok(sim.model_mut().results(end, events))
}

/// Runs one replication untraced.
pub fn run_retraining(
    config: &RetrainingConfig,
    master_seed: u64,
    replication: u64,
) -> Result<RetrainingRun, crate::error::RunError> {
    let mut sim = build_retraining::<NullObserver, NullObserver>(config, NullObserver, None, master_seed, replication)?;
    Ok(finish_retraining(&mut sim)?)
}

#[cfg(test)]
mod tests;
