//! Gateways sharing sessions through Redis Sentinel, against real processes of each test's
//! own: a master, a replica and sentinels on free ports. The gateways find the master through
//! the sentinels, follow a failover to the new master (a planned one, and a crashed master),
//! keep serving cached sessions through the gap within the grace period, and afterwards
//! sessions, logouts, new sign-ins and `jumpgate sessions` work as before.

use crate::support;

use support::eventually;

use std::process::Command;
use std::time::Duration;

use support::browser::{same_browser_on, Browser};
use support::env::{Options, SignInEnv};
use support::redis::{free_port, SentinelGroup};
use support::Gateway;

/// `[session]` keys naming `group`'s sentinels, after `dead` (a sentinel address nothing
/// answers on, which the gateway must step over).
fn sentinel_keys(group: &SentinelGroup, dead: Option<u16>, grace: &str) -> String {
    let mut urls: Vec<String> = dead
        .map(|p| format!("\"redis://127.0.0.1:{p}\""))
        .into_iter()
        .collect();
    urls.extend(
        group
            .sentinels
            .iter()
            .map(|s| format!("\"redis://127.0.0.1:{}\"", s.port)),
    );
    format!(
        "store = \"redis\"\nredis_sentinels = [{}]\nredis_sentinel_master = \"{}\"\nredis_sentinel_password_file = \"{}\"\nredis_password_file = \"{}\"\nkey_prefix = \"jg:\"\nredis_grace = \"{grace}\"\n",
        urls.join(", "),
        group.name,
        group.sentinel_password_file().display(),
        group.data_password_file().display(),
    )
}

async fn ready(gw: &Gateway, limit: Duration) -> bool {
    eventually(limit, async || gw.admin_get("/readyz").await.0 == 200).await
}

async fn status(b: &mut Browser, path: &str) -> u16 {
    b.get(path).await.status.as_u16()
}

fn sessions_command(gw: &Gateway, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jumpgate"))
        .arg("sessions")
        .args(args)
        .arg("--config")
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jumpgate sessions {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_every_instance_works_on_the_new_master() {
    let mut group = SentinelGroup::start("jgmaster", 2, Duration::from_secs(5));
    let env = SignInEnv::start_with(Options {
        session: sentinel_keys(&group, Some(free_port()), "30s"),
        ..Options::default()
    })
    .await;
    let b_gw = env.another_gateway(&[]).await;
    assert!(ready(&b_gw, Duration::from_secs(5)).await);

    let mut on_a = env.browser();
    assert_eq!(on_a.sign_in("/a").await.status, 200);
    let mut on_b = same_browser_on(&b_gw, &on_a);
    assert_eq!(
        status(&mut on_b, "/b").await,
        200,
        "signed in on A, not on B"
    );

    // A planned failover. The old master stays up, still taking writes, until the sentinels
    // get round to demoting it (seconds later), so the gateways must notice the switch from
    // the sentinels themselves.
    let old = group.master().port;
    group.wait_replicated();
    let new = tokio::task::block_in_place(|| group.failover());
    assert_ne!(new, old);
    assert!(
        eventually(Duration::from_secs(3), async || group
            .node(new)
            .subscribers("jg:events")
            == 2)
        .await,
        "the gateways did not move their subscriptions to the new master"
    );
    // Then the old master goes away altogether: a gateway still using it would have no Redis.
    group.node_mut(old).down();

    for gw in [&env.gw, &b_gw] {
        assert!(
            ready(gw, Duration::from_secs(10)).await,
            "a gateway did not reconnect to the new master: {}",
            gw.admin_get("/readyz").await.1
        );
    }
    // Resubscribing dropped every cached session, so these come from the new master.
    assert_eq!(status(&mut on_a, "/a").await, 200);
    assert_eq!(status(&mut on_b, "/b").await, 200);

    // A logout on B reaches A through the subscription on the new master.
    let mut stale_on_a = same_browser_on(&env.gw, &on_a);
    assert_eq!(on_b.get("/.jumpgate/logout").await.status, 302);
    assert!(
        eventually(Duration::from_secs(2), async || status(
            &mut stale_on_a,
            "/a"
        )
        .await
            == 302)
        .await,
        "the logout on B did not reach A after the failover"
    );

    // New sign-ins work, on either instance.
    let mut newcomer = env.browser();
    assert_eq!(newcomer.sign_in("/a").await.status, 200);
    let mut newcomer_on_b = same_browser_on(&b_gw, &newcomer);
    assert_eq!(status(&mut newcomer_on_b, "/b").await, 200);

    // So does `jumpgate sessions`, through the same sentinels.
    let listed = sessions_command(&env.gw, &["list", "--user", &env.alice]);
    assert!(listed.starts_with("1 live session(s)"), "{listed}");
    let revoked = sessions_command(&env.gw, &["revoke", "--user", &env.alice]);
    assert!(revoked.contains("revoked 1 session(s)"), "{revoked}");
    for b in [&mut newcomer, &mut newcomer_on_b] {
        assert!(
            eventually(Duration::from_secs(2), async || status(b, "/a").await
                == 302)
            .await,
            "a revoked session still works"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_master_is_replaced_and_cached_sessions_bridge_the_gap() {
    // Three seconds of silence before the sentinel fails over: a gap long enough to look at.
    let mut group = SentinelGroup::start("jgcrash", 1, Duration::from_secs(3));
    let env = SignInEnv::start_with(Options {
        session: sentinel_keys(&group, None, "30s"),
        ..Options::default()
    })
    .await;
    let mut signed_in = env.browser();
    assert_eq!(signed_in.sign_in("/a").await.status, 200);

    let old = group.master().port;
    let new = group.replica().port;
    group.wait_replicated();
    group.node_mut(old).down();

    // Until the sentinel gives up on the old master there is no Redis: the cached session
    // keeps working, new sign-ins are refused, and /readyz says which master is missing.
    assert_eq!(status(&mut signed_in, "/a").await, 200);
    let r = env.browser().get("/a").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let named = format!("master \"jgcrash\" at 127.0.0.1:{old}");
    assert!(
        eventually(Duration::from_secs(2), async || {
            let (code, body) = env.gw.admin_get("/readyz").await;
            code == 503 && body.contains(&named)
        })
        .await,
        "/readyz did not name the missing master: {}",
        env.gw.admin_get("/readyz").await.1
    );

    // Through the failover the session never stops working.
    let mut during = 0;
    while !group.wait_master(new, Duration::ZERO) {
        assert_eq!(
            status(&mut signed_in, "/a").await,
            200,
            "a cached session failed during the failover, within the grace period"
        );
        during += 1;
        assert!(during < 400, "the sentinel did not fail over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready(&env.gw, Duration::from_secs(10)).await,
        "the gateway did not reconnect to the new master: {}",
        env.gw.admin_get("/readyz").await.1
    );
    assert_eq!(status(&mut signed_in, "/a").await, 200);
    assert_eq!(env.browser().sign_in("/a").await.status, 200);
}
