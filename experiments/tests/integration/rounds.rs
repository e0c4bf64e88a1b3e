//! The router's rounds (`serving.routing_interval_s`): a request waits for the next
//! multiple of the interval and no longer, its wait counts towards its timeout, and
//! requests are conserved when retries and decode hand-offs wait for rounds too; bad
//! intervals, and intervals where no router routes, are refused.

use std::path::Path;

use crate::common::{ACCOUNTING, floats, infersim_ok, optional_floats, read, s, strings};

const ROUND_S: f64 = 0.01;
const TIMEOUT_S: f64 = 0.004;

/// One replica that is idle whenever a request arrives (one request every 1.37 s,
/// 20 prompt tokens, 5 output tokens, affine steps of about a millisecond): a request's
/// TTFT is its wait for the router plus the same service every time.
fn spaced(dir: &Path, round_s: f64, timeout: bool) -> polars::prelude::DataFrame {
    let timeout = if timeout { format!("timeout_s = {TIMEOUT_S}\n") } else { String::new() };
    let text = format!(
        r#"world = "serving"
description = "spaced requests on one idle replica"
[simulation]
duration_s = 200
[serving]
gpu = "H100"
model = "Llama-3.1-8B"
nodes = 1
routing = "least_outstanding_requests"
routing_interval_s = {round_s}
[[serving.tasks]]
name = "chat"
weight = 1.0
slo_s = 10.0
{timeout}prompt_tokens = {{ kind = "fixed", tokens = 20 }}
output_tokens = {{ kind = "fixed", tokens = 5 }}
[serving.engine]
kind = "continuous"
[serving.step_time]
kind = "affine"
base_s = 0.001
per_token_s = 0.000001
[serving.arrivals]
kind = "deterministic"
rate_per_s = 0.73
first_gap_fraction = 0.5
{ACCOUNTING}"#
    );
    let name = format!("spaced-{round_s}-{}", !timeout.is_empty());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = dir.join(name);
    infersim_ok(&["run", s(&path), "--reps", "1", "--trace", "requests", "--out", s(&out)]);
    read(out.join("traces/point=0/rep=0/requests.parquet"))
}

/// Nanoseconds from `arrival_s` to the next round.
fn wait_ns(arrival_s: f64) -> i64 {
    let (arrival, round) = ((arrival_s * 1e9).round() as i64, (ROUND_S * 1e9).round() as i64);
    (arrival + round - 1) / round * round - arrival
}

#[test]
fn a_request_waits_for_the_next_round_and_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (at_once, in_rounds) = (spaced(dir.path(), 0.0, false), spaced(dir.path(), ROUND_S, false));
    let arrivals = floats(&in_rounds, "arrival_s");
    assert_eq!(arrivals, floats(&at_once, "arrival_s"));
    assert!(arrivals.len() > 140, "{}", arrivals.len());
    let ttft = |df| {
        let (first, arrival) = (optional_floats(df, "first_token_s"), floats(df, "arrival_s"));
        first.iter().zip(&arrival).map(|(f, a)| ((f.unwrap() - a) * 1e9).round() as i64).collect::<Vec<_>>()
    };
    let (base, waited) = (ttft(&at_once), ttft(&in_rounds));
    // The replica is idle at every arrival, so the service is the same each time.
    assert!(base.iter().all(|&t| t == base[0]), "{base:?}");
    let mut waits = Vec::new();
    for ((b, w), a) in base.iter().zip(&waited).zip(&arrivals) {
        let expected = wait_ns(*a);
        assert!((w - b - expected).abs() <= 2, "arrival {a} s: waited {} ns, expected {expected}", w - b);
        waits.push(expected);
    }
    // The arrivals fall all over the interval: some wait a little, some nearly all of it.
    let round_ns = (ROUND_S * 1e9) as i64;
    assert!(waits.iter().any(|&w| w < round_ns / 10) && waits.iter().any(|&w| w > round_ns * 9 / 10), "{waits:?}");
}

#[test]
fn waiting_for_a_round_counts_towards_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let requests = spaced(dir.path(), ROUND_S, true);
    let outcomes = strings(&requests, "outcome");
    let limit_ns = (TIMEOUT_S * 1e9).round() as i64;
    let replicas = optional_floats(&requests, "replica");
    let mut timed_out = 0;
    for ((outcome, a), replica) in outcomes.iter().zip(floats(&requests, "arrival_s")).zip(replicas) {
        // Those that would wait past their deadline give up at the round, before the
        // router picks a replica; the others are served at once (the replica is idle).
        let expected = if wait_ns(a) > limit_ns { "timed_out" } else { "served" };
        assert_eq!(outcome.as_deref(), Some(expected), "arrival {a} s, wait {} ns", wait_ns(a));
        assert_eq!(replica.is_none(), expected == "timed_out", "arrival {a} s: routed only if served");
        timed_out += usize::from(expected == "timed_out");
    }
    assert!(timed_out > 20 && timed_out < outcomes.len() - 20, "{timed_out} of {}", outcomes.len());
}

#[test]
fn a_bad_interval_is_refused_with_its_key_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let e = crate::common::infersim_fails(&[
        "run",
        "llm-serving",
        "--set",
        "serving.routing_interval_s=-0.5",
        "--out",
        s(&dir.path().join("never")),
    ]);
    assert!(e.contains("routing_interval_s") && e.contains("from 0"), "{e}");
    assert!(!dir.path().join("never").exists());
    // A validator picks its contenders itself: rounds would not apply, so are refused.
    let miners = dir.path().join("miners");
    let set = ["--set", "serving.routing_interval_s=0.01", "--out", s(&miners)];
    let e = crate::common::infersim_fails(&[&["run", "fleet-miners"][..], &set[..]].concat());
    assert!(!miners.exists());
    assert!(e.contains("serving.routing_interval_s") && e.contains("[serving.validator]"), "{e}");
}
