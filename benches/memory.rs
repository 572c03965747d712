//! Memory and build-time report: the directory snapshot for 100,000 users in 5,000 groups, and
//! the memory an idle session costs in the in-memory store (100,000 sessions).
//!
//! `cargo bench --bench memory` prints the report. Each measurement runs in a fresh child
//! process (this same executable), so memory freed by one measurement cannot be reused by the
//! next and hide its cost. RSS is read from `/proc/self/statm`, CPU time from
//! `/proc/thread-self/schedstat`. Under `cargo test --all-targets` (no `--bench` argument) the
//! same code runs on small sizes, as a check.

mod common;

use std::process::Command;
use std::time::Instant;

use futures_util::FutureExt;

use jumpgate::directory::Snapshot;
use jumpgate::policy::Routes;
use jumpgate::session::cookie::CookieKey;
use jumpgate::session::Sessions;

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let what = args.get(pos + 1).map(String::as_str).unwrap_or("");
        let n: Vec<usize> = args[pos + 2..]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        match (what, n.as_slice()) {
            ("sessions", [count, tokens, sid]) => sessions(*count, *tokens != 0, *sid != 0),
            ("snapshot", [users, groups, per_user]) => snapshot(*users, *groups, *per_user),
            _ => panic!("unknown child measurement {what} {n:?}"),
        }
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let (count, users, groups) = if bench {
        (100_000, 100_000, 5_000)
    } else {
        (2_000, 2_000, 100)
    };
    let exe = std::env::current_exe().expect("own executable");
    let runs: [Vec<String>; 4] = [
        vec![
            "snapshot".into(),
            users.to_string(),
            groups.to_string(),
            "5".into(),
        ],
        vec!["sessions".into(), count.to_string(), "1".into(), "1".into()],
        vec!["sessions".into(), count.to_string(), "0".into(), "1".into()],
        vec!["sessions".into(), count.to_string(), "0".into(), "0".into()],
    ];
    for run in runs {
        let status = Command::new(&exe)
            .arg("--child")
            .args(&run)
            .status()
            .expect("child measurement");
        assert!(status.success(), "child measurement {run:?} failed");
    }
    if !bench {
        println!("memory: smoke run ok (measure with `cargo bench --bench memory`)");
    }
}

/// Builds the snapshot the way a sync does and reports its CPU time and RSS growth.
fn snapshot(users: usize, groups: usize, per_user: usize) {
    let config = common::config();
    let routes = Routes::compile(&config);
    let refs = routes.group_refs().to_vec();
    let rss0 = common::rss_bytes();
    let raw = common::raw_directory(users, groups, per_user);
    let rss_raw = common::rss_bytes();
    let cpu0 = common::thread_cpu_ns();
    let wall = Instant::now();
    let snapshot = Snapshot::build(&raw, &refs, 1);
    let wall = wall.elapsed();
    let cpu = common::thread_cpu_ns() - cpu0;
    let rss_snap = common::rss_bytes();
    // A second build while the first is in service, as every later sync does.
    let cpu1 = common::thread_cpu_ns();
    let again = Snapshot::build(&raw, &refs, 2);
    let cpu_again = common::thread_cpu_ns() - cpu1;
    let memberships = snapshot.membership_count();
    println!(
        "snapshot: {} users, {} groups, {} memberships ({} config group refs)",
        snapshot.user_count(),
        snapshot.group_count(),
        memberships,
        refs.len()
    );
    println!(
        "snapshot: build CPU {:.0} ms (wall {:.0} ms); second build {:.0} ms",
        cpu as f64 / 1e6,
        wall.as_secs_f64() * 1e3,
        cpu_again as f64 / 1e6
    );
    println!(
        "snapshot: RSS +{:.1} MiB for the snapshot ({:.0} bytes/user); the fetched raw directory it is built from: +{:.1} MiB",
        (rss_snap - rss_raw) as f64 / MIB,
        (rss_snap - rss_raw) as f64 / users as f64,
        (rss_raw - rss0) as f64 / MIB
    );
    drop((snapshot, again, raw));
}

/// Creates `count` sessions (after a warm-up) and reports RSS growth per session. `tokens`:
/// the provider's refresh token is kept, at JumpCloud's size (the ID token never is); `sid`: the ID token
/// carries a provider session id, which the store indexes for back-channel logout.
fn sessions(count: usize, tokens: bool, sid: bool) {
    let config = common::config();
    let sessions = Sessions::new(&config.session, CookieKey::from_bytes(&[7u8; 32]));
    let login = |i: usize| {
        let mut l = common::login(i);
        if !tokens {
            l.refresh_token = None;
        }
        if !sid {
            l.claims.sid = None;
        }
        l
    };
    let create = |i: usize| {
        // The in-memory store's futures complete at once: poll once, no runtime needed.
        sessions
            .create(common::site(), login(i))
            .now_or_never()
            .expect("in-memory store futures complete at once")
            .expect("memory store");
    };
    for i in 0..1_000 {
        create(count + i);
    }
    let rss0 = common::rss_bytes();
    let cpu0 = common::thread_cpu_ns();
    for i in 0..count {
        // Only the store keeps the session; the cookie goes to the browser.
        create(i);
    }
    let cpu = common::thread_cpu_ns() - cpu0;
    let rss1 = common::rss_bytes();
    let live = sessions.len();
    let per = (rss1 - rss0) as f64 / count as f64;
    println!(
        "sessions ({}, {}): {} created, store reports {} live; RSS +{:.1} MiB = {:.0} bytes ({:.2} KiB) per idle session; create {:.1} µs CPU each",
        if tokens {
            "refresh token 90 B"
        } else {
            "no provider tokens"
        },
        if sid { "with sid" } else { "no sid" },
        count,
        live,
        (rss1 - rss0) as f64 / MIB,
        per,
        per / 1024.0,
        cpu as f64 / count as f64 / 1e3
    );
}
