//! Secrets as values that cannot be printed: client secrets, API keys and signing keys are
//! wrapped at the moment they are read and only ever exposed to the code that uses them.

use std::fmt;

use crate::config::SecretSource;

/// A secret string. `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    File {
        /// The config key that names the file.
        key: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set or not UTF-8.
    #[error("{key}: environment variable {var} is not set")]
    Env {
        /// The config key that names the variable.
        key: String,
        /// The variable.
        var: String,
    },
    /// The secret is empty.
    #[error("{key}: the secret is empty")]
    Empty {
        /// The config key.
        key: String,
    },
}

/// Reads a secret from its source; `key` is the config key, for messages (`oidc.client_secret`).
pub fn load(source: &SecretSource, key: &str) -> Result<Secret, SecretError> {
    let value = match source {
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| SecretError::File {
                key: format!("{key}_file"),
                path: path.clone(),
                source,
            })?
        }
        SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretError::Env {
            key: format!("{key}_env"),
            var: var.clone(),
        })?,
    };
    let value = value.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(SecretError::Empty {
            key: key.to_owned(),
        });
    }
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
