//! Contender selection: ranks from decayed historical scores and task similarity,
//! cached per task, and the candidate list a query is offered to.

use super::*;

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Network<O, S> {
    /// The key a rank queue orders contender `c` by.
    pub(super) fn rank_key(&self, c: Id<Contender>) -> Reverse<(u64, u32)> {
        let contender = &self.book[c];
        let primary = match self.config.routing.policy {
            RoutingPolicy::JoinShortestQueue => self.nodes[Id::from_index(contender.node)].in_flight.len() as u64,
            _ => contender.period.requests,
        };
        Reverse((primary, c.index()))
    }

    pub(super) fn update_rank(&mut self, c: Id<Contender>) {
        if self.ranks.is_none() || !self.book[c].active {
            return;
        }
        let key = self.rank_key(c);
        let task = usize::from(self.book[c].task);
        if let Some(ranks) = &mut self.ranks {
            ranks[task].change_priority(&c.index(), key);
        }
    }

    /// After a node's in-flight count changed: its contenders' JSQ ranks.
    pub(super) fn update_node_ranks(&mut self, node: Id<Node>) {
        if self.config.routing.policy == RoutingPolicy::JoinShortestQueue {
            for i in 0..self.book.of_node(node.index()).len() {
                self.update_rank(self.book.of_node(node.index())[i]);
            }
        }
    }

    /// The contenders to try for a query of `task`, best first, at most `routing.top`.
    pub(super) fn candidates(&mut self, task: u16, ctx: &mut Context<'_, NetworkEvent>) -> Vec<Id<Contender>> {
        let t = usize::from(task);
        let top = self.config.routing.top as usize;
        let n = self.book.of_task(task).len();
        if n == 0 {
            return Vec::new();
        }
        match self.config.routing.policy {
            RoutingPolicy::RoundRobin => self.book.round_robin(task, top),
            RoutingPolicy::Random => self.book.random(task, top, ctx.rng(ROUTING_STREAM)),
            RoutingPolicy::LeastProcessed if self.ranks.is_none() => self.book.least_processed(task, top),
            RoutingPolicy::LeastProcessed | RoutingPolicy::JoinShortestQueue if self.ranks.is_none() => {
                let keyed: Vec<(u64, u32)> = self.book.of_task(task).iter().map(|&c| self.rank_key(c).0).collect();
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
                let mut pair = vec![self.book.of_task(task)[a]];
                if n > 1 {
                    let b = (a + 1 + rng.random_range(0..n - 1)) % n;
                    pair.push(self.book.of_task(task)[b]);
                }
                let load = |c: Id<Contender>| {
                    let contender = &self.book[c];
                    (self.nodes[Id::from_index(contender.node)].in_flight.len(), contender.period.requests, c.index())
                };
                pair.sort_by_key(|&c| load(c));
                pair.truncate(top);
                pair
            }
            RoutingPolicy::DecayedScore => self.book.decayed_score(task, ctx.now(), top),
            RoutingPolicy::EnergyAware => {
                let slo_s = self.config.validator.slo_s;
                let ranked: Vec<(bool, f64, u64, u32)> = self
                    .book
                    .of_task(task)
                    .iter()
                    .map(|&c| {
                        let contender = &self.book[c];
                        let node = &self.nodes[Id::from_index(contender.node)];
                        let busy_w = self.config.node_classes[usize::from(node.class)].busy_w;
                        let estimates = contender.extra;
                        let meets = estimates.latency_est_s <= slo_s;
                        let energy_j = busy_w * estimates.latency_est_s / estimates.answered_est.max(0.05);
                        let key = if meets { energy_j } else { estimates.latency_est_s };
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

    /// The decayed-score rank of every active contender of `task` at `now`, computed
    /// from scratch (no cache): what the policy's cached ranks must equal.
    pub fn ranks_from_history(&self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        self.book.ranks_from_history(task, now)
    }

    /// The same ranks from the cached globs, as the policy computes them.
    pub fn ranks_cached(&mut self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        self.book.ranks_cached(task, now)
    }
}
