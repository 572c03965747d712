//! Reading where `[session]`'s Redis is: one `redis_url`, or a Sentinel group named by
//! `redis_sentinels` and `redis_sentinel_master`, with the passwords, database and key
//! settings that go with them. Exactly one of the two describes where Redis is; anything
//! that would leave a reader guessing which is refused.

use std::time::Duration;

use ::redis::{ConnectionAddr, IntoConnectionInfo};

use super::raw::{kind, Key, Raw};
use super::reader::{get, Entry, Reader};
use super::schema::SessionFile;
use crate::config::{RedisConfig, RedisTarget, SecretSource, SentinelConfig, StoreKind};

const URL_EXAMPLE: &str = "\"redis://127.0.0.1:6379/0\"";
const SENTINEL_EXAMPLE: &str = "\"redis://10.0.0.1:26379\"";

/// The Redis keys of `[session]`: `Some(None)` when sessions are not in Redis, `None` after
/// a problem was reported.
pub(super) fn read_redis(
    r: &Reader<'_, SessionFile>,
    store: Option<StoreKind>,
) -> Option<Option<RedisConfig>> {
    let url = get!(r, redis_url).map(|e| (read_url(&e), e.line));
    let sentinels = get!(r, redis_sentinels).map(|e| (read_sentinels(&e), e.line));
    let master = get!(r, redis_sentinel_master).map(|e| (read_master(&e), e.line));
    let sentinel_password = optional_secret(
        get!(r, redis_sentinel_password_file),
        get!(r, redis_sentinel_password_env),
    );
    let database = get!(r, redis_database)
        .map(|e| (e.int_in(0..=i64::from(i32::MAX)).map(|n| n as i64), e.line));
    let password = match (get!(r, redis_password_file), get!(r, redis_password_env)) {
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
    let key_prefix = match get!(r, key_prefix) {
        None => Some("jumpgate:".to_owned()),
        Some(e) => key_prefix(&e),
    };
    let local_cache_ttl = match get!(r, local_cache_ttl) {
        None => Some(Duration::from_secs(30)),
        Some(e) => e.duration(false),
    };
    let grace = match get!(r, redis_grace) {
        None => Some(Duration::from_secs(30)),
        Some(e) => e.duration(false),
    };

    // The sentinel keys only mean something next to redis_sentinels, whatever the store.
    let mut companions_ok = true;
    if sentinels.is_none() {
        let without = |line: Option<usize>, key: String, hint: &str| {
            r.cx.report(
                line,
                key,
                format!("only applies with redis_sentinels{hint}"),
            );
        };
        if let Some((_, line)) = &master {
            without(
                *line,
                r.key_path("redis_sentinel_master"),
                &format!("; add redis_sentinels = [{SENTINEL_EXAMPLE}]"),
            );
            companions_ok = false;
        }
        if let Some(Some((_, line, key))) = &sentinel_password {
            without(*line, key.clone(), "");
            companions_ok = false;
        }
        if let Some((_, line)) = &database {
            without(
                *line,
                r.key_path("redis_database"),
                &format!("; with redis_url the database is the URL's path, as in {URL_EXAMPLE}"),
            );
            companions_ok = false;
        }
    }

    let target = match (store, url, sentinels) {
        (None, _, _) => return None,
        (Some(StoreKind::Memory), url, sentinels) => {
            // A value that did not even parse has been reported already.
            for (key, parsed) in [
                ("redis_url", url.map(|(u, l)| (u.is_some(), l))),
                ("redis_sentinels", sentinels.map(|(s, l)| (s.is_some(), l))),
            ] {
                if let Some((parsed, line)) = parsed {
                    if parsed {
                        r.cx.report(line, r.key_path(key), "only applies with store = \"redis\"");
                    }
                    companions_ok = false;
                }
            }
            return companions_ok.then_some(None);
        }
        (Some(StoreKind::Redis), Some(_), Some((_, line))) => {
            r.cx.report(
                line,
                r.key_path("redis_sentinels"),
                "set either redis_url (one Redis) or redis_sentinels (Redis through Sentinel), not both",
            );
            return None;
        }
        (Some(StoreKind::Redis), Some((url, _)), None) => RedisTarget::Url(url?),
        (Some(StoreKind::Redis), None, Some((sentinels, _))) => {
            let master = match master {
                Some((master, _)) => master,
                None => {
                    r.cx.report(
                        r.line,
                        r.key_path("redis_sentinel_master"),
                        "missing; redis_sentinels needs redis_sentinel_master, the name the sentinels monitor the master under (\"sentinel monitor NAME HOST PORT QUORUM\")",
                    );
                    None
                }
            };
            RedisTarget::Sentinel(SentinelConfig {
                sentinels: sentinels?,
                master: master?,
                password: sentinel_password?.map(|(s, _, _)| s),
                database: database.map_or(Some(0), |(d, _)| d)?,
            })
        }
        (Some(StoreKind::Redis), None, None) => {
            // A stray sentinel key already said what is missing.
            if companions_ok {
                r.cx.report(
                    r.line,
                    r.key_path("redis_url"),
                    format!("missing; store = \"redis\" needs redis_url, e.g. {URL_EXAMPLE}, or redis_sentinels with redis_sentinel_master"),
                );
            }
            return None;
        }
    };
    if !companions_ok {
        return None;
    }
    Some(Some(RedisConfig {
        target,
        password: password?,
        key_prefix: key_prefix?,
        local_cache_ttl: local_cache_ttl?,
        grace: grace?,
    }))
}

fn read_url(e: &Entry<'_, Key<kind::Str>>) -> Option<String> {
    let s = e.str("a redis:// or rediss:// URL")?;
    match s.into_connection_info() {
        Ok(_) if s.starts_with("redis://") || s.starts_with("rediss://") => Some(s.to_owned()),
        _ => {
            e.report(format!("\"{s}\" is not a Redis URL; expected e.g. {URL_EXAMPLE} or \"rediss://redis.internal:6380\""));
            None
        }
    }
}

/// How a sentinel is reached, so that every sentinel (and so every data node) is reached the
/// same way: plain, TLS, or TLS without verifying the host name.
fn tls_of(addr: &ConnectionAddr) -> Option<bool> {
    match addr {
        ConnectionAddr::TcpTls { insecure, .. } => Some(*insecure),
        _ => None,
    }
}

fn read_sentinels(e: &Entry<'_, Key<kind::List>>) -> Option<Vec<String>> {
    let items = e.array(&format!(
        "a list of sentinel URLs such as [{SENTINEL_EXAMPLE}]"
    ))?;
    if items.is_empty() {
        e.report(format!(
            "the list is empty; expected at least one sentinel URL such as {SENTINEL_EXAMPLE}"
        ));
        return None;
    }
    let mut out = Vec::new();
    let mut seen: Vec<(String, Option<bool>)> = Vec::new();
    let mut ok = true;
    for item in &items {
        let Some((url, addr, tls)) = read_sentinel(item) else {
            ok = false;
            continue;
        };
        if seen.iter().any(|(a, _)| *a == addr) {
            item.report(format!("{addr} is listed twice"));
            ok = false;
            continue;
        }
        if let Some((_, first)) = seen.first() {
            if *first != tls {
                item.report("mixes redis:// and rediss:// (or #insecure); the data nodes are reached over TLS exactly when the sentinels are, so every sentinel URL must be written the same way");
                ok = false;
                continue;
            }
        }
        seen.push((addr, tls));
        out.push(url);
    }
    ok.then_some(out)
}

/// One sentinel URL: the URL, its `host:port` and how it is reached.
fn read_sentinel(e: &Entry<'_, Raw>) -> Option<(String, String, Option<bool>)> {
    let s = e.str(&format!("a sentinel URL such as {SENTINEL_EXAMPLE}"))?;
    let info = match s.into_connection_info() {
        Ok(info) if s.starts_with("redis://") || s.starts_with("rediss://") => info,
        _ => {
            e.report(format!(
                "\"{s}\" is not a Redis URL; expected a sentinel URL such as {SENTINEL_EXAMPLE} or \"rediss://sentinel-1.internal:26379\""
            ));
            return None;
        }
    };
    // Without a port the URL means 6379, a data node's port, which answers SENTINEL with an
    // error that would only show up at start-up.
    if !has_port(s) {
        e.report(format!(
            "\"{s}\" names no port; sentinels usually listen on 26379, as in {SENTINEL_EXAMPLE}"
        ));
        return None;
    }
    if info.redis.db != 0 {
        e.report(format!(
            "\"{s}\" names database {}; sentinels have no databases: set the data nodes' one with redis_database",
            info.redis.db
        ));
        return None;
    }
    Some((s.to_owned(), info.addr.to_string(), tls_of(&info.addr)))
}

/// Whether the URL's authority ends in `:PORT`.
fn has_port(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn read_master(e: &Entry<'_, Key<kind::Str>>) -> Option<String> {
    let s = e.str("the master's name, such as \"mymaster\"")?;
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        e.report(format!(
            "\"{s}\" is not a master name; expected the NAME of the sentinels' \"sentinel monitor NAME HOST PORT QUORUM\", such as \"mymaster\""
        ));
        return None;
    }
    Some(s.to_owned())
}

/// At most one of a `*_file` and a `*_env` key: `Some(None)` when neither is set, and with
/// the secret the line and key it was set on.
fn optional_secret(
    file: Option<Entry<'_, Key<kind::Path>>>,
    env: Option<Entry<'_, Key<kind::Str>>>,
) -> Option<Option<(SecretSource, Option<usize>, String)>> {
    match (file, env) {
        (None, None) => Some(None),
        (Some(f), None) => f
            .path()
            .map(|p| Some((SecretSource::File(p), f.line, f.key.clone()))),
        (None, Some(e)) => {
            let name = e.str("the name of an environment variable")?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                e.report(format!("\"{name}\" is not an environment variable name; expected letters, digits and _"));
                return None;
            }
            Some(Some((
                SecretSource::Env(name.to_owned()),
                e.line,
                e.key.clone(),
            )))
        }
        (Some(f), Some(e)) => {
            let name = |key: &str| key.rsplit('.').next().unwrap_or_default().to_owned();
            f.report(format!(
                "set either {} or {}, not both",
                name(&f.key),
                name(&e.key)
            ));
            None
        }
    }
}

fn key_prefix(e: &Entry<'_, Key<kind::Str>>) -> Option<String> {
    let s = e.str("a key prefix such as \"jumpgate:\"")?;
    if s.is_empty() || s.len() > 64 || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        e.report(format!(
            "\"{s}\" is not a usable key prefix; expected 1 to 64 visible characters"
        ));
        return None;
    }
    Some(s.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, ConfigError, RedisTarget, SecretSource};

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\n[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n\n[session]\n";

    /// `(line, key, message)` of every problem in `[session]` holding `session`; the table
    /// starts on line 10.
    fn problems(session: &str) -> Vec<(Option<usize>, String, String)> {
        match parse(&format!("{BASE}{session}"), Path::new("/etc/jg/g.toml")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(p)) => {
                p.into_iter().map(|p| (p.line, p.key, p.message)).collect()
            }
            Err(e) => vec![(None, String::new(), e.to_string())],
        }
    }

    fn one(session: &str) -> (Option<usize>, String, String) {
        let mut p = problems(session);
        assert_eq!(p.len(), 1, "expected one problem: {p:#?}");
        p.remove(0)
    }

    fn target(session: &str) -> RedisTarget {
        let c = parse(&format!("{BASE}{session}"), Path::new("/etc/jg/g.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        c.session.redis.expect("redis config").target
    }

    #[test]
    fn sentinel_keys_make_a_sentinel_target() {
        let t = target(
            "store = \"redis\"\nredis_sentinels = [\"redis://10.0.0.1:26379\", \"redis://:pw@10.0.0.2:26379\"]\nredis_sentinel_master = \"mymaster\"\nredis_sentinel_password_file = \"sentinel-pw\"\nredis_database = 3\n",
        );
        let RedisTarget::Sentinel(s) = t else {
            panic!("{t:?}")
        };
        assert_eq!(
            s.sentinels,
            ["redis://10.0.0.1:26379", "redis://:pw@10.0.0.2:26379"]
        );
        assert_eq!(s.master, "mymaster");
        assert_eq!(
            s.password,
            Some(SecretSource::File("/etc/jg/sentinel-pw".into()))
        );
        assert_eq!(s.database, 3);
        let RedisTarget::Sentinel(s) = target(
            "store = \"redis\"\nredis_sentinels = [\"rediss://s1.internal:26379\"]\nredis_sentinel_master = \"m\"\n",
        ) else {
            panic!()
        };
        assert_eq!((s.database, s.password), (0, None));
        assert_eq!(
            target("store = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n"),
            RedisTarget::Url("redis://127.0.0.1:6379/0".into())
        );
    }

    #[test]
    fn sentinel_problems_name_their_keys_and_lines() {
        let redis = "store = \"redis\"\n"; // line 11
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\"]\n",
                10,
                "session.redis_sentinel_master",
                "missing; redis_sentinels needs redis_sentinel_master",
            ),
            (
                "redis_sentinel_master = \"mymaster\"\n",
                12,
                "session.redis_sentinel_master",
                "only applies with redis_sentinels",
            ),
            (
                "redis_sentinels = []\nredis_sentinel_master = \"m\"\n",
                12,
                "session.redis_sentinels",
                "the list is empty",
            ),
            (
                "redis_sentinels = \"redis://10.0.0.1:26379\"\nredis_sentinel_master = \"m\"\n",
                12,
                "session.redis_sentinels",
                "expected a list of sentinel URLs",
            ),
            (
                "redis_sentinels = [\n  \"redis://10.0.0.1:26379\",\n  \"http://10.0.0.2:26379\",\n]\nredis_sentinel_master = \"m\"\n",
                14,
                "session.redis_sentinels[1]",
                "is not a Redis URL",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1\"]\nredis_sentinel_master = \"m\"\n",
                12,
                "session.redis_sentinels[0]",
                "names no port",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379/2\"]\nredis_sentinel_master = \"m\"\n",
                12,
                "session.redis_sentinels[0]",
                "sentinels have no databases",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\n",
                12,
                "session.redis_sentinels[1]",
                "listed twice",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\", \"rediss://10.0.0.2:26379\"]\nredis_sentinel_master = \"m\"\n",
                12,
                "session.redis_sentinels[1]",
                "mixes redis:// and rediss://",
            ),
            (
                "redis_url = \"redis://10.0.0.9:6379\"\nredis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\n",
                13,
                "session.redis_sentinels",
                "set either redis_url (one Redis) or redis_sentinels",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"my master\"\n",
                13,
                "session.redis_sentinel_master",
                "is not a master name",
            ),
            (
                "redis_url = \"redis://10.0.0.9:6379\"\nredis_database = 2\n",
                13,
                "session.redis_database",
                "with redis_url the database is the URL's path",
            ),
            (
                "redis_url = \"redis://10.0.0.9:6379\"\nredis_sentinel_password_env = \"P\"\n",
                13,
                "session.redis_sentinel_password_env",
                "only applies with redis_sentinels",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\nredis_sentinel_password_env = \"P\"\nredis_sentinel_password_file = \"f\"\n",
                15,
                "session.redis_sentinel_password_file",
                "set either redis_sentinel_password_file or redis_sentinel_password_env, not both",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\nredis_sentinel_password_env = \"NOT-A-NAME\"\n",
                14,
                "session.redis_sentinel_password_env",
                "is not an environment variable name",
            ),
            (
                "redis_sentinels = [\"redis://10.0.0.1:26379\"]\nredis_sentinel_master = \"m\"\nredis_database = -1\n",
                14,
                "session.redis_database",
                "out of range",
            ),
            (
                "",
                10,
                "session.redis_url",
                "or redis_sentinels with redis_sentinel_master",
            ),
        ];
        for (keys, line, key, needle) in cases {
            let (l, k, m) = one(&format!("{redis}{keys}"));
            assert_eq!((l, k.as_str()), (Some(*line), *key), "{keys}\n→ {k}: {m}");
            assert!(m.contains(needle), "{keys}\n→ {m}");
        }
        let (l, k, m) = one("redis_sentinels = [\"redis://10.0.0.1:26379\"]\n");
        assert_eq!((l, k.as_str()), (Some(11), "session.redis_sentinels"));
        assert!(m.contains("only applies with store = \"redis\""), "{m}");
    }

    #[test]
    fn ports_are_found_after_credentials_and_in_ipv6() {
        for (url, port) in [
            ("redis://10.0.0.1:26379", true),
            ("redis://:p%40ss@10.0.0.1:26379", true),
            ("redis://user:pass@10.0.0.1", false),
            ("rediss://[::1]:26379/#insecure", true),
            ("redis://[::1]", false),
            ("redis://10.0.0.1:/", false),
        ] {
            assert_eq!(super::has_port(url), port, "{url}");
        }
    }
}
