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

use infersim_engine::stats::{LatencyHistogram, Tally};
use infersim_engine::{
    Arena, Context, EventId, Id, Model, NullObserver, Observer, QueueKind, ScheduleError, SimDuration, SimRng, SimTime,
    Simulation, Slab, StreamId,
};
use priority_queue::PriorityQueue;
use rand::RngExt;
use rand_distr::{Distribution, Exp1, LogNormal, StandardNormal};
use rustc_hash::FxBuildHasher;

mod churn;
mod config;
mod file;
mod results;
mod routing;
use crate::contenders::{ContenderBook, smallest};
pub use crate::scoring;
pub use config::{
    Category, NetworkConfig, NodeAction, NodeClass, Routing, RoutingPolicy, ScheduledEvent, Similarity, TaskConfig,
    Validator,
};
pub use file::{NetworkFile, NetworkWorld};
pub use results::NetworkRun;
use scoring::DecayParams;

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
    joined: SimTime,
    left: Option<SimTime>,
}

/// A (node, task) pair the validator can route to: the shared book's, with the
/// energy-aware policy's estimates beside it.
pub type Contender = crate::contenders::Contender<Estimates>;

/// What energy_aware routing estimates of a contender from its answers.
#[derive(Clone, Copy, Debug)]
pub struct Estimates {
    /// Latency of answered requests (s), smoothed.
    latency_est_s: f64,
    /// Share answered, smoothed.
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

/// Running totals of a replication.
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
pub(crate) const RANK_QUEUE_MIN_CONTENDERS: u32 = 64;

/// The miner network with its validator. `O` sees every finished query, `S` every
/// contender's period.
pub struct Network<O = NullObserver, S = NullObserver> {
    config: NetworkConfig,
    work: Vec<WorkSampler>,
    /// Organic sources given as a shared arrival process, per task.
    organic: Vec<Option<crate::arrivals::ArrivalGenerator>>,
    /// The late task whose cold start is measured.
    late_task: Option<u16>,
    horizon: SimTime,
    period: SimDuration,
    rtt: SimDuration,
    nodes: Arena<Node>,
    /// The validator's contenders: counters, history, globs.
    book: ContenderBook<Estimates>,
    /// In-place ranks, for the policies that use them.
    ranks: Option<Vec<RankQueue>>,
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
            book: ContenderBook::new(
                DecayParams { half_life_s: r.half_life_s, window_s: r.window_s, weight: r.weight },
                r.quality_exponent,
                config.similarity_matrix(),
            ),
            work,
            late_task,
            horizon,
            period,
            rtt,
            nodes: Arena::new(),
            ranks,
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

    /// Sends a query to its next candidate, or finishes it when none is left.
    fn try_next(&mut self, q: Id<Query>, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let query = &mut self.queries[q];
        let Some(&c) = query.candidates.get(query.tried) else {
            return self.finish(q, now, None);
        };
        query.tried += 1;
        let (task, work_s) = (query.task, query.work_s);
        let node_id = Id::<Node>::from_index(self.book[c].node);
        // The request is made.
        self.stats.requests += 1;
        let class = usize::from(self.nodes[node_id].class);
        let category = self.config.node_classes[class].category;
        self.stats.by_category[category.index()] += 1;
        if Some(task) == self.late_task {
            self.stats.late_requests += 1;
            self.stats.late_good += u64::from(category == Category::Good);
        }
        self.book.requested(c);
        let over_declared = self.book.over_declared(c);
        self.update_rank(c);
        let node = &self.nodes[node_id];
        let slots = self.config.node_classes[class].slots as usize;
        let outcome = match node.state {
            NodeState::Gone => QueryOutcome::Failed,
            NodeState::Up if self.life.is_down(node_id.index() as usize) => QueryOutcome::Failed,
            NodeState::Up if over_declared || node.in_flight.len() >= slots => QueryOutcome::RateLimited,
            NodeState::Up => {
                let reliability = node.reliability;
                self.book.accepted(c);
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
        let rate_limited = outcome == QueryOutcome::RateLimited;
        self.book.refused(c, rate_limited);
        if rate_limited {
            self.stats.rate_limited += 1;
        } else {
            self.stats.failed += 1;
        }
        self.book[c].extra.answered_est *= 0.8;
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
        self.book.observed(c, observed);
        let service_s = (now - start).as_secs_f64();
        let estimates = &mut self.book[c].extra;
        estimates.latency_est_s = 0.8 * estimates.latency_est_s + 0.2 * service_s;
        estimates.answered_est = 0.8 * estimates.answered_est + 0.2;
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
        let last = query.tried.checked_sub(1).map(|i| self.book[query.candidates[i]].node);
        self.observer.observe(NetworkQuery {
            query_id: query.id,
            task: query.task,
            synthetic: query.synthetic,
            arrival_s: query.arrival.as_secs_f64(),
            finish_s: now.as_secs_f64(),
            attempts: query.tried as u32,
            node: last,
            class: last.map(|n| self.nodes[Id::from_index(n)].class),
            outcome: query.last_outcome,
            quality: quality.map(|(t, _)| t),
            observed_quality: quality.map(|(_, o)| o),
        });
        Ok(())
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
pub(crate) fn finish_network<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>>(
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
