//! The serving world's `static` engine: requests arriving at nodes of GPUs that serve
//! them in batches.
//!
//! Requests arrive (Poisson or evenly spaced), each with a task drawn by weight, its
//! prompt and output token counts, and the task's latency SLO. A router sends each
//! request to a node; a node's requests wait in one FIFO queue. A free GPU starts a
//! batch when `max_batch` requests wait, or when the oldest has waited `max_wait_s`
//! (a per-node timer, cancelled or moved as the queue changes). A batch takes a time
//! given by [`BatchTime`]: affine in requests and tokens, or a measured profile.
//!
//! Energy: a GPU draws `gpu_max_w` while it serves a batch and `gpu_idle_w`
//! otherwise (power = idle + (max - idle) x utilisation, utilisation being 0 or 1 at
//! any instant); every node draws `node_baseline_w`; the facility multiplies IT power
//! by its PUE. Carbon is energy times grid intensity; cost is energy times its price
//! plus GPU-hours times theirs.
//!
//! Arrivals stop at `duration_s`; the run ends when every request is served, and
//! energy is accounted up to that moment. Latency statistics cover requests that
//! arrived after `warmup_s`.
//!
//! Streams: arrivals [`ARRIVAL_STREAM`], request attributes (task, tokens)
//! [`REQUEST_STREAM`], routing [`ROUTING_STREAM`]: adding GPUs changes none of the
//! requests a replication presents.

use std::collections::VecDeque;

use infersim_engine::sampling::Grid;
use infersim_engine::stats::{CompensatedSum, DurationSum, LatencyHistogram};
use infersim_engine::{
    Arena, Context, EventId, Id, Model, NullObserver, Observer, QueueKind, ScheduleError, SimDuration, SimTime,
    Simulation, Slab, StreamId,
};
use rand::RngExt;

use super::{ARRIVAL_STREAM, REQUEST_STREAM, ROUTING_STREAM, ServingSample};
use crate::arrivals::ArrivalGenerator;
use crate::error::ConfigError;
use crate::failures::{FAILURE_STREAM_BASE, Lifecycle};
use crate::min_index::MinIndex;
use crate::power::{J_PER_KWH, PowerMeter};
use crate::requests::{RequestOutcome, RequestRecord, TokenSampler, draw_request};

mod batch_time;
mod config;
mod failures;
use failures::failure_stream;
mod file;
mod results;
pub use batch_time::BatchTime;
pub use config::{BatchedConfig, History, OverLimit, Routing};
pub(crate) use file::{BatchedTable, resolve};
pub use results::BatchedRun;

/// The events of the serving world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchedEvent {
    /// The next request arrives.
    Arrival,
    /// A node's oldest request has waited `max_wait_s`.
    BatchTimer(Id<Node>),
    /// A GPU finishes its batch.
    BatchDone(Id<Gpu>),
    /// The oldest waiting request of this task may have reached its timeout.
    Timeout(u16),
    /// A GPU fails.
    GpuFails(Id<Gpu>),
    /// A failed GPU is back.
    GpuRepaired(Id<Gpu>),
}

/// A request.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Arrival order, from 0 (slots are reused, so this is not the slab index).
    id: u64,
    task: u16,
    tokens: u32,
    truncated: bool,
    /// History tokens sent, and the quality that leaves.
    history_tokens: u32,
    quality: f64,
    node: u32,
    arrival: SimTime,
    start: SimTime,
    /// Whether it waits with a timeout running (its task has one and no batch has
    /// taken it yet).
    timeout_running: bool,
}

/// One task's timeouts (see [`BatchedServing`]'s `deadlines`).
#[derive(Debug, Default)]
struct Deadlines {
    /// (deadline, request, its arrival number), oldest first.
    queue: VecDeque<(SimTime, Id<Request>, u64)>,
    /// The task's pending [`BatchedEvent::Timeout`], due at the deadline at the front.
    armed: Option<EventId>,
    /// The task's requests waiting with a timeout running.
    waiting: u32,
}

impl Deadlines {
    /// One of the task's requests stopped waiting; once none waits, the entries left
    /// are all stale and the pending event is cancelled.
    fn leave(&mut self, ctx: &mut Context<'_, BatchedEvent>) {
        self.waiting -= 1;
        if self.waiting == 0 {
            self.queue.clear();
            if let Some(event) = self.armed.take() {
                ctx.cancel(event);
            }
        }
    }
}

/// A node: its GPUs and queue.
#[derive(Debug, Default)]
pub struct Node {
    gpus: Vec<Id<Gpu>>,
    /// Which of `gpus` are free (up, with no batch): bit `i % 64` of word `i / 64`, so
    /// that dispatching finds the first free GPU without visiting every GPU.
    free: Vec<u64>,
    queue: VecDeque<Id<Request>>,
    timer: Option<EventId>,
    load: u32,
}

impl Node {
    /// The first free GPU, in the node's order.
    #[inline]
    fn first_free(&self) -> Option<Id<Gpu>> {
        let (w, word) = self.free.iter().enumerate().find(|(_, word)| **word != 0)?;
        Some(self.gpus[w * 64 + word.trailing_zeros() as usize])
    }

    /// Marks the node's `i`-th GPU free or not.
    #[inline]
    fn set_free(&mut self, i: u32, free: bool) {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if free {
            self.free[word] |= bit;
        } else {
            self.free[word] &= !bit;
        }
    }
}

/// A GPU and the batch it serves.
#[derive(Debug, Default)]
pub struct Gpu {
    node: u32,
    /// Its place among its node's GPUs.
    place: u32,
    batch: Vec<Id<Request>>,
    busy_s: f64,
    /// The pending end of its batch, cancelled if it fails first.
    done: Option<EventId>,
}

struct Sampling<S> {
    grid: Grid,
    sink: S,
}

/// The serving world; `O` receives a [`RequestRecord`] per request and `S` a
/// [`ServingSample`] per instant of the sampling grid, if one is set.
pub struct BatchedServing<O = NullObserver, S = NullObserver> {
    config: BatchedConfig,
    arrivals: ArrivalGenerator,
    cumulative_weights: Vec<f64>,
    token_samplers: Vec<(TokenSampler, TokenSampler)>,
    history_samplers: Vec<Option<TokenSampler>>,
    nodes: Arena<Node>,
    /// Each node's load, for least-loaded routing without a scan.
    loads: MinIndex,
    gpus: Arena<Gpu>,
    /// Requests alive now; a request leaves when served, rejected, timed out or lost.
    requests: Slab<Request>,
    /// Per task, the deadlines of its requests in arrival order, hence in deadline
    /// order (a task's timeout is one duration): one pending event per task stands for
    /// all of them, rather than one per request scheduled and nearly always
    /// cancelled. Entries of requests that a batch has taken since are skipped when
    /// they come up, and dropped with the event once none of the task's requests
    /// waits.
    deadlines: Vec<Deadlines>,
    next_node: u32,
    horizon: SimTime,
    warmup: SimTime,
    /// `max_wait_s`, converted once.
    max_wait: SimDuration,
    stats: BatchedStats,
    observer: O,
    sampling: Option<Sampling<S>>,
    /// GPUs serving a batch now.
    busy_gpus: u32,
    /// GPUs failed and not yet repaired.
    down_gpus: u32,
    /// Which GPUs are down, and since when (with failures configured).
    life: Option<Lifecycle>,
    /// IT energy and carbon, integrated at every change of busy or down GPUs.
    it: PowerMeter,
}

#[derive(Debug, Default)]
struct BatchedStats {
    arrivals: u64,
    /// Requests served over the whole run (energy per request divides by this).
    served_all: u64,
    counted: u64,
    served: u64,
    rejected: u64,
    timed_out: u64,
    lost: u64,
    truncated: u64,
    /// Batches whose time came from a profile extrapolated beyond its measured sizes.
    extrapolated_lookups: u64,
    /// Latency of counted served requests: exact sums of nanoseconds.
    latency_s: DurationSum,
    latency: LatencyHistogram,
    slo_met: u64,
    /// Batches started and the requests they took (whole run).
    batches: u64,
    batched_requests: u64,
    /// Quality of counted served requests.
    quality: CompensatedSum,
    /// The first arrival and the last request served, which bound the measured window.
    first_arrival: Option<SimTime>,
    last_finish: SimTime,
}

impl<O: Observer<RequestRecord>> BatchedServing<O> {
    /// A validated world with no requests yet.
    pub fn new(config: BatchedConfig, observer: O) -> Result<Self, ConfigError> {
        BatchedServing::with_sampling(config, observer, None)
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> BatchedServing<O, S> {
    /// Like [`BatchedServing::new`], also sampling the state every `every` into `sink`.
    pub(crate) fn new_sampled(
        config: BatchedConfig,
        observer: O,
        every: SimDuration,
        sink: S,
    ) -> Result<Self, ConfigError> {
        let sampling = (every > SimDuration::ZERO).then(|| Sampling { grid: Grid::new(every), sink });
        BatchedServing::with_sampling(config, observer, sampling)
    }

    fn with_sampling(config: BatchedConfig, observer: O, sampling: Option<Sampling<S>>) -> Result<Self, ConfigError> {
        config.validate()?;
        let (config_failures, gpu_count) = (config.failures, config.gpus() as usize);
        let arrivals = ArrivalGenerator::new(config.arrivals.clone());
        let total: f64 = config.tasks.iter().map(|t| t.weight).sum();
        let cumulative_weights = config
            .tasks
            .iter()
            .scan(0.0, |acc, t| {
                *acc += t.weight / total;
                Some(*acc)
            })
            .collect();
        let token_samplers = config
            .tasks
            .iter()
            .map(|t| (TokenSampler::new(t.prompt_tokens), TokenSampler::new(t.output_tokens)))
            .collect();
        let history_samplers = config.tasks.iter().map(|t| t.history_tokens.map(TokenSampler::new)).collect();
        let mut nodes = Arena::new();
        let mut gpus = Arena::new();
        for n in 0..config.nodes {
            let mut node = Node::default();
            for place in 0..config.gpus_per_node {
                node.gpus.push(gpus.push(Gpu { node: n, place, ..Gpu::default() }));
            }
            node.free = vec![0; config.gpus_per_node.div_ceil(64) as usize];
            for place in 0..config.gpus_per_node {
                node.set_free(place, true);
            }
            nodes.push(node);
        }
        let horizon = SimTime::from_secs_f64(config.duration_s)
            .map_err(|_| ConfigError::invalid("duration_s", config.duration_s.to_string(), "at most 584 years"))?;
        let warmup = SimTime::from_secs_f64(config.warmup_s)
            .map_err(|_| ConfigError::invalid("warmup_s", config.warmup_s.to_string(), "at most 584 years"))?;
        let max_wait = SimDuration::from_secs_f64(config.max_wait_s)
            .map_err(|_| ConfigError::invalid("max_wait_s", config.max_wait_s.to_string(), "at most 584 years"))?;
        let deadlines = config.tasks.iter().map(|_| Deadlines::default()).collect();
        Ok(BatchedServing {
            warmup,
            max_wait,
            config,
            arrivals,
            cumulative_weights,
            token_samplers,
            history_samplers,
            loads: MinIndex::new(nodes.len()),
            nodes,
            gpus,
            requests: Slab::new(),
            deadlines,
            next_node: 0,
            horizon,
            stats: BatchedStats::default(),
            observer,
            sampling,
            busy_gpus: 0,
            down_gpus: 0,
            life: config_failures.map(|_| Lifecycle::new(gpu_count)),
            it: PowerMeter::default(),
        })
    }

    /// The sample sink, if sampling is on.
    pub fn samples(&self) -> Option<&S> {
        self.sampling.as_ref().map(|s| &s.sink)
    }

    /// Consumes the world, returning its observers.
    pub fn into_observers(self) -> (O, Option<S>) {
        (self.observer, self.sampling.map(|s| s.sink))
    }

    /// Emits every grid instant before `now` with the state that held there.
    fn sample_before(&mut self, now: SimTime) {
        let pue = self.config.pue;
        let (it, busy) = (self.it, self.busy_gpus);
        let power_w = self.it_power_w(busy, self.down_gpus);
        let grid = &self.config.grid;
        let Some(sampling) = self.sampling.as_mut() else { return };
        for t in sampling.grid.due_before(now) {
            // Summed only when an instant is due: most events pass no grid instant.
            let queue_len: u32 = self.nodes.iter().map(|(_, n)| n.queue.len() as u32).sum();
            let energy_kwh = it.energy_j_at(t, power_w) * pue / J_PER_KWH;
            sampling.sink.observe(ServingSample {
                t_s: t.as_secs_f64(),
                queue_len,
                busy_gpus: busy,
                power_kw: power_w * pue / 1000.0,
                energy_kwh,
                carbon_kg: match grid.constant() {
                    Some(kg_per_kwh) => energy_kwh * kg_per_kwh,
                    None => it.carbon_kg_at(t, power_w, grid) * pue,
                },
                running: None,
                kv_usage: None,
                prompt_tokens_per_s: None,
                generation_tokens_per_s: None,
                gpu_power_w: None,
                replicas: None,
                part: None,
                loss: None,
                replicas_training: None,
            });
        }
    }

    /// The request observer.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// Consumes the world, returning its observer.
    pub fn into_observer(self) -> O {
        self.observer
    }

    /// Changes a node's load (requests queued or in its batches) and its routing key.
    fn add_load(&mut self, node: Id<Node>, change: i64) {
        let load = u32::try_from(i64::from(self.nodes[node].load) + change).expect("a node's load stays >= 0");
        self.nodes[node].load = load;
        self.loads.set(node.index() as usize, u64::from(load));
    }

    fn route(&mut self, ctx: &mut Context<'_, BatchedEvent>) -> Id<Node> {
        let n = self.config.nodes;
        let index = match self.config.routing {
            Routing::RoundRobin => {
                let i = self.next_node;
                self.next_node = (i + 1) % n;
                i
            }
            Routing::LeastLoaded => self.loads.argmin().map_or(0, |i| i as u32),
            Routing::Random => ctx.rng(ROUTING_STREAM).random_range(0..n),
        };
        Id::from_index(index)
    }

    fn on_arrival(&mut self, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let replayed = self.arrivals.replayed(self.stats.arrivals as usize);
        let rng = ctx.rng(REQUEST_STREAM);
        let (task, prompt, mut output) = draw_request(replayed, rng, &self.cumulative_weights, &self.token_samplers);
        // Drawn only for tasks that have history, so other scenarios keep their numbers.
        let history_available = self.history_samplers[task].map_or(0, |h| h.sample(rng));
        let history = self.config.history;
        let mut history_tokens = (history.keep_share * f64::from(history_available)).floor() as u32;
        if let Some(limit) = self.config.context_limit_tokens {
            let room = limit.saturating_sub(prompt.saturating_add(output));
            history_tokens = history_tokens.min(room);
        }
        let quality = if history_available == 0 {
            1.0
        } else {
            1.0 - history.quality_loss * (1.0 - f64::from(history_tokens) / f64::from(history_available))
        };
        let prompt = prompt.saturating_add(history_tokens);
        let counted = now >= self.warmup;
        self.stats.arrivals += 1;
        self.stats.counted += u64::from(counted);
        self.stats.first_arrival.get_or_insert(now);
        let mut truncated = false;
        let mut rejected = false;
        if let Some(limit) = self.config.context_limit_tokens
            && prompt.saturating_add(output) > limit
        {
            match self.config.over_limit {
                OverLimit::Truncate if prompt < limit => {
                    output = limit - prompt;
                    truncated = true;
                }
                _ => rejected = true,
            }
        }
        let tokens = prompt.saturating_add(output);
        let request = self.requests.insert(Request {
            id: self.stats.arrivals - 1,
            task: task as u16,
            tokens,
            truncated,
            history_tokens,
            quality,
            node: 0,
            arrival: now,
            start: now,
            timeout_running: false,
        });
        if counted {
            self.stats.truncated += u64::from(truncated);
        }
        if rejected {
            self.stats.rejected += u64::from(counted);
            self.record_unserved(request, RequestOutcome::Rejected, None, 0.0);
        } else {
            let node = self.route(ctx);
            self.requests[request].node = node.index();
            let capacity = self.config.max_queued_per_gpu as usize * self.config.gpus_per_node as usize;
            if self.nodes[node].queue.len() >= capacity {
                self.stats.rejected += u64::from(counted);
                self.record_unserved(request, RequestOutcome::Rejected, None, 0.0);
                return self.next_arrival(ctx);
            }
            if let Some(timeout_s) = self.config.tasks[task].timeout_s {
                self.arm_timeout(task, request, timeout_s, ctx)?;
            }
            self.nodes[node].queue.push_back(request);
            self.add_load(node, 1);
            self.dispatch(node, ctx)?;
        }
        self.next_arrival(ctx)
    }

    /// Starts a queued request's timeout: its deadline joins its task's (in order, the
    /// timeouts of a task being equal), and the task's timer is armed if it is not.
    fn arm_timeout(
        &mut self,
        task: usize,
        request: Id<Request>,
        timeout_s: f64,
        ctx: &mut Context<'_, BatchedEvent>,
    ) -> Result<(), ScheduleError> {
        let deadline = ctx.now().checked_add(SimDuration::from_secs_f64(timeout_s)?).ok_or(ScheduleError::Overflow)?;
        let r = &mut self.requests[request];
        r.timeout_running = true;
        let deadlines = &mut self.deadlines[task];
        deadlines.queue.push_back((deadline, request, r.id));
        deadlines.waiting += 1;
        if deadlines.armed.is_none() {
            deadlines.armed = Some(ctx.schedule(deadline, BatchedEvent::Timeout(task as u16))?);
        }
        Ok(())
    }

    /// Posts the next arrival, if it comes before arrivals stop.
    fn next_arrival(&mut self, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        let next = self.arrivals.next_after(ctx.now(), ctx.rng(ARRIVAL_STREAM))?;
        if next < self.horizon {
            ctx.post(next, BatchedEvent::Arrival)?;
        }
        Ok(())
    }

    /// A task's timeout event: every request of the task still waiting at its deadline
    /// gives up, in arrival order; then the event is scheduled again for the oldest
    /// request still waiting, if any.
    fn on_timeouts(&mut self, task: usize, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.deadlines[task].armed = None;
        while let Some(&(deadline, request, id)) = self.deadlines[task].queue.front() {
            let waiting = self.requests.get(request).is_some_and(|r| r.id == id && r.timeout_running);
            if waiting && deadline > now {
                break;
            }
            self.deadlines[task].queue.pop_front();
            if waiting {
                self.time_out(request, ctx)?;
            }
        }
        let deadlines = &mut self.deadlines[task];
        if let Some(&(deadline, ..)) = deadlines.queue.front()
            && deadlines.armed.is_none()
        {
            deadlines.armed = Some(ctx.schedule(deadline, BatchedEvent::Timeout(task as u16))?);
        }
        Ok(())
    }

    /// A waiting request gives up: it leaves its node's queue, and the node's batch
    /// timer is recomputed, since the oldest request may have changed.
    fn time_out(&mut self, request: Id<Request>, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        let node: Id<Node> = Id::from_index(self.requests[request].node);
        self.requests[request].timeout_running = false;
        self.deadlines[usize::from(self.requests[request].task)].leave(ctx);
        let queue = &mut self.nodes[node].queue;
        let position = queue.iter().position(|r| *r == request).expect("a timeout fires only for a waiting request");
        queue.remove(position);
        self.add_load(node, -1);
        if self.requests[request].arrival >= self.warmup {
            self.stats.timed_out += 1;
        }
        self.record_unserved(request, RequestOutcome::TimedOut, Some(ctx.now()), 0.0);
        self.dispatch(node, ctx)
    }

    /// Records a request that was not served; `energy_kwh` is what was spent on it
    /// (a lost batch's share of its GPU's energy up to the failure).
    fn record_unserved(
        &mut self,
        request: Id<Request>,
        outcome: RequestOutcome,
        gave_up: Option<SimTime>,
        energy_kwh: f64,
    ) {
        let r = self.requests.remove(request);
        self.observer.observe(RequestRecord {
            request_id: r.id,
            task: r.task,
            tokens: r.tokens,
            truncated: r.truncated,
            history_tokens: r.history_tokens,
            quality: Some(r.quality),
            user_score: None,
            arrival_s: r.arrival.as_secs_f64(),
            start_s: None,
            finish_s: gave_up.map(SimTime::as_secs_f64),
            node: gave_up.map(|_| r.node),
            gpu: None,
            batch_size: None,
            energy_kwh,
            outcome,
            slo_met: false,
            warmup: r.arrival < self.warmup,
            input_tokens: None,
            output_tokens: None,
            first_scheduled_s: None,
            first_token_s: None,
            preemptions: None,
            cached_tokens: None,
            replica: None,
            pool: None,
        });
    }

    /// Starts batches on free GPUs while the batching rule allows, and keeps the
    /// node's timer on the instant its oldest request will have waited `max_wait_s`.
    fn dispatch(&mut self, node_id: Id<Node>, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let max_batch = self.config.max_batch as usize;
        let max_wait = self.max_wait;
        loop {
            let node = &self.nodes[node_id];
            let Some(&oldest) = node.queue.front() else { break };
            let due = self.requests[oldest].arrival.checked_add(max_wait).ok_or(ScheduleError::Overflow)?;
            let ready = node.queue.len() >= max_batch || due <= now;
            let free = node.first_free();
            debug_assert_eq!(
                free,
                node.gpus.iter().copied().find(|g| self.gpus[*g].batch.is_empty()
                    && !self.life.as_ref().is_some_and(|l| l.is_down(g.index() as usize)))
            );
            match (ready, free) {
                (true, Some(gpu)) => self.start_batch(node_id, gpu, ctx)?,
                (false, Some(_)) => {
                    // Wait for the batch to fill, at most until `due`.
                    let node = &mut self.nodes[node_id];
                    match node.timer.and_then(|t| ctx.time_of(t)) {
                        Some(at) if at == due => {}
                        Some(_) => node.timer = Some(ctx.reschedule(node.timer.expect("pending"), due)?),
                        None => node.timer = Some(ctx.schedule(due, BatchedEvent::BatchTimer(node_id))?),
                    }
                    return Ok(());
                }
                (_, None) => break,
            }
        }
        // No timer is needed when the queue is empty or every GPU is busy (a finishing
        // batch dispatches again).
        if let Some(timer) = self.nodes[node_id].timer.take() {
            ctx.cancel(timer);
        }
        Ok(())
    }

    fn start_batch(
        &mut self,
        node_id: Id<Node>,
        gpu: Id<Gpu>,
        ctx: &mut Context<'_, BatchedEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let take = (self.config.max_batch as usize).min(self.nodes[node_id].queue.len());
        // The GPU's empty batch keeps its capacity from the last one: no allocation.
        let mut batch = std::mem::take(&mut self.gpus[gpu].batch);
        batch.extend(self.nodes[node_id].queue.drain(..take));
        let tokens: f64 = batch.iter().map(|r| f64::from(self.requests[*r].tokens)).sum();
        for r in &batch {
            let request = &mut self.requests[*r];
            request.start = now;
            if std::mem::take(&mut request.timeout_running) {
                self.deadlines[usize::from(request.task)].leave(ctx);
            }
        }
        let (service_s, extrapolated) = self.config.service.seconds(batch.len(), tokens);
        self.stats.extrapolated_lookups += u64::from(extrapolated);
        self.stats.batches += 1;
        self.stats.batched_requests += batch.len() as u64;
        self.nodes[node_id].set_free(self.gpus[gpu].place, false);
        self.gpus[gpu].batch = batch;
        self.set_busy(now, self.busy_gpus + 1);
        self.gpus[gpu].done = Some(ctx.schedule(SimDuration::from_secs_f64(service_s)?, BatchedEvent::BatchDone(gpu))?);
        Ok(())
    }

    fn on_batch_done(&mut self, gpu_id: Id<Gpu>, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let mut batch = std::mem::take(&mut self.gpus[gpu_id].batch);
        self.gpus[gpu_id].done = None;
        self.set_busy(now, self.busy_gpus - 1);
        let node_id: Id<Node> = Id::from_index(self.gpus[gpu_id].node);
        let start = self.requests[batch[0]].start;
        let busy_s = (now - start).as_secs_f64();
        self.gpus[gpu_id].busy_s += busy_s;
        let energy_share_kwh = self.config.gpu_max_w * busy_s / J_PER_KWH / batch.len() as f64;
        for r in &batch {
            let req = self.requests.remove(*r);
            let latency = now - req.arrival;
            let slo_met = latency.as_secs_f64() <= self.config.tasks[req.task as usize].slo_s;
            let counted = req.arrival >= self.warmup;
            self.stats.served_all += 1;
            self.stats.last_finish = now;
            if counted {
                self.stats.served += 1;
                self.stats.latency_s.add(latency);
                self.stats.latency.record(latency);
                self.stats.slo_met += u64::from(slo_met);
                self.stats.quality.add(req.quality);
            }
            self.observer.observe(RequestRecord {
                request_id: req.id,
                task: req.task,
                tokens: req.tokens,
                truncated: req.truncated,
                history_tokens: req.history_tokens,
                quality: Some(req.quality),
                user_score: None,
                arrival_s: req.arrival.as_secs_f64(),
                start_s: Some(req.start.as_secs_f64()),
                finish_s: Some(now.as_secs_f64()),
                node: Some(node_id.index()),
                gpu: Some(gpu_id.index()),
                batch_size: Some(batch.len() as u32),
                energy_kwh: energy_share_kwh,
                outcome: RequestOutcome::Served,
                slo_met,
                warmup: !counted,
                input_tokens: None,
                output_tokens: None,
                first_scheduled_s: None,
                first_token_s: None,
                preemptions: None,
                cached_tokens: None,
                replica: None,
                pool: None,
            });
        }
        self.add_load(node_id, -(batch.len() as i64));
        batch.clear();
        self.gpus[gpu_id].batch = batch;
        self.nodes[node_id].set_free(self.gpus[gpu_id].place, true);
        self.dispatch(node_id, ctx)
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> Model for BatchedServing<O, S> {
    type Event = BatchedEvent;
    type Error = ScheduleError;

    fn handle(&mut self, event: BatchedEvent, ctx: &mut Context<'_, BatchedEvent>) -> Result<(), ScheduleError> {
        if self.sampling.is_some() {
            self.sample_before(ctx.now());
        }
        match event {
            BatchedEvent::Arrival => self.on_arrival(ctx),
            BatchedEvent::BatchTimer(node) => {
                self.nodes[node].timer = None;
                self.dispatch(node, ctx)
            }
            BatchedEvent::BatchDone(gpu) => self.on_batch_done(gpu, ctx),
            BatchedEvent::Timeout(task) => self.on_timeouts(usize::from(task), ctx),
            BatchedEvent::GpuFails(gpu) => self.on_gpu_fails(gpu, ctx),
            BatchedEvent::GpuRepaired(gpu) => self.on_gpu_repaired(gpu, ctx),
        }
    }
}

/// Builds one replication with its first arrival scheduled.
pub fn build_batched<O: Observer<RequestRecord>>(
    config: &BatchedConfig,
    observer: O,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<BatchedServing<O>>, ConfigError> {
    start(BatchedServing::new(config.clone(), observer)?, master_seed, replication)
}

/// Like [`build_batched`], also sampling the state every `every` into `samples`.
pub(crate) fn build_sampled_batched<O: Observer<RequestRecord>, S: Observer<ServingSample>>(
    config: &BatchedConfig,
    observer: O,
    every: SimDuration,
    samples: S,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<BatchedServing<O, S>>, ConfigError> {
    start(BatchedServing::new_sampled(config.clone(), observer, every, samples)?, master_seed, replication)
}

fn start<O: Observer<RequestRecord>, S: Observer<ServingSample>>(
    world: BatchedServing<O, S>,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<BatchedServing<O, S>>, ConfigError> {
    let mut sim = Simulation::with_queue(world, QueueKind::default(), master_seed, replication);
    let err = |e: ScheduleError| ConfigError::invalid("arrivals", e.to_string(), "a first arrival within 584 years");
    let mut arrivals = sim.model().arrivals.clone();
    let first = arrivals.next_after(SimTime::ZERO, sim.rng(ARRIVAL_STREAM)).map_err(err)?;
    sim.model_mut().arrivals = arrivals;
    if first < sim.model().horizon {
        sim.post(first, BatchedEvent::Arrival).map_err(err)?;
    }
    if let Some(failures) = sim.model().config.failures {
        let horizon = sim.model().horizon;
        for gpu in sim.model().gpus.ids().collect::<Vec<_>>() {
            let up_s = failures.time_to_failure_s(sim.rng(failure_stream(gpu)));
            let at = SimTime::from_secs_f64(up_s).map_err(err)?;
            if at < horizon {
                sim.schedule(at, BatchedEvent::GpuFails(gpu)).map_err(err)?;
            }
        }
    }
    Ok(sim)
}

/// Runs a built replication until every request is done and returns its metrics.
pub(crate) fn finish_batched<O: Observer<RequestRecord>, S: Observer<ServingSample>>(
    sim: &mut Simulation<BatchedServing<O, S>>,
) -> Result<BatchedRun, ScheduleError> {
    sim.run(Default::default())?;
    Ok(sim.model().results(sim.now(), sim.events_handled()))
}

/// Runs one replication to completion, untraced.
pub fn run_batched(
    config: &BatchedConfig,
    master_seed: u64,
    replication: u64,
) -> Result<BatchedRun, crate::error::RunError> {
    let mut sim = build_batched(config, NullObserver, master_seed, replication)?;
    Ok(finish_batched(&mut sim)?)
}

/// Runs one replication of the static engine, handing trace rows to `traces`.
pub fn run_traced<R: Observer<RequestRecord>, S: Observer<ServingSample>>(
    config: &BatchedConfig,
    replication: crate::world::Replication,
    traces: crate::world::Traces<'_, R, S>,
) -> Result<crate::world::Metrics, crate::error::RunError> {
    let (seed, rep) = (replication.master_seed, replication.index);
    let run = match traces.sample_every {
        Some(every) => {
            let mut sim = build_sampled_batched(config, traces.requests, every, traces.samples, seed, rep)?;
            replication.attach(&mut sim, SimTime::from_secs_f64(config.duration_s).ok());
            finish_batched(&mut sim)?
        }
        None => {
            let mut sim = build_batched(config, traces.requests, seed, rep)?;
            replication.attach(&mut sim, SimTime::from_secs_f64(config.duration_s).ok());
            finish_batched(&mut sim)?
        }
    };
    replication.finished(run.metrics())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrivals::ArrivalProcess;
    use crate::failures::Failures;
    use crate::grid::CarbonIntensity;
    use crate::requests::{DEFAULT_MAX_QUEUED, Task, TokenCount};
    use infersim_engine::VecObserver;

    /// One node, one GPU, evenly spaced arrivals at 1/s, 0.5 s per request, no warm-up;
    /// 100 + 50 tokens, a 200 W node, PUE 1.5, 0.4 kg/kWh and prices.
    fn simple() -> BatchedConfig {
        let arrivals = ArrivalProcess::Deterministic { rate_per_s: 1.0, first_gap_fraction: 1.0 };
        let mut c = BatchedConfig::single_gpu(arrivals, 0.5, 100.0);
        c.tasks[0].prompt_tokens = TokenCount::Fixed { tokens: 100 };
        c.tasks[0].output_tokens = TokenCount::Fixed { tokens: 50 };
        c.node_baseline_w = 200.0;
        c.pue = 1.5;
        c.grid = CarbonIntensity::Constant { kg_per_kwh: 0.4 };
        c.energy_usd_per_kwh = 0.1;
        c.gpu_usd_per_hour = 2.0;
        c
    }

    fn run_traced(config: &BatchedConfig) -> (BatchedRun, Vec<RequestRecord>) {
        let mut sim = build_batched(config, VecObserver::default(), 1, 0).unwrap();
        sim.run(Default::default()).unwrap();
        let run = sim.model().results(sim.now(), sim.events_handled());
        (run, sim.into_model().into_observer().rows)
    }

    #[test]
    fn a_varying_grid_integrates_power_times_intensity() {
        // A flat cycle gives what the constant gives.
        let mut flat = simple();
        flat.grid = CarbonIntensity::Diurnal { kg_per_kwh: 0.4, amplitude: 0.0, peak_h: 0.0, period_h: 24.0 };
        let (constant, _) = run_traced(&simple());
        let (cycle, _) = run_traced(&flat);
        assert!((cycle.carbon_kg.unwrap() - constant.carbon_kg.unwrap()).abs() < 1e-12 * constant.carbon_kg.unwrap());
        // A 2-second cycle peaking at 1 s: intensity 0.4 (1 + cos(pi (t - 1))), t in s.
        let mut cycle = simple();
        cycle.grid =
            CarbonIntensity::Diurnal { kg_per_kwh: 0.4, amplitude: 1.0, peak_h: 1.0 / 3600.0, period_h: 2.0 / 3600.0 };
        let (run, _) = run_traced(&cycle);
        // By hand. Request k (1..=99) is served on [k, k + 0.5]: the cosine averages
        // +2/pi there for odd k (50 of them) and -2/pi for even k (49), and the other
        // way round on the idle half-second after it (k = 1..=98). [0, 1] is idle at
        // mean intensity 0.4. The 200 W baseline runs to 99.5 s, where the integral of
        // the intensity is 0.4 (99.5 + sin(98.5 pi) / pi) = 0.4 (99.5 + 1 / pi).
        let pi = std::f64::consts::PI;
        let joules_kg_per_kwh = 400.0 * 0.5 * 0.4 * (99.0 + 2.0 / pi) // busy
            + 100.0 * 0.5 * 0.4 * 98.0 // idle half-seconds
            + 100.0 * 1.0 * 0.4 // idle first second
            + 200.0 * 0.4 * (99.5 + 1.0 / pi); // baseline
        let expected_kg = joules_kg_per_kwh * 1.5 / J_PER_KWH;
        assert!(
            (run.carbon_kg.unwrap() - expected_kg).abs() < 1e-9 * expected_kg,
            "{} vs {expected_kg}",
            run.carbon_kg.unwrap()
        );
    }

    #[test]
    fn energy_is_accounted_exactly() {
        let (run, rows) = run_traced(&simple());
        // Arrivals at 1, 2, ..., 99 s; the last is served by 99.5 s.
        assert_eq!(rows.len(), 99);
        assert_eq!(run.run_s, 99.5);
        let kwh = |w: f64, s: f64| w * s / 3.6e6;
        assert!((run.energy_gpu_busy_kwh - kwh(400.0, 49.5)).abs() < 1e-15);
        assert!((run.energy_gpu_idle_kwh - kwh(100.0, 50.0)).abs() < 1e-15);
        assert!((run.energy_baseline_kwh - kwh(200.0, 99.5)).abs() < 1e-15);
        let it = run.energy_gpu_busy_kwh + run.energy_gpu_idle_kwh + run.energy_baseline_kwh;
        assert!((run.energy_overhead_kwh - 0.5 * it).abs() < 1e-15);
        assert!((run.energy_kwh - 1.5 * it).abs() < 1e-15, "total = parts");
        assert!((run.carbon_kg.unwrap() - 0.4 * run.energy_kwh).abs() < 1e-15);
        assert!((run.cost_usd.unwrap() - (0.1 * run.energy_kwh + 2.0 * 99.5 / 3600.0)).abs() < 1e-12);
        assert!((run.gpu_utilisation - 49.5 / 99.5).abs() < 1e-12);
        let shares: f64 = rows.iter().map(|r| r.energy_kwh).sum();
        assert!((shares - run.energy_gpu_busy_kwh).abs() < 1e-12, "per-request shares add up to GPU busy energy");
        assert_eq!(run.latency_mean_s, Some(0.5));
        assert_eq!(run.slo_attainment, Some(1.0));
        // Per second of the measured window: the first arrival (1 s) to the last
        // request served (99.5 s), not the arrival window.
        assert!((run.throughput_per_s - 99.0 / 98.5).abs() < 1e-12, "{}", run.throughput_per_s);
    }

    #[test]
    fn full_batches_start_at_once_and_partial_ones_when_the_oldest_has_waited() {
        // Batches of 4 fill within 3 s, well before the 10 s limit.
        let mut config = simple();
        config.max_batch = 4;
        config.max_wait_s = 10.0;
        config.service = BatchTime::Affine { base_s: 0.0, per_request_s: 0.1, per_token_s: 0.0 };
        config.duration_s = 100.5; // 100 arrivals: 25 full batches
        let (run, rows) = run_traced(&config);
        assert_eq!(run.batch_size_mean, Some(4.0));
        let first = &rows[0];
        assert_eq!((first.arrival_s, first.start_s, first.batch_size), (1.0, Some(4.0), Some(4)));
        // With a 0.5 s limit at one request per second, every batch is a lone request
        // that waited exactly 0.5 s: the timer path.
        config.max_wait_s = 0.5;
        let (run, rows) = run_traced(&config);
        assert_eq!(run.batch_size_mean, Some(1.0));
        assert!(rows.iter().all(|r| (r.start_s.unwrap() - r.arrival_s - 0.5).abs() < 1e-9), "{:?}", &rows[..2]);
        // The last requests of a run are not stranded: a partial final batch still runs.
        config.max_wait_s = 10.0;
        config.duration_s = 102.5; // 102 arrivals: 25 batches of 4 and one of 2
        let (run, rows) = run_traced(&config);
        assert_eq!(rows.len(), 102);
        assert_eq!(run.served, 102);
        let last = rows.last().unwrap();
        assert_eq!((last.batch_size, last.start_s), (Some(2), Some(111.0)), "waited 10 s from its arrival at 101 s");
    }

    #[test]
    fn records_are_consistent_under_load_with_several_nodes() {
        let mut config = simple();
        config.arrivals = ArrivalProcess::Poisson { rate_per_s: 30.0 };
        config.tasks.push(Task {
            name: "code".into(),
            weight: 3.0,
            prompt_tokens: TokenCount::LogNormal { mean: 400.0, cv: 0.8 },
            output_tokens: TokenCount::LogNormal { mean: 200.0, cv: 1.0 },
            slo_s: 3.0,
            timeout_s: None,
            history_tokens: None,
            shared_prefix_tokens: None,
            session: None,
            model: None,
            ttft_slo_s: None,
            tpot_slo_s: None,
        });
        config.nodes = 3;
        config.gpus_per_node = 2;
        config.max_batch = 8;
        config.max_wait_s = 0.05;
        config.service = BatchTime::Affine { base_s: 0.05, per_request_s: 0.01, per_token_s: 0.0002 };
        config.warmup_s = 20.0;
        for routing in [Routing::RoundRobin, Routing::LeastLoaded, Routing::Random] {
            config.routing = routing;
            let (run, rows) = run_traced(&config);
            assert_eq!(run.requests, run.served);
            assert!(rows.iter().all(|r| {
                let (start, finish) = (r.start_s.unwrap(), r.finish_s.unwrap());
                r.arrival_s <= start && start < finish && r.batch_size.unwrap() <= 8
            }));
            assert!(rows.iter().all(|r| r.gpu.unwrap() / 2 == r.node.unwrap()), "a GPU belongs to its node");
            let code = rows.iter().filter(|r| r.task == 1).count() as f64 / rows.len() as f64;
            assert!((code - 0.75).abs() < 0.03, "task mix {code}");
            assert!(run.batch_size_mean.unwrap() > 1.0, "{routing:?}: load makes batches");
            let nodes_used: std::collections::BTreeSet<u32> = rows.iter().filter_map(|r| r.node).collect();
            assert_eq!(nodes_used.len(), 3, "{routing:?}");
        }
    }

    #[test]
    fn each_task_s_timeout_event_serves_all_its_requests() {
        let mut config = simple();
        config.arrivals = ArrivalProcess::Poisson { rate_per_s: 5.0 };
        config.nodes = 2;
        config.max_batch = 2;
        config.service = BatchTime::Affine { base_s: 0.5, per_request_s: 0.5, per_token_s: 0.0 };
        let mut slow = config.tasks[0].clone();
        slow.name = "patient".into();
        slow.timeout_s = Some(4.0);
        config.tasks[0].timeout_s = Some(1.0);
        config.tasks.push(slow);
        let (run, rows) = run_traced(&config);
        assert_eq!(run.requests, run.served + run.timed_out + run.rejected);
        let mut outcomes = [[0_u32; 2]; 2];
        for r in &rows {
            let timeout_s = [1.0, 4.0][usize::from(r.task)];
            match r.outcome {
                RequestOutcome::Served => {
                    assert!(r.start_s.unwrap() - r.arrival_s <= timeout_s + 1e-9, "{r:?}");
                    outcomes[usize::from(r.task)][0] += 1;
                }
                RequestOutcome::TimedOut => {
                    assert!((r.finish_s.unwrap() - r.arrival_s - timeout_s).abs() < 1e-9, "{r:?}");
                    outcomes[usize::from(r.task)][1] += 1;
                }
                _ => panic!("{r:?}"),
            }
        }
        assert!(outcomes.iter().flatten().all(|&n| n > 10), "both tasks both served and timed out: {outcomes:?}");
    }

    #[test]
    fn requests_that_wait_too_long_time_out_and_leave_the_queue() {
        // One request per second, each taking 3 s alone: the queue grows, and requests
        // give up after waiting 2.5 s.
        let mut config = simple();
        config.service = BatchTime::Affine { base_s: 0.0, per_request_s: 3.0, per_token_s: 0.0 };
        config.tasks[0].timeout_s = Some(2.5);
        config.tasks[0].slo_s = 10.0;
        let (run, rows) = run_traced(&config);
        assert_eq!(rows.len() as u64, run.requests, "a record per request, whatever its outcome");
        assert_eq!(run.requests, run.served + run.timed_out + run.rejected);
        assert!(run.timed_out > 0 && run.served > 0, "{run:?}");
        for r in &rows {
            match r.outcome {
                RequestOutcome::Served => assert!(r.start_s.unwrap() - r.arrival_s <= 2.5 + 1e-9, "{r:?}"),
                RequestOutcome::TimedOut => {
                    assert!((r.finish_s.unwrap() - r.arrival_s - 2.5).abs() < 1e-9, "gave up at its timeout: {r:?}");
                    assert_eq!((r.start_s, r.gpu, r.energy_kwh), (None, None, 0.0));
                }
                RequestOutcome::Rejected | RequestOutcome::Lost => panic!("no context limit or failures here: {r:?}"),
            }
        }
        // The GPU is busy 3 s per served request and arrivals come every second, so
        // about a third are served.
        let share = run.served as f64 / run.requests as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.02, "{share}");
        assert_eq!(run.slo_attainment, Some(share), "a timed-out request misses its SLO");
    }

    /// A node's queue holds at most `max_queued_per_gpu` per GPU: later arrivals are
    /// rejected, and the queue never grows beyond it.
    #[test]
    fn a_full_queue_rejects_arrivals() {
        // One arrival per second, 3 s per request: overload.
        let mut config = simple();
        config.service = BatchTime::Affine { base_s: 0.0, per_request_s: 3.0, per_token_s: 0.0 };
        config.max_queued_per_gpu = 4;
        let (run, rows) = run_traced(&config);
        assert_eq!(run.requests, run.served + run.rejected);
        assert!(run.rejected > 0 && run.served > 0, "{run:?}");
        // Each served request waited behind at most four others, 3 s each.
        let longest_wait = rows.iter().filter_map(|r| r.start_s.map(|s| s - r.arrival_s)).fold(0.0, f64::max);
        assert!(longest_wait <= 4.0 * 3.0 + 1e-9, "{longest_wait}");
        assert!(rows.iter().filter(|r| r.outcome == RequestOutcome::Rejected).all(|r| r.energy_kwh == 0.0));
        // Unbounded by default in effect: 100,000 per GPU.
        let (free, _) = run_traced(&BatchedConfig { max_queued_per_gpu: DEFAULT_MAX_QUEUED, ..config });
        assert_eq!(free.rejected, 0);
    }

    #[test]
    fn the_context_limit_rejects_or_truncates_visibly() {
        let mut config = simple(); // 100 prompt + 50 output tokens
        config.context_limit_tokens = Some(120);
        let (run, rows) = run_traced(&config);
        assert_eq!((run.rejected, run.served, run.truncated), (99, 0, 0));
        assert!(rows.iter().all(|r| r.outcome == RequestOutcome::Rejected && r.node.is_none()));
        assert_eq!(run.energy_per_request_kwh, None, "nothing served");
        config.over_limit = OverLimit::Truncate;
        let (run, rows) = run_traced(&config);
        assert_eq!((run.rejected, run.served, run.truncated), (0, 99, 99));
        assert!(rows.iter().all(|r| r.truncated && r.tokens == 120));
        // A prompt that alone exceeds the limit cannot be truncated to fit.
        config.context_limit_tokens = Some(90);
        let (run, _) = run_traced(&config);
        assert_eq!((run.rejected, run.truncated), (99, 0));
    }

    #[test]
    fn history_is_kept_by_share_cut_first_at_the_limit_and_costs_quality() {
        let mut config = simple(); // 100 prompt + 50 output tokens
        config.tasks[0].history_tokens = Some(TokenCount::Fixed { tokens: 400 });
        config.history = History { keep_share: 0.5, quality_loss: 0.3 };
        let (run, rows) = run_traced(&config);
        // Half the history: 200 tokens sent, quality 1 - 0.3 x 0.5.
        assert!(rows.iter().all(|r| r.history_tokens == 200
            && r.tokens == 350
            && r.quality.is_some_and(|q| (q - 0.85).abs() < 1e-12)));
        assert_eq!(run.quality_mean, Some(0.85));
        // Under a 300-token limit the history shrinks to what fits, before the output.
        config.context_limit_tokens = Some(300);
        let (run, rows) = run_traced(&config);
        assert!(rows.iter().all(|r| r.history_tokens == 150 && r.tokens == 300 && !r.truncated));
        assert!((run.quality_mean.unwrap() - (1.0 - 0.3 * (1.0 - 150.0 / 400.0))).abs() < 1e-12);
        // More history, more tokens, longer batches: latency grows with the share kept.
        config.context_limit_tokens = None;
        config.service = BatchTime::Affine { base_s: 0.1, per_request_s: 0.0, per_token_s: 0.001 };
        let latency = |share: f64| {
            let mut c = config.clone();
            c.history.keep_share = share;
            run_traced(&c).0.latency_mean_s.unwrap()
        };
        assert!(latency(0.0) < latency(0.5) && latency(0.5) < latency(1.0));
        // A task without history draws nothing: its numbers do not change.
        let plain = simple();
        let mut with_policy = simple();
        with_policy.history = History { keep_share: 0.2, quality_loss: 0.9 };
        assert_eq!(run_traced(&plain), run_traced(&with_policy));
    }

    #[test]
    fn more_gpus_see_the_same_requests() {
        let mut config = simple();
        config.arrivals = ArrivalProcess::Poisson { rate_per_s: 1.5 };
        config.tasks[0].prompt_tokens = TokenCount::LogNormal { mean: 100.0, cv: 1.0 };
        let key = |rows: Vec<RequestRecord>| {
            let mut v: Vec<(u64, u64, u32)> =
                rows.iter().map(|r| (r.request_id, r.arrival_s.to_bits(), r.tokens)).collect();
            v.sort();
            v
        };
        let (_, one) = run_traced(&config);
        config.gpus_per_node = 3;
        let (_, three) = run_traced(&config);
        assert_eq!(key(one), key(three));
    }

    #[test]
    fn sampling_matches_the_energy_account_and_changes_nothing() {
        let mut config = simple();
        config.arrivals = ArrivalProcess::Poisson { rate_per_s: 1.5 };
        config.gpus_per_node = 2;
        let (plain, _) = run_traced(&config);
        let every = SimDuration::from_secs(1).unwrap();
        let mut sim = build_sampled_batched(&config, NullObserver, every, VecObserver::default(), 1, 0).unwrap();
        sim.run(Default::default()).unwrap();
        let sampled = sim.model().results(sim.now(), sim.events_handled());
        assert_eq!(plain, sampled, "sampling must not change the run");
        let samples = &sim.model().samples().unwrap().rows;
        assert_eq!(samples.len(), sim.now().as_secs_f64().ceil() as usize);
        let (idle_kw, max_kw) = ((2.0 * 100.0 + 200.0) * 1.5 / 1000.0, (2.0 * 400.0 + 200.0) * 1.5 / 1000.0);
        for s in samples {
            assert!(s.busy_gpus <= 2);
            let expected_kw =
                (f64::from(s.busy_gpus) * 400.0 + f64::from(2 - s.busy_gpus) * 100.0 + 200.0) * 1.5 / 1000.0;
            assert!((s.power_kw - expected_kw).abs() < 1e-12 && (idle_kw..=max_kw).contains(&s.power_kw));
            assert!((s.carbon_kg - 0.4 * s.energy_kwh).abs() < 1e-15);
        }
        assert!(samples.windows(2).all(|w| w[1].energy_kwh >= w[0].energy_kwh), "cumulative energy never falls");
        // The last sample lies within a second of the end, at most 1 s of full power short.
        let last = samples.last().unwrap();
        let gap_kwh = max_kw * (sim.now().as_secs_f64() - last.t_s) / 3600.0;
        assert!(
            last.energy_kwh <= sampled.energy_kwh + 1e-12 && sampled.energy_kwh - last.energy_kwh <= gap_kwh + 1e-12
        );
    }

    #[test]
    fn failing_gpus_lose_their_batch_and_draw_no_power_while_down() {
        let mut config = simple();
        config.arrivals = ArrivalProcess::Poisson { rate_per_s: 2.0 };
        config.gpus_per_node = 4;
        config.duration_s = 3600.0;
        config.failures = Some(Failures { mtbf_h: 0.05, mttr_h: 0.01 });
        let every = SimDuration::from_secs(1).unwrap();
        let mut sim =
            build_sampled_batched(&config, VecObserver::default(), every, VecObserver::default(), 1, 0).unwrap();
        sim.run(Default::default()).unwrap();
        let run = sim.model().results(sim.now(), sim.events_handled());
        let rows = &sim.model().observer().rows;
        assert!(run.gpu_failures > 50 && run.lost > 0, "{run:?}");
        assert_eq!(run.requests, run.served + run.lost + run.timed_out + run.rejected);
        for r in rows.iter().filter(|r| r.outcome == RequestOutcome::Lost) {
            assert!(r.node.is_some() && r.gpu.is_none() && r.start_s.is_none() && r.energy_kwh > 0.0, "{r:?}");
        }
        let shares: f64 = rows.iter().map(|r| r.energy_kwh).sum();
        assert!((shares - run.energy_gpu_busy_kwh).abs() < 1e-12, "served and lost shares add up to GPU busy energy");
        // Two accountings of energy agree: totals from busy and down seconds, and the
        // running integral behind the samples (which a forgotten down time would break
        // by tens of watt-hours).
        let last = sim.model().samples().unwrap().rows.last().unwrap();
        let max_kw = (4.0 * 400.0 + 200.0) * 1.5 / 1000.0;
        let gap_kwh = max_kw * (sim.now().as_secs_f64() - last.t_s) / 3600.0;
        assert!(last.energy_kwh <= run.energy_kwh + 1e-12 && run.energy_kwh - last.energy_kwh <= gap_kwh + 1e-12);
        assert!(
            sim.model()
                .samples()
                .unwrap()
                .rows
                .iter()
                .any(|s| s.power_kw < (200.0 * 1.5) / 1000.0 + 4.0 * 0.1 * 1.5 - 0.01),
            "some samples see a GPU off"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = simple();
        c.pue = 0.9;
        assert_eq!(c.validate().unwrap_err().to_string(), "pue = 0.9 is invalid: expected a finite number >= 1");
        let mut c = simple();
        c.tasks[0].weight = 0.0;
        assert_eq!(c.validate().unwrap_err().key(), "tasks[0].weight");
        let mut c = simple();
        c.gpu_max_w = 50.0;
        assert_eq!(c.validate().unwrap_err().key(), "gpu_max_w");
        let mut c = simple();
        c.warmup_s = 200.0;
        assert_eq!(c.validate().unwrap_err().key(), "duration_s");
    }
}
