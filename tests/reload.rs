//! Live configuration reload: a valid change applies to new requests with no failed request
//! under load; a broken file is refused and the previous configuration stays; settings that
//! cannot change while running are reported as needing a restart.

mod support;

use support::eventually;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{site, Echo, Gateway};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `text` with a route after its first public one that denies `/new`.
fn deny_new(text: &str) -> String {
    text.replacen(
        "access = \"public\"\n",
        "access = \"public\"\n  [[site.route]]\n  path = \"/new\"\n  access = \"deny\"\n",
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_switches_routes_atomically_and_refuses_a_broken_file() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    assert_eq!(c.get("app.test", "/new/x").await.status, 200);

    // Load: requests keep flowing during the reload; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, stop, failures, done) = (c.clone(), stop.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = c.get("app.test", "/steady").await;
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // A new route denies /new, and a new site appears.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let changed = deny_new(&text) + &site("other.test", &echo.url(), "public", &[]);
    std::fs::write(&gw.config_path, &changed).unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || c
            .get("app.test", "/new/x")
            .await
            .status
            == 403)
        .await,
        "the new route never took effect"
    );
    assert_eq!(
        c.get("other.test", "/").await.status,
        200,
        "the new site serves"
    );

    // A broken file: refused, the previous configuration stays, the failure is counted.
    std::fs::write(
        &gw.config_path,
        changed.replace("access = \"deny\"", "access = \"maybe\""),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || {
            metric(
                &gw.admin_get("/metrics").await.1,
                "jumpgate_config_reloads_total{outcome=\"Failed\"}",
            ) >= 1
        })
        .await
    );
    assert_eq!(
        c.get("app.test", "/new/x").await.status,
        403,
        "the previous configuration stays"
    );

    // A listener change is not applied live but reported.
    let moved = changed.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&gw.config_path, moved).unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || {
            metric(
                &gw.admin_get("/metrics").await.1,
                "jumpgate_config_restart_needed_total",
            ) >= 1
        })
        .await
    );
    assert_eq!(
        c.get("app.test", "/steady").await.status,
        200,
        "still serving on the old listener"
    );

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
}

/// A reload keeps the sign-in rate limit's counts when the limit itself is unchanged: an
/// operator's reload must not hand a client that is being held back a fresh allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_sign_in_rate_counts() {
    let env = support::env::SignInEnv::start_with(support::env::Options {
        limits: "sign_in_rate = 3".into(),
        ..support::env::Options::default()
    })
    .await;
    let mut b = env.browser();
    for _ in 0..3 {
        assert_eq!(b.get("/.jumpgate/sign-in?rd=/").await.status, 302);
    }
    assert_eq!(b.get("/.jumpgate/sign-in?rd=/").await.status, 429);
    let c = env.gw.client();
    let text = std::fs::read_to_string(&env.gw.config_path).unwrap();
    std::fs::write(&env.gw.config_path, deny_new(&text)).unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || c
            .get("app.test", "/new/x")
            .await
            .status
            == 403)
        .await,
        "the reload never took effect"
    );
    assert_eq!(
        b.get("/.jumpgate/sign-in?rd=/").await.status,
        429,
        "the reload reset the counts"
    );
}
