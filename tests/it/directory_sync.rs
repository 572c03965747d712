//! The directory sync under pressure: partial failures, rate limiting, large directories,
//! odd records, records changing between pages, the `jumpgate directory sync` report and the
//! cache file. The gateway syncs the fake JumpCloud's directory API; the report runs the real
//! `jumpgate` binary against the same fake.

use crate::support;

use support::eventually;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::env::{Options, SignInEnv, CLIENT_ID};
use support::jumpcloud::{DirectoryMutation, FakeJumpCloud, LoggedRequest, User, UserState};
use support::{site, Echo, Reply};

/// A route only members of "Admins" may use.
const ADMIN_ROUTE: &str = "  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n";

/// The environment with the protected `app.test` site (plus `routes`) and a `[directory]`
/// with these extra keys. The echo upstream is returned so it lives as long as the test.
async fn env_with(routes: &str, directory: &str) -> (SignInEnv, Echo) {
    env_with_options(routes, directory, None).await
}

async fn env_with_options(
    routes: &str,
    directory: &str,
    cache_file: Option<PathBuf>,
) -> (SignInEnv, Echo) {
    let echo = Echo::start().await;
    let sites = format!(
        "{}{routes}",
        site(
            "app.test",
            &echo.url(),
            "protected",
            &[("/public", "public")]
        )
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        directory: Some(directory.to_owned()),
        cache_file,
        ..Options::default()
    })
    .await;
    (env, echo)
}

/// The admin listener's metrics text.
async fn metrics(env: &SignInEnv) -> String {
    let (status, body) = env.gw.admin_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series (`name` or `name{labels}`), when it is exported.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of a series the gateway exports from start-up on: a missing one (a renamed
/// metric) fails the test instead of reading as 0.
async fn metric(env: &SignInEnv, name: &str) -> f64 {
    let text = metrics(env).await;
    series(&text, name).unwrap_or_else(|| panic!("no series {name} in:\n{text}"))
}

const SYNC_FAILURES: &str = "jumpgate_directory_sync_failures_total";
const USERS: &str = "jumpgate_directory_users";
const RETRIES: &str = "jumpgate_directory_api_retries_total";
const LAST_SUCCESS: &str = "jumpgate_directory_last_success_timestamp_seconds";

/// Waits for a quiet moment between two syncs: the last directory request (the member list
/// of the last group, which ends a sync) was answered and nothing followed for a while, so a
/// change made now is seen whole by the next sync (which starts at least 0.8 s after the
/// previous one ended).
async fn between_syncs(fake: &FakeJumpCloud) {
    let last_group = fake.with_state(|s| s.groups.iter().map(|g| g.id.clone()).max().unwrap());
    let sync_end = format!("/api/v2/usergroups/{last_group}/members");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(last) = fake.directory_requests().last() {
            let idle = last.at.elapsed();
            if last.path == sync_end
                && last.status.is_some()
                && idle > Duration::from_millis(150)
                && idle < Duration::from_millis(450)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway never paused between directory syncs");
}

/// Signs `user` in from `path` and returns the page served there (or the refusal at the
/// callback, should the gateway refuse there already).
async fn sign_in_as(env: &SignInEnv, user: &str, path: &str) -> Reply {
    env.fake.set_next_login(Some(user));
    let mut b = env.browser();
    let callback = b.sign_in_callback(path).await;
    if callback.status == 302 {
        b.follow(&callback).await
    } else {
        callback
    }
}

// ---------------------------------------------------------------------------------------
// `jumpgate directory sync` against the fake
// ---------------------------------------------------------------------------------------

/// A configuration for the `jumpgate` command pointing at `fake`'s directory API.
struct CliConfig {
    _dir: tempfile::TempDir,
    config: PathBuf,
    cache: PathBuf,
}

fn cli_config(fake: &FakeJumpCloud, sites: &str) -> CliConfig {
    let dir = tempfile::tempdir().unwrap();
    let certs = jumpgate::devcert::write(dir.path(), &["app.test".to_owned()]).unwrap();
    let key = dir.path().join("api-key");
    std::fs::write(&key, format!("{}\n", fake.api_key())).unwrap();
    let cache = dir.path().join("state").join("directory.json");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n{sites}\n[directory]\nprovider = \"jumpcloud\"\napi_url = \"{}\"\napi_key_file = \"{}\"\ncache_file = \"{}\"\nrequest_interval = \"1ms\"\nretry_backoff = \"50ms\"\nrequest_timeout = \"5s\"\n",
        certs.cert.display(),
        certs.key.display(),
        fake.base_url(),
        key.display(),
        cache.display(),
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    CliConfig {
        _dir: dir,
        config,
        cache,
    }
}

/// Runs `jumpgate directory sync` and returns its report, failing the test if it failed.
async fn directory_sync(config: &Path, dry_run: bool) -> String {
    let config = config.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jumpgate"));
        cmd.args(["directory", "sync", "--config"]).arg(&config);
        if dry_run {
            cmd.arg("--dry-run");
        }
        cmd.output().expect("run jumpgate")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "directory sync failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// The number on the report line `label    N`.
fn count(report: &str, label: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(label)?;
        if !rest.starts_with(' ') {
            return None;
        }
        rest.trim().parse().ok()
    })
}

/// The report's `+ user` and `- user` lines.
fn diff(report: &str) -> (Vec<String>, Vec<String>) {
    let pick = |sign: &str| {
        report
            .lines()
            .filter_map(|l| l.strip_prefix(sign).map(str::to_owned))
            .collect()
    };
    (pick("  + "), pick("  - "))
}

fn email(fake: &FakeJumpCloud, id: &str) -> String {
    fake.user(id).unwrap().email
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// One group's member list failing mid-sync must not publish anything: not the group as
/// empty, not the other groups' new memberships. The snapshot in service stays whole until a
/// complete sync replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_the_middle_of_a_sync_keeps_the_previous_snapshot() {
    let (env, _echo) = env_with(ADMIN_ROUTE, "max_retries = 1\n").await;
    let mut b = env.browser();
    let page = b.sign_in("/admin/settings").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );

    // Between two syncs, at once: Admins' member list starts failing (every retry too) and
    // alice leaves both groups. Staff's list would read fine and show her gone.
    let admins = env.group_id("Admins");
    let alice = env.alice.clone();
    let failed_path = format!("/api/v2/usergroups/{admins}/members");
    between_syncs(&env.fake).await;
    let failures_before = metric(&env, SYNC_FAILURES).await;
    let mark = env.fake.directory_request_count();
    env.fake.with_state(|s| {
        s.directory_faults.fail_prefix(&failed_path, 500);
        for g in &mut s.groups {
            g.members.retain(|m| *m != alice);
        }
    });

    // While syncs keep failing, every decision comes from the previous snapshot, whole.
    let start = Instant::now();
    let mut failures = failures_before;
    while failures < failures_before + 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "syncs were not failing: {failures} failures (before: {failures_before})"
        );
        let r = b.get("/admin/settings").await;
        assert_eq!(
            r.status,
            200,
            "a failed sync changed access after {:?}: {}",
            start.elapsed(),
            r.text()
        );
        assert_eq!(
            r.upstream_header("x-jumpgate-groups").as_deref(),
            Some("Admins,Staff"),
            "a failed sync was published in part"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        failures = metric(&env, SYNC_FAILURES).await;
    }
    let failed: Vec<LoggedRequest> = env
        .fake
        .directory_requests()
        .into_iter()
        .filter(|r| r.directory_seq.unwrap() > mark && r.path == failed_path)
        .collect();
    assert!(
        failed.len() >= 4 && failed.iter().all(|r| r.status == Some(500)),
        "the member list was not retried and refused as set up: {failed:?}"
    );
    assert!(
        failed
            .iter()
            .all(|r| r.query_param("limit").as_deref() == Some("100")),
        "{failed:?}"
    );

    // JumpCloud answers again: the change takes effect as a whole.
    env.fake
        .directory_faults(|f| f.status_for_prefix.retain(|(p, _)| *p != failed_path));
    assert!(
        eventually(Duration::from_secs(5), async || b
            .get("/admin/settings")
            .await
            .status
            == 403)
        .await,
        "the change never took effect after the fault cleared"
    );
    let r = b.get("/dashboard").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-jumpgate-groups"), None);
    assert!(metric(&env, SYNC_FAILURES).await >= failures_before + 2.0);
}

/// Checks every directory request of the gateway: a list request with `limit=100`, sorted on
/// the id (`_id` for v1 users, `id` for v2), and paced at the 20 ms request interval: any
/// `n` requests in a row span at least `n - 1` intervals. The fake stamps a request when it
/// handles it, so each stamp may lag the send by a little; the span may come up short by
/// that lag once, never by a growing amount.
fn assert_paged_and_paced(requests: &[LoggedRequest]) {
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.query_param("limit").as_deref(),
            Some("100"),
            "{} ?{}",
            r.path,
            r.query
        );
        let sort = if r.path == "/api/systemusers" {
            "_id"
        } else {
            "id"
        };
        assert_eq!(
            r.query_param("sort").as_deref(),
            Some(sort),
            "{} ?{}",
            r.path,
            r.query
        );
        assert!(r.query_param("skip").is_some(), "{} ?{}", r.path, r.query);
    }
    let interval = Duration::from_millis(20);
    let lag = Duration::from_millis(60);
    for (i, a) in requests.iter().enumerate() {
        for (n, b) in requests[i + 1..].iter().enumerate() {
            let span = b.at - a.at;
            assert!(
                span + lag >= interval * (n as u32 + 1),
                "{} directory requests in {span:?} (request_interval is 20ms): {} .. {}",
                n + 2,
                a.path,
                b.path
            );
        }
    }
}

/// Adds groups so that every sync makes a good number of requests to pace.
fn add_teams(fake: &FakeJumpCloud) {
    for i in 0..12 {
        fake.add_group(&format!("Team {i:02}"));
    }
}

/// Gaps between each injected 429 and the request that followed it.
fn gaps_after_429(requests: &[LoggedRequest]) -> Vec<Duration> {
    requests
        .windows(2)
        .filter(|w| w[0].fault.as_deref() == Some("429"))
        .map(|w| w[1].at - w[0].at)
        .collect()
}

const PACED: &str = "retry_backoff = \"200ms\"\nrequest_interval = \"20ms\"\n";

/// Six 429s in a row with `Retry-After: 1`: each retry waits the second it was told, the
/// sync still completes (no failure) and a change made just before it is enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_honouring_retry_after() {
    let (env, _echo) = env_with(ADMIN_ROUTE, PACED).await;
    add_teams(&env.fake);
    let mut b = env.browser();
    assert_eq!(b.sign_in("/admin").await.status, 200);

    let admins = env.group_id("Admins");
    let alice = env.alice.clone();
    between_syncs(&env.fake).await;
    let mark = env.fake.directory_request_count();
    env.fake.with_state(|s| {
        s.directory_faults.rate_limit_next = 6;
        s.directory_faults.retry_after = Some(1);
        s.groups
            .iter_mut()
            .find(|g| g.id == admins)
            .unwrap()
            .members
            .retain(|m| *m != alice);
    });
    assert!(
        eventually(Duration::from_secs(12), async || b
            .get("/admin")
            .await
            .status
            == 403)
        .await,
        "the sync behind the 429 storm never completed"
    );

    let requests = env.fake.directory_requests();
    assert_paged_and_paced(&requests);
    let storm: Vec<LoggedRequest> = requests
        .into_iter()
        .filter(|r| r.directory_seq.unwrap() > mark)
        .collect();
    let gaps = gaps_after_429(&storm);
    assert_eq!(gaps.len(), 6, "expected six 429s each followed by a retry");
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= Duration::from_millis(900),
            "retry {} came {gap:?} after a 429 with Retry-After: 1 (all gaps: {gaps:?})",
            i + 1
        );
    }
    let m = metrics(&env).await;
    assert_eq!(
        series(&m, SYNC_FAILURES).expect("exported"),
        0.0,
        "the storm failed a sync"
    );
    assert_eq!(series(&m, RETRIES).expect("exported"), 6.0);
    assert_eq!(
        series(&m, "jumpgate_directory_api_errors_total{status=\"429\"}").expect("exported"),
        6.0
    );
}

/// 429s without `Retry-After`: exponential backoff from `retry_backoff` (200 ms, doubling,
/// ± 20 % jitter), never faster than `request_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_without_retry_after_backs_off_exponentially() {
    let (env, _echo) = env_with(ADMIN_ROUTE, PACED).await;
    add_teams(&env.fake);
    let mut b = env.browser();
    assert_eq!(b.sign_in("/admin").await.status, 200);

    let admins = env.group_id("Admins");
    let alice = env.alice.clone();
    between_syncs(&env.fake).await;
    let mark = env.fake.directory_request_count();
    env.fake.with_state(|s| {
        s.directory_faults.rate_limit_next = 4;
        s.directory_faults.retry_after = None;
        s.groups
            .iter_mut()
            .find(|g| g.id == admins)
            .unwrap()
            .members
            .retain(|m| *m != alice);
    });
    assert!(
        eventually(Duration::from_secs(10), async || b
            .get("/admin")
            .await
            .status
            == 403)
        .await,
        "the sync behind the 429s never completed"
    );

    let requests = env.fake.directory_requests();
    assert_paged_and_paced(&requests);
    let storm: Vec<LoggedRequest> = requests
        .into_iter()
        .filter(|r| r.directory_seq.unwrap() > mark)
        .collect();
    let gaps = gaps_after_429(&storm);
    assert_eq!(gaps.len(), 4, "expected four 429s each followed by a retry");
    // Nominal 200, 400, 800, 1600 ms, ± 20 % jitter: each gap is at least 80 % of its
    // nominal value (less a margin for stamping lag), and the first is far below the last.
    for (i, gap) in gaps.iter().enumerate() {
        let least = Duration::from_millis(160 << i) - Duration::from_millis(60);
        assert!(
            *gap >= least,
            "retry {} came after {gap:?}, expected at least {least:?}: {gaps:?}",
            i + 1
        );
    }
    assert!(
        gaps[0] <= Duration::from_millis(600),
        "the first backoff is not retry_backoff: {gaps:?}"
    );
    let m = metrics(&env).await;
    assert_eq!(
        series(&m, SYNC_FAILURES).expect("exported"),
        0.0,
        "the 429s failed a sync"
    );
    assert_eq!(series(&m, RETRIES).expect("exported"), 4.0);
}

/// 20,000 users in 500 groups: every page is read (no record cap), the snapshot holds every
/// user, and decisions for seeded users follow their groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_users_in_500_groups_sync_completely() {
    // Seed groups are named after their position among all groups: Admins and Staff come
    // first, so the first seeded group is "Seed Group 0002".
    let route = "  [[site.route]]\n  path = \"/seed\"\n  allow_groups = [\"Seed Group 0002\"]\n";
    let (env, _echo) = env_with(route, "").await;
    env.fake.update_app(CLIENT_ID, |a| a.bind_everyone = true);
    let (users, groups) = env.fake.seed_directory(20_000, 500, 40);
    assert_eq!(groups.len(), 500);
    let mark = env.fake.directory_request_count();

    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), async || metric(&env, USERS).await
            == 20_001.0)
        .await,
        "the snapshot never held all 20,001 users: {}",
        metric(&env, USERS).await
    );
    eprintln!("20,001 users synced in {:?}", started.elapsed());

    // One complete read of the user list: every page from skip=0 to skip=20000.
    let skips: BTreeSet<u64> = env
        .fake
        .directory_requests()
        .iter()
        .filter(|r| {
            r.directory_seq.unwrap() > mark && r.path == "/api/systemusers" && r.status == Some(200)
        })
        .map(|r| r.query_param("skip").unwrap().parse().unwrap())
        .collect();
    assert!(skips.len() > 50, "only {} user pages", skips.len());
    assert!(
        (0..=20_000).step_by(100).all(|s| skips.contains(&s)),
        "user pages missing: read {} pages up to skip {:?}",
        skips.len(),
        skips.last()
    );

    // Decisions for seeded users: the first group's members pass, the next group's do not.
    let inside = sign_in_as(&env, &users[0], "/seed/x").await;
    assert_eq!(inside.status, 200, "{}", inside.text());
    assert_eq!(
        inside.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Seed Group 0002")
    );
    let last = sign_in_as(&env, &users[39], "/seed/y").await;
    assert_eq!(last.status, 200, "{}", last.text());
    let outside = sign_in_as(&env, &users[40], "/seed/x").await;
    assert_eq!(outside.status, 403, "{}", outside.text());
    let r = sign_in_as(&env, &users[19_999], "/anything").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Seed Group 0501")
    );
}

/// `"email": null`, a state outside the documented enum and fields nobody has heard of never
/// fail a page: the sync succeeds, other users are unaffected, and the two odd users are
/// treated as inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_records_never_fail_the_page_and_make_only_their_user_inactive() {
    let (env, _echo) = env_with("", "").await;
    let mut alice = env.browser();
    assert_eq!(alice.sign_in("/x").await.status, 200);

    let staff = env.group_id("Staff");
    let carol = env.fake.add_user(User::new("carol"));
    let dave = env.fake.add_user(User::new("dave"));
    env.fake.add_member(&staff, &carol);
    env.fake.add_member(&staff, &dave);
    let alice_id = env.alice.clone();
    let failures_before = metric(&env, SYNC_FAILURES).await;
    let (carol_id, dave_id) = (carol.clone(), dave.clone());
    env.fake.directory_faults(move |f| {
        f.null_email.push(alice_id);
        f.state_override.push((carol_id, "ARCHIVED".into()));
        f.extra_fields.push((
            dave_id,
            "employeeTier".into(),
            json!({"level": 3, "tags": ["x", null]}),
        ));
        f.extra_fields
            .push(("*".into(), "introducedNextYear".into(), json!(null)));
    });

    // Alice's record now has no email: her session is refused at the next sync.
    assert!(
        eventually(Duration::from_secs(8), async || alice
            .get("/x")
            .await
            .status
            == 403)
        .await,
        "a user with a null email was still allowed"
    );
    assert_eq!(alice.get("/public/y").await.status, 200);
    // The same pages carried dave (extra field) and carol (unknown state).
    let r = sign_in_as(&env, &dave, "/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Staff")
    );
    let r = sign_in_as(&env, &carol, "/x").await;
    assert_eq!(r.status, 403, "an ARCHIVED user was allowed: {}", r.text());

    let m = metrics(&env).await;
    assert_eq!(
        series(&m, SYNC_FAILURES).expect("exported"),
        failures_before,
        "a sync failed"
    );
    assert_eq!(
        series(&m, USERS).expect("exported"),
        3.0,
        "odd records were dropped"
    );
    let last = series(&m, LAST_SUCCESS).expect("exported") as i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        now - last <= 3,
        "no recent successful sync: {last} vs {now}"
    );
}

/// A user removed while the user list is being paged shifts every later record by one: the
/// sync must notice and still end complete and consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_removed_between_pages_leaves_a_consistent_snapshot() {
    let fake = FakeJumpCloud::start().await;
    let alice = fake.add_user(User::new("alice"));
    let staff = fake.add_group("Staff");
    fake.add_member(&staff, &alice);
    let (seeded, _) = fake.seed_directory(250, 5, 30);
    let cli = cli_config(&fake, &protected_site(""));

    let first = directory_sync(&cli.config, false).await;
    assert_eq!(count(&first, "users"), Some(251), "{first}");

    // Removed right after the first page is served: it was on that page, so a plain skip
    // reader would also miss whoever moved up from page 2 to page 1.
    let mut ids: Vec<String> = fake.with_state(|s| s.users.iter().map(|u| u.id.clone()).collect());
    ids.sort();
    let victim = seeded[10].clone();
    assert!(ids[..100].contains(&victim));
    let victim_email = email(&fake, &victim);
    let page = fake.systemusers_pages_served() + 1;
    fake.directory_faults(|f| f.mutate_after_page(page, DirectoryMutation::RemoveUser(victim)));

    let report = directory_sync(&cli.config, false).await;
    assert!(
        fake.with_state(|s| s.directory_faults.mutations.is_empty()),
        "the change was never made"
    );
    assert_eq!(count(&report, "users"), Some(250), "{report}");
    assert_eq!(
        diff(&report),
        (vec![], vec![victim_email]),
        "only the removed user loses access:\n{report}"
    );

    // The stored snapshot is exactly the directory as it is now.
    let cached = jumpgate::directory::load_cache(&cli.cache)
        .unwrap()
        .expect("cache written");
    let cached_ids: BTreeSet<String> = cached.users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(cached.users.len(), cached_ids.len(), "duplicate users");
    let now_ids: BTreeSet<String> =
        fake.with_state(|s| s.users.iter().map(|u| u.id.clone()).collect());
    assert_eq!(cached_ids, now_ids);
    let members = |groups: Vec<(String, Vec<String>)>| -> BTreeSet<(String, String)> {
        groups
            .into_iter()
            .flat_map(|(g, ms)| ms.into_iter().map(move |m| (g.clone(), m)))
            .collect()
    };
    let cached_members = members(
        cached
            .groups
            .iter()
            .map(|g| (g.id.clone(), g.members.clone()))
            .collect(),
    );
    let now_members = members(fake.with_state(|s| {
        s.groups
            .iter()
            .map(|g| (g.id.clone(), g.members.clone()))
            .collect()
    }));
    assert_eq!(cached_members, now_members);
}

/// The protected `app.test` site for the report, allowing `allow` (a TOML line, or empty).
fn protected_site(allow: &str) -> String {
    format!(
        "[[site]]\nhost = \"app.test\"\nupstream = \"http://127.0.0.1:9\"\naccess = \"protected\"\n{allow}"
    )
}

/// `jumpgate directory sync [--dry-run]`: counts, the missing-group warning and who gains
/// or loses access per site; the dry run leaves the cache as it is, the real run writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_report_counts_warns_and_diffs_and_only_writes_without_dry_run() {
    let fake = FakeJumpCloud::start().await;
    let alice = fake.add_user(User::new("alice"));
    let bob = fake.add_user(User::new("bob"));
    let mut carol = User::new("carol");
    carol.suspend();
    let carol = fake.add_user(carol);
    let mut dave = User::new("dave");
    dave.state = UserState::Staged;
    dave.activated = false;
    fake.add_user(dave);
    let admins = fake.add_group("Admins");
    let staff = fake.add_group("Staff");
    fake.add_member(&admins, &alice);
    for u in [&alice, &bob, &carol] {
        fake.add_member(&staff, u);
    }
    let sites = format!(
        "{}  [[site.route]]\n  path = \"/ghosts\"\n  allow_groups = [\"Ghosts\"]\n",
        protected_site("allow_groups = [\"Staff\"]\n")
    );
    let cli = cli_config(&fake, &sites);

    // No cache yet: counts and the warning, nothing to compare with, nothing written.
    let report = directory_sync(&cli.config, true).await;
    for (label, n) in [
        ("users", 4),
        ("ACTIVATED", 2),
        ("SUSPENDED", 1),
        ("STAGED", 1),
        ("active", 2),
        ("groups", 2),
        ("memberships", 4),
    ] {
        assert_eq!(count(&report, label), Some(n), "{label}:\n{report}");
    }
    assert!(
        report.contains(
            "warning: group \"Ghosts\" named in the configuration does not exist in the directory"
        ),
        "{report}"
    );
    assert!(
        report.contains("site app.test: 2 users admitted by its default rule"),
        "{report}"
    );
    assert!(
        report.contains("(no cached snapshot to compare with)"),
        "{report}"
    );
    assert!(!cli.cache.exists(), "a dry run wrote the cache");

    // The real run writes it.
    let report = directory_sync(&cli.config, false).await;
    assert!(report.contains("wrote "), "{report}");
    let written = std::fs::read(&cli.cache).expect("cache written");

    // bob leaves Staff, erin joins: the dry run shows both and changes nothing.
    fake.remove_member(&staff, &bob);
    let erin = fake.add_user(User::new("erin"));
    fake.add_member(&staff, &erin);
    let modified = std::fs::metadata(&cli.cache).unwrap().modified().unwrap();
    let report = directory_sync(&cli.config, true).await;
    assert_eq!(
        diff(&report),
        (
            vec!["erin@example.com".to_owned()],
            vec!["bob@example.com".to_owned()]
        ),
        "{report}"
    );
    assert!(
        report.contains("site app.test: 2 users admitted by its default rule"),
        "{report}"
    );
    assert!(report.contains("dry run: "), "{report}");
    assert_eq!(
        std::fs::read(&cli.cache).unwrap(),
        written,
        "a dry run wrote the cache"
    );
    assert_eq!(
        std::fs::metadata(&cli.cache).unwrap().modified().unwrap(),
        modified
    );

    // Without --dry-run the change is stored, and compared with it nothing differs.
    let report = directory_sync(&cli.config, false).await;
    assert_eq!(
        diff(&report).1,
        vec!["bob@example.com".to_owned()],
        "{report}"
    );
    let cached = jumpgate::directory::load_cache(&cli.cache)
        .unwrap()
        .unwrap();
    assert!(cached.users.iter().any(|u| u.id == erin));
    let staff_members = &cached
        .groups
        .iter()
        .find(|g| g.id == staff)
        .unwrap()
        .members;
    assert!(!staff_members.contains(&bob) && staff_members.contains(&erin));
    let report = directory_sync(&cli.config, true).await;
    assert_eq!(diff(&report), (vec![], vec![]), "{report}");
}

/// The cache file is private (0600, even replacing a world-readable file), holds no API key,
/// is always whole for a reader, and leaves no temporary files behind.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_file_is_private_whole_and_holds_no_api_key() {
    use std::os::unix::fs::PermissionsExt;

    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("directory.json");
    std::fs::write(&cache, b"{}").unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (env, _echo) = env_with_options("", "max_retries = 1\n", Some(cache.clone())).await;
    let api_key = env.fake.api_key();
    assert!(
        eventually(Duration::from_secs(5), async || matches!(
            jumpgate::directory::load_cache(&cache),
            Ok(Some(_))
        ))
        .await,
        "the cache was never written"
    );
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "cache file mode {mode:o}");

    // Big enough that a write takes a while; a reader never sees part of one.
    env.fake.seed_directory(2_000, 0, 0);
    let reader_cache = cache.clone();
    let (reads, versions) = tokio::task::spawn_blocking(move || {
        // Each content read is checked as read, through a copy.
        let scratch = tempfile::tempdir().unwrap();
        let copy = scratch.path().join("seen.json");
        let start = Instant::now();
        let mut reads = 0;
        let mut last = Vec::new();
        let mut versions = BTreeSet::new();
        while start.elapsed() < Duration::from_secs(20) && versions.len() < 2 {
            let bytes = std::fs::read(&reader_cache).unwrap();
            if bytes != last {
                reads += 1;
                std::fs::write(&copy, &bytes).unwrap();
                match jumpgate::directory::load_cache(&copy) {
                    Ok(Some(raw)) if raw.users.len() == 2_001 => {
                        versions.insert(raw.taken_at);
                    }
                    Ok(Some(_)) => {}
                    other => panic!("a reader saw a partial cache file: {other:?}"),
                }
                last = bytes;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (reads, versions)
    })
    .await
    .unwrap();
    assert!(
        versions.len() >= 2,
        "the cache was not rewritten while read ({reads} reads, versions {versions:?})"
    );

    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(!text.contains(&api_key), "the cache holds the API key");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "cache file mode {mode:o}");

    // Once syncs stop succeeding nothing writes any more: only the cache file is there.
    let failures = metric(&env, SYNC_FAILURES).await;
    env.fake.directory_faults(|f| f.fail_prefix("/api", 503));
    assert!(
        eventually(Duration::from_secs(5), async || metric(&env, SYNC_FAILURES)
            .await
            > failures)
        .await
    );
    let names: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["directory.json".to_owned()]);
    for name in names {
        let bytes = std::fs::read(state.path().join(name)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&api_key));
    }
}
