//! Miners on the fleet: nineteen's validator (the miner network's, section 3.4 of the
//! design) over token-level replicas. With `[serving.validator]`, every replica is a
//! miner node with hidden traits drawn from its pool's `miner` class (answer quality,
//! reliability, a declared capacity per period), and every (replica, task) pair is a
//! contender in the shared [`ContenderBook`]. A request goes to the first `top`
//! contenders its router orders (decayed_score, least_processed, round_robin or
//! random) in turn until one takes it: a replica that is down or gone answers 500, one
//! whose queue is full or whose declared capacity is used up answers 429, one that
//! takes it may still fail it (probability 1 - reliability: 500); each refusal comes
//! back after `rtt_s`. A miner that fails or leaves with requests answers 500 for each
//! of them, and they go on to their next contender. Every answered request is scored by
//! the validator: the miner's quality plus noise, or 0 if the answer came after the
//! task's `slo_s` (the validator's timeout), which is how the latency the simulation
//! measures enters the scores. Scoring periods, history rows, decay and similarity are
//! the network world's, through the same book.
//!
//! Churn: miners leave at `leave_per_h` (their replica goes off) and new ones join at
//! `join_per_h` into a pool's free slots (`max_replicas`), serving after the pool's
//! cold start with fresh traits and no history.

use infersim_engine::{Context, Id, Observer, ScheduleError, SimDuration, SimTime, Slab, StreamId};
use rand::RngExt;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::Deserialize;

use super::{LlmEvent, LlmPool, LlmRequest, LlmRouting, LlmServing, Mode, PoolRole};
use crate::contenders::{Category, Contender, ContenderBook};
use crate::error::ConfigError;
use crate::llm::Sequence;
use crate::llm::kv::Chain;
use crate::requests::{RequestOutcome, RequestRecord};
use crate::scoring::DecayParams;
use crate::serving::{ROUTING_STREAM, ServingSample};

/// Stream of the noise on the validator's quality scores.
pub const VALIDATOR_STREAM: StreamId = StreamId(6);
/// Miner `m`'s hidden traits and its requests' failures draw from
/// `MINER_STREAM_BASE + m`.
pub const MINER_STREAM_BASE: u32 = 200_000_000;
/// Miner `m`'s departure draws from `MINER_LIFE_STREAM_BASE + m`.
pub const MINER_LIFE_STREAM_BASE: u32 = 300_000_000;
/// Pool `p`'s joins draw from `MINER_JOIN_STREAM_BASE + p`.
pub const MINER_JOIN_STREAM_BASE: u32 = 400_000_000;

/// A share given as one value or as a `[low, high]` range drawn from per miner.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Range {
    One(f64),
    Span([f64; 2]),
}

impl Range {
    fn resolve(self, key: &str) -> Result<[f64; 2], ConfigError> {
        let ([low, high], given) = match self {
            Range::One(x) => ([x, x], x.to_string()),
            Range::Span([low, high]) => ([low, high], format!("[{low}, {high}]")),
        };
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low <= high && high <= 1.0) {
            return Err(ConfigError::invalid(key, given, "a share in [0, 1] or [low, high] within it"));
        }
        Ok([low, high])
    }
}

/// A pool's `miner` table.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MinerTable {
    category: Option<Category>,
    quality: Option<Range>,
    reliability: Option<Range>,
    capacity: Option<f64>,
    join_per_h: Option<f64>,
    leave_per_h: Option<f64>,
    max_replicas: Option<i64>,
}

/// What the miners of a pool are: their traits are drawn uniformly from the ranges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinerClass {
    /// Good, poor or flaky.
    pub category: Category,
    /// The true quality of their answers, in [0, 1].
    pub quality: [f64; 2],
    /// The probability that a request they take is answered (else 500).
    pub reliability: [f64; 2],
    /// Requests a period each of their contenders declares.
    pub capacity: f64,
    /// New miners joining the pool per hour (into free slots).
    pub join_per_h: f64,
    /// Rate at which each miner leaves (per hour).
    pub leave_per_h: f64,
    /// Miners serving at the start (the pool's `replicas`; its slots are `max_replicas`).
    pub initial_replicas: u32,
}

/// Declared capacity unless given: unlimited in effect (the unqueried share is 1, so
/// 429s and 500s cost in full).
pub const DEFAULT_MINER_CAPACITY: f64 = 1e12;

impl MinerTable {
    /// The class of pool `key`, and the slots it needs beside its `replicas`.
    pub(super) fn resolve(self, key: &str, replicas: u32) -> Result<(MinerClass, u32), ConfigError> {
        let k = |name: &str| format!("{key}.miner.{name}");
        let rate = |name: &str, v: Option<f64>| {
            let v = v.unwrap_or(0.0);
            if v.is_finite() && (0.0..=1e6).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::invalid(k(name), v, "a rate per hour from 0 to 1e6"))
            }
        };
        let capacity = self.capacity.unwrap_or(DEFAULT_MINER_CAPACITY);
        if !(capacity.is_finite() && capacity > 0.0) {
            return Err(ConfigError::invalid(k("capacity"), capacity, "requests a period > 0"));
        }
        let slots = match self.max_replicas {
            None => replicas,
            Some(n) => crate::serving::int_in(&k("max_replicas"), n, i64::from(replicas), 1_000_000)?,
        };
        let class = MinerClass {
            category: self.category.unwrap_or(Category::Good),
            quality: self.quality.unwrap_or(Range::One(1.0)).resolve(&k("quality"))?,
            reliability: self.reliability.unwrap_or(Range::One(1.0)).resolve(&k("reliability"))?,
            capacity,
            join_per_h: rate("join_per_h", self.join_per_h)?,
            leave_per_h: rate("leave_per_h", self.leave_per_h)?,
            initial_replicas: replicas,
        };
        Ok((class, slots))
    }
}

/// `[serving.validator]`: nineteen's validator in front of the fleet. Keys and
/// defaults are the network world's `[routing]` and `[validator]` ones.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidatorTable {
    period_s: Option<f64>,
    top: Option<i64>,
    half_life_s: Option<f64>,
    window_s: Option<f64>,
    weight: Option<f64>,
    quality_exponent: Option<f64>,
    quality_noise_sd: Option<f64>,
    rtt_s: Option<f64>,
}

/// `[[serving.similarity]]`: sim(from -> to) between two tasks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimilarityRow {
    from: String,
    to: String,
    value: f64,
}

/// The validator of a fleet whose replicas are miners.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetValidator {
    /// Scoring period (s).
    pub period_s: f64,
    /// Contenders tried per request, in order.
    pub top: u32,
    /// Decay, window and weight of the decayed score.
    pub decay: DecayParams,
    /// History row = period score x observed quality ^ this.
    pub quality_exponent: f64,
    /// Standard deviation of the noise on each observed quality.
    pub quality_noise_sd: f64,
    /// Time for a 429 or 500 to come back (s).
    pub rtt_s: f64,
    /// sim(from -> to) between tasks, `similarity[from][to]`.
    pub similarity: Vec<Vec<f64>>,
}

impl ValidatorTable {
    /// The validator for these `tasks` (names) and `similarity` rows.
    pub(super) fn resolve(self, tasks: &[&str], rows: &[SimilarityRow]) -> Result<FleetValidator, ConfigError> {
        let k = |name: &str| format!("serving.validator.{name}");
        let within = |name: &str, v: f64, low: f64, high: f64, allowed: &'static str| {
            if v.is_finite() && low <= v && v <= high { Ok(v) } else { Err(ConfigError::invalid(k(name), v, allowed)) }
        };
        let d = DecayParams::default();
        let period_s = within("period_s", self.period_s.unwrap_or(600.0), 1e-3, 1e9, "seconds from 1 ms to 1e9")?;
        let half_life_s =
            within("half_life_s", self.half_life_s.unwrap_or(d.half_life_s), 1e-3, 1e9, "seconds from 1 ms to 1e9")?;
        let window_s = within("window_s", self.window_s.unwrap_or(d.window_s), 1e-3, 1e9, "seconds from 1 ms to 1e9")?;
        let mut similarity = vec![vec![0.0; tasks.len()]; tasks.len()];
        for (i, row) in rows.iter().enumerate() {
            let key = |name: &str| format!("serving.similarity[{i}].{name}");
            let index = |name: &str, task: &str| {
                tasks
                    .iter()
                    .position(|t| *t == task)
                    .ok_or_else(|| ConfigError::invalid(key(name), task, format!("a task name: {}", tasks.join(", "))))
            };
            let (from, to) = (index("from", &row.from)?, index("to", &row.to)?);
            if !(0.0..=1.0).contains(&row.value) {
                return Err(ConfigError::invalid(key("value"), row.value, "a similarity in [0, 1]"));
            }
            similarity[from][to] = row.value;
        }
        Ok(FleetValidator {
            period_s,
            top: crate::serving::int_in(&k("top"), self.top.unwrap_or(5), 1, 1000)?,
            decay: DecayParams {
                half_life_s,
                window_s,
                weight: within("weight", self.weight.unwrap_or(d.weight), 0.0, 1e9, "a weight from 0 to 1e9")?,
            },
            quality_exponent: within(
                "quality_exponent",
                self.quality_exponent.unwrap_or(1.0),
                0.0,
                100.0,
                "an exponent from 0 to 100",
            )?,
            quality_noise_sd: within(
                "quality_noise_sd",
                self.quality_noise_sd.unwrap_or(0.1),
                0.0,
                10.0,
                "from 0 to 10",
            )?,
            rtt_s: within("rtt_s", self.rtt_s.unwrap_or(0.05), 0.0, 3600.0, "seconds from 0 to 3600")?,
            similarity,
        })
    }
}

/// A miner: the replica slot it runs on and its hidden traits.
#[derive(Clone, Copy, Debug)]
struct Miner {
    replica: u32,
    quality: f64,
    reliability: f64,
    category: Category,
    /// Taking requests (joined and started, not yet gone).
    present: bool,
}

/// A request's tour of its contenders.
#[derive(Clone, Debug)]
pub(super) struct Attempt {
    candidates: Vec<Id<Contender<()>>>,
    tried: usize,
    chain: Option<Chain>,
    own: Option<(u64, bool)>,
    /// Where it stood when a miner dropped it (it goes on from there).
    resume: Option<Sequence<Id<LlmRequest>>>,
    /// What the last contender answered: 429 (true) or 500.
    last_rate_limited: bool,
}

/// The validator's state in a run.
pub(super) struct Validator {
    book: ContenderBook<()>,
    miners: Vec<Miner>,
    /// The miner each replica slot runs now.
    slot_miner: Vec<Option<u32>>,
    attempts: Slab<Attempt>,
    requests: u64,
    by_category: [u64; 3],
    rate_limited: u64,
    failed: u64,
    quality: infersim_engine::stats::Tally,
    joined: u64,
    left: u64,
    periods: u64,
}

crate::metrics! {
    /// What the validator of a fleet of miners measured.
    #[derive(Clone, Debug, PartialEq)]
    pub struct FleetMinersRun {
        /// Mean true quality of the answers to requests after warm-up.
        quality_mean: Option<f64> = "share",
        /// Requests made to contenders (every attempt of every request).
        contender_requests: u64 = "requests",
        /// contender_requests per arrived request.
        attempts_per_request: Option<f64> = "attempts",
        /// Share of contender requests answered 429.
        rate_429: Option<f64> = "share",
        /// Share answered 500.
        rate_500: Option<f64> = "share",
        /// Share of contender requests made to miners of `good` classes.
        share_good: Option<f64> = "share",
        /// ... of `poor` classes.
        share_poor: Option<f64> = "share",
        /// ... of `flaky` classes.
        share_flaky: Option<f64> = "share",
        /// Miners that joined after time 0.
        miners_joined: u64 = "miners",
        /// Miners that left.
        miners_left: u64 = "miners",
        /// Scoring periods completed.
        periods: u64 = "periods",
    }
}

impl Validator {
    pub(super) fn new(v: &FleetValidator, replicas: usize) -> Self {
        Validator {
            book: ContenderBook::new(v.decay, v.quality_exponent, v.similarity.clone()),
            miners: Vec::new(),
            slot_miner: vec![None; replicas],
            attempts: Slab::new(),
            requests: 0,
            by_category: [0; 3],
            rate_limited: 0,
            failed: 0,
            quality: Default::default(),
            joined: 0,
            left: 0,
            periods: 0,
        }
    }

    /// The run's metrics, `arrived` requests having come.
    pub(super) fn results(&self, arrived: u64) -> FleetMinersRun {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        FleetMinersRun {
            quality_mean: self.quality.mean(),
            contender_requests: self.requests,
            attempts_per_request: ratio(self.requests, arrived),
            rate_429: ratio(self.rate_limited, self.requests),
            rate_500: ratio(self.failed, self.requests),
            share_good: ratio(self.by_category[Category::Good.index()], self.requests),
            share_poor: ratio(self.by_category[Category::Poor.index()], self.requests),
            share_flaky: ratio(self.by_category[Category::Flaky.index()], self.requests),
            miners_joined: self.joined,
            miners_left: self.left,
            periods: self.periods,
        }
    }

    /// The true quality of the miner that answered through contender `c`.
    fn quality_of(&self, c: Id<Contender<()>>) -> f64 {
        self.miners[self.book[c].node as usize].quality
    }
}

/// What a contender did with a request.
enum Answer {
    Took(u32),
    Refused { rate_limited: bool },
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    fn validator(&mut self) -> &mut Validator {
        self.validator.as_mut().expect("a fleet of miners")
    }

    /// Time zero: every serving replica is a miner; the first scoring period starts.
    pub(super) fn start_miners(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let Some(v) = self.config.validator.as_ref() else { return Ok(()) };
        for r in 0..self.replicas.len() {
            if self.replicas[r].mode == Mode::Serving {
                self.new_miner(r, ctx)?;
                self.miner_present(r, ctx)?;
            }
        }
        let period = SimDuration::from_secs_f64(v.period_s)?;
        if SimTime::ZERO + period < self.horizon {
            ctx.schedule(period, LlmEvent::PeriodEnd)?;
        }
        for p in 0..self.config.pools.len() {
            self.schedule_join(p, ctx)?;
        }
        Ok(())
    }

    /// A new miner on slot `r`: its traits drawn from its own stream.
    fn new_miner(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let class = self.pool(r).miner.expect("every pool of a fleet of miners has a class");
        let m = self.validator().miners.len() as u32;
        let rng = ctx.rng(StreamId(MINER_STREAM_BASE + m));
        let mut uniform = |[low, high]: [f64; 2]| low + (high - low) * rng.random::<f64>();
        let (quality, reliability) = (uniform(class.quality), uniform(class.reliability));
        let v = self.validator();
        v.miners.push(Miner { replica: r as u32, quality, reliability, category: class.category, present: false });
        v.slot_miner[r] = Some(m);
        Ok(())
    }

    /// Slot `r`'s miner takes requests: a contender for each task its pool serves, and
    /// its departure drawn.
    fn miner_present(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let m = self.validator().slot_miner[r].expect("a miner on the slot");
        let class = self.pool(r).miner.expect("a miner class");
        let group = self.replicas[r].group as usize;
        let tasks: Vec<u16> =
            (0..self.task_groups.len()).filter(|&t| self.task_groups[t] == group).map(|t| t as u16).collect();
        let v = self.validator();
        v.miners[m as usize].present = true;
        for task in tasks {
            v.book.add(m, task, class.capacity, ());
        }
        if class.leave_per_h > 0.0 {
            let after_h =
                Distribution::<f64>::sample(&Exp1, ctx.rng(StreamId(MINER_LIFE_STREAM_BASE + m))) / class.leave_per_h;
            self.schedule_in_run(after_h, LlmEvent::MinerLeaves(m), ctx)?;
        }
        Ok(())
    }

    /// Schedules `event` `after_h` from now if that falls before the horizon.
    fn schedule_in_run(
        &self,
        after_h: f64,
        event: LlmEvent,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let left_s = (self.horizon - ctx.now()).as_secs_f64();
        if after_h * 3600.0 < left_s {
            let after = SimDuration::from_secs_f64(after_h * 3600.0)?;
            let at = ctx.now().checked_add(after).ok_or(ScheduleError::Overflow)?;
            if at < self.horizon {
                ctx.schedule(at, event)?;
            }
        }
        Ok(())
    }

    /// Schedules pool `p`'s next join, if its miners join.
    fn schedule_join(&mut self, p: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let Some(class) = self.config.pools[p].miner.filter(|c| c.join_per_h > 0.0) else { return Ok(()) };
        let rng = ctx.rng(StreamId(MINER_JOIN_STREAM_BASE + p as u32));
        let after_h = Distribution::<f64>::sample(&Exp1, rng) / class.join_per_h;
        self.schedule_in_run(after_h, LlmEvent::MinerJoins(p as u16), ctx)
    }

    /// A miner joins pool `p` in a free slot (none free: it does not join), serving
    /// after the pool's cold start.
    pub(super) fn on_miner_joins(&mut self, p: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let free = (0..self.replicas.len()).find(|&r| {
            usize::from(self.replicas[r].pool) == p && self.replicas[r].mode == Mode::Off && !self.life.is_down(r)
        });
        if let Some(r) = free {
            self.new_miner(r, ctx)?;
            self.validator().joined += 1;
            self.cold_start(r, ctx)?;
        }
        self.schedule_join(p, ctx)
    }

    /// A joined miner has started: it takes requests.
    pub(super) fn miner_started(&mut self, r: usize, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        if self.validator.is_some() && self.validator().slot_miner[r].is_some() {
            self.miner_present(r, ctx)?;
        }
        Ok(())
    }

    /// Miner `m` leaves: its contenders are retired, its requests answered 500 (they go
    /// on to their next contenders), its replica goes off.
    pub(super) fn on_miner_leaves(&mut self, m: u32, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let v = self.validator();
        let miner = v.miners[m as usize];
        if !miner.present {
            return Ok(());
        }
        v.miners[m as usize].present = false;
        v.left += 1;
        v.book.retire(m);
        let r = miner.replica as usize;
        v.slot_miner[r] = None;
        self.stop_steps(r, ctx);
        let mut dropped = Vec::new();
        self.replicas[r].engine.drain(|s, chain| dropped.push((s, chain)));
        self.set_mode(r, Mode::Off);
        self.unprovision_replica(r, now);
        for (s, chain) in dropped {
            let request = &mut self.requests[s.key];
            request.preemptions = s.preemptions;
            request.energy_j += s.energy_j;
            self.miner_dropped(s, chain, ctx)?;
        }
        Ok(())
    }

    /// A request whose miner failed or left: a 500 against its contender; it goes on to
    /// the next one.
    pub(super) fn miner_dropped(
        &mut self,
        s: Sequence<Id<LlmRequest>>,
        chain: Option<Chain>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let id = s.key;
        let (attempt, contender) = (self.requests[id].attempt, self.requests[id].contender.take());
        let a = attempt.expect("a miner's request has its attempt");
        if let Some(t) = self.requests[id].timeout.take() {
            ctx.cancel(t);
        }
        let v = self.validator();
        if let Some(c) = contender {
            v.book.refused(c, false);
            v.failed += 1;
        }
        let entry = &mut v.attempts[a];
        entry.resume = Some(s);
        entry.chain = chain.or(entry.chain.take());
        entry.last_rate_limited = false;
        let rtt = SimDuration::from_secs_f64(self.config.validator.as_ref().expect("validator").rtt_s)?;
        ctx.schedule(rtt, LlmEvent::NextContender(id))?;
        Ok(())
    }

    /// A request has arrived at the validator: its contenders are ordered and the
    /// first is asked.
    pub(super) fn ask_contenders(
        &mut self,
        id: Id<LlmRequest>,
        chain: Option<Chain>,
        own: Option<(u64, bool)>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let (now, task) = (ctx.now(), self.requests[id].task);
        let top = self.config.validator.as_ref().expect("validator").top as usize;
        let routing = self.config.routing;
        let rng = ctx.rng(ROUTING_STREAM);
        let v = self.validator.as_mut().expect("a fleet of miners");
        let candidates = match routing {
            LlmRouting::DecayedScore => v.book.decayed_score(task, now, top),
            LlmRouting::LeastProcessed => v.book.least_processed(task, top),
            LlmRouting::RoundRobin => v.book.round_robin(task, top),
            LlmRouting::Random => v.book.random(task, top, rng),
            other => unreachable!("validated: {other:?} is not a validator's router"),
        };
        let a = v.attempts.insert(Attempt { candidates, tried: 0, chain, own, resume: None, last_rate_limited: false });
        self.requests[id].attempt = Some(a);
        self.next_contender(id, ctx)
    }

    /// Asks a request's next contender; with none left the request is rejected (the
    /// last answered 429) or lost (500).
    pub(super) fn next_contender(
        &mut self,
        id: Id<LlmRequest>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let a = self.requests[id].attempt.expect("asked through the validator");
        let v = self.validator();
        let entry = &mut v.attempts[a];
        let Some(&c) = entry.candidates.get(entry.tried) else {
            let outcome = if entry.last_rate_limited { RequestOutcome::Rejected } else { RequestOutcome::Lost };
            v.attempts.remove(a);
            self.requests[id].attempt = None;
            return self.finish(id, outcome, ctx);
        };
        entry.tried += 1;
        match self.ask(id, c, ctx)? {
            Answer::Took(r) => self.miner_takes(id, c, r as usize, ctx),
            Answer::Refused { rate_limited } => {
                let v = self.validator();
                v.book.refused(c, rate_limited);
                if rate_limited {
                    v.rate_limited += 1;
                } else {
                    v.failed += 1;
                }
                v.attempts[a].last_rate_limited = rate_limited;
                let rtt = SimDuration::from_secs_f64(self.config.validator.as_ref().expect("validator").rtt_s)?;
                ctx.schedule(rtt, LlmEvent::NextContender(id))?;
                Ok(())
            }
        }
    }

    /// Contender `c` is asked to take request `id`.
    fn ask(
        &mut self,
        id: Id<LlmRequest>,
        c: Id<Contender<()>>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<Answer, ScheduleError> {
        let (prompt, output) = (self.requests[id].prompt, self.requests[id].output);
        let v = self.validator();
        v.book.requested(c);
        let m = v.book[c].node;
        let miner = v.miners[m as usize];
        v.requests += 1;
        v.by_category[miner.category.index()] += 1;
        let over_declared = v.book.over_declared(c);
        let r = miner.replica as usize;
        if !miner.present || !self.accepting(r) {
            return Ok(Answer::Refused { rate_limited: false });
        }
        if over_declared || !self.takes(r, prompt, output) {
            return Ok(Answer::Refused { rate_limited: true });
        }
        self.validator().book.accepted(c);
        if ctx.rng(StreamId(MINER_STREAM_BASE + m)).random::<f64>() < miner.reliability {
            Ok(Answer::Took(r as u32))
        } else {
            Ok(Answer::Refused { rate_limited: false })
        }
    }

    /// Replica `r` takes request `id` through contender `c`: it is queued there.
    fn miner_takes(
        &mut self,
        id: Id<LlmRequest>,
        c: Id<Contender<()>>,
        r: usize,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Result<(), ScheduleError> {
        let a = self.requests[id].attempt.expect("asked through the validator");
        let entry = &mut self.validator().attempts[a];
        let (resume, chain, own) = (entry.resume.take(), entry.chain.clone(), entry.own);
        let request = &mut self.requests[id];
        let first = request.replica.is_none();
        request.replica = Some(r as u32);
        request.contender = Some(c);
        let (task, arrival, prompt, output, uid) =
            (usize::from(request.task), request.arrival, request.prompt, request.output, request.id);
        if first {
            let counted = arrival >= self.warmup;
            self.tally(false, Some(usize::from(self.replicas[r].pool)), None, |s| {
                s.arrivals += 1;
                s.first_arrival.get_or_insert(arrival);
                s.counted += u64::from(counted);
            });
        }
        if let Some(timeout_s) = self.config.tasks[task].timeout_s
            && self.requests[id].first_scheduled.is_none()
        {
            let due = arrival.checked_add(SimDuration::from_secs_f64(timeout_s)?).ok_or(ScheduleError::Overflow)?;
            self.requests[id].timeout = Some(ctx.schedule(due.max(ctx.now()), LlmEvent::Timeout(id))?);
        }
        let sequence = match resume {
            Some(s) => s.moved(),
            None => {
                let mut s = Sequence::new(id, uid, prompt, output).measured(arrival >= self.warmup);
                if let Some((own, keep_own)) = own {
                    s = s.owning(own, keep_own);
                }
                s
            }
        };
        self.cut_run(r, ctx)?;
        match chain {
            Some(chain) => self.replicas[r].engine.enqueue_with_chain(sequence, chain),
            None => self.replicas[r].engine.enqueue(sequence),
        }
        self.refresh_load(r);
        self.kick(r, ctx)
    }

    /// A request answered through the validator leaves: its answer is scored (its
    /// miner's quality plus noise, 0 after the task's `slo_s`); returns the true quality.
    pub(super) fn miner_answered(
        &mut self,
        r: &LlmRequest,
        slo_met: bool,
        counted: bool,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Option<f64> {
        let sd = self.config.validator.as_ref()?.quality_noise_sd;
        let c = r.contender?;
        let noise: f64 = StandardNormal.sample(ctx.rng(VALIDATOR_STREAM));
        let v = self.validator();
        let quality = v.quality_of(c);
        let observed = if slo_met { (quality + sd * noise).clamp(0.0, 1.0) } else { 0.0 };
        if v.book[c].active {
            v.book.observed(c, observed);
        }
        if counted {
            v.quality.add(quality);
        }
        Some(quality)
    }

    /// Frees a finished request's tour of its contenders.
    pub(super) fn forget_attempt(&mut self, r: &LlmRequest) {
        if let (Some(a), Some(v)) = (r.attempt, self.validator.as_mut()) {
            v.attempts.remove(a);
        }
    }

    /// The end of a scoring period: every contender's counters become its history row.
    pub(super) fn on_period_end(&mut self, ctx: &mut Context<'_, LlmEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let period_s = self.config.validator.as_ref().expect("validator").period_s;
        let v = self.validator();
        v.periods += 1;
        v.book.end_period(now);
        let next = now.checked_add(SimDuration::from_secs_f64(period_s)?).ok_or(ScheduleError::Overflow)?;
        if next < self.horizon {
            ctx.schedule(next, LlmEvent::PeriodEnd)?;
        }
        Ok(())
    }
}

/// Checks what a fleet of miners needs: a validator's router, no drifting model, no
/// disaggregation.
pub(super) fn check_miners(
    validator: bool,
    routing: LlmRouting,
    pools: &[LlmPool],
    drifting: bool,
    disaggregated: bool,
) -> Result<(), ConfigError> {
    let validators = [LlmRouting::DecayedScore, LlmRouting::LeastProcessed, LlmRouting::RoundRobin, LlmRouting::Random];
    if !validator {
        if matches!(routing, LlmRouting::DecayedScore | LlmRouting::LeastProcessed) {
            return Err(ConfigError::invalid(
                "serving.routing",
                routing.name(),
                "a router of replicas; decayed_score and least_processed rank miners and need [serving.validator]",
            ));
        }
        if let Some(p) = pools.iter().position(|p| p.miner.is_some()) {
            return Err(ConfigError::invalid(
                format!("serving.pools[{p}].miner"),
                "(given)",
                "only with [serving.validator]",
            ));
        }
        return Ok(());
    }
    if !validators.contains(&routing) {
        return Err(ConfigError::invalid(
            "serving.routing",
            routing.name(),
            "with [serving.validator]: decayed_score, least_processed, round_robin or random",
        ));
    }
    if drifting {
        return Err(ConfigError::invalid(
            "serving.validator",
            "(given)",
            "not with [serving.drift] yet: a miner's quality is its own",
        ));
    }
    if disaggregated || pools.iter().any(|p| matches!(p.role, PoolRole::Prefill | PoolRole::Decode)) {
        return Err(ConfigError::invalid("serving.validator", "(given)", "not with prefill/decode disaggregation"));
    }
    if let Some(p) = pools.iter().position(|p| p.miner.is_some() && p.autoscale.is_some()) {
        return Err(ConfigError::invalid(
            format!("serving.pools[{p}].autoscale"),
            "(given)",
            "not for a pool of miners (they join and leave)",
        ));
    }
    Ok(())
}
