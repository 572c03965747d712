//! A sign-in in progress: state, nonce and PKCE verifier, where to return, and the browser it
//! belongs to. Kept server-side, single use, short-lived.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use crate::secret::Secret;

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

/// A sign-in started by the gateway and not yet completed.
#[derive(Debug)]
pub struct PendingLogin {
    /// `state`: the key this login is stored under.
    pub state: String,
    /// `nonce`, echoed in the ID token.
    pub nonce: String,
    /// PKCE verifier.
    pub verifier: Secret,
    /// Where to go afterwards: a path on `site`.
    pub return_to: String,
    /// The site the login started on.
    pub site: Arc<str>,
    /// The callback URL sent to the provider.
    pub redirect_uri: String,
    /// The browser binding held in the login cookie.
    pub binding: [u8; 32],
    /// When the login started (seconds since the epoch).
    pub started: i64,
    /// A step-up: completed only at the step-up callback, with a fresh authentication
    /// (`prompt=login`, `max_age=0`) from the step-up application.
    pub step_up: bool,
}

impl PendingLogin {
    /// A new login with fresh random state, nonce and verifier.
    pub fn new(
        site: Arc<str>,
        return_to: String,
        redirect_uri: String,
        binding: [u8; 32],
        step_up: bool,
    ) -> PendingLogin {
        PendingLogin {
            state: random_token(),
            nonce: random_token(),
            verifier: Secret::new(random_token()),
            return_to,
            site,
            redirect_uri,
            binding,
            started: super::now(),
            step_up,
        }
    }

    /// A copy (the verifier is a secret and not `Clone` by accident elsewhere).
    pub fn duplicate(&self) -> PendingLogin {
        PendingLogin {
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            verifier: self.verifier.clone(),
            return_to: self.return_to.clone(),
            site: self.site.clone(),
            redirect_uri: self.redirect_uri.clone(),
            binding: self.binding,
            started: self.started,
            step_up: self.step_up,
        }
    }

    /// The PKCE S256 challenge for the verifier.
    pub fn challenge(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.verifier.expose().as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

/// A return-to target if it is safe: a path on the same site, nothing else. Refuses
/// `//evil`, `/\evil`, `https:evil`, encoded or control-character variants, and our own
/// endpoints; anything refused falls back to `/`.
pub fn safe_return_to(raw: &str) -> Option<String> {
    if raw.len() > 2048 || !raw.starts_with('/') {
        return None;
    }
    let b = raw.as_bytes();
    if b.get(1).is_some_and(|&c| c == b'/' || c == b'\\') {
        return None;
    }
    if b.iter()
        .any(|&c| c < 0x21 || c == 0x7f || c == b'\\' || c >= 0x80)
    {
        return None;
    }
    // Browsers decode before interpreting; an encoded slash or backslash right after the
    // first one would become `//` or `/\`.
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("/%2f")
        || lower.starts_with("/%5c")
        || lower.contains("%00")
        || lower.contains("%0d")
        || lower.contains("%0a")
        || lower.contains("%09")
    {
        return None;
    }
    let path = raw.split(['?', '#']).next().unwrap_or(raw);
    let canonical = crate::canonical::path(path).ok()?;
    // The gateway's namespace in any spelling a server may treat as the same (case,
    // `;parameters`), as the request path treats it.
    let key = crate::policy::routes::match_key(&canonical);
    if key.starts_with("/.jumpgate/") || key == "/.jumpgate" {
        return None;
    }
    Some(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to() {
        for ok in ["/", "/a/b?c=d", "/dashboard#x", "/a%20b"] {
            assert_eq!(safe_return_to(ok).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "/.JUMPGATE/logout",
            "/.Jumpgate/x",
            "/.jumpgate;x/logout",
            "/%2Ejumpgate/logout",
            "/.jumpgate",
            "//evil.example",
            "/\\evil.example",
            "https:evil.example",
            "https://evil.example",
            "evil",
            "",
            "/%2fevil.example",
            "/%5Cevil.example",
            "/\tevil",
            "/a\r\nSet-Cookie:x",
            "/%0d%0aX",
            "/a/%2F/b",
            "/.jumpgate/logout",
            "/x/../.jumpgate/callback",
            " /a",
            "/é",
        ] {
            assert_eq!(safe_return_to(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pkce_challenge_is_s256() {
        let l = PendingLogin::new(
            "s".into(),
            "/".into(),
            "https://s/cb".into(),
            [0; 32],
            false,
        );
        assert_eq!(l.state.len(), 43);
        assert_ne!(l.state, l.nonce);
        assert_eq!(l.challenge().len(), 43);
    }
}
