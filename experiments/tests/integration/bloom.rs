//! The BLOOM drift-and-retraining scenarios through the binary: the Vensim reference
//! trajectories read back from timeseries.parquet, the deployment's energy and carbon,
//! the runaway flag, and the stochastic scenario against its deterministic counterpart.

use std::path::Path;
use std::process::Command;

use polars::prelude::*;

use crate::common::*;

fn reference(name: &str) -> Vec<Vec<f64>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/reference/bloom-sd").join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect()
}

const COLUMNS: [&str; 6] = ["t_h", "loss", "training_gpus", "processed_data", "energy_kwh", "requests"];

fn check_trajectory(drift: &str, file: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let set = format!("drift.per_request={drift}");
    infersim_ok(&["run", "bloom-sd", "-q", "--trace", "timeseries", "--set", &set, "--out", out.to_str().unwrap()]);
    let ts = read(out.join("traces/point=0/rep=0/timeseries.parquet"));
    let names: Vec<String> = ts.get_column_names().iter().map(|n| n.to_string()).collect();
    assert_eq!(&names[..6], COLUMNS, "the reference columns, by name, after t_h");
    let want = reference(file);
    assert_eq!(ts.height(), want.len());
    for (k, column) in COLUMNS.iter().enumerate() {
        for (got, row) in floats(&ts, column).iter().zip(&want) {
            let expected = row[k];
            let err = (got - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
            assert!(
                *got == expected || err <= 1e-9,
                "drift {drift}, hour {}: {column} = {got}, reference {expected}",
                row[0]
            );
        }
    }
}

#[test]
fn bloom_sd_matches_the_vensim_reference_without_drift() {
    check_trajectory("0", "drift-0.csv");
}

#[test]
fn bloom_sd_matches_the_vensim_reference_with_drift() {
    check_trajectory("1e-6", "drift-1e-6.csv");
}

#[test]
fn a_runaway_is_flagged_reported_and_never_written_as_inf_or_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = infersim_ok(&[
        "run",
        "bloom-sd",
        "-q",
        "--trace",
        "timeseries",
        "--set",
        "drift.per_request=5e-4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("RUNAWAY at point 0: the loss diverged in 1 of 1 replications"), "{text}");
    let reps = read(out.join("replications.parquet"));
    assert_eq!(reps.column("diverged").unwrap().dtype(), &DataType::Boolean);
    assert_eq!(reps.column("diverged").unwrap().bool().unwrap().get(0), Some(true));
    for df in [reps, read(out.join("summary.parquet")), read(out.join("traces/point=0/rep=0/timeseries.parquet"))] {
        for column in df.columns() {
            if let Ok(values) = column.cast(&DataType::Float64) {
                for i in 0..values.len() {
                    if let AnyValue::Float64(x) = values.get(i).unwrap() {
                        assert!(x.is_finite(), "{} holds {x}", column.name());
                    }
                }
            }
        }
    }
}

#[test]
fn the_deployment_lands_on_the_papers_energy_and_carbon() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    infersim_ok(&["run", "bloom-deployment", "-q", "--reps", "10", "--out", out.to_str().unwrap()]);
    let reps = read(out.join("replications.parquet"));
    for (column, paper) in [("energy_kwh", 914.0), ("carbon_kg", 914.0 * 0.394)] {
        for value in floats(&reps, column) {
            assert!((value - paper).abs() <= 0.02 * paper, "{column} = {value}, paper {paper}");
        }
    }
}

#[test]
fn the_stochastic_scenario_agrees_with_its_deterministic_counterpart() {
    // Deterministic: 6 retraining starts in 2080 h, 558e-6 drift per hour.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    infersim_ok(&["run", "bloom-stochastic", "-q", "--reps", "12", "--out", out.to_str().unwrap()]);
    let summary = read(out.join("summary.parquet"));
    let row = |metric: &str| {
        let metrics = summary.column("metric").unwrap();
        let i = (0..metrics.len()).position(|i| metrics.get(i).unwrap() == AnyValue::String(metric)).unwrap();
        // Rows without an interval (ics_mean: no user scores here) are null.
        let bound =
            |column: &str| optional_floats(&summary, column)[i].unwrap_or_else(|| panic!("{metric}: no {column}"));
        (bound("ci_low"), bound("ci_high"))
    };
    let (low, high) = row("drift_per_h");
    assert!(low <= 558e-6 && 558e-6 <= high, "drift_per_h CI [{low}, {high}]");
    let (low, high) = row("retrain_starts");
    assert!(low <= 6.5 && high >= 5.5, "retrain_starts CI [{low}, {high}] far from the deterministic 6");
}

#[test]
fn drift_must_be_a_non_negative_number() {
    let o = Command::new(env!("CARGO_BIN_EXE_infersim"))
        .args(["validate", "bloom-sd", "--set", "drift.per_request=-1e-6"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("drift.per_request = -0.000001 is invalid: expected a finite number >= 0"), "{e}");
}
