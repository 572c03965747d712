//! Secrets as values that cannot be printed: client secrets, API keys and signing keys are
//! wrapped at the moment they are read and only ever exposed to the code that uses them.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// Where a secret comes from. The value itself is read at start-up, never stored in `Config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `*_file`: a file holding the secret (trailing newline ignored).
    File(std::path::PathBuf),
    /// `*_env`: an environment variable holding the secret.
    Env(String),
}

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

/// Stored as the plain string (a session record in Redis holds the refresh token), but still
/// never printed: only `Debug` is redacted, serialization is the one way out by design.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// 256 random bits, base64url.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

/// 32 random bytes from the operating system.
pub fn random_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    // The system RNG only fails when the OS cannot provide entropy at all; a zeroed value
    // would be guessable, so stop rather than continue.
    if SystemRandom::new().fill(&mut b).is_err() {
        std::process::abort();
    }
    b
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
