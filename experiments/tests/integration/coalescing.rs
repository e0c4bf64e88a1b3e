//! Coalesced steps change nothing: every token-level built-in (shortened), and the
//! default with failures, conversations, timeouts and each router, gives the same bytes in
//! every output file (replications, summaries, pool and model tables, request and
//! time-series traces) with `serving.coalesce_steps` on and off.

use std::path::{Path, PathBuf};

use infersim::batch::{BatchSpec, run_batch};
use infersim::runner::Shard;
use infersim::scenario::Scenario;
use infersim::trace::TraceLevel;
use infersim_engine::Interrupt;

/// Every output file of a batch but its manifest and resolved scenario (which name the
/// setting), by path relative to `out`.
fn outputs(out: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet" || e == "csv") {
                files.push(path.strip_prefix(out).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// Runs `scenario` with `overrides` for two replications (request traces, so time
/// series too), steps coalesced and not, and asserts that every output has the same
/// bytes.
fn same_bytes(dir: &Path, label: &str, scenario: &Scenario, overrides: &[&str]) {
    let run = |coalesce: bool| {
        let mut s = scenario.clone();
        s.apply_overrides(overrides).unwrap();
        s.apply_overrides(&[&format!("serving.coalesce_steps={coalesce}")]).unwrap();
        let out = dir.join(format!("{label}-{coalesce}"));
        let spec = BatchSpec {
            replications: 2,
            seed: 11,
            threads: 2,
            shard: Shard::ALL,
            out: out.clone(),
            resume: false,
            confidence: 0.95,
            trace: TraceLevel::Requests,
        };
        let report = run_batch(&s, &spec, &Interrupt::default(), &|_| {}).unwrap();
        assert!(report.manifest.failed.is_empty(), "{label}: {:?}", report.manifest.failed);
        out
    };
    let (on, off) = (run(true), run(false));
    let files = outputs(&on);
    assert_eq!(files, outputs(&off), "{label}: the same files");
    assert!(files.iter().any(|f| f.ends_with("requests.parquet")), "{label}: traced");
    for file in &files {
        let (a, b) = (std::fs::read(on.join(file)).unwrap(), std::fs::read(off.join(file)).unwrap());
        assert!(a == b, "{label}: {} differs with steps coalesced", file.display());
    }
}

#[test]
fn coalesced_steps_give_the_same_bytes_in_every_token_level_built_in() {
    let short: &[(&str, &[&str])] = &[
        ("llm-serving", &["simulation.duration_s=60", "simulation.warmup_s=5"]),
        ("vllm-replay", &[]),
        ("llm-fleet", &["simulation.duration_h=0.02", "simulation.warmup_s=5"]),
        ("closed-loop-h100", &["serving.arrivals.requests=400", "serving.engine.max_num_seqs=32"]),
        ("mooncake-replay", &["simulation.duration_s=120"]),
        ("hetero-fleet", &["simulation.duration_h=0.1", "simulation.warmup_s=10"]),
        ("fleet-retraining", &["simulation.duration_s=14400", "serving.drift.per_request=2e-4"]),
        ("fleet-miners", &["simulation.duration_s=1800", "simulation.warmup_s=60", "serving.validator.period_s=300"]),
        ("fleet-adaptation", &["simulation.duration_s=3600", "serving.adaptation.interval_s=600"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, overrides) in short {
        same_bytes(dir.path(), name, &Scenario::builtin(name).unwrap(), overrides);
    }
}

#[test]
fn coalesced_steps_give_the_same_bytes_under_failures_conversations_and_every_router() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/llm-serving.toml");
    // Failures every few minutes of a replica's life, retried elsewhere; chat in
    // conversations behind a shared system prompt, given up after 3 s of waiting;
    // sampled every 2 s; a small cache.
    let text = std::fs::read_to_string(path).unwrap().replace(
        "name = \"chat\"\n",
        "name = \"chat\"\nshared_prefix_tokens = 200\nsession = { turns = 3, think_time_s = 4.0 }\ntimeout_s = 3.0\n",
    ) + "\n[serving.failures]\nmtbf_h = 0.05\nmttr_h = 0.005\n";
    let scenario = Scenario::parse("failing.toml", &text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Every router; then the prefix-aware one in rounds, which new requests, retries
    // and next turns wait for.
    let routers = [
        "round_robin",
        "random",
        "least_outstanding_requests",
        "least_outstanding_tokens",
        "least_kv_usage",
        "power_of_two_choices",
        "prefix_aware",
        "session_affinity",
    ];
    let cases = routers.iter().map(|&r| (r, r, 0.0)).chain([("prefix_aware-rounds", "prefix_aware", 0.005)]);
    for (label, routing, interval_s) in cases {
        let (routing_key, interval_key) =
            (format!("serving.routing={routing}"), format!("serving.routing_interval_s={interval_s}"));
        let overrides = [
            "simulation.duration_s=90",
            "simulation.warmup_s=5",
            "simulation.sample_interval_s=2",
            "serving.arrivals.rate_per_s=40",
            // A cache small enough that decode steps evict cached prefixes.
            "serving.engine.num_gpu_blocks=1200",
            &routing_key,
            &interval_key,
        ];
        same_bytes(dir.path(), label, &scenario, &overrides);
    }
}

#[test]
fn coalesced_steps_give_the_same_bytes_with_disaggregation_and_a_power_cap() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/llm-serving.toml");
    // One replica prefills and three decode, each GPU capped at 450 W (its long
    // prefills run at a lower clock).
    let text = std::fs::read_to_string(path).unwrap().replace("tp = 1\n", "tp = 1\npower_cap_w = 450.0\n")
        + "\n[serving.disaggregation]\nprefill_replicas = 1\nlink_gb_per_s = 50.0\nlink_latency_us = 20.0\n";
    let scenario = Scenario::parse("split.toml", &text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    same_bytes(dir.path(), "split", &scenario, &["simulation.duration_s=60", "simulation.warmup_s=5"]);
    // Prefilled requests wait for the router's round to reach the decode replicas.
    let rounds = ["simulation.duration_s=60", "simulation.warmup_s=5", "serving.routing_interval_s=0.002"];
    same_bytes(dir.path(), "split-rounds", &scenario, &rounds);
}
