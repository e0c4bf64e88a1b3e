//! What a replication of the static engine measured.

use infersim_engine::{Observer, SimTime};

use super::BatchedServing;
use crate::failures::Lifecycle;
use crate::power::J_PER_KWH;
use crate::requests::RequestRecord;
use crate::serving::ServingSample;

crate::metrics! {
    /// What one replication measured.
    #[derive(Clone, Debug, PartialEq)]
    pub struct BatchedRun {
        /// Requests that arrived after warm-up.
        requests: u64 = "requests",
        /// Of those, served.
        served: u64 = "requests",
        /// Of those, refused over the context limit.
        rejected: u64 = "requests",
        /// Of those, given up waiting.
        timed_out: u64 = "requests",
        /// Of those, lost when their GPU failed.
        lost: u64 = "requests",
        /// GPU failures, whole run.
        gpu_failures: u64 = "failures",
        /// Of those, shortened to fit the context limit (and then served or timed out).
        truncated: u64 = "requests",
        /// Served requests per second of the measured window: from the end of the warm-up
        /// (or the first arrival, if later) to the last request served.
        throughput_per_s: f64 = "per s",
        /// Mean latency (arrival to finish) (s).
        latency_mean_s: Option<f64> = "s",
        /// Median latency (s).
        latency_p50_s: Option<f64> = "s",
        /// 95th percentile (s).
        latency_p95_s: Option<f64> = "s",
        /// 99th percentile (s).
        latency_p99_s: Option<f64> = "s",
        /// Fraction of counted requests served within their SLO (a rejected or timed-out
        /// request misses it).
        slo_attainment: Option<f64> = "share",
        /// Mean quality of counted served requests, given the history they kept.
        quality_mean: Option<f64> = "share",
        /// Mean requests per batch (all batches).
        batch_size_mean: Option<f64> = "requests",
        /// Batches whose time a profile had to extrapolate, whole run.
        extrapolated_lookups: u64 = "lookups",
        /// Busy GPU time over available GPU time, whole run.
        gpu_utilisation: f64 = "share",
        /// Facility energy, whole run (kWh).
        energy_kwh: f64 = "kWh",
        /// GPU energy while serving (kWh).
        energy_gpu_busy_kwh: f64 = "kWh",
        /// GPU energy while idle (kWh).
        energy_gpu_idle_kwh: f64 = "kWh",
        /// Node baseline energy (kWh).
        energy_baseline_kwh: f64 = "kWh",
        /// Facility overhead, (PUE - 1) x IT energy (kWh).
        energy_overhead_kwh: f64 = "kWh",
        /// Energy per served request, whole run (kWh).
        energy_per_request_kwh: Option<f64> = "kWh",
        /// Carbon (kg CO2e).
        carbon_kg: Option<f64> = "kg CO2e",
        /// Energy plus GPU rental (USD).
        cost_usd: Option<f64> = "USD",
        /// Events handled.
        events: u64 = "events",
    }
    also {
        /// Length of the run, arrivals plus drain (s).
        run_s: f64,
    }
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> BatchedServing<O, S> {
    /// The measures of a finished run that ended at `end` after `events` events.
    pub fn results(&self, end: SimTime, events: u64) -> BatchedRun {
        let c = &self.config;
        let s = &self.stats;
        let run_s = end.as_secs_f64();
        let gpu_s = f64::from(c.gpus()) * run_s;
        let busy_s: f64 = self.gpus.iter().map(|(_, g)| g.busy_s).sum();
        let down_s = self.life.as_ref().map_or(0.0, |l| l.down_s(end));
        let energy_gpu_busy_kwh = c.gpu_max_w * busy_s / J_PER_KWH;
        let energy_gpu_idle_kwh = c.gpu_idle_w * (gpu_s - busy_s - down_s) / J_PER_KWH;
        let energy_baseline_kwh = c.node_baseline_w * f64::from(c.nodes) * run_s / J_PER_KWH;
        let it_kwh = energy_gpu_busy_kwh + energy_gpu_idle_kwh + energy_baseline_kwh;
        let energy_overhead_kwh = it_kwh * (c.pue - 1.0);
        let energy_kwh = it_kwh + energy_overhead_kwh;
        let served_all = s.served_all as f64;
        let window_start = s.first_arrival.map_or(self.warmup, |f| f.max(self.warmup));
        let window_s = (s.last_finish.max(window_start) - window_start).as_secs_f64();
        let [latency_p50_s, latency_p95_s, latency_p99_s] = s.latency.quantiles_s([0.50, 0.95, 0.99]);
        BatchedRun {
            requests: s.counted,
            served: s.served,
            rejected: s.rejected,
            timed_out: s.timed_out,
            lost: s.lost,
            gpu_failures: self.life.as_ref().map_or(0, Lifecycle::failures),
            truncated: s.truncated,
            throughput_per_s: if window_s > 0.0 { s.served as f64 / window_s } else { 0.0 },
            latency_mean_s: s.latency_s.mean_s(),
            latency_p50_s,
            latency_p95_s,
            latency_p99_s,
            slo_attainment: (s.counted > 0).then(|| s.slo_met as f64 / s.counted as f64),
            quality_mean: s.quality.mean(),
            batch_size_mean: (s.batches > 0).then(|| s.batched_requests as f64 / s.batches as f64),
            extrapolated_lookups: s.extrapolated_lookups,
            gpu_utilisation: if gpu_s > 0.0 { busy_s / gpu_s } else { 0.0 },
            energy_kwh,
            energy_gpu_busy_kwh,
            energy_gpu_idle_kwh,
            energy_baseline_kwh,
            energy_overhead_kwh,
            energy_per_request_kwh: (served_all > 0.0).then(|| energy_kwh / served_all),
            carbon_kg: Some(match c.grid.constant() {
                Some(kg_per_kwh) => energy_kwh * kg_per_kwh,
                None => self.it.carbon_kg_at(end, self.it_power_w(self.busy_gpus, self.down_gpus), &c.grid) * c.pue,
            }),
            cost_usd: Some(energy_kwh * c.energy_usd_per_kwh + gpu_s / 3600.0 * c.gpu_usd_per_hour),
            run_s,
            events,
        }
    }
}
