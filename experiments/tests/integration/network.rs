//! The miner network through the binary: the built-in `nineteen-contenders` batch over
//! every routing policy, `compare` between least_processed and decayed_score, traces of
//! queries and period scores read back with polars, and bytes identical for any thread
//! count.

use std::path::Path;
use std::process::Output;

use crate::common::*;

/// A shorter batch than the built-in's 24 h x 10, with the new task at hour 3 and the
/// scheduled departure at hour 4.
const SHORT: [&str; 6] = [
    "--set",
    "simulation.duration_h=6",
    "--set",
    "tasks=[{name = \"chat-llama-3-2-3b\", organic_per_s = 1.5, synthetic_per_s = 0.3, work_s = 0.8, work_cv = 0.5}, {name = \"chat-llama-3-1-70b\", organic_per_s = 0.4, synthetic_per_s = 0.1, work_s = 3.0, work_cv = 0.5}, {name = \"chat-llama-3-1-8b\", organic_per_s = 1.0, synthetic_per_s = 0.2, work_s = 1.2, work_cv = 0.5, start_h = 3}]",
    "--set",
    "events=[{at_h = 4, action = \"leave\", class = \"fast_good\", count = 2}]",
];

fn run(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "nineteen-contenders", "-q", "--out", s(out)];
    args.extend_from_slice(&SHORT);
    args.extend_from_slice(extra);
    infersim_ok(&args)
}

#[test]
fn every_policy_runs_on_the_same_network_and_decayed_score_steers_to_good_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("all");
    run(&out, &["--reps", "4"]);
    let reps = read(out.join("replications.parquet"));
    assert_eq!(reps.height(), 7 * 4, "seven policies x four replications");
    for metric in [
        "quality_mean",
        "latency_p50_s",
        "latency_p99_s",
        "share_poor",
        "share_flaky",
        "rate_429",
        "rate_500",
        "cold_start_h",
    ] {
        assert!(reps.column(metric).is_ok(), "{metric} is a column");
    }
    let policy: Vec<String> = strings(&reps, "routing_policy").into_iter().map(Option::unwrap).collect();
    let metric = |name: &str, wanted: &str| -> Vec<Option<f64>> {
        optional_floats(&reps, name).into_iter().zip(&policy).filter(|(_, p)| *p == wanted).map(|(v, _)| v).collect()
    };
    // Common random numbers: the churn is the same under every policy.
    let left = metric("nodes_left", "round_robin");
    for p in ["random", "least_processed", "decayed_score", "energy_aware"] {
        assert_eq!(metric("nodes_left", p), left, "{p}");
    }
    let mean = |v: Vec<Option<f64>>| v.iter().map(|x| x.unwrap()).sum::<f64>() / v.len() as f64;
    assert!(mean(metric("share_poor", "decayed_score")) < 0.05);
    assert!(mean(metric("share_poor", "least_processed")) > 0.2);
    assert!(mean(metric("quality_mean", "decayed_score")) > mean(metric("quality_mean", "least_processed")) + 0.1);
    // The new task borrows its nodes' history under decayed_score; least_processed never
    // concentrates it on good nodes.
    assert!(metric("cold_start_h", "decayed_score").iter().all(|h| h.is_some_and(|h| h <= 1.0)));
    assert!(metric("cold_start_h", "least_processed").iter().all(Option::is_none));
}

#[test]
fn compare_reports_least_processed_against_decayed_score_with_significance() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, cand) = (tmp.path().join("lp"), tmp.path().join("ds"));
    run(&base, &["--reps", "5", "--set", "routing.policy=least_processed"]);
    run(&cand, &["--reps", "5", "--set", "routing.policy=decayed_score"]);
    let o = infersim_ok(&["compare", s(&base), s(&cand)]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("common random numbers"), "{text}");
    let line = |metric: &str| {
        text.lines().find(|l| l.split_whitespace().next() == Some(metric)).unwrap_or_else(|| panic!("{metric}: {text}"))
    };
    for (metric, sign) in [("quality_mean", '+'), ("share_poor", '-'), ("share_flaky", '-'), ("share_good", '+')] {
        let l = line(metric);
        assert!(l.ends_with('*'), "significant: {l}");
        assert!(l.contains(&format!(" {sign}")), "{sign}: {l}");
    }
}

#[test]
fn queries_and_period_scores_are_traced_and_identical_for_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let args = ["--reps", "2", "--trace", "requests", "--set", "routing.policy=decayed_score"];
    run(&one, &[&args[..], &["--threads", "1"]].concat());
    run(&two, &[&args[..], &["--threads", "2"]].concat());
    for file in
        ["replications.parquet", "traces/point=0/rep=1/requests.parquet", "traces/point=0/rep=1/timeseries.parquet"]
    {
        assert_eq!(std::fs::read(one.join(file)).unwrap(), std::fs::read(two.join(file)).unwrap(), "{file}");
    }
    let dir = one.join("traces/point=0/rep=0");
    let queries = read(dir.join("requests.parquet"));
    let reps = read(one.join("replications.parquet"));
    let finished =
        optional_floats(&reps, "organic_queries")[0].unwrap() + optional_floats(&reps, "synthetic_queries")[0].unwrap();
    assert_eq!(queries.height() as f64, finished, "one row per finished query");
    let tasks = strings(&queries, "task");
    assert!(tasks.contains(&Some("chat-llama-3-1-8b".into())) && tasks.contains(&Some("chat-llama-3-2-3b".into())));
    let classes = strings(&queries, "class");
    assert!(classes.contains(&Some("fast_good".into())) && classes.contains(&Some("slow_good".into())));
    let periods = read(dir.join("timeseries.parquet"));
    assert_eq!(periods.get_column_names()[0].as_str(), "t_h");
    // The period score is nineteen's formula of the row's own counters.
    let (n, r429, r500, cap, used, score) = (
        optional_floats(&periods, "requests"),
        optional_floats(&periods, "rate_limited"),
        optional_floats(&periods, "failed"),
        optional_floats(&periods, "capacity"),
        optional_floats(&periods, "consumed"),
        optional_floats(&periods, "period_score"),
    );
    let mut scored = 0;
    for i in 0..periods.height() {
        let (n, r429, r500, cap, used) =
            (n[i].unwrap(), r429[i].unwrap(), r500[i].unwrap(), cap[i].unwrap(), used[i].unwrap());
        if n == 0.0 {
            assert_eq!(score[i], None);
            continue;
        }
        let unqueried = (cap - used).max(0.0) / cap;
        let want = ((n - r429 - r500) / n * (1.0 - r429 / n * unqueried) * (1.0 - r500 / n * unqueried)).max(0.0);
        assert!((score[i].unwrap() - want).abs() < 1e-12, "row {i}");
        scored += 1;
    }
    assert!(scored > 100);
}
