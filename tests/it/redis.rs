//! Several gateways side by side against a real Redis (127.0.0.1:6379, or
//! `JUMPGATE_TEST_REDIS`): sessions work on every instance, logouts and revocations reach all
//! of them within a second, one instance syncs the directory for all, and a Redis outage
//! neither crashes anything nor lets a session live past the grace period.

use crate::support;

use support::eventually;

use std::process::Command;
use std::time::{Duration, Instant};

use support::browser::same_browser_on;
use support::env::{Options, SignInEnv};
use support::jumpcloud::ApiKey;
use support::redis::{session_keys, shared_url, OwnRedis, Prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_on_every_instance_and_a_logout_ends_it_everywhere() {
    let prefix = Prefix::new(&shared_url());
    let env = SignInEnv::start_with(Options {
        session: session_keys(&shared_url(), &prefix.0, ""),
        ..Options::default()
    })
    .await;
    let b_gw = env.another_gateway(&[]).await;
    let mut on_a = env.browser();
    assert_eq!(on_a.sign_in("/a").await.status, 200);
    let mut on_b = same_browser_on(&b_gw, &on_a);
    let r = on_b.get("/b").await;
    assert_eq!(
        r.status,
        200,
        "signed in on A, must be signed in on B: {}",
        r.text()
    );
    assert_eq!(
        r.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str())
    );

    // Logout on B: refused on A within a second (A had the session cached).
    assert_eq!(on_a.get("/a").await.status, 200);
    let out = on_b.get("/.jumpgate/logout").await;
    assert_eq!(out.status, 302);
    let mut stale = same_browser_on(&env.gw, &on_a);
    let start = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), async || stale
            .get("/a")
            .await
            .status
            == 302)
        .await,
        "the logout on B did not reach A within a second"
    );
    assert!(start.elapsed() < Duration::from_millis(1100));

    // Pending sign-ins are shared too: started on A, completed on B.
    let mut tab = env.browser();
    let idp = tab.authorize("/x").await;
    let mut tab_b = same_browser_on(&b_gw, &tab);
    let back = tab_b.follow(&idp).await;
    assert_eq!(back.status, 302, "{}", back.text());
    // And used once only, across instances.
    let again = tab.follow(&idp).await;
    assert_eq!(again.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_revoke_a_user_everywhere_and_suspensions_reach_every_instance() {
    let prefix = Prefix::new(&shared_url());
    let env = SignInEnv::start_with(Options {
        session: session_keys(&shared_url(), &prefix.0, ""),
        directory: Some(String::new()),
        ..Options::default()
    })
    .await;
    // The second instance uses its own API key, so the request log tells who syncs.
    let key_b = ApiKey::read_only();
    let key_b_value = key_b.key.clone();
    env.fake.add_api_key(key_b);
    let key_b_file = env.dir.path().join("api-key-b");
    std::fs::write(&key_b_file, &key_b_value).unwrap();
    let key_a_file = env.dir.path().join("api-key");
    let mut b_gw = env
        .another_gateway(&[(
            &key_a_file.display().to_string(),
            &key_b_file.display().to_string(),
        )])
        .await;

    let mut on_a = env.browser();
    assert_eq!(on_a.sign_in("/a").await.status, 200);
    let mut on_b = same_browser_on(&b_gw, &on_a);
    assert_eq!(on_b.get("/b").await.status, 200);

    // `jumpgate sessions list|revoke` against the same Redis.
    let jumpgate = env!("CARGO_BIN_EXE_jumpgate");
    let out = Command::new(jumpgate)
        .args(["sessions", "list", "--user", &env.alice, "--config"])
        .arg(&env.gw.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("1 live session(s)"), "{text}");
    let out = Command::new(jumpgate)
        .args(["sessions", "revoke", "--user", &env.alice, "--config"])
        .arg(&env.gw.config_path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked 1 session(s)"));
    assert!(
        eventually(Duration::from_secs(1), async || on_a.get("/a").await.status
            == 302)
        .await
    );
    assert!(
        eventually(Duration::from_secs(1), async || on_b.get("/b").await.status
            == 302)
        .await
    );

    // Signed in again; then suspended in JumpCloud: refused on both after one sync, and the
    // directory was read by one instance only.
    let mut on_a = env.browser();
    assert_eq!(on_a.sign_in("/a").await.status, 200);
    let mut on_b = same_browser_on(&b_gw, &on_a);
    assert_eq!(on_b.get("/b").await.status, 200);
    let since = env.fake.directory_requests().len();
    env.fake.update_user(&env.alice, |u| u.suspend());
    assert!(
        eventually(Duration::from_secs(5), async || on_a.get("/a").await.status
            == 403)
        .await
    );
    assert!(
        eventually(Duration::from_secs(3), async || {
            let s = on_b.get("/b").await.status;
            s == 403 || s == 302
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let callers: std::collections::BTreeSet<String> = env.fake.directory_requests()[since..]
        .iter()
        .filter_map(|r| r.header("x-api-key").map(str::to_owned))
        .collect();
    assert_eq!(
        callers.len(),
        1,
        "JumpCloud must be called by one instance only"
    );

    // The leader dies: the other takes the lease and syncs within one interval.
    let leader_is_b = callers.contains(&key_b_value);
    env.fake.update_user(&env.alice, |u| u.reactivate());
    let mut env = env;
    let survivor_key = if leader_is_b {
        b_gw.shutdown().await.unwrap().unwrap();
        std::fs::read_to_string(&key_a_file).unwrap()
    } else {
        env.gw.shutdown().await.unwrap().unwrap();
        key_b_value.clone()
    };
    let env_ref = &env;
    let mark = env_ref.fake.directory_requests().len();
    assert!(
        eventually(Duration::from_secs(3), async || {
            env_ref.fake.directory_requests()[mark..]
                .iter()
                .any(|r| r.header("x-api-key") == Some(survivor_key.as_str()))
        })
        .await,
        "no instance took over the directory sync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_cached_sessions_for_the_grace_period_only() {
    let mut redis = OwnRedis::start();
    let env = SignInEnv::start_with(Options {
        session: session_keys(&redis.url(), "jg:", ""),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/a").await.status, 200);
    assert_eq!(env.gw.admin_get("/readyz").await.0, 200);

    redis.down();
    // Within the grace period the cached session still works.
    assert_eq!(b.get("/a").await.status, 200);
    // New sign-ins are refused with the 503 page; the gateway reports Redis.
    let mut newcomer = env.browser();
    let r = newcomer.get("/a").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("Sign-in unavailable"));
    assert!(
        eventually(Duration::from_secs(3), async || env
            .gw
            .admin_get("/readyz")
            .await
            .0
            == 503)
        .await
    );
    // After the grace period nothing is served from the cache.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = b.get("/a").await;
    assert_ne!(
        r.status, 200,
        "a session was served past the grace period without Redis"
    );

    // Redis back (with its data): the gateway reconnects by itself and the session works.
    redis.up();
    assert!(
        eventually(Duration::from_secs(15), async || b.get("/a").await.status
            == 200)
        .await,
        "the gateway did not recover after Redis came back"
    );
    // Commands reconnect at once; the subscription, which /readyz waits for, is retried
    // with a backoff that has grown to several seconds (up to 12) during the outage.
    assert!(
        eventually(Duration::from_secs(15), async || env
            .gw
            .admin_get("/readyz")
            .await
            .0
            == 200)
        .await
    );
}

/// A logout made while Redis was unreachable ends the session at once on the instance that
/// made it, and is written to Redis as soon as it answers again: Redis coming back with the
/// old records must not sign anyone back in, on any instance. (Revocations of a user take
/// the same way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_a_redis_outage_is_not_undone_when_it_returns() {
    let mut redis = OwnRedis::start();
    let env = SignInEnv::start_with(Options {
        session: session_keys(&redis.url(), "jg:", ""),
        ..Options::default()
    })
    .await;
    let b_gw = env.another_gateway(&[]).await;
    // Two browsers of alice, both used on both instances.
    let mut first = env.browser();
    assert_eq!(first.sign_in("/a").await.status, 200);
    let mut second = env.browser();
    assert_eq!(second.sign_in("/a").await.status, 200);
    let mut first_on_b = same_browser_on(&b_gw, &first);
    assert_eq!(first_on_b.get("/b").await.status, 200);
    let ended_cookie = first.cookie(support::SESSION).unwrap();

    redis.down();
    // Logout on A while Redis is down: this browser is signed out here at once.
    let out = first.logout().await;
    assert!(
        out.status.is_success() || out.status == 302,
        "{}",
        out.text()
    );
    let mut replay = env.browser();
    replay.set_cookie(support::SESSION, &ended_cookie);
    // (No session; with Redis down a new sign-in cannot start either: 503.)
    assert_eq!(replay.get("/a").await.status, 503, "ended here at once");

    redis.up();
    // Once Redis answers, the ended session stays ended everywhere, and the other session
    // of the same user, never ended, works again everywhere.
    assert!(
        eventually(Duration::from_secs(15), async || second
            .get("/a")
            .await
            .status
            == 200)
        .await,
        "the gateway did not recover after Redis came back"
    );
    let mut replay_on_b = same_browser_on(&b_gw, &replay);
    assert!(
        eventually(Duration::from_secs(5), async || replay_on_b
            .get("/b")
            .await
            .status
            == 302)
        .await,
        "a logout made during the outage was undone on B when Redis returned"
    );
    for _ in 0..5 {
        assert_eq!(replay.get("/a").await.status, 302, "undone on A");
        assert_eq!(replay_on_b.get("/b").await.status, 302, "undone on B");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys: Vec<String> = redis
        .query(redis::cmd("KEYS").arg("jg:s:*"))
        .unwrap_or_default();
    assert_eq!(
        keys.len(),
        1,
        "only the session never ended is left: {keys:?}"
    );
}

/// Pending sign-ins in Redis are bounded: past `max_pending_logins` the oldest are dropped,
/// so a flood of sign-in starts costs a bounded amount of memory and a new sign-in is
/// never refused; the oldest one is what a flood pushes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sign_ins_in_redis_are_bounded_and_new_ones_always_admitted() {
    let prefix = Prefix::new(&shared_url());
    let env = SignInEnv::start_with(Options {
        session: session_keys(&shared_url(), &prefix.0, "max_pending_logins = 3\n"),
        ..Options::default()
    })
    .await;
    let mut tabs = Vec::new();
    for i in 0..8 {
        let mut tab = env.browser();
        let idp = tab.authorize(&format!("/flood/{i}")).await;
        tabs.push((tab, idp));
    }
    let client = redis::Client::open(shared_url().as_str()).unwrap();
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let pending: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}l:*", prefix.0))
        .query(&mut c)
        .unwrap();
    assert_eq!(pending.len(), 3, "{pending:?}");
    // The newest completes; the oldest was pushed out and its callback is refused.
    let (mut newest, idp) = tabs.pop().unwrap();
    let back = newest.follow(&idp).await;
    assert_eq!(back.status, 302, "{}", back.text());
    assert_eq!(support::browser::location(&back), "/flood/7");
    let (mut oldest, idp) = tabs.remove(0);
    assert_eq!(oldest.follow(&idp).await.status, 400);
}

/// The status page and the metrics say where sessions are and whether Redis answers, and
/// which instance holds the directory sync lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_and_metrics_report_redis_and_the_sync_lease() {
    let mut redis = OwnRedis::start();
    let env = SignInEnv::start_with(Options {
        session: session_keys(&redis.url(), "jg:", ""),
        directory: Some(String::new()),
        ..Options::default()
    })
    .await;
    let status = async || -> serde_json::Value {
        serde_json::from_str(&env.gw.admin_get("/status.json").await.1).unwrap()
    };
    let up = async || {
        let metrics = env.gw.admin_get("/metrics").await.1;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("jumpgate_session_store_up{store=\"redis\"} "))
            .map(str::to_owned)
    };
    assert!(
        eventually(Duration::from_secs(5), async || status().await["directory"]
            ["sync_lease"]
            == "held")
        .await,
        "{:#}",
        status().await
    );
    let s = status().await;
    assert_eq!(s["sessions"]["store"], "redis", "{s:#}");
    assert_eq!(s["sessions"]["reachable"], true, "{s:#}");
    assert_eq!(up().await.as_deref(), Some("1"));

    redis.down();
    assert!(
        eventually(Duration::from_secs(5), async || status().await["sessions"]
            ["reachable"]
            == false)
        .await
    );
    let s = status().await;
    assert!(s["sessions"]["problem"].as_str().is_some(), "{s:#}");
    assert_eq!(up().await.as_deref(), Some("0"));
    let html = env.gw.admin_get("/status").await.1;
    assert!(
        html.contains("The session store (redis) is unreachable"),
        "{html}"
    );
    redis.up();
    assert!(
        eventually(Duration::from_secs(15), async || up().await.as_deref()
            == Some("1"))
        .await,
        "Redis back, but the metric still says it is down"
    );
}
