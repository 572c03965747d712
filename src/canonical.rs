//! The one canonical form of a request's method, host and path, computed once per request.
//!
//! Routing decides on the canonical path and the upstream receives exactly that path, so what
//! the gateway authorized and what the upstream serves can never differ. Anything that cannot be
//! made canonical without guessing (an encoded `/` or `\`, NUL, control bytes, invalid UTF-8,
//! a `..` hiding behind a `;` parameter) is refused rather than passed on.

use std::borrow::Cow;

/// Why a request target or method was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (asterisk-form, empty).
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// `%2F` or `%5C`: a separator the upstream could decode differently than we route.
    #[error("encoded '/' or '\\' in the path")]
    EncodedSeparator,
    /// A raw backslash, which some servers treat as a separator.
    #[error("'\\' in the path")]
    Backslash,
    /// NUL, another control character or DEL, raw or encoded.
    #[error("control character in the path")]
    Control,
    /// The decoded path is not valid UTF-8 (includes overlong encodings).
    #[error("the path is not valid UTF-8")]
    InvalidUtf8,
    /// A byte that may not appear unencoded in a path (space, `#`, `"`, `<`, non-ASCII, …).
    #[error("invalid character in the path")]
    InvalidChar,
    /// A dot-segment carrying `;` parameters (`..;x`), which some servers collapse.
    #[error("dot-segment with parameters")]
    DotSegmentParams,
    /// A segment of parameters only (`/;x/`), which parameter-stripping servers erase.
    #[error("segment of parameters only")]
    ParamsOnlySegment,
}

/// Whether `b` is an RFC 3986 unreserved character, which percent-decoding may reveal safely.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters allowed raw in a path segment (RFC 3986 pchar minus `%`, which is handled apart).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Returns the canonical form of an origin-form path (no query):
/// percent-encoded unreserved characters decoded, other escapes upper-cased, `//` collapsed,
/// `.` and `..` segments removed (never above the root). A trailing `/` is kept.
///
/// Borrowed when the input is already canonical, which is the common case.
pub fn path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut needs_rewrite = false;
    // First pass: validate every byte and escape, and learn whether anything changes.
    let mut i = 0;
    let mut decoded_utf8_check: Vec<u8> = Vec::new();
    let mut any_high = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    _ => {}
                }
                if v >= 0x80 {
                    any_high = true;
                }
                if is_unreserved(v)
                    || bytes[i + 1].is_ascii_lowercase()
                    || bytes[i + 2].is_ascii_lowercase()
                {
                    needs_rewrite = true;
                }
                i += 3;
            }
            b'/' => {
                if bytes.get(i + 1) == Some(&b'/') {
                    needs_rewrite = true;
                }
                i += 1;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' if bytes[i - 1] == b'/' => return Err(PathError::ParamsOnlySegment),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            _ if is_pchar(b) => {
                if b == b'.' {
                    // A '.' that starts a segment may begin a dot-segment.
                    if bytes[i - 1] == b'/' {
                        needs_rewrite = true;
                    }
                }
                i += 1;
            }
            _ => return Err(PathError::InvalidChar),
        }
    }
    if any_high {
        // Percent-decoded, the path must be UTF-8: rejects overlong forms such as %C0%AE.
        decoded_utf8_check.reserve(bytes.len());
        let mut j = 0;
        while j < bytes.len() {
            if bytes[j] == b'%' {
                let v = hex(bytes[j + 1]).unwrap_or(0) << 4 | hex(bytes[j + 2]).unwrap_or(0);
                decoded_utf8_check.push(v);
                j += 3;
            } else {
                decoded_utf8_check.push(bytes[j]);
                j += 1;
            }
        }
        if std::str::from_utf8(&decoded_utf8_check).is_err() {
            return Err(PathError::InvalidUtf8);
        }
    }
    if !needs_rewrite {
        return Ok(Cow::Borrowed(raw));
    }

    // Second pass: normalise escapes, then rebuild segment by segment.
    let mut normal = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let v = hex(bytes[i + 1]).unwrap_or(0) << 4 | hex(bytes[i + 2]).unwrap_or(0);
            if is_unreserved(v) {
                normal.push(v);
            } else {
                normal.extend_from_slice(&[
                    b'%',
                    HEX_UPPER[(v >> 4) as usize],
                    HEX_UPPER[(v & 0xf) as usize],
                ]);
            }
            i += 3;
        } else {
            normal.push(bytes[i]);
            i += 1;
        }
    }
    let mut out: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = normal[1..].split(|&b| b == b'/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (n, seg) in segments.iter().enumerate() {
        let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
        let dot = name == b"." || name == b"..";
        if dot && name.len() != seg.len() {
            return Err(PathError::DotSegmentParams);
        }
        match *seg {
            b"" => {
                if n == last {
                    trailing_slash = true;
                }
            }
            b"." => {
                if n == last {
                    trailing_slash = true;
                }
            }
            b".." => {
                out.pop();
                if n == last {
                    trailing_slash = true;
                }
            }
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(normal.len());
    for seg in &out {
        s.push('/');
        // Every byte here is ASCII: raw bytes were validated as pchar, decoded ones unreserved.
        s.push_str(std::str::from_utf8(seg).map_err(|_| PathError::InvalidUtf8)?);
    }
    if out.is_empty() || trailing_slash {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

/// Whether `method` echoes the request back (`TRACE`, and IIS's `TRACK`): the answer would
/// carry the client's cookies and every header the gateway added to whoever reads it, so
/// these are never forwarded, on any route.
pub fn method_echoes(method: &str) -> bool {
    matches!(method, "TRACE" | "TRACK")
}

/// Whether `method` is an upper-case token: the only spelling of a method the gateway forwards.
pub fn method_ok(method: &str) -> bool {
    !method.is_empty()
        && method.bytes().all(|b| {
            b.is_ascii_uppercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Lower-cases a host name and drops a port and one trailing dot. Returns `None` for a value
/// that is not a plausible host: empty, bad characters, empty labels, more than one `:`
/// outside brackets, a port that is not 1 to 5 digits, or a bracketed literal that is not
/// an IPv6 address.
///
/// The result is a fixed point (`host(host(x)) == host(x)`): it is the key a site is
/// selected by, so there must be exactly one spelling of it.
pub fn host(raw: &str) -> Option<Cow<'_, str>> {
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        rest[..end].parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (&raw[..end + 2], port)
    } else {
        return plain_host(raw);
    };
    if port.is_some_and(|p| !port_ok(p.as_bytes())) {
        return None;
    }
    Some(lower(name))
}

/// A port as a `Host` may carry it: 1 to 5 digits.
fn port_ok(port: &[u8]) -> bool {
    !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// [`host`] for a name that is not a bracketed literal, in one pass over its bytes: every
/// request's host goes through here, and splitting it on `:` and `.` and then checking its
/// characters took some 500 instructions.
fn plain_host(raw: &str) -> Option<Cow<'_, str>> {
    let bytes = raw.as_bytes();
    let mut end = bytes.len();
    let mut label = 0;
    let mut upper = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b':' => {
                end = i;
                break;
            }
            // An empty label (a leading dot, two dots) is never a host.
            b'.' if label == 0 => return None,
            b'.' => label = 0,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => {
                upper = true;
                label += 1;
            }
            _ => return None,
        }
        if label > 63 {
            return None;
        }
    }
    if end < bytes.len() && !port_ok(&bytes[end + 1..]) {
        return None;
    }
    // One trailing dot is dropped: the last label is then the one before it, which the
    // loop has already seen to be non-empty.
    let name = &raw[..end];
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    Some(match upper {
        true => Cow::Owned(name.to_ascii_lowercase()),
        false => Cow::Borrowed(name),
    })
}

fn lower(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition [`plain_host`] replaced, kept as the oracle it must agree with.
    fn split_host(raw: &str) -> Option<Cow<'_, str>> {
        let (name, port) = match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        if let Some(port) = port {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty()
            || name.len() > 253
            || name
                .split('.')
                .any(|label| label.is_empty() || label.len() > 63)
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return None;
        }
        Some(lower(name))
    }

    #[test]
    fn plain_host_agrees_with_the_split_definition() {
        // Every string of up to five characters over an alphabet with each kind of byte the
        // definition treats differently, then lengths at and past each limit.
        let alphabet = ['a', 'Z', '0', '.', ':', '-', '_', ' ', '\u{e9}'];
        let mut cases = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            cases.extend(next.iter().cloned());
            last = next;
        }
        for label in [62, 63, 64] {
            let l = "a".repeat(label);
            cases.push(l.clone());
            cases.push(format!("{l}.example"));
            cases.push(format!("x.{l}.:443"));
        }
        for len in [252, 253, 254] {
            let name: String = (0..len)
                .map(|i| if i % 50 == 49 { '.' } else { 'B' })
                .collect();
            cases.push(name.clone());
            cases.push(format!("{name}."));
            cases.push(format!("{name}:8443"));
        }
        for port in ["", "1", "65535", "123456", "8a", "80:80"] {
            cases.push(format!("app.test:{port}"));
        }
        for raw in &cases {
            assert_eq!(plain_host(raw), split_host(raw), "{raw:?}");
        }
    }

    #[test]
    fn canonical_paths() {
        let ok = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../b", "/b"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2e/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/%61pi", "/api"),
            ("/a%3bb", "/a%3Bb"),
            ("/a%20b", "/a%20b"),
            ("/a;b/c", "/a;b/c"),
            ("/a/%252F", "/a/%252F"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/API/V1", "/API/V1"),
            ("/a/.", "/a/"),
        ];
        for (raw, want) in ok {
            assert_eq!(path(raw).as_deref(), Ok(want), "{raw}");
        }
        let bad = [
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::Control),
            ("/a%0d%0a", PathError::Control),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/%C0%AE%C0%AE/x", PathError::InvalidUtf8),
            ("/a/..;/b", PathError::DotSegmentParams),
            ("/a/.;x/b", PathError::DotSegmentParams),
            ("/a b", PathError::InvalidChar),
            ("/a#b", PathError::InvalidChar),
            ("/é", PathError::InvalidChar),
        ];
        for (raw, want) in bad {
            assert_eq!(path(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn borrowed_when_canonical() {
        assert!(matches!(path("/api/v1/health"), Ok(Cow::Borrowed(_))));
        assert!(matches!(path("/a/.well-known/x"), Ok(Cow::Owned(_))));
        assert_eq!(path("/a/.well-known/x").as_deref(), Ok("/a/.well-known/x"));
    }

    #[test]
    fn hosts() {
        assert_eq!(host("Example.NET.").as_deref(), Some("example.net"));
        assert_eq!(host("example.net:8443").as_deref(), Some("example.net"));
        assert_eq!(host("[::1]:8443").as_deref(), Some("[::1]"));
        assert_eq!(host("ex ample"), None);
        assert_eq!(host(""), None);
        assert_eq!(host("a:b"), None);
        assert_eq!(
            host("[::FFFF:1.2.3.4]").as_deref(),
            Some("[::ffff:1.2.3.4]")
        );
        for bad in [
            "a:b:443",
            "app.test..",
            ".app.test",
            "app..test",
            "app.test:",
            "app.test:123456",
            "[::1]x",
            "[::1]:",
            "[not-v6]",
            "[::1",
            "app.test:x:1",
            "a:1:2",
            ".",
        ] {
            assert_eq!(host(bad), None, "{bad}");
        }
        for raw in ["APP.test.:8443", "[::1]:1", "x_y.Z", "localhost"] {
            let once = host(raw).unwrap();
            assert_eq!(host(&once).as_deref(), Some(&*once), "{raw}");
        }
    }

    #[test]
    fn methods() {
        assert!(method_ok("GET"));
        assert!(method_ok("M-SEARCH"));
        assert!(!method_ok("get"));
        assert!(!method_ok("Get"));
        assert!(!method_ok(""));
        assert!(method_echoes("TRACE") && method_echoes("TRACK"));
        assert!(!method_echoes("GET") && !method_echoes("trace"));
    }
}
