//! The directory sync shared between instances: the lease that lets one of them sync, and
//! the snapshot it publishes for the others.

use std::time::Duration;

use redis::AsyncCommands;

use super::{RedisStore, StoreError};

impl RedisStore {
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
