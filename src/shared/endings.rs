//! Ends of sessions (logouts, revocations) made while Redis could not be reached: kept here,
//! hiding what they ended, and written as soon as Redis answers again, so an outage never
//! undoes them when Redis comes back with the old records.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;

/// An end of sessions that could not be written to Redis yet: kept, and written as soon as
/// Redis answers again, so a logout or revocation during an outage is not undone when Redis
/// comes back with the old records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// One session (its key hash) of a user.
    Session { hash: String, sub: String },
    /// Every session of a user.
    User(String),
}

/// How often ends waiting for Redis are tried again.
const ENDING_RETRY: Duration = Duration::from_millis(500);

impl RedisStore {
    pub(super) fn endings(&self) -> std::sync::MutexGuard<'_, Vec<Ending>> {
        self.endings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn defer(&self, ending: Ending) {
        let mut endings = self.endings();
        if !endings.contains(&ending) {
            endings.push(ending);
        }
        self.ending.store(true, Ordering::Release);
    }

    /// Whether a session (its key hash, of `sub`) was ended here but Redis does not know
    /// yet: a record read back from Redis must not bring it back.
    pub(super) fn is_ending(&self, hash: &str, sub: &str) -> bool {
        if !self.ending.load(Ordering::Acquire) {
            return false;
        }
        self.endings().iter().any(|e| match e {
            Ending::Session { hash: h, .. } => h == hash,
            Ending::User(s) => s == sub,
        })
    }

    /// Writes the ends that waited for Redis, as soon as it answers; those that fail again
    /// wait for the next try.
    pub(super) async fn write_endings(self: Arc<Self>) {
        loop {
            tokio::time::sleep(ENDING_RETRY).await;
            if !self.ending.load(Ordering::Acquire) || self.conn.load().is_none() {
                continue;
            }
            let waiting: Vec<Ending> = self.endings().clone();
            let mut written = Vec::new();
            for ending in &waiting {
                let done = match ending {
                    Ending::Session { hash, sub } => self.delete_session(hash, sub).await.is_ok(),
                    Ending::User(sub) => self.revoke_user(sub).await.is_ok(),
                };
                if done {
                    written.push(ending.clone());
                }
            }
            if !written.is_empty() {
                let mut endings = self.endings();
                endings.retain(|e| !written.contains(e));
                self.ending.store(!endings.is_empty(), Ordering::Release);
                tracing::info!(
                    written = written.len(),
                    waiting = endings.len(),
                    "logouts and revocations made while redis was unreachable are now written"
                );
            }
        }
    }
}
