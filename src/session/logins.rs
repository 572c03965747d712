//! Sign-ins in progress: the login cookie that binds one to the browser that started it,
//! and the pending sign-in itself, kept until its callback takes it (once) or it times out.

use http::header::{HeaderMap, HeaderValue};

use super::{cookie, Sessions, LOGIN_PURPOSE, MAX_SESSION_COOKIES};
use crate::oidc::login::PendingLogin;
use std::sync::Arc;

use crate::secret::random_bytes;
use crate::shared::{LoginRecord, StoreError};

impl Sessions {
    /// The browser binding from the login cookie, or a new one with its `Set-Cookie`.
    pub fn binding(&self, headers: &HeaderMap) -> ([u8; 32], Option<HeaderValue>) {
        if let Some(b) = cookie::values(headers, cookie::LOGIN)
            .take(MAX_SESSION_COOKIES)
            .find_map(|v| self.key.open(LOGIN_PURPOSE, v.value_trimmed()))
        {
            return (b, None);
        }
        let b = random_bytes();
        let set = cookie::set(
            cookie::LOGIN,
            &self.key.seal(LOGIN_PURPOSE, &b),
            self.login_timeout.as_secs(),
        );
        (b, Some(set))
    }

    /// Whether the request carries the login cookie for `binding`.
    pub fn has_binding(&self, headers: &HeaderMap, binding: &[u8; 32]) -> bool {
        cookie::values(headers, cookie::LOGIN)
            .take(MAX_SESSION_COOKIES)
            .filter_map(|v| self.key.open(LOGIN_PURPOSE, v.value_trimmed()))
            .any(|b| bool::from(subtle::ConstantTimeEq::ct_eq(&b[..], &binding[..])))
    }

    /// Keeps a sign-in until its callback, at most `session.login_timeout`.
    pub async fn start_login(&self, login: PendingLogin) -> Result<(), StoreError> {
        if let Some(shared) = &self.shared {
            let record = LoginRecord {
                state: login.state.clone(),
                nonce: login.nonce.clone(),
                verifier: login.verifier.clone(),
                return_to: login.return_to.clone(),
                site: login.site.to_string(),
                redirect_uri: login.redirect_uri.clone(),
                binding: crate::shared::hex(&login.binding),
                started: login.started,
                step_up: login.step_up,
            };
            return shared
                .put_login(
                    &record,
                    self.login_timeout.as_secs(),
                    self.max_pending_logins,
                )
                .await;
        }
        self.pending.insert(login.state.clone(), Arc::new(login));
        Ok(())
    }

    /// Takes a sign-in by its `state`: once, and only within `session.login_timeout`.
    pub async fn take_login(&self, state: &str) -> Result<Option<PendingLogin>, StoreError> {
        if state.is_empty() || state.len() > 128 {
            return Ok(None);
        }
        let login = match &self.shared {
            Some(shared) => shared.take_login(state).await?.and_then(|r| {
                let mut binding = [0u8; 32];
                if r.binding.len() != 64 {
                    return None;
                }
                for (i, b) in binding.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&r.binding[2 * i..2 * i + 2], 16).ok()?;
                }
                Some(PendingLogin {
                    state: r.state,
                    nonce: r.nonce,
                    verifier: r.verifier,
                    return_to: r.return_to,
                    site: Arc::from(r.site.as_str()),
                    redirect_uri: r.redirect_uri,
                    binding,
                    started: r.started,
                    step_up: r.step_up,
                })
            }),
            None => self
                .pending
                .remove(state)
                .map(|l| Arc::try_unwrap(l).unwrap_or_else(|a| a.duplicate())),
        };
        // A cache's expiry is housekeeping; the deadline itself is checked here.
        Ok(login.filter(|l| crate::clock::now() - l.started < self.login_timeout.as_secs() as i64))
    }
}
