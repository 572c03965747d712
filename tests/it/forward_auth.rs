//! Forward-auth (`/.jumpgate/verify`): the same canonicalization, route match and policy as
//! reverse-proxy mode, answered as decisions for nginx `auth_request`, Traefik and Caddy;
//! asked only by `server.verify_clients`, about the method, host and URI in the front proxy's
//! own headers. The shipped nginx and Caddy examples run here, in front of an echo upstream,
//! against clients that try to forge identity headers or choose the question.

use crate::support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::browser::Browser;
use support::env::{Options, SignInEnv};
use support::{site, RawReply};

/// The longest any one client exchange in these tests may take.
const LIMIT: Duration = Duration::from_secs(20);

/// `f`, or a failure naming `what` when it takes longer than [`LIMIT`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {LIMIT:?}"),
    }
}

/// Asks a forward-auth listener with exactly `headers` (Host included, when wanted).
async fn ask_exactly(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, http::HeaderMap) {
    within("forward-auth call", async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::get("/.jumpgate/verify");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = http_body_util::Full::new(bytes::Bytes::new());
        let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        (status, headers)
    })
    .await
}

/// Asks the gateway's plain-HTTP verify listener about (method, uri) on app.test.
async fn verify(env: &SignInEnv, b: &Browser, method: &str, uri: &str) -> (u16, http::HeaderMap) {
    let cookie = b.cookie_header();
    let mut headers = vec![
        ("x-forwarded-method", method),
        ("x-forwarded-host", "app.test"),
        ("x-forwarded-uri", uri),
        ("accept", "application/json"),
    ];
    if let Some(c) = &cookie {
        headers.push(("cookie", c));
    }
    within(
        "forward-auth call",
        support::ask_verify(env.gw.verify, &headers),
    )
    .await
}

/// A browser request to the gateway's public listener, bounded.
async fn request(
    b: &mut Browser,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> support::Reply {
    within(&format!("{method} {path}"), b.request(method, path, extra)).await
}

/// Signs `b` in from `path` (a bounded walk through the fake provider).
async fn sign_in(b: &mut Browser, path: &str) {
    let page = within("sign-in", b.sign_in(path)).await;
    assert_eq!(page.status, 200, "{}", page.text());
}

fn sites(echo: &str) -> String {
    format!(
        "{}  [[site.route]]\n  path = \"/blocked\"\n  access = \"deny\"\n  [[site.route]]\n  path = \"/admin\"\n  step_up = \"5m\"\n",
        site("app.test", echo, "protected", &[("/public", "public")])
    )
}

/// Who may ask: this test process (loopback), or only an address that is not ours.
const LOOPBACK_ASKS: &str = "verify_clients = [\"127.0.0.1/32\"]";
const NOBODY_HERE_ASKS: &str = "verify_clients = [\"192.0.2.1/32\"]";

async fn env(server: &str) -> SignInEnv {
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let step_up_secret = std::env::temp_dir().join(format!("jg-fa-{}", std::process::id()));
    std::fs::write(&step_up_secret, "x").unwrap();
    SignInEnv::start_with(Options {
        sites: Some(sites(&url)),
        server: server.into(),
        oidc: format!(
            "\n[oidc.step_up]\nclient_id = \"su\"\nclient_secret_file = \"{}\"\n",
            step_up_secret.display()
        ),
        ..Options::default()
    })
    .await
}

/// What reverse-proxy mode decided, in forward-auth terms.
fn as_verdict(status: u16) -> u16 {
    match status {
        302 => 401, // a navigation sent to sign in (or step up)
        s => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_decides_exactly_like_the_reverse_proxy() {
    let env = env(LOOPBACK_ASKS).await;
    let mut signed_in = env.browser();
    sign_in(&mut signed_in, "/x").await;
    let anonymous = env.browser();
    // (path, forward-auth answer signed in, anonymous): literal expectations, written from
    // the routes (`/public` public, `/blocked` deny, `/admin` step-up for writes, the rest
    // protected), not from the gateway's own code; the reverse proxy must agree with both.
    let cases: &[(&str, u16, u16)] = &[
        ("/", 200, 401),
        ("/x", 200, 401),
        ("/public", 200, 200),
        ("/public/a", 200, 200),
        ("/PUBLIC/a", 200, 401),
        ("/public/../x", 200, 401),
        ("/public/%2e%2e/x", 200, 401),
        ("/public/.%2E/blocked", 403, 403),
        ("/%70ublic/a", 200, 200),
        ("/public;x/a", 200, 401),
        ("/public/..;/x", 400, 400),
        ("/blocked", 403, 403),
        ("/Blocked/a", 403, 403),
        ("/blocked/../public", 200, 200),
        ("//public", 200, 200),
        ("/a%2Fb", 400, 400),
        ("/a%5Cb", 400, 400),
        ("/a%00", 400, 400),
        ("/%C0%AE%C0%AE/x", 400, 400),
        ("/public?x=../blocked", 200, 200),
        ("/x?y=/public", 200, 401),
        ("/admin", 200, 401),
        ("/admin/users", 200, 401),
        ("/Admin", 200, 401),
        ("/public/%252e%252e/x", 200, 200),
        ("/.jumpgate/userinfo", 404, 404),
        ("/.JUMPGATE/x", 404, 404),
        ("/api/v1/healthz", 200, 401),
        ("/public//x", 200, 200),
        ("/./public", 200, 200),
    ];
    for &(path, want_signed_in, want_anonymous) in cases {
        for (who, b, want) in [
            ("signed in", &signed_in, want_signed_in),
            ("anonymous", &anonymous, want_anonymous),
        ] {
            let (fa, _) = verify(&env, b, "GET", path).await;
            assert_eq!(fa, want, "{who} {path}: forward-auth");
            // Reverse proxy answers gateway endpoints itself; forward-auth never authorizes
            // them. Everywhere else the two modes agree.
            if path.to_ascii_lowercase().starts_with("/.jumpgate") {
                continue;
            }
            let mut rp_browser = b.clone();
            let rp = request(
                &mut rp_browser,
                "GET",
                path,
                &[("accept", "application/json"), ("sec-fetch-mode", "cors")],
            )
            .await;
            let rp = as_verdict(rp.status.as_u16());
            assert_eq!(
                rp, want,
                "{who} {path}: reverse proxy {rp}, forward-auth {fa}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_answers_carry_identity_and_refusals_say_why() {
    let env = env(LOOPBACK_ASKS).await;
    let mut b = env.browser();
    sign_in(&mut b, "/x").await;
    let (status, headers) = verify(&env, &b, "GET", "/reports?q=1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-jumpgate-user"], env.alice.as_str());
    assert_eq!(headers["x-jumpgate-email"], "alice@example.com");
    assert!(headers.contains_key("x-jumpgate-assertion"));
    let anonymous = env.browser();
    let (status, headers) = verify(&env, &anonymous, "GET", "/reports?q=1").await;
    assert_eq!(status, 401);
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.ends_with("/.jumpgate/sign-in?rd=%2Freports%3Fq%3D1"),
        "{location}"
    );
    let (status, headers) = verify(&env, &b, "POST", "/admin/users").await;
    assert_eq!(status, 401, "step-up needed");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_user_authentication"));
    let (status, _) = verify(&env, &b, "GET", "/blocked").await;
    assert_eq!(status, 403);
    let (status, _) = verify(&env, &b, "get", "/x").await;
    assert_eq!(status, 400, "methods are canonical too");
}

/// A complete question about a public path, from `peer_claims` (an X-Forwarded-For value).
fn public_question(peer_claims: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-forwarded-method", "GET".to_owned()),
        ("x-forwarded-host", "app.test".to_owned()),
        ("x-forwarded-uri", "/public".to_owned()),
        ("x-forwarded-for", peer_claims.to_owned()),
    ]
}

/// Asks `question` on the verify listener and on the public listener's `/.jumpgate/verify`
/// (which is never forward-auth: 404 whoever asks).
async fn ask_both(env: &SignInEnv, question: &[(&'static str, String)]) -> [(u16, bool); 2] {
    let q: Vec<(&str, &str)> = question.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (on_verify, headers) =
        within("verify listener", support::ask_verify(env.gw.verify, &q)).await;
    let mut b = env.browser();
    let r = request(&mut b, "GET", "/.jumpgate/verify", &q).await;
    [
        (on_verify, headers.contains_key("x-jumpgate-user")),
        (r.status.as_u16(), r.headers.contains_key("x-jumpgate-user")),
    ]
}

/// Only `verify_clients` may ask: a complete question about a public path is refused on both
/// listeners when the peer is not one, and answered when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_callers_cannot_ask() {
    let refused = env(NOBODY_HERE_ASKS).await;
    let answers = ask_both(&refused, &public_question("127.0.0.1")).await;
    assert_eq!(
        answers,
        [(403, false), (404, false)],
        "[verify listener, public listener]"
    );
    // The same question from a verify client is answered on the verify listener only.
    let allowed = env(LOOPBACK_ASKS).await;
    let answers = ask_both(&allowed, &public_question("127.0.0.1")).await;
    assert_eq!(
        answers,
        [(200, false), (404, false)],
        "[verify listener, public listener]"
    );
}

/// `trusted_proxies` is believed about the client's address and grants nothing else: a
/// loopback peer in trusted_proxies but not in verify_clients is refused, even when it says
/// the client is a verify client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_not_a_verify_client() {
    let env = env(&format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{NOBODY_HERE_ASKS}"
    ))
    .await;
    for claims in ["127.0.0.1", "192.0.2.1"] {
        let answers = ask_both(&env, &public_question(claims)).await;
        assert_eq!(
            answers,
            [(403, false), (404, false)],
            "X-Forwarded-For: {claims}: [verify listener, public listener]"
        );
    }
}

/// The URI is read from `server.verify_uri_header` alone: the other header, which a front
/// proxy may pass through from the client, is never read, not even as a fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uri_comes_from_the_configured_header_alone() {
    let base = [
        ("host", "jumpgate.internal"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.test"),
    ];
    /// URI headers sent, the status expected, and why.
    type Question = (&'static [(&'static str, &'static str)], u16, &'static str);
    let cases: [(&str, &str, [Question; 3]); 2] = [
        (
            "",
            "x-forwarded-uri (default)",
            [
                (
                    &[
                        ("x-forwarded-uri", "/reports"),
                        ("x-original-uri", "/public"),
                    ],
                    401,
                    "X-Forwarded-Uri decides",
                ),
                (
                    &[("x-original-uri", "/public")],
                    400,
                    "X-Original-URI alone",
                ),
                (
                    &[("x-forwarded-uri", "/public")],
                    200,
                    "X-Forwarded-Uri alone",
                ),
            ],
        ),
        (
            "verify_uri_header = \"x-original-uri\"",
            "x-original-uri",
            [
                (
                    &[
                        ("x-original-uri", "/reports"),
                        ("x-forwarded-uri", "/public"),
                    ],
                    401,
                    "X-Original-URI decides",
                ),
                (
                    &[("x-forwarded-uri", "/public")],
                    400,
                    "X-Forwarded-Uri alone",
                ),
                (
                    &[("x-original-uri", "/public")],
                    200,
                    "X-Original-URI alone",
                ),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (setting, name, questions) in cases {
        let env = env(&format!("{LOOPBACK_ASKS}\n{setting}")).await;
        for (uri_headers, expected, why) in questions {
            let mut headers = base.to_vec();
            headers.extend_from_slice(uri_headers);
            let (status, _) = ask_exactly(env.gw.verify, &headers).await;
            if status != expected {
                failures.push(format!("{name}: {why}: {status}, expected {expected}"));
            }
        }
    }
    support::report(failures);
}

/// The host is read from X-Forwarded-Host alone: without it the question is a 400 even when
/// Host names a site, and a host that is no configured site is a 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_comes_from_x_forwarded_host_alone() {
    let env = env(LOOPBACK_ASKS).await;
    let question = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/public"),
    ];
    let mut unknown = question.to_vec();
    unknown.push(("x-forwarded-host", "unknown.test"));
    unknown.push(("host", "app.test"));
    let (status, _) = ask_exactly(env.gw.verify, &unknown).await;
    assert_eq!(
        status, 421,
        "unknown X-Forwarded-Host on the verify listener"
    );
    let mut no_xfh = question.to_vec();
    no_xfh.push(("host", "app.test"));
    let (status, _) = ask_exactly(env.gw.verify, &no_xfh).await;
    assert_eq!(
        status, 400,
        "Host but no X-Forwarded-Host on the verify listener"
    );
    // The control: with X-Forwarded-Host, the same question is answered.
    let mut full = question.to_vec();
    full.push(("x-forwarded-host", "app.test"));
    let (status, _) = ask_exactly(env.gw.verify, &full).await;
    assert_eq!(status, 200, "the complete question");
}

/// Forward-auth keeps sessions as the reverse proxy does: a session near its ID token's end
/// is refreshed when a question about it is answered, and a refresh the provider refuses
/// ends it, so the two modes never disagree about a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refreshes_and_ends_sessions_as_the_reverse_proxy_does() {
    let env = env(LOOPBACK_ASKS).await;
    env.fake
        .quirks(|q| q.id_token_ttl = std::time::Duration::from_secs(200));
    let refreshes = |env: &SignInEnv| {
        env.fake
            .requests()
            .iter()
            .filter(|r| {
                r.path == "/oauth2/token" && r.form_param("grant_type") == Some("refresh_token")
            })
            .count()
    };
    // Signed in through the callback only: no protected request has been decided yet.
    let mut b = env.browser();
    let cb = within("sign-in", b.sign_in_callback("/x")).await;
    assert_eq!(cb.status, 302, "{}", cb.text());
    assert_eq!(refreshes(&env), 0);
    let (status, _) = verify(&env, &b, "GET", "/x").await;
    assert_eq!(status, 200);
    assert!(
        support::eventually(std::time::Duration::from_secs(5), async || refreshes(&env)
            == 1)
        .await,
        "a forward-auth answer started the refresh"
    );
    // The provider refuses the next refresh: the session ends, here as in the other mode.
    env.fake.update_user(&env.alice, |u| u.suspend());
    assert!(
        support::eventually(std::time::Duration::from_secs(10), async || {
            verify(&env, &b, "GET", "/x").await.0 == 401
        })
        .await,
        "a session whose refresh the provider refused still got answers"
    );
}

/// A front proxy asks about every request a user makes (a single-page app makes dozens a
/// minute), so forward-auth answers are not held to the sign-in rate limit; sign-in starts
/// still are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_is_not_held_to_the_sign_in_rate() {
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let env = SignInEnv::start_with(Options {
        sites: Some(site("app.test", &url, "protected", &[])),
        server: LOOPBACK_ASKS.into(),
        limits: "sign_in_rate = 5".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    sign_in(&mut b, "/x").await;
    for i in 0..30 {
        let (status, _) = verify(&env, &b, "GET", &format!("/page/{i}")).await;
        assert_eq!(status, 200, "call {i} on the verify listener");
    }
    // Sign-in starts are limited as before.
    let mut anonymous = env.browser();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            request(&mut anonymous, "GET", "/.jumpgate/sign-in?rd=/", &[])
                .await
                .status
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

// ---------------------------------------------------------------------------------------
// The shipped nginx and Caddy examples, run for real in front of jumpgate.
// ---------------------------------------------------------------------------------------

const NGINX_EXAMPLE: &str = include_str!("../../config/examples/nginx.conf");
const CADDY_EXAMPLE: &str = include_str!("../../config/examples/Caddyfile");

/// The identity headers jumpgate sets (default names), lower-case.
const IDENTITY: [&str; 6] = [
    "x-jumpgate-user",
    "x-jumpgate-email",
    "x-jumpgate-username",
    "x-jumpgate-groups",
    "x-jumpgate-assertion",
    "x-jumpgate-step-up-time",
];

/// Spellings of an identity header a client may try: cases, `_` for `-`, and mixes of both.
fn spellings(name: &str) -> Vec<String> {
    let parts: Vec<&str> = name.split('-').collect();
    let title: Vec<String> = parts
        .iter()
        .map(|p| p[..1].to_ascii_uppercase() + &p[1..])
        .collect();
    let join = |words: &[String], first: &str, rest: &str| {
        let mut s = words[0].clone();
        for (i, w) in words[1..].iter().enumerate() {
            s.push_str(if i == 0 { first } else { rest });
            s.push_str(w);
        }
        s
    };
    let lower: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
    let upper: Vec<String> = parts.iter().map(|p| p.to_ascii_uppercase()).collect();
    vec![
        join(&title, "-", "-"), // X-Jumpgate-User
        join(&lower, "-", "-"), // x-jumpgate-user
        join(&title, "_", "_"), // X_Jumpgate_User
        join(&lower, "_", "_"), // x_jumpgate_user
        join(&upper, "-", "-"), // X-JUMPGATE-USER
        join(&title, "-", "_"), // X-Jumpgate_User
        join(&title, "_", "-"), // X_Jumpgate-User
    ]
}

/// A forged value for every identity header in every spelling; each value says "forged".
fn forged_identity() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, name) in IDENTITY.iter().enumerate() {
        for (j, spelling) in spellings(name).into_iter().enumerate() {
            out.push((spelling, format!("forged-{i}-{j}")));
        }
    }
    out
}

/// What jumpgate answers, per identity header (None: not in the answer).
type Identity = BTreeMap<&'static str, Option<String>>;

/// Asks jumpgate's verify listener directly what it answers for GET `uri` on `host`.
async fn jumpgate_says(
    env: &SignInEnv,
    host: &str,
    uri: &str,
    cookie: Option<&str>,
) -> (u16, Identity) {
    let mut q = vec![
        ("host", "jumpgate.internal"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", host),
        ("x-forwarded-uri", uri),
        ("x-original-uri", uri),
    ];
    if let Some(c) = cookie {
        q.push(("cookie", c));
    }
    let (status, headers) = ask_exactly(env.gw.verify, &q).await;
    let identity = IDENTITY
        .iter()
        .map(|n| (*n, headers.get(*n).map(|v| v.to_str().unwrap().to_owned())))
        .collect();
    (status, identity)
}

/// Everything wrong with what the echo upstream received, against jumpgate's `expected`
/// answer: any value a client forged, under any header name; any identity header (names
/// compared ignoring case and with `_` read as `-`) that is not exactly jumpgate's value under
/// jumpgate's name; a header jumpgate did not send must not arrive at all, not even empty.
fn upstream_failures(what: &str, r: &RawReply, expected: &Identity) -> Vec<String> {
    if r.header("x-upstream") != Some("echo") {
        return vec![format!(
            "{what}: expected the upstream's answer, got {:?}: {}",
            r.status, r.body
        )];
    }
    let mut failures = Vec::new();
    let json = r.json();
    let mut seen: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (name, values) in json["headers"].as_object().unwrap() {
        for v in values.as_array().unwrap() {
            let v = v.as_str().unwrap();
            if v.contains("forged") {
                failures.push(format!("{what}: the upstream got the client's {name}: {v}"));
            }
            let folded = name.to_ascii_lowercase().replace('_', "-");
            if IDENTITY.contains(&folded.as_str()) {
                seen.entry(folded)
                    .or_default()
                    .push((name.clone(), v.to_owned()));
            }
        }
    }
    for name in IDENTITY {
        let got = seen.remove(name).unwrap_or_default();
        let ok = match &expected[name] {
            Some(v) => got == [(name.to_owned(), v.clone())],
            None => got.is_empty(),
        };
        if !ok {
            failures.push(format!(
                "{what}: {name}: jumpgate answered {:?}, the upstream got {got:?}",
                expected[name]
            ));
        }
    }
    failures
}

/// Whether a front proxy's reply sends the client to sign in (nginx maps jumpgate's 401 to a
/// redirect; Caddy passes the 401 on), rather than serving the upstream.
fn is_sign_in(r: &RawReply) -> bool {
    matches!(r.status, Some(302) | Some(401))
        && r.header("x-upstream").is_none()
        && r.header("location")
            .is_some_and(|l| l.contains("/.jumpgate/sign-in"))
}

/// The example with each `(needle, replacement)` applied. Every needle must occur, so an
/// example that changes cannot silently stop being tested, and nothing outside comments may
/// still name the example's host, certificates or ports.
fn adapt(file: &str, text: &str, subs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (needle, with) in subs {
        assert!(
            out.contains(needle),
            "{file} no longer contains {needle:?}: update tests/it/forward_auth.rs along with it"
        );
        out = out.replace(needle, with);
    }
    for line in out.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for stale in [
            "example.net",
            ":9091",
            ":8443",
            ":8000",
            "/etc/ssl/",
            " 443",
        ] {
            assert!(
                !line.contains(stale),
                "{file}: {line:?} still names {stale:?}: add a substitution for it"
            );
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first of `paths` that exists, else `name` on PATH; a clear failure when neither does.
fn binary(name: &str, paths: &[&str], install: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    paths
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed; tests/run.sh installs it (apt-get install -y {install})"
            )
        })
}

/// A front proxy process, killed and waited for when the test ends, also on a panic.
struct Front {
    child: Child,
    what: &'static str,
    log: PathBuf,
    /// Where it listens.
    addr: SocketAddr,
    /// nginx listens with TLS (this client), Caddy in plain HTTP (None).
    tls: Option<support::Client>,
    _dir: tempfile::TempDir,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Front {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the process listens; fails with its log if it exits or never does.
    async fn wait_listening(&mut self) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before listening:\n{}",
                    self.what,
                    self.log()
                );
            }
            let connect = tokio::net::TcpStream::connect(self.addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} not listening on {} after 10s:\n{}",
            self.what,
            self.addr,
            self.log()
        );
    }

    /// nginx running the shipped example (`daemon off; master_process off;`: one process, so
    /// the guard's kill leaves no worker behind), on `port`, in front of `env` and `upstream`.
    async fn nginx(env: &SignInEnv, port: u16, upstream: &str) -> Front {
        let bin = binary(
            "nginx",
            &["/usr/sbin/nginx", "/usr/bin/nginx"],
            "nginx-light",
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display().to_string();
        let site = adapt(
            "config/examples/nginx.conf",
            NGINX_EXAMPLE,
            &[
                ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                (
                    "/etc/ssl/app.example.net/fullchain.pem",
                    env.gw.certs.cert.display().to_string(),
                ),
                (
                    "/etc/ssl/app.example.net/privkey.pem",
                    env.gw.certs.key.display().to_string(),
                ),
                (
                    "server_name app.example.net;",
                    "server_name app.test;".into(),
                ),
                (
                    "X-Forwarded-Host app.example.net;",
                    "X-Forwarded-Host app.test;".into(),
                ),
                (
                    "https://app.example.net/.jumpgate/sign-in",
                    format!("https://app.test:{port}/.jumpgate/sign-in"),
                ),
                (
                    "http://127.0.0.1:9091/",
                    format!("http://{}/", env.gw.verify),
                ),
                ("https://127.0.0.1:8443", format!("https://{}", env.gw.addr)),
                ("http://127.0.0.1:8000", upstream.to_owned()),
            ],
        );
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {p}/error.log info;\npid {p}/nginx.pid;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n{site}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.path().join("error.log");
        let child = Command::new(bin)
            .arg("-e")
            .arg(&log)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut front = Front {
            child,
            what: "nginx",
            log,
            addr,
            tls: Some(support::Client::new(addr, &env.gw.certs.ca)),
            _dir: dir,
        };
        front.wait_listening().await;
        front
    }

    /// Caddy running the shipped example, served in plain HTTP on loopback: a global options
    /// block turns automatic HTTPS and the admin endpoint off, and the site address becomes
    /// `http://:PORT`, a catch-all, so requests for other hosts reach it too.
    async fn caddy(env: &SignInEnv, upstream: SocketAddr) -> Front {
        let bin = binary("caddy", &["/usr/bin/caddy"], "caddy");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let site = adapt(
            "config/examples/Caddyfile",
            CADDY_EXAMPLE,
            &[
                ("app.example.net {", format!("http://:{port} {{")),
                (
                    "tls_server_name app.example.net",
                    format!(
                        "tls_server_name app.test\n\t\t\t\ttls_trusted_ca_certs {}",
                        env.gw.certs.ca.display()
                    ),
                ),
                (
                    "header_up X-Forwarded-Host app.example.net",
                    "header_up X-Forwarded-Host app.test".into(),
                ),
                (
                    "reverse_proxy 127.0.0.1:9091",
                    format!("reverse_proxy {}", env.gw.verify),
                ),
                (
                    "reverse_proxy https://127.0.0.1:8443",
                    format!("reverse_proxy https://{}", env.gw.addr),
                ),
                (
                    "reverse_proxy 127.0.0.1:8000",
                    format!("reverse_proxy {upstream}"),
                ),
            ],
        );
        let conf =
            format!("{{\n\tauto_https off\n\tadmin off\n\tdefault_bind 127.0.0.1\n}}\n\n{site}");
        let conf_path = dir.path().join("Caddyfile");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.path().join("caddy.log");
        let child = Command::new(bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf_path)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut front = Front {
            child,
            what: "caddy",
            log,
            addr: ([127, 0, 0, 1], port).into(),
            tls: None,
            _dir: dir,
        };
        front.wait_listening().await;
        front
    }

    /// Sends `GET path` with Host `host` and exactly these header lines (names as spelled),
    /// on a fresh connection that the front closes after answering.
    async fn send(&self, host: &str, path: &str, headers: &[(String, String)]) -> RawReply {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let what = format!("{} GET {path} (Host: {host})", self.what);
        let text = within(&what, async {
            match &self.tls {
                Some(client) => {
                    client
                        .raw("app.test", raw.as_bytes(), Duration::from_secs(10))
                        .await
                }
                None => {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
                    s.write_all(raw.as_bytes()).await.unwrap();
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out).await;
                    String::from_utf8_lossy(&out).into_owned()
                }
            }
        })
        .await;
        let reply = support::parse_raw(&text);
        assert!(
            reply.status.is_some(),
            "{what}: no HTTP answer: {text:?}\n{}",
            self.log()
        );
        reply
    }
}

/// Header lines: `base` plus `extra`.
fn lines(base: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = base.to_vec();
    out.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

/// Two sites on one echo upstream: app.test (protected, `/public` public) and other.test
/// (all public), so a front proxy that let a client choose the host would let it choose
/// other.test's policy.
fn front_sites(upstream: &str) -> String {
    format!(
        "{}{}",
        site("app.test", upstream, "protected", &[("/public", "public")]),
        site("other.test", upstream, "public", &[])
    )
}

/// jumpgate behind a front proxy, as the examples' comments configure it; `extra` adds
/// `[server]` keys.
async fn front_env(upstream: &str, extra: &str) -> SignInEnv {
    SignInEnv::start_with(Options {
        sites: Some(front_sites(upstream)),
        server: format!(
            "verify_clients = [\"127.0.0.1\"]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{extra}"
        ),
        ..Options::default()
    })
    .await
}

/// Everything a client may try through a front proxy, against `env`'s jumpgate: forged identity
/// headers in every spelling (signed in, anonymous on a public route, signed in where jumpgate's
/// answer lacks a header), a URI or host of its own choosing, and forward-auth questions of its
/// own on `/.jumpgate/verify`.
async fn clients_cannot_forge_through(front: &Front, env: &SignInEnv) {
    let mut b = env.browser();
    sign_in(&mut b, "/x").await;
    let cookie = b.cookie_header().unwrap();
    let forged = forged_identity();
    let mut failures = Vec::new();

    // Signed in: jumpgate's identity, and nothing of the client's. The test user's answer
    // lacks at least Step-Up-Time (no step-up route), so a header jumpgate does not send
    // is tried too.
    let (status, signed_in) = jumpgate_says(env, "app.test", "/reports?q=1", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(
        signed_in["x-jumpgate-user"].as_deref(),
        Some(env.alice.as_str())
    );
    assert_eq!(signed_in["x-jumpgate-step-up-time"], None, "{signed_in:?}");
    let r = front
        .send(
            "app.test",
            "/reports?q=1",
            &lines(&forged, &[("Cookie", &cookie)]),
        )
        .await;
    failures.extend(upstream_failures("signed in", &r, &signed_in));

    // Anonymous on a public route: jumpgate sends no identity, so the upstream gets none.
    let (status, anonymous) = jumpgate_says(env, "app.test", "/public", None).await;
    assert_eq!(status, 200);
    assert!(anonymous.values().all(Option::is_none), "{anonymous:?}");
    let r = front.send("app.test", "/public", &forged).await;
    failures.extend(upstream_failures("anonymous, public route", &r, &anonymous));

    // The client's own URI headers never become the question: one spelling at a time (two
    // spellings of one name would be a repeated header, which jumpgate refuses anyway).
    let original = spellings("x-original-uri");
    let forwarded = spellings("x-forwarded-uri");
    for (o, f) in original.iter().zip(&forwarded) {
        for sent in [vec![o], vec![f], vec![o, f]] {
            let headers: Vec<(String, String)> = sent
                .iter()
                .map(|n| (n.to_string(), "/public".to_owned()))
                .collect();
            let r = front.send("app.test", "/reports", &headers).await;
            if !is_sign_in(&r) {
                failures.push(format!(
                    "anonymous /reports with the client's {sent:?}: /public: {:?} {:?} {}",
                    r.status, r.headers, r.body
                ));
            }
        }
    }

    // The client's Host (or X-Forwarded-Host) never picks the site: other.test would let
    // anyone in, app.test is judged.
    let (status, _) = jumpgate_says(env, "other.test", "/reports", None).await;
    assert_eq!(status, 200, "other.test is public: the control");
    for (host, extra) in [
        ("other.test", vec![]),
        ("app.test", vec![("X-Forwarded-Host", "other.test")]),
        ("other.test", vec![("X-Forwarded-Host", "other.test")]),
    ] {
        let r = front.send(host, "/reports", &lines(&[], &extra)).await;
        if !is_sign_in(&r) {
            failures.push(format!(
                "anonymous /reports, Host: {host}, {extra:?}: {:?} {:?} {}",
                r.status, r.headers, r.body
            ));
        }
    }
    let r = front
        .send(
            "other.test",
            "/reports?q=1",
            &lines(&forged, &[("Cookie", &cookie)]),
        )
        .await;
    failures.extend(upstream_failures(
        "signed in, Host: other.test",
        &r,
        &signed_in,
    ));

    // jumpgate's own endpoints are reachable through the front...
    let r = front.send("app.test", "/.jumpgate/sign-in?rd=/", &[]).await;
    if !(r.status == Some(302)
        && r.header("location")
            .is_some_and(|l| l.contains("/oauth2/auth?")))
    {
        failures.push(format!(
            "/.jumpgate/sign-in through the front did not reach jumpgate: {:?} {:?} {}",
            r.status, r.headers, r.body
        ));
    }
    // ...but a client's own forward-auth question is not: the public listener never answers
    // one, even from a verify client, and the front removes the question headers anyway.
    let question = [
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Host", "app.test"),
        ("X-Forwarded-Uri", "/reports"),
        ("X-Original-URI", "/reports"),
        ("Cookie", cookie.as_str()),
    ];
    let direct = request(&mut env.browser(), "GET", "/.jumpgate/verify", &question).await;
    assert_eq!(
        direct.status, 404,
        "the public listener never answers forward-auth, even a verify client"
    );
    assert!(!direct.headers.contains_key("x-jumpgate-user"));
    for path in [
        "/.jumpgate/verify",
        "/.jumpgate//verify",
        "/.jumpgate/%76erify",
        "/.jumpgate/./verify",
        "/.jumpgate/x/../verify",
    ] {
        let r = front.send("app.test", path, &lines(&[], &question)).await;
        let leaked: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n.replace('_', "-").starts_with("x-jumpgate-"))
            .collect();
        if r.status == Some(200) || !leaked.is_empty() {
            failures.push(format!(
                "{path} through the front answered the client's question: {:?} {leaked:?}",
                r.status
            ));
        }
    }
    support::report(failures);
}

/// The nginx example, under either `verify_uri_header`: no identity header can be forged and
/// no client chooses what jumpgate is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_example_lets_no_client_forge_identity_or_choose_the_question() {
    for setting in ["", "verify_uri_header = \"x-original-uri\""] {
        let echo = support::Echo::start().await;
        let env = front_env(&echo.url(), setting).await;
        let nginx = Front::nginx(&env, free_port(), &echo.url()).await;
        clients_cannot_forge_through(&nginx, &env).await;
        drop(nginx);
        drop(echo);
    }
}

/// The Caddy example, under either `verify_uri_header`: no identity header can be forged and
/// no client chooses what jumpgate is asked. Sessions start at jumpgate directly; the cookie
/// then goes to Caddy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_example_lets_no_client_forge_identity_or_choose_the_question() {
    for setting in ["", "verify_uri_header = \"x-original-uri\""] {
        let echo = support::Echo::start().await;
        let env = front_env(&echo.url(), setting).await;
        let caddy = Front::caddy(&env, echo.addr).await;
        clients_cannot_forge_through(&caddy, &env).await;
        drop(caddy);
        drop(echo);
    }
}

/// nginx with `auth_request` in front of an upstream, jumpgate deciding, with the shipped
/// example: the full sign-in flow through nginx, identity reaching the upstream, and
/// client-sent identity ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_through_the_full_sign_in() {
    let echo = support::Echo::start().await;
    let upstream = echo.url();
    let nginx_port = free_port();
    let env = front_env(&upstream, &format!("public_port = {nginx_port}")).await;
    env.fake.update_app(support::env::CLIENT_ID, |app| {
        app.redirect_uris
            .push(format!("https://app.test:{nginx_port}/.jumpgate/callback"));
    });
    let nginx = Front::nginx(&env, nginx_port, &upstream).await;
    let mut b = Browser::new(nginx.tls.clone().unwrap(), "app.test");
    // Not signed in: nginx sends the browser to jumpgate's sign-in, through nginx.
    let first = request(&mut b, "GET", "/reports?q=1", &[]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let sign_in = within("sign-in start", b.follow(&first)).await;
    assert_eq!(sign_in.status, 302, "{}", sign_in.text());
    let idp = within(
        "provider",
        support::browser::idp_get(&support::browser::location(&sign_in)),
    )
    .await;
    assert_eq!(idp.status, 302, "{}", idp.text());
    let back = within("callback", b.follow(&idp)).await;
    assert_eq!(back.status, 302, "callback through nginx: {}", back.text());
    assert_eq!(support::browser::location(&back), "/reports?q=1");
    // Signed in: nginx forwards to the upstream with jumpgate's identity, not the client's.
    let page = request(
        &mut b,
        "GET",
        "/reports?q=1",
        &[("x-jumpgate-user", "forged-admin")],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.upstream_path(), "/reports?q=1");
    assert_eq!(
        page.upstream_header_all("x-jumpgate-user"),
        vec![env.alice.clone()]
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );
    assert!(page.upstream_header("x-jumpgate-assertion").is_some());
    // Logout through nginx ends it.
    let out = b.logout();
    let out = within("logout", out).await;
    assert_eq!(out.status, 302, "{}", out.text());
    assert_eq!(request(&mut b, "GET", "/reports", &[]).await.status, 302);
    drop(nginx);
    drop(echo);
}
