//! Reading where `[session]`'s Redis is and the key settings that go with it.

use std::time::Duration;

use ::redis::IntoConnectionInfo;

use super::{Entry, Reader};
use crate::config::{RedisConfig, SecretSource, StoreKind};

const URL_EXAMPLE: &str = "\"redis://127.0.0.1:6379/0\"";

/// The Redis keys of `[session]`: `Some(None)` when sessions are not in Redis, `None` after
/// a problem was reported.
pub(super) fn read_redis(
    r: &mut Reader<'_>,
    store: Option<StoreKind>,
) -> Option<Option<RedisConfig>> {
    let url = r.get("redis_url").map(|e| (read_url(&e), e.line));
    let password = match (r.get("redis_password_file"), r.get("redis_password_env")) {
        (None, None) => Some(None),
        (Some(f), None) => f.path().map(|p| Some(SecretSource::File(p))),
        (None, Some(e)) => e
            .str("an environment variable name")
            .map(|v| Some(SecretSource::Env(v.to_owned()))),
        (Some(f), Some(_)) => {
            f.report("set either redis_password_file or redis_password_env, not both");
            None
        }
    };
    let key_prefix = match r.get("key_prefix") {
        None => Some("jumpgate:".to_owned()),
        Some(e) => key_prefix(&e),
    };
    let local_cache_ttl = match r.get("local_cache_ttl") {
        None => Some(Duration::from_secs(30)),
        Some(e) => e.duration(false),
    };
    let grace = match r.get("redis_grace") {
        None => Some(Duration::from_secs(30)),
        Some(e) => e.duration(false),
    };
    match (store, url) {
        (Some(StoreKind::Redis), Some((Some(url), _))) => Some(Some(RedisConfig {
            url,
            password: password?,
            key_prefix: key_prefix?,
            local_cache_ttl: local_cache_ttl?,
            grace: grace?,
        })),
        (Some(StoreKind::Redis), None) => {
            r.cx.report(
                r.line,
                r.key_path("redis_url"),
                format!("missing; store = \"redis\" needs redis_url, e.g. {URL_EXAMPLE}"),
            );
            None
        }
        (Some(StoreKind::Memory), Some((Some(_), line))) => {
            r.cx.report(
                line,
                r.key_path("redis_url"),
                "only applies with store = \"redis\"",
            );
            None
        }
        (_, Some((None, _))) | (None, _) => None,
        (Some(StoreKind::Memory), None) => Some(None),
    }
}

fn read_url(e: &Entry<'_>) -> Option<String> {
    let s = e.str("a redis:// or rediss:// URL")?;
    match s.into_connection_info() {
        Ok(_) if s.starts_with("redis://") || s.starts_with("rediss://") => Some(s.to_owned()),
        _ => {
            e.report(format!("\"{s}\" is not a Redis URL; expected e.g. {URL_EXAMPLE} or \"rediss://redis.internal:6380\""));
            None
        }
    }
}

fn key_prefix(e: &Entry<'_>) -> Option<String> {
    let s = e.str("a key prefix such as \"jumpgate:\"")?;
    if s.is_empty() || s.len() > 64 || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        e.report(format!(
            "\"{s}\" is not a usable key prefix; expected 1 to 64 visible characters"
        ));
        return None;
    }
    Some(s.to_owned())
}
