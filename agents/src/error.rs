//! The errors every world shares: a configuration that cannot be used, and a run that
//! could not go on.

use std::borrow::Cow;

use infersim_engine::ScheduleError;

/// Why a configuration cannot be used. Each variant names where the problem is (the
/// dotted key as scenario files spell it, or a data file and its line or row) so a
/// user can find it. Both are fatal for the scenario: nothing runs.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value out of range, of the wrong kind, or missing.
    #[error("{key} = {value} is invalid: expected {allowed}")]
    Invalid {
        /// Dotted key, e.g. `serving.arrivals.rate_per_s`.
        key: String,
        /// The value as given (`(missing)` when absent).
        value: String,
        /// What is allowed.
        allowed: Cow<'static, str>,
    },
    /// A data file the scenario names (a trace, a series, a profile) that cannot be
    /// read or has a bad row.
    #[error("{file}{at}: {message}")]
    Data {
        /// The file as the scenario names it.
        file: String,
        /// Where in it: `:LINE` for text files, `: row N` for columnar ones, or empty.
        at: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A value that is not allowed.
    pub fn invalid(key: impl Into<String>, value: impl ToString, allowed: impl Into<Cow<'static, str>>) -> Self {
        ConfigError::Invalid { key: key.into(), value: value.to_string(), allowed: allowed.into() }
    }

    /// A problem with a data file, anywhere in it.
    pub fn data(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Data { file: file.into(), at: String::new(), message: message.into() }
    }

    /// The dotted key of an invalid value, or the file of a data problem.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Invalid { key, .. } => key,
            ConfigError::Data { file, .. } => file,
        }
    }

    /// The same error with its key placed under `table` (`rate_per_s` in `arrivals`
    /// becomes `arrivals.rate_per_s`); data errors are unchanged.
    pub fn within(self, table: &str) -> Self {
        match self {
            ConfigError::Invalid { key, value, allowed } => {
                ConfigError::Invalid { key: format!("{table}.{key}"), value, allowed }
            }
            other => other,
        }
    }

    /// The same error with its key renamed by `rename` (e.g. to the name a scenario
    /// file uses for a value the configuration keeps elsewhere).
    pub fn rekey(self, rename: impl FnOnce(&str) -> String) -> Self {
        match self {
            ConfigError::Invalid { key, value, allowed } => ConfigError::Invalid { key: rename(&key), value, allowed },
            other => other,
        }
    }
}

/// Checks `ok`; otherwise the error names the key, the value and what is allowed.
pub fn check(ok: bool, key: &str, value: impl ToString, allowed: &'static str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::invalid(key, value, allowed)) }
}

/// Why a replication could not finish. Either is fatal for that replication only.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration was refused when the world was built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model computed a time it cannot use (in the past, or beyond 584 years).
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// Hours since the start of the run, for rates and grids given per hour (one
/// rounding: nanoseconds over nanoseconds per hour).
pub fn hours(t: infersim_engine::SimTime) -> f64 {
    t.as_nanos() as f64 / 3.6e12
}
