//! Forward-auth: `/.jumpgate/verify` for nginx `auth_request`, Traefik `ForwardAuth` and
//! Caddy `forward_auth`. The original request's method, host and URI come from the calling
//! proxy's `X-Forwarded-Method/-Host/-Uri` (or `X-Original-URI`), believed only from
//! `trusted_proxies`; they then go through exactly the canonicalization, route match and
//! policy that reverse-proxy mode uses, and the answer is the decision: 200 with the identity
//! headers, 401 with the sign-in location, 403, 503, or the step-up challenge.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::access::{self, Verdict};
use super::auth;
use super::body::ResponseBody;
use super::respond::{self, Rejection};
use super::Shared;
use crate::canonical;
use crate::headers;
use crate::oidc::http::urlencode;

/// Where forward-auth is answered, on every site and on `server.verify_listen`.
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
    /// Query, as sent.
    pub query: Option<String>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    // Two values would be ambiguous; refuse rather than pick one.
    if values.next().is_some() {
        return Some("\u{0}");
    }
    first.to_str().ok()
}

/// Reads the original request from a trusted proxy's headers.
pub fn original(headers: &HeaderMap) -> Result<Original, Rejection> {
    let method = match header_str(headers, &X_FORWARDED_METHOD) {
        Some(m) if canonical::method_echoes(m) => return Err(Rejection::MethodNotAllowed),
        Some(m) if canonical::method_ok(m) => {
            Method::from_bytes(m.as_bytes()).map_err(|_| Rejection::BadRequest)?
        }
        Some(_) => return Err(Rejection::BadRequest),
        // Without the original method, method-scoped rules cannot be applied: refuse.
        None => return Err(Rejection::BadRequest),
    };
    let host = header_str(headers, &headers::X_FORWARDED_HOST)
        .or_else(|| header_str(headers, &header::HOST))
        .and_then(canonical::host)
        .ok_or(Rejection::BadRequest)?
        .into_owned();
    let uri = header_str(headers, &X_FORWARDED_URI)
        .or_else(|| header_str(headers, &X_ORIGINAL_URI))
        .ok_or(Rejection::BadRequest)?;
    if uri.contains('#') {
        return Err(Rejection::BadRequest);
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (uri, None),
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
    if !headers::is_trusted(peer, &shared.trusted_proxies) {
        // The forwarded headers are the whole question; from anyone else they are a lie.
        tracing::warn!(client.ip = %peer, "forward-auth call from a peer not in trusted_proxies refused");
        return respond::rejection(Rejection::Forbidden, json);
    }
    match decide(shared, headers, json).await {
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

async fn decide(
    shared: &Shared,
    headers: &HeaderMap,
    json: bool,
) -> Result<Response<ResponseBody>, Response<ResponseBody>> {
    let reject = |r: Rejection| respond::rejection(r, json);
    let o = original(headers).map_err(reject)?;
    let site = shared
        .routes
        .site(&o.host)
        .ok_or_else(|| reject(Rejection::Misdirected))?;
    let route = site.find(&o.path);
    if super::pipeline::is_reserved(&o.path) {
        return Err(reject(Rejection::NotFound));
    }
    let return_to = auth::return_to(&o.path, o.query.as_deref());
    let now = crate::oidc::now();
    let asked = access::Asked {
        site,
        route,
        method: &o.method,
        path: &o.path,
        headers,
    };
    let permit = match access::decide(shared, asked, now).await.map_err(reject)? {
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

    #[test]
    fn original_request() {
        let o = original(&h(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-host", "App.Test."),
            ("x-forwarded-uri", "/a/../b?x=1"),
        ]))
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
        let o = original(&h(&[
            ("host", "app.test"),
            ("x-forwarded-method", "GET"),
            ("x-original-uri", "/%61pi"),
        ]))
        .unwrap();
        assert_eq!((o.method, o.path.as_str()), (Method::GET, "/api"));
        assert!(original(&h(&[
            ("host", "a"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/a%2Fb")
        ]))
        .is_err());
        assert!(
            original(&h(&[("host", "a"), ("x-forwarded-method", "GET")])).is_err(),
            "no URI"
        );
        assert!(
            original(&h(&[("host", "a"), ("x-forwarded-uri", "/x")])).is_err(),
            "no method"
        );
        assert!(original(&h(&[("host", "a"), ("x-forwarded-method", "get")])).is_err());
        assert!(original(&h(&[
            ("host", "a"),
            ("x-forwarded-uri", "/x"),
            ("x-forwarded-uri", "/y")
        ]))
        .is_err());
        assert!(
            original(&h(&[("x-forwarded-uri", "/x")])).is_err(),
            "no host"
        );
    }
}
