//! Whole-run speed of the token-level serving engine (issue 13), release build:
//! `cargo run --release -p infersim-benches --bin llm-speed [requests]`.
//!
//! 1. The measured vLLM run's 300 requests on the RTX PRO 6000 profile.
//! 2. ShareGPT-like requests (Poisson, prompt mean 858 tokens cv 0.62, output mean 653
//!    cv 0.15: the moments of the shared ShareGPT workload) on 16 H100 replicas of
//!    Llama-3.1-8B (roofline), one million by default.
//!
//! 3. A fleet of 1,000 H100 replicas (one GPU each) at about 60% load (11,000
//!    requests/s) for `fleet_s` simulated seconds (second argument, default 30), and
//!    what a day of it would take at that speed.
//!
//! Prints simulated seconds per wall second, events per second and peak memory.

use std::time::Instant;

use infersim_agents::arrivals::{ArrivalProcess, read_requests};
use infersim_agents::error::ConfigError;
use infersim_agents::grid::CarbonIntensity;
use infersim_agents::input::{DataTable, Inputs};
use infersim_agents::llm::{BUILTIN_DATA, EngineLimits, Profile, Roofline, StepModel, catalog};
use infersim_agents::requests::{Task, TokenCount};
use infersim_agents::serving::continuous::{LlmPool, LlmRouting, LlmServingConfig, Placement, run_continuous};
use infersim_agents::world::Replication;
use infersim_engine::NullObserver;

/// The embedded reference data, read as plain comma-separated text.
struct Embedded;

impl Inputs for Embedded {
    fn table(&self, key: &str, name: &str) -> Result<DataTable, ConfigError> {
        let (_, text) = BUILTIN_DATA
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ConfigError::invalid(key, name, "embedded data"))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let rows = lines.enumerate().map(|(i, l)| (i + 2, l.split(',').collect())).collect();
        Ok(DataTable::from_text_rows(name, &header, rows))
    }
}

fn config(
    arrivals: ArrivalProcess,
    replicas: u32,
    step_model: StepModel,
    gpu: &str,
    limits: EngineLimits,
    duration_s: f64,
) -> LlmServingConfig {
    let task = Task {
        name: "sharegpt".into(),
        weight: 1.0,
        prompt_tokens: TokenCount::LogNormal { mean: 858.0, cv: 0.62 },
        output_tokens: TokenCount::LogNormal { mean: 653.0, cv: 0.15 },
        slo_s: 60.0,
        timeout_s: None,
        ttft_slo_s: None,
        tpot_slo_s: None,
        history_tokens: None,
        shared_prefix_tokens: None,
        session: None,
        model: None,
    };
    let gpu = catalog::gpu("gpu", gpu).unwrap();
    let model = catalog::model("model", "Llama-3.1-8B").unwrap();
    let pool = LlmPool {
        name: model.name.clone(),
        serves: model.name.clone(),
        role: infersim_agents::serving::continuous::PoolRole::Mixed,
        key: String::new(),
        replicas,
        nodes: 1,
        placement: Placement::PerNode(replicas),
        tp: 1,
        limits,
        max_queued_requests: infersim_agents::requests::DEFAULT_MAX_QUEUED,
        context_limit_tokens: None,
        step_overhead_s: 0.0,
        step_overhead_per_seq_s: 0.0,
        step_model,
        demand: Roofline { gpu: gpu.clone(), model: model.clone(), tp: 1 }.terms(),
        power_cap_w: None,
        gpu,
        model,
        gpu_usd_per_hour: 2.0,
        failures: None,
        retries: 1,
        autoscale: None,
        miner: None,
        accuracy: None,
        adapted: false,
    };
    LlmServingConfig {
        arrivals,
        tasks: vec![task],
        routing: LlmRouting::LeastOutstandingRequests,
        kv_overlap_score_weight: 1.0,
        routing_interval_s: 0.0,
        coalesce_steps: true,
        pools: vec![pool],
        node_baseline_w: 300.0,
        pue: 1.2,
        grid: CarbonIntensity::Constant { kg_per_kwh: 0.394 },
        energy_usd_per_kwh: 0.12,
        duration_s,
        warmup_s: 0.0,
        measured: None,
        disaggregation: None,
        retraining: None,
        validator: None,
        adaptation: None,
    }
}

/// Peak resident memory of this process so far, in MB (Linux; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|v| v.parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `c` once and prints its speed; returns simulated seconds per wall second.
fn time(name: &str, c: &LlmServingConfig) -> f64 {
    let start = Instant::now();
    let m = run_continuous::<NullObserver, NullObserver>(c, &Replication::new(42, 0), &mut NullObserver, None).unwrap();
    let wall_s = start.elapsed().as_secs_f64();
    let get = |n: &str| match m.get(n) {
        Some(infersim_agents::world::MetricValue::Number(Some(x))) => x,
        other => panic!("{n}: {other:?}"),
    };
    let (events, sim_s) = (get("events"), get("makespan_s"));
    println!(
        "{name}: {:.0} requests, {:.0} steps, {:.0} simulated s in {wall_s:.2} s wall: {:.1} simulated s per wall s, \
         {:.2} M events/s, peak RSS {:.0} MB",
        get("served"),
        get("steps"),
        sim_s,
        sim_s / wall_s,
        events / wall_s / 1e6,
        peak_rss_mb()
    );
    sim_s / wall_s
}

fn main() {
    let requests: u64 = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().expect("a number of requests"));
    let fleet_s: f64 = std::env::args().nth(2).map_or(30.0, |a| a.parse().expect("simulated seconds of the fleet"));
    let model = catalog::model("model", "Llama-3.1-8B").unwrap();
    let pro = catalog::gpu("gpu", "RTXPRO6000").unwrap();
    let dir = "llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1";
    let profile = Profile::load("dir", dir, &Embedded, &model, 1, (pro.link_gb_per_s, pro.link_latency_us)).unwrap();
    let trace = Embedded.table("path", "llm-serving/workloads/sharegpt-llama-3.1-8b-300-sps10.csv").unwrap();
    let replay = ArrivalProcess::Replay {
        path: String::new(),
        requests: read_requests(&trace, &["sharegpt"]).unwrap().into(),
        hash_block_tokens: None,
        chains: Vec::new().into(),
        models: Default::default(),
    };
    let limits = |seqs, blocks| EngineLimits {
        max_num_seqs: seqs,
        max_num_batched_tokens: 2048,
        block_size: 16,
        num_gpu_blocks: blocks,
        prefix_caching: true,
    };
    let blocks = pro.kv_blocks(&model, 1, 0.9, (2048, 128), 16);
    time(
        "replay, 300 requests, RTX PRO 6000 profile",
        &config(replay, 1, StepModel::Profile(Box::new(profile)), "RTXPRO6000", limits(128, blocks), 120.0),
    );
    // 16 replicas at about 60% of their capacity (about 11 requests/s each).
    let rate_per_s = 16.0 * 11.0;
    let duration_s = requests as f64 / rate_per_s;
    let h100 = catalog::gpu("gpu", "H100").unwrap();
    let roofline = StepModel::Roofline(Roofline { gpu: h100.clone(), model: model.clone(), tp: 1 });
    let blocks = h100.kv_blocks(&model, 1, 0.9, (8192, 256), 16);
    let mut big = limits(256, blocks);
    big.max_num_batched_tokens = 8192;
    time(
        &format!("{requests} ShareGPT-like requests, 16 H100 replicas, roofline"),
        &config(ArrivalProcess::Poisson { rate_per_s }, 16, roofline.clone(), "H100", big, duration_s),
    );
    let speed = time(
        &format!("fleet: 1,000 H100 replicas, 11,000 requests/s, {fleet_s} s"),
        &config(ArrivalProcess::Poisson { rate_per_s: 1000.0 * 11.0 }, 1000, roofline, "H100", big, fleet_s),
    );
    println!("  a day of that fleet at this speed: {:.1} h wall", 86_400.0 / speed / 3600.0);
}
