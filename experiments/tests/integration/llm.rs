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

/// ML.ENERGY v3's configurations the model is not held to, whose own measurements show
/// the run, not the model, off: (model id, GPU, max_num_seqs), from
/// data/ml-energy-anomalies.csv (its evidence column says why).
fn ml_energy_anomalies() -> Vec<(String, String, u32)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/ml-energy-anomalies.csv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            // The evidence (last, quoted) may hold commas; the three keys do not.
            let mut fields = line.splitn(4, ',');
            let mut next = || fields.next().unwrap().to_string();
            (next(), next(), next().parse().unwrap())
        })
        .collect()
}

/// The error of one simulated configuration against ML.ENERGY's measurement.
struct Errors {
    name: String,
    anomaly: bool,
    itl: f64,
    power: f64,
    energy: f64,
}

/// The median of absolute errors.
fn median_abs(mut errors: Vec<f64>) -> f64 {
    errors.iter_mut().for_each(|e| *e = e.abs());
    errors.sort_by(f64::total_cmp);
    let n = errors.len();
    if n % 2 == 1 { errors[n / 2] } else { (errors[n / 2 - 1] + errors[n / 2]) / 2.0 }
}

/// ML.ENERGY v3 (vLLM 0.11.1, lm-arena chat), all four files: Llama-3.1-8B, Qwen3-8B,
/// Qwen3-14B and Qwen3-32B on H100 (one and two GPUs) and B200, 78 configurations. The
/// closed-loop scenario at a steady state (each configuration's max_num_seqs and mean
/// output length, the roofline from the catalogues, power from the step's demand)
/// gives, leaving out the runs named in [`ml_energy_anomalies`]:
/// - every median inter-token latency within 15%, and the median error within 5%;
/// - GPU power with a median error within 8% and every configuration within 20%;
/// - GPU energy per output token with a median error within 10%, and every
///   configuration within 25% but Qwen3-32B on one H100 at 32 sequences, where the
///   derived KV capacity holds fewer sequences than the run had (throughput -47%).
///
/// The issue's target for power and energy (medians within 5%, every configuration
/// within 10%) is not met: data/README.md "GPU power per step" prints the errors per
/// file and says where and why (Llama-3.1-8B on H100 draws 15% more than the one fit
/// of all files gives it). These bounds guard what the model does reach.
#[test]
fn ml_energy_holds_across_models_gpus_and_tensor_parallelism() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/llm-serving/energy");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut all = Vec::new();
    let anomalies = ml_energy_anomalies();
    for path in files {
        let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let model_id = file["model_id"].as_str().unwrap();
        let model = match model_id {
            "meta-llama/Llama-3.1-8B-Instruct" => "Llama-3.1-8B",
            other => other.strip_prefix("Qwen/").unwrap(),
        };
        for c in file["configurations"].as_array().unwrap() {
            let gpu = c["gpu_model"].as_str().unwrap();
            let seqs = c["max_num_seqs"].as_u64().unwrap() as u32;
            // Setting the swept max_num_seqs pins it: one point.
            let mut s = Scenario::builtin("closed-loop-h100").unwrap();
            s.apply_overrides(&[
                format!("serving.model={model}"),
                format!("serving.gpu={gpu}"),
                format!("serving.tp={}", c["num_gpus"]),
                format!("serving.engine.max_num_seqs={seqs}"),
                format!("serving.tasks[0].output_tokens.mean={}", c["avg_output_len"]),
                "serving.arrivals.requests=1000000000".into(),
                "simulation.duration_s=600".into(),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
            let record = run(&s, 0, 0);
            let measured = |key: &str| c[key].as_f64().unwrap();
            all.push(Errors {
                name: format!("{model} {gpu} x{} at {seqs}", c["num_gpus"]),
                anomaly: anomalies.iter().any(|(m, g, n)| *m == model_id && g == gpu && *n == seqs),
                itl: metric(&record, "itl_p50_s") / (measured("median_itl_ms") / 1e3) - 1.0,
                power: metric(&record, "gpu_power_mean_w") / measured("avg_power_watts") - 1.0,
                energy: metric(&record, "gpu_energy_per_output_token_j") / measured("energy_per_token_joules") - 1.0,
            });
        }
    }
    assert_eq!(all.len(), 78, "every configuration of the four files");
    assert_eq!(all.iter().filter(|e| e.anomaly).count(), anomalies.len(), "each anomaly names a configuration");
    let regular: Vec<&Errors> = all.iter().filter(|e| !e.anomaly).collect();
    let mut failures = Vec::new();
    for e in &regular {
        let kv_bound = e.name == "Qwen3-32B H100 x1 at 32";
        for (what, error, bound) in
            [("ITL", e.itl, 0.15), ("power", e.power, 0.20), ("energy", e.energy, if kv_bound { 1.0 } else { 0.25 })]
        {
            if error.abs() > bound {
                failures.push(format!("{}: {what} {:+.1}%", e.name, error * 100.0));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let itl = median_abs(all.iter().map(|e| e.itl).collect());
    assert!(itl <= 0.05, "median |ITL error| over all configurations {:.1}%", itl * 100.0);
    let power = median_abs(regular.iter().map(|e| e.power).collect());
    let energy = median_abs(regular.iter().map(|e| e.energy).collect());
    assert!(
        power <= 0.08 && energy <= 0.10,
        "median |error|: power {:.1}%, energy {:.1}%",
        power * 100.0,
        energy * 100.0
    );
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
    let inputs = infersim::inputs::FileInputs::new(&dir, Vec::new());
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

/// A replication of `name` with `overrides`, its requests traced: the record and the
/// request rows.
fn traced(name: &str, overrides: &[&str]) -> (ReplicationRecord, polars::prelude::DataFrame) {
    let mut s = Scenario::builtin(name).unwrap();
    s.apply_overrides(overrides).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = TraceSpec {
        level: infersim::trace::TraceLevel::Requests,
        out: dir.path().to_path_buf(),
        sample_every: infersim_engine::SimDuration::from_secs_f64(1.0).unwrap(),
    };
    let record = run_replication(&s.first_point(), s.seed, 0, &trace);
    let rows = crate::common::read(infersim::trace::trace_dir(dir.path(), 0, 0).join("requests.parquet"));
    (record, rows)
}

/// Every request ends one way, counted under its own name: requests over the context
/// limit (the model's context length unless set), longer than the whole KV cache, or
/// sent to a replica whose queue is full are `rejected`, never `lost`, in the summary
/// and in the trace alike.
#[test]
fn refused_requests_are_rejected_everywhere() {
    let short = ["simulation.duration_s=30", "simulation.warmup_s=0"];
    let count = |rows: &polars::prelude::DataFrame, outcome: &str| {
        crate::common::strings(rows, "outcome").iter().filter(|o| o.as_deref() == Some(outcome)).count() as f64
    };
    let check = |overrides: &[&str], expect_rejected: bool| {
        let (record, rows) = traced("llm-serving", &[&short[..], overrides].concat());
        let (requests, served, rejected) =
            (metric(&record, "requests"), metric(&record, "served"), metric(&record, "rejected"));
        assert_eq!(metric(&record, "lost"), 0.0, "{overrides:?}");
        assert_eq!(served + rejected + metric(&record, "timed_out"), requests, "{overrides:?}");
        assert_eq!((count(&rows, "rejected"), count(&rows, "served")), (rejected, served), "{overrides:?}");
        assert_eq!(rejected > 0.0, expect_rejected, "{overrides:?}: {rejected} rejected");
        rejected / requests
    };
    // The default limit is Llama-3.1-8B's 131,072 tokens: a 191,000-token prompt is refused.
    let all =
        check(&["serving.tasks[0].prompt_tokens.kind=fixed", "serving.tasks[0].prompt_tokens.tokens=191000"], true);
    assert!((0.5..0.95).contains(&all), "every chat request (80% of them), {all}");
    check(&["serving.context_limit_tokens=600"], true);
    check(&["serving.engine.num_gpu_blocks=40"], true);
    check(&["serving.engine.max_queued_requests=2", "serving.arrivals.rate_per_s=400"], true);
    check(&[], false);
}

/// Replicas that fail: a request on a failed replica is sent once more, to another
/// replica, by default (`serving.failures.retries`), and lost only after that. Every
/// arrival ends one way, warm-up included (`arrived`), in the summary and the trace
/// alike; with the same seed the failures are the same whatever the retries.
#[test]
fn failed_replicas_retry_their_requests_elsewhere_and_every_arrival_is_accounted() {
    let count = |rows: &polars::prelude::DataFrame, outcome: &str| {
        crate::common::strings(rows, "outcome").iter().filter(|o| o.as_deref() == Some(outcome)).count() as f64
    };
    let run = |retries: &str| {
        let overrides = [
            "simulation.duration_s=120",
            "simulation.warmup_s=20",
            "serving.failures.mtbf_h=0.02",
            "serving.failures.mttr_h=0.002",
            retries,
        ];
        let (record, rows) = traced("llm-serving", &overrides);
        // Every arrival, warm-up included, has its row; the counted ones their metric.
        assert_eq!(metric(&record, "arrived"), rows.height() as f64, "{retries}");
        let counted = metric(&record, "served")
            + metric(&record, "timed_out")
            + metric(&record, "rejected")
            + metric(&record, "lost");
        assert_eq!(counted, metric(&record, "requests"), "{retries}");
        let warmup = crate::common::bools(&rows, "warmup");
        let lost_counted = crate::common::strings(&rows, "outcome")
            .iter()
            .zip(&warmup)
            .filter(|(o, w)| o.as_deref() == Some("lost") && **w == Some(false))
            .count() as f64;
        assert_eq!(lost_counted, metric(&record, "lost"), "{retries}");
        (record, count(&rows, "lost"))
    };
    let (none, lost_none) = run("serving.failures.retries=0");
    let (once, lost_once) = run("serving.failures.retries=1");
    assert!(metric(&none, "gpu_failures") > 3.0, "failures happen: {}", metric(&none, "gpu_failures"));
    assert_eq!(metric(&none, "gpu_failures"), metric(&once, "gpu_failures"), "the same failures");
    assert_eq!(metric(&none, "retries"), 0.0);
    assert!(metric(&once, "retries") > 0.0 && lost_none > 0.0, "requests on failed replicas");
    // What was lost without retries is mostly saved by one (a request can be unlucky
    // twice, or find no replica up).
    assert!(lost_once < 0.5 * lost_none, "lost {lost_once} with a retry, {lost_none} without");
    assert!(metric(&once, "served") > metric(&none, "served"));
}

/// Each served request's `energy_kwh` in the trace is its share, by tokens, of the GPU
/// energy of every step it ran in: with GPUs that draw nothing when idle, the shares
/// add up to the fleet's GPU energy.
#[test]
fn request_energy_is_each_step_s_energy_shared_by_tokens() {
    let (record, rows) = traced(
        "llm-serving",
        &["simulation.duration_s=30", "simulation.warmup_s=0", "serving.gpu={ name = \"H100\", idle_w = 0.0 }"],
    );
    let energy = crate::common::floats(&rows, "energy_kwh");
    assert!(energy.iter().all(|&e| e > 0.0), "every request ran and drew energy");
    let shares: f64 = energy.iter().sum();
    let gpu_kwh = metric(&record, "energy_gpu_kwh");
    assert!((shares - gpu_kwh).abs() < 1e-9 * gpu_kwh, "shares {shares} kWh, GPUs {gpu_kwh} kWh");
}

/// Throughput is per second of the measured window (warm-up end to the last token), as
/// goodput is: for a replayed run without warm-up, the served requests over the makespan.
#[test]
fn throughput_is_per_second_of_the_measured_window() {
    let s = Scenario::builtin("vllm-replay").unwrap();
    let record = run(&s, 0, 0);
    let (served, makespan) = (metric(&record, "served"), metric(&record, "makespan_s"));
    assert!((metric(&record, "throughput_per_s") * makespan - served).abs() < 1e-9 * served);
}

/// A replay cut by the run's window says so once, and its measured numbers are those of
/// the requests that ran: with `duration_s = 10`, the 112 of 300 requests queued in the
/// first 10 s. `serving.measured = ""` takes the comparison away.
#[test]
fn a_cut_replay_warns_and_compares_with_the_requests_that_ran() {
    let mut s = Scenario::builtin("vllm-replay").unwrap();
    assert!(s.warnings().is_empty(), "the built-in replays its whole trace");
    let (_, whole) = s.first_point().model.reference().unwrap();
    s.apply_overrides(&["simulation.duration_s=10", "simulation.warmup_s=2"]).unwrap();
    let warnings = s.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("188 of its 300 requests arrive at or after simulation.duration_s = 10 s")
            && warnings[0].contains("arrive during the warm-up"),
        "{}",
        warnings[0]
    );
    let (_, cut) = s.first_point().model.reference().unwrap();
    let value = |v: &[(String, f64)], name: &str| v.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(value(&cut, "makespan_s") < value(&whole, "makespan_s"));
    assert_ne!(value(&cut, "ttft_mean_s"), value(&whole, "ttft_mean_s"));
    let record = run(&s, 0, 0);
    assert!(metric(&record, "requests") < 112.0, "requests queued in the warm-up are not counted");
    s.apply_overrides(&["serving.measured=\"\""]).unwrap();
    assert!(s.first_point().model.reference().is_none());
}

/// A token-level run's charts: TTFT and TPOT distributions beside the end-to-end one,
/// axes that name their units, and sweep charts of metrics that vary.
#[test]
fn an_llm_sweep_draws_token_latencies_and_only_metrics_that_vary() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("load.toml");
    std::fs::write(
        &scenario,
        include_str!("../../../data/scenarios/llm-serving.toml").to_string()
            + "\n[sweep]\n\"serving.arrivals.rate_per_s\" = [20.0, 100.0]\n",
    )
    .unwrap();
    let out = dir.path().join("b");
    crate::common::infersim_ok(&[
        "run",
        scenario.to_str().unwrap(),
        "-q",
        "--reps",
        "2",
        "--trace",
        "requests",
        "--set",
        "simulation.duration_s=30",
        "--set",
        "simulation.warmup_s=5",
        "--out",
        out.to_str().unwrap(),
    ]);
    crate::common::infersim_ok(&["plot", out.to_str().unwrap()]);
    let plots = out.join("plots");
    for stem in ["latency_cdf", "ttft_cdf", "tpot_cdf", "ttft_tail", "sweep_ttft_p99_s", "pareto_latency_energy"] {
        assert!(plots.join(format!("{stem}.png")).is_file(), "{stem}.png");
    }
    assert!(!plots.join("sweep_lost.png").exists(), "nothing is lost without failures: no chart");
    let svg = std::fs::read_to_string(plots.join("ttft_cdf.svg")).unwrap();
    assert!(svg.contains("time to first token (ttft) (s)"), "the axis names its unit");
    let pareto = std::fs::read_to_string(plots.join("pareto_latency_energy.svg")).unwrap();
    assert!(pareto.contains("energy per output token (J)") && !pareto.contains("per input"));
}

/// A power cap (`serving.power_cap_w`) on the closed-loop H100: no sampled instant
/// draws more than the cap, a lower cap never shortens the inter-token latency, a
/// cap the steps stay under changes nothing, and a compute-heavy batch (256
/// sequences) slows more under the same cap than a memory-bound one (8 sequences).
#[test]
fn a_power_cap_holds_and_slows_compute_bound_batches_more() {
    let cases = |seqs: u32| -> Vec<(f64, f64, f64)> {
        [700.0, 500.0, 400.0, 300.0]
            .iter()
            .map(|&cap| {
                let overrides = [
                    format!("serving.engine.max_num_seqs={seqs}"),
                    format!("serving.power_cap_w={cap}"),
                    "serving.arrivals.requests=1000000000".into(),
                    "simulation.duration_s=120".into(),
                ];
                let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
                let (record, _) = traced("closed-loop-h100", &overrides);
                (cap, metric(&record, "itl_p50_s"), metric(&record, "gpu_power_mean_w"))
            })
            .collect()
    };
    let (small, large) = (cases(8), cases(256));
    for runs in [&small, &large] {
        for pair in runs.windows(2) {
            assert!(pair[1].1 >= pair[0].1, "a lower cap shortened ITL: {pair:?}");
        }
        for &(cap, _, power) in runs.iter() {
            assert!(power <= cap + 1e-9, "mean power {power} W over the cap {cap} W");
        }
    }
    // The small batch draws about 450 W uncapped: a 500 W cap changes nothing.
    assert_eq!(small[1].1, small[0].1);
    let slowdown = |runs: &[(f64, f64, f64)], i: usize| runs[i].1 / runs[0].1;
    assert!(slowdown(&large, 2) > slowdown(&small, 2), "at 400 W: {large:?} vs {small:?}");
    // A cap at or below the GPU's static power is refused, naming the key and range.
    let mut s = Scenario::builtin("closed-loop-h100").unwrap();
    let e = s.apply_overrides(&["serving.power_cap_w=150"]).and_then(|_| s.point(0).map(|_| ())).unwrap_err();
    assert!(e.to_string().contains("serving.power_cap_w") && e.to_string().contains("at most"), "{e}");
}
