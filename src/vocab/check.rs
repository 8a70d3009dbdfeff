//! Config checking shared by every section: the error that names a key, and
//! the small checks each section's `validate` uses. Each section's config
//! lives with the module that owns it; this is only the common vocabulary.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be used. Every variant names where the
/// problem is: a file, a key, or an environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {key}: {message}")]
    Parse {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// Names the document a value came from (a path, "embedded defaults")
    /// in an error about that value.
    pub fn in_origin(self, origin: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Parse {
                origin: origin.to_owned(),
                key,
                message,
            },
            other => other,
        }
    }

    pub fn invalid(key: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// Rejects zero for keys where zero is meaningless.
pub fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}
