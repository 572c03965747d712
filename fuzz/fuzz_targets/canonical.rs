//! Path, host and method canonicalization: never panics, and what comes out is canonical.
//!
//! For every request target the gateway accepts, the canonical path is the one string that
//! is both routed and forwarded, so it must be a fixed point (canonicalizing it again changes
//! nothing) and must hold nothing an upstream could read as a different path: no empty,
//! `.` or `..` segment (also behind `;` parameters), no encoded `/` or `\`, no raw backslash,
//! control or non-ASCII byte, and escapes only where they are needed, upper-cased.

#![no_main]

use jumpgate::canonical;
use jumpgate::policy::routes::match_key;
use libfuzzer_sys::fuzz_target;

fn check_path(raw: &str) {
    let Ok(out) = canonical::path(raw) else {
        return;
    };
    let p: &str = &out;
    assert!(p.starts_with('/'), "{raw:?} -> {p:?}: not absolute");
    assert!(!p.contains("//"), "{raw:?} -> {p:?}: empty segment");
    for seg in p.split('/').skip(1) {
        let name = seg.split(';').next().unwrap_or(seg);
        assert!(
            name != "." && name != "..",
            "{raw:?} -> {p:?}: dot-segment {seg:?} survived"
        );
    }
    let b = p.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        assert!(
            c > 0x20 && c < 0x7f && c != b'\\' && c != b'#' && c != b'?',
            "{raw:?} -> {p:?}: byte {c:#04x} at {i}"
        );
        if c == b'%' {
            let (h, l) = (b[i + 1], b[i + 2]);
            assert!(
                h.is_ascii_hexdigit() && l.is_ascii_hexdigit(),
                "{raw:?} -> {p:?}: malformed escape"
            );
            assert!(
                !h.is_ascii_lowercase() && !l.is_ascii_lowercase(),
                "{raw:?} -> {p:?}: lower-case escape"
            );
            let v = u8::from_str_radix(&p[i + 1..i + 3], 16).unwrap();
            assert!(
                v != b'/' && v != b'\\',
                "{raw:?} -> {p:?}: encoded separator"
            );
            assert!(v >= 0x20 && v != 0x7f, "{raw:?} -> {p:?}: encoded control");
            assert!(
                !(v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')),
                "{raw:?} -> {p:?}: needlessly encoded {:?}",
                v as char
            );
        }
    }
    // A fixed point: the upstream receives exactly what was routed.
    let again = canonical::path(p);
    assert_eq!(again.as_deref(), Ok(p), "{raw:?} -> {p:?}: not idempotent");
    // The match key is what routes compare: case-folded, parameters gone, still rooted.
    let key = match_key(p);
    assert!(key.starts_with('/'));
    assert!(!key.contains(';') && !key.bytes().any(|c| c.is_ascii_uppercase()));
}

fn check_host(raw: &str) {
    let Some(h) = canonical::host(raw) else {
        return;
    };
    let h: &str = &h;
    assert!(!h.is_empty() && h.len() <= 253, "{raw:?} -> {h:?}");
    assert!(
        !h.bytes().any(|c| c.is_ascii_uppercase()),
        "{raw:?} -> {h:?}: upper case survived"
    );
    if h.starts_with('[') {
        assert!(
            h.ends_with(']') && h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok(),
            "{raw:?} -> {h:?}: not an IPv6 literal"
        );
    } else {
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')),
            "{raw:?} -> {h:?}: bad character"
        );
        assert!(
            h.split('.').all(|label| !label.is_empty()),
            "{raw:?} -> {h:?}: empty label"
        );
    }
    // Canonical again gives the same site key: there is one spelling of each host.
    assert_eq!(
        canonical::host(h).as_deref(),
        Some(h),
        "{raw:?} -> {h:?}: not idempotent"
    );
}

fn check_method(raw: &str) {
    if canonical::method_ok(raw) {
        assert!(!raw.is_empty());
        assert!(
            !raw.bytes()
                .any(|c| c.is_ascii_lowercase() || c <= b' ' || c >= 0x7f),
            "{raw:?} accepted"
        );
        assert!(http::Method::from_bytes(raw.as_bytes()).is_ok(), "{raw:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check_path(s);
    check_host(s);
    check_method(s);
});
