//! `infersim slurm` on a real Slurm: a single-node cluster started for the test (munged,
//! slurmctld and slurmd, as root, with state and spool in a temporary directory), a
//! 4-shard batch of `mmc` submitted with `--submit`, and the merged replications
//! compared row for row with an unsharded local run of the same seed. Then one shard is
//! lost and re-run alone, and the merge gives the same result again.
//!
//! Needs Debian's slurm-wlm and munge and root. `.ci/run` installs them and sets
//! `INFERSIM_SLURM_TEST=1`; without it the test says why it skips and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;

const INFERSIM: &str = env!("CARGO_BIN_EXE_infersim");

/// The daemons this test started, stopped by their process ids when it ends, pass or fail.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    pid_files: Vec<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid_file in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok()) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                // Wait for it to go, so the next test run can bind the same ports.
                let deadline = Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if std::thread::panicking() {
            for log in ["log/slurmctld.log", "log/slurmd.log", "munge/munged.log"] {
                if let Ok(text) = std::fs::read_to_string(self.dir.join(log)) {
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    eprintln!("--- {log} (last lines) ---");
                    tail.iter().rev().for_each(|l| eprintln!("{l}"));
                }
            }
        }
    }
}

fn ok(what: &str, o: std::io::Result<Output>) -> Output {
    let o = o.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

fn hostname() -> String {
    let o = ok("hostname -s", Command::new("hostname").arg("-s").output());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let host = hostname();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for sub in ["state", "spool", "log", "munge"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let munge = dir.join("munge");
        let mut cluster = Cluster { dir: dir.to_path_buf(), conf: dir.join("slurm.conf"), pid_files: Vec::new() };
        // munge: its own key and socket, so nothing of the machine's is touched.
        let key: Vec<u8> =
            (0..1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ std::process::id() as u8).collect();
        std::fs::write(munge.join("munge.key"), key).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(munge.join("munge.key"), std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::set_permissions(&munge, std::fs::Permissions::from_mode(0o700)).unwrap();
        cluster.pid_files.push(munge.join("munged.pid"));
        ok(
            "munged",
            Command::new("munged")
                .arg("--force")
                .arg(format!("--key-file={}", munge.join("munge.key").display()))
                .arg(format!("--socket={}", munge.join("munge.socket").display()))
                .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
                .arg(format!("--log-file={}", munge.join("munged.log").display()))
                .arg(format!("--seed-file={}", munge.join("munged.seed").display()))
                .output(),
        );
        let d = |p: &str| dir.join(p).display().to_string();
        let conf = format!(
            "ClusterName=infersim-test\n\
             SlurmctldHost={host}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={socket}\n\
             CredType=cred/munge\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             StateSaveLocation={state}\n\
             SlurmdSpoolDir={spool}\n\
             SlurmctldPidFile={ctld_pid}\n\
             SlurmdPidFile={d_pid}\n\
             SlurmctldLogFile={ctld_log}\n\
             SlurmdLogFile={d_log}\n\
             SlurmctldPort=16817\n\
             SlurmdPort=16818\n\
             ReturnToService=2\n\
             MpiDefault=none\n\
             JobCompType=jobcomp/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             NodeName={host} CPUs={cpus} State=UNKNOWN\n\
             PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            socket = munge.join("munge.socket").display(),
            state = d("state"),
            spool = d("spool"),
            ctld_pid = d("slurmctld.pid"),
            d_pid = d("slurmd.pid"),
            ctld_log = d("log/slurmctld.log"),
            d_log = d("log/slurmd.log"),
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        cluster.pid_files.push(dir.join("slurmctld.pid"));
        ok("slurmctld", Command::new("slurmctld").arg("-f").arg(&cluster.conf).output());
        cluster.pid_files.push(dir.join("slurmd.pid"));
        ok("slurmd", Command::new("slurmd").arg("-f").arg(&cluster.conf).output());
        // Ready when the node reports idle.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = cluster.command("sinfo").args(["-h", "-o", "%t"]).output().unwrap();
            if String::from_utf8_lossy(&o.stdout).trim() == "idle" {
                break;
            }
            assert!(Instant::now() < deadline, "the node never became idle: {}", String::from_utf8_lossy(&o.stdout));
            std::thread::sleep(Duration::from_millis(250));
        }
        cluster
    }

    /// A Slurm client command talking to this cluster.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// Waits until job `id` has left the queue.
    fn wait_for(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let o = self.command("squeue").args(["-h", "-j", id]).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if text.is_empty() {
                return;
            }
            assert!(!text.contains("DependencyNeverSatisfied"), "job {id}: {text}");
            assert!(Instant::now() < deadline, "job {id} still queued after {limit:?}: {text}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn missing_tools() -> Vec<&'static str> {
    ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect()
}

#[test]
fn a_batch_sharded_over_a_real_slurm_merges_into_the_unsharded_batch() {
    if std::env::var_os("INFERSIM_SLURM_TEST").is_none() {
        eprintln!(
            "skipped: set INFERSIM_SLURM_TEST=1 to start a Slurm cluster (.ci/run does, after installing slurm-wlm)"
        );
        return;
    }
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "INFERSIM_SLURM_TEST is set but {missing:?} are not installed (apt-get install slurm-wlm munge)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&tmp.path().join("cluster"));
    let batch = tmp.path().join("batch");
    let args = ["--reps", "8", "--seed", "3", "--set", "station.servers=5"];
    let mut slurm = cluster.command(INFERSIM);
    slurm.args(["slurm", "mmc", "--shards", "4", "--dir"]).arg(&batch).args(args).arg("--submit");
    let o = ok("infersim slurm --submit", slurm.output());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let merge_id = text
        .split("merge job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no merge job id in {text:?}"))
        .to_string();
    cluster.wait_for(&merge_id, Duration::from_secs(300));
    let merged = batch.join("merged");
    assert!(
        merged.join("replications.parquet").exists(),
        "the merge job wrote nothing; its log: {}",
        std::fs::read_to_string(batch.join("logs/merge.out")).unwrap_or_default()
    );

    let local = tmp.path().join("local");
    ok("local run", Command::new(INFERSIM).args(["run", "mmc", "-q", "--out"]).arg(&local).args(args).output());
    let want = read(local.join("replications.parquet"));
    assert_eq!(want.height(), 8);
    assert!(read(merged.join("replications.parquet")).equals(&want), "merged rows differ from the unsharded batch");
    assert_eq!(std::fs::read(merged.join("summary.csv")).unwrap(), std::fs::read(local.join("summary.csv")).unwrap());

    // A lost shard: the merge refuses and names it; re-run alone, the batch merges again.
    std::fs::remove_dir_all(batch.join("shard-3")).unwrap();
    let o = cluster.command("sbatch").args(["--wait", "merge.sbatch"]).current_dir(&batch).output().unwrap();
    assert!(!o.status.success(), "a merge without shard 3 must fail");
    let log = std::fs::read_to_string(batch.join("logs/merge.out")).unwrap();
    assert!(log.contains("shard-3") && log.contains("incomplete"), "{log}");
    ok(
        "re-run shard 3",
        cluster.command("sbatch").args(["--wait", "--array=3", "shards.sbatch"]).current_dir(&batch).output(),
    );
    ok("merge again", cluster.command("sbatch").args(["--wait", "merge.sbatch"]).current_dir(&batch).output());
    assert!(read(merged.join("replications.parquet")).equals(&want));
    drop(cluster);
}

#[test]
fn scripts_are_written_only_for_a_batch_that_would_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("batch");
    let slurm = |extra: &[&str]| {
        Command::new(INFERSIM).args(["slurm", "mmc", "--shards", "4", "--dir"]).arg(&dir).args(extra).output().unwrap()
    };
    for bad in [&["--set", "station.servers=0"][..], &["--reps", "3"], &["--cpus-per-task", "0"]] {
        let o = slurm(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(!dir.exists(), "{bad:?}: nothing is written");
    }
    let o = slurm(&["--reps", "8", "--sbatch=--account=sim", "--time", "00:10:00"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    for file in ["shards.sbatch", "merge.sbatch", "submit.sh"] {
        let meta = std::fs::metadata(dir.join(file)).unwrap();
        assert!(meta.permissions().mode() & 0o100 != 0, "{file} is executable");
    }
    let shards = std::fs::read_to_string(dir.join("shards.sbatch")).unwrap();
    assert!(shards.contains("#SBATCH --account=sim") && shards.contains("#SBATCH --time=00:10:00"));
    assert!(shards.contains(&format!("exec '{INFERSIM}' run mmc")));
    // The same directory again: refused, so a running batch is never overwritten.
    assert_eq!(slurm(&["--reps", "8"]).status.code(), Some(2));
}
