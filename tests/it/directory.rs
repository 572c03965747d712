//! Directory-driven access end to end: the gateway syncs the fake JumpCloud's directory API
//! and decides every protected request from the snapshot, fails closed when it is stale, and
//! enforces its cached copy after a restart during an outage.

use crate::support;

use support::eventually;

use std::time::Duration;

use support::env::{Options, SignInEnv};
use support::site;

fn sites(echo: &str) -> String {
    format!(
        "{}  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n",
        site("app.test", echo, "protected", &[("/public", "public")])
    )
}

async fn env_with(directory: &str) -> SignInEnv {
    // The echo upstream's address is only known inside the environment, so the sites use a
    // placeholder that the echo upstream replaces: start once to learn nothing, then build.
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    SignInEnv::start_with(Options {
        sites: Some(sites(&url)),
        directory: Some(directory.to_owned()),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_and_group_removal_take_effect_at_the_next_sync() {
    let env = env_with("").await;
    let mut b = env.browser();
    let page = b.sign_in("/admin/settings").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );

    // Removed from Admins: /admin is refused, the rest still works.
    let admins = env.fake.with_state(|s| {
        s.groups
            .iter()
            .find(|g| g.name == "Admins")
            .unwrap()
            .id
            .clone()
    });
    env.fake.remove_member(&admins, &env.alice);
    assert!(
        eventually(Duration::from_secs(5), async || b
            .get("/admin/settings")
            .await
            .status
            == 403)
        .await,
        "group removal not enforced within a few sync intervals"
    );
    let r = b.get("/dashboard").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Staff")
    );

    // Suspended while signed in: refused at once after the next sync, and the session ends.
    env.fake.update_user(&env.alice, |u| u.suspend());
    assert!(
        eventually(Duration::from_secs(5), async || b
            .get("/dashboard")
            .await
            .status
            == 403)
        .await,
        "suspension not enforced within a few sync intervals"
    );
    env.fake.update_user(&env.alice, |u| u.reactivate());
    env.wait_for_a_sync().await;
    let r = b.get("/dashboard").await;
    assert_eq!(
        r.status, 302,
        "the suspended user's session must have been revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_directory_fails_closed_for_protected_routes_only() {
    let env = env_with("max_staleness = \"2s\"\n").await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/x").await.status, 200);
    env.fake.directory_faults(|f| f.fail_prefix("/api", 503));
    // Past max_staleness at once; a sync already under way when the fault came may still
    // land, and its snapshot goes stale in real time.
    env.gw.advance(Duration::from_secs(3));
    assert!(
        eventually(Duration::from_secs(6), async || b.get("/x").await.status
            == 503)
        .await,
        "protected route still served from a stale snapshot"
    );
    let r = b.get("/x").await;
    assert!(
        r.text().contains("Access cannot be checked"),
        "{}",
        r.text()
    );
    assert_eq!(
        b.get("/public/y").await.status,
        200,
        "public routes keep working"
    );
    let (status, body) = env.gw.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("directory snapshot"), "{body}");
    // JumpCloud back: access returns without a new sign-in.
    env.fake.directory_faults(|f| f.status_for_prefix.clear());
    assert!(
        eventually(Duration::from_secs(6), async || b.get("/x").await.status
            == 200)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_outage_enforces_the_cached_snapshot() {
    let mut env = env_with("").await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/admin").await.status, 200);
    // JumpCloud's directory API goes down, then alice leaves Admins there: the gateway can't
    // know, and after a restart it must enforce what it last saw, not nothing.
    env.fake.directory_faults(|f| f.fail_prefix("/api", 503));
    let admins = env.fake.with_state(|s| {
        s.groups
            .iter()
            .find(|g| g.name == "Admins")
            .unwrap()
            .id
            .clone()
    });
    env.fake.remove_member(&admins, &env.alice);
    env.restart_gateway().await;
    env.wait_ready().await;
    let mut b = env.browser();
    let r = b.sign_in("/admin").await;
    assert_eq!(
        r.status,
        200,
        "cached snapshot not enforced after restart: {}",
        r.text()
    );
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );
    // The cached snapshot's age counts from when it was taken, for /status and the alerts.
    let cached = jumpgate::directory::load_cache(&env.dir.path().join("directory.json"))
        .unwrap()
        .unwrap();
    let metrics = env.gw.admin_get("/metrics").await.1;
    let last_success = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jumpgate_directory_last_success_timestamp_seconds "))
        .unwrap();
    assert_eq!(last_success, cached.taken_at.to_string());
    let last_error = async || -> serde_json::Value {
        let status: serde_json::Value =
            serde_json::from_str(&env.gw.admin_get("/status.json").await.1).unwrap();
        status["directory"]["last_error"].clone()
    };
    assert!(
        eventually(Duration::from_secs(10), async || last_error()
            .await
            .as_str()
            .is_some_and(|e| e.contains("503")))
        .await,
        "the failing sync never showed: {}",
        last_error().await
    );

    // A corrupt cache is never trusted: with the API still down, protected routes fail closed.
    let cache = env.dir.path().join("directory.json");
    let mut text = std::fs::read(&cache).unwrap();
    let n = text.len() / 2;
    text[n] ^= 0x01;
    std::fs::write(&cache, text).unwrap();
    env.restart_gateway().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = env.gw.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let mut b = env.browser();
    let first = b.get("/admin").await;
    // Sign-in still works (the provider is up) but the decision fails closed.
    if first.status == 302 {
        let callback = b.sign_in_callback("/admin").await;
        let page = b.follow(&callback).await;
        assert_eq!(page.status, 503, "{}", page.text());
    } else {
        assert_eq!(first.status, 503);
    }
}
