//! What a run of the continuous engine measures: the state sampled on a time grid, and
//! the metrics of a finished run.

use infersim_engine::{Observer, SimTime};

use super::steps::step_mean;
use super::{LlmServing, Stats};
use crate::power::J_PER_KWH;
use crate::requests::RequestRecord;
use crate::serving::ServingSample;

crate::metrics! {
    /// What one replication of the continuous engine measured.
    #[derive(Clone, Debug, PartialEq)]
    pub struct ContinuousRun {
        /// Every request that arrived, warm-up included: each ends served, timed out,
        /// rejected or lost before the run ends.
        arrived: u64 = "requests",
        /// Requests that arrived after warm-up.
        requests: u64 = "requests",
        /// Of those, served.
        served: u64 = "requests",
        /// Of those, refused: over the context limit, longer than the KV cache, or sent to a full queue.
        rejected: u64 = "requests",
        /// Of those, given up waiting.
        timed_out: u64 = "requests",
        /// Of those, lost to a failure (or with no replica up).
        lost: u64 = "requests",
        /// Replica failures (a replica fails with the first of its GPUs), whole run.
        gpu_failures: u64 = "failures",
        /// Requests sent to another replica after theirs failed (each resend), whole run.
        retries: u64 = "requests",
        /// Served requests per second of the measured window (warm-up end to the last token).
        throughput_per_s: f64 = "per s",
        /// Mean time to first token (s).
        ttft_mean_s: Option<f64> = "s",
        /// Median time to first token (s).
        ttft_p50_s: Option<f64> = "s",
        /// 90th percentile of time to first token (s).
        ttft_p90_s: Option<f64> = "s",
        /// 99th percentile of time to first token (s).
        ttft_p99_s: Option<f64> = "s",
        /// Mean time per output token after the first (s).
        tpot_mean_s: Option<f64> = "s",
        /// Median time per output token (s).
        tpot_p50_s: Option<f64> = "s",
        /// 99th percentile of time per output token (s).
        tpot_p99_s: Option<f64> = "s",
        /// Median gap between consecutive tokens of a request (s).
        itl_p50_s: Option<f64> = "s",
        /// 99th percentile of the gap between consecutive tokens (s).
        itl_p99_s: Option<f64> = "s",
        /// Mean end-to-end latency, arrival to last token (s).
        e2e_mean_s: Option<f64> = "s",
        /// Median end-to-end latency (s).
        e2e_p50_s: Option<f64> = "s",
        /// 99th percentile of end-to-end latency (s).
        e2e_p99_s: Option<f64> = "s",
        /// The end-to-end latency under the name every world uses (s).
        latency_mean_s: Option<f64> = "s",
        /// Median latency (s).
        latency_p50_s: Option<f64> = "s",
        /// 95th percentile of latency (s).
        latency_p95_s: Option<f64> = "s",
        /// 99th percentile of latency (s).
        latency_p99_s: Option<f64> = "s",
        /// Share of counted requests served within their task's SLO.
        slo_attainment: Option<f64> = "share",
        /// First arrival to the last token (s).
        makespan_s: f64 = "s",
        /// Output tokens of counted requests per second of the measured window.
        output_tokens_per_s: f64 = "per s",
        /// Requests that met their TTFT and TPOT objectives, per second of the measured window.
        goodput_per_s: f64 = "per s",
        /// Sequences preempted for KV blocks, whole run.
        preemptions: u64 = "preemptions",
        /// Share of the measured requests' prompt tokens found in the KV cache when
        /// each was first scheduled (prefix caching).
        prefix_hit_rate: Option<f64> = "share",
        /// Prompt tokens the steps computed, whole run (recomputation after a
        /// preemption counts again; tokens found cached do not count).
        prefill_tokens_computed: u64 = "tokens",
        /// Share of KV blocks in use, mean over steps.
        kv_usage_mean: Option<f64> = "share",
        /// Largest share of KV blocks in use at a step.
        kv_usage_max: f64 = "share",
        /// Tokens per step, mean over steps.
        batch_tokens_mean: Option<f64> = "tokens",
        /// Sequences running, mean over steps.
        running_mean: Option<f64> = "sequences",
        /// Engine steps, all replicas.
        steps: u64 = "steps",
        /// Steps a power cap (`power_cap_w`) slowed.
        steps_throttled: u64 = "steps",
        /// Prompt KV caches sent from the prefill to the decode pool.
        kv_transfers: u64 = "transfers",
        /// Mean time of a KV transfer (s).
        kv_transfer_mean_s: Option<f64> = "s",
        /// KV cache sent between pools (GB).
        kv_transfer_gb: f64 = "GB",
        /// Steps whose time a profile had to extrapolate.
        extrapolated_lookups: u64 = "lookups",
        /// Replica-hours provisioned (serving, starting or draining), all pools.
        replica_hours: f64 = "h",
        /// Replicas provisioned on average over the run.
        replicas_mean: f64 = "replicas",
        /// Replicas started by autoscalers (each paid a cold start).
        cold_starts: u64 = "starts",
        /// Mean power of all GPUs over the run (W).
        gpu_power_mean_w: f64 = "W",
        /// GPU energy per output token (J), as ML.ENERGY reports it.
        gpu_energy_per_output_token_j: Option<f64> = "J",
        /// Facility energy (GPUs, nodes, PUE) per output token (J).
        energy_per_output_token_j: Option<f64> = "J",
        /// Facility energy, whole run (kWh).
        energy_kwh: f64 = "kWh",
        /// GPU energy (kWh).
        energy_gpu_kwh: f64 = "kWh",
        /// Node baseline energy (kWh).
        energy_baseline_kwh: f64 = "kWh",
        /// Facility overhead, (PUE - 1) x IT energy (kWh).
        energy_overhead_kwh: f64 = "kWh",
        /// Facility energy per served request (kWh).
        energy_per_request_kwh: Option<f64> = "kWh",
        /// Carbon (kg CO2e).
        carbon_kg: Option<f64> = "kg CO2e",
        /// Energy plus GPU rental (USD).
        cost_usd: Option<f64> = "USD",
        /// Events handled.
        events: u64 = "events",
    }
}

/// The energy, carbon, cost and capacity of a part of the fleet (all of it, a pool,
/// or a model's share) over a run.
#[derive(Clone, Copy, Debug)]
struct Share {
    gpu_j: f64,
    baseline_j: f64,
    carbon_kg: f64,
    rent_usd: f64,
    replica_s: f64,
    preemptions: u64,
    gpu_failures: u64,
}

/// What a part of the fleet's GPUs draw at an instant and have drawn up to it.
#[derive(Default)]
struct GpuDraw {
    power_w: f64,
    energy_j: f64,
    /// Weighted by the grid's intensity when drawn (kg; left 0 at a constant one).
    carbon_kg: f64,
}

impl<O: Observer<RequestRecord>, S: Observer<ServingSample>> LlmServing<'_, O, S> {
    pub(super) fn sample_before(&mut self, now: SimTime) {
        let Some(mut sampling) = self.sampling.take() else { return };
        let pools = self.config.pools.len();
        while let Some(t) = sampling.grid.due_before(now).next() {
            // The state at `t`: every step begun by then.
            self.materialise_all(t);
            let (last_t, last_prompt, last_output) = sampling.last;
            let dt = (t - last_t).as_secs_f64();
            let rate = |now: u64, then: u64| if dt > 0.0 { Some((now - then) as f64 / dt) } else { None };
            // The fleet's tokens are its pools'.
            let tokens = self.group_stats[..pools]
                .iter()
                .fold((0, 0), |(prompt, output), s| (prompt + s.prompt_tokens, output + s.output_tokens));
            let mut row = self.sampled(t, None);
            (row.prompt_tokens_per_s, row.generation_tokens_per_s) =
                (rate(tokens.0, last_prompt), rate(tokens.1, last_output));
            sampling.sink.observe(row);
            // Several pools: a row for each, its `part` the pool.
            for p in (0..pools).filter(|_| pools > 1) {
                let mut row = self.sampled(t, Some(p));
                let (s, (prompt, output)) = (&self.group_stats[p], sampling.last_pools[p]);
                (row.prompt_tokens_per_s, row.generation_tokens_per_s) =
                    (rate(s.prompt_tokens, prompt), rate(s.output_tokens, output));
                sampling.last_pools[p] = (s.prompt_tokens, s.output_tokens);
                sampling.sink.observe(row);
            }
            sampling.last = (t, tokens.0, tokens.1);
        }
        self.sampling = Some(sampling);
    }

    /// What the GPUs of the fleet (`pool` None) or of one pool draw at instant `t`, and
    /// have drawn up to it: the sums of their replicas' meters, in replica order.
    fn gpu_draw(&self, t: SimTime, pool: Option<usize>) -> GpuDraw {
        let grid = &self.config.grid;
        let members = self.replicas.iter().filter(|r| pool.is_none_or(|p| usize::from(r.pool) == p));
        let mut draw = GpuDraw::default();
        for r in members {
            draw.power_w += r.power_w;
            draw.energy_j += r.meter.energy_j_at(t, r.power_w);
            if grid.constant().is_none() {
                draw.carbon_kg += r.meter.carbon_kg_at(t, r.power_w, grid);
            }
        }
        draw
    }

    /// The state at instant `t` of the fleet (`pool` None) or of one pool; token rates
    /// are left to the caller.
    fn sampled(&self, t: SimTime, pool: Option<usize>) -> ServingSample {
        let config = self.config;
        let members = self.replicas.iter().filter(|r| pool.is_none_or(|p| usize::from(r.pool) == p));
        let (mut waiting, mut running, mut usage, mut count, mut busy, mut provisioned) = (0, 0, 0.0, 0, 0, 0);
        for r in members {
            (waiting, running, usage) =
                (waiting + r.engine.waiting(), running + r.engine.running(), usage + r.engine.kv().usage());
            count += 1;
            busy += if r.step.is_some() { config.pools[usize::from(r.pool)].tp } else { 0 };
            provisioned += u32::from(r.provisioned_since.is_some());
        }
        let nodes = pool.map_or(config.nodes(), |p| config.pool_nodes(p));
        let baseline_w = f64::from(nodes) * config.node_baseline_w;
        let gpu = self.gpu_draw(t, pool);
        let gpu_w = gpu.power_w;
        let it_j = gpu.energy_j + baseline_w * t.as_secs_f64();
        let energy_kwh = it_j * config.pue / J_PER_KWH;
        ServingSample {
            t_s: t.as_secs_f64(),
            queue_len: waiting as u32,
            busy_gpus: busy,
            power_kw: (gpu_w + baseline_w) * config.pue / 1000.0,
            energy_kwh,
            carbon_kg: match config.grid.constant() {
                Some(kg) => energy_kwh * kg,
                None => {
                    (gpu.carbon_kg + baseline_w * config.grid.integral(0.0, t.as_hours_f64()) / 1000.0) * config.pue
                }
            },
            running: Some(running as u32),
            kv_usage: Some(usage / f64::from(count.max(1))),
            prompt_tokens_per_s: None,
            generation_tokens_per_s: None,
            gpu_power_w: Some(gpu_w),
            replicas: Some(provisioned),
            part: pool.map(|p| p as u16),
            loss: self.retrainer.as_ref().filter(|_| pool.is_none()).map(|rt| rt.loss()),
            replicas_training: self.replicas_training(pool),
        }
    }

    /// The carbon (kg) of a part of the fleet whose GPUs drew `gpu` up to `end`, on
    /// `nodes` nodes, at facility energy `facility_j`: at a constant intensity the
    /// energy times it, else the GPUs' and the nodes' draw each weighted by the
    /// intensity when drawn.
    fn carbon_kg(&self, end: SimTime, gpu: &GpuDraw, nodes: u32, facility_j: f64) -> f64 {
        let c = self.config;
        match c.grid.constant() {
            Some(kg) => facility_j / J_PER_KWH * kg,
            None => {
                (gpu.carbon_kg
                    + f64::from(nodes) * c.node_baseline_w * c.grid.integral(0.0, end.as_hours_f64()) / 1000.0)
                    * c.pue
            }
        }
    }

    /// What a finished run that ended at `end` measured, the whole fleet.
    pub fn results(&mut self, end: SimTime, events: u64) -> ContinuousRun {
        let share = self.fleet_share(end);
        let mut fleet = self.stats.clone();
        for pool in &self.group_stats[..self.config.pools.len()] {
            fleet.add_steps(pool);
        }
        self.measured(&fleet, &share, end, events)
    }

    /// The whole fleet's energy, carbon, cost and capacity over a run that ended at `end`.
    fn fleet_share(&mut self, end: SimTime) -> Share {
        let c = self.config;
        let run_s = end.as_secs_f64();
        let gpu = self.gpu_draw(end, None);
        let gpu_j = gpu.energy_j;
        let baseline_j = f64::from(c.nodes()) * c.node_baseline_w * run_s;
        let facility_j = (gpu_j + baseline_j) * c.pue;
        let provisioned_s = self.provisioned_s(end);
        Share {
            gpu_j,
            baseline_j,
            carbon_kg: self.carbon_kg(end, &gpu, c.nodes(), facility_j),
            rent_usd: self.fleet_rent_usd(run_s, &provisioned_s),
            replica_s: provisioned_s.iter().sum(),
            preemptions: self.replicas.iter().map(|r| r.engine.preemptions).sum(),
            gpu_failures: self.life.failures(),
        }
    }

    /// What each pool and each served model measured, as ("pool" or "model", name,
    /// metrics). A pool's energy, carbon and cost are its GPUs' and nodes'; a model's
    /// are the fleet's shared out by its requests' shares of the GPU energy of the
    /// steps they ran in (idle power, node baseline and rent included), so that the
    /// models add up to the fleet.
    pub fn group_results(&mut self, end: SimTime, events: u64) -> Vec<(&'static str, String, ContinuousRun)> {
        let c = self.config;
        let run_s = end.as_secs_f64();
        let provisioned_s = self.provisioned_s(end);
        let mut groups = Vec::new();
        for (p, pool) in c.pools.iter().enumerate() {
            let gpu = self.gpu_draw(end, Some(p));
            let gpu_j = gpu.energy_j;
            let baseline_j = f64::from(c.pool_nodes(p)) * c.node_baseline_w * run_s;
            let facility_j = (gpu_j + baseline_j) * c.pue;
            let share = Share {
                gpu_j,
                baseline_j,
                carbon_kg: self.carbon_kg(end, &gpu, c.pool_nodes(p), facility_j),
                rent_usd: self.rent_usd(p, run_s, provisioned_s[p]),
                replica_s: provisioned_s[p],
                preemptions: self
                    .replicas
                    .iter()
                    .filter(|r| usize::from(r.pool) == p)
                    .map(|r| r.engine.preemptions)
                    .sum(),
                gpu_failures: self.group_stats[p].gpu_failures,
            };
            groups.push(("pool", pool.name.clone(), self.measured(&self.group_stats[p], &share, end, events)));
        }
        let fleet = self.fleet_share(end);
        let names = c.served_names();
        let models = &self.group_stats[c.pools.len()..];
        let total_j: f64 = models.iter().map(|s| s.requests_energy_j.total()).sum();
        for (name, stats) in names.iter().zip(models) {
            let fraction = if total_j > 0.0 { stats.requests_energy_j.total() / total_j } else { 0.0 };
            let serving = |p: usize| c.pools[p].serves_requests_for(name);
            let share = Share {
                gpu_j: fleet.gpu_j * fraction,
                baseline_j: fleet.baseline_j * fraction,
                carbon_kg: fleet.carbon_kg * fraction,
                rent_usd: fleet.rent_usd * fraction,
                replica_s: (0..c.pools.len()).filter(|&p| serving(p)).map(|p| provisioned_s[p]).sum(),
                preemptions: stats.requests_preemptions,
                gpu_failures: (0..c.pools.len())
                    .filter(|&p| serving(p))
                    .map(|p| self.group_stats[p].gpu_failures)
                    .sum(),
            };
            groups.push(("model", (*name).to_string(), self.measured(stats, &share, end, events)));
        }
        groups
    }

    /// GPU rental of the whole fleet over a run of `run_s`: the pools that do not
    /// autoscale counted by GPUs per price (so that a pool split in two costs what it
    /// did whole, to the bit), then the autoscaled ones.
    fn fleet_rent_usd(&self, run_s: f64, provisioned_s: &[f64]) -> f64 {
        let mut gpus_at: Vec<(f64, u64)> = Vec::new();
        let mut autoscaled = 0.0;
        for (p, pool) in self.config.pools.iter().enumerate() {
            if pool.replicas_vary() || !self.config.pool_present(p) {
                autoscaled += self.rent_usd(p, run_s, provisioned_s[p]);
                continue;
            }
            match gpus_at.iter_mut().find(|(price, _)| price.to_bits() == pool.gpu_usd_per_hour.to_bits()) {
                Some((_, gpus)) => *gpus += u64::from(pool.gpus()),
                None => gpus_at.push((pool.gpu_usd_per_hour, u64::from(pool.gpus()))),
            }
        }
        gpus_at.iter().map(|&(price, gpus)| gpus as f64 * run_s / 3600.0 * price).sum::<f64>() + autoscaled
    }

    /// GPU rental of pool `p` over a run of `run_s` (its replicas provisioned for
    /// `replica_s` replica-seconds): the whole run, unless it autoscales (or is left
    /// out: a training pool with shared jobs, never provisioned).
    fn rent_usd(&self, p: usize, run_s: f64, replica_s: f64) -> f64 {
        let pool = &self.config.pools[p];
        if !pool.replicas_vary() && self.config.pool_present(p) {
            f64::from(pool.gpus()) * run_s / 3600.0 * pool.gpu_usd_per_hour
        } else {
            replica_s * f64::from(pool.tp) / 3600.0 * pool.gpu_usd_per_hour
        }
    }

    /// The metrics of statistics `s` with the energy and costs of `share`.
    fn measured(&self, s: &Stats, share: &Share, end: SimTime, events: u64) -> ContinuousRun {
        let c = self.config;
        let run_s = end.as_secs_f64();
        let makespan_s = s.first_arrival.map(|f| (s.last_finish.max(f) - f).as_secs_f64()).unwrap_or(0.0);
        // Rates are per second of the measured window: from the end of the warm-up (or
        // the first arrival) to the last token; the whole makespan without a warm-up.
        let window_start = s.first_arrival.map_or(self.warmup, |f| f.max(self.warmup));
        let measured_s = (s.last_finish.max(window_start) - window_start).as_secs_f64();
        let Share { gpu_j, baseline_j, carbon_kg, rent_usd, replica_s, preemptions, gpu_failures } = *share;
        let it_j = gpu_j + baseline_j;
        let facility_j = it_j * c.pue;
        let cost_usd = facility_j / J_PER_KWH * c.energy_usd_per_kwh + rent_usd;
        let per = |x: f64, n: u64| if n > 0 { Some(x / n as f64) } else { None };
        let rate = |n: u64| if measured_s > 0.0 { n as f64 / measured_s } else { 0.0 };
        // Each histogram read once: reading builds its buckets into a histogram.
        let [ttft_p50, ttft_p90, ttft_p99] = s.ttft.quantiles_s([0.50, 0.90, 0.99]);
        let [tpot_p50, tpot_p99] = s.tpot.quantiles_s([0.50, 0.99]);
        let [itl_p50, itl_p99] = s.itl.quantiles_s([0.50, 0.99]);
        let [e2e_p50, e2e_p95, e2e_p99] = s.e2e.quantiles_s([0.50, 0.95, 0.99]);
        ContinuousRun {
            arrived: s.arrivals,
            requests: s.counted,
            served: s.served,
            rejected: s.rejected,
            timed_out: s.timed_out,
            lost: s.lost,
            gpu_failures,
            retries: s.retries,
            throughput_per_s: rate(s.served),
            ttft_mean_s: s.ttft_mean.mean_s(),
            ttft_p50_s: ttft_p50,
            ttft_p90_s: ttft_p90,
            ttft_p99_s: ttft_p99,
            tpot_mean_s: s.tpot_mean.mean(),
            tpot_p50_s: tpot_p50,
            tpot_p99_s: tpot_p99,
            itl_p50_s: itl_p50,
            itl_p99_s: itl_p99,
            e2e_mean_s: s.e2e_mean.mean_s(),
            e2e_p50_s: e2e_p50,
            e2e_p99_s: e2e_p99,
            latency_mean_s: s.e2e_mean.mean_s(),
            latency_p50_s: e2e_p50,
            latency_p95_s: e2e_p95,
            latency_p99_s: e2e_p99,
            slo_attainment: per(s.slo_met as f64, s.counted),
            makespan_s,
            output_tokens_per_s: rate(s.counted_output_tokens),
            goodput_per_s: rate(s.goodput),
            preemptions,
            prefix_hit_rate: per(s.admitted_cached_tokens as f64, s.admitted_prompt_tokens),
            prefill_tokens_computed: s.prompt_tokens,
            kv_usage_mean: step_mean(s.kv_usage_sum, s.steps, 2f64.powi(-64)),
            kv_usage_max: s.kv_usage_max,
            batch_tokens_mean: step_mean(u128::from(s.batch_tokens_sum), s.steps, 1.0),
            running_mean: step_mean(u128::from(s.running_sum), s.steps, 1.0),
            steps: s.steps,
            steps_throttled: s.steps_throttled,
            kv_transfers: s.kv_transfers,
            kv_transfer_mean_s: s.kv_transfer_s.mean_s(),
            kv_transfer_gb: s.kv_transfer_gb.total(),
            extrapolated_lookups: s.steps_outside_table,
            replica_hours: replica_s / 3600.0,
            replicas_mean: if run_s > 0.0 { replica_s / run_s } else { 0.0 },
            cold_starts: s.cold_starts,
            gpu_power_mean_w: if run_s > 0.0 { gpu_j / run_s } else { 0.0 },
            gpu_energy_per_output_token_j: per(gpu_j, s.output_tokens),
            energy_per_output_token_j: per(facility_j, s.output_tokens),
            energy_kwh: facility_j / J_PER_KWH,
            energy_gpu_kwh: gpu_j / J_PER_KWH,
            energy_baseline_kwh: baseline_j / J_PER_KWH,
            energy_overhead_kwh: (facility_j - it_j) / J_PER_KWH,
            energy_per_request_kwh: per(facility_j / J_PER_KWH, s.served),
            carbon_kg: Some(carbon_kg),
            cost_usd: Some(cost_usd),
            events,
        }
    }
}
