//! IPA's variant and batch controller on the fleet: it plans with the pipeline world's
//! planner, its plans take effect through cold starts and drains, and the energy-aware
//! objective spends less energy per token than the accuracy-only one.

use std::path::{Path, PathBuf};

use crate::common::{floats, infersim_fails, infersim_ok, read, s, strings};

/// The built-in `fleet-adaptation` cut to `hours`, with its sweep replaced by `sweep`
/// and `edit` applied, written to `dir/name.toml`.
fn adaptation(dir: &Path, name: &str, hours: f64, sweep: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let builtin =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/scenarios/fleet-adaptation.toml"))
            .unwrap();
    let text = builtin
        .replace(
            "\"serving.adaptation.policy\" = [\"ipa\", \"energy_aware\", \"fixed\"]",
            &format!("\"serving.adaptation.policy\" = {sweep}"),
        )
        .replace("duration_s = 86400.0", &format!("duration_s = {}", hours * 3600.0));
    assert_ne!(text, builtin, "the built-in is as this test expects");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// Paired over 5 replications of a day (the same requests: common random numbers),
/// the energy-aware controller spends less GPU energy per output token than the
/// accuracy-only one in every replication (one-sided sign test, p = 0.5^5 = 0.031),
/// its SLO attainment within 2 points of the accuracy-only one's in each, and its
/// accuracy lower (it answers with the 8B at night).
#[test]
fn energy_aware_adaptation_spends_less_energy_per_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = adaptation(dir.path(), "a", 24.0, "[\"ipa\", \"energy_aware\"]", |t| t);
    let out = dir.path().join("out");
    infersim_ok(&["run", s(&path), "--out", s(&out), "--reps", "5", "--threads", "2"]);
    let df = read(out.join("replications.parquet"));
    let point = floats(&df, "point");
    let of = |metric: &str, p: f64| -> Vec<f64> {
        floats(&df, metric).into_iter().zip(&point).filter(|(_, q)| **q == p).map(|(v, _)| v).collect()
    };
    let energy = |p| of("gpu_energy_per_output_token_j", p);
    for (ipa, aware) in energy(0.0).iter().zip(energy(1.0)) {
        assert!(aware < *ipa, "GPU energy per output token: energy-aware {aware} J, accuracy-only {ipa} J");
    }
    let slo = |p| of("slo_attainment", p);
    for (ipa, aware) in slo(0.0).iter().zip(slo(1.0)) {
        assert!((aware - ipa).abs() <= 0.02, "SLO attainment: energy-aware {aware}, accuracy-only {ipa}");
    }
    let accuracy = |p| of("variant_accuracy_mean", p);
    for (ipa, aware) in accuracy(0.0).iter().zip(accuracy(1.0)) {
        assert!(aware < *ipa && (73.0..=86.0).contains(&aware), "accuracy: energy-aware {aware}, accuracy-only {ipa}");
    }
    assert!(of("variant_switches", 1.0).iter().all(|&n| n >= 2.0), "it switches to the 8B and back");
}

/// A fixed plan is applied at the start: the 8B pool on 3 replicas at max_num_seqs 4
/// serves everything (the 70B drains at once), no replica ever runs more than 4
/// requests, and the limit shows in the queue.
#[test]
fn a_fixed_plan_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = adaptation(dir.path(), "f", 1.0, "[\"fixed\"]", |t| {
        t.replace(
            "fixed = { pool = \"llama-70b\", replicas = 2, max_num_seqs = 64 }",
            "fixed = { pool = \"llama-8b\", replicas = 3, max_num_seqs = 4 }",
        )
        .replace("warmup_s = 600.0", "warmup_s = 0.0")
    });
    let out = dir.path().join("out");
    infersim_ok(&["run", s(&path), "--out", s(&out), "--reps", "1"]);
    let df = read(out.join("replications.parquet"));
    let v = |m: &str| floats(&df, m)[0];
    assert_eq!(v("variant_accuracy_mean"), 73.0);
    assert_eq!((v("variant_switches"), v("plans")), (0.0, 1.0));
    assert!(v("running_mean") <= 4.0, "running {}", v("running_mean"));
    // Every request is accounted for (no warm-up: all of them count).
    assert_eq!(v("served") + v("lost") + v("rejected") + v("timed_out"), v("arrived"));
    let pools = read(out.join("pools.parquet"));
    let hours = |pool: &str| {
        let names = strings(&pools, "pool");
        let row = names.iter().position(|n| n.as_deref() == Some(pool)).unwrap();
        floats(&pools, "replica_hours")[row]
    };
    // 3 of the 8B's replicas for the hour; the others and the 70B's went off at once.
    // (The run ends when its last request does, a little after the hour.)
    let (small, large) = (hours("llama-8b"), hours("llama-70b"));
    assert!((3.0..3.1).contains(&small) && large == 0.0, "replica-hours {small}, {large}");
}

/// The controller's keys are checked, naming them.
#[test]
fn a_controller_s_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad_swept = |name: &str, sweep: &str, edit: &dyn Fn(String) -> String| {
        let path = adaptation(dir.path(), name, 1.0, sweep, edit);
        infersim_fails(&["validate", s(&path)])
    };
    let bad = |name: &str, edit: &dyn Fn(String) -> String| bad_swept(name, "[\"energy_aware\"]", edit);
    let accuracy = bad("acc", &|t: String| t.replacen("accuracy = 86.0\n", "", 1));
    assert!(accuracy.contains("serving.pools[1].accuracy"), "{accuracy}");
    let delta = bad("d", &|t: String| t.replacen("delta = 0.002   #", "delta = 0.0   #", 1));
    assert!(delta.contains("serving.adaptation.delta"), "{delta}");
    let fixed =
        bad_swept("fx", "[\"fixed\"]", &|t: String| t.replacen("pool = \"llama-70b\"", "pool = \"llama-405b\"", 1));
    assert!(fixed.contains("serving.adaptation.fixed.pool") && fixed.contains("llama-8b"), "{fixed}");
}
