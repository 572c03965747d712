//! Attacks on sign-in: forged, replayed, expired and cross-browser state; tampered ID tokens;
//! key-id games; tampered session cookies; open redirects through `rd`; forged identity
//! headers. Every refused attempt must leave the browser without a session.

use crate::support;

use support::browser::sets_session;
use support::env::is_idp_redirect;
use support::report;
use support::unix_now;
use support::LOGIN;
use support::SESSION;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use support::browser::{gateway_path, location, query_param, Browser};
use support::env::{Options, SignInEnv, CLIENT_ID};
use support::jumpcloud::{encode, url_decode, FakeJumpCloud, Sign, Tamper};
use support::{parse_raw, site, Reply};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A refused callback: 400 "Sign-in expired" or 502 "Sign-in failed", and no session cookie.
fn check_refused(reply: &Reply, want: u16, ctx: &str) -> Result<(), String> {
    let text = reply.text();
    let words = match want {
        400 => "Sign-in expired",
        502 => "Sign-in failed",
        403 => "Sign-in refused",
        _ => unreachable!(),
    };
    if reply.status != want || !text.contains(words) {
        return Err(format!(
            "{ctx}: expected {want} {words:?}, got {} {:?} {}",
            reply.status,
            reply.headers.get("location"),
            text
        ));
    }
    if sets_session(reply) {
        return Err(format!("{ctx}: a refused callback set a session cookie"));
    }
    Ok(())
}

/// The browser has no session: a protected navigation goes to the provider.
async fn check_no_session(env: &SignInEnv, b: &mut Browser, ctx: &str) -> Result<(), String> {
    if b.cookie(SESSION).is_some_and(|v| v.len() == 87) {
        // A cookie may be left from a tampering test; it must not be a live session.
        let r = b.get("/.jumpgate/userinfo").await;
        if r.status != 401 {
            return Err(format!("{ctx}: userinfo answered {}", r.status));
        }
    }
    let r = b.get("/protected/after").await;
    if !is_idp_redirect(env, &r) {
        return Err(format!(
            "{ctx}: expected a redirect to sign in, got {} {:?} {}",
            r.status,
            r.headers.get("location"),
            r.text()
        ));
    }
    Ok(())
}

fn jwks_fetches(fake: &FakeJumpCloud) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path == "/.well-known/jwks.json")
        .count()
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_state_is_refused() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    // A real sign-in in progress in this very browser, with a real code from the provider.
    let idp = b.authorize("/forged").await;
    let code = query_param(&location(&idp), "code").unwrap();
    let real_state = query_param(&location(&idp), "state").unwrap();
    let random = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let mut failures = Vec::new();
    for (name, query) in [
        ("random state", format!("code={code}&state={random}")),
        (
            "state one character off",
            format!(
                "code={code}&state={}",
                encode(&flip(&real_state, real_state.len() - 1))
            ),
        ),
        ("no state", format!("code={code}")),
        ("empty state", format!("code={code}&state=")),
        (
            "huge state",
            format!("code={code}&state={}", "A".repeat(4096)),
        ),
        (
            "state padded with a space",
            format!("code={code}&state=%20{}", encode(&real_state)),
        ),
    ] {
        let r = b.get(&format!("/.jumpgate/callback?{query}")).await;
        if let Err(e) = check_refused(&r, 400, name) {
            failures.push(e);
        }
        if let Err(e) = check_no_session(&env, &mut b, name).await {
            failures.push(e);
        }
    }
    assert!(
        env.fake.issued().is_empty(),
        "a forged state must never reach the token endpoint"
    );
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_works_once() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let idp = b.authorize("/once").await;
    let callback = gateway_path(&location(&idp));
    // An attacker who copied the browser (cookies included) before the callback.
    let mut copy = b.clone();
    let ok = b.follow(&idp).await;
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert_eq!(location(&ok), "/once");
    assert!(b.cookie(SESSION).is_some());

    let mut failures = Vec::new();
    let again = b.get(&callback).await;
    if let Err(e) = check_refused(&again, 400, "same browser replays the callback") {
        failures.push(e);
    }
    let r = copy.get(&callback).await;
    if let Err(e) = check_refused(&r, 400, "copied browser replays the callback") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut copy, "copied browser").await {
        failures.push(e);
    }
    report(failures);
    assert_eq!(env.fake.issued().len(), 1, "the code was exchanged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_state_is_refused() {
    let env = SignInEnv::start_with(Options {
        session: "login_timeout = \"1s\"".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    let idp = b.authorize("/slow").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = b.follow(&idp).await;
    let mut failures = Vec::new();
    if let Err(e) = check_refused(&r, 400, "callback after login_timeout") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut b, "expired state").await {
        failures.push(e);
    }
    report(failures);
    assert!(env.fake.issued().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_completes_only_in_the_browser_and_site_that_started_it() {
    let echo = support::Echo::start().await;
    let sites = format!(
        "{}{}",
        site("app.test", &echo.url(), "protected", &[]),
        site("other.test", &echo.url(), "protected", &[])
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        ..Options::default()
    })
    .await;
    let mut failures = Vec::new();

    // B has no login cookie at all (the victim was lured to the attacker's callback URL, or
    // the attacker completes the victim's).
    let mut a = env.browser();
    let idp = a.authorize("/a").await;
    let mut b = env.browser();
    let r = b.follow(&idp).await;
    if let Err(e) = check_refused(&r, 400, "browser without login cookie") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut b, "browser without login cookie").await {
        failures.push(e);
    }

    // C has its own login cookie from its own sign-in in progress.
    let mut a = env.browser();
    let idp = a.authorize("/a").await;
    let mut c = env.browser();
    let _own = c.authorize("/c").await;
    assert!(c.cookie(LOGIN).is_some());
    assert_ne!(c.cookie(LOGIN), a.cookie(LOGIN));
    let r = c.follow(&idp).await;
    if let Err(e) = check_refused(&r, 400, "browser with another login cookie") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut c, "browser with another login cookie").await {
        failures.push(e);
    }

    // D is on another site of the same gateway, holding A's login cookie.
    let mut a = env.browser();
    let idp = a.authorize("/a").await;
    let mut d = Browser::new(env.gw.client(), "other.test");
    d.set_cookie(LOGIN, &a.cookie(LOGIN).unwrap());
    let r = d.get(&gateway_path(&location(&idp))).await;
    if let Err(e) = check_refused(&r, 400, "callback on another site") {
        failures.push(e);
    }
    let r = d.get("/protected/after").await;
    if !is_idp_redirect(&env, &r) {
        failures.push(format!("other site: no sign-in redirect: {}", r.status));
    }
    report(failures);
    assert!(
        env.fake.issued().is_empty(),
        "no code from another browser or site reached the token endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_need_a_valid_state() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();

    let mut b = env.browser();
    let first = b.get("/err").await;
    let state = query_param(&location(&first), "state").unwrap();
    let r = b
        .get(&format!(
            "/.jumpgate/callback?error=access_denied&error_description=The+user+is+not+authorized&state={}",
            encode(&state)
        ))
        .await;
    if let Err(e) = check_refused(&r, 403, "access_denied with a valid state") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut b, "access_denied").await {
        failures.push(e);
    }

    let mut b = env.browser();
    let _ = b.get("/err").await;
    for (name, query) in [
        (
            "access_denied with an unknown state",
            "error=access_denied&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ),
        (
            "access_denied without state",
            "error=access_denied".to_owned(),
        ),
    ] {
        let r = b.get(&format!("/.jumpgate/callback?{query}")).await;
        if let Err(e) = check_refused(&r, 400, name) {
            failures.push(e);
        }
        if let Err(e) = check_no_session(&env, &mut b, name).await {
            failures.push(e);
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// ID token attacks
// ---------------------------------------------------------------------------------------

fn claims(f: impl FnOnce(&mut Value) + Send + 'static) -> Tamper {
    Tamper::claims(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_id_tokens_fail_the_sign_in() {
    let env = SignInEnv::start().await;
    let base = env.fake.base_url();
    let now = unix_now();
    let attacker = format!("{base}/attacker");
    let (jku, x5u) = (
        format!("{attacker}/jwks.json"),
        format!("{attacker}/cert.pem"),
    );
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "nonce changed",
            claims(|c| c["nonce"] = "not-the-nonce".into()),
        ),
        (
            "nonce removed",
            claims(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
        ),
        ("iss without the trailing slash", {
            let b = base.clone();
            claims(move |c| c["iss"] = b.into())
        }),
        (
            "iss another provider",
            claims(|c| c["iss"] = "https://oauth.id.jumpcloud.com/".into()),
        ),
        (
            "aud someone else",
            claims(|c| c["aud"] = json!(["someone-else"])),
        ),
        (
            "aud someone else as a string",
            claims(|c| c["aud"] = json!("someone-else")),
        ),
        (
            "aud missing",
            claims(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "aud [client, other] without azp",
            claims(|c| c["aud"] = json!([CLIENT_ID, "other-client"])),
        ),
        (
            "azp another client",
            claims(|c| c["azp"] = "other-client".into()),
        ),
        (
            "exp in the past beyond the skew",
            claims(move |c| c["exp"] = (now - 121 - 60).into()),
        ),
        (
            "exp missing",
            claims(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "iat 10 minutes in the future",
            claims(move |c| c["iat"] = (now + 600).into()),
        ),
        (
            "sub missing",
            claims(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("sub empty", claims(|c| c["sub"] = "".into())),
        (
            "at_hash wrong",
            claims(|c| c["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
        ("alg none", Tamper::sign(Sign::AlgNone)),
        (
            "HS256 keyed with the public key",
            Tamper::sign(Sign::Hs256WithPublicKey),
        ),
        ("unknown kid", Tamper::sign(Sign::UnknownKid)),
        ("signed by an unpublished key", Tamper::sign(Sign::WrongKey)),
        (
            "header alg RS512 over an RS256 signature",
            Tamper::header(|h| h["alg"] = "RS512".into()),
        ),
        (
            "header alg ES256 over an RS256 signature",
            Tamper::header(|h| h["alg"] = "ES256".into()),
        ),
        ("jku and x5u elsewhere with an unknown kid", {
            let (jku, x5u) = (jku.clone(), x5u.clone());
            Tamper {
                header: Some(Box::new(move |h: &mut Value| {
                    h["jku"] = jku.into();
                    h["x5u"] = x5u.into();
                })),
                sign: Sign::UnknownKid,
                claims: None,
            }
        }),
    ];
    let mut failures = Vec::new();
    for (name, tamper) in cases {
        let issued_before = env.fake.issued().len();
        env.fake.tamper_next_id_token(tamper);
        let mut b = env.browser();
        let cb = b.sign_in_callback("/tampered").await;
        if env.fake.issued().len() != issued_before + 1 {
            failures.push(format!("{name}: the token endpoint was not used"));
        }
        if let Err(e) = check_refused(&cb, 502, name) {
            failures.push(e);
        }
        if let Err(e) = check_no_session(&env, &mut b, name).await {
            failures.push(e);
        }
    }
    let fetched_elsewhere: Vec<String> = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/attacker"))
        .map(|r| r.path.clone())
        .collect();
    if !fetched_elsewhere.is_empty() {
        failures.push(format!(
            "the gateway fetched keys named by the token header: {fetched_elsewhere:?}"
        ));
    }
    // Control: the same flow without tampering signs in, so the refusals above are real.
    let mut b = env.browser();
    let page = b.sign_in("/control").await;
    if page.status != 200 {
        failures.push(format!("control sign-in failed: {}", page.status));
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_and_signs_in() {
    let env = SignInEnv::start().await;
    let before = jwks_fetches(&env.fake);
    assert_eq!(before, 1, "discovery fetched the keys once");
    env.fake.rotate_keys();
    let mut b = env.browser();
    let page = b.sign_in("/rotated").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        jwks_fetches(&env.fake),
        before + 1,
        "the unknown kid caused exactly one re-fetch"
    );
    let mut b = env.browser();
    assert_eq!(b.sign_in("/rotated").await.status, 200);
    assert_eq!(jwks_fetches(&env.fake), before + 1, "the new key is cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_twice() {
    let env = SignInEnv::start().await;
    let before = jwks_fetches(&env.fake);
    let mut failures = Vec::new();
    for i in 0..20 {
        env.fake
            .tamper_next_id_token(Tamper::sign(Sign::UnknownKid));
        let mut b = env.browser();
        let cb = b.sign_in_callback("/flood").await;
        if let Err(e) = check_refused(&cb, 502, &format!("unknown kid #{i}")) {
            failures.push(e);
        }
    }
    report(failures);
    let refetches = jwks_fetches(&env.fake) - before;
    assert!(
        (1..=2).contains(&refetches),
        "20 unknown kids caused {refetches} JWKS fetches"
    );
}

// ---------------------------------------------------------------------------------------
// Session cookies
// ---------------------------------------------------------------------------------------

/// A browser whose session cookie is `value` is treated as having no session, and can sign
/// in again from there.
async fn check_tampered_cookie(env: &SignInEnv, name: &str, value: &str) -> Result<(), String> {
    let mut b = env.browser();
    b.set_cookie(SESSION, value);
    let r = b.get("/cookie").await;
    if !is_idp_redirect(env, &r) {
        return Err(format!(
            "{name}: expected a redirect to sign in, got {} {}",
            r.status,
            r.text()
        ));
    }
    let r = b
        .request("GET", "/cookie", &[("accept", "application/json")])
        .await;
    if r.status != 401 {
        return Err(format!("{name}: API request got {}", r.status));
    }
    // No loop: the whole flow, with the tampered cookie still in the jar, signs in.
    let first = b.get("/cookie").await;
    if first.status != 302 {
        return Err(format!("{name}: no redirect: {}", first.status));
    }
    let idp = support::browser::idp_get(&location(&first)).await;
    let cb = b.follow(&idp).await;
    if cb.status != 302 || location(&cb) != "/cookie" {
        return Err(format!(
            "{name}: sign-in after the tampered cookie failed: {} {}",
            cb.status,
            cb.text()
        ));
    }
    let page = b.follow(&cb).await;
    if page.status != 200 {
        return Err(format!("{name}: signed-in page {}", page.status));
    }
    Ok(())
}

fn flip(s: &str, i: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_session_cookies_are_no_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let idp = b.authorize("/cookie").await;
    let login = b.cookie(LOGIN).expect("login cookie");
    let cb = b.follow(&idp).await;
    assert_eq!(cb.status, 302);
    let v = b.cookie(SESSION).expect("session cookie");
    assert_eq!(v.len(), 87);
    // Sanity: the untouched value is a session.
    let mut good = env.browser();
    good.set_cookie(SESSION, &v);
    assert_eq!(good.get("/cookie").await.status, 200);

    let cases: Vec<(&str, String)> = vec![
        ("id character flipped", flip(&v, 5)),
        ("tag character flipped", flip(&v, 80)),
        ("last character flipped", flip(&v, 86)),
        ("truncated", v[..86].to_owned()),
        ("tag removed", v[..44].to_owned()),
        ("appended", format!("{v}A")),
        ("empty", String::new()),
        ("login cookie value (other purpose)", login.clone()),
        (
            "id only, tag replaced by id",
            format!("{}.{}", &v[..43], &v[..43]),
        ),
        ("dot moved", {
            let (id, tag) = v.split_once('.').unwrap();
            format!("{}.{}{}", &id[..42], &id[42..], tag)
        }),
        ("padding added", format!("{}=.{}=", &v[..43], &v[44..])),
        (
            "all zeros",
            format!("{}.{}", "A".repeat(43), "A".repeat(43)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, value) in &cases {
        if let Err(e) = check_tampered_cookie(&env, name, value).await {
            failures.push(e);
        }
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_is_valid_only_on_its_own_site() {
    let echo = support::Echo::start().await;
    let sites = format!(
        "{}{}",
        site("app.test", &echo.url(), "protected", &[]),
        site("other.test", &echo.url(), "protected", &[])
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/site").await.status, 200);
    let mut o = Browser::new(env.gw.client(), "other.test");
    o.set_cookie(SESSION, &b.cookie(SESSION).unwrap());
    let r = o.get("/site").await;
    assert!(
        is_idp_redirect(&env, &r),
        "app.test's session let other.test through: {} {}",
        r.status,
        r.text()
    );
    let r = o.get("/.jumpgate/userinfo").await;
    assert_eq!(r.status, 401);
    // It still works where it was made.
    assert_eq!(b.get("/site").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_session_cookie_is_no_session_and_does_not_block_sign_in() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/cookie").await.status, 200);
    let v = b.cookie(SESSION).unwrap();
    let huge = format!("{v}{}", "A".repeat(10 * 1024));
    report(
        check_tampered_cookie(&env, "10 KB session cookie", &huge)
            .await
            .err()
            .into_iter()
            .collect(),
    );
}

// ---------------------------------------------------------------------------------------
// Open redirects
// ---------------------------------------------------------------------------------------

/// Whether a browser following `location` from `https://app.test/` stays on that host and
/// avoids the gateway's own endpoints. Browsers drop tabs and newlines anywhere in a URL,
/// strip leading spaces and control characters and read `\` as `/`, so all of those are
/// refused outright.
fn safe_location(location: &str) -> Result<(), String> {
    let b = location.as_bytes();
    if b.first() != Some(&b'/') {
        return Err("does not start with /".into());
    }
    if matches!(b.get(1), Some(b'/') | Some(b'\\')) {
        return Err("starts with // or /\\".into());
    }
    if let Some(c) = b
        .iter()
        .find(|&&c| c < 0x21 || c == 0x7f || c == b'\\' || c >= 0x80)
    {
        return Err(format!("contains byte {c:#04x}"));
    }
    let decoded = url_decode(location);
    let d = decoded.as_bytes();
    if matches!(d.get(1), Some(b'/') | Some(b'\\')) {
        return Err(format!("decodes to {decoded:?}"));
    }
    let path = decoded.split(['?', '#']).next().unwrap_or("");
    if path.to_ascii_lowercase().starts_with("/.jumpgate") {
        return Err("returns to a gateway endpoint".into());
    }
    Ok(())
}

#[test]
fn safe_location_rejects_what_it_should() {
    for bad in [
        "//evil",
        "/\\evil",
        "https://evil",
        "evil",
        "/\tevil",
        "/%2F/evil",
        "/%5Cevil",
        "/.jumpgate/logout",
        "/é",
    ] {
        assert!(safe_location(bad).is_err(), "{bad:?}");
    }
    for good in ["/", "/a/b?c=d", "/a%20b", "/?next=//evil"] {
        assert!(safe_location(good).is_ok(), "{good:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_never_returns_to_another_host() {
    let env = SignInEnv::start().await;
    let payloads: &[&str] = &[
        "//evil.example",
        "/\\evil.example",
        "/\\\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "https:evil.example",
        "https://evil.example",
        "HTTPS://evil.example",
        "http:/\\/evil.example",
        "//evil.example/%2F..",
        "///evil.example",
        "////evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "/%2f%2fevil.example",
        "/%5Cevil.example",
        "/%5c%5cevil.example",
        "%5C%5Cevil.example",
        "/\tevil.example",
        "/\t/evil.example",
        "\t//evil.example",
        "/%09/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "%0d%0aLocation:%20https://evil.example",
        "/%0d%0aLocation:%20https://evil.example",
        "/x\r\nLocation: https://evil.example",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/.jumpgate/logout",
        "/%2ejumpgate/logout",
        "/x/../.jumpgate/logout",
        "/.jumpgate/callback?code=x&state=y",
        "//evil%00.example",
        "/\0/evil.example",
        "/%00/evil.example",
        "/%2e%2e//evil.example",
        "/..//evil.example",
        "/.//evil.example",
        "/%2e//evil.example",
        " //evil.example",
        " /evil",
        "/\u{7f}/evil.example",
        "/%E3%80%82evil.example",
        "/\u{3002}evil.example",
        "/\u{ff0f}evil.example",
        "//app.test@evil.example",
        "/@evil.example",
        "https://app.test.evil.example/",
        "",
        "/%252f%252fevil.example",
        "/%25%32%66/evil.example",
        "?//evil.example",
        "#//evil.example",
    ];
    assert!(payloads.len() >= 30);
    let mut failures = Vec::new();
    for payload in payloads {
        let mut b = env.browser();
        let start = b
            .get(&format!("/.jumpgate/sign-in?rd={}", encode(payload)))
            .await;
        if !is_idp_redirect(&env, &start) {
            failures.push(format!(
                "{payload:?}: sign-in did not start: {} {}",
                start.status,
                start.text()
            ));
            continue;
        }
        let idp = support::browser::idp_get(&location(&start)).await;
        let cb = b.follow(&idp).await;
        if cb.status != 302 {
            failures.push(format!("{payload:?}: callback {} {}", cb.status, cb.text()));
            continue;
        }
        let Some(to) = cb.headers.get("location") else {
            failures.push(format!("{payload:?}: callback without Location"));
            continue;
        };
        let to = String::from_utf8_lossy(to.as_bytes()).into_owned();
        if let Err(e) = safe_location(&to) {
            failures.push(format!("{payload:?} → Location {to:?}: {e}"));
        }
    }
    // Legitimate targets come back exactly.
    for good in [
        "/a/b?c=d",
        "/a%20b",
        "/dashboard?tab=2&x=%2F",
        "/evil.example",
        "/",
    ] {
        let mut b = env.browser();
        let start = b
            .get(&format!("/.jumpgate/sign-in?rd={}", encode(good)))
            .await;
        let idp = support::browser::idp_get(&location(&start)).await;
        let cb = b.follow(&idp).await;
        if cb.status != 302 || location(&cb) != *good {
            failures.push(format!(
                "legitimate {good:?} not preserved: {} {:?}",
                cb.status,
                cb.headers.get("location")
            ));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Forged identity headers
// ---------------------------------------------------------------------------------------

/// Every header the echo upstream saw, as (name, values).
fn upstream_headers(body: &Value) -> Vec<(String, Vec<String>)> {
    body["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn check_identity(env: &SignInEnv, body: &Value, ctx: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let headers = upstream_headers(body);
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let want = [
        ("x-jumpgate-user", env.alice.as_str()),
        ("x-jumpgate-email", "alice@example.com"),
        ("x-jumpgate-username", "alice"),
        ("x-jumpgate-groups", "Admins,Staff"),
    ];
    for (name, value) in want {
        if get(name) != vec![value.to_owned()] {
            failures.push(format!("{ctx}: {name} is {:?}", get(name)));
        }
    }
    let assertion = get("x-jumpgate-assertion");
    if assertion.len() != 1 {
        failures.push(format!("{ctx}: assertion {assertion:?}"));
    } else {
        let payload = assertion[0].split('.').nth(1).unwrap_or("");
        let claims: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if claims["sub"] != env.alice.as_str() {
            failures.push(format!(
                "{ctx}: assertion is not the gateway's: {}",
                assertion[0]
            ));
        }
    }
    for (name, values) in &headers {
        let lower = name.to_ascii_lowercase();
        let in_namespace = lower.replace('_', "-").starts_with("x-jumpgate-");
        let known = want.iter().any(|(n, _)| n == name) || name == "x-jumpgate-assertion";
        if in_namespace && !known {
            failures.push(format!("{ctx}: {name}: {values:?} reached the upstream"));
        }
        for v in values {
            if v.contains("forged") || v.contains("evil") || v.contains("root") {
                failures.push(format!("{ctx}: {name}: {v:?} reached the upstream"));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/spoof").await.status, 200);
    let cookie = b.cookie(SESSION).unwrap();
    let client = env.gw.client();
    let mut failures = Vec::new();

    let forged_headers = "X-Jumpgate-User: forged-user\r\n\
         x_jumpgate_user: forged-underscore\r\n\
         X-JUMPGATE-EMAIL: evil@example.com\r\n\
         X-Jumpgate-User: forged-duplicate\r\n\
         X-Jumpgate-Groups: admins\r\n\
         x-jumpgate-groups: Admins,root\r\n\
         X_JUMPGATE_GROUPS: root\r\n\
         X-Jumpgate-Username: root\r\n\
         x-jumpgate_username: root\r\n\
         X-Jumpgate-Assertion: eyJforged.eyJforged.forged\r\n\
         X-Jumpgate-Anything: forged\r\n";
    let cases = [
        (
            "every spelling, duplicates, and Connection naming the gateway's headers",
            format!(
                "{forged_headers}Connection: close, X-Jumpgate-User, X-Jumpgate-Groups, x-jumpgate-assertion\r\n"
            ),
        ),
        (
            "Connection alone naming every identity header",
            "Connection: X-Jumpgate-User, X-Jumpgate-Email, X-Jumpgate-Username, X-Jumpgate-Groups, X-Jumpgate-Assertion, close\r\n".to_owned(),
        ),
        (
            "identity headers listed in several Connection headers",
            format!("{forged_headers}Connection: x-jumpgate-user\r\nConnection: close\r\n"),
        ),
    ];
    for (name, extra) in &cases {
        let raw = format!(
            "GET /spoof HTTP/1.1\r\nHost: app.test\r\nCookie: {SESSION}={cookie}\r\n{extra}\r\n"
        );
        let text = client
            .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
            .await;
        let reply = parse_raw(&text);
        if reply.status != Some(200) {
            failures.push(format!("{name}: status {:?}: {text}", reply.status));
            continue;
        }
        failures.extend(check_identity(&env, &reply.json(), name));
    }

    // Obsolete line folding hiding a header in a continuation line: refused or harmless.
    let raw = format!(
        "GET /spoof HTTP/1.1\r\nHost: app.test\r\nCookie: {SESSION}={cookie}\r\nX-Other: a\r\n X-Jumpgate-User: forged-fold\r\nConnection: close\r\n\r\n"
    );
    let text = client
        .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
        .await;
    let reply = parse_raw(&text);
    match reply.status {
        Some(400) => {}
        Some(200) => failures.extend(check_identity(&env, &reply.json(), "obs-fold")),
        other => failures.push(format!("obs-fold: status {other:?}")),
    }

    // HTTP/2, where names arrive lower-case and may carry underscores.
    let req = Request::get("https://app.test/spoof")
        .header("cookie", format!("{SESSION}={cookie}"))
        .header("x-jumpgate-user", "forged-h2")
        .header("x_jumpgate_user", "forged-h2-underscore")
        .header("x-jumpgate-groups", "root")
        .header("x-jumpgate-email", "evil@example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.send_h2("app.test", req).await;
    if r.status != 200 {
        failures.push(format!("h2: status {}", r.status));
    } else {
        failures.extend(check_identity(&env, &r.json(), "h2"));
    }

    // Public routes carry no identity, and forged headers are removed there too.
    let raw = format!(
        "GET /public/x HTTP/1.1\r\nHost: app.test\r\n{forged_headers}Connection: close\r\n\r\n"
    );
    let text = client
        .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
        .await;
    let reply = parse_raw(&text);
    if reply.status != Some(200) {
        failures.push(format!("public: status {:?}", reply.status));
    } else {
        for (name, values) in upstream_headers(&reply.json()) {
            if name.replace('_', "-").starts_with("x-jumpgate-") {
                failures.push(format!("public: {name}: {values:?} reached the upstream"));
            }
        }
    }
    report(failures);
}
