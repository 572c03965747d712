//! The audit log, request ids and sign-in rate limits, end to end.

use crate::support;

use support::env::{Options, SignInEnv};
use support::site;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_and_sign_in_event_is_one_json_line_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let env = SignInEnv::start_with(Options {
        sites: Some(site(
            "app.test",
            &url,
            "protected",
            &[("/public", "public"), ("/blocked", "deny")],
        )),
        session: format!("\n[audit]\noutput = \"{}\"\n", log.display()),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    let page = b.sign_in("/x?y=1").await;
    assert_eq!(page.status, 200);
    let upstream_id = page
        .upstream_header("x-request-id")
        .expect("request id upstream");
    assert_eq!(
        page.headers["x-request-id"],
        upstream_id.as_str(),
        "the same id comes back to the client"
    );
    // The session cookie, taken while it exists, to look for in the log afterwards.
    let cookie = b
        .cookies
        .get("__Host-jumpgate")
        .map(|c| c.0.clone())
        .expect("signed in: a session cookie");
    assert!(cookie.len() > 20, "{cookie}");
    assert_eq!(b.get("/blocked").await.status, 403);
    assert_eq!(b.get("/public/a").await.status, 200);
    assert_eq!(b.get("/.jumpgate/logout").await.status, 302);
    // The logout is the last event: wait for its line rather than for a fixed time.
    assert!(
        support::eventually(std::time::Duration::from_secs(5), async || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"event\":\"logout\""))
        })
        .await,
        "no logout line in the audit log"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |event: &str, decision: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event && l["decision"] == decision)
            .unwrap_or_else(|| panic!("no {event}/{decision} line in:\n{text}"))
    };
    let first = find("access", "sign_in");
    assert_eq!(first["path"], "/x");
    assert_eq!(first["site"], "app.test");
    let signed_in = find("sign_in", "ok");
    assert_eq!(signed_in["user"], env.alice.as_str());
    assert_eq!(signed_in["email"], "alice@example.com");
    let allowed = lines
        .iter()
        .find(|l| l["event"] == "access" && l["decision"] == "allow" && l["path"] == "/x")
        .unwrap();
    assert_eq!(allowed["request_id"], upstream_id.as_str());
    assert_eq!(allowed["user"], env.alice.as_str());
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["client_ip"], "127.0.0.1");
    assert!(allowed["time"].as_str().unwrap().ends_with('Z'));
    let denied = find("access", "deny");
    assert_eq!(denied["reason"], "route_denies");
    assert_eq!(denied["route"], "/blocked");
    find("logout", "ok");
    // Nothing secret: the session cookie, tokens, client secret.
    for secret in [
        support::env::CLIENT_SECRET,
        "eyJ",
        "Bearer",
        cookie.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_endpoints_are_rate_limited_per_client() {
    let env = SignInEnv::start_with(Options {
        server: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        limits: "sign_in_rate = 3".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    for _ in 0..3 {
        assert_eq!(b.get("/.jumpgate/sign-in?rd=/").await.status, 302);
    }
    let r = b.get("/.jumpgate/sign-in?rd=/").await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    assert!(r.text().contains("Too many attempts"));
    // Protected navigations start sign-ins too, and count.
    assert_eq!(b.get("/deep").await.status, 429);
    // Another client (behind the trusted proxy) is not affected; ordinary traffic never is.
    let r = b
        .request(
            "GET",
            "/.jumpgate/sign-in?rd=/",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(b.get("/public/x").await.status, 200);
}

/// The events decided away from a page view are audited too: a forward-auth question (with
/// the client the front proxy names), the revocation of a user the directory no longer
/// admits, and a back-channel logout from the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_revocations_and_back_channel_logouts_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let env = SignInEnv::start_with(Options {
        server: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        session: format!("\n[audit]\noutput = \"{}\"\n", log.display()),
        directory: Some(String::new()),
        ..Options::default()
    })
    .await;

    // Forward-auth on server.verify_listen, for a client behind the front proxy.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/x").await.status, 200);
    let cookie = b.cookie_header().unwrap();
    let (status, _) = support::ask_verify(
        env.gw.verify,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/asked/by/nginx"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-request-id", "nginx-7f3a"),
            ("cookie", &cookie),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let lines = support::audit_lines(&log, |l| l["path"] == "/asked/by/nginx").await;
    let asked = lines
        .iter()
        .find(|l| l["path"] == "/asked/by/nginx")
        .unwrap();
    assert_eq!(asked["event"], "access");
    assert_eq!(asked["decision"], "allow");
    assert_eq!(asked["user"], env.alice.as_str());
    assert_eq!(asked["client_ip"], "198.51.100.7");
    assert!(asked["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(
        asked["request_id"], "nginx-7f3a",
        "the trusted front proxy's request id, as on the public listener"
    );

    // Suspended: the next request is refused and every session of the user revoked.
    env.fake.update_user(&env.alice, |u| u.suspend());
    assert!(
        support::eventually(std::time::Duration::from_secs(5), async || b
            .get("/x")
            .await
            .status
            == 403)
        .await
    );
    let lines = support::audit_lines(&log, |l| l["event"] == "revocation").await;
    let revoked = lines
        .iter()
        .find(|l| l["event"] == "revocation")
        .expect("a revocation line");
    assert_eq!(revoked["user"], env.alice.as_str());
    assert_eq!(revoked["reason"], "inactive_user");
    env.fake.update_user(&env.alice, |u| u.reactivate());

    // A back-channel logout from the provider.
    let bob = env.fake.add_user(support::jumpcloud::User::new("bob"));
    let staff = env.group_id("Staff");
    env.fake.add_member(&staff, &bob);
    env.fake.set_next_login(Some(&bob));
    env.wait_for_a_sync().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/y").await.status, 200);
    let sid = env.fake.issued().last().unwrap().sid.clone();
    let claims = env
        .fake
        .logout_token_claims(support::env::CLIENT_ID, Some(&bob), Some(&sid));
    let token = env.fake.sign_logout_token(claims, None);
    let req = http::Request::post("/.jumpgate/backchannel-logout")
        .header("host", "app.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "logout_token={}",
            support::jumpcloud::encode(&token)
        ))))
        .unwrap();
    assert_eq!(env.gw.client().send("app.test", req).await.status, 200);
    let lines = support::audit_lines(&log, |l| l["event"] == "backchannel_logout").await;
    let out = lines
        .iter()
        .find(|l| l["event"] == "backchannel_logout")
        .expect("a back-channel logout line");
    assert_eq!(out["user"], bob.as_str());
    assert_eq!(out["decision"], "ok");
    assert_eq!(out["reason"], "provider_session");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&token), "the logout token is never written");
}
