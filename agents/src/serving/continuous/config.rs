//! The continuous engine's configuration: replicas of an LLM on GPUs behind a router,
//! checked value by value.

use serde::{Deserialize, Serialize};

use crate::arrivals::ArrivalProcess;
use crate::error::{ConfigError, check};
use crate::failures::Failures;
use crate::grid::CarbonIntensity;
use crate::llm::{EngineLimits, GpuSpec, ModelSpec, StepModel};
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
    /// blocks the replica already has to serve, as NVIDIA Dynamo's KV router does with
    /// its default overlap weight of 1: `cost = (prompt blocks - cached leading
    /// blocks) + (KV blocks held + prompt blocks of the requests waiting)`, lowest
    /// index on ties.
    PrefixAware,
    /// A conversation's turns to the replica that served its previous turn while it
    /// is up (where its history is cached); first turns, and turns whose replica is
    /// down, as `least_outstanding_requests`.
    SessionAffinity,
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
    /// How many times a request on a replica that fails is sent to another replica of
    /// its pool before it counts as lost.
    pub retries: u32,
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
            (1..=MAX_QUEUED).contains(&self.max_queued_requests),
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
