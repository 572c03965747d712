//! The adversarial suite, one module per attack class: what attackers try against
//! authentication gateways, each case sent over real TLS to a real gateway and judged by
//! what the upstream actually received, or where the browser was sent. Every assertion can
//! fail: each class has a control case that shows the same request shape gets through when
//! it is legitimate.

mod canonical_paths;
mod exhaustion;
mod exposure;
mod id_tokens;
mod identity_headers;
mod open_redirect;
mod path_confusion;
mod session_cookies;
mod sign_in_state;
mod smuggling;

/// What every attack module uses: the support code and the helpers below.
mod prelude {
    pub(super) use std::io::Read as _;
    pub(super) use std::net::SocketAddr;
    pub(super) use std::process::{Child, Command, Stdio};
    pub(super) use std::sync::{Arc, Mutex};
    pub(super) use std::time::{Duration, Instant};

    pub(super) use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    pub(super) use base64::Engine as _;
    pub(super) use bytes::Bytes;
    pub(super) use futures_util::StreamExt as _;
    pub(super) use http::{Method, Request};
    pub(super) use http_body_util::{Full, StreamBody};
    pub(super) use hyper::body::Frame;
    pub(super) use serde_json::{json, Value};
    pub(super) use tokio::io::{AsyncReadExt, AsyncWriteExt};
    pub(super) use tokio::net::{TcpListener, TcpStream};
    pub(super) use tokio::task::JoinHandle;

    pub(super) use super::*;
    pub(super) use crate::support;
    pub(super) use crate::support::browser::{
        gateway_path, idp_get, location, query_param, set_cookies, sets_session, Browser,
    };
    pub(super) use crate::support::env::{
        is_idp_redirect, Options, SignInEnv, CLIENT_ID, CLIENT_SECRET,
    };
    pub(super) use crate::support::jumpcloud::{
        encode, parse_query, url_decode, DirectoryFaults, FakeJumpCloud, Sign, Tamper, User,
    };
    pub(super) use crate::support::raw::*;
    pub(super) use crate::support::{
        from_echo, parse_raw, raw_status, report, site, unix_now, Client, Echo, Gateway, Reply,
        LOGIN, SESSION,
    };
}

use prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The value a `Set-Cookie` in `reply` gives cookie `name`, when it sets one.
fn set_value(reply: &Reply, name: &str) -> Option<String> {
    set_cookies(reply).iter().find_map(|c| {
        let v = c.strip_prefix(&format!("{name}="))?;
        let v = v.split(';').next().unwrap_or("");
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// A raw HTTP/1.1 exchange on a fresh TLS connection (SNI `sni`), returning what came back
/// before the server closed or `wait` passed.
async fn raw(c: &Client, sni: &str, bytes: &[u8], wait: Duration) -> String {
    c.raw(sni, bytes, wait).await
}

/// An unused loopback port (bound, then released).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A refused callback: 400 "Sign-in expired" or 502 "Sign-in failed", and no session cookie.
fn check_refused(reply: &Reply, want: u16, ctx: &str) -> Result<(), String> {
    let text = reply.text();
    let words = match want {
        400 => "Sign-in expired",
        502 => "Sign-in failed",
        403 => "Sign-in refused",
        _ => unreachable!(),
    };
    if reply.status != want || !text.contains(words) {
        return Err(format!(
            "{ctx}: expected {want} {words:?}, got {} {:?} {}",
            reply.status,
            reply.headers.get("location"),
            text
        ));
    }
    if sets_session(reply) {
        return Err(format!("{ctx}: a refused callback set a session cookie"));
    }
    Ok(())
}

/// The browser has no session: a protected navigation goes to the provider.
async fn check_no_session(env: &SignInEnv, b: &mut Browser, ctx: &str) -> Result<(), String> {
    if b.cookie(SESSION).is_some_and(|v| v.len() == 87) {
        // A cookie may be left from a tampering test; it must not be a live session.
        let r = b.get("/.jumpgate/userinfo").await;
        if r.status != 401 {
            return Err(format!("{ctx}: userinfo answered {}", r.status));
        }
    }
    let r = b.get("/protected/after").await;
    if !is_idp_redirect(env, &r) {
        return Err(format!(
            "{ctx}: expected a redirect to sign in, got {} {:?} {}",
            r.status,
            r.headers.get("location"),
            r.text()
        ));
    }
    Ok(())
}

fn jwks_fetches(fake: &FakeJumpCloud) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path == "/.well-known/jwks.json")
        .count()
}

/// The path and query of the provider's redirect back to the gateway.
fn callback_path(idp: &Reply) -> String {
    support::browser::gateway_path(&location(idp))
}

/// A callback that must be refused: 400 or 502 (or 403 for provider errors), no session.
fn refused(reply: &Reply, ctx: &str) -> Option<String> {
    if !matches!(reply.status.as_u16(), 400 | 403 | 502) || sets_session(reply) {
        return Some(format!(
            "{ctx}: want a refusal without a session, got {} {:?} {:?}",
            reply.status,
            reply.headers.get("location"),
            set_cookies(reply)
        ));
    }
    None
}

/// Who the gateway thinks `cookie_header` belongs to on app.test (`None`: nobody).
async fn whoami(env: &SignInEnv, cookie_headers: &[&str]) -> Option<String> {
    let mut req = Request::get("/.jumpgate/userinfo").header("host", "app.test");
    for c in cookie_headers {
        req = req.header("cookie", *c);
    }
    let r = env
        .gw
        .client()
        .send("app.test", req.body(Full::new(Bytes::new())).unwrap())
        .await;
    (r.status == 200).then(|| r.json()["sub"].as_str().unwrap_or("").to_owned())
}

/// Adds `mallory`, a real user of the same provider and application, and returns her id.
fn add_mallory(env: &SignInEnv) -> String {
    let mallory = env.fake.add_user(User::new("mallory"));
    let staff = env.group_id("Staff");
    env.fake.add_member(&staff, &mallory);
    mallory
}

async fn path_gateway(upstream: &str) -> Gateway {
    Gateway::start(&site(
        "app.test",
        upstream,
        "protected",
        &[("/public", "public"), ("/public/admin", "deny")],
    ))
    .await
}

fn flip(s: &str, i: usize) -> String {
    let mut b = s.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}
