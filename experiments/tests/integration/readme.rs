//! The README's claims, checked for direction on shortened runs of the commands shown
//! beside them (the network's and the pipeline's are in network.rs and
//! pipeline_adaptation.rs, the BLOOM values in bloom.rs).

use infersim_engine::Interrupt;
use std::path::Path;

use infersim::batch::{BatchSpec, run_batch};
use infersim::runner::Shard;
use infersim::scenario::Scenario;
use polars::prelude::*;

/// Runs a built-in scenario with overrides and returns (point, metric) -> mean.
fn means(name: &str, overrides: &[&str], replications: u64, dir: &Path) -> DataFrame {
    let mut s = Scenario::builtin(name).unwrap();
    s.apply_overrides(overrides).unwrap();
    let out = dir.join(name);
    let spec = BatchSpec {
        replications,
        seed: 42,
        threads: 2,
        shard: Shard::ALL,
        out,
        resume: false,
        confidence: 0.95,
        trace: Default::default(),
    };
    run_batch(&s, &spec, &Interrupt::default(), &|_| {}).unwrap().summary.unwrap()
}

fn mean(summary: &DataFrame, point: u32, metric: &str) -> f64 {
    let rows = summary
        .clone()
        .lazy()
        .filter(col("point").eq(lit(point)).and(col("metric").eq(lit(metric))))
        .collect()
        .unwrap();
    rows.column("mean").unwrap().f64().unwrap().get(0).unwrap_or(f64::NAN)
}

/// "infersim run llm-history sweeps the share (quality 0.70 to 0.99 while median
/// latency goes from 0.4 s to overload)".
#[test]
fn keeping_more_history_raises_quality_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let s = means("llm-history", &["simulation.duration_s=600", "simulation.warmup_s=60"], 2, dir.path());
    let (first, last) = (0, 4);
    assert!((mean(&s, first, "quality_mean") - 0.70).abs() < 0.02);
    assert!(mean(&s, last, "quality_mean") > 0.97);
    assert!(mean(&s, first, "latency_p50_s") < 0.6);
    assert!(mean(&s, last, "latency_p50_s") > 10.0 * mean(&s, first, "latency_p50_s"), "overload at full history");
}

/// "In the sweep, retraining keeps up to 3e-4 per request and loses from 4e-4 on".
#[test]
fn the_bloom_sweep_has_its_cliff_between_3e_4_and_4e_4() {
    let dir = tempfile::tempdir().unwrap();
    let s = means(
        "bloom-sweep",
        &["simulation.duration_h=400", "monitor.upper=2.0", "drift.per_request=3e-4"],
        3,
        dir.path(),
    );
    assert_eq!(mean(&s, 0, "diverged"), 0.0, "3e-4 per request is kept in check");
    let other = tempfile::tempdir().unwrap();
    let s = means(
        "bloom-sweep",
        &["simulation.duration_h=400", "monitor.upper=2.0", "drift.per_request=4e-4"],
        3,
        other.path(),
    );
    assert_eq!(mean(&s, 0, "diverged"), 1.0, "4e-4 per request runs away");
}

/// The README's first command, `cargo run -- run`, needs exactly one binary among the
/// workspace's default members (a second one made cargo refuse to choose).
#[test]
fn cargo_run_at_the_root_has_one_binary_to_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml")).unwrap().parse().unwrap();
    let members = manifest["workspace"]["default-members"].as_array().expect("default-members is set");
    let mut binaries = Vec::new();
    for member in members {
        let dir = root.join(member.as_str().unwrap());
        let package: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap().parse().unwrap();
        let declared = package.get("bin").and_then(|b| b.as_array()).map_or(0, Vec::len);
        let in_src_bin = std::fs::read_dir(dir.join("src/bin")).map_or(0, |d| d.count());
        let main = usize::from(declared == 0 && dir.join("src/main.rs").exists());
        for _ in 0..declared + in_src_bin + main {
            binaries.push(member.as_str().unwrap().to_string());
        }
    }
    assert_eq!(binaries, ["experiments"], "binaries of the default members");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("cargo run -- run"), "the README's main command");
}
