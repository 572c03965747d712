//! The return-to target after sign-in (`rd`, or the path a protected navigation came from).
//!
//! Whatever `safe_return_to` accepts is a path on the same site, in every reading a browser
//! may give it: it starts with one `/`, not `//` or `/\`, holds no byte a browser strips or
//! reinterprets (controls, space, tab, backslash, non-ASCII), does not percent-decode to
//! `//` or `/\` either, and is never one of the gateway's own endpoints. The value also
//! survives the `rd` query parameter unchanged (`urlencode` then `parse_query`).

#![no_main]

use jumpgate::oidc::http::{parse_query, urlencode};
use jumpgate::policy::return_to::safe_return_to;
use libfuzzer_sys::fuzz_target;

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    // The rd parameter carries any string through unchanged.
    let query = format!("a=1&rd={}&b=2", urlencode(raw));
    let parsed = parse_query(&query);
    assert_eq!(
        parsed
            .iter()
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.as_str()),
        Some(raw)
    );
    let Some(safe) = safe_return_to(raw) else {
        return;
    };
    assert_eq!(
        safe, raw,
        "a return-to target is kept or refused, never rewritten"
    );
    let b = safe.as_bytes();
    assert_eq!(b.first(), Some(&b'/'), "{safe:?}: not a path");
    assert!(
        !matches!(b.get(1), Some(b'/' | b'\\')),
        "{safe:?}: another host"
    );
    assert!(
        b.iter().all(|&c| c > 0x20 && c < 0x7f && c != b'\\'),
        "{safe:?}: a byte browsers strip or reinterpret"
    );
    let decoded = percent_decode(&safe);
    assert!(
        !matches!(decoded.get(1), Some(b'/' | b'\\')),
        "{safe:?}: decodes to another host"
    );
    let path = safe.split(['?', '#']).next().unwrap_or("");
    let canonical = jumpgate::canonical::path(path).expect("a return-to path is canonicalizable");
    assert!(
        !canonical.starts_with("/.jumpgate/"),
        "{safe:?}: returns to a gateway endpoint"
    );
});
