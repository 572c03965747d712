//! What several gateways share through Redis: sessions, sign-ins in progress, the directory
//! sync lease and snapshot, and the endings (logouts, revocations) published to all, so several
//! gateways behave as one: a session created on one instance works on all, and a logout or
//! revocation on one is published so every instance drops its cached copy within a second.
//!
//! Keys (all under `session.key_prefix`): `s:<sha256(id)>` a session (TTL = idle timeout,
//! capped by its lifetime), `u:<sub>` the set of a user's session keys, `sid:<sid>` the set of
//! the session keys signed in through one provider session, `jti:<jti>` a back-channel logout
//! token already used (until it is too old anyway), `l:<state>` a pending sign-in, `dir:lease` / `dir:snapshot` / `dir:version` the directory leader's lease and its
//! published snapshot; channel `events` carries invalidations and snapshot notices. Session
//! ids never appear in Redis, only their hashes.
//!
//! Redis is either one node at a fixed address (`redis_url`) or the master of a Sentinel group
//! (`redis_sentinels`). Both go through one step, [`RedisStore::connect`]: resolve the node to
//! use (trivial for a fixed address; for Sentinel, ask the sentinels and confirm the node's
//! role), then connect the commands and the subscription to it. With Sentinel the store also
//! watches for the master moving (the sentinels name another node, the subscription ends, a
//! command answers `READONLY` or fails to connect) and resolves again, rather than following
//! the old address to a demoted or dead node.

pub mod sentinel;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use self::sentinel::Sentinels;
use crate::clock::now_ms;
use crate::config::{RedisConfig, RedisTarget};
use crate::secret::{Secret, SecretError};

/// How often a Sentinel store asks whether the master is still where it was: about the most
/// a failover goes unnoticed when nothing else gives it away.
const SENTINEL_CHECK: Duration = Duration::from_secs(1);

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A command or connection failed.
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// No master could be found through the sentinels.
    #[error("redis unavailable: {0}")]
    Sentinel(#[from] sentinel::ResolveError),
    /// Not connected yet.
    #[error("redis unavailable: not connected")]
    NotConnected,
    /// A setting names no usable Redis.
    #[error("{key}: {source}")]
    Config {
        /// The setting.
        key: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored value could not be written or read back.
    #[error("redis value unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A stored snapshot could not be packed or unpacked.
    #[error("redis snapshot unreadable: {0}")]
    Packing(#[from] std::io::Error),
}

/// A session as stored in Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Site the session is valid on.
    pub site: String,
    /// Subject.
    pub sub: String,
    /// Email.
    pub email: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Groups from the token.
    pub groups: Vec<String>,
    /// Provider authentication time.
    pub auth_time: Option<i64>,
    /// Created at.
    pub created: i64,
    /// Absolute end.
    pub expires: i64,
    /// Refresh token.
    pub refresh_token: Option<Secret>,
    /// ID token expiry.
    pub id_token_exp: i64,
    /// Last step-up time (0: none).
    pub step_up_time: i64,
    /// The provider's session id (`sid` of the ID token), when it stated one. Absent in
    /// records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Whether `email` may name the user in the directory (verified, from an issuer trusted
    /// for it). Records written before it was kept say no.
    #[serde(default)]
    pub email_matches: bool,
}

/// A pending sign-in as stored in Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRecord {
    /// `state`.
    pub state: String,
    /// `nonce`.
    pub nonce: String,
    /// PKCE verifier.
    pub verifier: Secret,
    /// Return path.
    pub return_to: String,
    /// Site.
    pub site: String,
    /// Callback URL.
    pub redirect_uri: String,
    /// Browser binding, hex.
    pub binding: String,
    /// Started at.
    pub started: i64,
    /// Step-up or sign-in.
    pub step_up: bool,
}

/// Something another instance did that this one must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One session ended or changed (its key hash, hex).
    Session(String),
    /// Every session of a user ended.
    User(String),
    /// A new directory snapshot was published.
    Snapshot(i64),
}

fn parse_event(s: &str) -> Option<Event> {
    let (kind, arg) = s.split_once(' ')?;
    match kind {
        "session" => Some(Event::Session(arg.to_owned())),
        "user" => Some(Event::User(arg.to_owned())),
        "snapshot" => arg.parse().ok().map(Event::Snapshot),
        _ => None,
    }
}

/// Hex encoding of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The passwords a store needs, read from their sources at start-up.
#[derive(Debug, Default)]
pub struct Passwords {
    /// The data nodes' (`session.redis_password_*`).
    pub data: Option<Secret>,
    /// The sentinels' (`session.redis_sentinel_password_*`), for URLs without their own.
    pub sentinel: Option<Secret>,
}

impl Passwords {
    /// Reads the passwords `config` names.
    pub fn load(config: &RedisConfig) -> Result<Passwords, SecretError> {
        let data = match &config.password {
            Some(source) => Some(crate::secret::load(source, "session.redis_password")?),
            None => None,
        };
        let sentinel = match &config.target {
            RedisTarget::Sentinel(s) => match &s.password {
                Some(source) => Some(crate::secret::load(
                    source,
                    "session.redis_sentinel_password",
                )?),
                None => None,
            },
            RedisTarget::Url(_) => None,
        };
        Ok(Passwords { data, sentinel })
    }
}

/// Where the store connects.
enum Source {
    /// `redis_url`: always this node.
    Fixed(redis::Client),
    /// `redis_sentinels`: the node the sentinels name master.
    Sentinel(Sentinels),
}

/// The node the store is connected to, and the commands' connection to it.
struct Link {
    manager: ConnectionManager,
    client: redis::Client,
}

impl Link {
    fn addr(&self) -> &redis::ConnectionAddr {
        &self.client.get_connection_info().addr
    }
}

/// An end of sessions that could not be written to Redis yet: kept, and written as soon as
/// Redis answers again, so a logout or revocation during an outage is not undone when Redis
/// comes back with the old records.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// One session (its key hash) of a user.
    Session { hash: String, sub: String },
    /// Every session of a user.
    User(String),
}

/// How often ends waiting for Redis are tried again.
const ENDING_RETRY: Duration = Duration::from_millis(500);

/// The shared store.
pub struct RedisStore {
    source: Source,
    conn: ArcSwapOption<Link>,
    /// Why the last attempt to find or connect to the master failed (Sentinel only), for
    /// `/readyz`.
    problem: ArcSwapOption<String>,
    /// Woken by a command error that suggests the master moved.
    recheck: Notify,
    prefix: String,
    /// This instance's id (for the directory lease).
    pub instance: String,
    last_ok_ms: AtomicI64,
    pubsub_up: AtomicBool,
    /// The configuration.
    pub config: RedisConfig,
    /// Woken when another instance publishes a directory snapshot.
    pub snapshot_published: Notify,
    /// Ends not yet written to Redis.
    endings: std::sync::Mutex<Vec<Ending>>,
    /// Whether `endings` holds any, so the lookup path need not lock to find out.
    ending: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish()
    }
}

impl RedisStore {
    /// A store for `config`; nothing is connected until [`RedisStore::run`] or
    /// [`RedisStore::connect`].
    pub fn new(config: &RedisConfig, passwords: Passwords) -> Result<Arc<RedisStore>, StoreError> {
        let source = match &config.target {
            RedisTarget::Url(url) => {
                let mut info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(|e| StoreError::Config {
                        key: "session.redis_url",
                        source: Box::new(e),
                    })?;
                if let Some(p) = &passwords.data {
                    info.redis.password = Some(p.expose().to_owned());
                }
                Source::Fixed(redis::Client::open(info)?)
            }
            RedisTarget::Sentinel(s) => Source::Sentinel(
                Sentinels::new(s, passwords.sentinel.as_ref(), passwords.data.as_ref()).map_err(
                    |e| StoreError::Config {
                        key: "session.redis_sentinels",
                        source: Box::new(e),
                    },
                )?,
            ),
        };
        Ok(Arc::new(RedisStore {
            source,
            conn: ArcSwapOption::empty(),
            problem: ArcSwapOption::empty(),
            recheck: Notify::new(),
            prefix: config.key_prefix.clone(),
            instance: crate::secret::random_token(),
            last_ok_ms: AtomicI64::new(0),
            pubsub_up: AtomicBool::new(false),
            config: config.clone(),
            snapshot_published: Notify::new(),
            endings: std::sync::Mutex::new(Vec::new()),
            ending: AtomicBool::new(false),
        }))
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    fn sentinels(&self) -> Option<&Sentinels> {
        match &self.source {
            Source::Sentinel(s) => Some(s),
            Source::Fixed(_) => None,
        }
    }

    /// The node to connect to now: the fixed one, or the master the sentinels name and that
    /// confirms its role. When no sentinel answers, the master already connected to is kept
    /// as long as it still says it is master, so a sentinel outage alone is no Redis outage.
    async fn resolve(&self) -> Result<redis::Client, StoreError> {
        let sentinels = match &self.source {
            Source::Fixed(client) => return Ok(client.clone()),
            Source::Sentinel(s) => s,
        };
        let e = match sentinels.resolve().await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        if let (sentinel::ResolveError::NoSentinel(_), Some(link)) = (&e, self.conn.load_full()) {
            if sentinels.confirm(&link.client).await.is_ok() {
                tracing::warn!(error = %e, redis.master = %link.addr(), "keeping the redis master connected to");
                return Ok(link.client.clone());
            }
        }
        self.problem.store(Some(Arc::new(e.to_string())));
        Err(StoreError::Sentinel(e))
    }

    /// Resolves the node to use and connects to it, unless already connected to that node.
    /// The command line's `jumpgate sessions` calls it once; [`RedisStore::run`] at every
    /// (re)connect.
    pub async fn connect(&self) -> Result<(), StoreError> {
        let client = self.resolve().await?;
        if let Some(link) = self.conn.load_full() {
            if *link.addr() == client.get_connection_info().addr {
                self.problem.store(None);
                return Ok(());
            }
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let manager = match ConnectionManager::new_with_config(client.clone(), config).await {
            Ok(m) => m,
            Err(e) => {
                if self.sentinels().is_some() {
                    let addr = &client.get_connection_info().addr;
                    self.problem
                        .store(Some(Arc::new(format!("master at {addr}: {e}"))));
                }
                return Err(e.into());
            }
        };
        self.conn.store(Some(Arc::new(Link { manager, client })));
        self.problem.store(None);
        self.ok();
        Ok(())
    }

    /// Keeps the command connection and the invalidation subscription up, reconnecting with
    /// backoff, and hands every event to `on_event`.
    ///
    /// The writer of the endings made while Redis was unreachable runs inside it: it stops
    /// when this stops, and never outlives the gateway.
    pub async fn run(self: Arc<Self>, on_event: impl Fn(Event) + Send + Sync + 'static) {
        tokio::join!(self.clone().write_endings(), self.follow(on_event));
    }

    async fn follow(self: Arc<Self>, on_event: impl Fn(Event) + Send + Sync + 'static) {
        let on_event = Arc::new(on_event);
        // A failover ends within seconds, and only asking again finds the new master.
        let max_delay = match self.source {
            Source::Fixed(_) => Duration::from_secs(10),
            Source::Sentinel(_) => Duration::from_secs(2),
        };
        let mut delay = Duration::from_millis(200);
        loop {
            // A fixed Redis is connected once (its ConnectionManager reconnects by itself);
            // with Sentinel every reconnect first asks where the master is now.
            if self.conn.load().is_none() || self.sentinels().is_some() {
                let before = self.conn.load_full();
                match self.connect().await {
                    Ok(()) => match (self.conn.load_full(), self.sentinels()) {
                        (Some(now), Some(s))
                            if before.as_ref().is_none_or(|b| !Arc::ptr_eq(b, &now)) =>
                        {
                            tracing::info!(redis.master = %now.addr(), redis.master_name = %s.master(), "connected to the redis master");
                        }
                        (_, None) => tracing::info!("connected to redis"),
                        _ => {}
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "redis connection failed");
                        tokio::time::sleep(crate::clock::jitter(delay)).await;
                        delay = (delay * 2).min(max_delay);
                        continue;
                    }
                }
            }
            let Some(link) = self.conn.load_full() else {
                continue;
            };
            match link.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if let Err(e) = pubsub.subscribe(self.channel()).await {
                        tracing::warn!(error = %e, "redis subscribe failed");
                    } else {
                        delay = Duration::from_millis(200);
                        self.pubsub_up.store(true, Ordering::Release);
                        // Anything published while we were not listening is unknown: treat
                        // every cached session as needing a fresh read.
                        on_event(Event::User(String::new()));
                        let mut stream = pubsub.on_message();
                        // One watch for the whole subscription, so messages do not keep
                        // putting its next look off.
                        let moved = self.master_moved(&link);
                        tokio::pin!(moved);
                        loop {
                            let msg = tokio::select! {
                                msg = stream.next() => msg,
                                () = &mut moved => None,
                            };
                            let Some(msg) = msg else {
                                break;
                            };
                            self.ok();
                            if let Some(event) = msg
                                .get_payload::<String>()
                                .ok()
                                .as_deref()
                                .and_then(parse_event)
                            {
                                on_event(event);
                            }
                        }
                    }
                    self.pubsub_up.store(false, Ordering::Release);
                    tracing::warn!("redis subscription lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "redis subscription failed"),
            }
            tokio::time::sleep(crate::clock::jitter(delay)).await;
            delay = (delay * 2).min(max_delay);
        }
    }

    /// Returns once `link`'s node should no longer be used: the sentinels name another
    /// master, or, after a command error hinted at it, the node no longer says it is master.
    /// Never returns for a fixed Redis.
    async fn master_moved(&self, link: &Link) {
        let Some(sentinels) = self.sentinels() else {
            return std::future::pending().await;
        };
        let current = sentinel::host_port(link.addr());
        let mut quiet = true;
        loop {
            let hinted = tokio::select! {
                () = tokio::time::sleep(SENTINEL_CHECK) => false,
                () = self.recheck.notified() => true,
            };
            match sentinels.master_addr().await {
                Ok((host, port)) if current != Some((host.as_str(), port)) => {
                    tracing::info!(redis.master = %format!("{host}:{port}"), redis.was = %link.addr(), "the sentinels name another redis master");
                    return;
                }
                Ok(_) => {
                    quiet = true;
                    if hinted {
                        if let Err(e) = sentinels.confirm(&link.client).await {
                            tracing::warn!(error = %e, "the redis master stopped being master");
                            return;
                        }
                    }
                }
                // The master in use stays in use; a failover meanwhile shows in its errors.
                Err(e) if quiet => {
                    tracing::warn!(error = %e, "cannot ask the redis sentinels where the master is");
                    quiet = false;
                }
                Err(_) => {}
            }
        }
    }

    fn ok(&self) {
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether invalidations are being received.
    pub fn subscribed(&self) -> bool {
        self.pubsub_up.load(Ordering::Acquire)
    }

    /// Whether Redis answered within the grace period: cached sessions may still be used.
    pub fn within_grace(&self) -> bool {
        now_ms() - self.last_ok_ms.load(Ordering::Relaxed) <= self.config.grace.as_millis() as i64
    }

    /// Why `/readyz` should fail, if it should.
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.subscribed() {
            if let Some(problem) = self.problem.load_full() {
                return Some(format!("redis not connected: {problem}"));
            }
        }
        if self.conn.load().is_none() {
            return Some("redis not connected".to_owned());
        }
        if !self.subscribed() {
            return Some("redis invalidation channel not subscribed".to_owned());
        }
        None
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let link = self.conn.load_full().ok_or(StoreError::NotConnected)?;
        Ok(link.manager.clone())
    }

    async fn track<T>(&self, r: Result<T, redis::RedisError>) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                self.ok();
                Ok(v)
            }
            Err(e) => {
                // A demoted master refuses writes; a dead one refuses connections. Either
                // way the sentinels may already know where the master went.
                if e.kind() == redis::ErrorKind::ReadOnly || e.is_io_error() {
                    self.recheck.notify_one();
                }
                Err(e.into())
            }
        }
    }

    /// Stores a session for `ttl` seconds and indexes it under its user and, when it has
    /// one, its provider session id.
    pub async fn put_session(
        &self,
        hash: &str,
        record: &SessionRecord,
        ttl: u64,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(record)?;
        let user_key = self.key("u", &record.sub);
        let lifetime = (record.expires - crate::clock::now()).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(self.key("s", hash), json, ttl.max(1))
            .ignore()
            .sadd(&user_key, hash)
            .ignore()
            .expire(&user_key, lifetime)
            .ignore();
        if let Some(sid) = &record.sid {
            let sid_key = self.key("sid", sid);
            pipe.sadd(&sid_key, hash)
                .ignore()
                .expire(&sid_key, lifetime)
                .ignore();
        }
        let r = pipe.query_async::<()>(&mut c).await;
        self.track(r).await
    }

    /// Rewrites a session keeping its TTL, and tells other instances to re-read it.
    pub async fn update_session(
        &self,
        hash: &str,
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(record)?;
        let r = redis::cmd("SET")
            .arg(self.key("s", hash))
            .arg(json)
            .arg("KEEPTTL")
            .arg("XX")
            .query_async::<()>(&mut c)
            .await;
        self.track(r).await?;
        self.publish(&format!("session {hash}")).await
    }

    /// Reads a session. One ended here while Redis was unreachable is no session, whatever
    /// Redis still holds, until the end has been written.
    pub async fn get_session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut c = self.conn().await?;
        let r: Result<Option<String>, _> = c.get(self.key("s", hash)).await;
        let Some(json) = self.track(r).await? else {
            return Ok(None);
        };
        let record: SessionRecord = serde_json::from_str(&json)?;
        Ok((!self.is_ending(hash, &record.sub)).then_some(record))
    }

    /// Extends a session's idle TTL.
    pub async fn touch(&self, hash: &str, ttl: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r: Result<(), _> = c.expire(self.key("s", hash), ttl.max(1) as i64).await;
        self.track(r).await
    }

    async fn publish(&self, event: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r: Result<(), _> = c.publish(self.channel(), event).await;
        self.track(r).await
    }

    /// Ends one session everywhere; when Redis cannot be reached, remembers the end and
    /// writes it as soon as Redis answers again.
    pub async fn end_session(&self, hash: &str, sub: &str) {
        if let Err(e) = self.delete_session(hash, sub).await {
            tracing::warn!(error = %e, "could not delete the session in redis; retrying until redis answers");
            self.defer(Ending::Session {
                hash: hash.to_owned(),
                sub: sub.to_owned(),
            });
        }
    }

    /// Ends every session of `sub` everywhere, returning how many there were; when Redis
    /// cannot be reached, remembers the revocation and writes it as soon as Redis answers.
    pub async fn end_user(&self, sub: &str) -> usize {
        match self.revoke_user(sub).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, user.sub = %sub, "could not revoke the user's sessions in redis; retrying until redis answers");
                self.defer(Ending::User(sub.to_owned()));
                0
            }
        }
    }

    fn endings(&self) -> std::sync::MutexGuard<'_, Vec<Ending>> {
        self.endings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn defer(&self, ending: Ending) {
        let mut endings = self.endings();
        if !endings.contains(&ending) {
            endings.push(ending);
        }
        self.ending.store(true, Ordering::Release);
    }

    /// Whether a session (its key hash, of `sub`) was ended here but Redis does not know
    /// yet: a record read back from Redis must not bring it back.
    fn is_ending(&self, hash: &str, sub: &str) -> bool {
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
    async fn write_endings(self: Arc<Self>) {
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

    /// Ends one session everywhere.
    pub async fn delete_session(&self, hash: &str, sub: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r = redis::pipe()
            .atomic()
            .del(self.key("s", hash))
            .ignore()
            .srem(self.key("u", sub), hash)
            .ignore()
            .publish(self.channel(), format!("session {hash}"))
            .ignore()
            .query_async::<()>(&mut c)
            .await;
        self.track(r).await
    }

    /// Ends every session of `sub` everywhere; returns how many there were.
    pub async fn revoke_user(&self, sub: &str) -> Result<usize, StoreError> {
        let mut c = self.conn().await?;
        let user_key = self.key("u", sub);
        let hashes: Vec<String> = self.track(c.smembers(&user_key).await).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for h in &hashes {
            pipe.del(self.key("s", h)).ignore();
        }
        pipe.del(&user_key).ignore();
        pipe.publish(self.channel(), format!("user {sub}")).ignore();
        let r = pipe.query_async::<()>(&mut c).await;
        self.track(r).await?;
        Ok(hashes.len())
    }

    /// The live sessions of `sub`: (key hash, record).
    pub async fn list_user(&self, sub: &str) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut c = self.conn().await?;
        let hashes: Vec<String> = self.track(c.smembers(self.key("u", sub)).await).await?;
        let mut out = Vec::new();
        for h in hashes {
            if let Some(r) = self.get_session(&h).await? {
                out.push((h, r));
            }
        }
        Ok(out)
    }

    /// The live sessions signed in through provider session `sid`: (key hash, record). Keys
    /// of sessions that have ended meanwhile are dropped from the index.
    pub async fn sid_sessions(
        &self,
        sid: &str,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut c = self.conn().await?;
        let sid_key = self.key("sid", sid);
        let hashes: Vec<String> = self.track(c.smembers(&sid_key).await).await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for h in hashes {
            match self.get_session(&h).await? {
                Some(r) => out.push((h, r)),
                None => gone.push(h),
            }
        }
        if !gone.is_empty() {
            let r: Result<(), _> = c.srem(&sid_key, &gone).await;
            self.track(r).await?;
        }
        Ok(out)
    }

    /// Removes ended session keys from provider session `sid`'s index.
    pub async fn unindex_sid(&self, sid: &str, hashes: &[String]) -> Result<(), StoreError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let r: Result<(), _> = c.srem(self.key("sid", sid), hashes).await;
        self.track(r).await
    }

    /// Records a back-channel logout token's `jti` for `ttl` seconds: true the first time,
    /// false when any instance already recorded it (a replay).
    pub async fn claim_logout_jti(&self, jti: &str, ttl: u64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let r: Result<Option<String>, _> = redis::cmd("SET")
            .arg(self.key("jti", jti))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.max(1))
            .query_async(&mut c)
            .await;
        Ok(self.track(r).await?.is_some())
    }

    /// Forgets a recorded `jti`, so the token may be delivered again.
    pub async fn release_logout_jti(&self, jti: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r: Result<(), _> = c.del(self.key("jti", jti)).await;
        self.track(r).await
    }

    /// Keeps a pending sign-in for `ttl` seconds.
    pub async fn put_login(
        &self,
        login: &LoginRecord,
        ttl: u64,
        max: u64,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(login)?;
        // Every pending sign-in is indexed by its start; past `max` the oldest are dropped,
        // so a flood of sign-in starts costs Redis a bounded amount of memory and never
        // refuses a new one (a real user's start is always kept; a flood can only push out
        // starts older than itself). The index names login keys it does not declare, which
        // a Redis Cluster would refuse; jumpgate speaks to one primary (or Sentinel).
        let script = redis::Script::new(
            r"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
              local ttl_ms = tonumber(ARGV[2]) * 1000
              redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - ttl_ms)
              redis.call('ZADD', KEYS[2], ARGV[3], ARGV[6])
              local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
              if over > 0 then
                local old = redis.call('ZPOPMIN', KEYS[2], over)
                for i = 1, #old, 2 do redis.call('DEL', ARGV[5] .. old[i]) end
              end
              redis.call('PEXPIRE', KEYS[2], ttl_ms)
              return 1",
        );
        let ttl = ttl.max(1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let r: Result<i64, _> = script
            .key(self.key("l", &login.state))
            .key(self.key("l-index", "all"))
            .arg(json)
            .arg(ttl)
            .arg(now_ms)
            .arg(max)
            .arg(self.key("l", ""))
            .arg(&login.state)
            .invoke_async(&mut c)
            .await;
        self.track(r).await.map(|_| ())
    }

    /// Takes a pending sign-in: atomic, so a state works once across every instance.
    pub async fn take_login(&self, state: &str) -> Result<Option<LoginRecord>, StoreError> {
        let mut c = self.conn().await?;
        let r: Result<Option<String>, _> = redis::cmd("GETDEL")
            .arg(self.key("l", state))
            .query_async(&mut c)
            .await;
        // The index entry goes with it (best effort: an entry without its key is dropped
        // by age or count anyway).
        let _: Result<i64, _> = redis::cmd("ZREM")
            .arg(self.key("l-index", "all"))
            .arg(state)
            .query_async(&mut c)
            .await;
        match self.track(r).await? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(StoreError::from),
        }
    }

    /// Takes or renews the directory lease for `ttl`; true when this instance holds it.
    pub async fn hold_lease(&self, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        // Set if free, or extend if ours: one atomic step, so two instances never both lead.
        let script = redis::Script::new(
            r"local v = redis.call('GET', KEYS[1])
              if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
              if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
              return 0",
        );
        let r: Result<i64, _> = script
            .key(self.key("dir", "lease"))
            .arg(&self.instance)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await;
        Ok(self.track(r).await? == 1)
    }

    /// Gives the lease up (on shutdown), if held.
    pub async fn release_lease(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let script = redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let r: Result<i64, _> = script
            .key(self.key("dir", "lease"))
            .arg(&self.instance)
            .invoke_async(&mut c)
            .await;
        self.track(r).await.map(|_| ())
    }

    /// Publishes a complete snapshot (gzip-compressed JSON) under `version`.
    pub async fn publish_snapshot(&self, version: i64, json: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json)?;
        let packed = gz.finish()?;
        let mut c = self.conn().await?;
        let r = redis::pipe()
            .atomic()
            .set(self.key("dir", "snapshot"), packed)
            .ignore()
            .set(self.key("dir", "version"), version)
            .ignore()
            .publish(self.channel(), format!("snapshot {version}"))
            .ignore()
            .query_async::<()>(&mut c)
            .await;
        self.track(r).await
    }

    /// The published snapshot if it is newer than `than`: (version, JSON).
    pub async fn snapshot_newer_than(
        &self,
        than: i64,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        use std::io::Read;
        let mut c = self.conn().await?;
        let version: Option<i64> = self.track(c.get(self.key("dir", "version")).await).await?;
        let Some(version) = version.filter(|v| *v > than) else {
            return Ok(None);
        };
        let packed: Option<Vec<u8>> = self.track(c.get(self.key("dir", "snapshot")).await).await?;
        let Some(packed) = packed else {
            return Ok(None);
        };
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .take(512 * 1024 * 1024)
            .read_to_end(&mut json)?;
        Ok(Some((version, json)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records kept in Redis hold a refresh token and a PKCE verifier; neither appears
    /// in their `Debug` output, while the stored form keeps them.
    #[test]
    fn records_never_print_their_secrets() {
        let record = SessionRecord {
            site: "s".into(),
            sub: "u".into(),
            email: None,
            username: None,
            name: None,
            groups: vec![],
            auth_time: None,
            created: 0,
            expires: 1,
            refresh_token: Some(Secret::new("ory_rt_SECRET".into())),
            id_token_exp: 1,
            step_up_time: 0,
            sid: None,
            email_matches: false,
        };
        assert!(!format!("{record:?}").contains("SECRET"));
        let stored = serde_json::to_string(&record).unwrap();
        assert!(stored.contains("ory_rt_SECRET"));
        let back: SessionRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.refresh_token.unwrap().expose(), "ory_rt_SECRET");
    }

    /// Ends that cannot reach Redis are remembered, one entry each, and hide exactly the
    /// sessions they ended.
    #[tokio::test]
    async fn ends_that_cannot_reach_redis_wait_and_hide_what_they_ended() {
        let config = RedisConfig {
            target: RedisTarget::Url("redis://127.0.0.1:1/0".into()),
            password: None,
            key_prefix: "t:".into(),
            local_cache_ttl: Duration::from_secs(1),
            grace: Duration::from_secs(1),
        };
        let store = RedisStore::new(&config, Passwords::default()).unwrap();
        assert!(!store.is_ending("aa", "alice"));
        store.end_session("aa", "alice").await;
        store.end_session("aa", "alice").await;
        assert!(store.is_ending("aa", "alice"));
        assert!(!store.is_ending("bb", "alice"), "another session of alice");
        assert_eq!(store.end_user("bob").await, 0);
        assert!(store.is_ending("cc", "bob"), "every session of bob");
        assert!(!store.is_ending("cc", "carol"));
        assert_eq!(store.endings().len(), 2, "one entry per end");
    }

    /// A session ended while Redis could not be reached is hidden from every reader, not
    /// only from the request path: the record read, a user's listing (`jumpgate sessions
    /// list`) and a provider session's index (back-channel logout). Uses the Redis the test
    /// suite runs on 127.0.0.1:6379, under a key prefix of its own.
    #[tokio::test]
    async fn ended_sessions_are_hidden_from_every_reader_until_redis_knows() {
        let prefix = format!("jgunit:{}:", crate::secret::random_token());
        let config = RedisConfig {
            target: RedisTarget::Url("redis://127.0.0.1:6379/0".into()),
            password: None,
            key_prefix: prefix.clone(),
            local_cache_ttl: Duration::from_secs(1),
            grace: Duration::from_secs(1),
        };
        let store = RedisStore::new(&config, Passwords::default()).unwrap();
        store
            .connect()
            .await
            .expect("the test suite's Redis on 127.0.0.1:6379");
        let now = crate::clock::now();
        let record = |sub: &str| SessionRecord {
            site: "site".into(),
            sub: sub.into(),
            email: None,
            username: None,
            name: None,
            groups: vec![],
            auth_time: None,
            created: now,
            expires: now + 600,
            refresh_token: None,
            id_token_exp: now + 600,
            step_up_time: 0,
            sid: Some("provider-session".into()),
            email_matches: false,
        };
        store
            .put_session("aa", &record("alice"), 600)
            .await
            .unwrap();
        store
            .put_session("bb", &record("alice"), 600)
            .await
            .unwrap();
        let hashes = |v: Vec<(String, SessionRecord)>| {
            let mut h: Vec<String> = v.into_iter().map(|(h, _)| h).collect();
            h.sort();
            h
        };
        // Control: every reader sees both.
        assert!(store.get_session("aa").await.unwrap().is_some());
        assert_eq!(
            hashes(store.list_user("alice").await.unwrap()),
            ["aa", "bb"]
        );
        assert_eq!(
            hashes(store.sid_sessions("provider-session").await.unwrap()),
            ["aa", "bb"]
        );
        // One session ended here, the end not yet written: gone for every reader.
        store.defer(Ending::Session {
            hash: "aa".into(),
            sub: "alice".into(),
        });
        assert!(store.get_session("aa").await.unwrap().is_none());
        assert_eq!(hashes(store.list_user("alice").await.unwrap()), ["bb"]);
        assert_eq!(
            hashes(store.sid_sessions("provider-session").await.unwrap()),
            ["bb"]
        );
        // A revocation of the user: all of them.
        store.defer(Ending::User("alice".into()));
        assert!(store.get_session("bb").await.unwrap().is_none());
        assert!(store.list_user("alice").await.unwrap().is_empty());
        assert!(store
            .sid_sessions("provider-session")
            .await
            .unwrap()
            .is_empty());
        let mut c = store.conn().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .unwrap();
        for k in keys {
            let _: () = redis::cmd("DEL").arg(k).query_async(&mut c).await.unwrap();
        }
    }

    #[test]
    fn events() {
        assert_eq!(
            parse_event("session abc"),
            Some(Event::Session("abc".into()))
        );
        assert_eq!(parse_event("user 5f00"), Some(Event::User("5f00".into())));
        assert_eq!(parse_event("snapshot 12"), Some(Event::Snapshot(12)));
        assert_eq!(parse_event("snapshot x"), None);
        assert_eq!(parse_event("bogus"), None);
    }
}
