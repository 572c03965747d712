//! Where a sign-in, step-up or logout may send the browser afterwards: a path on the same
//! site, never another host and never the gateway's own endpoints.

/// A return-to target if it is safe: a path on the same site, nothing else. Refuses
/// `//evil`, `/\evil`, `https:evil`, encoded or control-character variants, and our own
/// endpoints; anything refused falls back to `/`.
pub fn safe_return_to(raw: &str) -> Option<String> {
    if raw.len() > 2048 || !raw.starts_with('/') {
        return None;
    }
    let b = raw.as_bytes();
    if b.get(1).is_some_and(|&c| c == b'/' || c == b'\\') {
        return None;
    }
    if b.iter()
        .any(|&c| c < 0x21 || c == 0x7f || c == b'\\' || c >= 0x80)
    {
        return None;
    }
    // Browsers decode before interpreting; an encoded slash or backslash right after the
    // first one would become `//` or `/\`.
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("/%2f")
        || lower.starts_with("/%5c")
        || lower.contains("%00")
        || lower.contains("%0d")
        || lower.contains("%0a")
        || lower.contains("%09")
    {
        return None;
    }
    let path = raw.split(['?', '#']).next().unwrap_or(raw);
    let canonical = crate::canonical::path(path).ok()?;
    // The gateway's namespace in any spelling a server may treat as the same (case,
    // `;parameters`), as the request path treats it.
    let key = crate::policy::routes::match_key(&canonical);
    if key.starts_with("/.jumpgate/") || key == "/.jumpgate" {
        return None;
    }
    Some(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to() {
        for ok in ["/", "/a/b?c=d", "/dashboard#x", "/a%20b"] {
            assert_eq!(safe_return_to(ok).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "/.JUMPGATE/logout",
            "/.Jumpgate/x",
            "/.jumpgate;x/logout",
            "/%2Ejumpgate/logout",
            "/.jumpgate",
            "//evil.example",
            "/\\evil.example",
            "https:evil.example",
            "https://evil.example",
            "evil",
            "",
            "/%2fevil.example",
            "/%5Cevil.example",
            "/\tevil",
            "/a\r\nSet-Cookie:x",
            "/%0d%0aX",
            "/a/%2F/b",
            "/.jumpgate/logout",
            "/x/../.jumpgate/callback",
            " /a",
            "/é",
        ] {
            assert_eq!(safe_return_to(bad), None, "{bad:?}");
        }
    }
}
