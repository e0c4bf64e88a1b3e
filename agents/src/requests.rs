//! Requests as the worlds that serve them see them: kinds of request (tasks) with
//! their token counts and objectives, how a request's task and lengths are drawn (or
//! taken from a replayed trace), what became of it, and the record a request trace
//! keeps of it. Shared by the serving world's engines and open to any world that
//! serves requests.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::arrivals::ReplayedRequest;
use crate::distributions::lognormal_from_mean_cv;
use crate::error::{ConfigError, check};
use crate::world::MAX_DURATION_S;

/// The most tokens a prompt, an output or a history may have: 2^20, beyond any
/// model's context window.
pub const MAX_TOKENS: u32 = 1 << 20;

/// Requests a replica (or a GPU of the static engine) lets wait by default: above every
/// built-in scenario's longest queue (llm-fleet's four replicas at their afternoon
/// peak hold between 10,000 and 20,000 each), and few enough that an overloaded run
/// holds about 20 MB per replica (some 200 bytes a waiting request) instead of every
/// request that arrives.
pub const DEFAULT_MAX_QUEUED: u32 = 100_000;

/// The largest queue cap a scenario may set: beyond it, memory bounds nothing.
pub(crate) const MAX_QUEUED: u32 = 10_000_000;

/// A token count: fixed, or log-normal with a mean and coefficient of variation,
/// rounded to a whole number of at least one token.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenCount {
    /// Always this many.
    Fixed {
        /// Tokens.
        tokens: u32,
    },
    /// Log-normal.
    #[serde(rename = "lognormal")]
    LogNormal {
        /// Mean tokens.
        mean: f64,
        /// Coefficient of variation.
        cv: f64,
    },
}

impl TokenCount {
    /// The mean of the distribution (tokens).
    pub fn mean(&self) -> f64 {
        match *self {
            TokenCount::Fixed { tokens } => f64::from(tokens),
            TokenCount::LogNormal { mean, .. } => mean,
        }
    }
}

/// A kind of request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Name, e.g. "chat".
    pub name: String,
    /// Relative frequency, > 0.
    pub weight: f64,
    /// Prompt tokens.
    pub prompt_tokens: TokenCount,
    /// Output tokens.
    pub output_tokens: TokenCount,
    /// Latency objective (s).
    pub slo_s: f64,
    /// A request still waiting for its batch after this long gives up (s); none by
    /// default.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Time-to-first-token objective (s), for goodput; none by default.
    #[serde(default)]
    pub ttft_slo_s: Option<f64>,
    /// Time-per-output-token objective (s), for goodput; none by default.
    #[serde(default)]
    pub tpot_slo_s: Option<f64>,
    /// Conversation history the request comes with (tokens); none by default. How
    /// much of it is sent is the serving engine's choice (the static engine's
    /// `history`).
    #[serde(default)]
    pub history_tokens: Option<TokenCount>,
    /// A system prompt every request of the task begins with (tokens), in front of
    /// its prompt tokens: the continuous engine's replicas find its KV cached; none
    /// by default.
    #[serde(default)]
    pub shared_prefix_tokens: Option<u32>,
    /// Multi-turn conversations: each arrival of the task opens one, whose later turns
    /// follow its answers; none by default (every request stands alone).
    #[serde(default)]
    pub session: Option<SessionSpec>,
    /// The model its requests ask for (a name the serving pools serve); needed only
    /// when the pools serve several.
    #[serde(default)]
    pub model: Option<String>,
}

/// A task's conversations: `turns` requests, each sent a think time (exponential,
/// mean `think_time_s`) after the previous one was answered, with a prompt that is
/// the conversation so far (system prompt, earlier messages and answers) plus a new
/// message drawn as the task's prompts are.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Turns per conversation, the first included (1 to 1,000).
    pub turns: u32,
    /// Mean pause between an answer and the next turn (s).
    #[serde(default)]
    pub think_time_s: f64,
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Served to completion.
    Served,
    /// Refused at arrival: over the context limit, longer than the whole KV cache, or
    /// routed to a replica or node whose queue is full.
    Rejected,
    /// Gave up waiting for its batch.
    TimedOut,
    /// Its batch's GPU failed.
    Lost,
}

impl RequestOutcome {
    /// The name used in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Served => "served",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::TimedOut => "timed_out",
            RequestOutcome::Lost => "lost",
        }
    }
}

/// One row per request, for traces.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// Arrival order, from 0.
    pub request_id: u64,
    /// Task index.
    pub task: u16,
    /// Prompt plus output tokens (after truncation).
    pub tokens: u32,
    /// Whether its output was shortened to fit the context limit.
    pub truncated: bool,
    /// History tokens sent (included in `tokens`).
    pub history_tokens: u32,
    /// Quality of its answer in [0, 1] (given the history kept, or its model's loss when
    /// served); `None` where nothing models it (a fleet's model that does not drift,
    /// an answer never given).
    pub quality: Option<f64>,
    /// The score (1-5) a user gave the answer, if one did (a fleet's drifting model
    /// with the `ics` signal).
    pub user_score: Option<f64>,
    /// Arrival (s).
    pub arrival_s: f64,
    /// Start of its batch (s); `None` unless served.
    pub start_s: Option<f64>,
    /// Finish, or the moment it gave up (s); `None` if rejected.
    pub finish_s: Option<f64>,
    /// Its node; `None` if rejected.
    pub node: Option<u32>,
    /// Its GPU (global index); `None` unless served.
    pub gpu: Option<u32>,
    /// Requests in its batch; `None` unless served.
    pub batch_size: Option<u32>,
    /// Its share of its batch's GPU energy at full power (kWh): spent and wasted for a
    /// lost request, 0 for one that never ran.
    pub energy_kwh: f64,
    /// What became of it.
    pub outcome: RequestOutcome,
    /// Served within its task's SLO.
    pub slo_met: bool,
    /// Arrived during warm-up.
    pub warmup: bool,
    /// Token-level engines: prompt tokens.
    pub input_tokens: Option<u32>,
    /// Token-level engines: output tokens.
    pub output_tokens: Option<u32>,
    /// Token-level engines: first scheduled in a step (s).
    pub first_scheduled_s: Option<f64>,
    /// Token-level engines: its first token (s).
    pub first_token_s: Option<f64>,
    /// Token-level engines: times it was preempted.
    pub preemptions: Option<u32>,
    /// Token-level engines: prompt tokens found in the KV cache when first scheduled.
    pub cached_tokens: Option<u32>,
    /// Token-level engines: its replica.
    pub replica: Option<u32>,
    /// Token-level engines: its replica's pool (an index in the pools).
    pub pool: Option<u16>,
}

/// Checks a task list's values; keys are `tasks[i].<field>`.
pub(crate) fn validate_tasks(tasks: &[Task]) -> Result<(), ConfigError> {
    let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
    for (i, t) in tasks.iter().enumerate() {
        check(t.weight.is_finite() && t.weight > 0.0, format!("tasks[{i}].weight"), t.weight, "a finite number > 0")?;
        check(t.slo_s.is_finite() && t.slo_s > 0.0, format!("tasks[{i}].slo_s"), t.slo_s, "a finite number > 0")?;
        if let Some(timeout) = t.timeout_s {
            check(
                timeout.is_finite() && timeout > 0.0 && timeout <= MAX_DURATION_S,
                format!("tasks[{i}].timeout_s"),
                timeout,
                "seconds > 0, at most 100 years",
            )?;
        }
        for (what, objective) in [("ttft_slo_s", t.ttft_slo_s), ("tpot_slo_s", t.tpot_slo_s)] {
            if let Some(v) = objective {
                check(v.is_finite() && v > 0.0, format!("tasks[{i}].{what}"), v, "a finite number of seconds > 0")?;
            }
        }
        if let Some(session) = t.session {
            check(
                (1..=1000).contains(&session.turns),
                format!("tasks[{i}].session.turns"),
                session.turns,
                "from 1 to 1,000 turns",
            )?;
            let think = session.think_time_s;
            check(
                finite_nonneg(think) && think <= MAX_DURATION_S,
                format!("tasks[{i}].session.think_time_s"),
                think,
                "seconds >= 0, at most 100 years",
            )?;
        }
        if let Some(shared) = t.shared_prefix_tokens {
            let key = format!("tasks[{i}].shared_prefix_tokens");
            check((1..=MAX_TOKENS).contains(&shared), key, shared, "from 1 to 1,048,576 tokens")?;
        }
        let history = t.history_tokens.map(|h| ("history_tokens", h));
        for (what, c) in
            [("prompt_tokens", t.prompt_tokens), ("output_tokens", t.output_tokens)].into_iter().chain(history)
        {
            let key = format!("tasks[{i}].{what}");
            match c {
                TokenCount::Fixed { tokens } => {
                    check((1..=MAX_TOKENS).contains(&tokens), &*key, tokens, "from 1 to 1,048,576 tokens")?
                }
                TokenCount::LogNormal { mean, cv } => {
                    check(
                        mean.is_finite() && (1.0..=f64::from(MAX_TOKENS)).contains(&mean),
                        format!("{key}.mean"),
                        mean,
                        "from 1 to 1,048,576 tokens",
                    )?;
                    check(finite_nonneg(cv) && cv <= 100.0, format!("{key}.cv"), cv, "a number from 0 to 100")?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum TokenSampler {
    Fixed(u32),
    LogNormal(LogNormal<f64>),
}

impl TokenSampler {
    pub(crate) fn new(c: TokenCount) -> Self {
        match c {
            TokenCount::Fixed { tokens } => TokenSampler::Fixed(tokens),
            TokenCount::LogNormal { mean, cv } => TokenSampler::LogNormal(lognormal_from_mean_cv(mean, cv)),
        }
    }

    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        match self {
            TokenSampler::Fixed(n) => *n,
            // The tail beyond MAX_TOKENS (a longer request than any model's context) is
            // cut there, so that batch times stay within the validated bound.
            TokenSampler::LogNormal(d) => round_tokens(d.sample(rng).clamp(1.0, f64::from(MAX_TOKENS))),
        }
    }
}

/// `x.round() as u32` for `x` in [1, MAX_TOKENS] (half away from zero, NaN to 0)
/// without the libm call, which was 2% of a serving run: `x - trunc(x)` is exact.
#[inline]
fn round_tokens(x: f64) -> u32 {
    let whole = x as u32;
    if x - f64::from(whole) >= 0.5 { whole + 1 } else { whole }
}

/// A request's task (by weight) and its prompt and output tokens, each taken from the
/// replayed trace where it gives them: one rule for both engines, so that they see
/// the same requests from the same stream.
pub(crate) fn draw_request<R: Rng + ?Sized>(
    replayed: Option<ReplayedRequest>,
    rng: &mut R,
    cumulative_weights: &[f64],
    token_samplers: &[(TokenSampler, TokenSampler)],
) -> (usize, u32, u32) {
    let task = match replayed.and_then(|r| r.task) {
        Some(task) => usize::from(task),
        None => {
            let u: f64 = rng.random();
            cumulative_weights.iter().position(|&c| u < c).unwrap_or(cumulative_weights.len() - 1)
        }
    };
    let (prompt_sampler, output_sampler) = token_samplers[task];
    let prompt = replayed.and_then(|r| r.prompt_tokens).unwrap_or_else(|| prompt_sampler.sample(rng));
    let output = replayed.and_then(|r| r.output_tokens).unwrap_or_else(|| output_sampler.sample(rng));
    (task, prompt, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rounding_is_f64_round() {
        let cases = [1.0, 1.5_f64.next_down(), 1.5, 2.5, 3.5_f64.next_down(), 1e6 + 0.5, 1_048_575.7, f64::NAN];
        for x in cases.into_iter().chain((0..100_000).map(|i| 1.0 + f64::from(i) * 0.013_7)) {
            assert_eq!(round_tokens(x), x.round() as u32, "{x}");
        }
    }
}
