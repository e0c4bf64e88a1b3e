//! What a replication of the retraining loop measured.

use super::*;

crate::metrics! {
    /// What one replication measured.
    #[derive(Clone, Debug, PartialEq)]
    pub struct RetrainingRun {
        /// Loss at the last tick.
        final_loss: f64 = "loss",
        /// Lowest loss a tick saw.
        min_loss: f64 = "loss",
        /// Highest loss a tick saw.
        max_loss: f64 = "loss",
        /// Mean of the loss over ticks.
        mean_loss: f64 = "loss",
        /// Mean quality over ticks.
        quality_mean: Option<f64> = "share",
        /// Mean user score (1..5) over the run, under the ICS signal.
        ics_mean: Option<f64> = "score 1-5",
        /// Retraining starts (jobs; under `vensim`, entries into the above-band state).
        retrain_starts: u64 = "jobs",
        /// Jobs that finished (under `vensim`, steps in which the loss function applied).
        retrain_completed: u64 = "jobs",
        /// Jobs lost to a GPU failure.
        retrain_failed: u64 = "jobs",
        /// Jobs preempted for serving.
        retrain_preempted: u64 = "jobs",
        /// Ticks with the loss above the upper bound, times the tick interval (h).
        hours_above_upper: f64 = "h",
        /// Total drift added per hour of the run.
        drift_per_h: f64 = "per h",
        /// Requests that arrived.
        requests: u64 = "requests",
        /// Requests served.
        served: u64 = "requests",
        /// Requests lost to GPU failures.
        lost: u64 = "requests",
        /// GPU failures.
        gpu_failures: u64 = "failures",
        /// Mean latency of served requests (s).
        latency_mean_s: Option<f64> = "s",
        /// 99th percentile latency (s).
        latency_p99_s: Option<f64> = "s",
        /// Total energy (kWh).
        energy_kwh: f64 = "kWh",
        /// Of which serving requests.
        energy_serving_kwh: f64 = "kWh",
        /// Of which drawn whatever the load.
        energy_idle_kwh: f64 = "kWh",
        /// Of which retraining.
        energy_training_kwh: f64 = "kWh",
        /// Carbon (kg CO2e).
        carbon_kg: Option<f64> = "kg CO2e",
        /// Energy and GPU-hours at their prices (USD).
        cost_usd: Option<f64> = "USD",
        /// Whether the loss ran away and the replication stopped early.
        diverged: bool = "flag",
        /// When it did (h).
        diverged_at_h: Option<f64> = "h",
        /// Hours simulated (less than the duration when diverged).
        simulated_h: f64 = "h",
        /// Events handled.
        events: u64 = "events",
    }
}

impl<O: Observer<RetrainingRequest>, S: Observer<RetrainingSample>> Retraining<O, S> {
    /// What the replication measured, up to `end`.
    pub fn results(&mut self, end: SimTime, events: u64) -> RetrainingRun {
        self.advance_flows(end);
        let s = &self.stats;
        let simulated_h = hours(end);
        let energy_kwh = self.energy_kwh();
        let gpu_hours = f64::from(self.config.total_gpus()) * simulated_h;
        RetrainingRun {
            final_loss: s.last_tick_loss.unwrap_or(self.config.drift.initial_loss),
            min_loss: s.tick_loss.min().unwrap_or(self.loss),
            max_loss: s.tick_loss.max().unwrap_or(self.loss),
            mean_loss: s.tick_loss.mean().unwrap_or(self.loss),
            quality_mean: Some(s.tick_quality.mean().unwrap_or_else(|| self.config.quality.at(self.loss))),
            ics_mean: s.scores.mean(),
            retrain_starts: s.retrain_starts,
            retrain_completed: s.retrain_completed,
            retrain_failed: s.retrain_failed,
            retrain_preempted: s.retrain_preempted,
            hours_above_upper: s.hours_above_upper,
            drift_per_h: if simulated_h > 0.0 { s.drift_total / simulated_h } else { 0.0 },
            requests: s.requests,
            served: s.served,
            lost: s.lost,
            gpu_failures: self.life.as_ref().map_or(0, Lifecycle::failures),
            latency_mean_s: s.latency_s.mean(),
            latency_p99_s: s.latency.p99_s(),
            energy_kwh,
            energy_serving_kwh: s.energy_serving_kwh,
            energy_idle_kwh: s.energy_idle_kwh,
            energy_training_kwh: s.energy_training_kwh,
            carbon_kg: Some(s.carbon_kg),
            cost_usd: Some(
                energy_kwh * self.config.prices.energy_usd_per_kwh + gpu_hours * self.config.prices.gpu_usd_per_hour,
            ),
            diverged: s.diverged_at.is_some(),
            diverged_at_h: s.diverged_at.map(hours),
            simulated_h,
            events,
        }
    }
}
