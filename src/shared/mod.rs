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

mod endings;
mod lease;
mod logins;
pub mod sentinel;
mod sessions;

use self::endings::Ending;
pub use self::logins::LoginRecord;
pub use self::sessions::SessionRecord;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
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
            legacy_id_token: (),
        };
        assert!(!format!("{record:?}").contains("SECRET"));
        let stored = serde_json::to_string(&record).unwrap();
        assert!(stored.contains("ory_rt_SECRET"));
        let back: SessionRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.refresh_token.unwrap().expose(), "ory_rt_SECRET");
        // Readable by the previous release, which requires `id_token`, and its records by this.
        assert!(stored.contains(r#""id_token":"""#), "{stored}");
        let old = stored.replace(r#""id_token":"""#, r#""id_token":"eyJ.old.token""#);
        assert!(serde_json::from_str::<SessionRecord>(&old).is_ok());
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
            legacy_id_token: (),
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
