//! Fixtures shared by the benchmarks: a generated configuration (one site, 500 routes), signed-in
//! sessions with realistic token sizes, and a generated directory. Everything goes through the
//! jumpgate crate's public API, the way the gateway builds the same objects at start-up.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use jumpgate::config::Config;
use jumpgate::directory::snapshot::{RawDirectory, RawGroup, RawUser};
use jumpgate::oidc::verify::IdClaims;
use jumpgate::oidc::VerifiedLogin;
use jumpgate::secret::Secret;

/// The benchmark site.
pub(crate) const HOST: &str = "app.test";

/// Number of routes in the generated site: 50 services, each with its own prefix and nine
/// resource routes under `/svcNN/api/v1/`.
pub(crate) const ROUTES: usize = 500;

/// Resource names under each service.
const RESOURCES: [&str; 9] = [
    "items", "orders", "users", "reports", "settings", "files", "search", "events", "health",
];

/// Group names the generated directory uses: `Group 0000` … `Group 4999`.
pub(crate) fn group_name(i: usize) -> String {
    format!("Group {i:04}")
}

/// A JumpCloud-style user id (24 hex digits) for user `i`.
pub(crate) fn user_id(i: usize) -> String {
    format!("5f0c1a2b{:016x}", i as u64 * 2_654_435_761 % (1 << 60))
}

/// The configuration text: `[oidc]`, `[directory]` (so `allow_groups` is valid), access log off,
/// and one protected site with [`ROUTES`] routes. Parsing it touches no files.
pub(crate) fn config_text() -> String {
    let mut s = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\n\
         [oidc]\nissuer = \"http://127.0.0.1:9/\"\nclient_id = \"bench\"\n\
         client_secret_env = \"JUMPGATE_BENCH_SECRET\"\ngroups_claim = \"memberOf\"\n\n\
         [directory]\nprovider = \"jumpcloud\"\napi_url = \"http://127.0.0.1:9\"\n\
         api_key_env = \"JUMPGATE_BENCH_KEY\"\n\n\
         [log]\naccess = false\n\n",
    );
    let _ = write!(
        s,
        "[[site]]\nhost = \"{HOST}\"\nupstream = \"http://127.0.0.1:9\"\naccess = \"protected\"\n\
         allow_groups = [\"{}\", \"{}\"]\n",
        group_name(1),
        group_name(2)
    );
    let mut n = 0;
    'outer: for svc in 0..50 {
        let _ = write!(s, "  [[site.route]]\n  path = \"/svc{svc:02}\"\n");
        n += 1;
        for (r, res) in RESOURCES.iter().enumerate() {
            if n == ROUTES {
                break 'outer;
            }
            let _ = write!(
                s,
                "  [[site.route]]\n  path = \"/svc{svc:02}/api/v1/{res}\"\n"
            );
            match r % 3 {
                0 => s.push_str("  access = \"public\"\n"),
                1 => {
                    let _ = writeln!(s, "  allow_groups = [\"{}\"]", group_name(svc));
                }
                _ => {}
            }
            n += 1;
        }
    }
    s
}

/// The parsed benchmark configuration.
pub(crate) fn config() -> Config {
    jumpgate::config::parse(&config_text(), Path::new("bench.toml"))
        .unwrap_or_else(|e| panic!("benchmark configuration refused: {e}"))
}

/// A verified login as the callback produces it. Token sizes follow JumpCloud: an RS256 ID
/// token of about 1.1 KB, an opaque refresh token of 90 characters, and a provider session id
/// (`sid`, a UUID) in the token.
pub(crate) fn login(i: usize) -> VerifiedLogin {
    let claims = IdClaims {
        sub: user_id(i),
        exp: i64::MAX / 2,
        iat: 0,
        auth_time: Some(1_700_000_000),
        email: Some(format!("user{i:06}@example.com")),
        email_verified: Some(true),
        email_matches: false,
        username: Some(format!("user{i:06}")),
        name: Some(format!("User {i:06}")),
        groups: vec![group_name(i % 5000), group_name(1), group_name(2)],
        sid: Some(format!("{:036}", i)),
        amr: vec![],
        acr: None,
    };
    VerifiedLogin {
        claims,
        refresh_token: Some(Secret::new(format!("ory_rt_{}", "r".repeat(83)))),
    }
}

/// The value of the session cookie inside a `Set-Cookie` line.
pub(crate) fn cookie_value(set_cookie: &http::HeaderValue) -> String {
    let s = set_cookie.to_str().expect("ASCII Set-Cookie");
    let pair = s.split(';').next().unwrap_or("");
    pair.split_once('=')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

/// A generated directory: `users` users, `groups` groups, every user in `per_user` groups
/// spread evenly (so groups average `users * per_user / groups` members). Even users are in
/// group 1 or 2 (the benchmark site's allow list); some odd users are suspended; every fifth
/// has no username.
pub(crate) fn raw_directory(users: usize, groups: usize, per_user: usize) -> RawDirectory {
    let mut members: Vec<Vec<String>> = vec![Vec::new(); groups];
    let mut raw_users = Vec::with_capacity(users);
    for i in 0..users {
        let id = user_id(i);
        // Groups 1 and 2 are the site's allow list: make sure user i is in one of them when
        // i is even, so lookups exercise both the allowed and the refused path.
        for k in 0..per_user {
            let g = if k == 0 && i % 2 == 0 {
                1 + (i / 2) % 2
            } else {
                (i * 7 + k * 1013) % groups
            };
            members[g].push(id.clone());
        }
        let suspended = i % 2 == 1 && i % 97 == 3;
        raw_users.push(RawUser {
            id,
            email: Some(format!("user{i:06}@example.com")),
            username: (i % 5 != 0).then(|| format!("user{i:06}")),
            state: if suspended { "SUSPENDED" } else { "ACTIVATED" }.to_owned(),
            activated: true,
            suspended,
            account_locked: false,
            password_expired: false,
            problem: None,
        });
    }
    RawDirectory {
        taken_at: jumpgate::clock::now(),
        users: raw_users,
        groups: members
            .into_iter()
            .enumerate()
            .map(|(i, members)| RawGroup {
                id: format!("6a0c1a2b{i:016x}"),
                name: group_name(i),
                members,
            })
            .collect(),
        app_groups: None,
    }
}

/// A browser's request headers for a protected page: 14 fields, the session cookie among
/// others, as a current Chromium sends them.
pub(crate) fn browser_headers(session_cookie: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let pairs: [(&str, String); 14] = [
        ("host", HOST.to_owned()),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36".to_owned()),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8".to_owned()),
        ("accept-language", "en-GB,en;q=0.9".to_owned()),
        ("accept-encoding", "gzip, deflate, br, zstd".to_owned()),
        ("referer", format!("https://{HOST}/svc17/api/v1/items")),
        ("cookie", format!("_ga=GA1.1.123456789.1700000000; theme=dark; __Host-jumpgate={session_cookie}")),
        ("sec-ch-ua", "\"Chromium\";v=\"126\", \"Not.A/Brand\";v=\"24\"".to_owned()),
        ("sec-ch-ua-mobile", "?0".to_owned()),
        ("sec-ch-ua-platform", "\"Linux\"".to_owned()),
        ("sec-fetch-dest", "document".to_owned()),
        ("sec-fetch-mode", "navigate".to_owned()),
        ("sec-fetch-site", "same-origin".to_owned()),
        ("upgrade-insecure-requests", "1".to_owned()),
    ];
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_str(&v).expect("valid header value"),
        );
    }
    h
}

/// Resident set size of this process, in bytes (`/proc/self/statm`).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time this thread has used, in nanoseconds (`/proc/thread-self/schedstat`).
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The site name as sessions store it.
pub(crate) fn site() -> Arc<str> {
    Arc::from(HOST)
}
