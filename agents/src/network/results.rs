//! What a replication of the network measured: its metrics, and the validator's
//! scoring period that closes each hour.

use super::*;

crate::metrics! {
    /// Per-replication results.
    #[derive(Clone, Debug, PartialEq)]
    pub struct NetworkRun {
        /// Organic queries finished (answered or given up).
        organic_queries: u64 = "queries",
        /// Of which answered.
        answered: u64 = "queries",
        /// answered / organic_queries.
        answer_rate: Option<f64> = "share",
        /// Mean true quality of the answers to organic queries.
        quality_mean: Option<f64> = "share",
        /// Latency of answered organic queries, retries included.
        latency_mean_s: Option<f64> = "s",
        /// Median of the same.
        latency_p50_s: Option<f64> = "s",
        /// 99th percentile of the same.
        latency_p99_s: Option<f64> = "s",
        /// Organic queries answered within the SLO, over all organic queries.
        slo_attainment: Option<f64> = "share",
        /// Synthetic queries finished.
        synthetic_queries: u64 = "queries",
        /// Requests made to contenders (every attempt of every query).
        requests: u64 = "requests",
        /// Requests per finished query.
        attempts_per_query: Option<f64> = "attempts",
        /// Share of requests answered 429.
        rate_429: Option<f64> = "share",
        /// Share of requests answered 500.
        rate_500: Option<f64> = "share",
        /// Share of requests sent to nodes of `good` classes.
        share_good: Option<f64> = "share",
        /// ... of `poor` classes.
        share_poor: Option<f64> = "share",
        /// ... of `flaky` classes.
        share_flaky: Option<f64> = "share",
        /// Hours from the start of the first task that begins after time 0 until the end
        /// of the first period in which at least `validator.concentration` of its requests
        /// went to good nodes; none if that never happened (or no task starts late).
        cold_start_h: Option<f64> = "h",
        /// Energy of the nodes: idle power while present plus busy slots (kWh).
        energy_kwh: f64 = "kWh",
        /// energy_kwh per answered query (organic and synthetic).
        energy_per_query_kwh: Option<f64> = "kWh",
        /// Carbon of that energy, with the grid's intensity when it was drawn (kg CO2e);
        /// `None` without a `[grid]`.
        carbon_kg: Option<f64> = "kg CO2e",
        /// Energy at its price (USD); `None` without `[prices]`.
        cost_usd: Option<f64> = "USD",
        /// Nodes that joined after time 0.
        nodes_joined: u64 = "nodes",
        /// Nodes that left.
        nodes_left: u64 = "nodes",
        /// Node failures.
        node_failures: u64 = "failures",
        /// Scoring periods completed.
        periods: u64 = "periods",
        /// Simulated time (h).
        simulated_h: f64 = "h",
        /// Events handled.
        events: u64 = "events",
    }
}

impl<O: Observer<NetworkQuery>, S: Observer<NetworkPeriod>> Network<O, S> {
    /// Scores every queried contender, writes its history row, restarts the counters.
    pub(super) fn on_period_end(&mut self, ctx: &mut Context<'_, NetworkEvent>) -> Result<(), ScheduleError> {
        let now = ctx.now();
        let now_s = now.as_secs_f64();
        self.stats.periods += 1;
        let rows = self.book.end_period(now);
        let active = self.book.active();
        if self.config.routing.policy == RoutingPolicy::LeastProcessed {
            for &c in &active {
                self.update_rank(c);
            }
        }
        if self.config.routing.policy == RoutingPolicy::DecayedScore || self.periods.is_some() {
            self.book.refresh_globs(now);
        }
        if let Some(periods) = &mut self.periods {
            for row in rows {
                let (contender, counts) = (&self.book[row.contender], row.counts);
                periods.observe(NetworkPeriod {
                    t_h: now_s / S_PER_H,
                    node: contender.node,
                    class: self.nodes[Id::from_index(contender.node)].class,
                    task: contender.task,
                    requests: counts.requests,
                    rate_limited: counts.rate_limited,
                    failed: counts.failed,
                    consumed: counts.consumed,
                    capacity: counts.capacity,
                    period_score: row.period_score,
                    observed_quality: row.observed_quality,
                    score: row.score,
                    glob: contender.glob(),
                });
            }
        }
        // Cold start of the late task: the first period with enough of it on good nodes.
        if let Some(task) = self.late_task {
            let start_s = self.config.tasks[usize::from(task)].start_h * S_PER_H;
            let (n, good) = (self.stats.late_requests, self.stats.late_good);
            if self.stats.cold_start_h.is_none()
                && now_s > start_s
                && n > 0
                && good as f64 >= self.config.validator.concentration * n as f64
            {
                self.stats.cold_start_h = Some((now_s - start_s) / S_PER_H);
            }
            self.stats.late_requests = 0;
            self.stats.late_good = 0;
        }
        if now + self.period <= self.horizon {
            ctx.schedule(self.period, NetworkEvent::PeriodEnd)?;
        }
        Ok(())
    }

    /// The per-replication metrics at `end`.
    pub fn results(&self, end: SimTime, events: u64) -> NetworkRun {
        let s = &self.stats;
        let [latency_p50_s, latency_p99_s] = s.latency.quantiles_s([0.50, 0.99]);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        // Every node draws its idle power from joining to leaving (or the end).
        let grid = self.config.grid.as_ref().unwrap_or(&crate::grid::CarbonIntensity::NONE);
        let mut meter = s.busy;
        for (_, n) in self.nodes.iter() {
            let until = n.left.unwrap_or(end).min(end);
            meter.add(n.joined, until, self.config.node_classes[usize::from(n.class)].idle_w, grid);
        }
        let energy_kwh = meter.energy_kwh_at(meter.since(), 0.0);
        let carbon_kg = self.config.grid.as_ref().map(|_| meter.carbon_kg_at(meter.since(), 0.0, grid));
        let finished = s.organic + s.synthetic;
        NetworkRun {
            organic_queries: s.organic,
            answered: s.answered,
            answer_rate: ratio(s.answered, s.organic),
            quality_mean: s.quality.mean(),
            latency_mean_s: s.latency.mean_s(),
            latency_p50_s,
            latency_p99_s,
            slo_attainment: ratio(s.slo_met, s.organic),
            synthetic_queries: s.synthetic,
            requests: s.requests,
            attempts_per_query: ratio(s.requests, finished),
            rate_429: ratio(s.rate_limited, s.requests),
            rate_500: ratio(s.failed, s.requests),
            share_good: ratio(s.by_category[Category::Good.index()], s.requests),
            share_poor: ratio(s.by_category[Category::Poor.index()], s.requests),
            share_flaky: ratio(s.by_category[Category::Flaky.index()], s.requests),
            cold_start_h: s.cold_start_h,
            energy_kwh,
            carbon_kg,
            cost_usd: self.config.energy_usd_per_kwh.map(|price| energy_kwh * price),
            energy_per_query_kwh: (s.answered_all > 0).then(|| energy_kwh / s.answered_all as f64),
            nodes_joined: s.nodes_joined,
            nodes_left: s.nodes_left,
            node_failures: self.life.failures(),
            periods: s.periods,
            simulated_h: end.as_secs_f64() / S_PER_H,
            events,
        }
    }
}
