//! Server-side sessions and sign-ins in progress. The browser holds only a signed opaque id;
//! identity, tokens and timestamps stay here, in memory (moka) with an absolute lifetime and
//! an idle timeout.

pub mod cookie;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{HeaderMap, HeaderValue};
use moka::sync::Cache;

use self::cookie::CookieKey;
use crate::config::SessionConfig;
use crate::oidc::login::{random_bytes, PendingLogin};
use crate::oidc::VerifiedLogin;
use crate::secret::Secret;

const SESSION_PURPOSE: &str = "session";
const LOGIN_PURPOSE: &str = "login";

/// Who a session belongs to, as verified at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject (JumpCloud user id).
    pub sub: String,
    /// Email, when the provider sent it.
    pub email: Option<String>,
    /// Username, when sent.
    pub username: Option<String>,
    /// Display name, when sent.
    pub name: Option<String>,
    /// Group names from the token.
    pub groups: Vec<String>,
}

/// Header values computed once per session, so forwarding only bumps reference counts.
#[derive(Debug, Clone)]
pub struct IdentityValues {
    /// The user id.
    pub user: HeaderValue,
    /// Email.
    pub email: Option<HeaderValue>,
    /// Username.
    pub username: Option<HeaderValue>,
    /// Comma-separated groups.
    pub groups: Option<HeaderValue>,
}

/// Provider tokens kept for logout and refresh; never sent to clients or upstreams.
#[derive(Debug)]
struct Tokens {
    id_token: Secret,
    refresh_token: Option<Secret>,
    id_token_exp: i64,
}

/// A signed assertion cached until shortly before it expires.
#[derive(Debug)]
pub struct CachedAssertion {
    /// Its `exp`.
    pub exp: i64,
    /// The directory snapshot version its groups came from (0: none).
    pub version: u64,
    /// The step-up time it states, if any.
    pub step_up_time: Option<i64>,
    /// The header value.
    pub value: HeaderValue,
}

/// One signed-in browser on one site.
#[derive(Debug)]
pub struct Session {
    /// The id in the cookie.
    pub id: [u8; 32],
    /// The site it was created on; it is valid there only.
    pub site: Arc<str>,
    /// Who.
    pub identity: Identity,
    /// Ready-made identity header values.
    pub values: IdentityValues,
    /// When the user authenticated at the provider.
    pub auth_time: Option<i64>,
    /// When the session was created (seconds since the epoch).
    pub created: i64,
    /// When it ends at the latest.
    pub expires: i64,
    tokens: Mutex<Tokens>,
    refreshing: AtomicBool,
    /// After a failed refresh, no new attempt before this time.
    refresh_not_before: AtomicI64,
    /// `auth_time` of the last verified step-up (0: none).
    step_up_time: AtomicI64,
    /// The last assertion signed for this session.
    pub assertion: ArcSwapOption<CachedAssertion>,
    /// The last assertion signed for a step-up route.
    pub assertion_step_up: ArcSwapOption<CachedAssertion>,
}

impl Session {
    /// When the user last proved a fresh multi-factor sign-in (the step-up token's
    /// `auth_time`), if ever in this session.
    pub fn step_up_time(&self) -> Option<i64> {
        let t = self.step_up_time.load(Ordering::Acquire);
        (t > 0).then_some(t)
    }

    /// Records a verified step-up; an older one never replaces a newer one.
    pub fn record_step_up(&self, auth_time: i64) {
        self.step_up_time.fetch_max(auth_time, Ordering::AcqRel);
    }

    /// The ID token, for `id_token_hint` at logout.
    pub fn id_token(&self) -> Option<Secret> {
        self.tokens.lock().ok().map(|t| t.id_token.clone())
    }

    /// The refresh token when the ID token expires within `margin` and no refresh is running;
    /// the caller then owns the refresh and must call [`Session::refreshed`] or
    /// [`Session::refresh_failed`].
    pub fn claim_refresh(&self, now: i64, margin: i64) -> Option<Secret> {
        let tokens = self.tokens.lock().ok()?;
        let refresh = tokens.refresh_token.clone()?;
        if tokens.id_token_exp - now > margin
            || now < self.refresh_not_before.load(Ordering::Relaxed)
        {
            return None;
        }
        drop(tokens);
        // Single flight: only the request that flips the flag refreshes.
        self.refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| refresh)
    }

    /// Stores refreshed tokens.
    pub fn refreshed(&self, login: VerifiedLogin) {
        if let Ok(mut t) = self.tokens.lock() {
            t.id_token = login.id_token;
            t.id_token_exp = login.claims.exp;
            if login.refresh_token.is_some() {
                t.refresh_token = login.refresh_token;
            }
        }
        self.refreshing.store(false, Ordering::Release);
    }

    /// Releases the refresh claim after a transient failure; a request after `retry_at`
    /// tries again.
    pub fn refresh_failed(&self, retry_at: i64) {
        self.refresh_not_before.store(retry_at, Ordering::Relaxed);
        self.refreshing.store(false, Ordering::Release);
    }
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// The session and sign-in store.
#[derive(Debug)]
pub struct Sessions {
    key: CookieKey,
    sessions: Cache<[u8; 32], Arc<Session>>,
    pending: Cache<String, Arc<PendingLogin>>,
    lifetime: Duration,
    login_timeout: Duration,
}

impl Sessions {
    /// An empty store.
    pub fn new(config: &SessionConfig, key: CookieKey) -> Sessions {
        Sessions {
            key,
            sessions: Cache::builder()
                .max_capacity(config.max_sessions)
                .time_to_live(config.lifetime)
                .time_to_idle(config.idle_timeout)
                .build(),
            pending: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.login_timeout)
                .build(),
            lifetime: config.lifetime,
            login_timeout: config.login_timeout,
        }
    }

    /// Creates a session for a verified login on `site`; returns it and its `Set-Cookie`.
    pub fn create(&self, site: Arc<str>, login: VerifiedLogin) -> (Arc<Session>, HeaderValue) {
        let id = random_bytes();
        let now = crate::oidc::now();
        let c = &login.claims;
        let identity = Identity {
            sub: c.sub.clone(),
            email: c.email.clone(),
            username: c.username.clone(),
            name: c.name.clone(),
            groups: c.groups.clone(),
        };
        let values = IdentityValues {
            user: header_value(&c.sub).unwrap_or_else(|| HeaderValue::from_static("")),
            email: c.email.as_deref().and_then(header_value),
            username: c.username.as_deref().and_then(header_value),
            groups: (!c.groups.is_empty())
                .then(|| {
                    c.groups
                        .iter()
                        .map(|g| g.replace(',', " "))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .and_then(|s| header_value(&s)),
        };
        let session = Arc::new(Session {
            id,
            site,
            identity,
            values,
            auth_time: c.auth_time,
            created: now,
            expires: now + self.lifetime.as_secs() as i64,
            tokens: Mutex::new(Tokens {
                id_token: login.id_token,
                refresh_token: login.refresh_token,
                id_token_exp: c.exp,
            }),
            refreshing: AtomicBool::new(false),
            refresh_not_before: AtomicI64::new(0),
            step_up_time: AtomicI64::new(0),
            assertion: ArcSwapOption::empty(),
            assertion_step_up: ArcSwapOption::empty(),
        });
        self.sessions.insert(id, session.clone());
        let cookie = cookie::set(
            cookie::SESSION,
            &self.key.seal(SESSION_PURPOSE, &id),
            self.lifetime.as_secs(),
        );
        (session, cookie)
    }

    /// The live session named by the request's cookie for `site`, if any. Tampered, unknown,
    /// expired or foreign-site cookies are simply no session.
    pub fn from_headers(&self, headers: &HeaderMap, site: &str) -> Option<Arc<Session>> {
        cookie::values(headers, cookie::SESSION)
            .filter_map(|v| self.key.open(SESSION_PURPOSE, v))
            .filter_map(|id| self.sessions.get(&id))
            .find(|s| &*s.site == site)
    }

    /// Ends a session.
    pub fn remove(&self, id: &[u8; 32]) {
        self.sessions.invalidate(id);
    }

    /// Number of live sessions (approximate; for metrics).
    pub fn len(&self) -> u64 {
        self.sessions.entry_count()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The browser binding from the login cookie, or a new one with its `Set-Cookie`.
    pub fn binding(&self, headers: &HeaderMap) -> ([u8; 32], Option<HeaderValue>) {
        if let Some(b) =
            cookie::values(headers, cookie::LOGIN).find_map(|v| self.key.open(LOGIN_PURPOSE, v))
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
            .filter_map(|v| self.key.open(LOGIN_PURPOSE, v))
            .any(|b| bool::from(subtle::ConstantTimeEq::ct_eq(&b[..], &binding[..])))
    }

    /// Keeps a sign-in until its callback, at most `session.login_timeout`.
    pub fn start_login(&self, login: PendingLogin) -> Arc<PendingLogin> {
        let login = Arc::new(login);
        self.pending.insert(login.state.clone(), login.clone());
        login
    }

    /// Takes a sign-in by its `state`; a second call with the same state finds nothing.
    pub fn take_login(&self, state: &str) -> Option<Arc<PendingLogin>> {
        if state.is_empty() || state.len() > 128 {
            return None;
        }
        self.pending.remove(state)
    }
}
