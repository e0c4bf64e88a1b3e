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
        ConfigError::Invalid { key: key.into(), value: short_number(value.to_string()), allowed: allowed.into() }
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
    pub(crate) fn rekey(self, rename: impl FnOnce(&str) -> String) -> Self {
        match self {
            ConfigError::Invalid { key, value, allowed } => ConfigError::Invalid { key: rename(&key), value, allowed },
            other => other,
        }
    }
}

/// Checks `ok`; otherwise the error names the key, the value and what is allowed.
pub fn check(ok: bool, key: impl Into<String>, value: impl ToString, allowed: &'static str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::invalid(key, value, allowed)) }
}

/// Whether `x` is a span the clock can hold, at least a nanosecond (s).
pub fn is_duration_s(x: f64) -> bool {
    x.is_finite() && (1e-9..=crate::world::MAX_DURATION_S).contains(&x)
}

/// What [`is_duration_s`] allows, as an error message says it.
pub(crate) const DURATION_S: &str = "seconds from 0.000000001 to 100 years";

/// A number as a person reads it in a message: `1e300` rather than the 301 digits
/// `f64`'s `Display` writes, `1e-12` rather than twelve zeros. Text that is not a long
/// number is returned as it is.
pub(crate) fn short_number(text: String) -> String {
    if text.len() <= 12 {
        return text;
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x != 0.0 && !(1e-4..1e12).contains(&x.abs()) => format!("{x:e}"),
        _ => text,
    }
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
    /// The run was interrupted before it ended (not a failure: it runs again on
    /// resume).
    #[error("interrupted")]
    Interrupted,
}

/// Hours since the start of the run, for rates and grids given per hour (one
/// rounding: nanoseconds over nanoseconds per hour).
pub fn hours(t: infersim_engine::SimTime) -> f64 {
    t.as_nanos() as f64 / 3.6e12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_messages_are_short() {
        let e = ConfigError::invalid("serving.arrivals.rate_per_s", 1e300, "a rate from 0 to 1e9");
        assert_eq!(e.to_string(), "serving.arrivals.rate_per_s = 1e300 is invalid: expected a rate from 0 to 1e9");
        assert_eq!(short_number(1e-12_f64.to_string()), "1e-12");
        assert_eq!(short_number(0.25_f64.to_string()), "0.25");
        assert_eq!(short_number(123_456_789.5_f64.to_string()), "123456789.5");
        assert_eq!(short_number("a long name that is no number".into()), "a long name that is no number");
    }
}
