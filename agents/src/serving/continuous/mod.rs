//! The serving world's `continuous` engine: LLM replicas that run engine iterations
//! (the shared [`crate::llm`] replica: vLLM V1 scheduling, paged KV cache, a step-time
//! model) behind a router.
//!
//! One event per step per replica; tokens are counted inside the step, never one event
//! each. A replica's GPUs draw [`GpuSpec::step_power_w`](crate::llm::GpuSpec::step_power_w) during a step (what the
//! step asks of them, within their power limit, which may slow it; see
//! [`GpuSpec::run_step`](crate::llm::GpuSpec::run_step)) and `idle_w` with nothing to do; nodes add
//! their baseline and the facility its PUE. Requests come open loop (any
//! [`ArrivalProcess`], a replayed trace included) or from `concurrency` closed-loop
//! clients. TTFT = first token - arrival; TPOT = (last token - first token) / (output
//! tokens - 1); ITL = gap between consecutive tokens of a request; E2E = last token -
//! arrival (vLLM's benchmark definitions).

use infersim_engine::sampling::Grid;
use infersim_engine::stats::{DurationSum, FixedSum, LatencyHistogram};
use infersim_engine::{Context, EventId, Id, Model, Observer, ScheduleError, SimDuration, SimTime, Slab};

use super::{ARRIVAL_STREAM, REQUEST_STREAM, ServingSample};
use crate::arrivals::{ArrivalGenerator, ArrivalProcess};
use crate::error::RunError;
use crate::failures::Lifecycle;
use crate::llm::kv::{Chain, Segment, chain_hash};
use crate::llm::{Replica, TokenEvent};
use crate::min_index::MinIndex;
use crate::power::PowerMeter;
use crate::requests::{RequestRecord, TokenSampler};
use crate::world::{Metrics, Replication};

mod adaptation;
mod admission;
mod autoscale;
mod config;
mod failures;
mod file;
mod measures;
mod miners;
mod outcomes;
mod pools;
mod retraining;
mod rounds;
mod routing;
mod sessions;
mod steps;
use adaptation::Adapter;
pub use adaptation::{AdaptPolicy, FleetAdaptation, FleetAdaptationRun};
use autoscale::{Mode, Scaler};
pub use config::{
    Autoscale, Disaggregation, LlmPool, LlmRouting, LlmServingConfig, Measured, Placement, PoolRole, PoolStep,
    ScaleSignal,
};
pub(crate) use file::{ContinuousTable, resolve};
pub use file::{VllmRecord, read_measured, vllm_makespan_s, vllm_samples};
pub use measures::ContinuousRun;
use miners::{Attempt, Validator};
pub use miners::{FleetMinersRun, FleetValidator, MinerClass, VALIDATOR_STREAM};
pub use pools::{DEFAULT_ENGINE_START_S, DEFAULT_GPUS_PER_NODE, DEFAULT_LOAD_GB_PER_S};
use retraining::Retrainer;
pub use retraining::{
    DRIFT_STREAM, FleetRetraining, FleetRetrainingRun, FleetTraining, TRAINING_MFU, TRAINING_POWER_SHARE, TrainingPlace,
};
use rounds::{Rounds, ToRoute};
use routing::{Groups, routing_groups};
use sessions::Session;

/// The routing key of a replica that is down: above any load.
const DOWN: u64 = u32::MAX as u64 - 1;

/// The group of a replica that takes no requests (a training pool's).
const NO_GROUP: u32 = u32::MAX;

/// The events of the continuous engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LlmEvent {
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
    /// A conversation sends its next turn.
    NextTurn(Id<Session>),
    /// An autoscaled pool decides how many replicas it wants.
    Autoscale(u16),
    /// A replica has finished its cold start.
    Started(u32),
    /// The drifting model's monitor looks at its loss.
    Monitor,
    /// The retraining job has trained.
    TrainingDone,
    /// A carbon-aware wait for low-carbon hours reaches its deadline.
    CarbonDeadline,
    /// A validator's scoring period ends.
    PeriodEnd,
    /// A 429 or 500 has come back: the request's next contender is asked.
    NextContender(Id<LlmRequest>),
    /// A new miner joins a pool.
    MinerJoins(u16),
    /// A miner leaves for good.
    MinerLeaves(u32),
    /// The variant controller plans.
    Adapt,
    /// The router routes the requests that came since its last round.
    Round,
}

/// A request in flight.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LlmRequest {
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
    /// Times sent to another replica after its own failed.
    retries: u32,
    /// Disaggregated: its KV is crossing to the decode pool.
    transferring: bool,
    /// It waits for the router's next round.
    waiting_for_round: bool,
    /// Its share of the GPU energy of the steps it ran in, by tokens, on every replica
    /// it visited (J).
    energy_j: f64,
    /// Prompt tokens found in the KV cache when it was first scheduled.
    cached_tokens: Option<u32>,
    /// The model it asks for (an index in the served names).
    model: u16,
    /// The conversation it is a turn of.
    session: Option<Id<Session>>,
    /// A fleet of miners: its tour of contenders, and the one that took it.
    attempt: Option<Id<Attempt>>,
    contender: Option<Id<crate::contenders::Contender<()>>>,
}

/// A request as it arrives, before it is routed.
struct NewRequest {
    task: usize,
    /// Its routing group.
    group: usize,
    prompt: u32,
    output: u32,
    /// Its prompt's shared segments.
    chain: Option<Chain>,
    client: Option<u32>,
    session: Option<Id<Session>>,
    /// A conversation turn's own name, and whether it stays cached when it finishes.
    own: Option<(u64, bool)>,
}

struct ReplicaState {
    engine: Replica<Id<LlmRequest>>,
    /// Its pool (an index in the configuration's pools).
    pool: u16,
    /// Its routing group, and its place in it.
    group: u32,
    in_group: u32,
    /// Its node, numbered across the fleet.
    node: u32,
    /// Its first GPU, numbered across the fleet (its failure streams follow from it).
    first_gpu: u32,
    step: Option<EventId>,
    /// The steps planned after the one in flight, in a run of steady decode (none
    /// begun yet; see [`steps`]).
    run: steps::Run,
    /// GPU power of the whole replica now (W).
    power_w: f64,
    /// Its GPUs' energy and carbon: one meter per replica, so that the fleet's and a
    /// pool's are sums in replica order whatever the order of the steps.
    meter: PowerMeter,
    /// Which of its GPUs failed first (its repair draws from that GPU's stream).
    failed_gpu: u32,
    /// Whether it prefills only (a prefill pool's, or the first of a split pool).
    prefill: bool,
    /// Prefill replica: when its outgoing link is next free.
    link_free: SimTime,
    /// Whether it serves, starts, drains or is off (autoscaled pools).
    mode: Mode,
    /// Since when it has been provisioned (drawing power, paid for), and for how long
    /// before that (s).
    provisioned_since: Option<SimTime>,
    provisioned_s: f64,
}

#[derive(Clone, Default)]
struct Stats {
    arrivals: u64,
    counted: u64,
    served: u64,
    rejected: u64,
    timed_out: u64,
    lost: u64,
    /// Requests sent to another replica after theirs failed (each time counts).
    retries: u64,
    steps: u64,
    steps_outside_table: u64,
    steps_throttled: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    counted_output_tokens: u64,
    slo_met: u64,
    goodput: u64,
    ttft: LatencyHistogram,
    tpot: LatencyHistogram,
    itl: LatencyHistogram,
    e2e: LatencyHistogram,
    /// Means kept as exact sums (integer nanoseconds, or multiples of 2^-32 s), so
    /// that they do not depend on the order in which requests finish.
    ttft_mean: DurationSum,
    tpot_mean: FixedSum,
    e2e_mean: DurationSum,
    /// Per-step sums (of tokens, sequences running, and KV usage in units of
    /// 2^-64), whose means over `steps` are reported: exact sums, so that they do not
    /// depend on the order in which the replicas' steps are added.
    batch_tokens_sum: u64,
    running_sum: u64,
    kv_usage_sum: u128,
    kv_usage_max: f64,
    kv_transfers: u64,
    kv_transfer_s: DurationSum,
    kv_transfer_gb: FixedSum,
    /// Replicas started by autoscalers.
    cold_starts: u64,
    /// GPU failures (kept for pools; the fleet's come from its lifecycle).
    gpu_failures: u64,
    /// Models: the GPU energy shares of their requests (J), and their preemptions.
    requests_energy_j: FixedSum,
    requests_preemptions: u64,
    /// Measured requests at their first admission: prompt tokens, and those found
    /// cached.
    admitted_prompt_tokens: u64,
    admitted_cached_tokens: u64,
    first_arrival: Option<SimTime>,
    last_finish: SimTime,
}

impl Stats {
    /// Counts a request that arrived at `at`, `counted` if after the warm-up.
    fn arrived(&mut self, at: SimTime, counted: bool) {
        self.arrivals += 1;
        self.first_arrival.get_or_insert(at);
        self.counted += u64::from(counted);
    }

    /// Adds a pool's per-step statistics (steps, their tokens, sequences and KV
    /// usage, the tokens they produced and their inter-token latencies): a step
    /// belongs to one pool, so the fleet's are its pools' added up, exactly (integer
    /// sums, a maximum, histogram counts), whatever the order.
    fn add_steps(&mut self, pool: &Stats) {
        self.steps += pool.steps;
        self.steps_outside_table += pool.steps_outside_table;
        self.steps_throttled += pool.steps_throttled;
        self.prompt_tokens += pool.prompt_tokens;
        self.batch_tokens_sum += pool.batch_tokens_sum;
        self.running_sum += pool.running_sum;
        self.kv_usage_sum += pool.kv_usage_sum;
        self.kv_usage_max = self.kv_usage_max.max(pool.kv_usage_max);
        self.output_tokens += pool.output_tokens;
        self.counted_output_tokens += pool.counted_output_tokens;
        self.itl.merge(&pool.itl);
    }
}

struct Sampling<S> {
    grid: Grid,
    sink: S,
    last: (SimTime, u64, u64),
    /// Each pool's prompt and output tokens at the last instant (fleets of several
    /// pools sample each pool too).
    last_pools: Vec<(u64, u64)>,
}

/// The token-level serving world; `O` receives a [`RequestRecord`] per request and `S`
/// a [`ServingSample`] per sampling instant.
pub(crate) struct LlmServing<'c, O, S> {
    config: &'c LlmServingConfig,
    arrivals: ArrivalGenerator,
    cumulative_weights: Vec<f64>,
    token_samplers: Vec<(TokenSampler, TokenSampler)>,
    requests: Slab<LlmRequest>,
    replicas: Vec<ReplicaState>,
    /// The routing groups: the replicas of the pools that serve one model name (or a
    /// disaggregated pool's prefill and decode replicas).
    groups: Vec<RoutingGroup>,
    /// The group each task's requests are routed in first.
    task_groups: Vec<usize>,
    /// The model names the pools serve, and the group a request for each is routed
    /// in first (its prefill replicas' where it has some).
    served_names: Vec<&'c str>,
    name_groups: Vec<usize>,
    /// The decode group of each prefill group.
    decode_groups: Vec<Option<usize>>,
    /// Which replicas are down: while none is, a pool's up replicas are the pool itself
    /// and routing needs no list of them.
    life: Lifecycle,
    /// The workload's mean output length ([`mean_output_tokens`]): the estimate a
    /// token-counting router works with.
    mean_output_tokens: f64,
    sent: u64,
    horizon: SimTime,
    warmup: SimTime,
    observer: &'c mut O,
    sampling: Option<Sampling<&'c mut S>>,
    stats: Stats,
    token_events: Vec<(Id<LlmRequest>, TokenEvent, u32, f64)>,
    /// Each task's shared system prompt as a chain of one segment, if it has one.
    task_chains: Vec<Option<Chain>>,
    /// Conversations under way.
    sessions: Slab<Session>,
    /// Each pool's autoscaler state (every pool has one; only autoscaled pools use it).
    scalers: Vec<Scaler>,
    /// Replicas not serving (starting, draining or off): while none is, routing needs
    /// no list of the replicas that take requests.
    not_serving: u32,
    /// The statistics of each pool, then of each served model.
    group_stats: Vec<Stats>,
    /// The served model (an index in the served names) of each routing group.
    group_models: Vec<usize>,
    /// Sequences a step admits for the first time (kept to reuse its allocation).
    admitted: Vec<(Id<LlmRequest>, u32)>,
    /// The drifting model and its retraining, if the scenario has one.
    retrainer: Option<Retrainer>,
    /// The validator, if the replicas are miners.
    validator: Option<Validator>,
    /// The variant controller, if the scenario has one.
    adapter: Option<Adapter>,
    /// Steps run without an event of their own (coalesced), and the shapes of a run
    /// being planned (kept to reuse its allocation).
    coalesced_steps: u64,
    run_shapes: Vec<crate::llm::StepShape>,
    /// Reused by the prefix-aware router: the places it visited and their bookings.
    visited_places: Vec<(usize, u64)>,
    /// The router's interval between rounds, if it routes in rounds, and what waits
    /// for the next.
    round_every: Option<SimDuration>,
    rounds: Rounds,
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
        let mut replicas = Vec::with_capacity(config.replicas() as usize);
        let (mut first_node, mut first_gpu, mut not_serving) = (0, 0, 0);
        // Training pools are provisioned only for dedicated jobs: with shared ones they
        // are left out (neither drawn nor paid), so that one scenario can sweep where
        // training runs.
        for (p, pool) in config.pools.iter().enumerate() {
            let serving = match pool.role {
                PoolRole::Training if !config.pool_present(p) => 0,
                _ => pool.initial_replicas(),
            };
            for local in 0..pool.replicas {
                let on = local < serving;
                not_serving += u32::from(!on || pool.role == PoolRole::Training);
                replicas.push(ReplicaState {
                    engine: Replica::new(pool.limits),
                    pool: p as u16,
                    group: NO_GROUP,
                    in_group: 0,
                    node: first_node + pool.node_of(local),
                    first_gpu: first_gpu + local * pool.tp,
                    step: None,
                    run: steps::Run::default(),
                    power_w: if on { pool.gpu.idle_w * f64::from(pool.tp) } else { 0.0 },
                    meter: PowerMeter::default(),
                    failed_gpu: 0,
                    prefill: pool.role == PoolRole::Prefill
                        || config.disaggregation.and_then(|d| d.prefill_replicas).is_some_and(|k| local < k),
                    link_free: SimTime::ZERO,
                    mode: match (pool.role, on) {
                        (PoolRole::Training, true) => Mode::Reserved,
                        (_, true) => Mode::Serving,
                        (_, false) => Mode::Off,
                    },
                    provisioned_since: on.then_some(SimTime::ZERO),
                    provisioned_s: 0.0,
                });
            }
            (first_node, first_gpu) = (first_node + pool.nodes, first_gpu + pool.gpus());
        }
        let Groups { groups, models: group_models, decode: decode_groups, first } =
            routing_groups(config, &mut replicas);
        Ok(LlmServing {
            groups,
            task_groups: config.task_models().into_iter().map(|name| first[name]).collect(),
            served_names: config.served_names(),
            name_groups: first,
            decode_groups,
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
            life: Lifecycle::new(config.replicas() as usize),
            mean_output_tokens: mean_output_tokens(config, total),
            sent: 0,
            horizon: SimTime::from_secs_f64(config.duration_s)?,
            warmup: SimTime::from_secs_f64(config.warmup_s)?,
            observer,
            sampling: sampling.filter(|(every, _)| *every > SimDuration::ZERO).map(|(every, sink)| Sampling {
                grid: Grid::new(every),
                sink,
                last: (SimTime::ZERO, 0, 0),
                last_pools: vec![(0, 0); config.pools.len()],
            }),
            stats: Stats::default(),
            token_events: Vec::new(),
            task_chains: config
                .tasks
                .iter()
                .map(|t| {
                    let name = t
                        .name
                        .bytes()
                        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
                    t.shared_prefix_tokens
                        .map(|end_tokens| Chain::from([Segment { hash: chain_hash(0, name), end_tokens }]))
                })
                .collect(),
            sessions: Slab::new(),
            scalers: vec![Scaler::default(); config.pools.len()],
            not_serving,
            group_stats: (0..config.pools.len() + config.served_names().len()).map(|_| Stats::default()).collect(),
            group_models,
            admitted: Vec::new(),
            retrainer: config.retraining.as_ref().map(Retrainer::new).transpose()?,
            validator: config.validator.as_ref().map(|v| Validator::new(v, config.replicas() as usize)),
            adapter: config.adaptation.as_ref().map(|_| Adapter::default()),
            coalesced_steps: 0,
            run_shapes: Vec::new(),
            visited_places: Vec::new(),
            round_every: match SimDuration::from_secs_f64(config.routing_interval_s)? {
                SimDuration::ZERO => None,
                every => Some(every),
            },
            rounds: Rounds::default(),
        })
    }

    fn start(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        match self.config.arrivals {
            ArrivalProcess::Closed { concurrency, requests, .. } => {
                let seats = self
                    .config
                    .pools
                    .iter()
                    .filter(|p| p.serves_requests_for(&p.serves))
                    .map(|p| p.limits.max_num_seqs * p.replicas)
                    .sum();
                let clients = concurrency.unwrap_or(seats);
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
        for r in 0..self.replicas.len() {
            self.schedule_failure(r, ctx)?;
            self.refresh_load(r);
        }
        self.start_autoscalers(ctx)?;
        self.start_miners(ctx)?;
        self.start_adapter(ctx)?;
        self.start_monitor(ctx)
    }

    /// The pool of replica `r`.
    fn pool(&self, r: usize) -> &'c LlmPool {
        &self.config.pools[usize::from(self.replicas[r].pool)]
    }

    /// Whether replica `r` takes a request of these lengths now: within its pool's
    /// context limit, its whole KV cache, and its queue cap.
    fn takes(&self, r: usize, prompt: u32, output: u32) -> bool {
        let pool = self.pool(r);
        let engine = &self.replicas[r].engine;
        pool.context_limit_tokens.is_none_or(|limit| prompt.saturating_add(output) <= limit)
            && engine.fits(prompt, output)
            && engine.waiting() < pool.max_queued_requests as usize
    }

    fn set_power(&mut self, now: SimTime, replica: usize, power_w: f64) {
        let state = &mut self.replicas[replica];
        state.meter.hold(now, state.power_w, &self.config.grid);
        state.power_w = power_w;
    }

    /// Applies `f` to the fleet's statistics (with `fleet`) and to those of `pool` and
    /// `model`, where given.
    fn tally(&mut self, fleet: bool, pool: Option<usize>, model: Option<usize>, f: impl Fn(&mut Stats)) {
        if fleet {
            f(&mut self.stats);
        }
        if let Some(p) = pool {
            f(&mut self.group_stats[p]);
        }
        if let Some(m) = model {
            let pools = self.config.pools.len();
            f(&mut self.group_stats[pools + m]);
        }
    }

    /// The pool of the replica a request is on, if it was routed.
    fn pool_of(&self, replica: Option<u32>) -> Option<usize> {
        replica.map(|r| usize::from(self.replicas[r as usize].pool))
    }
}

/// The workload's mean output length, the estimate a router works with (it never
/// knows a request's own): a replayed trace's mean where the trace records outputs,
/// else the tasks' means weighted by their frequencies (`total` their weights' sum).
fn mean_output_tokens(config: &LlmServingConfig, total: f64) -> f64 {
    let tasks = || config.tasks.iter().map(|t| t.weight / total * t.output_tokens.mean()).sum();
    if let ArrivalProcess::Replay { requests, .. } = &config.arrivals {
        let recorded: Vec<u32> = requests.iter().filter_map(|r| r.output_tokens).collect();
        if !recorded.is_empty() {
            return recorded.iter().map(|&n| f64::from(n)).sum::<f64>() / recorded.len() as f64;
        }
    }
    tasks()
}

/// A routing group: replicas a request may be sent to, their loads (waiting +
/// running; [`DOWN`] when down) for least-outstanding-requests routing without a scan
/// per request, and where round robin goes next.
struct RoutingGroup {
    replicas: Vec<u32>,
    loads: MinIndex,
    next: usize,
    /// The longest request any of its pools takes.
    context_limit_tokens: Option<u32>,
    /// Prefix-aware routing: the KV blocks the router booked on each replica, by place
    /// ([`DOWN`] while it takes no requests; kept only for that router). A tournament
    /// tree rather than an ordered set: a booking changes twice per request, and the
    /// router visits the least booked one or two (`cheapest_by_prefix`).
    booked: MinIndex,
    /// The block sizes of its pools' KV caches.
    block_sizes: Vec<u32>,
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
            LlmEvent::NextTurn(session) => self.next_turn(session, ctx),
            LlmEvent::Autoscale(pool) => self.on_autoscale(usize::from(pool), ctx),
            LlmEvent::Started(r) => self.on_started(r as usize, ctx),
            LlmEvent::Monitor => self.on_monitor(ctx),
            LlmEvent::TrainingDone => self.on_training_done(ctx),
            LlmEvent::CarbonDeadline => self.on_carbon_deadline(ctx),
            LlmEvent::PeriodEnd => self.on_period_end(ctx),
            LlmEvent::NextContender(id) => self.next_contender(id, ctx),
            LlmEvent::MinerJoins(pool) => self.on_miner_joins(usize::from(pool), ctx),
            LlmEvent::MinerLeaves(miner) => self.on_miner_leaves(miner, ctx),
            LlmEvent::Adapt => self.on_adapt(ctx),
            LlmEvent::Round => self.on_round(ctx),
        }
    }
}

/// Metrics a model's row leaves out: its requests run in steps shared with other
/// models' requests, so step counts, batch and KV state, ITL and KV transfers are the
/// pools' (and the event count the fleet's).
const MODEL_UNMEASURED: [&str; 14] = [
    "events",
    "steps",
    "steps_throttled",
    "extrapolated_lookups",
    "prefill_tokens_computed",
    "kv_usage_mean",
    "kv_usage_max",
    "batch_tokens_mean",
    "running_mean",
    "itl_p50_s",
    "itl_p99_s",
    "kv_transfers",
    "kv_transfer_mean_s",
    "kv_transfer_gb",
];

/// Runs one replication: every request served, timed out or lost.
pub fn run_continuous<O: Observer<RequestRecord>, S: Observer<ServingSample>>(
    config: &LlmServingConfig,
    replication: &Replication,
    requests: &mut O,
    sampling: Option<(SimDuration, &mut S)>,
) -> Result<Metrics, RunError> {
    let world = LlmServing::new(config, requests, sampling)?;
    let mut sim = infersim_engine::Simulation::new(world, replication.master_seed, replication.index);
    let horizon = sim.model().horizon;
    replication.attach(&mut sim, Some(horizon));
    sim.schedule(SimTime::ZERO, LlmEvent::Start)?;
    sim.run(Default::default())?;
    // A coalesced step counts as the event it stands for.
    let (end, events) = (sim.now(), sim.events_handled() + sim.model().coalesced_steps);
    let world = sim.model_mut();
    let mut metrics = world.results(end, events).metrics();
    if let Some(rt) = &world.retrainer {
        let from = world.warmup.min(end);
        metrics.extend(rt.results(from, world.stats.last_finish.max(from), end).metrics().iter());
    }
    if let Some(a) = &world.adapter {
        metrics.extend(a.results().metrics().iter());
    }
    if let Some(v) = &world.validator {
        metrics.extend(v.results(world.stats.arrivals).metrics().iter());
    }
    // Pools and models get tables of their own when there is more than one of either.
    let config = world.config;
    if config.pools.len() > 1 || config.served_names().len() > 1 {
        for (kind, name, run) in world.group_results(end, events) {
            // What a part does not measure is left out rather than written as 0: the
            // events are the fleet's, and steps belong to pools, not to models.
            let unmeasured: &[&str] = if kind == "model" { &MODEL_UNMEASURED } else { &["events"] };
            let mut part = Metrics::new();
            part.extend(run.metrics().iter().filter(|(m, _)| !unmeasured.contains(m)));
            metrics.group(kind, name, part);
        }
    }
    replication.finished(metrics)
}
