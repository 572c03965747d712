//! Tests of the Defguard stand-in (`tests/support/defguard.rs`) itself, over real HTTP on
//! loopback, so the gateway tests can trust it behaves like Defguard core and Edge: every
//! route of its table answers as the table says for each kind of caller, and the flows a
//! gateway must not break (sign-in, "Sign in with JumpCloud", the consent form, server-sent
//! events, Edge's enrollment cookie and its MFA WebSocket) work end to end.

mod support;

// Included by path so this test does not depend on `support/mod.rs` declaring it.
#[path = "support/defguard.rs"]
mod defguard;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use defguard::*;

/// Every request of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(15);
const UA: &str = "jumpgate-tests/1";

// ---------------------------------------------------------------------------------------
// A small HTTP client
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The `Set-Cookie` line of `name`.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value a `Set-Cookie` gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        let line = self.set_cookie(name)?;
        let pair = line.split(';').next()?;
        Some(pair.split_once('=')?.1.to_owned())
    }

    /// `name=value` for every cookie set (not removed), for a `Cookie` header.
    fn cookie_header(&self) -> String {
        self.set_cookies()
            .iter()
            .filter(|c| !c.contains("Max-Age=0"))
            .filter_map(|c| c.split(';').next().map(str::to_owned))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn location(&self) -> String {
        self.header("location")
            .unwrap_or_else(|| panic!("no location: {} {}", self.status, self.text()))
    }
}

/// One request on a fresh connection; `body` is (content type, body).
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Reply {
    tokio::time::timeout(LIMIT, send_unbounded(addr, method, target, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {target} answered within {LIMIT:?}"))
}

async fn send_unbounded(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some((ct, b)) => req
            .header("content-type", ct)
            .body(Full::new(Bytes::from(b.to_owned()))),
        None => req.body(Full::new(Bytes::new())),
    }
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, "GET", target, headers, None).await
}

async fn post_json(addr: SocketAddr, target: &str, headers: &[(&str, &str)], json: &str) -> Reply {
    send(
        addr,
        "POST",
        target,
        headers,
        Some(("application/json", json)),
    )
    .await
}

/// Signs in with the password over HTTP; the `defguard_session` cookie value.
async fn sign_in(core: &Core, username: &str) -> String {
    let r = post_json(
        core.addr,
        "/api/v1/auth",
        &[("user-agent", UA)],
        &format!(r#"{{"username":"{username}","password":"{PASSWORD}"}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.cookie(SESSION_COOKIE).expect("a session cookie")
}

fn session(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}")
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    parse_query(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------------------
// The route table
// ---------------------------------------------------------------------------------------

#[test]
fn every_example_path_reaches_its_own_route() {
    let mut failures = Vec::new();
    for r in ROUTES {
        match route_for(r.component, r.method, r.path_only()) {
            Ok(found) if found.pattern == r.pattern && found.method == r.method => {}
            Ok(found) => failures.push(format!(
                "{:?} {} {} reaches {} {}",
                r.component, r.method, r.path, found.method, found.pattern
            )),
            Err(allowed) => failures.push(format!(
                "{:?} {} {}: no route ({allowed:?})",
                r.component, r.method, r.path
            )),
        }
        if r.admin_only != (r.access == Access::Admin) {
            failures.push(format!(
                "{} {}: admin_only disagrees with access",
                r.method, r.path
            ));
        }
        if r.self_service && r.access != Access::Session {
            failures.push(format!(
                "{} {}: self-service must be Session",
                r.method, r.path
            ));
        }
        if r.access == Access::Flow && r.denied == r.status {
            failures.push(format!("{} {}: a flow route must refuse", r.method, r.path));
        }
        if r.component == Component::Edge && r.class != Class::Public {
            failures.push(format!("{} {}: Edge is public", r.method, r.path));
        }
    }
    // One access per (component, method, pattern).
    for (i, a) in ROUTES.iter().enumerate() {
        for b in &ROUTES[i + 1..] {
            if (a.component, a.method, a.pattern) == (b.component, b.method, b.pattern)
                && (a.access, a.class) != (b.access, b.class)
            {
                failures.push(format!("{} {}: two classifications", a.method, a.pattern));
            }
        }
    }
    support::report(failures);
}

#[test]
fn the_table_covers_what_defguard_md_lists() {
    let has = |component: Component, method: &str, path: &str| {
        ROUTES
            .iter()
            .any(|r| r.component == component && r.method == method && r.path_only() == path)
    };
    let core = [
        ("GET", "/"),
        ("GET", "/auth/login"),
        ("GET", "/auth/callback"),
        ("GET", "/consent"),
        ("GET", "/assets/index.js"),
        ("GET", "/fonts/inter.woff2"),
        ("GET", "/svg/logo.svg"),
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/info"),
        ("GET", "/api/v1/session-info"),
        ("GET", "/api/v1/updates"),
        ("GET", "/api/v1/api-docs"),
        ("POST", "/api/v1/auth"),
        ("GET", "/api/v1/openid/auth_info"),
        ("POST", "/api/v1/openid/callback"),
        ("GET", "/api/v1/user"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/group"),
        ("POST", "/api/v1/groups-assign"),
        ("POST", "/api/v1/mail/test"),
        ("GET", "/api/v1/settings"),
        ("GET", "/api/v1/settings_enterprise"),
        ("GET", "/api/v1/settings_essentials"),
        ("GET", "/api/v1/support/configuration"),
        ("GET", "/api/v1/webhook"),
        ("GET", "/api/v1/ldap/test"),
        ("GET", "/api/v1/activity_log"),
        ("GET", "/api/v1/activity_log_stream"),
        ("GET", "/api/v1/proxy"),
        ("GET", "/api/v1/core/cert/ca"),
        ("GET", "/api/v1/gateway"),
        ("GET", "/api/v1/openid/provider"),
        ("GET", "/api/v1/enterprise_info"),
        ("GET", "/api/v1/test_directory_sync"),
        ("GET", "/api/v1/acl/rule"),
        ("GET", "/api/v1/device"),
        ("GET", "/api/v1/network"),
        ("GET", "/api/v1/outdated"),
        ("POST", "/api/v1/license/check"),
        ("GET", "/api/v1/worker/token"),
        ("GET", "/api/v1/device-posture"),
        ("GET", "/api/v1/proxy/setup/stream"),
        ("GET", "/api/v1/proxy/acme/stream"),
        ("GET", "/api/v1/network/1/gateways/setup"),
        ("GET", "/api/v1/oauth/authorize"),
        ("POST", "/api/v1/oauth/authorize"),
        ("POST", "/api/v1/oauth/token"),
        ("GET", "/api/v1/oauth/userinfo"),
        ("GET", "/api/v1/oauth/discovery/keys"),
        ("GET", "/.well-known/openid-configuration"),
        ("GET", "/api/v1/ssh_authorized_keys"),
        ("GET", "/api/v1/forward_auth"),
        ("POST", "/api/v1/initial_setup/admin"),
        ("GET", "/api/v1/wizard"),
        ("GET", "/api/v1/version"),
        ("GET", "/api/v1/migration/state"),
        ("PUT", "/api/v1/user/change_password"),
        ("POST", "/api/v1/user/alice/start_desktop"),
        ("POST", "/api/v1/device/alice"),
        ("GET", "/api/v1/user/alice/auth_key"),
    ];
    let edge = [
        ("GET", "/"),
        ("GET", "/assets/index.js"),
        ("GET", "/fonts/inter.woff2"),
        ("GET", "/openid/callback"),
        ("GET", "/openid/mfa"),
        ("GET", "/openid/mfa/callback"),
        ("GET", "/password-reset"),
        ("POST", "/api/v1/enrollment/start"),
        ("POST", "/api/v1/enrollment/activate_user"),
        ("POST", "/api/v1/enrollment/create_device"),
        ("POST", "/api/v1/enrollment/network_info"),
        ("POST", "/api/v1/enrollment/register_mobile"),
        ("POST", "/api/v1/enrollment/register-mfa/code/start"),
        ("POST", "/api/v1/enrollment/register-mfa/code/finish"),
        ("POST", "/api/v1/password-reset/request"),
        ("POST", "/api/v1/password-reset/start"),
        ("POST", "/api/v1/password-reset/reset"),
        ("POST", "/api/v1/client-mfa/start"),
        ("POST", "/api/v1/client-mfa/finish"),
        ("POST", "/api/v1/client-mfa/finish-remote"),
        ("GET", "/api/v1/client-mfa/remote"),
        ("POST", "/api/v1/openid/auth_info"),
        ("POST", "/api/v1/openid/callback"),
        ("POST", "/api/v1/openid/callback/mfa"),
        ("POST", "/api/v1/poll"),
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/health-grpc"),
        ("GET", "/api/v1/info"),
    ];
    let mut missing = Vec::new();
    for (m, p) in core {
        if !has(Component::Core, m, p) {
            missing.push(format!("core {m} {p}"));
        }
    }
    for (m, p) in edge {
        if !has(Component::Edge, m, p) {
            missing.push(format!("edge {m} {p}"));
        }
    }
    support::report(missing);
}

/// The credentials a principal sends.
async fn credentials(core: &Core, who: Principal) -> Vec<(&'static str, String)> {
    match who {
        Principal::Anonymous => Vec::new(),
        Principal::User => vec![("cookie", session(&sign_in(core, USER).await))],
        Principal::Admin => vec![("cookie", session(&sign_in(core, ADMIN).await))],
        Principal::ApiToken => vec![("authorization", format!("Bearer {ADMIN_API_TOKEN}"))],
    }
}

/// Sends a route's example request with `extra` headers.
async fn send_case(addr: SocketAddr, r: &RouteCase, extra: &[(&str, String)]) -> Reply {
    let mut headers: Vec<(&str, &str)> = vec![("user-agent", UA)];
    headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let body = r.body.map(|b| (r.content_type().unwrap(), b));
    send(addr, r.method, r.path, &headers, body).await
}

/// Opens the route's WebSocket; the handshake status.
async fn websocket_status(addr: SocketAddr, r: &RouteCase) -> u16 {
    let url = format!("ws://{addr}{}", r.path);
    match tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((mut ws, resp))) => {
            let _ = ws.close(None).await;
            resp.status().as_u16()
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => resp.status().as_u16(),
        Ok(Err(e)) => panic!("{}: {e}", r.path),
        Err(_) => panic!("{}: no handshake within {LIMIT:?}", r.path),
    }
}

#[tokio::test]
async fn every_core_route_answers_each_caller_as_the_table_says() {
    let mut failures = Vec::new();
    for who in Principal::ALL {
        // A fresh core per caller: some routes change state (sessions, devices).
        let core = Core::start().await;
        core.sse(|s| {
            s.pause = Duration::from_millis(5);
            s.keep_alives = 0;
        });
        let creds = credentials(&core, who).await;
        // Signing out ends the session the other requests use: last.
        let mut cases: Vec<&RouteCase> = routes(Component::Core).collect();
        cases.sort_by_key(|r| r.pattern == "/api/v1/auth/logout");
        for r in cases {
            let reply = send_case(core.addr, r, &creds).await;
            let want = r.expected(who);
            if reply.status != want {
                failures.push(format!(
                    "{who:?} {} {}: {} (want {want}) {}",
                    r.method,
                    r.path,
                    reply.status,
                    reply.text().chars().take(120).collect::<String>()
                ));
                continue;
            }
            // Defguard's refusals are JSON with a message.
            if (want == 401 || want == 403) && r.access != Access::OwnCredentials {
                let body = reply.json();
                if !body["msg"].is_string() {
                    failures.push(format!("{who:?} {} {}: refusal {body}", r.method, r.path));
                }
            }
            if r.stream == Stream::Sse && want == 200 {
                let ct = reply.header("content-type").unwrap_or_default();
                if ct != "text/event-stream" || !reply.text().contains("data: {") {
                    failures.push(format!(
                        "{who:?} {} {}: not an event stream",
                        r.method, r.path
                    ));
                }
            }
        }
    }
    support::report(failures);
}

#[tokio::test]
async fn every_edge_route_answers_as_the_table_says() {
    let edge = Edge::start().await;
    let mut failures = Vec::new();
    for r in routes(Component::Edge) {
        let status = if r.stream == Stream::WebSocket {
            websocket_status(edge.addr, r).await
        } else {
            send_case(edge.addr, r, &[]).await.status
        };
        // Edge knows nothing of core's sessions: nobody's credentials change anything.
        let want = r.expected(Principal::Anonymous);
        if status != want {
            failures.push(format!("{} {}: {status} (want {want})", r.method, r.path));
        }
        if let Some(step) = r.step {
            let first = send(
                edge.addr,
                step.method,
                step.path,
                &[("user-agent", UA)],
                Some(("application/json", step.body)),
            )
            .await;
            assert_eq!(first.status, 200, "{} {}", step.path, first.text());
            let cookie = first.cookie_header();
            let reply = send_case(edge.addr, r, &[("cookie", cookie)]).await;
            if reply.status != r.status {
                failures.push(format!(
                    "{} {} after {}: {} (want {}) {}",
                    r.method,
                    r.path,
                    step.path,
                    reply.status,
                    r.status,
                    reply.text()
                ));
            }
        }
    }
    support::report(failures);
}

#[tokio::test]
async fn core_behaves_like_axum_for_other_paths_and_methods() {
    let core = Core::start().await;
    let shell = get(core.addr, "/api/v1/no/such/thing", &[]).await;
    assert_eq!(shell.status, 200);
    assert!(shell.text().contains("<main id=\"app\""));
    let post = send(core.addr, "POST", "/api/v1/no/such/thing", &[], None).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET,HEAD"));
    // A static route wins over the parameter route, then the method decides.
    let wrong = get(core.addr, "/api/v1/user/change_password", &[]).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow").as_deref(), Some("PUT"));
    assert_eq!(get(core.addr, "/assets/missing.js", &[]).await.status, 404);
    let health = get(core.addr, "/api/v1/health", &[]).await;
    assert_eq!((health.status, health.text().as_str()), (200, "alive"));
    assert_eq!(health.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(health.header("x-frame-options").as_deref(), Some("DENY"));
}

// ---------------------------------------------------------------------------------------
// Core: authentication
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn password_sign_in_sets_the_session_cookie_and_sign_out_clears_it() {
    let core = Core::start().await;
    let login = |user: &'static str, password: &'static str| {
        format!(r#"{{"username":"{user}","password":"{password}"}}"#)
    };
    let no_ua = post_json(core.addr, "/api/v1/auth", &[], &login(USER, PASSWORD)).await;
    assert_eq!(no_ua.status, 400, "Defguard's handler needs a User-Agent");
    let wrong = post_json(
        core.addr,
        "/api/v1/auth",
        &[("user-agent", UA)],
        &login(USER, "x"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookie(SESSION_COOKIE).is_none());
    let form = send(
        core.addr,
        "POST",
        "/api/v1/auth",
        &[("user-agent", UA)],
        Some((
            "application/x-www-form-urlencoded",
            "username=alice&password=pass",
        )),
    )
    .await;
    assert_eq!(form.status, 415);

    let ok = post_json(
        core.addr,
        "/api/v1/auth",
        &[("user-agent", UA)],
        &login(USER, PASSWORD),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["user"]["username"], USER);
    assert_eq!(ok.json()["url"], Value::Null);
    let line = ok.set_cookie(SESSION_COOKIE).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(attr), "{line}");
    }
    assert!(!line.contains("Secure"), "plain HTTP: {line}");
    let cookie = session(&ok.cookie(SESSION_COOKIE).unwrap());
    let me = get(core.addr, "/api/v1/me", &[("cookie", &cookie)]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["username"], USER);
    assert_eq!(me.json()["is_admin"], false);
    let info = get(core.addr, "/api/v1/session-info", &[("cookie", &cookie)]).await;
    assert_eq!(info.json()["authorized"], true);

    // By email too, as Defguard allows.
    let by_email = post_json(
        core.addr,
        "/api/v1/auth",
        &[("user-agent", UA)],
        &login("admin@example.com", PASSWORD),
    )
    .await;
    assert_eq!(by_email.json()["user"]["is_admin"], true);

    let out = send(
        core.addr,
        "POST",
        "/api/v1/auth/logout",
        &[("cookie", &cookie), ("user-agent", UA)],
        None,
    )
    .await;
    assert_eq!(out.status, 200);
    assert!(out
        .set_cookie(SESSION_COOKIE)
        .unwrap()
        .contains("Max-Age=0"));
    let after = get(core.addr, "/api/v1/me", &[("cookie", &cookie)]).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.json()["msg"], "Session not found");
    let none = get(core.addr, "/api/v1/me", &[]).await;
    assert_eq!(none.json()["msg"], "Session is required");
}

#[tokio::test]
async fn core_reads_no_identity_headers_and_only_bearer_tokens() {
    let core = Core::start().await;
    let forged = [
        ("remote-user", "admin"),
        ("x-forwarded-user", "admin"),
        ("x-auth-request-user", "admin"),
        ("x-forwarded-email", "admin@example.com"),
    ];
    let r = get(core.addr, "/api/v1/me", &forged).await;
    assert_eq!(r.status, 401);
    let seen = core.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/api/v1/me");
    assert_eq!(last.header("Remote-User"), Some("admin"));

    let token = format!("Bearer {ADMIN_API_TOKEN}");
    let ok = get(core.addr, "/api/v1/settings", &[("authorization", &token)]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["instance_name"], "Defguard");
    let bad = get(core.addr, "/api/v1/me", &[("authorization", "Bearer nope")]).await;
    assert_eq!(
        (bad.status, bad.json()["msg"].clone()),
        (401, "Invalid API token".into())
    );
    let user_token = format!("Bearer {USER_API_TOKEN}");
    let refused = get(core.addr, "/api/v1/me", &[("authorization", &user_token)]).await;
    assert_eq!(refused.status, 403, "non-admins may not use API tokens");

    // Any other Authorization header is refused, even next to a valid session cookie.
    let cookie = session(&core.sign_in(ADMIN));
    let basic = get(
        core.addr,
        "/api/v1/me",
        &[
            ("cookie", &cookie),
            ("authorization", "Basic YWRtaW46cGFzcw=="),
        ],
    )
    .await;
    assert_eq!(basic.status, 401);
    assert_eq!(
        get(core.addr, "/api/v1/me", &[("cookie", &cookie)])
            .await
            .status,
        200
    );
}

/// A signed-in call with a User-Agent and an optional JSON body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    json: Option<&str>,
) -> Reply {
    send(
        addr,
        method,
        path,
        &[("cookie", cookie), ("user-agent", UA)],
        json.map(|b| ("application/json", b)),
    )
    .await
}

#[tokio::test]
async fn admins_only_where_defguard_says_and_self_service_for_users() {
    let core = Core::start().await;
    let alice = session(&sign_in(&core, USER).await);
    let admin = session(&sign_in(&core, ADMIN).await);
    let addr = core.addr;

    let denied = call(addr, "GET", "/api/v1/settings", &alice, None).await;
    assert_eq!(
        (denied.status, denied.json()["msg"].clone()),
        (403, "access denied".into())
    );
    assert_eq!(
        call(addr, "GET", "/api/v1/user/admin", &alice, None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(addr, "GET", "/api/v1/worker/token", &alice, None)
            .await
            .status,
        403
    );
    let minted = call(addr, "GET", "/api/v1/worker/token", &admin, None).await;
    assert_eq!(minted.status, 200);
    assert!(minted.json()["token"].is_string());

    // Alice adds her own device, and only her own.
    let device = format!(r#"{{"name":"phone","wireguard_pubkey":"{EXAMPLE_PUBKEY}"}}"#);
    let added = call(addr, "POST", "/api/v1/device/alice", &alice, Some(&device)).await;
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.json()["device"]["name"], "phone");
    let for_admin = call(addr, "POST", "/api/v1/device/admin", &alice, Some(&device)).await;
    assert_eq!(for_admin.status, 403);
    let bad_key = r#"{"name":"x","wireguard_pubkey":"not-a-key"}"#;
    assert_eq!(
        call(addr, "POST", "/api/v1/device/alice", &alice, Some(bad_key))
            .await
            .status,
        400
    );
    let mine = call(addr, "GET", "/api/v1/device/user/alice", &alice, None)
        .await
        .json();
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-laptop", "phone"]);

    // Her own password, and the desktop client's activation.
    let change = r#"{"old_password":"pass","new_password":"n3w-Passw0rd"}"#;
    let changed = call(
        addr,
        "PUT",
        "/api/v1/user/change_password",
        &alice,
        Some(change),
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(core.user(USER).unwrap().password, "n3w-Passw0rd");
    let activation = r#"{"send_enrollment_notification":false}"#;
    let desktop = call(
        addr,
        "POST",
        "/api/v1/user/alice/start_desktop",
        &alice,
        Some(activation),
    )
    .await;
    assert_eq!(desktop.status, 201);
    assert!(desktop.json()["enrollment_token"].is_string());

    // Writes need a User-Agent, as Defguard's event context does.
    let no_ua = send(
        addr,
        "PUT",
        "/api/v1/settings",
        &[("cookie", &admin)],
        Some(("application/json", r#"{"instance_name":"x"}"#)),
    )
    .await;
    assert_eq!(no_ua.status, 400);
    let saved = call(
        addr,
        "PUT",
        "/api/v1/settings",
        &admin,
        Some(r#"{"instance_name":"Acme VPN"}"#),
    )
    .await;
    assert_eq!(saved.status, 200);
    assert_eq!(core.settings()["instance_name"], "Acme VPN");
    assert_eq!(
        call(addr, "PUT", "/api/v1/settings", &admin, Some(r#"{"x":1}"#))
            .await
            .status,
        422
    );
}

// ---------------------------------------------------------------------------------------
// Core: "Sign in with JumpCloud"
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_info_is_public_and_the_callback_needs_its_cookies() {
    let core = Core::start().await;
    let info = get(core.addr, "/api/v1/openid/auth_info", &[]).await;
    assert_eq!(info.status, 200, "called before any Defguard sign-in");
    let body = info.json();
    assert_eq!(body["button_display_name"], "JumpCloud");
    let url = body["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("https://oauth.id.jumpcloud.com/oauth2/auth?"),
        "{url}"
    );
    assert_eq!(
        query_param(&url, "redirect_uri").unwrap(),
        format!("{}/auth/callback", core.url())
    );
    let state = query_param(&url, "state").unwrap();
    for name in [CSRF_COOKIE, NONCE_COOKIE] {
        let line = info.set_cookie(name).unwrap();
        assert!(line.contains("Path=/api/v1/openid/callback"), "{line}");
        assert!(line.contains("SameSite=Strict"), "{line}");
    }
    assert_eq!(info.cookie(CSRF_COOKIE).unwrap(), state);
    let cookies = info.cookie_header();
    let h = [("user-agent", UA), ("cookie", cookies.as_str())];

    let without = post_json(
        core.addr,
        "/api/v1/openid/callback",
        &[("user-agent", UA)],
        r#"{"code":"c","state":"s"}"#,
    )
    .await;
    assert_eq!(without.status, 401);
    let mismatch = post_json(
        core.addr,
        "/api/v1/openid/callback",
        &h,
        r#"{"code":"c","state":"other"}"#,
    )
    .await;
    assert_eq!(mismatch.status, 401);
    let ok = post_json(
        core.addr,
        "/api/v1/openid/callback",
        &h,
        &format!(r#"{{"code":"c0de","state":"{state}"}}"#),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["user"]["username"], USER);
    let cookie = session(&ok.cookie(SESSION_COOKIE).unwrap());
    assert_eq!(
        get(core.addr, "/api/v1/me", &[("cookie", &cookie)])
            .await
            .status,
        200
    );

    core.set_openid(None);
    assert_eq!(
        get(core.addr, "/api/v1/openid/auth_info", &[]).await.status,
        404
    );
}

#[tokio::test]
async fn sign_in_with_the_fake_jumpcloud_end_to_end() {
    use support::jumpcloud::{App, FakeJumpCloud, User};
    let core = Core::start().await;
    let jc = FakeJumpCloud::start().await;
    let alice = jc.add_user(User::new("alice"));
    let callback = format!("{}/auth/callback", core.url());
    jc.add_app(App {
        bind_everyone: true,
        ..App::new("defguard-core", "core-secret", &callback)
    });
    jc.set_next_login(Some(&alice));
    core.set_openid(Some(OpenIdProvider::issuer(
        &jc.issuer(),
        "defguard-core",
        "core-secret",
    )));

    let info = get(core.addr, "/api/v1/openid/auth_info", &[]).await;
    assert_eq!(info.status, 200, "{}", info.text());
    let url = info.json()["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}oauth2/auth?", jc.issuer())),
        "{url}"
    );
    // The browser at JumpCloud, then back to core's /auth/callback page.
    let target = url.split_once(&jc.base_url()).unwrap().1.to_owned();
    let at_idp = get(jc.addr(), &target, &[]).await;
    assert_eq!(at_idp.status, 302, "{}", at_idp.text());
    let back = at_idp.location();
    assert!(back.starts_with(&callback), "{back}");
    let page = get(core.addr, back.split_once(&core.url()).unwrap().1, &[]).await;
    assert_eq!(page.status, 200);
    // The page's script posts the code.
    let body = format!(
        r#"{{"code":"{}","state":"{}"}}"#,
        query_param(&back, "code").unwrap(),
        query_param(&back, "state").unwrap()
    );
    let cookies = info.cookie_header();
    let signed = post_json(
        core.addr,
        "/api/v1/openid/callback",
        &[("user-agent", UA), ("cookie", &cookies)],
        &body,
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.text());
    assert_eq!(signed.json()["user"]["username"], USER, "matched by email");
    assert_eq!(core.with_state(|s| s.logins), 1);
}

// ---------------------------------------------------------------------------------------
// Core: Defguard as an OpenID provider
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_consent_form_post_redirects_with_a_code_that_buys_tokens() {
    let core = Core::start().await;
    let authorize = format!("/api/v1/oauth/authorize?{AUTHORIZE_QUERY}&nonce=n0nce");

    // Without a session: to the login page, remembering the request.
    let anon = get(core.addr, &authorize, &[]).await;
    assert_eq!(anon.status, 302);
    assert_eq!(anon.location(), "/auth/login");
    let pending = anon.cookie_header();
    assert!(pending.starts_with(SIGN_IN_COOKIE), "{pending}");
    let login = post_json(
        core.addr,
        "/api/v1/auth",
        &[("user-agent", UA), ("cookie", &pending)],
        r#"{"username":"alice","password":"pass"}"#,
    )
    .await;
    let resume = login.json()["url"].as_str().unwrap().to_owned();
    assert_eq!(resume, format!("{}{authorize}", core.url()));
    let cookie = session(&login.cookie(SESSION_COOKIE).unwrap());

    // Signed in, not yet consented: the consent page.
    let to_consent = get(core.addr, &authorize, &[("cookie", &cookie)]).await;
    assert_eq!(to_consent.status, 302);
    let consent = to_consent.location();
    assert!(consent.starts_with("/consent?"), "{consent}");
    let page = get(core.addr, &consent, &[("cookie", &cookie)]).await;
    assert!(page.text().contains("id=\"consent-form\"") || page.text().contains("consent-form"));

    // The native form POST: no body, the query carries the request.
    let denied = send(
        core.addr,
        "POST",
        &format!("/api/v1/oauth/authorize?{AUTHORIZE_QUERY}&allow=false"),
        &[("cookie", &cookie), ("user-agent", UA)],
        Some(("application/x-www-form-urlencoded", "")),
    )
    .await;
    assert_eq!(denied.status, 302);
    assert_eq!(
        query_param(&denied.location(), "error").as_deref(),
        Some("access_denied")
    );
    let anon_post = send(
        core.addr,
        "POST",
        &format!("/api/v1/oauth/authorize?{AUTHORIZE_QUERY}&allow=true"),
        &[("user-agent", UA)],
        Some(("application/x-www-form-urlencoded", "")),
    )
    .await;
    assert_eq!(anon_post.status, 401);
    let accepted = send(
        core.addr,
        "POST",
        &format!(
            "{}&allow=true",
            consent.replacen("/consent?", "/api/v1/oauth/authorize?", 1)
        ),
        &[("cookie", &cookie), ("user-agent", UA)],
        Some(("application/x-www-form-urlencoded", "")),
    )
    .await;
    assert_eq!(accepted.status, 302, "{}", accepted.text());
    let back = accepted.location();
    assert!(
        back.starts_with(&format!("{OAUTH_REDIRECT_URI}?code=")),
        "{back}"
    );
    assert_eq!(query_param(&back, "state").as_deref(), Some("st4te"));
    let code = query_param(&back, "code").unwrap();

    // The relying party's server: its own credentials, no cookie.
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"));
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}",
        encode(OAUTH_REDIRECT_URI)
    );
    let auth = format!("Basic {basic}");
    let tokens = send(
        core.addr,
        "POST",
        "/api/v1/oauth/token",
        &[("authorization", &auth)],
        Some(("application/x-www-form-urlencoded", &form)),
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let t = tokens.json();
    assert_eq!(t["token_type"], "bearer");
    let id_token = t["id_token"].as_str().unwrap();
    let (signed, sig) = id_token.rsplit_once('.').unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, OAUTH_CLIENT_SECRET.as_bytes());
    ring::hmac::verify(
        &key,
        signed.as_bytes(),
        &URL_SAFE_NO_PAD.decode(sig).unwrap(),
    )
    .expect("HS256 with the client secret");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], USER);
    assert_eq!(claims["aud"], serde_json::json!([OAUTH_CLIENT_ID]));
    assert_eq!(claims["iss"], format!("{}/", core.url()));
    assert_eq!(claims["email"], "alice@example.com");
    // The code is spent.
    let again = send(
        core.addr,
        "POST",
        "/api/v1/oauth/token",
        &[("authorization", &auth)],
        Some(("application/x-www-form-urlencoded", &form)),
    )
    .await;
    assert_eq!(again.status, 400);

    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let info = get(
        core.addr,
        "/api/v1/oauth/userinfo",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["preferred_username"], USER);

    // Consented once: straight back with a code.
    let direct = get(core.addr, &authorize, &[("cookie", &cookie)]).await;
    assert_eq!(direct.status, 302);
    assert!(direct.location().starts_with(OAUTH_REDIRECT_URI));

    let discovery = get(core.addr, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(
        discovery.json()["token_endpoint"],
        format!("{}/api/v1/oauth/token", core.url())
    );
}

// ---------------------------------------------------------------------------------------
// Core: server-sent events
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn setup_streams_send_events_over_a_long_response() {
    let core = Core::start().await;
    core.sse(|s| {
        s.pause = Duration::from_millis(60);
        s.keep_alives = 1;
    });
    let token = format!("Bearer {ADMIN_API_TOKEN}");
    let stream = TcpStream::connect(core.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api/v1/network/1/gateways/setup?common_name=gw")
        .header("host", "core")
        .header("authorization", token)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(LIMIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut first_event = None;
    while let Some(frame) = tokio::time::timeout(LIMIT, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            if first_event.is_none() && text.contains("data: ") {
                first_event = Some(started.elapsed());
            }
        }
    }
    let total = started.elapsed();
    let steps: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["step"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(steps, SETUP_STEPS);
    assert!(text.contains(":\n\n"), "keep-alive comments: {text}");
    assert!(
        first_event.unwrap() + Duration::from_millis(300) < total,
        "the first event came before the end ({first_event:?} of {total:?})"
    );
}

#[test]
fn cookie_dates_are_rfc_7231() {
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[tokio::test]
async fn faults_stop_and_restart() {
    let core = Core::start().await;
    core.faults(|f| f.fail.push(("/api/v1/health".into(), 503)));
    assert_eq!(get(core.addr, "/api/v1/health", &[]).await.status, 503);
    core.faults(|f| f.fail.clear());
    core.stop().await;
    assert!(TcpStream::connect(core.addr).await.is_err());
    core.restart().await;
    assert_eq!(get(core.addr, "/api/v1/health", &[]).await.status, 200);
}

#[tokio::test]
async fn the_shell_carries_the_documented_page_elements() {
    let core = Core::start().await;
    let page = get(core.addr, "/settings", &[]).await;
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    for id in [
        "id=\"app\"",
        "id=\"status\"",
        "id=\"error\"",
        "id=\"nav-settings\"",
        "id=\"logo\"",
        "id=\"openid-login\"",
        "id=\"login-form\"",
        "id=\"username\"",
        "id=\"password\"",
        "id=\"login-submit\"",
        "id=\"me-username\"",
        "id=\"logout\"",
        "id=\"instance-name\"",
        "id=\"save\"",
        "id=\"consent-form\"",
        "id=\"accept\"",
        "id=\"deny-form\"",
        "id=\"users\"",
        "credentials: 'same-origin'",
        "'Request failed: '",
        "/openid/auth_info",
        "allow', 'true'",
    ] {
        assert!(html.contains(id), "{id} missing from the shell");
    }
    let edge = Edge::start().await;
    let page = get(edge.addr, "/enrollment", &[]).await;
    assert!(page.text().contains("id=\"token\""));
}

// ---------------------------------------------------------------------------------------
// Edge
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn edge_enrollment_needs_the_cookie_its_start_sets() {
    let edge = Edge::start().await;
    let unknown = post_json(
        edge.addr,
        "/api/v1/enrollment/start",
        &[],
        r#"{"token":"nope"}"#,
    )
    .await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.json()["error"].is_string());
    let device = format!(r#"{{"name":"laptop","pubkey":"{EXAMPLE_PUBKEY}"}}"#);
    let without = post_json(edge.addr, "/api/v1/enrollment/create_device", &[], &device).await;
    assert_eq!(without.status, 401);

    let start = post_json(
        edge.addr,
        "/api/v1/enrollment/start",
        &[],
        &format!(r#"{{"token":"{ENROLLMENT_TOKEN}"}}"#),
    )
    .await;
    assert_eq!(start.status, 200, "{}", start.text());
    assert_eq!(start.json()["user"]["login"], USER);
    assert_eq!(start.json()["instance"]["proxy_url"], edge.url());
    let line = start.set_cookie(ENROLLMENT_COOKIE).unwrap();
    assert!(line.contains("Expires="), "{line}");
    assert!(!line.contains("Path="), "the proxy sets no path: {line}");
    assert!(!line.contains(ENROLLMENT_TOKEN), "a private cookie: {line}");
    assert_eq!(
        start.header("defguard-core-connected").as_deref(),
        Some("true")
    );
    let cookie = start.cookie_header();

    let created = post_json(
        edge.addr,
        "/api/v1/enrollment/create_device",
        &[("cookie", &cookie)],
        &device,
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    assert!(created.json()["configs"][0]["config"]
        .as_str()
        .unwrap()
        .contains("[Interface]"));
    let activated = post_json(
        edge.addr,
        "/api/v1/enrollment/activate_user",
        &[("cookie", &cookie)],
        r#"{"phone_number":null,"password":"Passw0rd!x"}"#,
    )
    .await;
    assert_eq!(activated.status, 200);
    assert!(activated
        .set_cookie(ENROLLMENT_COOKIE)
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        edge.events(),
        ["start alice", "device alice laptop", "activate alice"]
    );

    edge.set_core_connected(false);
    let grpc = get(edge.addr, "/api/v1/health-grpc", &[]).await;
    assert_eq!(grpc.status, 503);
    assert_eq!(
        grpc.header("defguard-core-connected").as_deref(),
        Some("false")
    );
    assert_eq!(get(edge.addr, "/api/v1/health", &[]).await.status, 200);
}

#[tokio::test]
async fn edge_openid_callback_needs_the_auth_info_cookies() {
    let edge = Edge::start().await;
    let info = post_json(
        edge.addr,
        "/api/v1/openid/auth_info",
        &[],
        r#"{"state":null,"type":"enrollment"}"#,
    )
    .await;
    assert_eq!(info.status, 200);
    let url = info.json()["url"].as_str().unwrap().to_owned();
    assert_eq!(
        query_param(&url, "redirect_uri").unwrap(),
        format!("{}/openid/callback", edge.url())
    );
    let state = query_param(&url, "state").unwrap();
    assert!(info
        .set_cookie(EDGE_CSRF_COOKIE)
        .unwrap()
        .contains("Secure"));
    let cookies = info.cookie_header();
    let body = format!(r#"{{"code":"c0de","state":"{state}","type":"enrollment"}}"#);
    let ok = post_json(
        edge.addr,
        "/api/v1/openid/callback",
        &[("cookie", &cookies)],
        &body,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let token = ok.json()["token"].as_str().unwrap().to_owned();
    // The token starts an enrollment.
    let start = post_json(
        edge.addr,
        "/api/v1/enrollment/start",
        &[],
        &format!(r#"{{"token":"{token}"}}"#),
    )
    .await;
    assert_eq!(start.status, 200);
    let wrong_flow = post_json(
        edge.addr,
        "/api/v1/openid/callback/mfa",
        &[("cookie", &cookies)],
        &body,
    )
    .await;
    assert_eq!(wrong_flow.status, 400);
}

async fn open_remote(
    edge: &Edge,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let url = format!("ws://{}/api/v1/client-mfa/remote?token={token}", edge.addr);
    let (ws, resp) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("a handshake in time")
        .expect("the WebSocket upgrade (tungstenite checks Sec-WebSocket-Accept)");
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) -> Value {
    loop {
        let msg = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("a message in time")
            .expect("an open socket")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn edge_remote_mfa_websocket_answers_mfa_success() {
    let edge = Edge::start().await;

    // The desktop client speaks first: the stand-in answers.
    let mut ws = open_remote(&edge, "t-1").await;
    ws.send(Message::text(r#"{"type":"waiting"}"#))
        .await
        .unwrap();
    let msg = next_text(&mut ws).await;
    assert_eq!(msg["type"], "mfa_success");
    assert!(!msg["preshared_key"].as_str().unwrap().is_empty());
    let closed = tokio::time::timeout(LIMIT, ws.next()).await.unwrap();
    assert!(
        matches!(closed, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "then it closes: {closed:?}"
    );

    // The phone approves through finish-remote while the desktop waits.
    let mut ws = open_remote(&edge, "t-2").await;
    assert!(support::eventually(Duration::from_secs(5), async || edge.remote_waiting("t-2")).await);
    let url = format!("ws://{}/api/v1/client-mfa/remote?token=t-2", edge.addr);
    match tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("a second listener for the same token: {other:?}"),
    }
    let done = post_json(
        edge.addr,
        "/api/v1/client-mfa/finish-remote",
        &[],
        r#"{"token":"t-2","code":"123456"}"#,
    )
    .await;
    assert_eq!(done.status, 200);
    assert_eq!(next_text(&mut ws).await["type"], "mfa_success");

    // Not a WebSocket request.
    let plain = get(edge.addr, "/api/v1/client-mfa/remote?token=t-3", &[]).await;
    assert_eq!(plain.status, 400);
}
