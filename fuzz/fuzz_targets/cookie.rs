//! Session cookies from arbitrary `Cookie` header bytes.
//!
//! - `CookieKey::open` never panics, and a value it accepts is exactly the one `seal` makes
//!   for that id: no second spelling of a session id verifies (padding, trailing bits, case).
//! - A value sealed for one purpose never opens for another (a login binding is no session).
//! - `cookie::values` never panics, yields values without `;`, and junk before or
//!   after a real session cookie in the same header, non-ASCII bytes included, never hides
//!   it.
//! - `headers::strip_gateway_cookies` leaves no gateway cookie and every other cookie, in
//!   order.

#![no_main]

use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderValue, COOKIE};
use jumpgate::session::cookie::{self, CookieKey, SESSION};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static CookieKey {
    static KEY: OnceLock<CookieKey> = OnceLock::new();
    KEY.get_or_init(|| CookieKey::from_bytes(b"jumpgate fuzzing key, 32+ bytes long"))
}

const PURPOSES: [&str; 2] = ["session", "login"];

fn check_open(s: &str) {
    for (i, purpose) in PURPOSES.iter().enumerate() {
        if let Some(id) = key().open(purpose, s) {
            assert_eq!(
                key().seal(purpose, &id),
                s,
                "a second spelling of a sealed id"
            );
            assert_eq!(key().open(PURPOSES[1 - i], s), None, "purposes mixed");
        }
    }
}

fn check_values(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, value);
    for c in cookie::values(&headers, SESSION) {
        let v = c.value_trimmed();
        assert!(!v.contains(';'), "{v:?}");
        assert!(
            data.windows(v.len().max(1)).any(|w| w == v.as_bytes()) || v.is_empty(),
            "{v:?} is not from the header"
        );
        check_open(v);
    }
    let pairs = |h: &HeaderMap| -> Vec<Vec<u8>> {
        h.get_all(COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .map(|p| p.trim_ascii().to_vec())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let ours = |p: &[u8]| {
        let name = p.split(|&b| b == b'=').next().unwrap_or(p).trim_ascii();
        name.len() >= 15 && name[..15].eq_ignore_ascii_case(b"__host-jumpgate")
    };
    let before: Vec<Vec<u8>> = pairs(&headers).into_iter().filter(|p| !ours(p)).collect();
    jumpgate::headers::strip_gateway_cookies(&mut headers);
    let after = pairs(&headers);
    assert!(
        headers.get_all(COOKIE).iter().count() <= 1,
        "more than one Cookie field"
    );
    assert_eq!(after, before, "other cookies lost, reordered or changed");
}

/// The fuzz input around a real session cookie must not hide it, whatever bytes it holds.
fn check_not_hidden(data: &[u8]) {
    let mut id = [0u8; 32];
    for (i, b) in data.iter().take(32).enumerate() {
        id[i] = *b;
    }
    let sealed = key().seal("session", &id);
    assert_eq!(key().open("session", &sealed), Some(id));
    let ours = format!("{SESSION}={sealed}").into_bytes();
    for header in [
        [data, b"; ", &ours].concat(),
        [&ours[..], b"; ", data].concat(),
    ] {
        let Ok(value) = HeaderValue::from_bytes(&header) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, value);
        let found = cookie::values(&headers, SESSION)
            .filter_map(|c| key().open("session", c.value_trimmed()))
            .any(|got| got == id);
        assert!(found, "the real session cookie was hidden by {data:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_open(s);
    }
    check_values(data);
    check_not_hidden(data);
});
