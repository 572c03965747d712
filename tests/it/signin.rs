//! Sign-in end to end against the fake JumpCloud: the code flow with PKCE, state and nonce,
//! sessions, identity upstream, logout, refresh, expiry, and every refusal; and the gateway's
//! outbound TLS (provider, directory API, upstream) over real TLS on loopback with a private
//! CA made in the test, refusing certificates from an unknown CA, for another name, or expired.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::browser::{location, sets_session, Browser};
use support::env::{SignInEnv, CLIENT_ID, CLIENT_SECRET};
use support::jumpcloud::{App, FakeJumpCloud, User};
use support::{
    eventually, from_echo, https_get, report, unix_now, within, Echo, Gateway, Reply, TestCa,
    TlsEcho, Validity,
};

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
    // The attributes, in whatever order they are written.
    let mut attrs: Vec<&str> = attrs
        .split("; ")
        .filter(|a| !a.starts_with("Max-Age"))
        .collect();
    attrs.sort_unstable();
    assert_eq!(attrs, vec!["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]);
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

// ---------------------------------------------------------------------------------------
// Outbound TLS: the provider, the directory API and upstreams over real TLS on loopback
// ---------------------------------------------------------------------------------------

/// A route only members of "Admins" may use (decided from the directory when there is one).
const ADMIN_ONLY: &str = "  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n";

/// The TLS alerts a client sends for each refused certificate, as the server logs them.
const UNKNOWN_CA: &str = "received fatal alert: UnknownCA";
const BAD_NAME: &str = "received fatal alert: BadCertificate";
const EXPIRED: &str = "received fatal alert: CertificateExpired";

/// The name every server here is reached by: URLs are `https://127.0.0.1:PORT`.
const LOOPBACK: &[&str] = &["127.0.0.1"];

/// A site `app.test` with `access` in front of `upstream`, with `upstream_ca_file` when given.
fn app_site(upstream: &str, upstream_ca: Option<&Path>, access: &str, routes: &str) -> String {
    let ca = upstream_ca
        .map(|p| format!("upstream_ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    format!("[[site]]\nhost = \"app.test\"\nupstream = \"{upstream}\"\n{ca}access = \"{access}\"\n{routes}")
}

/// The fake JumpCloud serving HTTPS (OIDC and, with `directory`, the directory API at the
/// same origin) and a gateway signing in against it, trusting `oidc_ca` (`oidc.ca_file`,
/// which the directory client uses too). Users: alice in "Admins" and "Staff", bob in
/// "Staff" only. Readiness is not awaited: some tests expect it never to come.
struct TlsEnv {
    fake: FakeJumpCloud,
    gw: Gateway,
    alice: String,
    bob: String,
    _dir: tempfile::TempDir,
}

impl TlsEnv {
    async fn start(
        idp_cert: Arc<rustls::ServerConfig>,
        oidc_ca: Option<&Path>,
        sites: &str,
        directory: bool,
    ) -> TlsEnv {
        let fake = FakeJumpCloud::start_tls(idp_cert).await;
        let alice = fake.add_user(User::new("alice"));
        let bob = fake.add_user(User::new("bob"));
        let admins = fake.add_group("Admins");
        let staff = fake.add_group("Staff");
        fake.add_member(&admins, &alice);
        fake.add_member(&staff, &alice);
        fake.add_member(&staff, &bob);
        let mut app = App::new(CLIENT_ID, CLIENT_SECRET, "https://unused.invalid/");
        app.groups_claim = Some("memberOf".into());
        app.bound_groups = vec![admins, staff];
        fake.add_app(app);
        fake.set_next_login(Some(&alice));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, CLIENT_SECRET).unwrap();
        let ca = oidc_ca
            .map(|p| format!("ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default();
        let directory = if directory {
            let key = dir.path().join("api-key");
            std::fs::write(&key, fake.api_key()).unwrap();
            // One retry per request keeps a failing sync short.
            format!(
                "[directory]\nprovider = \"jumpcloud\"\napi_url = \"{}\"\napi_key_file = \"{}\"\ncache_file = \"{}\"\nsync_interval = \"1s\"\nrequest_interval = \"1ms\"\nretry_backoff = \"50ms\"\nmax_retries = 1\nrequest_timeout = \"5s\"\n",
                fake.base_url(),
                key.display(),
                dir.path().join("directory.json").display()
            )
        } else {
            String::new()
        };
        let rest = format!(
            "{sites}\n[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\ngroups_claim = \"memberOf\"\n{ca}\n[session]\nkey_file = \"{}\"\n\n[identity]\nsigning_key_file = \"{}\"\n\n{directory}",
            fake.issuer(),
            secret.display(),
            dir.path().join("session.key").display(),
            dir.path().join("assertion.key").display(),
        );
        let gw = Gateway::start_with(&rest, "", "sign_in_rate = 100000").await;
        fake.update_app(CLIENT_ID, |app| {
            app.redirect_uris.push(format!(
                "https://app.test:{}/.jumpgate/callback",
                gw.addr.port()
            ))
        });
        TlsEnv {
            fake,
            gw,
            alice,
            bob,
            _dir: dir,
        }
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gw.client(), "app.test")
    }

    async fn readyz(&self) -> (u16, String) {
        within(self.gw.admin_get("/readyz")).await
    }

    /// Waits (bounded) for `/readyz` to answer 200; whether it did.
    async fn ready(&self) -> bool {
        eventually(Duration::from_secs(10), async || {
            self.readyz().await.0 == 200
        })
        .await
    }

    /// The value of a metric series on the admin listener, 0 when not exported yet.
    async fn metric(&self, name: &str) -> f64 {
        let (status, text) = within(self.gw.admin_get("/metrics")).await;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// How many requests reached the fake at `path` (over a completed handshake).
    fn requests_to(&self, path: &str) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

const SYNC_FAILURES: &str = "jumpgate_directory_sync_failures_total";
const LAST_SUCCESS: &str = "jumpgate_directory_last_success_timestamp_seconds";

/// The distinct handshake failures a server saw.
fn distinct(failures: Vec<String>) -> BTreeSet<String> {
    failures.into_iter().collect()
}

/// The distinct handshake failures `seen` reports, waiting (bounded) for the first: a server
/// records a refused handshake just after the client gave up, so the gateway's error answer
/// can arrive before it.
async fn failures_after_refusal(seen: impl Fn() -> Vec<String>) -> BTreeSet<String> {
    eventually(Duration::from_secs(5), async || !seen().is_empty()).await;
    distinct(seen())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The browser's half of a sign-in over the HTTPS provider: `path` on the gateway, the
/// provider's authorization endpoint (trusting `ca`); returns the provider's redirect back to
/// the gateway's callback, not yet followed.
async fn authorize_over_tls(b: &mut Browser, ca: &Path, path: &str) -> Reply {
    let first = within(b.get(path)).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let idp = https_get(&location(&first), ca).await;
    assert_eq!(
        idp.status,
        302,
        "provider did not redirect back: {}",
        idp.text()
    );
    idp
}

/// A whole sign-in over the HTTPS provider; returns the page finally served at `path`.
async fn sign_in_over_tls(b: &mut Browser, ca: &Path, path: &str) -> Reply {
    let idp = authorize_over_tls(b, ca, path).await;
    let callback = within(b.follow(&idp)).await;
    assert_eq!(callback.status, 302, "callback failed: {}", callback.text());
    assert_eq!(location(&callback), path);
    within(b.follow(&callback)).await
}

/// The positive path, everything over TLS with one private CA: discovery, the browser's
/// sign-in, the token exchange and the key set at `https://127.0.0.1:PORT` trusted through
/// `oidc.ca_file`; the directory sync over the same origin and CA deciding a group route;
/// the upstream at `https://127.0.0.1:PORT` trusted through `upstream_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_directory_and_upstream_over_tls_with_a_private_ca() {
    let ca = TestCa::new("jumpgate test CA");
    let echo = TlsEcho::start(ca.server_tls(LOOPBACK, Validity::Current)).await;
    let sites = app_site(&echo.url(), Some(&ca.file), "protected", ADMIN_ONLY);
    let env = TlsEnv::start(
        ca.server_tls(LOOPBACK, Validity::Current),
        Some(&ca.file),
        &sites,
        true,
    )
    .await;
    assert!(env.fake.issuer().starts_with("https://127.0.0.1:"));
    assert!(env.ready().await, "{:?}", env.readyz().await);

    let mut alice = env.browser();
    let page = sign_in_over_tls(&mut alice, &ca.file, "/deep/link?x=1").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(from_echo(&page));
    assert_eq!(page.headers["x-upstream-tls"], "TLSv1_3");
    assert_eq!(page.upstream_path(), "/deep/link?x=1");
    assert_eq!(
        page.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str())
    );
    // The gateway itself fetched discovery, the key set and the token over TLS.
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/oauth2/token",
    ] {
        assert!(env.requests_to(path) >= 1, "no request to {path}");
    }

    // The group route is decided from the directory synced over TLS: alice (Admins) passes,
    // bob (Staff only) is refused.
    assert!(env.fake.directory_request_count() > 0);
    let admin = within(alice.get("/admin")).await;
    assert_eq!(admin.status, 200, "{}", admin.text());
    assert_eq!(admin.headers["x-upstream-tls"], "TLSv1_3");
    env.fake.set_next_login(Some(&env.bob));
    let mut bob = env.browser();
    let page = sign_in_over_tls(&mut bob, &ca.file, "/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.bob.as_str())
    );
    let refused = within(bob.get("/admin")).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!from_echo(&refused));

    assert_eq!(env.metric(SYNC_FAILURES).await, 0.0);
    assert!(env.metric(LAST_SUCCESS).await > 0.0);
    assert_eq!(env.fake.tls_failures(), Vec::<String>::new());
    assert_eq!(echo.tls_failures(), Vec::<String>::new());
}

/// Discovery at start-up against a provider whose certificate the gateway must refuse: the
/// gateway never becomes ready, a sign-in answers 503, and no HTTP request ever reaches the
/// provider (the handshake failed with the alert in the table). The control row trusts the
/// certificate and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_over_tls_refuses_a_bad_provider_certificate() {
    let ca = TestCa::new("jumpgate test CA");
    let stranger = TestCa::new("some other CA");
    let trusted = Some(ca.file.as_path());
    // (case, the provider's certificate, oidc.ca_file,
    //  expected: /readyz, GET /deep, requests reaching the provider, handshake failures)
    let cases = [
        (
            "control: certificate from the CA in oidc.ca_file",
            ca.server_tls(LOOPBACK, Validity::Current),
            trusted,
            (200, 302, true, set(&[])),
        ),
        (
            "unknown CA: no oidc.ca_file (web PKI only)",
            ca.server_tls(LOOPBACK, Validity::Current),
            None,
            (503, 503, false, set(&[UNKNOWN_CA])),
        ),
        (
            "unknown CA: signed by another CA than oidc.ca_file",
            stranger.server_tls(LOOPBACK, Validity::Current),
            trusted,
            (503, 503, false, set(&[UNKNOWN_CA])),
        ),
        (
            "name mismatch: certificate for localhost, issuer at 127.0.0.1",
            ca.server_tls(&["localhost"], Validity::Current),
            trusted,
            (503, 503, false, set(&[BAD_NAME])),
        ),
        (
            "expired certificate",
            ca.server_tls(LOOPBACK, Validity::Expired),
            trusted,
            (503, 503, false, set(&[EXPIRED])),
        ),
    ];
    let mut failures = Vec::new();
    for (case, cert, oidc_ca, expected) in cases {
        let echo = Echo::start().await;
        let env = TlsEnv::start(
            cert,
            oidc_ca,
            &app_site(&echo.url(), None, "protected", ""),
            false,
        )
        .await;
        // Either discovery succeeded or a handshake failed.
        let settled = eventually(Duration::from_secs(10), async || {
            !env.fake.tls_failures().is_empty() || env.readyz().await.0 == 200
        })
        .await;
        assert!(settled, "{case}: neither ready nor a failed handshake");
        let (ready, body) = env.readyz().await;
        let deep = within(env.browser().get("/deep")).await;
        if ready != 200 && !body.contains("identity provider not discovered yet") {
            failures.push(format!("{case}: /readyz said {body:?}"));
        }
        if deep.status == 302
            && !location(&deep).starts_with(&format!("{}/oauth2/auth?", env.fake.base_url()))
        {
            failures.push(format!("{case}: redirected to {}", location(&deep)));
        }
        if from_echo(&deep) {
            failures.push(format!("{case}: the protected page was served"));
        }
        let got = (
            ready,
            deep.status.as_u16(),
            !env.fake.requests().is_empty(),
            distinct(env.fake.tls_failures()),
        );
        if got != expected {
            failures.push(format!("{case}: got {got:?}, expected {expected:?}"));
        }
    }
    report(failures);
}

/// The token exchange against a provider whose certificate turns bad between the browser's
/// visit and the callback (discovery succeeded with a good one): the callback answers 503
/// and sets no session, the token endpoint is never reached, and the page still needs a
/// sign-in. The control row replaces the certificate with another good one and signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_over_tls_refuses_a_bad_provider_certificate() {
    let ca = TestCa::new("jumpgate test CA");
    let stranger = TestCa::new("some other CA");
    // (case, the provider's certificate from the callback on,
    //  expected: callback status, session set, GET /deep afterwards, token requests,
    //  handshake failures)
    let cases = [
        (
            "control: another certificate from the CA in oidc.ca_file",
            ca.server_tls(LOOPBACK, Validity::Current),
            (302, true, 200, 1, set(&[])),
        ),
        (
            "unknown CA: signed by another CA than oidc.ca_file",
            stranger.server_tls(LOOPBACK, Validity::Current),
            (503, false, 302, 0, set(&[UNKNOWN_CA])),
        ),
        (
            "name mismatch: certificate for localhost, issuer at 127.0.0.1",
            ca.server_tls(&["localhost"], Validity::Current),
            (503, false, 302, 0, set(&[BAD_NAME])),
        ),
        (
            "expired certificate",
            ca.server_tls(LOOPBACK, Validity::Expired),
            (503, false, 302, 0, set(&[EXPIRED])),
        ),
    ];
    let mut failures = Vec::new();
    for (case, cert, expected) in cases {
        let echo = Echo::start().await;
        let env = TlsEnv::start(
            ca.server_tls(LOOPBACK, Validity::Current),
            Some(&ca.file),
            &app_site(&echo.url(), None, "protected", ""),
            false,
        )
        .await;
        assert!(env.ready().await, "{case}: {:?}", env.readyz().await);
        let mut b = env.browser();
        let idp = authorize_over_tls(&mut b, &ca.file, "/deep").await;
        env.fake.replace_tls_config(cert);
        let callback = within(b.follow(&idp)).await;
        let after = within(b.get("/deep")).await;
        if callback.status == 302 && location(&callback) != "/deep" {
            failures.push(format!("{case}: callback went to {}", location(&callback)));
        }
        if after.status == 302
            && !location(&after).starts_with(&format!("{}/oauth2/auth?", env.fake.base_url()))
        {
            failures.push(format!("{case}: redirected to {}", location(&after)));
        }
        let got = (
            callback.status.as_u16(),
            sets_session(&callback),
            after.status.as_u16(),
            env.requests_to("/oauth2/token"),
            if callback.status == 302 {
                distinct(env.fake.tls_failures())
            } else {
                failures_after_refusal(|| env.fake.tls_failures()).await
            },
        );
        if got != expected {
            failures.push(format!(
                "{case}: got {got:?}, expected {expected:?}; callback said {}",
                callback.text()
            ));
        }
    }
    report(failures);
}

/// The directory sync after the directory API's certificate turns bad: every sync fails
/// (counted in `jumpgate_directory_sync_failures_total`, no success after the change) and
/// the last good snapshot stays in force: alice's group route still answers 200 and the
/// gateway stays ready. The control row replaces the certificate with another good one and
/// keeps syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_sync_over_tls_keeps_the_last_good_snapshot_when_the_certificate_goes_bad() {
    let ca = TestCa::new("jumpgate test CA");
    let stranger = TestCa::new("some other CA");
    // (case, the API's certificate from now on,
    //  expected: a sync failed, a sync succeeded since, GET /admin, /readyz,
    //  handshake failures)
    let cases = [
        (
            "control: another certificate from the CA in oidc.ca_file",
            ca.server_tls(LOOPBACK, Validity::Current),
            (false, true, 200, 200, set(&[])),
        ),
        (
            "unknown CA: signed by another CA than oidc.ca_file",
            stranger.server_tls(LOOPBACK, Validity::Current),
            (true, false, 200, 200, set(&[UNKNOWN_CA])),
        ),
        (
            "name mismatch: certificate for localhost, API at 127.0.0.1",
            ca.server_tls(&["localhost"], Validity::Current),
            (true, false, 200, 200, set(&[BAD_NAME])),
        ),
        (
            "expired certificate",
            ca.server_tls(LOOPBACK, Validity::Expired),
            (true, false, 200, 200, set(&[EXPIRED])),
        ),
    ];
    let mut failures = Vec::new();
    for (case, cert, expected) in cases {
        let echo = Echo::start().await;
        let env = TlsEnv::start(
            ca.server_tls(LOOPBACK, Validity::Current),
            Some(&ca.file),
            &app_site(&echo.url(), None, "protected", ADMIN_ONLY),
            true,
        )
        .await;
        assert!(env.ready().await, "{case}: {:?}", env.readyz().await);
        let mut b = env.browser();
        let page = sign_in_over_tls(&mut b, &ca.file, "/admin").await;
        assert_eq!(page.status, 200, "{case}: {}", page.text());
        assert_eq!(env.metric(SYNC_FAILURES).await, 0.0, "{case}");

        // A snapshot taken (at the end of a sync) two seconds after the one the change falls
        // in came from requests made after the change, so over a handshake with the new
        // certificate: the connections open at the change are closed.
        let after_change = (unix_now() + 1) as f64;
        env.fake.replace_tls_config(cert);
        let settled = eventually(Duration::from_secs(10), async || {
            (env.metric(SYNC_FAILURES).await > 0.0 && !env.fake.tls_failures().is_empty())
                || env.metric(LAST_SUCCESS).await > after_change
        })
        .await;
        assert!(
            settled,
            "{case}: no sync ended after the certificate changed"
        );
        let admin = within(b.get("/admin")).await;
        if admin.status == 200 && !from_echo(&admin) {
            failures.push(format!(
                "{case}: /admin answered 200 but not from the upstream"
            ));
        }
        let (ready, body) = env.readyz().await;
        if !body.contains("directory snapshot age:") {
            failures.push(format!("{case}: /readyz said {body:?}"));
        }
        let got = (
            env.metric(SYNC_FAILURES).await > 0.0,
            env.metric(LAST_SUCCESS).await > after_change,
            admin.status.as_u16(),
            ready,
            distinct(env.fake.tls_failures()),
        );
        if got != expected {
            failures.push(format!("{case}: got {got:?}, expected {expected:?}"));
        }
    }
    report(failures);
}

/// An `https://` upstream: reached over TLS when its certificate comes from the CA in
/// `upstream_ca_file` (the echo reports the TLS version it saw); 502 and the upstream never
/// answers a request otherwise, the handshake failing with the alert in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_refuses_a_bad_certificate() {
    let ca = TestCa::new("jumpgate test CA");
    let stranger = TestCa::new("some other CA");
    let trusted = Some(ca.file.as_path());
    // (case, the upstream's certificate, upstream_ca_file,
    //  expected: status, TLS version the upstream reports, handshake failures)
    let cases = [
        (
            "control: certificate from the CA in upstream_ca_file",
            ca.server_tls(LOOPBACK, Validity::Current),
            trusted,
            (200, Some("TLSv1_3"), set(&[])),
        ),
        (
            "unknown CA: no upstream_ca_file (web PKI only)",
            ca.server_tls(LOOPBACK, Validity::Current),
            None,
            (502, None, set(&[UNKNOWN_CA])),
        ),
        (
            "unknown CA: signed by another CA than upstream_ca_file",
            stranger.server_tls(LOOPBACK, Validity::Current),
            trusted,
            (502, None, set(&[UNKNOWN_CA])),
        ),
        (
            "name mismatch: certificate for localhost, upstream at 127.0.0.1",
            ca.server_tls(&["localhost"], Validity::Current),
            trusted,
            (502, None, set(&[BAD_NAME])),
        ),
        (
            "expired certificate",
            ca.server_tls(LOOPBACK, Validity::Expired),
            trusted,
            (502, None, set(&[EXPIRED])),
        ),
    ];
    let mut failures = Vec::new();
    for (case, cert, upstream_ca, expected) in cases {
        let echo = TlsEcho::start(cert).await;
        let gw = Gateway::start(&app_site(&echo.url(), upstream_ca, "public", "")).await;
        let r = within(gw.client().get("app.test", "/x")).await;
        if r.status == 200 && r.upstream_path() != "/x" {
            failures.push(format!("{case}: the upstream saw {}", r.upstream_path()));
        }
        let got = (
            r.status.as_u16(),
            r.headers
                .get("x-upstream-tls")
                .and_then(|v| v.to_str().ok()),
            if r.status == 200 {
                distinct(echo.tls_failures())
            } else {
                failures_after_refusal(|| echo.tls_failures()).await
            },
        );
        if got != expected {
            failures.push(format!(
                "{case}: got {got:?}, expected {expected:?}: {}",
                r.text()
            ));
        }
    }
    report(failures);
}
