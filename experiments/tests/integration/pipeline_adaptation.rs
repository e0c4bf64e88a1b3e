//! The adaptive video pipeline through the binary: the delta sweep with its metrics and
//! its Pareto chart, and IPA against a fixed configuration on common random numbers.

use crate::common::*;

#[test]
fn the_energy_weight_sweep_trades_accuracy_for_energy_and_draws_its_front() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    infersim_ok(&["run", "ipa-video", "-q", "--reps", "3", "--set", "simulation.duration_h=1", "--out", s(&out)]);
    let reps = read(out.join("replications.parquet"));
    assert_eq!(reps.height(), 5 * 3);
    for metric in
        ["energy_per_request_kwh", "accuracy_mean", "slo_attainment", "cost_usd", "efficiency", "quadrant", "ics_mean"]
    {
        assert!(reps.column(metric).is_ok(), "{metric}");
    }
    // Per point (delta ascending), mean energy per input falls and so does accuracy.
    let mean_by_point = |metric: &str| -> Vec<f64> {
        let (points, values) = (floats(&reps, "point"), floats(&reps, metric));
        (0..5)
            .map(|p| {
                let v: Vec<f64> =
                    points.iter().zip(&values).filter(|(q, _)| **q == p as f64).map(|(_, v)| *v).collect();
                v.iter().sum::<f64>() / v.len() as f64
            })
            .collect()
    };
    let (energy, accuracy) = (mean_by_point("energy_per_request_kwh"), mean_by_point("accuracy_mean"));
    assert!(energy.windows(2).all(|w| w[1] <= w[0] * 1.02), "{energy:?}");
    assert!(energy[4] < 0.5 * energy[0], "{energy:?}");
    assert!(accuracy.windows(2).all(|w| w[1] <= w[0] + 0.02), "{accuracy:?}");
    let quadrant = floats(&reps, "quadrant");
    assert!(quadrant.iter().all(|q| [1.0, 2.0, 3.0, 4.0].contains(q)));
    let o = infersim_ok(&["plot", s(&out)]);
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listed.contains("pareto_accuracy_energy.png") && listed.contains("pareto_latency_energy.svg"), "{listed}");
}

#[test]
fn ipa_against_a_fixed_plan_on_common_random_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let (fixed, ipa) = (tmp.path().join("fixed"), tmp.path().join("ipa"));
    let common = ["-q", "--reps", "4", "--set", "simulation.duration_h=1", "--set", "adapter.delta=0"];
    infersim_ok(&[&["run", "ipa-video", "--out", s(&fixed), "--set", "adapter.policy=fixed"][..], &common].concat());
    infersim_ok(&[&["run", "ipa-video", "--out", s(&ipa), "--trace", "timeseries"][..], &common].concat());
    let o = infersim_ok(&["compare", s(&fixed), s(&ipa)]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    // IPA scales replicas with the load: fewer cores and less energy per input than a
    // plan sized for the peak, on the same arrivals.
    for metric in ["cores_mean", "energy_per_request_kwh"] {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(metric)).unwrap();
        assert!(line.ends_with('*') && line.contains(" -"), "{line}");
    }
    let ts = read(ipa.join("traces/point=0/rep=0/timeseries.parquet"));
    assert_eq!(ts.height(), 360, "one row per 10 s interval");
    let plans = ts.column("plan").unwrap().str().unwrap().clone();
    let distinct: std::collections::BTreeSet<&str> = (0..plans.len()).filter_map(|i| plans.get(i)).collect();
    assert!(distinct.len() > 1, "the plan changes with the load: {distinct:?}");
}
