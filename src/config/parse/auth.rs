//! Reading the sign-in and access tables: `[oidc]`, `[session]`, `[identity]`, `[directory]`,
//! and a site's or route's `[site.headers]`, `allow_groups` and `allow_users`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{kind, Key};
use super::reader::{get, need, Entry, Reader};
use super::schema::{
    DirectoryFile, HeadersFile, IdentityFile, OidcFile, RouteFile, SessionFile, StepUpFile,
};
use crate::config::{
    Allow, ClientAuth, DirectoryConfig, IdentityConfig, IdentityHeaders, OidcConfig, SecretSource,
    SessionConfig, StoreKind,
};

/// The prefix every gateway endpoint lives under.
const RESERVED: &str = "/.jumpgate/";

/// JumpCloud's issuer; the default when `oidc.issuer` is absent.
pub(crate) const JUMPCLOUD_ISSUER: &str = "https://oauth.id.jumpcloud.com/";

/// The value read from `e`, or `default` when the key is absent.
fn default_or<'a, N, T>(
    e: Option<Entry<'a, N>>,
    default: T,
    read: impl FnOnce(&Entry<'a, N>) -> Option<T>,
) -> Option<T> {
    match e {
        Some(e) => read(&e),
        None => Some(default),
    }
}

/// Exactly one of a `*_file` and a `*_env` key of the table `r` reads.
macro_rules! secret {
    ($r:expr, $file:ident, $env:ident) => {
        secret(
            &$r,
            get!($r, $file),
            get!($r, $env),
            stringify!($file),
            stringify!($env),
        )
    };
}

fn secret<T: serde::de::DeserializeOwned>(
    r: &Reader<'_, T>,
    file: Option<Entry<'_, Key<kind::Path>>>,
    env: Option<Entry<'_, Key<kind::Str>>>,
    file_key: &'static str,
    env_key: &'static str,
) -> Option<SecretSource> {
    match (file, env) {
        (Some(f), None) => f.path().map(SecretSource::File),
        (None, Some(e)) => {
            let name = e.str("the name of an environment variable")?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                e.report(format!("\"{name}\" is not an environment variable name; expected letters, digits and _"));
                return None;
            }
            Some(SecretSource::Env(name.to_owned()))
        }
        (Some(f), Some(_)) => {
            f.report(format!("set either {file_key} or {env_key}, not both"));
            None
        }
        (None, None) => {
            let key = r.key_path(file_key);
            r.cx.report(
                r.line,
                key,
                format!("missing required key {}; expected {file_key} (a file holding the secret) or {env_key}", r.place()),
            );
            None
        }
    }
}

fn issuer(e: &Entry<'_, Key<kind::Str>>) -> Option<String> {
    let s = e.str("the issuer URL, such as \"https://oauth.id.jumpcloud.com/\"")?;
    let Ok(uri) = s.parse::<http::Uri>() else {
        e.report(format!(
            "\"{s}\" is not a URL; expected the issuer URL, such as \"{JUMPCLOUD_ISSUER}\""
        ));
        return None;
    };
    let host = uri.host().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        _ => {
            e.report(format!(
                "\"{s}\" must use https:// (plain http:// is accepted only on a loopback address, for tests and the demo)"
            ));
            return None;
        }
    }
    if uri.query().is_some() || host.is_empty() {
        e.report(format!(
            "\"{s}\" must be a plain issuer URL with a host and no query"
        ));
        return None;
    }
    Some(s.to_owned())
}

fn reserved_path(e: &Entry<'_, Key<kind::Str>>) -> Option<String> {
    let s = e.str("a path under /.jumpgate/")?;
    if !s.starts_with(RESERVED)
        || s.len() == RESERVED.len()
        || crate::canonical::path(s).ok().as_deref() != Some(s)
    {
        e.report(format!(
            "\"{s}\" must be a canonical path under {RESERVED}, such as \"/.jumpgate/callback\", so it never collides with the upstream's own paths"
        ));
        return None;
    }
    Some(s.to_owned())
}

pub(super) fn read_oidc(r: Reader<'_, OidcFile>) -> Option<OidcConfig> {
    let issuer = default_or(get!(r, issuer), JUMPCLOUD_ISSUER.to_owned(), issuer);
    let client_id = need!(r, client_id, "the OIDC application's client id").and_then(|e| {
        let s = e.str("a client id string")?;
        if s.is_empty() {
            e.report("the client id is empty");
            return None;
        }
        Some(s.to_owned())
    });
    let client_secret = secret!(r, client_secret_file, client_secret_env);
    let scopes = default_or(
        get!(r, scopes),
        vec!["openid".to_owned(), "profile".to_owned()],
        |e| {
            let items = e.array("an array of scope names such as [\"openid\", \"profile\"]")?;
            let mut out = Vec::new();
            let mut ok = true;
            for item in items {
                match item.str("a scope name") {
                    Some(s) if !s.is_empty() && !s.contains(char::is_whitespace) => {
                        out.push(s.to_owned())
                    }
                    Some(s) => {
                        item.report(format!("\"{s}\" is not a scope name"));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            if ok && !out.iter().any(|s| s == "openid") {
                e.report("must contain \"openid\"; expected e.g. [\"openid\", \"profile\"]");
                ok = false;
            }
            ok.then_some(out)
        },
    );
    let callback_path = default_or(
        get!(r, callback_path),
        "/.jumpgate/callback".to_owned(),
        reserved_path,
    );
    let client_auth = default_or(get!(r, client_auth), ClientAuth::Basic, |e| {
        match e.str("\"basic\" or \"post\"")? {
            "basic" => Some(ClientAuth::Basic),
            "post" => Some(ClientAuth::Post),
            other => {
                e.report(format!("\"{other}\" is not a client authentication method; expected \"basic\" or \"post\""));
                None
            }
        }
    });
    let clock_skew = default_or(get!(r, clock_skew), Duration::from_secs(120), |e| {
        e.duration(true)
    });
    let ca_file = default_or(get!(r, ca_file), None, |e| e.path().map(Some));
    let groups_claim = default_or(get!(r, groups_claim), None, |e| {
        e.str("a claim name such as \"memberOf\"")
            .map(|s| Some(s.to_owned()))
    });
    let match_by_email = default_or(get!(r, match_by_email), false, |e| e.bool());
    let idp_logout = default_or(get!(r, idp_logout), true, |e| e.bool());
    let post_logout_redirect_uri = default_or(get!(r, post_logout_redirect_uri), None, |e| {
        let s = e.str("an absolute https:// URL registered at the provider")?;
        match s.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {
                Some(Some(s.to_owned()))
            }
            _ => {
                e.report(format!("\"{s}\" is not an absolute https:// URL"));
                None
            }
        }
    });
    let step_up = default_or(get!(r, step_up), None, |e| {
        e.table("an [oidc.step_up] table")
            .and_then(read_step_up)
            .map(Some)
    });
    r.finish();
    Some(OidcConfig {
        step_up: step_up?,
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes: scopes?,
        callback_path: callback_path?,
        client_auth: client_auth?,
        clock_skew: clock_skew?,
        ca_file: ca_file?,
        groups_claim: groups_claim?,
        match_by_email: match_by_email?,
        idp_logout: idp_logout?,
        post_logout_redirect_uri: post_logout_redirect_uri?,
    })
}

fn read_step_up(r: Reader<'_, StepUpFile>) -> Option<crate::config::StepUpConfig> {
    let client_id = need!(r, client_id, "the step-up application's client id")
        .and_then(|e| e.str("a client id string").map(str::to_owned));
    let client_secret = secret!(r, client_secret_file, client_secret_env);
    let callback_path = default_or(
        get!(r, callback_path),
        "/.jumpgate/step-up/callback".to_owned(),
        reserved_path,
    );
    let acr_values = default_or(get!(r, acr_values), None, |e| {
        e.str("space-separated acr values")
            .map(|s| Some(s.to_owned()))
    });
    let require_amr = default_or(get!(r, require_amr), Vec::new(), |e| {
        string_list(e, "amr values such as \"mfa\"")
    });
    r.finish();
    Some(crate::config::StepUpConfig {
        client_id: client_id?,
        client_secret: client_secret?,
        callback_path: callback_path?,
        acr_values: acr_values?,
        require_amr: require_amr?,
    })
}

/// A route's step-up keys.
pub(super) struct RouteStepUp {
    pub(super) max_age: Option<Duration>,
    pub(super) exempt: Vec<http::Method>,
    pub(super) groups: Vec<String>,
}

/// `step_up`, `step_up_exempt_methods` and `step_up_groups` on a route.
pub(super) fn read_route_step_up(r: &Reader<'_, RouteFile>) -> Option<RouteStepUp> {
    let max_age = default_or(get!(r, step_up), None, |e| e.duration(false).map(Some));
    if let Some(e) = get!(r, step_up_methods) {
        // The old key listed the methods that need it, so any other method skipped it.
        e.report("was replaced by step_up_exempt_methods: a step-up now covers every method but the exempt ones (default [\"GET\", \"HEAD\", \"OPTIONS\"]) and every WebSocket handshake; remove it, or list the methods that may skip the step-up in step_up_exempt_methods");
        return None;
    }
    let exempt = default_or(
        get!(r, step_up_exempt_methods),
        vec![http::Method::GET, http::Method::HEAD, http::Method::OPTIONS],
        |e| {
            let list = string_list(e, "HTTP methods such as \"GET\"")?;
            let mut out = Vec::new();
            for m in list {
                if !crate::canonical::method_ok(&m) {
                    e.report(format!("\"{m}\" is not an upper-case HTTP method"));
                    return None;
                }
                out.push(http::Method::from_bytes(m.as_bytes()).ok()?);
            }
            Some(out)
        },
    );
    let groups = default_or(get!(r, step_up_groups), Vec::new(), |e| {
        string_list(e, "JumpCloud user group names or ids")
    });
    let (max_age, exempt, groups) = (max_age?, exempt?, groups?);
    if max_age.is_none() {
        for (key, set) in [
            (
                "step_up_exempt_methods",
                r.file.step_up_exempt_methods.is_some(),
            ),
            ("step_up_groups", r.file.step_up_groups.is_some()),
        ] {
            if set {
                let key = r.key_path(key);
                r.cx.report(
                    r.line,
                    key,
                    "only applies with step_up; add step_up = \"15m\" or remove it",
                );
                return None;
            }
        }
        // Without a step-up the lists mean nothing; kept empty so they say nothing either.
        return Some(RouteStepUp {
            max_age,
            exempt: Vec::new(),
            groups: Vec::new(),
        });
    }
    Some(RouteStepUp {
        max_age,
        exempt,
        groups,
    })
}

/// `[session]`, or its defaults when the table is absent.
pub(super) fn read_session(
    r: Option<Reader<'_, SessionFile>>,
    state_dir: &Path,
) -> Option<SessionConfig> {
    let defaults = SessionConfig {
        store: StoreKind::Memory,
        key_file: state_dir.join("session.key"),
        lifetime: Duration::from_secs(12 * 3600),
        idle_timeout: Duration::from_secs(3600),
        login_timeout: Duration::from_secs(600),
        max_sessions: 1_000_000,
        max_pending_logins: 100_000,
        redis: None,
    };
    let Some(r) = r else {
        return Some(defaults);
    };
    let store = default_or(get!(r, store), StoreKind::Memory, |e| {
        match e.str("\"memory\" or \"redis\"")? {
            "memory" => Some(StoreKind::Memory),
            "redis" => Some(StoreKind::Redis),
            other => {
                e.report(format!(
                    "\"{other}\" is not a session store; expected \"memory\" or \"redis\""
                ));
                None
            }
        }
    });
    let key_file = default_or(get!(r, key_file), defaults.key_file.clone(), |e| e.path());
    let lifetime = default_or(get!(r, lifetime), defaults.lifetime, |e| e.duration(false));
    let idle_timeout = default_or(get!(r, idle_timeout), defaults.idle_timeout, |e| {
        e.duration(false)
    });
    let login_timeout = default_or(get!(r, login_timeout), defaults.login_timeout, |e| {
        e.duration(false)
    });
    let max_sessions = default_or(get!(r, max_sessions), defaults.max_sessions, |e| {
        e.int_in(1..=100_000_000).map(|n| n as u64)
    });
    let max_pending_logins = default_or(
        get!(r, max_pending_logins),
        defaults.max_pending_logins,
        |e| e.int_in(1..=10_000_000).map(|n| n as u64),
    );
    let redis = super::redis::read_redis(&r, store);
    r.finish();
    Some(SessionConfig {
        store: store?,
        key_file: key_file?,
        lifetime: lifetime?,
        idle_timeout: idle_timeout?,
        login_timeout: login_timeout?,
        max_sessions: max_sessions?,
        max_pending_logins: max_pending_logins?,
        redis: redis?,
    })
}

/// `[identity]`, or its defaults when the table is absent.
pub(super) fn read_identity(
    r: Option<Reader<'_, IdentityFile>>,
    state_dir: &Path,
) -> Option<IdentityConfig> {
    let defaults = IdentityConfig {
        signing_key_file: state_dir.join("assertion.key"),
        issuer: "jumpgate".to_owned(),
        assertion_ttl: Duration::from_secs(300),
    };
    let Some(r) = r else {
        return Some(defaults);
    };
    let signing_key_file = default_or(
        get!(r, signing_key_file),
        defaults.signing_key_file.clone(),
        |e| e.path(),
    );
    let issuer = default_or(get!(r, issuer), defaults.issuer.clone(), |e| {
        let s = e.str("a string naming this gateway")?;
        if s.is_empty() {
            e.report("the issuer is empty");
            return None;
        }
        Some(s.to_owned())
    });
    let assertion_ttl = default_or(get!(r, assertion_ttl), defaults.assertion_ttl, |e| {
        let d = e.duration(false)?;
        if d > Duration::from_secs(300) || d < Duration::from_secs(30) {
            e.report(format!(
                "{d:?} is out of range; expected from \"30s\" to \"5m\""
            ));
            return None;
        }
        Some(d)
    });
    r.finish();
    Some(IdentityConfig {
        signing_key_file: signing_key_file?,
        issuer: issuer?,
        assertion_ttl: assertion_ttl?,
    })
}

/// `[site.headers]`: each a valid header name; lower-cased.
pub(super) fn read_headers(r: Reader<'_, HeadersFile>) -> Option<IdentityHeaders> {
    let d = IdentityHeaders::default();
    let one = |e: Option<Entry<'_, Key<kind::Str>>>, default: String| {
        default_or(e, default, |e| {
            let s = e.str("a header name such as \"X-Auth-User\"")?;
            match http::HeaderName::from_bytes(s.as_bytes()) {
                Ok(n) if !is_forbidden_header(n.as_str()) => Some(n.as_str().to_owned()),
                Ok(_) => {
                    e.report(format!("\"{s}\" is a header the gateway or HTTP itself manages; choose another name"));
                    None
                }
                Err(_) => {
                    e.report(format!("\"{s}\" is not a valid header name"));
                    None
                }
            }
        })
    };
    let user = one(get!(r, user), d.user);
    let email = one(get!(r, email), d.email);
    let username = one(get!(r, username), d.username);
    let groups = one(get!(r, groups), d.groups);
    let assertion = one(get!(r, assertion), d.assertion);
    let step_up_time = one(get!(r, step_up_time), d.step_up_time);
    r.finish();
    Some(IdentityHeaders {
        user: user?,
        email: email?,
        username: username?,
        groups: groups?,
        assertion: assertion?,
        step_up_time: step_up_time?,
    })
}

fn is_forbidden_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "cookie"
            | "authorization"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "upgrade"
            | "te"
    ) || name.starts_with("x-forwarded-")
}

pub(super) fn string_list(e: &Entry<'_, Key<kind::List>>, what: &str) -> Option<Vec<String>> {
    let items = e.array(&format!("an array of {what}"))?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match item.str(what) {
            Some(s) if !s.trim().is_empty() => out.push(s.trim().to_owned()),
            Some(_) => {
                item.report(format!("empty entry; expected {what}"));
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `allow_groups` and `allow_users`: `Some(None)` when neither is set.
pub(super) fn read_allow(
    groups: Option<Entry<'_, Key<kind::List>>>,
    users: Option<Entry<'_, Key<kind::List>>>,
) -> Option<Option<Allow>> {
    let groups = groups.map(|e| string_list(&e, "JumpCloud user group names or ids"));
    let users = users.map(|e| string_list(&e, "JumpCloud user ids or emails"));
    match (groups, users) {
        (None, None) => Some(None),
        (g, u) => Some(Some(Allow {
            groups: g.unwrap_or(Some(Vec::new()))?,
            users: u.unwrap_or(Some(Vec::new()))?,
        })),
    }
}

pub(super) fn read_directory(
    r: Reader<'_, DirectoryFile>,
    state_dir: &Path,
) -> Option<DirectoryConfig> {
    let provider =
        need!(r, provider, "\"jumpcloud\"").and_then(|e| match e.str("\"jumpcloud\"")? {
            "jumpcloud" => Some(()),
            other => {
                e.report(format!(
                    "\"{other}\" is not a supported directory; expected \"jumpcloud\""
                ));
                None
            }
        });
    let api_url = default_or(
        get!(r, api_url),
        "https://console.jumpcloud.com".to_owned(),
        |e| {
            let s = e.str("the console URL, such as \"https://console.jumpcloud.com\"")?;
            let ok = s.parse::<http::Uri>().is_ok_and(|u| {
                let host = u.host().unwrap_or("");
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                (u.scheme_str() == Some("https") || (u.scheme_str() == Some("http") && loopback))
                    && !host.is_empty()
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none()
            });
            if !ok {
                e.report(format!(
                "\"{s}\" must be an https:// origin without a path, such as \"https://console.jumpcloud.com\" or \"https://console.eu.jumpcloud.com\""
            ));
                return None;
            }
            Some(s.trim_end_matches('/').to_owned())
        },
    );
    let api_key = secret!(r, api_key_file, api_key_env);
    let org_id = default_or(get!(r, org_id), None, |e| {
        let s = e.str("an organization id (24 hex characters)")?;
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            e.report(format!(
                "\"{s}\" is not an organization id; expected 24 hex characters"
            ));
            return None;
        }
        Some(Some(s.to_owned()))
    });
    let sync_interval = default_or(get!(r, sync_interval), Duration::from_secs(300), |e| {
        e.duration(false)
    });
    let max_staleness = default_or(get!(r, max_staleness), Duration::from_secs(3600), |e| {
        e.duration(false)
    });
    let cache_file = default_or(get!(r, cache_file), state_dir.join("directory.json"), |e| {
        e.path()
    });
    let application_id = default_or(get!(r, application_id), None, |e| {
        e.str("the JumpCloud application id")
            .map(|s| Some(s.to_owned()))
    });
    let request_interval = default_or(get!(r, request_interval), Duration::from_millis(100), |e| {
        e.duration(true)
    });
    let request_timeout = default_or(get!(r, request_timeout), Duration::from_secs(30), |e| {
        e.duration(false)
    });
    let max_retries = default_or(get!(r, max_retries), 6, |e| {
        e.int_in(0..=20).map(|n| n as u32)
    });
    let retry_backoff = default_or(get!(r, retry_backoff), Duration::from_secs(1), |e| {
        e.duration(false)
    });
    if let (Some(i), Some(s)) = (&sync_interval, &max_staleness) {
        if s < i {
            let key = r.key_path("max_staleness");
            r.cx.report(
                r.line,
                key,
                "is shorter than sync_interval, so protected routes would fail closed between syncs; expected at least sync_interval",
            );
        }
    }
    r.finish();
    provider?;
    Some(DirectoryConfig {
        api_url: api_url?,
        api_key: api_key?,
        org_id: org_id?,
        sync_interval: sync_interval?,
        max_staleness: max_staleness?,
        cache_file: cache_file?,
        application_id: application_id?,
        request_interval: request_interval?,
        request_timeout: request_timeout?,
        max_retries: max_retries?,
        retry_backoff: retry_backoff?,
    })
}

/// The state directory: `server.state_dir`, else `state/` beside the config file.
pub(super) fn state_dir(e: Option<Entry<'_, Key<kind::Path>>>, base: &Path) -> Option<PathBuf> {
    match e {
        Some(e) => e.path(),
        None => Some(base.join("state")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, ClientAuth, ConfigError, SecretSource};

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\n[[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n";

    fn problems(extra: &str) -> Vec<String> {
        match parse(&format!("{BASE}{extra}"), Path::new("/etc/jg/g.toml")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(p)) => p
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn oidc_defaults_and_values() {
        let c = parse(
            &format!("{BASE}[oidc]\nclient_id = \"abc\"\nclient_secret_file = \"secret\"\n"),
            Path::new("/etc/jg/g.toml"),
        )
        .unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.issuer, "https://oauth.id.jumpcloud.com/");
        assert_eq!(o.scopes, vec!["openid", "profile"]);
        assert_eq!(o.callback_path, "/.jumpgate/callback");
        assert_eq!(o.client_auth, ClientAuth::Basic);
        assert_eq!(o.client_secret, SecretSource::File("/etc/jg/secret".into()));
        assert_eq!(c.session.key_file, Path::new("/etc/jg/state/session.key"));
        assert_eq!(
            c.identity.signing_key_file,
            Path::new("/etc/jg/state/assertion.key")
        );
        assert_eq!(c.sites[0].headers.user, "x-jumpgate-user");
    }

    #[test]
    fn oidc_problems_name_their_keys() {
        let p = problems("[oidc]\nclient_secret_env = \"S\"\nclient_secret_file = \"f\"\n");
        assert!(
            p.iter().any(|m| m.starts_with("oidc.client_id: missing")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("oidc.client_secret_file: set either")),
            "{p:?}"
        );
        let p = problems("[oidc]\nclient_id = \"a\"\n");
        assert!(
            p.iter()
                .any(|m| m.starts_with("oidc.client_secret_file: missing")),
            "{p:?}"
        );
        let p = problems("[oidc]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nissuer = \"http://idp.example.com/\"\n");
        assert!(
            p.iter()
                .any(|m| m.starts_with("oidc.issuer:") && m.contains("https://")),
            "{p:?}"
        );
        assert!(problems("[oidc]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nissuer = \"http://127.0.0.1:9/\"\n").is_empty());
        let p = problems(
            "[oidc]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nscopes = [\"profile\"]\n",
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("oidc.scopes:") && m.contains("openid")),
            "{p:?}"
        );
        let p = problems("[oidc]\nclient_id = \"a\"\nclient_secret_env = \"S\"\ncallback_path = \"/auth/callback\"\n");
        assert!(
            p.iter().any(|m| m.starts_with("oidc.callback_path:")),
            "{p:?}"
        );
        let p = problems(
            "[oidc]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nclient_auth = \"jwt\"\n",
        );
        assert!(
            p.iter().any(|m| m.starts_with("oidc.client_auth:")),
            "{p:?}"
        );
    }

    #[test]
    fn session_identity_and_headers() {
        let p = problems(
            "[session]\nstore = \"disk\"\nlifetime = 5\n[identity]\nassertion_ttl = \"1h\"\n",
        );
        assert!(p.iter().any(|m| m.starts_with("session.store:")), "{p:?}");
        assert!(
            p.iter().any(|m| m.starts_with("session.lifetime:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("identity.assertion_ttl:")),
            "{p:?}"
        );
        let p = problems(
            "  [site.headers]\n  user = \"Cookie\"\n  email = \"bad header\"\n  nope = \"x\"\n",
        );
        assert!(
            p.iter().any(|m| m.starts_with("site[0].headers.user:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("site[0].headers.email:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("site[0].headers.nope:")),
            "{p:?}"
        );
    }

    #[test]
    fn directory_and_allow_lists() {
        let c = parse(
            &format!("{BASE}allow_groups = [\"Admins\"]\n  [[site.route]]\n  path = \"/x\"\n  allow_users = [\"Bob@Example.com\"]\n[directory]\nprovider = \"jumpcloud\"\napi_key_env = \"K\"\n"),
            Path::new("/etc/jg/g.toml"),
        )
        .unwrap();
        let d = c.directory.unwrap();
        assert_eq!(d.api_url, "https://console.jumpcloud.com");
        assert_eq!(d.cache_file, Path::new("/etc/jg/state/directory.json"));
        assert_eq!(c.sites[0].allow.groups, vec!["Admins"]);
        assert_eq!(
            c.sites[0].routes[0].allow.as_ref().unwrap().users,
            vec!["Bob@Example.com"]
        );
        let p = problems("allow_groups = [\"Admins\"]\n");
        assert!(
            p.iter()
                .any(|m| m.starts_with("site[0].allow_groups:") && m.contains("[directory]")),
            "{p:?}"
        );
        let p = problems("[directory]\nprovider = \"ldap\"\napi_key_env = \"K\"\napi_url = \"http://console.example.com\"\nsync_interval = \"2h\"\n");
        assert!(
            p.iter().any(|m| m.starts_with("directory.provider:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("directory.api_url:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("directory.max_staleness:")),
            "{p:?}"
        );
        let p = problems("[directory]\nprovider = \"jumpcloud\"\n");
        assert!(
            p.iter()
                .any(|m| m.starts_with("directory.api_key_file: missing")),
            "{p:?}"
        );
    }
}
