//! A decentralised inference network: miner nodes serve tasks, and a validator routes
//! every query to a contender (node x task), scores contenders each period and keeps
//! the history its routing policy ranks them by.
//!
//! Agents:
//! - task sources, one organic and one synthetic Poisson stream per task, each query
//!   carrying its work (its latency on a node of speed 1);
//! - miner nodes with a declared capacity per task and a hidden speed, quality and
//!   reliability drawn from their class; they join, leave and fail (at rates, or at
//!   times the scenario names). A node answers 429 when the task's declared capacity
//!   for the period is used up or all its slots are busy, 500 when it is down or a
//!   request fails (probability 1 - reliability);
//! - the validator: it asks its [`RoutingPolicy`] for an order of contenders, tries the
//!   first `routing.top` in turn until one answers, observes latency and a noisy
//!   quality score, and at the end of every period turns each queried contender's
//!   counters into a history row ([`scoring::period_score`] x observed quality).
//!
//! decayed_score ranks contenders by requests made this period minus `weight` x glob,
//! glob being the contender's decayed history plus its node's other contenders'
//! weighted by task similarity ([`scoring`]). Decay multiplies every row by the same
//! factor between two period ends, so globs are computed once per period and scaled
//! per query: exact, and cheap. least_processed and join_shortest_queue keep their
//! ranks in one `priority_queue::PriorityQueue` per task, changed in place as
//! requests are made and answered.
//!
//! Streams (common random numbers: the nodes, their churn and every query's work are
//! the same whatever the policy): routing [`ROUTING_STREAM`], quality noise
//! [`VALIDATOR_STREAM`], task `t`'s organic queries `TASK_STREAM_BASE + 2t` and
//! synthetic ones `+ 2t + 1`, class `c`'s joins `JOIN_STREAM_BASE + c`, node `n`'s
//! hidden traits and request outcomes `NODE_STREAM_BASE + n`, its failures, repairs
//! and departure `LIFE_STREAM_BASE + n`.
//!
//! ```
//! use infersim_agents::network::{run_network, NetworkConfig, RoutingPolicy};
//! let mut config = NetworkConfig::example();
//! config.duration_s = 2.0 * 3600.0;
//! config.routing.policy = RoutingPolicy::DecayedScore;
//! let run = run_network(&config, 7, 0).unwrap();
//! assert!(run.organic_queries > 1000);
//! // Scores steer traffic away from poor nodes: less than their share of contenders.
//! assert!(run.share_poor.unwrap() < 0.25, "{:?}", run.share_poor);
//! ```

use crate::error::ConfigError;
use crate::failures::Lifecycle;
use std::cmp::Reverse;
use std::collections::VecDeque;

use infersim_engine::stats::{LatencyHistogram, Tally};
use infersim_engine::{
    Arena, Context, EventId, Id, Model, NullObserver, Observer, QueueKind, ScheduleError, SimDuration, SimRng, SimTime,
    Simulation, Slab, StreamId,
};
use priority_queue::PriorityQueue;
use rand::RngExt;
use rand_distr::{Distribution, Exp1, LogNormal, StandardNormal};
use rustc_hash::FxBuildHasher;

mod config;
mod file;
pub mod scoring;
pub use config::{
    Category, NetworkConfig, NodeAction, NodeClass, Routing, RoutingPolicy, ScheduledEvent, Similarity, TaskConfig,
    Validator,
};
pub use file::{NetworkFile, NetworkWorld};
use scoring::{DecayParams, HistoryRow, PeriodCounts};

use crate::distributions::lognormal_from_mean_cv;

/// Stream of the routing policies' random choices.
pub const ROUTING_STREAM: StreamId = StreamId(2);
/// Stream of the noise on observed quality scores.
pub const VALIDATOR_STREAM: StreamId = StreamId(3);
/// Task `t`'s organic queries draw from `TASK_STREAM_BASE + 2t`, synthetic ones from
/// the next stream.
pub const TASK_STREAM_BASE: u32 = 1000;
/// Class `c`'s joins draw from `JOIN_STREAM_BASE + c`.
pub const JOIN_STREAM_BASE: u32 = 100_000;
/// Node `n`'s hidden traits and request outcomes draw from `NODE_STREAM_BASE + n`.
pub const NODE_STREAM_BASE: u32 = 1_000_000;
/// Node `n`'s failures, repairs and departure draw from `LIFE_STREAM_BASE + n`.
pub const LIFE_STREAM_BASE: u32 = 100_000_000;

const S_PER_H: f64 = 3600.0;

/// The events of the miner network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkEvent {
    /// Time zero: the initial nodes join and every source starts.
    Start,
    /// A query of a task arrives (from its organic or its synthetic source).
    Arrival {
        /// The task.
        task: u16,
        /// Whether the validator made it.
        synthetic: bool,
    },
    /// A node answers a query it accepted.
    Answered(Id<Query>),
    /// A 429 or 500 has come back: try the query's next contender.
    Retry(Id<Query>),
    /// The end of a scoring period.
    PeriodEnd,
    /// A node fails (ignored unless `epoch` is still the node's).
    NodeFails {
        /// The node.
        node: Id<Node>,
        /// Its life epoch when the failure was scheduled.
        epoch: u32,
    },
    /// A failed node is repaired (ignored unless `epoch` is still the node's).
    NodeRepaired {
        /// The node.
        node: Id<Node>,
        /// Its life epoch when the repair was scheduled.
        epoch: u32,
    },
    /// A node leaves the network for good.
    NodeLeaves(Id<Node>),
    /// A new node of a class joins (the class's join process).
    NodeJoins {
        /// The class index.
        class: u16,
    },
    /// The scenario's `events[i]` happens.
    Scheduled(u32),
}

/// Whether a node is in the network or gone (whether it is down is the failure
/// lifecycle's to say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Up,
    Gone,
}

/// A miner node with its hidden traits.
#[derive(Clone, Debug)]
pub struct Node {
    class: u16,
    speed: f64,
    quality: f64,
    reliability: f64,
    state: NodeState,
    /// Queries being served, for failures and departures.
    in_flight: Vec<Id<Query>>,
    contenders: Vec<Id<Contender>>,
    joined: SimTime,
    left: Option<SimTime>,
}

/// A (node, task) pair the validator can route to, with its counters and history.
#[derive(Clone, Debug)]
pub struct Contender {
    node: Id<Node>,
    task: u16,
    active: bool,
    period: PeriodCounts,
    quality_sum: f64,
    quality_n: u64,
    history: VecDeque<HistoryRow>,
    /// glob at [`Network::glob_at`]; decays by a common factor until the next refresh.
    glob: f64,
    /// Energy-aware estimates: latency of answered requests, share answered.
    latency_est_s: f64,
    answered_est: f64,
}

/// A query in flight.
#[derive(Clone, Debug)]
pub struct Query {
    id: u64,
    task: u16,
    synthetic: bool,
    arrival: SimTime,
    work_s: f64,
    candidates: Vec<Id<Contender>>,
    /// Candidates tried so far.
    tried: usize,
    /// The node serving it and when it started.
    serving: Option<(Id<Node>, SimTime, EventId)>,
    last_outcome: QueryOutcome,
}

/// What finally became of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryOutcome {
    /// A contender answered.
    Answered,
    /// The last contender tried answered 429.
    RateLimited,
    /// The last contender tried answered 500 (or had gone).
    Failed,
    /// No contender serves the task at the moment.
    NoContender,
}

impl QueryOutcome {
    /// The outcome as traces spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryOutcome::Answered => "answered",
            QueryOutcome::RateLimited => "rate_limited",
            QueryOutcome::Failed => "failed",
            QueryOutcome::NoContender => "no_contender",
        }
    }
}

/// One finished query, for the requests trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkQuery {
    /// Query number, in arrival order.
    pub query_id: u64,
    /// Task index.
    pub task: u16,
    /// Whether the validator made it.
    pub synthetic: bool,
    /// Arrival time (s).
    pub arrival_s: f64,
    /// When it was answered or given up (s).
    pub finish_s: f64,
    /// Contenders tried.
    pub attempts: u32,
    /// The node of the last contender tried (the one that answered, if any).
    pub node: Option<u32>,
    /// That node's class index.
    pub class: Option<u16>,
    /// What became of it.
    pub outcome: QueryOutcome,
    /// The answering node's true quality.
    pub quality: Option<f64>,
    /// The score the validator observed.
    pub observed_quality: Option<f64>,
}

/// One contender's period, for the period-scores trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkPeriod {
    /// End of the period (h).
    pub t_h: f64,
    /// Node index.
    pub node: u32,
    /// The node's class index.
    pub class: u16,
    /// Task index.
    pub task: u16,
    /// Requests made to the contender this period.
    pub requests: u64,
    /// Of which 429.
    pub rate_limited: u64,
    /// Of which 500.
    pub failed: u64,
    /// Requests it accepted.
    pub consumed: f64,
    /// Its declared capacity.
    pub capacity: f64,
    /// nineteen's period score (none when nothing was requested).
    pub period_score: Option<f64>,
    /// Mean observed quality of its answers this period.
    pub observed_quality: Option<f64>,
    /// The history row written (period score x quality^e).
    pub score: Option<f64>,
    /// Its glob after the period's rows were added.
    pub glob: f64,
}

crate::metrics! {
    /// Per-replication results.
    #[derive(Clone, Debug, PartialEq)]
    pub struct NetworkRun {
        /// Organic queries finished (answered or given up).
        organic_queries: u64 = "queries",
        /// Of which answered.
        answered: u64 = "queries",
        /// answered / organic_queries.
        answer_rate: Option<f64> = "share",
        /// Mean true quality of the answers to organic queries.
        quality_mean: Option<f64> = "share",
        /// Latency of answered organic queries, retries included.
        latency_mean_s: Option<f64> = "s",
        /// Median of the same.
        latency_p50_s: Option<f64> = "s",
        /// 99th percentile of the same.
        latency_p99_s: Option<f64> = "s",
        /// Organic queries answered within the SLO, over all organic queries.
        slo_attainment: Option<f64> = "share",
        /// Synthetic queries finished.
        synthetic_queries: u64 = "queries",
        /// Requests made to contenders (every attempt of every query).
        requests: u64 = "requests",
        /// Requests per finished query.
        attempts_per_query: Option<f64> = "attempts",
        /// Share of requests answered 429.
        rate_429: Option<f64> = "share",
        /// Share of requests answered 500.
        rate_500: Option<f64> = "share",
        /// Share of requests sent to nodes of `good` classes.
        share_good: Option<f64> = "share",
        /// ... of `poor` classes.
        share_poor: Option<f64> = "share",
        /// ... of `flaky` classes.
        share_flaky: Option<f64> = "share",
        /// Hours from the start of the first task that begins after time 0 until the end
        /// of the first period in which at least `validator.concentration` of its requests
        /// went to good nodes; none if that never happened (or no task starts late).
        cold_start_h: Option<f64> = "h",
        /// Energy of the nodes: idle power while present plus busy slots (kWh).
        energy_kwh: f64 = "kWh",
        /// energy_kwh per answered query (organic and synthetic).
        energy_per_query_kwh: Option<f64> = "kWh",
        /// Carbon of that energy, with the grid's intensity when it was drawn (kg CO2e);
        /// `None` without a `[grid]`.
        carbon_kg: Option<f64> = "kg CO2e",
        /// Energy at its price (USD); `None` without `[prices]`.
        cost_usd: Option<f64> = "USD",
        /// Nodes that joined after time 0.
        nodes_joined: u64 = "nodes",
        /// Nodes that left.
        nodes_left: u64 = "nodes",
        /// Node failures.
        node_failures: u64 = "failures",
        /// Scoring periods completed.
        periods: u64 = "periods",
        /// Simulated time (h).
        simulated_h: f64 = "h",
        /// Events handled.
        events: u64 = "events",
    }
}

#[derive(Default)]
struct Stats {
    queries: u64,
    organic: u64,
    answered: u64,
    synthetic: u64,
    answered_all: u64,
    slo_met: u64,
    quality: Tally,
    latency: LatencyHistogram,
    requests: u64,
    rate_limited: u64,
    failed: u64,
    by_category: [u64; 3],
    /// Energy and carbon of nodes serving, above their idle power.
    busy: crate::power::PowerMeter,
    nodes_joined: u64,
    nodes_left: u64,
    periods: u64,
    cold_start_h: Option<f64>,
    /// The late task's requests this period, and those to good nodes.
    late_requests: u64,
    late_good: u64,
}

fn category_slot(c: Category) -> usize {
    match c {
        Category::Good => 0,
        Category::Poor => 1,
        Category::Flaky => 2,
    }
}

/// Work of one query: constant or log-normal around the task's mean.
#[derive(Clone, Copy, Debug)]
enum WorkSampler {
    Constant(f64),
    LogNormal(LogNormal<f64>),
}

impl WorkSampler {
    fn sample(&self, rng: &mut SimRng) -> f64 {
        match self {
            WorkSampler::Constant(s) => *s,
            WorkSampler::LogNormal(d) => d.sample(rng),
        }
    }
}

/// Ranks kept in place for least_processed and join_shortest_queue: per task, the
/// contender index keyed by (requests this period or in flight at its node, index),
/// smallest first.
type RankQueue = PriorityQueue<u32, Reverse<(u64, u32)>, FxBuildHasher>;

/// From this many contenders per task, least_processed and join_shortest_queue keep
/// their ranks in a priority queue per task; below it they scan the task's contenders per
/// query.
/// Measured (benches/README.md): with 19 contenders a scan is 1.5x (least_processed)
/// and 2.1x (join_shortest_queue) faster than the queue's hashing and re-pushing; with
/// 247 the queue is 1.65x and 1.46x faster.
pub const RANK_QUEUE_MIN_CONTENDERS: u32 = 64;

/// The `top` smallest keys, in order: a partial selection, then a sort of the few kept.
fn smallest<K: Copy>(mut keyed: Vec<K>, top: usize, order: impl Fn(&K, &K) -> std::cmp::Ordering) -> Vec<K> {
    if keyed.len() > top {
        keyed.select_nth_unstable_by(top, &order);
        keyed.truncate(top);
    }
    keyed.sort_unstable_by(order);
    keyed
}

/// The miner network with its validator. `O` sees every finished query, `S` every
/// contender's period.
pub struct Network<O = NullObserver, S = NullObserver> {
    config: NetworkConfig,
    similarity: Vec<Vec<f64>>,
    decay: DecayParams,
    work: Vec<WorkSampler>,
    /// Organic sources given as a shared arrival process, per task.
    organic: Vec<Option<crate::arrivals::ArrivalGenerator>>,
    /// The late task whose cold start is measured.
    late_task: Option<u16>,
    horizon: SimTime,
    period: SimDuration,
    rtt: SimDuration,
    nodes: Arena<Node>,
    contenders: Arena<Contender>,
    /// Active contenders per task, in creation order.
    by_task: Vec<Vec<Id<Contender>>>,
    /// In-place ranks, for the policies that use them.
    ranks: Option<Vec<RankQueue>>,
    round_robin: Vec<usize>,
    /// When the cached globs were computed, and until when they are exact.
    glob_at: SimTime,
    glob_valid_until: SimTime,
    queries: Slab<Query>,
    stats: Stats,
    /// Which nodes are down; their epochs tell superseded failure and repair events.
    life: Lifecycle,
    observer: O,
    periods: Option<S>,
}

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Network<O, S> {
    /// A validated world with no nodes yet (see [`build_network`]).
    pub fn new(config: NetworkConfig, observer: O, periods: Option<S>) -> Result<Self, ConfigError> {
        config.validate()?;
        let out_of_range = |key: &str, value: f64| ConfigError::invalid(key, value, "at most 584 years");
        let horizon = SimTime::from_secs_f64(config.duration_s)
            .map_err(|_| out_of_range("simulation.duration_s", config.duration_s))?;
        let period = SimDuration::from_secs_f64(config.validator.period_s)
            .map_err(|_| out_of_range("validator.period_s", config.validator.period_s))?;
        let rtt = SimDuration::from_secs_f64(config.validator.rtt_s)
            .map_err(|_| out_of_range("validator.rtt_s", config.validator.rtt_s))?;
        let work = config
            .tasks
            .iter()
            .map(|t| {
                if t.work_cv == 0.0 {
                    WorkSampler::Constant(t.work_s)
                } else {
                    WorkSampler::LogNormal(lognormal_from_mean_cv(t.work_s, t.work_cv))
                }
            })
            .collect();
        let late_task = config
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.start_h > 0.0)
            .min_by(|a, b| a.1.start_h.total_cmp(&b.1.start_h))
            .map(|(i, _)| i as u16);
        let ranks = match config.routing.policy {
            RoutingPolicy::LeastProcessed | RoutingPolicy::JoinShortestQueue
                if config.initial_contenders_per_task() >= RANK_QUEUE_MIN_CONTENDERS =>
            {
                Some(config.tasks.iter().map(|_| RankQueue::with_default_hasher()).collect())
            }
            _ => None,
        };
        let r = config.routing;
        Ok(Network {
            organic: config
                .tasks
                .iter()
                .map(|t| t.organic.clone().map(crate::arrivals::ArrivalGenerator::new))
                .collect(),
            similarity: config.similarity_matrix(),
            decay: DecayParams { half_life_s: r.half_life_s, window_s: r.window_s, weight: r.weight },
            work,
            late_task,
            horizon,
            period,
            rtt,
            nodes: Arena::new(),
            contenders: Arena::new(),
            by_task: vec![Vec::new(); config.tasks.len()],
            ranks,
            round_robin: vec![0; config.tasks.len()],
            glob_at: SimTime::ZERO,
            glob_valid_until: SimTime::MAX,
            queries: Slab::new(),
            stats: Stats::default(),
            life: Lifecycle::new(0),
            observer,
            periods,
            config,
        })
    }

    /// Consumes the world, returning its observers.
    pub fn into_observers(self) -> (O, Option<S>) {
        (self.observer, self.periods)
    }

    fn node_stream(node: Id<Node>) -> StreamId {
        StreamId(NODE_STREAM_BASE + node.index())
    }

    fn life_stream(node: Id<Node>) -> StreamId {
        StreamId(LIFE_STREAM_BASE + node.index())
    }

    /// The key a rank queue orders contender `c` by.
    fn rank_key(&self, c: Id<Contender>) -> Reverse<(u64, u32)> {
        let contender = &self.contenders[c];
        let primary = match self.config.routing.policy {
            RoutingPolicy::JoinShortestQueue => self.nodes[contender.node].in_flight.len() as u64,
            _ => contender.period.requests,
        };
        Reverse((primary, c.index()))
    }

    fn update_rank(&mut self, c: Id<Contender>) {
        if self.ranks.is_none() || !self.contenders[c].active {
            return;
        }
        let key = self.rank_key(c);
        let task = usize::from(self.contenders[c].task);
        if let Some(ranks) = &mut self.ranks {
            ranks[task].change_priority(&c.index(), key);
        }
    }

    /// After a node's in-flight count changed: its contenders' JSQ ranks.
    fn update_node_ranks(&mut self, node: Id<Node>) {
        if self.config.routing.policy == RoutingPolicy::JoinShortestQueue {
            for i in 0..self.nodes[node].contenders.len() {
                self.update_rank(self.nodes[node].contenders[i]);
            }
        }
    }

    /// A node of class `class` joins: hidden traits drawn from its own stream, one
    /// contender per task, its life events scheduled.
    fn add_node(&mut self, class: usize, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let id = Id::<Node>::from_index(self.nodes.len() as u32);
        let c = &self.config.node_classes[class];
        let rng = ctx.rng(Self::node_stream(id));
        let mut uniform = |r: [f64; 2]| r[0] + (r[1] - r[0]) * rng.random::<f64>();
        let (speed, quality, reliability) = (uniform(c.speed), uniform(c.quality), uniform(c.reliability));
        let node = self.nodes.push(Node {
            class: class as u16,
            speed,
            quality,
            reliability,
            state: NodeState::Up,
            in_flight: Vec::new(),
            contenders: Vec::new(),
            joined: now,
            left: None,
        });
        debug_assert_eq!(node, id);
        let unit = self.life.push();
        debug_assert_eq!(unit, id.index() as usize, "a node's unit is its index");
        let capacity = f64::from(c.capacity);
        let task_ids: Vec<u16> =
            c.tasks.iter().map(|name| self.config.task_index(name).expect("validated task name") as u16).collect();
        for task in task_ids {
            let contender = self.contenders.push(Contender {
                node,
                task,
                active: true,
                period: PeriodCounts { capacity, ..PeriodCounts::default() },
                quality_sum: 0.0,
                quality_n: 0,
                history: VecDeque::new(),
                glob: 0.0,
                latency_est_s: self.config.tasks[usize::from(task)].work_s,
                answered_est: 1.0,
            });
            self.nodes[node].contenders.push(contender);
            self.by_task[usize::from(task)].push(contender);
            if let Some(ranks) = &mut self.ranks {
                ranks[usize::from(task)].push(contender.index(), Reverse((0, contender.index())));
            }
            self.update_rank(contender);
        }
        let class = &self.config.node_classes[class];
        let (leave_per_h, failures) = (class.leave_per_h, class.failures());
        let rng = ctx.rng(Self::life_stream(node));
        let leave_after_h = (leave_per_h > 0.0).then(|| Distribution::<f64>::sample(&Exp1, rng) / leave_per_h);
        let fail_after_h = failures.map(|f| f.time_to_failure_h(rng));
        if let Some(h) = leave_after_h {
            self.schedule_within(ctx, h, NetworkEvent::NodeLeaves(node))?;
        }
        if let Some(h) = fail_after_h {
            self.schedule_within(ctx, h, NetworkEvent::NodeFails { node, epoch: 0 })?;
        }
        Ok(())
    }

    /// Schedules `event` `after_h` from now if that is before the horizon.
    fn schedule_within(
        &self,
        ctx: &mut Context<'_, NetworkEvent>,
        after_h: f64,
        event: NetworkEvent,
    ) -> Result<(), ScheduleError> {
        let after = SimDuration::from_secs_f64((after_h * S_PER_H).min(1e12))?;
        if ctx.now() + after < self.horizon {
            ctx.schedule(after, event)?;
        }
        Ok(())
    }

    fn arrival_stream(task: u16, synthetic: bool) -> StreamId {
        StreamId(TASK_STREAM_BASE + 2 * u32::from(task) + u32::from(synthetic))
    }

    fn rate_of(&self, task: u16, synthetic: bool) -> f64 {
        let t = &self.config.tasks[usize::from(task)];
        if synthetic { t.synthetic_per_s } else { t.organic_per_s }
    }

    /// Schedules the next query of a source after `from`.
    fn schedule_arrival(
        &mut self,
        ctx: &mut Context<'_, NetworkEvent>,
        task: u16,
        synthetic: bool,
        from: SimTime,
    ) -> Result<(), ScheduleError> {
        if !synthetic && let Some(process) = self.organic[usize::from(task)].as_mut() {
            let at = process.next_after(from, ctx.rng(Self::arrival_stream(task, synthetic)))?;
            return self.schedule_query(ctx, task, synthetic, at);
        }
        let rate = self.rate_of(task, synthetic);
        if rate <= 0.0 {
            return Ok(());
        }
        let gap_s = Distribution::<f64>::sample(&Exp1, ctx.rng(Self::arrival_stream(task, synthetic))) / rate;
        let at = from + SimDuration::from_secs_f64(gap_s.min(1e12))?;
        self.schedule_query(ctx, task, synthetic, at)
    }

    /// Schedules a query of a source at `at`, if it falls in the run.
    fn schedule_query(
        &self,
        ctx: &mut Context<'_, NetworkEvent>,
        task: u16,
        synthetic: bool,
        at: SimTime,
    ) -> Result<(), ScheduleError> {
        if at < self.horizon {
            ctx.schedule(at, NetworkEvent::Arrival { task, synthetic })?;
        }
        Ok(())
    }

    fn on_arrival(
        &mut self,
        task: u16,
        synthetic: bool,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let work_s = self.work[usize::from(task)].sample(ctx.rng(Self::arrival_stream(task, synthetic)));
        self.schedule_arrival(ctx, task, synthetic, now)?;
        let candidates = self.candidates(task, ctx);
        let query = self.queries.insert(Query {
            id: self.stats.queries,
            task,
            synthetic,
            arrival: now,
            work_s,
            candidates,
            tried: 0,
            serving: None,
            last_outcome: QueryOutcome::NoContender,
        });
        self.stats.queries += 1;
        self.try_next(query, ctx)
    }

    /// The contenders to try for a query of `task`, best first, at most `routing.top`.
    fn candidates(&mut self, task: u16, ctx: &mut Context<'_, NetworkEvent>) -> Vec<Id<Contender>> {
        let t = usize::from(task);
        let top = self.config.routing.top as usize;
        let n = self.by_task[t].len();
        if n == 0 {
            return Vec::new();
        }
        match self.config.routing.policy {
            RoutingPolicy::RoundRobin => {
                let start = self.round_robin[t] % n;
                self.round_robin[t] = start + 1;
                (0..top.min(n)).map(|k| self.by_task[t][(start + k) % n]).collect()
            }
            RoutingPolicy::Random => {
                let mut pool = self.by_task[t].clone();
                let rng = ctx.rng(ROUTING_STREAM);
                let k = top.min(n);
                for i in 0..k {
                    let j = rng.random_range(i..n);
                    pool.swap(i, j);
                }
                pool.truncate(k);
                pool
            }
            RoutingPolicy::LeastProcessed | RoutingPolicy::JoinShortestQueue if self.ranks.is_none() => {
                let keyed: Vec<(u64, u32)> = self.by_task[t].iter().map(|&c| self.rank_key(c).0).collect();
                smallest(keyed, top, Ord::cmp).into_iter().map(|(_, c)| Id::from_index(c)).collect()
            }
            RoutingPolicy::LeastProcessed | RoutingPolicy::JoinShortestQueue => {
                let ranks = &mut self.ranks.as_mut().expect("rank queues exist for this policy")[t];
                let mut best = Vec::with_capacity(top.min(n));
                while best.len() < top
                    && let Some(entry) = ranks.pop()
                {
                    best.push(entry);
                }
                let chosen = best.iter().map(|(c, _)| Id::from_index(*c)).collect();
                for (c, key) in best {
                    ranks.push(c, key);
                }
                chosen
            }
            RoutingPolicy::PowerOfTwoChoices => {
                let rng = ctx.rng(ROUTING_STREAM);
                let a = rng.random_range(0..n);
                let mut pair = vec![self.by_task[t][a]];
                if n > 1 {
                    let b = (a + 1 + rng.random_range(0..n - 1)) % n;
                    pair.push(self.by_task[t][b]);
                }
                let load = |c: Id<Contender>| {
                    let contender = &self.contenders[c];
                    (self.nodes[contender.node].in_flight.len(), contender.period.requests, c.index())
                };
                pair.sort_by_key(|&c| load(c));
                pair.truncate(top);
                pair
            }
            RoutingPolicy::DecayedScore => {
                let now = ctx.now();
                self.refresh_globs(now);
                let decay = self.glob_decay(now);
                let weight = self.decay.weight;
                let ranked: Vec<(f64, u32)> = self.by_task[t]
                    .iter()
                    .map(|&c| {
                        let contender = &self.contenders[c];
                        (scoring::rank(contender.period.requests, contender.glob * decay, weight), c.index())
                    })
                    .collect();
                smallest(ranked, top, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                    .into_iter()
                    .map(|(_, c)| Id::from_index(c))
                    .collect()
            }
            RoutingPolicy::EnergyAware => {
                let slo_s = self.config.validator.slo_s;
                let ranked: Vec<(bool, f64, u64, u32)> = self.by_task[t]
                    .iter()
                    .map(|&c| {
                        let contender = &self.contenders[c];
                        let busy_w = self.config.node_classes[usize::from(self.nodes[contender.node].class)].busy_w;
                        let meets = contender.latency_est_s <= slo_s;
                        let energy_j = busy_w * contender.latency_est_s / contender.answered_est.max(0.05);
                        let key = if meets { energy_j } else { contender.latency_est_s };
                        (!meets, key, contender.period.requests, c.index())
                    })
                    .collect();
                smallest(ranked, top, |a, b| {
                    a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3))
                })
                .into_iter()
                .map(|(_, _, _, c)| Id::from_index(c))
                .collect()
            }
        }
    }

    /// The factor by which every cached glob has decayed since it was computed.
    fn glob_decay(&self, now: SimTime) -> f64 {
        let age_s = (now - self.glob_at).as_secs_f64();
        (-age_s / self.decay.half_life_s).exp2()
    }

    /// Recomputes every active contender's glob at `now` if the cache is stale (a period
    /// ended, or a history row has left the window since it was computed).
    fn refresh_globs(&mut self, now: SimTime) {
        if now < self.glob_valid_until {
            return;
        }
        let now_s = now.as_secs_f64();
        let window_s = self.decay.window_s;
        let mut valid_until_s = f64::INFINITY;
        let active: Vec<Id<Contender>> = self.by_task.iter().flatten().copied().collect();
        let mut iso = vec![0.0; self.contenders.len()];
        for &c in &active {
            let contender = &mut self.contenders[c];
            while contender.history.front().is_some_and(|row| now_s - row.at_s >= window_s) {
                contender.history.pop_front();
            }
            if let Some(row) = contender.history.front() {
                valid_until_s = valid_until_s.min(row.at_s + window_s);
            }
            iso[c.index() as usize] = scoring::iso(contender.history.make_contiguous(), now_s, &self.decay);
        }
        for &c in &active {
            let contender = &self.contenders[c];
            let own = iso[c.index() as usize];
            let sim = &self.similarity[usize::from(contender.task)];
            let others = self.nodes[contender.node]
                .contenders
                .iter()
                .filter(|&&r| r != c)
                .map(|&r| (iso[r.index() as usize], sim[usize::from(self.contenders[r].task)]));
            let glob = scoring::glob(own, others);
            self.contenders[c].glob = glob;
        }
        self.glob_at = now;
        self.glob_valid_until = if valid_until_s.is_finite() {
            // The first instant at which the oldest row no longer counts.
            SimTime::from_secs_f64(valid_until_s).map_or(SimTime::MAX, |t| t.max(now + SimDuration::from_nanos(1)))
        } else {
            SimTime::MAX
        };
    }

    /// Sends a query to its next candidate, or finishes it when none is left.
    fn try_next(&mut self, q: Id<Query>, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let query = &mut self.queries[q];
        let Some(&c) = query.candidates.get(query.tried) else {
            return self.finish(q, now, None);
        };
        query.tried += 1;
        let (task, work_s) = (query.task, query.work_s);
        let node_id = self.contenders[c].node;
        // The request is made.
        self.stats.requests += 1;
        let class = usize::from(self.nodes[node_id].class);
        let category = self.config.node_classes[class].category;
        self.stats.by_category[category_slot(category)] += 1;
        if Some(task) == self.late_task {
            self.stats.late_requests += 1;
            self.stats.late_good += u64::from(category == Category::Good);
        }
        let contender = &mut self.contenders[c];
        contender.period.requests += 1;
        let over_declared = contender.period.consumed >= contender.period.capacity;
        self.update_rank(c);
        let node = &self.nodes[node_id];
        let slots = self.config.node_classes[class].slots as usize;
        let outcome = match node.state {
            NodeState::Gone => QueryOutcome::Failed,
            NodeState::Up if self.life.is_down(node_id.index() as usize) => QueryOutcome::Failed,
            NodeState::Up if over_declared || node.in_flight.len() >= slots => QueryOutcome::RateLimited,
            NodeState::Up => {
                let reliability = node.reliability;
                self.contenders[c].period.consumed += 1.0;
                if ctx.rng(Self::node_stream(node_id)).random::<f64>() < reliability {
                    QueryOutcome::Answered
                } else {
                    QueryOutcome::Failed
                }
            }
        };
        self.queries[q].last_outcome = outcome;
        match outcome {
            QueryOutcome::Answered => {
                let service = SimDuration::from_secs_f64(work_s / self.nodes[node_id].speed)?;
                let done = ctx.schedule(service, NetworkEvent::Answered(q))?;
                self.queries[q].serving = Some((node_id, now, done));
                self.nodes[node_id].in_flight.push(q);
                self.update_node_ranks(node_id);
                Ok(())
            }
            QueryOutcome::RateLimited | QueryOutcome::Failed => {
                self.refused(c, outcome);
                ctx.schedule(self.rtt, NetworkEvent::Retry(q))?;
                Ok(())
            }
            QueryOutcome::NoContender => unreachable!("a contender was tried"),
        }
    }

    /// Counts a 429 or 500 against contender `c`.
    fn refused(&mut self, c: Id<Contender>, outcome: QueryOutcome) {
        let contender = &mut self.contenders[c];
        if outcome == QueryOutcome::RateLimited {
            contender.period.rate_limited += 1;
            self.stats.rate_limited += 1;
        } else {
            contender.period.failed += 1;
            self.stats.failed += 1;
        }
        contender.answered_est *= 0.8;
    }

    fn on_answered(&mut self, q: Id<Query>, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let (node_id, start, _) = self.queries[q].serving.take().expect("an answered query was being served");
        let c = self.queries[q].candidates[self.queries[q].tried - 1];
        self.release(node_id, q, start, now);
        let node = &self.nodes[node_id];
        let true_quality = node.quality;
        let noise: f64 = StandardNormal.sample(ctx.rng(VALIDATOR_STREAM));
        let observed = (true_quality + self.config.validator.quality_noise_sd * noise).clamp(0.0, 1.0);
        let contender = &mut self.contenders[c];
        contender.quality_sum += observed;
        contender.quality_n += 1;
        let service_s = (now - start).as_secs_f64();
        contender.latency_est_s = 0.8 * contender.latency_est_s + 0.2 * service_s;
        contender.answered_est = 0.8 * contender.answered_est + 0.2;
        self.finish(q, now, Some((true_quality, observed)))
    }

    /// A node stops serving query `q`: busy energy, in-flight count.
    fn release(&mut self, node_id: Id<Node>, q: Id<Query>, start: SimTime, now: SimTime) {
        let node = &mut self.nodes[node_id];
        let position = node.in_flight.iter().position(|&x| x == q).expect("the query is in flight at its node");
        node.in_flight.swap_remove(position);
        let busy_w = self.config.node_classes[usize::from(node.class)].busy_w;
        self.stats.busy.add(
            start,
            now,
            busy_w,
            self.config.grid.as_ref().unwrap_or(&crate::grid::CarbonIntensity::NONE),
        );
        self.update_node_ranks(node_id);
    }

    /// Records a finished query and frees it.
    fn finish(&mut self, q: Id<Query>, now: SimTime, quality: Option<(f64, f64)>) -> Result<(), ScheduleError> {
        let query = self.queries.remove(q);
        let answered = quality.is_some();
        let latency = now - query.arrival;
        if query.synthetic {
            self.stats.synthetic += 1;
        } else {
            self.stats.organic += 1;
            if let Some((true_quality, _)) = quality {
                self.stats.answered += 1;
                self.stats.quality.add(true_quality);
                self.stats.latency.record(latency);
                if latency.as_secs_f64() <= self.config.validator.slo_s {
                    self.stats.slo_met += 1;
                }
            }
        }
        self.stats.answered_all += u64::from(answered);
        let last = query.tried.checked_sub(1).map(|i| self.contenders[query.candidates[i]].node);
        self.observer.observe(NetworkQuery {
            query_id: query.id,
            task: query.task,
            synthetic: query.synthetic,
            arrival_s: query.arrival.as_secs_f64(),
            finish_s: now.as_secs_f64(),
            attempts: query.tried as u32,
            node: last.map(Id::index),
            class: last.map(|n| self.nodes[n].class),
            outcome: query.last_outcome,
            quality: quality.map(|(t, _)| t),
            observed_quality: quality.map(|(_, o)| o),
        });
        Ok(())
    }

    /// Every query in flight at a failing or departing node gets a 500 now.
    fn drop_in_flight(&mut self, node_id: Id<Node>, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let in_flight = self.nodes[node_id].in_flight.clone();
        for q in in_flight {
            let (_, start, done) = self.queries[q].serving.take().expect("in flight");
            ctx.cancel(done);
            self.release(node_id, q, start, now);
            let c = self.queries[q].candidates[self.queries[q].tried - 1];
            self.queries[q].last_outcome = QueryOutcome::Failed;
            self.refused(c, QueryOutcome::Failed);
            ctx.schedule(self.rtt, NetworkEvent::Retry(q))?;
        }
        Ok(())
    }

    fn fail_node(&mut self, node_id: Id<Node>, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let unit = node_id.index() as usize;
        if self.nodes[node_id].state != NodeState::Up || self.life.is_down(unit) {
            return Ok(());
        }
        let epoch = self.life.fail(unit, ctx.now());
        let failures = self.config.node_classes[usize::from(self.nodes[node_id].class)].failures();
        self.drop_in_flight(node_id, ctx)?;
        let failures = failures.expect("a node fails only when its class has failures");
        let repair_h = failures.time_to_repair_h(ctx.rng(Self::life_stream(node_id)));
        self.schedule_within(ctx, repair_h, NetworkEvent::NodeRepaired { node: node_id, epoch })
    }

    fn on_repaired(
        &mut self,
        node_id: Id<Node>,
        epoch: u32,
        ctx: &mut Context<'_, NetworkEvent>,
    ) -> Result<(), ScheduleError> {
        let unit = node_id.index() as usize;
        if !self.life.is_down(unit) || self.life.epoch(unit) != epoch {
            return Ok(());
        }
        let epoch = self.life.repair(unit, ctx.now());
        if let Some(failures) = self.config.node_classes[usize::from(self.nodes[node_id].class)].failures() {
            let up_h = failures.time_to_failure_h(ctx.rng(Self::life_stream(node_id)));
            self.schedule_within(ctx, up_h, NetworkEvent::NodeFails { node: node_id, epoch })?;
        }
        Ok(())
    }

    fn leave(&mut self, node_id: Id<Node>, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        if self.nodes[node_id].state == NodeState::Gone {
            return Ok(());
        }
        self.stats.nodes_left += 1;
        self.drop_in_flight(node_id, ctx)?;
        // Its life ends: a repair it was waiting for is stale.
        self.life.retire(node_id.index() as usize, ctx.now());
        let node = &mut self.nodes[node_id];
        node.state = NodeState::Gone;
        node.left = Some(ctx.now());
        for i in 0..self.nodes[node_id].contenders.len() {
            let c = self.nodes[node_id].contenders[i];
            let task = usize::from(self.contenders[c].task);
            self.contenders[c].active = false;
            self.by_task[task].retain(|&x| x != c);
            if let Some(ranks) = &mut self.ranks {
                ranks[task].remove(&c.index());
            }
        }
        Ok(())
    }

    fn on_scheduled(&mut self, index: u32, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let event = self.config.events[index as usize].clone();
        let class = self.config.class_index(&event.class).expect("validated class name");
        match event.action {
            NodeAction::Join => {
                for _ in 0..event.count {
                    self.add_node(class, ctx)?;
                    self.stats.nodes_joined += 1;
                }
            }
            NodeAction::Leave | NodeAction::Fail => {
                let life = &self.life;
                let targets: Vec<Id<Node>> = self
                    .nodes
                    .iter()
                    .filter(|(id, n)| {
                        usize::from(n.class) == class && n.state == NodeState::Up && !life.is_down(id.index() as usize)
                    })
                    .map(|(id, _)| id)
                    .take(event.count as usize)
                    .collect();
                for node in targets {
                    if event.action == NodeAction::Leave {
                        self.leave(node, ctx)?;
                    } else {
                        self.fail_node(node, ctx)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_join(&mut self, class: u16, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        self.add_node(usize::from(class), ctx)?;
        self.stats.nodes_joined += 1;
        self.schedule_join(class, ctx)
    }

    fn schedule_join(&self, class: u16, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let rate = self.config.node_classes[usize::from(class)].join_per_h;
        if rate > 0.0 {
            let after_h =
                Distribution::<f64>::sample(&Exp1, ctx.rng(StreamId(JOIN_STREAM_BASE + u32::from(class)))) / rate;
            self.schedule_within(ctx, after_h, NetworkEvent::NodeJoins { class })?;
        }
        Ok(())
    }

    /// Scores every queried contender, writes its history row, restarts the counters.
    fn on_period_end(&mut self, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let now_s = now.as_secs_f64();
        self.stats.periods += 1;
        let exponent = self.config.routing.quality_exponent;
        let active: Vec<Id<Contender>> = self.by_task.iter().flatten().copied().collect();
        let mut rows = Vec::with_capacity(active.len());
        for &c in &active {
            let contender = &mut self.contenders[c];
            let counts = contender.period;
            let observed = (contender.quality_n > 0).then(|| contender.quality_sum / contender.quality_n as f64);
            let period_score = scoring::period_score(&counts);
            let score = period_score.map(|p| p * observed.unwrap_or(0.0).powf(exponent));
            if let Some(score) = score {
                contender.history.push_back(HistoryRow { at_s: now_s, score });
            }
            rows.push((c, counts, period_score, observed, score));
            contender.period = PeriodCounts { capacity: counts.capacity, ..PeriodCounts::default() };
            contender.quality_sum = 0.0;
            contender.quality_n = 0;
        }
        if self.config.routing.policy == RoutingPolicy::LeastProcessed {
            for &c in &active {
                self.update_rank(c);
            }
        }
        if self.config.routing.policy == RoutingPolicy::DecayedScore || self.periods.is_some() {
            self.glob_valid_until = SimTime::ZERO;
            self.refresh_globs(now);
        }
        if let Some(periods) = &mut self.periods {
            for (c, counts, period_score, observed, score) in rows {
                let contender = &self.contenders[c];
                periods.observe(NetworkPeriod {
                    t_h: now_s / S_PER_H,
                    node: contender.node.index(),
                    class: self.nodes[contender.node].class,
                    task: contender.task,
                    requests: counts.requests,
                    rate_limited: counts.rate_limited,
                    failed: counts.failed,
                    consumed: counts.consumed,
                    capacity: counts.capacity,
                    period_score,
                    observed_quality: observed,
                    score,
                    glob: contender.glob,
                });
            }
        }
        // Cold start of the late task: the first period with enough of it on good nodes.
        if let Some(task) = self.late_task {
            let start_s = self.config.tasks[usize::from(task)].start_h * S_PER_H;
            let (n, good) = (self.stats.late_requests, self.stats.late_good);
            if self.stats.cold_start_h.is_none()
                && now_s > start_s
                && n > 0
                && good as f64 >= self.config.validator.concentration * n as f64
            {
                self.stats.cold_start_h = Some((now_s - start_s) / S_PER_H);
            }
            self.stats.late_requests = 0;
            self.stats.late_good = 0;
        }
        if now + self.period <= self.horizon {
            ctx.schedule(self.period, NetworkEvent::PeriodEnd)?;
        }
        Ok(())
    }

    /// The per-replication metrics at `end`.
    pub fn results(&self, end: SimTime, events: u64) -> NetworkRun {
        let s = &self.stats;
        let [latency_p50_s, latency_p99_s] = s.latency.quantiles_s([0.50, 0.99]);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        // Every node draws its idle power from joining to leaving (or the end).
        let grid = self.config.grid.as_ref().unwrap_or(&crate::grid::CarbonIntensity::NONE);
        let mut meter = s.busy;
        for (_, n) in self.nodes.iter() {
            let until = n.left.unwrap_or(end).min(end);
            meter.add(n.joined, until, self.config.node_classes[usize::from(n.class)].idle_w, grid);
        }
        let energy_kwh = meter.energy_kwh_at(meter.since(), 0.0);
        let carbon_kg = self.config.grid.as_ref().map(|_| meter.carbon_kg_at(meter.since(), 0.0, grid));
        let finished = s.organic + s.synthetic;
        NetworkRun {
            organic_queries: s.organic,
            answered: s.answered,
            answer_rate: ratio(s.answered, s.organic),
            quality_mean: s.quality.mean(),
            latency_mean_s: s.latency.mean_s(),
            latency_p50_s,
            latency_p99_s,
            slo_attainment: ratio(s.slo_met, s.organic),
            synthetic_queries: s.synthetic,
            requests: s.requests,
            attempts_per_query: ratio(s.requests, finished),
            rate_429: ratio(s.rate_limited, s.requests),
            rate_500: ratio(s.failed, s.requests),
            share_good: ratio(s.by_category[0], s.requests),
            share_poor: ratio(s.by_category[1], s.requests),
            share_flaky: ratio(s.by_category[2], s.requests),
            cold_start_h: s.cold_start_h,
            energy_kwh,
            carbon_kg,
            cost_usd: self.config.energy_usd_per_kwh.map(|price| energy_kwh * price),
            energy_per_query_kwh: (s.answered_all > 0).then(|| energy_kwh / s.answered_all as f64),
            nodes_joined: s.nodes_joined,
            nodes_left: s.nodes_left,
            node_failures: self.life.failures(),
            periods: s.periods,
            simulated_h: end.as_secs_f64() / S_PER_H,
            events,
        }
    }

    /// The decayed-score rank of every active contender of `task` at `now`, computed
    /// from scratch with [`scoring`] (no cache): what the policy's cached ranks must
    /// equal.
    pub fn ranks_from_history(&self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        let now_s = now.as_secs_f64();
        let iso_of = |c: Id<Contender>| {
            let rows: Vec<HistoryRow> = self.contenders[c].history.iter().copied().collect();
            scoring::iso(&rows, now_s, &self.decay)
        };
        self.by_task[usize::from(task)]
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                let sim = &self.similarity[usize::from(task)];
                let others = self.nodes[contender.node]
                    .contenders
                    .iter()
                    .filter(|&&r| r != c && self.contenders[r].active)
                    .map(|&r| (iso_of(r), sim[usize::from(self.contenders[r].task)]));
                let glob = scoring::glob(iso_of(c), others);
                (c.index(), scoring::rank(contender.period.requests, glob, self.decay.weight))
            })
            .collect()
    }

    /// The same ranks from the cached globs, as the policy computes them.
    pub fn ranks_cached(&mut self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        self.refresh_globs(now);
        let decay = self.glob_decay(now);
        self.by_task[usize::from(task)]
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                (c.index(), scoring::rank(contender.period.requests, contender.glob * decay, self.decay.weight))
            })
            .collect()
    }
}

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Model for Network<O, S> {
    type Event = NetworkEvent;
    type Error = ScheduleError;

    fn handle(&mut self, event: NetworkEvent, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        match event {
            NetworkEvent::Start => self.start(ctx),
            NetworkEvent::Arrival { task, synthetic } => self.on_arrival(task, synthetic, ctx),
            NetworkEvent::Answered(q) => self.on_answered(q, ctx),
            NetworkEvent::Retry(q) => self.try_next(q, ctx),
            NetworkEvent::PeriodEnd => self.on_period_end(ctx),
            NetworkEvent::NodeFails { node, epoch } => {
                if self.life.epoch(node.index() as usize) == epoch {
                    self.fail_node(node, ctx)
                } else {
                    Ok(())
                }
            }
            NetworkEvent::NodeRepaired { node, epoch } => self.on_repaired(node, epoch, ctx),
            NetworkEvent::NodeLeaves(node) => self.leave(node, ctx),
            NetworkEvent::NodeJoins { class } => self.on_join(class, ctx),
            NetworkEvent::Scheduled(index) => self.on_scheduled(index, ctx),
        }
    }
}

/// Builds one replication: the initial nodes, every source, the first period end, the
/// scenario's events and the classes' joins are scheduled.
pub fn build_network<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>>(
    config: &NetworkConfig,
    observer: O,
    periods: Option<S>,
    master_seed: u64,
    replication: u64,
) -> Result<Simulation<Network<O, S>>, ConfigError> {
    let world = Network::new(config.clone(), observer, periods)?;
    let mut sim = Simulation::with_queue(world, QueueKind::default(), master_seed, replication);
    sim.schedule(SimTime::ZERO, NetworkEvent::Start)
        .map_err(|e| ConfigError::invalid("simulation.duration_s", e, "times within 584 years"))?;
    Ok(sim)
}

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Network<O, S> {
    /// Time zero: initial nodes in class order, then sources, periods, events, joins.
    fn start(&mut self, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        for class in 0..self.config.node_classes.len() {
            for _ in 0..self.config.node_classes[class].count {
                self.add_node(class, ctx)?;
            }
        }
        for task in 0..self.config.tasks.len() as u16 {
            let start = SimTime::from_secs_f64(self.config.tasks[usize::from(task)].start_h * S_PER_H)?;
            for synthetic in [false, true] {
                self.schedule_arrival(ctx, task, synthetic, start)?;
            }
        }
        if self.period <= SimDuration::from_nanos(self.horizon.as_nanos()) {
            ctx.schedule(self.period, NetworkEvent::PeriodEnd)?;
        }
        for (i, event) in self.config.events.iter().enumerate() {
            let at = SimTime::from_secs_f64(event.at_h * S_PER_H)?;
            if at < self.horizon {
                ctx.schedule(at, NetworkEvent::Scheduled(i as u32))?;
            }
        }
        for class in 0..self.config.node_classes.len() as u16 {
            self.schedule_join(class, ctx)?;
        }
        Ok(())
    }
}

/// Runs a built replication to its horizon and returns its metrics.
pub fn finish_network<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>>(
    sim: &mut Simulation<Network<O, S>>,
) -> Result<NetworkRun, ScheduleError> {
    let horizon = sim.model().horizon;
    sim.run_until(horizon)?;
    let events = sim.events_handled();
    Ok(sim.model().results(horizon, events))
}

/// Runs one replication untraced.
pub fn run_network(
    config: &NetworkConfig,
    master_seed: u64,
    replication: u64,
) -> Result<NetworkRun, crate::error::RunError> {
    let mut sim = build_network::<NullObserver, NullObserver>(config, NullObserver, None, master_seed, replication)?;
    Ok(finish_network(&mut sim)?)
}

#[cfg(test)]
mod tests;
