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

/// A sealed value as whole words, so that comparing two takes 11 constant-time steps
/// rather than 87 (`subtle` fences every step; byte by byte the comparison cost more than
/// the rest of the session lookup).
type Words = [u64; SEALED_LEN.div_ceil(8)];

fn words(bytes: &[u8]) -> Option<Words> {
    if bytes.len() != SEALED_LEN {
        return None;
    }
    let mut out = [0u64; SEALED_LEN.div_ceil(8)];
    for (word, chunk) in out.iter_mut().zip(bytes.chunks(8)) {
        let mut padded = [0u8; 8];
        padded[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(padded);
    }
    Some(out)
}

/// A sealed value and what it opened to: the session id and its store key.
#[derive(Clone, Copy)]
pub(super) struct Opened {
    value: Words,
    pub(super) id: [u8; 32],
    pub(super) key: [u8; 32],
}

impl Opened {
    /// `value` (a sealed cookie value whose tag verified) opened to `id`, stored under `key`.
    pub(super) fn new(value: &str, id: [u8; 32], key: [u8; 32]) -> Option<Opened> {
        Some(Opened {
            value: words(value.as_bytes())?,
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
    pub(super) fn recall(&self, value: &[u8]) -> Option<Opened> {
        let value = words(value)?;
        let remembered = (*self.0.lock().unwrap_or_else(|e| e.into_inner()))?;
        bool::from(remembered.value.ct_eq(&value)).then_some(remembered)
    }

    /// Remembers `opened`, in place of what was remembered before.
    pub(super) fn remember(&self, opened: Opened) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(opened);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change at any position, the last partial word included, is a different value.
    #[test]
    fn every_byte_counts() {
        let value: String = (0..SEALED_LEN)
            .map(|i| char::from(b'A' + (i % 26) as u8))
            .collect();
        let memo = OpenedCookie::default();
        assert!(
            memo.recall(value.as_bytes()).is_none(),
            "nothing remembered yet"
        );
        memo.remember(Opened::new(&value, [1; 32], [2; 32]).unwrap());
        assert_eq!(
            memo.recall(value.as_bytes()).map(|o| (o.id, o.key)),
            Some(([1; 32], [2; 32]))
        );
        for i in 0..SEALED_LEN {
            let mut other = value.clone().into_bytes();
            other[i] = b'z';
            assert!(memo.recall(&other).is_none(), "byte {i}");
        }
        assert!(memo.recall(&value.as_bytes()[1..]).is_none(), "shorter");
        assert!(
            memo.recall(format!("{value}A").as_bytes()).is_none(),
            "longer"
        );
        assert!(Opened::new(&value[1..], [1; 32], [2; 32]).is_none());
    }
}
