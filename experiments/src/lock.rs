//! One process at a time per output directory.
//!
//! Every command that writes into an output directory (`run`, `run --resume`,
//! `analyze`, `calibrate`, `correspond`, `plot`) first takes the directory's lock: an
//! advisory lock (`flock`) on the file `.infersim.lock` in it, which also records who
//! holds it (process id, host, command, since when). A second process finds the lock
//! taken and stops with a message that names the holder, before it reads or writes
//! anything. The operating system releases the lock when its holder exits, however it
//! exits (a crash or `kill -9` included), so a lock whose holder died is never in the
//! way: the next process takes it and overwrites the record. Where the file system
//! does not support `flock`, the record alone decides: a record naming a process that
//! no longer runs on this host is stale and taken over.
//!
//! ```
//! use infersim::lock::DirLock;
//! let dir = tempfile::tempdir().unwrap();
//! let held = DirLock::acquire(dir.path(), "run").unwrap();
//! let refused = DirLock::acquire(dir.path(), "analyze").unwrap_err();
//! assert!(refused.to_string().contains(&format!("process {}", std::process::id())), "{refused}");
//! drop(held);
//! DirLock::acquire(dir.path(), "analyze").unwrap();
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lock file's name inside an output directory.
pub const LOCK_FILE: &str = ".infersim.lock";

/// Why a directory's lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{dir}: in use by {holder}; wait for it to finish (two processes writing one output directory would lose \
         results), or choose another directory"
    )]
    Held {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as its record says.
        holder: String,
    },
    /// The lock file could not be opened, read or written.
    #[error("{path}: cannot lock the output directory: {error}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

/// The lock of an output directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

/// What a lock file records of its holder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    command: String,
    since_unix_s: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "infersim {} (process {} on host {}, since {} UTC)",
            self.command,
            self.pid,
            self.host,
            crate::batch::utc_timestamp(self.since_unix_s)
        )
    }
}

/// This machine's name, as the kernel knows it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

/// Whether process `pid` runs on this host (Linux's /proc; elsewhere assume it does).
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

impl DirLock {
    /// Takes the lock of `dir`, which must exist; `command` names what the holder
    /// does, for the message another process will see.
    pub fn acquire(dir: &Path, command: &str) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |error| LockError::Io { path: path.clone(), error };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let previous = {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            serde_json::from_str::<Holder>(&text).ok()
        };
        let here = host_name();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = previous.map_or_else(|| "another infersim process".to_string(), |h| h.describe());
                return Err(LockError::Held { dir: dir.to_path_buf(), holder });
            }
            // No flock here: the record decides. A holder on another host cannot be
            // checked, so it is trusted; on this host it must still run.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                if let Some(h) =
                    previous.filter(|h| h.pid != std::process::id() && (h.host != here || process_alive(h.pid)))
                {
                    return Err(LockError::Held { dir: dir.to_path_buf(), holder: h.describe() });
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder {
            pid: std::process::id(),
            host: here,
            command: command.to_string(),
            since_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        let record = serde_json::to_string(&holder).expect("a holder serialises");
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(record.as_bytes()).and_then(|()| file.flush()).map_err(io)?;
        Ok(DirLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // An empty record is a free lock, whatever the file system; the flock goes
        // with the file handle.
        let _ = self.file.set_len(0);
    }
}

/// Whether `dir` holds anything besides its lock file.
pub fn occupied(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| entries.flatten().any(|e| e.file_name() != LOCK_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named_and_a_dead_holder_is_no_obstacle() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "run").unwrap();
        let message = DirLock::acquire(dir.path(), "run --resume").unwrap_err().to_string();
        assert!(message.contains("infersim run (process") && message.contains(&host_name()), "{message}");
        assert!(!occupied(dir.path()), "the lock file alone does not occupy a directory");
        drop(first);
        // A record left by a process that no longer runs (as after kill -9): the
        // flock went with it, so the lock is free and the record is replaced.
        let stale = Holder { pid: u32::MAX - 1, host: host_name(), command: "run".into(), since_unix_s: 0 };
        std::fs::write(dir.path().join(LOCK_FILE), serde_json::to_string(&stale).unwrap()).unwrap();
        let taken = DirLock::acquire(dir.path(), "analyze").unwrap();
        let record: Holder =
            serde_json::from_str(&std::fs::read_to_string(taken.path()).unwrap()).expect("a fresh record");
        assert_eq!((record.pid, record.command.as_str()), (std::process::id(), "analyze"));
    }
}
