//! What kind of failure an error is, which decides the command's exit code: one
//! place says it for every error of the crate.

use crate::analysis::AnalysisError;
use crate::batch::BatchError;
use crate::calibrate::CalibrateError;
use crate::lock::LockError;
use crate::output::OutputError;
use crate::plot::PlotError;
use crate::runner::PlanError;
use crate::scenario::ScenarioError;
use crate::slurm::SlurmError;

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is at fault (a scenario, an option, a directory that is occupied or
    /// is no batch): exit code 2. Fix the input and run again.
    Input,
    /// The run failed though its input was good (a file that could not be written
    /// or read back, a computation that failed): exit code 1.
    Failed,
}

impl ErrorKind {
    /// The process exit code: 2 for bad input, 1 for a failed run (what the README
    /// promises).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Input => 2,
            ErrorKind::Failed => 1,
        }
    }
}

impl OutputError {
    /// Writing or reading results back failed.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }
}

impl AnalysisError {
    /// A computation or a write that failed, or a request that cannot be met.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AnalysisError::Polars { .. } => ErrorKind::Failed,
            AnalysisError::Output(e) => e.kind(),
            _ => ErrorKind::Input,
        }
    }
}

impl PlotError {
    /// Drawing or writing a chart failed, or the options asked for what is not there.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PlotError::Analysis(e) => e.kind(),
            PlotError::NotSwept { .. } | PlotError::NoParts { .. } => ErrorKind::Input,
            _ => ErrorKind::Failed,
        }
    }
}

impl CalibrateError {
    /// A simulation or a write that failed, or bad input (an interrupted calibration
    /// is neither: it exits with 130).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CalibrateError::Failed(_) => ErrorKind::Failed,
            _ => ErrorKind::Input,
        }
    }
}

impl BatchError {
    /// Writing results failed, or the batch's input or output directory is at fault.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BatchError::Output(e) => e.kind(),
            BatchError::Analysis(e) => e.kind(),
            _ => ErrorKind::Input,
        }
    }
}

impl SlurmError {
    /// Writing the scripts or submitting them failed, or the options are at fault.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SlurmError::Scenario(e) => e.kind(),
            SlurmError::Input(_) => ErrorKind::Input,
            SlurmError::Io { .. } | SlurmError::Sbatch(_) => ErrorKind::Failed,
        }
    }
}

/// Errors that are always the input's fault.
macro_rules! input_errors {
    ($($error:ty),*) => {$(
        impl $error {
            /// Always the input's fault.
            pub fn kind(&self) -> ErrorKind {
                ErrorKind::Input
            }
        }
    )*};
}

input_errors!(ScenarioError, PlanError, LockError);
