//! Micro-benchmarks of every step of jumpgate's request path, through the public API, in the
//! order `src/proxy/pipeline.rs` runs them. Results and their meaning: BENCHMARKS.md.
//!
//! `cargo bench --bench request_path` measures (criterion, optimised build, about two
//! minutes). Under `cargo test --all-targets` (no `--bench` argument) every benchmark body runs
//! once on smaller fixtures instead, as a check that the benchmarks still build and behave.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use futures_util::FutureExt;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::Method;
use jumpgate::canonical;
use jumpgate::directory::Directory;
use jumpgate::headers;
use jumpgate::identity::{self, HeaderNames, Signer};
use jumpgate::metrics::{Metrics, RouteCounters};
use jumpgate::policy::{self, Routes, Verdict};
use jumpgate::session::cookie::CookieKey;
use jumpgate::session::{key_of, Session, Sessions};

/// Fixture sizes: the benchmark sizes, or small ones for the `cargo test` smoke run.
#[derive(Clone, Copy)]
struct Sizes {
    sessions: usize,
    users: usize,
    groups: usize,
}

const FULL: Sizes = Sizes {
    sessions: 100_000,
    users: 100_000,
    groups: 5_000,
};
const SMOKE: Sizes = Sizes {
    sessions: 2_000,
    users: 2_000,
    groups: 100,
};

/// Distinct requests the lookup benchmarks rotate through, so they are not measuring one
/// hot cache line.
const ROTATION: usize = 1024;

/// The typical protected request path: route `/svc17/api/v1/users` (the site's allow list).
const TYPICAL_PATH: &str = "/svc17/api/v1/users/12345/profile";

/// Runs a benchmark under criterion, or once (smoke mode).
struct Runner<'a> {
    criterion: Option<&'a mut Criterion>,
    ran: usize,
}

impl Runner<'_> {
    fn run<O>(&mut self, name: &str, mut f: impl FnMut() -> O) {
        match self.criterion.as_deref_mut() {
            Some(c) => {
                c.bench_function(name, |b| b.iter(&mut f));
            }
            None => {
                black_box(f());
            }
        }
        self.ran += 1;
    }

    /// `f` gets a fresh input from `setup` each time (setup is not measured).
    fn run_batched<I, O>(
        &mut self,
        name: &str,
        mut setup: impl FnMut() -> I,
        mut f: impl FnMut(&mut I) -> O,
    ) {
        match self.criterion.as_deref_mut() {
            Some(c) => {
                c.bench_function(name, |b| {
                    b.iter_batched_ref(&mut setup, &mut f, BatchSize::SmallInput)
                });
            }
            None => {
                let mut input = setup();
                black_box(f(&mut input));
            }
        }
        self.ran += 1;
    }
}

/// The output of a future that completes without waiting, as the in-memory session store's
/// do (no Redis configured): polled once, no runtime involved.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    f.now_or_never()
        .expect("in-memory store futures complete at once")
}

/// Cycles through `items`.
fn rotate<'a, T>(items: &'a [T]) -> impl FnMut() -> &'a T + 'a {
    let mut i = 0;
    move || {
        i = (i + 1) % items.len();
        &items[i]
    }
}

struct Fixture {
    routes: Routes,
    sessions: Sessions,
    /// Sessions of users 0, 2, 4, … (allowed on the typical path), with their cookies.
    allowed: Vec<(Arc<Session>, String)>,
    key: CookieKey,
    directory: Directory,
    names: HeaderNames,
    extra_identity: Vec<HeaderName>,
    signer: Signer,
    _state: tempfile::TempDir,
}

fn fixture(sizes: Sizes) -> Fixture {
    let config = common::config();
    let routes = Routes::compile(&config);
    let key_bytes = [7u8; 32];
    let sessions = Sessions::new(&config.session, CookieKey::from_bytes(&key_bytes));
    let step = (sizes.sessions / ROTATION).max(2) & !1; // even: allowed users
    let mut allowed = Vec::with_capacity(ROTATION);
    for i in 0..sizes.sessions {
        let (session, set_cookie) =
            ready(sessions.create(common::site(), common::login(i))).expect("memory store");
        if i % step == 0 && allowed.len() < ROTATION {
            allowed.push((session, common::cookie_value(&set_cookie)));
        }
    }
    let directory = Directory::new(Duration::from_secs(3600), routes.group_refs().to_vec());
    directory.publish(Arc::new(common::raw_directory(
        sizes.users,
        sizes.groups,
        5,
    )));
    let state = tempfile::tempdir().expect("temporary directory");
    let mut identity_config = config.identity.clone();
    identity_config.signing_key_file = state.path().join("assertion.key");
    let (signer, _) = Signer::load_or_create(&identity_config).expect("assertion key");
    let names = HeaderNames::new(&config.sites[0].headers);
    Fixture {
        routes,
        sessions,
        allowed,
        key: CookieKey::from_bytes(&key_bytes),
        directory,
        names,
        extra_identity: Vec::new(),
        signer,
        _state: state,
    }
}

fn benches(r: &mut Runner<'_>, sizes: Sizes) {
    let fx = fixture(sizes);
    let now = jumpgate::clock::now();
    let site = fx.routes.site(common::HOST).expect("bench site");
    let route = site.find(TYPICAL_PATH);
    assert_eq!(&*route.label, "/svc17/api/v1/users");
    let snapshot = fx.directory.fresh(now).expect("fresh snapshot");
    let (session0, cookie0) = &fx.allowed[0];

    // --- 1. Canonical method, host and path.
    r.run("canonical/path_typical", || {
        canonical::path(black_box(TYPICAL_PATH))
    });
    r.run("canonical/path_messy", || {
        canonical::path(black_box(
            "//svc17/./api/v1/%75sers/../users/12345/%7Eprofile;v=2/",
        ))
    });
    r.run("canonical/path_utf8_escapes", || {
        canonical::path(black_box("/svc17/files/caf%C3%A9/r%C3%A9sum%C3%A9.pdf"))
    });
    assert_eq!(
        canonical::path("//svc17/./api/v1/%75sers/../users/12345/%7Eprofile;v=2/").as_deref(),
        Ok("/svc17/api/v1/users/12345/~profile;v=2/")
    );
    r.run("canonical/host", || {
        canonical::host(black_box("App.Test:8443"))
    });

    // --- 2. Identity headers a client sent are stripped.
    let browser = common::browser_headers(cookie0);
    r.run_batched(
        "headers/strip_inbound_identity",
        || browser.clone(),
        |h| headers::strip_inbound_identity(h, &fx.extra_identity),
    );
    let mut spoofed = browser.clone();
    spoofed.insert("x-jumpgate-user", HeaderValue::from_static("admin"));
    spoofed.insert("x_jumpgate_groups", HeaderValue::from_static("Admins"));
    r.run_batched(
        "headers/strip_inbound_identity_spoofed",
        || spoofed.clone(),
        |h| headers::strip_inbound_identity(h, &fx.extra_identity),
    );
    r.run_batched("headers/clone_only", || (), |_| browser.clone());
    // A forwarded request keeps its `Accept`; only a request the gateway answers itself
    // has it parsed (a browser's navigation `Accept`, here).
    r.run("headers/accept_kept", || {
        black_box(&browser).get(http::header::ACCEPT).cloned()
    });
    r.run("headers/accept_negotiated", || {
        jumpgate::proxy::respond::wants_json(black_box(&browser))
    });
    let target: http::Uri = TYPICAL_PATH.parse().expect("a path");
    r.run("headers/section_size", || {
        headers::section_size(&Method::GET, black_box(&target), black_box(&browser))
    });
    r.run_batched(
        "headers/strip_gateway_cookies",
        || browser.clone(),
        headers::strip_gateway_cookies,
    );

    // --- 3. Site and route: 500 routes.
    let config = common::config();
    r.run("routes/compile_500", || Routes::compile(black_box(&config)));
    r.run("routes/site_by_host", || {
        fx.routes.site(black_box(common::HOST))
    });
    r.run("routes/find_typical", || site.find(black_box(TYPICAL_PATH)));
    r.run("routes/find_default", || {
        site.find(black_box("/nothing/configured/here/at/all"))
    });
    r.run("routes/find_mixed_case_params", || {
        site.find(black_box("/SVC17/Api/v1/Users;jsessionid=1/12345"))
    });
    r.run("routes/readings_typical", || {
        site.readings(black_box(TYPICAL_PATH)).all().len()
    });
    r.run("routes/readings_mixed_case_params", || {
        site.readings(black_box("/SVC17/Api/v1/Users;jsessionid=1/12345"))
            .all()
            .len()
    });

    // --- 4a. Session: cookie verification and lookup.
    let sealed: Vec<&str> = fx.allowed.iter().map(|(_, c)| c.as_str()).collect();
    let mut next = rotate(&sealed);
    r.run("session/cookie_open", || {
        fx.key.open("session", black_box(next()))
    });
    assert!(fx.key.open("session", cookie0).is_some());
    let mut tampered = cookie0.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    r.run("session/cookie_open_tampered", || {
        fx.key.open("session", black_box(&tampered))
    });
    let requests: Vec<http::HeaderMap> = fx
        .allowed
        .iter()
        .map(|(_, c)| common::browser_headers(c))
        .collect();
    let mut next = rotate(&requests);
    r.run(
        &format!("session/from_headers_{}k_sessions", sizes.sessions / 1000),
        || ready(fx.sessions.from_headers(black_box(next()), common::HOST)),
    );
    assert!(ready(fx.sessions.from_headers(&browser, common::HOST)).is_some());
    // The same on a connection that presented the same cookie before: the opening is
    // remembered, the store is still asked. The request's clock reading is part of it, as
    // the pipeline takes one per request.
    let conn = jumpgate::session::OpenedCookie::default();
    let now_ms = jumpgate::clock::now_ms;
    assert!(ready(
        fx.sessions
            .from_headers_on(&browser, common::HOST, Some(&conn), now_ms())
    )
    .is_some());
    r.run("session/from_headers_remembered", || {
        ready(
            fx.sessions
                .from_headers_on(black_box(&browser), common::HOST, Some(&conn), now_ms()),
        )
    });
    // The worst request for the store: as many validly signed session cookies as the
    // header limit lets through, none of them live. Only the first two are looked up.
    let stale: Vec<String> = (0..300u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id[31] = 0xee;
            format!("__Host-jumpgate={}", fx.key.seal("session", &id))
        })
        .collect();
    let mut flood = browser.clone();
    flood.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&stale.join("; ")).expect("ASCII"),
    );
    r.run("session/from_headers_300_stale_signed_cookies", || {
        ready(fx.sessions.from_headers(black_box(&flood), common::HOST))
    });
    // The store itself: the same moka cache configuration, the same keys (SHA-256 of the
    // id), no cookie work.
    let store: moka::sync::Cache<[u8; 32], Arc<Session>> = moka::sync::Cache::builder()
        .max_capacity(1_000_000)
        .time_to_live(Duration::from_secs(12 * 3600))
        .time_to_idle(Duration::from_secs(3600))
        .support_invalidation_closures()
        .build();
    for (s, _) in &fx.allowed {
        store.insert(s.key, s.clone());
    }
    for i in 0..sizes.sessions.saturating_sub(fx.allowed.len()) {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        id[31] = 0xff;
        store.insert(id, fx.allowed[0].0.clone());
    }
    store.run_pending_tasks();
    let keys: Vec<[u8; 32]> = fx.allowed.iter().map(|(s, _)| s.key).collect();
    let mut next = rotate(&keys);
    r.run(
        &format!("session/store_get_{}k_sessions", sizes.sessions / 1000),
        || store.get(black_box(next())),
    );
    let ids: Vec<[u8; 32]> = fx.allowed.iter().map(|(s, _)| s.id).collect();
    let mut next = rotate(&ids);
    r.run("session/store_key_sha256", || key_of(black_box(next())));

    // --- 4b. Directory snapshot and policy.
    let subs: Vec<(String, String)> = (0..ROTATION)
        .map(|i| {
            let u = i * (sizes.users / ROTATION).max(1);
            (common::user_id(u), format!("user{u:06}@example.com"))
        })
        .collect();
    let mut next = rotate(&subs);
    r.run(
        &format!("directory/user_lookup_{}k_users", sizes.users / 1000),
        || {
            let (sub, email) = next();
            snapshot.user_index(black_box(sub), Some(email))
        },
    );
    let mut next = rotate(&subs);
    r.run("directory/user_lookup_by_email", || {
        let (_, email) = next();
        snapshot.user_index(black_box("unknown-sub"), Some(email))
    });
    r.run("directory/fresh", || fx.directory.fresh(black_box(now)));
    let mut next = rotate(&fx.allowed);
    r.run("policy/decide_with_directory", || {
        let (s, _) = next();
        policy::decide(
            route,
            &Method::GET,
            false,
            Some(s.clone()),
            Some(Ok(snapshot.clone())),
            now,
        )
    });
    assert!(matches!(
        policy::decide(
            route,
            &Method::GET,
            false,
            Some(session0.clone()),
            Some(Ok(snapshot.clone())),
            now
        ),
        Ok(Verdict::Allow(_))
    ));
    r.run("policy/decide_without_directory", || {
        policy::decide(
            route,
            &Method::GET,
            false,
            Some(session0.clone()),
            None,
            now,
        )
    });

    // --- 5. Forwarding headers, the assertion and identity headers.
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // The gateway makes the peer's header value once per connection.
    let peer_value = HeaderValue::from_str(&peer.to_string()).ok();
    // And each site's X-Forwarded-Host once, at start-up.
    let forwarded_host = HeaderValue::from_static(common::HOST);
    r.run_batched(
        "headers/hop_by_hop_and_forwarded",
        || browser.clone(),
        |h| {
            headers::mark_sensitive(h);
            headers::strip_hop_by_hop(h, false);
            headers::set_forwarded(h, peer, peer_value.as_ref(), false, &forwarded_host);
        },
    );
    let user = snapshot
        .user(&session0.identity.sub, None)
        .expect("user in snapshot");
    let groups = user.group_names.as_slice();
    let first = fx.signer.assertion(session0, Some(groups), None, now);
    assert!(first.is_some());
    r.run("assertion/cached", || {
        fx.signer
            .assertion(black_box(session0), Some(groups), None, now)
    });
    let lists = [vec!["a".to_owned()], vec!["b".to_owned()]];
    let mut turn = 0;
    r.run("assertion/resign_es256", || {
        // Other groups every time: the cache never matches.
        turn += 1;
        fx.signer
            .assertion(black_box(session0), Some(&lists[turn % 2]), None, now)
    });
    r.run_batched(
        "headers/set_identity",
        || browser.clone(),
        |h| {
            identity::set_headers(
                h,
                &fx.names,
                session0,
                Some(user.groups_header.as_ref()),
                first.clone(),
                None,
            )
        },
    );

    // --- 6. Accounting: the request counter and the latency histogram every request
    // touches, through the route's resolved counters.
    let metrics = Metrics::new();
    let site_arc: Arc<str> = Arc::from(common::HOST);
    let counters = RouteCounters::new(site_arc.clone(), route.label.clone());
    r.run("metrics/request_accounting", || {
        counters.record(&metrics, 200, Duration::from_micros(400));
    });

    // --- Everything above that one protected request runs, in pipeline order, minus I/O
    // (TLS, HTTP parsing, the upstream exchange).
    r.run_batched(
        "request_path/all_steps_protected",
        || browser.clone(),
        |h| {
            headers::mark_sensitive(h);
            let _client = headers::client_ip(h, peer, &[]);
            let _size = headers::section_size(&Method::GET, &target, h);
            let ok = canonical::method_ok("GET") && !canonical::method_echoes("GET");
            let site = h
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(canonical::host)
                .and_then(|host| fx.routes.site(&host))
                .expect("site");
            let path = canonical::path(TYPICAL_PATH).unwrap_or_default();
            let log_path = path.to_string();
            headers::strip_inbound_identity(h, &fx.extra_identity);
            let route = site.find(&path);
            let reserved = policy::routes::match_key(&path).starts_with("/.jumpgate/");
            let session = ready(fx.sessions.from_headers(h, &site.host));
            let snapshot = fx.directory.fresh(now);
            let Ok(Verdict::Allow(permit)) =
                policy::decide(route, &Method::GET, false, session, Some(snapshot), now)
            else {
                panic!("typical request refused");
            };
            headers::strip_hop_by_hop(h, false);
            headers::strip_gateway_cookies(h);
            headers::set_forwarded(h, peer, peer_value.as_ref(), false, &forwarded_host);
            if let Some(session) = permit.session() {
                let user = permit.user();
                let assertion = fx.signer.assertion(
                    session,
                    user.map(|(_, u)| u.group_names.as_slice()),
                    None,
                    now,
                );
                identity::set_headers(
                    h,
                    &fx.names,
                    session,
                    user.map(|(_, u)| u.groups_header.as_ref()),
                    assertion,
                    None,
                );
            }
            let uri = PathAndQuery::try_from(path.as_ref())
                .ok()
                .map(http::Uri::from);
            counters.record(&metrics, 200, Duration::from_micros(400));
            (ok, log_path, reserved, uri)
        },
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if bench {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .configure_from_args();
        let mut runner = Runner {
            criterion: Some(&mut c),
            ran: 0,
        };
        benches(&mut runner, FULL);
        c.final_summary();
    } else {
        // `cargo test --all-targets` runs bench targets with libtest's arguments, which
        // criterion would refuse: run every body once instead.
        let mut runner = Runner {
            criterion: None,
            ran: 0,
        };
        benches(&mut runner, SMOKE);
        println!(
            "request_path: {} benchmark bodies ran once (measure with `cargo bench --bench request_path`)",
            runner.ran
        );
    }
}
