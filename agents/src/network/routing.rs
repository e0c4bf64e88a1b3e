//! Contender selection: ranks from decayed historical scores and task similarity,
//! cached per task, and the candidate list a query is offered to.

use super::*;

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Network<O, S> {
    /// The key a rank queue orders contender `c` by.
    pub(super) fn rank_key(&self, c: Id<Contender>) -> Reverse<(u64, u32)> {
        let contender = &self.contenders[c];
        let primary = match self.config.routing.policy {
            RoutingPolicy::JoinShortestQueue => self.nodes[contender.node].in_flight.len() as u64,
            _ => contender.period.requests,
        };
        Reverse((primary, c.index()))
    }

    pub(super) fn update_rank(&mut self, c: Id<Contender>) {
        if self.ranks.is_none() || !self.contenders[c].active {
            return;
        }
        let key = self.rank_key(c);
        let task = usize::from(self.contenders[c].task);
        if let Some(ranks) = &mut self.ranks {
            ranks[task].change_priority(&c.index(), key);
        }
    }

    /// After a node's in-flight count changed: its contenders' JSQ ranks.
    pub(super) fn update_node_ranks(&mut self, node: Id<Node>) {
        if self.config.routing.policy == RoutingPolicy::JoinShortestQueue {
            for i in 0..self.nodes[node].contenders.len() {
                self.update_rank(self.nodes[node].contenders[i]);
            }
        }
    }

    /// The contenders to try for a query of `task`, best first, at most `routing.top`.
    pub(super) fn candidates(&mut self, task: u16, ctx: &mut Context<'_, NetworkEvent>) -> Vec<Id<Contender>> {
        let t = usize::from(task);
        let top = self.config.routing.top as usize;
        let n = self.by_task[t].len();
        if n == 0 {
            return Vec::new();
        }
        match self.config.routing.policy {
            RoutingPolicy::RoundRobin => {
                let start = self.round_robin[t] % n;
                self.round_robin[t] = start + 1;
                (0..top.min(n)).map(|k| self.by_task[t][(start + k) % n]).collect()
            }
            RoutingPolicy::Random => {
                let mut pool = self.by_task[t].clone();
                let rng = ctx.rng(ROUTING_STREAM);
                let k = top.min(n);
                for i in 0..k {
                    let j = rng.random_range(i..n);
                    pool.swap(i, j);
                }
                pool.truncate(k);
                pool
            }
            RoutingPolicy::LeastProcessed | RoutingPolicy::JoinShortestQueue if self.ranks.is_none() => {
                let keyed: Vec<(u64, u32)> = self.by_task[t].iter().map(|&c| self.rank_key(c).0).collect();
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
                let mut pair = vec![self.by_task[t][a]];
                if n > 1 {
                    let b = (a + 1 + rng.random_range(0..n - 1)) % n;
                    pair.push(self.by_task[t][b]);
                }
                let load = |c: Id<Contender>| {
                    let contender = &self.contenders[c];
                    (self.nodes[contender.node].in_flight.len(), contender.period.requests, c.index())
                };
                pair.sort_by_key(|&c| load(c));
                pair.truncate(top);
                pair
            }
            RoutingPolicy::DecayedScore => {
                let now = ctx.now();
                self.refresh_globs(now);
                let decay = self.glob_decay(now);
                let weight = self.decay.weight;
                let ranked: Vec<(f64, u32)> = self.by_task[t]
                    .iter()
                    .map(|&c| {
                        let contender = &self.contenders[c];
                        (scoring::rank(contender.period.requests, contender.glob * decay, weight), c.index())
                    })
                    .collect();
                smallest(ranked, top, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                    .into_iter()
                    .map(|(_, c)| Id::from_index(c))
                    .collect()
            }
            RoutingPolicy::EnergyAware => {
                let slo_s = self.config.validator.slo_s;
                let ranked: Vec<(bool, f64, u64, u32)> = self.by_task[t]
                    .iter()
                    .map(|&c| {
                        let contender = &self.contenders[c];
                        let busy_w = self.config.node_classes[usize::from(self.nodes[contender.node].class)].busy_w;
                        let meets = contender.latency_est_s <= slo_s;
                        let energy_j = busy_w * contender.latency_est_s / contender.answered_est.max(0.05);
                        let key = if meets { energy_j } else { contender.latency_est_s };
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

    /// The factor by which every cached glob has decayed since it was computed.
    pub(super) fn glob_decay(&self, now: SimTime) -> f64 {
        let age_s = (now - self.glob_at).as_secs_f64();
        (-age_s / self.decay.half_life_s).exp2()
    }

    /// Recomputes every active contender's glob at `now` if the cache is stale (a period
    /// ended, or a history row has left the window since it was computed).
    pub(super) fn refresh_globs(&mut self, now: SimTime) {
        if now < self.glob_valid_until {
            return;
        }
        let now_s = now.as_secs_f64();
        let window_s = self.decay.window_s;
        let mut valid_until_s = f64::INFINITY;
        let active: Vec<Id<Contender>> = self.by_task.iter().flatten().copied().collect();
        let mut iso = vec![0.0; self.contenders.len()];
        for &c in &active {
            let contender = &mut self.contenders[c];
            while contender.history.front().is_some_and(|row| now_s - row.at_s >= window_s) {
                contender.history.pop_front();
            }
            if let Some(row) = contender.history.front() {
                valid_until_s = valid_until_s.min(row.at_s + window_s);
            }
            iso[c.index() as usize] = scoring::iso(contender.history.make_contiguous(), now_s, &self.decay);
        }
        for &c in &active {
            let contender = &self.contenders[c];
            let own = iso[c.index() as usize];
            let sim = &self.similarity[usize::from(contender.task)];
            let others = self.nodes[contender.node]
                .contenders
                .iter()
                .filter(|&&r| r != c)
                .map(|&r| (iso[r.index() as usize], sim[usize::from(self.contenders[r].task)]));
            let glob = scoring::glob(own, others);
            self.contenders[c].glob = glob;
        }
        self.glob_at = now;
        self.glob_valid_until = if valid_until_s.is_finite() {
            // The first instant at which the oldest row no longer counts.
            SimTime::from_secs_f64(valid_until_s).map_or(SimTime::MAX, |t| t.max(now + SimDuration::from_nanos(1)))
        } else {
            SimTime::MAX
        };
    }

    /// The decayed-score rank of every active contender of `task` at `now`, computed
    /// from scratch with [`scoring`] (no cache): what the policy's cached ranks must
    /// equal.
    pub fn ranks_from_history(&self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        let now_s = now.as_secs_f64();
        let iso_of = |c: Id<Contender>| {
            let rows: Vec<HistoryRow> = self.contenders[c].history.iter().copied().collect();
            scoring::iso(&rows, now_s, &self.decay)
        };
        self.by_task[usize::from(task)]
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                let sim = &self.similarity[usize::from(task)];
                let others = self.nodes[contender.node]
                    .contenders
                    .iter()
                    .filter(|&&r| r != c && self.contenders[r].active)
                    .map(|&r| (iso_of(r), sim[usize::from(self.contenders[r].task)]));
                let glob = scoring::glob(iso_of(c), others);
                (c.index(), scoring::rank(contender.period.requests, glob, self.decay.weight))
            })
            .collect()
    }

    /// The same ranks from the cached globs, as the policy computes them.
    pub fn ranks_cached(&mut self, task: u16, now: SimTime) -> Vec<(u32, f64)> {
        self.refresh_globs(now);
        let decay = self.glob_decay(now);
        self.by_task[usize::from(task)]
            .iter()
            .map(|&c| {
                let contender = &self.contenders[c];
                (c.index(), scoring::rank(contender.period.requests, contender.glob * decay, self.decay.weight))
            })
            .collect()
    }
}
