//! The admin listener's status page: `/status` in HTML and JSON tells a failing sync,
//! refusals, failed sign-ins and upstream errors as they happen, names groups that admit no
//! one, leaks nothing, and is never on the public listener.

use crate::support;

use std::time::Duration;

use support::env::{Options, SignInEnv, CLIENT_SECRET};
use support::eventually;
use support::jumpcloud::User;
use support::site;

pub(crate) async fn start() -> SignInEnv {
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    // other.test's upstream is a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let sites = format!(
        "{}  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n  [[site.route]]\n  path = \"/finance\"\n  allow_groups = [\"Finance\"]\n{}",
        site("app.test", &url, "protected", &[("/public", "public")]),
        site("other.test", &dead, "public", &[]),
    );
    SignInEnv::start_with(Options {
        sites: Some(sites),
        directory: Some("max_staleness = \"1h\"\n".to_owned()),
        ..Options::default()
    })
    .await
}

async fn status_json(env: &SignInEnv) -> serde_json::Value {
    let (code, body) = env.gw.admin_get("/status.json").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_tells_what_is_wrong_and_leaks_nothing() {
    let env = start().await;
    let staff = env.group_id("Staff");
    let bob = env.fake.add_user(User::new("bob"));
    env.fake.add_member(&staff, &bob);
    env.wait_for_a_sync().await;

    let s = status_json(&env).await;
    assert_eq!(s["ready"], true, "{s:#}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    let names = s["certificate"]["names"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "app.test"), "{s:#}");
    assert!(
        s["certificate"]["days_left"].as_i64().unwrap() > 14,
        "{s:#}"
    );
    let d = &s["directory"];
    assert_eq!(d["fresh"], true, "{s:#}");
    assert_eq!(d["users"], 2, "{s:#}");
    assert_eq!(d["max_staleness_seconds"], 3600);
    assert!(d["age_seconds"].as_i64().unwrap() < 60, "{s:#}");
    assert_eq!(d["last_error"], serde_json::Value::Null);
    assert_eq!(
        d["warnings"],
        serde_json::json!([
            "group \"Finance\" named in the configuration does not exist in the directory; it admits no one"
        ])
    );
    assert_eq!(s["sessions"]["store"], "memory");
    assert_eq!(s["sessions"]["reachable"], true);
    assert!(
        s["config"].as_str().unwrap().contains("app.test -> "),
        "{s:#}"
    );

    // A sign-in, a refusal, a replayed callback and an upstream failure, counted by kind.
    env.fake.set_next_login(Some(&bob));
    let mut b = env.browser();
    assert_eq!(b.sign_in("/dashboard").await.status, 200);
    assert_eq!(b.get("/admin/x").await.status, 403);
    assert_eq!(b.get("/admin/y").await.status, 403);
    assert_eq!(
        b.get("/.jumpgate/callback?code=x&state=forged")
            .await
            .status,
        400
    );
    let mut other = support::browser::Browser::new(env.gw.client(), "other.test");
    assert_eq!(other.get("/").await.status, 502);
    let s = status_json(&env).await;
    let hour = &s["last_hour"];
    assert_eq!(hour["sign_ins"]["ok"], 1, "{s:#}");
    assert_eq!(hour["sign_ins"]["expired_or_replayed"], 1, "{s:#}");
    assert_eq!(hour["denials"]["not_in_allowed_groups"], 2, "{s:#}");
    assert_eq!(hour["upstream_errors"]["other.test"], 1, "{s:#}");

    // The page for people says the same, and says the warning first.
    let (code, html) = env.gw.admin_get("/status").await;
    assert_eq!(code, 200);
    for want in [
        "<span class=\"ok\">ready</span>",
        "group &quot;Finance&quot; named in the configuration does not exist",
        "not_in_allowed_groups 2",
        "other.test 1",
        "2 users, 2 groups",
    ] {
        assert!(
            html.contains(want),
            "{want:?} missing from the page:\n{html}"
        );
    }

    // Nothing secret on either: not the client secret, the directory key, a session
    // cookie, a signing key.
    let cookie = b.cookie_header().unwrap();
    let session = cookie
        .split("; ")
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1;
    let json = env.gw.admin_get("/status.json").await.1;
    for page in [&html, &json] {
        for secret in [CLIENT_SECRET, &env.fake.api_key(), session, "PRIVATE KEY"] {
            assert!(!page.contains(secret), "the status page shows a secret");
        }
    }

    // A failing sync shows at once, long before the snapshot is too old to use.
    env.fake.directory_faults(|f| f.fail_prefix("/api", 503));
    assert!(
        eventually(Duration::from_secs(10), async || status_json(&env).await
            ["directory"]["failures_in_a_row"]
            .as_u64()
            .unwrap()
            >= 1)
        .await,
        "a failing sync never showed"
    );
    let s = status_json(&env).await;
    assert_eq!(s["ready"], true, "the snapshot is still fresh: {s:#}");
    assert_eq!(s["directory"]["fresh"], true);
    assert!(
        s["directory"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{s:#}"
    );
    let html = env.gw.admin_get("/status").await.1;
    assert!(html.contains("The directory sync is failing"), "{html}");
    env.fake.directory_faults(|f| f.status_for_prefix.clear());
    assert!(
        eventually(Duration::from_secs(10), async || status_json(&env).await
            ["directory"]["last_error"]
            .is_null())
        .await,
        "a recovered sync still shows its error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_not_on_the_public_listener() {
    let env = start().await;
    let mut b = env.browser();
    for path in ["/status", "/status.json", "/metrics"] {
        // A protected site's path like any other: a sign-in, never the page.
        let r = b.get(path).await;
        assert_eq!(r.status, 302, "{path}: {}", r.text());
    }
    for path in ["/.jumpgate/status", "/.jumpgate/status.json"] {
        assert_eq!(b.get(path).await.status, 404, "{path}");
    }
    // The admin listener answers reads only.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(env.gw.admin).await.unwrap();
    tcp.write_all(b"POST /status HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert_eq!(support::raw_status(&answer), Some(405), "{answer}");
}
