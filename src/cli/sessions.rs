//! `jumpgate sessions list|revoke --user ID`: operators' view of the sessions shared in Redis.

use std::fmt::Write;

use crate::config::{Config, StoreKind};
use crate::shared::{Passwords, RedisStore, StoreError};

/// What to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// List a user's sessions.
    List(String),
    /// End all of a user's sessions.
    Revoke(String),
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Sessions are not shared.
    #[error("session.store is not \"redis\": in-memory sessions live inside each gateway process and end with it")]
    NotShared,
    /// A Redis or sentinel password could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs `command` against the Redis named in `config`.
pub async fn run(config: &Config, command: Command) -> Result<String, AdminError> {
    let rc = match (&config.session.store, &config.session.redis) {
        (StoreKind::Redis, Some(rc)) => rc,
        _ => return Err(AdminError::NotShared),
    };
    let store = RedisStore::new(rc, Passwords::load(rc)?)?;
    store.connect().await?;
    let mut out = String::new();
    match command {
        Command::List(user) => {
            let sessions = store.list_user(&user).await?;
            let _ = writeln!(out, "{} live session(s) for {user}", sessions.len());
            for (hash, r) in sessions {
                let _ = writeln!(
                    out,
                    "  {}  site {}  created {}  expires {}  step-up {}",
                    &hash[..16],
                    r.site,
                    r.created,
                    r.expires,
                    if r.step_up_time > 0 {
                        r.step_up_time.to_string()
                    } else {
                        "-".to_owned()
                    }
                );
            }
        }
        Command::Revoke(user) => {
            let n = store.revoke_user(&user).await?;
            let _ = writeln!(out, "revoked {n} session(s) of {user} on every instance");
        }
    }
    Ok(out)
}
