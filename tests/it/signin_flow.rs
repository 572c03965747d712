//! Sign-in beyond the happy path: logout, refresh, session expiry, client authentication,
//! issuer spelling, claim quirks, provider refusals and outages, the signed assertion and
//! per-site identity header names. Everything runs against the fake JumpCloud.

use crate::support;

use support::browser::sets_session;
use support::env::is_idp_redirect;
use support::unix_now;
use support::SESSION;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use support::browser::{location, query_param, set_cookies, Browser};
use support::env::{Custom, Options, SignInEnv, CLIENT_ID};
use support::jumpcloud::{ClientAuth, EmailVerified, FakeJumpCloud};
use support::site;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A protected navigation from `b` is sent to sign in: the browser has no session.
async fn assert_no_session(env: &SignInEnv, b: &mut Browser, ctx: &str) {
    let r = b.get("/protected/after").await;
    assert!(
        is_idp_redirect(env, &r),
        "{ctx}: expected a redirect to sign in, got {} {:?} {}",
        r.status,
        r.headers.get("location"),
        r.text()
    );
}

/// A protected request from `b` reaches the upstream as alice.
async fn assert_signed_in(env: &SignInEnv, b: &mut Browser, path: &str, ctx: &str) {
    let r = b.get(path).await;
    assert_eq!(r.status, 200, "{ctx}: {}", r.text());
    assert_eq!(
        r.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str()),
        "{ctx}"
    );
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Token requests the fake received with `grant_type=refresh_token`.
fn refresh_requests(fake: &FakeJumpCloud) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| {
            r.path == "/oauth2/token" && r.form_param("grant_type") == Some("refresh_token")
        })
        .map(|r| r.form_param("refresh_token").unwrap_or("").to_owned())
        .collect()
}

/// Tokens the fake issued by the refresh grant.
fn refreshes_issued(fake: &FakeJumpCloud) -> usize {
    fake.issued()
        .iter()
        .filter(|i| i.grant_type == "refresh_token")
        .count()
}

/// The claims of a JWT, unverified.
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn two_sites(env_echo: &str) -> String {
    format!(
        "{}{}",
        site("app.test", env_echo, "protected", &[("/public", "public")]),
        site("other.test", env_echo, "protected", &[])
    )
}

// ---------------------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_here_and_at_the_provider() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/before").await.status, 200);
    let id_token = env.fake.issued().last().unwrap().id_token.clone();
    let before_logout = b.clone();
    assert!(before_logout.cookie(SESSION).is_some());

    let out = b.get("/.jumpgate/logout").await;
    assert_eq!(out.status, 302, "{}", out.text());
    let to = location(&out);
    assert!(
        to.starts_with(&format!("{}/oauth2/sessions/logout?", env.fake.base_url())),
        "logout goes to the provider's end_session_endpoint: {to}"
    );
    assert_eq!(
        query_param(&to, "client_id").as_deref(),
        Some(support::env::CLIENT_ID),
        "the logout names the client"
    );
    assert_eq!(
        query_param(&to, "id_token_hint"),
        None,
        "the ID token never travels in a URL: {to}"
    );
    assert!(!to.contains(&id_token), "{to}");
    let cleared = set_cookies(&out);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with(&format!("{SESSION}=;")) && c.contains("Max-Age=0")),
        "the session cookie is cleared: {cleared:?}"
    );
    assert!(b.cookie(SESSION).is_none());
    assert_eq!(
        out.headers.get("clear-site-data").map(|v| v.as_bytes()),
        Some(&b"\"cache\""[..]),
        "pages seen while signed in are dropped from the browser's cache"
    );

    // The provider accepts the hint and ends its own session.
    let ended = env.fake.sessions_ended();
    let idp = support::browser::idp_get(&to).await;
    assert_eq!(idp.status, 200, "{}", idp.text());
    assert_eq!(env.fake.sessions_ended(), ended + 1);

    // The browser itself is signed out...
    assert_no_session(&env, &mut b, "after logout").await;
    // ...and so is anyone replaying the old cookie value: the session is gone server-side.
    let mut replay = before_logout;
    let r = replay.get("/before").await;
    assert!(
        is_idp_redirect(&env, &r),
        "old cookie replayed after logout still works: {} {}",
        r.status,
        r.text()
    );
    let info = replay.get("/.jumpgate/userinfo").await;
    assert_eq!(info.status, 401, "{}", info.text());
}

type LogoutCase<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// A page made for one signed-in user is marked `private`, so no shared cache in front of
/// the gateway hands it to anyone else; an upstream that chose its own caching keeps it, and
/// public pages are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_pages_are_private_unless_the_upstream_says_otherwise() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let page = b.sign_in("/mine").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers.get("cache-control").unwrap(), "private");
    let own = b.get("/cached/logo").await;
    assert_eq!(own.status, 200);
    assert_eq!(
        own.headers.get("cache-control").unwrap(),
        "public, max-age=60"
    );
    let public = b.get("/public/x").await;
    assert_eq!(public.status, 200);
    assert!(public.headers.get("cache-control").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_from_another_site_is_refused_and_keeps_the_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/keep").await.status, 200);
    let port = env.gw.addr.port();
    let own_origin = format!("https://app.test:{port}");
    // (what, method, headers)
    let cases: Vec<LogoutCase> = vec![
        (
            "GET Sec-Fetch-Site cross-site",
            "GET",
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "GET Sec-Fetch-Site same-site (a sibling subdomain)",
            "GET",
            vec![("sec-fetch-site", "same-site")],
        ),
        (
            "GET foreign Origin",
            "GET",
            vec![("origin", "https://evil.example")],
        ),
        (
            "POST foreign Origin",
            "POST",
            vec![
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "POST foreign Origin, no Sec-Fetch-Site",
            "POST",
            vec![("origin", "https://evil.example")],
        ),
        ("POST Origin null", "POST", vec![("origin", "null")]),
        (
            "POST Origin of another site on this gateway",
            "POST",
            vec![("origin", "https://other.test")],
        ),
        (
            "POST same-origin fetch metadata with a foreign Origin",
            "POST",
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://app.test.evil.example"),
            ],
        ),
    ];
    for (name, method, headers) in &cases {
        let r = b.request(method, "/.jumpgate/logout", headers).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert!(
            !set_cookies(&r).iter().any(|c| c.starts_with(SESSION)),
            "{name}: a refused logout must not touch the cookie"
        );
        assert_signed_in(&env, &mut b, "/keep", name).await;
    }
    assert_eq!(env.fake.sessions_ended(), 0);

    // The same request from our own origin signs out.
    let r = b
        .request(
            "POST",
            "/.jumpgate/logout",
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", own_origin.as_str()),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_no_session(&env, &mut b, "after a same-origin logout").await;
}

// ---------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_in_the_background_and_the_session_keeps_working() {
    let env = SignInEnv::start().await;
    // Below the gateway's 300 s refresh margin: every protected request wants a refresh.
    env.fake
        .quirks(|q| q.id_token_ttl = Duration::from_secs(200));
    let mut b = env.browser();
    let page = b.sign_in("/refresh").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let first = env.fake.issued()[0].clone();
    assert_eq!(first.grant_type, "authorization_code");

    wait_until("a refresh_token grant", Duration::from_secs(5), || {
        !refresh_requests(&env.fake).is_empty()
    })
    .await;
    assert_eq!(
        refresh_requests(&env.fake)[0],
        first.refresh_token.clone().unwrap(),
        "the refresh uses the refresh token from the sign-in"
    );
    wait_until("the refresh to be issued", Duration::from_secs(5), || {
        refreshes_issued(&env.fake) >= 1
    })
    .await;
    // The rotated refresh token must be the one used next: the fake, like Hydra, revokes the
    // whole family when a used refresh token comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_signed_in(&env, &mut b, "/refresh/2", "after the first refresh").await;
    wait_until("a second refresh", Duration::from_secs(5), || {
        refreshes_issued(&env.fake) >= 2
    })
    .await;
    let issued = env.fake.issued();
    assert_eq!(
        refresh_requests(&env.fake)[1],
        issued[1].refresh_token.clone().unwrap(),
        "the second refresh uses the rotated refresh token"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_signed_in(&env, &mut b, "/refresh/3", "after the second refresh").await;

    // Logout names the client and carries no ID token, first or refreshed.
    let out = b.get("/.jumpgate/logout").await;
    let to = location(&out);
    assert_eq!(query_param(&to, "id_token_hint"), None, "{to}");
    for issued in env.fake.issued() {
        assert!(!to.contains(&issued.id_token), "an ID token in {to}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_ends_the_session() {
    let env = SignInEnv::start().await;
    env.fake
        .quirks(|q| q.id_token_ttl = Duration::from_secs(200));
    let mut b = env.browser();
    // Signed in, but no protected request yet, so no refresh has happened.
    let cb = b.sign_in_callback("/suspend").await;
    assert_eq!(cb.status, 302, "{}", cb.text());
    assert!(b.cookie(SESSION).is_some());
    assert!(refresh_requests(&env.fake).is_empty());

    env.fake.update_user(&env.alice, |u| u.suspend());
    // This request is still allowed; it starts the refresh, which the provider refuses.
    assert_signed_in(&env, &mut b, "/suspend", "before the refresh answer").await;
    wait_until("the refresh attempt", Duration::from_secs(5), || {
        !refresh_requests(&env.fake).is_empty()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = b.get("/suspend").await;
        if is_idp_redirect(&env, &r) {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "the session outlived a refused refresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refreshes_issued(&env.fake), 0, "the provider refused");
    let info = b.get("/.jumpgate/userinfo").await;
    assert_eq!(info.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_updates_the_groups_sent_upstream() {
    let env = SignInEnv::start().await;
    env.fake
        .quirks(|q| q.id_token_ttl = Duration::from_secs(200));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/groups").await;
    assert_eq!(cb.status, 302, "{}", cb.text());
    // Still bound through Staff, so the refresh succeeds, with fewer groups.
    env.fake.remove_member(&env.group_id("Admins"), &env.alice);
    let r = b.get("/groups").await;
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );
    wait_until("the refresh", Duration::from_secs(5), || {
        refreshes_issued(&env.fake) >= 1
    })
    .await;
    let refreshed = env
        .fake
        .issued()
        .into_iter()
        .find(|i| i.grant_type == "refresh_token")
        .unwrap();
    assert_eq!(jwt_claims(&refreshed.id_token)["memberOf"], "Staff");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = b.get("/groups").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Staff"),
        "the provider's refreshed, verified ID token no longer has Admins"
    );
    let assertion = r.upstream_header("x-jumpgate-assertion").unwrap();
    assert_eq!(
        jwt_claims(&assertion)["groups"],
        serde_json::json!(["Staff"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_signing_in_at_once_both_land() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    // Two tabs hit protected pages while signed out; both go to the provider.
    let one = b.authorize("/one").await;
    let two = b.authorize("/two").await;
    let r = b.follow(&one).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(location(&r), "/one");
    let r = b.follow(&two).await;
    assert_eq!(
        r.status,
        302,
        "the second tab is refused although the browser is signed in: {}",
        r.text()
    );
    assert_eq!(location(&r), "/two");
    assert_signed_in(&env, &mut b, "/two", "second tab").await;
}

// ---------------------------------------------------------------------------------------
// Session lifetime and idle timeout
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_their_absolute_lifetime() {
    let env = SignInEnv::start_with(Options {
        session: "lifetime = \"2s\"".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/life").await.status, 200);
    let attrs = b.cookies[SESSION].1.clone();
    assert!(attrs.contains("Max-Age=2"), "{attrs}");
    assert_signed_in(&env, &mut b, "/life", "within the lifetime").await;
    env.gw.advance(Duration::from_secs(3));
    // The browser still sends the cookie (as one ignoring Max-Age would): the server decides.
    assert!(b.cookie(SESSION).is_some());
    assert_no_session(&env, &mut b, "after the lifetime").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_after_the_idle_timeout_but_not_while_used() {
    let env = SignInEnv::start_with(Options {
        session: "idle_timeout = \"2s\"".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/idle").await.status, 200);
    for i in 1..=4 {
        env.gw.advance(Duration::from_secs(1));
        assert_signed_in(&env, &mut b, "/idle", &format!("request {i} s into use")).await;
    }
    env.gw.advance(Duration::from_secs(3));
    assert_no_session(&env, &mut b, "after 3 s idle").await;
}

// ---------------------------------------------------------------------------------------
// Client authentication
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_signs_in() {
    let env = SignInEnv::start_with(Options {
        oidc: "client_auth = \"post\"".into(),
        ..Options::default()
    })
    .await;
    env.fake
        .update_app(CLIENT_ID, |a| a.auth = ClientAuth::Post);
    let mut b = env.browser();
    let page = b.sign_in("/post").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let token = env
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/oauth2/token")
        .unwrap();
    assert_eq!(token.form_param("client_id"), Some(CLIENT_ID));
    assert!(token.form_param("client_secret").is_some());
    assert!(token.header("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_authentication_mismatch_fails_the_sign_in() {
    // Gateway basic, app registered for post.
    let env = SignInEnv::start().await;
    env.fake
        .update_app(CLIENT_ID, |a| a.auth = ClientAuth::Post);
    let mut b = env.browser();
    let cb = b.sign_in_callback("/mismatch").await;
    assert_eq!(cb.status, 502, "{}", cb.text());
    assert!(cb.text().contains("Sign-in failed"), "{}", cb.text());
    assert!(!sets_session(&cb));
    assert_no_session(&env, &mut b, "basic vs post").await;

    // Gateway post, app registered for basic.
    let env = SignInEnv::start_with(Options {
        oidc: "client_auth = \"post\"".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    let cb = b.sign_in_callback("/mismatch").await;
    assert_eq!(cb.status, 502, "{}", cb.text());
    assert!(cb.text().contains("Sign-in failed"), "{}", cb.text());
    assert!(!sets_session(&cb));
    assert_no_session(&env, &mut b, "post vs basic").await;
}

// ---------------------------------------------------------------------------------------
// Issuer spelling
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_typed_without_the_trailing_slash_works() {
    let env = SignInEnv::start_custom(
        Options::default(),
        Custom {
            issuer: Some(|base| base.to_owned()),
            ..Custom::default()
        },
    )
    .await;
    let config = std::fs::read_to_string(&env.gw.config_path).unwrap();
    assert!(
        config.contains(&format!("issuer = \"{}\"\n", env.fake.base_url())),
        "the config names the issuer without its slash"
    );
    let mut b = env.browser();
    let page = b.sign_in("/iss").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let iss = jwt_claims(&env.fake.issued()[0].id_token)["iss"].clone();
    assert_eq!(
        iss,
        format!("{}/", env.fake.base_url()),
        "tokens carry the slash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_issuer_without_slash_wins_over_config_with_slash() {
    let env = SignInEnv::start_custom(
        Options::default(),
        Custom {
            issuer: Some(|base| format!("{base}/")),
            quirks: Some(|q| q.issuer_trailing_slash = false),
            ..Custom::default()
        },
    )
    .await;
    let mut b = env.browser();
    let page = b.sign_in("/iss").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let iss = jwt_claims(&env.fake.issued()[0].id_token)["iss"].clone();
    assert_eq!(iss, env.fake.base_url(), "tokens carry no slash");
}

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_email_verified_spelling_jumpcloud_writes_signs_in() {
    let env = SignInEnv::start().await;
    for variant in [
        EmailVerified::StringTrue,
        EmailVerified::Bool,
        EmailVerified::Absent,
    ] {
        env.fake.quirks(|q| q.email_verified = variant);
        let mut b = env.browser();
        let page = b.sign_in("/ev").await;
        assert_eq!(page.status, 200, "{variant:?}: {}", page.text());
        assert_eq!(
            page.upstream_header("x-jumpgate-email").as_deref(),
            Some("alice@example.com"),
            "{variant:?}"
        );
        let claims = jwt_claims(&env.fake.issued().last().unwrap().id_token);
        match variant {
            EmailVerified::Absent => assert!(claims.get("email_verified").is_none()),
            _ => assert!(claims.get("email_verified").is_some()),
        }
    }
}

/// An `email_verified` of "1" (an admin's hand-typed constant attribute) is not a boolean
/// openidconnect reads: the sign-in fails closed, with no session, and the log names
/// the claim so the admin knows what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_verified_of_one_fails_the_sign_in_and_says_why() {
    let env = SignInEnv::start().await;
    env.fake
        .quirks(|q| q.email_verified = EmailVerified::StringOne);
    let mut b = env.browser();
    let cb = b.sign_in_callback("/ev").await;
    assert_eq!(cb.status, 502, "{}", cb.text());
    assert!(cb.text().contains("Sign-in failed"), "{}", cb.text());
    assert!(!support::browser::sets_session(&cb));
    let claims = jwt_claims(&env.fake.issued().last().unwrap().id_token);
    assert_eq!(claims["email_verified"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_is_a_header_and_no_group_is_no_header() {
    let env = SignInEnv::start().await;
    env.fake.remove_member(&env.group_id("Staff"), &env.alice);
    let mut b = env.browser();
    let page = b.sign_in("/groups").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let claims = jwt_claims(&env.fake.issued().last().unwrap().id_token);
    assert_eq!(claims["memberOf"], "Admins", "one group is a bare string");
    assert_eq!(
        page.upstream_header_all("x-jumpgate-groups"),
        vec!["Admins".to_owned()]
    );

    // Bound directly, in no group: no groups claim at all.
    env.fake
        .update_app(CLIENT_ID, |a| a.bound_users.push(env.alice.clone()));
    env.fake.remove_member(&env.group_id("Admins"), &env.alice);
    let mut b = env.browser();
    let page = b.sign_in("/groups").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let claims = jwt_claims(&env.fake.issued().last().unwrap().id_token);
    assert!(claims.get("memberOf").is_none());
    assert!(
        page.upstream_header("x-jumpgate-groups").is_none(),
        "{:?}",
        page.upstream_header("x-jumpgate-groups")
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str())
    );
    let info = b.get("/.jumpgate/userinfo").await;
    assert_eq!(info.json()["groups"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------
// Provider refusals and outages
// ---------------------------------------------------------------------------------------

/// Walks a sign-in the provider refuses and checks the gateway's answer.
async fn assert_refused_by_provider(env: &SignInEnv, name: &str) {
    let mut b = env.browser();
    let idp = b.authorize("/refused").await;
    let back = location(&idp);
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("access_denied"),
        "{name}: the fake refuses: {back}"
    );
    let cb = b.follow(&idp).await;
    assert_eq!(cb.status, 403, "{name}: {}", cb.text());
    assert!(
        cb.text().contains("Sign-in refused"),
        "{name}: {}",
        cb.text()
    );
    assert!(
        cb.text().contains("refused the sign-in"),
        "{name}: {}",
        cb.text()
    );
    assert!(!sets_session(&cb), "{name}");
    assert!(b.cookie(SESSION).is_none(), "{name}");
    assert_no_session(env, &mut b, name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_refusal_shows_a_403_and_creates_no_session() {
    let env = SignInEnv::start().await;
    env.fake.update_user(&env.alice, |u| u.suspend());
    assert_refused_by_provider(&env, "suspended").await;

    env.fake.update_user(&env.alice, |u| u.reactivate());
    env.fake.remove_member(&env.group_id("Admins"), &env.alice);
    env.fake.remove_member(&env.group_id("Staff"), &env.alice);
    assert_refused_by_provider(&env, "unbound").await;

    assert!(env.fake.issued().is_empty(), "no tokens were ever issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_keeps_sessions_and_fails_new_sign_ins_cleanly() {
    let env = SignInEnv::start().await;
    // Short ID tokens so requests during the outage also attempt (and fail) a refresh.
    env.fake
        .quirks(|q| q.id_token_ttl = Duration::from_secs(200));
    let mut a = env.browser();
    assert_eq!(a.sign_in("/a").await.status, 200);
    wait_until("the first refresh", Duration::from_secs(5), || {
        refreshes_issued(&env.fake) >= 1
    })
    .await;
    // Let the gateway store the refreshed tokens before the provider disappears.
    tokio::time::sleep(Duration::from_millis(300)).await;

    env.fake.stop().await;
    for i in 0..4 {
        assert_signed_in(
            &env,
            &mut a,
            "/a",
            &format!("request {i} during the outage"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A new browser: the gateway still knows the provider, so it is sent there (and the
    // connection fails), or it is told sign-in is unavailable.
    let mut b = env.browser();
    let r = b.get("/b").await;
    if r.status == 302 {
        assert!(is_idp_redirect(&env, &r), "{:?}", r.headers);
        assert!(
            tokio::net::TcpStream::connect(env.fake.addr())
                .await
                .is_err(),
            "the provider is down"
        );
    } else {
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("Sign-in unavailable"));
    }

    // The provider disappears between authorization and callback.
    env.fake.restart().await;
    let mut c = env.browser();
    let idp = c.authorize("/c").await;
    env.fake.stop().await;
    let cb = c.follow(&idp).await;
    assert_eq!(cb.status, 503, "{}", cb.text());
    assert!(cb.text().contains("Sign-in unavailable"), "{}", cb.text());
    assert!(!sets_session(&cb));
    env.fake.restart().await;
    assert_no_session(&env, &mut c, "callback while the provider was down").await;

    // The token endpoint fails.
    env.fake.faults(|f| f.token_status = Some(503));
    let mut d = env.browser();
    let cb = d.sign_in_callback("/d").await;
    assert_eq!(cb.status, 503, "{}", cb.text());
    assert!(cb.text().contains("Sign-in unavailable"), "{}", cb.text());
    assert!(!sets_session(&cb));
    assert!(d.cookie(SESSION).is_none());
    assert_no_session(&env, &mut d, "token endpoint 503").await;

    // Back to normal: a new sign-in works.
    env.fake.faults(|f| f.token_status = None);
    let mut e = env.browser();
    let page = e.sign_in("/e").await;
    assert_eq!(page.status, 200, "{}", page.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_started_while_the_provider_is_down_becomes_ready_later() {
    let env = SignInEnv::start_custom(
        Options::default(),
        Custom {
            fake_down: true,
            ..Custom::default()
        },
    )
    .await;
    let started = Instant::now();
    // Wait until the public listener serves, so readiness reflects only the provider.
    let mut b = env.browser();
    let public = b.get("/public/x").await;
    assert_eq!(public.status, 200, "public routes need no provider");
    let (status, body) = env.gw.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("identity provider"), "{body}");

    let nav = b.get("/x").await;
    assert_eq!(nav.status, 503, "{}", nav.text());
    assert!(nav.text().contains("Sign-in unavailable"), "{}", nav.text());
    let start = b.get("/.jumpgate/sign-in?rd=%2Fx").await;
    assert_eq!(start.status, 503, "{}", start.text());
    assert!(b.cookie(SESSION).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "checks took too long"
    );

    env.fake.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.gw.admin_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = b.sign_in("/x").await;
    assert_eq!(page.status, 200, "{}", page.text());
}

// ---------------------------------------------------------------------------------------
// Assertion and header names
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assertion_verifies_against_the_published_key() {
    let echo = support::Echo::start().await;
    let env = SignInEnv::start_with(Options {
        sites: Some(two_sites(&echo.url())),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    let page = b.sign_in("/assert").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let token = page
        .upstream_header("x-jumpgate-assertion")
        .expect("an assertion");
    let auth_time = env.fake.issued()[0].auth_time;

    let jwks = b.get("/.jumpgate/jwks.json").await;
    assert_eq!(jwks.status, 200);
    let jwks = jwks.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["alg"], "ES256");
    assert!(k.get("d").is_none(), "no private part published");
    let key = DecodingKey::from_ec_components(k["x"].as_str().unwrap(), k["y"].as_str().unwrap())
        .unwrap();

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), k["kid"].as_str());

    let validation = |aud: &str| {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&["jumpgate"]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        v.leeway = 0;
        v
    };
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation("app.test"))
        .unwrap_or_else(|e| panic!("assertion does not verify: {e}"));
    let c = data.claims;
    assert_eq!(c["iss"], "jumpgate");
    assert_eq!(c["aud"], "app.test");
    assert_eq!(c["sub"], env.alice.as_str());
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["groups"], serde_json::json!(["Admins", "Staff"]));
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert!(exp > iat && exp - iat <= 300, "iat {iat} exp {exp}");
    assert!((iat - unix_now()).abs() <= 5, "iat is now");
    assert_eq!(c["auth_time"].as_i64(), Some(auth_time));

    // Only for this site: it does not verify for another audience...
    assert!(jsonwebtoken::decode::<Value>(&token, &key, &validation("other.test")).is_err());
    // ...and a tampered payload does not verify at all.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = c.clone();
    forged["sub"] = "someone-else".into();
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    assert!(
        jsonwebtoken::decode::<Value>(&parts.join("."), &key, &validation("app.test")).is_err()
    );

    // The other site gets its own audience.
    let mut o = Browser::new(env.gw.client(), "other.test");
    let page = o.sign_in("/assert").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let token = page.upstream_header("x-jumpgate-assertion").unwrap();
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation("other.test")).unwrap();
    assert_eq!(data.claims["aud"], "other.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_header_names_are_used_and_cannot_be_forged() {
    let echo = support::Echo::start().await;
    let sites = format!(
        "[[site]]\nhost = \"app.test\"\nupstream = \"{0}\"\naccess = \"protected\"\n  [site.headers]\n  user = \"X-Auth-User-Id\"\n  [[site.route]]\n  path = \"/public\"\n  access = \"public\"\n{1}",
        echo.url(),
        site("other.test", &echo.url(), "protected", &[])
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    let page = b.sign_in("/h").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.upstream_header_all("x-auth-user-id"),
        vec![env.alice.clone()]
    );
    assert!(
        page.upstream_header("x-jumpgate-user").is_none(),
        "the renamed header replaces the default"
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-email").as_deref(),
        Some("alice@example.com"),
        "names not configured keep their defaults"
    );

    for forged in [
        ("X-Auth-User-Id", "forged"),
        ("x_auth_user_id", "forged"),
        ("X-AUTH-USER-ID", "forged"),
    ] {
        let r = b.request("GET", "/h", &[forged]).await;
        assert_eq!(r.status, 200, "{forged:?}");
        assert_eq!(
            r.upstream_header_all("x-auth-user-id"),
            vec![env.alice.clone()],
            "{forged:?}"
        );
        assert!(!r.text().contains("forged"), "{forged:?}: {}", r.text());
        // On a public route there is no identity, and the forged one is removed too.
        let r = b.request("GET", "/public/h", &[forged]).await;
        assert_eq!(r.status, 200);
        assert!(!r.text().contains("forged"), "{forged:?}: {}", r.text());
        assert!(r.upstream_header("x-auth-user-id").is_none());
    }

    // Another site with the default names: the configured name is still never forwarded.
    let mut o = Browser::new(env.gw.client(), "other.test");
    assert_eq!(o.sign_in("/h").await.status, 200);
    let r = o
        .request("GET", "/h", &[("X-Auth-User-Id", "forged")])
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("forged"), "{}", r.text());
    assert_eq!(
        r.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str())
    );
}
