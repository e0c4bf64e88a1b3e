//! The continuous engine's configuration: replicas of an LLM on GPUs behind a router,
//! checked value by value.

use serde::{Deserialize, Serialize};

use crate::arrivals::ArrivalProcess;
use crate::error::{ConfigError, DURATION_S, check, is_duration_s};
use crate::failures::Failures;
use crate::grid::CarbonIntensity;
use crate::llm::{EngineLimits, GpuSpec, ModelSpec, RooflineTerms, StepModel, StepShape, StepTime};
use crate::requests::{MAX_QUEUED, Task, validate_tasks};
use crate::world::MAX_DURATION_S;

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
    /// The replica with the fewest tokens still to compute or generate, as a router
    /// estimates them: the prompt tokens of requests not yet answered, plus the tasks'
    /// mean output length for every request in flight.
    LeastOutstandingTokens,
    /// Two replicas at random, the one with fewer outstanding requests.
    PowerOfTwoChoices,
    /// A replica uniformly at random.
    Random,
    /// The replica that costs least for this request, trading the prompt blocks it
    /// would have to compute (those not found in the replica's cache) against the
    /// blocks the replica already has to serve, as NVIDIA Dynamo's KV router does:
    /// `cost = w x (prompt blocks - cached leading blocks) + (KV blocks held + prompt
    /// blocks of the requests waiting)`, `w` the `kv_overlap_score_weight` (1 by
    /// default, as Dynamo's), lowest index on ties.
    PrefixAware,
    /// A conversation's turns to the replica that served its previous turn while it
    /// is up (where its history is cached); first turns, and turns whose replica is
    /// down, as `least_outstanding_requests`.
    SessionAffinity,
    /// Miners (with `[serving.validator]`): the `top` contenders of the request's task
    /// by nineteen's decayed score (requests this period - weight x glob), tried in
    /// turn.
    DecayedScore,
    /// Miners (with `[serving.validator]`): the `top` contenders with the fewest
    /// requests this period (nineteen's original order).
    LeastProcessed,
}

impl LlmRouting {
    /// The router's name as scenarios write it.
    pub fn name(self) -> &'static str {
        match self {
            LlmRouting::RoundRobin => "round_robin",
            LlmRouting::LeastOutstandingRequests => "least_outstanding_requests",
            LlmRouting::LeastKvUsage => "least_kv_usage",
            LlmRouting::LeastOutstandingTokens => "least_outstanding_tokens",
            LlmRouting::PowerOfTwoChoices => "power_of_two_choices",
            LlmRouting::Random => "random",
            LlmRouting::PrefixAware => "prefix_aware",
            LlmRouting::SessionAffinity => "session_affinity",
            LlmRouting::DecayedScore => "decayed_score",
            LlmRouting::LeastProcessed => "least_processed",
        }
    }
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

/// Prefill/decode disaggregation: prefill replicas (the first `prefill_replicas` of
/// the one pool, or the pools of `role = "prefill"`) prefill prompts and produce first
/// tokens; decode replicas (the rest, or the pools of `role = "decode"` serving the
/// same name) produce the others. A prompt's KV cache (`prompt x KV bytes per
/// token`) crosses a link from its prefill replica (one transfer at a time per
/// replica) before the request queues at a decode replica.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disaggregation {
    /// With the one-pool keys: replicas of the pool that prefill (the first ones);
    /// the others decode. With pools, none: their roles say.
    #[serde(default)]
    pub prefill_replicas: Option<u32>,
    /// Link bandwidth from a prefill replica (GB/s).
    pub link_gb_per_s: f64,
    /// Latency of one transfer (µs).
    pub link_latency_us: f64,
}

/// What an autoscaler watches, per replica serving, averaged over its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleSignal {
    /// Sequences running.
    Running,
    /// Sequences waiting.
    Waiting,
    /// Share of KV blocks held.
    KvUsage,
    /// The 90th percentile of the TTFT of the pool's requests that got their first
    /// token since the last decision (s).
    TtftP90,
}

/// A pool's autoscaler: every `interval_s` it sets the replicas to `ceil(serving x
/// signal / target)` within `[min_replicas, max_replicas]` (the proportional rule of
/// Kubernetes' horizontal pod autoscaler); it adds replicas at once, each ready after a
/// cold start, and removes them only when fewer have been wanted for
/// `scale_down_delay_s`, draining them first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Autoscale {
    /// Fewest replicas serving or starting.
    pub min_replicas: u32,
    /// Most replicas (the pool's slots).
    pub max_replicas: u32,
    /// Replicas serving at the start.
    pub initial_replicas: u32,
    /// What it watches.
    pub signal: ScaleSignal,
    /// The signal's value per replica it aims for.
    pub target: f64,
    /// How far the signal per replica may stray from the target, as a share of it,
    /// before the replicas change (Kubernetes' HPA tolerance).
    pub tolerance: f64,
    /// Time between decisions (s).
    pub interval_s: f64,
    /// How long fewer replicas must have been wanted before some are removed (s).
    pub scale_down_delay_s: f64,
    /// Time from a replica's start to its first step: its weights over the load
    /// bandwidth, plus the engine's start (s).
    pub cold_start_s: f64,
}

impl Autoscale {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let k = |name: &str| format!("{key}autoscale.{name}");
        check(self.min_replicas <= self.max_replicas, k("min_replicas"), self.min_replicas, "at most max_replicas")?;
        check(
            (self.min_replicas..=self.max_replicas).contains(&self.initial_replicas),
            k("replicas"),
            self.initial_replicas,
            "replicas serving at the start, from min_replicas to max_replicas",
        )?;
        check(self.target.is_finite() && self.target > 0.0, k("target"), self.target, "a finite number > 0")?;
        check(
            self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance),
            k("tolerance"),
            self.tolerance,
            "a share from 0 to below 1",
        )?;
        check(is_duration_s(self.interval_s), k("interval_s"), self.interval_s, DURATION_S)?;
        let delay = self.scale_down_delay_s;
        check(delay.is_finite() && delay >= 0.0, k("scale_down_delay_s"), delay, "seconds >= 0")?;
        check(
            self.cold_start_s.is_finite() && (0.0..=86_400.0).contains(&self.cold_start_s),
            k("cold_start_s"),
            self.cold_start_s,
            "seconds from 0 to a day",
        )
    }
}

/// Where a pool's replicas sit: the nodes that carry the node baseline power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `nodes` x this many replicas per node.
    PerNode(u32),
    /// Replicas packed onto nodes of this many GPUs (a replica may span two).
    Packed(u32),
}

/// What a pool's replicas do with a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolRole {
    /// Prefill and decode (vLLM's default).
    #[default]
    Mixed,
    /// Prefill and the first token; the KV cache then goes to a decode pool serving
    /// the same name.
    Prefill,
    /// The tokens after the first, from a prefill pool's KV cache.
    Decode,
    /// No requests: its GPUs run the drifting model's retraining jobs
    /// (`training.pool = "dedicated"`).
    Training,
}

/// A pool of identical replicas: one GPU type, one model, one tensor-parallel size,
/// one engine configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmPool {
    /// Its name in the scenario and the outputs.
    pub name: String,
    /// The model name its requests ask for (the model's own unless given otherwise).
    pub serves: String,
    /// What its replicas do: prefill and decode, or one of them.
    pub role: PoolRole,
    /// Where its keys are in the scenario file, relative to `[serving]` (empty for
    /// the one-pool keys, `pools[i].` for a pool), for error messages.
    pub key: String,
    /// Replicas, >= 1.
    pub replicas: u32,
    /// Nodes they sit on.
    pub nodes: u32,
    /// How replicas map to nodes.
    pub placement: Placement,
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
    /// The roofline of its GPUs and model
    /// ([`Roofline::terms`](crate::llm::Roofline::terms)): what each step asks of a
    /// GPU, which sets its power (and its stretch under a cap) whatever model times
    /// the step.
    pub demand: RooflineTerms,
    /// Most a GPU may draw (W), below its board limit: steps that would draw more
    /// run at a lower clock. Without a cap, power stops at the board limit and step
    /// times stay as the step-time model gives them (its constants were measured at
    /// the clocks real GPUs ran at).
    pub power_cap_w: Option<f64>,
    /// The GPU.
    pub gpu: GpuSpec,
    /// The model.
    pub model: ModelSpec,
    /// GPU rental (USD per GPU-hour).
    pub gpu_usd_per_hour: f64,
    /// Replica failures (a failed GPU takes its replica down); none by default.
    pub failures: Option<Failures>,
    /// How many times a request on a replica that fails is sent to another replica
    /// serving its model before it counts as lost.
    pub retries: u32,
    /// Its autoscaler, if it has one (then `replicas` is its most, and
    /// `initial_replicas` serve at the start).
    pub autoscale: Option<Autoscale>,
    /// What its replicas are as miners, in a fleet with a validator (then `replicas`
    /// is its slots, and the class's `initial_replicas` serve at the start).
    pub miner: Option<super::MinerClass>,
    /// A variant pool's published accuracy (any scale: the planner ranks them).
    pub accuracy: Option<f64>,
    /// Whether a variant controller sizes it.
    pub adapted: bool,
}

/// A step on one of a pool's replicas, as its GPUs run it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolStep {
    /// Its length, host time included (s).
    pub step_s: f64,
    /// The whole replica's GPU power during it (W).
    pub power_w: f64,
    /// Whether a power limit slowed it.
    pub throttled: bool,
    /// Whether a profile timed it outside its table.
    pub outside_table: bool,
}

impl LlmPool {
    /// A step of this shape on one of its replicas: its time from the step-time model
    /// plus host overhead, each GPU drawing for what the step asks of it (the
    /// roofline's demand, whatever times the step), at most its board limit; under a
    /// cap, the step may slow. A roofline-timed step's time is that demand's (the same
    /// roofline), not computed twice.
    pub fn step(&self, shape: &StepShape) -> PoolStep {
        let demand = self.demand.demand(shape);
        let (gpu_s, outside_table) = match &self.step_model {
            StepModel::Roofline(_) => (demand.roofline_s(), false),
            other => other.timed(shape),
        };
        let host_s = self.step_overhead_s + self.step_overhead_per_seq_s * f64::from(shape.sequences());
        let (step_s, gpu_w, throttled) = match self.power_cap_w {
            None => (gpu_s + host_s, self.gpu.step_power_w(&demand, gpu_s + host_s).min(self.gpu.tdp_w), false),
            Some(cap_w) => {
                let run = self.gpu.run_step(&demand, gpu_s + host_s, cap_w);
                (run.step_s, run.power_w, run.clock < 1.0)
            }
        };
        PoolStep { step_s, power_w: f64::from(self.tp) * gpu_w, throttled, outside_table }
    }

    /// What a replica that starts pays before it serves (s): its autoscaler's cold
    /// start, else the model's weights at [`DEFAULT_LOAD_GB_PER_S`](super::DEFAULT_LOAD_GB_PER_S)
    /// plus [`DEFAULT_ENGINE_START_S`](super::DEFAULT_ENGINE_START_S).
    pub fn cold_start_s(&self) -> f64 {
        self.autoscale.map_or_else(
            || self.model.weight_bytes() / (super::DEFAULT_LOAD_GB_PER_S * 1e9) + super::DEFAULT_ENGINE_START_S,
            |a| a.cold_start_s,
        )
    }

    /// Replicas serving at the start (an autoscaled pool's or a miner pool's initial
    /// ones; every replica otherwise).
    pub fn initial_replicas(&self) -> u32 {
        match (self.autoscale, self.miner) {
            (Some(a), _) => a.initial_replicas,
            (None, Some(m)) => m.initial_replicas,
            (None, None) => self.replicas,
        }
    }

    /// Whether its replicas come and go (autoscaled, or miners that join and leave):
    /// then it is paid by the time each is provisioned.
    pub fn replicas_vary(&self) -> bool {
        self.autoscale.is_some()
            || self.adapted
            || self
                .miner
                .is_some_and(|m| m.leave_per_h > 0.0 || m.join_per_h > 0.0 || m.initial_replicas < self.replicas)
    }

    /// The node (numbered within the pool) of replica `r` of the pool.
    pub fn node_of(&self, r: u32) -> u32 {
        match self.placement {
            Placement::PerNode(per_node) => r / per_node,
            Placement::Packed(gpus_per_node) => (u64::from(r) * u64::from(self.tp) / u64::from(gpus_per_node)) as u32,
        }
    }

    /// Its GPUs.
    pub fn gpus(&self) -> u32 {
        self.replicas * self.tp
    }

    /// Whether requests for `name` are routed to it: it serves that name and takes
    /// requests at all (a training pool takes none, whatever its `serves`).
    pub fn serves_requests_for(&self, name: &str) -> bool {
        self.role != PoolRole::Training && self.serves == name
    }

    /// Checks every value; the error names the key relative to `[serving]`.
    fn validate(&self) -> Result<(), ConfigError> {
        let k = |name: &str| format!("{}{name}", self.key);
        check((1..=100_000).contains(&self.nodes), k("nodes"), self.nodes, "an integer from 1 to 100,000")?;
        check(
            (1..=1_000_000).contains(&self.replicas),
            k("replicas"),
            self.replicas,
            "an integer from 1 to 1,000,000",
        )?;
        check((1..=64).contains(&self.tp), k("tp"), self.tp, "an integer from 1 to 64")?;
        let l = self.limits;
        check(
            (1..=65_536).contains(&l.max_num_seqs),
            k("engine.max_num_seqs"),
            l.max_num_seqs,
            "an integer from 1 to 65536",
        )?;
        check(
            (1..=1 << 20).contains(&l.max_num_batched_tokens),
            k("engine.max_num_batched_tokens"),
            l.max_num_batched_tokens,
            "an integer from 1 to 1,048,576",
        )?;
        check((1..=4096).contains(&l.block_size), k("engine.block_size"), l.block_size, "an integer from 1 to 4096")?;
        check(
            (1..=MAX_QUEUED).contains(&self.max_queued_requests),
            k("engine.max_queued_requests"),
            self.max_queued_requests,
            "an integer from 1 to 10,000,000",
        )?;
        if let Some(limit) = self.context_limit_tokens {
            check(limit >= 2, k("context_limit_tokens"), limit, "an integer >= 2 (one prompt and one output token)")?;
        }
        check(
            l.num_gpu_blocks >= 2,
            k("engine.num_gpu_blocks"),
            l.num_gpu_blocks,
            "an integer >= 2 (one block is reserved); if derived, more GPU memory than the weights need",
        )?;
        check(
            self.step_overhead_s.is_finite() && (0.0..=60.0).contains(&self.step_overhead_s),
            k("engine.step_overhead_s"),
            self.step_overhead_s,
            "seconds from 0 to 60",
        )?;
        check(
            self.step_overhead_per_seq_s.is_finite() && (0.0..=1.0).contains(&self.step_overhead_per_seq_s),
            k("engine.step_overhead_per_seq_s"),
            self.step_overhead_per_seq_s,
            "seconds from 0 to 1",
        )?;
        self.gpu.validate().map_err(|e| e.within(&k("gpu")))?;
        self.model.validate().map_err(|e| e.within(&k("model")))?;
        let price = self.gpu_usd_per_hour;
        let price_key = if self.key.is_empty() { "prices.gpu_usd_per_hour".to_string() } else { k("gpu_usd_per_hour") };
        check(price.is_finite() && price >= 0.0, price_key, price, "a finite number >= 0")?;
        if let Some(f) = self.failures {
            f.validate().map_err(|e| e.within(&k("failures")))?;
        }
        if let Some(a) = self.autoscale {
            a.validate(&self.key)?;
        }
        Ok(())
    }
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
    /// `prefix_aware`: how much a prompt block to compute weighs against a block the
    /// replica already holds (Dynamo's `kv_overlap_score_weight`, 1 by default).
    pub kv_overlap_score_weight: f64,
    /// How often the router routes (s): every request that arrived since its last
    /// round (a new request, a retry, a prefilled request for the decode pool) is
    /// routed at the next multiple of this, after everything else that happens at that
    /// instant, on the replicas as they are then. 0 (the default): each as it arrives.
    pub routing_interval_s: f64,
    /// Whether a replica in steady decode runs the steps up to its next token event
    /// on one event (`serving.coalesce_steps`, true by default): a speed-up only, the
    /// results are those of one event per step.
    pub coalesce_steps: bool,
    /// The pools of replicas, in order (replicas are numbered pool by pool).
    pub pools: Vec<LlmPool>,
    /// Power of each node apart from its GPUs (W).
    pub node_baseline_w: f64,
    /// Facility power over IT power, >= 1.
    pub pue: f64,
    /// Grid carbon intensity.
    pub grid: CarbonIntensity,
    /// Energy price (USD per kWh).
    pub energy_usd_per_kwh: f64,
    /// Arrivals stop after this long (s).
    pub duration_s: f64,
    /// Requests arriving before this are left out of statistics (s).
    pub warmup_s: f64,
    /// A real run's numbers to compare with.
    pub measured: Option<Measured>,
    /// Separate prefill and decode replicas of a single pool; none by default.
    pub disaggregation: Option<Disaggregation>,
    /// A served model that drifts and is retrained; none by default.
    pub retraining: Option<super::FleetRetraining>,
    /// nineteen's validator in front of replicas that are miners; none by default.
    pub validator: Option<super::FleetValidator>,
    /// A controller choosing variant pools and their batch limits; none by default.
    pub adaptation: Option<super::FleetAdaptation>,
}

impl LlmServingConfig {
    /// Replicas in all.
    pub fn replicas(&self) -> u32 {
        self.pools.iter().map(|p| p.replicas).sum()
    }

    /// Nodes in all, those of pools left out excepted.
    pub fn nodes(&self) -> u32 {
        (0..self.pools.len()).map(|p| self.pool_nodes(p)).sum()
    }

    /// Whether pool `p` is part of the fleet: a training pool is only with dedicated
    /// retraining jobs (with shared ones it is left out, neither drawn nor paid).
    pub fn pool_present(&self, p: usize) -> bool {
        self.pools[p].role != PoolRole::Training
            || self
                .retraining
                .as_ref()
                .is_some_and(|rt| matches!(rt.training.place, super::TrainingPlace::Dedicated { .. }))
    }

    /// The nodes of pool `p` that draw their baseline: none for a pool left out.
    pub fn pool_nodes(&self, p: usize) -> u32 {
        if self.pool_present(p) { self.pools[p].nodes } else { 0 }
    }

    /// GPUs in all.
    pub fn gpus(&self) -> u32 {
        self.pools.iter().map(LlmPool::gpus).sum()
    }

    /// The names the pools serve, in order of first appearance.
    pub fn served_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.pools {
            if p.serves_requests_for(&p.serves) && !names.contains(&p.serves.as_str()) {
                names.push(&p.serves);
            }
        }
        names
    }

    /// Whether any pool prefills or decodes only.
    pub fn has_roles(&self) -> bool {
        self.pools.iter().any(|p| matches!(p.role, PoolRole::Prefill | PoolRole::Decode))
    }

    /// Prefill and decode: the one pool's split, or pools of both roles for every
    /// name any of them serves, and a link for the KV caches.
    fn validate_roles(&self) -> Result<(), ConfigError> {
        let roles = self.has_roles();
        if roles {
            for name in self.served_names() {
                let serving: Vec<&LlmPool> = self.pools.iter().filter(|p| p.serves_requests_for(name)).collect();
                let has = |role: PoolRole| serving.iter().any(|p| p.role == role);
                let split = has(PoolRole::Prefill) || has(PoolRole::Decode);
                if let Some(p) = serving.iter().find(|p| p.role == PoolRole::Mixed).filter(|_| split) {
                    let expected = format!("\"prefill\" or \"decode\", as the other pools serving {name}");
                    return Err(ConfigError::invalid(format!("{}role", p.key), "mixed", expected));
                }
                for (role, other, text) in
                    [(PoolRole::Prefill, PoolRole::Decode, "decode"), (PoolRole::Decode, PoolRole::Prefill, "prefill")]
                {
                    if let Some(p) = serving.iter().find(|p| p.role == role).filter(|_| !has(other)) {
                        let expected = format!("a role with a {text} pool serving {name} too");
                        return Err(ConfigError::invalid(
                            format!("{}role", p.key),
                            format!("{role:?}").to_lowercase(),
                            expected,
                        ));
                    }
                }
            }
        }
        let Some(d) = self.disaggregation else {
            return check(
                !roles,
                "disaggregation",
                "(missing)",
                "a table with link_gb_per_s and link_latency_us for the KV caches of prefill pools",
            );
        };
        match d.prefill_replicas {
            Some(k) => {
                check(
                    self.pools.len() == 1,
                    "disaggregation.prefill_replicas",
                    k,
                    "none with pools (their roles say which prefill)",
                )?;
                check(
                    k >= 1 && k < self.replicas(),
                    "disaggregation.prefill_replicas",
                    k,
                    "an integer from 1 to the replicas less one (the rest decode)",
                )?;
            }
            None => check(
                roles,
                "disaggregation.prefill_replicas",
                "(missing)",
                "the replicas that prefill (or pools with role = \"prefill\" and \"decode\")",
            )?,
        }
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
        )
    }

    /// The index in [`LlmServingConfig::served_names`] of the model each task's
    /// requests ask for.
    pub fn task_models(&self) -> Vec<usize> {
        let names = self.served_names();
        self.tasks
            .iter()
            .map(|t| t.model.as_deref().and_then(|m| names.iter().position(|n| *n == m)).unwrap_or(0))
            .collect()
    }

    /// Checks every value; the error names the key (relative to `[serving]`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.arrivals.validate().map_err(|e| e.within("arrivals"))?;
        check(!self.tasks.is_empty(), "tasks", "[]", "at least one task")?;
        validate_tasks(&self.tasks)?;
        if let ArrivalProcess::Replay { requests, .. } = &self.arrivals
            && let Some(r) = requests.iter().find(|r| r.task.is_some_and(|t| usize::from(t) >= self.tasks.len()))
        {
            check(false, "arrivals.task", r.task.unwrap_or(0), "the index of one of the tasks")?;
        }
        if let ArrivalProcess::Replay { chains, .. } = &self.arrivals
            && !chains.is_empty()
            && let Some(i) = self.tasks.iter().position(|t| t.shared_prefix_tokens.is_some())
        {
            let shared = self.tasks[i].shared_prefix_tokens.unwrap_or(0);
            check(
                false,
                format!("tasks[{i}].shared_prefix_tokens"),
                shared,
                "none with a trace whose hash_ids name its prompts' shared prefixes",
            )?;
        }
        check(!self.pools.is_empty(), "pools", "[]", "at least one pool")?;
        for (i, p) in self.pools.iter().enumerate() {
            p.validate()?;
            if let Some(j) = self.pools[..i].iter().position(|q| q.name == p.name) {
                let allowed = format!("a name no other pool has (pools[{j}] has it)");
                return Err(ConfigError::invalid(format!("{}name", p.key), &p.name, allowed));
            }
        }
        let names = self.served_names();
        if let ArrivalProcess::Replay { path, models: (trace_models, _), .. } = &self.arrivals
            && let Some(m) = trace_models.iter().find(|m| !names.contains(&m.as_str()))
        {
            let allowed = format!("a trace whose model column names models the pools serve ({})", names.join(", "));
            return Err(ConfigError::invalid("arrivals.path", format!("{path} (model {m:?})"), allowed));
        }
        let traced_models = matches!(&self.arrivals, ArrivalProcess::Replay { models: (m, _), .. } if !m.is_empty());
        for (i, t) in self.tasks.iter().enumerate() {
            let served = format!("({})", names.join(", "));
            match t.model.as_deref() {
                Some(m) if !names.contains(&m) => {
                    let allowed = format!("a model the pools serve {served}");
                    return Err(ConfigError::invalid(format!("tasks[{i}].model"), m, allowed));
                }
                // A trace's model column says it for every request.
                None if names.len() > 1 && !traced_models => {
                    let allowed = format!("the model its requests ask for: the pools serve several {served}");
                    return Err(ConfigError::invalid(format!("tasks[{i}].model"), "(missing)", allowed));
                }
                _ => {}
            }
        }
        for (key, v) in
            [("power.node_baseline_w", self.node_baseline_w), ("prices.energy_usd_per_kwh", self.energy_usd_per_kwh)]
        {
            check(v.is_finite() && v >= 0.0, key, v, "a finite number >= 0")?;
        }
        check(self.pue.is_finite() && self.pue >= 1.0, "power.pue", self.pue, "a finite number >= 1")?;
        let w = self.kv_overlap_score_weight;
        check(w.is_finite() && (0.0..=1e6).contains(&w), "kv_overlap_score_weight", w, "a number from 0 to 1e6")?;
        let every = self.routing_interval_s;
        check(
            every.is_finite() && (0.0..=60.0).contains(&every),
            "routing_interval_s",
            every,
            "a number of seconds from 0 (each request as it arrives) to 60",
        )?;
        self.grid.validate().map_err(|e| e.within("grid"))?;
        check(
            self.duration_s.is_finite() && self.duration_s > self.warmup_s && self.duration_s <= MAX_DURATION_S,
            "duration_s",
            self.duration_s,
            "a finite number > warmup_s, at most 100 years",
        )?;
        self.validate_roles()?;
        check(self.warmup_s.is_finite() && self.warmup_s >= 0.0, "warmup_s", self.warmup_s, "a finite number >= 0")
    }
}
