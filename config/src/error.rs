//! Configuration errors: each names where the bad value came from (file or environment
//! variable), the section and key, and what is wrong with it.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A whole file (missing, unreadable, not parseable).
    File(PathBuf),
    /// A key of config.yaml, as a dotted path (`kafka.max_retries`).
    Yaml { file: PathBuf, key: String },
    /// A section (and key) of connections.ini.
    Ini {
        file: PathBuf,
        section: String,
        key: Option<String>,
    },
    /// An environment variable.
    Env(String),
    /// A setting whose value came from the built-in defaults (dotted path).
    Default(String),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File(file) => write!(f, "{}", file.display()),
            Place::Yaml { file, key } => write!(f, "{}: {key}", file.display()),
            Place::Ini {
                file,
                section,
                key: Some(key),
            } => write!(f, "{}: [{section}] {key}", file.display()),
            Place::Ini {
                file,
                section,
                key: None,
            } => write!(f, "{}: [{section}]", file.display()),
            Place::Env(var) => write!(f, "environment variable {var}"),
            Place::Default(key) => write!(f, "default of {key}"),
        }
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct ConfigError {
    pub place: Place,
    pub problem: String,
}

impl ConfigError {
    pub fn new(place: Place, problem: impl Into<String>) -> Self {
        ConfigError {
            place,
            problem: problem.into(),
        }
    }
}

/// Every problem found, in the order found; displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }
    pub fn extend(&mut self, other: ConfigErrors) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
    /// `Ok(value)` when nothing was found, else all the errors.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
