//! Worlds through the one generic pipeline: a world defined here, in a test, runs,
//! traces, summarises and compares like the built-in ones after one registration line;
//! and every built-in world gives byte-identical replications for one and two threads.

use infersim_engine::Interrupt;
use std::path::Path;

use infersim::batch::{BatchSpec, run_batch};
use infersim::registry::Registry;
use infersim::runner::Shard;
use infersim::scenario::Scenario;
use infersim::trace::TraceLevel;

/// A world of coin flips, written as any world is: one module.
mod coin {
    use infersim_agents::input::Inputs;
    use infersim_agents::trace_row;
    use infersim_agents::world::{ConfigError, Metrics, Replication, RunError, Traces, World};
    use infersim_engine::{Observer, StreamId, derive_stream};
    use rand::RngExt;
    use serde::Deserialize;

    /// `[coin]` as written.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        coin: Table,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        p_heads: f64,
        flips: u64,
    }

    /// A resolved coin.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Config {
        pub p_heads: f64,
        pub flips: u64,
    }

    /// One flip.
    pub struct Flip {
        index: u64,
        heads: bool,
    }
    trace_row!(Flip, |f| { flip: u64 = f.index, heads: bool = f.heads });

    /// The share of heads so far, every 10 flips.
    pub struct Share {
        flips: u64,
        heads_share: f64,
    }
    trace_row!(Share, |s| { t_h: f64 = s.flips as f64, heads_share: f64 = s.heads_share });

    pub struct Coin;

    impl World for Coin {
        const NAME: &'static str = "coin";
        type File = File;
        type Config = Config;
        type Request = Flip;
        type Sample = Share;

        fn resolve(file: File, _inputs: &dyn Inputs) -> Result<Config, ConfigError> {
            let t = file.coin;
            if !(0.0..=1.0).contains(&t.p_heads) {
                return Err(ConfigError::invalid("coin.p_heads", t.p_heads, "a probability from 0 to 1"));
            }
            Ok(Config { p_heads: t.p_heads, flips: t.flips })
        }

        fn run<R: Observer<Flip>, S: Observer<Share>>(
            config: &Config,
            replication: Replication,
            traces: Traces<'_, R, S>,
        ) -> Result<Metrics, RunError> {
            let mut rng = derive_stream(replication.master_seed, replication.index, StreamId(0));
            let mut heads = 0u64;
            for index in 0..config.flips {
                let h = rng.random::<f64>() < config.p_heads;
                heads += u64::from(h);
                traces.requests.observe(Flip { index, heads: h });
                if traces.sample_every.is_some() && (index + 1) % 10 == 0 {
                    traces.samples.observe(Share { flips: index + 1, heads_share: heads as f64 / (index + 1) as f64 });
                }
            }
            if config.p_heads == 0.5 && replication.index % 3 == 1 {
                // A run that fails (a time the clock cannot hold), to test the batch's
                // handling of failed replications.
                return Err(infersim_engine::ScheduleError::Overflow.into());
            }
            let share = heads as f64 / config.flips.max(1) as f64;
            let mut m = Metrics::new();
            m.count("heads", heads).number("heads_share", share).flag("mostly_heads", share > 0.5);
            Ok(m)
        }
    }
}

const COIN: &str = "description = \"coin flips\"\nworld = \"coin\"\n\n[coin]\np_heads = 0.7\nflips = 200\n\n\
                    [simulation]\nreplications = 8\n\n[sweep]\n\"coin.p_heads\" = [0.3, 0.7]\n";

fn spec(out: &Path, threads: usize, trace: TraceLevel, replications: u64) -> BatchSpec {
    BatchSpec {
        replications,
        seed: 5,
        threads,
        shard: Shard::ALL,
        out: out.to_path_buf(),
        resume: false,
        confidence: 0.95,
        trace,
    }
}

#[test]
fn a_world_defined_in_a_test_runs_through_the_whole_pipeline() {
    // The one registration line:
    let registry = Registry::builtin().with::<coin::Coin>();
    let scenario = Scenario::parse_with(&registry, "coin.toml", COIN, Path::new("")).unwrap();
    assert_eq!((scenario.world, (scenario.point_count() as usize)), ("coin", 2));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("coin");
    let report = run_batch(&scenario, &spec(&out, 2, TraceLevel::Requests, 8), &Interrupt::default(), &|_| {}).unwrap();
    assert_eq!(report.manifest.metrics, ["heads", "heads_share", "mostly_heads"]);
    assert_eq!(report.manifest.world, "coin");
    // Replications: the flag is a Boolean column; the share tracks p_heads.
    use polars::prelude::*;
    let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
    assert_eq!(reps.height(), 16);
    assert_eq!(reps.column("mostly_heads").unwrap().dtype(), &DataType::Boolean);
    let summary = report.summary.unwrap();
    let share = |point: u32| -> f64 {
        let rows = summary
            .clone()
            .lazy()
            .filter(col("point").eq(lit(point)).and(col("metric").eq(lit("heads_share"))))
            .collect()
            .unwrap();
        rows.column("mean").unwrap().f64().unwrap().get(0).unwrap()
    };
    assert!((share(0) - 0.3).abs() < 0.05 && (share(1) - 0.7).abs() < 0.05, "{} {}", share(0), share(1));
    // Traces: one row per flip, sampled shares every 10 flips.
    let flips = out.join("traces/point=1/rep=3/requests.parquet");
    let flips = ParquetReader::new(std::fs::File::open(flips).unwrap()).finish().unwrap();
    let names: Vec<String> = flips.get_column_names().iter().map(|n| n.to_string()).collect();
    assert_eq!((flips.height(), names), (200, vec!["flip".to_string(), "heads".to_string()]));
    assert!(out.join("traces/point=0/rep=0/timeseries.parquet").exists());
    // Bad values are named by key, as for any world.
    let e = Scenario::parse_with(&registry, "c.toml", &COIN.replace("p_heads = 0.7", "p_heads = 7.0"), Path::new(""))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "c.toml: coin.p_heads = 7 is invalid: expected a probability from 0 to 1");
    let e = Scenario::parse_with(&registry, "c.toml", &COIN.replace("flips = 200", "flipz = 200"), Path::new(""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key `coin.flipz`; did you mean `coin.flips`?"), "{e}");
    // Without the registration line, the world is unknown.
    let e = Scenario::parse("coin.toml", COIN).unwrap_err().to_string();
    assert!(e.contains("world = \"coin\" is not a world"), "{e}");
}

/// Every built-in scenario, shortened: replications.parquet has the same bytes for one
/// and two threads.
#[test]
fn every_built_in_world_gives_the_same_bytes_for_any_thread_count() {
    let short: &[(&str, &[&str])] = &[
        ("serving", &["simulation.duration_s=120", "simulation.warmup_s=10"]),
        ("mmc", &["simulation.customers=3000", "simulation.warmup_customers=300"]),
        ("bloom-sd", &["simulation.duration_h=200"]),
        ("bloom-stochastic", &["simulation.duration_h=48"]),
        ("bloom-deployment", &["simulation.duration_h=24"]),
        ("bloom-sweep", &["simulation.duration_h=12", "monitor.upper=2.0"]),
        ("nineteen-contenders", &["simulation.duration_h=1", "routing.policy=decayed_score"]),
        ("ipa-video", &["simulation.duration_h=0.1"]),
        ("llm-history", &["simulation.duration_s=60", "simulation.warmup_s=10", "serving.history.keep_share=0.5"]),
        ("vllm-replay", &["serving.routing=least_kv_usage"]),
        ("llm-fleet", &["simulation.duration_h=0.01", "simulation.warmup_s=5", "serving.routing=least_kv_usage"]),
        ("llm-serving", &["simulation.duration_s=40", "simulation.warmup_s=5", "serving.routing=power_of_two_choices"]),
        ("closed-loop-h100", &["serving.arrivals.requests=64", "serving.engine.max_num_seqs=16"]),
        ("mooncake-replay", &["simulation.duration_s=60"]),
        ("hetero-fleet", &["simulation.duration_h=0.05", "simulation.warmup_s=10"]),
        ("fleet-retraining", &["simulation.duration_s=14400", "serving.drift.per_request=2e-4"]),
        ("fleet-miners", &["simulation.duration_s=3600", "simulation.warmup_s=60", "serving.validator.period_s=300"]),
        ("fleet-adaptation", &["simulation.duration_s=7200", "serving.adaptation.interval_s=600"]),
    ];
    assert_eq!(short.len(), Registry::builtin().scenarios().len(), "every built-in scenario is covered");
    let dir = tempfile::tempdir().unwrap();
    for (name, overrides) in short {
        let mut s = Scenario::builtin(name).unwrap();
        s.apply_overrides(overrides).unwrap();
        let bytes = |threads: usize| {
            let out = dir.path().join(format!("{name}-{threads}"));
            let report =
                run_batch(&s, &spec(&out, threads, TraceLevel::Summary, 3), &Interrupt::default(), &|_| {}).unwrap();
            assert!(report.manifest.failed.is_empty(), "{name}: {:?}", report.manifest.failed);
            std::fs::read(out.join("replications.parquet")).unwrap()
        };
        assert_eq!(bytes(1), bytes(2), "{name}: replications.parquet differs between 1 and 2 threads");
    }
}

/// `compare` reads flags (the retraining world's `diverged`) as 0/1 instead of failing.
#[test]
fn compare_pairs_batches_with_boolean_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |name: &str, drift: &str| {
        let mut s = Scenario::builtin("bloom-stochastic").unwrap();
        s.apply_overrides(&["simulation.duration_h=48", &format!("drift.per_request={drift}")]).unwrap();
        let out = dir.path().join(name);
        let report = run_batch(&s, &spec(&out, 2, TraceLevel::Summary, 3), &Interrupt::default(), &|_| {}).unwrap();
        (out, report.manifest.metrics)
    };
    let ((base, metrics), (cand, _)) = (batch("base", "1e-6"), batch("cand", "5e-3"));
    assert!(metrics.contains(&"diverged".to_string()));
    let rows = infersim::analysis::compare(
        infersim::analysis::scan_replications(&[base]).unwrap(),
        infersim::analysis::scan_replications(&[cand]).unwrap(),
        &metrics,
        0.95,
    )
    .unwrap();
    let diverged = rows.iter().find(|r| r.metric == "diverged").unwrap();
    assert_eq!((diverged.base_mean, diverged.candidate_mean), (0.0, 1.0));
}

/// A failed replication is recorded in the manifest and left out of
/// replications.parquet; the others are kept.
#[test]
fn a_failing_replication_is_recorded_and_the_others_are_kept() {
    let registry = Registry::builtin().with::<coin::Coin>();
    let text = COIN.replace("p_heads = 0.7", "p_heads = 0.5").replace("[sweep]\n\"coin.p_heads\" = [0.3, 0.7]\n", "");
    let scenario = Scenario::parse_with(&registry, "coin.toml", &text, Path::new("")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fails");
    let report =
        run_batch(&scenario, &spec(&out, 2, TraceLevel::Timeseries, 12), &Interrupt::default(), &|_| {}).unwrap();
    let failed = &report.manifest.failed;
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(failed.iter().all(|f| f.replication % 3 == 1 && f.error.contains("584 years")));
    use polars::prelude::*;
    let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
    assert_eq!(reps.height(), 8);
    // A failed replication leaves no temporary trace file behind.
    let leftovers: Vec<_> = walk(&out.join("traces")).into_iter().filter(|p| p.contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The miner network and the pipeline have carbon from the shared grid: with a constant
/// intensity it is exactly energy times intensity (both integrate the same power).
#[test]
fn every_world_with_energy_reports_carbon_from_the_shared_grid() {
    let dir = tempfile::tempdir().unwrap();
    for (name, overrides) in [
        ("nineteen-contenders", &["simulation.duration_h=1", "routing.policy=decayed_score"][..]),
        ("ipa-video", &["simulation.duration_h=0.2", "adapter.delta=0"][..]),
    ] {
        let mut s = Scenario::builtin(name).unwrap();
        s.apply_overrides(overrides).unwrap();
        let out = dir.path().join(name);
        run_batch(&s, &spec(&out, 2, TraceLevel::Summary, 2), &Interrupt::default(), &|_| {}).unwrap();
        use polars::prelude::*;
        let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
        let energy = reps.column("energy_kwh").unwrap().f64().unwrap().get(0).unwrap();
        let carbon = reps.column("carbon_kg").unwrap().f64().unwrap().get(0).unwrap();
        assert!(energy > 0.0);
        assert!((carbon / energy - 0.394).abs() < 1e-9, "{name}: {carbon} kg for {energy} kWh");
        // A daily cycle moves carbon, not energy.
        let mut cycle = s.clone();
        cycle
            .apply_overrides(&["grid.kind=diurnal", "grid.amplitude=0.9", "grid.peak_h=0.5", "grid.period_h=24"])
            .unwrap();
        let out = dir.path().join(format!("{name}-cycle"));
        run_batch(&cycle, &spec(&out, 2, TraceLevel::Summary, 2), &Interrupt::default(), &|_| {}).unwrap();
        let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
        let (e2, c2) = (
            reps.column("energy_kwh").unwrap().f64().unwrap().get(0).unwrap(),
            reps.column("carbon_kg").unwrap().f64().unwrap().get(0).unwrap(),
        );
        assert_eq!(e2, energy, "{name}: the grid does not change what runs");
        assert!(c2 > carbon * 1.5, "{name}: near the peak of a 0.9 cycle carbon rises ({c2} vs {carbon})");
    }
}

/// The miner network's organic queries can follow any shared arrival process.
#[test]
fn network_tasks_take_any_shared_arrival_process() {
    let mut s = Scenario::builtin("nineteen-contenders").unwrap();
    s.apply_overrides(&[
        "simulation.duration_h=0.25",
        "routing.policy=least_processed",
        "tasks[0].organic_per_s=0",
        "tasks[0].organic={kind = \"deterministic\", rate_per_s = 1.0}",
        "tasks[1].organic_per_s=0",
        "tasks[1].organic={kind = \"deterministic\", rate_per_s = 1.0}",
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("det");
    let report = run_batch(&s, &spec(&out, 2, TraceLevel::Summary, 2), &Interrupt::default(), &|_| {}).unwrap();
    assert!(report.manifest.failed.is_empty());
    use polars::prelude::*;
    let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
    // One a second at 1, 2, ..., 899 s on each of the two tasks running from the start:
    // 1798 queries, less the few still in flight at the end.
    let organic = reps.column("organic_queries").unwrap().f64().unwrap();
    for r in 0..2 {
        let n = organic.get(r).unwrap();
        assert!((1788.0..=1798.0).contains(&n), "replication {r}: {n} organic queries");
    }
    let e = s.clone().apply_overrides(&["tasks[0].organic_per_s=2"]).unwrap_err().to_string();
    assert!(e.contains("tasks[0].organic_per_s = 2 is invalid: expected no value with [tasks.organic]"), "{e}");
}

/// summary.csv quotes what needs quoting: a swept list value keeps its row's columns.
#[test]
fn summary_csv_keeps_its_columns_when_a_swept_value_is_a_list() {
    let mut s = Scenario::builtin("serving").unwrap();
    s.apply_overrides(&[
        "simulation.duration_s=30",
        "simulation.warmup_s=0",
        "serving.arrivals.kind=mmpp",
        "serving.arrivals.rates_per_s=[5.0, 20.0]",
        "serving.arrivals.mean_sojourn_s=[10.0, 10.0]",
    ])
    .unwrap();
    let text = format!("{}\n[sweep]\n\"serving.arrivals.rates_per_s\" = [[2.0, 20.0], [5.0, 10.0]]\n", s.to_toml());
    let s = Scenario::parse("lists.toml", &text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lists");
    run_batch(&s, &spec(&out, 2, TraceLevel::Summary, 2), &Interrupt::default(), &|_| {}).unwrap();
    let mut reader = csv::Reader::from_path(out.join("summary.csv")).unwrap();
    let width = reader.headers().unwrap().len();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.len() == width), "every row has the header's {width} columns");
    assert!(rows.iter().any(|r| r.iter().any(|cell| cell == "[2.0, 20.0]")), "the list is one cell");
}

/// The pipeline's load can be any shared arrival process too.
#[test]
fn the_pipeline_load_takes_any_shared_arrival_process() {
    let mut s = Scenario::builtin("ipa-video").unwrap();
    s.apply_overrides(&[
        "simulation.duration_h=0.1",
        "adapter.delta=0",
        "load.rate_per_s=0",
        "load.bursts_per_h=0",
        "load.arrivals={kind = \"deterministic\", rate_per_s = 5.0}",
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("det");
    let report = run_batch(&s, &spec(&out, 2, TraceLevel::Summary, 2), &Interrupt::default(), &|_| {}).unwrap();
    assert!(report.manifest.failed.is_empty(), "{:?}", report.manifest.failed);
    use polars::prelude::*;
    let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
    // Five a second for 360 s: 1799 inputs, less those still in the pipeline at the end.
    let requests = reps.column("requests").unwrap().f64().unwrap();
    for r in 0..2 {
        let n = requests.get(r).unwrap();
        assert!((1700.0..=1799.0).contains(&n), "replication {r}: {n} inputs");
    }
    let e = s.clone().apply_overrides(&["load.rate_per_s=3"]).unwrap_err().to_string();
    assert!(e.contains("load.rate_per_s = 3 is invalid: expected no value with [load.arrivals]"), "{e}");
}

/// The pipeline's replicas fail and are repaired like the other worlds' machines
/// (`[failures]`): batches on a failing replica are lost, and results stay independent
/// of the thread count.
#[test]
fn pipeline_replicas_fail_and_are_repaired() {
    let mut s = Scenario::builtin("ipa-video").unwrap();
    s.apply_overrides(&["simulation.duration_h=0.5", "adapter.delta=0", "failures={mtbf_h = 0.1, mttr_h = 0.02}"])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |threads: usize| {
        let out = dir.path().join(format!("fail-{threads}"));
        let report =
            run_batch(&s, &spec(&out, threads, TraceLevel::Summary, 3), &Interrupt::default(), &|_| {}).unwrap();
        assert!(report.manifest.failed.is_empty(), "{:?}", report.manifest.failed);
        std::fs::read(out.join("replications.parquet")).unwrap()
    };
    assert_eq!(run(1), run(2));
    use polars::prelude::*;
    let reps = ParquetReader::new(std::fs::File::open(dir.path().join("fail-2/replications.parquet")).unwrap())
        .finish()
        .unwrap();
    let failures = reps.column("replica_failures").unwrap().f64().unwrap().sum().unwrap();
    let lost = reps.column("lost").unwrap().f64().unwrap().sum().unwrap();
    let served = reps.column("requests").unwrap().f64().unwrap().sum().unwrap();
    assert!(failures > 10.0 && lost > 0.0 && served > 0.0, "{failures} failures, {lost} lost, {served} served");
    // Without failures nothing is lost.
    let mut plain = Scenario::builtin("ipa-video").unwrap();
    plain.apply_overrides(&["simulation.duration_h=0.5", "adapter.delta=0"]).unwrap();
    let out = dir.path().join("plain");
    run_batch(&plain, &spec(&out, 2, TraceLevel::Summary, 2), &Interrupt::default(), &|_| {}).unwrap();
    let reps = ParquetReader::new(std::fs::File::open(out.join("replications.parquet")).unwrap()).finish().unwrap();
    assert_eq!(reps.column("lost").unwrap().f64().unwrap().sum(), Some(0.0));
}
