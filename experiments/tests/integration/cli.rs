//! End-to-end runs of the `infersim` binary, as a user types them.

use std::fs;
use std::process::{Command, Output};

/// Runs the binary in a fresh temporary working directory, so a default output
/// directory never lands in the source tree.
fn infersim(args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_infersim")).args(args).current_dir(cwd.path()).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SMALL: [&str; 4] = ["--set", "simulation.customers=4000", "--set", "simulation.warmup_customers=400"];

/// The table rows (after the title, timing and output lines), which must not depend on threads.
fn table(o: &Output) -> String {
    stdout(o).lines().skip(3).collect::<Vec<_>>().join("\n")
}

#[test]
fn default_run_prints_intervals_next_to_theory() {
    let o = infersim(&[&["run", "mmc", "--reps", "4"][..], &SMALL].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("scenario mmc"), "{out}");
    let wait = out.lines().find(|l| l.starts_with("wait_s")).expect("a wait_s row");
    // metric, n, mean, [low, high], analytic
    let fields: Vec<&str> = wait.split_whitespace().collect();
    assert_eq!(fields[1], "4");
    let analytic: f64 = fields.last().unwrap().parse().unwrap();
    assert!((analytic - 1.96938).abs() < 1e-4, "{wait}");
}

#[test]
fn results_are_identical_for_one_and_two_threads() {
    let one = infersim(&[&["run", "mmc", "--reps", "5", "--seed", "3", "--threads", "1"][..], &SMALL].concat());
    let two = infersim(&[&["run", "mmc", "--reps", "5", "--seed", "3", "--threads", "2"][..], &SMALL].concat());
    assert!(one.status.success() && two.status.success());
    assert_eq!(table(&one), table(&two));
    let other_seed = infersim(&[&["run", "mmc", "--reps", "5", "--seed", "4", "--threads", "2"][..], &SMALL].concat());
    assert_ne!(table(&one), table(&other_seed));
}

#[test]
fn bad_input_is_one_clear_line_and_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "nosuch"], "no scenario named `nosuch`"),
        (&["run", "mmc", "--set", "station.sevrers=2"], "did you mean `station.servers`?"),
        // Only the scenario's own world's keys are suggested.
        (
            &["run", "--set", "station.servers=2"],
            "[station] belongs to the station world, and this scenario is a serving one",
        ),
        (&["run", "--set", "serving.replicas_per_nod=2"], "did you mean `serving.replicas_per_node`?"),
        // Each engine's own keys: the static engine's suggestions on a static scenario.
        (&["run", "serving", "--set", "serving.gpus_per_nod=2"], "did you mean `serving.gpus_per_node`?"),
        (&["run", "mmc", "--set", "station.arrival_rate_per_s=-3"], "station.arrival_rate_per_s = -3 is invalid"),
        (&["run", "mmc", "--set", "station.service=weibull"], "one of exponential, deterministic, lognormal"),
        (
            &["run", "--set", "serving.power.pue=0.5"],
            "serving.power.pue = 0.5 is invalid: expected a finite number >= 1",
        ),
        (&["run", "serving", "--set", "serving.max_batch=0"], "serving.max_batch = 0 is invalid"),
        (&["run", "--set", "serving.engine.max_num_seqs=0"], "serving.engine.max_num_seqs = 0 is invalid"),
        (&["run", "--set", "serving.max_batch=4"], "it belongs to the other engine"),
        (&["run", "--set", "serving.gpu=TPU"], "one of the built-in GPUs (H100, B200, A100-80GB, RTX4090, RTXPRO6000)"),
        (&["run", "--set", "simulation.customers=10"], "unknown key `simulation.customers`; this table's keys:"),
        (&["run", "--reps", "0"], "--reps must be at least 1"),
        (&["run", "--threads", "0"], "--threads must be at least 1"),
        (&["validate", "--set", "oops", "mmc"], "expected KEY=VALUE"),
    ];
    for (args, message) in cases {
        let o = infersim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err}");
        assert!(stdout(&o).is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn list_and_validate() {
    let o = infersim(&["list"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("llm-serving "), "the default comes first");
    assert!(stdout(&o).contains("\nmmc "));
    let o = infersim(&["validate", "mmc", "--set", "station.servers=7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("servers = 7"));
}

#[test]
fn a_scenario_file_with_a_typo_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("infersim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("typo.toml");
    let text = include_str!("../../../data/scenarios/mmc.toml").replace("customers = 100000", "customer = 100000");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("customer =")).unwrap() + 1;
    let o = infersim(&["validate", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(2));
    let expected = format!("{}:{line}: unknown key `simulation.customer`", path.display());
    assert!(stderr(&o).contains(&expected), "{}", stderr(&o));
}

#[test]
fn the_default_run_is_the_llm_serving_scenario() {
    let o = infersim(&["run", "--reps", "3", "--set", "simulation.duration_s=60", "--set", "simulation.warmup_s=10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("scenario llm-serving"), "{out}");
    for metric in [
        "ttft_p99_s",
        "tpot_mean_s",
        "goodput_per_s",
        "gpu_energy_per_output_token_j",
        "energy_per_output_token_j",
        "slo_attainment",
        "carbon_kg",
        "cost_usd",
    ] {
        assert!(out.lines().any(|l| l.starts_with(metric)), "{metric} missing from\n{out}");
    }
    assert!(!out.contains("analytic"), "no closed form for this model, so no empty column");
}

#[test]
fn a_profile_used_beyond_its_measured_sizes_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../../data/scenarios/serving.toml");
    let affine = "kind = \"affine\"\nbase_s = 0.08\nper_request_s = 0.02\nper_token_s = 0.0004";
    assert!(text.contains(affine), "the built-in scenario's service section changed; update this test");
    let with_profile = |sizes: &str, latencies: &str| {
        text.replace(
            affine,
            &format!("kind = \"profile\"\nbatch_sizes = {sizes}\nbatch_latency_s = {latencies}\nper_token_s = 0.0004"),
        )
    };
    let short = dir.path().join("short.toml");
    fs::write(&short, with_profile("[1, 2, 4]", "[0.1, 0.12, 0.16]")).unwrap();
    let full = dir.path().join("full.toml");
    fs::write(&full, with_profile("[1, 2, 4, 8]", "[0.1, 0.12, 0.16, 0.24]")).unwrap();
    let small = [
        "--reps",
        "2",
        "--set",
        "simulation.duration_s=300",
        "--set",
        "simulation.warmup_s=30",
        "--set",
        "serving.arrivals.rate_per_s=60",
    ];
    let o = infersim(&[&["run", short.to_str().unwrap()][..], &small].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: the service profile was used outside its measured batch sizes"),
        "{}",
        stderr(&o)
    );
    let row = stdout(&o).lines().find(|l| l.starts_with("extrapolated_lookups")).map(str::to_string).unwrap();
    assert!(!row.split_whitespace().nth(2).unwrap().starts_with('0'), "{row}");
    let o = infersim(&[&["run", full.to_str().unwrap()][..], &small].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn analyze_never_rewrites_the_batch_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let o = infersim(&[&["run", "mmc", "--reps", "3", "--out", &s(&out)][..], &SMALL].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = fs::read(out.join("summary.csv")).unwrap();
    let o = infersim(&["analyze", &s(&out), "--confidence", "0.9"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read(out.join("summary.csv")).unwrap(), before, "the 95% summary is untouched");
    let written = fs::read_to_string(out.join("analysis").join("summary.csv")).unwrap();
    assert!(written.contains("0.9"), "the 90% summary went to DIR/analysis");
}

/// Messages that say what to do: a resume hint that names every option the batch
/// depends on, a resume of another scenario that names what differs, a missing
/// directory that is bad input, a `--set` that pins a swept key said to do so, a
/// profile directory given at the model's level taken with its `tp` directory.
#[test]
fn messages_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cut");
    let run = |extra: &[&str]| {
        let args = [&["run", "mmc", "-q", "--out", out.to_str().unwrap(), "--seed", "3"][..], extra].concat();
        Command::new(env!("CARGO_BIN_EXE_infersim")).args(args).output().unwrap()
    };
    // A batch cut short at once by a raised interrupt is the same as any interrupted
    // one; here, a batch interrupted by SIGINT a moment after it starts.
    let mut child = Command::new(env!("CARGO_BIN_EXE_infersim"))
        .args(["run", "mmc", "-q", "--out", out.to_str().unwrap(), "--seed", "3", "--reps", "100000"])
        .args(["--set", "station.service=deterministic", "--set", "simulation.customers=20000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !out.join("parts.jsonl").exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let hint = text.lines().find(|l| l.starts_with("interrupted:")).expect("a resume hint");
    for part in [
        "--reps 100000",
        "--seed 3",
        "--set station.service=deterministic",
        "--set simulation.customers=20000",
        "--resume",
    ] {
        assert!(hint.contains(part), "{hint}");
    }
    let o = run(&["--reps", "100000", "--set", "station.service=deterministic", "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("differs in simulation.customers: 20000 -> 100000"), "{}", stderr(&o));
    for args in [&["compare", "/nonexistent/a", "/nonexistent/b"][..], &["plot", "/nonexistent/a"]] {
        let o = infersim(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("no such directory"), "{}", stderr(&o));
    }
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        include_str!("../../../data/scenarios/mmc.toml").to_string() + "\n[sweep]\nstation.servers = [4, 5]\n",
    )
    .unwrap();
    let o = infersim(&[
        "run",
        sweep.to_str().unwrap(),
        "--reps",
        "2",
        "-q",
        "--set",
        "station.servers=6",
        "--set",
        "simulation.customers=500",
        "--set",
        "simulation.warmup_customers=0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("--set station.servers pins a swept key"), "{}", stderr(&o));
    let model_dir = "serving.step_time.profile_dir=llm-serving/profiles/RTXPRO6000/Llama-3.1-8B";
    let o = infersim(&["validate", "vllm-replay", "--set", model_dir]);
    assert!(o.status.success(), "the model's directory is taken with tp1/: {}", stderr(&o));
    let o = infersim(&["validate", "vllm-replay", "--set", model_dir, "--set", "serving.tp=2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("or a model's directory with tp2/ in it"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("dense.csv is") && !stderr(&o).contains("video"), "{}", stderr(&o));
}
