//! A drifting model on the fleet: its loss follows the retraining world's when the
//! drift law, the monitor and the jobs are the same, and its jobs take GPUs from a
//! training pool or from serving.

use std::path::Path;

use crate::common::{floats, infersim_ok, optional_floats, read, s};

/// Drift, band, policy and jobs both worlds share: 5.6e-6 per request at 0.5 requests/s
/// moves the loss 0.01 an hour; a job of 5,000 samples on 2 GPUs at 1,000 samples per
/// GPU-hour trains for 2.5 h and lowers the loss by the model file's 0.189.
const DRIFT: f64 = 5.6e-6;
const SHARED_TABLES: &str = r#"
[quality]
kind = "linear"
best_loss = 1.8
worst_loss = 2.8
"#;

fn retraining_world() -> String {
    format!(
        r#"description = "the retraining world, reference"
world = "retraining"
[arrivals]
kind = "deterministic"
rate_per_s = 0.5

[fleet]
gpus = 2
service_s = 0.0

[drift]
per_request = {DRIFT}
initial_loss = 1.931
{SHARED_TABLES}
[monitor]
policy = "hysteresis"
upper = 2.0
lower = 1.9

[training]
pool = "dedicated"
dedicated_gpus = 2
gpus_per_job = 2
samples_per_gpu_h = 1000.0
samples_per_job = 5000.0
base_samples = 5000.0
loss = {{ kind = "vensim", scale = 3398.0, offset = 1400.0 }}

[energy]
per_request_kwh = 0.0
idle_kwh_per_h = 0.0

[grid]
kind = "constant"
kg_per_kwh = 0.4

[prices]
energy_usd_per_kwh = 0.1
gpu_usd_per_hour = 0.0

[simulation]
duration_h = 48.0
sample_interval_s = 3600.0
"#
    )
}

/// The same drifting model served token by token by two H100 replicas, retrained on a
/// training pool of two H100s; `training` replaces the `[serving.training]` table.
fn fleet(training: &str) -> String {
    format!(
        r#"description = "a drifting model on a fleet"
world = "serving"
[serving]
routing = "least_outstanding_requests"

[serving.engine]
kind = "continuous"

[serving.step_time]
kind = "roofline"

[[serving.pools]]
name = "chat"
model = "Llama-3.1-8B"
gpu = "H100"
replicas = 2

[[serving.pools]]
name = "trainer"
model = "Llama-3.1-8B"
gpu = "H100"
replicas = 2
role = "training"

[serving.arrivals]
kind = "deterministic"
rate_per_s = 0.5

[[serving.tasks]]
name = "chat"
weight = 1.0
slo_s = 30.0
ttft_slo_s = 1.0
prompt_tokens = {{ kind = "fixed", tokens = 200 }}
output_tokens = {{ kind = "fixed", tokens = 50 }}

[serving.drift]
per_request = {DRIFT}
initial_loss = 1.931

[serving.quality]
kind = "linear"
best_loss = 1.8
worst_loss = 2.8

[serving.monitor]
policy = "hysteresis"
upper = 2.0
lower = 1.9

{training}

[serving.power]
node_baseline_w = 0.0
pue = 1.0

[serving.grid]
kind = "constant"
kg_per_kwh = 0.4

[serving.prices]
energy_usd_per_kwh = 0.1
gpu_usd_per_hour = 2.0

[simulation]
duration_s = 172800.0
sample_interval_s = 3600.0
"#
    )
}

const DEDICATED: &str = r#"[serving.training]
pool = "dedicated"
samples_per_gpu_h = 1000.0
samples_per_job = 5000.0
base_samples = 5000.0
loss = { kind = "vensim", scale = 3398.0, offset = 1400.0 }
"#;

fn run(dir: &Path, name: &str, text: &str, trace: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = dir.join(name);
    infersim_ok(&["run", s(&path), "--reps", "1", "--trace", trace, "--out", s(&out)]);
    out
}

/// The fleet serves a request seconds after it arrives, and its drift counts then;
/// the retraining world serves in no time. So at every hour the fleet's loss is the
/// retraining world's less the drift of the requests in flight (arrived, not yet
/// finished), exactly while both retrain at the same ticks: the test checks that to
/// 1e-9, and that they retrained as often.
#[test]
fn the_fleets_loss_is_the_retraining_worlds_less_the_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let reference = run(dir.path(), "reference", &retraining_world(), "timeseries");
    let fleet_out = run(dir.path(), "fleet", &fleet(DEDICATED), "requests");
    let ref_series = read(reference.join("traces/point=0/rep=0/timeseries.parquet"));
    let (ref_t, ref_loss) = (floats(&ref_series, "t_h"), floats(&ref_series, "loss"));
    let series = read(fleet_out.join("traces/point=0/rep=0/timeseries.parquet"));
    let (t_h, loss) = (floats(&series, "t_h"), optional_floats(&series, "loss"));
    let requests = read(fleet_out.join("traces/point=0/rep=0/requests.parquet"));
    let (arrival, finish) = (floats(&requests, "arrival_s"), floats(&requests, "finish_s"));
    let mut compared = 0;
    for (t, fleet_loss) in t_h.iter().zip(&loss) {
        let Some(fleet_loss) = fleet_loss else { continue };
        let Some(k) = ref_t.iter().position(|r| (r - t).abs() < 1e-9) else { continue };
        let at_s = t * 3600.0;
        let in_flight = arrival.iter().zip(&finish).filter(|&(&a, &f)| a < at_s && f > at_s).count();
        let expected = ref_loss[k] - DRIFT * in_flight as f64;
        assert!(
            (fleet_loss - expected).abs() < 1e-9,
            "hour {t}: fleet {fleet_loss}, reference {} less {in_flight} in flight",
            ref_loss[k]
        );
        compared += 1;
    }
    assert!(compared >= 40, "{compared} hours compared");
    let ours = read(fleet_out.join("replications.parquet"));
    let theirs = read(reference.join("replications.parquet"));
    let retrainings = floats(&ours, "retrainings")[0];
    assert_eq!(retrainings, floats(&theirs, "retrain_completed")[0]);
    assert!(retrainings >= 3.0, "{retrainings} retrainings in 48 h");
    // Two H100s at 76% of 700 W for 2.5 h a job.
    let gpu_h = floats(&ours, "training_gpu_hours")[0];
    assert!((gpu_h - retrainings * 5.0).abs() < 1e-9, "{gpu_h} GPU-hours");
    let kwh = floats(&ours, "training_energy_kwh")[0];
    assert!((kwh - retrainings * 5.0 * 0.76 * 0.7).abs() < 1e-6, "{kwh} kWh");
    // The model's replica-hours are its serving pool's: a training pool serves nothing.
    let (pools, models) = (read(fleet_out.join("pools.parquet")), read(fleet_out.join("models.parquet")));
    let chat = crate::common::strings(&pools, "pool").iter().position(|p| p.as_deref() == Some("chat")).unwrap();
    assert_eq!(floats(&models, "replica_hours")[0], floats(&pools, "replica_hours")[chat]);
}

/// A shared job takes a serving replica: it drains, trains and comes back after a
/// cold start, and every request is still accounted for.
#[test]
fn a_shared_job_takes_a_replica_out_of_serving_and_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let shared = DEDICATED.replace("pool = \"dedicated\"", "pool = \"shared\"\nshared_replicas = 1");
    let text = fleet(&shared).replace(
        "[[serving.pools]]\nname = \"trainer\"\nmodel = \"Llama-3.1-8B\"\ngpu = \"H100\"\nreplicas = 2\nrole = \"training\"\n",
        "",
    );
    let out = run(dir.path(), "shared", &text, "timeseries");
    let reps = read(out.join("replications.parquet"));
    let retrainings = floats(&reps, "retrainings")[0];
    assert!(retrainings >= 3.0, "{retrainings}");
    // One replica (one GPU) for 5,000 / 1,000 h = 5 h a job.
    assert!((floats(&reps, "training_gpu_hours")[0] - retrainings * 5.0).abs() < 1e-9);
    let f = |m: &str| floats(&reps, m)[0];
    assert_eq!(f("arrived"), f("served") + f("timed_out") + f("lost") + f("rejected"));
    let series = read(out.join("traces/point=0/rep=0/timeseries.parquet"));
    let training = optional_floats(&series, "replicas_training");
    assert!(training.contains(&Some(1.0)), "a replica trained at some hour");
    assert!(training.iter().all(|t| t.is_none_or(|t| t <= 1.0)));
    // While one of the two replicas trains, TTFT is measured apart.
    // Every window but one cut by the run's end holds a job's 5 h, its drain and its cold start.
    let window_h = f("training_window_h");
    assert!(window_h > (retrainings - 1.0) * 5.0 && window_h < (retrainings + 1.0) * 5.1, "{window_h} h of windows");
    assert!(optional_floats(&reps, "ttft_p99_training_s")[0].is_some());
}

#[test]
fn training_tables_come_together_and_name_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let text = fleet(DEDICATED).replace("[serving.monitor]\npolicy = \"hysteresis\"\nupper = 2.0\nlower = 1.9\n", "");
    let path = dir.path().join("no-monitor.toml");
    std::fs::write(&path, text).unwrap();
    let err = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(err.contains("serving.monitor"), "{err}");
    let text = fleet(DEDICATED).replace("policy = \"hysteresis\"", "policy = \"vensim\"");
    std::fs::write(&path, text).unwrap();
    let err = crate::common::infersim_fails(&["validate", s(&path)]);
    assert!(err.contains("serving.monitor.policy") && err.contains("none, hysteresis"), "{err}");
}

/// Users' scores as the monitor's signal: half the answers get a score, each
/// round(1 + 4 x quality) with no noise (the shared feedback model), and the monitor
/// retrains on their hourly mean.
#[test]
fn users_scores_drive_the_monitor_and_reach_the_requests_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = fleet(DEDICATED).replace(
        "[serving.monitor]\npolicy = \"hysteresis\"\nupper = 2.0\nlower = 1.9\n",
        "[serving.monitor]\npolicy = \"hysteresis\"\nupper = 2.0\nlower = 1.9\nsignal = \"ics\"\n\
         ics_start_below = 4.0\nics_stop_above = 4.5\nfeedback_fraction = 0.5\n",
    );
    let out = run(dir.path(), "ics", &text, "requests");
    let requests = read(out.join("traces/point=0/rep=0/requests.parquet"));
    let (quality, score) = (floats(&requests, "quality"), optional_floats(&requests, "user_score"));
    let scored: Vec<(f64, f64)> = quality.iter().zip(&score).filter_map(|(q, s)| s.map(|s| (*q, s))).collect();
    for &(q, s) in &scored {
        assert_eq!(s, (1.0 + 4.0 * q).round().clamp(1.0, 5.0), "quality {q}");
    }
    let share = scored.len() as f64 / quality.len() as f64;
    // 86,400 answers: 0.5 within 1% (about 6 standard deviations).
    assert!((share - 0.5).abs() < 0.01, "{share} of answers scored");
    let reps = read(out.join("replications.parquet"));
    let ics = floats(&reps, "ics_mean")[0];
    assert!((1.0..=5.0).contains(&ics), "{ics}");
    assert!(floats(&reps, "retrainings")[0] >= 1.0);
}

/// The built-in's first direction: retraining lowers the loss and costs training
/// energy. Ten days, five paired replications (common random numbers): every pair
/// must agree, a one-sided sign test at 2^-5 = 0.031 < 0.05.
#[test]
fn retraining_lowers_the_loss_and_costs_training_energy() {
    let dir = tempfile::tempdir().unwrap();
    let path = builtin_swept(dir.path(), "direction", "[\"none\", \"hysteresis\"]", "[\"dedicated\"]");
    let out = dir.path().join("direction");
    infersim_ok(&["run", s(&path), "--reps", "5", "--out", s(&out), "--set", "simulation.duration_s=864000"]);
    let reps = read(out.join("replications.parquet"));
    let (points, loss, energy) =
        (floats(&reps, "point"), floats(&reps, "loss_mean"), floats(&reps, "training_energy_kwh"));
    let of = |p: f64| -> Vec<(f64, f64)> {
        points.iter().zip(loss.iter().zip(&energy)).filter(|(q, _)| **q == p).map(|(_, (l, e))| (*l, *e)).collect()
    };
    let (none, hysteresis) = (of(0.0), of(1.0));
    assert_eq!((none.len(), hysteresis.len()), (5, 5));
    for ((l0, e0), (l1, e1)) in none.iter().zip(&hysteresis) {
        assert!(l1 < l0, "loss {l1} with retraining against {l0} without");
        assert!(*e0 == 0.0 && *e1 > 0.0, "training energy {e0} without, {e1} with");
    }
}

/// The built-in's second direction, under a load that needs both replicas (6
/// requests/s on average for 4 hours, drift fast enough to retrain within the first):
/// a shared job, which takes one of the two serving replicas, raises TTFT p99 inside
/// training windows against a dedicated pool. Five paired replications, every pair in
/// that direction: a one-sided sign test at 2^-5 = 0.031 < 0.05.
#[test]
fn shared_training_raises_ttft_inside_training_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = builtin_swept(dir.path(), "loaded", "[\"hysteresis\"]", "[\"dedicated\", \"shared\"]");
    let out = dir.path().join("loaded");
    let sets = ["simulation.duration_s=14400", "serving.arrivals.rate_per_s=6", "serving.drift.per_request=3.2e-6"];
    let mut args = vec!["run", s(&path), "--reps", "5", "--out", s(&out)];
    for set in &sets {
        args.extend(["--set", set]);
    }
    infersim_ok(&args);
    let reps = read(out.join("replications.parquet"));
    let (points, ttft) = (floats(&reps, "point"), optional_floats(&reps, "ttft_p99_training_s"));
    let of = |p: f64| -> Vec<f64> {
        points.iter().zip(&ttft).filter(|(q, _)| **q == p).map(|(_, t)| t.expect("a training window")).collect()
    };
    let (dedicated, shared) = (of(0.0), of(1.0));
    assert_eq!((dedicated.len(), shared.len()), (5, 5));
    for (d, s) in dedicated.iter().zip(&shared) {
        assert!(s > d, "TTFT p99 in training windows: shared {s} s, dedicated {d} s");
    }
}

/// The built-in `fleet-retraining` with its sweep cut to these policies and training
/// pools (TOML lists), written to `dir/name.toml`.
fn builtin_swept(dir: &Path, name: &str, policies: &str, pools: &str) -> std::path::PathBuf {
    let builtin =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/fleet-retraining.toml"))
            .unwrap();
    let text = builtin
        .replace(
            "\"serving.monitor.policy\" = [\"none\", \"hysteresis\", \"periodic\", \"carbon_aware\"]",
            &format!("\"serving.monitor.policy\" = {policies}"),
        )
        .replace(
            "\"serving.training.pool\" = [\"dedicated\", \"shared\"]",
            &format!("\"serving.training.pool\" = {pools}"),
        );
    assert_ne!(text, builtin, "the built-in's sweep is as this test expects");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}
