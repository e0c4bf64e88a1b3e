//! End-to-end batches through the binary: outputs read back with polars, determinism
//! across thread counts, interruption and resume, shards and merging, partial
//! failures, and bad input that must leave nothing behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;

use crate::common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_infersim"))
}

fn infersim(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SMALL: [&str; 4] = ["--set", "simulation.customers=4000", "--set", "simulation.warmup_customers=400"];

/// Runs a small batch of `mmc`, or of the scenario file among `extra`.
fn run(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "-q", "--out", s(out)];
    if !extra.iter().any(|a| a.ends_with(".toml")) {
        args.push("mmc");
    }
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    let o = infersim(&args);
    assert!(o.status.success(), "{:?}: {}", args, String::from_utf8_lossy(&o.stderr));
    o
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_batch_writes_every_output_and_they_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("batch");
    run(&out, &["--reps", "5", "--seed", "11"]);
    for f in ["manifest.json", "scenario.toml", "replications.parquet", "summary.parquet", "summary.csv"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(!out.join("parts.jsonl").exists(), "the journal is removed once assembled");
    let reps = read(out.join("replications.parquet"));
    assert_eq!(reps.height(), 5);
    let names: Vec<String> = reps.get_column_names().iter().map(|n| n.to_string()).collect();
    assert_eq!(&names[..3], ["point", "replication", "seed"]);
    assert!(names.contains(&"wait_s".to_string()) && names.contains(&"p_block".to_string()));
    assert_eq!(reps.column("wait_s").unwrap().dtype(), &DataType::Float64);
    let m = manifest(&out);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["completed"], 5);
    let seeds: Vec<u64> = reps.column("seed").unwrap().u64().unwrap().into_no_null_iter().collect();
    // The manifest states the rule, and the recorded seeds follow it.
    assert!(m["seed_rule"].as_str().unwrap().contains("replication_seed(seed, r)"));
    let rule: Vec<u64> = (0..5).map(|r| infersim_engine::replication_seed(11, r)).collect();
    assert_eq!(seeds, rule);
    // Invariants of every row: served customers' waits are below their sojourns.
    let wait = reps.column("wait_s").unwrap().f64().unwrap().clone();
    let sojourn = reps.column("sojourn_s").unwrap().f64().unwrap().clone();
    assert!(wait.into_no_null_iter().zip(sojourn.into_no_null_iter()).all(|(w, s)| 0.0 <= w && w < s));
    let summary = read(out.join("summary.parquet"));
    assert_eq!(summary.height(), m["metrics"].as_array().unwrap().len());
    assert!(summary.column("n").unwrap().u64().unwrap().into_no_null_iter().all(|n| n == 5));
    let csv = fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(csv.starts_with("point,metric,n,mean,std,ci_low,ci_high,confidence\n"));
}

#[test]
fn replications_are_byte_identical_for_one_and_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("t1"), tmp.path().join("t2"));
    run(&a, &["--reps", "6", "--threads", "1"]);
    run(&b, &["--reps", "6", "--threads", "2"]);
    assert_eq!(fs::read(a.join("replications.parquet")).unwrap(), fs::read(b.join("replications.parquet")).unwrap());
    assert_eq!(fs::read(a.join("summary.csv")).unwrap(), fs::read(b.join("summary.csv")).unwrap());
}

/// Replications in the journal (complete lines).
fn parts(dir: &Path) -> usize {
    fs::read_to_string(dir.join("parts.jsonl")).map(|t| t.matches('\n').count()).unwrap_or(0)
}

/// Starts a long batch, waits until some replications are saved, and stops it with
/// `signal`; returns the child's exit code (None when killed).
fn interrupt(out: &Path, signal: &str) -> Option<i32> {
    let mut child = bin()
        .args(["run", "mmc", "-q", "--out", s(out), "--reps", "400", "--threads", "1"])
        .args(["--set", "simulation.customers=20000", "--set", "simulation.warmup_customers=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while parts(out) < 3 {
        assert!(Instant::now() < deadline, "no replication finished in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap().code()
}

#[test]
fn an_interrupted_or_killed_batch_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let args = ["--reps", "400", "--set", "simulation.customers=20000", "--set", "simulation.warmup_customers=0"];
    let o = infersim(&[&["run", "mmc", "-q", "--out", s(&full)][..], &args].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = fs::read(full.join("replications.parquet")).unwrap();
    // SIGTERM is what Slurm sends at preemption and at the time limit: like Ctrl-C.
    for signal in ["-INT", "-TERM", "-KILL"] {
        let out = tmp.path().join(signal.trim_start_matches('-'));
        let code = interrupt(&out, signal);
        if signal != "-KILL" {
            assert_eq!(code, Some(130), "{signal} ends with 130");
            assert_eq!(manifest(&out)["status"], "interrupted");
        }
        assert!(!out.join("replications.parquet").exists(), "no final output before the batch is complete");
        let kept = parts(&out);
        assert!((3..400).contains(&kept), "{signal}: {kept} parts kept");
        let o = infersim(&[&["run", "mmc", "-q", "--out", s(&out), "--resume"][..], &args].concat());
        assert!(o.status.success(), "{signal}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(fs::read(out.join("replications.parquet")).unwrap(), expected, "{signal}: resumed batch differs");
        assert_eq!(manifest(&out)["status"], "complete");
    }
}

/// Peak resident memory of a running process, in kB (Linux).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A hundred billion replications start at once and run in memory that does not grow
/// with the replications requested, and by no more than a few bytes with those
/// finished: work items are computed as they are taken, records go to the journal, and
/// replications.parquet holds one row group in memory (so the peak is measured from
/// the second row group on). Only a count that does not fit in 64 bits is refused.
#[test]
fn a_batch_of_any_size_runs_in_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("huge");
    let mut child = bin()
        .args(["run", "mmc", "-q", "--out", s(&out), "--reps", "100000000000", "--threads", "1"])
        .args(["--set", "simulation.customers=100", "--set", "simulation.warmup_customers=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Past the first row groups of replications.parquet (16,384 rows each).
    while parts(&out) < 40_000 {
        assert!(Instant::now() < deadline, "not 40,000 replications in 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let early = (parts(&out), peak_rss_kb(child.id()));
    while parts(&out) < 10 * early.0 {
        assert!(Instant::now() < deadline, "not {} replications in 120 s", 10 * early.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = (parts(&out), peak_rss_kb(child.id()));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    // Ten times the replications, and the peak grows by less than 16 bytes per
    // replication (it grew by about 2 KB per replication when records were gathered
    // in memory). What still grows is the footer that replications.parquet's writer
    // keeps until the file closes, as any writer of one Parquet file must: about
    // 8 KB per row group of 16,384 replications (2-3 bytes each in resident memory).
    let growth_bytes = late.1.saturating_sub(early.1) * 1024;
    assert!(
        growth_bytes < 16 * (late.0 - early.0) as u64,
        "peak {} kB after {} replications, {} kB after {}",
        early.1,
        early.0,
        late.1,
        late.0
    );
    assert_eq!(manifest(&out)["status"], "interrupted");
    assert_eq!(manifest(&out)["expected"], 100_000_000_000_u64);
    assert!(fs::metadata(out.join("manifest.json")).unwrap().len() < 8_192, "the manifest lists no seeds");

    // Two points x 2^64 - 1 replications cannot be counted: refused up front.
    let scenario = tmp.path().join("sweep.toml");
    let text = include_str!("../../../data/scenarios/mmc.toml").to_string() + "\n[sweep]\nstation.servers = [4, 5]\n";
    fs::write(&scenario, text).unwrap();
    let refused = tmp.path().join("refused");
    let o = infersim(&["run", s(&scenario), "--reps", &u64::MAX.to_string(), "--out", s(&refused)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be counted"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!refused.exists(), "nothing written");
}

/// A sweep of fifty million points starts at once, in the memory of its value lists:
/// points are resolved as replications reach them, and the manifest states the sweep
/// instead of listing its points. A bad value anywhere in it is still refused before
/// anything runs.
#[test]
fn a_sweep_of_fifty_million_points_runs_in_small_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("huge-sweep.toml");
    let rates: Vec<String> = (0..5000).map(|i| format!("{:.4}", 1.0 + f64::from(i) * 1e-4)).collect();
    let seeds: Vec<String> = (0..10_000).map(|i| (i * 7).to_string()).collect();
    let sweep = |rates: &[String]| {
        format!(
            "{}\n[sweep]\n\"station.arrival_rate_per_s\" = [{}]\n\"simulation.customers\" = [{}]\n",
            include_str!("../../../data/scenarios/mmc.toml")
                .replace("warmup_customers = 10000", "warmup_customers = 0"),
            rates.join(", "),
            seeds.iter().map(|c| (1000 + c.parse::<u32>().unwrap() % 1000).to_string()).collect::<Vec<_>>().join(", ")
        )
    };
    fs::write(&scenario, sweep(&rates)).unwrap();
    let out = tmp.path().join("huge");
    let mut child = bin()
        .args(["run", s(&scenario), "-q", "--out", s(&out), "--reps", "1", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while parts(&out) < 200 {
        assert!(Instant::now() < deadline, "not 200 points run in 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the batch stopped early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak_kb = peak_rss_kb(child.id());
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(peak_kb < 200_000, "peak {peak_kb} kB for a sweep of 5e7 points");
    let m = manifest(&out);
    assert_eq!(m["point_count"], 50_000_000_u64);
    assert!(m.get("points").is_none(), "the points are not listed");
    assert!(fs::metadata(out.join("manifest.json")).unwrap().len() < 1_000_000, "the manifest states the sweep");
    // A bad value at the end of a list is found when the scenario loads.
    let mut bad = rates.clone();
    *bad.last_mut().unwrap() = "-1.0".into();
    fs::write(&scenario, sweep(&bad)).unwrap();
    let refused = tmp.path().join("refused");
    let o = infersim(&["run", s(&scenario), "--out", s(&refused)]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("station.arrival_rate_per_s = -1 is invalid"));
    assert!(!refused.exists());
}

#[test]
fn a_sweep_split_into_shards_merges_into_the_unsharded_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("sweep.toml");
    let text = include_str!("../../../data/scenarios/mmc.toml").to_string()
        + "\n[sweep]\nstation.servers = [4, 5]\nstation.arrival_rate_per_s = [2.0, 3.0]\n";
    fs::write(&scenario, text).unwrap();
    let sc = s(&scenario);
    let whole = tmp.path().join("whole");
    run(&whole, &[sc, "--reps", "3"]);
    let reps = read(whole.join("replications.parquet"));
    assert_eq!(reps.height(), 12);
    let servers: Vec<i64> = reps.column("station_servers").unwrap().i64().unwrap().into_no_null_iter().collect();
    // Keys in alphabetical order, the last (station.servers) varying fastest.
    assert_eq!(&servers[..6], [4, 4, 4, 5, 5, 5]);
    // Common random numbers: replication r has the same seed at every point.
    let seeds = reps.column("seed").unwrap().u64().unwrap().clone();
    assert_eq!(seeds.get(0), seeds.get(3));
    let shard_dirs: Vec<PathBuf> = (1..=3).map(|i| tmp.path().join(format!("shard{i}"))).collect();
    for (i, dir) in shard_dirs.iter().enumerate() {
        run(dir, &[sc, "--reps", "3", "--shard", &format!("{}/3", i + 1)]);
    }
    let merged = tmp.path().join("merged");
    let incomplete = infersim(&["analyze", s(&shard_dirs[0]), s(&shard_dirs[2]), "--out", s(&merged)]);
    assert_eq!(incomplete.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&incomplete.stderr).contains("shards 2/3 are missing"));
    assert!(!merged.exists(), "a refused merge writes nothing");
    let o = infersim(&["analyze", s(&shard_dirs[0]), s(&shard_dirs[1]), s(&shard_dirs[2]), "--out", s(&merged)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(read(merged.join("replications.parquet")).equals(&reps), "merged rows differ from the unsharded batch");
    assert_eq!(fs::read(merged.join("summary.csv")).unwrap(), fs::read(whole.join("summary.csv")).unwrap());
}

#[test]
fn validated_input_that_once_overflowed_the_clock_is_now_refused() {
    // Two customers with a mean service of 1e10 s used to overflow the 584 years integer
    // time holds in half the replications; such rates are refused before anything runs
    // (failed replications are tested with a failing world in integration/worlds.rs).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fails");
    let o = infersim(&[
        "run",
        "mmc",
        "-q",
        "--out",
        s(&out),
        "--set",
        "station.arrival_rate_per_s=1e-9",
        "--set",
        "station.service_rate_per_s=1e-10",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("station.arrival_rate_per_s = 0.000000001 is invalid"));
    assert!(!out.exists());
}

#[test]
fn bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    for (args, message) in [
        (vec!["run", "mmc", "--out", s(&out), "--set", "station.servres=3"], "did you mean `station.servers`"),
        (vec!["run", "--out", s(&out), "--reps", "0"], "--reps must be at least 1"),
        (vec!["run", "--out", s(&out), "--shard", "3/2"], "expected I/N with 1 <= I <= N"),
        (vec!["run", "--out", s(&out), "--resume"], "no manifest.json here"),
        (vec!["run", "--out", s(&out), "--confidence", "1.5"], "outside (0, 1)"),
        (vec!["run", "nosuch.toml", "--out", s(&out)], "no scenario named `nosuch.toml`"),
    ] {
        let o = infersim(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(message),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists(), "{args:?} left {out:?} behind");
    }
    // An occupied directory is refused and left untouched.
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("precious.txt"), "keep").unwrap();
    let o = infersim(&["run", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists and is not empty"));
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    // An output directory that cannot be created.
    let o = infersim(&["run", "--out", "/proc/infersim-cannot-write-here"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/proc/infersim-cannot-write-here"));
}

#[test]
fn compare_pairs_replications_and_gates_on_tolerances() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, cand, same) = (tmp.path().join("base"), tmp.path().join("cand"), tmp.path().join("same"));
    run(&base, &["--reps", "10"]);
    // A fifth server: waits fall sharply, on the same random numbers.
    run(&cand, &["--reps", "10", "--set", "station.servers=5"]);
    run(&same, &["--reps", "10"]);
    let o = infersim(&["compare", s(&base), s(&cand)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("common random numbers"), "{out}");
    let wait = out.lines().find(|l| l.starts_with("wait_s")).unwrap();
    assert!(wait.ends_with('*') && wait.contains("-"), "a significant decrease: {wait}");
    // Lower waits pass a gate on increases and fail a gate on decreases.
    let o = infersim(&["compare", s(&base), s(&cand), "--fail-on", "wait_s:+5%"]);
    assert_eq!(o.status.code(), Some(0));
    let o = infersim(&["compare", s(&base), s(&cand), "--fail-on", "wait_s:-5%"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("gate failed: wait_s at point 0"));
    // A batch compared with its own rerun: zero difference everywhere, nothing fails.
    let o = infersim(&["compare", s(&base), s(&same), "--fail-on", "wait_s:+0%", "--fail-on", "wait_s:-0%"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    let o = infersim(&["compare", s(&base), s(&cand), "--fail-on", "latency:+5%"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such metric"));
}

#[test]
fn traces_are_written_per_replication_and_change_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, traced) = (tmp.path().join("plain"), tmp.path().join("traced"));
    run(&plain, &["--reps", "2"]);
    run(&traced, &["--reps", "2", "--trace", "requests", "--set", "simulation.sample_interval_s=10"]);
    assert_eq!(
        fs::read(plain.join("replications.parquet")).unwrap(),
        fs::read(traced.join("replications.parquet")).unwrap(),
        "tracing must not change what is simulated"
    );
    assert!(!plain.join("traces").exists());
    assert_eq!(manifest(&traced)["trace"], "requests");
    for rep in 0..2 {
        let dir = traced.join(format!("traces/point=0/rep={rep}"));
        let requests = read(dir.join("requests.parquet"));
        assert_eq!(requests.height(), 4000, "one row per customer");
        let col = |name: &str| requests.column(name).unwrap().f64().unwrap().clone();
        let (arrival, start, finish, latency) = (col("arrival_s"), col("start_s"), col("finish_s"), col("latency_s"));
        for i in 0..requests.height() {
            let (a, s, f, l) =
                (arrival.get(i).unwrap(), start.get(i).unwrap(), finish.get(i).unwrap(), latency.get(i).unwrap());
            assert!(a <= s && s <= f, "row {i}: arrival {a} start {s} finish {f}");
            assert!((l - (f - a)).abs() < 1e-9);
        }
        let outcome = requests.column("outcome").unwrap().str().unwrap().clone();
        assert!((0..outcome.len()).all(|i| outcome.get(i) == Some("served")), "no capacity, nobody rejected");
        let ts = read(dir.join("timeseries.parquet"));
        assert_eq!(ts.get_column_names()[0].as_str(), "t_h");
        let t_s = ts.column("t_s").unwrap().f64().unwrap().clone();
        assert_eq!(t_s.get(1), Some(10.0));
        let n = |c: &str| ts.column(c).unwrap().u32().unwrap().clone();
        let (q, b, in_sys) = (n("queue_len"), n("busy_servers"), n("in_system"));
        assert!((0..ts.height()).all(|i| q.get(i).unwrap() + b.get(i).unwrap() == in_sys.get(i).unwrap()));
    }
    // A resume must keep the trace level.
    let o = infersim(&[
        "run",
        "mmc",
        "-q",
        "--out",
        s(&traced),
        "--resume",
        "--reps",
        "2",
        "--set",
        "simulation.customers=4000",
        "--set",
        "simulation.warmup_customers=400",
        "--set",
        "simulation.sample_interval_s=10",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("trace level"));
}

#[test]
fn plot_draws_png_and_svg_for_traces_and_sweeps() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("sweep.toml");
    let text = include_str!("../../../data/scenarios/mmc.toml").to_string() + "\n[sweep]\nstation.servers = [4, 5]\n";
    fs::write(&scenario, text).unwrap();
    let out = tmp.path().join("b");
    run(&out, &[s(&scenario), "--reps", "3", "--trace", "requests", "--set", "simulation.sample_interval_s=30"]);
    let o = infersim(&["plot", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plots = out.join("plots");
    for stem in ["timeseries_queue_len", "timeseries_busy_servers", "latency_cdf", "sweep_wait_s", "sweep_p_wait"] {
        let png = fs::read(plots.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png is a PNG");
        assert!(png.len() > 10_000, "{stem}.png is nearly empty");
        let svg = fs::read_to_string(plots.join(format!("{stem}.svg"))).unwrap();
        // Trace charts have a line per point; sweep charts put the swept key on the x axis.
        let expected = if stem.starts_with("sweep") { "station.servers" } else { "station.servers = 5" };
        assert!(svg.contains("<svg") && svg.contains(expected), "{stem}.svg lacks {expected}");
    }
    assert!(!plots.join("timeseries_point.png").exists(), "hive columns are not state");
    // A metric that is zero at every point (no capacity, no blocking) has no chart;
    // nor does a station have token latencies.
    assert!(!plots.join("sweep_p_block.png").exists(), "an all-zero metric is not drawn");
    assert!(!plots.join("ttft_cdf.png").exists());
    let o = infersim(&["plot", s(&out), "--x", "station.arrival_rate_per_s"]);
    assert_eq!(o.status.code(), Some(2), "only a swept key can be the x axis");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a swept key of this batch; swept: station.servers"));
    // A batch without traces or sweep has nothing to draw, and says so.
    let bare = tmp.path().join("bare");
    run(&bare, &["--reps", "2"]);
    let o = infersim(&["plot", s(&bare)]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to plot"));
}

#[test]
fn serving_request_traces_account_for_every_request_and_all_energy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("serving");
    // Overload 8 GPUs (60 requests/s) so that some chat requests time out.
    let o = infersim(&[
        "run",
        "serving",
        "-q",
        "--out",
        s(&out),
        "--reps",
        "2",
        "--trace",
        "requests",
        "--set",
        "simulation.duration_s=300",
        "--set",
        "simulation.warmup_s=0",
        "--set",
        "serving.arrivals.rate_per_s=60",
        "--set",
        "serving.failures.mtbf_h=0.02",
        "--set",
        "serving.failures.mttr_h=0.005",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reps = read(out.join("replications.parquet"));
    let metric = |name: &str, row: usize| reps.column(name).unwrap().f64().unwrap().get(row).unwrap();
    for rep in 0..2usize {
        let requests = read(out.join(format!("traces/point=0/rep={rep}/requests.parquet")));
        let outcome = requests.column("outcome").unwrap().str().unwrap().clone();
        let count = |o: &str| (0..outcome.len()).filter(|&i| outcome.get(i) == Some(o)).count() as f64;
        assert_eq!(requests.height() as f64, metric("requests", rep));
        assert_eq!(count("served"), metric("served", rep));
        assert_eq!(count("timed_out"), metric("timed_out", rep));
        assert_eq!(count("rejected"), metric("rejected", rep));
        assert_eq!(count("lost"), metric("lost", rep));
        assert!(metric("lost", rep) > 0.0, "failing GPUs lose their batches");
        let outcomes = count("served") + count("timed_out") + count("rejected") + count("lost");
        assert_eq!(outcomes, requests.height() as f64, "arrivals = served + rejected + timed_out + lost");
        assert!(metric("timed_out", rep) > 0.0, "overload makes some requests give up");
        assert!(metric("truncated", rep) > 0.0, "a 2048-token limit truncates some code requests");
        let f = |c: &str| requests.column(c).unwrap().f64().unwrap().clone();
        let (arrival, start, finish) = (f("arrival_s"), f("start_s"), f("finish_s"));
        for i in 0..requests.height() {
            if outcome.get(i) == Some("served") {
                assert!(
                    arrival.get(i).unwrap() <= start.get(i).unwrap() && start.get(i).unwrap() <= finish.get(i).unwrap()
                );
            }
        }
        let shares: f64 = f("energy_kwh").into_no_null_iter().sum();
        assert!(
            (shares - metric("energy_gpu_busy_kwh", rep)).abs() < 1e-9,
            "per-request energy adds up to GPU busy energy"
        );
        let parts = ["energy_gpu_busy_kwh", "energy_gpu_idle_kwh", "energy_baseline_kwh", "energy_overhead_kwh"];
        let sum: f64 = parts.iter().map(|p| metric(p, rep)).sum();
        assert!((sum - metric("energy_kwh", rep)).abs() < 1e-9 * sum, "total energy is the sum of its parts");
    }
}

#[test]
fn a_recorded_trace_is_replayed_exactly_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // A trace beside its scenario, named relative to it.
    let mut csv = String::from("timestamp_s,task,prompt_tokens,output_tokens,user\n");
    for i in 0..500 {
        let task = if i % 4 == 0 { "code" } else { "chat" };
        csv += &format!("{:.3},{task},{},{},u{i}\n", i as f64 * 0.25, 100 + i, 50,);
    }
    fs::write(tmp.path().join("trace.csv"), &csv).unwrap();
    let text = include_str!("../../../data/scenarios/serving.toml")
        .replace("kind = \"poisson\"\nrate_per_s = 20.0", "kind = \"trace\"\npath = \"trace.csv\"")
        .replace("duration_s = 1800.0", "duration_s = 100.0")
        .replace("warmup_s = 120.0", "warmup_s = 0.0");
    let scenario = tmp.path().join("replay.toml");
    fs::write(&scenario, text).unwrap();
    let out = tmp.path().join("out");
    let o = infersim(&["run", s(&scenario), "-q", "--out", s(&out), "--reps", "2", "--trace", "requests"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
    // Arrivals at 0, 0.25, ... below the 100 s horizon: 400 of the 500 rows.
    assert_eq!(requests.height(), 400);
    let arrival = requests.column("arrival_s").unwrap().f64().unwrap().clone();
    let mut times: Vec<f64> = arrival.into_no_null_iter().collect();
    times.sort_by(f64::total_cmp);
    assert!(times.iter().enumerate().all(|(i, t)| (t - i as f64 * 0.25).abs() < 1e-9));
    let tokens = requests.column("tokens").unwrap().u32().unwrap().clone();
    let ids = requests.column("request_id").unwrap().u64().unwrap().clone();
    for i in 0..requests.height() {
        let id = ids.get(i).unwrap() as u32;
        assert_eq!(tokens.get(i), Some(100 + id + 50), "tokens come from the trace");
    }
    let task = requests.column("task").unwrap().str().unwrap().clone();
    let code = (0..task.len()).filter(|&i| task.get(i) == Some("code")).count();
    assert_eq!(code, 100, "tasks come from the trace");

    // Out of order: one line, exit code 2, nothing written.
    fs::write(tmp.path().join("trace.csv"), "timestamp_s\n1.0\n3.0\n2.0\n").unwrap();
    let never = tmp.path().join("never");
    let o = infersim(&["run", s(&scenario), "--out", s(&never)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("trace.csv:4: timestamp_s = 2 s goes back in time"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
    assert!(!never.exists());
    fs::write(tmp.path().join("trace.csv"), "timestamp_s\n1.0\nlater\n").unwrap();
    let o = infersim(&["run", s(&scenario), "--out", s(&never)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("trace.csv:3: timestamp_s = \"later\" is not a finite number"));
    assert!(!never.exists());
}

#[test]
fn serving_timeseries_tracks_power_energy_and_carbon() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ts");
    let o = infersim(&[
        "run",
        "serving",
        "-q",
        "--out",
        s(&out),
        "--reps",
        "2",
        "--trace",
        "timeseries",
        "--set",
        "simulation.duration_s=600",
        "--set",
        "simulation.warmup_s=0",
        "--set",
        "simulation.sample_interval_s=10",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reps = read(out.join("replications.parquet"));
    for rep in 0..2usize {
        let dir = out.join(format!("traces/point=0/rep={rep}"));
        assert!(!dir.join("requests.parquet").exists(), "timeseries level writes no request rows");
        let ts = read(dir.join("timeseries.parquet"));
        let names: Vec<String> = ts.get_column_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names[0], "t_h");
        for c in ["queue_len", "busy_gpus", "power_kw", "energy_kwh", "carbon_kg"] {
            assert!(names.contains(&c.to_string()), "{c} missing: {names:?}");
        }
        let energy = ts.column("energy_kwh").unwrap().f64().unwrap().clone();
        let last = energy.get(ts.height() - 1).unwrap();
        let total = reps.column("energy_kwh").unwrap().f64().unwrap().get(rep).unwrap();
        // The last sample is at most 10 s before the end, when the facility draws
        // at most (8 x 400 W + 2 x 300 W) x 1.2 = 4.56 kW: 0.0127 kWh.
        assert!(last <= total + 1e-12 && total - last <= 0.0127, "last sample {last} vs total {total}");
        let carbon = ts.column("carbon_kg").unwrap().f64().unwrap().get(ts.height() - 1).unwrap();
        assert!((carbon - 0.394 * last).abs() < 1e-12);
    }
    let o = infersim(&["plot", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("plots/timeseries_power_kw.png").is_file());
}

#[test]
fn batch_means_give_an_interval_from_one_long_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("long");
    // One replication of M/M/4 at rho 0.9 with 200 000 customers, traced per customer.
    let o = infersim(&[
        "run",
        "mmc",
        "-q",
        "--reps",
        "1",
        "--seed",
        "5",
        "--trace",
        "requests",
        "--set",
        "simulation.customers=200000",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = infersim(&["analyze", s(&out), "--batch-means", "wait_s", "--batches", "20"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("batch means (one long run each"));
    // analyze never rewrites the batch: its tables go to DIR/analysis.
    let csv = fs::read_to_string(out.join("analysis").join("batch_means.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let field = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!((field("series"), field("warmup_rule"), field("batches")), ("wait_s", "mser5", "20"));
    let (low, high): (f64, f64) = (field("ci_low").parse().unwrap(), field("ci_high").parse().unwrap());
    // Erlang C: Wq = 1.96938 s for M/M/4 at arrival rate 3.6 and service rate 1.
    assert!(low < 1.96938 && 1.96938 < high, "[{low}, {high}]");
    let bad = infersim(&["analyze", s(&out), "--batch-means", "no_such_column"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no trace has a column `no_such_column`"));
}
