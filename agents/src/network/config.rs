//! Configuration of the miner network, validated before a run.
//!
//! The types deserialize from the scenario file's tables (`[validator]`, `[routing]`,
//! `[[tasks]]`, `[[node_classes]]`, `[[similarity]]`, `[[events]]`), so a field's name
//! is its key.

use serde::{Deserialize, Serialize};

/// Everything one replication of the miner network needs.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// The tasks (model families) queries ask for.
    pub tasks: Vec<TaskConfig>,
    /// The kinds of miner node, each with how many start in the network.
    pub node_classes: Vec<NodeClass>,
    /// Directed task similarity; pairs not listed are 0.
    pub similarity: Vec<Similarity>,
    /// The validator: scoring period, observation noise, SLO.
    pub validator: Validator,
    /// How the validator picks contenders.
    pub routing: Routing,
    /// Joins, departures and failures at fixed times.
    pub events: Vec<ScheduledEvent>,
    /// Grid carbon intensity where the nodes run; no carbon metric without one.
    pub grid: Option<crate::grid::CarbonIntensity>,
    /// Energy price (USD per kWh); no cost metric without one.
    pub energy_usd_per_kwh: Option<f64>,
    /// Length of the run (s).
    pub duration_s: f64,
}

/// A task: a model family that miners serve and queries ask for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Name, e.g. `chat-llama-3-2-3b`.
    pub name: String,
    /// Poisson rate of organic (user) queries (per s); 0 when `organic` is given.
    #[serde(default)]
    pub organic_per_s: f64,
    /// Organic queries from any shared arrival process (poisson, deterministic,
    /// diurnal, mmpp, trace) instead of `organic_per_s`: `[tasks.organic]`.
    #[serde(default)]
    pub organic: Option<crate::arrivals::ArrivalProcess>,
    /// Poisson rate of synthetic (validator-made) queries (per s).
    #[serde(default)]
    pub synthetic_per_s: f64,
    /// Mean work of one query: its latency on a node of speed 1 (s).
    pub work_s: f64,
    /// Coefficient of variation of the work (0: every query the same; above 0:
    /// log-normal).
    #[serde(default)]
    pub work_cv: f64,
    /// When the task's queries begin (h): a task added mid-run starts cold.
    #[serde(default)]
    pub start_h: f64,
}

/// A kind of miner node: what it declares, and the hidden truth it is drawn from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClass {
    /// Name, e.g. `fast_good`.
    pub name: String,
    /// The label that the share metrics count (`good`, `poor`, `flaky`).
    pub category: Category,
    /// Nodes of this class at time 0.
    pub count: u32,
    /// Tasks the class serves (names from `[[tasks]]`): one contender per task and node.
    pub tasks: Vec<String>,
    /// Declared capacity: requests per scoring period that a node accepts for each task;
    /// more in one period are answered 429.
    pub capacity: u32,
    /// Hidden true concurrency: requests a node serves at once; one more is answered 429.
    pub slots: u32,
    /// Hidden speed, uniform in [low, high]: latency = work / speed.
    pub speed: [f64; 2],
    /// Hidden quality of its answers in [0, 1], uniform in [low, high].
    pub quality: [f64; 2],
    /// Hidden probability that a request is answered rather than failing with a 500,
    /// uniform in [low, high].
    pub reliability: [f64; 2],
    /// Power of one busy slot (W); published, so the energy-aware policy may use it.
    #[serde(default)]
    pub busy_w: f64,
    /// Power of the node while it is in the network (W).
    #[serde(default)]
    pub idle_w: f64,
    /// Rate at which each node leaves the network for good (per h).
    #[serde(default)]
    pub leave_per_h: f64,
    /// Rate at which new nodes of this class join (per h).
    #[serde(default)]
    pub join_per_h: f64,
    /// Mean time between failures (h); none: the class never fails. A failed node is
    /// still listed and answers every request 500 until it is repaired.
    pub mtbf_h: Option<f64>,
    /// Mean time to repair (h), exponential.
    #[serde(default = "default_mttr_h")]
    pub mttr_h: f64,
}

impl NodeClass {
    /// The class's failures and repairs, if its nodes fail (`mtbf_h` set).
    pub fn failures(&self) -> Option<crate::failures::Failures> {
        self.mtbf_h.map(|mtbf_h| crate::failures::Failures { mtbf_h, mttr_h: self.mttr_h })
    }
}

fn default_mttr_h() -> f64 {
    1.0
}

pub use crate::contenders::Category;

/// sim(from -> to): how much a contender for `to` on the same node tells about one
/// for `from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Similarity {
    /// The task being ranked.
    pub from: String,
    /// The task whose history counts towards it.
    pub to: String,
    /// In [0, 1].
    pub value: f64,
}

/// The validator: how it scores contenders and what it calls a good answer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Length of a scoring period (s): at its end every contender that was queried gets
    /// a history row and the per-period counters restart.
    #[serde(default = "default_period_s")]
    pub period_s: f64,
    /// Standard deviation of the noise on each observed quality score.
    #[serde(default = "default_quality_noise_sd")]
    pub quality_noise_sd: f64,
    /// Time for a 429 or 500 answer to come back (s), before the next contender is tried.
    #[serde(default = "default_rtt_s")]
    pub rtt_s: f64,
    /// Latency objective of an organic query (s).
    pub slo_s: f64,
    /// Share of a new task's requests on good nodes that counts as concentrated
    /// (`cold_start_h`).
    #[serde(default = "default_concentration")]
    pub concentration: f64,
}

fn default_period_s() -> f64 {
    600.0
}
fn default_quality_noise_sd() -> f64 {
    0.1
}
fn default_rtt_s() -> f64 {
    0.05
}
fn default_concentration() -> f64 {
    0.8
}

/// How the validator picks contenders for a query: the policy orders them, and the
/// first `top` are tried in turn until one answers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The ordering rule.
    pub policy: RoutingPolicy,
    /// Contenders tried per query, at most.
    #[serde(default = "default_top")]
    pub top: u32,
    /// decayed_score: half-life of a history row's weight (s).
    #[serde(default = "default_half_life_s")]
    pub half_life_s: f64,
    /// decayed_score: rows this old or older count nothing (s).
    #[serde(default = "default_window_s")]
    pub window_s: f64,
    /// decayed_score: requests that one unit of decayed score is worth in the rank.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Exponent of the period's mean observed quality in a history row's score:
    /// score = period score x quality^e. 0 keeps nineteen's period score alone.
    #[serde(default = "default_quality_exponent")]
    pub quality_exponent: f64,
}

fn default_top() -> u32 {
    5
}
fn default_half_life_s() -> f64 {
    3600.0
}
fn default_window_s() -> f64 {
    86_400.0
}
fn default_weight() -> f64 {
    50.0
}
fn default_quality_exponent() -> f64 {
    1.0
}

/// The routing policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingPolicy {
    /// Contenders of the task in turn.
    RoundRobin,
    /// A uniformly random order.
    Random,
    /// Fewest requests made this period first (nineteen's original rule).
    LeastProcessed,
    /// Fewest requests in flight at the node first.
    JoinShortestQueue,
    /// Two contenders drawn at random, the one with fewer in flight first.
    PowerOfTwoChoices,
    /// Ascending requests made - weight x decayed history score (nineteen PR #75).
    DecayedScore,
    /// Lowest estimated energy per answered request among contenders whose estimated
    /// latency meets the SLO, then the rest by estimated latency.
    EnergyAware,
}

impl RoutingPolicy {
    /// Every policy, in the order reports list them.
    pub const ALL: [RoutingPolicy; 7] = [
        RoutingPolicy::RoundRobin,
        RoutingPolicy::Random,
        RoutingPolicy::LeastProcessed,
        RoutingPolicy::JoinShortestQueue,
        RoutingPolicy::PowerOfTwoChoices,
        RoutingPolicy::DecayedScore,
        RoutingPolicy::EnergyAware,
    ];
}

/// Something that happens to nodes of a class at a fixed time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledEvent {
    /// When (h).
    pub at_h: f64,
    /// What happens.
    pub action: NodeAction,
    /// Which class (name from `[[node_classes]]`).
    pub class: String,
    /// How many nodes: the lowest-numbered present nodes of the class leave or fail;
    /// joins add new ones.
    #[serde(default = "default_count")]
    pub count: u32,
}

fn default_count() -> u32 {
    1
}

/// What a scheduled event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    /// New nodes of the class join.
    Join,
    /// Nodes leave for good (their in-flight requests fail with 500).
    Leave,
    /// Nodes fail (500 until repaired).
    Fail,
}

use crate::error::{ConfigError, DURATION_S as SECS, check, is_duration_s as secs};

/// Arrival rates the clock can separate (per second).
fn rate(x: f64) -> bool {
    x == 0.0 || (crate::arrivals::MIN_RATE_PER_S..=crate::arrivals::MAX_RATE_PER_S).contains(&x)
}
const RATE: &str = "a rate of 0 or from 0.000001 to 1,000,000 per second";
/// Hours within the clock's range.
fn hours(x: f64) -> bool {
    x.is_finite() && (0.0..=crate::world::MAX_DURATION_S / 3600.0).contains(&x)
}
const HOURS: &str = "hours from 0 to 100 years";
/// Joins and departures per hour.
fn per_h(x: f64) -> bool {
    x == 0.0 || (1e-6..=10_000.0).contains(&x)
}
const PER_H: &str = "a rate of 0 or from 0.000001 to 10,000 per hour";
/// The most nodes a class or an event may bring.
const MAX_NODES: u32 = 100_000;

fn range_ok(r: [f64; 2], lo: f64, hi: f64) -> bool {
    r[0].is_finite() && r[1].is_finite() && lo <= r[0] && r[0] <= r[1] && r[1] <= hi
}

impl NetworkConfig {
    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        let finite_non_neg = |x: f64| x.is_finite() && x >= 0.0;
        check(!self.tasks.is_empty(), "tasks", "[]", "at least one [[tasks]] table")?;
        check(self.tasks.len() <= usize::from(u16::MAX), "tasks", self.tasks.len(), "at most 65535 tasks")?;
        for (i, t) in self.tasks.iter().enumerate() {
            let key = |k: &str| format!("tasks[{i}].{k}");
            check(!t.name.is_empty(), key("name"), "\"\"", "a non-empty name")?;
            check(self.tasks[..i].iter().all(|o| o.name != t.name), key("name"), &t.name, "a name no other task has")?;
            check(rate(t.organic_per_s), key("organic_per_s"), t.organic_per_s, RATE)?;
            if let Some(process) = &t.organic {
                check(t.organic_per_s == 0.0, key("organic_per_s"), t.organic_per_s, "no value with [tasks.organic]")?;
                process.validate().and_then(|()| process.require_open_loop()).map_err(|e| e.within(&key("organic")))?;
            }
            check(rate(t.synthetic_per_s), key("synthetic_per_s"), t.synthetic_per_s, RATE)?;
            check(secs(t.work_s), key("work_s"), t.work_s, SECS)?;
            check(
                finite_non_neg(t.work_cv) && t.work_cv <= 100.0,
                key("work_cv"),
                t.work_cv,
                "a number from 0 to 100",
            )?;
            check(hours(t.start_h), key("start_h"), t.start_h, HOURS)?;
        }
        check(!self.node_classes.is_empty(), "node_classes", "[]", "at least one [[node_classes]] table")?;
        for (i, c) in self.node_classes.iter().enumerate() {
            let key = |k: &str| format!("node_classes[{i}].{k}");
            check(
                self.node_classes[..i].iter().all(|o| o.name != c.name),
                key("name"),
                &c.name,
                "a name no other class has",
            )?;
            check(!c.tasks.is_empty(), key("tasks"), "[]", "at least one task name")?;
            for (j, name) in c.tasks.iter().enumerate() {
                check(self.task_index(name).is_some(), format!("node_classes[{i}].tasks[{j}]"), name, "a task name")?;
                check(!c.tasks[..j].contains(name), format!("node_classes[{i}].tasks[{j}]"), name, "each task once")?;
            }
            check(c.capacity >= 1, key("capacity"), c.capacity, "an integer >= 1")?;
            check(c.slots >= 1, key("slots"), c.slots, "an integer >= 1")?;
            let show = |r: [f64; 2]| format!("[{}, {}]", r[0], r[1]);
            check(
                range_ok(c.speed, f64::MIN_POSITIVE, f64::MAX),
                key("speed"),
                show(c.speed),
                "[low, high] with 0 < low <= high",
            )?;
            check(
                range_ok(c.quality, 0.0, 1.0),
                key("quality"),
                show(c.quality),
                "[low, high] with 0 <= low <= high <= 1",
            )?;
            check(
                range_ok(c.reliability, 0.0, 1.0),
                key("reliability"),
                show(c.reliability),
                "[low, high] with 0 <= low <= high <= 1",
            )?;
            check(finite_non_neg(c.busy_w), key("busy_w"), c.busy_w, "a finite number of watts >= 0")?;
            check(finite_non_neg(c.idle_w), key("idle_w"), c.idle_w, "a finite number of watts >= 0")?;
            check(per_h(c.leave_per_h), key("leave_per_h"), c.leave_per_h, PER_H)?;
            check(per_h(c.join_per_h), key("join_per_h"), c.join_per_h, PER_H)?;
            check(c.count <= MAX_NODES, key("count"), c.count, "at most 100,000 nodes")?;
            if let Some(failures) = c.failures() {
                failures.validate().map_err(|e| e.within(&format!("node_classes[{i}]")))?;
            }
        }
        for (i, s) in self.similarity.iter().enumerate() {
            let key = |k: &str| format!("similarity[{i}].{k}");
            check(self.task_index(&s.from).is_some(), key("from"), &s.from, "a task name")?;
            check(self.task_index(&s.to).is_some(), key("to"), &s.to, "a task name")?;
            check(s.from != s.to, key("to"), &s.to, "a task other than `from`")?;
            check((0.0..=1.0).contains(&s.value), key("value"), s.value, "a number in [0, 1]")?;
            check(
                self.similarity[..i].iter().all(|o| (&o.from, &o.to) != (&s.from, &s.to)),
                key("to"),
                &s.to,
                "each (from, to) pair once",
            )?;
        }
        let v = &self.validator;
        check(
            secs(v.period_s) && v.period_s >= 1e-3,
            "validator.period_s",
            v.period_s,
            "seconds from 0.001 to 100 years",
        )?;
        check(
            finite_non_neg(v.quality_noise_sd),
            "validator.quality_noise_sd",
            v.quality_noise_sd,
            "a finite number >= 0",
        )?;
        check(v.rtt_s == 0.0 || secs(v.rtt_s), "validator.rtt_s", v.rtt_s, SECS)?;
        check(finite_pos(v.slo_s), "validator.slo_s", v.slo_s, "a finite number of seconds > 0")?;
        check(
            v.concentration > 0.0 && v.concentration <= 1.0,
            "validator.concentration",
            v.concentration,
            "a share in (0, 1]",
        )?;
        let r = &self.routing;
        check(r.top >= 1, "routing.top", r.top, "an integer >= 1")?;
        check(secs(r.half_life_s), "routing.half_life_s", r.half_life_s, SECS)?;
        check(secs(r.window_s), "routing.window_s", r.window_s, SECS)?;
        check(finite_non_neg(r.weight), "routing.weight", r.weight, "a finite number >= 0")?;
        check(
            finite_non_neg(r.quality_exponent),
            "routing.quality_exponent",
            r.quality_exponent,
            "a finite number >= 0",
        )?;
        for (i, e) in self.events.iter().enumerate() {
            let key = |k: &str| format!("events[{i}].{k}");
            check(hours(e.at_h), key("at_h"), e.at_h, HOURS)?;
            check(self.class_index(&e.class).is_some(), key("class"), &e.class, "a node class name")?;
            check((1..=MAX_NODES).contains(&e.count), key("count"), e.count, "an integer from 1 to 100,000")?;
        }
        if let Some(grid) = &self.grid {
            grid.validate().map_err(|e| e.within("grid"))?;
        }
        if let Some(price) = self.energy_usd_per_kwh {
            check(finite_non_neg(price), "prices.energy_usd_per_kwh", price, "a finite number >= 0")?;
        }
        check(finite_pos(self.duration_s), "duration_s", self.duration_s, "a finite number of seconds > 0")?;
        Ok(())
    }

    /// The most contenders any task has at time 0 (nodes of the classes serving it).
    pub(crate) fn initial_contenders_per_task(&self) -> u32 {
        self.tasks
            .iter()
            .map(|t| self.node_classes.iter().filter(|c| c.tasks.contains(&t.name)).map(|c| c.count).sum::<u32>())
            .max()
            .unwrap_or(0)
    }

    /// The index of the task named `name`.
    pub(crate) fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// The index of the node class named `name`.
    pub(crate) fn class_index(&self, name: &str) -> Option<usize> {
        self.node_classes.iter().position(|c| c.name == name)
    }

    /// The similarity matrix: `m[from][to]`, 0 where no pair is listed.
    pub fn similarity_matrix(&self) -> Vec<Vec<f64>> {
        let n = self.tasks.len();
        let mut m = vec![vec![0.0; n]; n];
        for s in &self.similarity {
            if let (Some(a), Some(b)) = (self.task_index(&s.from), self.task_index(&s.to)) {
                m[a][b] = s.value;
            }
        }
        m
    }
}

impl NetworkConfig {
    /// The built-in `nineteen-contenders` scenario (data/scenarios/nineteen-contenders.toml)
    /// under decayed-score routing; a test keeps the two equal. Nineteen nodes in four
    /// classes serve three chat tasks, the third added at hour 12; 24 h.
    pub fn nineteen_contenders() -> NetworkConfig {
        let task = |name: &str, organic_per_s: f64, synthetic_per_s: f64, work_s: f64, start_h: f64| TaskConfig {
            name: name.into(),
            organic_per_s,
            organic: None,
            synthetic_per_s,
            work_s,
            work_cv: 0.5,
            start_h,
        };
        let tasks = vec![
            task("chat-llama-3-2-3b", 1.5, 0.3, 0.8, 0.0),
            task("chat-llama-3-1-70b", 0.4, 0.1, 3.0, 0.0),
            task("chat-llama-3-1-8b", 1.0, 0.2, 1.2, 12.0),
        ];
        let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
        let class =
            |name: &str, category: Category, count: u32, capacity: u32, slots: u32, speed: [f64; 2]| NodeClass {
                name: name.into(),
                category,
                count,
                tasks: names.clone(),
                capacity,
                slots,
                speed,
                quality: [0.85, 0.95],
                reliability: [0.99, 1.0],
                busy_w: 350.0,
                idle_w: 120.0,
                leave_per_h: 0.01,
                join_per_h: 0.02,
                mtbf_h: Some(48.0),
                mttr_h: 1.0,
            };
        let slow_good =
            NodeClass { busy_w: 250.0, idle_w: 80.0, ..class("slow_good", Category::Good, 5, 200, 4, [0.5, 0.8]) };
        let fast_poor = NodeClass {
            quality: [0.3, 0.5],
            busy_w: 200.0,
            idle_w: 80.0,
            ..class("fast_poor", Category::Poor, 5, 400, 8, [1.6, 2.4])
        };
        let flaky = NodeClass {
            quality: [0.7, 0.9],
            reliability: [0.6, 0.8],
            busy_w: 300.0,
            idle_w: 100.0,
            leave_per_h: 0.05,
            join_per_h: 0.05,
            mtbf_h: Some(6.0),
            mttr_h: 0.5,
            ..class("flaky", Category::Flaky, 4, 400, 2, [1.0, 1.5])
        };
        let similarity = |from: &str, to: &str, value: f64| Similarity { from: from.into(), to: to.into(), value };
        NetworkConfig {
            node_classes: vec![class("fast_good", Category::Good, 5, 400, 8, [1.6, 2.4]), slow_good, fast_poor, flaky],
            similarity: vec![
                similarity(&names[2], &names[0], 0.8),
                similarity(&names[2], &names[1], 0.6),
                similarity(&names[1], &names[0], 0.5),
                similarity(&names[0], &names[1], 0.3),
            ],
            tasks,
            validator: Validator {
                period_s: 600.0,
                quality_noise_sd: 0.1,
                rtt_s: 0.05,
                slo_s: 4.0,
                concentration: 0.8,
            },
            routing: Routing {
                policy: RoutingPolicy::DecayedScore,
                top: 5,
                half_life_s: 3600.0,
                window_s: 86_400.0,
                weight: 50.0,
                quality_exponent: 1.0,
            },
            events: vec![ScheduledEvent { at_h: 18.0, action: NodeAction::Leave, class: "fast_good".into(), count: 2 }],
            grid: Some(crate::grid::CarbonIntensity::Constant { kg_per_kwh: 0.394 }),
            energy_usd_per_kwh: Some(0.12),
            duration_s: 24.0 * 3600.0,
        }
    }

    /// A small network for examples and tests: two related chat tasks on twelve nodes
    /// (four good, four poor, four flaky), decayed-score routing, two hours.
    pub fn example() -> NetworkConfig {
        let tasks = vec![
            TaskConfig {
                name: "chat-llama-3-2-3b".into(),
                organic_per_s: 2.0,
                organic: None,
                synthetic_per_s: 0.5,
                work_s: 0.8,
                work_cv: 0.5,
                start_h: 0.0,
            },
            TaskConfig {
                name: "chat-llama-3-1-70b".into(),
                organic_per_s: 0.5,
                organic: None,
                synthetic_per_s: 0.2,
                work_s: 3.0,
                work_cv: 0.5,
                start_h: 0.0,
            },
        ];
        let class =
            |name: &str, category: Category, quality: [f64; 2], reliability: [f64; 2], mtbf_h: Option<f64>| NodeClass {
                name: name.into(),
                category,
                count: 4,
                tasks: tasks.iter().map(|t| t.name.clone()).collect(),
                capacity: 1000,
                slots: 8,
                speed: [1.5, 2.5],
                quality,
                reliability,
                busy_w: 300.0,
                idle_w: 100.0,
                leave_per_h: 0.0,
                join_per_h: 0.0,
                mtbf_h,
                mttr_h: 0.5,
            };
        NetworkConfig {
            node_classes: vec![
                class("good", Category::Good, [0.85, 0.95], [0.99, 1.0], None),
                class("poor", Category::Poor, [0.2, 0.4], [0.99, 1.0], None),
                class("flaky", Category::Flaky, [0.7, 0.9], [0.6, 0.8], Some(4.0)),
            ],
            similarity: vec![Similarity { from: tasks[1].name.clone(), to: tasks[0].name.clone(), value: 0.5 }],
            tasks,
            validator: Validator {
                period_s: default_period_s(),
                quality_noise_sd: default_quality_noise_sd(),
                rtt_s: default_rtt_s(),
                slo_s: 4.0,
                concentration: default_concentration(),
            },
            routing: Routing {
                policy: RoutingPolicy::DecayedScore,
                top: default_top(),
                half_life_s: default_half_life_s(),
                window_s: default_window_s(),
                weight: default_weight(),
                quality_exponent: default_quality_exponent(),
            },
            events: Vec::new(),
            grid: None,
            energy_usd_per_kwh: None,
            duration_s: 2.0 * 3600.0,
        }
    }
}
