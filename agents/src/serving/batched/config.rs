//! The static engine's configuration: nodes of GPUs that serve requests in batches,
//! checked value by value.

use serde::{Deserialize, Serialize};

use super::BatchTime;
use crate::arrivals::ArrivalProcess;
use crate::error::{ConfigError, check};
use crate::failures::Failures;
use crate::grid::CarbonIntensity;
use crate::requests::{DEFAULT_MAX_QUEUED, MAX_QUEUED, MAX_TOKENS, Task, TokenCount, validate_tasks};
use crate::world::MAX_DURATION_S;

/// How much conversation history a request sends, and what dropping it costs.
///
/// Of `h` history tokens the request keeps `floor(keep_share x h)`, fewer if the
/// context limit needs it (history goes before the output is shortened); its quality
/// is `1 - quality_loss x (1 - kept / h)`. Kept history adds prompt tokens, so it costs
/// batch time and energy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// Share of the history kept, in [0, 1].
    pub keep_share: f64,
    /// Quality lost when all of the history is dropped, in [0, 1].
    pub quality_loss: f64,
}

impl Default for History {
    fn default() -> Self {
        History { keep_share: 1.0, quality_loss: 0.3 }
    }
}

/// What happens to a request whose prompt plus output exceeds the context limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    /// Refuse it.
    #[default]
    Reject,
    /// Shorten its output to fit (refuse it if the prompt alone does not fit).
    Truncate,
}

/// How a node's router picks a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Nodes in turn.
    RoundRobin,
    /// The node with the fewest requests waiting or in service (lowest index on ties).
    #[serde(alias = "least_outstanding_requests")]
    LeastLoaded,
    /// A node uniformly at random.
    Random,
}

/// Everything that defines the static engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchedConfig {
    /// How requests arrive.
    pub arrivals: ArrivalProcess,
    /// Kinds of request.
    pub tasks: Vec<Task>,
    /// Routing across nodes.
    pub routing: Routing,
    /// Nodes, >= 1.
    pub nodes: u32,
    /// GPUs per node, >= 1.
    pub gpus_per_node: u32,
    /// Most requests in one batch, >= 1.
    pub max_batch: u32,
    /// Longest a request waits for its batch to fill (s), >= 0.
    pub max_wait_s: f64,
    /// Most prompt plus output tokens a request may have; none by default.
    pub context_limit_tokens: Option<u32>,
    /// Most requests a node's queue holds per GPU of the node: an arrival routed to a
    /// full node is rejected, as a real server answers 429 rather than queue without
    /// bound.
    pub max_queued_per_gpu: u32,
    /// What to do with a request over the limit.
    pub over_limit: OverLimit,
    /// How much conversation history requests send.
    pub history: History,
    /// GPU failures and repairs; none by default.
    pub failures: Option<Failures>,
    /// How long a batch takes.
    pub service: BatchTime,
    /// GPU power when idle (W).
    pub gpu_idle_w: f64,
    /// GPU power when serving (W).
    pub gpu_max_w: f64,
    /// Power of each node apart from its GPUs (W).
    pub node_baseline_w: f64,
    /// Facility power over IT power, >= 1.
    pub pue: f64,
    /// Grid carbon intensity over time.
    pub grid: CarbonIntensity,
    /// Energy price (USD per kWh).
    pub energy_usd_per_kwh: f64,
    /// GPU rental price (USD per GPU-hour).
    pub gpu_usd_per_hour: f64,
    /// Arrivals stop after this long (s).
    pub duration_s: f64,
    /// Requests arriving before this are left out of latency statistics (s).
    pub warmup_s: f64,
}

impl BatchedConfig {
    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
        self.arrivals.validate().and_then(|()| self.arrivals.require_open_loop()).map_err(|e| e.within("arrivals"))?;
        if let ArrivalProcess::Replay { requests, .. } = &self.arrivals
            && let Some(r) = requests.iter().find(|r| r.task.is_some_and(|t| usize::from(t) >= self.tasks.len()))
        {
            check(false, "arrivals.task", r.task.unwrap_or(0), "the index of one of the tasks")?;
        }
        check(!self.tasks.is_empty(), "tasks", "[]", "at least one task")?;
        validate_tasks(&self.tasks)?;
        if let Some((i, t)) = self.tasks.iter().enumerate().find(|(_, t)| t.shared_prefix_tokens.is_some()) {
            let key = format!("tasks[{i}].shared_prefix_tokens");
            let shared = t.shared_prefix_tokens.unwrap_or(0);
            check(
                false,
                key,
                shared,
                "none: only the continuous engine caches prefixes (serving.engine.kind = \"continuous\")",
            )?;
        }
        if let Some(i) = self.tasks.iter().position(|t| t.model.is_some()) {
            let allowed = "none: the static engine serves one model (pools are the continuous engine's)";
            check(false, format!("tasks[{i}].model"), self.tasks[i].model.as_deref().unwrap_or(""), allowed)?;
        }
        if let Some(i) = self.tasks.iter().position(|t| t.session.is_some()) {
            let key = format!("tasks[{i}].session");
            let allowed = "none: conversations are the continuous engine's (serving.engine.kind = \"continuous\")";
            check(false, key, "(a table)", allowed)?;
        }
        check(self.nodes >= 1, "nodes", self.nodes, "an integer >= 1")?;
        check(self.gpus_per_node >= 1, "gpus_per_node", self.gpus_per_node, "an integer >= 1")?;
        check((1..=65_536).contains(&self.max_batch), "max_batch", self.max_batch, "an integer from 1 to 65536")?;
        check(
            (1..=MAX_QUEUED).contains(&self.max_queued_per_gpu),
            "engine.max_queued_requests",
            self.max_queued_per_gpu,
            "an integer from 1 to 10,000,000",
        )?;
        if let Some(f) = self.failures {
            f.validate().map_err(|e| e.within("failures"))?;
        }
        if let Some(limit) = self.context_limit_tokens {
            check(limit >= 2, "context_limit_tokens", limit, "an integer >= 2 (one prompt and one output token)")?;
        }
        let h = self.history;
        check((0.0..=1.0).contains(&h.keep_share), "history.keep_share", h.keep_share, "a share from 0 to 1")?;
        check((0.0..=1.0).contains(&h.quality_loss), "history.quality_loss", h.quality_loss, "a number from 0 to 1")?;
        check(
            finite_nonneg(self.max_wait_s) && self.max_wait_s <= MAX_DURATION_S,
            "max_wait_s",
            self.max_wait_s,
            "seconds from 0 to 100 years",
        )?;
        for (key, v) in [
            ("gpu_idle_w", self.gpu_idle_w),
            ("node_baseline_w", self.node_baseline_w),
            ("energy_usd_per_kwh", self.energy_usd_per_kwh),
            ("gpu_usd_per_hour", self.gpu_usd_per_hour),
            ("warmup_s", self.warmup_s),
        ] {
            check(finite_nonneg(v), key, v, "a finite number >= 0")?;
        }
        self.service.validate()?;
        // The longest batch there can be (every request at the most tokens) must fit
        // the clock, or a run could compute a time it cannot hold.
        let prompt_and_output = 3.0 * f64::from(MAX_TOKENS);
        let longest_s = self.service.seconds(self.max_batch as usize, f64::from(self.max_batch) * prompt_and_output).0;
        check(
            longest_s.is_finite() && longest_s <= MAX_DURATION_S,
            "service",
            format!("{longest_s} s for the longest batch"),
            "a batch time model whose longest batch (max_batch requests of 3 x 1,048,576 tokens) takes at most 100 \
             years",
        )?;
        self.grid.validate().map_err(|e| e.within("grid"))?;
        check(
            self.gpu_max_w.is_finite() && self.gpu_max_w >= self.gpu_idle_w,
            "gpu_max_w",
            self.gpu_max_w,
            "a finite number >= gpu_idle_w",
        )?;
        check(self.pue.is_finite() && self.pue >= 1.0, "pue", self.pue, "a finite number >= 1")?;
        check(
            self.duration_s.is_finite() && self.duration_s > self.warmup_s,
            "duration_s",
            self.duration_s,
            "a finite number > warmup_s",
        )?;
        Ok(())
    }

    /// Total GPUs.
    pub fn gpus(&self) -> u32 {
        self.nodes * self.gpus_per_node
    }

    /// The serving world reduced to a single-server queue: one node with one GPU, one
    /// task of one-token requests, batches of one started at once, `service_s` per
    /// request, no failures, a free and carbon-free grid; GPUs draw 100 W idle and
    /// 400 W busy, nodes nothing. With Poisson arrivals it is an M/D/1 queue, which is
    /// how the world is checked against queueing theory; tests start from it.
    pub fn single_gpu(arrivals: ArrivalProcess, service_s: f64, duration_s: f64) -> BatchedConfig {
        BatchedConfig {
            arrivals,
            tasks: vec![Task {
                name: "chat".into(),
                weight: 1.0,
                prompt_tokens: TokenCount::Fixed { tokens: 1 },
                output_tokens: TokenCount::Fixed { tokens: 1 },
                slo_s: 1.0,
                timeout_s: None,
                history_tokens: None,
                shared_prefix_tokens: None,
                session: None,
                model: None,
                ttft_slo_s: None,
                tpot_slo_s: None,
            }],
            routing: Routing::RoundRobin,
            nodes: 1,
            gpus_per_node: 1,
            max_batch: 1,
            max_wait_s: 0.0,
            context_limit_tokens: None,
            max_queued_per_gpu: DEFAULT_MAX_QUEUED,
            over_limit: OverLimit::Reject,
            history: History::default(),
            failures: None,
            service: BatchTime::Affine { base_s: 0.0, per_request_s: service_s, per_token_s: 0.0 },
            gpu_idle_w: 100.0,
            gpu_max_w: 400.0,
            node_baseline_w: 0.0,
            pue: 1.0,
            grid: CarbonIntensity::Constant { kg_per_kwh: 0.0 },
            energy_usd_per_kwh: 0.0,
            gpu_usd_per_hour: 0.0,
            duration_s,
            warmup_s: 0.0,
        }
    }
}
