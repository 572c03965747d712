//! The audit log, request ids and sign-in rate limits, end to end.

mod support;

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
    assert_eq!(b.get("/blocked").await.status, 403);
    assert_eq!(b.get("/public/a").await.status, 200);
    assert_eq!(b.get("/.jumpgate/logout").await.status, 302);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

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
    let cookie = b
        .cookies
        .get("__Host-jumpgate")
        .map(|c| c.0.clone())
        .unwrap_or_default();
    for secret in [support::env::CLIENT_SECRET, "eyJ", "Bearer"] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    if !cookie.is_empty() {
        assert!(!text.contains(&cookie));
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
