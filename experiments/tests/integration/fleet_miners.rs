//! nineteen's validator on the fleet: replicas are miners, scored per period by the
//! quality and the latency of their answers, chosen by decayed score.

use std::path::{Path, PathBuf};

use crate::common::{floats, infersim_fails, infersim_ok, read, s};

/// The built-in `fleet-miners` cut to `hours` of `rate` requests/s, with extra lines
/// appended to its `[serving.validator]` table (and the sweep replaced by `sweep`),
/// written to `dir/name.toml`.
fn miners(dir: &Path, name: &str, hours: f64, sweep: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let builtin =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/fleet-miners.toml"))
            .unwrap();
    let text = builtin
        .replace(
            "\"serving.routing\" = [\"decayed_score\", \"least_processed\", \"round_robin\"]",
            &format!("\"serving.routing\" = {sweep}"),
        )
        .replace("duration_s = 86400.0", &format!("duration_s = {}", hours * 3600.0))
        .replace("warmup_s = 3600.0", "warmup_s = 600.0");
    assert_ne!(text, builtin, "the built-in is as this test expects");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn run(scenario: &Path, out: &Path, reps: &str) -> polars::prelude::DataFrame {
    infersim_ok(&["run", s(scenario), "--out", s(out), "--reps", reps, "--threads", "2"]);
    read(out.join("replications.parquet"))
}

/// Paired over 5 replications (the same requests, miners and churn: common random
/// numbers), decayed_score sends fewer requests to the poor class and gets better
/// answers than least_processed and round_robin in every replication: a one-sided
/// sign test at p = 0.5^5 = 0.031 for each comparison.
#[test]
fn decayed_scores_steer_requests_away_from_poor_miners() {
    let dir = tempfile::tempdir().unwrap();
    let path = miners(dir.path(), "m", 6.0, "[\"decayed_score\", \"least_processed\", \"round_robin\"]", |t| t);
    let df = run(&path, &dir.path().join("out"), "5");
    let point = floats(&df, "point");
    let of = |metric: &str, p: f64| -> Vec<f64> {
        floats(&df, metric).into_iter().zip(&point).filter(|(_, q)| **q == p).map(|(v, _)| v).collect()
    };
    let (poor, quality) = (|p| of("share_poor", p), |p| of("quality_mean", p));
    for other in [1.0, 2.0] {
        for (d, o) in poor(0.0).iter().zip(poor(other)) {
            assert!(*d < o, "share_poor: decayed {d} against {o} (point {other})");
        }
        for (d, o) in quality(0.0).iter().zip(quality(other)) {
            assert!(*d > o, "quality_mean: decayed {d} against {o} (point {other})");
        }
    }
    // Without scores, a fifth of the contenders are poor: round robin's share is near it.
    let rr = poor(2.0);
    let mean = rr.iter().sum::<f64>() / rr.len() as f64;
    assert!((0.2..0.4).contains(&mean), "round robin's share to the poor class: {mean}");
    // Every request is accounted for.
    for row in 0..df.height() {
        let v = |m: &str| floats(&df, m)[row];
        assert!(v("attempts_per_request") >= 1.0);
        assert!(v("served") + v("lost") + v("rejected") + v("timed_out") <= v("arrived"));
    }
}

/// Cold start: before the first period ends nobody has a history, so decayed_score
/// is least_processed, request for request.
#[test]
fn with_no_history_decayed_score_is_least_processed() {
    let dir = tempfile::tempdir().unwrap();
    let path = miners(dir.path(), "cold", 0.5, "[\"decayed_score\", \"least_processed\"]", |t| {
        t.replace("period_s = 600 ", "period_s = 7200 ")
    });
    let out = dir.path().join("out");
    infersim_ok(&["run", s(&path), "--out", s(&out), "--reps", "1", "--trace", "requests"]);
    let trace = |point: u32| std::fs::read(out.join(format!("traces/point={point}/rep=0/requests.parquet"))).unwrap();
    assert_eq!(trace(0), trace(1), "the same requests to the same replicas at the same times");
    let df = read(out.join("replications.parquet"));
    assert_eq!(floats(&df, "periods"), vec![0.0, 0.0]);
}

/// A miner whose queue is full answers 429 and the request goes on to its next
/// contender after the round trip; with every queue full it is rejected.
#[test]
fn full_queues_answer_429_and_requests_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = miners(dir.path(), "busy", 0.25, "[\"decayed_score\"]", |t| {
        t.replace("max_queued_requests = 32", "max_queued_requests = 1")
            .replace("max_num_seqs = 64", "max_num_seqs = 2")
            .replace("rate_per_s = 3.0", "rate_per_s = 60.0")
            .replace("warmup_s = 600.0", "warmup_s = 0.0")
    });
    let df = run(&path, &dir.path().join("out"), "1");
    let v = |m: &str| floats(&df, m)[0];
    assert!(v("rate_429") > 0.1, "429 share {}", v("rate_429"));
    assert!(v("attempts_per_request") > 1.5, "attempts {}", v("attempts_per_request"));
    assert!(v("rejected") > 0.0, "some requests found every contender full");
    assert!(v("served") > 0.0);
    // Every request is accounted for (no warm-up: all of them count).
    assert_eq!(v("served") + v("lost") + v("rejected") + v("timed_out"), v("arrived"));
}

/// What a fleet of miners needs is checked, naming the key.
#[test]
fn a_validator_s_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad_swept = |name: &str, sweep: &str, edit: &dyn Fn(String) -> String| {
        let path = miners(dir.path(), name, 0.25, sweep, edit);
        infersim_fails(&["validate", s(&path)])
    };
    let bad = |name: &str, edit: &dyn Fn(String) -> String| bad_swept(name, "[\"decayed_score\"]", edit);
    let no_validator = bad("nv", &|t: String| {
        let start = t.find("[serving.validator]").unwrap();
        let end = t.find("[serving.engine]").unwrap();
        format!("{}{}", &t[..start], &t[end..])
    });
    assert!(no_validator.contains("serving.routing") && no_validator.contains("[serving.validator]"), "{no_validator}");
    let task = bad("task", &|t: String| t.replacen("from = \"code\"", "from = \"poetry\"", 1));
    assert!(task.contains("serving.similarity[0].from") && task.contains("chat, code"), "{task}");
    let quality = bad("q", &|t: String| t.replacen("quality = [0.85, 0.95]", "quality = [0.95, 0.85]", 1));
    assert!(quality.contains("serving.pools[0].miner.quality"), "{quality}");
    let router = bad_swept("r", "[\"prefix_aware\"]", &|t: String| t);
    assert!(router.contains("serving.routing") && router.contains("least_processed"), "{router}");
}
