//! OpenID Connect Back-Channel Logout 1.0 at `POST /.jumpgate/backchannel-logout`: the
//! provider tells the gateway, server to server, that a provider session (or every session of
//! a user) has ended, and the gateway ends the sessions signed in through it, on every
//! instance.
//!
//! The request is a form with one `logout_token`, a JWT signed by the provider like an ID
//! token. It proves itself: no cookie, origin or client authentication is involved, so
//! nothing here reads or sets cookies. Answers follow the specification: 200 when the logout
//! is done (also when no session matched), 400 `{"error":"invalid_request"}` for a request or
//! token that is not acceptable (including a replay), 504 when this instance ended what it
//! could but the shared store could not be reached, so other instances may not know yet.
//! Every answer is `Cache-Control: no-store`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::auth::Auth;
use super::body::ResponseBody;
use super::respond;
use super::Shared;
use crate::oidc::verify::VerifyError;
use crate::oidc::Oidc;
use crate::session::Sessions;

/// Where the provider posts logout tokens (register it as the application's back-channel
/// logout URI, on any site of the gateway).
pub const PATH: &str = "/.jumpgate/backchannel-logout";

/// The largest request body read. A logout token is a few hundred bytes to a few KiB.
const MAX_BODY: usize = 64 * 1024;

/// How long the provider may take to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The sign-in state that answers a request for `path` with `method`, when this endpoint
/// answers it: a `POST` to [`PATH`] with sign-in configured. The request path calls
/// [`handle`] with the request body then; other methods get 405 from the endpoints.
pub fn route<'a>(shared: &'a Shared, path: &str, method: &Method) -> Option<&'a Auth> {
    if path == PATH && method == Method::POST {
        shared.auth.as_deref()
    } else {
        None
    }
}

/// Answers a back-channel logout request: reads the form body (at most 64 KiB), verifies
/// its `logout_token` with the provider's keys, refuses a replayed token on every instance,
/// then ends the sessions of the provider session `sid` (of its `sub` only, when both are
/// given) or, without `sid`, every session of `sub`, on every instance.
pub async fn handle(auth: &Auth, body: Incoming, headers: &HeaderMap) -> Response<ResponseBody> {
    let (response, ended) = respond_to(&auth.oidc, &auth.sessions, body, headers).await;
    if let Some(ended) = ended {
        let reason = if ended.provider_session {
            "provider_session"
        } else {
            "user"
        };
        auth.audit(
            "backchannel_logout",
            "-",
            ended.sub.as_deref().map(|s| (s, None)),
            if response.status().is_success() {
                "ok"
            } else {
                "partial"
            },
            Some(reason),
        );
    }
    response
}

/// What a verified logout token ended.
#[derive(Debug)]
struct Ended {
    /// Its `sub`, when it named one.
    sub: Option<String>,
    /// Whether it named a provider session (`sid`) rather than every session of the user.
    provider_session: bool,
}

/// The answer to any other method on [`PATH`]: 405, `POST` only.
pub fn method_not_allowed() -> Response<ResponseBody> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn respond_to<B>(
    oidc: &Oidc,
    sessions: &Sessions,
    body: B,
    headers: &HeaderMap,
) -> (Response<ResponseBody>, Option<Ended>)
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let token = match read_token(body, headers).await {
        Ok(token) => token,
        Err(why) => {
            tracing::info!(reason = why, "back-channel logout request refused");
            return (error(StatusCode::BAD_REQUEST, "invalid_request"), None);
        }
    };
    logout(oidc, sessions, &token).await
}

/// The `logout_token` of an `application/x-www-form-urlencoded` body, or why not.
async fn read_token<B>(body: B, headers: &HeaderMap) -> Result<String, &'static str>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err("not a form");
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err("body too large");
    }
    let bytes: Bytes =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(_)) => return Err("body too large or broken"),
            Err(_) => return Err("body not sent in time"),
        };
    let text = std::str::from_utf8(&bytes).map_err(|_| "body not UTF-8")?;
    let mut tokens = crate::oidc::http::parse_query(text)
        .into_iter()
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v);
    match (tokens.next(), tokens.next()) {
        (Some(token), None) if !token.is_empty() => Ok(token),
        (Some(_), Some(_)) => Err("logout_token repeated"),
        _ => Err("logout_token missing"),
    }
}

async fn logout(
    oidc: &Oidc,
    sessions: &Sessions,
    token: &str,
) -> (Response<ResponseBody>, Option<Ended>) {
    let claims = match oidc.verify_logout_token(token).await {
        Ok(claims) => claims,
        Err(VerifyError::NotReady) => {
            tracing::warn!(
                "back-channel logout before the identity provider was discovered; refused"
            );
            return (
                error(StatusCode::BAD_REQUEST, "temporarily_unavailable"),
                None,
            );
        }
        Err(e) => {
            tracing::info!(error = %e, "back-channel logout token refused");
            return (error(StatusCode::BAD_REQUEST, "invalid_request"), None);
        }
    };
    let sub = claims.sub.as_deref().unwrap_or("-");
    // This instance has not seen the jti; ask every other one.
    let skew = oidc.config().clock_skew.as_secs() as i64;
    let claimed = sessions
        .claim_logout_jti(&claims.jti, claims.replay_window(crate::clock::now(), skew))
        .await;
    if let Ok(false) = claimed {
        tracing::info!(user.sub = %sub, "back-channel logout token replayed; refused");
        return (error(StatusCode::BAD_REQUEST, "invalid_request"), None);
    }
    // Even when the shared store is down, what this instance holds ends now.
    let ended = match (&claims.sid, &claims.sub) {
        (Some(sid), sub) => sessions.end_provider_session(sid, sub.as_deref()).await,
        (None, Some(sub)) => sessions.end_user(sub).await,
        (None, None) => Ok(0),
    };
    let what = Ended {
        sub: claims.sub.clone(),
        provider_session: claims.sid.is_some(),
    };
    let response = match (claimed, ended) {
        (Ok(_), Ok(n)) => {
            tracing::info!(
                user.sub = %sub,
                provider_session = claims.sid.is_some(),
                sessions = n,
                "signed out by the identity provider (back-channel logout)"
            );
            let mut response = Response::new(ResponseBody::empty());
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        (claimed, ended) => {
            let e = match (&claimed, &ended) {
                (Err(e), _) | (_, Err(e)) => e.to_string(),
                _ => String::new(),
            };
            tracing::warn!(
                user.sub = %sub,
                error = %e,
                "back-channel logout ended this instance's sessions only: session store unavailable"
            );
            // The provider may deliver the token again once the store is back.
            oidc.forget_logout_jti(&claims.jti);
            if let Ok(true) = claimed {
                sessions.release_logout_jti(&claims.jti).await;
            }
            error(StatusCode::GATEWAY_TIMEOUT, "temporarily_unavailable")
        }
    };
    (response, Some(what))
}

fn error(status: StatusCode, code: &str) -> Response<ResponseBody> {
    respond::json(status, &serde_json::json!({ "error": code }))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::path::Path;
    use std::sync::Arc;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use http_body_util::Full;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::{json, Value};
    use tokio::net::TcpListener;

    use super::*;
    use crate::oidc::logout_token::BACKCHANNEL_LOGOUT_EVENT;
    use crate::oidc::verify::IdClaims;
    use crate::oidc::VerifiedLogin;
    use crate::secret::Secret;
    use crate::session::cookie::CookieKey;

    const CLIENT_ID: &str = "gateway";

    fn p256() -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
        .as_ref()
        .to_vec()
    }

    /// A provider on loopback: discovery and one ES256 key, `kid` "k1".
    struct Idp {
        issuer: String,
        key: Vec<u8>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Idp {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    impl Idp {
        async fn start() -> Idp {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let key = p256();
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key,
                &ring::rand::SystemRandom::new(),
            )
            .unwrap();
            let point = pair.public_key().as_ref();
            let jwks = json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }]})
            .to_string();
            let discovery = json!({
                "issuer": format!("{base}/"),
                "authorization_endpoint": format!("{base}/auth"),
                "token_endpoint": format!("{base}/token"),
                "jwks_uri": format!("{base}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "HS256"],
            })
            .to_string();
            let server = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (jwks, discovery) = (jwks.clone(), discovery.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let body = match req.uri().path() {
                                "/.well-known/openid-configuration" => discovery.clone(),
                                _ => jwks.clone(),
                            };
                            async move {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Idp {
                issuer: format!("{base}/"),
                key,
                server,
            }
        }

        fn claims(&self, sub: &str, sid: &str) -> Value {
            json!({
                "iss": self.issuer, "aud": [CLIENT_ID], "sub": sub, "sid": sid,
                "iat": crate::clock::now(), "exp": crate::clock::now() + 120,
                "jti": crate::secret::random_token(),
                "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
            })
        }

        fn sign_with(&self, key: &[u8], claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            header.typ = Some("logout+jwt".into());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(key)).unwrap()
        }

        fn sign(&self, claims: &Value) -> String {
            self.sign_with(&self.key, claims)
        }
    }

    async fn gateway(idp: &Idp) -> (Oidc, Sessions) {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\n\
             [[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n\n\
             [oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"UNUSED\"\n",
            idp.issuer
        );
        let config = crate::config::parse(&text, Path::new("gateway.toml")).unwrap();
        let oidc = Oidc::new(config.oidc.clone().unwrap(), Secret::new("s".into())).unwrap();
        oidc.discover().await.unwrap();
        let sessions = Sessions::new(&config.session, CookieKey::from_bytes(&[3; 32]));
        (oidc, sessions)
    }

    /// Signs `sub` in through provider session `sid`; returns the request headers that
    /// carry the session cookie.
    async fn sign_in(sessions: &Sessions, sub: &str, sid: Option<&str>) -> HeaderMap {
        let claims = IdClaims {
            sub: sub.into(),
            exp: crate::clock::now() + 3600,
            iat: crate::clock::now(),
            auth_time: None,
            email: None,
            email_verified: None,
            email_matches: false,
            username: None,
            name: None,
            groups: vec![],
            sid: sid.map(str::to_owned),
            amr: vec![],
            acr: None,
        };
        let login = VerifiedLogin {
            claims,
            refresh_token: None,
        };
        let (_, set) = sessions.create(Arc::from("a.test"), login).await.unwrap();
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&pair).unwrap());
        headers
    }

    async fn live(sessions: &Sessions, cookie: &HeaderMap) -> bool {
        sessions.from_headers(cookie, "a.test").await.is_some()
    }

    fn form_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h
    }

    async fn post(oidc: &Oidc, sessions: &Sessions, token: &str) -> Response<ResponseBody> {
        let body = format!("logout_token={token}");
        respond_to(
            oidc,
            sessions,
            Full::new(Bytes::from(body)),
            &form_headers(),
        )
        .await
        .0
    }

    async fn body_json(r: Response<ResponseBody>) -> Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_logout_by_sid_ends_that_provider_session_only() {
        let idp = Idp::start().await;
        let (oidc, sessions) = gateway(&idp).await;
        let first = sign_in(&sessions, "alice", Some("sid-1")).await;
        let first_again = sign_in(&sessions, "alice", Some("sid-1")).await;
        let second = sign_in(&sessions, "alice", Some("sid-2")).await;
        let bob = sign_in(&sessions, "bob", Some("sid-3")).await;
        let r = post(&oidc, &sessions, &idp.sign(&idp.claims("alice", "sid-1"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        assert!(!live(&sessions, &first).await);
        assert!(!live(&sessions, &first_again).await);
        assert!(live(&sessions, &second).await, "another provider session");
        assert!(live(&sessions, &bob).await);

        // A sid naming another user's session is not obeyed for that session.
        let r = post(&oidc, &sessions, &idp.sign(&idp.claims("alice", "sid-3"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(live(&sessions, &bob).await);
        // Without sub, the sid alone decides.
        let mut claims = idp.claims("-", "sid-3");
        claims.as_object_mut().unwrap().remove("sub");
        let r = post(&oidc, &sessions, &idp.sign(&claims)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!live(&sessions, &bob).await);
        assert!(live(&sessions, &second).await);

        // Nothing matches: still 200.
        let r = post(&oidc, &sessions, &idp.sign(&idp.claims("carol", "none"))).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_logout_by_sub_ends_every_session_of_the_user() {
        let idp = Idp::start().await;
        let (oidc, sessions) = gateway(&idp).await;
        let a = sign_in(&sessions, "alice", Some("sid-1")).await;
        let b = sign_in(&sessions, "alice", None).await;
        let bob = sign_in(&sessions, "bob", Some("sid-1b")).await;
        let mut claims = idp.claims("alice", "-");
        claims.as_object_mut().unwrap().remove("sid");
        let r = post(&oidc, &sessions, &idp.sign(&claims)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!live(&sessions, &a).await);
        assert!(!live(&sessions, &b).await);
        assert!(live(&sessions, &bob).await);
    }

    #[tokio::test]
    async fn bad_and_replayed_tokens_are_refused_and_end_nothing() {
        let idp = Idp::start().await;
        let (oidc, sessions) = gateway(&idp).await;
        let cookie = sign_in(&sessions, "alice", Some("sid-1")).await;
        let good = idp.claims("alice", "sid-1");
        let edited = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut c = idp.claims("alice", "sid-1");
            f(c.as_object_mut().unwrap());
            idp.sign(&c)
        };
        let alg_none = {
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#);
            let claims = URL_SAFE_NO_PAD.encode(good.to_string());
            format!("{header}.{claims}.")
        };
        let hs256 = {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("k1".into());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(b"secret")).unwrap()
        };
        let at_jwt = {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            header.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_ec_der(&idp.key)).unwrap()
        };
        let bad = [
            ("forged signature", idp.sign_with(&p256(), &good)),
            ("alg none", alg_none),
            ("HS256", hs256),
            ("other type", at_jwt),
            ("not a JWT", "abc".to_owned()),
            (
                "other audience",
                edited(&|c| {
                    c.insert("aud".into(), json!(["other"]));
                }),
            ),
            (
                "other issuer",
                edited(&|c| {
                    c.insert("iss".into(), json!("https://elsewhere.example/"));
                }),
            ),
            (
                "no events",
                edited(&|c| {
                    c.remove("events");
                }),
            ),
            (
                "nonce",
                edited(&|c| {
                    c.insert("nonce".into(), json!("n"));
                }),
            ),
            (
                "old",
                edited(&|c| {
                    c.insert("iat".into(), json!(crate::clock::now() - 3600));
                    c.remove("exp");
                }),
            ),
            (
                "expired",
                edited(&|c| {
                    c.insert("exp".into(), json!(crate::clock::now() - 600));
                }),
            ),
            (
                "no jti",
                edited(&|c| {
                    c.remove("jti");
                }),
            ),
            (
                "neither sub nor sid",
                edited(&|c| {
                    c.remove("sub");
                    c.remove("sid");
                }),
            ),
        ];
        for (what, token) in bad {
            let r = post(&oidc, &sessions, &token).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store", "{what}");
            assert_eq!(
                body_json(r).await,
                json!({"error": "invalid_request"}),
                "{what}"
            );
            assert!(live(&sessions, &cookie).await, "{what}");
        }

        // Used once; the same token again is a replay, even after a new sign-in.
        let token = idp.sign(&good);
        assert_eq!(
            post(&oidc, &sessions, &token).await.status(),
            StatusCode::OK
        );
        assert!(!live(&sessions, &cookie).await);
        let again = sign_in(&sessions, "alice", Some("sid-1")).await;
        let r = post(&oidc, &sessions, &token).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(live(&sessions, &again).await);
    }

    #[tokio::test]
    async fn the_request_must_be_a_small_form_with_one_token() {
        let idp = Idp::start().await;
        let (oidc, sessions) = gateway(&idp).await;
        let cookie = sign_in(&sessions, "alice", Some("sid-1")).await;
        let token = idp.sign(&idp.claims("alice", "sid-1"));
        let send = |body: String, headers: HeaderMap| {
            let (oidc, sessions) = (&oidc, &sessions);
            async move {
                respond_to(oidc, sessions, Full::new(Bytes::from(body)), &headers)
                    .await
                    .0
                    .status()
            }
        };
        let mut json_type = HeaderMap::new();
        json_type.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let refused = [
            send(format!("logout_token={token}"), HeaderMap::new()).await,
            send(format!("logout_token={token}"), json_type).await,
            send(String::new(), form_headers()).await,
            send("logout_token=".into(), form_headers()).await,
            send(
                format!("logout_token={token}&logout_token={token}"),
                form_headers(),
            )
            .await,
            send(
                format!("logout_token={token}&pad={}", "x".repeat(MAX_BODY)),
                form_headers(),
            )
            .await,
        ];
        assert!(
            refused.iter().all(|s| *s == StatusCode::BAD_REQUEST),
            "{refused:?}"
        );
        assert!(live(&sessions, &cookie).await);

        let mut with_charset = HeaderMap::new();
        with_charset.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        );
        let ok = send(format!("state=x&logout_token={token}"), with_charset).await;
        assert_eq!(ok, StatusCode::OK);
        assert!(!live(&sessions, &cookie).await);

        let r = method_not_allowed();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "POST");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[tokio::test]
    async fn nothing_is_accepted_before_discovery() {
        let idp = Idp::start().await;
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\n\
             [[site]]\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"\n\n\
             [oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"UNUSED\"\n",
            idp.issuer
        );
        let config = crate::config::parse(&text, Path::new("gateway.toml")).unwrap();
        let oidc = Oidc::new(config.oidc.clone().unwrap(), Secret::new("s".into())).unwrap();
        let sessions = Sessions::new(&config.session, CookieKey::from_bytes(&[3; 32]));
        let cookie = sign_in(&sessions, "alice", Some("sid-1")).await;
        let r = post(&oidc, &sessions, &idp.sign(&idp.claims("alice", "sid-1"))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_json(r).await,
            json!({"error": "temporarily_unavailable"})
        );
        assert!(live(&sessions, &cookie).await);
    }
}
