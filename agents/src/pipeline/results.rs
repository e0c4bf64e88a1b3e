//! What a replication of the pipeline measured.

use super::*;

crate::metrics! {
    /// Per-replication results.
    #[derive(Clone, Debug, PartialEq)]
    pub struct PipelineRun {
        /// Inputs finished.
        requests: u64 = "requests",
        /// Energy of all replicas (kWh).
        energy_kwh: f64 = "kWh",
        /// energy_kwh per finished input.
        energy_per_request_kwh: Option<f64> = "kWh",
        /// Carbon of that energy, with the grid's intensity when it was drawn (kg CO2e);
        /// `None` without a `[grid]`.
        carbon_kg: Option<f64> = "kg CO2e",
        /// Replica failures.
        replica_failures: u64 = "failures",
        /// Inputs lost with the batch of a failing replica.
        lost: u64 = "requests",
        /// Mean normalised accuracy of finished inputs, summed over stages (0..stages).
        accuracy_mean: Option<f64> = "accuracy",
        /// Latency quantiles (s).
        latency_p50_s: Option<f64> = "s",
        /// 99th percentile.
        latency_p99_s: Option<f64> = "s",
        /// Share of finished inputs within the SLA.
        slo_attainment: Option<f64> = "share",
        /// Core-hours and energy (USD).
        cost_usd: Option<f64> = "USD",
        /// cost per 1000 finished inputs (USD).
        cost_per_1k_usd: Option<f64> = "USD",
        /// Quality (accuracy_mean / stages) per USD per 1000 inputs.
        efficiency: Option<f64> = "accuracy per USD per 1000 inputs",
        /// 1: high quality, low cost; 2: high quality, high cost; 3: low quality, high
        /// cost; 4: low quality, low cost (thresholds in `[efficiency]`).
        quadrant: Option<f64> = "quadrant 1-4",
        /// Mean user score (1..5).
        ics_mean: Option<f64> = "score 1-5",
        /// Plans put into effect after the first.
        reconfigurations: u64 = "plans",
        /// Intervals in which no plan met the SLA and the load.
        infeasible_intervals: u64 = "intervals",
        /// Time-average cores in use.
        cores_mean: f64 = "cores",
        /// Simulated time (h).
        simulated_h: f64 = "h",
        /// Events handled.
        events: u64 = "events",
    }
}

impl<O: Observer<PipelineRequest>, S: Observer<PipelineSample>> Pipeline<O, S> {
    pub(super) fn energy_kwh(&self, now: SimTime) -> f64 {
        let idle_w = f64::from(self.alive_replicas()) * self.config.resources.idle_w;
        self.stats.meter.energy_kwh_at(now, idle_w)
    }

    /// The per-replication metrics at `end`.
    pub fn results(&self, end: SimTime, events: u64) -> PipelineRun {
        let s = &self.stats;
        let [latency_p50_s, latency_p99_s] = s.latency.quantiles_s([0.50, 0.99]);
        let alive = f64::from(self.alive_replicas());
        let replica_s = s.replica_s + alive * (end - s.replicas_since).as_secs_f64();
        let energy_kwh = self.energy_kwh(end);
        let r = &self.config.resources;
        let carbon_kg = self.config.grid.as_ref().map(|grid| s.meter.carbon_kg_at(end, alive * r.idle_w, grid));
        let cost_usd = replica_s / 3600.0 * r.cores_per_replica * r.usd_per_core_h + energy_kwh * r.usd_per_kwh;
        let per = |x: f64| (s.requests > 0).then(|| x / s.requests as f64);
        let accuracy_mean = s.accuracy.mean();
        let cost_per_1k_usd = per(cost_usd).map(|c| c * 1000.0);
        let quality = accuracy_mean.map(|a| a / self.stages.len() as f64);
        let (efficiency, quadrant) = match (quality, cost_per_1k_usd) {
            (Some(q), Some(c)) => (efficiency(q, c), Some(f64::from(quadrant(q, c, &self.config.efficiency)))),
            _ => (None, None),
        };
        PipelineRun {
            requests: s.requests,
            energy_kwh,
            carbon_kg,
            replica_failures: self.life.failures(),
            lost: s.lost,
            energy_per_request_kwh: per(energy_kwh),
            accuracy_mean,
            latency_p50_s,
            latency_p99_s,
            slo_attainment: per(s.slo_met as f64),
            cost_usd: Some(cost_usd),
            cost_per_1k_usd,
            efficiency,
            quadrant,
            ics_mean: s.scores.mean(),
            reconfigurations: s.reconfigurations,
            infeasible_intervals: s.infeasible,
            cores_mean: replica_s * r.cores_per_replica / end.as_secs_f64().max(1e-9),
            simulated_h: end.as_secs_f64() / 3600.0,
            events,
        }
    }
}
