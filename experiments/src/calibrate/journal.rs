//! The journal of a calibration: every finished evaluation, one JSON line each, after a
//! first line naming the calibration. An interrupted calibration resumes by replaying
//! it: the search is deterministic given the objective's values, so it retraces its
//! path at no cost and goes on where it stopped.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{CalibrateError, failed, input};

/// One evaluation of the objective.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Parameter values, in `--param` order.
    pub values: Vec<f64>,
    /// The objective.
    pub objective: f64,
    /// Per-target errors (relative error, KS distance or relative squared error).
    pub errors: Vec<(String, f64)>,
    /// For the interval's noise: which pseudo-observation (a replication at `values`
    /// taken as the observed data) this is the objective of; `None` for the objective
    /// against the observed data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo: Option<u64>,
}

/// The journal file and what it holds.
pub struct Journal {
    path: PathBuf,
    done: Mutex<Vec<Evaluation>>,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for the calibration `header` names;
    /// a journal of another calibration is refused.
    pub fn open(path: &Path, header: &str) -> Result<Journal, CalibrateError> {
        let mut done = Vec::new();
        match fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                if lines.next() != Some(header) {
                    return Err(input(format!(
                        "{}: the interrupted calibration there was of another scenario, parameters or target",
                        path.display()
                    )));
                }
                // A last line cut by the interruption is dropped.
                done.extend(lines.filter_map(|l| serde_json::from_str::<Evaluation>(l).ok()));
            }
            Err(_) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
                }
                fs::write(path, format!("{header}\n")).map_err(|e| failed(format!("{}: {e}", path.display())))?;
            }
        }
        Ok(Journal { path: path.to_path_buf(), done: Mutex::new(done) })
    }

    /// Evaluations it holds.
    pub fn len(&self) -> usize {
        self.done.lock().expect("not poisoned").len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The recorded evaluation at exactly `values` (and of pseudo-observation `pseudo`).
    pub fn find(&self, values: &[f64], pseudo: Option<u64>) -> Option<Evaluation> {
        let same = |e: &Evaluation| {
            e.pseudo == pseudo && e.values.iter().map(|v| v.to_bits()).eq(values.iter().map(|v| v.to_bits()))
        };
        self.done.lock().expect("not poisoned").iter().find(|e| same(e)).cloned()
    }

    /// Appends an evaluation.
    pub fn record(&self, e: &Evaluation) -> Result<(), CalibrateError> {
        use std::io::Write as _;
        let line = serde_json::to_string(e).map_err(failed)?;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| failed(format!("{}: {e}", self.path.display())))?;
        writeln!(file, "{line}").map_err(|e| failed(format!("{}: {e}", self.path.display())))?;
        self.done.lock().expect("not poisoned").push(e.clone());
        Ok(())
    }
}
