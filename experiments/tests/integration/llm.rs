//! Token-level LLM serving against measurements and theory: the measured vLLM run
//! replayed, ML.ENERGY's closed-loop H100 points, Pollaczek-Khinchine for a replica
//! that serves one single-step request at a time, and the bandwidth bound of every
//! shipped step-time model.

use std::path::Path;

use infersim::output::{MetricCell, ReplicationRecord};
use infersim::runner::{TraceSpec, run_replication};
use infersim::scenario::Scenario;
use infersim_agents::llm::{Profile, Roofline, StepShape, StepTime, catalog};
use infersim_engine::stats::{ConfidenceInterval, Tally};

fn metric(record: &ReplicationRecord, name: &str) -> f64 {
    assert!(record.error.is_none(), "{:?}", record.error);
    match record.metrics.iter().find(|(n, _)| n == name) {
        Some((_, MetricCell::Number(Some(x)))) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

fn run(s: &Scenario, point: usize, replication: u64) -> ReplicationRecord {
    run_replication(&s.point(point as u32).unwrap(), s.seed, replication, &TraceSpec::none())
}

/// The measured run, replayed with the engine configured as it was: infersim's
/// numbers against vLLM's, within 5% for TPOT mean, E2E mean and makespan and 10% for
/// TTFT mean (nothing in the scenario was fitted to this run).
#[test]
fn the_measured_vllm_run_is_reproduced() {
    let s = Scenario::builtin("vllm-replay").unwrap();
    let record = run(&s, 0, 0);
    let (_, measured) = s.first_point().model.reference().expect("the scenario names the measured run");
    let real = |name: &str| measured.iter().find(|(n, _)| n == name).unwrap().1;
    // The measured summary as the run's README states it.
    assert!((real("ttft_mean_s") - 7.10).abs() < 0.01 && (real("tpot_mean_s") - 0.03246).abs() < 1e-4);
    assert!((real("e2e_mean_s") - 28.20).abs() < 0.01 && (real("makespan_s") - 65.9).abs() < 0.05);
    for (name, tolerance) in [("tpot_mean_s", 0.05), ("e2e_mean_s", 0.05), ("makespan_s", 0.05), ("ttft_mean_s", 0.10)]
    {
        let (sim, real) = (metric(&record, name), real(name));
        let error = (sim - real) / real;
        assert!(error.abs() <= tolerance, "{name}: simulated {sim}, measured {real}: {:+.1}%", error * 100.0);
    }
    assert_eq!(metric(&record, "served"), 300.0);
}

/// ML.ENERGY v3, Llama-3.1-8B on one H100 (vLLM 0.11.1): median ITL and GPU energy per
/// output token at each max_num_seqs, within 25%, from the closed-loop scenario at a
/// steady state (a long run, so that the start and the drain are a small share).
#[test]
fn ml_energy_h100_points_are_reproduced() {
    // (max_num_seqs, median ITL s, GPU J per output token) from data/llm-serving/energy/.
    let measured = [
        (8, 0.00732, 0.4548),
        (16, 0.00791, 0.2627),
        (32, 0.00891, 0.1651),
        (64, 0.0115, 0.1186),
        (96, 0.01408, 0.1029),
        (128, 0.01648, 0.0951),
        (192, 0.02091, 0.0837),
        (256, 0.02613, 0.0766),
        (384, 0.0377, 0.0742),
        (512, 0.04741, 0.0702),
        (768, 0.06293, 0.0713),
    ];
    let mut failures = Vec::new();
    for (seqs, itl_s, joules) in measured {
        let mut s = Scenario::builtin("closed-loop-h100").unwrap();
        s.apply_overrides(&[
            format!("serving.engine.max_num_seqs={seqs}"),
            "serving.arrivals.requests=1000000000".into(),
            "simulation.duration_s=1200".into(),
        ])
        .unwrap();
        let record = run(&s, 0, 0);
        for (name, sim, real) in [
            ("itl_p50_s", metric(&record, "itl_p50_s"), itl_s),
            ("gpu_energy_per_output_token_j", metric(&record, "gpu_energy_per_output_token_j"), joules),
        ] {
            let error = (sim - real) / real;
            if error.abs() > 0.25 {
                failures.push(format!("max_num_seqs {seqs}: {name} {sim:.5} vs {real} ({:+.0}%)", error * 100.0));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// One sequence at a time, one step per request, a constant step time: the replica is
/// an M/D/1 queue, and the mean wait (TTFT minus the step) matches Pollaczek-Khinchine
/// within a 99% interval over 40 replications.
#[test]
fn a_single_sequence_replica_is_an_md1_queue() {
    let text = r#"
description = "M/D/1 as a replica"
world = "serving"
[serving]
nodes = 1
routing = "round_robin"
model = "Llama-3.1-8B"
gpu = "H100"
[serving.engine]
max_num_seqs = 1
num_gpu_blocks = 100
[serving.step_time]
kind = "affine"
base_s = 1.0
[serving.arrivals]
kind = "poisson"
rate_per_s = 0.7
[[serving.tasks]]
name = "one"
weight = 1.0
slo_s = 100.0
prompt_tokens = { kind = "fixed", tokens = 1 }
output_tokens = { kind = "fixed", tokens = 1 }
[serving.power]
node_baseline_w = 0.0
pue = 1.0
[serving.grid]
kind = "constant"
kg_per_kwh = 0.0
[serving.prices]
energy_usd_per_kwh = 0.0
gpu_usd_per_hour = 0.0
[simulation]
duration_s = 4000.0
warmup_s = 400.0
replications = 40
seed = 7
"#;
    let s = Scenario::parse("md1.toml", text).unwrap();
    let exact = infersim_agents::station::theory::md1(0.7, 1.0).unwrap().wait_s;
    let waits: Vec<f64> = (0..40).map(|r| metric(&run(&s, 0, r), "ttft_mean_s") - 1.0).collect();
    let ci = ConfidenceInterval::from_samples(&waits, 0.99).unwrap();
    assert!(ci.contains(exact), "P-K wait {exact} outside {ci:?}");
    let mut t = Tally::default();
    waits.iter().for_each(|w| t.add(*w));
    assert!((t.mean().unwrap() - exact).abs() / exact < 0.1);
}

/// No decode step of any shipped step-time model is faster than reading the weights
/// and the KV cache once at the GPU's peak bandwidth: a check of the models and of the
/// catalogue's numbers, over many batch shapes.
#[test]
fn no_decode_step_beats_the_memory_bandwidth() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let inputs = infersim::inputs::FileInputs::new(&dir);
    let profiles = [
        ("RTXPRO6000", "Llama-3.1-8B", 1, "llm-serving/profiles/RTXPRO6000/Llama-3.1-8B/tp1"),
        ("RTX4090", "Llama-3.1-8B", 1, "llm-serving/profiles/RTX4090/Llama-3.1-8B/tp1"),
        ("RTXPRO6000", "Qwen3-32B", 2, "llm-serving/profiles/RTXPRO6000/Qwen3-32B/tp2"),
    ];
    let mut models: Vec<(String, Box<dyn StepTime>, Roofline)> = Vec::new();
    for (gpu, model, tp, dir) in profiles {
        let (g, m) = (catalog::gpu("gpu", gpu).unwrap(), catalog::model("model", model).unwrap());
        let profile = Profile::load("dir", dir, &inputs, &m, tp, (g.link_gb_per_s, g.link_latency_us)).unwrap();
        models.push((format!("profile {dir}"), Box::new(profile), Roofline { gpu: g, model: m, tp }));
    }
    for g in catalog::builtin_gpus() {
        for m in catalog::builtin_models() {
            for tp in [1, 2, 4, 8] {
                let r = Roofline { gpu: g.clone(), model: m.clone(), tp };
                models.push((format!("roofline {} {} tp{tp}", g.name, m.name), Box::new(r.clone()), r));
            }
        }
    }
    for (name, model, bound) in &models {
        for decodes in [1_u32, 2, 3, 8, 17, 64, 100, 256, 511] {
            for kv in [16_u64, 100, 1000, 4000, 16000] {
                let shape = StepShape { decodes, decode_kv: u64::from(decodes) * kv, ..StepShape::default() };
                let (t, floor) = (model.step_s(&shape), bound.memory_floor_s(&shape));
                assert!(
                    t >= floor,
                    "{name}: {decodes} decodes of {kv} tokens in {t} s, below the bandwidth floor {floor} s"
                );
            }
        }
    }
}

/// Prefill/decode disaggregation: every request's prompt KV crosses the link once
/// (prompt x 128 KiB for Llama-3.1-8B), and decodes no longer wait behind prefills, so
/// the inter-token tail shrinks against the same replicas colocated.
#[test]
fn disaggregated_pools_transfer_kv_and_smooth_decoding() {
    let run_with = |extra: &[&str]| {
        let mut s = Scenario::builtin("llm-serving").unwrap();
        let mut overrides = vec![
            "simulation.duration_s=60".to_string(),
            "simulation.warmup_s=0".to_string(),
            "serving.replicas_per_node=3".to_string(),
            "serving.tasks[0].output_tokens.kind=fixed".to_string(),
        ];
        overrides.push("serving.tasks[0].output_tokens.tokens=200".into());
        overrides.push("serving.tasks[1].output_tokens.kind=fixed".into());
        overrides.push("serving.tasks[1].output_tokens.tokens=300".into());
        overrides.extend(extra.iter().map(|e| e.to_string()));
        s.apply_overrides(&overrides).unwrap();
        run(&s, 0, 0)
    };
    let colocated = run_with(&[]);
    let split = run_with(&[
        "serving.disaggregation.prefill_replicas=2",
        "serving.disaggregation.link_gb_per_s=50",
        "serving.disaggregation.link_latency_us=20",
    ]);
    let served = metric(&split, "served");
    assert_eq!(served, metric(&split, "requests"));
    assert_eq!(metric(&split, "kv_transfers"), served, "one transfer per request (all have outputs > 1)");
    assert_eq!(metric(&colocated, "kv_transfers"), 0.0);
    // At 50 GB/s a prompt of a few hundred to a few thousand tokens takes about 1-10 ms.
    let transfer_s = metric(&split, "kv_transfer_mean_s");
    assert!((0.0005..0.02).contains(&transfer_s), "{transfer_s}");
    let (tail_split, tail_colocated) = (metric(&split, "itl_p99_s"), metric(&colocated, "itl_p99_s"));
    assert!(tail_split < 0.5 * tail_colocated, "ITL p99 {tail_split} disaggregated vs {tail_colocated} colocated");
}
