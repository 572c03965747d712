//! The gateway's cookies: names, attributes, and signing. A cookie carries only an opaque
//! 256-bit id and its HMAC; everything else lives server-side.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::prefix::{Host, Prefix};
use cookie::time::Duration;
use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderValue};
use ring::hmac;

/// The session cookie. `__Host-` makes browsers refuse it unless Secure, host-only and
/// `Path=/`, so a sibling subdomain cannot plant or overwrite it.
pub const SESSION: &str = "__Host-jumpgate";
/// The cookie binding a sign-in in progress to the browser that started it.
pub const LOGIN: &str = "__Host-jumpgate-login";

/// Length of a sealed value: 43 characters of id, `.`, 43 of tag.
pub(super) const SEALED_LEN: usize = 87;
/// Longest cookie value the gateway will look at; a longer `__Host-jumpgate*` value is
/// treated as absent. The limit is per value, not per header, so an upstream's own large
/// cookies on the same host never hide the gateway's.
pub const MAX_COOKIE_VALUE: usize = 256;

/// Why the cookie key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{key}: {path}: {source}")]
    Io {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold a usable key.
    #[error("{key}: {path}: expected at least 32 bytes of key material")]
    Short {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
}

/// Reads key material from `path`, creating it (random, mode 0600) when absent. Returns
/// the bytes and whether they were generated now.
pub fn load_or_create(
    path: &Path,
    key: &'static str,
    generate: impl FnOnce() -> Vec<u8>,
) -> Result<(Vec<u8>, bool), KeyError> {
    let io = |source| KeyError::Io {
        key,
        path: path.to_owned(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => Ok((bytes, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io)?;
            }
            let bytes = generate();
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((bytes, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// The key that signs cookie values. Never logged.
pub struct CookieKey(hmac::Key);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey([redacted])")
    }
}

impl CookieKey {
    /// Loads `session.key_file`, generating it on first run.
    pub fn load_or_create(path: &Path) -> Result<(CookieKey, bool), KeyError> {
        let (bytes, created) = load_or_create(path, "session.key_file", || {
            URL_SAFE_NO_PAD
                .encode(crate::secret::random_bytes())
                .into_bytes()
        })?;
        let material: Vec<u8> = String::from_utf8(bytes.clone())
            .ok()
            .map(|s| s.trim().as_bytes().to_vec())
            .unwrap_or(bytes);
        if material.len() < 32 {
            return Err(KeyError::Short {
                key: "session.key_file",
                path: path.to_owned(),
            });
        }
        Ok((CookieKey::from_bytes(&material), created))
    }

    /// A key from raw material (tests, benchmarks).
    pub fn from_bytes(material: &[u8]) -> CookieKey {
        CookieKey(hmac::Key::new(hmac::HMAC_SHA256, material))
    }

    fn tag(&self, purpose: &str, id: &[u8; 32]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        // The purpose keeps a login-binding value from ever verifying as a session id.
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(id);
        ctx.sign()
    }

    /// `base64url(id).base64url(hmac)`.
    pub fn seal(&self, purpose: &str, id: &[u8; 32]) -> String {
        let mut out = String::with_capacity(SEALED_LEN);
        URL_SAFE_NO_PAD.encode_string(id, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(self.tag(purpose, id).as_ref(), &mut out);
        out
    }

    /// The id inside a sealed value, if the value is well-formed and its tag verifies.
    pub fn open(&self, purpose: &str, value: &str) -> Option<[u8; 32]> {
        if value.len() != SEALED_LEN {
            return None;
        }
        let (id_b64, tag_b64) = value.split_once('.')?;
        let mut id = [0u8; 32];
        if URL_SAFE_NO_PAD.decode_slice(id_b64, &mut id).ok()? != 32 {
            return None;
        }
        let mut tag = [0u8; 32];
        if URL_SAFE_NO_PAD.decode_slice(tag_b64, &mut tag).ok()? != 32 {
            return None;
        }
        let expected = self.tag(purpose, &id);
        bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_ref(), &tag[..])).then_some(id)
    }
}

/// Every cookie `name` in the request, in order; oversized values are skipped. Read its
/// value with [`Cookie::value_trimmed`].
///
/// The header is split here, as bytes, and only pairs named `name` are handed to the
/// `cookie` crate: its splitter takes a `&str`, but another cookie in the same header may
/// carry UTF-8 or other non-ASCII bytes (browsers send what a site or a sibling domain set),
/// and that must neither hide the gateway's cookies beside it nor cost a parse per cookie.
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = Cookie<'a>> + 'a {
    pairs(headers, name).filter_map(|p| p.parse())
}

/// Every `name=value` pair named `name` in the request, in order, not yet parsed.
pub fn pairs<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = Pair<'a>> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| crate::headers::cookie_parts(v.as_bytes()))
        .filter_map(move |pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then_some(Pair { pair, eq })
        })
}

/// One `name=value` pair of a `Cookie` header, as the client wrote it.
#[derive(Clone, Copy)]
pub struct Pair<'a> {
    pair: &'a [u8],
    eq: usize,
}

impl<'a> Pair<'a> {
    /// The value's bytes without the whitespace around them, unparsed: what the connection's
    /// remembered session cookie is compared with before any parsing.
    pub fn raw_value(&self) -> &'a [u8] {
        self.pair[self.eq + 1..].trim_ascii()
    }

    /// The pair parsed by the `cookie` crate; `None` when it does not parse or its value is
    /// oversized.
    pub fn parse(&self) -> Option<Cookie<'a>> {
        let cookie = Cookie::parse(std::str::from_utf8(self.pair).ok()?).ok()?;
        (cookie.value_trimmed().len() <= MAX_COOKIE_VALUE).then_some(cookie)
    }
}

/// `Set-Cookie` for `name=value` with the attributes every gateway cookie has: `HttpOnly`,
/// `SameSite=Lax`, `Max-Age`, and what the `__Host-` prefix demands (`Secure`, `Path=/`,
/// no `Domain`), so a sibling subdomain can neither read, plant nor overwrite it.
pub fn set(name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let cookie = Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(Duration::seconds(max_age_secs.min(i64::MAX as u64) as i64))
        .build();
    header_value(<Host as Prefix>::conform(cookie))
}

/// `Set-Cookie` that deletes `name`: empty, `Max-Age=0` and an `Expires` in the past, with
/// the same prefix attributes, or browsers would refuse the deletion itself.
pub fn clear(name: &str) -> HeaderValue {
    let mut cookie = Cookie::build((name, ""))
        .http_only(true)
        .same_site(SameSite::Lax)
        .build();
    cookie.make_removal();
    header_value(<Host as Prefix>::conform(cookie))
}

fn header_value(cookie: Cookie<'_>) -> HeaderValue {
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| {
        HeaderValue::from_static("__Host-jumpgate-invalid=; Path=/; Secure; Max-Age=0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let k = CookieKey::from_bytes(&[7u8; 32]);
        let id = [42u8; 32];
        let sealed = k.seal("session", &id);
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(k.open("session", &sealed), Some(id));
        assert_eq!(k.open("login", &sealed), None, "purposes do not mix");
        let other = CookieKey::from_bytes(&[8u8; 32]);
        assert_eq!(other.open("session", &sealed), None);
        let mut tampered = sealed.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.open("session", std::str::from_utf8(&tampered).unwrap()),
            None
        );
        assert_eq!(k.open("session", ""), None);
        assert_eq!(k.open("session", &"a".repeat(87)), None);
        assert_eq!(k.open("session", &format!("{sealed}x")), None);
    }

    #[test]
    fn cookie_values() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-jumpgate=xyz; __Host-jumpgate-login=l"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-jumpgate=second"),
        );
        let v: Vec<_> = read(&h);
        assert_eq!(v, vec!["xyz", "second"]);
        let big = format!(
            "__Host-jumpgate={}; other={}; __Host-jumpgate=ok",
            "a".repeat(MAX_COOKIE_VALUE + 1),
            "b".repeat(20_000)
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&big).unwrap());
        assert_eq!(read(&h), vec!["ok"]);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes("name=Zo\u{eb}; __Host-jumpgate=ok; x=\u{ff}".as_bytes())
                .unwrap(),
        );
        assert_eq!(read(&h), vec!["ok"]);
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"__Host-jumpgate=o\xffk; __Host-jumpgate=two").unwrap(),
        );
        assert_eq!(read(&h), vec!["two"]);
    }

    fn read(h: &HeaderMap) -> Vec<String> {
        values(h, SESSION)
            .map(|c| c.value_trimmed().to_owned())
            .collect()
    }

    /// Every attribute of a set cookie and of its deletion, read back by a parser.
    #[test]
    fn attributes() {
        for (v, value, max_age) in [(set(SESSION, "v", 60), "v", 60), (clear(SESSION), "", 0)] {
            let c = Cookie::parse(v.to_str().unwrap().to_owned()).unwrap();
            assert_eq!((c.name(), c.value()), (SESSION, value));
            assert_eq!(c.secure(), Some(true));
            assert_eq!(c.http_only(), Some(true));
            assert_eq!(c.same_site(), Some(SameSite::Lax));
            assert_eq!(c.path(), Some("/"));
            assert_eq!(c.domain(), None);
            assert_eq!(c.max_age(), Some(Duration::seconds(max_age)));
        }
        let removal = Cookie::parse(clear(LOGIN).to_str().unwrap().to_owned()).unwrap();
        assert!(removal.expires_datetime().unwrap() < cookie::time::OffsetDateTime::now_utc());
        assert_eq!(
            Cookie::parse(set(SESSION, "v", 60).to_str().unwrap().to_owned())
                .unwrap()
                .max_age(),
            Some(Duration::seconds(60))
        );
    }

    #[test]
    fn quoted_values_are_read_without_their_quotes() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-jumpgate=\"q\"; x=1"),
        );
        assert_eq!(read(&h), vec!["q"]);
    }
}
