//! Sessions in Redis: the records, their user and provider-session indexes, reads, renewals
//! and ends published to every instance, and the back-channel logout tokens already used.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::endings::Ending;
use super::{RedisStore, StoreError};
use crate::secret::Secret;

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
    /// Written as an empty `id_token`, read as nothing: the previous release requires the
    /// field it kept the ID token in, and reads records this one writes during a rolling
    /// upgrade. Costs no memory.
    #[serde(
        rename = "id_token",
        serialize_with = "empty_string",
        skip_deserializing,
        default
    )]
    pub legacy_id_token: (),
}

fn empty_string<S: serde::Serializer>(_: &(), serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("")
}

impl RedisStore {
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
}
