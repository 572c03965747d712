//! A Defguard stand-in for jumpgate's tests, demo and browser environment: the dashboard
//! ("core", [`Core`]) and the enrollment proxy ("Edge", [`Edge`]), each on plain HTTP on
//! 127.0.0.1 and an ephemeral port, following Defguard's own
//! source (DefGuard/defguard `stable/2.x`, DefGuard/proxy). It is test code, never part of
//! the gateway binary, and self-contained so an example can include it by path
//! (`#[path = "../tests/support/defguard.rs"] mod defguard;`).
//!
//! Every route it serves is listed in [`ROUTES`], with a concrete example request, who calls
//! it, how Defguard itself authorises it ([`Access`]) and what a gateway in front ought
//! to do with it ([`Class`]). The servers route with that same table, so the table is what
//! they serve.
//!
//! # Core
//!
//! - Users: `admin` (an admin) and `alice` (an ordinary user), password [`PASSWORD`].
//!   Authentication is only Defguard's own: the `defguard_session` cookie set by
//!   `POST /api/v1/auth` (JSON `{"username","password"}`, a `User-Agent` header required as
//!   Defguard's extractor requires it), or `Authorization: Bearer` with a Defguard API token
//!   ([`ADMIN_API_TOKEN`], opaque). Any other `Authorization` header is refused with 401, as
//!   Defguard's optional typed-header extractor does. Identity headers (`Remote-User`,
//!   `X-Forwarded-User`, ...) are ignored: they only show in [`Core::requests`].
//! - Refusals are Defguard's: 401 `{"msg":"Session is required"}` (or `"Session not
//!   found"`, `"Invalid API token"`), 403 `{"msg":"access denied"}` for admin routes and
//!   `{"msg":"requires privileged access"}` for another user's data. Axum's extractor
//!   rejections are plain text: 415 without `Content-Type: application/json`, 400 for bad
//!   JSON or a missing query field, 422 for a missing JSON field. Writes to the API by a
//!   signed-in caller need a `User-Agent` (400 `{"msg":"Missing UserAgent header"}`).
//! - Like axum's router, a path matching a route but not its method answers 405 with
//!   `Allow`, and any other GET path (even under `/api/`) answers the web UI shell.
//! - Management writes answer as Defguard does but change nothing, except what flows need:
//!   sessions, settings (`PUT`/`PATCH /api/v1/settings`), passwords, devices
//!   added with `POST /api/v1/device/{username}`, authorised apps, OAuth codes and tokens.
//! - External OpenID ("Sign in with JumpCloud"): `GET /api/v1/openid/auth_info` answers 200
//!   `{"url","button_display_name"}` to anyone and sets the `csrf` and `nonce` cookies
//!   (path `/api/v1/openid/callback`); `POST /api/v1/openid/callback` (`{"code","state"}`)
//!   needs them and a matching state. See [`OpenIdProvider`]: simulated by default (any code
//!   signs in one configured user), or a real provider such as the fake JumpCloud.
//! - Defguard as an OpenID provider: seeded client [`OAUTH_CLIENT_ID`] /
//!   [`OAUTH_CLIENT_SECRET`] with redirect URI [`OAUTH_REDIRECT_URI`]; `GET
//!   /api/v1/oauth/authorize` sends a browser without session to `/auth/login` (setting
//!   `defguard_sign_in`), a signed-in one to `/consent?...` (or straight back with a code once
//!   it consented); `POST /api/v1/oauth/authorize?...&allow=true` (the consent page's native
//!   form) redirects (302) to the redirect URI with `code` and `state`; `POST
//!   /api/v1/oauth/token`, `GET /api/v1/oauth/userinfo`, `GET /api/v1/oauth/discovery/keys`
//!   and `GET /.well-known/openid-configuration` authenticate their callers themselves. ID
//!   tokens are HS256 signed with the client secret (Defguard without an RSA key).
//! - Server-sent events (`/api/v1/proxy/setup/stream`, `/api/v1/proxy/acme/stream`,
//!   `/api/v1/network/{id}/gateways/setup`, admins): `text/event-stream`, one `data:` JSON
//!   event per setup step with pauses and optional keep-alive comments ([`SseConfig`]).
//!
//! ## Web UI shell (same HTML for `/` and every page path)
//!
//! A small single-page app like Defguard's: it calls the API with `fetch(...,
//! {credentials: 'same-origin'})` and on any non-2xx answer (401 included) only shows
//! `Request failed: STATUS` in `#error`; it never navigates by itself. Links with
//! `data-spa` and the views' own moves change pages client-side (`history.pushState`): after
//! the first load the server sees only XHR. Elements browser tests can rely on:
//!
//! - every page: `#app` with `data-view` (`login`, `callback`, `me`, `settings`, `consent`,
//!   `users`, `not-found`) and `data-ready="true"` once the page's first API call settled;
//!   `#status` (progress and success text), `#error` (hidden unless an error is shown); nav
//!   links `#nav-me`, `#nav-settings`, `#nav-users`; `#logo` (an image from `/svg/`).
//! - `/auth/login`: calls `GET /api/v1/openid/auth_info`; on 200 with a `url` shows the link
//!   `#openid-login` ("Sign in with JumpCloud") to that URL inside `#openid`, otherwise shows
//!   the error. The password form `#login-form` (`#username`, `#password`, `#login-submit`)
//!   posts `/api/v1/auth`; on success it goes to the `url` Defguard returns (a pending OAuth
//!   authorisation) with `location.replace`, else to `/me` client-side.
//! - `/auth/callback?code=&state=`: posts `/api/v1/openid/callback`, then as after login.
//! - `/` and `/me`: `GET /api/v1/me` fills `#me-username` and `#me-role` (`admin`/`user`);
//!   `#logout` posts `/api/v1/auth/logout` and goes to `/auth/login`.
//! - `/settings`: `GET /api/v1/settings` fills `#instance-name`; `#save` (in
//!   `#settings-form`) sends `PUT /api/v1/settings` with the loaded JSON and the new
//!   `instance_name`, then shows `Saved` in `#status`, or the error in `#error`.
//! - `/consent?client_id=&redirect_uri=&response_type=&scope=&state=`: `#client-name` (from
//!   `GET /api/v1/oauth/{client_id}`), `#scopes`, and two native forms posting to
//!   `/api/v1/oauth/authorize?<the page's query>&allow=true|false`: `#consent-form` with the
//!   button `#accept` ("Accept") and `#deny-form` with `#deny`.
//! - `/admin/users`: `GET /api/v1/user` fills the list `#users`.
//!
//! # Edge
//!
//! Public throughout, as the real proxy: pages and static files; `POST
//! /api/v1/enrollment/start` (`{"token"}`, [`ENROLLMENT_TOKEN`]) sets the `defguard_proxy`
//! cookie (no `Path`, so the browser scopes it to `/api/v1/enrollment`) that the other
//! enrollment calls need (401 `{"error":...}` without it; `register_mobile` 400); password
//! reset with [`PASSWORD_RESET_TOKEN`] and its `defguard_proxy_password_reset` cookie; client
//! MFA including the WebSocket `GET /api/v1/client-mfa/remote?token=T`, which sends
//! `{"type":"mfa_success","preshared_key":...}` once `finish-remote` arrives for `T` or the
//! client sends its first message, then closes; external OpenID (`POST
//! /api/v1/openid/auth_info` sets `csrf_proxy`/`nonce_proxy`); `/api/v1/poll`, health and
//! info. Every answer carries `defguard-core-connected` (see [`Edge::set_core_connected`]).
//! Edge page ids: `#app` (`data-view` `enrollment`, `openid-callback`, `password-reset`,
//! `page`), `#token`, `#start`, `#status`, `#error`.

#![allow(dead_code, unreachable_pub)]
// Answers are whole responses; handlers pass them around as their errors.
#![allow(clippy::result_large_err, clippy::too_many_arguments)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

/// Core's session cookie.
pub const SESSION_COOKIE: &str = "defguard_session";
/// Core's cookie remembering an OAuth authorisation interrupted by the sign-in.
pub const SIGN_IN_COOKIE: &str = "defguard_sign_in";
/// Core's external-OpenID cookies, set by `auth_info`, read by `callback`.
pub const CSRF_COOKIE: &str = "csrf";
pub const NONCE_COOKIE: &str = "nonce";
/// Edge's enrollment cookie, set by `POST /api/v1/enrollment/start`.
pub const ENROLLMENT_COOKIE: &str = "defguard_proxy";
/// Edge's password-reset cookie, set by `POST /api/v1/password-reset/start`.
pub const PASSWORD_RESET_COOKIE: &str = "defguard_proxy_password_reset";
/// Edge's external-OpenID cookies.
pub const EDGE_CSRF_COOKIE: &str = "csrf_proxy";
pub const EDGE_NONCE_COOKIE: &str = "nonce_proxy";

/// The password of every seeded user.
pub const PASSWORD: &str = "pass";
/// The seeded admin and ordinary user.
pub const ADMIN: &str = "admin";
pub const USER: &str = "alice";
/// A Defguard API token of `admin` (opaque, not a JWT).
pub const ADMIN_API_TOKEN: &str = "dg-api-token-admin";
/// A Defguard API token of `alice`: Defguard refuses token authentication to non-admins (403).
pub const USER_API_TOKEN: &str = "dg-api-token-alice";

/// The seeded OAuth client of Defguard-as-IdP.
pub const OAUTH_CLIENT_ID: &str = "gitea";
pub const OAUTH_CLIENT_SECRET: &str = "gitea-secret";
pub const OAUTH_REDIRECT_URI: &str = "https://gitea.test/user/oauth2/defguard/callback";

/// Edge's seeded enrollment token (for `alice`) and password-reset token.
pub const ENROLLMENT_TOKEN: &str = "enroll-token-alice";
pub const PASSWORD_RESET_TOKEN: &str = "reset-token-alice";

/// Versions reported.
pub const CORE_VERSION: &str = "2.0.1";
pub const EDGE_VERSION: &str = "1.6.2";

/// A valid WireGuard public key for examples.
pub const EXAMPLE_PUBKEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

// ---------------------------------------------------------------------------------------
// The route table
// ---------------------------------------------------------------------------------------

/// Which Defguard server a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Core,
    Edge,
}

/// Who calls a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A top-level browser navigation (typed URL, link, redirect, native form).
    Browser,
    /// The web UI's scripts (fetch/XHR), or scripts with Defguard API tokens.
    Xhr,
    /// The desktop (or mobile) client, which never holds a browser session.
    DesktopClient,
    /// The server of another application using Defguard as its OpenID provider.
    RelyingPartyServer,
    /// Health checks.
    Monitoring,
    /// An SSH host's `AuthorizedKeysCommand`.
    SshHost,
    /// Traefik/Caddy forward-auth sub-requests.
    FrontProxy,
}

/// How Defguard itself authorises a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone: no Defguard credential needed.
    Public,
    /// A Defguard session cookie or API token; 401 without. Routes about a user or a device
    /// (`{username}`, `{device_id}`) also admit only that user or an admin (403 otherwise);
    /// the example paths are alice's own.
    Session,
    /// An admin's session or API token: 401 without, 403 for an ordinary user.
    Admin,
    /// Needs the cookie(s) an earlier step of its flow set ([`RouteCase::step`]); refused with
    /// [`RouteCase::denied`] without them, whoever calls.
    Flow,
    /// The caller authenticates itself (OAuth client credentials, access tokens); Defguard
    /// sessions and API tokens play no part. Everyone gets [`RouteCase::status`].
    OwnCredentials,
    /// Only the `defguard_session` cookie counts (API tokens do not): Defguard's
    /// forward-auth endpoint; [`RouteCase::denied`] (a 307 to `/auth/login`) without it.
    SessionCookie,
}

/// What a gateway in front should do with a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Reachable without a gateway session (monitoring, relying-party servers, Edge).
    Public,
    /// Behind the gateway's sign-in.
    Protect,
    /// Admins only (first-run setup and migration).
    AdminsOnly,
    /// Deny on the public host (internal only, or unused).
    Deny,
}

/// How the answer is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// A whole response.
    None,
    /// `text/event-stream`, a long response.
    Sse,
    /// A WebSocket upgrade (status 101).
    WebSocket,
}

/// Who sends a request in a table-driven test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No Defguard credential.
    Anonymous,
    /// `alice`'s session cookie.
    User,
    /// `admin`'s session cookie.
    Admin,
    /// `Authorization: Bearer` [`ADMIN_API_TOKEN`].
    ApiToken,
}

impl Principal {
    pub const ALL: [Principal; 4] = [
        Principal::Anonymous,
        Principal::User,
        Principal::Admin,
        Principal::ApiToken,
    ];
}

/// An earlier request of a flow whose `Set-Cookie` a [`Access::Flow`] route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub method: &'static str,
    pub path: &'static str,
    pub body: &'static str,
}

/// One route of Defguard with a concrete example request.
#[derive(Clone, Copy, Debug)]
pub struct RouteCase {
    pub component: Component,
    pub method: &'static str,
    /// The route as Defguard's router declares it (`{param}`, `{*rest}`).
    pub pattern: &'static str,
    /// A concrete request target matching `pattern`, with a query where the route needs one.
    pub path: &'static str,
    pub caller: Caller,
    pub access: Access,
    pub class: Class,
    /// Defguard answers 403 to a signed-in non-admin.
    pub admin_only: bool,
    /// Ordinary users' self-service: must work for non-admins.
    pub self_service: bool,
    /// The status an authorised caller gets for the example request.
    pub status: u16,
    /// The status when Defguard refuses the caller (see [`Access`]).
    pub denied: u16,
    /// The example body: JSON when it starts with `{`, else a form.
    pub body: Option<&'static str>,
    /// For [`Access::Flow`]: the earlier step that sets the cookie this route needs, when a
    /// fixed request can do it (`None` when the flow needs a value from the step's answer).
    pub step: Option<Step>,
    pub stream: Stream,
    pub note: &'static str,
}

const fn route(
    component: Component,
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    caller: Caller,
    access: Access,
    class: Class,
    status: u16,
) -> RouteCase {
    RouteCase {
        component,
        method,
        pattern,
        path,
        caller,
        access,
        class,
        admin_only: matches!(access, Access::Admin),
        self_service: false,
        status,
        denied: match access {
            Access::SessionCookie => 307,
            _ => 401,
        },
        body: None,
        step: None,
        stream: Stream::None,
        note: "",
    }
}

const fn core(
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    caller: Caller,
    access: Access,
    class: Class,
    status: u16,
) -> RouteCase {
    route(
        Component::Core,
        method,
        pattern,
        path,
        caller,
        access,
        class,
        status,
    )
}

/// An admin-only API route of core called by the web UI: 401, 403, then `status`.
const fn admin(
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    status: u16,
) -> RouteCase {
    core(
        method,
        pattern,
        path,
        Caller::Xhr,
        Access::Admin,
        Class::Protect,
        status,
    )
}

/// A signed-in API route of core called by the web UI.
const fn signed_in(
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    status: u16,
) -> RouteCase {
    core(
        method,
        pattern,
        path,
        Caller::Xhr,
        Access::Session,
        Class::Protect,
        status,
    )
}

/// Ordinary users' self-service on core.
const fn own(
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    status: u16,
) -> RouteCase {
    signed_in(method, pattern, path, status).self_service()
}

/// First-run setup and migration routes (admins only).
const fn setup(method: &'static str, pattern: &'static str, status: u16) -> RouteCase {
    core(
        method,
        pattern,
        pattern,
        Caller::Xhr,
        Access::Admin,
        Class::AdminsOnly,
        status,
    )
}

const fn edge(
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    caller: Caller,
    access: Access,
    status: u16,
) -> RouteCase {
    route(
        Component::Edge,
        method,
        pattern,
        path,
        caller,
        access,
        Class::Public,
        status,
    )
}

impl RouteCase {
    const fn body(mut self, body: &'static str) -> RouteCase {
        self.body = Some(body);
        self
    }

    const fn note(mut self, note: &'static str) -> RouteCase {
        self.note = note;
        self
    }

    const fn self_service(mut self) -> RouteCase {
        self.self_service = true;
        self
    }

    const fn denied(mut self, status: u16) -> RouteCase {
        self.denied = status;
        self
    }

    const fn after(
        mut self,
        method: &'static str,
        path: &'static str,
        body: &'static str,
    ) -> RouteCase {
        self.step = Some(Step { method, path, body });
        self
    }

    const fn sse(mut self) -> RouteCase {
        self.stream = Stream::Sse;
        self
    }

    const fn ws(mut self) -> RouteCase {
        self.stream = Stream::WebSocket;
        self
    }

    /// The status `who` gets for the example request (for [`Access::Flow`], without the
    /// step's cookies).
    pub fn expected(&self, who: Principal) -> u16 {
        match (self.access, who) {
            (Access::Public | Access::OwnCredentials, _) => self.status,
            (Access::Flow, _) => self.denied,
            (Access::Session | Access::Admin, Principal::Anonymous) => 401,
            (Access::Admin, Principal::User) => 403,
            (Access::Session | Access::Admin, _) => self.status,
            (Access::SessionCookie, Principal::Anonymous | Principal::ApiToken) => self.denied,
            (Access::SessionCookie, _) => self.status,
        }
    }

    /// The request target's path, without the query.
    pub fn path_only(&self) -> &'static str {
        self.path.split('?').next().unwrap_or(self.path)
    }

    /// The content type of the example body.
    pub fn content_type(&self) -> Option<&'static str> {
        self.body.map(|b| {
            if b.starts_with('{') || b.starts_with('[') {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            }
        })
    }

    /// Whether `path` (no query) matches this route's pattern.
    pub fn matches(&self, path: &str) -> bool {
        pattern_match(self.pattern, path).is_some()
    }
}

/// The routes of one component.
pub fn routes(component: Component) -> impl Iterator<Item = &'static RouteCase> {
    ROUTES.iter().filter(move |r| r.component == component)
}

/// The route a request reaches, as Defguard's router picks it: the most specific pattern
/// matching `path` (static segments before parameters before catch-alls), then the method.
/// `Err(allowed methods)` when the path matches but not the method (405).
pub fn route_for(
    component: Component,
    method: &str,
    path: &str,
) -> Result<&'static RouteCase, Vec<&'static str>> {
    let mut best: Option<(Vec<u8>, &'static str)> = None;
    for r in routes(component) {
        if let Some(rank) = pattern_match(r.pattern, path) {
            if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                best = Some((rank, r.pattern));
            }
        }
    }
    let Some((_, pattern)) = best else {
        return Err(Vec::new());
    };
    let method = if method == "HEAD" { "GET" } else { method };
    let mut allowed = Vec::new();
    for r in routes(component).filter(|r| r.pattern == pattern) {
        if r.method == method {
            return Ok(r);
        }
        if !allowed.contains(&r.method) {
            allowed.push(r.method);
        }
    }
    Err(allowed)
}

/// Matches `path` against `pattern`; the rank orders matches by specificity (lower wins).
fn pattern_match(pattern: &str, path: &str) -> Option<Vec<u8>> {
    let pat: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if pattern == "/" {
        return (path == "/").then(Vec::new);
    }
    let mut rank = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if p.starts_with("{*") {
            // A catch-all takes one or more remaining segments, at least one not empty.
            let rest = &segs[i.min(segs.len())..];
            if rest.is_empty() || rest.iter().all(|s| s.is_empty()) {
                return None;
            }
            rank.push(2);
            return Some(rank);
        }
        let s = segs.get(i)?;
        if p.starts_with('{') {
            if s.is_empty() {
                return None;
            }
            rank.push(1);
        } else if p == s {
            rank.push(0);
        } else {
            return None;
        }
    }
    (segs.len() == pat.len()).then_some(rank)
}

/// The OAuth authorisation request of the seeded client, as a query string.
pub const AUTHORIZE_QUERY: &str = "client_id=gitea&redirect_uri=https%3A%2F%2Fgitea.test%2Fuser%2Foauth2%2Fdefguard%2Fcallback&response_type=code&scope=openid+profile+email&state=st4te";

use Access as A;
use Caller as C;

/// Every route of Defguard core (`stable/2.x`, plus the setup and migration routes of its
/// first run and `dev`'s device posture) and of Edge, with an example request each.
pub const ROUTES: &[RouteCase] = &[
    // --- Core: web UI shell and static files --------------------------------------------
    core("GET", "/", "/", C::Browser, A::Public, Class::Protect, 200)
        .note("the web UI shell"),
    core("GET", "/{*path}", "/auth/login", C::Browser, A::Public, Class::Protect, 200)
        .note("JumpCloud's Login URL in Defguard's guide; the page calls auth_info"),
    core("GET", "/{*path}", "/auth/callback?code=c0de&state=st4te", C::Browser, A::Public, Class::Protect, 200)
        .note("JumpCloud's redirect back: a top-level GET navigation"),
    core("GET", "/{*path}", "/consent?client_id=gitea&redirect_uri=https%3A%2F%2Fgitea.test%2Fuser%2Foauth2%2Fdefguard%2Fcallback&response_type=code&scope=openid+profile+email&state=st4te", C::Browser, A::Public, Class::Protect, 200)
        .note("the consent page of Defguard-as-IdP; posts a native form to /api/v1/oauth/authorize"),
    core("GET", "/{*path}", "/me", C::Browser, A::Public, Class::Protect, 200),
    core("GET", "/{*path}", "/settings", C::Browser, A::Public, Class::Protect, 200),
    core("GET", "/{*path}", "/admin/users", C::Browser, A::Public, Class::Protect, 200),
    core("GET", "/{*path}", "/api/v1/no-such-route", C::Browser, A::Public, Class::Protect, 200)
        .note("axum's catch-all serves the shell to any other GET, even under /api"),
    core("GET", "/assets/{*path}", "/assets/index.js", C::Browser, A::Public, Class::Protect, 200)
        .note("static files may be public"),
    core("GET", "/assets/{*path}", "/assets/index.css", C::Browser, A::Public, Class::Protect, 200),
    core("GET", "/fonts/{*path}", "/fonts/inter.woff2", C::Browser, A::Public, Class::Protect, 200),
    core("GET", "/svg/{*path}", "/svg/logo.svg", C::Browser, A::Public, Class::Protect, 200),
    core("GET", "/api-docs/openapi.json", "/api-docs/openapi.json", C::Xhr, A::Public, Class::Protect, 200)
        .note("Swagger UI's document"),
    // --- Core: health, info --------------------------------------------------------------
    core("GET", "/api/v1/health", "/api/v1/health", C::Monitoring, A::Public, Class::Public, 200)
        .note("answers \"alive\""),
    signed_in("GET", "/api/v1/info", "/api/v1/info", 200),
    core("GET", "/api/v1/session-info", "/api/v1/session-info", C::Xhr, A::Public, Class::Protect, 200)
        .note("{authorized, is_admin}: the web UI's first call"),
    admin("GET", "/api/v1/updates", "/api/v1/updates", 200),
    core("GET", "/api/v1/api-docs", "/api/v1/api-docs", C::Xhr, A::Public, Class::Protect, 200),
    core("GET", "/api/v1/settings_essentials", "/api/v1/settings_essentials", C::Xhr, A::Public, Class::Protect, 200)
        .note("branding for the login page"),
    core("GET", "/api/v1/ssh_authorized_keys", "/api/v1/ssh_authorized_keys?username=alice", C::SshHost, A::Public, Class::Deny, 200)
        .note("no authentication in Defguard's handler; deny unless SSH hosts need it"),
    core("GET", "/api/v1/forward_auth", "/api/v1/forward_auth", C::FrontProxy, A::SessionCookie, Class::Deny, 200)
        .note("Traefik/Caddy sub-requests: internal only"),
    // --- Core: Defguard's own sign-in and MFA ----------------------------------------------
    core("POST", "/api/v1/auth", "/api/v1/auth", C::Xhr, A::Public, Class::Protect, 200)
        .body(r#"{"username":"alice","password":"pass"}"#)
        .note("sets defguard_session; needs User-Agent"),
    signed_in("POST", "/api/v1/auth/logout", "/api/v1/auth/logout", 200),
    signed_in("PUT", "/api/v1/auth/mfa", "/api/v1/auth/mfa", 200),
    signed_in("DELETE", "/api/v1/auth/mfa", "/api/v1/auth/mfa", 200),
    signed_in("POST", "/api/v1/auth/webauthn/init", "/api/v1/auth/webauthn/init", 200),
    signed_in("POST", "/api/v1/auth/webauthn/finish", "/api/v1/auth/webauthn/finish", 200).body("{}"),
    signed_in("POST", "/api/v1/auth/webauthn/start", "/api/v1/auth/webauthn/start", 200),
    signed_in("POST", "/api/v1/auth/webauthn", "/api/v1/auth/webauthn", 200).body("{}"),
    signed_in("POST", "/api/v1/auth/totp/init", "/api/v1/auth/totp/init", 200),
    signed_in("POST", "/api/v1/auth/totp", "/api/v1/auth/totp", 200).body(r#"{"code":"123456"}"#),
    signed_in("POST", "/api/v1/auth/totp/verify", "/api/v1/auth/totp/verify", 200).body(r#"{"code":"123456"}"#),
    signed_in("POST", "/api/v1/auth/email/init", "/api/v1/auth/email/init", 200),
    signed_in("GET", "/api/v1/auth/email", "/api/v1/auth/email", 200),
    signed_in("POST", "/api/v1/auth/email", "/api/v1/auth/email", 200).body(r#"{"code":"123456"}"#),
    signed_in("POST", "/api/v1/auth/email/verify", "/api/v1/auth/email/verify", 200).body(r#"{"code":"123456"}"#),
    signed_in("POST", "/api/v1/auth/recovery", "/api/v1/auth/recovery", 200).body(r#"{"code":"recovery-code"}"#),
    // --- Core: users -----------------------------------------------------------------------
    admin("GET", "/api/v1/user", "/api/v1/user", 200),
    admin("POST", "/api/v1/user", "/api/v1/user", 201)
        .body(r#"{"username":"carol","email":"carol@example.com","first_name":"Carol","last_name":"Tester","password":"Passw0rd!x"}"#),
    own("GET", "/api/v1/user/{username}", "/api/v1/user/alice", 200),
    own("PUT", "/api/v1/user/{username}", "/api/v1/user/alice", 200)
        .body(r#"{"username":"alice","first_name":"Alice","last_name":"Tester","email":"alice@example.com"}"#),
    admin("DELETE", "/api/v1/user/{username}", "/api/v1/user/alice", 200),
    admin("POST", "/api/v1/user/{username}/start_enrollment", "/api/v1/user/alice/start_enrollment", 201)
        .body(r#"{"send_enrollment_notification":false}"#),
    own("POST", "/api/v1/user/{username}/start_desktop", "/api/v1/user/alice/start_desktop", 201)
        .body(r#"{"send_enrollment_notification":false}"#),
    admin("POST", "/api/v1/user/available", "/api/v1/user/available", 200).body(r#"{"username":"carol"}"#),
    own("PUT", "/api/v1/user/change_password", "/api/v1/user/change_password", 200)
        .body(r#"{"old_password":"pass","new_password":"pass"}"#),
    admin("PUT", "/api/v1/user/{username}/password", "/api/v1/user/alice/password", 200)
        .body(r#"{"new_password":"pass"}"#),
    admin("POST", "/api/v1/user/{username}/reset_password", "/api/v1/user/alice/reset_password", 200),
    own("DELETE", "/api/v1/user/{username}/email", "/api/v1/user/alice/email", 200),
    own("DELETE", "/api/v1/user/{username}/totp", "/api/v1/user/alice/totp", 200),
    own("GET", "/api/v1/user/{username}/auth_key", "/api/v1/user/alice/auth_key", 200),
    own("POST", "/api/v1/user/{username}/auth_key", "/api/v1/user/alice/auth_key", 201)
        .body(r#"{"name":"laptop","key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmr alice@laptop","key_type":"ssh"}"#),
    own("DELETE", "/api/v1/user/{username}/auth_key/{key_id}", "/api/v1/user/alice/auth_key/1", 200),
    own("POST", "/api/v1/user/{username}/auth_key/{key_id}/rename", "/api/v1/user/alice/auth_key/1/rename", 200)
        .body(r#"{"name":"work laptop"}"#),
    own("DELETE", "/api/v1/user/{username}/yubikey/{key_id}", "/api/v1/user/alice/yubikey/1", 200),
    own("POST", "/api/v1/user/{username}/yubikey/{key_id}/rename", "/api/v1/user/alice/yubikey/1/rename", 200)
        .body(r#"{"name":"blue key"}"#),
    admin("GET", "/api/v1/user/{username}/api_token", "/api/v1/user/alice/api_token", 200),
    admin("POST", "/api/v1/user/{username}/api_token", "/api/v1/user/alice/api_token", 201).body(r#"{"name":"ci"}"#),
    admin("DELETE", "/api/v1/user/{username}/api_token/{token_id}", "/api/v1/user/alice/api_token/1", 200),
    admin("POST", "/api/v1/user/{username}/api_token/{token_id}/rename", "/api/v1/user/alice/api_token/1/rename", 200)
        .body(r#"{"name":"ci-2"}"#),
    own("DELETE", "/api/v1/user/{username}/security_key/{id}", "/api/v1/user/alice/security_key/1", 200),
    own("GET", "/api/v1/me", "/api/v1/me", 200),
    own("DELETE", "/api/v1/user/{username}/oauth_app/{oauth2client_id}", "/api/v1/user/alice/oauth_app/1", 200),
    own("DELETE", "/api/v1/user/{username}/mfa", "/api/v1/user/alice/mfa", 200),
    // --- Core: groups, mail, settings, support, webhooks, directory ----------------------
    admin("GET", "/api/v1/group", "/api/v1/group", 200),
    admin("POST", "/api/v1/group", "/api/v1/group", 201).body(r#"{"name":"devs","members":[]}"#),
    admin("GET", "/api/v1/group/{id}", "/api/v1/group/admin", 200),
    admin("PUT", "/api/v1/group/{id}", "/api/v1/group/devs", 200).body(r#"{"name":"devs","members":["alice"]}"#),
    admin("DELETE", "/api/v1/group/{id}", "/api/v1/group/devs", 200),
    admin("POST", "/api/v1/group/{id}", "/api/v1/group/admin", 200).body(r#"{"username":"alice"}"#),
    admin("DELETE", "/api/v1/group/{id}/user/{username}", "/api/v1/group/admin/user/alice", 200),
    admin("GET", "/api/v1/group-info", "/api/v1/group-info", 200),
    admin("POST", "/api/v1/groups-assign", "/api/v1/groups-assign", 200).body(r#"{"users":[2],"groups":["devs"]}"#),
    admin("POST", "/api/v1/mail/test", "/api/v1/mail/test", 200).body(r#"{"to":"admin@example.com"}"#),
    admin("POST", "/api/v1/mail/support", "/api/v1/mail/support", 200),
    admin("GET", "/api/v1/settings", "/api/v1/settings", 200),
    admin("PUT", "/api/v1/settings", "/api/v1/settings", 200).body(r#"{"instance_name":"Defguard"}"#),
    admin("PATCH", "/api/v1/settings", "/api/v1/settings", 200).body(r#"{"instance_name":"Defguard"}"#),
    admin("PUT", "/api/v1/settings/{id}", "/api/v1/settings/1", 200),
    signed_in("GET", "/api/v1/settings_enterprise", "/api/v1/settings_enterprise", 200)
        .note("Defguard lets every signed-in user read it (SessionInfo); changes are for admins"),
    admin("PATCH", "/api/v1/settings_enterprise", "/api/v1/settings_enterprise", 200)
        .body(r#"{"admin_device_management":false}"#),
    admin("GET", "/api/v1/support/configuration", "/api/v1/support/configuration", 200),
    admin("GET", "/api/v1/support/logs", "/api/v1/support/logs", 200),
    admin("GET", "/api/v1/webhook", "/api/v1/webhook", 200),
    admin("POST", "/api/v1/webhook", "/api/v1/webhook", 201)
        .body(r#"{"url":"https://hooks.test/x","description":"x","token":"t","enabled":true,"on_user_created":true}"#),
    admin("GET", "/api/v1/webhook/{id}", "/api/v1/webhook/1", 200),
    admin("PUT", "/api/v1/webhook/{id}", "/api/v1/webhook/1", 200).body(r#"{"url":"https://hooks.test/y"}"#),
    admin("DELETE", "/api/v1/webhook/{id}", "/api/v1/webhook/1", 200),
    admin("POST", "/api/v1/webhook/{id}", "/api/v1/webhook/1", 200).body(r#"{"enabled":false}"#),
    admin("GET", "/api/v1/ldap/test", "/api/v1/ldap/test", 200),
    signed_in("GET", "/api/v1/activity_log", "/api/v1/activity_log", 200)
        .note("non-admins see their own events"),
    admin("GET", "/api/v1/activity_log_stream", "/api/v1/activity_log_stream", 200),
    admin("POST", "/api/v1/activity_log_stream", "/api/v1/activity_log_stream", 201)
        .body(r#"{"name":"siem","stream_type":"vector_http","config":{}}"#),
    admin("PUT", "/api/v1/activity_log_stream/{id}", "/api/v1/activity_log_stream/1", 200).body(r#"{"name":"siem"}"#),
    admin("DELETE", "/api/v1/activity_log_stream/{id}", "/api/v1/activity_log_stream/1", 200),
    // --- Core: Edge, core certificates and gateway management ------------------------------
    admin("GET", "/api/v1/proxy", "/api/v1/proxy", 200),
    admin("GET", "/api/v1/proxy/{proxy_id}", "/api/v1/proxy/1", 200),
    admin("PUT", "/api/v1/proxy/{proxy_id}", "/api/v1/proxy/1", 200).body(r#"{"name":"edge-1"}"#),
    admin("DELETE", "/api/v1/proxy/{proxy_id}", "/api/v1/proxy/1", 200),
    admin("POST", "/api/v1/proxy/cert/external_url_settings", "/api/v1/proxy/cert/external_url_settings", 200)
        .body(r#"{"ssl_type":"none"}"#),
    admin("GET", "/api/v1/proxy/setup/stream", "/api/v1/proxy/setup/stream?ip_or_domain=edge.internal&grpc_port=50051&common_name=edge", 200)
        .sse()
        .note("server-sent events: a long response"),
    admin("GET", "/api/v1/proxy/acme/stream", "/api/v1/proxy/acme/stream", 200)
        .sse()
        .note("server-sent events: a long response"),
    admin("POST", "/api/v1/core/cert/internal_url_settings", "/api/v1/core/cert/internal_url_settings", 200)
        .body(r#"{"ssl_type":"none"}"#),
    admin("GET", "/api/v1/core/cert/ca", "/api/v1/core/cert/ca", 200),
    admin("GET", "/api/v1/core/cert/certs", "/api/v1/core/cert/certs", 200),
    admin("GET", "/api/v1/gateway", "/api/v1/gateway", 200),
    admin("GET", "/api/v1/gateway/{gateway_id}", "/api/v1/gateway/1", 200),
    admin("PUT", "/api/v1/gateway/{gateway_id}", "/api/v1/gateway/1", 200).body(r#"{"name":"gw-1"}"#),
    admin("DELETE", "/api/v1/gateway/{gateway_id}", "/api/v1/gateway/1", 200),
    // --- Core: external OpenID provider (JumpCloud) --------------------------------------
    admin("GET", "/api/v1/openid/provider", "/api/v1/openid/provider", 200),
    admin("POST", "/api/v1/openid/provider", "/api/v1/openid/provider", 201)
        .body(r#"{"name":"JumpCloud","base_url":"https://oauth.id.jumpcloud.com/","client_id":"x","client_secret":"y","display_name":"JumpCloud"}"#),
    admin("GET", "/api/v1/openid/provider/{name}", "/api/v1/openid/provider/JumpCloud", 200),
    admin("PUT", "/api/v1/openid/provider/{name}", "/api/v1/openid/provider/JumpCloud", 200)
        .body(r#"{"display_name":"JumpCloud"}"#),
    admin("DELETE", "/api/v1/openid/provider/{name}", "/api/v1/openid/provider/JumpCloud", 200),
    admin("GET", "/api/v1/openid/provider/current", "/api/v1/openid/provider/current", 200),
    core("GET", "/api/v1/openid/auth_info", "/api/v1/openid/auth_info", C::Xhr, A::Public, Class::Protect, 200)
        .note("the login page's \"Sign in with JumpCloud\" button; called before any Defguard sign-in"),
    core("POST", "/api/v1/openid/callback", "/api/v1/openid/callback", C::Xhr, A::Flow, Class::Protect, 200)
        .body(r#"{"code":"c0de","state":"st4te"}"#)
        .note("needs the csrf and nonce cookies of auth_info and the state of its URL"),
    admin("GET", "/api/v1/enterprise_info", "/api/v1/enterprise_info", 200),
    admin("GET", "/api/v1/test_directory_sync", "/api/v1/test_directory_sync", 200),
    // --- Core: Defguard as an OpenID provider ----------------------------------------------
    core("GET", "/api/v1/oauth/discovery/keys", "/api/v1/oauth/discovery/keys", C::RelyingPartyServer, A::Public, Class::Public, 200),
    admin("GET", "/api/v1/oauth", "/api/v1/oauth", 200),
    admin("POST", "/api/v1/oauth", "/api/v1/oauth", 201)
        .body(r#"{"name":"wiki","redirect_uri":["https://wiki.test/cb"],"scope":["openid"],"enabled":true}"#),
    signed_in("GET", "/api/v1/oauth/{client_id}", "/api/v1/oauth/gitea", 200)
        .note("the consent page reads the client's name"),
    admin("PUT", "/api/v1/oauth/{client_id}", "/api/v1/oauth/gitea", 200).body(r#"{"name":"Gitea"}"#),
    admin("POST", "/api/v1/oauth/{client_id}", "/api/v1/oauth/gitea", 200).body(r#"{"enabled":true}"#),
    admin("DELETE", "/api/v1/oauth/{client_id}", "/api/v1/oauth/gitea", 200),
    core("GET", "/api/v1/oauth/authorize", "/api/v1/oauth/authorize?client_id=gitea&redirect_uri=https%3A%2F%2Fgitea.test%2Fuser%2Foauth2%2Fdefguard%2Fcallback&response_type=code&scope=openid+profile+email&state=st4te", C::Browser, A::Public, Class::Protect, 302)
        .note("to /auth/login without a session, to /consent (or back with a code) with one"),
    core("POST", "/api/v1/oauth/authorize", "/api/v1/oauth/authorize?client_id=gitea&redirect_uri=https%3A%2F%2Fgitea.test%2Fuser%2Foauth2%2Fdefguard%2Fcallback&response_type=code&scope=openid+profile+email&state=st4te&allow=true", C::Browser, A::Session, Class::Protect, 302)
        .note("the consent page's native form POST: never behind a step-up that answers POST with 401"),
    core("POST", "/api/v1/oauth/token", "/api/v1/oauth/token", C::RelyingPartyServer, A::OwnCredentials, Class::Public, 400)
        .body("grant_type=authorization_code&code=bogus&redirect_uri=https%3A%2F%2Fgitea.test%2Fuser%2Foauth2%2Fdefguard%2Fcallback&client_id=gitea&client_secret=gitea-secret")
        .note("an unknown code: Defguard answers 400 unsupported_grant_type"),
    core("GET", "/api/v1/oauth/userinfo", "/api/v1/oauth/userinfo", C::RelyingPartyServer, A::OwnCredentials, Class::Public, 401)
        .note("no access token in the example"),
    core("GET", "/.well-known/openid-configuration", "/.well-known/openid-configuration", C::RelyingPartyServer, A::Public, Class::Public, 200),
    // --- Core: ACLs --------------------------------------------------------------------------
    admin("GET", "/api/v1/acl/rule", "/api/v1/acl/rule", 200),
    admin("POST", "/api/v1/acl/rule", "/api/v1/acl/rule", 201).body(r#"{"name":"web","allow_all_users":true}"#),
    admin("GET", "/api/v1/acl/rule/count", "/api/v1/acl/rule/count", 200),
    admin("PUT", "/api/v1/acl/rule/apply", "/api/v1/acl/rule/apply", 200).body(r#"{"rules":[1]}"#),
    admin("GET", "/api/v1/acl/rule/{id}", "/api/v1/acl/rule/1", 200),
    admin("PUT", "/api/v1/acl/rule/{id}", "/api/v1/acl/rule/1", 200).body(r#"{"name":"web"}"#),
    admin("DELETE", "/api/v1/acl/rule/{id}", "/api/v1/acl/rule/1", 200),
    admin("GET", "/api/v1/acl/alias", "/api/v1/acl/alias", 200),
    admin("POST", "/api/v1/acl/alias", "/api/v1/acl/alias", 201).body(r#"{"name":"office"}"#),
    admin("GET", "/api/v1/acl/alias/count", "/api/v1/acl/alias/count", 200),
    admin("GET", "/api/v1/acl/alias/{id}", "/api/v1/acl/alias/1", 200),
    admin("PUT", "/api/v1/acl/alias/{id}", "/api/v1/acl/alias/1", 200).body(r#"{"name":"office"}"#),
    admin("DELETE", "/api/v1/acl/alias/{id}", "/api/v1/acl/alias/1", 200),
    admin("PUT", "/api/v1/acl/alias/apply", "/api/v1/acl/alias/apply", 200).body(r#"{"aliases":[1]}"#),
    admin("GET", "/api/v1/acl/destination", "/api/v1/acl/destination", 200),
    admin("POST", "/api/v1/acl/destination", "/api/v1/acl/destination", 201).body(r#"{"name":"db"}"#),
    admin("GET", "/api/v1/acl/destination/count", "/api/v1/acl/destination/count", 200),
    admin("GET", "/api/v1/acl/destination/{id}", "/api/v1/acl/destination/1", 200),
    admin("PUT", "/api/v1/acl/destination/{id}", "/api/v1/acl/destination/1", 200).body(r#"{"name":"db"}"#),
    admin("DELETE", "/api/v1/acl/destination/{id}", "/api/v1/acl/destination/1", 200),
    admin("PUT", "/api/v1/acl/destination/apply", "/api/v1/acl/destination/apply", 200).body(r#"{"destinations":[1]}"#),
    // --- Core: devices ---------------------------------------------------------------------
    own("POST", "/api/v1/device/{device_id}", "/api/v1/device/alice", 201)
        .body(r#"{"name":"phone","wireguard_pubkey":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}"#)
        .note("adds a device for the user named in the path (Defguard names the segment device_id)"),
    own("GET", "/api/v1/device/{device_id}", "/api/v1/device/1", 200).note("device 1 is alice's"),
    own("PUT", "/api/v1/device/{device_id}", "/api/v1/device/1", 200)
        .body(r#"{"name":"alice-laptop","wireguard_pubkey":"ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A="}"#),
    own("DELETE", "/api/v1/device/{device_id}", "/api/v1/device/1", 200),
    own("GET", "/api/v1/device/{device_id}/config", "/api/v1/device/1/config", 200),
    admin("GET", "/api/v1/device", "/api/v1/device", 200),
    own("GET", "/api/v1/device/user/{username}", "/api/v1/device/user/alice", 200),
    admin("GET", "/api/v1/device/user/{username}/ip", "/api/v1/device/user/alice/ip", 200),
    admin("POST", "/api/v1/device/user/{username}/ip", "/api/v1/device/user/alice/ip", 200)
        .body(r#"{"device_id":1,"ips":["10.0.0.5"]}"#),
    admin("GET", "/api/v1/device/user/{username}/ip/{device_id}", "/api/v1/device/user/alice/ip/1", 200),
    admin("POST", "/api/v1/device/user/{username}/ip/validate", "/api/v1/device/user/alice/ip/validate", 200)
        .body(r#"{"device_id":1,"ip":"10.0.0.5","location":1}"#),
    admin("GET", "/api/v1/device/network", "/api/v1/device/network", 200),
    admin("POST", "/api/v1/device/network", "/api/v1/device/network", 201)
        .body(r#"{"name":"printer","location_id":1,"assigned_ips":["10.0.0.9"],"wireguard_pubkey":"ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A="}"#),
    admin("GET", "/api/v1/device/network/ip/{network_id}", "/api/v1/device/network/ip/1", 200),
    admin("POST", "/api/v1/device/network/ip/{network_id}", "/api/v1/device/network/ip/1", 200).body(r#"{"ips":["10.0.0.9"]}"#),
    admin("GET", "/api/v1/device/network/{device_id}", "/api/v1/device/network/3", 200),
    admin("PUT", "/api/v1/device/network/{device_id}", "/api/v1/device/network/3", 200).body(r#"{"name":"printer"}"#),
    admin("DELETE", "/api/v1/device/network/{device_id}", "/api/v1/device/network/3", 200),
    admin("GET", "/api/v1/device/network/{device_id}/config", "/api/v1/device/network/3/config", 200),
    admin("POST", "/api/v1/device/network/start_cli", "/api/v1/device/network/start_cli", 201)
        .body(r#"{"name":"router","location_id":1,"assigned_ips":["10.0.0.10"]}"#),
    admin("POST", "/api/v1/device/network/start_cli/{device_id}", "/api/v1/device/network/start_cli/3", 201),
    admin("GET", "/api/v1/device-posture", "/api/v1/device-posture", 200).note("Defguard's dev branch only"),
    // --- Core: networks (VPN locations) ----------------------------------------------------
    admin("GET", "/api/v1/network", "/api/v1/network", 200),
    admin("POST", "/api/v1/network", "/api/v1/network", 201)
        .body(r#"{"name":"office","address":["10.1.0.1/24"],"port":51820,"endpoint":"vpn.test"}"#),
    admin("GET", "/api/v1/network/count", "/api/v1/network/count", 200),
    admin("GET", "/api/v1/network/display", "/api/v1/network/display", 200),
    admin("POST", "/api/v1/network/import", "/api/v1/network/import", 201)
        .body(r#"{"name":"imported","endpoint":"vpn.test","config":"[Interface]\n"}"#),
    admin("GET", "/api/v1/network/stats", "/api/v1/network/stats", 200),
    admin("GET", "/api/v1/network/gateways", "/api/v1/network/gateways", 200),
    admin("GET", "/api/v1/network/{network_id}", "/api/v1/network/1", 200),
    admin("PUT", "/api/v1/network/{network_id}", "/api/v1/network/1", 200).body(r#"{"name":"office"}"#),
    admin("DELETE", "/api/v1/network/{network_id}", "/api/v1/network/1", 200),
    admin("POST", "/api/v1/network/{network_id}/gateways/adopt", "/api/v1/network/1/gateways/adopt", 200)
        .body(r#"{"ip_or_domain":"gw.internal","grpc_port":50066,"common_name":"gw"}"#),
    admin("GET", "/api/v1/network/{network_id}/gateways", "/api/v1/network/1/gateways", 200),
    admin("GET", "/api/v1/network/{network_id}/gateways/setup", "/api/v1/network/1/gateways/setup?common_name=gw&ip_or_domain=gw.internal&grpc_port=50066", 200)
        .sse()
        .note("server-sent events: a long response"),
    admin("POST", "/api/v1/network/{network_id}/devices", "/api/v1/network/1/devices", 200).body(r#"{"devices":[]}"#),
    own("GET", "/api/v1/network/{network_id}/device/{device_id}/config", "/api/v1/network/1/device/1/config", 200)
        .note("alice's own device configuration"),
    admin("GET", "/api/v1/network/{network_id}/stats", "/api/v1/network/1/stats", 200),
    admin("GET", "/api/v1/network/{location_id}/stats/connected_users", "/api/v1/network/1/stats/connected_users", 200),
    admin("GET", "/api/v1/network/{location_id}/stats/connected_users/{user_id}/devices", "/api/v1/network/1/stats/connected_users/2/devices", 200),
    admin("GET", "/api/v1/network/{location_id}/stats/connected_network_devices", "/api/v1/network/1/stats/connected_network_devices", 200),
    admin("GET", "/api/v1/network/{location_id}/snat", "/api/v1/network/1/snat", 200),
    admin("POST", "/api/v1/network/{location_id}/snat", "/api/v1/network/1/snat", 201)
        .body(r#"{"user_id":2,"public_ip":"203.0.113.5"}"#),
    admin("PUT", "/api/v1/network/{location_id}/snat/{user_id}", "/api/v1/network/1/snat/2", 200)
        .body(r#"{"public_ip":"203.0.113.6"}"#),
    admin("DELETE", "/api/v1/network/{location_id}/snat/{user_id}", "/api/v1/network/1/snat/2", 200),
    admin("GET", "/api/v1/outdated", "/api/v1/outdated", 200),
    core("POST", "/api/v1/license/check", "/api/v1/license/check", C::Xhr, A::Public, Class::Protect, 400)
        .body(r#"{"license":"bogus"}"#)
        .note("no authentication in Defguard's handler; a bogus licence is a 400"),
    // --- Core: YubiKey provisioning workers -------------------------------------------------
    own("POST", "/api/v1/worker/job", "/api/v1/worker/job", 201)
        .body(r#"{"worker":"worker-1","username":"alice"}"#),
    admin("GET", "/api/v1/worker/token", "/api/v1/worker/token", 200).note("mints a YubiKey-worker token"),
    admin("GET", "/api/v1/worker", "/api/v1/worker", 200),
    admin("DELETE", "/api/v1/worker/{id}", "/api/v1/worker/worker-1", 200),
    signed_in("GET", "/api/v1/worker/{id}", "/api/v1/worker/1", 200).note("a job's status"),
    // --- Core: 2.x first-run setup and migration (same port) ---------------------------------
    setup("GET", "/api/v1/wizard", 200),
    setup("GET", "/api/v1/version", 200),
    setup("POST", "/api/v1/initial_setup/ca", 201),
    setup("GET", "/api/v1/initial_setup/ca", 200),
    setup("POST", "/api/v1/initial_setup/ca/upload", 201),
    setup("POST", "/api/v1/initial_setup/general_config", 200),
    setup("POST", "/api/v1/initial_setup/admin", 201).note("create_admin has no authentication of its own"),
    setup("POST", "/api/v1/initial_setup/login", 200),
    setup("GET", "/api/v1/initial_setup/session", 200),
    setup("GET", "/api/v1/initial_setup/auto_adoption", 200),
    setup("GET", "/api/v1/initial_setup/auto_wizard/internal_url_settings", 200),
    setup("POST", "/api/v1/initial_setup/auto_wizard/internal_url_settings", 200),
    setup("GET", "/api/v1/initial_setup/auto_wizard/external_url_settings", 200),
    setup("POST", "/api/v1/initial_setup/auto_wizard/external_url_settings", 200),
    setup("POST", "/api/v1/initial_setup/auto_wizard/vpn_settings", 200),
    setup("POST", "/api/v1/initial_setup/auto_wizard/mfa_settings", 200),
    setup("POST", "/api/v1/initial_setup/finish", 200),
    setup("GET", "/api/v1/migration/state", 200),
    setup("PUT", "/api/v1/migration/state", 200),
    setup("POST", "/api/v1/migration/ca", 201),
    setup("GET", "/api/v1/migration/ca", 200),
    setup("POST", "/api/v1/migration/ca/upload", 201),
    setup("POST", "/api/v1/migration/finish", 200),
    setup("GET", "/api/v1/migration/internal_url_settings", 200),
    setup("POST", "/api/v1/migration/internal_url_settings", 200),
    setup("GET", "/api/v1/migration/external_url_settings", 200),
    setup("POST", "/api/v1/migration/external_url_settings", 200),
    // --- Edge: pages and static files ------------------------------------------------------
    edge("GET", "/", "/", C::Browser, A::Public, 200),
    edge("GET", "/{*path}", "/enrollment", C::Browser, A::Public, 200),
    edge("GET", "/{*path}", "/password-reset", C::Browser, A::Public, 200),
    edge("GET", "/{*path}", "/password", C::Browser, A::Public, 200),
    edge("GET", "/{*path}", "/openid/callback?code=c0de&state=st4te", C::Browser, A::Public, 200)
        .note("JumpCloud's redirect back during an enrollment with external OpenID"),
    edge("GET", "/{*path}", "/openid/mfa", C::Browser, A::Public, 200),
    edge("GET", "/{*path}", "/openid/mfa/callback?code=c0de&state=st4te", C::Browser, A::Public, 200),
    edge("GET", "/assets/{*path}", "/assets/index.js", C::Browser, A::Public, 200),
    edge("GET", "/fonts/{*path}", "/fonts/inter.woff2", C::Browser, A::Public, 200),
    // --- Edge: enrollment ------------------------------------------------------------------
    edge("POST", "/api/v1/enrollment/start", "/api/v1/enrollment/start", C::DesktopClient, A::Public, 200)
        .body(r#"{"token":"enroll-token-alice"}"#)
        .note("sets the defguard_proxy cookie the other enrollment calls need"),
    edge("POST", "/api/v1/enrollment/activate_user", "/api/v1/enrollment/activate_user", C::Xhr, A::Flow, 200)
        .body(r#"{"phone_number":null,"password":"Passw0rd!x"}"#)
        .after("POST", "/api/v1/enrollment/start", r#"{"token":"enroll-token-alice"}"#),
    edge("POST", "/api/v1/enrollment/create_device", "/api/v1/enrollment/create_device", C::DesktopClient, A::Flow, 200)
        .body(r#"{"name":"laptop","pubkey":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}"#)
        .after("POST", "/api/v1/enrollment/start", r#"{"token":"enroll-token-alice"}"#),
    edge("POST", "/api/v1/enrollment/network_info", "/api/v1/enrollment/network_info", C::DesktopClient, A::Flow, 200)
        .body(r#"{"pubkey":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}"#)
        .after("POST", "/api/v1/enrollment/start", r#"{"token":"enroll-token-alice"}"#),
    edge("POST", "/api/v1/enrollment/register_mobile", "/api/v1/enrollment/register_mobile", C::DesktopClient, A::Flow, 200)
        .body(r#"{"auth_pub_key":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=","device_pub_key":"ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A="}"#)
        .after("POST", "/api/v1/enrollment/start", r#"{"token":"enroll-token-alice"}"#)
        .denied(400)
        .note("the mobile client; without the cookie the proxy answers 400 \"No token present\""),
    edge("POST", "/api/v1/enrollment/register-mfa/code/start", "/api/v1/enrollment/register-mfa/code/start", C::Xhr, A::Flow, 200)
        .body(r#"{"method":"totp"}"#)
        .after("POST", "/api/v1/enrollment/start", r#"{"token":"enroll-token-alice"}"#),
    edge("POST", "/api/v1/enrollment/register-mfa/code/finish", "/api/v1/enrollment/register-mfa/code/finish", C::Xhr, A::Flow, 200)
        .body(r#"{"method":"totp","code":"123456"}"#)
        .after("POST", "/api/v1/enrollment/start", r#"{"token":"enroll-token-alice"}"#),
    // --- Edge: password reset --------------------------------------------------------------
    edge("POST", "/api/v1/password-reset/request", "/api/v1/password-reset/request", C::Xhr, A::Public, 200)
        .body(r#"{"email":"alice@example.com"}"#),
    edge("POST", "/api/v1/password-reset/start", "/api/v1/password-reset/start", C::Xhr, A::Public, 200)
        .body(r#"{"token":"reset-token-alice"}"#)
        .note("sets the defguard_proxy_password_reset cookie"),
    edge("POST", "/api/v1/password-reset/reset", "/api/v1/password-reset/reset", C::Xhr, A::Flow, 200)
        .body(r#"{"password":"Passw0rd!x"}"#)
        .after("POST", "/api/v1/password-reset/start", r#"{"token":"reset-token-alice"}"#),
    // --- Edge: desktop client MFA ----------------------------------------------------------
    edge("POST", "/api/v1/client-mfa/start", "/api/v1/client-mfa/start", C::DesktopClient, A::Public, 200)
        .body(r#"{"location_id":1,"pubkey":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=","method":0}"#),
    edge("POST", "/api/v1/client-mfa/finish", "/api/v1/client-mfa/finish", C::DesktopClient, A::Public, 200)
        .body(r#"{"token":"mfa-token","code":"123456"}"#),
    edge("POST", "/api/v1/client-mfa/finish-remote", "/api/v1/client-mfa/finish-remote", C::DesktopClient, A::Public, 200)
        .body(r#"{"token":"remote-token","code":"123456"}"#)
        .note("the mobile client approving a desktop's remote MFA (with no desktop waiting the real proxy answers 500, the stand-in 200)"),
    edge("GET", "/api/v1/client-mfa/remote", "/api/v1/client-mfa/remote?token=remote-token", C::DesktopClient, A::Public, 101)
        .ws()
        .note("WebSocket; waits up to about 60 s for the mobile approval"),
    // --- Edge: external OpenID -------------------------------------------------------------
    edge("POST", "/api/v1/openid/auth_info", "/api/v1/openid/auth_info", C::Xhr, A::Public, 200)
        .body(r#"{"state":null,"type":"enrollment"}"#)
        .note("sets csrf_proxy and nonce_proxy"),
    edge("POST", "/api/v1/openid/callback", "/api/v1/openid/callback", C::Xhr, A::Flow, 200)
        .body(r#"{"code":"c0de","state":"st4te","type":"enrollment"}"#)
        .note("needs the cookies of auth_info and the state of its URL"),
    edge("POST", "/api/v1/openid/callback/mfa", "/api/v1/openid/callback/mfa", C::DesktopClient, A::Flow, 200)
        .body(r#"{"code":"c0de","state":"st4te","type":"mfa"}"#)
        .note("needs the cookies of auth_info and the state of its URL"),
    // --- Edge: desktop client polling, health, info ---------------------------------------
    edge("POST", "/api/v1/poll", "/api/v1/poll", C::DesktopClient, A::Public, 200)
        .body(r#"{"token":"poll-token"}"#)
        .note("the desktop client's periodic configuration poll"),
    edge("GET", "/api/v1/health", "/api/v1/health", C::Monitoring, A::Public, 200),
    edge("GET", "/api/v1/health-grpc", "/api/v1/health-grpc", C::Monitoring, A::Public, 200)
        .note("503 while core is not connected"),
    edge("GET", "/api/v1/info", "/api/v1/info", C::Xhr, A::Public, 200),
];

// ---------------------------------------------------------------------------------------
// Request log
// ---------------------------------------------------------------------------------------

/// One request as a stand-in received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// Lower-case names, in the order received; repeated headers stay repeated.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub at: Instant,
    /// The status answered (`None` while in flight; 101 for an accepted WebSocket).
    pub status: Option<u16>,
    seq: u64,
}

impl Seen {
    /// The first value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header (any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A cookie the request carried.
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_in(
            self.headers
                .iter()
                .filter(|(n, _)| n == "cookie")
                .map(|(_, v)| v.as_str()),
            name,
        )
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Injected failures, for both stand-ins.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Added before every answer.
    pub delay: Duration,
    /// Requests whose path starts with the prefix get this status instead of their answer
    /// (Defguard's `{"msg":"Internal server error"}` on core, `{"error":...}` on Edge).
    pub fail: Vec<(String, u16)>,
}

impl Faults {
    fn failure(&self, path: &str) -> Option<u16> {
        self.fail
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, s)| *s)
    }
}

// ---------------------------------------------------------------------------------------
// Server plumbing shared by both stand-ins
// ---------------------------------------------------------------------------------------

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Resp = Response<Body>;

struct Server {
    accept: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    fn stop_now(self) {
        let _ = self.shutdown.send(true);
        self.accept.abort();
    }
}

// A panic in a test closure must not wedge every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn bind(addr: SocketAddr) -> TcpListener {
    // A port just released by stop() can take a moment to become bindable again.
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the Defguard stand-in cannot listen on {addr}: {last:?}");
}

fn serve<H, F>(listener: TcpListener, handler: H) -> Server
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let (shutdown, stopped) = watch::channel(false);
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    _ = stopped.changed() => {}
                }
            });
        }
    });
    Server { accept, shutdown }
}

/// A request with its body read.
struct Req {
    method: Method,
    path: String,
    raw_query: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Req {
    fn target(&self) -> String {
        if self.raw_query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.raw_query)
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn q(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    fn cookie(&self, name: &str) -> Option<String> {
        cookie_in(
            self.headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            name,
        )
    }

    fn user_agent(&self) -> bool {
        self.headers.contains_key(http::header::USER_AGENT)
    }

    fn log_entry(&self, seq: u64) -> Seen {
        Seen {
            method: self.method.to_string(),
            path: self.target(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: self.body.clone(),
            at: Instant::now(),
            status: None,
            seq,
        }
    }
}

/// Reads the request; `Err` is the answer to a body over the limit.
async fn read_request(req: Request<Incoming>) -> Result<Req, Resp> {
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let body = match Limited::new(body, 10 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Failed to buffer the request body: length limit exceeded",
            ))
        }
    };
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    Ok(Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parse_query(&raw_query),
        raw_query,
        headers: parts.headers,
        body,
        upgrade,
    })
}

/// The values of a route's `{param}` segments in `path`, in order.
fn path_params(pattern: &str, path: &str) -> Vec<String> {
    pattern
        .trim_start_matches('/')
        .split('/')
        .zip(path.trim_start_matches('/').split('/'))
        .filter(|(p, _)| p.starts_with('{'))
        .map(|(_, s)| url_decode(s))
        .collect()
}

/// Axum's `Json` extractor, checked against the route's example body: content type (415),
/// syntax (400), then every field the example gives a non-null value (422).
fn json_extract(req: &Req, example: &str) -> Result<Value, Resp> {
    let json_type = req.header("content-type").is_some_and(|ct| {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
    });
    if !json_type {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`",
        ));
    }
    let value: Value = serde_json::from_slice(&req.body).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            &format!("Failed to parse the request body as JSON: {e}"),
        )
    })?;
    let want: Value = serde_json::from_str(example).unwrap_or(Value::Null);
    if let Some(fields) = want.as_object() {
        let Some(got) = value.as_object() else {
            return Err(text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Failed to deserialize the JSON body into the target type: invalid type: expected a map",
            ));
        };
        for (k, v) in fields {
            if !v.is_null() && !got.contains_key(k) {
                return Err(text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!(
                        "Failed to deserialize the JSON body into the target type: missing field `{k}`"
                    ),
                ));
            }
        }
    }
    Ok(value)
}

/// Axum's `Form` extractor for a POST: content type (415), then the required fields (422).
fn form_extract(req: &Req, required: &[&str]) -> Result<Vec<(String, String)>, Resp> {
    let form_type = req.header("content-type").is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if !form_type {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Form requests must have `Content-Type: application/x-www-form-urlencoded`",
        ));
    }
    let form = parse_query(&String::from_utf8_lossy(&req.body));
    for f in required {
        if param(&form, f).is_none() {
            return Err(text(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Failed to deserialize form body: missing field `{f}`"),
            ));
        }
    }
    Ok(form)
}

/// Axum's `Query` extractor: the required fields (400).
fn query_extract(req: &Req, required: &[&str]) -> Result<(), Resp> {
    for f in required {
        if req.q(f).is_none() {
            return Err(text(
                StatusCode::BAD_REQUEST,
                &format!("Failed to deserialize query string: missing field `{f}`"),
            ));
        }
    }
    Ok(())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn json_resp(status: StatusCode, body: &Value) -> Resp {
    respond(status, "application/json", body.to_string())
}

fn text(status: StatusCode, body: &str) -> Resp {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn html(body: &str) -> Resp {
    respond(StatusCode::OK, "text/html; charset=utf-8", body.to_owned())
}

fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn redirect(status: StatusCode, location: &str) -> Resp {
    let mut resp = empty(status);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

fn method_not_allowed(allowed: &[&str]) -> Resp {
    let mut list: Vec<&str> = allowed.to_vec();
    if list.contains(&"GET") {
        list.push("HEAD");
    }
    let mut resp = empty(StatusCode::METHOD_NOT_ALLOWED);
    if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
        resp.headers_mut().insert(http::header::ALLOW, v);
    }
    resp
}

fn add_cookie(resp: &mut Resp, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
}

/// A `Set-Cookie` removing a cookie, as the `cookie` crate writes it.
fn removal(name: &str, path: Option<&str>) -> String {
    let mut c = format!("{name}=");
    if let Some(p) = path {
        c.push_str(&format!("; Path={p}"));
    }
    c.push_str("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    c
}

fn cookie_in<'a>(values: impl Iterator<Item = &'a str>, name: &str) -> Option<String> {
    values
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `application/x-www-form-urlencoded` pairs (also query strings).
pub fn parse_query(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form encoding (space as `+`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = base.to_owned();
    for (i, (k, v)) in params.iter().enumerate() {
        out.push(if i == 0 && !base.contains('?') {
            '?'
        } else {
            '&'
        });
        out.push_str(&format!("{}={}", encode(k), encode(v)));
    }
    out
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// An RFC 7231 date, for cookie `Expires`.
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn valid_wireguard_key(key: &str) -> bool {
    STANDARD.decode(key).is_ok_and(|k| k.len() == 32)
}

/// A JWT signed with HMAC-SHA256.
fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// The claims of a JWT, unverified.
fn jwt_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()
}

/// Server-sent events: one `data:` event per step, `pause` apart, with `keep_alives`
/// comment lines in between.
fn event_stream(steps: Vec<String>, config: SseConfig) -> Resp {
    let mut frames: Vec<(Duration, Bytes)> = Vec::new();
    for (i, data) in steps.into_iter().enumerate() {
        if i > 0 {
            for _ in 0..config.keep_alives {
                frames.push((config.pause, Bytes::from_static(b":\n\n")));
            }
        }
        let wait = if i == 0 { Duration::ZERO } else { config.pause };
        frames.push((wait, Bytes::from(format!("data: {data}\n\n"))));
    }
    let stream = futures_util::stream::iter(frames).then(|(wait, bytes)| async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok::<_, Infallible>(Frame::data(bytes))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// A minimal HTTP/1.1 client for the provider exchange (plain `http://` only).
async fn http_call(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<(&str, String)>,
) -> Result<(u16, Bytes), String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = match body {
        Some((ct, b)) => req
            .header("content-type", ct)
            .body(Full::new(Bytes::from(b))),
        None => req.body(Full::new(Bytes::new())),
    }
    .map_err(|e| format!("bad request to {url}: {e}"))?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("{url}: timed out"))?
}

/// How the server-sent event routes pace their events.
#[derive(Clone, Debug)]
pub struct SseConfig {
    /// Between two events (and between keep-alives).
    pub pause: Duration,
    /// Comment lines (`:`) sent between two events, as axum's keep-alive does.
    pub keep_alives: usize,
}

impl Default for SseConfig {
    fn default() -> SseConfig {
        SseConfig {
            pause: Duration::from_millis(100),
            keep_alives: 1,
        }
    }
}

/// The steps of a component's TLS setup stream (Defguard's `SetupStep`).
pub const SETUP_STEPS: [&str; 7] = [
    "CheckingConfiguration",
    "CheckingAvailability",
    "CheckingVersion",
    "ObtainingCsr",
    "SigningCertificate",
    "ConfiguringTls",
    "Done",
];

/// The steps of Edge's ACME certificate stream.
pub const ACME_STEPS: [&str; 5] = [
    "Connecting",
    "CheckingDomain",
    "ValidatingDomain",
    "ObtainingCertificate",
    "Done",
];

// ---------------------------------------------------------------------------------------
// Core: state
// ---------------------------------------------------------------------------------------

/// A Defguard user.
#[derive(Clone, Debug)]
pub struct DgUser {
    pub id: i64,
    pub username: String,
    pub password: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// Member of Defguard's admin group.
    pub admin: bool,
    pub active: bool,
    /// Public keys served by `/api/v1/ssh_authorized_keys`.
    pub ssh_keys: Vec<String>,
}

impl DgUser {
    /// An active user `username@example.com` with password [`PASSWORD`].
    pub fn new(id: i64, username: &str, admin: bool) -> DgUser {
        let mut first = username.to_owned();
        if let Some(c) = first.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        DgUser {
            id,
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            email: format!("{username}@example.com"),
            first_name: first,
            last_name: "Tester".to_owned(),
            admin,
            active: true,
            ssh_keys: Vec::new(),
        }
    }
}

/// An application using Defguard as its OpenID provider.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    pub id: i64,
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scope: Vec<String>,
    pub enabled: bool,
}

impl OAuthClient {
    pub fn new(id: i64, client_id: &str, client_secret: &str, redirect_uri: &str) -> OAuthClient {
        OAuthClient {
            id,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            name: client_id.to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
            scope: vec!["openid".into(), "profile".into(), "email".into()],
            enabled: true,
        }
    }

    fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|u| u.trim_end_matches('/') == uri.trim_end_matches('/'))
    }
}

/// A user's WireGuard device.
#[derive(Clone, Debug)]
pub struct Device {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub pubkey: String,
}

/// Core's external OpenID provider (Defguard's "Sign in with ..." button).
#[derive(Clone, Debug)]
pub enum OpenIdProvider {
    /// `auth_info` answers a URL at `authorize_url` (never fetched); the callback accepts
    /// any code and signs in `user`.
    Simulated {
        authorize_url: String,
        client_id: String,
        display_name: String,
        user: String,
    },
    /// A real provider (such as the fake JumpCloud, plain `http://` only): discovery at
    /// `issuer`, the code exchanged at its token endpoint with `client_secret_basic`, the
    /// user matched by `email`, then `preferred_username`, else created as an ordinary user.
    Issuer {
        issuer: String,
        client_id: String,
        client_secret: String,
        display_name: String,
    },
}

impl OpenIdProvider {
    /// JumpCloud's real authorisation endpoint, simulated: every callback signs in `user`.
    pub fn simulated(user: &str) -> OpenIdProvider {
        OpenIdProvider::Simulated {
            authorize_url: "https://oauth.id.jumpcloud.com/oauth2/auth".to_owned(),
            client_id: "defguard-jumpcloud-client".to_owned(),
            display_name: "JumpCloud".to_owned(),
            user: user.to_owned(),
        }
    }

    /// A real provider at `issuer`, shown as "JumpCloud".
    pub fn issuer(issuer: &str, client_id: &str, client_secret: &str) -> OpenIdProvider {
        OpenIdProvider::Issuer {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            display_name: "JumpCloud".to_owned(),
        }
    }

    pub fn display_name(&self) -> &str {
        match self {
            OpenIdProvider::Simulated { display_name, .. }
            | OpenIdProvider::Issuer { display_name, .. } => display_name,
        }
    }
}

#[derive(Clone, Debug)]
struct AuthCode {
    username: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
}

#[derive(Clone, Debug)]
struct OAuthToken {
    username: String,
    client_id: String,
    scope: String,
    refresh_token: String,
}

/// Everything core knows; reach it with [`Core::with_state`].
pub struct CoreState {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Defguard's `DEFGUARD_URL`, the public URL browsers see (default: `base`). Used for
    /// redirects, issuer, callback URL, and `Secure` cookies when `https`.
    pub public_url: Option<String>,
    pub users: Vec<DgUser>,
    /// Session id (cookie value) to username.
    pub sessions: HashMap<String, String>,
    /// Defguard API token to username.
    pub api_tokens: HashMap<String, String>,
    pub settings: Value,
    /// `None`: `auth_info` answers 404 "OpenID provider not set".
    pub openid: Option<OpenIdProvider>,
    pub oauth_clients: Vec<OAuthClient>,
    /// (username, client_id) pairs that consented.
    pub authorized_apps: HashSet<(String, String)>,
    pub devices: Vec<Device>,
    pub requests: Vec<Seen>,
    pub faults: Faults,
    pub sse: SseConfig,
    /// Successful sign-ins (password or OpenID).
    pub logins: usize,
    codes: HashMap<String, AuthCode>,
    tokens: HashMap<String, OAuthToken>,
    seq: u64,
}

impl CoreState {
    fn new(base: String) -> CoreState {
        let mut admin = DgUser::new(1, ADMIN, true);
        admin.first_name = "Admin".to_owned();
        admin.last_name = "Defguard".to_owned();
        let mut alice = DgUser::new(2, USER, false);
        alice.ssh_keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmr alice@laptop".to_owned()];
        let mut client =
            OAuthClient::new(1, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_REDIRECT_URI);
        client.name = "Gitea".to_owned();
        CoreState {
            settings: json!({
                "instance_name": "Defguard",
                "main_logo_url": "/svg/logo.svg",
                "nav_logo_url": "/svg/logo.svg",
                "openid_enabled": true,
                "wireguard_enabled": true,
                "webhooks_enabled": true,
                "worker_enabled": true,
                "ldap_enabled": false,
                "openid_create_account": true,
                "enrollment_url": "http://127.0.0.1:8080/",
                "public_proxy_url": "http://127.0.0.1:8080/",
                "authentication_period_days": 7,
                "mfa_code_timeout_seconds": 60,
                "smtp_server": null,
            }),
            base,
            public_url: None,
            users: vec![admin, alice],
            sessions: HashMap::new(),
            api_tokens: HashMap::from([
                (ADMIN_API_TOKEN.to_owned(), ADMIN.to_owned()),
                (USER_API_TOKEN.to_owned(), USER.to_owned()),
            ]),
            openid: Some(OpenIdProvider::simulated(USER)),
            oauth_clients: vec![client],
            authorized_apps: HashSet::new(),
            devices: vec![
                Device {
                    id: 1,
                    username: USER.to_owned(),
                    name: "alice-laptop".to_owned(),
                    pubkey: EXAMPLE_PUBKEY.to_owned(),
                },
                Device {
                    id: 2,
                    username: ADMIN.to_owned(),
                    name: "admin-laptop".to_owned(),
                    pubkey: "ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=".to_owned(),
                },
            ],
            requests: Vec::new(),
            faults: Faults::default(),
            sse: SseConfig::default(),
            logins: 0,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            seq: 0,
        }
    }

    /// The public URL, without a trailing slash.
    pub fn url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| self.base.clone())
            .trim_end_matches('/')
            .to_owned()
    }

    fn secure(&self) -> bool {
        self.url().starts_with("https://")
    }

    pub fn user(&self, username: &str) -> Option<&DgUser> {
        self.users.iter().find(|u| u.username == username)
    }

    fn user_by_login(&self, login: &str) -> Option<&DgUser> {
        self.user(login).or_else(|| {
            self.users
                .iter()
                .find(|u| u.email.eq_ignore_ascii_case(login))
        })
    }

    fn client(&self, client_id: &str) -> Option<&OAuthClient> {
        self.oauth_clients.iter().find(|c| c.client_id == client_id)
    }

    /// A new session for `username`, as a sign-in creates it; returns the cookie value.
    pub fn new_session(&mut self, username: &str) -> String {
        let id = random_token();
        self.sessions.insert(id.clone(), username.to_owned());
        id
    }

    fn session_cookie(&self, id: &str) -> String {
        let days = self.settings["authentication_period_days"]
            .as_i64()
            .unwrap_or(7);
        format!(
            "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Lax{}; Path=/; Max-Age={}",
            if self.secure() { "; Secure" } else { "" },
            days * 86_400
        )
    }

    fn user_info(&self, u: &DgUser) -> Value {
        let devices: Vec<Value> = self
            .devices
            .iter()
            .filter(|d| d.username == u.username)
            .map(device_json)
            .collect();
        let apps: Vec<Value> = self
            .authorized_apps
            .iter()
            .filter(|(user, _)| *user == u.username)
            .filter_map(|(_, c)| self.client(c))
            .map(|c| json!({"oauth2client_id": c.id, "oauth2client_name": c.name, "user_id": u.id}))
            .collect();
        json!({
            "id": u.id,
            "username": u.username,
            "last_name": u.last_name,
            "first_name": u.first_name,
            "name": format!("{} {}", u.first_name, u.last_name),
            "email": u.email,
            "phone": null,
            "mfa_enabled": false,
            "totp_enabled": false,
            "email_mfa_enabled": false,
            "groups": if u.admin { vec!["admin"] } else { Vec::new() },
            "mfa_method": "None",
            "authorized_apps": apps,
            "is_active": u.active,
            "enrolled": true,
            "is_admin": u.admin,
            "ldap_pass_requires_change": false,
            "devices": devices,
        })
    }
}

fn device_json(d: &Device) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "wireguard_pubkey": d.pubkey,
        "user_id": d.username,
        "created": "2025-01-01T00:00:00",
        "networks": [{"network_id": 1, "network_name": "office", "device_wireguard_ips": [format!("10.1.0.{}", d.id + 1)], "is_active": false}],
    })
}

/// A signed-in caller of core.
#[derive(Clone, Debug)]
struct Who {
    username: String,
    admin: bool,
    token: bool,
}

// ---------------------------------------------------------------------------------------
// Core: the server
// ---------------------------------------------------------------------------------------

/// A running Defguard core stand-in. Dropping it stops it.
pub struct Core {
    pub addr: SocketAddr,
    state: Arc<Mutex<CoreState>>,
    server: Mutex<Option<Server>>,
}

impl Core {
    /// Listens on plain HTTP on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Core {
        Core::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `addr` with a fresh state.
    pub async fn start_on(addr: SocketAddr) -> Core {
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(CoreState::new(format!("http://{addr}"))));
        let server = core_serve(listener, state.clone());
        Core {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).requests.clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// Runs `f` on the state under its lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut CoreState) -> R) -> R {
        f(&mut lock(&self.state))
    }

    /// Signs `username` in without a request; returns the `defguard_session` cookie value.
    pub fn sign_in(&self, username: &str) -> String {
        lock(&self.state).new_session(username)
    }

    /// How many sessions `username` has.
    pub fn sessions_of(&self, username: &str) -> usize {
        lock(&self.state)
            .sessions
            .values()
            .filter(|u| *u == username)
            .count()
    }

    /// Sets `DEFGUARD_URL`, the URL browsers see (the gateway's).
    pub fn set_public_url(&self, url: &str) {
        lock(&self.state).public_url = Some(url.to_owned());
    }

    /// Replaces the external OpenID provider (`None`: not configured).
    pub fn set_openid(&self, provider: Option<OpenIdProvider>) {
        lock(&self.state).openid = provider;
    }

    pub fn add_oauth_client(&self, client: OAuthClient) {
        lock(&self.state).oauth_clients.push(client);
    }

    pub fn add_user(&self, user: DgUser) {
        lock(&self.state).users.push(user);
    }

    pub fn user(&self, username: &str) -> Option<DgUser> {
        lock(&self.state).user(username).cloned()
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut lock(&self.state).faults);
    }

    pub fn sse(&self, f: impl FnOnce(&mut SseConfig)) {
        f(&mut lock(&self.state).sse);
    }

    /// The current settings (`GET /api/v1/settings`).
    pub fn settings(&self) -> Value {
        lock(&self.state).settings.clone()
    }

    /// Stops listening and drops open connections.
    pub async fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            let _ = server.shutdown.send(true);
            server.accept.abort();
            let _ = server.accept.await;
        }
    }

    /// Listens again on the same address with the same state, after [`Core::stop`].
    pub async fn restart(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let listener = bind(self.addr).await;
        let server = core_serve(listener, self.state.clone());
        *lock(&self.server) = Some(server);
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            server.stop_now();
        }
    }
}

fn core_serve(listener: TcpListener, state: Arc<Mutex<CoreState>>) -> Server {
    serve(listener, move |req| core_handle(state.clone(), req))
}

async fn core_handle(state: Arc<Mutex<CoreState>>, req: Request<Incoming>) -> Resp {
    let req = match read_request(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (seq, delay, failure) = {
        let mut s = lock(&state);
        s.seq += 1;
        let seq = s.seq;
        let entry = req.log_entry(seq);
        s.requests.push(entry);
        (seq, s.faults.delay, s.faults.failure(&req.path))
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = match failure {
        Some(status) => json_resp(status_of(status), &json!({"msg": "Internal server error"})),
        None => core_route(&state, &req).await,
    };
    core_headers(&mut resp, &req.path);
    let mut s = lock(&state);
    if let Some(e) = s.requests.iter_mut().rev().find(|e| e.seq == seq) {
        e.status = Some(resp.status().as_u16());
    }
    resp
}

/// Defguard's security and version headers.
fn core_headers(resp: &mut Resp, path: &str) {
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "referrer-policy",
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("geolocation=(), camera=(), microphone=()"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry("content-security-policy")
        .or_insert(HeaderValue::from_static("frame-ancestors 'none';"));
    if path.starts_with("/api/") {
        h.insert("cache-control", HeaderValue::from_static("no-store"));
    }
    h.insert(
        "defguard-component-version",
        HeaderValue::from_static(CORE_VERSION),
    );
}

/// What a handler decided under the lock; some answers need more work after it.
enum Outcome {
    Done(Resp),
    Sse(Vec<String>, SseConfig),
    AuthInfo {
        provider: OpenIdProvider,
        callback_url: String,
        secure: bool,
    },
    Callback {
        provider: OpenIdProvider,
        code: String,
        nonce: String,
        callback_url: String,
        sign_in: Option<String>,
    },
}

impl From<Resp> for Outcome {
    fn from(r: Resp) -> Outcome {
        Outcome::Done(r)
    }
}

async fn core_route(state: &Arc<Mutex<CoreState>>, req: &Req) -> Resp {
    let route = match route_for(Component::Core, req.method.as_str(), &req.path) {
        Ok(r) => r,
        Err(allowed) if allowed.is_empty() => return text(StatusCode::NOT_FOUND, "Not found"),
        Err(allowed) => return method_not_allowed(&allowed),
    };
    let outcome = {
        let mut s = lock(state);
        match core_dispatch(&mut s, req, route) {
            Ok(o) => o,
            Err(resp) => Outcome::Done(resp),
        }
    };
    match outcome {
        Outcome::Done(resp) => resp,
        Outcome::Sse(steps, config) => event_stream(steps, config),
        Outcome::AuthInfo {
            provider,
            callback_url,
            secure,
        } => match discover(&provider).await {
            Ok((authorize, _)) => auth_info_answer(&provider, &authorize, &callback_url, secure),
            Err(e) => json_resp(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"msg": format!("Failed to discover provider metadata: {e}")}),
            ),
        },
        Outcome::Callback {
            provider,
            code,
            nonce,
            callback_url,
            sign_in,
        } => match exchange_code(&provider, &code, &nonce, &callback_url).await {
            Ok(claims) => {
                let mut s = lock(state);
                let username = openid_user(&mut s, &claims);
                login_answer(&mut s, &username, sign_in, true)
            }
            Err(e) => json_resp(StatusCode::UNAUTHORIZED, &json!({"msg": e})),
        },
    }
}

fn msg(status: StatusCode, m: &str) -> Resp {
    json_resp(status, &json!({"msg": m}))
}

/// Defguard's session extractor: an API token first (any `Authorization` header must be a
/// valid Bearer token), then the session cookie.
fn authenticate(s: &CoreState, req: &Req) -> Result<Option<Who>, Resp> {
    if let Some(auth) = req.headers.get(http::header::AUTHORIZATION) {
        let value = auth.to_str().unwrap_or("");
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
                token.trim()
            }
            _ => return Err(msg(StatusCode::UNAUTHORIZED, "Invalid auth header")),
        };
        return match s.api_tokens.get(token).and_then(|u| s.user(u)) {
            Some(u) => Ok(Some(Who {
                username: u.username.clone(),
                admin: u.admin,
                token: true,
            })),
            None => Err(msg(StatusCode::UNAUTHORIZED, "Invalid API token")),
        };
    }
    if let Some(id) = req.cookie(SESSION_COOKIE) {
        return match s.sessions.get(&id).and_then(|u| s.user(u)) {
            Some(u) => Ok(Some(Who {
                username: u.username.clone(),
                admin: u.admin,
                token: false,
            })),
            None => Err(msg(StatusCode::UNAUTHORIZED, "Session not found")),
        };
    }
    Ok(None)
}

/// The signed-in caller of a Session or Admin route, or Defguard's refusal.
fn session_info(s: &CoreState, req: &Req, admin: bool) -> Result<Who, Resp> {
    let who = authenticate(s, req)?
        .ok_or_else(|| msg(StatusCode::UNAUTHORIZED, "Session is required"))?;
    if !who.admin && who.token {
        return Err(msg(
            StatusCode::FORBIDDEN,
            "Token authentication is not allowed for normal users",
        ));
    }
    if s.user(&who.username).is_some_and(|u| !u.active) {
        return Err(msg(StatusCode::FORBIDDEN, "user is disabled"));
    }
    if admin && !who.admin {
        return Err(msg(StatusCode::FORBIDDEN, "access denied"));
    }
    Ok(who)
}

/// Defguard's `user_for_admin_or_self`.
fn admin_or_self<'a>(s: &'a CoreState, who: &Who, username: &str) -> Result<&'a DgUser, Resp> {
    if who.username != username && !who.admin {
        return Err(msg(StatusCode::FORBIDDEN, "requires privileged access"));
    }
    s.user(username)
        .ok_or_else(|| msg(StatusCode::NOT_FOUND, &format!("user {username} not found")))
}

fn device_for<'a>(s: &'a CoreState, who: &Who, id: &str) -> Result<&'a Device, Resp> {
    let d = id
        .parse::<i64>()
        .ok()
        .and_then(|id| s.devices.iter().find(|d| d.id == id))
        .ok_or_else(|| msg(StatusCode::NOT_FOUND, &format!("device id {id} not found")))?;
    if d.username != who.username && !who.admin {
        return Err(msg(StatusCode::FORBIDDEN, "requires privileged access"));
    }
    Ok(d)
}

fn wireguard_config(d: &Device) -> String {
    format!(
        "[Interface]\nPrivateKey = YOUR_PRIVATE_KEY\nAddress = 10.1.0.{}/24\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.1.0.0/24\nEndpoint = vpn.test:51820\nPersistentKeepalive = 25\n",
        d.id + 1,
        EXAMPLE_PUBKEY
    )
}

fn core_dispatch(s: &mut CoreState, req: &Req, route: &'static RouteCase) -> Result<Outcome, Resp> {
    let params = path_params(route.pattern, &req.path);
    let p0 = params.first().cloned().unwrap_or_default();
    // Defguard's authorisation extractors come first.
    let who = match route.access {
        Access::Session => Some(session_info(s, req, false)?),
        Access::Admin => Some(session_info(s, req, true)?),
        _ => None,
    };
    // The event context (and the login's typed header) want a User-Agent on writes.
    if who.is_some() && !matches!(req.method, Method::GET | Method::HEAD) && !req.user_agent() {
        return Err(msg(StatusCode::BAD_REQUEST, "Missing UserAgent header"));
    }
    // The sign-in handlers take a typed User-Agent header before their body.
    if route.method == "POST"
        && matches!(route.pattern, "/api/v1/auth" | "/api/v1/openid/callback")
        && !req.user_agent()
    {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Header of type `user-agent` was missing",
        ));
    }
    // Then the body extractor, shaped like the example body.
    let body = match (route.body, route.content_type()) {
        (Some(example), Some("application/json")) => json_extract(req, example)?,
        _ => Value::Null,
    };
    let st = status_of(route.status);
    let out: Outcome = match (route.method, route.pattern) {
        // --- Web UI -------------------------------------------------------------------
        ("GET", "/") | ("GET", "/{*path}") => html(CORE_SHELL).into(),
        ("GET", "/assets/{*path}") | ("GET", "/fonts/{*path}") | ("GET", "/svg/{*path}") => {
            static_file(&req.path, CORE_FILES).into()
        }
        ("GET", "/api-docs/openapi.json") | ("GET", "/api/v1/api-docs") => json_resp(
            st,
            &json!({"openapi": "3.1.0", "info": {"title": "Defguard", "version": CORE_VERSION}, "paths": {}}),
        )
        .into(),
        // --- Health, info ---------------------------------------------------------------
        ("GET", "/api/v1/health") => text(StatusCode::OK, "alive").into(),
        ("GET", "/api/v1/info") => json_resp(
            st,
            &json!({
                "version": CORE_VERSION,
                "network_present": true,
                "smtp_enabled": false,
                "external_openid_enabled": s.openid.is_some(),
                "ldap_info": {"enabled": false, "ad": false},
                "license_info": {"enterprise": true, "any_limit_exceeded": false, "is_enterprise_free": true},
            }),
        )
        .into(),
        ("GET", "/api/v1/session-info") => {
            let who = authenticate(s, req).ok().flatten();
            json_resp(
                st,
                &json!({
                    "authorized": who.is_some(),
                    "is_admin": who.as_ref().is_some_and(|w| w.admin),
                    "active_wizard": null,
                }),
            )
            .into()
        }
        ("GET", "/api/v1/settings_essentials") => {
            let keys = [
                "instance_name",
                "main_logo_url",
                "nav_logo_url",
                "wireguard_enabled",
                "webhooks_enabled",
                "worker_enabled",
                "openid_enabled",
            ];
            let mut m = Map::new();
            for k in keys {
                m.insert(k.to_owned(), s.settings[k].clone());
            }
            json_resp(st, &Value::Object(m)).into()
        }
        ("GET", "/api/v1/ssh_authorized_keys") => {
            let keys: Vec<String> = s
                .users
                .iter()
                .filter(|u| req.q("username").is_none_or(|n| n == u.username))
                .flat_map(|u| u.ssh_keys.clone())
                .collect();
            let mut t = keys.join("\n");
            if !t.is_empty() {
                t.push('\n');
            }
            text(StatusCode::OK, &t).into()
        }
        ("GET", "/api/v1/forward_auth") => {
            let valid = req
                .cookie(SESSION_COOKIE)
                .is_some_and(|id| s.sessions.contains_key(&id));
            if valid {
                empty(StatusCode::OK).into()
            } else {
                let mut location = format!("{}/auth/login", s.url());
                if let Some(host) = req.header("x-forwarded-host") {
                    let proto = req.header("x-forwarded-proto").unwrap_or("http");
                    let uri = req.header("x-forwarded-uri").unwrap_or("/");
                    location.push_str(&format!("?r={proto}://{host}{uri}"));
                }
                redirect(StatusCode::TEMPORARY_REDIRECT, &location).into()
            }
        }
        // --- Sign-in ----------------------------------------------------------------------
        ("POST", "/api/v1/auth") => {
            let login = body["username"].as_str().unwrap_or("");
            let password = body["password"].as_str().unwrap_or("");
            let user = s
                .user_by_login(login)
                .filter(|u| u.password == password && u.active)
                .map(|u| u.username.clone());
            match user {
                Some(username) => {
                    login_answer(s, &username, req.cookie(SIGN_IN_COOKIE), false).into()
                }
                None => json_resp(StatusCode::UNAUTHORIZED, &Value::Null).into(),
            }
        }
        ("POST", "/api/v1/auth/logout") => {
            if let Some(id) = req.cookie(SESSION_COOKIE) {
                s.sessions.remove(&id);
            }
            let mut resp = json_resp(StatusCode::OK, &Value::Null);
            add_cookie(&mut resp, &removal(SESSION_COOKIE, Some("/")));
            add_cookie(&mut resp, &removal(SIGN_IN_COOKIE, Some("/")));
            resp.into()
        }
        ("POST", "/api/v1/auth/totp/init") => {
            json_resp(st, &json!({"secret": "JBSWY3DPEHPK3PXP"})).into()
        }
        ("POST", "/api/v1/auth/webauthn/init") | ("POST", "/api/v1/auth/webauthn/start") => {
            json_resp(st, &json!({"publicKey": {"challenge": random_token()}})).into()
        }
        ("POST", "/api/v1/auth/totp")
        | ("POST", "/api/v1/auth/email")
        | ("POST", "/api/v1/auth/webauthn/finish") => {
            json_resp(st, &json!({"codes": ["recovery-code"]})).into()
        }
        ("POST", "/api/v1/auth/totp/verify")
        | ("POST", "/api/v1/auth/email/verify")
        | ("POST", "/api/v1/auth/recovery")
        | ("POST", "/api/v1/auth/webauthn") => {
            let who = who.clone().expect("signed in");
            let u = s.user(&who.username).expect("user");
            json_resp(st, &json!({"user": s.user_info(u), "url": null})).into()
        }
        // --- Users ------------------------------------------------------------------------
        ("GET", "/api/v1/user") => {
            let list: Vec<Value> = s.users.iter().map(|u| s.user_info(u)).collect();
            json_resp(st, &Value::Array(list)).into()
        }
        ("POST", "/api/v1/user") => {
            let username = body["username"].as_str().unwrap_or("");
            if s.user(username).is_some() {
                return Err(msg(StatusCode::BAD_REQUEST, "User already exists"));
            }
            let mut u = DgUser::new(100, username, false);
            u.email = body["email"].as_str().unwrap_or("").to_owned();
            json_resp(st, &s.user_info(&u)).into()
        }
        ("POST", "/api/v1/user/available") => {
            let username = body["username"].as_str().unwrap_or("");
            if s.user(username).is_some() {
                json_resp(StatusCode::BAD_REQUEST, &Value::Null).into()
            } else {
                json_resp(st, &Value::Null).into()
            }
        }
        ("PUT", "/api/v1/user/change_password") => {
            let who = who.clone().expect("signed in");
            let old = body["old_password"].as_str().unwrap_or("");
            let new = body["new_password"].as_str().unwrap_or("").to_owned();
            let user = s.users.iter_mut().find(|u| u.username == who.username);
            match user {
                Some(u) if u.password == old => {
                    u.password = new;
                    json_resp(st, &Value::Null).into()
                }
                _ => msg(StatusCode::BAD_REQUEST, "Incorrect password").into(),
            }
        }
        ("GET", "/api/v1/me") => {
            let who = who.clone().expect("signed in");
            let u = s.user(&who.username).expect("user");
            json_resp(st, &s.user_info(u)).into()
        }
        ("PUT", "/api/v1/user/{username}/password") => {
            admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            let new = body["new_password"].as_str().unwrap_or("").to_owned();
            if let Some(u) = s.users.iter_mut().find(|u| u.username == p0) {
                u.password = new;
            }
            json_resp(st, &Value::Null).into()
        }
        ("GET", "/api/v1/user/{username}") => {
            let u = admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            json_resp(st, &s.user_info(u)).into()
        }
        ("POST", "/api/v1/user/{username}/start_enrollment")
        | ("POST", "/api/v1/user/{username}/start_desktop") => {
            admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            let url = s.settings["public_proxy_url"].as_str().unwrap_or("").to_owned();
            json_resp(
                st,
                &json!({"enrollment_token": random_token(), "enrollment_url": url}),
            )
            .into()
        }
        ("GET", "/api/v1/user/{username}/auth_key") => {
            let u = admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            let keys: Vec<Value> = u
                .ssh_keys
                .iter()
                .enumerate()
                .map(|(i, k)| json!({"id": i + 1, "name": "key", "key_type": "ssh", "key": k}))
                .collect();
            json_resp(st, &Value::Array(keys)).into()
        }
        ("GET", "/api/v1/device/user/{username}") => {
            admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            let list: Vec<Value> = s
                .devices
                .iter()
                .filter(|d| d.username == p0)
                .map(device_json)
                .collect();
            json_resp(st, &Value::Array(list)).into()
        }
        // --- Settings ---------------------------------------------------------------------
        ("GET", "/api/v1/settings") => json_resp(st, &s.settings).into(),
        ("PUT", "/api/v1/settings") | ("PATCH", "/api/v1/settings") => {
            if let (Some(new), Some(cur)) = (body.as_object(), s.settings.as_object_mut()) {
                for (k, v) in new {
                    cur.insert(k.clone(), v.clone());
                }
            }
            json_resp(st, &Value::Null).into()
        }
        ("GET", "/api/v1/settings_enterprise") => json_resp(
            st,
            &json!({"admin_device_management": false, "disable_all_traffic": false, "only_client_activation": false}),
        )
        .into(),
        // --- External OpenID ------------------------------------------------------------------
        ("GET", "/api/v1/openid/auth_info") => {
            let Some(provider) = s.openid.clone() else {
                return Err(msg(StatusCode::NOT_FOUND, "OpenID provider not set"));
            };
            let callback_url = format!("{}/auth/callback", s.url());
            match &provider {
                OpenIdProvider::Simulated { authorize_url, .. } => {
                    auth_info_answer(&provider, authorize_url, &callback_url, s.secure()).into()
                }
                OpenIdProvider::Issuer { .. } => Outcome::AuthInfo {
                    provider,
                    callback_url,
                    secure: s.secure(),
                },
            }
        }
        ("POST", "/api/v1/openid/callback") => {
            let Some(provider) = s.openid.clone() else {
                return Err(msg(StatusCode::NOT_FOUND, "OpenID provider not set"));
            };
            let nonce = req
                .cookie(NONCE_COOKIE)
                .ok_or_else(|| msg(StatusCode::UNAUTHORIZED, "Nonce cookie not found"))?;
            let csrf = req
                .cookie(CSRF_COOKIE)
                .ok_or_else(|| msg(StatusCode::BAD_REQUEST, "CSRF cookie not found"))?;
            if body["state"].as_str() != Some(csrf.as_str()) {
                return Err(msg(StatusCode::UNAUTHORIZED, "CSRF token mismatch"));
            }
            let code = body["code"].as_str().unwrap_or("").to_owned();
            let sign_in = req.cookie(SIGN_IN_COOKIE);
            match &provider {
                OpenIdProvider::Simulated { user, .. } => {
                    let username = user.clone();
                    login_answer(s, &username, sign_in, true).into()
                }
                OpenIdProvider::Issuer { .. } => Outcome::Callback {
                    provider,
                    code,
                    nonce,
                    callback_url: format!("{}/auth/callback", s.url()),
                    sign_in,
                },
            }
        }
        // --- Defguard as an OpenID provider -------------------------------------------------
        ("GET", "/api/v1/oauth/discovery/keys") => json_resp(st, &json!({"keys": []})).into(),
        ("GET", "/.well-known/openid-configuration") => {
            let url = s.url();
            json_resp(
                st,
                &json!({
                    "issuer": format!("{url}/"),
                    "authorization_endpoint": format!("{url}/api/v1/oauth/authorize"),
                    "token_endpoint": format!("{url}/api/v1/oauth/token"),
                    "userinfo_endpoint": format!("{url}/api/v1/oauth/userinfo"),
                    "jwks_uri": format!("{url}/api/v1/oauth/discovery/keys"),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["HS256", "RS256"],
                    "scopes_supported": ["openid", "profile", "email", "phone", "groups"],
                    "claims_supported": ["iss", "sub", "aud", "exp", "iat", "name", "given_name", "family_name", "email", "phone_number", "groups"],
                    "grant_types_supported": ["authorization_code", "refresh_token"],
                }),
            )
            .into()
        }
        ("GET", "/api/v1/oauth") => {
            let list: Vec<Value> = s.oauth_clients.iter().map(|c| client_json(c, true)).collect();
            json_resp(st, &Value::Array(list)).into()
        }
        ("GET", "/api/v1/oauth/{client_id}") => match s.client(&p0) {
            Some(c) => json_resp(st, &client_json(c, who.as_ref().is_some_and(|w| w.admin))).into(),
            None => json_resp(StatusCode::NOT_FOUND, &Value::Null).into(),
        },
        ("GET", "/api/v1/oauth/authorize") => authorize(s, req, None)?.into(),
        ("POST", "/api/v1/oauth/authorize") => authorize(s, req, who.clone())?.into(),
        ("POST", "/api/v1/oauth/token") => token_endpoint(s, req)?.into(),
        ("GET", "/api/v1/oauth/userinfo") => userinfo(s, req)?.into(),
        ("POST", "/api/v1/license/check") => msg(StatusCode::BAD_REQUEST, "Invalid license").into(),
        // --- Devices ------------------------------------------------------------------------
        ("POST", "/api/v1/device/{device_id}") => {
            // Defguard's FIXME: this segment is a username.
            admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            let name = body["name"].as_str().unwrap_or("").to_owned();
            let pubkey = body["wireguard_pubkey"].as_str().unwrap_or("").to_owned();
            if !valid_wireguard_key(&pubkey) {
                return Err(json_resp(StatusCode::BAD_REQUEST, &Value::Null));
            }
            let id = s.devices.iter().map(|d| d.id).max().unwrap_or(0) + 1;
            let device = Device {
                id,
                username: p0.clone(),
                name,
                pubkey,
            };
            let config = wireguard_config(&device);
            let answer = json!({
                "device": device_json(&device),
                "configs": [{"network_id": 1, "network_name": "office", "config": config}],
            });
            s.devices.push(device);
            json_resp(st, &answer).into()
        }
        ("GET", "/api/v1/device/{device_id}") => {
            let d = device_for(s, who.as_ref().expect("signed in"), &p0)?;
            json_resp(st, &device_json(d)).into()
        }
        ("PUT", "/api/v1/device/{device_id}") | ("DELETE", "/api/v1/device/{device_id}") => {
            device_for(s, who.as_ref().expect("signed in"), &p0)?;
            json_resp(st, &Value::Null).into()
        }
        ("GET", "/api/v1/device/{device_id}/config") => {
            let d = device_for(s, who.as_ref().expect("signed in"), &p0)?;
            json_resp(
                st,
                &json!([{"network_id": 1, "network_name": "office", "config": wireguard_config(d)}]),
            )
            .into()
        }
        ("GET", "/api/v1/network/{network_id}/device/{device_id}/config") => {
            let id = params.get(1).cloned().unwrap_or_default();
            let d = device_for(s, who.as_ref().expect("signed in"), &id)?;
            text(st, &wireguard_config(d)).into()
        }
        // --- Workers ------------------------------------------------------------------------
        ("POST", "/api/v1/worker/job") => {
            let username = body["username"].as_str().unwrap_or("").to_owned();
            admin_or_self(s, who.as_ref().expect("signed in"), &username)?;
            json_resp(st, &json!({"id": 1})).into()
        }
        ("GET", "/api/v1/worker/token") => json_resp(st, &json!({"token": random_token()})).into(),
        ("GET", "/api/v1/worker/{id}") => json_resp(
            st,
            &json!({"id": p0, "success": true, "serial": "0001", "error": "", "pgp_key": "", "pgp_cert_id": "", "ssh_key": ""}),
        )
        .into(),
        ("GET", "/api/v1/wizard") => {
            json_resp(st, &json!({"active_wizard": "none", "completed": true})).into()
        }
        ("GET", "/api/v1/version") => json_resp(st, &json!({"version": CORE_VERSION})).into(),
        // --- Server-sent events -------------------------------------------------------------
        ("GET", "/api/v1/proxy/setup/stream") | ("GET", "/api/v1/network/{network_id}/gateways/setup") => {
            Outcome::Sse(setup_events(&SETUP_STEPS), s.sse.clone())
        }
        ("GET", "/api/v1/proxy/acme/stream") => Outcome::Sse(acme_events(), s.sse.clone()),
        // --- Everything else: an answer of the right status and shape, no state change -------
        _ => {
            // Routes about one user are for that user or an admin, as in Defguard.
            if route.pattern.contains("{username}") {
                admin_or_self(s, who.as_ref().expect("signed in"), &p0)?;
            }
            generic(route, &p0).into()
        }
    };
    Ok(out)
}

fn generic(route: &RouteCase, p0: &str) -> Resp {
    let st = status_of(route.status);
    if route.method == "GET" {
        if route.pattern.ends_with('}') {
            json_resp(st, &json!({"id": p0}))
        } else if route.pattern.ends_with("/count") {
            json_resp(st, &json!({"count": 0}))
        } else {
            json_resp(st, &json!([]))
        }
    } else if route.status == 201 {
        json_resp(st, &json!({"id": 1}))
    } else {
        json_resp(st, &Value::Null)
    }
}

fn client_json(c: &OAuthClient, full: bool) -> Value {
    if full {
        json!({
            "id": c.id,
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "name": c.name,
            "redirect_uri": c.redirect_uris,
            "scope": c.scope,
            "enabled": c.enabled,
        })
    } else {
        json!({"client_id": c.client_id, "name": c.name, "scope": c.scope})
    }
}

fn setup_events(steps: &[&str]) -> Vec<String> {
    steps
        .iter()
        .map(|step| {
            json!({"step": step, "version": CORE_VERSION, "message": null, "logs": null, "error": false})
                .to_string()
        })
        .collect()
}

fn acme_events() -> Vec<String> {
    ACME_STEPS
        .iter()
        .map(|step| {
            json!({"step": step, "error": false, "message": null, "logs": null}).to_string()
        })
        .collect()
}

/// A successful sign-in: a session, its cookie, and the pending OAuth URL if any.
fn login_answer(s: &mut CoreState, username: &str, sign_in: Option<String>, openid: bool) -> Resp {
    let id = s.new_session(username);
    s.logins += 1;
    let url = sign_in.as_deref().and_then(|v| {
        URL_SAFE_NO_PAD
            .decode(v)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    });
    let info = s
        .user(username)
        .map(|u| s.user_info(u))
        .unwrap_or(Value::Null);
    let mut resp = json_resp(StatusCode::OK, &json!({"user": info, "url": url}));
    add_cookie(&mut resp, &s.session_cookie(&id));
    if sign_in.is_some() {
        add_cookie(&mut resp, &removal(SIGN_IN_COOKIE, Some("/")));
    }
    if openid {
        add_cookie(
            &mut resp,
            &removal(NONCE_COOKIE, Some("/api/v1/openid/callback")),
        );
        add_cookie(
            &mut resp,
            &removal(CSRF_COOKIE, Some("/api/v1/openid/callback")),
        );
    }
    resp
}

/// `auth_info`'s answer: the provider's authorisation URL, and the csrf and nonce cookies.
fn auth_info_answer(
    provider: &OpenIdProvider,
    authorize: &str,
    callback_url: &str,
    secure: bool,
) -> Resp {
    let client_id = match provider {
        OpenIdProvider::Simulated { client_id, .. } | OpenIdProvider::Issuer { client_id, .. } => {
            client_id.as_str()
        }
    };
    let csrf = random_token();
    let nonce = random_token();
    let url = with_params(
        authorize,
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("state", &csrf),
            ("redirect_uri", callback_url),
            ("scope", "openid email profile"),
            ("nonce", &nonce),
        ],
    );
    let mut resp = json_resp(
        StatusCode::OK,
        &json!({"url": url, "button_display_name": provider.display_name()}),
    );
    let attrs = format!(
        "; HttpOnly; SameSite=Strict{}; Path=/api/v1/openid/callback; Max-Age=600",
        if secure { "; Secure" } else { "" }
    );
    add_cookie(&mut resp, &format!("{NONCE_COOKIE}={nonce}{attrs}"));
    add_cookie(&mut resp, &format!("{CSRF_COOKIE}={csrf}{attrs}"));
    resp
}

/// The provider's authorisation and token endpoints.
async fn discover(provider: &OpenIdProvider) -> Result<(String, String), String> {
    match provider {
        OpenIdProvider::Simulated { authorize_url, .. } => {
            Ok((authorize_url.clone(), String::new()))
        }
        OpenIdProvider::Issuer { issuer, .. } => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let (status, body) = http_call(Method::GET, &url, &[], None).await?;
            if status != 200 {
                return Err(format!("{url}: status {status}"));
            }
            let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
            let get = |k: &str| {
                doc[k]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{url}: no {k}"))
            };
            Ok((get("authorization_endpoint")?, get("token_endpoint")?))
        }
    }
}

/// Exchanges a code at the provider; the ID token's claims.
async fn exchange_code(
    provider: &OpenIdProvider,
    code: &str,
    nonce: &str,
    callback_url: &str,
) -> Result<Value, String> {
    let OpenIdProvider::Issuer {
        client_id,
        client_secret,
        ..
    } = provider
    else {
        return Err("not a real provider".to_owned());
    };
    let (_, token_endpoint) = discover(provider).await?;
    let basic = STANDARD.encode(format!("{}:{}", encode(client_id), encode(client_secret)));
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}",
        encode(code),
        encode(callback_url)
    );
    let (status, body) = http_call(
        Method::POST,
        &token_endpoint,
        &[
            ("authorization", format!("Basic {basic}")),
            ("accept", "application/json".to_owned()),
        ],
        Some(("application/x-www-form-urlencoded", form)),
    )
    .await?;
    if status != 200 {
        return Err(format!(
            "token exchange failed: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let tokens: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let claims = tokens["id_token"]
        .as_str()
        .and_then(jwt_claims)
        .ok_or_else(|| "no ID token".to_owned())?;
    if let Some(n) = claims["nonce"].as_str() {
        if n != nonce {
            return Err("nonce mismatch".to_owned());
        }
    }
    Ok(claims)
}

/// The Defguard user of a provider's claims: by email, then preferred_username; created.
fn openid_user(s: &mut CoreState, claims: &Value) -> String {
    let email = claims["email"].as_str().unwrap_or("");
    if let Some(u) = s
        .users
        .iter()
        .find(|u| !email.is_empty() && u.email.eq_ignore_ascii_case(email))
    {
        return u.username.clone();
    }
    let preferred = claims["preferred_username"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| email.split('@').next().unwrap_or("").to_owned());
    let username: String = preferred
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let username = if username.is_empty() {
        claims["sub"].as_str().unwrap_or("openid-user").to_owned()
    } else {
        username
    };
    if s.user(&username).is_none() {
        let id = s.users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
        let mut u = DgUser::new(id, &username, false);
        u.password = random_token();
        if !email.is_empty() {
            u.email = email.to_owned();
        }
        s.users.push(u);
    }
    username
}

/// `GET` and `POST /api/v1/oauth/authorize` (`who` set for the POST, already signed in).
fn authorize(s: &mut CoreState, req: &Req, who: Option<Who>) -> Result<Resp, Resp> {
    query_extract(
        req,
        &["scope", "response_type", "client_id", "redirect_uri"],
    )?;
    let post = who.is_some();
    let allow = match req.q("allow") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Failed to deserialize query string: provided string was not `true` or `false`",
            ))
        }
    };
    let client_id = req.q("client_id").unwrap_or("");
    let redirect_uri = req.q("redirect_uri").unwrap_or("").to_owned();
    let state = req.q("state").map(str::to_owned);
    // The request as Defguard re-serialises it (without `allow`).
    let request_query: Vec<(&str, &str)> = req
        .query
        .iter()
        .filter(|(k, _)| k != "allow")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut redirect_allowed = false;
    let error: &str = match s.client(client_id).cloned() {
        None => "unauthorized_client",
        Some(client) => {
            redirect_allowed = client.allows_redirect(&redirect_uri);
            let valid = validate_authorize(req, &client);
            if !client.enabled {
                "unauthorized_client"
            } else if let Err(e) = valid {
                e
            } else if post {
                let who = who.expect("signed in");
                if allow {
                    s.authorized_apps
                        .insert((who.username.clone(), client.client_id.clone()));
                    let location = code_redirect(s, req, &who.username);
                    let mut resp = redirect(StatusCode::FOUND, &location);
                    if req.cookie(SIGN_IN_COOKIE).is_some() {
                        add_cookie(&mut resp, &removal(SIGN_IN_COOKIE, Some("/")));
                    }
                    return Ok(resp);
                }
                "access_denied"
            } else if req.q("prompt") == Some("consent") {
                return Ok(redirect(
                    StatusCode::FOUND,
                    &with_params("/consent", &request_query),
                ));
            } else if req.q("prompt") == Some("none") {
                "login_required"
            } else {
                let session = req
                    .cookie(SESSION_COOKIE)
                    .and_then(|id| s.sessions.get(&id).cloned());
                match session {
                    None => {
                        let pending = with_params(
                            &format!("{}/api/v1/oauth/authorize", s.url()),
                            &request_query,
                        );
                        let mut resp = redirect(StatusCode::FOUND, "/auth/login");
                        add_cookie(
                            &mut resp,
                            &format!(
                                "{SIGN_IN_COOKIE}={}; HttpOnly; SameSite=Lax{}; Path=/; Max-Age=600",
                                URL_SAFE_NO_PAD.encode(pending),
                                if s.secure() { "; Secure" } else { "" }
                            ),
                        );
                        return Ok(resp);
                    }
                    Some(username) => {
                        if s.authorized_apps
                            .contains(&(username.clone(), client.client_id.clone()))
                        {
                            let location = code_redirect(s, req, &username);
                            let mut resp = redirect(StatusCode::FOUND, &location);
                            if req.cookie(SIGN_IN_COOKIE).is_some() {
                                add_cookie(&mut resp, &removal(SIGN_IN_COOKIE, Some("/")));
                            }
                            return Ok(resp);
                        }
                        return Ok(redirect(
                            StatusCode::FOUND,
                            &with_params("/consent", &request_query),
                        ));
                    }
                }
            }
        }
    };
    // Errors go back to the client only when its redirect URI is registered (DG25-17).
    let base = if redirect_allowed {
        redirect_uri
    } else {
        format!("{}/", s.url())
    };
    let mut params = vec![("error", error)];
    if let Some(st) = state.as_deref() {
        params.push(("state", st));
    }
    Ok(redirect(StatusCode::FOUND, &with_params(&base, &params)))
}

fn validate_authorize(req: &Req, client: &OAuthClient) -> Result<(), &'static str> {
    let scope = req.q("scope").unwrap_or("");
    if scope
        .split(' ')
        .any(|sc| !client.scope.iter().any(|c| c == sc))
    {
        return Err("invalid_scope");
    }
    if req.q("response_type") != Some("code") {
        return Err("invalid_request");
    }
    if !client.allows_redirect(req.q("redirect_uri").unwrap_or("")) {
        return Err("access_denied");
    }
    if req.q("code_challenge").is_some() && req.q("code_challenge_method") != Some("S256") {
        return Err("invalid_request");
    }
    Ok(())
}

fn code_redirect(s: &mut CoreState, req: &Req, username: &str) -> String {
    let code = random_token();
    s.codes.insert(
        code.clone(),
        AuthCode {
            username: username.to_owned(),
            client_id: req.q("client_id").unwrap_or("").to_owned(),
            redirect_uri: req.q("redirect_uri").unwrap_or("").to_owned(),
            scope: req.q("scope").unwrap_or("").to_owned(),
            nonce: req.q("nonce").map(str::to_owned),
            code_challenge: req.q("code_challenge").map(str::to_owned),
        },
    );
    let mut params = vec![("code", code.as_str())];
    if let Some(st) = req.q("state") {
        params.push(("state", st));
    }
    with_params(req.q("redirect_uri").unwrap_or(""), &params)
}

fn oauth_error(error: &str) -> Resp {
    json_resp(StatusCode::BAD_REQUEST, &json!({"error": error}))
}

/// `POST /api/v1/oauth/token`: client credentials in a Basic header or the form.
fn token_endpoint(s: &mut CoreState, req: &Req) -> Result<Resp, Resp> {
    let mut basic_client: Option<Option<OAuthClient>> = None;
    if let Some(auth) = req.header("authorization") {
        if let Some(b64) = auth.strip_prefix("Basic ") {
            let pair = STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            match pair.as_deref().and_then(|p| p.split_once(':')) {
                Some((id, secret)) => {
                    let (id, secret) = (url_decode(id), url_decode(secret));
                    basic_client =
                        Some(s.client(&id).filter(|c| c.client_secret == secret).cloned());
                }
                None => return Err(msg(StatusCode::UNAUTHORIZED, "Invalid credentials")),
            }
        }
    }
    let form = form_extract(req, &["grant_type"])?;
    let f = |k: &str| param(&form, k).map(str::to_owned);
    let client = basic_client.flatten().or_else(|| {
        let (id, secret) = (f("client_id")?, f("client_secret")?);
        s.client(&id).filter(|c| c.client_secret == secret).cloned()
    });
    match f("grant_type").as_deref() {
        Some("authorization_code") => {
            // Found codes are consumed even when the request then fails.
            if let Some(auth_code) = f("code").and_then(|c| s.codes.remove(&c)) {
                if let Some(client) = client {
                    if !client.enabled {
                        return Ok(oauth_error("unauthorized_client"));
                    }
                    let authorized = s
                        .authorized_apps
                        .contains(&(auth_code.username.clone(), client.client_id.clone()));
                    if authorized && client.client_id == auth_code.client_id {
                        let Some(redirect_uri) = f("redirect_uri") else {
                            return Ok(oauth_error("invalid_request"));
                        };
                        if redirect_uri.trim_end_matches('/')
                            != auth_code.redirect_uri.trim_end_matches('/')
                        {
                            return Ok(oauth_error("unauthorized_client"));
                        }
                        if let Some(challenge) = &auth_code.code_challenge {
                            let verifier = f("code_verifier").unwrap_or_default();
                            let digest =
                                ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
                            if URL_SAFE_NO_PAD.encode(digest.as_ref()) != *challenge {
                                return Ok(oauth_error("invalid_request"));
                            }
                        }
                        return Ok(issue_tokens(s, &client, &auth_code));
                    }
                }
            }
        }
        Some("refresh_token") => {
            let found = f("refresh_token").and_then(|r| {
                s.tokens
                    .iter()
                    .find(|(_, t)| t.refresh_token == r)
                    .map(|(k, t)| (k.clone(), t.clone()))
            });
            if let Some((old, mut token)) = found {
                s.tokens.remove(&old);
                let access = random_token();
                token.refresh_token = random_token();
                let answer = json!({"access_token": access, "token_type": "bearer", "refresh_token": token.refresh_token});
                s.tokens.insert(access, token);
                return Ok(json_resp(StatusCode::OK, &answer));
            }
        }
        _ => {}
    }
    // Defguard answers every other failure so.
    Ok(oauth_error("unsupported_grant_type"))
}

fn issue_tokens(s: &mut CoreState, client: &OAuthClient, code: &AuthCode) -> Resp {
    // A new token replaces the previous one of the same user and client.
    s.tokens
        .retain(|_, t| !(t.username == code.username && t.client_id == client.client_id));
    let access = random_token();
    let token = OAuthToken {
        username: code.username.clone(),
        client_id: client.client_id.clone(),
        scope: code.scope.clone(),
        refresh_token: random_token(),
    };
    let mut answer = json!({
        "access_token": access,
        "token_type": "bearer",
        "refresh_token": token.refresh_token,
    });
    if code.scope.split(' ').any(|sc| sc == "openid") {
        let now = unix_now();
        let mut claims = user_claims(s, &code.username, client, &code.scope);
        claims["iss"] = format!("{}/", s.url()).into();
        claims["aud"] = json!([client.client_id]);
        claims["iat"] = now.into();
        claims["exp"] = (now + 7 * 86_400).into();
        if let Some(n) = &code.nonce {
            claims["nonce"] = n.clone().into();
        }
        answer["id_token"] = sign_hs256(&claims, client.client_secret.as_bytes()).into();
    }
    s.tokens.insert(access, token);
    json_resp(StatusCode::OK, &answer)
}

/// The standard claims of a user for the scopes the client may have.
fn user_claims(s: &CoreState, username: &str, client: &OAuthClient, scope: &str) -> Value {
    let scopes: Vec<&str> = scope
        .split_whitespace()
        .filter(|sc| client.scope.iter().any(|c| c == sc))
        .collect();
    let mut c = json!({"sub": username});
    if let Some(u) = s.user(username) {
        if scopes.contains(&"email") {
            c["email"] = u.email.clone().into();
        }
        if scopes.contains(&"profile") {
            c["family_name"] = u.last_name.clone().into();
            c["given_name"] = u.first_name.clone().into();
            c["name"] = format!("{} {}", u.first_name, u.last_name).into();
            c["preferred_username"] = u.username.clone().into();
        }
        if scopes.contains(&"groups") {
            c["groups"] = json!(if u.admin { vec!["admin"] } else { Vec::new() });
        }
    }
    c
}

fn userinfo(s: &CoreState, req: &Req) -> Result<Resp, Resp> {
    let token = req
        .header("authorization")
        .filter(|v| v.to_ascii_lowercase().starts_with("bearer "))
        .and_then(|v| v.get(7..))
        .ok_or_else(|| msg(StatusCode::UNAUTHORIZED, "Invalid session"))?;
    let t = s
        .tokens
        .get(token)
        .ok_or_else(|| msg(StatusCode::UNAUTHORIZED, "Invalid token"))?;
    let client = s
        .client(&t.client_id)
        .filter(|c| c.enabled)
        .ok_or_else(|| msg(StatusCode::UNAUTHORIZED, "OAuth2 client is disabled"))?;
    Ok(json_resp(
        StatusCode::OK,
        &user_claims(s, &t.username, client, &t.scope),
    ))
}

// ---------------------------------------------------------------------------------------
// Core: the web UI
// ---------------------------------------------------------------------------------------

const LOGO_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24"><rect width="24" height="24" rx="4" fill="#0c8ce0"/><path d="M6 12l4 4 8-8" stroke="#fff" stroke-width="2" fill="none"/></svg>"##;

/// Static files of core's web UI: (path, content type, body).
const CORE_FILES: &[(&str, &str, &str)] = &[
    (
        "/assets/index.js",
        "text/javascript",
        "// defguard web UI bundle (stand-in): the logic is inline in index.html\n",
    ),
    (
        "/assets/index.css",
        "text/css",
        "body{font-family:sans-serif;margin:2rem}#error{color:#c00}nav a{margin-right:1rem}\n",
    ),
    ("/fonts/inter.woff2", "font/woff2", "wOF2stand-in"),
    ("/svg/logo.svg", "image/svg+xml", LOGO_SVG),
];

fn static_file(path: &str, files: &[(&str, &str, &str)]) -> Resp {
    match files.iter().find(|(p, _, _)| *p == path) {
        Some((_, ct, body)) => {
            let mut resp = respond(StatusCode::OK, ct, body.to_string());
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            resp
        }
        None => text(StatusCode::NOT_FOUND, "404 Not Found"),
    }
}

/// The web UI shell: the same document for `/` and every page path.
pub const CORE_SHELL: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>defguard</title>
<link rel="stylesheet" href="/assets/index.css">
<link rel="icon" href="/svg/logo.svg">
<script type="module" src="/assets/index.js"></script>
</head>
<body>
<header>
<img id="logo" src="/svg/logo.svg" alt="defguard" width="24" height="24">
<nav><a id="nav-me" data-spa href="/me">Profile</a><a id="nav-settings" data-spa href="/settings">Settings</a><a id="nav-users" data-spa href="/admin/users">Users</a></nav>
</header>
<main id="app" data-view="" data-ready="false"></main>
<p id="status" role="status"></p>
<p id="error" role="alert" hidden></p>
<script>
(function () {
  'use strict';
  var app = document.getElementById('app');
  function el(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function setStatus(t) { el('status').textContent = t; }
  function showError(e) {
    var p = el('error');
    p.textContent = e && e.message ? e.message : String(e);
    p.hidden = false;
  }
  function clearError() { var p = el('error'); p.textContent = ''; p.hidden = true; }
  // Like Defguard's API client: every failure is only an error to show.
  function api(method, path, body) {
    var init = { method: method, credentials: 'same-origin', headers: { 'Accept': 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch('/api/v1' + path, init).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = t; }
        if (!r.ok) {
          var err = new Error('Request failed: ' + r.status);
          err.status = r.status;
          err.data = data;
          throw err;
        }
        return data;
      });
    }, function () { throw new Error('Request failed: network error'); });
  }
  function ready() { app.setAttribute('data-ready', 'true'); }
  function failed(e) { showError(e); ready(); }
  function view(name, markup) {
    app.setAttribute('data-view', name);
    app.setAttribute('data-ready', 'false');
    app.innerHTML = markup;
    clearError();
    setStatus('');
  }
  function navigate(path) { history.pushState(null, '', path); render(); }
  function afterSignIn(d) {
    if (d && d.url) { location.replace(d.url); } else { navigate('/me'); }
  }

  function login() {
    view('login',
      '<h1>Sign in</h1><div id="openid"></div>' +
      '<form id="login-form"><label>Username <input id="username" name="username" autocomplete="username"></label>' +
      '<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>' +
      '<button id="login-submit" type="submit">Sign in</button></form>');
    el('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      clearError();
      api('POST', '/auth', { username: el('username').value, password: el('password').value })
        .then(afterSignIn, showError);
    });
    api('GET', '/openid/auth_info').then(function (d) {
      if (d && d.url) {
        el('openid').innerHTML = '<a id="openid-login" class="button" href="' + esc(d.url) + '">Sign in with ' +
          esc(d.button_display_name || 'OpenID') + '</a>';
      }
      ready();
    }, failed);
  }
  function callback() {
    view('callback', '<h1>Signing in</h1>');
    setStatus('Signing in...');
    var q = new URLSearchParams(location.search);
    api('POST', '/openid/callback', { code: q.get('code') || '', state: q.get('state') || '' })
      .then(afterSignIn, failed);
  }
  function me() {
    view('me', '<h1>Profile</h1><p>Signed in as <span id="me-username"></span> (<span id="me-role"></span>)</p>' +
      '<button id="logout" type="button">Sign out</button>');
    el('logout').addEventListener('click', function () {
      api('POST', '/auth/logout').then(function () { navigate('/auth/login'); }, showError);
    });
    api('GET', '/me').then(function (d) {
      el('me-username').textContent = d.username;
      el('me-role').textContent = d.is_admin ? 'admin' : 'user';
      ready();
    }, failed);
  }
  function settings() {
    view('settings', '<h1>Settings</h1><form id="settings-form"><label>Instance name ' +
      '<input id="instance-name" name="instance_name"></label><button id="save" type="submit">Save</button></form>');
    var current = {};
    el('settings-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      clearError();
      setStatus('');
      var body = Object.assign({}, current, { instance_name: el('instance-name').value });
      api('PUT', '/settings', body).then(function () { setStatus('Saved'); }, showError);
    });
    api('GET', '/settings').then(function (d) {
      current = d || {};
      el('instance-name').value = current.instance_name || '';
      ready();
    }, failed);
  }
  function consent() {
    var q = new URLSearchParams(location.search);
    var yes = new URLSearchParams(location.search); yes.append('allow', 'true');
    var no = new URLSearchParams(location.search); no.append('allow', 'false');
    var scopes = (q.get('scope') || '').split(' ').filter(Boolean).map(function (s) {
      return '<li>' + esc(s) + '</li>';
    }).join('');
    view('consent', '<h1><span id="client-name">' + esc(q.get('client_id') || '') + '</span> would like to:</h1>' +
      '<ul id="scopes">' + scopes + '</ul>' +
      '<form id="consent-form" method="post" action="/api/v1/oauth/authorize?' + esc(yes.toString()) + '">' +
      '<button id="accept" type="submit">Accept</button></form>' +
      '<form id="deny-form" method="post" action="/api/v1/oauth/authorize?' + esc(no.toString()) + '">' +
      '<button id="deny" type="submit">Don\'t allow</button></form>');
    api('GET', '/oauth/' + encodeURIComponent(q.get('client_id') || '')).then(function (d) {
      if (d && d.name) { el('client-name').textContent = d.name; }
      ready();
    }, failed);
  }
  function users() {
    view('users', '<h1>Users</h1><ul id="users"></ul>');
    api('GET', '/user').then(function (d) {
      el('users').innerHTML = (d || []).map(function (u) { return '<li>' + esc(u.username) + '</li>'; }).join('');
      ready();
    }, failed);
  }
  function notFound() { view('not-found', '<h1>Page not found</h1>'); ready(); }
  function render() {
    var p = location.pathname;
    if (p === '/auth/login') { return login(); }
    if (p === '/auth/callback') { return callback(); }
    if (p === '/consent') { return consent(); }
    if (p === '/settings') { return settings(); }
    if (p === '/admin/users') { return users(); }
    if (p === '/' || p === '/me') { return me(); }
    return notFound();
  }
  document.addEventListener('click', function (ev) {
    var a = ev.target && ev.target.closest ? ev.target.closest('a[data-spa]') : null;
    if (a) { ev.preventDefault(); navigate(a.getAttribute('href')); }
  });
  window.addEventListener('popstate', render);
  render();
})();
</script>
</body>
</html>
"##;

// ---------------------------------------------------------------------------------------
// Edge, the enrollment proxy
// ---------------------------------------------------------------------------------------

/// Everything Edge knows; reach it with [`Edge::with_state`].
pub struct EdgeState {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The URL browsers and clients see (default: `base`).
    pub public_url: Option<String>,
    /// Core's public URL, as the instance information reports it.
    pub core_url: String,
    /// Whether core is connected (gRPC): `/api/v1/health-grpc` and the
    /// `defguard-core-connected` header.
    pub core_connected: bool,
    /// Enrollment (and desktop activation) tokens, to the user they enrol.
    pub enrollment_tokens: HashMap<String, String>,
    /// Password-reset tokens, to their user.
    pub reset_tokens: HashMap<String, String>,
    /// The external provider's authorisation endpoint for `POST /api/v1/openid/auth_info`.
    pub openid_authorize_url: String,
    pub openid_display_name: String,
    /// The user an OpenID enrollment callback enrols.
    pub openid_user: String,
    /// How long the remote-MFA WebSocket waits before closing without an answer.
    pub remote_timeout: Duration,
    pub requests: Vec<Seen>,
    pub faults: Faults,
    /// What happened, in order: `start alice`, `activate alice`, `device alice laptop`,
    /// `reset alice`, `mfa-remote TOKEN`, ...
    pub events: Vec<String>,
    /// Private-cookie values to the token they stand for.
    cookies: HashMap<String, String>,
    /// Remote MFA sessions waiting on a WebSocket.
    remote: HashMap<String, oneshot::Sender<String>>,
    seq: u64,
}

impl EdgeState {
    fn new(base: String) -> EdgeState {
        EdgeState {
            base,
            public_url: None,
            core_url: "http://127.0.0.1:8000".to_owned(),
            core_connected: true,
            enrollment_tokens: HashMap::from([(ENROLLMENT_TOKEN.to_owned(), USER.to_owned())]),
            reset_tokens: HashMap::from([(PASSWORD_RESET_TOKEN.to_owned(), USER.to_owned())]),
            openid_authorize_url: "https://oauth.id.jumpcloud.com/oauth2/auth".to_owned(),
            openid_display_name: "JumpCloud".to_owned(),
            openid_user: USER.to_owned(),
            remote_timeout: Duration::from_secs(60),
            requests: Vec::new(),
            faults: Faults::default(),
            events: Vec::new(),
            cookies: HashMap::new(),
            remote: HashMap::new(),
            seq: 0,
        }
    }

    /// The public URL, without a trailing slash.
    pub fn url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| self.base.clone())
            .trim_end_matches('/')
            .to_owned()
    }

    /// A private cookie standing for `token`.
    fn seal(&mut self, token: &str) -> String {
        let v = format!("sealed.{}", random_token());
        self.cookies.insert(v.clone(), token.to_owned());
        v
    }

    fn unseal(&self, req: &Req, name: &str) -> Option<String> {
        req.cookie(name).and_then(|v| self.cookies.get(&v).cloned())
    }

    fn instance(&self, username: &str) -> Value {
        json!({
            "id": "3f1e5a4c-0000-4000-8000-000000000001",
            "name": "Defguard",
            "url": self.core_url,
            "proxy_url": self.url(),
            "username": username,
            "disable_all_traffic": false,
            "enterprise_enabled": true,
            "openid_display_name": self.openid_display_name,
        })
    }
}

/// A running Edge stand-in. Dropping it stops it.
pub struct Edge {
    pub addr: SocketAddr,
    state: Arc<Mutex<EdgeState>>,
    server: Mutex<Option<Server>>,
}

impl Edge {
    /// Listens on plain HTTP on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Edge {
        Edge::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `addr` with a fresh state.
    pub async fn start_on(addr: SocketAddr) -> Edge {
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(EdgeState::new(format!("http://{addr}"))));
        let server = edge_serve(listener, state.clone());
        Edge {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).requests.clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// Runs `f` on the state under its lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut EdgeState) -> R) -> R {
        f(&mut lock(&self.state))
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut lock(&self.state).faults);
    }

    /// Whether core is connected (default true).
    pub fn set_core_connected(&self, connected: bool) {
        lock(&self.state).core_connected = connected;
    }

    /// Sets the URL browsers and clients see (the gateway's).
    pub fn set_public_url(&self, url: &str) {
        lock(&self.state).public_url = Some(url.to_owned());
    }

    /// Adds an enrollment token for `username`.
    pub fn add_enrollment_token(&self, token: &str, username: &str) {
        lock(&self.state)
            .enrollment_tokens
            .insert(token.to_owned(), username.to_owned());
    }

    /// What happened so far (see [`EdgeState::events`]).
    pub fn events(&self) -> Vec<String> {
        lock(&self.state).events.clone()
    }

    /// Whether a desktop client waits on the remote-MFA WebSocket with `token`.
    pub fn remote_waiting(&self, token: &str) -> bool {
        lock(&self.state).remote.contains_key(token)
    }

    /// Stops listening and drops open connections.
    pub async fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            let _ = server.shutdown.send(true);
            server.accept.abort();
            let _ = server.accept.await;
        }
    }

    /// Listens again on the same address with the same state, after [`Edge::stop`].
    pub async fn restart(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        let listener = bind(self.addr).await;
        let server = edge_serve(listener, self.state.clone());
        *lock(&self.server) = Some(server);
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(server) = lock(&self.server).take() {
            server.stop_now();
        }
    }
}

fn edge_serve(listener: TcpListener, state: Arc<Mutex<EdgeState>>) -> Server {
    serve(listener, move |req| edge_handle(state.clone(), req))
}

async fn edge_handle(state: Arc<Mutex<EdgeState>>, req: Request<Incoming>) -> Resp {
    let mut req = match read_request(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (seq, delay, failure) = {
        let mut s = lock(&state);
        s.seq += 1;
        let seq = s.seq;
        let entry = req.log_entry(seq);
        s.requests.push(entry);
        (seq, s.faults.delay, s.faults.failure(&req.path))
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = match failure {
        Some(status) => edge_error(status_of(status), "Internal server error"),
        None => edge_route(&state, &mut req),
    };
    let mut s = lock(&state);
    let h = resp.headers_mut();
    h.insert(
        "defguard-core-connected",
        HeaderValue::from_static(if s.core_connected { "true" } else { "false" }),
    );
    if s.core_connected {
        h.insert(
            "defguard-core-version",
            HeaderValue::from_static(CORE_VERSION),
        );
    }
    h.insert("x-powered-by", HeaderValue::from_static("Defguard"));
    if let Some(e) = s.requests.iter_mut().rev().find(|e| e.seq == seq) {
        e.status = Some(resp.status().as_u16());
    }
    resp
}

fn edge_error(status: StatusCode, m: &str) -> Resp {
    json_resp(status, &json!({"error": m}))
}

fn edge_route(state: &Arc<Mutex<EdgeState>>, req: &mut Req) -> Resp {
    let route = match route_for(Component::Edge, req.method.as_str(), &req.path) {
        Ok(r) => r,
        Err(allowed) if allowed.is_empty() => return text(StatusCode::NOT_FOUND, "Not found"),
        Err(allowed) => return method_not_allowed(&allowed),
    };
    if route.stream == Stream::WebSocket {
        return remote_mfa(state, req);
    }
    let mut s = lock(state);
    match edge_dispatch(&mut s, req, route) {
        Ok(r) | Err(r) => r,
    }
}

fn edge_dispatch(s: &mut EdgeState, req: &Req, route: &'static RouteCase) -> Result<Resp, Resp> {
    let body = match (route.body, route.content_type()) {
        (Some(example), Some("application/json")) => json_extract(req, example)?,
        _ => Value::Null,
    };
    let flow_type = |body: &Value| -> Result<String, Resp> {
        match body["type"].as_str() {
            Some(t @ ("enrollment" | "mfa")) => Ok(t.to_owned()),
            other => Err(text(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "Failed to deserialize the JSON body into the target type: type: unknown variant `{}`, expected `enrollment` or `mfa`",
                    other.unwrap_or("")
                ),
            )),
        }
    };
    let enrollment = |s: &EdgeState| -> Result<String, Resp> {
        s.unseal(req, ENROLLMENT_COOKIE)
            .and_then(|t| s.enrollment_tokens.get(&t).cloned())
            .ok_or_else(|| edge_error(StatusCode::UNAUTHORIZED, "invalid token"))
    };
    let deadline = unix_now() + 86_400;
    let resp = match (route.method, route.pattern) {
        ("GET", "/") | ("GET", "/{*path}") => html(EDGE_SHELL),
        ("GET", "/assets/{*path}") | ("GET", "/fonts/{*path}") => {
            static_file(&req.path, EDGE_FILES)
        }
        ("GET", "/api/v1/health") => text(StatusCode::OK, "alive"),
        ("GET", "/api/v1/health-grpc") => {
            if s.core_connected {
                text(StatusCode::OK, "alive")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not connected to Defguard Core",
                )
            }
        }
        ("GET", "/api/v1/info") => json_resp(StatusCode::OK, &json!({"version": EDGE_VERSION})),
        // --- Enrollment ---------------------------------------------------------------------
        ("POST", "/api/v1/enrollment/start") => {
            let token = body["token"].as_str().unwrap_or("").to_owned();
            let Some(username) = s.enrollment_tokens.get(&token).cloned() else {
                return Err(edge_error(StatusCode::UNAUTHORIZED, "invalid token"));
            };
            s.events.push(format!("start {username}"));
            let sealed = s.seal(&token);
            let answer = json!({
                "admin": {"first_name": "Admin", "last_name": "Defguard", "phone_number": null, "email": "admin@example.com"},
                "user": {"first_name": "Alice", "last_name": "Tester", "login": username, "email": format!("{username}@example.com"), "phone_number": null, "is_active": false, "device_names": [], "enrolled": false, "is_admin": false},
                "deadline_timestamp": deadline,
                "final_page_content": "<p>Welcome to Defguard</p>",
                "vpn_setup_optional": false,
                "instance": s.instance(&username),
                "settings": {"vpn_setup_optional": false, "only_client_activation": false, "admin_device_management": false, "smtp_configured": false},
            });
            let mut resp = json_resp(StatusCode::OK, &answer);
            add_cookie(
                &mut resp,
                &format!(
                    "{ENROLLMENT_COOKIE}={sealed}; Expires={}",
                    http_date(deadline)
                ),
            );
            resp
        }
        ("POST", "/api/v1/enrollment/activate_user") => {
            let username = enrollment(s)?;
            s.events.push(format!("activate {username}"));
            let mut resp = empty(StatusCode::OK);
            add_cookie(&mut resp, &removal(ENROLLMENT_COOKIE, None));
            resp
        }
        ("POST", "/api/v1/enrollment/create_device")
        | ("POST", "/api/v1/enrollment/network_info") => {
            let username = enrollment(s)?;
            let pubkey = body["pubkey"].as_str().unwrap_or("").to_owned();
            if !valid_wireguard_key(&pubkey) {
                return Err(edge_error(StatusCode::BAD_REQUEST, "invalid public key"));
            }
            let name = body["name"].as_str().unwrap_or("").to_owned();
            if route.pattern.ends_with("create_device") {
                s.events.push(format!("device {username} {name}"));
            }
            let device = Device {
                id: 10,
                username: username.clone(),
                name,
                pubkey,
            };
            json_resp(
                StatusCode::OK,
                &json!({
                    "device": {"id": device.id, "name": device.name, "pubkey": device.pubkey, "user_id": 2, "created_at": 0},
                    "configs": [{"network_id": 1, "network_name": "office", "config": wireguard_config(&device), "assigned_ip": "10.1.0.11", "endpoint": "vpn.test:51820", "allowed_ips": "10.1.0.0/24", "pubkey": EXAMPLE_PUBKEY, "dns": null, "keepalive_interval": 25, "location_mfa_mode": 1}],
                    "instance": s.instance(&username),
                    "token": random_token(),
                }),
            )
        }
        ("POST", "/api/v1/enrollment/register_mobile") => {
            if req.cookie(ENROLLMENT_COOKIE).is_none() {
                return Err(edge_error(StatusCode::BAD_REQUEST, "No token present"));
            }
            let username = enrollment(s)?;
            s.events.push(format!("mobile {username}"));
            empty(StatusCode::OK)
        }
        ("POST", "/api/v1/enrollment/register-mfa/code/start") => {
            enrollment(s)?;
            json_resp(StatusCode::OK, &json!({"totp_secret": "JBSWY3DPEHPK3PXP"}))
        }
        ("POST", "/api/v1/enrollment/register-mfa/code/finish") => {
            enrollment(s)?;
            json_resp(
                StatusCode::OK,
                &json!({"recovery_codes": ["recovery-1", "recovery-2"]}),
            )
        }
        // --- Password reset -----------------------------------------------------------------
        ("POST", "/api/v1/password-reset/request") => {
            s.events.push(format!(
                "reset-request {}",
                body["email"].as_str().unwrap_or("")
            ));
            empty(StatusCode::OK)
        }
        ("POST", "/api/v1/password-reset/start") => {
            let token = body["token"].as_str().unwrap_or("").to_owned();
            if !s.reset_tokens.contains_key(&token) {
                return Err(edge_error(StatusCode::UNAUTHORIZED, "invalid token"));
            }
            let sealed = s.seal(&token);
            let mut resp = json_resp(
                StatusCode::OK,
                &json!({"deadline_timestamp": deadline, "ldap_feature_active": false}),
            );
            add_cookie(
                &mut resp,
                &format!(
                    "{PASSWORD_RESET_COOKIE}={sealed}; Expires={}",
                    http_date(deadline)
                ),
            );
            resp
        }
        ("POST", "/api/v1/password-reset/reset") => {
            let username = s
                .unseal(req, PASSWORD_RESET_COOKIE)
                .and_then(|t| s.reset_tokens.get(&t).cloned())
                .ok_or_else(|| edge_error(StatusCode::UNAUTHORIZED, "invalid token"))?;
            s.events.push(format!("reset {username}"));
            let mut resp = empty(StatusCode::OK);
            add_cookie(&mut resp, &removal(PASSWORD_RESET_COOKIE, None));
            resp
        }
        // --- Client MFA ---------------------------------------------------------------------
        ("POST", "/api/v1/client-mfa/start") => {
            json_resp(StatusCode::OK, &json!({"token": random_token()}))
        }
        ("POST", "/api/v1/client-mfa/finish") => {
            if body["token"].as_str().unwrap_or("").is_empty() {
                return Err(edge_error(StatusCode::UNAUTHORIZED, "invalid token"));
            }
            s.events.push("mfa-finish".to_owned());
            json_resp(
                StatusCode::OK,
                &json!({"preshared_key": STANDARD.encode(rand::random::<[u8; 32]>()), "token": null}),
            )
        }
        ("POST", "/api/v1/client-mfa/finish-remote") => {
            let token = body["token"].as_str().unwrap_or("").to_owned();
            if let Some(tx) = s.remote.remove(&token) {
                let _ = tx.send(STANDARD.encode(rand::random::<[u8; 32]>()));
                s.events.push(format!("mfa-remote {token}"));
            }
            json_resp(StatusCode::OK, &json!({}))
        }
        // --- External OpenID ----------------------------------------------------------------
        ("POST", "/api/v1/openid/auth_info") => {
            let flow = flow_type(&body)?;
            let callback = if flow == "mfa" {
                format!("{}/openid/mfa/callback", s.url())
            } else {
                format!("{}/openid/callback", s.url())
            };
            let csrf = body["state"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(random_token);
            let nonce = random_token();
            let url = with_params(
                &s.openid_authorize_url,
                &[
                    ("response_type", "code"),
                    ("client_id", "defguard-jumpcloud-client"),
                    ("state", &csrf),
                    ("redirect_uri", &callback),
                    ("scope", "openid email profile"),
                    ("nonce", &nonce),
                ],
            );
            let mut resp = json_resp(
                StatusCode::OK,
                &json!({"url": url, "button_display_name": s.openid_display_name}),
            );
            let attrs =
                "; HttpOnly; SameSite=Strict; Secure; Path=/api/v1/openid/callback; Max-Age=86400";
            add_cookie(&mut resp, &format!("{EDGE_NONCE_COOKIE}={nonce}{attrs}"));
            add_cookie(&mut resp, &format!("{EDGE_CSRF_COOKIE}={csrf}{attrs}"));
            resp
        }
        ("POST", "/api/v1/openid/callback") | ("POST", "/api/v1/openid/callback/mfa") => {
            let flow = flow_type(&body)?;
            let mfa = route.pattern.ends_with("/mfa");
            if mfa != (flow == "mfa") {
                return Err(edge_error(
                    StatusCode::BAD_REQUEST,
                    if mfa {
                        "Invalid flow type for MFA callback"
                    } else {
                        "Invalid flow type for OpenID enrollment callback"
                    },
                ));
            }
            req.cookie(EDGE_NONCE_COOKIE)
                .ok_or_else(|| edge_error(StatusCode::UNAUTHORIZED, "Nonce cookie not found"))?;
            let csrf = req
                .cookie(EDGE_CSRF_COOKIE)
                .ok_or_else(|| edge_error(StatusCode::UNAUTHORIZED, "CSRF cookie not found"))?;
            if body["state"].as_str() != Some(csrf.as_str()) {
                return Err(edge_error(StatusCode::UNAUTHORIZED, "CSRF token mismatch"));
            }
            let mut resp = if mfa {
                s.events.push("mfa-openid".to_owned());
                empty(StatusCode::OK)
            } else {
                let token = random_token();
                let user = s.openid_user.clone();
                s.enrollment_tokens.insert(token.clone(), user.clone());
                s.events.push(format!("openid {user}"));
                json_resp(StatusCode::OK, &json!({"url": s.url(), "token": token}))
            };
            add_cookie(&mut resp, &removal(EDGE_NONCE_COOKIE, None));
            add_cookie(&mut resp, &removal(EDGE_CSRF_COOKIE, None));
            resp
        }
        ("POST", "/api/v1/poll") => {
            if body["token"].as_str().unwrap_or("").is_empty() {
                return Err(edge_error(StatusCode::UNAUTHORIZED, "invalid token"));
            }
            json_resp(
                StatusCode::OK,
                &json!({
                    "device_config": {"configs": [{"network_id": 1, "network_name": "office", "location_mfa_mode": 1}]},
                    "instance_config": s.instance(""),
                }),
            )
        }
        _ => json_resp(status_of(route.status), &json!({})),
    };
    Ok(resp)
}

/// `GET /api/v1/client-mfa/remote?token=T`: the desktop client waits here while the user
/// approves on a phone. Sends `mfa_success` when `finish-remote` arrives for `T` or once the
/// client sends a message, then closes.
fn remote_mfa(state: &Arc<Mutex<EdgeState>>, req: &mut Req) -> Resp {
    let has = |name: &str, want: &str| {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    if !has("connection", "upgrade") {
        return text(
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'",
        );
    }
    if !has("upgrade", "websocket") {
        return text(
            StatusCode::BAD_REQUEST,
            "`Upgrade` header did not include 'websocket'",
        );
    }
    if req.header("sec-websocket-version") != Some("13") {
        return text(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Version` header did not include '13'",
        );
    }
    let Some(key) = req.header("sec-websocket-key").map(str::to_owned) else {
        return text(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header missing",
        );
    };
    if let Err(resp) = query_extract(req, &["token"]) {
        return resp;
    }
    let token = req.q("token").unwrap_or("").to_owned();
    let (tx, rx) = oneshot::channel::<String>();
    {
        let mut s = lock(state);
        if token.is_empty() || s.remote.contains_key(&token) {
            return edge_error(StatusCode::UNAUTHORIZED, "");
        }
        s.remote.insert(token.clone(), tx);
    }
    let Some(on_upgrade) = req.upgrade.take() else {
        lock(state).remote.remove(&token);
        return edge_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let state = state.clone();
    tokio::spawn(async move {
        let timeout = lock(&state).remote_timeout;
        if let Ok(upgraded) = on_upgrade.await {
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let psk = tokio::select! {
                r = rx => r.ok(),
                m = first_message(&mut ws) => m,
                _ = tokio::time::sleep(timeout) => None,
            };
            if let Some(psk) = psk {
                let payload = json!({"type": "mfa_success", "preshared_key": psk}).to_string();
                let _ = ws
                    .send(tokio_tungstenite::tungstenite::Message::text(payload))
                    .await;
            }
            let _ = ws.close(None).await;
        }
        let mut s = lock(&state);
        s.remote.remove(&token);
        s.events.push(format!("mfa-remote-closed {token}"));
    });
    let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Waits for the client's first data message; a preshared key when it comes.
async fn first_message<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(m)) if m.is_text() || m.is_binary() => {
                return Some(STANDARD.encode(rand::random::<[u8; 32]>()))
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | Some(Err(_)) | None => {
                // Nothing more will come: wait for the approval alone.
                std::future::pending::<()>().await;
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Static files of Edge's web UI.
const EDGE_FILES: &[(&str, &str, &str)] = &[
    (
        "/assets/index.js",
        "text/javascript",
        "// defguard enrollment UI bundle (stand-in): the logic is inline in index.html\n",
    ),
    (
        "/assets/index.css",
        "text/css",
        "body{font-family:sans-serif;margin:2rem}#error{color:#c00}\n",
    ),
    ("/fonts/inter.woff2", "font/woff2", "wOF2stand-in"),
];

/// Edge's web UI shell, for `/` and every page path.
pub const EDGE_SHELL: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Defguard enrollment</title>
<link rel="stylesheet" href="/assets/index.css">
<script type="module" src="/assets/index.js"></script>
</head>
<body>
<main id="app" data-view="" data-ready="false"></main>
<p id="status" role="status"></p>
<p id="error" role="alert" hidden></p>
<script>
(function () {
  'use strict';
  var app = document.getElementById('app');
  function el(id) { return document.getElementById(id); }
  function setStatus(t) { el('status').textContent = t; }
  function showError(e) { var p = el('error'); p.textContent = e && e.message ? e.message : String(e); p.hidden = false; }
  function clearError() { var p = el('error'); p.textContent = ''; p.hidden = true; }
  function api(method, path, body) {
    var init = { method: method, credentials: 'same-origin', headers: { 'Accept': 'application/json' } };
    if (body !== undefined) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    return fetch('/api/v1' + path, init).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = t; }
        if (!r.ok) { var err = new Error('Request failed: ' + r.status); err.status = r.status; err.data = data; throw err; }
        return data;
      });
    }, function () { throw new Error('Request failed: network error'); });
  }
  function ready() { app.setAttribute('data-ready', 'true'); }
  function view(name, markup) {
    app.setAttribute('data-view', name);
    app.setAttribute('data-ready', 'false');
    app.innerHTML = markup;
    clearError();
    setStatus('');
  }
  function enrollment() {
    view('enrollment', '<h1>Enrollment</h1><form id="enrollment-form"><label>Token <input id="token" name="token"></label>' +
      '<button id="start" type="submit">Start</button></form>');
    el('enrollment-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      clearError();
      api('POST', '/enrollment/start', { token: el('token').value }).then(function (d) {
        setStatus('Enrollment started for ' + (d && d.user ? d.user.login : ''));
      }, showError);
    });
    ready();
  }
  function openidCallback(flow) {
    view('openid-callback', '<h1>Signing in</h1>');
    var q = new URLSearchParams(location.search);
    api('POST', flow === 'mfa' ? '/openid/callback/mfa' : '/openid/callback',
      { code: q.get('code') || '', state: q.get('state') || '', type: flow })
      .then(function () { setStatus('Signed in'); ready(); }, function (e) { showError(e); ready(); });
  }
  function passwordReset() {
    view('password-reset', '<h1>Reset password</h1><form id="reset-form"><label>Email <input id="email" name="email"></label>' +
      '<button id="request" type="submit">Send</button></form>');
    el('reset-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      api('POST', '/password-reset/request', { email: el('email').value })
        .then(function () { setStatus('Sent'); }, showError);
    });
    ready();
  }
  var p = location.pathname;
  if (p === '/openid/callback') { openidCallback('enrollment'); }
  else if (p === '/openid/mfa/callback') { openidCallback('mfa'); }
  else if (p.indexOf('/password') === 0) { passwordReset(); }
  else if (p === '/' || p === '/enrollment') { enrollment(); }
  else { view('page', '<h1>Defguard</h1>'); ready(); }
})();
</script>
</body>
</html>
"##;
