//! OpenID Connect Back-Channel Logout against the fake JumpCloud: a logout token for one
//! provider session ends the gateway sessions signed in through it and no other, one without
//! `sid` ends all of the user's sessions, a bad or replayed token ends nothing, and with the
//! Redis store a logout received by one instance reaches every instance.

use crate::support;

use support::eventually;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use support::browser::{location, same_browser_on, Browser};
use support::env::{Options, SignInEnv, CLIENT_ID};
use support::jumpcloud::{encode, Sign, Tamper};
use support::redis::{session_keys, shared_url, Prefix};
use support::{Gateway, Reply};

const PATH: &str = "/.jumpgate/backchannel-logout";

/// POSTs `logout_token=<token>` to a gateway, as the provider does.
async fn post_logout(gw: &Gateway, token: &str) -> Reply {
    post_form(gw, &format!("logout_token={}", encode(token))).await
}

async fn post_form(gw: &Gateway, body: &str) -> Reply {
    let req = Request::post(PATH)
        .header("host", "app.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    gw.client().send("app.test", req).await
}

fn assert_ok(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(r.headers.get("set-cookie").is_none());
}

fn assert_refused(r: &Reply, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store", "{what}");
    assert_eq!(r.json(), json!({"error": "invalid_request"}), "{what}");
}

/// Whether a browser is still signed in: its next navigation is served, not sent to sign-in.
async fn signed_in(b: &mut Browser) -> bool {
    let r = b.get("/a").await;
    match r.status.as_u16() {
        200 => true,
        302 => false,
        s => panic!("unexpected {s}: {}", r.text()),
    }
}

/// Signs `b` in as the fake's next login and returns the provider session id its ID token
/// carried.
async fn sign_in(env: &SignInEnv, b: &mut Browser) -> String {
    assert_eq!(b.sign_in("/a").await.status, 200);
    env.fake.issued().last().expect("an ID token").sid.clone()
}

/// Two browsers of alice, signed in through two different provider sessions.
async fn two_sessions(env: &SignInEnv) -> (Browser, String, Browser, String) {
    let mut first = env.browser();
    let sid1 = sign_in(env, &mut first).await;
    env.fake.end_session(&env.alice);
    let mut second = env.browser();
    let sid2 = sign_in(env, &mut second).await;
    assert_ne!(sid1, sid2);
    (first, sid1, second, sid2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_for_one_provider_session_ends_that_session_only() {
    let env = SignInEnv::start().await;
    let (mut first, sid1, mut second, _) = two_sessions(&env).await;

    let claims = env
        .fake
        .logout_token_claims(CLIENT_ID, Some(&env.alice), Some(&sid1));
    let r = post_logout(&env.gw, &env.fake.sign_logout_token(claims, None)).await;
    assert_ok(&r);

    let next = first.get("/a").await;
    assert_eq!(next.status, 302, "{}", next.text());
    assert!(
        location(&next).starts_with(&env.fake.base_url()),
        "sent to sign in: {}",
        location(&next)
    );
    assert!(
        signed_in(&mut second).await,
        "the other provider session's gateway session must stay"
    );
    // The ended browser signs in again as usual.
    assert_eq!(first.sign_in("/a").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_without_sid_ends_every_session_of_the_user() {
    let env = SignInEnv::start().await;
    let (mut first, _, mut second, _) = two_sessions(&env).await;

    let claims = env
        .fake
        .logout_token_claims(CLIENT_ID, Some(&env.alice), None);
    assert_ok(&post_logout(&env.gw, &env.fake.sign_logout_token(claims, None)).await);
    assert!(!signed_in(&mut first).await);
    assert!(!signed_in(&mut second).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_own_logout_token_for_the_current_session_works() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    sign_in(&env, &mut b).await;
    assert_ok(&post_logout(&env.gw, &env.fake.logout_token(CLIENT_ID, &env.alice)).await);
    assert!(!signed_in(&mut b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_replayed_tokens_are_refused_and_the_session_still_works() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let sid = sign_in(&env, &mut b).await;
    let fake = &env.fake;
    let claims = || fake.logout_token_claims(CLIENT_ID, Some(&env.alice), Some(&sid));
    let edited = |f: fn(&mut Value)| fake.sign_logout_token(claims(), Some(Tamper::claims(f)));
    let signed = |sign: Sign| fake.sign_logout_token(claims(), Some(Tamper::sign(sign)));

    let cases: Vec<(&str, String)> = vec![
        ("forged signature", signed(Sign::WrongKey)),
        ("alg none", signed(Sign::AlgNone)),
        (
            "HS256 keyed with the public key",
            signed(Sign::Hs256WithPublicKey),
        ),
        ("unknown kid", signed(Sign::UnknownKid)),
        (
            "another audience",
            edited(|c| c["aud"] = json!(["another-app"])),
        ),
        (
            "another issuer",
            edited(|c| c["iss"] = "https://oauth.id.jumpcloud.com/".into()),
        ),
        (
            "issuer without the trailing slash",
            edited(|c| {
                let iss = c["iss"].as_str().unwrap().trim_end_matches('/').to_owned();
                c["iss"] = iss.into();
            }),
        ),
        (
            "no events",
            edited(|c| {
                c.as_object_mut().unwrap().remove("events");
            }),
        ),
        (
            "another event",
            edited(|c| c["events"] = json!({"http://schemas.openid.net/event/other": {}})),
        ),
        ("nonce", edited(|c| c["nonce"] = "n0nce".into())),
        (
            "issued half an hour ago",
            edited(|c| {
                let iat = c["iat"].as_i64().unwrap() - 1800;
                c["iat"] = iat.into();
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "issued in the future",
            edited(|c| {
                let iat = c["iat"].as_i64().unwrap() + 1800;
                c["iat"] = iat.into();
            }),
        ),
        (
            "expired",
            edited(|c| {
                let exp = c["iat"].as_i64().unwrap() - 600;
                c["exp"] = exp.into();
            }),
        ),
        (
            "no jti",
            edited(|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "neither sub nor sid",
            edited(|c| {
                let c = c.as_object_mut().unwrap();
                c.remove("sub");
                c.remove("sid");
            }),
        ),
        (
            "an access token type",
            fake.sign_logout_token(
                claims(),
                Some(Tamper::header(|h| h["typ"] = "at+jwt".into())),
            ),
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    for (what, token) in &cases {
        assert_refused(&post_logout(&env.gw, token).await, what);
        assert!(
            signed_in(&mut b).await,
            "{what}: the session must still work"
        );
    }

    // An ID token is no logout token, even with the right sid.
    let id_token = fake.issued().last().unwrap().id_token.clone();
    assert_refused(&post_logout(&env.gw, &id_token).await, "ID token");

    // A valid token works once: the same token again is refused.
    let other = fake.logout_token_claims(CLIENT_ID, Some(&env.alice), Some("another-sid"));
    let token = fake.sign_logout_token(other, None);
    assert_ok(&post_logout(&env.gw, &token).await);
    assert!(signed_in(&mut b).await, "another sid ends nothing here");
    assert_refused(&post_logout(&env.gw, &token).await, "replayed jti");
    // Even the jti alone: a new token reusing it is a replay.
    let mut reused = claims();
    reused["jti"] =
        serde_json::from_slice::<Value>(&base64_claims(&token).expect("claims of the token"))
            .unwrap()["jti"]
            .clone();
    assert_refused(
        &post_logout(&env.gw, &fake.sign_logout_token(reused, None)).await,
        "replayed jti in a new token",
    );
    assert!(signed_in(&mut b).await);

    // Not a form, no token, two tokens, another method.
    let good = fake.sign_logout_token(claims(), None);
    let req = Request::post(PATH)
        .header("host", "app.test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"logout_token": good}).to_string(),
        )))
        .unwrap();
    assert_refused(&env.gw.client().send("app.test", req).await, "JSON body");
    assert_refused(&post_form(&env.gw, "token=x").await, "no logout_token");
    assert_refused(
        &post_form(
            &env.gw,
            &format!(
                "logout_token={}&logout_token={}",
                encode(&good),
                encode(&good)
            ),
        )
        .await,
        "two tokens",
    );
    let get = env.gw.client().get("app.test", PATH).await;
    assert_eq!(get.status, 405);
    assert_eq!(get.headers["allow"], "POST");
    assert!(signed_in(&mut b).await);

    // And the unused good token still works afterwards.
    assert_ok(&post_logout(&env.gw, &good).await);
    assert!(!signed_in(&mut b).await);
}

/// The decoded claims segment of a compact JWT.
fn base64_claims(token: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let part = token.split('.').nth(1)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

// ---------------------------------------------------------------------------------------
// Several instances sharing sessions through Redis (see tests/it/redis.rs)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_a_logout_received_by_one_instance_ends_the_session_on_every_instance() {
    let prefix = Prefix::new(&shared_url());
    let env = SignInEnv::start_with(Options {
        session: session_keys(&shared_url(), &prefix.0, ""),
        ..Options::default()
    })
    .await;
    let b_gw = env.another_gateway(&[]).await;

    // Two sessions on A through two provider sessions, both cached on A and known to B.
    let (mut first, sid1, mut second, _) = two_sessions(&env).await;
    let mut first_on_b = same_browser_on(&b_gw, &first);
    assert!(signed_in(&mut first_on_b).await);
    assert!(signed_in(&mut first).await);
    assert!(signed_in(&mut second).await);

    // The provider posts to B; A drops the session within a second.
    let claims = env
        .fake
        .logout_token_claims(CLIENT_ID, Some(&env.alice), Some(&sid1));
    let token = env.fake.sign_logout_token(claims, None);
    assert_ok(&post_logout(&b_gw, &token).await);
    let start = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), async || !signed_in(&mut first)
            .await)
        .await,
        "the back-channel logout on B did not reach A within a second"
    );
    assert!(start.elapsed() < Duration::from_millis(1100));
    assert!(!signed_in(&mut first_on_b).await);
    assert!(
        signed_in(&mut second).await,
        "the other provider session stays"
    );

    // The same token delivered to A is a replay, though A never saw it.
    assert_refused(
        &post_logout(&env.gw, &token).await,
        "replayed on another instance",
    );
    assert!(signed_in(&mut second).await);

    // Without sid, to A: every session of the user ends on B as well.
    let mut second_on_b = same_browser_on(&b_gw, &second);
    assert!(signed_in(&mut second_on_b).await);
    let claims = env
        .fake
        .logout_token_claims(CLIENT_ID, Some(&env.alice), None);
    assert_ok(&post_logout(&env.gw, &env.fake.sign_logout_token(claims, None)).await);
    assert!(
        eventually(Duration::from_secs(1), async || !signed_in(
            &mut second_on_b
        )
        .await)
        .await,
        "the logout by sub on A did not reach B within a second"
    );
    assert!(!signed_in(&mut second).await);
}
