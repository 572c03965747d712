//! The reverse proxy end to end: real TLS in, real HTTP upstream, routing, header hygiene,
//! errors and the admin and redirect listeners.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{raw_status, site, Echo, Gateway};

#[tokio::test]
async fn public_route_reaches_upstream_and_protected_does_not() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site(
        "app.test",
        &echo.url(),
        "protected",
        &[("/api/v1/health", "public"), ("/blocked", "deny")],
    ))
    .await;
    let c = gw.client();

    let r = c.get("app.test", "/api/v1/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_path(), "/api/v1/health");
    assert_eq!(r.headers["x-upstream"], "echo");

    // Segment boundary: /api/v1/healthz is not /api/v1/health.
    let r = c.get("app.test", "/api/v1/healthz").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Sign-in required"));
    assert!(
        r.headers.get("x-upstream").is_none(),
        "a protected route must never be forwarded"
    );

    let r = c.get("app.test", "/blocked/x").await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("x-upstream").is_none());
}

#[tokio::test]
async fn unknown_host_is_421_and_sni_must_match_host() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}",
        site("app.test", &echo.url(), "public", &[]),
        site("other.test", &echo.url(), "protected", &[])
    ))
    .await;
    let c = gw.client();
    let r = c.get("localhost", "/").await;
    assert_eq!(r.status, 421);

    // SNI names the public site, Host the protected one: refused, not routed by either.
    let req = Request::get("/")
        .header("host", "other.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 421);

    // Host is case-insensitive and a trailing dot is ignored.
    let req = Request::get("/x")
        .header("host", "APP.test.")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("host"),
        Some(format!("app.test:{}", gw.addr.port())),
        "the upstream gets the site's host and public port, never the client's spelling"
    );
}

#[tokio::test]
async fn errors_are_html_or_json_by_accept() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "protected", &[])).await;
    let c = gw.client();
    let req = Request::get("/")
        .header("host", "app.test")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json()["error"], "sign_in_required");
    let req = Request::get("/")
        .header("host", "app.test")
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().contains("<h1>Sign-in required</h1>"));
}

#[tokio::test]
async fn hop_by_hop_headers_removed_both_ways() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let req = Request::get("/h")
        .header("host", "app.test")
        .header("connection", "keep-alive, x-drop-me, X-Also")
        .header("x-drop-me", "1")
        .header("x-also", "1")
        .header("keep-alive", "timeout=9")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("upgrade", "h2c")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 200);
    for gone in [
        "x-drop-me",
        "x-also",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert_eq!(r.upstream_header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(r.upstream_header("x-kept").as_deref(), Some("yes"));
    // The upstream's own hop-by-hop headers do not reach the client.
    assert!(r.headers.get("x-upstream-private").is_none());
    assert!(r.headers.get("keep-alive").is_none());
}

#[tokio::test]
async fn forwarded_headers_are_ours_from_untrusted_clients() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let req = Request::get("/f")
        .header("host", "app.test")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.upstream_header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("app.test")
    );
    assert_eq!(r.upstream_header("x-real-ip"), None);
    assert_eq!(r.upstream_header("forwarded"), None);
}

#[tokio::test]
async fn forwarded_chain_kept_from_trusted_proxy() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &echo.url(), "public", &[]),
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    )
    .await;
    let c = gw.client();
    let req = Request::get("/f")
        .header("host", "app.test")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[tokio::test]
async fn identity_headers_from_clients_are_stripped_on_every_route() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let raw = b"GET /id HTTP/1.1\r\nHost: app.test\r\nX-Jumpgate-User: admin\r\nx-jumpgate-email: a@b\r\nX_Jumpgate_Groups: admins\r\nX-JUMPGATE-ASSERTION: e30\r\nx-jumpgate-user: again\r\nConnection: close\r\n\r\n";
    let text = c.raw("app.test", raw, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&text), Some(200), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let lower = body.to_ascii_lowercase();
    assert!(
        !lower.contains("jumpgate"),
        "identity header reached upstream: {body}"
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port nobody listens on: bind then drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}\n{}upstream_response_timeout = \"300ms\"\n",
        site("other.test", &format!("http://{dead}"), "public", &[]),
        site("app.test", &echo.url(), "public", &[]),
    ))
    .await;
    let c = gw.client();
    let r = c.get("other.test", "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("could not be reached"));
    let r = c.get("app.test", "/slow/2000").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        !r.text().contains("127.0.0.1"),
        "no internal detail in error pages"
    );
    let r = c.get("app.test", "/slow/10").await;
    assert_eq!(r.status, 200);
    let metrics = gw.admin_get("/metrics").await.1;
    assert!(
        metrics.contains("jumpgate_upstream_errors_total{site=\"app.test\",kind=\"Timeout\"} 1"),
        "{metrics}"
    );
}

/// Requests are counted under the site and route they matched, for every route of every site
/// (the counters are kept per route, found by the route's place in the configuration), and
/// under `-` when no site matched.
#[tokio::test]
async fn requests_are_counted_under_the_route_they_matched() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}",
        site("other.test", &echo.url(), "public", &[]),
        site(
            "app.test",
            &echo.url(),
            "protected",
            &[
                ("/api", "public"),
                ("/blocked", "deny"),
                ("/API/v2", "public")
            ]
        )
    ))
    .await;
    let c = gw.client();
    for (host, path, status) in [
        ("app.test", "/api/x", 200),
        ("app.test", "/api/y", 200),
        ("app.test", "/blocked/z", 403),
        ("app.test", "/API/v2/q", 200),
        ("app.test", "/elsewhere", 401),
        ("other.test", "/", 200),
        ("localhost", "/", 421),
    ] {
        assert_eq!(c.get(host, path).await.status, status, "{host}{path}");
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    for line in [
        "jumpgate_requests_total{site=\"app.test\",route=\"/api\",status=\"200\"} 2",
        "jumpgate_requests_total{site=\"app.test\",route=\"/blocked\",status=\"403\"} 1",
        "jumpgate_requests_total{site=\"app.test\",route=\"/API/v2\",status=\"200\"} 1",
        "jumpgate_requests_total{site=\"app.test\",route=\"*\",status=\"401\"} 1",
        "jumpgate_requests_total{site=\"other.test\",route=\"*\",status=\"200\"} 1",
        "jumpgate_requests_total{site=\"-\",route=\"-\",status=\"421\"} 1",
        "jumpgate_request_duration_seconds_count{site=\"app.test\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn admin_endpoints_only_on_admin_listener() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("localhost", &echo.url(), "public", &[])).await;
    assert_eq!(gw.admin_get("/healthz").await.0, 200);
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    let c = gw.client();
    let r = c.get("localhost", "/x").await;
    assert_eq!(r.status, 200);
    let (status, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("jumpgate_requests_total{site=\"localhost\",route=\"*\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("jumpgate_tls_handshakes_total{outcome=\"Ok\"}"));
    assert!(metrics.contains("jumpgate_request_duration_seconds"));
    assert!(metrics.contains("jumpgate_open_connections"));
    // On the public listener these paths belong to the upstream, not the gateway.
    let r = c.get("localhost", "/metrics").await;
    assert_eq!(r.upstream_path(), "/metrics");
}

#[tokio::test]
async fn plain_http_redirects_to_https_for_known_sites_only() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let resp = support::plain_request(gw.redirect, "/a/b?c=d", "app.test").await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{}/a/b?c=d", gw.addr.port())
    );
    let resp = support::plain_request(gw.redirect, "/", "evil.example").await;
    assert_eq!(resp.status(), 421);
}

/// The upstream receives the canonical path with the query exactly as sent: the client's own
/// target when it was already canonical, a rebuilt one when the path had to change.
#[tokio::test]
async fn the_upstream_gets_the_canonical_path_and_the_query_as_sent() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    for (sent, forwarded) in [
        ("/a/b", "/a/b"),
        ("/a/b?x=1&y=%2F", "/a/b?x=1&y=%2F"),
        ("/a/b?", "/a/b?"),
        ("/a/./b?x=1", "/a/b?x=1"),
        ("//a/../b?q=%2e%2e/", "/b?q=%2e%2e/"),
        ("/%61pi?v", "/api?v"),
        ("/a/.", "/a/"),
    ] {
        let r = c.get("app.test", sent).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(r.upstream_path(), forwarded, "{sent}");
        let req = Request::get(format!("https://app.test{sent}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = c.send_h2("app.test", req).await;
        assert_eq!(r.status, 200, "{sent} over HTTP/2: {}", r.text());
        assert_eq!(r.upstream_path(), forwarded, "{sent} over HTTP/2");
    }
}

#[tokio::test]
async fn http2_client_is_proxied() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let req = Request::get("https://app.test/h2/path?q=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send_h2("app.test", req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_path(), "/h2/path?q=1");
    assert_eq!(
        r.upstream_header("host"),
        Some(format!("app.test:{}", gw.addr.port()))
    );
    assert_eq!(r.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn gateway_namespace_is_never_forwarded_in_any_spelling() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    for path in [
        "/.jumpgate/x",
        "/.JUMPGATE/x",
        "/.JumpGate/logout",
        "/.jumpgate;x/y",
        "/.jumpgate",
        "/a/../.jumpgate/x",
    ] {
        let r = c.get("app.test", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.headers.get("x-upstream").is_none(),
            "{path} reached the upstream"
        );
    }
}

/// An HTTP/1.1 upstream that counts the connections it accepts. `/big` is answered with
/// 4 MiB sent slowly, `/chunked` with `ok` in chunked framing, a path ending in `/slow/MS`
/// with `ok` after that many milliseconds, anything else with `ok` (HEAD without it); with
/// `close_after` set it closes each connection after its answer, without saying so, and with
/// `close_idle` set it does so once a connection has been idle for 50 ms, as an upstream's
/// idle timeout does, counting in `released` those the gateway then closes too.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    close_after: std::sync::Arc<std::sync::atomic::AtomicBool>,
    close_idle: std::sync::Arc<std::sync::atomic::AtomicBool>,
    released: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingUpstream {
    async fn start() -> CountingUpstream {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let close_after = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let close_idle = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let released = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, close, idle, gone) = (
            accepted.clone(),
            close_after.clone(),
            close_idle.clone(),
            released.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (close, idle, gone) = (close.clone(), idle.clone(), gone.clone());
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = Vec::new();
                    loop {
                        let next = support::raw::fill_until(&mut s, &mut buf, b"\r\n\r\n");
                        let next = match idle.load(Ordering::SeqCst) {
                            true => {
                                let Ok(next) =
                                    tokio::time::timeout(Duration::from_millis(50), next).await
                                else {
                                    // Idle too long: closed on our side, then waiting for
                                    // the gateway to close its side too.
                                    let _ = s.shutdown().await;
                                    let mut rest = [0u8; 64];
                                    while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
                                    gone.fetch_add(1, Ordering::SeqCst);
                                    return;
                                };
                                next
                            }
                            false => next.await,
                        };
                        let Some(end) = next else { return };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        if head.starts_with("GET /big ") {
                            let size = 4 << 20;
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                            if s.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            for _ in 0..size / 65536 {
                                if s.write_all(&[b'x'; 65536]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        } else {
                            let target = head.split(' ').nth(1).unwrap_or("");
                            if let Some((_, ms)) = target.rsplit_once("/slow/") {
                                let ms = ms.parse().unwrap_or(0);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let answer: &[u8] = if head.starts_with("HEAD ") {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
                            } else if head.starts_with("GET /chunked ") {
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            let _ = s.write_all(answer).await;
                            if close.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                    }
                });
            }
        });
        CountingUpstream {
            addr,
            accepted,
            close_after,
            close_idle,
            released,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An upstream that answers an upload before it has all of it, and reads the rest after
/// (as one that streams it on): the answer reaches the client at once, and the connection
/// carries the rest of the upload to the upstream after the answer's body has ended, rather
/// than being closed under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_answered_before_its_end_is_still_delivered_whole() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 16;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let end = support::raw::fill_until(&mut s, &mut buf, b"\r\n\r\n")
            .await
            .unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let mut received = buf.len() - end;
        let mut chunk = vec![0u8; CHUNK];
        while received < CHUNK * CHUNKS {
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 => received += n,
                _ => break,
            }
        }
        received
    });
    let gw = Gateway::start(&site("app.test", &format!("http://{addr}"), "public", &[])).await;
    let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Sent over about 300 ms, so that the answer comes back long before the upload ends.
    let chunks = futures_util::stream::unfold(0, |i| async move {
        if i == CHUNKS {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let frame = Frame::data(Bytes::from(vec![b'u'; CHUNK]));
        Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
    });
    let req = Request::post("/early")
        .header("host", "app.test")
        .header("content-length", CHUNK * CHUNKS)
        .body(StreamBody::new(chunks))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("no answer while the upload went on")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    let received = tokio::time::timeout(Duration::from_secs(5), upstream)
        .await
        .expect("the upstream never got the end of the upload")
        .unwrap();
    assert_eq!(received, CHUNK * CHUNKS, "the upload was cut short");
}

/// The wait for response headers is bounded on a pooled connection as on a new one, whatever
/// deadline the connection's previous request had: a later one (a stale earlier deadline
/// must not cut the request short), an earlier one, and one that passed while the
/// connection was idle.
#[tokio::test]
async fn response_deadlines_hold_on_pooled_connections() {
    let up = CountingUpstream::start().await;
    let gw = Gateway::start(&format!(
        "[[site]]\nhost = \"app.test\"\nupstream = \"http://{}\"\naccess = \"public\"\n\
         upstream_response_timeout = \"5s\"\n  [[site.route]]\n  path = \"/short\"\n  \
         access = \"public\"\n  upstream_response_timeout = \"300ms\"\n",
        up.addr
    ))
    .await;
    let c = gw.client();
    let get = async |path: &str| {
        let start = std::time::Instant::now();
        let r = c.get("app.test", path).await;
        (r.status.as_u16(), start.elapsed())
    };
    assert_eq!(get("/short/quick").await.0, 200);
    // The connection's deadline was 300 ms out; this request's is 5 s.
    assert_eq!(
        get("/slow/1000").await.0,
        200,
        "a stale deadline cut a request short"
    );
    assert_eq!(up.accepted(), 1, "the connection was pooled and reused");
    let (status, took) = get("/short/slow/3000").await;
    assert_eq!(
        status, 504,
        "an earlier deadline on a pooled connection holds"
    );
    assert!(
        took < Duration::from_millis(2500),
        "timed out after {took:?}"
    );
    assert_eq!(
        up.accepted(),
        1,
        "the slow request went on the pooled connection"
    );

    assert_eq!(get("/short/quick").await.0, 200);
    assert_eq!(up.accepted(), 2, "a timed-out connection is not reused");
    // Idle past its last deadline, the connection's timer has fired with no one waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get("/slow/500").await.0, 200);
    let (status, took) = get("/short/slow/3000").await;
    assert_eq!(status, 504);
    assert!(
        took < Duration::from_millis(2500),
        "timed out after {took:?}"
    );
    assert_eq!(up.accepted(), 2, "both went on the pooled connection");
}

/// Upstream connections are kept and reused, after bodies framed by length, by chunks or
/// absent; one the upstream closed is never handed out,
/// one idle past `upstream_idle_timeout` is not reused, and one whose response body was
/// abandoned half read is closed, never given to the next request.
#[tokio::test]
async fn upstream_connections_are_pooled_and_only_clean_ones_reused() {
    use std::sync::atomic::Ordering;
    let up = CountingUpstream::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &format!("http://{}", up.addr), "public", &[]),
        "",
        "upstream_idle_timeout = \"10s\"",
    )
    .await;
    let c = gw.client();
    let ok = async |what: &str| {
        let r = c.get("app.test", "/").await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_ref()),
            (200, &b"ok"[..]),
            "{what}"
        );
    };
    for i in 0..5 {
        ok(&format!("request {i}")).await;
    }
    assert_eq!(up.accepted(), 1, "five requests, one upstream connection");

    let head = c
        .send(
            "app.test",
            Request::head("/")
                .header("host", "app.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(head.status, 200);
    ok("after a HEAD").await;
    assert_eq!(
        up.accepted(),
        1,
        "a bodiless answer gives its connection back too"
    );

    // A chunked body says it has ended only when read to its last chunk.
    for i in 0..2 {
        let r = c.get("app.test", "/chunked").await;
        assert_eq!(
            (r.status.as_u16(), r.body.as_ref()),
            (200, &b"ok"[..]),
            "chunked {i}"
        );
    }
    ok("after chunked answers").await;
    assert_eq!(
        up.accepted(),
        1,
        "a chunked answer read to its end gives its connection back"
    );

    up.close_after.store(true, Ordering::SeqCst);
    for i in 0..3 {
        ok(&format!("upstream closing, request {i}")).await;
    }
    // The first of the three went on the pooled connection, which the upstream then closed.
    assert_eq!(up.accepted(), 3, "a closed connection is never reused");
    up.close_after.store(false, Ordering::SeqCst);
    ok("upstream keeping connections again").await;
    ok("reused").await;
    assert_eq!(up.accepted(), 4);

    // Closed while idle in the pool, where nothing watches it: the next request finds it
    // closed before writing to it, and goes on a new connection. The wait is short beside
    // the pool's sweep (every second), so that it is the request that finds the close.
    up.close_idle.store(true, Ordering::SeqCst);
    ok("the upstream closing idle connections from here").await;
    for i in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ok(&format!(
            "after the upstream closed an idle connection, {i}"
        ))
        .await;
    }
    assert_eq!(up.accepted(), 6, "each closed idle connection was replaced");
    // The last one is closed by the upstream too, and no request comes to find it so: the
    // gateway lets its socket go all the same.
    let waited = std::time::Instant::now();
    while up.released.load(Ordering::SeqCst) < 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(4),
            "an idle connection the upstream closed was kept open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    up.close_idle.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok("upstream keeping idle connections again").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok("reused after idling").await;
    assert_eq!(up.accepted(), 7);

    gw.advance(Duration::from_secs(11));
    ok("after the idle timeout").await;
    assert_eq!(up.accepted(), 8, "an expired connection is not reused");

    // A download abandoned after its first bytes.
    let mut tls = c.connect("app.test", &[b"http/1.1"]).await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /big HTTP/1.1\r\nhost: app.test\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let n = tls.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    }
    drop(tls);
    ok("after an abandoned download").await;
    ok("and again").await;
    assert_eq!(
        up.accepted(),
        9,
        "the half-read connection was closed and one new one serves both"
    );
}
