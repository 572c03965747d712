//! Sign-ins in progress in Redis, so a callback may land on any instance: kept for their
//! timeout, taken once.

use serde::{Deserialize, Serialize};

use super::{RedisStore, StoreError};
use crate::secret::Secret;

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

impl RedisStore {
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
}
