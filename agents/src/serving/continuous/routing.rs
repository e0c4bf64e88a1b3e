//! The router in front of the replicas: which replica a request goes to, from what a
//! real router sees (outstanding requests, KV usage, prompts not yet answered), never a
//! request's output length.

use infersim_engine::{Context, Observer};
use rand::RngExt;

use super::{DOWN, LlmEvent, LlmRouting, LlmServing};
use crate::llm::kv::Segment;
use crate::requests::RequestRecord;
use crate::serving::{ROUTING_STREAM, ServingSample};

/// What a router knows of the request it routes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Routed<'a> {
    /// Its prompt's shared segments (empty if none are known).
    pub chain: &'a [Segment],
    /// Its prompt tokens.
    pub prompt: u32,
    /// The replica that served its conversation's previous turn.
    pub previous: Option<u32>,
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Refreshes replica `r`'s routing key after its queue changed or it went down or up.
    pub(super) fn refresh_load(&mut self, r: usize) {
        let state = &self.replicas[r];
        let key = if self.life.is_down(r) { DOWN } else { (state.engine.waiting() + state.engine.running()) as u64 };
        let r = r as u32;
        let (pool, loads) = self.pools.iter_mut().find(|(p, _)| p.contains(&r)).expect("every replica is in a pool");
        loads.set((r - pool.start) as usize, key);
    }

    /// Picks an up replica among `pool` for `request`.
    pub(super) fn route(
        &mut self,
        pool: std::ops::Range<u32>,
        request: Routed<'_>,
        ctx: &mut Context<'_, LlmEvent>,
    ) -> Option<u32> {
        if self.config.routing == LlmRouting::SessionAffinity
            && let Some(r) = request.previous.filter(|r| pool.contains(r) && !self.life.is_down(*r as usize))
        {
            return Some(r);
        }
        if matches!(self.config.routing, LlmRouting::LeastOutstandingRequests | LlmRouting::SessionAffinity) {
            // The index's ties go to the lowest replica, as a scan's would.
            let (_, loads) = self.pools.iter().find(|(p, _)| *p == pool).expect("a routing pool");
            let best = loads.argmin()?;
            return (loads.key(best) != DOWN).then_some(pool.start + best as u32);
        }
        // The up replicas in order: the pool itself unless some replica is down.
        let listed: Option<Vec<u32>> =
            (self.life.down_now() > 0).then(|| pool.clone().filter(|&r| !self.life.is_down(r as usize)).collect());
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
            LlmRouting::LeastOutstandingRequests | LlmRouting::SessionAffinity => {
                (0..count).map(nth).min_by_key(|&r| load(r)).expect("some replica is up")
            }
            LlmRouting::LeastKvUsage => (0..count)
                .map(nth)
                .min_by(|&a, &b| {
                    let (ea, eb) = (&self.replicas[a as usize].engine, &self.replicas[b as usize].engine);
                    ea.kv().usage().total_cmp(&eb.kv().usage()).then(ea.waiting().cmp(&eb.waiting()))
                })
                .expect("some replica is up"),
            LlmRouting::LeastOutstandingTokens => {
                // What a router can estimate: prompts not yet answered, and the
                // workload's mean output for every request in flight (it never knows
                // a request's own output length).
                let estimate = |r: u32| {
                    let e = &self.replicas[r as usize].engine;
                    e.unanswered_prompt_tokens() as f64 + (e.waiting() + e.running()) as f64 * self.mean_output_tokens
                };
                cheapest((0..count).map(nth), estimate)
            }
            LlmRouting::PowerOfTwoChoices => {
                let rng = ctx.rng(ROUTING_STREAM);
                let a = nth(rng.random_range(0..count));
                let b = nth(rng.random_range(0..count));
                if load(b) < load(a) { b } else { a }
            }
            LlmRouting::Random => nth(ctx.rng(ROUTING_STREAM).random_range(0..count)),
            LlmRouting::PrefixAware => {
                let bs = self.config.limits.block_size;
                let cost = |r: u32| {
                    let e = &self.replicas[r as usize].engine;
                    let prefill = request.prompt.div_ceil(bs) - e.cached_blocks(request.chain, request.prompt);
                    (u64::from(prefill) + e.committed_blocks()) as f64
                };
                cheapest((0..count).map(nth), cost)
            }
        };
        Some(pick)
    }
}

/// The replica of least `cost` (each replica's cost computed once), the first on ties
/// as a scan's would be.
fn cheapest(replicas: impl Iterator<Item = u32>, cost: impl Fn(u32) -> f64) -> u32 {
    let mut best = (f64::INFINITY, None);
    for r in replicas {
        let c = cost(r);
        if best.1.is_none() || c < best.0 {
            best = (c, Some(r));
        }
    }
    best.1.expect("some replica is up")
}
