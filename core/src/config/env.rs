//! Reading settings: typed values from a [`Source`], and the [`ConfigError`] that names the
//! variable and what it accepts.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// A setting that cannot be used, naming the variable and what it accepts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{var} is not set; {why}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// Why it is needed.
        why: String,
    },
    /// A variable's value cannot be used.
    #[error("{var}={value} is not valid; expected {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// The value as given (secrets are never echoed: see [`Env::secret`]).
        value: String,
        /// What the variable accepts.
        expected: String,
    },
    /// Settings that are each valid but cannot work together.
    #[error("{vars} do not work together: {why}")]
    Conflict {
        /// The variables involved.
        vars: &'static str,
        /// Why, with the values and what would work.
        why: String,
    },
}

/// Where settings come from.
pub trait Source {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Typed reads from a [`Source`]. An empty value counts as unset.
pub struct Env<'a> {
    source: &'a dyn Source,
}

impl<'a> Env<'a> {
    /// Reads from `source`.
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    /// The raw value, `None` when unset or empty.
    pub fn string(&self, var: &'static str) -> Option<String> {
        self.source
            .get(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A value that must be set.
    pub fn required(&self, var: &'static str, why: &str) -> Result<String, ConfigError> {
        self.string(var).ok_or_else(|| ConfigError::Missing {
            var,
            why: why.to_owned(),
        })
    }

    /// A secret that must be set; never echoed in errors.
    pub fn secret(&self, var: &'static str, why: &str) -> Result<String, ConfigError> {
        self.source
            .get(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError::Missing {
                var,
                why: why.to_owned(),
            })
    }

    /// One of a fixed set of words, case-insensitive; `default` when unset.
    pub fn choice<T: Copy>(
        &self,
        var: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&value))
            .map(|(_, v)| *v)
            .ok_or_else(|| ConfigError::Invalid {
                var,
                value,
                expected: format!(
                    "one of {}",
                    choices
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// A number within `min..=max`; `default` when unset.
    pub fn number<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match value.replace('_', "").parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: format!("a whole number from {min} to {max}"),
            }),
        }
    }

    /// A duration such as `500ms`, `5s` or `2m` within `min..=max`; `default` when unset.
    pub fn duration(
        &self,
        var: &'static str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match humantime::parse_duration(&value) {
            Ok(d) if d >= min && d <= max => Ok(d),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: format!(
                    "a duration such as 500ms, 5s or 2m, from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            }),
        }
    }
}
