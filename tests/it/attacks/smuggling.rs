//! Request smuggling: ambiguous HTTP/1.1 framing, malformed HTTP/2 requests, and upgrades
//! that are not a real WebSocket answer.

use super::prelude::*;

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
