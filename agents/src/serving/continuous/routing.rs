//! The router in front of the replicas: which replica a request goes to, from what a
//! real router sees (outstanding requests, KV usage, prompts not yet answered, cached
//! blocks, the blocks it booked for what it sent), never a request's output length.

use infersim_engine::{Context, Observer, SimTime};
use rand::RngExt;

use super::{DOWN, LlmEvent, LlmRouting, LlmServing, LlmServingConfig, NO_GROUP, ReplicaState, RoutingGroup};
use crate::llm::cacheable_blocks;
use crate::llm::kv::Segment;
use crate::min_index::MinIndex;
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
        if state.group == NO_GROUP {
            return;
        }
        let key = if self.accepting(r) { (state.engine.waiting() + state.engine.running()) as u64 } else { DOWN };
        self.groups[state.group as usize].loads.set(state.in_group as usize, key);
        self.refresh_booked(r);
    }

    /// Prefix-aware routing: refreshes replica `r`'s entry in its group's order by the
    /// KV blocks the router booked there (none while it takes no requests).
    pub(super) fn refresh_booked(&mut self, r: usize) {
        if self.config.routing != LlmRouting::PrefixAware {
            return;
        }
        let state = &self.replicas[r];
        if state.group == NO_GROUP {
            return;
        }
        // A booking beyond the index's keys (billions of blocks) counts as the largest
        // below DOWN: the router's bound only gets looser, and it scores costs exactly.
        let key = if self.accepting(r) { state.engine.booked_blocks().min(DOWN - 1) } else { DOWN };
        self.groups[state.group as usize].booked.set(state.in_group as usize, key);
    }

    /// The KV blocks a prefix-aware router books on replica `r` for a request it sends
    /// there: its prompt's blocks less the leading ones cached there, the blocks it
    /// adds (0 for the other routers, which keep no book).
    pub(super) fn booking(&self, r: usize, chain: &[Segment], prompt: u32) -> u32 {
        if self.config.routing != LlmRouting::PrefixAware {
            return 0;
        }
        let engine = &self.replicas[r].engine;
        let bs = engine.kv().block_size();
        let output = (self.mean_output_tokens / f64::from(bs)).ceil() as u32;
        prompt.div_ceil(bs) - engine.cached_blocks(chain, prompt) + output
    }

    /// Picks an up replica of routing group `g` for `request`.
    pub(super) fn route(&mut self, g: usize, request: Routed<'_>, ctx: &mut Context<'_, LlmEvent>) -> Option<u32> {
        if self.config.routing == LlmRouting::SessionAffinity
            && let Some(r) = request
                .previous
                .filter(|&r| self.replicas[r as usize].group as usize == g && self.accepting(r as usize))
        {
            return Some(r);
        }
        let now = ctx.now();
        match self.config.routing {
            // What it reads changes with every step: each replica as it is now.
            LlmRouting::LeastKvUsage => self.materialise_group(g, now),
            LlmRouting::PrefixAware => return self.route_by_prefix(g, request, now),
            _ => {}
        }
        let group = &self.groups[g];
        if matches!(self.config.routing, LlmRouting::LeastOutstandingRequests | LlmRouting::SessionAffinity) {
            // The index's ties go to the first replica, as a scan's would.
            let best = group.loads.argmin()?;
            return (group.loads.key(best) != DOWN).then_some(group.replicas[best]);
        }
        // The places of the up replicas in order: the whole group unless some is down.
        let listed: Option<Vec<usize>> = (self.life.down_now() > 0 || self.not_serving > 0)
            .then(|| (0..group.replicas.len()).filter(|&k| self.accepting(group.replicas[k] as usize)).collect());
        let count = listed.as_ref().map_or(group.replicas.len(), Vec::len);
        if count == 0 {
            return None;
        }
        if self.config.routing == LlmRouting::RoundRobin {
            // The next up replica of the group after the last one chosen.
            let len = group.replicas.len();
            let k = match &listed {
                None if group.next < len => group.next,
                None => 0,
                Some(up) => up.iter().copied().find(|&k| k >= group.next).unwrap_or(up[0]),
            };
            let group = &mut self.groups[g];
            group.next = if k + 1 >= len { 0 } else { k + 1 };
            return Some(group.replicas[k]);
        }
        let nth = |k: usize| group.replicas[listed.as_ref().map_or(k, |up| up[k])];
        let load = |r: u32| {
            let e = &self.replicas[r as usize].engine;
            e.waiting() + e.running()
        };
        let pick = match self.config.routing {
            LlmRouting::RoundRobin => unreachable!("routed above"),
            LlmRouting::DecayedScore | LlmRouting::LeastProcessed => {
                unreachable!("validated: miners' routers need [serving.validator], which routes itself")
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
            LlmRouting::PrefixAware => unreachable!("routed above"),
        };
        Some(pick)
    }

    /// Materialises the planned steps of every replica of routing group `g`.
    fn materialise_group(&mut self, g: usize, now: SimTime) {
        for k in 0..self.groups[g].replicas.len() {
            let r = self.groups[g].replicas[k] as usize;
            self.materialise(r, now);
        }
    }

    /// A prefix-aware router's cost of sending `request` to replica `r`.
    fn prefix_cost(&self, r: u32, request: Routed<'_>) -> f64 {
        let e = &self.replicas[r as usize].engine;
        let bs = e.kv().block_size();
        let prefill = request.prompt.div_ceil(bs) - e.cached_blocks(request.chain, request.prompt);
        self.config.kv_overlap_score_weight * f64::from(prefill) + e.booked_blocks() as f64
    }

    /// Prefix-aware routing in group `g`: the cheapest replica ([`Self::cheapest_by_prefix`]),
    /// checked against a scan of every replica in builds with debug assertions.
    fn route_by_prefix(&mut self, g: usize, request: Routed<'_>, now: SimTime) -> Option<u32> {
        let pick = self.cheapest_by_prefix(g, request, now)?;
        if cfg!(debug_assertions) {
            self.materialise_group(g, now);
            let group = &self.groups[g];
            let up = group.replicas.iter().copied().filter(|&r| self.accepting(r as usize));
            let scan = cheapest(up, |r| self.prefix_cost(r, request));
            debug_assert_eq!(pick, scan, "the index agrees with a scan");
        }
        Some(pick)
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    /// Prefix-aware routing without scoring every replica: a replica's cost is
    /// `w x (prompt blocks - cached leading blocks) + booked blocks`, and no replica
    /// caches more than the request's cacheable blocks (whole blocks of its shared
    /// segments, never the last token's), so `w x (prompt blocks - cacheable) + booked`
    /// bounds it from below. Replicas are visited by (booked blocks, place), and the
    /// visit stops once that bound exceeds the best cost found, or equals it for a
    /// replica booked as much as the best (it comes later in the group, so it cannot
    /// win the tie): the same replica a scan picks (the first in the group on ties),
    /// scoring only those near the least booked. Each replica visited is materialised
    /// first (its steps may have evicted cached blocks). `None` if no replica of the
    /// group takes requests.
    fn cheapest_by_prefix(&mut self, g: usize, request: Routed<'_>, now: SimTime) -> Option<u32> {
        let w = self.config.kv_overlap_score_weight;
        let least_prefill = self.groups[g]
            .block_sizes
            .iter()
            .map(|&bs| request.prompt.div_ceil(bs) - cacheable_blocks(request.chain, request.prompt, bs))
            .min()
            .unwrap_or(1);
        let floor = w * f64::from(least_prefill);
        // (cost, place, booked) of the cheapest replica so far.
        let mut best: Option<(f64, usize, u64)> = None;
        // Materialising a replica's steps leaves the router's book as it is: the book
        // is set aside while the replicas are visited, least booked first (each one
        // visited is set to DOWN so that the next least comes up), and restored.
        let mut order = std::mem::take(&mut self.groups[g].booked);
        let mut visited = std::mem::take(&mut self.visited_places);
        while let Some(place) = order.argmin() {
            let booked = order.key(place);
            let bound = floor + booked as f64;
            if booked == DOWN || best.is_some_and(|(c, _, b)| bound > c || (bound == c && booked == b)) {
                break;
            }
            visited.push((place, booked));
            order.set(place, DOWN);
            let r = self.groups[g].replicas[place];
            self.materialise(r as usize, now);
            let c = self.prefix_cost(r, request);
            if best.is_none_or(|(b, p, _)| c < b || (c == b && place < p)) {
                best = Some((c, place, booked));
            }
        }
        for (place, booked) in visited.drain(..) {
            order.set(place, booked);
        }
        self.visited_places = visited;
        self.groups[g].booked = order;
        best.map(|(_, place, _)| self.groups[g].replicas[place])
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

/// A fleet's routing groups and what each is for.
pub(super) struct Groups {
    pub groups: Vec<RoutingGroup>,
    /// The served model (an index in the served names) of each group.
    pub models: Vec<usize>,
    /// The decode group of each prefill group.
    pub decode: Vec<Option<usize>>,
    /// The group a request for each served name goes to first.
    pub first: Vec<usize>,
}

/// The routing groups of a fleet: for each name [`LlmServingConfig::served_names`]
/// gives, in its order, the replicas of the pools that serve it, or its prefill
/// replicas then its decode replicas; each replica told its group and its place in it.
pub(super) fn routing_groups(config: &LlmServingConfig, replicas: &mut [ReplicaState]) -> Groups {
    let n = replicas.len() as u32;
    let (mut members, mut models, mut decode, mut first) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, name) in config.served_names().into_iter().enumerate() {
        let serving: Vec<u32> = (0..n)
            .filter(|&r| config.pools[usize::from(replicas[r as usize].pool)].serves_requests_for(name))
            .collect();
        let (prefill, rest): (Vec<u32>, Vec<u32>) = serving.into_iter().partition(|&r| replicas[r as usize].prefill);
        first.push(members.len());
        if !prefill.is_empty() {
            decode.push(Some(members.len() + 1));
            members.push(prefill);
            models.push(i);
        }
        decode.push(None);
        members.push(rest);
        models.push(i);
    }
    let groups = members
        .into_iter()
        .enumerate()
        .map(|(g, members)| {
            for (k, &r) in members.iter().enumerate() {
                (replicas[r as usize].group, replicas[r as usize].in_group) = (g as u32, k as u32);
            }
            let limits =
                members.iter().map(|&r| config.pools[usize::from(replicas[r as usize].pool)].context_limit_tokens);
            let context_limit_tokens = limits.reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b))).flatten();
            let mut block_sizes: Vec<u32> = members
                .iter()
                .map(|&r| config.pools[usize::from(replicas[r as usize].pool)].limits.block_size)
                .collect();
            block_sizes.sort_unstable();
            block_sizes.dedup();
            RoutingGroup {
                block_sizes,
                loads: MinIndex::new(members.len()),
                booked: MinIndex::filled(members.len(), DOWN),
                replicas: members,
                next: 0,
                context_limit_tokens,
            }
        })
        .collect();
    Groups { groups, models, decode, first }
}
