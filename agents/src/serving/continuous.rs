//! The serving world's `continuous` engine: LLM replicas that run engine iterations
//! (the shared [`crate::llm`] replica: vLLM V1 scheduling, paged KV cache, a step-time
//! model) behind a router.
//!
//! One event per step per replica; tokens are counted inside the step, never one event
//! each. A replica's GPUs draw [`GpuSpec::step_power_w`] during a step (its host time
//! included, as the curve was fitted) and `idle_w` with nothing to do; nodes add
//! their baseline and the facility its PUE. Requests come open loop (any
//! [`ArrivalProcess`], a replayed trace included) or from `concurrency` closed-loop
//! clients. TTFT = first token - arrival; TPOT = (last token - first token) / (output
//! tokens - 1); ITL = gap between consecutive tokens of a request; E2E = last token -
//! arrival (vLLM's benchmark definitions).

use infersim_engine::sampling::Grid;
use infersim_engine::stats::{LatencyHistogram, Tally};
use infersim_engine::{Context, EventId, Id, Model, Observer, ScheduleError, SimDuration, SimTime, Slab, StreamId};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::{
    ARRIVAL_STREAM, ArrivalGenerator, ArrivalProcess, FAILURE_STREAM_BASE, REQUEST_STREAM, ROUTING_STREAM,
    RequestOutcome, RequestRecord, ServingSample, Task, TokenSampler, draw_request,
};
use crate::error::{ConfigError, RunError, check};
use crate::failures::Failures;
use crate::grid::CarbonIntensity;
use crate::llm::{EngineLimits, GpuSpec, ModelSpec, Replica, Sequence, StepModel, StepTime, TokenEvent};
use crate::min_index::MinIndex;
use crate::power::PowerMeter;
use crate::world::{MAX_DURATION_S, Metrics, Replication};

const J_PER_KWH: f64 = 3.6e6;

/// The routing key of a replica that is down: above any load.
const DOWN: u64 = u32::MAX as u64 - 1;

/// How the router in front of the replicas picks one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmRouting {
    /// Replicas in turn.
    RoundRobin,
    /// The replica with the fewest requests waiting or running (lowest index on ties).
    #[serde(alias = "least_loaded")]
    LeastOutstandingRequests,
    /// The replica whose KV cache is least used (then fewest waiting).
    LeastKvUsage,
    /// The replica with the fewest tokens still to compute or generate.
    LeastOutstandingTokens,
    /// Two replicas at random, the one with fewer outstanding requests.
    PowerOfTwoChoices,
    /// A replica uniformly at random.
    Random,
}

/// Measured numbers to print beside a run's (a real engine's run of the same
/// workload), by metric name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Where they come from.
    pub source: String,
    /// (metric, value) pairs.
    pub values: Vec<(String, f64)>,
}

/// Prefill/decode disaggregation: the first `prefill_replicas` replicas prefill
/// prompts and produce first tokens; the rest decode. A prompt's KV cache
/// (`prompt x KV bytes per token`) crosses a link from its prefill replica (one transfer
/// at a time per replica) before the request queues at a decode replica.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disaggregation {
    /// Replicas in the prefill pool (the first ones); the others decode.
    pub prefill_replicas: u32,
    /// Link bandwidth from a prefill replica (GB/s).
    pub link_gb_per_s: f64,
    /// Latency of one transfer (µs).
    pub link_latency_us: f64,
}

/// Everything that defines a token-level serving world.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmServingConfig {
    /// How requests arrive (a closed loop included).
    pub arrivals: ArrivalProcess,
    /// Kinds of request.
    pub tasks: Vec<Task>,
    /// Router.
    pub routing: LlmRouting,
    /// Nodes, >= 1.
    pub nodes: u32,
    /// Replicas per node, >= 1.
    pub replicas_per_node: u32,
    /// GPUs per replica (tensor parallel), >= 1.
    pub tp: u32,
    /// Scheduler limits and KV blocks.
    pub limits: EngineLimits,
    /// Most requests waiting at one replica: an arrival routed to a replica whose
    /// queue is full is rejected (a real server answers 429).
    pub max_queued_requests: u32,
    /// Most prompt plus output tokens a request may have (vLLM's `max_model_len`):
    /// longer requests are rejected at arrival, as vLLM refuses them; `None` for no
    /// limit.
    pub context_limit_tokens: Option<u32>,
    /// Host time per step: scheduling, input preparation, launches (s).
    pub step_overhead_s: f64,
    /// Host time per step and scheduled sequence: per-request scheduling, sampling and
    /// output processing that the GPU waits for (s).
    pub step_overhead_per_seq_s: f64,
    /// GPU time per step.
    pub step_model: StepModel,
    /// The GPU.
    pub gpu: GpuSpec,
    /// The model.
    pub model: ModelSpec,
    /// Power of each node apart from its GPUs (W).
    pub node_baseline_w: f64,
    /// Facility power over IT power, >= 1.
    pub pue: f64,
    /// Grid carbon intensity.
    pub grid: CarbonIntensity,
    /// Energy price (USD per kWh).
    pub energy_usd_per_kwh: f64,
    /// GPU rental (USD per GPU-hour).
    pub gpu_usd_per_hour: f64,
    /// Replica failures (a failed GPU takes its replica down); none by default.
    pub failures: Option<Failures>,
    /// Arrivals stop after this long (s).
    pub duration_s: f64,
    /// Requests arriving before this are left out of statistics (s).
    pub warmup_s: f64,
    /// A real run's numbers to compare with.
    pub measured: Option<Measured>,
    /// Separate prefill and decode pools; none by default.
    pub disaggregation: Option<Disaggregation>,
}

impl LlmServingConfig {
    /// Replicas in all.
    pub fn replicas(&self) -> u32 {
        self.nodes * self.replicas_per_node
    }

    /// Checks every value; the error names the key (relative to `[serving]`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.arrivals.validate().map_err(|e| e.within("arrivals"))?;
        check(!self.tasks.is_empty(), "tasks", "[]", "at least one task")?;
        super::validate_tasks(&self.tasks)?;
        if let ArrivalProcess::Replay { requests, .. } = &self.arrivals
            && let Some(r) = requests.iter().find(|r| r.task.is_some_and(|t| usize::from(t) >= self.tasks.len()))
        {
            check(false, "arrivals.task", r.task.unwrap_or(0), "the index of one of the tasks")?;
        }
        check((1..=100_000).contains(&self.nodes), "nodes", self.nodes, "an integer from 1 to 100,000")?;
        check(
            (1..=1024).contains(&self.replicas_per_node),
            "replicas_per_node",
            self.replicas_per_node,
            "an integer from 1 to 1024",
        )?;
        check((1..=64).contains(&self.tp), "tp", self.tp, "an integer from 1 to 64")?;
        let l = self.limits;
        check(
            (1..=65_536).contains(&l.max_num_seqs),
            "engine.max_num_seqs",
            l.max_num_seqs,
            "an integer from 1 to 65536",
        )?;
        check(
            (1..=1 << 20).contains(&l.max_num_batched_tokens),
            "engine.max_num_batched_tokens",
            l.max_num_batched_tokens,
            "an integer from 1 to 1,048,576",
        )?;
        check((1..=4096).contains(&l.block_size), "engine.block_size", l.block_size, "an integer from 1 to 4096")?;
        check(
            (1..=super::MAX_QUEUED).contains(&self.max_queued_requests),
            "engine.max_queued_requests",
            self.max_queued_requests,
            "an integer from 1 to 10,000,000",
        )?;
        if let Some(limit) = self.context_limit_tokens {
            check(limit >= 2, "context_limit_tokens", limit, "an integer >= 2 (one prompt and one output token)")?;
        }
        check(
            l.num_gpu_blocks >= 2,
            "engine.num_gpu_blocks",
            l.num_gpu_blocks,
            "an integer >= 2 (one block is reserved); if derived, more GPU memory than the weights need",
        )?;
        check(
            self.step_overhead_s.is_finite() && (0.0..=60.0).contains(&self.step_overhead_s),
            "engine.step_overhead_s",
            self.step_overhead_s,
            "seconds from 0 to 60",
        )?;
        check(
            self.step_overhead_per_seq_s.is_finite() && (0.0..=1.0).contains(&self.step_overhead_per_seq_s),
            "engine.step_overhead_per_seq_s",
            self.step_overhead_per_seq_s,
            "seconds from 0 to 1",
        )?;
        self.gpu.validate().map_err(|e| e.within("gpu"))?;
        self.model.validate().map_err(|e| e.within("model"))?;
        for (key, v) in [
            ("power.node_baseline_w", self.node_baseline_w),
            ("prices.energy_usd_per_kwh", self.energy_usd_per_kwh),
            ("prices.gpu_usd_per_hour", self.gpu_usd_per_hour),
        ] {
            check(v.is_finite() && v >= 0.0, key, v, "a finite number >= 0")?;
        }
        check(self.pue.is_finite() && self.pue >= 1.0, "power.pue", self.pue, "a finite number >= 1")?;
        self.grid.validate().map_err(|e| e.within("grid"))?;
        if let Some(f) = self.failures {
            f.validate().map_err(|e| e.within("failures"))?;
        }
        check(
            self.duration_s.is_finite() && self.duration_s > self.warmup_s && self.duration_s <= MAX_DURATION_S,
            "duration_s",
            self.duration_s,
            "a finite number > warmup_s, at most 100 years",
        )?;
        if let Some(d) = self.disaggregation {
            check(
                d.prefill_replicas >= 1 && d.prefill_replicas < self.replicas(),
                "disaggregation.prefill_replicas",
                d.prefill_replicas,
                "an integer from 1 to the replicas less one (the rest decode)",
            )?;
            check(
                d.link_gb_per_s.is_finite() && d.link_gb_per_s >= 1e-3,
                "disaggregation.link_gb_per_s",
                d.link_gb_per_s,
                "a finite number >= 0.001",
            )?;
            check(
                d.link_latency_us.is_finite() && (0.0..=1e9).contains(&d.link_latency_us),
                "disaggregation.link_latency_us",
                d.link_latency_us,
                "microseconds from 0 to 1e9",
            )?;
        }
        check(self.warmup_s.is_finite() && self.warmup_s >= 0.0, "warmup_s", self.warmup_s, "a finite number >= 0")
    }
}

/// The events of the continuous engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LlmEvent {
    /// The run starts: first arrivals, clients and failures are drawn.
    Start,
    /// The next open-loop request arrives.
    Arrival,
    /// A closed-loop client sends its next request.
    ClientSends(u32),
    /// A replica finishes its step.
    StepDone(u32),
    /// A request still waiting reaches its task's timeout.
    Timeout(Id<LlmRequest>),
    /// A replica fails.
    Fails(u32),
    /// A failed replica is back.
    Repaired(u32),
    /// A request's prompt KV has reached the decode pool.
    KvArrives(Id<LlmRequest>),
}

/// A request in flight.
#[derive(Clone, Copy, Debug)]
pub struct LlmRequest {
    id: u64,
    task: u16,
    prompt: u32,
    output: u32,
    arrival: SimTime,
    first_scheduled: Option<SimTime>,
    first_token: Option<SimTime>,
    /// Its replica, once routed.
    replica: Option<u32>,
    client: Option<u32>,
    timeout: Option<EventId>,
    preemptions: u32,
    /// Disaggregated: its KV is crossing to the decode pool.
    transferring: bool,
    /// Its share of the GPU energy of the steps it ran in, by tokens, on every replica
    /// it visited (J).
    energy_j: f64,
}

struct ReplicaState {
    engine: Replica<Id<LlmRequest>>,
    node: u32,
    step: Option<EventId>,
    /// GPU power of the whole replica now (W).
    power_w: f64,
    down: bool,
    /// Disaggregated prefill replica: when its outgoing link is next free.
    link_free: SimTime,
}

#[derive(Default)]
struct Stats {
    arrivals: u64,
    counted: u64,
    served: u64,
    rejected: u64,
    timed_out: u64,
    lost: u64,
    failures: u64,
    steps: u64,
    steps_outside_table: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    counted_output_tokens: u64,
    slo_met: u64,
    goodput: u64,
    ttft: LatencyHistogram,
    tpot: LatencyHistogram,
    itl: LatencyHistogram,
    e2e: LatencyHistogram,
    ttft_mean: Tally,
    tpot_mean: Tally,
    e2e_mean: Tally,
    batch_tokens: Tally,
    running: Tally,
    kv_usage: Tally,
    kv_usage_max: f64,
    kv_transfers: u64,
    kv_transfer_s: Tally,
    kv_transfer_bytes: f64,
    first_arrival: Option<SimTime>,
    last_finish: SimTime,
}

struct Sampling<S> {
    grid: Grid,
    sink: S,
    last: (SimTime, u64, u64),
}

/// The token-level serving world; `O` receives a [`RequestRecord`] per request and `S`
/// a [`ServingSample`] per sampling instant.
pub struct LlmServing<'c, O, S> {
    config: &'c LlmServingConfig,
    arrivals: ArrivalGenerator,
    cumulative_weights: Vec<f64>,
    token_samplers: Vec<(TokenSampler, TokenSampler)>,
    requests: Slab<LlmRequest>,
    replicas: Vec<ReplicaState>,
    /// Each routing pool (the whole fleet, or the prefill and the decode pools) with
    /// its replicas' loads (waiting + running; [`DOWN`] when down), for
    /// least-outstanding-requests routing without a scan of the pool per request.
    pools: Vec<(std::ops::Range<u32>, MinIndex)>,
    /// Replicas down now: while none is, a pool's up replicas are the pool itself and
    /// routing needs no list of them.
    replicas_down: u32,
    next_replica: u32,
    sent: u64,
    horizon: SimTime,
    warmup: SimTime,
    gpu_meter: PowerMeter,
    gpu_power_w: f64,
    observer: &'c mut O,
    sampling: Option<Sampling<&'c mut S>>,
    stats: Stats,
    token_events: Vec<(Id<LlmRequest>, TokenEvent, u32, f64)>,
}

impl<'c, O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'c, O, S> {
    /// A world with no requests yet.
    pub fn new(
        config: &'c LlmServingConfig,
        observer: &'c mut O,
        sampling: Option<(SimDuration, &'c mut S)>,
    ) -> Result<Self, ScheduleError> {
        let total: f64 = config.tasks.iter().map(|t| t.weight).sum();
        let mut acc = 0.0;
        let cumulative_weights = config
            .tasks
            .iter()
            .map(|t| {
                acc += t.weight / total;
                acc
            })
            .collect();
        let gpus = f64::from(config.replicas() * config.tp);
        let replicas = (0..config.replicas())
            .map(|r| ReplicaState {
                engine: Replica::new(config.limits),
                node: r / config.replicas_per_node,
                step: None,
                power_w: config.gpu.idle_w * f64::from(config.tp),
                down: false,
                link_free: SimTime::ZERO,
            })
            .collect();
        let n = config.replicas();
        let pools: Vec<std::ops::Range<u32>> = match config.disaggregation {
            Some(d) => vec![0..d.prefill_replicas, d.prefill_replicas..n],
            None => std::iter::once(0..n).collect(),
        };
        Ok(LlmServing {
            pools: pools.into_iter().map(|p| (p.clone(), MinIndex::new(p.len()))).collect(),
            config,
            arrivals: ArrivalGenerator::new(config.arrivals.clone()),
            cumulative_weights,
            token_samplers: config
                .tasks
                .iter()
                .map(|t| (TokenSampler::new(t.prompt_tokens), TokenSampler::new(t.output_tokens)))
                .collect(),
            requests: Slab::new(),
            replicas,
            replicas_down: 0,
            next_replica: 0,
            sent: 0,
            horizon: SimTime::from_secs_f64(config.duration_s)?,
            warmup: SimTime::from_secs_f64(config.warmup_s)?,
            gpu_meter: PowerMeter::default(),
            gpu_power_w: config.gpu.idle_w * gpus,
            observer,
            sampling: sampling.filter(|(every, _)| *every > SimDuration::ZERO).map(|(every, sink)| Sampling {
                grid: Grid::new(every),
                sink,
                last: (SimTime::ZERO, 0, 0),
            }),
            stats: Stats::default(),
            token_events: Vec::new(),
        })
    }

    fn start(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        match self.config.arrivals {
            ArrivalProcess::Closed { concurrency, requests, .. } => {
                let clients = concurrency.unwrap_or(self.config.limits.max_num_seqs * self.config.replicas());
                for client in 0..u64::from(clients).min(requests) as u32 {
                    ctx.schedule(SimTime::ZERO, LlmEvent::ClientSends(client))?;
                }
            }
            _ => {
                let first = self.arrivals.next_after(SimTime::ZERO, ctx.rng(ARRIVAL_STREAM))?;
                if first < self.horizon {
                    ctx.schedule(first, LlmEvent::Arrival)?;
                }
            }
        }
        if let Some(failures) = self.config.failures {
            for r in 0..self.replicas.len() as u32 {
                let at = SimTime::from_secs_f64(failures.time_to_failure_s(ctx.rng(failure_stream(r))))?;
                if at < self.horizon {
                    ctx.schedule(at, LlmEvent::Fails(r))?;
                }
            }
        }
        Ok(())
    }

    fn set_power(&mut self, now: SimTime, replica: usize, power_w: f64) {
        self.gpu_meter.hold(now, self.gpu_power_w, &self.config.grid);
        self.gpu_power_w += power_w - self.replicas[replica].power_w;
        self.replicas[replica].power_w = power_w;
    }

    fn new_request(&mut self, client: Option<u32>, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let replayed = self.arrivals.replayed(self.stats.arrivals as usize);
        let rng = ctx.rng(REQUEST_STREAM);
        let (task, prompt, output) = draw_request(replayed, rng, &self.cumulative_weights, &self.token_samplers);
        self.stats.arrivals += 1;
        self.stats.first_arrival.get_or_insert(now);
        if now >= self.warmup {
            self.stats.counted += 1;
        }
        let id = self.requests.insert(LlmRequest {
            id: self.stats.arrivals - 1,
            task: task as u16,
            prompt,
            output,
            arrival: now,
            first_scheduled: None,
            first_token: None,
            replica: None,
            client,
            timeout: None,
            preemptions: 0,
            transferring: false,
            energy_j: 0.0,
        });
        if self.config.context_limit_tokens.is_some_and(|limit| prompt.saturating_add(output) > limit) {
            return self.finish(id, RequestOutcome::Rejected, ctx);
        }
        let pool = match self.config.disaggregation {
            Some(d) => 0..d.prefill_replicas,
            None => 0..self.replicas.len() as u32,
        };
        let Some(replica) = self.route(pool, ctx) else {
            return self.finish(id, RequestOutcome::Lost, ctx);
        };
        self.requests[id].replica = Some(replica);
        let engine = &self.replicas[replica as usize].engine;
        // Longer than the whole KV cache (it could never run), or a full queue.
        if !engine.fits(prompt, output) || engine.waiting() >= self.config.max_queued_requests as usize {
            return self.finish(id, RequestOutcome::Rejected, ctx);
        }
        if let Some(timeout_s) = self.config.tasks[task].timeout_s {
            self.requests[id].timeout =
                Some(ctx.schedule(SimDuration::from_secs_f64(timeout_s)?, LlmEvent::Timeout(id))?);
        }
        // A prefill replica of a disaggregated fleet produces the first token only.
        let here = if self.config.disaggregation.is_some() { 1 } else { output };
        let measured = now >= self.warmup;
        let sequence = Sequence::new(id, self.stats.arrivals - 1, prompt, here).measured(measured);
        self.replicas[replica as usize].engine.enqueue(sequence);
        self.refresh_load(replica as usize);
        self.kick(replica as usize, ctx)
    }

    /// Disaggregated: a prefill finished; its KV crosses to the decode pool.
    fn send_kv(&mut self, id: Id<LlmRequest>, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let d = self.config.disaggregation.expect("disaggregated");
        let now = ctx.now();
        let request = &mut self.requests[id];
        request.transferring = true;
        let bytes = f64::from(request.prompt) * self.config.model.kv_bytes_per_token();
        let link = &mut self.replicas[request.replica.expect("a prefilled request was routed") as usize].link_free;
        let start = (*link).max(now);
        let busy_s = bytes / (d.link_gb_per_s * 1e9);
        *link = start.checked_add(SimDuration::from_secs_f64(busy_s)?).ok_or(ScheduleError::Overflow)?;
        let done =
            link.checked_add(SimDuration::from_secs_f64(d.link_latency_us * 1e-6)?).ok_or(ScheduleError::Overflow)?;
        self.stats.kv_transfers += 1;
        self.stats.kv_transfer_bytes += bytes;
        self.stats.kv_transfer_s.add((done - now).as_secs_f64());
        ctx.schedule(done, LlmEvent::KvArrives(id))?;
        Ok(())
    }

    fn on_kv_arrives(&mut self, id: Id<LlmRequest>, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let d = self.config.disaggregation.expect("disaggregated");
        self.requests[id].transferring = false;
        let Some(replica) = self.route(d.prefill_replicas..self.replicas.len() as u32, ctx) else {
            return self.finish(id, RequestOutcome::Lost, ctx);
        };
        let r = &mut self.requests[id];
        r.replica = Some(replica);
        let (prompt, output, uid) = (r.prompt, r.output, r.id);
        let first_token_ns = r.first_token.expect("a prefilled request has its first token").as_nanos();
        let measured = r.arrival >= self.warmup;
        let engine = &self.replicas[replica as usize].engine;
        if !engine.fits(prompt, output) || engine.waiting() >= self.config.max_queued_requests as usize {
            return self.finish(id, RequestOutcome::Rejected, ctx);
        }
        let sequence = Sequence::prefilled(id, uid, prompt, output, first_token_ns).measured(measured);
        self.replicas[replica as usize].engine.enqueue(sequence);
        self.refresh_load(replica as usize);
        self.kick(replica as usize, ctx)
    }

    /// Refreshes replica `r`'s routing key after its queue changed or it went down or up.
    fn refresh_load(&mut self, r: usize) {
        let state = &self.replicas[r];
        let key = if state.down { DOWN } else { (state.engine.waiting() + state.engine.running()) as u64 };
        let r = r as u32;
        let (pool, loads) = self.pools.iter_mut().find(|(p, _)| p.contains(&r)).expect("every replica is in a pool");
        loads.set((r - pool.start) as usize, key);
    }

    /// Picks an up replica among `pool`.
    fn route(&mut self, pool: std::ops::Range<u32>, ctx: &mut Context<'_, LlmEvent>) -> Option<u32> {
        if self.config.routing == LlmRouting::LeastOutstandingRequests {
            // The index's ties go to the lowest replica, as a scan's would.
            let (_, loads) = self.pools.iter().find(|(p, _)| *p == pool).expect("a routing pool");
            let best = loads.argmin()?;
            return (loads.key(best) != DOWN).then_some(pool.start + best as u32);
        }
        // The up replicas in order: the pool itself unless some replica is down.
        let listed: Option<Vec<u32>> =
            (self.replicas_down > 0).then(|| pool.clone().filter(|&r| !self.replicas[r as usize].down).collect());
        let count = listed.as_ref().map_or(pool.len(), Vec::len);
        if count == 0 {
            return None;
        }
        let nth = |k: usize| listed.as_ref().map_or(pool.start + k as u32, |up| up[k]);
        let load = |r: u32| {
            let e = &self.replicas[r as usize].engine;
            e.waiting() + e.running()
        };
        let pick = match self.config.routing {
            LlmRouting::RoundRobin => {
                // The next up replica of the pool after the last one chosen.
                let r = match &listed {
                    None if pool.contains(&self.next_replica) => self.next_replica,
                    None => pool.start,
                    Some(up) => up.iter().copied().find(|&r| r >= self.next_replica).unwrap_or(up[0]),
                };
                self.next_replica = if r + 1 >= pool.end { pool.start } else { r + 1 };
                r
            }
            LlmRouting::LeastOutstandingRequests => {
                (0..count).map(nth).min_by_key(|&r| load(r)).expect("some replica is up")
            }
            LlmRouting::LeastKvUsage => (0..count)
                .map(nth)
                .min_by(|&a, &b| {
                    let (ea, eb) = (&self.replicas[a as usize].engine, &self.replicas[b as usize].engine);
                    ea.kv().usage().total_cmp(&eb.kv().usage()).then(ea.waiting().cmp(&eb.waiting()))
                })
                .expect("some replica is up"),
            LlmRouting::LeastOutstandingTokens => (0..count)
                .map(nth)
                .min_by_key(|&r| self.replicas[r as usize].engine.outstanding_tokens())
                .expect("some replica is up"),
            LlmRouting::PowerOfTwoChoices => {
                let rng = ctx.rng(ROUTING_STREAM);
                let a = nth(rng.random_range(0..count));
                let b = nth(rng.random_range(0..count));
                if load(b) < load(a) { b } else { a }
            }
            LlmRouting::Random => nth(ctx.rng(ROUTING_STREAM).random_range(0..count)),
        };
        Some(pick)
    }

    /// Starts a step on an idle replica that has work.
    fn kick(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        if self.replicas[r].down || self.replicas[r].step.is_some() {
            return Ok(());
        }
        let now = ctx.now();
        let idle_w = self.config.gpu.idle_w * f64::from(self.config.tp);
        let Some(shape) = self.replicas[r].engine.schedule() else {
            self.set_power(now, r, idle_w);
            return Ok(());
        };
        let (gpu_s, outside) = self.config.step_model.timed(&shape);
        let host_s = self.config.step_overhead_s + self.config.step_overhead_per_seq_s * f64::from(shape.sequences());
        let step_s = gpu_s + host_s;
        // The power curve is fitted to whole steps' mean power (host time included), so
        // it holds for the whole step.
        let power_w = f64::from(self.config.tp) * self.config.gpu.step_power_w(shape.tokens());
        self.set_power(now, r, power_w);
        self.replicas[r].engine.set_step_energy(power_w * step_s, shape.tokens());
        let stats = &mut self.stats;
        stats.steps += 1;
        stats.steps_outside_table += u64::from(outside);
        stats.prompt_tokens += u64::from(shape.prefill_tokens);
        stats.batch_tokens.add(f64::from(shape.tokens()));
        let engine = &self.replicas[r].engine;
        stats.running.add(engine.running() as f64);
        let usage = engine.kv().usage();
        stats.kv_usage.add(usage);
        stats.kv_usage_max = stats.kv_usage_max.max(usage);
        for &key in self.replicas[r].engine.first_admitted() {
            let request = &mut self.requests[key];
            if request.first_scheduled.is_none() {
                request.first_scheduled = Some(now);
                if let Some(t) = request.timeout.take() {
                    ctx.cancel(t);
                }
            }
        }
        let at = now.checked_add(SimDuration::from_secs_f64(step_s)?).ok_or(ScheduleError::Overflow)?;
        self.replicas[r].step = Some(ctx.schedule(at, LlmEvent::StepDone(r as u32))?);
        Ok(())
    }

    fn on_step_done(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.replicas[r].step = None;
        let mut events = std::mem::take(&mut self.token_events);
        let engine = &mut self.replicas[r].engine;
        let produced =
            engine.complete_step(now.as_nanos(), |seq, e| events.push((seq.key, e, seq.preemptions, seq.energy_j)));
        self.stats.output_tokens += u64::from(produced.tokens);
        self.stats.counted_output_tokens += u64::from(produced.measured_tokens);
        for &(itl_ns, n) in engine.step_itls() {
            self.stats.itl.record_n(SimDuration::from_nanos(itl_ns), u64::from(n));
        }
        self.refresh_load(r);
        // Only first and last tokens reach a request's record: the others are counted
        // above, so a step's cost here does not grow with the sequences it ran.
        for &(id, event, preemptions, energy_j) in &events {
            let request = &mut self.requests[id];
            if request.first_token.is_none() {
                request.first_token = Some(now);
            }
            request.preemptions = preemptions;
            if event == TokenEvent::Finished {
                // Its sequence leaves this replica with its share of the steps here.
                request.energy_j += energy_j;
                if self.config.disaggregation.is_some()
                    && self.requests[id].output > 1
                    && request_at_prefill(self.config, r)
                {
                    self.send_kv(id, ctx)?;
                } else {
                    self.finish(id, RequestOutcome::Served, ctx)?;
                }
            }
        }
        events.clear();
        self.token_events = events;
        self.kick(r, ctx)
    }

    /// Records a request that left (served or not) and frees its slot; a closed-loop
    /// client then sends its next request.
    fn finish(
        &mut self,
        id: Id<LlmRequest>,
        outcome: RequestOutcome,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let r = self.requests.remove(id);
        if let Some(t) = r.timeout {
            ctx.cancel(t);
        }
        let counted = r.arrival >= self.warmup;
        let task = &self.config.tasks[usize::from(r.task)];
        let mut slo_met = false;
        if outcome == RequestOutcome::Served {
            self.stats.last_finish = self.stats.last_finish.max(now);
            let first = r.first_token.unwrap_or(now);
            let ttft = first - r.arrival;
            let e2e = now - r.arrival;
            let tpot_s = (r.output > 1).then(|| (now - first).as_secs_f64() / f64::from(r.output - 1));
            slo_met = e2e.as_secs_f64() <= task.slo_s;
            let good = task.ttft_slo_s.is_none_or(|s| ttft.as_secs_f64() <= s)
                && task.tpot_slo_s.is_none_or(|s| tpot_s.is_none_or(|t| t <= s))
                && (task.ttft_slo_s.is_some() || task.tpot_slo_s.is_some() || slo_met);
            if counted {
                let s = &mut self.stats;
                s.served += 1;
                s.slo_met += u64::from(slo_met);
                s.goodput += u64::from(good);
                s.ttft.record(ttft);
                s.ttft_mean.add(ttft.as_secs_f64());
                s.e2e.record(e2e);
                s.e2e_mean.add(e2e.as_secs_f64());
                if let Some(t) = tpot_s {
                    s.tpot.record(SimDuration::from_secs_f64(t)?);
                    s.tpot_mean.add(t);
                }
            }
        } else if counted {
            match outcome {
                RequestOutcome::TimedOut => self.stats.timed_out += 1,
                RequestOutcome::Lost => self.stats.lost += 1,
                RequestOutcome::Rejected => self.stats.rejected += 1,
                RequestOutcome::Served => {}
            }
        }
        let secs = |t: Option<SimTime>| t.map(SimTime::as_secs_f64);
        self.observer.observe(RequestRecord {
            request_id: r.id,
            task: r.task,
            tokens: r.prompt + r.output,
            truncated: false,
            history_tokens: 0,
            quality: 1.0,
            arrival_s: r.arrival.as_secs_f64(),
            start_s: secs(r.first_scheduled),
            finish_s: Some(now.as_secs_f64()),
            node: r.replica.map(|replica| self.replicas[replica as usize].node),
            gpu: None,
            batch_size: None,
            energy_kwh: r.energy_j / J_PER_KWH,
            outcome,
            slo_met,
            warmup: !counted,
            input_tokens: Some(r.prompt),
            output_tokens: Some(r.output),
            first_scheduled_s: secs(r.first_scheduled),
            first_token_s: secs(r.first_token),
            preemptions: Some(r.preemptions),
            replica: r.replica,
        });
        if let Some(client) = r.client
            && let ArrivalProcess::Closed { requests, think_time_s, .. } = self.config.arrivals
            && self.sent < requests
        {
            let at = now.checked_add(SimDuration::from_secs_f64(think_time_s)?).ok_or(ScheduleError::Overflow)?;
            if at < self.horizon {
                ctx.schedule(at, LlmEvent::ClientSends(client))?;
            }
        }
        Ok(())
    }

    fn on_timeout(&mut self, id: Id<LlmRequest>, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        self.requests[id].timeout = None;
        let replica = self.requests[id].replica.expect("a request with a timeout was routed") as usize;
        if let Some(seq) = self.replicas[replica].engine.withdraw(|k| *k == id) {
            // Preempted before it gave up, it may have run.
            self.requests[id].energy_j += seq.energy_j;
            self.refresh_load(replica);
            self.finish(id, RequestOutcome::TimedOut, ctx)?;
        }
        Ok(())
    }

    fn on_fails(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        self.stats.failures += 1;
        if let Some(step) = self.replicas[r].step.take() {
            ctx.cancel(step);
        }
        self.replicas[r].down = true;
        self.replicas_down += 1;
        let mut lost = Vec::new();
        self.replicas[r].engine.drain(|s| lost.push(s));
        self.refresh_load(r);
        self.set_power(now, r, self.config.gpu.idle_w * f64::from(self.config.tp));
        for s in lost {
            let request = &mut self.requests[s.key];
            request.preemptions = s.preemptions;
            request.energy_j += s.energy_j;
            self.finish(s.key, RequestOutcome::Lost, ctx)?;
        }
        let failures = self.config.failures.expect("failures are configured");
        let repair_s = failures.time_to_repair_s(ctx.rng(failure_stream(r as u32)));
        ctx.schedule(SimDuration::from_secs_f64(repair_s)?, LlmEvent::Repaired(r as u32))?;
        Ok(())
    }

    fn on_repaired(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        self.replicas[r].down = false;
        self.replicas_down -= 1;
        self.refresh_load(r);
        let failures = self.config.failures.expect("failures are configured");
        let up_s = failures.time_to_failure_s(ctx.rng(failure_stream(r as u32)));
        let at = ctx.now().checked_add(SimDuration::from_secs_f64(up_s)?).unwrap_or(SimTime::MAX);
        if at < self.horizon {
            ctx.schedule(at, LlmEvent::Fails(r as u32))?;
        }
        self.kick(r, ctx)
    }

    fn sample_before(&mut self, now: SimTime) {
        let Some(sampling) = self.sampling.as_mut() else { return };
        let config = self.config;
        for t in sampling.grid.due_before(now) {
            let (waiting, running, usage): (usize, usize, f64) =
                self.replicas.iter().fold((0, 0, 0.0), |(w, r, u), s| {
                    (w + s.engine.waiting(), r + s.engine.running(), u + s.engine.kv().usage())
                });
            let busy = self.replicas.iter().filter(|s| s.step.is_some()).count() as u32;
            let baseline_w = f64::from(config.nodes) * config.node_baseline_w;
            let it_j = self.gpu_meter.energy_j_at(t, self.gpu_power_w) + baseline_w * t.as_secs_f64();
            let energy_kwh = it_j * config.pue / J_PER_KWH;
            let (last_t, last_prompt, last_output) = sampling.last;
            let dt = (t - last_t).as_secs_f64();
            let rate = |now: u64, then: u64| if dt > 0.0 { Some((now - then) as f64 / dt) } else { None };
            sampling.sink.observe(ServingSample {
                t_s: t.as_secs_f64(),
                queue_len: waiting as u32,
                busy_gpus: busy * config.tp,
                power_kw: (self.gpu_power_w + baseline_w) * config.pue / 1000.0,
                energy_kwh,
                carbon_kg: match config.grid.constant() {
                    Some(kg) => energy_kwh * kg,
                    None => {
                        (self.gpu_meter.carbon_kg_at(t, self.gpu_power_w, &config.grid)
                            + baseline_w * config.grid.integral(0.0, t.as_hours_f64()) / 1000.0)
                            * config.pue
                    }
                },
                running: Some(running as u32),
                kv_usage: Some(usage / self.replicas.len() as f64),
                prompt_tokens_per_s: rate(self.stats.prompt_tokens, last_prompt),
                generation_tokens_per_s: rate(self.stats.output_tokens, last_output),
                gpu_power_w: Some(self.gpu_power_w),
            });
            sampling.last = (t, self.stats.prompt_tokens, self.stats.output_tokens);
        }
    }

    /// The metrics of a finished run that ended at `end`.
    pub fn metrics(&mut self, end: SimTime, events: u64) -> Metrics {
        let c = self.config;
        self.gpu_meter.hold(end, self.gpu_power_w, &c.grid);
        let s = &self.stats;
        let run_s = end.as_secs_f64();
        let makespan_s = s.first_arrival.map(|f| (s.last_finish.max(f) - f).as_secs_f64()).unwrap_or(0.0);
        // Rates are per second of the measured window: from the end of the warm-up (or
        // the first arrival) to the last token; the whole makespan without a warm-up.
        let window_start = s.first_arrival.map_or(self.warmup, |f| f.max(self.warmup));
        let measured_s = (s.last_finish.max(window_start) - window_start).as_secs_f64();
        let gpus = f64::from(c.replicas() * c.tp);
        let gpu_j = self.gpu_meter.energy_j_at(end, self.gpu_power_w);
        let baseline_j = f64::from(c.nodes) * c.node_baseline_w * run_s;
        let it_j = gpu_j + baseline_j;
        let facility_j = it_j * c.pue;
        let carbon_kg = match c.grid.constant() {
            Some(kg) => facility_j / J_PER_KWH * kg,
            None => {
                (self.gpu_meter.carbon_kg_at(end, self.gpu_power_w, &c.grid)
                    + f64::from(c.nodes) * c.node_baseline_w * c.grid.integral(0.0, end.as_hours_f64()) / 1000.0)
                    * c.pue
            }
        };
        let cost_usd = facility_j / J_PER_KWH * c.energy_usd_per_kwh + gpus * run_s / 3600.0 * c.gpu_usd_per_hour;
        let per = |x: f64, n: u64| if n > 0 { Some(x / n as f64) } else { None };
        let rate = |n: u64| if measured_s > 0.0 { n as f64 / measured_s } else { 0.0 };
        // Each histogram read once: reading builds its buckets into a histogram.
        let [ttft_p50, ttft_p90, ttft_p99] = s.ttft.quantiles_s([0.50, 0.90, 0.99]);
        let [tpot_p50, tpot_p99] = s.tpot.quantiles_s([0.50, 0.99]);
        let [itl_p50, itl_p99] = s.itl.quantiles_s([0.50, 0.99]);
        let [e2e_p50, e2e_p95, e2e_p99] = s.e2e.quantiles_s([0.50, 0.95, 0.99]);
        let mut m = Metrics::new();
        m.count("requests", s.counted)
            .count("served", s.served)
            .count("rejected", s.rejected)
            .count("timed_out", s.timed_out)
            .count("lost", s.lost)
            .count("gpu_failures", s.failures)
            .number("throughput_per_s", rate(s.served))
            .optional("ttft_mean_s", s.ttft_mean.mean())
            .optional("ttft_p50_s", ttft_p50)
            .optional("ttft_p90_s", ttft_p90)
            .optional("ttft_p99_s", ttft_p99)
            .optional("tpot_mean_s", s.tpot_mean.mean())
            .optional("tpot_p50_s", tpot_p50)
            .optional("tpot_p99_s", tpot_p99)
            .optional("itl_p50_s", itl_p50)
            .optional("itl_p99_s", itl_p99)
            .optional("e2e_mean_s", s.e2e_mean.mean())
            .optional("e2e_p50_s", e2e_p50)
            .optional("e2e_p99_s", e2e_p99)
            .optional("latency_mean_s", s.e2e_mean.mean())
            .optional("latency_p50_s", e2e_p50)
            .optional("latency_p95_s", e2e_p95)
            .optional("latency_p99_s", e2e_p99)
            .optional("slo_attainment", per(s.slo_met as f64, s.counted))
            .number("makespan_s", makespan_s)
            .number("output_tokens_per_s", rate(s.counted_output_tokens))
            .number("goodput_per_s", rate(s.goodput))
            .count("preemptions", self.replicas.iter().map(|r| r.engine.preemptions).sum())
            .optional("kv_usage_mean", s.kv_usage.mean())
            .number("kv_usage_max", s.kv_usage_max)
            .optional("batch_tokens_mean", s.batch_tokens.mean())
            .optional("running_mean", s.running.mean())
            .count("steps", s.steps)
            .count("kv_transfers", s.kv_transfers)
            .optional("kv_transfer_mean_s", s.kv_transfer_s.mean())
            .number("kv_transfer_gb", s.kv_transfer_bytes / 1e9)
            .count("extrapolated_lookups", s.steps_outside_table)
            .number("gpu_power_mean_w", if run_s > 0.0 { gpu_j / run_s } else { 0.0 })
            .optional("gpu_energy_per_output_token_j", per(gpu_j, s.output_tokens))
            .optional("energy_per_output_token_j", per(facility_j, s.output_tokens))
            .number("energy_kwh", facility_j / J_PER_KWH)
            .number("energy_gpu_kwh", gpu_j / J_PER_KWH)
            .number("energy_baseline_kwh", baseline_j / J_PER_KWH)
            .number("energy_overhead_kwh", (facility_j - it_j) / J_PER_KWH)
            .optional("energy_per_request_kwh", per(facility_j / J_PER_KWH, s.served))
            .number("carbon_kg", carbon_kg)
            .number("cost_usd", cost_usd)
            .count("events", events);
        m
    }
}

/// Whether replica `r` is in a disaggregated fleet's prefill pool.
fn request_at_prefill(config: &LlmServingConfig, r: usize) -> bool {
    config.disaggregation.is_some_and(|d| (r as u32) < d.prefill_replicas)
}

fn failure_stream(replica: u32) -> StreamId {
    StreamId(FAILURE_STREAM_BASE + replica)
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> Model for LlmServing<'_, O, S> {
    type Event = LlmEvent;
    type Error = ScheduleError;

    fn handle(&mut self, event: LlmEvent, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        if self.sampling.is_some() {
            self.sample_before(ctx.now());
        }
        match event {
            LlmEvent::Start => self.start(ctx),
            LlmEvent::Arrival => {
                self.new_request(None, ctx)?;
                let next = self.arrivals.next_after(ctx.now(), ctx.rng(ARRIVAL_STREAM))?;
                if next < self.horizon {
                    ctx.schedule(next, LlmEvent::Arrival)?;
                }
                Ok(())
            }
            LlmEvent::ClientSends(client) => {
                self.sent += 1;
                self.new_request(Some(client), ctx)
            }
            LlmEvent::StepDone(r) => self.on_step_done(r as usize, ctx),
            LlmEvent::Timeout(id) => self.on_timeout(id, ctx),
            LlmEvent::Fails(r) => self.on_fails(r as usize, ctx),
            LlmEvent::Repaired(r) => self.on_repaired(r as usize, ctx),
            LlmEvent::KvArrives(id) => self.on_kv_arrives(id, ctx),
        }
    }
}

/// Runs one replication: every request served, timed out or lost.
pub fn run_continuous<O: Observer<RequestRecord>, S: Observer<ServingSample>>(
    config: &LlmServingConfig,
    replication: &Replication,
    requests: &mut O,
    sampling: Option<(SimDuration, &mut S)>,
) -> Result<Metrics, RunError> {
    let world = LlmServing::new(config, requests, sampling)?;
    let mut sim = infersim_engine::Simulation::new(world, replication.master_seed, replication.index);
    sim.set_interrupt(replication.interrupt.clone());
    sim.schedule(SimTime::ZERO, LlmEvent::Start)?;
    sim.run(Default::default())?;
    let (end, events) = (sim.now(), sim.events_handled());
    replication.finished(sim.model_mut().metrics(end, events))
}
