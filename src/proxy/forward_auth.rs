//! Forward-auth: `/.jumpgate/verify` for nginx `auth_request`, Traefik `ForwardAuth` and
//! Caddy `forward_auth`. The original request's method, host and URI come from the calling
//! proxy's `X-Forwarded-Method`, `X-Forwarded-Host` and the one configured URI header
//! (`server.verify_uri_header`), asked only from `server.verify_clients`; they then go through exactly the canonicalization, route match and
//! policy that reverse-proxy mode uses, and the answer is the decision: 200 with the identity
//! headers, 401 with the sign-in location, 403, 503, or the step-up challenge.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::access;
use super::auth;
use super::body::ResponseBody;
use super::respond::{self, Rejection};
use super::Shared;
use crate::canonical;
use crate::config::UriHeader;
use crate::headers;
use crate::oidc::http::urlencode;
use crate::policy::Verdict;

/// Where forward-auth is answered: on `server.verify_listen` only. The public listener never
/// answers it, whoever asks: a front proxy that passes `/.jumpgate/*` through from its own
/// (verify client) address would otherwise let every client ask questions through it.
pub const VERIFY_PATH: &str = "/.jumpgate/verify";

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// The original request a forward-auth call describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Method.
    pub method: Method,
    /// Canonical host.
    pub host: String,
    /// Canonical path.
    pub path: String,
    /// Query, as sent (bytes of 0x80 and above percent-encoded).
    pub query: Option<String>,
}

/// The one value of a header the front proxy must set. Missing, repeated or not visible
/// ASCII is a refusal: the question is ambiguous, and looking at another header instead
/// would let the client answer it.
fn one_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, Rejection> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(Rejection::BadRequest)?;
    if values.next().is_some() {
        return Err(Rejection::BadRequest);
    }
    first.to_str().map_err(|_| Rejection::BadRequest)
}

/// The URI header's value as a request target: bytes of 0x80 and above (nginx's
/// `$request_uri` keeps a raw byte from the request line) percent-encoded, which is how an
/// upstream would read them; any other byte outside visible ASCII is a refusal.
fn request_target(value: &HeaderValue) -> Result<std::borrow::Cow<'_, str>, Rejection> {
    let bytes = value.as_bytes();
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        // Visible ASCII is valid UTF-8.
        return value
            .to_str()
            .map(std::borrow::Cow::Borrowed)
            .map_err(|_| Rejection::BadRequest);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for &b in bytes {
        match b {
            0x21..=0x7e => out.push(char::from(b)),
            0x80..=0xff => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            _ => return Err(Rejection::BadRequest),
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Reads the original request from the front proxy's headers: the method from
/// `X-Forwarded-Method`, the host from `X-Forwarded-Host`, the URI from the configured
/// header alone. Nothing falls back to another header.
pub fn original(headers: &HeaderMap, uri_header: UriHeader) -> Result<Original, Rejection> {
    let method = one_value(headers, &X_FORWARDED_METHOD)?;
    if canonical::method_echoes(method) {
        return Err(Rejection::MethodNotAllowed);
    }
    if !canonical::method_ok(method) {
        return Err(Rejection::BadRequest);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Rejection::BadRequest)?;
    let host = canonical::host(one_value(headers, &headers::X_FORWARDED_HOST)?)
        .ok_or(Rejection::BadRequest)?
        .into_owned();
    let name = match uri_header {
        UriHeader::XForwardedUri => &X_FORWARDED_URI,
        UriHeader::XOriginalUri => &X_ORIGINAL_URI,
    };
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Rejection::BadRequest);
    };
    let uri = request_target(value)?;
    if uri.contains('#') {
        return Err(Rejection::BadRequest);
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (&*uri, None),
    };
    let path = canonical::path(path)
        .map_err(|_| Rejection::BadRequest)?
        .into_owned();
    Ok(Original {
        method,
        host,
        path,
        query,
    })
}

/// Answers one forward-auth call from `peer`.
pub async fn verify(
    shared: &Shared,
    peer: IpAddr,
    headers: &HeaderMap,
    json: bool,
) -> Response<ResponseBody> {
    if !headers::is_trusted(peer, &shared.verify_clients) {
        // The forwarded headers are the whole question; from anyone else they are a lie.
        tracing::warn!(client.ip = %peer, "forward-auth call from a peer not in verify_clients refused");
        return respond::rejection(Rejection::Forbidden, json);
    }
    match answer(shared, headers, json).await {
        Ok(r) | Err(r) => r,
    }
}

/// Answers one call on `server.verify_listen`: the same question as a site's
/// `/.jumpgate/verify`, with the same audit context (the front proxy's request id, when it
/// is trusted and sent one).
pub async fn serve(
    shared: &Shared,
    peer: IpAddr,
    headers: &HeaderMap,
    json: bool,
) -> Response<ResponseBody> {
    let client = headers::client_ip(headers, peer, &shared.trusted_proxies);
    let context = crate::audit::RequestContext {
        client_ip: client,
        request_id: super::pipeline::request_id(shared, peer, headers),
    };
    crate::audit::REQUEST
        .scope(context, verify(shared, peer, headers, json))
        .await
}

async fn answer(
    shared: &Shared,
    headers: &HeaderMap,
    json: bool,
) -> Result<Response<ResponseBody>, Response<ResponseBody>> {
    let reject = |r: Rejection| respond::rejection(r, json);
    let o = original(headers, shared.verify_uri_header).map_err(reject)?;
    let site = shared
        .routes
        .site(&o.host)
        .ok_or_else(|| reject(Rejection::Misdirected))?;
    let readings = site.readings(&o.path);
    if super::pipeline::is_reserved(&o.path) {
        return Err(reject(Rejection::NotFound));
    }
    let return_to = auth::return_to(&o.path, o.query.as_deref());
    let now_ms = shared.clock.now_ms();
    let now = now_ms.div_euclid(1000);
    // The front proxy's subrequest carries the client's headers: an Upgrade there is a
    // WebSocket handshake, and step-up decides it as a write.
    let upgrade = headers.contains_key(header::UPGRADE);
    let asked = access::Asked::new(site, readings, &o.method, upgrade, &o.path, headers);
    let permit = match access::verdict(shared, asked, now_ms)
        .await
        .map_err(reject)?
    {
        Verdict::Allow(permit) => permit,
        Verdict::SignIn => {
            let Some(auth) = &shared.auth else {
                return Err(reject(Rejection::SignInRequired));
            };
            let url = format!(
                "{}/.jumpgate/sign-in?rd={}",
                auth.origin(site),
                urlencode(&return_to)
            );
            let mut r = respond::json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "sign_in_required", "status": 401, "sign_in_url": url}),
            );
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Err(r);
        }
        Verdict::StepUp { max_age } => {
            let Some(auth) = &shared.auth else {
                return Err(reject(Rejection::Forbidden));
            };
            // Forward-auth answers are never navigations: the front proxy shows or maps them.
            return auth::step_up_required(
                auth,
                site,
                &Method::POST,
                headers,
                &return_to,
                true,
                max_age,
            )
            .await
            .map_err(reject);
        }
    };
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(auth) = &shared.auth {
        auth::set_identity(
            response.headers_mut(),
            auth,
            &shared.identity_headers[site.upstream],
            &permit,
            now,
        );
        // As in reverse-proxy mode: a session near its ID token's end is refreshed, and a
        // refused refresh ends it, so both modes see the same sessions.
        if let Some(session) = permit.session() {
            auth.maybe_refresh(session);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    const FWD: UriHeader = UriHeader::XForwardedUri;

    #[test]
    fn original_request() {
        let o = original(
            &h(&[
                ("x-forwarded-method", "POST"),
                ("x-forwarded-host", "App.Test."),
                ("x-forwarded-uri", "/a/../b?x=1"),
            ]),
            FWD,
        )
        .unwrap();
        assert_eq!(
            o,
            Original {
                method: Method::POST,
                host: "app.test".into(),
                path: "/b".into(),
                query: Some("x=1".into())
            }
        );
        let o = original(
            &h(&[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-method", "GET"),
                ("x-original-uri", "/%61pi"),
            ]),
            UriHeader::XOriginalUri,
        )
        .unwrap();
        assert_eq!((o.method, o.path.as_str()), (Method::GET, "/api"));
        let refused: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-uri", "/a%2Fb"),
                ],
                "encoded separator",
            ),
            (
                &[("x-forwarded-host", "a"), ("x-forwarded-method", "GET")],
                "no URI",
            ),
            (
                &[("x-forwarded-host", "a"), ("x-forwarded-uri", "/x")],
                "no method",
            ),
            (
                &[
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-method", "get"),
                    ("x-forwarded-uri", "/x"),
                ],
                "lower-case method",
            ),
            (
                &[
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-uri", "/x"),
                    ("x-forwarded-uri", "/y"),
                ],
                "two URIs",
            ),
            (
                &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/x")],
                "no X-Forwarded-Host",
            ),
            (
                &[
                    ("host", "a"),
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-uri", "/x"),
                ],
                "Host is not X-Forwarded-Host",
            ),
            (
                &[
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-host", "b"),
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-uri", "/x"),
                ],
                "two hosts",
            ),
            (
                &[
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-method", "GET"),
                    ("x-original-uri", "/api/v1/health"),
                ],
                "only the header that is not configured",
            ),
        ];
        for (headers, why) in refused {
            assert_eq!(
                original(&h(headers), FWD),
                Err(Rejection::BadRequest),
                "{why}"
            );
        }
    }

    /// A raw byte of 0x80 or above in the configured header is percent-encoded in place; it
    /// is never a reason to read another header.
    #[test]
    fn high_bytes_are_encoded_never_a_reason_to_look_elsewhere() {
        let mut m = h(&[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-method", "GET"),
            ("x-original-uri", "/api/v1/health"),
        ]);
        m.insert(
            X_FORWARDED_URI.clone(),
            HeaderValue::from_bytes(b"/api/v1/settings?x=\xff").unwrap(),
        );
        let o = original(&m, FWD).unwrap();
        assert_eq!(o.path, "/api/v1/settings");
        assert_eq!(o.query.as_deref(), Some("x=%FF"));
        // UTF-8 in the path is the path it spells; a byte that is not UTF-8 is refused.
        m.insert(
            X_FORWARDED_URI.clone(),
            HeaderValue::from_bytes("/caf\u{e9}".as_bytes()).unwrap(),
        );
        assert_eq!(original(&m, FWD).unwrap().path, "/caf%C3%A9");
        m.insert(
            X_FORWARDED_URI.clone(),
            HeaderValue::from_bytes(b"/api/v1/settings\xff").unwrap(),
        );
        assert_eq!(original(&m, FWD), Err(Rejection::BadRequest));
        // A tab or a space is not part of a request target.
        for bad in [&b"/a\tb"[..], b"/a b"] {
            m.insert(
                X_FORWARDED_URI.clone(),
                HeaderValue::from_bytes(bad).unwrap(),
            );
            assert_eq!(original(&m, FWD), Err(Rejection::BadRequest));
        }
        // With x-original-uri configured, a client's X-Forwarded-Uri is never read.
        let m = h(&[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/api/v1/health"),
            ("x-original-uri", "/api/v1/settings"),
        ]);
        assert_eq!(
            original(&m, UriHeader::XOriginalUri).unwrap().path,
            "/api/v1/settings"
        );
        assert_eq!(original(&m, FWD).unwrap().path, "/api/v1/health");
    }
}
