//! Nothing lost: an output directory belongs to one process at a time, and a merge
//! never overwrites a batch it did not write.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

fn infersim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infersim")).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SMALL: [&str; 4] = ["--set", "simulation.customers=2000", "--set", "simulation.warmup_customers=200"];

fn mmc(out: &Path, reps: &str, extra: &[&str]) -> Output {
    infersim(&[&["run", "mmc", "-q", "--out", s(out), "--reps", reps, "--seed", "5"][..], &SMALL, extra].concat())
}

fn rows(dir: &Path) -> usize {
    read(dir.join("replications.parquet")).height()
}

/// While a directory's lock is held, every command that would write there stops with
/// exit code 2 and names the holder, and writes nothing.
#[test]
fn a_held_directory_is_refused_to_run_resume_analyze_and_calibrate() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = tmp.path().join("batch");
    assert!(mmc(&batch, "4", &[]).status.success());
    let before = fs::read(batch.join("replications.parquet")).unwrap();
    let held = infersim::lock::DirLock::acquire(&batch, "run").unwrap();
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let merge_lock = infersim::lock::DirLock::acquire(&merged, "analyze").unwrap();
    let calibration = tmp.path().join("fit");
    fs::create_dir(&calibration).unwrap();
    let fit_lock = infersim::lock::DirLock::acquire(&calibration, "calibrate").unwrap();
    let observed = tmp.path().join("observed.csv");
    fs::write(&observed, "wait_s\n0.5\n1.5\n").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        [&["run", "mmc", "-q", "--out", s(&batch), "--reps", "4", "--seed", "5", "--resume"][..], &SMALL].concat(),
        vec!["analyze", s(&batch), "--out", s(&merged)],
        vec![
            "calibrate",
            "mmc",
            "--observed",
            s(&observed),
            "--param",
            "station.service_rate_per_s=0.8..1.4",
            "--target",
            "wait_mean_s",
            "--out",
            s(&calibration),
            "--resume",
        ],
        vec!["plot", s(&batch)],
    ];
    for args in cases {
        let o = infersim(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let message = stderr(&o);
        assert!(message.contains("in use by infersim"), "{args:?}: {message}");
        assert!(message.contains(&format!("process {}", std::process::id())), "{args:?}: {message}");
    }
    assert_eq!(fs::read(batch.join("replications.parquet")).unwrap(), before);
    assert!(!batch.join("plots").exists() && !merged.join("manifest.json").exists());
    drop((held, merge_lock, fit_lock));
    let o = mmc(&batch, "4", &["--resume"]);
    assert!(o.status.success(), "free again: {}", stderr(&o));
}

/// Journal lines of a running batch.
fn parts(dir: &Path) -> usize {
    fs::read_to_string(dir.join("parts.jsonl")).map(|t| t.matches('\n').count()).unwrap_or(0)
}

/// Two processes on one directory at once, as two retries of one Slurm task can be:
/// started on a new directory, one runs the batch and the other stops with exit code 2;
/// resuming an interrupted batch, one resumes it and the other stops (or, started
/// after it finished, finds the batch complete), and the result is the uninterrupted
/// batch's bytes.
#[test]
fn two_processes_on_one_directory_leave_one_whole_batch() {
    const LONG: [&str; 6] =
        ["--threads", "1", "--set", "simulation.customers=20000", "--set", "simulation.warmup_customers=0"];
    let tmp = tempfile::tempdir().unwrap();
    let spawn = |out: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_infersim"))
            .args([&["run", "mmc", "-q", "--out", s(out), "--reps", "300", "--seed", "5"][..], &LONG, extra].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let whole = tmp.path().join("whole");
    assert!(spawn(&whole, &[]).wait().unwrap().success());
    let expected = fs::read(whole.join("replications.parquet")).unwrap();

    let out = tmp.path().join("shared");
    let (a, b) = (spawn(&out, &[]), spawn(&out, &[]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "{} | {}", stderr(&a), stderr(&b));
    assert_eq!(fs::read(out.join("replications.parquet")).unwrap(), expected);

    let cut = tmp.path().join("interrupted");
    let child = spawn(&cut, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while parts(&cut) < 3 {
        assert!(std::time::Instant::now() < deadline, "no replication finished in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    let (a, b) = (spawn(&cut, &["--resume"]), spawn(&cut, &["--resume"]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.iter().all(|c| matches!(c, Some(0 | 2))),
        "{} | {}",
        stderr(&a),
        stderr(&b)
    );
    assert_eq!(fs::read(cut.join("replications.parquet")).unwrap(), expected, "the resumed batch is whole");
}

/// `analyze --out` never writes over one of its inputs or a batch it did not merge; a
/// retried merge into its own output still works.
#[test]
fn a_merge_never_overwrites_an_input_or_another_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = |i: u32| tmp.path().join(format!("s{i}"));
    for i in 1..=2 {
        let o = mmc(&shard(i), "10", &["--shard", &format!("{i}/2")]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let other = tmp.path().join("other");
    assert!(mmc(&other, "30", &[]).status.success());
    let shard_before = fs::read(shard(1).join("replications.parquet")).unwrap();
    let other_before = fs::read(other.join("replications.parquet")).unwrap();
    for (out, why) in
        [(shard(1), "one of the directories being merged"), (other.clone(), "holds a batch that ran there")]
    {
        let o = infersim(&["analyze", s(&shard(1)), s(&shard(2)), "--out", s(&out)]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
    }
    assert_eq!(fs::read(shard(1).join("replications.parquet")).unwrap(), shard_before);
    assert_eq!(fs::read(other.join("replications.parquet")).unwrap(), other_before);
    let merged = tmp.path().join("merged");
    for attempt in 0..2 {
        let o = infersim(&["analyze", s(&shard(1)), s(&shard(2)), "--out", s(&merged)]);
        assert!(o.status.success(), "attempt {attempt}: {}", stderr(&o));
        assert_eq!(rows(&merged), 10);
    }
    // The merge of another batch is not replaced either.
    let o = infersim(&["analyze", s(&other), "--out", s(&merged)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the merge of another batch"), "{}", stderr(&o));
    assert_eq!(rows(&merged), 10);
}
