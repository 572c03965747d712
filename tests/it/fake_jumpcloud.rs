//! Tests of the fake JumpCloud provider itself, through plain HTTP, so the gateway tests can
//! trust that it behaves like the JumpCloud reference says.

use crate::support;

use std::net::SocketAddr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::net::TcpStream;

use support::jumpcloud::*;

const REDIRECT: &str = "https://app.test/.jumpgate/callback";
const STATE: &str = "state-0123456789";

struct Http {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Http {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn location(&self) -> Option<String> {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The query parameters of the redirect target.
    fn redirect_params(&self) -> Vec<(String, String)> {
        let loc = self
            .location()
            .unwrap_or_else(|| panic!("no redirect: {} {}", self.status, self.body));
        let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
        parse_query(query)
    }

    fn redirect_param(&self, name: &str) -> Option<String> {
        self.redirect_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Http {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Http {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(jc: &FakeJumpCloud, path: &str) -> Http {
    let req = Request::get(path)
        .header("host", jc.addr().to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(jc.addr(), req).await
}

async fn post_form(
    jc: &FakeJumpCloud,
    path: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Http {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let mut req = Request::post(path)
        .header("host", jc.addr().to_string())
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let creds = STANDARD.encode(format!("{}:{}", encode(id), encode(secret)));
        req = req.header("authorization", format!("Basic {creds}"));
    }
    send(
        jc.addr(),
        req.body(Full::new(Bytes::from(body.join("&")))).unwrap(),
    )
    .await
}

async fn authorize(jc: &FakeJumpCloud, params: &[(&str, &str)]) -> Http {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    get(jc, &format!("/oauth2/auth?{}", query.join("&"))).await
}

fn auth_params<'a>(client_id: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid email profile"),
        ("state", STATE),
    ];
    for (k, v) in extra {
        p.retain(|(n, _)| n != k);
        p.push((k, v));
    }
    p
}

/// Signs in through /oauth2/auth and returns the code.
async fn code(jc: &FakeJumpCloud, client_id: &str, extra: &[(&str, &str)]) -> String {
    let resp = authorize(jc, &auth_params(client_id, extra)).await;
    assert_eq!(resp.status, 302, "{}", resp.body);
    assert_eq!(
        resp.redirect_param("state").as_deref(),
        Some(STATE),
        "{:?}",
        resp.location()
    );
    resp.redirect_param("code")
        .unwrap_or_else(|| panic!("no code: {:?}", resp.location()))
}

async fn exchange_basic(jc: &FakeJumpCloud, code: &str, extra: &[(&str, &str)]) -> Http {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    form.extend_from_slice(extra);
    post_form(jc, "/oauth2/token", &form, Some(("web-app", "s3cret/+&=x"))).await
}

struct Fixture {
    jc: FakeJumpCloud,
    alice: String,
    admins: String,
}

/// A fake with user alice (in group "Admins", bound to app "web-app" with a groups claim).
async fn fixture() -> Fixture {
    let jc = FakeJumpCloud::start().await;
    let alice = jc.add_user(User::new("alice.smith"));
    let admins = jc.add_group("Admins");
    jc.add_member(&admins, &alice);
    jc.add_app(App {
        groups_claim: Some("memberOf".into()),
        bound_groups: vec![admins.clone()],
        refresh_grant: true,
        post_logout_redirect_uris: vec!["https://app.test/bye".into()],
        ..App::new("web-app", "s3cret/+&=x", REDIRECT)
    });
    jc.set_next_login(Some(&alice));
    Fixture { jc, alice, admins }
}

async fn verify(jc: &FakeJumpCloud, token: &str, client_id: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.unwrap();
    let jwks = get(jc, "/.well-known/jwks.json").await.json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"))
        .clone();
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&[jc.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    (verifier, challenge)
}

#[tokio::test]
async fn discovery_is_hydra_shaped_with_the_trailing_slash() {
    let jc = FakeJumpCloud::start().await;
    let resp = get(&jc, "/.well-known/openid-configuration").await;
    assert_eq!(resp.status, 200);
    assert!(resp.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc = resp.json();
    let base = jc.base_url();
    assert_eq!(doc["issuer"], format!("{base}/"));
    assert_eq!(jc.issuer(), format!("{base}/"));
    assert_eq!(doc["authorization_endpoint"], format!("{base}/oauth2/auth"));
    assert_eq!(doc["token_endpoint"], format!("{base}/oauth2/token"));
    assert_eq!(doc["userinfo_endpoint"], format!("{base}/userinfo"));
    assert_eq!(doc["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(
        doc["end_session_endpoint"],
        format!("{base}/oauth2/sessions/logout")
    );
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["claims_supported"], serde_json::json!(["sub"]));

    jc.quirks(|q| q.issuer_trailing_slash = false);
    let doc = get(&jc, "/.well-known/openid-configuration").await.json();
    assert_eq!(doc["issuer"], base);
    assert_eq!(jc.issuer(), base);

    jc.faults(|f| f.discovery_status = Some(503));
    let resp = get(&jc, "/.well-known/openid-configuration").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"], "server_error");
}

#[tokio::test]
async fn code_flow_yields_a_jumpcloud_shaped_id_token() {
    let f = fixture().await;
    let jc = &f.jc;
    let resp = authorize(jc, &auth_params("web-app", &[("nonce", "nonce-abc")])).await;
    assert_eq!(resp.status, 302);
    let loc = resp.location().unwrap();
    assert!(loc.starts_with(&format!("{REDIRECT}?code=")), "{loc}");
    assert_eq!(
        resp.redirect_param("scope").as_deref(),
        Some("openid email profile")
    );
    let first_code = resp.redirect_param("code").unwrap();

    let resp = exchange_basic(jc, &first_code, &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body = resp.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["scope"], "openid email profile");
    assert!(body.get("refresh_token").is_none(), "no offline_access");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 1, "the access token is opaque");

    let claims = verify(jc, body["id_token"].as_str().unwrap(), "web-app").await;
    assert_eq!(claims["iss"], jc.issuer());
    assert!(claims["iss"].as_str().unwrap().ends_with('/'));
    assert_eq!(claims["sub"], f.alice.as_str());
    assert_eq!(f.alice.len(), 24);
    assert_eq!(claims["aud"], serde_json::json!(["web-app"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(claims["email"], "alice.smith@example.com");
    assert_eq!(claims["email_verified"], "true");
    assert_eq!(claims["picture"], "none");
    assert_eq!(claims["middle_name"], "");
    assert_eq!(claims["given_name"], "Alice");
    assert_eq!(claims["family_name"], "Smith");
    assert_eq!(claims["name"], "Alice Smith");
    assert_eq!(claims["preferred_username"], "alice.smith");
    assert_eq!(claims["nonce"], "nonce-abc");
    assert_eq!(claims["memberOf"], "Admins", "one group is a bare string");
    assert_eq!(claims["jc_org"], jc.org_id());
    assert!(claims["rat"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    assert!(claims["auth_time"].is_i64() && claims["sid"].is_string() && claims["jti"].is_string());
    assert!(claims.get("amr").is_none() && claims.get("acr").is_none());
    let digest = ring::digest::digest(&ring::digest::SHA256, access.as_bytes());
    assert_eq!(
        claims["at_hash"],
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    );

    // Userinfo: the same claims, unsigned, minus the token-only ones.
    let req = Request::get("/userinfo")
        .header("authorization", format!("Bearer {access}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let info = send(jc.addr(), req).await;
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["sub"], f.alice.as_str());
    assert_eq!(info["email_verified"], "true");
    assert_eq!(info["memberOf"], "Admins");
    for absent in ["exp", "jti", "at_hash", "nonce"] {
        assert!(info.get(absent).is_none(), "{absent} in userinfo");
    }
    let req = Request::get("/userinfo")
        .header("authorization", "Bearer nope")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let info = send(jc.addr(), req).await;
    assert_eq!(info.status, 401);
    assert_eq!(
        info.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    // A second bound group turns the claim into an array; unbound groups never appear.
    let ops = jc.add_group("Ops");
    let other = jc.add_group("Unbound");
    jc.add_member(&ops, &f.alice);
    jc.add_member(&other, &f.alice);
    jc.update_app("web-app", |a| a.bound_groups.push(ops.clone()));
    let c = code(jc, "web-app", &[]).await;
    let body = exchange_basic(jc, &c, &[]).await.json();
    let claims = verify(jc, body["id_token"].as_str().unwrap(), "web-app").await;
    assert_eq!(claims["memberOf"], serde_json::json!(["Admins", "Ops"]));
    assert!(claims.get("nonce").is_none());

    let issued = jc.issued();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0].user_id, f.alice);
    assert_eq!(issued[0].client_id, "web-app");
    assert_eq!(jc.logins(), 2);
}

#[tokio::test]
async fn codes_are_single_use_and_pkce_is_checked() {
    let f = fixture().await;
    let jc = &f.jc;
    let c = code(jc, "web-app", &[]).await;
    assert_eq!(exchange_basic(jc, &c, &[]).await.status, 200);
    let replay = exchange_basic(jc, &c, &[]).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.json()["error"], "invalid_grant");

    let (verifier, challenge) = pkce();
    let pkce_params = [
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let c = code(jc, "web-app", &pkce_params).await;
    let (wrong, _) = pkce();
    let resp = exchange_basic(jc, &c, &[("code_verifier", &wrong)]).await;
    assert_eq!(resp.json()["error"], "invalid_grant");
    let resp = exchange_basic(jc, &c, &[("code_verifier", &verifier)]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    // The redirect_uri at the token endpoint must match the one authorized.
    let c = code(jc, "web-app", &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", "https://app.test/other"),
    ];
    let resp = post_form(jc, "/oauth2/token", &form, Some(("web-app", "s3cret/+&=x"))).await;
    assert_eq!(resp.json()["error"], "invalid_grant");

    // A public client must use S256.
    jc.add_app(App {
        auth: ClientAuth::None,
        bind_everyone: true,
        ..App::new("spa", "", REDIRECT)
    });
    let resp = authorize(jc, &auth_params("spa", &[])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("invalid_request")
    );
    let resp = authorize(
        jc,
        &auth_params(
            "spa",
            &[
                ("code_challenge", &challenge),
                ("code_challenge_method", "plain"),
            ],
        ),
    )
    .await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("invalid_request")
    );
    let c = code(jc, "spa", &pkce_params).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "spa"),
        ("code_verifier", verifier.as_str()),
    ];
    let resp = post_form(jc, "/oauth2/token", &form, None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    // An injected token-endpoint fault leaves the code unspent.
    let c = code(jc, "web-app", &[]).await;
    jc.faults(|f| f.token_status = Some(502));
    let resp = exchange_basic(jc, &c, &[]).await;
    assert_eq!(resp.status, 502);
    jc.faults(|f| f.token_status = None);
    assert_eq!(exchange_basic(jc, &c, &[]).await.status, 200);
}

#[tokio::test]
async fn client_authentication_follows_the_registered_method() {
    let f = fixture().await;
    let jc = &f.jc;
    // Basic app, credentials posted in the form: refused.
    let c = code(jc, "web-app", &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "web-app"),
        ("client_secret", "s3cret/+&=x"),
    ];
    let resp = post_form(jc, "/oauth2/token", &form, None).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_client");
    // Wrong secret.
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let resp = post_form(jc, "/oauth2/token", &form, Some(("web-app", "nope"))).await;
    assert_eq!(resp.status, 401);
    // The right one (urlencoded inside Basic, per RFC 6749).
    assert_eq!(exchange_basic(jc, &c, &[]).await.status, 200);

    jc.add_app(App {
        auth: ClientAuth::Post,
        bind_everyone: true,
        ..App::new("post-app", "p0st", REDIRECT)
    });
    let c = code(jc, "post-app", &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let resp = post_form(jc, "/oauth2/token", &form, Some(("post-app", "p0st"))).await;
    assert_eq!(resp.status, 401);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "post-app"),
        ("client_secret", "p0st"),
    ];
    let resp = post_form(jc, "/oauth2/token", &form, None).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_rejected() {
    let f = fixture().await;
    let jc = &f.jc;
    let c = code(jc, "web-app", &[("scope", "openid email offline_access")]).await;
    let body = exchange_basic(jc, &c, &[]).await.json();
    let first = body["refresh_token"].as_str().unwrap().to_owned();

    let refresh = |token: String| async move {
        post_form(
            jc,
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &token)],
            Some(("web-app", "s3cret/+&=x")),
        )
        .await
    };
    let resp = refresh(first.clone()).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body = resp.json();
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let claims = verify(jc, body["id_token"].as_str().unwrap(), "web-app").await;
    assert_eq!(claims["sub"], f.alice.as_str());

    let reuse = refresh(first).await;
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    // Reuse revokes the whole chain, like Hydra.
    assert_eq!(refresh(second).await.json()["error"], "invalid_grant");

    // A suspended user cannot renew.
    let c = code(jc, "web-app", &[("scope", "openid offline_access")]).await;
    let body = exchange_basic(jc, &c, &[]).await.json();
    let token = body["refresh_token"].as_str().unwrap().to_owned();
    jc.update_user(&f.alice, |u| u.suspend());
    assert_eq!(refresh(token).await.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn bad_redirect_uris_get_an_error_page_not_a_redirect() {
    let f = fixture().await;
    let jc = &f.jc;
    let resp = authorize(
        jc,
        &auth_params("web-app", &[("redirect_uri", "https://evil.test/cb")]),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert!(resp.location().is_none());
    assert!(resp.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let resp = authorize(jc, &auth_params("nobody", &[])).await;
    assert_eq!(resp.status, 400);
    assert!(resp.location().is_none());

    // Errors after that are redirected.
    let resp = authorize(jc, &auth_params("web-app", &[("state", "short")])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("invalid_state")
    );
    let resp = authorize(jc, &auth_params("web-app", &[("scope", "openid groups")])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("invalid_scope")
    );
    assert_eq!(resp.redirect_param("state").as_deref(), Some(STATE));
    let resp = authorize(jc, &auth_params("web-app", &[("prompt", "select_account")])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test]
async fn users_who_may_not_sign_in_are_denied() {
    let f = fixture().await;
    let jc = &f.jc;
    jc.update_user(&f.alice, |u| u.suspend());
    let resp = authorize(jc, &auth_params("web-app", &[])).await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(resp.redirect_param("state").as_deref(), Some(STATE));
    assert!(resp.redirect_param("error_description").is_some());
    assert!(resp.redirect_param("code").is_none());

    jc.update_user(&f.alice, |u| u.reactivate());
    jc.remove_member(&f.admins, &f.alice);
    let resp = authorize(jc, &auth_params("web-app", &[])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("access_denied")
    );

    jc.add_member(&f.admins, &f.alice);
    jc.update_app("web-app", |a| a.require_mfa = true);
    jc.update_user(&f.alice, |u| u.mfa_ok = false);
    let resp = authorize(jc, &auth_params("web-app", &[])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("access_denied")
    );
    jc.update_user(&f.alice, |u| u.mfa_ok = true);
    let c = code(jc, "web-app", &[]).await;
    assert_eq!(exchange_basic(jc, &c, &[]).await.status, 200);
    assert!(jc.issued()[0].mfa);
    assert_eq!(jc.logins(), 1);
}

#[tokio::test]
async fn prompt_and_sessions_control_auth_time() {
    let f = fixture().await;
    let jc = &f.jc;
    let resp = authorize(jc, &auth_params("web-app", &[("prompt", "none")])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("login_required")
    );

    let c = code(jc, "web-app", &[]).await;
    exchange_basic(jc, &c, &[]).await;
    let first = jc.issued()[0].auth_time;
    // Move the IdP clock so a fresh login is visible without sleeping.
    jc.faults(|f| f.clock_skew_secs = 100);
    let c = code(jc, "web-app", &[("prompt", "none")]).await;
    exchange_basic(jc, &c, &[]).await;
    assert_eq!(jc.issued()[1].auth_time, first, "SSO keeps the session");
    let c = code(jc, "web-app", &[("prompt", "login")]).await;
    exchange_basic(jc, &c, &[]).await;
    assert!(
        jc.issued()[2].auth_time >= first + 100,
        "prompt=login re-authenticates"
    );
    let c = code(jc, "web-app", &[("max_age", "0")]).await;
    exchange_basic(jc, &c, &[]).await;
    assert!(jc.issued()[3].auth_time >= first + 100);

    // Logout ends the IdP session and redirects only to a registered URI.
    let hint = jc.issued()[3].id_token.clone();
    let resp = get(
        jc,
        &format!(
            "/oauth2/sessions/logout?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye-state",
            encode("https://evil.test/")
        ),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert!(resp.location().is_none());
    assert_eq!(jc.sessions_ended(), 0);
    let resp = get(
        jc,
        &format!(
            "/oauth2/sessions/logout?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye-state",
            encode("https://app.test/bye")
        ),
    )
    .await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.location().as_deref(),
        Some("https://app.test/bye?state=bye-state")
    );
    assert_eq!(jc.sessions_ended(), 1);
    let resp = authorize(jc, &auth_params("web-app", &[("prompt", "none")])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("login_required")
    );
}

#[tokio::test]
async fn rotated_keys_are_published_together() {
    let f = fixture().await;
    let jc = &f.jc;
    let old = jc.current_kid();
    jc.rotate_keys();
    let new = jc.current_kid();
    assert_ne!(old, new);
    let jwks = get(jc, "/.well-known/jwks.json").await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["kty"], "RSA");
            assert_eq!(k["use"], "sig");
            assert_eq!(k["alg"], "RS256");
            k["kid"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kids, [old.as_str(), new.as_str()]);
    let c = code(jc, "web-app", &[]).await;
    let body = exchange_basic(jc, &c, &[]).await.json();
    let token = body["id_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(token).unwrap().kid.as_deref(),
        Some(new.as_str())
    );
    verify(jc, token, "web-app").await;

    jc.drop_old_keys();
    let jwks = get(jc, "/.well-known/jwks.json").await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    jc.faults(|f| f.jwks_omit_signing_kid = true);
    let jwks = get(jc, "/.well-known/jwks.json").await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn tampered_tokens_come_out_as_asked() {
    let f = fixture().await;
    let jc = &f.jc;
    jc.tamper_next_id_token(Tamper {
        claims: Some(Box::new(|c| c["aud"] = "web-app".into())),
        ..Tamper::sign(Sign::AlgNone)
    });
    let c = code(jc, "web-app", &[]).await;
    let token = exchange_basic(jc, &c, &[]).await.json()["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2], "");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "none");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], "web-app");

    // One-shot: the next token is normal again.
    let c = code(jc, "web-app", &[]).await;
    let token = exchange_basic(jc, &c, &[]).await.json()["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    verify(jc, &token, "web-app").await;

    jc.tamper_next_id_token(Tamper::sign(Sign::Hs256WithPublicKey));
    let c = code(jc, "web-app", &[]).await;
    let token = exchange_basic(jc, &c, &[]).await.json()["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["web-app"]);
    let pem = jc.public_key_pem();
    jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(pem.as_bytes()),
        &validation,
    )
    .expect("HMAC keyed with the public key PEM");
}

#[tokio::test]
async fn requests_are_logged_and_stop_refuses_connections() {
    let f = fixture().await;
    let jc = &f.jc;
    let c = code(jc, "web-app", &[]).await;
    exchange_basic(jc, &c, &[]).await;
    let log = jc.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/oauth2/auth");
    assert_eq!(log[0].query_param("state").as_deref(), Some(STATE));
    assert!(log[0].query.contains("client_id=web-app"));
    assert_eq!(log[1].path, "/oauth2/token");
    assert_eq!(log[1].form_param("code"), Some(c.as_str()));
    assert!(log[1]
        .header("Authorization")
        .unwrap()
        .starts_with("Basic "));
    assert!(log[0].at <= log[1].at);

    // Malformed input gets an answer, not a dead listener.
    let resp = get(jc, "/oauth2/auth?client_id=%ZZ&redirect_uri=%").await;
    assert_eq!(resp.status, 400);
    let resp = post_form(jc, "/oauth2/token", &[("grant_type", "x")], None).await;
    assert_eq!(resp.status, 401);

    jc.stop().await;
    assert!(TcpStream::connect(jc.addr()).await.is_err());
    jc.restart().await;
    assert_eq!(get(jc, "/.well-known/jwks.json").await.status, 200);
}

#[tokio::test]
async fn without_a_preset_user_a_chooser_page_signs_in_and_keeps_a_browser_session() {
    let f = fixture().await;
    let jc = &f.jc;
    jc.set_next_login(None);
    let page = authorize(jc, &auth_params("web-app", &[])).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Alice Smith"), "{}", page.body);
    let start = page.body.find("href=\"").unwrap() + 6;
    let end = start + page.body[start..].find('"').unwrap();
    let link = page.body[start..end].replace("&amp;", "&");
    assert!(link.contains(&format!("jc_login={}", f.alice)), "{link}");

    let resp = get(jc, &link).await;
    assert_eq!(resp.status, 302, "{}", resp.body);
    assert!(resp.redirect_param("code").is_some());
    let cookie = resp.headers["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();

    // The IdP session cookie makes prompt=none succeed for the same browser only.
    let query: Vec<String> = auth_params("web-app", &[("prompt", "none")])
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let req = Request::get(format!("/oauth2/auth?{}", query.join("&")))
        .header("cookie", &cookie)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(jc.addr(), req).await;
    assert!(
        resp.redirect_param("code").is_some(),
        "{:?}",
        resp.location()
    );
    let resp = authorize(jc, &auth_params("web-app", &[("prompt", "none")])).await;
    assert_eq!(
        resp.redirect_param("error").as_deref(),
        Some("login_required")
    );
}

/// Two fake providers alive together publish no key in common, so a token signed by one is
/// a foreign token to the other (the tests can speak of "another provider's token").
#[tokio::test]
async fn every_fake_provider_signs_with_keys_of_its_own() {
    let a = fixture().await;
    let b = fixture().await;
    b.jc.rotate_keys();
    let keys = |jwks: Value| -> Vec<(String, String)> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_owned(),
                    k["n"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let ka = keys(get(&a.jc, "/.well-known/jwks.json").await.json());
    let kb = keys(get(&b.jc, "/.well-known/jwks.json").await.json());
    assert_eq!(kb.len(), 2, "b rotated once");
    for (kid, n) in &kb {
        assert!(
            !ka.iter().any(|(k, m)| k == kid || m == n),
            "a key of b is a's"
        );
    }
    // b's ID token verifies with b's keys and not with a's.
    let code = code(&b.jc, "web-app", &[("nonce", "n")]).await;
    let token = exchange_basic(&b.jc, &code, &[]).await.json()["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify(&b.jc, &token, "web-app").await["nonce"], "n");
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let (_, n) = ka.first().unwrap();
    let a_key = DecodingKey::from_rsa_components(n, "AQAB").unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    assert!(
        jsonwebtoken::decode::<Value>(&token, &a_key, &validation).is_err(),
        "b's token ({kid}) verified with a's key"
    );
}
