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

/// A fenced block of commands in the README.
struct Block {
    /// Its first line in README.md (1-based).
    line: usize,
    /// `sh` (a script: every command must succeed) or `console` (a transcript: `$ `
    /// lines are commands, the lines after each are text its output must contain).
    kind: String,
    text: String,
    /// Why it is not run, from a `<!-- readme-test: skip: ... -->` line just above it.
    skip: Option<String>,
}

fn command_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let kind = lines[i].strip_prefix("```").filter(|k| *k == "sh" || *k == "console");
        let Some(kind) = kind else {
            i += 1;
            continue;
        };
        let skip = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- readme-test: skip:"))
            .map(|r| r.trim_end_matches("-->").trim().to_string());
        let end = (i + 1..lines.len()).find(|&j| lines[j].starts_with("```")).expect("a closed block");
        blocks.push(Block { line: i + 1, kind: kind.to_string(), text: lines[i + 1..end].join("\n"), skip });
        i = end + 1;
    }
    blocks
}

/// Every command the README shows runs as it is written, in order, in one working
/// directory (later commands read what earlier ones wrote), with `infersim` on the
/// PATH; transcripts (`console` blocks) must print what they show. Blocks marked
/// `<!-- readme-test: skip: why -->` (a cluster, a build) are counted, not run.
#[test]
fn every_command_in_the_readme_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_infersim"), bin.join("infersim")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let shell = |script: &str, strict: bool| {
        let flags = if strict { "-euo" } else { "-uo" };
        std::process::Command::new("bash")
            .args([flags, "pipefail", "-c", script])
            .current_dir(work.path())
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let (mut commands, mut skipped) = (0, Vec::new());
    for block in command_blocks(&readme) {
        if let Some(why) = block.skip {
            skipped.push(format!("line {}: {why}", block.line));
            continue;
        }
        if block.kind == "sh" {
            commands += block.text.lines().filter(|l| l.trim_start().starts_with("infersim ")).count();
            let o = shell(&block.text, true);
            assert!(
                o.status.success(),
                "README.md:{}: {}\n{}",
                block.line,
                block.text,
                String::from_utf8_lossy(&o.stderr)
            );
            continue;
        }
        // A transcript: each `$ command` and the text it prints.
        let mut lines = block.text.lines().peekable();
        while let Some(line) = lines.next() {
            let command = line.strip_prefix("$ ").expect("a transcript starts with `$ `");
            let mut expected = Vec::new();
            while let Some(next) = lines.next_if(|l| !l.starts_with("$ ")) {
                expected.push(next);
            }
            let o = shell(command, false);
            let printed = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            for text in expected.iter().filter(|t| !t.trim().is_empty()) {
                assert!(
                    printed.contains(text.trim()),
                    "README.md:{}: `{command}` printed\n{printed}\nnot: {text}",
                    block.line
                );
            }
            commands += 1;
        }
    }
    eprintln!("README: {commands} infersim commands run; {} blocks not run: {}", skipped.len(), skipped.join("; "));
    assert!(commands >= 20, "{commands} commands: the README's examples were not found");
}
