//! Server-side sessions and sign-ins in progress. The browser holds only a signed opaque id;
//! identity, tokens and timestamps stay here, in memory (moka) with an absolute lifetime and
//! an idle timeout.

pub mod cookie;
mod logins;
mod opened;

pub use self::opened::OpenedCookie;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::{HeaderMap, HeaderValue};
use moka::sync::Cache;

use self::cookie::CookieKey;
use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::oidc::login::PendingLogin;
use crate::oidc::VerifiedLogin;
use crate::secret::random_bytes;
use crate::secret::Secret;
use crate::shared::{Event, RedisStore, SessionRecord};

const SESSION_PURPOSE: &str = "session";

/// How many session cookies of one request are looked at: one is what a browser sends;
/// a second covers a cookie being replaced while a request was in flight.
pub const MAX_SESSION_COOKIES: usize = 2;

const LOGIN_PURPOSE: &str = "login";

/// Who a session belongs to, as verified at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject (JumpCloud user id).
    pub sub: String,
    /// Email, when the provider sent it.
    pub email: Option<String>,
    /// Whether `email` may name the user in the directory: verified, and from an issuer
    /// trusted to match by email. Otherwise only `sub` finds the directory user.
    pub email_matches: bool,
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

/// The provider's refresh token and when the ID token expires; never sent to clients or
/// upstreams. The ID token itself is not kept: logout names the client, not the token.
#[derive(Debug)]
struct Tokens {
    refresh_token: Option<Secret>,
    id_token_exp: i64,
}

/// A signed assertion cached until shortly before it expires.
#[derive(Debug)]
pub struct CachedAssertion {
    /// Its `exp`.
    pub exp: i64,
    /// The directory groups it states; `None` when its groups came from the sign-in token.
    pub groups: Option<Box<[String]>>,
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
    /// The SHA-256 of the id: the store key.
    pub key: [u8; 32],
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
    /// The provider session it was signed in through (the ID token's `sid`), when stated:
    /// a back-channel logout for that provider session ends this session.
    pub sid: Option<String>,
    tokens: Mutex<Tokens>,
    refreshing: AtomicBool,
    /// After a failed refresh, no new attempt before this time.
    refresh_not_before: AtomicI64,
    /// `auth_time` of the last verified step-up (0: none).
    step_up_time: AtomicI64,
    /// When this copy was read from the shared store (ms since the epoch).
    fetched_ms: AtomicI64,
    /// When it was last used (ms since the epoch): in memory, for the idle timeout; in
    /// Redis, when its shared TTL was last extended.
    touched_ms: AtomicI64,
    /// The last assertion signed for this session.
    pub assertion: ArcSwapOption<CachedAssertion>,
    /// The last assertion signed for a step-up route.
    pub assertion_step_up: ArcSwapOption<CachedAssertion>,
}

impl Session {
    /// `now_ms` is when it was read: its last use, and when its copy was fetched.
    fn from_record(id: [u8; 32], site: Arc<str>, r: SessionRecord, now_ms: i64) -> Session {
        let identity = Identity {
            sub: r.sub,
            email: r.email,
            email_matches: r.email_matches,
            username: r.username,
            name: r.name,
            groups: r.groups,
        };
        let values = IdentityValues {
            user: header_value(&identity.sub).unwrap_or_else(|| HeaderValue::from_static("")),
            email: identity.email.as_deref().and_then(header_value),
            username: identity.username.as_deref().and_then(header_value),
            groups: (!identity.groups.is_empty())
                .then(|| {
                    identity
                        .groups
                        .iter()
                        .map(|g| g.replace(',', " "))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .and_then(|s| header_value(&s)),
        };
        Session {
            id,
            key: key_of(&id),
            site,
            identity,
            values,
            auth_time: r.auth_time,
            created: r.created,
            expires: r.expires,
            sid: r.sid,
            tokens: Mutex::new(Tokens {
                refresh_token: r.refresh_token,
                id_token_exp: r.id_token_exp,
            }),
            refreshing: AtomicBool::new(false),
            refresh_not_before: AtomicI64::new(0),
            step_up_time: AtomicI64::new(r.step_up_time),
            fetched_ms: AtomicI64::new(now_ms),
            touched_ms: AtomicI64::new(now_ms),
            assertion: ArcSwapOption::empty(),
            assertion_step_up: ArcSwapOption::empty(),
        }
    }

    /// A session in no store and behind no cookie, as `identity` would hold one on `site`
    /// at `now`, last stepped up at `step_up_time`: what `jumpgate explain` asks the policy
    /// about. It ends in an hour; nothing can present it.
    pub fn detached(
        site: Arc<str>,
        identity: Identity,
        step_up_time: Option<i64>,
        now: i64,
    ) -> Arc<Session> {
        let record = SessionRecord {
            site: site.to_string(),
            sub: identity.sub,
            email: identity.email,
            username: identity.username,
            name: identity.name,
            groups: identity.groups,
            auth_time: Some(now),
            created: now,
            expires: now + 3600,
            refresh_token: None,
            id_token_exp: now + 3600,
            step_up_time: step_up_time.unwrap_or(0),
            sid: None,
            email_matches: identity.email_matches,
            legacy_id_token: (),
        };
        Arc::new(Session::from_record(
            random_bytes(),
            site,
            record,
            now * 1000,
        ))
    }

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

    /// The session as stored in a shared store.
    pub fn record(&self) -> SessionRecord {
        let (refresh_token, id_token_exp) = match self.tokens.lock() {
            Ok(t) => (t.refresh_token.clone(), t.id_token_exp),
            Err(_) => (None, 0),
        };
        SessionRecord {
            site: self.site.to_string(),
            sub: self.identity.sub.clone(),
            email: self.identity.email.clone(),
            username: self.identity.username.clone(),
            name: self.identity.name.clone(),
            groups: self.identity.groups.clone(),
            auth_time: self.auth_time,
            created: self.created,
            expires: self.expires,
            refresh_token,
            id_token_exp,
            step_up_time: self.step_up_time.load(Ordering::Acquire),
            sid: self.sid.clone(),
            email_matches: self.identity.email_matches,
            legacy_id_token: (),
        }
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

/// The SHA-256 of a session id: the key a session is stored under, so the store never holds
/// a value that would work as a cookie.
pub fn key_of(id: &[u8; 32]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, id);
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// Hashes a store key by its first eight bytes. A key is the SHA-256 of a random id, so
/// those bytes are already uniform, and no client can choose one: keys are made from ids
/// the gateway drew, and looked up only once a cookie's tag verifies. SipHash, moka's
/// default, spent some 260 instructions a request mixing them again. Written here because
/// the identity hashers on crates.io take integers, not byte arrays.
#[derive(Default)]
struct StoreKeyHasher(u64);

impl std::hash::Hasher for StoreKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }

    /// A byte array's length, hashed before its bytes: the same for every key.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

type StoreKeyHashing = std::hash::BuildHasherDefault<StoreKeyHasher>;

/// A store key from its hex form, as published in invalidations.
fn key_from_hex(hash: &str) -> Option<[u8; 32]> {
    if hash.len() != 64 || !hash.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A new session's record from verified claims: created `now`, ending at `expires`.
fn new_record(
    site: &str,
    c: crate::oidc::verify::IdClaims,
    now: i64,
    expires: i64,
    refresh_token: Option<Secret>,
) -> SessionRecord {
    SessionRecord {
        site: site.to_owned(),
        sub: c.sub,
        email: c.email,
        username: c.username,
        name: c.name,
        groups: c.groups,
        auth_time: c.auth_time,
        created: now,
        expires,
        refresh_token,
        id_token_exp: c.exp,
        step_up_time: 0,
        sid: c.sid,
        email_matches: c.email_matches,
        legacy_id_token: (),
    }
}

/// Why a session or sign-in could not be stored.
pub use crate::shared::StoreError;

/// The session and sign-in store: in memory, or in Redis with a local cache in front.
#[derive(Debug)]
pub struct Sessions {
    key: CookieKey,
    local: Cache<[u8; 32], Arc<Session>, StoreKeyHashing>,
    pending: Cache<String, Arc<PendingLogin>>,
    /// Users whose sessions were ended for a directory reason within the last minute.
    revoked: Cache<String, ()>,
    shared: Option<Arc<RedisStore>>,
    lifetime: Duration,
    idle_timeout: Duration,
    login_timeout: Duration,
    max_pending_logins: u64,
    /// The gateway's time: session ends and idle time are counted on it.
    clock: Clock,
}

impl Sessions {
    /// An empty store; with `shared`, sessions live in Redis and `local` only caches them.
    pub fn new(config: &SessionConfig, key: CookieKey) -> Sessions {
        Self::with_shared(config, key, None, Clock::system())
    }

    /// A store backed by Redis when `shared` is given, keeping time by `clock`.
    pub fn with_shared(
        config: &SessionConfig,
        key: CookieKey,
        shared: Option<Arc<RedisStore>>,
        clock: Clock,
    ) -> Sessions {
        Sessions {
            key,
            local: Cache::builder()
                .max_capacity(config.max_sessions)
                .time_to_live(config.lifetime)
                .time_to_idle(config.idle_timeout)
                .support_invalidation_closures()
                .build_with_hasher(StoreKeyHashing::default()),
            // Least-recently-used eviction admits every new entry: moka's default policy may
            // refuse to admit one when the cache is full of entries a flood put there, which
            // would turn a flood of sign-in starts into refused real sign-ins.
            pending: Cache::builder()
                .max_capacity(config.max_pending_logins)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(config.login_timeout)
                .build(),
            revoked: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            shared,
            lifetime: config.lifetime,
            idle_timeout: config.idle_timeout,
            login_timeout: config.login_timeout,
            max_pending_logins: config.max_pending_logins,
            clock,
        }
    }

    /// The time sessions are kept by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The Redis store, when sessions are shared.
    pub fn shared(&self) -> Option<&Arc<RedisStore>> {
        self.shared.as_ref()
    }

    fn build(&self, id: [u8; 32], site: Arc<str>, r: SessionRecord) -> Arc<Session> {
        Arc::new(Session::from_record(id, site, r, self.clock.now_ms()))
    }

    /// A session for one request authenticated by a bearer token: never stored, no cookie.
    pub fn ephemeral(&self, site: Arc<str>, c: crate::oidc::verify::IdClaims) -> Arc<Session> {
        let expires = c.exp;
        let mut record = new_record(&site, c, self.clock.now(), expires, None);
        record.sid = None;
        self.build(random_bytes(), site, record)
    }

    fn ttl_for(&self, expires: i64) -> u64 {
        let left = (expires - self.clock.now()).max(1) as u64;
        left.min(self.idle_timeout.as_secs().max(1))
    }

    /// Creates a session for a verified login on `site`; returns it and its `Set-Cookie`.
    pub async fn create(
        &self,
        site: Arc<str>,
        login: VerifiedLogin,
    ) -> Result<(Arc<Session>, HeaderValue), StoreError> {
        let id = random_bytes();
        let now = self.clock.now();
        let expires = now + self.lifetime.as_secs() as i64;
        let record = new_record(&site, login.claims, now, expires, login.refresh_token);
        self.store_new(id, site, record).await
    }

    /// Puts a new session in the stores and makes its `Set-Cookie`, valid until the
    /// session's end.
    async fn store_new(
        &self,
        id: [u8; 32],
        site: Arc<str>,
        record: SessionRecord,
    ) -> Result<(Arc<Session>, HeaderValue), StoreError> {
        let ttl = self.ttl_for(record.expires);
        let left = (record.expires - self.clock.now()).max(1) as u64;
        let session = self.build(id, site, record.clone());
        if let Some(shared) = &self.shared {
            shared
                .put_session(&crate::shared::hex(&session.key), &record, ttl)
                .await?;
        }
        self.local.insert(session.key, session.clone());
        let cookie = cookie::set(cookie::SESSION, &self.key.seal(SESSION_PURPOSE, &id), left);
        Ok((session, cookie))
    }

    /// Replaces a session by the same one under a new id, carrying a verified step-up at
    /// `step_up_time` (a privilege change must not keep an id that may have been seen before
    /// it). The old id stops working everywhere and never gains the step-up, even when the
    /// store fails; the new one keeps the session's end, identity and tokens. Returns the new
    /// session and its `Set-Cookie`.
    pub async fn rotate(
        &self,
        old: &Session,
        step_up_time: i64,
    ) -> Result<(Arc<Session>, HeaderValue), StoreError> {
        let mut record = old.record();
        record.step_up_time = record.step_up_time.max(step_up_time);
        let new = self
            .store_new(random_bytes(), old.site.clone(), record)
            .await?;
        self.remove(old).await;
        Ok(new)
    }

    /// The live session named by the request's cookie for `site`, if any. Tampered, unknown,
    /// expired or foreign-site cookies are simply no session.
    ///
    /// A browser holds one `__Host-` cookie per name and host, so more than a few are an
    /// attack on the store: at most [`MAX_SESSION_COOKIES`] are read, whatever follows.
    pub async fn from_headers(&self, headers: &HeaderMap, site: &str) -> Option<Arc<Session>> {
        self.from_headers_on(headers, site, None, self.clock.now_ms())
            .await
    }

    /// [`Sessions::from_headers`] for a request on a connection that remembers the session
    /// cookie it last presented in `opened`: the same cookie again is not opened again. The
    /// session's end and idle limit are judged at `now_ms`, the request's reading of the
    /// gateway's clock.
    pub async fn from_headers_on(
        &self,
        headers: &HeaderMap,
        site: &str,
        opened: Option<&OpenedCookie>,
        now_ms: i64,
    ) -> Option<Arc<Session>> {
        for pair in cookie::pairs(headers, cookie::SESSION).take(MAX_SESSION_COOKIES) {
            // The remembered value is compared with the bytes as sent, so the same cookie
            // again is not even parsed; any other spelling of it is parsed and opened.
            // Scoped so that only whether it was recalled is kept across the lookup: an opened
            // cookie is 150 bytes, and every byte of this future is copied with the request's.
            let (found, was_recalled) = {
                let recalled = opened.and_then(|o| o.recall(pair.raw_value()));
                let was_recalled = recalled.is_some();
                match recalled.or_else(|| self.open(pair.parse()?.value_trimmed())) {
                    Some(found) => (found, was_recalled),
                    None => continue,
                }
            };
            if let Some(s) = self
                .lookup(found.id, found.key, now_ms)
                .await
                .filter(|s| &*s.site == site)
            {
                if let (Some(o), false) = (opened, was_recalled) {
                    o.remember(found);
                }
                return Some(s);
            }
        }
        None
    }

    /// A session cookie's value opened: its id, if the tag verifies, and the id's store key.
    fn open(&self, value: &str) -> Option<opened::Opened> {
        let id = self.key.open(SESSION_PURPOSE, value)?;
        opened::Opened::new(value, id, key_of(&id))
    }

    /// The session stored under `id` (whose store key is `key`), if it has not reached its
    /// absolute end. The end is the session's own `expires`, counted from the first sign-in
    /// and carried through every refresh and step-up; the caches' lifetimes are
    /// housekeeping, never the limit.
    /// The end, the idle limit and the local copy's age are all judged at `now_ms`.
    async fn lookup(&self, id: [u8; 32], key: [u8; 32], now_ms: i64) -> Option<Arc<Session>> {
        let found = self.lookup_any(id, key, now_ms).await?;
        if found.expires <= now_ms.div_euclid(1000) {
            self.local.invalidate(&found.key);
            return None;
        }
        Some(found)
    }

    async fn lookup_any(&self, id: [u8; 32], key: [u8; 32], now_ms: i64) -> Option<Arc<Session>> {
        let cached = self.local.get(&key);
        let Some(shared) = &self.shared else {
            return cached.filter(|s| self.used_within_idle_timeout(s, now_ms));
        };
        let fresh_enough = |s: &Session| {
            shared.subscribed()
                && now_ms - s.fetched_ms.load(Ordering::Relaxed)
                    < shared.config.local_cache_ttl.as_millis() as i64
        };
        if let Some(s) = &cached {
            if fresh_enough(s) {
                self.touch(shared, s, now_ms);
                return cached;
            }
        }
        // Boxed: a local-cache miss is the rare case, and Redis's future is large enough
        // that inline it would be copied with every request's future.
        let hex = crate::shared::hex(&key);
        match Box::pin(shared.get_session(&hex)).await {
            Ok(Some(record)) => {
                let site: Arc<str> = match &cached {
                    Some(c) if *c.site == *record.site => c.site.clone(),
                    _ => Arc::from(record.site.as_str()),
                };
                let s = self.build(id, site, record);
                self.local.insert(key, s.clone());
                Some(s)
            }
            Ok(None) => {
                self.local.invalidate(&key);
                None
            }
            // Redis is down: cached sessions keep working for the grace period only, so a
            // revocation that could not reach us is honoured within it.
            Err(e) => {
                tracing::debug!(error = %e, "session lookup in redis failed");
                cached.filter(|_| shared.within_grace())
            }
        }
    }

    /// Whether an in-memory session was last used within the idle timeout; if so, this use
    /// starts its idle time again. The cache's own idle eviction runs on the system's clock
    /// and only frees memory; this is the limit. (In Redis the limit is the record's TTL.)
    fn used_within_idle_timeout(&self, s: &Arc<Session>, now: i64) -> bool {
        let idle = i64::try_from(self.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        if now - s.touched_ms.load(Ordering::Relaxed) > idle {
            self.local.invalidate(&s.key);
            return false;
        }
        s.touched_ms.store(now, Ordering::Relaxed);
        true
    }

    /// Extends a shared session's idle TTL, at most every tenth of the idle timeout.
    fn touch(&self, shared: &Arc<RedisStore>, s: &Arc<Session>, now: i64) {
        let every = (self.idle_timeout.as_millis() as i64 / 10).max(1000);
        let last = s.touched_ms.load(Ordering::Relaxed);
        if now - last < every
            || s.touched_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let shared = shared.clone();
        let hash = crate::shared::hex(&s.key);
        let ttl = self.ttl_for(s.expires);
        tokio::spawn(async move {
            let _ = shared.touch(&hash, ttl).await;
        });
    }

    /// Ends a session, everywhere when shared.
    pub async fn remove(&self, s: &Session) {
        self.local.invalidate(&s.key);
        if let Some(shared) = &self.shared {
            shared
                .end_session(&crate::shared::hex(&s.key), &s.identity.sub)
                .await;
        }
    }

    /// Whether a revocation of `sub`'s sessions is due: true at most once a minute per user,
    /// so that a stream of requests the directory refuses costs one revocation, not one each.
    pub fn claim_revocation(&self, sub: &str) -> bool {
        self.revoked.entry_by_ref(sub).or_insert(()).is_fresh()
    }

    /// Ends every session of `sub`, everywhere when shared. Returns how many were found.
    pub async fn revoke_user(&self, sub: &str) -> usize {
        let owned = sub.to_owned();
        let _ = self
            .local
            .invalidate_entries_if(move |_, s| s.identity.sub == owned);
        match &self.shared {
            Some(shared) => shared.end_user(sub).await,
            None => 0,
        }
    }

    /// Ends the sessions signed in through provider session `sid` (only `sub`'s, when
    /// given), on every instance when shared: the back-channel logout of one provider
    /// session. Other sessions of the same user stay. Returns how many ended.
    pub async fn end_provider_session(
        &self,
        sid: &str,
        sub: Option<&str>,
    ) -> Result<usize, StoreError> {
        let matches =
            |s_sid: Option<&str>, s_sub: &str| s_sid == Some(sid) && sub.is_none_or(|u| u == s_sub);
        // Here first, so this instance stops serving them even when Redis cannot be reached.
        // A walk over the sessions held here rather than an index by `sid`: a back-channel
        // logout is rare and comes only with a token the provider signed, while an index
        // entry cost every session 0.6 KiB.
        let mut ended = 0;
        for (key, s) in self.local.iter() {
            if matches(s.sid.as_deref(), &s.identity.sub) {
                self.local.invalidate(&*key);
                ended += 1;
            }
        }
        let Some(shared) = &self.shared else {
            return Ok(ended);
        };
        // Then everywhere, through the same path as a logout: deleted and published.
        let mut gone = Vec::new();
        for (hash, record) in shared.sid_sessions(sid).await? {
            if !matches(record.sid.as_deref(), &record.sub) {
                continue;
            }
            if let Some(key) = key_from_hex(&hash) {
                self.local.invalidate(&key);
            }
            shared.delete_session(&hash, &record.sub).await?;
            gone.push(hash);
        }
        shared.unindex_sid(sid, &gone).await?;
        Ok(gone.len())
    }

    /// Ends every session of `sub`, on every instance when shared, like
    /// [`Sessions::revoke_user`] but reporting a store failure instead of logging it.
    /// Returns how many ended.
    pub async fn end_user(&self, sub: &str) -> Result<usize, StoreError> {
        let here = self
            .local
            .iter()
            .filter(|(_, s)| s.identity.sub == sub)
            .count();
        let owned = sub.to_owned();
        let _ = self
            .local
            .invalidate_entries_if(move |_, s| s.identity.sub == owned);
        match &self.shared {
            Some(shared) => shared.revoke_user(sub).await,
            None => Ok(here),
        }
    }

    /// Records a back-channel logout token's `jti` for `ttl` seconds where every instance
    /// sees it: false when one already did (a replay). Without a shared store the provider
    /// client's own memory is all there is, and this is always true.
    pub async fn claim_logout_jti(&self, jti: &str, ttl: u64) -> Result<bool, StoreError> {
        match &self.shared {
            Some(shared) => shared.claim_logout_jti(jti, ttl).await,
            None => Ok(true),
        }
    }

    /// Forgets a `jti` recorded by [`Sessions::claim_logout_jti`] (best effort).
    pub async fn release_logout_jti(&self, jti: &str) {
        if let Some(shared) = &self.shared {
            if let Err(e) = shared.release_logout_jti(jti).await {
                tracing::debug!(error = %e, "could not forget a logout token id in redis");
            }
        }
    }

    /// Replaces a session after a refresh: new tokens and, from the verified refreshed ID
    /// token, the identity (a user removed from a group at the provider loses it upstream
    /// now, not at the end of the session). Step-up time and lifetime carry over.
    pub async fn refreshed(&self, old: &Session, login: VerifiedLogin) {
        let mut record = old.record();
        let c = login.claims;
        if c.email.is_some() {
            record.email_matches = c.email_matches;
        }
        record.email = c.email.or(record.email);
        record.username = c.username.or(record.username);
        record.name = c.name.or(record.name);
        record.groups = c.groups;
        if let Some(r) = login.refresh_token {
            record.refresh_token = Some(r);
        }
        record.id_token_exp = c.exp;
        let new = self.build(old.id, old.site.clone(), record.clone());
        // Only over the session as it still is: a logout, revocation or step-up rotation
        // that ended it while the refresh was in flight is never undone. The check and the
        // write are one step per key, so nothing ends the session between them.
        let _ = self
            .local
            .entry(new.key)
            .and_compute_with(|current| match current {
                Some(_) => moka::ops::compute::Op::Put(new.clone()),
                None => moka::ops::compute::Op::Nop,
            });
        if let Some(shared) = &self.shared {
            if let Err(e) = shared
                .update_session(&crate::shared::hex(&new.key), &record)
                .await
            {
                tracing::warn!(error = %e, "could not update the refreshed session in redis");
            }
        }
        old.refreshing.store(false, Ordering::Release);
    }

    /// Persists a session's changed tokens or step-up time, when shared.
    pub async fn save(&self, s: &Session) {
        if let Some(shared) = &self.shared {
            if let Err(e) = shared
                .update_session(&crate::shared::hex(&s.key), &s.record())
                .await
            {
                tracing::warn!(error = %e, "could not update the session in redis");
            }
        }
    }

    /// Applies an invalidation published by another instance.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::Session(hash) => {
                let mut key = [0u8; 32];
                if hash.len() == 64 {
                    for (i, b) in key.iter_mut().enumerate() {
                        *b = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).unwrap_or(0);
                    }
                    self.local.invalidate(&key);
                }
            }
            Event::User(sub) if sub.is_empty() => self.local.invalidate_all(),
            Event::User(sub) => {
                let sub = sub.clone();
                let _ = self
                    .local
                    .invalidate_entries_if(move |_, s| s.identity.sub == sub);
            }
            Event::Snapshot(_) => {}
        }
    }

    /// Number of sessions held locally (approximate; for metrics).
    pub fn len(&self) -> u64 {
        self.local.entry_count()
    }

    /// Whether no session is held locally.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
