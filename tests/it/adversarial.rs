//! Adversarial end-to-end suite: what attackers try against authentication gateways, each
//! case sent over real TLS to a real gateway and judged by what the upstream actually
//! received. Classes: path and host confusion, method games, public prefixes in queries,
//! identity-header smuggling, request smuggling (HTTP/1.1 framing, HTTP/2 connection
//! headers), state and nonce replay, session fixation, cookie tossing, logout CSRF, ID-token
//! header tricks, oversized and deeply nested inputs, abandoned uploads, the gateway's own
//! endpoints on the public listener, and secrets in logs, pages, metrics and `Debug` output.
//!
//! Every assertion can fail: each class has a control case that shows the same request
//! shape gets through when it is legitimate.

use crate::support;

use support::browser::sets_session;
use support::env::is_idp_redirect;
use support::from_echo;
use support::report;
use support::unix_now;
use support::LOGIN;
use support::SESSION;

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Method, Request};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use support::browser::{idp_get, location, set_cookies, Browser};
use support::env::{Options, SignInEnv, CLIENT_ID, CLIENT_SECRET};
use support::jumpcloud::{encode, DirectoryFaults, Sign, Tamper, User};
use support::{parse_raw, raw_status, site, Client, Echo, Gateway, Reply};

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

/// Like [`raw`], but tolerates a server that answers and closes before the whole request is
/// written (as it should for an oversized head).
async fn raw_tolerant(c: &Client, sni: &str, bytes: &[u8], wait: Duration) -> String {
    let tls = c.connect(sni, &[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = writer.await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`raw`], and whether the server closed the connection within `wait` (false: it was
/// still open, so a missing answer is a hang, not a refusal).
async fn raw_outcome(c: &Client, sni: &str, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut tls = c.connect(sni, &[b"http/1.1"]).await;
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// An unused loopback port (bound, then released).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// A raw recording upstream: parses HTTP/1.1 itself, strictly, and records every request
// line and head it receives, so a request the gateway split, merged or smuggled shows up as
// an extra (or malformed) request.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Seen {
    line: String,
    head: String,
    body: Vec<u8>,
    trailers: String,
    complete: bool,
}

impl Seen {
    fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
    /// Values of header `name` (case-insensitive) in the head as received.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    errors: Vec<String>,
}

struct RawUpstream {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from `s` into `buf` until `buf` contains `pat`; returns the index after it.
async fn fill_until(s: &mut TcpStream, buf: &mut Vec<u8>, pat: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i + pat.len());
        }
        if buf.len() > 256 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn fill_len(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conn += 1;
                tokio::spawn(serve_raw(stream, conn, shared.clone()));
            }
        });
        RawUpstream { addr, log, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().seen.clone()
    }

    fn errors(&self) -> Vec<String> {
        self.log.lock().unwrap().errors.clone()
    }
}

async fn serve_raw(mut s: TcpStream, conn: usize, log: Arc<Mutex<Log>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(end) = fill_until(&mut s, &mut buf, b"\r\n\r\n").await else {
            if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                log.lock().unwrap().errors.push(format!(
                    "conn {conn}: connection ended inside a request head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
        buf.drain(..end);
        let line = head.split("\r\n").next().unwrap_or("").to_owned();
        let parts: Vec<&str> = line.split(' ').collect();
        let well_formed = parts.len() == 3
            && !parts[0].is_empty()
            && parts[0]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-')
            && parts[1].starts_with('/')
            && parts[2] == "HTTP/1.1";
        if !well_formed {
            log.lock()
                .unwrap()
                .errors
                .push(format!("conn {conn}: malformed request line {line:?}"));
            return;
        }
        let mut seen = Seen {
            line,
            head: head.clone(),
            body: Vec::new(),
            trailers: String::new(),
            complete: false,
        };
        let te = seen.header_values("transfer-encoding");
        let cl = seen.header_values("content-length");
        if !te.is_empty() && !cl.is_empty() {
            log.lock().unwrap().errors.push(format!(
                "conn {conn}: {} arrived with both Content-Length and Transfer-Encoding",
                seen.line
            ));
        }
        if cl.len() > 1 || cl.iter().any(|v| v.parse::<u64>().is_err()) {
            log.lock().unwrap().errors.push(format!(
                "conn {conn}: {} arrived with Content-Length {cl:?}",
                seen.line
            ));
        }
        let index = {
            let mut l = log.lock().unwrap();
            l.seen.push(seen.clone());
            l.seen.len() - 1
        };
        let chunked = te
            .last()
            .is_some_and(|v| v.to_ascii_lowercase().trim().ends_with("chunked"));
        let ok = if chunked {
            loop {
                let Some(e) = fill_until(&mut s, &mut buf, b"\r\n").await else {
                    break false;
                };
                let size_line = String::from_utf8_lossy(&buf[..e - 2]).into_owned();
                buf.drain(..e);
                let size = size_line.split(';').next().unwrap_or("").trim();
                let Ok(n) = usize::from_str_radix(size, 16) else {
                    log.lock()
                        .unwrap()
                        .errors
                        .push(format!("conn {conn}: bad chunk size {size_line:?}"));
                    return;
                };
                if n == 0 {
                    let Some(e) = fill_until(&mut s, &mut buf, b"\r\n").await else {
                        break false;
                    };
                    // Trailer fields, up to the empty line.
                    let mut first = String::from_utf8_lossy(&buf[..e - 2]).into_owned();
                    buf.drain(..e);
                    while !first.is_empty() {
                        seen.trailers.push_str(&first);
                        seen.trailers.push('\n');
                        let Some(e) = fill_until(&mut s, &mut buf, b"\r\n").await else {
                            break;
                        };
                        first = String::from_utf8_lossy(&buf[..e - 2]).into_owned();
                        buf.drain(..e);
                    }
                    break true;
                }
                if !fill_len(&mut s, &mut buf, n + 2).await {
                    break false;
                }
                seen.body.extend_from_slice(&buf[..n]);
                buf.drain(..n + 2);
            }
        } else if let Some(n) = cl.first().and_then(|v| v.parse::<usize>().ok()) {
            let ok = fill_len(&mut s, &mut buf, n).await;
            if ok {
                seen.body.extend_from_slice(&buf[..n]);
                buf.drain(..n);
            }
            ok
        } else {
            true
        };
        seen.complete = ok;
        log.lock().unwrap().seen[index] = seen.clone();
        if !ok {
            return;
        }
        let body = json!({
            "line": seen.line,
            "body_len": seen.body.len(),
            "trailers": seen.trailers,
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: raw\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/2 client: frames written by hand, so requests the h2 crate would refuse to
// send (connection-specific headers, upper-case names, misplaced pseudo-headers) reach the
// gateway's HTTP/2 server as an attacker would send them.
// ---------------------------------------------------------------------------------------

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman coding.
fn hpack_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[derive(Debug, PartialEq, Eq)]
enum H2Outcome {
    /// Response headers for stream 1: the first byte of the header block (0x88 is 200).
    Response(u8),
    /// RST_STREAM on stream 1 with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// Nothing conclusive before the connection closed or the wait ran out.
    Nothing,
}

/// Sends one request on stream 1 as raw frames: `fields` as a HEADERS frame, then `data`
/// (if any) as one DATA frame ending the stream.
async fn h2_raw(c: &Client, sni: &str, fields: &[(&str, &str)], data: Option<&[u8]>) -> H2Outcome {
    let mut tls = c.connect(sni, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    let block = hpack_block(fields);
    let flags = if data.is_some() { 0x4 } else { 0x5 };
    out.extend(h2_frame(0x1, flags, 1, &block));
    if let Some(d) = data {
        out.extend(h2_frame(0x0, 0x1, 1, d));
    }
    if tls.write_all(&out).await.is_err() {
        return H2Outcome::Nothing;
    }
    let mut buf: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match (kind, stream) {
                (0x4, 0) if flags & 0x1 == 0 => {
                    let _ = tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await;
                }
                (0x1, 1) => {
                    // Skip padding and priority fields if present.
                    let mut p = &payload[..];
                    if flags & 0x8 != 0 {
                        p = &p[1..];
                    }
                    if flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    return H2Outcome::Response(p.first().copied().unwrap_or(0));
                }
                (0x3, 1) => {
                    return H2Outcome::Reset(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]))
                }
                (0x7, 0) => {
                    return H2Outcome::GoAway(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]))
                }
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(left, tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return H2Outcome::Nothing,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Path and host confusion
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Want {
    /// Forwarded; the upstream saw exactly this request target.
    Fwd(&'static str),
    /// Answered by the gateway with this status; never forwarded.
    No(u16),
}
use Want::{Fwd, No};

/// Routes: `/public` public, `/public/admin` deny, everything else protected (no sign-in
/// configured, so 401). These cases add to the canonicalization table in tests/it/paths.rs.
const PATH_CASES: &[(&str, Want)] = &[
    // Backslashes in every disguise.
    ("/public\\..\\secret", No(400)),
    ("/public/..\\..\\secret", No(400)),
    ("/public/%5c..%5csecret", No(400)),
    ("/public/%5C%2e%2e%5Csecret", No(400)),
    ("/public/\\admin", No(400)),
    ("/public%5cadmin", No(400)),
    (
        "/public/%255c..%255csecret",
        Fwd("/public/%255c..%255csecret"),
    ),
    // `;` parameters hiding segments, dot-segments and the deny rule.
    ("/public;/../secret", No(401)),
    ("/public;x=1/..;/secret", No(400)),
    ("/public/admin;jsessionid=1", No(403)),
    ("/public/admin;/x", No(403)),
    ("/public;a;b/admin;c", No(403)),
    ("/public/%3b/../admin", No(403)),
    ("/public/admin%3bx", Fwd("/public/admin%3Bx")),
    ("/secret;/public/x", No(401)),
    ("/secret;public", No(401)),
    // `#` and `?` encoded into the path stay literal segment bytes.
    ("/public%23/../secret", No(401)),
    ("/secret%23/../public/x", Fwd("/public/x")),
    ("/secret%3f/public", No(401)),
    ("/secret%3F/../../public", Fwd("/public")),
    ("/public/%23admin", Fwd("/public/%23admin")),
    // Double and mixed encoding: decoded once, `%25` stays.
    (
        "/public/%252e%252e/%252e%252e/secret",
        Fwd("/public/%252e%252e/%252e%252e/secret"),
    ),
    (
        "/public/%25%32%65%25%32%65/secret",
        Fwd("/public/%252e%252e/secret"),
    ),
    ("/public/%%32%65%%32%65/secret", No(400)),
    ("/public/%2%65%2%65/secret", No(400)),
    ("/%70ublic/%61dmin", No(403)),
    ("/%50UBLIC/%41DMIN", No(403)),
    ("/public/%2e%2e%2fsecret", No(400)),
    // Overlong and invalid UTF-8 for `.`, `/` and `\`, and non-shortest forms.
    ("/public/%c0%ae%c0%ae/secret", No(400)),
    ("/public/%e0%80%ae%e0%80%ae/secret", No(400)),
    ("/public/%f0%80%80%ae/secret", No(400)),
    ("/public/%c0%af..%c0%afsecret", No(400)),
    ("/public/%c1%9c..%c1%9csecret", No(400)),
    ("/public/%c0%2e%c0%2e/secret", No(400)),
    ("/public/%ed%a0%80", No(400)),
    ("/public/%f4%90%80%80", No(400)),
    ("/public/%80", No(400)),
    // Look-alike separators and dots are ordinary characters, forwarded as routed.
    (
        "/public/%ef%bc%8f..%ef%bc%8fsecret",
        Fwd("/public/%EF%BC%8F..%EF%BC%8Fsecret"),
    ),
    (
        "/public/%e2%80%a4%e2%80%a4/secret",
        Fwd("/public/%E2%80%A4%E2%80%A4/secret"),
    ),
    ("/public/%e2%88%95admin", Fwd("/public/%E2%88%95admin")),
    // Nor does it stretch a public route: a case-sensitive upstream serves another
    // resource at /PUBLIC, and one that keeps `;` parameters another segment at /public;x.
    ("/PUBLIC/x", No(401)),
    ("/Public", No(401)),
    ("/pUBLIC/a/b", No(401)),
    ("/public;x/a", No(401)),
    ("/public;jsessionid=1", No(401)),
    ("/public/x", Fwd("/public/x")),
    ("/public/x;y", Fwd("/public/x;y")),
    // Mixed case never escapes a rule.
    ("/PUBLIC/ADMIN", No(403)),
    ("/pUbLiC/aDmIn/x", No(403)),
    ("/Public/./Admin/", No(403)),
    ("/PUBLIC//ADMIN", No(403)),
    ("/public/admin/", No(403)),
    ("/public/admin//x", No(403)),
    ("/public/x/../admin", No(403)),
    ("/public/./admin", No(403)),
    // Trailing dots and spaces are different segment names: routed and forwarded as is.
    ("/public/admin.", Fwd("/public/admin.")),
    ("/public/admin%2e", Fwd("/public/admin.")),
    ("/public/admin%20", Fwd("/public/admin%20")),
    ("/public/admin%09", No(400)),
    ("/public/admin%00.html", No(400)),
    // Raw bytes that are never valid in a path.
    ("/public/a\"b", No(400)),
    ("/public/a<b>", No(400)),
    ("/public/a{b}", No(400)),
    ("/public/a|b", No(400)),
    ("/public/a^b", No(400)),
    ("/public/a`b", No(400)),
];

async fn path_gateway(upstream: &str) -> Gateway {
    Gateway::start(&site(
        "app.test",
        upstream,
        "protected",
        &[("/public", "public"), ("/public/admin", "deny")],
    ))
    .await
}

/// A `'static` copy of a string, for expectations built at run time (a test leaks a few).
fn sent_static(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn judge(target: &str, want: Want, status: u16, upstream_path: Option<String>) -> Option<String> {
    match (want, upstream_path) {
        (Fwd(p), Some(got)) if status == 200 && got == p => None,
        (Fwd(p), got) => Some(format!(
            "{target}: want forwarded as {p:?}, got {status}, upstream saw {got:?}"
        )),
        (No(code), None) if status == code => None,
        (No(code), got) => Some(format!(
            "{target}: want {code} from the gateway, got {status}, upstream saw {got:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_confusion_beyond_the_canonical_table_over_http1_and_http2() {
    assert!(PATH_CASES.len() >= 50);
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let mut h2_ran = 0;
    for &(target, want) in PATH_CASES {
        let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        let reply = parse_raw(&text);
        let Some(status) = reply.status else {
            failures.push(format!("{target}: no response"));
            continue;
        };
        let upstream = (reply.header("x-upstream") == Some("echo"))
            .then(|| reply.json()["path"].as_str().unwrap_or("").to_owned());
        failures.extend(judge(target, want, status, upstream));

        // HTTP/2, for every target the http crate can carry.
        let Ok(req) =
            Request::get(format!("https://app.test{target}")).body(Full::new(Bytes::new()))
        else {
            continue;
        };
        h2_ran += 1;
        match c.try_send_h2("app.test", req).await {
            Ok(r) => {
                let upstream = from_echo(&r).then(|| r.upstream_path());
                failures.extend(
                    judge(target, want, r.status.as_u16(), upstream).map(|f| format!("h2 {f}")),
                );
            }
            Err(e) => {
                if matches!(want, Fwd(_)) {
                    failures.push(format!("h2 {target}: {e}"));
                }
            }
        }
    }
    assert!(h2_ran >= 40, "only {h2_ran} cases went over HTTP/2");
    report(failures);
}

/// Host, `:authority` and SNI: a request is decided for exactly one site, and the TLS server
/// name, when there is one, must be that site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_authority_and_sni_must_agree_over_http1_and_http2() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}",
        site("app.test", &echo.url(), "public", &[]),
        site("other.test", &echo.url(), "protected", &[])
    ))
    .await;
    let c = gw.client();
    let mut failures = Vec::new();
    // (SNI, raw Host header lines, expected status, forwarded?)
    let h1: &[(&str, &str, u16, bool)] = &[
        ("app.test", "Host: app.test\r\n", 200, true),
        ("app.test", "Host: APP.TEST\r\n", 200, true),
        ("app.test", "Host: app.test.\r\n", 200, true),
        ("app.test", "Host: app.test:443\r\n", 200, true),
        ("app.test", "Host: other.test\r\n", 421, false),
        ("app.test", "Host: OTHER.test.\r\n", 421, false),
        ("app.test", "Host: other.test:443\r\n", 421, false),
        // Not a host name at all: refused as malformed.
        ("app.test", "Host: app.test..\r\n", 400, false),
        ("app.test", "Host: .app.test\r\n", 400, false),
        ("app.test", "Host: app.test.other.test\r\n", 421, false),
        ("app.test", "Host: app.test:\r\n", 400, false),
        ("app.test", "Host: app.test:x\r\n", 400, false),
        ("app.test", "Host: app.test:443:443\r\n", 400, false),
        ("app.test", "Host: app.test:4430000\r\n", 400, false),
        ("app.test", "Host: evil@app.test\r\n", 400, false),
        ("app.test", "Host: app.test/..\r\n", 400, false),
        ("app.test", "Host: app.test\\x\r\n", 400, false),
        ("app.test", "Host: app test\r\n", 400, false),
        ("app.test", "Host: \r\n", 400, false),
        ("app.test", "", 400, false),
        (
            "app.test",
            "Host: app.test\r\nHost: app.test\r\n",
            400,
            false,
        ),
        (
            "app.test",
            "Host: app.test\r\nHost: other.test\r\n",
            400,
            false,
        ),
        (
            "app.test",
            "Host: other.test\r\nHost: app.test\r\n",
            400,
            false,
        ),
        ("app.test", "Host: app.test, other.test\r\n", 400, false),
        ("other.test", "Host: app.test\r\n", 421, false),
        ("other.test", "Host: other.test\r\n", 401, false),
        ("localhost", "Host: app.test\r\n", 421, false),
        ("localhost", "Host: localhost\r\n", 421, false),
        ("app.test", "Host: 127.0.0.1\r\n", 421, false),
        ("app.test", "Host: [::1]\r\n", 421, false),
        (
            "app.test",
            "X-Forwarded-Host: other.test\r\nHost: app.test\r\n",
            200,
            true,
        ),
        (
            "app.test",
            "Forwarded: host=other.test\r\nHost: app.test\r\n",
            200,
            true,
        ),
    ];
    for &(sni, host_lines, want, forwarded) in h1 {
        let req = format!("GET /h HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, sni, req.as_bytes(), Duration::from_secs(5)).await);
        let fwd = reply.header("x-upstream") == Some("echo");
        if reply.status != Some(want) || fwd != forwarded {
            failures.push(format!(
                "h1 SNI {sni} {host_lines:?}: want {want} (forwarded {forwarded}), got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
        if fwd {
            let j = reply.json();
            let xfh = j["headers"]["x-forwarded-host"][0].as_str().unwrap_or("");
            if xfh != "app.test" {
                failures.push(format!("h1 {host_lines:?}: X-Forwarded-Host {xfh:?}"));
            }
        }
    }
    // Absolute-form request targets: the authority decides, and must agree with Host and SNI.
    let absolute: &[(&str, &str, &str, u16)] = &[
        ("app.test", "https://app.test/h", "app.test", 200),
        ("app.test", "http://app.test/h", "app.test", 200),
        ("app.test", "https://other.test/h", "other.test", 421),
        ("app.test", "https://other.test/h", "app.test", 400),
        ("app.test", "https://app.test/h", "other.test", 400),
        ("app.test", "https://app.test:8443/h", "app.test", 200),
        ("app.test", "https://evil.example/h", "app.test", 400),
        (
            "app.test",
            "https://app.test@evil.example/h",
            "app.test",
            400,
        ),
        (
            "app.test",
            "https://evil.example@app.test/h",
            "app.test",
            400,
        ),
        ("app.test", "ftp://app.test/h", "app.test", 200),
    ];
    for &(sni, target, host, want) in absolute {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, sni, req.as_bytes(), Duration::from_secs(5)).await);
        let fwd = reply.header("x-upstream") == Some("echo");
        if reply.status != Some(want) || fwd != (want == 200) {
            failures.push(format!(
                "absolute {target} Host {host}: want {want}, got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
        if fwd && reply.json()["path"] != "/h" {
            failures.push(format!(
                "absolute {target}: upstream saw {}",
                reply.json()["path"]
            ));
        }
    }
    // No SNI at all (an IP-address connection): Host alone picks the site, and that site's
    // policy applies.
    let mut no_sni = (*support::tls_config(&gw.certs.ca, &[b"http/1.1"])).clone();
    no_sni.enable_sni = false;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(no_sni));
    for (host, want, forwarded) in [("other.test", 401, false), ("app.test", 200, true)] {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let mut tls = connector
            .connect(
                rustls::pki_types::ServerName::try_from("app.test").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let req = format!("GET /h HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        let reply = parse_raw(&String::from_utf8_lossy(&out));
        let fwd = reply.header("x-upstream") == Some("echo");
        if reply.status != Some(want) || fwd != forwarded {
            failures.push(format!(
                "no SNI, Host {host}: want {want}, got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
    }
    // HTTP/2: :authority against SNI, and a Host header that disagrees with :authority.
    let h2: &[(&str, &str, Option<&str>, u16)] = &[
        ("app.test", "app.test", None, 200),
        ("app.test", "APP.test.", None, 200),
        ("app.test", "other.test", None, 421),
        ("other.test", "app.test", None, 421),
        ("app.test", "app.test", Some("other.test"), 400),
        ("app.test", "other.test", Some("app.test"), 400),
    ];
    for &(sni, authority, host, want) in h2 {
        let mut req = Request::get(format!("https://{authority}/h"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        match c.try_send_h2(sni, req).await {
            Ok(r) if r.status == want && from_echo(&r) == (want == 200) => {}
            Ok(r) => failures.push(format!(
                "h2 SNI {sni} :authority {authority} host {host:?}: want {want}, got {} (forwarded {})",
                r.status,
                from_echo(&r)
            )),
            Err(e) => {
                if want == 200 {
                    failures.push(format!("h2 {authority}: {e}"));
                }
            }
        }
    }
    // HTTP/2 without :authority, SNI naming the protected site and only a Host header naming
    // the public one (raw frames): never served as the public site.
    let outcome = h2_raw(
        &c,
        "other.test",
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/h"),
            ("host", "app.test"),
        ],
        None,
    )
    .await;
    if outcome == H2Outcome::Response(0x88) {
        failures
            .push("h2 Host app.test without :authority on SNI other.test was answered 200".into());
    }
    // One HTTP/2 connection reused for another site (browsers coalesce connections when the
    // certificate covers both names): the second site is never served on it.
    let tls = c.connect("app.test", &[b"h2"]).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [("app.test", 200), ("other.test", 421), ("app.test", 200)] {
        let req = Request::get(format!("https://{authority}/coalesced"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = support::collect(sender.send_request(req).await.unwrap()).await;
        if r.status != want {
            failures.push(format!(
                "coalesced h2 connection, {authority}: want {want}, got {}",
                r.status
            ));
        }
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_case_unknown_and_connect_never_escape_the_policy() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let long = "A".repeat(4096);
    // (request line, acceptable statuses, forwarded?). No status: the connection may also
    // simply be closed.
    let cases: Vec<(String, &[u16], bool)> = vec![
        ("GET /public/x HTTP/1.1".into(), &[200], true),
        ("get /public/x HTTP/1.1".into(), &[400], false),
        ("gEt /secret HTTP/1.1".into(), &[400], false),
        ("Post /secret HTTP/1.1".into(), &[400], false),
        ("delete /public/admin HTTP/1.1".into(), &[400], false),
        ("PURGE /public/x HTTP/1.1".into(), &[200], true),
        ("PURGE /secret HTTP/1.1".into(), &[401], false),
        ("PROPFIND /secret HTTP/1.1".into(), &[401], false),
        ("MKCOL /public/admin/x HTTP/1.1".into(), &[403], false),
        ("FOO_BAR /secret HTTP/1.1".into(), &[401], false),
        ("M-SEARCH /public/x HTTP/1.1".into(), &[200], true),
        ("OPTIONS /secret HTTP/1.1".into(), &[401], false),
        ("OPTIONS /public/admin HTTP/1.1".into(), &[403], false),
        ("HEAD /secret HTTP/1.1".into(), &[401], false),
        ("TRACE /secret HTTP/1.1".into(), &[405], false),
        ("TRACK /secret HTTP/1.1".into(), &[405], false),
        ("TRACE /public/x HTTP/1.1".into(), &[405], false),
        ("TRACK /public/x HTTP/1.1".into(), &[405], false),
        ("DELETE /public/admin/x HTTP/1.1".into(), &[403], false),
        ("CONNECT app.test:443 HTTP/1.1".into(), &[400], false),
        ("CONNECT /secret HTTP/1.1".into(), &[400, 401], false),
        ("CONNECT evil.example:22 HTTP/1.1".into(), &[400], false),
        (format!("{long} /secret HTTP/1.1"), &[400, 401], false),
        ("G\u{7f}ET /public/x HTTP/1.1".into(), &[400], false),
        ("GE(T /public/x HTTP/1.1".into(), &[400], false),
        ("GET /public/x HTTP/1.0".into(), &[200], true),
        ("GET /public/x HTTP/2.0".into(), &[400, 505], false),
        ("GET /public/x HTTP/1.2".into(), &[400, 505], false),
        ("GET /public/x".into(), &[400], false),
        ("GET  /public/x HTTP/1.1".into(), &[400], false),
        ("GET /public/x  HTTP/1.1".into(), &[400], false),
        ("GET\t/public/x HTTP/1.1".into(), &[400], false),
    ];
    for (line, want, forwarded) in &cases {
        let req = format!("{line}\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        // An HTTP/1.0 request is answered with an HTTP/1.0 status line.
        let reply = parse_raw(&text.replacen("HTTP/1.0 ", "HTTP/1.1 ", 1));
        let fwd = reply.header("x-upstream") == Some("echo");
        let short: String = line.chars().take(60).collect();
        let status_ok = match reply.status {
            Some(s) => want.contains(&s),
            None => !forwarded,
        };
        if fwd != *forwarded || !status_ok {
            failures.push(format!(
                "{short:?}: want {want:?} (forwarded {forwarded}), got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
        if fwd {
            let method = line.split(' ').next().unwrap();
            if reply.json()["method"] != method {
                failures.push(format!(
                    "{short:?}: upstream saw method {}",
                    reply.json()["method"]
                ));
            }
        }
    }
    // HTTP/2 carries any method token: the same rules apply.
    for (method, path, want) in [
        ("PURGE", "/secret", 401),
        ("TRACE", "/public/admin", 405),
        ("TRACE", "/public/x", 405),
        ("PROPFIND", "/public/x", 200),
        ("lowercase", "/public/x", 400),
    ] {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("https://app.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        match c.try_send_h2("app.test", req).await {
            Ok(r) if r.status == want && from_echo(&r) == (want == 200) => {}
            Ok(r) => failures.push(format!("h2 {method} {path}: want {want}, got {}", r.status)),
            Err(e) => {
                if want == 200 {
                    failures.push(format!("h2 {method} {path}: {e}"));
                }
            }
        }
    }
    report(failures);
}

/// A public prefix matches the path only: never the query string, a fragment or an encoded
/// `?` or `#` inside the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_prefixes_are_never_matched_against_the_query_or_fragment() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let cases: &[(&str, Want)] = &[
        ("/secret?/public", No(401)),
        ("/secret?/public/", No(401)),
        ("/secret?path=/public", No(401)),
        ("/secret?=/public", No(401)),
        ("/secret??/public", No(401)),
        ("/secret?%2Fpublic", No(401)),
        ("/secret?x=1&/public", No(401)),
        ("/secret?;/public", No(401)),
        ("/secret?/../public", No(401)),
        ("/secret?/public#/public", No(401)),
        ("/secret#/public", No(401)),
        ("/secret#?/public", No(401)),
        ("/secret%3F/public", No(401)),
        ("/secret%3f/public/x", No(401)),
        ("/secret%23/public", No(401)),
        ("/secret/%3F/public", No(401)),
        ("/?/public", No(401)),
        ("/?public", No(401)),
        ("?/public", No(400)),
        ("/public/admin?/public/x", No(403)),
        ("/public/admin?x=/public", No(403)),
        ("/public/admin#/public", No(403)),
        ("/public?/secret", Fwd("/public?/secret")),
        ("/public?x=/public/admin", Fwd("/public?x=/public/admin")),
        ("/public/x?/../../secret", Fwd("/public/x?/../../secret")),
    ];
    for &(target, want) in cases {
        let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        let upstream = (reply.header("x-upstream") == Some("echo"))
            .then(|| reply.json()["path"].as_str().unwrap_or("").to_owned());
        failures.extend(judge(target, want, reply.status.unwrap_or(0), upstream));
        if !target.starts_with('/') {
            continue;
        }
        // The client crate drops a fragment itself; judge what it sent.
        let sent = target.split('#').next().unwrap_or(target);
        let Ok(req) = Request::get(format!("https://app.test{sent}")).body(Full::new(Bytes::new()))
        else {
            continue;
        };
        if let Ok(r) = c.try_send_h2("app.test", req).await {
            let upstream = from_echo(&r).then(|| r.upstream_path());
            let want = match want {
                Fwd(_) => Fwd(sent_static(sent)),
                other => other,
            };
            failures
                .extend(judge(sent, want, r.status.as_u16(), upstream).map(|f| format!("h2 {f}")));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Identity-header smuggling and obsolete line folding
// ---------------------------------------------------------------------------------------

/// Header names a client might use to pose as the gateway: the identity namespace in every
/// case, with `_` for `-`, duplicated, and nominated in `Connection` so a naive proxy would
/// remove the gateway's own copies.
const FORGED: &str = "X-Jumpgate-User: forged\r\n\
x-jumpgate-user: forged-lower\r\n\
X_JUMPGATE_USER: forged-underscore\r\n\
X-JUMPGATE_user: forged-mixed\r\n\
x_Jumpgate-Email: forged@evil.example\r\n\
X-Jumpgate-Groups: forged-admins\r\n\
X-Jumpgate-Groups: forged-again\r\n\
X-Jumpgate-Assertion: forged.forged.forged\r\n\
X-Jumpgate-Step-Up-Time: 9999999999\r\n\
X-Jumpgate-: forged-empty-suffix\r\n\
X-Jumpgate-Anything-Else: forged\r\n";

fn identity_leaks(echo_body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(headers) = echo_body["headers"].as_object() {
        for (name, values) in headers {
            let norm = name.to_ascii_lowercase().replace('_', "-");
            if norm.starts_with("x-jumpgate") {
                out.push(format!("{name}: {values}"));
            }
            if values.to_string().contains("forged") {
                out.push(format!("{name}: {values}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_in_any_spelling_never_reach_the_upstream() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let variants = [
        ("plain", String::new()),
        (
            "nominated in Connection",
            "Connection: X-Jumpgate-User, x_jumpgate_user, X-Forwarded-For, Host\r\n".to_owned(),
        ),
        (
            "nominated across several Connection headers",
            "Connection: keep-alive\r\nConnection: x-jumpgate-groups\r\nConnection: X-Jumpgate-Assertion\r\n".to_owned(),
        ),
        (
            "with hop-by-hop look-alikes",
            "Keep-Alive: X-Jumpgate-User\r\nTE: trailers\r\nProxy-Connection: X-Jumpgate-User\r\n".to_owned(),
        ),
    ];
    for (name, extra) in &variants {
        let req = format!(
            "GET /public/id HTTP/1.1\r\nHost: app.test\r\n{FORGED}{extra}Connection: close\r\n\r\n"
        );
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        if reply.status != Some(200) {
            failures.push(format!("{name}: status {:?}", reply.status));
            continue;
        }
        let body = reply.json();
        for leak in identity_leaks(&body) {
            failures.push(format!("{name}: {leak} reached the upstream"));
        }
        // The gateway's own forwarding headers survive a client naming them in Connection.
        if body["headers"]["x-forwarded-for"][0] != "127.0.0.1"
            || body["headers"]["x-forwarded-proto"][0] != "https"
            || body["headers"]["host"][0] != format!("app.test:{}", gw.addr.port()).as_str()
        {
            failures.push(format!("{name}: forwarding headers {}", body["headers"]));
        }
    }
    // HTTP/2 (names arrive lower-case; underscores are legal there).
    let mut req = Request::get("https://app.test/public/id");
    for (n, v) in [
        ("x-jumpgate-user", "forged"),
        ("x_jumpgate_user", "forged-underscore"),
        ("x-jumpgate-groups", "forged"),
        ("x_jumpgate-email", "forged"),
        ("x-jumpgate-step-up-time", "9999999999"),
    ] {
        req = req.header(n, v);
    }
    let r = c
        .send_h2("app.test", req.body(Full::new(Bytes::new())).unwrap())
        .await;
    if r.status != 200 {
        failures.push(format!("h2: status {}", r.status));
    } else {
        for leak in identity_leaks(&r.json()) {
            failures.push(format!("h2: {leak} reached the upstream"));
        }
    }
    // Control: an ordinary header in the same requests does reach the upstream.
    let req = "GET /public/id HTTP/1.1\r\nHost: app.test\r\nX-Jumpgatex-User: kept\r\nX-Other: kept\r\nConnection: close\r\n\r\n";
    let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
    let body = reply.json();
    if body["headers"]["x-other"][0] != "kept" || body["headers"]["x-jumpgatex-user"][0] != "kept" {
        failures.push(format!(
            "control headers were not forwarded: {}",
            body["headers"]
        ));
    }
    report(failures);
}

/// Headers through which frameworks let a request choose the path, method, host or client
/// address the application sees, in any case: none reaches the upstream, and the upstream's
/// `Host` is the site's, never the client's spelling or port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_method_host_and_address_overrides_never_reach_the_upstream() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let overrides = [
        "X-Original-URL: /public/admin",
        "X-Original-URI: /public/admin",
        "X-Rewrite-URL: /public/admin",
        "x-http-method-override: DELETE",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: DELETE",
        "True-Client-IP: 10.0.0.1",
        "CF-Connecting-IP: 10.0.0.1",
        "X-Client-IP: 10.0.0.1",
        "X-Cluster-Client-IP: 10.0.0.1",
        "Fastly-Client-IP: 10.0.0.1",
        "X-Real-IP: 10.0.0.1",
        "X-FORWARDED-HOST: evil.example",
        "X-Forwarded-Prefix: /public/admin",
        "X-Forwarded-Uri: /public/admin",
        "X-Forwarded-Method: DELETE",
        "X-Forwarded-Port: 1",
        "X-Forwarded-Server: evil.example",
        "X-Host: evil.example",
        "X-Original-Host: evil.example",
        "Forwarded: for=10.0.0.1;host=evil.example;proto=http",
    ];
    let mut failures = Vec::new();
    let want_host = format!("app.test:{}", gw.addr.port());
    for host in [
        "app.test",
        "APP.test",
        "app.test.",
        "app.test:1",
        "app.test:443",
    ] {
        let req = format!(
            "GET /public/id HTTP/1.1\r\nHost: {host}\r\n{}\r\nX-Kept: yes\r\nConnection: close\r\n\r\n",
            overrides.join("\r\n")
        );
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        if reply.status != Some(200) {
            failures.push(format!("Host {host}: status {:?}", reply.status));
            continue;
        }
        let body = reply.json();
        let seen = body["headers"].as_object().cloned().unwrap_or_default();
        for line in overrides {
            let name = line.split(':').next().unwrap().to_ascii_lowercase();
            let value = seen.get(&name).map(ToString::to_string).unwrap_or_default();
            if value.contains("evil")
                || value.contains("admin")
                || value.contains("DELETE")
                || value.contains("10.0.0.1")
            {
                failures.push(format!("Host {host}: {name} reached the upstream: {value}"));
            }
        }
        if seen.get("host").and_then(|v| v[0].as_str()) != Some(&want_host) {
            failures.push(format!(
                "Host {host}: upstream saw Host {:?}",
                seen.get("host")
            ));
        }
        if body["method"] != "GET" || body["path"] != "/public/id" {
            failures.push(format!(
                "Host {host}: upstream saw {} {}",
                body["method"], body["path"]
            ));
        }
        // Controls: the gateway's own forwarding headers, and an ordinary header.
        if seen.get("x-forwarded-host").and_then(|v| v[0].as_str()) != Some("app.test")
            || seen.get("x-kept").and_then(|v| v[0].as_str()) != Some("yes")
        {
            failures.push(format!("Host {host}: forwarding headers {seen:?}"));
        }
    }
    report(failures);
}

/// An upstream that answers the first request on each connection with `answer`, then
/// holds the connection open briefly.
async fn canned_upstream(answer: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if fill_until(&mut s, &mut buf, b"\r\n\r\n").await.is_some() {
                    let _ = s.write_all(answer.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    });
    (addr, task)
}

/// A `101` opens a raw tunnel past every later rule, so only a real answer to the client's
/// WebSocket handshake may open one; anything else is a 502, and a handshake without its
/// key is never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_real_websocket_answer_opens_a_tunnel() {
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    let cases: &[(&str, &'static str, u16)] = &[
        (
            "a real answer (control)",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            101,
        ),
        (
            "the accept of another key",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n",
            502,
        ),
        (
            "no accept",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            502,
        ),
        (
            "another protocol",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            502,
        ),
        (
            "no Upgrade",
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            502,
        ),
    ];
    let mut failures = Vec::new();
    for (what, answer, want) in cases {
        let (addr, task) = canned_upstream(answer).await;
        let gw = path_gateway(&format!("http://{addr}")).await;
        let c = gw.client();
        let req = format!(
            "GET /public/ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        );
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(2)).await;
        let status = raw_status(&text);
        if status != Some(*want) {
            failures.push(format!("{what}: {status:?}, expected {want}: {text:.200}"));
        }
        if *want == 101 && !text.contains(ACCEPT) {
            failures.push(format!("{what}: the accept did not reach the client"));
        }
        task.abort();
    }
    // A handshake without a key, or with two, is not forwarded at all.
    let (addr, task) = canned_upstream(cases[0].1).await;
    let gw = path_gateway(&format!("http://{addr}")).await;
    let c = gw.client();
    for keys in ["", "Sec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n"] {
        let req = format!(
            "GET /public/ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{keys}Connection: close\r\n\r\n"
        );
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(2)).await;
        if raw_status(&text) != Some(400) {
            failures.push(format!("keys {keys:?}: {text:.200}"));
        }
    }
    task.abort();
    report(failures);
}

/// Obsolete line folding (RFC 9112 §5.2): a server must reject it or replace it with spaces
/// before interpreting the field. A folded line must never reach the upstream as a header of
/// its own, in particular one in the identity namespace. The gateway's answer is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_header_lines_are_rejected_with_400_and_never_forwarded() {
    let up = RawUpstream::start().await;
    let gw = path_gateway(&up.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let cases = [
        (
            "space fold after an ordinary header",
            "X-Other: a\r\n X-Jumpgate-User: forged\r\n",
        ),
        (
            "tab fold after an ordinary header",
            "X-Other: a\r\n\tX-Jumpgate-User: forged\r\n",
        ),
        (
            "fold continuing Host",
            "X-Other: a\r\nX-B: b\r\n  evil.example\r\n",
        ),
        (
            "fold continuing Transfer-Encoding",
            "Transfer-Encoding:\r\n chunked\r\n",
        ),
        (
            "fold continuing Content-Length",
            "Content-Length: 0\r\n 5\r\n",
        ),
        (
            "fold continuing Connection",
            "Connection: keep-alive,\r\n X-Jumpgate-User\r\n",
        ),
        (
            "fold continuing Cookie",
            "Cookie: a=b\r\n __Host-jumpgate=forged\r\n",
        ),
        (
            "fold as the first header line",
            " X-Jumpgate-User: forged\r\nX-Other: a\r\n",
        ),
        (
            "several folds",
            "X-Other: a\r\n b\r\n c\r\n X-Jumpgate-Groups: forged\r\n",
        ),
    ];
    for (i, (name, lines)) in cases.iter().enumerate() {
        let req = format!(
            "GET /public/fold{i} HTTP/1.1\r\nHost: app.test\r\n{lines}Connection: close\r\n\r\n"
        );
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(3)).await;
        if raw_status(&text) != Some(400) {
            failures.push(format!("{name}: want 400, got {:?}", text.lines().next()));
        }
        if let Some(s) = up
            .seen()
            .iter()
            .find(|s| s.path() == format!("/public/fold{i}"))
        {
            failures.push(format!("{name}: forwarded as {:?}", s.head));
        }
    }
    // Control: the same request without the fold is forwarded.
    let req = "GET /public/fold-control HTTP/1.1\r\nHost: app.test\r\nX-Other: a b\r\nConnection: close\r\n\r\n";
    let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(3)).await;
    if raw_status(&text) != Some(200)
        || !up.seen().iter().any(|s| s.path() == "/public/fold-control")
    {
        failures.push(format!("control not forwarded: {:?}", text.lines().next()));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Request smuggling
// ---------------------------------------------------------------------------------------

/// What a framing case may produce.
struct Frame_ {
    name: &'static str,
    /// The raw request(s); `{P}` is replaced by a unique path prefix for the case.
    raw: String,
    /// Statuses the client may see for the first request (empty: the connection may close
    /// without an answer too).
    statuses: &'static [u16],
    /// Whether the first request may reach the upstream.
    may_forward: bool,
    /// Requests that must reach the upstream (paths under `{P}`), for the controls.
    must_forward: &'static [&'static str],
}

fn framing_cases() -> Vec<Frame_> {
    let smuggled = "GET {P}/smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let chunked_then_smuggle = format!("0\r\n\r\n{smuggled}");
    let len = chunked_then_smuggle.len();
    let head = |extra: &str| format!("POST {{P}}/first HTTP/1.1\r\nHost: app.test\r\n{extra}");
    let f = |name, raw: String, statuses, may_forward| Frame_ {
        name,
        raw,
        statuses,
        may_forward,
        must_forward: &[],
    };
    vec![
        // CL.TE / TE.CL: both framings at once. RFC 9112 §6.1: reject, or use
        // Transfer-Encoding and close the connection after responding; an intermediary
        // forwarding it must drop Content-Length first.
        f(
            "Content-Length then Transfer-Encoding, a request after the last chunk",
            format!(
                "{}Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[200, 400],
            true,
        ),
        f(
            "Transfer-Encoding then Content-Length, a request after the last chunk",
            format!(
                "{}Transfer-Encoding: chunked\r\nContent-Length: {len}\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[200, 400],
            true,
        ),
        f(
            "short Content-Length with a chunked body (TE.CL)",
            format!(
                "{}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\n{}\r\n0\r\n\r\n",
                head(""),
                "GET {P}/smuggled HTTP/1.1\r\nHost: app.test\r\nContent-Length: 30\r\n\r\n"
                    .chars()
                    .chain(std::iter::repeat('x'))
                    .take(0x5c)
                    .collect::<String>()
            ),
            &[200, 400],
            true,
        ),
        f(
            "Transfer-Encoding with a space before the colon",
            format!(
                "{}Transfer-Encoding : chunked\r\nContent-Length: {len}\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[400],
            false,
        ),
        f(
            "Transfer-Encoding: chunked, identity",
            format!(
                "{}Transfer-Encoding: chunked, identity\r\nContent-Length: {len}\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[400],
            false,
        ),
        f(
            "Transfer-Encoding: identity",
            format!("{}Transfer-Encoding: identity\r\n\r\n{chunked_then_smuggle}", head("")),
            &[400, 501],
            false,
        ),
        f(
            "Transfer-Encoding: xchunked",
            format!(
                "{}Transfer-Encoding: xchunked\r\nContent-Length: {len}\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[400, 501],
            false,
        ),
        f(
            "two Transfer-Encoding headers, the last not chunked",
            format!(
                "{}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[400, 501],
            false,
        ),
        f(
            "Transfer-Encoding with a vertical tab",
            format!(
                "{}Transfer-Encoding:\x0bchunked\r\nContent-Length: {len}\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[400, 501],
            false,
        ),
        f(
            "Transfer-Encoding: CHUNKED, upper-case",
            format!(
                "{}Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                head("")
            ),
            &[200],
            true,
        ),
        f(
            "duplicate equal Content-Length",
            format!("{}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", head("")),
            &[200, 400],
            true,
        ),
        f(
            "conflicting Content-Length",
            format!(
                "{}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!{smuggled}",
                head("")
            ),
            &[400],
            false,
        ),
        f(
            "Content-Length list 5, 5",
            format!("{}Content-Length: 5, 5\r\n\r\nhello", head("")),
            &[200, 400],
            true,
        ),
        f(
            "Content-Length list 5, 6",
            format!("{}Content-Length: 5, 6\r\n\r\nhello!", head("")),
            &[400],
            false,
        ),
        f(
            "Content-Length +5",
            format!("{}Content-Length: +5\r\n\r\nhello", head("")),
            &[400],
            false,
        ),
        f(
            "Content-Length 0x5",
            format!("{}Content-Length: 0x5\r\n\r\nhello", head("")),
            &[400],
            false,
        ),
        f(
            "Content-Length -1",
            format!("{}Content-Length: -1\r\n\r\nhello", head("")),
            &[400],
            false,
        ),
        f(
            "Content-Length overflowing 64 bits",
            format!("{}Content-Length: 184467440737095516160\r\n\r\nhello", head("")),
            &[400, 413],
            false,
        ),
        f(
            "chunk size overflowing 64 bits",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff1\r\nA\r\n0\r\n\r\n",
                head("")
            ),
            &[200, 400, 502],
            true,
        ),
        f(
            "negative chunk size",
            format!("{}Transfer-Encoding: chunked\r\n\r\n-1\r\nA\r\n0\r\n\r\n", head("")),
            &[200, 400, 502],
            true,
        ),
        f(
            "chunk extension hiding a request",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n5;x=\"\r\n{smuggled}\"\r\nhello\r\n0\r\n\r\n",
                head("")
            ),
            &[200, 400, 502],
            true,
        ),
        f(
            "bare LF chunk framing",
            format!("{}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", head("")),
            &[200, 400, 502],
            true,
        ),
        f(
            "HTTP/1.0 with Transfer-Encoding: chunked",
            format!(
                "POST {{P}}/first HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: {len}\r\n\r\n{chunked_then_smuggle}"
            ),
            &[200, 400],
            true,
        ),
        f(
            "NUL in a header value",
            format!("{}X-A: a\0b\r\n\r\n", head("Content-Length: 0\r\n")),
            &[400],
            false,
        ),
        f(
            "a non-token header name",
            format!("{}X(A): a\r\n\r\n", head("Content-Length: 0\r\n")),
            &[400],
            false,
        ),
        f(
            "bare CR in a header value",
            format!("{}X-A: a\rX-Jumpgate-User: forged\r\n\r\n", head("Content-Length: 0\r\n")),
            &[400],
            false,
        ),
        f(
            "Expect: 100-continue with both framings",
            format!(
                "{}Expect: 100-continue\r\nContent-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_smuggle}",
                head("")
            ),
            &[100, 200, 400],
            true,
        ),
        Frame_ {
            name: "control: two pipelined requests, each framed once",
            raw: format!(
                "{}Content-Length: 5\r\n\r\nhelloPOST {{P}}/second HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
                head("")
            ),
            statuses: &[200],
            may_forward: true,
            must_forward: &["/first", "/second"],
        },
        Frame_ {
            name: "control: a GET whose body holds a request line",
            raw: format!(
                "GET {{P}}/first HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
                smuggled.len()
            ),
            statuses: &[200],
            may_forward: true,
            must_forward: &["/first"],
        },
    ]
}

/// HTTP/1.1 framing ambiguities (CL.TE, TE.CL, TE.TE, CL.CL, malformed chunks): whatever
/// the gateway decides, the upstream receives each client request as exactly one request
/// with one unambiguous framing, never a request hidden in another's body, and its pooled
/// connections never desynchronise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_ambiguities_never_smuggle_a_request_to_the_upstream() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(&site("app.test", &up.url(), "public", &[])).await;
    let c = gw.client();
    let cases = framing_cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let p = format!("/c{i}");
        let (text, closed) = raw_outcome(
            &c,
            "app.test",
            case.raw.replace("{P}", &p).as_bytes(),
            Duration::from_millis(1500),
        )
        .await;
        // Statuses of every response on the connection, in order.
        let statuses: Vec<u16> = text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| text[at + 9..].get(..3)?.parse().ok())
            .filter(|s| *s != 100)
            .collect();
        let first = statuses.first().copied();
        if first.is_none() && !closed {
            // Neither an answer nor a close: the gateway hangs on this input.
            failures.push(format!(
                "{}: no answer and the connection still open after 1.5 s",
                case.name
            ));
        }
        if first.is_some_and(|s| !case.statuses.contains(&s))
            || (first.is_none() && case.may_forward && !case.must_forward.is_empty())
        {
            failures.push(format!(
                "{}: answered {statuses:?}, want one of {:?}",
                case.name, case.statuses
            ));
        }
        if statuses
            .iter()
            .any(|&s| s >= 500 && s != 502 && s != 501 && s != 505)
        {
            failures.push(format!("{}: server error {statuses:?}", case.name));
        }
        // Let the upstream finish reading whatever reached it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen: Vec<Seen> = up
            .seen()
            .into_iter()
            .filter(|s| s.path().starts_with(&format!("{p}/")))
            .collect();
        let paths: Vec<String> = seen
            .iter()
            .map(|s| s.path().trim_start_matches(&p).to_owned())
            .collect();
        if paths.iter().any(|x| x.contains("smuggled")) {
            failures.push(format!(
                "{}: the upstream received a smuggled request: {paths:?}",
                case.name
            ));
        }
        if !case.may_forward && !seen.is_empty() {
            failures.push(format!(
                "{}: forwarded although refused: {paths:?}",
                case.name
            ));
        }
        for want in case.must_forward {
            if !paths.iter().any(|x| x == want) {
                failures.push(format!(
                    "{}: {want} never reached the upstream: {paths:?}",
                    case.name
                ));
            }
        }
        if case.must_forward.is_empty() && seen.len() > 1 {
            failures.push(format!(
                "{}: one client request became {paths:?}",
                case.name
            ));
        }
    }
    // The upstream never saw an ambiguous or malformed head, nor a desynchronised connection.
    for e in up.errors() {
        failures.push(format!("upstream: {e}"));
    }
    // After all that, the pooled upstream connections still carry requests cleanly.
    for n in 0..5 {
        let r = c.get("app.test", &format!("/after/{n}")).await;
        if r.status != 200 || r.json()["line"] != format!("GET /after/{n} HTTP/1.1") {
            failures.push(format!(
                "request after the cases: {} {}",
                r.status,
                r.text()
            ));
        }
    }
    report(failures);
}

/// HTTP/2 forbids connection-specific header fields (RFC 9113 §8.2.2); a request carrying
/// one is malformed and must never be forwarded, where an HTTP/1.1 upstream would honour it.
/// Also refused: upper-case names, pseudo-headers after regular ones, duplicated or missing
/// pseudo-headers, and a body that disagrees with its content-length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_malformed_requests_are_refused_and_never_forwarded() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(&site("app.test", &up.url(), "public", &[])).await;
    let c = gw.client();
    let base = |path: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "app.test"),
            (":path", path),
        ]
    };
    let mut failures = Vec::new();
    // Control: the same hand-written frames without anything forbidden are forwarded.
    let outcome = h2_raw(&c, "app.test", &base("/h2/ok"), None).await;
    if outcome != H2Outcome::Response(0x88) {
        failures.push(format!("control: {outcome:?}"));
    }
    let with = |path: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut f = base(path);
        f.extend_from_slice(extra);
        f
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "connection",
            with("/h2/c1", &[("connection", "keep-alive")]),
        ),
        (
            "connection naming an identity header",
            with("/h2/c2", &[("connection", "x-jumpgate-user")]),
        ),
        ("keep-alive", with("/h2/c3", &[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            with("/h2/c4", &[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            with("/h2/c5", &[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", with("/h2/c6", &[("upgrade", "websocket")])),
        ("te: gzip", with("/h2/c7", &[("te", "gzip")])),
        (
            "upper-case name",
            with("/h2/c8", &[("X-Jumpgate-User", "forged")]),
        ),
        ("pseudo-header after a regular one", {
            let mut f = vec![(":method", "GET"), (":scheme", "https"), ("x-a", "1")];
            f.extend([(":authority", "app.test"), (":path", "/h2/c9")]);
            f
        }),
        (
            "duplicate :path",
            with("/h2/c10", &[(":path", "/h2/c10-second")]),
        ),
        ("unknown pseudo-header", with("/h2/c11", &[(":evil", "1")])),
        (
            "missing :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "app.test"),
            ],
        ),
        (
            "response pseudo-header in a request",
            with("/h2/c13", &[(":status", "200")]),
        ),
        (
            "header value with CR LF",
            with("/h2/c14", &[("x-a", "a\r\nX-Jumpgate-User: forged")]),
        ),
        (
            "header name with a colon",
            with("/h2/c15", &[("x-a:b", "1")]),
        ),
        (
            "empty :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "app.test"),
                (":path", ""),
            ],
        ),
    ];
    for (name, fields) in &cases {
        let outcome = h2_raw(&c, "app.test", fields, None).await;
        if outcome == H2Outcome::Response(0x88) {
            failures.push(format!("{name}: answered 200"));
        }
    }
    // content-length that disagrees with the DATA sent: never a complete request upstream.
    let mut f = base("/h2/cl-mismatch");
    f[0] = (":method", "POST");
    f.push(("content-length", "100"));
    let outcome = h2_raw(&c, "app.test", &f, Some(b"hello")).await;
    if outcome == H2Outcome::Response(0x88) {
        failures.push("content-length 100 with 5 bytes: answered 200".into());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = up.seen();
    for s in &seen {
        let path = s.path();
        if path.starts_with("/h2/c") {
            failures.push(format!("forwarded: {:?}", s.head));
        }
        if path == "/h2/cl-mismatch" && s.complete {
            failures.push(format!(
                "a body of {} bytes was forwarded as complete",
                s.body.len()
            ));
        }
    }
    if !seen.iter().any(|s| s.path() == "/h2/ok") {
        failures.push("the control never reached the upstream".into());
    }
    for e in up.errors() {
        if !e.contains("cl-mismatch") {
            failures.push(format!("upstream: {e}"));
        }
    }
    report(failures);
}

/// Trailer fields arrive after the body, where header checks have already run. None of them
/// may reach the upstream as a header or trailer in the identity namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_carry_identity_upstream() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(&site("app.test", &up.url(), "public", &[])).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let req = "POST /trailers/h1 HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Jumpgate-User, X-Other\r\nTE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Jumpgate-User: forged\r\nx_jumpgate_groups: forged\r\nX-Other: kept\r\n\r\n";
    let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(3)).await;
    if raw_status(&text) != Some(200) {
        failures.push(format!("h1: {:?}", text.lines().next()));
    }
    // HTTP/2 trailers.
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-jumpgate-user", "forged".parse().unwrap());
            t.insert("x_jumpgate_groups", "forged".parse().unwrap());
            t.insert("x-other", "kept".parse().unwrap());
            t
        })),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post("https://app.test/trailers/h2")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    match c.try_send_h2("app.test", req).await {
        Ok(r) if r.status == 200 => {}
        other => failures.push(format!("h2: {other:?}")),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in up.seen() {
        let all = format!("{}\n{}", s.head, s.trailers).to_ascii_lowercase();
        if all.contains("forged") || all.replace('_', "-").contains("x-jumpgate") {
            failures.push(format!(
                "{}: identity reached the upstream: {all:?}",
                s.line
            ));
        }
        if s.body != b"hello" {
            failures.push(format!(
                "{}: body {:?}",
                s.line,
                String::from_utf8_lossy(&s.body)
            ));
        }
    }
    if up.seen().len() != 2 {
        failures.push(format!(
            "the upstream saw {:?}",
            up.seen().iter().map(|s| &s.line).collect::<Vec<_>>()
        ));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Sign-in: state and nonce replay, code injection, fixation, tossing, logout CSRF
// ---------------------------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_state_nonce_and_injected_codes_are_refused() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();

    // A nonce from an earlier, completed sign-in in the same browser.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/first").await.status, 200);
    let old_nonce = env.fake.issued().last().unwrap().nonce.clone().unwrap();
    env.fake
        .tamper_next_id_token(Tamper::claims(move |c| c["nonce"] = old_nonce.into()));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/nonce-replay").await;
    failures.extend(refused(&cb, "a nonce from an earlier sign-in"));

    // A state whose exchange failed is spent: replaying its callback URL does not retry.
    env.fake.tamper_next_id_token(Tamper::sign(Sign::WrongKey));
    let mut b = env.browser();
    let idp = b.authorize("/failed-once").await;
    let path = callback_path(&idp);
    failures.extend(refused(&b.get(&path).await, "tampered token"));
    let again = b.get(&path).await;
    if again.status != 400 || sets_session(&again) {
        failures.push(format!("replay after a failed exchange: {}", again.status));
    }

    // A state refused by the provider is spent too.
    let mut b = env.browser();
    let idp = b.authorize("/provider-error").await;
    let path = callback_path(&idp);
    let state = support::browser::query_param(&path, "state").unwrap();
    let r = b
        .get(&format!(
            "/.jumpgate/callback?error=access_denied&state={}",
            encode(&state)
        ))
        .await;
    failures.extend(refused(&r, "provider error"));
    let r = b.get(&path).await;
    if r.status != 400 || sets_session(&r) {
        failures.push(format!(
            "the real code after a provider error: {}",
            r.status
        ));
    }

    // Authorization-code injection: a code issued for another browser's sign-in, delivered
    // with this browser's state. PKCE and the nonce bind a code to the sign-in it was
    // issued for.
    let mut victim = env.browser();
    let victim_idp = victim.authorize("/victim").await;
    let mut attacker = env.browser();
    let attacker_idp = attacker.authorize("/attacker").await;
    let victim_state = support::browser::query_param(&callback_path(&victim_idp), "state").unwrap();
    let attacker_code =
        support::browser::query_param(&callback_path(&attacker_idp), "code").unwrap();
    let r = victim
        .get(&format!(
            "/.jumpgate/callback?code={}&state={}",
            encode(&attacker_code),
            encode(&victim_state)
        ))
        .await;
    failures.extend(refused(&r, "another sign-in's code"));

    // Parameter pollution: a forged state or code placed before the real ones.
    for (name, order) in [
        ("forged state first", "state=forged&code={C}&state={S}"),
        ("forged code first", "code=forged&code={C}&state={S}"),
        ("empty state first", "state=&state={S}&code={C}"),
    ] {
        let mut b = env.browser();
        let idp = b.authorize("/pollution").await;
        let path = callback_path(&idp);
        let s = support::browser::query_param(&path, "state").unwrap();
        let code = support::browser::query_param(&path, "code").unwrap();
        let q = order
            .replace("{C}", &encode(&code))
            .replace("{S}", &encode(&s));
        let r = b.get(&format!("/.jumpgate/callback?{q}")).await;
        failures.extend(refused(&r, name));
    }

    // Control: an untouched sign-in still works after all of the above.
    let mut b = env.browser();
    if b.sign_in("/control").await.status != 200 {
        failures.push("control sign-in failed".into());
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_planted_before_sign_in_is_never_the_session_after_it() {
    let env = SignInEnv::start().await;
    let mallory = add_mallory(&env);
    let mut failures = Vec::new();
    // Values an attacker can know: her own logged-out session, a random well-formed value,
    // junk, and her live login-binding cookie.
    env.fake.set_next_login(Some(&mallory));
    let mut m = env.browser();
    assert_eq!(m.sign_in("/m").await.status, 200);
    let dead = m.cookie(SESSION).unwrap();
    let out = m.logout().await;
    assert!(
        matches!(out.status.as_u16(), 200 | 302),
        "logout: {}",
        out.status
    );
    assert_eq!(whoami(&env, &[&format!("{SESSION}={dead}")]).await, None);
    let mut m2 = env.browser();
    let start = m2.get("/m2").await;
    let binding = set_value(&start, LOGIN).unwrap();
    let well_formed = format!("{}.{}", "A".repeat(43), "B".repeat(43));
    let planted = [dead.clone(), well_formed, "fixated".to_owned(), binding];

    env.fake.set_next_login(Some(&env.alice));
    for value in &planted {
        let mut b = env.browser();
        b.set_cookie(SESSION, value);
        let page = b.sign_in("/fixation").await;
        if page.status != 200 {
            failures.push(format!(
                "planted {value:.20}: sign-in failed {}",
                page.status
            ));
            continue;
        }
        let now = b.cookie(SESSION).unwrap_or_default();
        if &now == value {
            failures.push(format!("planted {value:.20}: kept as the session"));
        }
        if whoami(&env, &[&format!("{SESSION}={value}")])
            .await
            .is_some()
        {
            failures.push(format!(
                "planted {value:.20}: signed in after the victim's sign-in"
            ));
        }
        if whoami(&env, &[&format!("{SESSION}={now}")])
            .await
            .as_deref()
            != Some(env.alice.as_str())
        {
            failures.push(format!(
                "planted {value:.20}: the new session is not alice's"
            ));
        }
    }
    // Signing in again over a live session issues a new session id.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/again").await.status, 200);
    let before = b.cookie(SESSION).unwrap();
    let cb = b.sign_in_callback("/.jumpgate/sign-in?rd=/again").await;
    if set_value(&cb, SESSION).is_none_or(|v| v == before) {
        failures.push("a second sign-in kept the session id".into());
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_host_only_and_tossed_cookies_neither_break_nor_hijack_a_session() {
    let env = SignInEnv::start().await;
    let mallory = add_mallory(&env);
    let mut failures = Vec::new();
    // Every Set-Cookie of a whole sign-in, a page view and a logout.
    let mut b = env.browser();
    let mut lines = Vec::new();
    let start = b.get("/toss").await;
    lines.extend(set_cookies(&start));
    let idp = idp_get(&location(&start)).await;
    let cb = b.follow(&idp).await;
    lines.extend(set_cookies(&cb));
    let page = b.follow(&cb).await;
    assert_eq!(page.status, 200);
    lines.extend(set_cookies(&page));
    let real = b.cookie(SESSION).unwrap();
    let mut b2 = b.clone();
    let out = b2.logout().await;
    lines.extend(set_cookies(&out));
    // b2's logout ended the session; sign in again for the tossing cases.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/toss").await.status, 200);
    let real_after = b.cookie(SESSION).unwrap();
    assert_ne!(real, real_after);
    let real = real_after;
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        let attrs: Vec<&str> = lower.split(';').skip(1).map(str::trim).collect();
        if !line.starts_with("__Host-") {
            failures.push(format!("cookie without the __Host- prefix: {line}"));
        }
        if attrs.iter().any(|a| a.starts_with("domain")) {
            failures.push(format!("Domain attribute: {line}"));
        }
        if !attrs.contains(&"path=/") || attrs.iter().filter(|a| a.starts_with("path")).count() != 1
        {
            failures.push(format!("not exactly Path=/: {line}"));
        }
        for must in ["secure", "httponly"] {
            if !attrs.contains(&must) {
                failures.push(format!("no {must}: {line}"));
            }
        }
        if !attrs
            .iter()
            .any(|a| *a == "samesite=lax" || *a == "samesite=strict")
        {
            failures.push(format!("no SameSite=Lax/Strict: {line}"));
        }
    }
    // Tossed cookies: forged values with the same name, before or after the real one, in
    // one Cookie header or several, never break the session or put someone else in it.
    env.fake.set_next_login(Some(&mallory));
    let mut m = env.browser();
    assert_eq!(m.sign_in("/m").await.status, 200);
    let m_cookie = m.cookie(SESSION).unwrap();
    let mut m_out = m.clone();
    m_out.logout().await;
    let forged = format!("{}.{}", "A".repeat(43), "B".repeat(43));
    let alice = Some(env.alice.clone());
    let cases: Vec<(&str, Vec<String>, Option<String>)> = vec![
        ("control", vec![format!("{SESSION}={real}")], alice.clone()),
        (
            "forged first",
            vec![format!("{SESSION}=forged; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "forged last",
            vec![format!("{SESSION}={real}; {SESSION}=forged")],
            alice.clone(),
        ),
        (
            "well-formed forgery first",
            vec![format!("{SESSION}={forged}; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "a dead session first",
            vec![format!("{SESSION}={m_cookie}; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "empty first",
            vec![format!("{SESSION}=; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "oversized first",
            vec![format!("{SESSION}={}; {SESSION}={real}", "A".repeat(4000))],
            alice.clone(),
        ),
        (
            "forged in a Cookie header of its own, first",
            vec![format!("{SESSION}={forged}"), format!("{SESSION}={real}")],
            alice.clone(),
        ),
        (
            "many junk cookies around it",
            vec![format!(
                "{}; {SESSION}={real}; {}",
                (0..60)
                    .map(|i| format!("junk{i}={}", "j".repeat(100)))
                    .collect::<Vec<_>>()
                    .join("; "),
                (0..60)
                    .map(|i| format!("more{i}=x"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )],
            alice.clone(),
        ),
        (
            "lower-case prefix",
            vec![format!("__host-jumpgate={real}")],
            None,
        ),
        ("other case", vec![format!("__HOST-JUMPGATE={real}")], None),
        ("prefix missing", vec![format!("jumpgate={real}")], None),
        (
            "the login cookie's name",
            vec![format!("{LOGIN}={real}")],
            None,
        ),
        (
            "a value with a suffix",
            vec![format!("{SESSION}={real}x")],
            None,
        ),
        (
            "a truncated value",
            vec![format!("{SESSION}={}", &real[..86])],
            None,
        ),
    ];
    for (name, headers, want) in cases {
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let got = whoami(&env, &refs).await;
        if got != want {
            failures.push(format!("{name}: signed in as {got:?}, want {want:?}"));
        }
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refuses_cross_site_requests_and_keeps_the_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/csrf").await.status, 200);
    let cookie = format!("{SESSION}={}", b.cookie(SESSION).unwrap());
    let port = env.gw.addr.port();
    let origin = format!("https://app.test:{port}");
    let evil_sub = format!("https://app.test.evil.example:{port}");
    let http_origin = format!("http://app.test:{port}");
    let sibling = format!("https://other.test:{port}");
    let mut failures = Vec::new();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("GET", vec![("sec-fetch-site", "cross-site")]),
        ("GET", vec![("sec-fetch-site", "CROSS-SITE")]),
        ("GET", vec![("sec-fetch-site", "same-site")]),
        (
            "GET",
            vec![("sec-fetch-site", "cross-site"), ("referer", &origin)],
        ),
        ("POST", vec![("sec-fetch-site", "cross-site")]),
        ("POST", vec![("sec-fetch-site", "same-site")]),
        ("POST", vec![("origin", "https://evil.example")]),
        ("POST", vec![("origin", "null")]),
        ("POST", vec![("origin", &evil_sub)]),
        ("POST", vec![("origin", &http_origin)]),
        ("POST", vec![("origin", &sibling)]),
        ("POST", vec![("origin", "https://app.test")]),
        (
            "POST",
            vec![
                ("sec-fetch-site", "none"),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "POST",
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "POST",
            vec![("origin", &origin), ("sec-fetch-site", "cross-site")],
        ),
    ];
    for (method, headers) in &cases {
        let mut req = Request::builder()
            .method(*method)
            .uri("/.jumpgate/logout")
            .header("host", "app.test")
            .header("cookie", &cookie);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = env
            .gw
            .client()
            .send("app.test", req.body(Full::new(Bytes::new())).unwrap())
            .await;
        if r.status != 403 || !set_cookies(&r).is_empty() {
            failures.push(format!(
                "{method} {headers:?}: want 403 without Set-Cookie, got {} {:?}",
                r.status,
                set_cookies(&r)
            ));
        }
        if whoami(&env, &[&cookie]).await.as_deref() != Some(env.alice.as_str()) {
            failures.push(format!("{method} {headers:?}: the session ended"));
            break;
        }
    }
    // Methods other than GET and POST change nothing.
    for method in ["PUT", "DELETE", "PATCH"] {
        let req = Request::builder()
            .method(method)
            .uri("/.jumpgate/logout")
            .header("host", "app.test")
            .header("cookie", &cookie)
            .header("origin", &origin)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = env.gw.client().send("app.test", req).await;
        if r.status.is_success() || r.status.is_redirection() {
            failures.push(format!("{method} logout answered {}", r.status));
        }
    }
    if whoami(&env, &[&cookie]).await.as_deref() != Some(env.alice.as_str()) {
        failures.push("the session ended before the legitimate logout".into());
    }
    // Control: a same-origin logout ends the session.
    let r = b
        .request(
            "POST",
            "/.jumpgate/logout",
            &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        )
        .await;
    if !matches!(r.status.as_u16(), 200 | 302) || whoami(&env, &[&cookie]).await.is_some() {
        failures.push(format!(
            "same-origin logout did not end the session: {}",
            r.status
        ));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// ID-token header tricks and time claims (beyond tests/it/signin_attacks.rs)
// ---------------------------------------------------------------------------------------

fn jwks_fetches(env: &SignInEnv) -> usize {
    env.fake
        .requests()
        .iter()
        .filter(|r| r.path == "/.well-known/jwks.json")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_injection_and_key_url_headers_never_choose_the_key() {
    let env = SignInEnv::start().await;
    let base = env.fake.base_url();
    let kid = env.fake.current_kid();
    let mut failures = Vec::new();
    let fetches_before = jwks_fetches(&env);
    // Correctly signed by the provider's key, but naming a key that does not exist.
    let injected: Vec<Value> = vec![
        json!("../../../../etc/passwd"),
        json!("../../.well-known/jwks.json"),
        json!(format!("{base}/.well-known/jwks.json")),
        json!("' OR '1'='1"),
        json!("1; DROP TABLE keys;--"),
        json!(format!("{kid}\u{0}")),
        json!(format!("{kid} ")),
        json!(kid.to_uppercase()),
        json!("%00"),
        json!("k".repeat(4000)),
        json!("k".repeat(20_000)),
        json!(7),
        json!([kid.clone()]),
        json!({"kid": kid.clone()}),
    ];
    for k in injected {
        let label: String = k.to_string().chars().take(40).collect();
        let v = k.clone();
        env.fake
            .tamper_next_id_token(Tamper::header(move |h| h["kid"] = v));
        let mut b = env.browser();
        let cb = b.sign_in_callback("/kid").await;
        failures.extend(refused(&cb, &format!("kid {label}")));
    }
    let refetches = jwks_fetches(&env) - fetches_before;
    if refetches > 2 {
        failures.push(format!("injected kids caused {refetches} key-set fetches"));
    }
    // jku, x5u, x5c and an embedded jwk name other keys; with the real kid and the
    // provider's signature the token is fine and those headers are ignored...
    let attacker = format!("{base}/attacker");
    let extras = {
        let a = attacker.clone();
        move |h: &mut Value| {
            h["jku"] = format!("{a}/jwks.json").into();
            h["x5u"] = format!("{a}/cert.pem").into();
            h["x5c"] =
                json!(["MIIBszCCAVmgAwIBAgIUQ0ZGRkZGRkZGRkZGRkZGRkZGRkZGRkYwCgYIKoZIzj0EAwI="]);
            h["jwk"] = json!({"kty": "RSA", "n": "sXch", "e": "AQAB", "kid": "attacker"});
        }
    };
    env.fake
        .tamper_next_id_token(Tamper::header(extras.clone()));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/ignored").await;
    if cb.status != 302 || !sets_session(&cb) {
        failures.push(format!(
            "real key with jku/x5u/x5c/jwk present: {}",
            cb.status
        ));
    }
    // ...and when the signature is another key's, they do not make it acceptable.
    for (name, sign, kid_header) in [
        (
            "signed by another key, real kid",
            Sign::WrongKey,
            Some(kid.clone()),
        ),
        ("signed by another key, no kid", Sign::WrongKey, None),
        ("unknown kid", Sign::UnknownKid, None),
    ] {
        let extras = extras.clone();
        env.fake.tamper_next_id_token(Tamper {
            header: Some(Box::new(move |h: &mut Value| {
                extras(h);
                match &kid_header {
                    Some(k) => h["kid"] = k.clone().into(),
                    None if sign == Sign::WrongKey => {
                        h.as_object_mut().unwrap().remove("kid");
                    }
                    None => {}
                }
            })),
            sign,
            claims: None,
        });
        let mut b = env.browser();
        let cb = b.sign_in_callback("/foreign-key").await;
        failures.extend(refused(&cb, name));
    }
    let fetched: Vec<String> = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/attacker"))
        .map(|r| r.path.clone())
        .collect();
    if !fetched.is_empty() {
        failures.push(format!("fetched URLs named by token headers: {fetched:?}"));
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_time_claims_at_and_beyond_the_allowed_skew() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();
    let now = unix_now();
    // (case, claim edit, accepted?) — the gateway allows 120 s of skew.
    type Edit = Box<dyn FnOnce(&mut Value) + Send>;
    let cases: Vec<(&str, Edit, bool)> = vec![
        (
            "iat 60 s ahead (within skew)",
            Box::new(move |c| c["iat"] = (now + 60).into()),
            true,
        ),
        (
            "iat 200 s ahead",
            Box::new(move |c| c["iat"] = (now + 200).into()),
            false,
        ),
        (
            "iat a year ahead",
            Box::new(move |c| c["iat"] = (now + 365 * 86400).into()),
            false,
        ),
        (
            "iat far future as a float",
            Box::new(move |c| c["iat"] = json!((now + 10_000) as f64 + 0.5)),
            false,
        ),
        (
            "iat as a string",
            Box::new(move |c| c["iat"] = now.to_string().into()),
            false,
        ),
        (
            "iat missing",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            false,
        ),
        (
            "exp 60 s ago (within skew)",
            Box::new(move |c| c["exp"] = (now - 60).into()),
            true,
        ),
        (
            "exp as a string",
            Box::new(move |c| c["exp"] = (now + 3600).to_string().into()),
            false,
        ),
        ("exp 0", Box::new(|c| c["exp"] = 0.into()), false),
        ("exp negative", Box::new(|c| c["exp"] = (-1).into()), false),
        // No date at all: openidconnect refuses a time it cannot represent, and nothing
        // overflows on the way.
        (
            "iat negative, far past",
            Box::new(|c| c["iat"] = json!(-1e300)),
            false,
        ),
        (
            "iat a day ago",
            Box::new(move |c| c["iat"] = (now - 86400).into()),
            true,
        ),
    ];
    for (name, edit, accept) in cases {
        env.fake.tamper_next_id_token(Tamper {
            claims: Some(edit),
            ..Tamper::default()
        });
        let mut b = env.browser();
        let cb = b.sign_in_callback("/time").await;
        let ok = cb.status == 302 && sets_session(&cb);
        if ok != accept {
            failures.push(format!(
                "{name}: want accepted={accept}, got {} (session {ok})",
                cb.status
            ));
        }
        if cb.status.as_u16() >= 500 && cb.status != 502 {
            failures.push(format!("{name}: {}", cb.status));
        }
    }
    report(failures);
}

/// RFC 7519 §4.1.5: a JWT "MUST NOT be accepted for processing" before its `nbf`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_not_yet_valid_is_refused() {
    let env = SignInEnv::start().await;
    let now = unix_now();
    env.fake
        .tamper_next_id_token(Tamper::claims(move |c| c["nbf"] = (now + 3600).into()));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/nbf").await;
    report(refused(&cb, "nbf an hour ahead").into_iter().collect());
}

/// An `exp` at the edge of the integer range is refused like any other bad expiry, not
/// by a panic in the request task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exp_at_the_integer_limit_is_refused_without_a_panic() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();
    for (name, exp) in [
        ("exp i64::MAX", json!(i64::MAX)),
        ("exp 1e300", json!(1e300)),
    ] {
        env.fake
            .tamper_next_id_token(Tamper::claims(move |c| c["exp"] = exp));
        let mut b = env.browser();
        let first = b.get("/exp").await;
        let idp = idp_get(&location(&first)).await;
        let path = callback_path(&idp);
        let req = Request::get(path.as_str())
            .header("host", "app.test")
            .header("cookie", b.cookie_header().unwrap_or_default())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let tls = b.client.connect("app.test", &[b"http/1.1"]).await;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        match sender.send_request(req).await {
            Ok(resp) => {
                let r = support::collect(resp).await;
                failures.extend(refused(&r, name));
            }
            Err(e) => failures.push(format!("{name}: no answer ({e}): the request task died")),
        }
    }
    report(failures);
}

/// A segment made only of `;` parameters is an empty segment to an upstream that strips
/// parameters (Tomcat, Jetty and servlet containers do, then collapse `//`), so it must not
/// hide the segment after it from a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_only_segment_cannot_hide_a_rule() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for target in [
        "/public/;/admin",
        "/public/;x/admin",
        "/public/;jsessionid=1/admin/x",
        "/public/;/;/admin",
        "/public;/;/admin",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        let upstream = (reply.header("x-upstream") == Some("echo"))
            .then(|| reply.json()["path"].as_str().unwrap_or("").to_owned());
        let ok = (reply.status == Some(403) || reply.status == Some(400)) && upstream.is_none();
        if !ok {
            failures.push(format!(
                "{target}: want 403 (or 400), got {:?}, upstream saw {upstream:?}",
                reply.status
            ));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Cookie-header robustness
// ---------------------------------------------------------------------------------------

/// Another cookie on the same host (set by the upstream application, or tossed by a sibling
/// subdomain with `Domain=`) may hold UTF-8 bytes; browsers send it in the same `Cookie`
/// header as the gateway's. It must not hide the gateway's cookies: otherwise anyone who can
/// set a cookie on the parent domain locks every user out of sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_cookie_beside_ours_does_not_hide_the_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/utf8").await.status, 200);
    let real = b.cookie(SESSION).unwrap();
    let mut failures = Vec::new();
    for tossed in ["name=Zoë", "caf\u{e9}=1", "x=\u{1F600}", "theme=\u{ff}"] {
        let header = format!("{tossed}; {SESSION}={real}");
        let got = whoami(&env, &[&header]).await;
        if got.as_deref() != Some(env.alice.as_str()) {
            failures.push(format!(
                "{tossed:?} beside the session: signed in as {got:?}"
            ));
        }
    }
    // And a whole sign-in with such a cookie in the jar completes.
    let mut b = env.browser();
    b.set_cookie("name", "Zoë");
    let callback = b.sign_in_callback("/utf8-signin").await;
    if callback.status != 302 || !sets_session(&callback) {
        failures.push(format!(
            "sign-in with a UTF-8 cookie in the jar: {} {}",
            callback.status,
            callback.text()
        ));
    }
    report(failures);
}

/// The session and login cookies are credentials for the gateway alone: an upstream that
/// logs or echoes request headers (a debug page, an error page, `TRACE`) must never be able
/// to hand them to anyone. Other cookies reach the upstream intact, in one `Cookie` field
/// (RFC 9113 §8.2.3), whether the client spoke HTTP/1.1 or HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_cookies_never_reach_the_upstream() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/cookies").await.status, 200);
    let real = b.cookie(SESSION).unwrap();
    let mut failures = Vec::new();
    let c = env.gw.client();
    for path in ["/protected/x", "/public/x"] {
        for (shape, fields) in [
            (
                "one field",
                vec![format!("app=1; {SESSION}={real}; {SESSION}-login=l; theme=dark")],
            ),
            (
                "a field per cookie",
                vec![
                    "app=1".to_owned(),
                    format!("{SESSION}={real}"),
                    format!("{SESSION}-login=l"),
                    "theme=dark".to_owned(),
                ],
            ),
            (
                "other spellings",
                vec![format!(
                    "app=1; {SESSION}={real}; __host-jumpgate={real}; __HOST-JUMPGATE-LOGIN=x;theme=dark"
                )],
            ),
        ] {
            for h2 in [false, true] {
                let mut req = Request::get(format!("https://app.test{path}"));
                if !h2 {
                    req = req.header("host", "app.test");
                }
                for f in &fields {
                    req = req.header("cookie", f.as_str());
                }
                let req = req.body(Full::new(Bytes::new())).unwrap();
                let r = if h2 {
                    c.send_h2("app.test", req).await
                } else {
                    c.send("app.test", req).await
                };
                let what = format!("{path}, {shape}, h2 {h2}");
                if r.status != 200 || !from_echo(&r) {
                    failures.push(format!("{what}: {} {}", r.status, r.text()));
                    continue;
                }
                let seen = r.upstream_header_all("cookie");
                if seen != ["app=1; theme=dark"] {
                    failures.push(format!("{what}: upstream saw cookies {seen:?}"));
                }
                if r.text().contains(&real) {
                    failures.push(format!("{what}: the session id reached the upstream"));
                }
            }
        }
    }
    // Only the gateway's cookies: no Cookie field at all upstream.
    let req = Request::get("/protected/only")
        .header("host", "app.test")
        .header("cookie", format!("{SESSION}={real}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    if r.status != 200 || !r.upstream_header_all("cookie").is_empty() {
        failures.push(format!(
            "session cookie only: {} upstream saw {:?}",
            r.status,
            r.upstream_header_all("cookie")
        ));
    }
    report(failures);
}

/// `canonical::host` output is the site key; canonicalizing it again must not change it.
/// The spellings that have no single canonical form (empty labels, a second `:`, a port
/// that is not a number) are refused: `canonical::host` says none, and a request carrying
/// one as its Host gets 400 and is never forwarded, over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_host_is_a_fixed_point() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for host in [
        "APP.te.:84st.:8443",
        "a:b:443",
        "app.test..",
        "app.test:x:1",
        "app..test",
        "app.test:443:443",
        "app.test:99999999",
    ] {
        if let Some(h) = jumpgate::canonical::host(host) {
            let again = jumpgate::canonical::host(&h);
            if again.as_deref() != Some(&*h) {
                failures.push(format!("{host:?} -> {h:?} -> {again:?}"));
            }
        }
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        if raw_status(&text) != Some(400) || text.contains("\"x-upstream\"") {
            failures.push(format!("Host {host:?}: {:.120}", text));
        }
    }
    // Control: the canonical spelling and its variants are one site.
    for ok in ["app.test", "APP.test.", "app.test:443"] {
        assert_eq!(
            jumpgate::canonical::host(ok).as_deref(),
            Some("app.test"),
            "{ok}"
        );
        let req = format!("GET /x HTTP/1.1\r\nHost: {ok}\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        if raw_status(&text) != Some(200) {
            failures.push(format!("control Host {ok:?}: {:.120}", text));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Oversized and deeply nested inputs
// ---------------------------------------------------------------------------------------

/// Nested arrays `depth` deep, built without recursion.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// A status line of a raw answer, or `None` when the connection was simply closed.
fn raw_answer(text: &str) -> Option<u16> {
    raw_status(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_before_sign_in_never_500_loop_or_forward() {
    let env = SignInEnv::start().await;
    let c = env.gw.client();
    let mut failures = Vec::new();
    let big = "a".repeat(64 * 1024);
    let many: String = (0..60)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(1024)))
        .collect();
    let query = "q".repeat(100 * 1024);
    let cases = [
        ("64 KB header", format!("GET /big HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")),
        ("60 KB of headers", format!("GET /many HTTP/1.1\r\nHost: app.test\r\n{many}Connection: close\r\n\r\n")),
        ("100 KB query string", format!("GET /q?{query} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")),
        ("100 KB path", format!("GET /{query} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")),
        ("64 KB cookie", format!("GET /c HTTP/1.1\r\nHost: app.test\r\nCookie: {SESSION}={big}\r\nConnection: close\r\n\r\n")),
    ];
    for (name, req) in &cases {
        let text = raw_tolerant(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        match raw_answer(&text) {
            None | Some(400) | Some(414) | Some(431) => {}
            other => failures.push(format!("{name}: answered {other:?}")),
        }
    }
    // The same over HTTP/2.
    for (name, uri, header) in [
        (
            "h2 40 KB query",
            format!("https://app.test/q?{}", &query[..40 * 1024]),
            None,
        ),
        (
            "h2 64 KB header",
            "https://app.test/h".to_owned(),
            Some(big.clone()),
        ),
    ] {
        let mut req = Request::get(uri);
        if let Some(v) = header {
            req = req.header("x-big", v);
        }
        if let Ok(r) = c
            .try_send_h2("app.test", req.body(Full::new(Bytes::new())).unwrap())
            .await
        {
            if !matches!(r.status.as_u16(), 400 | 414 | 431) {
                failures.push(format!("{name}: answered {}", r.status));
            }
        }
    }
    let upstream_saw_any = env
        .gw
        .admin_get("/metrics")
        .await
        .1
        .contains("status=\"200\"");
    if upstream_saw_any {
        failures.push("an oversized request was forwarded".into());
    }

    // 10 KB of other cookies in the jar: the sign-in still works, without a loop.
    let mut b = env.browser();
    for i in 0..10 {
        b.set_cookie(&format!("app{i}"), &"v".repeat(1000));
    }
    let first = b.get("/cookies").await;
    if !is_idp_redirect(&env, &first) {
        failures.push(format!(
            "10 KB of cookies: {} instead of a sign-in redirect",
            first.status
        ));
    } else {
        let idp = idp_get(&location(&first)).await;
        let cb = b.follow(&idp).await;
        if cb.status != 302 || !sets_session(&cb) {
            failures.push(format!(
                "10 KB of cookies: callback {} {}",
                cb.status,
                cb.text()
            ));
        } else {
            let page = b.follow(&cb).await;
            if page.status != 200 || !from_echo(&page) {
                failures.push(format!(
                    "10 KB of cookies: page {} after sign-in",
                    page.status
                ));
            }
        }
    }
    // A 10 KB session cookie is no session: one redirect to sign in, never a 5xx.
    let mut b = env.browser();
    b.set_cookie(SESSION, &"A".repeat(10 * 1024));
    let r = b.get("/huge-session").await;
    if !is_idp_redirect(&env, &r) {
        failures.push(format!("10 KB session cookie: {}", r.status));
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deeply_nested_id_tokens_fail_the_sign_in_cleanly() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();
    let cases: Vec<(&str, Tamper, &[u16])> = vec![
        (
            "1 MB ID token",
            Tamper::claims(|c| c["pad"] = "x".repeat(1024 * 1024).into()),
            &[502, 503],
        ),
        (
            "20 KB ID token",
            Tamper::claims(|c| c["pad"] = "x".repeat(20 * 1024).into()),
            &[502],
        ),
        (
            "claims nested 600 deep",
            Tamper::claims(|c| c["deep"] = nested(600)),
            &[502],
        ),
        (
            "header nested 600 deep",
            Tamper::header(|h| h["deep"] = nested(600)),
            &[302, 502],
        ),
        (
            "groups claim with 5000 entries",
            Tamper::claims(|c| {
                c["memberOf"] = json!((0..5000).map(|i| format!("g{i}")).collect::<Vec<_>>())
            }),
            &[302, 502],
        ),
    ];
    for (name, tamper, allowed) in cases {
        env.fake.tamper_next_id_token(tamper);
        let mut b = env.browser();
        let cb = b.sign_in_callback("/big-token").await;
        if !allowed.contains(&cb.status.as_u16()) {
            failures.push(format!("{name}: {} {}", cb.status, cb.text()));
        }
        if cb.status != 302 && sets_session(&cb) {
            failures.push(format!("{name}: a session without a redirect"));
        }
    }
    // The gateway is unharmed: a normal sign-in works afterwards.
    let mut b = env.browser();
    if b.sign_in("/after").await.status != 200 {
        failures.push("sign-in after the oversized tokens failed".into());
    }
    report(failures);
}

/// A directory API answer nested deeper than any parser should follow fails the sync; the
/// last good snapshot ages out and protected routes fail closed (503), public routes keep
/// working, and the next clean answer restores access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_directory_json_fails_closed_and_recovers() {
    let env = SignInEnv::start_with(Options {
        limits: Options::default().limits,
        directory: Some("max_staleness = \"2s\"\n".into()),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/dir").await.status, 200);
    env.fake.directory_faults(|f: &mut DirectoryFaults| {
        f.extra_fields
            .push(("*".into(), "deep".into(), nested(600)));
    });
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while Instant::now() < deadline {
        if b.get("/dir").await.status == 503 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !closed {
        failures
            .push("protected routes never failed closed while the directory was unreadable".into());
    }
    let public = b.get("/public/x").await;
    if public.status != 200 || !from_echo(&public) {
        failures.push(format!("public route during the outage: {}", public.status));
    }
    env.fake
        .directory_faults(|f: &mut DirectoryFaults| f.extra_fields.clear());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = false;
    while Instant::now() < deadline {
        if b.get("/dir").await.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !back {
        failures.push("access did not come back after the directory recovered".into());
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Slow and abandoned clients
// ---------------------------------------------------------------------------------------

fn open_connections(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("jumpgate_open_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// Uploads abandoned mid-body (HTTP/1.1 and HTTP/2) hold no one else up, and the gateway
/// lets go of them once the upstream's answer is overdue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_neither_block_others_nor_live_forever() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &echo.url(), "public", &[]),
        "",
        "upstream_response_timeout = \"4s\"\n",
    )
    .await;
    let c = gw.client();
    let baseline = open_connections(&gw.admin_get("/metrics").await.1);
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut tls = c.connect("app.test", &[b"http/1.1"]).await;
        tls.write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10000000\r\n\r\n",
        )
        .await
        .unwrap();
        tls.write_all(&[b'u'; 16 * 1024]).await.unwrap();
        stalled.push(tls);
    }
    // HTTP/2 streams whose bodies stop after one chunk, several on one connection.
    let mut h2_tasks = Vec::new();
    for _ in 0..2 {
        let tls = c.connect("app.test", &[b"h2"]).await;
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        for _ in 0..5 {
            let mut sender = sender.clone();
            h2_tasks.push(tokio::spawn(async move {
                let body = StreamBody::new(
                    futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(
                        Frame::data(Bytes::from(vec![b'u'; 16 * 1024])),
                    )])
                    .chain(futures_util::stream::pending()),
                );
                let req = Request::post("https://app.test/upload").body(body).unwrap();
                sender.send_request(req).await.map(|r| r.status().as_u16())
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..20 {
        let t = Instant::now();
        let r = c.get("app.test", &format!("/others/{i}")).await;
        if r.status != 200 || t.elapsed() > Duration::from_secs(2) {
            failures.push(format!(
                "request {i} beside the stalled uploads: {} in {:?}",
                r.status,
                t.elapsed()
            ));
        }
    }
    if started.elapsed() > Duration::from_secs(10) {
        failures.push(format!("20 requests took {:?}", started.elapsed()));
    }
    // Each stalled HTTP/1.1 upload is answered (504) or closed once the upstream's answer is
    // overdue, not held open forever.
    let mut ended = 0;
    for tls in &mut stalled {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(8), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => ended += 1,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if raw_status(&text).is_some_and(|s| s == 504 || s == 502 || s == 400) {
                    ended += 1;
                } else {
                    failures.push(format!("stalled upload answered {:?}", text.lines().next()));
                }
            }
            Err(_) => {}
        }
    }
    if ended != stalled.len() {
        failures.push(format!(
            "{} of {} stalled uploads were still held open",
            stalled.len() - ended,
            stalled.len()
        ));
    }
    for t in h2_tasks {
        match tokio::time::timeout(Duration::from_secs(8), t).await {
            Ok(Ok(Ok(504 | 502 | 400))) | Ok(Ok(Err(_))) => {}
            other => failures.push(format!("stalled h2 upload: {other:?}")),
        }
    }
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now_open = -1.0;
    while Instant::now() < deadline {
        now_open = open_connections(&gw.admin_get("/metrics").await.1);
        if now_open <= baseline + 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if now_open > baseline + 2.0 {
        failures.push(format!(
            "open connections stayed at {now_open} (baseline {baseline})"
        ));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// The gateway's own endpoints on the public listener
// ---------------------------------------------------------------------------------------

/// Text only the admin listener produces.
fn admin_markers(body: &str) -> Vec<&'static str> {
    [
        "jumpgate_requests_total",
        "jumpgate_open_connections",
        "# TYPE",
        "# EOF",
        "not ready",
        "directory snapshot",
    ]
    .into_iter()
    .filter(|m| body.contains(m))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_debug_paths_are_never_the_gateways_own_on_the_public_listener() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        site("app.test", &echo.url(), "public", &[]),
        site("other.test", &echo.url(), "protected", &[]),
        site("enroll.test", &echo.url(), "deny", &[])
    ))
    .await;
    let c = gw.client();
    // Control: the admin listener does produce the markers.
    let (_, m) = gw.admin_get("/metrics").await;
    assert!(!admin_markers(&m).is_empty(), "{m}");
    let paths = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/metrics?format=prometheus",
        "/debug",
        "/debug/pprof/",
        "/debug/pprof/heap",
        "/debug/vars",
        "/status",
        "/server-status",
        "/_jumpgate/metrics",
        "/.well-known/jumpgate/metrics",
        "/.jumpgate/healthz",
        "/.jumpgate/readyz",
        "/.jumpgate/metrics",
        "/.jumpgate/debug/pprof",
        "/.jumpgate/status",
        "/.jumpgate/config",
        "/.JUMPGATE/metrics",
        "/.jumpgate;x/metrics",
        "/%2ejumpgate/metrics",
        "/x/../.jumpgate/metrics",
        "/.jumpgate/../metrics",
    ];
    let mut failures = Vec::new();
    for host in ["app.test", "other.test", "enroll.test"] {
        for path in paths {
            let canonical = jumpgate::canonical::path(path.split('?').next().unwrap())
                .unwrap()
                .into_owned();
            let reserved = canonical.to_ascii_lowercase().starts_with("/.jumpgate");
            let want: u16 = match (reserved, host) {
                (true, _) => 404,
                (false, "app.test") => 200,
                (false, "other.test") => 401,
                _ => 403,
            };
            for h2 in [false, true] {
                let r = if h2 {
                    let req = Request::get(format!("https://{host}{path}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    c.send_h2(host, req).await
                } else {
                    c.get(host, path).await
                };
                let text = r.text();
                let tag = if h2 { "h2 " } else { "" };
                if r.status != want || from_echo(&r) != (want == 200) {
                    failures.push(format!(
                        "{tag}{host}{path}: want {want}, got {} (upstream {})",
                        r.status,
                        from_echo(&r)
                    ));
                }
                let forwarded_as = match path.split_once('?') {
                    Some((_, q)) => format!("{canonical}?{q}"),
                    None => canonical.clone(),
                };
                if want == 200 && from_echo(&r) && r.upstream_path() != forwarded_as {
                    failures.push(format!(
                        "{tag}{host}{path}: upstream saw {}",
                        r.upstream_path()
                    ));
                }
                let found = admin_markers(&text);
                if !found.is_empty() {
                    failures.push(format!(
                        "{tag}{host}{path}: the gateway's own data {found:?}"
                    ));
                }
            }
        }
    }
    // A Host naming the admin listener's address is no site on the public listener.
    let admin_host = gw.admin.to_string();
    for host in ["127.0.0.1", "localhost", admin_host.as_str()] {
        let req = Request::get("/metrics")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = c.send("app.test", req).await;
        if r.status != 421 || !admin_markers(&r.text()).is_empty() {
            failures.push(format!("Host {host}: {}", r.status));
        }
    }
    // The plain-HTTP listener only redirects, whatever the path.
    for path in ["/metrics", "/healthz", "/readyz", "/debug/pprof/"] {
        let resp = support::plain_request(gw.redirect, path, "app.test").await;
        let status = resp.status().as_u16();
        let body = support::collect(resp).await.text();
        if status != 308 || !admin_markers(&body).is_empty() {
            failures.push(format!("redirect listener {path}: {status}"));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Secrets: never in logs, error pages, metrics or Debug output
// ---------------------------------------------------------------------------------------

/// The `jumpgate` binary as a child process, its stderr captured.
struct ChildGateway {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl ChildGateway {
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on a plain-HTTP listener that may not be up yet: (status, body), or `None`.
async fn try_plain_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let reply = parse_raw(&String::from_utf8_lossy(&out));
    Some((reply.status?, reply.body))
}

async fn start_child(env: &SignInEnv, log_level: &str) -> ChildGateway {
    let port = free_port().await;
    let admin_port = free_port().await;
    let dir = env.dir.path().join(format!("child-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let rest = env
        .rest
        .replace("directory.json", &format!("child-{port}/directory.json"));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nshutdown_grace = \"1s\"\n\n[log]\nlevel = \"{log_level}\"\naccess = true\n\n{rest}",
        env.gw.certs.cert.display(),
        env.gw.certs.key.display(),
    );
    let config = dir.join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    env.fake.update_app(CLIENT_ID, |app| {
        app.redirect_uris
            .push(format!("https://app.test:{port}/.jumpgate/callback"));
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_jumpgate"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("JUMPGATE_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let gw = ChildGateway {
        child,
        log,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = try_plain_get(gw.admin, "/readyz").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway process never became ready:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw
}

/// Every secret the gateway handles, as it could appear in text.
fn secrets_of(env: &SignInEnv, extra: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("client secret".into(), CLIENT_SECRET.into()),
        (
            "client_secret_basic credentials".into(),
            STANDARD.encode(format!("{}:{}", encode(CLIENT_ID), encode(CLIENT_SECRET))),
        ),
        ("directory API key".into(), env.fake.api_key()),
    ];
    for issued in env.fake.issued() {
        out.push(("ID token".into(), issued.id_token.clone()));
        if let Some(sig) = issued.id_token.rsplit('.').next() {
            out.push(("ID token signature".into(), sig.to_owned()));
        }
        if let Some(payload) = issued.id_token.split('.').nth(1) {
            out.push(("ID token claims".into(), payload.to_owned()));
        }
        out.push(("access token".into(), issued.access_token.clone()));
        if let Some(r) = &issued.refresh_token {
            out.push(("refresh token".into(), r.clone()));
        }
    }
    for r in env.fake.requests() {
        if r.path == "/oauth2/token" {
            for k in ["code", "code_verifier", "refresh_token", "client_secret"] {
                if let Some(v) = r.form_param(k) {
                    out.push((format!("token request {k}"), v.to_owned()));
                }
            }
        }
    }
    for file in ["session.key", "assertion.key"] {
        if let Ok(text) = std::fs::read_to_string(env.dir.path().join(file)) {
            for line in text
                .lines()
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            {
                out.push((format!("{file} contents"), line.trim().to_owned()));
            }
        }
    }
    for (i, v) in extra.iter().enumerate() {
        out.push((format!("captured value #{i}"), v.clone()));
    }
    out.retain(|(_, v)| v.len() >= 12);
    out
}

fn leaks(where_: &str, text: &str, secrets: &[(String, String)]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, v)| text.contains(v.as_str()))
        .map(|(name, _)| format!("{name} found in {where_}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_error_pages_metrics_or_debug_output() {
    let env = SignInEnv::start_with(Options {
        limits: Options::default().limits,
        directory: Some(String::new()),
        ..Options::default()
    })
    .await;
    // ID tokens that expire within the refresh margin, so the session refreshes them.
    env.fake
        .quirks(|q| q.id_token_ttl = Duration::from_secs(200));
    let gw = start_child(&env, "trace").await;
    let client = Client::new(gw.addr, &env.gw.certs.ca);
    let mut b = Browser::new(client.clone(), "app.test");
    let mut captured: Vec<String> = Vec::new();
    let mut pages: Vec<(String, String)> = Vec::new();

    let page = b.sign_in("/secret-page").await;
    assert_eq!(page.status, 200, "{}", page.text());
    if let Some(a) = page.upstream_header("x-jumpgate-assertion") {
        captured.push(a);
    }
    captured.push(b.cookie(SESSION).unwrap());
    captured.extend(b.cookie(SESSION).unwrap().split('.').map(str::to_owned));
    // A page view after sign-in starts the background refresh.
    let refreshes = || {
        env.fake
            .issued()
            .iter()
            .filter(|i| i.grant_type == "refresh_token")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while refreshes() == 0 && Instant::now() < deadline {
        assert_eq!(b.get("/after").await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refreshes() > 0, "the session never refreshed its tokens");
    // A second sign-in in progress, so a login-binding cookie exists.
    let mut other = Browser::new(client.clone(), "app.test");
    let start = other.get("/pending").await;
    if let Some(v) = set_value(&start, LOGIN) {
        captured.push(v);
    }
    // Error pages, each carrying the session cookie.
    let cookie = b.cookie_header().unwrap();
    let error_requests: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/.jumpgate/nothing", vec![]),
        ("/a%2Fb", vec![]),
        ("/.jumpgate/callback?state=forged&code=forged", vec![]),
        (
            "/.jumpgate/callback?error=server_error&state=forged",
            vec![],
        ),
        ("/.jumpgate/logout", vec![("sec-fetch-site", "cross-site")]),
        ("/.jumpgate/userinfo", vec![]),
        ("/.jumpgate/sign-in?rd=//evil", vec![]),
        ("/.jumpgate/userinfo", vec![("accept", "application/json")]),
    ];
    for (path, headers) in error_requests {
        let r = b.request("GET", path, &headers).await;
        pages.push((format!("{} {path}", r.status), r.text()));
        for (_, v) in r.headers.iter() {
            pages.push((
                format!("{path} header"),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    let raw_421 = client
        .raw(
            "app.test",
            format!("GET / HTTP/1.1\r\nHost: other.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
    pages.push(("421".into(), raw_421));
    // HTTP/2 with the cookie, so its frame logging is covered too.
    let req = Request::get("https://app.test/h2-page")
        .header("cookie", &cookie)
        .header("authorization", format!("Bearer {}", CLIENT_SECRET))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.send_h2("app.test", req).await;
    assert_eq!(r.status, 200);
    // Logout goes to the provider with the client id: a redirect to the provider, by design.
    let out = b
        .request(
            "GET",
            "/.jumpgate/logout",
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert!(matches!(out.status.as_u16(), 200 | 302));
    let metrics = try_plain_get(gw.admin, "/metrics").await.unwrap().1;
    let ready = try_plain_get(gw.admin, "/readyz").await.unwrap().1;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = gw.log();
    drop(gw);

    let secrets = secrets_of(&env, &captured);
    assert!(secrets.len() >= 10, "{secrets:?}");
    assert!(
        log.contains("signed in"),
        "the log was not captured:\n{log}"
    );
    assert!(log.lines().count() > 50, "trace logging is not on:\n{log}");
    let mut failures = leaks("the trace log", &log, &secrets);
    for (what, body) in &pages {
        failures.extend(leaks(&format!("page {what}"), body, &secrets));
    }
    failures.extend(leaks("/metrics", &metrics, &secrets));
    failures.extend(leaks("/readyz", &ready, &secrets));
    if !failures.is_empty() {
        for (name, v) in &secrets {
            if let Some(line) = log.lines().find(|l| l.contains(v.as_str())) {
                failures.push(format!("e.g. {name}: {}", &line[..line.len().min(300)]));
            }
        }
    }
    failures.sort();
    failures.dedup();
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_redacts_every_secret() {
    let text = "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[oidc]\nissuer = \"https://oauth.id.jumpcloud.com/\"\nclient_id = \"client\"\nclient_secret_env = \"JUMPGATE_TEST_UNUSED\"\n[[site]]\nhost = \"app.test\"\nupstream = \"http://127.0.0.1:8000\"\n";
    let config = jumpgate::config::parse(text, std::path::Path::new("/etc/jumpgate/gateway.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let secret_text = "hunter2-client-secret-value";
    let key_material = b"cookie-key-material-that-is-32-bytes-or-more";
    let secret = jumpgate::secret::Secret::new(secret_text.into());
    let key = jumpgate::session::cookie::CookieKey::from_bytes(key_material);
    let oidc = jumpgate::oidc::Oidc::new(config.oidc.clone().unwrap(), secret.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut identity = config.identity.clone();
    identity.signing_key_file = dir.path().join("assertion.key");
    let (signer, _) = jumpgate::identity::Signer::load_or_create(&identity).unwrap();
    let pem = std::fs::read_to_string(&identity.signing_key_file).unwrap();
    let pem_body: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    let mut failures = Vec::new();
    let dumps = [
        ("Secret", format!("{secret:?}")),
        ("CookieKey", format!("{key:?}")),
        ("Oidc", format!("{oidc:?}")),
        ("Oidc (pretty)", format!("{oidc:#?}")),
        ("Signer", format!("{signer:?}")),
        ("Config", format!("{config:?}")),
    ];
    for (what, dump) in &dumps {
        if dump.contains(secret_text) {
            failures.push(format!("{what} shows the client secret"));
        }
        if dump.contains(std::str::from_utf8(key_material).unwrap()) {
            failures.push(format!("{what} shows the cookie key"));
        }
        for line in &pem_body {
            if dump.contains(line) {
                failures.push(format!("{what} shows the signing key"));
            }
        }
    }
    assert_eq!(secret.expose(), secret_text);
    report(failures);
}

/// `server.limits.max_header_bytes` is documented as the largest request header section;
/// a section above it is refused with 431, whether one big field or many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_sections_over_max_header_bytes_are_refused() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for kb in [34usize, 40, 46] {
        let n = kb * 1024 / 1030;
        let many: String = (0..n)
            .map(|i| format!("X-Pad-{i:04}: {}\r\n", "p".repeat(1016)))
            .collect();
        let one = format!("X-Big: {}\r\n", "b".repeat(kb * 1024));
        for (shape, headers) in [("many fields", many), ("one field", one)] {
            let req =
                format!("GET /h HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n");
            let text = raw_tolerant(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
            if raw_status(&text) != Some(431) {
                failures.push(format!("{kb} KB in {shape}: {:?}", raw_status(&text)));
            }
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Forward-auth (`/.jumpgate/verify`) with incomplete questions
// ---------------------------------------------------------------------------------------

/// A forward-auth call is a question about another request, described by the front proxy's
/// `X-Forwarded-*` headers. A proxy that leaves one out (nginx `auth_request` sends none of
/// them unless configured to) must get a refusal, not a decision about `/` or `GET`: the
/// front proxy applies the answer to whatever the client really asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_without_the_original_uri_fails_closed() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site(
            "app.test",
            &echo.url(),
            "public",
            &[("/admin", "protected")],
        ),
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    )
    .await;
    let c = gw.client();
    let mut failures = Vec::new();
    // Control: a complete question about /admin is refused (no session).
    for (name, headers, refused) in [
        (
            "complete question about /admin",
            vec![
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-method", "GET"),
            ],
            true,
        ),
        (
            "complete question about /",
            vec![
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/"),
                ("x-forwarded-method", "GET"),
            ],
            false,
        ),
        (
            "no X-Forwarded-Uri",
            vec![
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-method", "GET"),
            ],
            true,
        ),
        (
            "no X-Forwarded-Uri nor method",
            vec![("x-forwarded-host", "app.test")],
            true,
        ),
    ] {
        let (status, _) = support::ask_verify(gw.verify, &headers).await;
        let allowed = (200..300).contains(&status);
        if allowed == refused {
            failures.push(format!("{name}: answered {status}"));
        }
        // The public listener is never forward-auth, whatever the question.
        let mut req = Request::get("/.jumpgate/verify").header("host", "app.test");
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = c
            .send("app.test", req.body(Full::new(Bytes::new())).unwrap())
            .await;
        if r.status != 404 {
            failures.push(format!("{name}: the public listener answered {}", r.status));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Upgrade smuggling
// ---------------------------------------------------------------------------------------

/// An upstream that accepts any `Upgrade` with 101 (as an h2c-capable server does) and
/// records every byte that arrives after the switch.
async fn upgrading_upstream() -> (SocketAddr, Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunneled = Arc::new(Mutex::new(Vec::new()));
    let sink = tunneled.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(end) = fill_until(&mut s, &mut buf, b"\r\n\r\n").await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                buf.drain(..end);
                let upgrade = head
                    .lines()
                    .find_map(|l| l.strip_prefix("upgrade:"))
                    .map(|v| v.trim().to_owned());
                let Some(proto) = upgrade else {
                    let body = "{\"upgraded\":false}";
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: raw\r\nConnection: close\r\n\r\n{body}", body.len())
                                .as_bytes(),
                        )
                        .await;
                    return;
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
                sink.lock().unwrap().extend_from_slice(&buf);
                let mut chunk = [0u8; 4096];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await
                {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
        }
    });
    (addr, tunneled, task)
}

/// h2c upgrade smuggling: a client asks a public route to switch to cleartext HTTP/2; if the
/// gateway passes the upgrade on and tunnels the connection, every later request on it goes
/// straight to the upstream, past routing and policy (here, to a denied path). Only
/// protocols the gateway means to tunnel (WebSocket) may be upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_other_non_websocket_upgrades_are_never_tunneled() {
    let (addr, tunneled, _task) = upgrading_upstream().await;
    let gw = path_gateway(&format!("http://{addr}")).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for (proto, connection) in [
        ("h2c", "Upgrade, HTTP2-Settings"),
        ("H2C", "upgrade"),
        ("tls/1.2", "Upgrade"),
        ("custom-protocol", "Upgrade"),
    ] {
        tunneled.lock().unwrap().clear();
        let mut tls = c.connect("app.test", &[b"http/1.1"]).await;
        let req = format!(
            "GET /public/x HTTP/1.1\r\nHost: app.test\r\nConnection: {connection}\r\nUpgrade: {proto}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        // Whatever the answer, try to use the connection as a tunnel.
        let _ = tls
            .write_all(b"GET /public/admin HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let inside = String::from_utf8_lossy(&tunneled.lock().unwrap()).into_owned();
        if raw_status(&answer) == Some(101) || inside.contains("/public/admin") {
            failures.push(format!(
                "Upgrade: {proto}: answered {:?}, the upstream received through a tunnel {inside:?}",
                answer.lines().next()
            ));
        }
    }
    report(failures);
}
