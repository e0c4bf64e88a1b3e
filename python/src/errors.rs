//! infersim's errors as Python exceptions: bad input is a `ScenarioError` (a
//! `ValueError`) with the command line's message and `.key` / `.allowed`; a run that
//! failed is a `RunError` (a `RuntimeError`).

use infersim::cli::{CliError, ErrorKind};
use infersim::scenario::ScenarioError as ScenarioFault;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    _infersim,
    ScenarioError,
    PyValueError,
    "Bad input: a scenario, key, value or option infersim cannot use. The message is \
     the command line's; `.key` is the dotted key at fault and `.allowed` what it \
     allows (a range, the choices or the table's keys), each None where the error has \
     none. Nothing was written."
);
pyo3::create_exception!(
    _infersim,
    RunError,
    PyRuntimeError,
    "A run that failed although its input was good: a replication that failed, a \
     file that could not be written or read back."
);

/// A `ScenarioError` with its key and what it allows.
pub fn scenario_error(message: String, key: Option<&str>, allowed: Option<String>) -> PyErr {
    Python::attach(|py| {
        let err = ScenarioError::new_err(message);
        let value = err.value(py);
        // Setting attributes on a fresh exception instance cannot fail but for memory.
        let _ = value.setattr("key", key);
        let _ = value.setattr("allowed", allowed);
        err
    })
}

/// A `RunError` with `message`.
pub fn run_error(message: impl Into<String>) -> PyErr {
    RunError::new_err(message.into())
}

/// A scenario that does not load.
pub fn from_scenario(e: &ScenarioFault) -> PyErr {
    scenario_error(e.to_string(), e.key(), e.allowed())
}

/// Any error of the command line's library, by its kind.
pub fn from_cli(e: CliError) -> PyErr {
    match (&e, e.kind()) {
        (CliError::Scenario(s), _) => from_scenario(s),
        (_, ErrorKind::Input) => scenario_error(e.to_string(), None, None),
        (_, ErrorKind::Failed) => run_error(e.to_string()),
    }
}

/// Lifts any of the library's errors that the command line's error takes.
pub fn py<E: Into<CliError>>(e: E) -> PyErr {
    from_cli(e.into())
}
