//! The session cookie a connection last presented, remembered opened, so the requests that
//! follow on a keep-alive or HTTP/2 connection skip base64, the HMAC and the store key's
//! SHA-256 (about 9,000 of the 76,000 instructions a protected request cost).
//!
//! Only the opening is remembered, never the session: the store is asked on every request,
//! so a session ended by logout, revocation, the directory or its lifetime ends for this
//! connection at the same moment as for any other. The opening is a pure function of the
//! cookie's bytes and the cookie key, and the key lives as long as the process (a reload
//! cannot change it), so a remembered opening never goes stale.

use std::sync::Mutex;

use subtle::ConstantTimeEq;

use super::cookie::SEALED_LEN;

/// A sealed value and what it opened to: the session id and its store key.
#[derive(Clone, Copy)]
pub(super) struct Opened {
    value: [u8; SEALED_LEN],
    pub(super) id: [u8; 32],
    pub(super) key: [u8; 32],
}

impl Opened {
    /// `value` (a sealed cookie value whose tag verified) opened to `id`, stored under `key`.
    pub(super) fn new(value: &str, id: [u8; 32], key: [u8; 32]) -> Option<Opened> {
        Some(Opened {
            value: value.as_bytes().try_into().ok()?,
            id,
            key,
        })
    }
}

/// One connection's memory of its last opened session cookie. Requests of one HTTP/2
/// connection run concurrently, hence the lock; it is held for a copy, never across an await.
#[derive(Default)]
pub struct OpenedCookie(Mutex<Option<Opened>>);

impl std::fmt::Debug for OpenedCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id inside is the session's bearer secret.
        f.write_str("OpenedCookie([redacted])")
    }
}

impl OpenedCookie {
    /// What `value` opened to, if it is byte for byte the value remembered. The comparison
    /// takes the same time wherever the bytes differ: a connection can carry several users'
    /// requests (a load balancer's pooled connection), and none may learn another's cookie
    /// from how fast a guess is turned down.
    pub(super) fn recall(&self, value: &str) -> Option<Opened> {
        let remembered = (*self.0.lock().unwrap_or_else(|e| e.into_inner()))?;
        let same =
            value.len() == SEALED_LEN && bool::from(remembered.value.ct_eq(value.as_bytes()));
        same.then_some(remembered)
    }

    /// Remembers `opened`, in place of what was remembered before.
    pub(super) fn remember(&self, opened: Opened) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(opened);
    }
}
