//! The café through the same command line as infersim's own worlds, in process:
//! run, plot, compare (with a gate), calibrate against a till log, and refusal of bad
//! input.

use std::path::Path;
use std::process::ExitCode;

use infersim::registry::Registry;
use infersim_example_coffee::CoffeeWorld;

fn registry() -> Registry {
    Registry::builtin().with::<CoffeeWorld>().with_default_scenario("cafe")
}

/// Runs `coffee ARGS...` in this process.
fn coffee(args: &[&str]) -> ExitCode {
    infersim::cli::main_with(registry(), std::iter::once("coffee").chain(args.iter().copied()))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_cafe_runs_plots_compares_and_calibrates_through_the_infersim_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, three) = (tmp.path().join("two"), tmp.path().join("three"));

    // The default scenario is the café's; traces and charts as for any world.
    assert_eq!(coffee(&["run", "--reps", "6", "--trace", "requests", "-q", "--out", path(&two)]), ExitCode::SUCCESS);
    assert!(two.join("replications.parquet").exists() && two.join("summary.csv").exists());
    assert_eq!(coffee(&["plot", path(&two)]), ExitCode::SUCCESS);
    assert!(two.join("plots/latency_cdf.png").exists(), "the world's latency chart");
    assert!(two.join("plots/timeseries_queue_len.png").exists(), "its sampled queue");

    // A third machine: compared pair by pair with common random numbers, the gate on
    // latency passes one way and fails the other.
    let more = ["--reps", "6", "-q", "--set", "coffee.machines=3"];
    assert_eq!(coffee(&[&["run", "cafe", "--out", path(&three)][..], &more].concat()), ExitCode::SUCCESS);
    let gate = ["--fail-on", "latency_mean_s:+5%"];
    assert_eq!(coffee(&[&["compare", path(&two), path(&three)][..], &gate].concat()), ExitCode::SUCCESS);
    assert_eq!(coffee(&[&["compare", path(&three), path(&two)][..], &gate].concat()), ExitCode::from(1));

    // A till log of a café whose cups take 180 s on average (the world run at that
    // value, another seed), read by the world's own reader and fitted.
    let truth = tmp.path().join("truth");
    let truth_args = ["run", "cafe", "--reps", "1", "--seed", "99", "--trace", "requests", "-q", "--out"];
    let setting = ["--set", "coffee.brew_mean_s=180", "--set", "simulation.duration_h=40"];
    assert_eq!(coffee(&[&truth_args[..], &[path(&truth)], &setting].concat()), ExitCode::SUCCESS);
    let trace = infersim::trace::trace_dir(&truth, 0, 0).join("requests.parquet");
    let requests = infersim::inputs::read_parquet(path(&trace)).unwrap();
    let (arrival, latency) = (requests.column("arrival_s").unwrap(), requests.column("latency_s").unwrap());
    let mut till = String::from("ordered_at_s,handed_over_s\n");
    for row in 0..requests.rows() {
        if let (Ok(a), Ok(l)) = (requests.number(arrival, row), requests.number(latency, row)) {
            till.push_str(&format!("{a},{}\n", a + l));
        }
    }
    let till_path = tmp.path().join("till.csv");
    std::fs::write(&till_path, till).unwrap();
    let fitted = tmp.path().join("fitted");
    let calibrate = [
        "calibrate",
        "cafe",
        "--observed",
        path(&till_path),
        "--param",
        "coffee.brew_mean_s=60..400",
        "--target",
        "latency_mean_s",
        "--reps",
        "4",
        "--budget",
        "40",
        "--out",
        path(&fitted),
    ];
    assert_eq!(coffee(&calibrate), ExitCode::SUCCESS);
    let scenario = std::fs::read_to_string(fitted.join("scenario.toml")).unwrap();
    let brew_s: f64 = scenario
        .lines()
        .find_map(|l| l.strip_prefix("brew_mean_s = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the calibrated scenario sets brew_mean_s");
    assert!((120.0..=260.0).contains(&brew_s), "fitted {brew_s} s, truth 180 s");
}

#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    assert_eq!(coffee(&["run", "cafe", "--set", "coffee.machines=0", "--out", path(&out)]), ExitCode::from(2));
    assert!(!out.exists(), "nothing written");
    assert_eq!(coffee(&["run", "cafe", "--set", "coffee.machine=2"]), ExitCode::from(2));
}
