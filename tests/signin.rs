//! Sign-in end to end against the fake JumpCloud: the code flow with PKCE, state and nonce,
//! sessions, identity upstream, logout, refresh, expiry, and every refusal.

mod support;

use support::browser::location;
use support::env::SignInEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_link_sign_in_returns_signed_in_with_identity() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let page = b.sign_in("/deep/link?x=1").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.upstream_path(), "/deep/link?x=1");
    assert_eq!(
        page.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str())
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );
    assert!(page.upstream_header("x-jumpgate-assertion").is_some());
    let (value, attrs) = b
        .cookies
        .get("__Host-jumpgate")
        .expect("session cookie")
        .clone();
    assert_eq!(value.len(), 87);
    assert_eq!(
        attrs
            .split("; ")
            .filter(|a| !a.starts_with("Max-Age"))
            .collect::<Vec<_>>(),
        vec!["Path=/", "Secure", "HttpOnly", "SameSite=Lax"]
    );
    let info = b.get("/.jumpgate/userinfo").await;
    assert_eq!(info.json()["sub"], env.alice.as_str());
    assert!(
        !info.text().contains("eyJ"),
        "userinfo must not carry tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_clients_get_401_with_sign_in_url() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let r = b
        .request("GET", "/api/x", &[("accept", "application/json")])
        .await;
    assert_eq!(r.status, 401);
    let url = r.json()["sign_in_url"].as_str().unwrap().to_owned();
    assert!(url.ends_with("/.jumpgate/sign-in?rd=%2Fapi%2Fx"), "{url}");
    let r = b.request("POST", "/api/x", &[]).await;
    assert_eq!(r.status, 401);
    let r = b.get("/public/x").await;
    assert_eq!(r.status, 200);
    let start = b.get("/.jumpgate/sign-in?rd=%2Fapi%2Fx").await;
    assert_eq!(start.status, 302);
    assert!(location(&start).starts_with(&env.fake.base_url()));
}
