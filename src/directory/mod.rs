//! The directory: a snapshot of JumpCloud's users, groups and memberships that every
//! protected request is decided from. Readers take an `Arc<Snapshot>` (one atomic load, no
//! lock); the sync loop replaces it whole after a complete read, then writes it to the cache
//! file, which is loaded at start-up so a restart during an outage still enforces the last
//! good state.

pub mod jumpcloud;
pub mod snapshot;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};

use self::jumpcloud::{JumpCloud, SyncError};
pub use self::snapshot::{RawDirectory, Snapshot, UserEntry};
use crate::clock::Clock;
use crate::config::DirectoryConfig;
use crate::metrics::Metrics;
use crate::oidc::http::IdpClient;
use crate::secret::Secret;

/// Format version of the cache file.
const CACHE_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    /// SHA-256 of the serialized `data`, hex: a truncated or edited file is never trusted.
    checksum: String,
    data: RawDirectory,
}

/// Why the cache file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a snapshot this version wrote intact.
    #[error("{path}: corrupt or foreign cache file ({why}); ignored")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

fn checksum(data: &RawDirectory) -> String {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a cache file written by [`store_cache`].
pub fn load_cache(path: &Path) -> Result<Option<RawDirectory>, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let corrupt = |why: String| CacheError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != CACHE_FORMAT {
        return Err(corrupt(format!("format {}", file.format)));
    }
    if checksum(&file.data) != file.checksum {
        return Err(corrupt("checksum mismatch".to_owned()));
    }
    Ok(Some(file.data))
}

/// Writes `data` atomically: a temporary file beside the target, fsync, rename, fsync of
/// the directory. A crash leaves either the old file or the new one, never half of one.
pub fn store_cache(path: &Path, data: &RawDirectory) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = CacheFile {
        format: CACHE_FORMAT,
        checksum: checksum(data),
        data: data.clone(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Why a protected request cannot be decided from the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No snapshot has ever been loaded or fetched.
    NeverSynced,
    /// The snapshot is older than `max_staleness`.
    Stale,
}

/// How the sync has been going, for the status page: a failing sync shows here long before
/// the snapshot is stale enough for readiness to fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// The last failure, when the last attempt failed: when, and why.
    pub last_error: Option<(i64, String)>,
    /// Failures in a row.
    pub failures_in_a_row: u32,
    /// Why the cache file could not be written at the last sync, if it could not.
    pub cache_error: Option<String>,
    /// With shared sessions: whether this instance holds the sync lease (it syncs; the
    /// others load what it publishes). `None` when syncing alone.
    pub lease_held: Option<bool>,
}

/// The directory handle shared by the request path and the sync loop.
#[derive(Debug)]
pub struct Directory {
    status: std::sync::Mutex<SyncStatus>,
    current: ArcSwapOption<Snapshot>,
    max_staleness: i64,
    group_refs: arc_swap::ArcSwap<Vec<String>>,
    /// The data behind the snapshot in service, to rebuild it when the configuration's
    /// group references change.
    raw: ArcSwapOption<RawDirectory>,
    version: AtomicU64,
}

impl Directory {
    /// An empty directory enforcing `max_staleness`, resolving `group_refs` in each snapshot.
    pub fn new(max_staleness: Duration, group_refs: Vec<String>) -> Directory {
        Directory {
            status: std::sync::Mutex::default(),
            current: ArcSwapOption::empty(),
            max_staleness: max_staleness.as_secs() as i64,
            group_refs: arc_swap::ArcSwap::from_pointee(group_refs),
            raw: ArcSwapOption::empty(),
            version: AtomicU64::new(0),
        }
    }

    /// Builds a snapshot from `raw` and puts it in service. `raw` is kept (shared, not
    /// copied) to rebuild the snapshot when a reload changes the group references.
    pub fn publish(&self, raw: Arc<RawDirectory>) -> Arc<Snapshot> {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let refs = self.group_refs.load();
        let snapshot = Arc::new(Snapshot::build(&raw, &refs, version));
        self.raw.store(Some(raw));
        for (r, group) in refs.iter().enumerate() {
            match snapshot.reference(r) {
                snapshot::Reference::Found => {}
                snapshot::Reference::Missing => {
                    tracing::warn!(group = %group, "a group named in the configuration does not exist in the directory; it allows no one")
                }
                snapshot::Reference::Unbound => {
                    tracing::warn!(group = %group, "a group named in the configuration is not bound to the application; it allows no one")
                }
            }
        }
        self.current.store(Some(snapshot.clone()));
        snapshot
    }

    /// Resolves a reloaded configuration's group references, rebuilding the snapshot in
    /// service from its data (its age is unchanged).
    pub fn regroup(&self, group_refs: Vec<String>) {
        if **self.group_refs.load() == group_refs {
            return;
        }
        self.group_refs.store(Arc::new(group_refs));
        if let Some(raw) = self.raw.load_full() {
            self.publish(raw);
        }
    }

    /// `max_staleness`, in seconds.
    pub fn max_staleness(&self) -> i64 {
        self.max_staleness
    }

    /// How the sync has been going.
    pub fn sync_status(&self) -> SyncStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// The snapshot in service, whatever its age.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// The snapshot, if it is fresh enough to decide from at `now`.
    pub fn fresh(&self, now: i64) -> Result<Arc<Snapshot>, Unavailable> {
        let snapshot = self.current.load_full().ok_or(Unavailable::NeverSynced)?;
        if now - snapshot.taken_at > self.max_staleness {
            return Err(Unavailable::Stale);
        }
        Ok(snapshot)
    }

    /// Why readiness should fail, if it should.
    pub fn not_ready_reason(&self, now: i64) -> Option<String> {
        match self.fresh(now) {
            Ok(_) => None,
            Err(Unavailable::NeverSynced) => Some("directory never synced".to_owned()),
            Err(Unavailable::Stale) => Some(format!(
                "directory snapshot is {} s old, more than the allowed {} s",
                now - self.snapshot().map_or(0, |s| s.taken_at),
                self.max_staleness
            )),
        }
    }

    /// The snapshot's age in seconds, for `/readyz`.
    pub fn age(&self, now: i64) -> Option<i64> {
        self.snapshot().map(|s| now - s.taken_at)
    }
}

/// Everything the sync loop needs.
pub struct Syncer {
    /// The configuration.
    pub config: DirectoryConfig,
    /// HTTP client.
    pub client: IdpClient,
    /// API key.
    pub api_key: Secret,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The gateway's time: a snapshot is stamped, and its age counted, on it.
    pub clock: Clock,
}

impl Syncer {
    /// One complete read of the directory.
    pub async fn read(&self) -> Result<(RawDirectory, u64), SyncError> {
        let mut api = JumpCloud::new(&self.config, &self.client, &self.api_key, &self.metrics);
        let mut raw = api.read(self.config.application_id.as_deref()).await?;
        // Its age is counted on the gateway's clock, so it is stamped on it too.
        raw.taken_at = self.clock.now();
        Ok((raw, api.fetched))
    }

    /// Loads the cache file into `directory`, if there is a good one.
    pub fn load_cache_into(&self, directory: &Directory) {
        match load_cache(&self.config.cache_file) {
            Ok(Some(raw)) => {
                let s = directory.publish(Arc::new(raw));
                // The snapshot in service was taken then: its age, and the alerts on it,
                // count from there, not from the first sync of this process.
                self.metrics.directory_last_success.set(s.taken_at);
                self.metrics.directory_users.set(s.user_count() as i64);
                tracing::info!(
                    users = s.user_count(),
                    groups = s.group_count(),
                    age_s = self.clock.now() - s.taken_at,
                    "directory snapshot loaded from cache"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "directory cache not used"),
        }
    }

    /// One sync: read, publish, persist. On failure the snapshot in service stays.
    pub async fn sync_once(&self, directory: &Directory) -> Result<Arc<RawDirectory>, SyncError> {
        let started = Instant::now();
        let (raw, fetched) = match self.read().await {
            Ok(read) => read,
            Err(e) => {
                let now = self.clock.now();
                directory.update_status(|s| {
                    s.last_error = Some((now, e.to_string()));
                    s.failures_in_a_row += 1;
                });
                return Err(e);
            }
        };
        let raw = Arc::new(raw);
        let snapshot = directory.publish(raw.clone());
        let m = &self.metrics;
        m.directory_last_success.set(raw.taken_at);
        m.directory_sync_duration_ms
            .set(started.elapsed().as_millis() as i64);
        m.directory_records.inc_by(fetched);
        m.directory_users.set(snapshot.user_count() as i64);
        tracing::info!(
            users = snapshot.user_count(),
            groups = snapshot.group_count(),
            memberships = snapshot.membership_count(),
            duration_ms = started.elapsed().as_millis() as u64,
            "directory synced"
        );
        let cached = store_cache(&self.config.cache_file, &raw);
        if let Err(e) = &cached {
            tracing::error!(error = %e, "could not write the directory cache; the new snapshot is in service but will not survive a restart");
        }
        directory.update_status(|s| {
            s.last_error = None;
            s.failures_in_a_row = 0;
            s.cache_error = cached.err().map(|e| e.to_string());
        });
        Ok(raw)
    }

    /// The cluster variant of [`Syncer::run`]: one instance at a time holds a lease in Redis
    /// and syncs, then publishes the complete snapshot there; the others load it when told
    /// (or when they next look). The lease lasts two thirds of a sync interval and is renewed
    /// every third, so when the leader dies another instance leads within one interval.
    pub async fn run_shared(
        self,
        directory: Arc<Directory>,
        store: Arc<crate::shared::RedisStore>,
    ) {
        let interval = self.config.sync_interval;
        let period = (interval / 3).max(Duration::from_millis(100));
        let lease = (interval * 2 / 3).max(Duration::from_millis(200));
        let mut last_sync: Option<Instant> = None;
        let mut loaded_version: i64 = 0;
        loop {
            let held = store.hold_lease(lease).await;
            directory.update_status(|s| s.lease_held = held.as_ref().ok().copied());
            match held {
                Ok(true) => {
                    if last_sync.is_none_or(|t| t.elapsed() >= interval) {
                        last_sync = Some(Instant::now());
                        match self.sync_once(&directory).await {
                            Ok(raw) => {
                                let version = crate::clock::now_ms();
                                match serde_json::to_vec(&*raw) {
                                    Ok(json) => {
                                        match store.publish_snapshot(version, &json).await {
                                            Ok(()) => loaded_version = version,
                                            Err(e) => {
                                                tracing::warn!(error = %e, "could not publish the directory snapshot to redis")
                                            }
                                        }
                                    }
                                    Err(e) => {
                                        tracing::error!(error = %e, "could not serialize the directory snapshot")
                                    }
                                }
                            }
                            Err(e) => {
                                self.metrics.directory_sync_failures.inc();
                                tracing::warn!(error = %e, "directory sync failed; keeping the last good snapshot");
                            }
                        }
                    }
                }
                Ok(false) => {
                    last_sync = None;
                    match store.snapshot_newer_than(loaded_version).await {
                        Ok(Some((version, json))) => {
                            match serde_json::from_slice::<RawDirectory>(&json) {
                                Ok(raw) => {
                                    let raw = Arc::new(raw);
                                    let s = directory.publish(raw.clone());
                                    self.metrics.directory_last_success.set(raw.taken_at);
                                    self.metrics.directory_users.set(s.user_count() as i64);
                                    loaded_version = version;
                                    tracing::info!(
                                        users = s.user_count(),
                                        "directory snapshot loaded from redis"
                                    );
                                    if let Err(e) = store_cache(&self.config.cache_file, &raw) {
                                        tracing::error!(error = %e, "could not write the directory cache");
                                    }
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "directory snapshot in redis unreadable; ignored")
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "could not read the directory snapshot from redis")
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "directory lease unavailable (redis down)"),
            }
            tokio::select! {
                () = tokio::time::sleep(crate::clock::jitter(period)) => {}
                () = store.snapshot_published.notified() => {}
            }
        }
    }

    /// Syncs every `sync_interval` forever, keeping the last good snapshot on failure.
    pub async fn run(self, directory: Arc<Directory>) {
        loop {
            if let Err(e) = self.sync_once(&directory).await {
                self.metrics.directory_sync_failures.inc();
                let age = directory.age(self.clock.now());
                tracing::warn!(error = %e, snapshot_age_s = ?age, "directory sync failed; keeping the last good snapshot");
            }
            tokio::time::sleep(crate::clock::jitter(self.config.sync_interval)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot::{RawGroup, RawUser};
    use super::*;

    fn raw() -> RawDirectory {
        RawDirectory {
            taken_at: 100,
            users: vec![RawUser {
                id: "u".into(),
                email: Some("u@x".into()),
                username: None,
                state: "ACTIVATED".into(),
                activated: true,
                suspended: false,
                account_locked: false,
                password_expired: false,
                problem: None,
            }],
            groups: vec![RawGroup {
                id: "g".into(),
                name: "G".into(),
                members: vec!["u".into()],
            }],
            app_groups: None,
        }
    }

    #[test]
    fn cache_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/directory.json");
        assert!(load_cache(&path).unwrap().is_none());
        store_cache(&path, &raw()).unwrap();
        assert_eq!(load_cache(&path).unwrap(), Some(raw()));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"ACTIVATED\"", "\"SUSPENDED\"");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(load_cache(&path), Err(CacheError::Corrupt { .. })));
        std::fs::write(&path, b"{\"format\":1,").unwrap();
        assert!(matches!(load_cache(&path), Err(CacheError::Corrupt { .. })));
    }

    #[test]
    fn freshness() {
        let d = Directory::new(Duration::from_secs(60), vec![]);
        assert_eq!(d.fresh(100).err(), Some(Unavailable::NeverSynced));
        d.publish(Arc::new(raw()));
        assert!(d.fresh(150).is_ok());
        assert_eq!(d.fresh(161).err(), Some(Unavailable::Stale));
    }
}
