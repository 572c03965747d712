//! A sign-in in progress: state, nonce and PKCE verifier, where to return, and the browser it
//! belongs to. Kept server-side, single use, short-lived.

use std::sync::Arc;

use crate::secret::{random_token, Secret};

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
            started: crate::clock::now(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_nonce_and_verifier_are_fresh_and_distinct() {
        let l = PendingLogin::new(
            "s".into(),
            "/".into(),
            "https://s/cb".into(),
            [0; 32],
            false,
        );
        let m = PendingLogin::new(
            "s".into(),
            "/".into(),
            "https://s/cb".into(),
            [0; 32],
            false,
        );
        assert_eq!(l.state.len(), 43, "256 bits, base64url");
        assert_ne!(l.state, l.nonce);
        assert_ne!(l.state, m.state);
        assert_ne!(l.verifier.expose(), m.verifier.expose());
    }
}
