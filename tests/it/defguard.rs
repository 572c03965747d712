//! Tests of the Defguard stand-in (`tests/support/defguard.rs`) itself, over real HTTP on
//! loopback, so the gateway tests can trust it behaves like Defguard core and Edge: every
//! route of its table answers as the table says for each kind of caller, and the flows a
//! gateway must not break (sign-in, "Sign in with JumpCloud", the consent form, server-sent
//! events, Edge's enrollment cookie and its MFA WebSocket) work end to end.

use crate::support;

// Included by path, as examples/e2e_env.rs includes it, so it needs nothing from support.
#[path = "../support/defguard.rs"]
mod stand_in;

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

use stand_in::*;
use support::browser::{idp_get, location, Browser};
use support::env::{Options, SignInEnv};
use support::jumpcloud::User;

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
fn the_table_covers_every_route_of_defguard() {
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

// ---------------------------------------------------------------------------------------
// The shipped config/defguard.toml in front of the stand-in
// ---------------------------------------------------------------------------------------

/// The ready configuration, as shipped.
const SHIPPED: &str = include_str!("../../config/defguard.toml");

const STEP_UP_ID: &str = "jumpgate-step-up";
const STEP_UP_SECRET: &str = "step-up-secret";

/// What the configuration means to do, written out literally (the tests below check both
/// that the gateway does it and that it fits what Defguard needs). Paths are prefixes on
/// whole segments, as the gateway's routes are.
///
/// Admin areas: "Defguard Admins" only at the gateway (others get its 403), and changes need
/// a fresh step-up.
const ADMIN_AREAS: &[&str] = &[
    "/admin",
    "/api/v1/settings",
    "/api/v1/group",
    "/api/v1/groups-assign",
    "/api/v1/mail",
    "/api/v1/support",
    "/api/v1/webhook",
    "/api/v1/activity_log_stream",
    "/api/v1/ldap",
    "/api/v1/test_directory_sync",
    "/api/v1/proxy",
    "/api/v1/core/cert",
    "/api/v1/gateway",
    "/api/v1/acl",
    "/api/v1/device-posture",
    "/api/v1/openid/provider",
    "/api/v1/worker/token",
    "/api/v1/initial_setup",
    "/api/v1/wizard",
    "/api/v1/migration",
    "/api/v1/version",
];
/// Shared with ordinary users (Defguard decides who may do what): admins' changes need a
/// fresh step-up, users' never do.
const SHARED_STEP_UP: &[&str] = &[
    "/api/v1/user",
    "/api/v1/device",
    "/api/v1/settings_enterprise",
    "/api/v1/oauth",
    "/api/v1/network",
    "/api/v1/worker",
];
/// Where even a read needs the step-up (it mints a credential).
const STEP_UP_EVERY_METHOD: &[&str] = &["/api/v1/worker/token"];
/// Carved out of the step-up: the consent page's native form post.
const NO_STEP_UP: &[&str] = &["/api/v1/oauth/authorize"];
/// Public: monitoring, and Defguard as an OpenID provider for other applications' servers.
const PUBLIC: &[&str] = &[
    "/api/v1/health",
    "/.well-known/openid-configuration",
    "/api/v1/oauth/token",
    "/api/v1/oauth/userinfo",
    "/api/v1/oauth/discovery/keys",
];
/// Refused on the public host: Defguard's own forward-auth (internal) and the SSH keys
/// endpoint (no authentication in Defguard's handler).
const DENY: &[&str] = &["/api/v1/forward_auth", "/api/v1/ssh_authorized_keys"];
/// Defguard's static files, public at the gateway (a gateway in front of Defguard: "static assets may be
/// public"), though the table counts them with the web UI.
const STATIC_FILES: &[&str] = &["/assets", "/fonts", "/svg"];

/// Whether the route's example path is under one of `prefixes` (whole segments).
fn under(r: &RouteCase, prefixes: &[&str]) -> bool {
    let path = r.path_only();
    prefixes.iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn is_write(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// The `[[site]]` sections of the shipped file, with its hosts and upstreams swapped for the
/// test certificate's names and the stand-ins. Every needle must be there: a changed file
/// must not silently stop being tested.
fn shipped_sites(core: &str, edge: &str) -> String {
    let start = SHIPPED
        .find("\n[[site]]")
        .expect("config/defguard.toml has [[site]] sections")
        + 1;
    let mut sites = SHIPPED[start..].to_owned();
    for (from, to) in [
        ("defguard.example.net", "app.test"),
        ("enroll.example.net", "enroll.test"),
        ("http://127.0.0.1:8000", core),
        ("http://127.0.0.1:8080", edge),
    ] {
        assert!(
            sites.contains(from),
            "config/defguard.toml no longer contains {from:?}: update this test's swaps"
        );
        sites = sites.replace(from, to);
    }
    assert!(!sites.contains("example.net"), "a host left unswapped");
    sites
}

/// The shipped configuration on a real gateway, with the fake JumpCloud (sign-in, step-up
/// application, directory) and the Defguard stand-ins behind it.
struct Fronted {
    env: SignInEnv,
    core: Core,
    edge: Edge,
    /// JumpCloud's bob: "Defguard Users" (and "Staff", which the sign-in app binds).
    bob: String,
    client: support::Client,
    _secrets: tempfile::TempDir,
}

impl Fronted {
    async fn start() -> Fronted {
        let core = Core::start().await;
        core.sse(|s| {
            s.pause = Duration::from_millis(5);
            s.keep_alives = 1;
        });
        let edge = Edge::start().await;
        let secrets = tempfile::tempdir().unwrap();
        let secret = secrets.path().join("step-up-secret");
        std::fs::write(&secret, STEP_UP_SECRET).unwrap();
        let env = SignInEnv::start_with(Options {
            sites: Some(shipped_sites(&core.url(), &edge.url())),
            directory: Some(String::new()),
            oidc: format!(
                "\n[oidc.step_up]\nclient_id = \"{STEP_UP_ID}\"\nclient_secret_file = \"{}\"\n",
                secret.display()
            ),
            ..Options::default()
        })
        .await;
        let port = env.gw.addr.port();
        env.register_step_up_app(STEP_UP_ID, STEP_UP_SECRET);
        env.wait_ready().await;
        // DEFGUARD_URL is the public address.
        core.set_public_url(&format!("https://app.test:{port}"));
        edge.set_public_url(&format!("https://enroll.test:{port}"));
        // The file's groups, then a directory sync that saw them.
        let users = env.fake.add_group("Defguard Users");
        let admins = env.fake.add_group("Defguard Admins");
        let bob = env.fake.add_user(User::new("bob"));
        env.fake.add_member(&users, &bob);
        env.fake.add_member(&env.group_id("Staff"), &bob);
        env.fake.add_member(&admins, &env.alice);
        env.wait_for_a_sync().await;
        let client = env.gw.client();
        Fronted {
            env,
            core,
            edge,
            bob,
            client,
            _secrets: secrets,
        }
    }

    fn origin(&self) -> String {
        format!("https://app.test:{}", self.env.gw.addr.port())
    }

    /// One request through the gateway, bounded.
    async fn send(
        &self,
        host: &str,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> support::Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        tokio::time::timeout(LIMIT, self.client.send(host, req))
            .await
            .unwrap_or_else(|_| panic!("{method} {host}{target} answered within {LIMIT:?}"))
    }

    /// A browser signed in at the gateway as `user` (a JumpCloud id); with `step_up`, its
    /// first page load also went through the step-up application.
    async fn signed_in(&self, user: &str, step_up: bool) -> Browser {
        self.env.fake.set_next_login(Some(user));
        let mut b = self.env.browser();
        let back = b.sign_in_callback("/me").await;
        assert_eq!(back.status, 302, "{}", back.text());
        assert_eq!(location(&back), "/me");
        if step_up {
            let challenge = b.follow(&back).await;
            let done = through_step_up(&mut b, &challenge).await;
            assert_eq!(done.status, 302, "{}", done.text());
            assert_eq!(location(&done), "/me");
            let page = b.follow(&done).await;
            assert_eq!(page.status, 200, "{}", page.text());
        }
        b
    }

    /// Defguard's own sign-in through the gateway, as its login form does it (a script's
    /// `POST /api/v1/auth`); the browser keeps the `defguard_session` cookie.
    async fn defguard_sign_in(&self, b: &mut Browser, username: &str) {
        let mut headers = shape_headers(Shape::Script, "POST", &self.origin());
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("cookie".into(), b.cookie_header().unwrap_or_default()));
        let r = self
            .send(
                "app.test",
                "POST",
                "/api/v1/auth",
                &headers,
                Some(&format!(
                    r#"{{"username":"{username}","password":"{PASSWORD}"}}"#
                )),
            )
            .await;
        assert_eq!(r.status, 200, "Defguard sign-in: {}", r.text());
        assert_eq!(r.json()["user"]["username"], username);
        b.store(&r);
        assert!(b.cookie(SESSION_COOKIE).is_some(), "a defguard_session");
    }
}

/// From a 302 into the step-up application to the reply of the gateway's step-up callback.
async fn through_step_up(b: &mut Browser, challenge: &support::Reply) -> support::Reply {
    assert_eq!(challenge.status, 302, "{}", challenge.text());
    let to = location(challenge);
    assert!(to.contains(&format!("client_id={STEP_UP_ID}")), "{to}");
    let idp = idp_get(&to).await;
    assert_eq!(idp.status, 302, "{}", idp.text());
    b.follow(&idp).await
}

/// Who sends a request in the table-driven test of the shipped configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// A browser with no gateway session.
    Anonymous,
    /// The desktop client: no session, no Fetch Metadata, JSON (Edge only).
    Desktop,
    /// Another application's server using Defguard as its OpenID provider.
    RelyingParty,
    /// The route's own machine caller (monitoring, an SSH host, a front proxy), like curl.
    Machine,
    /// bob, "Defguard Users", signed in; toward core he holds the stand-in's `alice` session.
    User,
    /// alice, "Defguard Admins", signed in and stepped up; the stand-in's `admin` session.
    Admin,
    /// alice signed in, with no step-up yet.
    AdminNoStepUp,
}

impl Who {
    fn principal(self) -> Principal {
        match self {
            Who::User => Principal::User,
            Who::Admin | Who::AdminNoStepUp => Principal::Admin,
            _ => Principal::Anonymous,
        }
    }

    /// The routes this caller is tried on.
    fn tries(self, r: &RouteCase) -> bool {
        match self {
            Who::Anonymous => true,
            Who::Desktop => r.component == Component::Edge,
            Who::RelyingParty => r.caller == Caller::RelyingPartyServer,
            Who::Machine => matches!(
                r.caller,
                Caller::Monitoring | Caller::SshHost | Caller::FrontProxy
            ),
            Who::User | Who::Admin | Who::AdminNoStepUp => r.component == Component::Core,
        }
    }

    /// How its request for `r` looks.
    fn shape(self, r: &RouteCase) -> Shape {
        match self {
            Who::Desktop => Shape::Desktop,
            Who::RelyingParty => Shape::RelyingParty,
            Who::Machine => Shape::Machine,
            _ if r.caller == Caller::Browser && r.method == "GET" => Shape::Navigation,
            _ if r.caller == Caller::Browser => Shape::FormPost,
            _ => Shape::Script,
        }
    }
}

/// The form of a request, as its client sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A top-level page load.
    Navigation,
    /// A native form submission (the consent page).
    FormPost,
    /// `fetch` from a page's script, as Defguard's web UI calls its API.
    Script,
    Desktop,
    RelyingParty,
    /// curl-like: `Accept: */*`, no Fetch Metadata.
    Machine,
}

impl Shape {
    /// A client that is not a browser showing pages: it must never be sent to a sign-in
    /// page, nor be given one.
    fn machine(self) -> bool {
        !matches!(self, Shape::Navigation | Shape::FormPost)
    }
}

const CHROME_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

fn shape_headers(shape: Shape, method: &str, origin: &str) -> Vec<(String, String)> {
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    match shape {
        Shape::Navigation => h(&[
            ("user-agent", CHROME_UA),
            ("accept", html),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-site", "none"),
            ("sec-fetch-dest", "document"),
            ("sec-fetch-user", "?1"),
        ]),
        Shape::FormPost => {
            let referer = format!("{origin}/consent?{AUTHORIZE_QUERY}");
            h(&[
                ("user-agent", CHROME_UA),
                ("accept", html),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-dest", "document"),
                ("origin", origin),
                ("referer", &referer),
            ])
        }
        Shape::Script => {
            let mut v = h(&[
                ("user-agent", CHROME_UA),
                // What Defguard's API client (axios) sends.
                ("accept", "application/json, text/plain, */*"),
                ("sec-fetch-mode", "cors"),
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-dest", "empty"),
            ]);
            if is_write(method) {
                v.push(("origin".into(), origin.to_owned()));
            }
            v
        }
        Shape::Desktop => h(&[
            ("user-agent", "defguard-client/1.6.2"),
            ("accept", "application/json"),
        ]),
        Shape::RelyingParty => h(&[
            ("user-agent", "Go-http-client/1.1"),
            ("accept", "application/json"),
        ]),
        Shape::Machine => h(&[("user-agent", "curl/8.5.0"), ("accept", "*/*")]),
    }
}

/// What the gateway must do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Forwarded; the stand-in's own answer, with this status.
    Forwarded(u16),
    /// The gateway's sign-in: a 302 into it for page loads, a 401 JSON otherwise.
    SignIn,
    /// The gateway's 403: a readable page for page loads, JSON for scripts.
    Forbidden,
    /// A fresh step-up first: a 302 into it for page loads, a 303 for a native form post, the
    /// RFC 9470 401 for scripts.
    StepUp,
}

/// The verdict the configuration's intent gives `who` on `r`.
fn verdict(r: &RouteCase, who: Who) -> Verdict {
    let p = who.principal();
    if r.component == Component::Edge || under(r, PUBLIC) || under(r, STATIC_FILES) {
        return Verdict::Forwarded(r.expected(p));
    }
    if under(r, DENY) {
        return Verdict::Forbidden;
    }
    match who {
        Who::Anonymous | Who::Desktop | Who::RelyingParty | Who::Machine => Verdict::SignIn,
        Who::User if under(r, ADMIN_AREAS) => Verdict::Forbidden,
        Who::User | Who::Admin => Verdict::Forwarded(r.expected(p)),
        Who::AdminNoStepUp => {
            // step_up_on_navigation: every page load of an admin with no fresh step-up.
            let page_load = r.caller == Caller::Browser && r.method == "GET";
            let step_up_route =
                (under(r, ADMIN_AREAS) || under(r, SHARED_STEP_UP)) && !under(r, NO_STEP_UP);
            let asked = is_write(r.method) || under(r, STEP_UP_EVERY_METHOD);
            if page_load || (step_up_route && asked) {
                Verdict::StepUp
            } else {
                Verdict::Forwarded(r.expected(p))
            }
        }
    }
}

#[test]
fn the_configs_intent_fits_what_defguard_needs() {
    let mut failures = Vec::new();
    for r in routes(Component::Core) {
        let at = format!("{} {}", r.method, r.path_only());
        let admins_only = r.admin_only || r.class == Class::AdminsOnly;
        // A page of the web UI is the same shell for everyone; what it shows comes from the
        // API. Refusing an ordinary user an admin page breaks nothing.
        let page = r.caller == Caller::Browser && r.pattern == "/{*path}";
        if under(r, ADMIN_AREAS) && !admins_only && !page {
            failures.push(format!(
                "{at}: Defguard lets ordinary users use it, the configuration refuses them"
            ));
        }
        if r.self_service && under(r, ADMIN_AREAS) {
            failures.push(format!("{at}: self-service behind an admin area"));
        }
        let stepped = (under(r, ADMIN_AREAS) || under(r, SHARED_STEP_UP)) && !under(r, NO_STEP_UP);
        if admins_only && is_write(r.method) && !stepped {
            failures.push(format!("{at}: an admin's change with no step-up"));
        }
        if r.caller == Caller::Browser && r.method == "POST" && stepped {
            failures.push(format!("{at}: a native form post behind a step-up"));
        }
        if (r.class == Class::Deny) != under(r, DENY) {
            failures.push(format!(
                "{at}: denied for Defguard: {}",
                r.class == Class::Deny
            ));
        }
        if (r.class == Class::Public) != under(r, PUBLIC) {
            failures.push(format!(
                "{at}: public for Defguard: {}, in the file: {}",
                r.class == Class::Public,
                under(r, PUBLIC)
            ));
        }
    }
    // The literal lists name only places the file has routes for.
    for p in ADMIN_AREAS
        .iter()
        .chain(SHARED_STEP_UP)
        .chain(STEP_UP_EVERY_METHOD)
        .chain(NO_STEP_UP)
        .chain(STATIC_FILES)
        .chain(PUBLIC)
        .chain(DENY)
    {
        if !SHIPPED.contains(&format!("path = \"{p}\"")) {
            failures.push(format!("the file has no route {p}"));
        }
    }
    support::report(failures);
}

/// The requests the stand-in that answers `r` has received so far.
fn logged(f: &Fronted, r: &RouteCase) -> Vec<Seen> {
    match r.component {
        Component::Core => f.core.requests(),
        Component::Edge => f.edge.requests(),
    }
}

fn host_of(r: &RouteCase) -> &'static str {
    match r.component {
        Component::Core => "app.test",
        Component::Edge => "enroll.test",
    }
}

/// A WebSocket handshake through the gateway: the status it got.
async fn websocket_via(f: &Fronted, r: &RouteCase, headers: &[(String, String)]) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let host = host_of(r);
    let mut req = format!("wss://{host}{}", r.path)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        if k != "accept" {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
    }
    let handshake = async {
        let tls = f.client.connect(host, &[b"http/1.1"]).await;
        tokio_tungstenite::client_async(req, tls).await
    };
    let status = match tokio::time::timeout(LIMIT, handshake).await {
        Ok(Ok((mut ws, resp))) => {
            // The client speaks first; the stand-in answers and closes. Both ways through
            // the tunnel.
            ws.send(Message::text(r#"{"type":"waiting"}"#))
                .await
                .unwrap();
            let answer = loop {
                match tokio::time::timeout(LIMIT, ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => break t.as_str().to_owned(),
                    Ok(Some(Ok(_))) => {}
                    other => panic!("{}: no answer through the tunnel: {other:?}", r.path),
                }
            };
            assert!(answer.contains("\"mfa_success\""), "{answer}");
            let _ = ws.close(None).await;
            resp.status().as_u16()
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => resp.status().as_u16(),
        Ok(Err(e)) => panic!("{}: {e}", r.path),
        Err(_) => panic!("{}: no handshake within {LIMIT:?}", r.path),
    };
    // The stand-in takes one listener per token: wait until this one is gone.
    let token = r.path.split("token=").nth(1).unwrap_or("");
    assert!(
        support::eventually(LIMIT, async || !f.edge.remote_waiting(token)).await,
        "the stand-in let go of {token}"
    );
    status
}

/// A request and what became of it.
struct Outcome {
    status: u16,
    reply: Option<support::Reply>,
    /// The stand-in received it.
    forwarded: bool,
}

impl Outcome {
    fn header(&self, name: &str) -> String {
        self.reply
            .as_ref()
            .and_then(|r| r.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    fn json(&self) -> Value {
        self.reply
            .as_ref()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        self.reply.as_ref().map(|r| r.text()).unwrap_or_default()
    }
}

/// Sends `r`'s example request as `who` would (`cookies`: its browser's), through the
/// gateway; `cookie_extra` adds cookies a flow's earlier step set.
async fn try_route(
    f: &Fronted,
    who: Who,
    r: &RouteCase,
    cookies: Option<&str>,
    cookie_extra: Option<&str>,
) -> Outcome {
    let shape = who.shape(r);
    let mut headers = shape_headers(shape, r.method, &f.origin());
    let body = match (shape, r.body) {
        (_, Some(b)) => {
            headers.push(("content-type".into(), r.content_type().unwrap().into()));
            Some(b)
        }
        // A native form with no fields still posts an empty form.
        (Shape::FormPost, None) => {
            headers.push((
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            Some("")
        }
        _ => None,
    };
    let cookie = [cookies, cookie_extra]
        .into_iter()
        .flatten()
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if !cookie.is_empty() {
        headers.push(("cookie".into(), cookie));
    }
    let before = logged(f, r).len();
    let (status, reply) = if r.stream == Stream::WebSocket {
        (websocket_via(f, r, &headers).await, None)
    } else {
        let reply = f.send(host_of(r), r.method, r.path, &headers, body).await;
        (reply.status.as_u16(), Some(reply))
    };
    let seen = logged(f, r);
    let forwarded = seen.len() > before
        && seen[before..]
            .iter()
            .any(|s| s.method == r.method && s.path_only() == r.path_only());
    assert!(
        seen.len() <= before + 1,
        "one request, one upstream request"
    );
    Outcome {
        status,
        reply,
        forwarded,
    }
}

/// Checks an outcome against a verdict; the failures found.
fn judge(f: &Fronted, who: Who, r: &RouteCase, want: Verdict, got: &Outcome) -> Vec<String> {
    let shape = who.shape(r);
    let at = format!("{who:?} {} {}", r.method, r.path);
    let mut failures = Vec::new();
    let mut fail = |what: String| {
        failures.push(format!(
            "{at}: {what} (got {}{}; {})",
            got.status,
            if got.forwarded { ", forwarded" } else { "" },
            got.text().chars().take(160).collect::<String>()
        ))
    };
    let content_type = got.header("content-type");
    // Whatever the verdict: no machine caller gets a redirect or a page from the gateway.
    if !got.forwarded && shape.machine() {
        if matches!(got.status, 301..=303 | 307 | 308) {
            fail("a redirect for a client that is not a browser".into());
        }
        let accepts_pages = shape == Shape::Machine && r.caller != Caller::Monitoring;
        if content_type.starts_with("text/html") && !accepts_pages {
            fail("an HTML page for a client that is not a browser".into());
        }
    }
    match want {
        Verdict::Forwarded(status) => {
            if !got.forwarded {
                fail(format!("not forwarded (want the stand-in's {status})"));
            } else if got.status != status {
                fail(format!(
                    "forwarded, but the answer is not the stand-in's {status}"
                ));
            }
        }
        _ if got.forwarded => fail(format!("forwarded (want {want:?})")),
        Verdict::SignIn if shape == Shape::Navigation => {
            let to = got.header("location");
            if got.status != 302
                || !to.starts_with(&format!("{}/oauth2/auth?", f.env.fake.base_url()))
                || !to.contains(&format!("client_id={}", support::env::CLIENT_ID))
            {
                fail(format!("want a 302 into the sign-in, location {to:?}"));
            }
        }
        Verdict::SignIn => {
            if got.status != 401
                || content_type != "application/json"
                || got.json()["error"] != "sign_in_required"
                || got.header("www-authenticate") != "Cookie realm=\"jumpgate\""
            {
                fail("want the 401 JSON sign_in_required".into());
            }
        }
        Verdict::Forbidden => {
            let page = matches!(shape, Shape::Navigation | Shape::FormPost);
            let ok = got.status == 403
                && if page {
                    content_type.starts_with("text/html")
                        && got.text().contains("<h1>Access refused</h1>")
                } else if shape == Shape::Machine {
                    true
                } else {
                    content_type == "application/json" && got.json()["error"] == "forbidden"
                };
            if !ok {
                fail(format!(
                    "want the gateway's 403 {}",
                    if page { "page" } else { "JSON" }
                ));
            }
        }
        Verdict::StepUp => {
            let to = got.header("location");
            let ok = match shape {
                Shape::Navigation => {
                    got.status == 302
                        && to.contains(&format!("client_id={STEP_UP_ID}"))
                        && to.contains("prompt=login")
                }
                Shape::FormPost => {
                    got.status == 303
                        && to.starts_with(&format!("{}/.jumpgate/step-up?rd=", f.origin()))
                }
                _ => {
                    let body = got.json();
                    got.status == 401
                        && got.header("www-authenticate")
                            == "Bearer error=\"insufficient_user_authentication\", error_description=\"A recent multi-factor sign-in is required\", max_age=\"900\""
                        && body["error"] == "insufficient_user_authentication"
                        && body["step_up_url"].as_str().is_some_and(|u| {
                            u.starts_with(&format!("{}/.jumpgate/step-up?rd=", f.origin()))
                        })
                }
            };
            if !ok {
                fail(format!("want a step-up ({shape:?}), location {to:?}"));
            }
        }
    }
    failures
}

/// The cookies a browser sends, keeping the gateway's up to date with what it answers.
fn update_gateway_cookies(jar: &mut Browser, reply: Option<&support::Reply>) {
    let Some(reply) = reply else { return };
    let mut gateway = Browser::new(jar.client.clone(), &jar.host);
    gateway.store(reply);
    for (name, (value, attrs)) in gateway.cookies {
        if name.starts_with("__Host-jumpgate") {
            jar.cookies.insert(name, (value, attrs));
        }
    }
}

/// Every route of the reference through a real gateway running the shipped
/// config/defguard.toml, as each kind of caller: the gateway's verdict (forwarded with the
/// stand-in's own answer, its sign-in, its 403, or a step-up) is the one the file means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_gives_every_caller_the_intended_verdict_on_every_route() {
    let f = Fronted::start().await;
    let mut bob = f.signed_in(&f.bob, false).await;
    f.defguard_sign_in(&mut bob, USER).await;
    let mut admin = f.signed_in(&f.env.alice, true).await;
    f.defguard_sign_in(&mut admin, ADMIN).await;
    let mut admin_no_step_up = f.signed_in(&f.env.alice, false).await;
    f.defguard_sign_in(&mut admin_no_step_up, ADMIN).await;

    let mut failures = Vec::new();
    let mut tried = 0;
    for who in [
        Who::Anonymous,
        Who::Desktop,
        Who::RelyingParty,
        Who::Machine,
        Who::User,
        Who::Admin,
        Who::AdminNoStepUp,
    ] {
        let mut jar = match who {
            Who::User => Some(&mut bob),
            Who::Admin => Some(&mut admin),
            Who::AdminNoStepUp => Some(&mut admin_no_step_up),
            _ => None,
        };
        // Signing out of Defguard ends the session the other requests use: last.
        let mut cases: Vec<&RouteCase> = ROUTES.iter().filter(|r| who.tries(r)).collect();
        cases.sort_by_key(|r| r.pattern == "/api/v1/auth/logout");
        for r in cases {
            let cookies = jar.as_ref().and_then(|b| b.cookie_header());
            let got = try_route(&f, who, r, cookies.as_deref(), None).await;
            if let Some(b) = jar.as_deref_mut() {
                update_gateway_cookies(b, got.reply.as_ref());
            }
            let want = verdict(r, who);
            failures.extend(judge(&f, who, r, want, &got));
            tried += 1;
            // A flow's later step, after the earlier one that sets its cookies (Edge).
            if let (Some(step), None) = (r.step, &jar) {
                let mut headers = shape_headers(who.shape(r), step.method, &f.origin());
                headers.push(("content-type".into(), "application/json".into()));
                let first = f
                    .send(
                        host_of(r),
                        step.method,
                        step.path,
                        &headers,
                        Some(step.body),
                    )
                    .await;
                let set: Vec<String> = support::browser::set_cookies(&first)
                    .iter()
                    .filter_map(|c| c.split(';').next().map(str::to_owned))
                    .collect();
                let got = try_route(&f, who, r, None, Some(&set.join("; "))).await;
                failures.extend(
                    judge(&f, who, r, Verdict::Forwarded(r.status), &got)
                        .into_iter()
                        .map(|e| format!("after {}: {e}", step.path)),
                );
            }
        }
    }
    assert!(tried > 600, "only {tried} requests");
    support::report(failures);
}

/// The control: an admin with no fresh step-up is asked for one on an admin change by script
/// (RFC 9470) and on a page load (302); after the step-up at page load, the page's own
/// script saves the settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_steps_up_at_page_load_then_the_pages_script_saves_settings() {
    let f = Fronted::start().await;
    f.env.fake.set_next_login(Some(&f.env.alice));
    let mut b = f.env.browser();
    let back = b.sign_in_callback("/settings").await;
    assert_eq!(location(&back), "/settings");
    f.defguard_sign_in(&mut b, ADMIN).await;

    let put = |cookie: String, name: &'static str| {
        let mut headers = shape_headers(Shape::Script, "PUT", &f.origin());
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("cookie".into(), cookie));
        let body = format!(r#"{{"instance_name":"{name}"}}"#);
        let f = &f;
        async move {
            f.send("app.test", "PUT", "/api/v1/settings", &headers, Some(&body))
                .await
        }
    };
    // A script's change: the RFC 9470 challenge, and nothing reaches Defguard.
    let before = f.core.requests().len();
    let r = put(b.cookie_header().unwrap(), "Renamed").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A recent multi-factor sign-in is required\", max_age=\"900\""
    );
    assert_eq!(r.json()["error"], "insufficient_user_authentication");
    assert_eq!(f.core.requests().len(), before, "not forwarded");
    assert_eq!(f.core.settings()["instance_name"], "Defguard");

    // A page load: a 302 into the step-up application, and back to the page.
    let challenge = b.follow(&back).await;
    assert_eq!(challenge.status, 302, "{}", challenge.text());
    assert!(location(&challenge).contains(&format!("client_id={STEP_UP_ID}")));
    assert_eq!(f.core.requests().len(), before, "not forwarded");
    let done = through_step_up(&mut b, &challenge).await;
    assert_eq!(location(&done), "/settings");
    let page = b.follow(&done).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<main id=\"app\""), "Defguard's page");

    // The page's own script now saves.
    let r = put(b.cookie_header().unwrap(), "Renamed").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(f.core.settings()["instance_name"], "Renamed");
    let seen = f.core.requests();
    let saved = seen.last().unwrap();
    assert_eq!(
        (saved.method.as_str(), saved.path.as_str()),
        ("PUT", "/api/v1/settings")
    );
    assert!(
        saved.header("x-jumpgate-step-up-time").is_some(),
        "the step-up time travels upstream"
    );
}
