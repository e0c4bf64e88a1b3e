//! What a run of the continuous engine measures: the state sampled on a time grid, and
//! the metrics of a finished run.

use infersim_engine::{Observer, SimTime};

use super::LlmServing;
use crate::power::J_PER_KWH;
use crate::requests::RequestRecord;
use crate::serving::ServingSample;
use crate::world::Metrics;

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    pub(super) fn sample_before(&mut self, now: SimTime) {
        let Some(sampling) = self.sampling.as_mut() else { return };
        let config = self.config;
        for t in sampling.grid.due_before(now) {
            let (waiting, running, usage): (usize, usize, f64) =
                self.replicas.iter().fold((0, 0, 0.0), |(w, r, u), s| {
                    (w + s.engine.waiting(), r + s.engine.running(), u + s.engine.kv().usage())
                });
            let busy = self.replicas.iter().filter(|s| s.step.is_some()).count() as u32;
            let baseline_w = f64::from(config.nodes) * config.node_baseline_w;
            let it_j = self.gpu_meter.energy_j_at(t, self.gpu_power_w) + baseline_w * t.as_secs_f64();
            let energy_kwh = it_j * config.pue / J_PER_KWH;
            let (last_t, last_prompt, last_output) = sampling.last;
            let dt = (t - last_t).as_secs_f64();
            let rate = |now: u64, then: u64| if dt > 0.0 { Some((now - then) as f64 / dt) } else { None };
            sampling.sink.observe(ServingSample {
                t_s: t.as_secs_f64(),
                queue_len: waiting as u32,
                busy_gpus: busy * config.tp,
                power_kw: (self.gpu_power_w + baseline_w) * config.pue / 1000.0,
                energy_kwh,
                carbon_kg: match config.grid.constant() {
                    Some(kg) => energy_kwh * kg,
                    None => {
                        (self.gpu_meter.carbon_kg_at(t, self.gpu_power_w, &config.grid)
                            + baseline_w * config.grid.integral(0.0, t.as_hours_f64()) / 1000.0)
                            * config.pue
                    }
                },
                running: Some(running as u32),
                kv_usage: Some(usage / self.replicas.len() as f64),
                prompt_tokens_per_s: rate(self.stats.prompt_tokens, last_prompt),
                generation_tokens_per_s: rate(self.stats.output_tokens, last_output),
                gpu_power_w: Some(self.gpu_power_w),
            });
            sampling.last = (t, self.stats.prompt_tokens, self.stats.output_tokens);
        }
    }

    /// The metrics of a finished run that ended at `end`.
    pub fn metrics(&mut self, end: SimTime, events: u64) -> Metrics {
        let c = self.config;
        self.gpu_meter.hold(end, self.gpu_power_w, &c.grid);
        let s = &self.stats;
        let run_s = end.as_secs_f64();
        let makespan_s = s.first_arrival.map(|f| (s.last_finish.max(f) - f).as_secs_f64()).unwrap_or(0.0);
        // Rates are per second of the measured window: from the end of the warm-up (or
        // the first arrival) to the last token; the whole makespan without a warm-up.
        let window_start = s.first_arrival.map_or(self.warmup, |f| f.max(self.warmup));
        let measured_s = (s.last_finish.max(window_start) - window_start).as_secs_f64();
        let gpus = f64::from(c.replicas() * c.tp);
        let gpu_j = self.gpu_meter.energy_j_at(end, self.gpu_power_w);
        let baseline_j = f64::from(c.nodes) * c.node_baseline_w * run_s;
        let it_j = gpu_j + baseline_j;
        let facility_j = it_j * c.pue;
        let carbon_kg = match c.grid.constant() {
            Some(kg) => facility_j / J_PER_KWH * kg,
            None => {
                (self.gpu_meter.carbon_kg_at(end, self.gpu_power_w, &c.grid)
                    + f64::from(c.nodes) * c.node_baseline_w * c.grid.integral(0.0, end.as_hours_f64()) / 1000.0)
                    * c.pue
            }
        };
        let cost_usd = facility_j / J_PER_KWH * c.energy_usd_per_kwh + gpus * run_s / 3600.0 * c.gpu_usd_per_hour;
        let per = |x: f64, n: u64| if n > 0 { Some(x / n as f64) } else { None };
        let rate = |n: u64| if measured_s > 0.0 { n as f64 / measured_s } else { 0.0 };
        // Each histogram read once: reading builds its buckets into a histogram.
        let [ttft_p50, ttft_p90, ttft_p99] = s.ttft.quantiles_s([0.50, 0.90, 0.99]);
        let [tpot_p50, tpot_p99] = s.tpot.quantiles_s([0.50, 0.99]);
        let [itl_p50, itl_p99] = s.itl.quantiles_s([0.50, 0.99]);
        let [e2e_p50, e2e_p95, e2e_p99] = s.e2e.quantiles_s([0.50, 0.95, 0.99]);
        let mut m = Metrics::new();
        m.count("requests", s.counted)
            .count("served", s.served)
            .count("rejected", s.rejected)
            .count("timed_out", s.timed_out)
            .count("lost", s.lost)
            .count("gpu_failures", self.life.failures())
            .number("throughput_per_s", rate(s.served))
            .optional("ttft_mean_s", s.ttft_mean.mean())
            .optional("ttft_p50_s", ttft_p50)
            .optional("ttft_p90_s", ttft_p90)
            .optional("ttft_p99_s", ttft_p99)
            .optional("tpot_mean_s", s.tpot_mean.mean())
            .optional("tpot_p50_s", tpot_p50)
            .optional("tpot_p99_s", tpot_p99)
            .optional("itl_p50_s", itl_p50)
            .optional("itl_p99_s", itl_p99)
            .optional("e2e_mean_s", s.e2e_mean.mean())
            .optional("e2e_p50_s", e2e_p50)
            .optional("e2e_p99_s", e2e_p99)
            .optional("latency_mean_s", s.e2e_mean.mean())
            .optional("latency_p50_s", e2e_p50)
            .optional("latency_p95_s", e2e_p95)
            .optional("latency_p99_s", e2e_p99)
            .optional("slo_attainment", per(s.slo_met as f64, s.counted))
            .number("makespan_s", makespan_s)
            .number("output_tokens_per_s", rate(s.counted_output_tokens))
            .number("goodput_per_s", rate(s.goodput))
            .count("preemptions", self.replicas.iter().map(|r| r.engine.preemptions).sum())
            .optional("kv_usage_mean", s.kv_usage.mean())
            .number("kv_usage_max", s.kv_usage_max)
            .optional("batch_tokens_mean", s.batch_tokens.mean())
            .optional("running_mean", s.running.mean())
            .count("steps", s.steps)
            .count("kv_transfers", s.kv_transfers)
            .optional("kv_transfer_mean_s", s.kv_transfer_s.mean())
            .number("kv_transfer_gb", s.kv_transfer_bytes / 1e9)
            .count("extrapolated_lookups", s.steps_outside_table)
            .number("gpu_power_mean_w", if run_s > 0.0 { gpu_j / run_s } else { 0.0 })
            .optional("gpu_energy_per_output_token_j", per(gpu_j, s.output_tokens))
            .optional("energy_per_output_token_j", per(facility_j, s.output_tokens))
            .number("energy_kwh", facility_j / J_PER_KWH)
            .number("energy_gpu_kwh", gpu_j / J_PER_KWH)
            .number("energy_baseline_kwh", baseline_j / J_PER_KWH)
            .number("energy_overhead_kwh", (facility_j - it_j) / J_PER_KWH)
            .optional("energy_per_request_kwh", per(facility_j / J_PER_KWH, s.served))
            .number("carbon_kg", carbon_kg)
            .number("cost_usd", cost_usd)
            .count("events", events);
        m
    }
}
