//! Connection lifecycle and resource limits: slow and silent clients, oversized header
//! sections, certificate hot-swap (good and broken), and graceful draining on shutdown.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::{parse_raw, raw_status, site, Echo, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An upstream that only counts the requests it receives, to prove something was never
/// forwarded.
struct Counting {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Counting {
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"counted",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Counting { addr, hits, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads until the peer closes (EOF or error) or `limit` passes. Returns what was read and
/// when the connection ended, or `None` if it was still open at `limit`.
async fn read_until_closed<R: AsyncReadExt + Unpin>(
    r: &mut R,
    limit: Duration,
) -> (Vec<u8>, Option<Instant>) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok();
    (out, closed)
}

/// Sends `raw` on a fresh TLS connection while reading the answer, tolerating a server that
/// answers and closes before the whole request is written (as it must for oversized heads).
async fn send_oversized(gw: &Gateway, raw: String) -> String {
    let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(raw.as_bytes()).await;
        let _ = wr.flush().await;
        wr
    });
    let (got, closed) = read_until_closed(&mut rd, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "connection still open 5 s after an oversized request head"
    );
    let _ = writer.await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The value of a metric line starting with `series` (name and labels), if present.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .trim()
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_header_trickle_is_cut_off_after_header_read_timeout() {
    let up = Counting::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &up.url(), "public", &[]),
        "",
        "header_read_timeout = \"1s\"\n",
    )
    .await;
    // The trickle as a connection's first request, then as the next request on a connection
    // kept alive after one answered request: the header timer of the second is the first's,
    // kept by the connection and reset.
    for (what, answered) in [("first request", 0), ("second request", 1)] {
        let hits_before = up.hits();
        let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
        let (mut rd, mut wr) = tokio::io::split(tls);
        if answered == 1 {
            wr.write_all(b"GET /fast HTTP/1.1\r\nHost: app.test\r\n\r\n")
                .await
                .unwrap();
            wr.flush().await.unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"counted") {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut chunk))
                    .await
                    .expect("no answer to the first request")
                    .unwrap();
                assert!(n > 0, "closed before answering the first request");
                got.extend_from_slice(&chunk[..n]);
            }
        }
        let start = Instant::now();
        // One header byte every 300 ms, never finishing the header section.
        let writer = tokio::spawn(async move {
            let head = b"GET /slow HTTP/1.1\r\nHost: app.test\r\nX-Trickle: ";
            for &b in head.iter().chain(std::iter::repeat(&b'a')) {
                if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let (got, closed) = read_until_closed(&mut rd, Duration::from_secs(8)).await;
        writer.abort();
        let closed = closed.unwrap_or_else(|| {
            panic!("{what}: slowloris connection still open 8 s in, with header_read_timeout = 1s")
        });
        let after = closed - start;
        assert!(
            after < Duration::from_secs(4),
            "{what}: closed only after {after:?}"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || raw_status(&text) != Some(200),
            "{what}: {text}"
        );
        assert_eq!(
            up.hits() - hits_before,
            answered,
            "{what}: a request that never finished its headers reached the upstream"
        );
    }
}

/// A client that completes the TLS handshake and then sends nothing at all, or only the
/// start of the HTTP/2 preface; or that agrees on HTTP/2, completes its preface and settings,
/// and never opens a stream. (One byte of an HTTP/1.1 request line is enough for the header
/// timer to start; see the slowloris test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_after_tls_handshake_is_cut_off() {
    let up = Counting::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &up.url(), "public", &[]),
        "",
        "header_read_timeout = \"1s\"\n",
    )
    .await;
    let (h1, h2): (&[u8], &[u8]) = (b"http/1.1", b"h2");
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("nothing", h1, b""),
        ("half an HTTP/2 preface", h1, b"PRI * HTTP/2.0\r\n"),
        ("nothing, over HTTP/2", h2, b""),
        ("an HTTP/2 preface and no stream", h2, preface),
    ];
    for (what, alpn, first) in cases {
        let mut tls = gw.client().connect("app.test", &[alpn]).await;
        tls.write_all(first).await.unwrap();
        tls.flush().await.unwrap();
        let start = Instant::now();
        let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(6)).await;
        let closed = closed.unwrap_or_else(|| {
            panic!("TLS client sending {what} still open 6 s in, with header_read_timeout = 1s")
        });
        assert!(
            closed - start < Duration::from_secs(4),
            "{what}: closed only after {:?}",
            closed - start
        );
    }
}

/// An HTTP/2 connection with no request in flight is closed after `idle_timeout` (keep-alive
/// pings alone would keep it open for ever); one whose response is still being awaited or
/// streamed is not, however long that takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_busy_ones_are_not() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &echo.url(), "public", &[]),
        "",
        "idle_timeout = \"1s\"\n",
    )
    .await;
    let h2 = |gw: &Gateway| {
        let client = gw.client();
        async move {
            let tls = client.connect("app.test", &[b"h2"]).await;
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(tls),
            )
            .await
            .unwrap();
            let ended = tokio::spawn(async move {
                let _ = conn.await;
                Instant::now()
            });
            (sender, ended)
        }
    };
    let get = |path: &str| {
        Request::get(format!("https://app.test{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // One request, then nothing: closed about a second after the response ended.
    let (mut sender, ended) = h2(&gw).await;
    let r = sender.send_request(get("/one")).await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.into_body().collect().await.unwrap();
    let done = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), ended)
        .await
        .expect("an idle HTTP/2 connection still open 6 s in, with idle_timeout = 1s")
        .unwrap();
    let after = closed - done;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "closed {after:?} after the last response"
    );

    // A response that takes three idle timeouts to arrive keeps the connection, and the
    // connection is still usable afterwards.
    let (mut sender, ended) = h2(&gw).await;
    let r = sender.send_request(get("/slow/3000")).await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.into_body().collect().await.unwrap();
    assert!(!ended.is_finished(), "closed while a request was in flight");
    let r = sender.send_request(get("/two")).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A request body whose chunked framing breaks halfway is the client's fault: it is answered
/// 400 (or the connection is closed), never 502, and never counted as an upstream error,
/// which would page whoever watches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_body_is_the_clients_fault_not_the_upstreams() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    for (what, body) in [
        ("a bad chunk size", "5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n"),
        ("a chunk longer than announced", "3\r\nhello\r\n0\r\n\r\n"),
    ] {
        let raw = format!(
            "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let text = send_oversized(&gw, raw).await;
        let status = raw_status(&text);
        assert!(
            status == Some(400) || status.is_none(),
            "{what}: want 400 or a closed connection, got {:?}",
            text.lines().next()
        );
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("jumpgate_upstream_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 0.0, "counted as upstream errors:\n{metrics}");
    // The upstream itself is fine.
    assert_eq!(gw.client().get("app.test", "/after").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_without_tls_is_dropped_after_tls_handshake_timeout() {
    let up = Counting::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &up.url(), "public", &[]),
        "",
        "tls_handshake_timeout = \"1s\"\n",
    )
    .await;

    // Nothing at all.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let start = Instant::now();
    let (got, closed) = read_until_closed(&mut tcp, Duration::from_secs(6)).await;
    let closed =
        closed.expect("silent TCP connection still open 6 s in, with tls_handshake_timeout = 1s");
    assert!(
        closed - start < Duration::from_secs(4),
        "closed only after {:?}",
        closed - start
    );
    assert!(got.is_empty(), "{got:?}");

    // The first five bytes of a TLS record, then nothing.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(6)).await;
    let closed =
        closed.expect("half a ClientHello still open 6 s in, with tls_handshake_timeout = 1s");
    assert!(
        closed - start < Duration::from_secs(4),
        "closed only after {:?}",
        closed - start
    );

    let metrics = gw.admin_get("/metrics").await.1;
    let failed = metric(
        &metrics,
        "jumpgate_tls_handshakes_total{outcome=\"Failed\"}",
    )
    .unwrap_or(0.0);
    assert!(failed >= 2.0, "{metrics}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_sections_are_refused_and_never_forwarded() {
    let up = Counting::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &up.url(), "public", &[]),
        "",
        "max_header_bytes = 16384\nmax_headers = 20\n",
    )
    .await;
    let c = gw.client();

    // Control: an ordinary request is forwarded, and so is one with 15 extra headers.
    let mut ok = String::from("GET /ok HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    for i in 0..15 {
        ok.push_str(&format!("X-H{i}: v\r\n"));
    }
    ok.push_str("\r\n");
    let text = c
        .raw("app.test", ok.as_bytes(), Duration::from_secs(5))
        .await;
    assert_eq!(raw_status(&text), Some(200), "{text}");
    assert_eq!(up.hits(), 1);

    let big = "a".repeat(64 * 1024);
    let many: String = (0..50).map(|i| format!("X-Many-{i}: v\r\n")).collect();
    let cookie = format!("session={}", "c".repeat(100 * 1024));
    let cases = [
        ("64 KiB header", format!("GET /big HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")),
        ("50 headers", format!("GET /many HTTP/1.1\r\nHost: app.test\r\n{many}Connection: close\r\n\r\n")),
        ("100 KB cookie", format!("GET /cookie HTTP/1.1\r\nHost: app.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")),
    ];
    for (what, raw) in cases {
        let text = send_oversized(&gw, raw).await;
        let status = raw_status(&text);
        assert!(
            status == Some(431) || (text.is_empty() || status.is_none()),
            "{what}: want 431 or a closed connection, got {:?}",
            text.lines().next()
        );
        assert_eq!(up.hits(), 1, "{what} reached the upstream");
    }

    // HTTP/2: the header list limit is advertised; an over-size list never reaches upstream.
    let req = Request::get("https://app.test/h2-cookie")
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))
        .unwrap();
    // Either HTTP/2 layer may refuse it outright (GOAWAY/RST); an answer must be 431.
    if let Ok(r) = c.try_send_h2("app.test", req).await {
        assert_eq!(r.status, 431, "h2 100 KB cookie: {}", r.text());
    }
    assert_eq!(up.hits(), 1, "h2 100 KB cookie reached the upstream");
}

/// The DER of the leaf certificate a fresh connection is served.
async fn served_leaf(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("app.test").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Writes `bytes` to `path` through a temporary file and a rename, as deploy tools do.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn first_cert_der(pem: &Path) -> Vec<u8> {
    jumpgate::tls::load_certs(pem).unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_swapped_without_dropping_connections_and_broken_files_are_ignored() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let old_der = first_cert_der(&gw.certs.cert);

    // A second, unrelated CA and server certificate.
    let new_dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = support::TEST_NAMES.iter().map(|s| s.to_string()).collect();
    let new = jumpgate::devcert::write(new_dir.path(), &names).unwrap();
    let new_der = first_cert_der(&new.cert);
    assert_ne!(old_der, new_der);

    // A client trusting both CAs, without session resumption.
    let config = support::tls_trusting(&[&gw.certs.ca, &new.ca]);
    assert_eq!(served_leaf(gw.addr, &config).await, old_der);

    // A keep-alive connection opened on the old certificate.
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("app.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(path)
            .header("host", "app.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let resp = sender.send_request(get("/before")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();

    // Swap in the new pair: key then certificate, each by rename.
    replace(&gw.certs.key, &std::fs::read(&new.key).unwrap());
    replace(&gw.certs.cert, &std::fs::read(&new.cert).unwrap());
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if served_leaf(gw.addr, &config).await == new_der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served 8 s after the swap"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The connection opened before the swap keeps working.
    sender.ready().await.unwrap();
    let resp = sender.send_request(get("/after")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"/after\""));

    let metrics = gw.admin_get("/metrics").await.1;
    assert!(
        metric(
            &metrics,
            "jumpgate_certificate_reloads_total{outcome=\"Ok\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    let failed_before = metric(
        &metrics,
        "jumpgate_certificate_reloads_total{outcome=\"Failed\"}",
    )
    .unwrap_or(0.0);

    // A broken certificate file: reported, and the last good pair stays in service.
    replace(
        &gw.certs.cert,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let metrics = gw.admin_get("/metrics").await.1;
        let failed = metric(
            &metrics,
            "jumpgate_certificate_reloads_total{outcome=\"Failed\"}",
        )
        .unwrap_or(0.0);
        if failed > failed_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broken certificate not reported 8 s after writing it:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        served_leaf(gw.addr, &config).await,
        new_der,
        "the last good certificate must stay in service"
    );
    sender.ready().await.unwrap();
    let resp = sender.send_request(get("/still")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let echo = Echo::start().await;
    let mut gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    let c = gw.client();
    let in_flight = tokio::spawn(async move { c.get("app.test", "/slow/1500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopped_at = Instant::now();
    let task = gw.shutdown();

    // Draining: not ready any more, so load balancers stop sending.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        gw.admin_get("/readyz").await.0,
        503,
        "/readyz while draining"
    );

    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match TcpStream::connect(gw.addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections 3 s after shutdown"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // The request that was in flight completes normally.
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_path(), "/slow/1500");

    // And the gateway returns well within its 5 s grace.
    let result = tokio::time::timeout(Duration::from_secs(7), task)
        .await
        .expect("gateway task still running 7 s after shutdown (grace is 5 s)")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_millis(4500),
        "drain took {took:?}: waited for the deadline, not the request"
    );
}

/// Connections with nothing in flight when the gateway stops are woken and closed at once,
/// over HTTP/1.1 and HTTP/2: nothing else would wake them before their own timeouts, and the
/// drain would wait out its grace for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once() {
    let echo = Echo::start().await;
    let mut gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let client = gw.client();

    let mut h1 = client.connect("app.test", &[b"http/1.1"]).await;
    h1.write_all(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    h1.flush().await.unwrap();
    let mut head = [0u8; 12];
    h1.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let tls = client.connect("app.test", &[b"h2"]).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    let h2_ended = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    let r = sender
        .send_request(
            Request::get("https://app.test/two")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.into_body().collect().await.unwrap();

    // Both idle now; let the connections settle into waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped_at = Instant::now();
    let task = gw.shutdown();
    let closed_promptly = |protocol: &str, closed: Instant| {
        let after = closed - stopped_at;
        assert!(
            after < Duration::from_secs(2),
            "{protocol} closed after {after:?}"
        );
    };
    let (_, h1_closed) = read_until_closed(&mut h1, Duration::from_secs(4)).await;
    let h1_closed = h1_closed.expect("idle HTTP/1.1 connection still open 4 s after shutdown");
    closed_promptly("HTTP/1.1", h1_closed);
    let h2_closed = tokio::time::timeout(Duration::from_secs(4), h2_ended)
        .await
        .expect("idle HTTP/2 connection still open 4 s after shutdown")
        .unwrap();
    closed_promptly("HTTP/2", h2_closed);
    let result = tokio::time::timeout(Duration::from_secs(4), task)
        .await
        .expect("gateway still draining 4 s after shutdown (grace is 5 s)")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3),
        "drain took {:?}: waited for idle connections",
        stopped_at.elapsed()
    );
}

/// While running, the admin listener reports ready and the public listener serves.
#[tokio::test]
async fn ready_while_running() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    assert_eq!(gw.admin_get("/readyz").await, (200, "ready\n".to_owned()));
    let text = gw
        .client()
        .raw(
            "app.test",
            b"GET /r HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
    let r = parse_raw(&text);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.json()["path"], "/r");
}
