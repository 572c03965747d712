//! Bodies and connections that outlive a single buffer: 200 MB uploads and downloads streamed
//! in flat memory, WebSocket tunnels (echo and idle timeout), and concurrent HTTP/2 streams.

use crate::support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{site, Echo, Gateway};
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: u64 = 200 * 1024 * 1024;
/// Allowed growth of this process's resident memory while 200 MB pass through it.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// Samples VmRSS every 20 ms until dropped; reports the highest value seen. The gateway and
/// the echo upstream run in this process, so this covers all three parties.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    baseline_rss: u64,
    baseline_hwm: u64,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let baseline_rss = status_kib("VmRSS");
        let peak = Arc::new(AtomicU64::new(baseline_rss));
        let (s, p) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(status_kib("VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            peak,
            baseline_rss,
            baseline_hwm: status_kib("VmHWM"),
        }
    }

    /// Asserts that neither the sampled RSS nor the kernel's high-water mark grew by more
    /// than the limit.
    fn assert_flat(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.peak.load(Ordering::Relaxed).max(status_kib("VmRSS"));
        let rss_growth = peak.saturating_sub(self.baseline_rss);
        let hwm_growth = status_kib("VmHWM").saturating_sub(self.baseline_hwm);
        eprintln!(
            "{what}: RSS +{rss_growth} KiB (from {} KiB), HWM +{hwm_growth} KiB",
            self.baseline_rss
        );
        assert!(
            rss_growth < MAX_GROWTH_KIB && hwm_growth < MAX_GROWTH_KIB,
            "{what}: memory grew with the payload: RSS +{rss_growth} KiB (from {} KiB), HWM +{hwm_growth} KiB",
            self.baseline_rss
        );
    }
}

fn public_site(echo: &Echo) -> String {
    site(
        "app.test",
        &echo.url(),
        "protected",
        &[
            ("/upload", "public"),
            ("/stream", "public"),
            ("/slow", "public"),
            ("/ws", "public"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_200mb_is_streamed_in_flat_memory() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&public_site(&echo)).await;
    let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    let rss = RssSampler::start();
    // One shared 64 KiB chunk, sent over and over: the generator itself allocates nothing.
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let body = StreamBody::new(futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= PAYLOAD {
                return None;
            }
            let n = (PAYLOAD - sent).min(chunk.len() as u64);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                sent + n,
            ))
        }
    }));
    let req = Request::post("/upload")
        .header("host", "app.test")
        .header("content-length", PAYLOAD)
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let reply = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(json["received"].as_u64(), Some(PAYLOAD), "{json}");
    rss.assert_flat("200 MB upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn download_200mb_is_streamed_in_flat_memory() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&public_site(&echo)).await;
    let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    let rss = RssSampler::start();
    let req = Request::get(format!("/stream/{PAYLOAD}"))
        .header("host", "app.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        PAYLOAD.to_string().as_str()
    );
    let mut body = resp.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(
                data.iter().all(|&b| b == b'x'),
                "corrupted body after {received} bytes"
            );
            received += data.len() as u64;
        }
    }
    assert_eq!(received, PAYLOAD);
    rss.assert_flat("200 MB download");
}

async fn websocket(
    gw: &Gateway,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
    let (ws, resp) = tokio_tungstenite::client_async("wss://app.test/ws", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&public_site(&echo)).await;
    let mut ws = websocket(&gw).await;

    ws.send(Message::text("hello through jumpgate"))
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::text("hello through jumpgate"));

    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::binary(binary));

    for i in 0..20 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..20 {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text(format!("m{i}")));
    }
    ws.close(None).await.unwrap();

    // A WebSocket handshake on a protected path is refused, not tunnelled.
    let tls = gw.client().connect("app.test", &[b"http/1.1"]).await;
    let err = tokio_tungstenite::client_async("wss://app.test/private-ws", tls)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}tunnel_idle_timeout = \"1s\"\n",
        site("app.test", &echo.url(), "public", &[])
    ))
    .await;
    let mut ws = websocket(&gw).await;

    // Traffic keeps it open well past the idle limit: the limit is on silence, not age.
    let opened = Instant::now();
    let mut last_traffic = Instant::now();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        ws.send(Message::text(format!("keepalive {i}")))
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text(format!("keepalive {i}")));
        last_traffic = Instant::now();
    }
    assert!(opened.elapsed() >= Duration::from_secs(2));

    // Then silence: the gateway closes the tunnel about 1 s after the last byte.
    let end = tokio::time::timeout(Duration::from_secs(6), ws.next())
        .await
        .expect("tunnel still open 6 s into silence with tunnel_idle_timeout = 1s");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "unexpected message: {end:?}"
    );
    let waited = last_traffic.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "closed after only {waited:?} of silence"
    );
    // Whatever the close looked like, the connection is unusable afterwards.
    let _ = ws.send(Message::text("late")).await;
    let after = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap_or(None);
    assert!(
        !matches!(after, Some(Ok(Message::Text(_)))),
        "tunnel still echoing: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_responses_share_one_http2_connection() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&public_site(&echo)).await;
    let tls = gw.client().connect("app.test", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    const STREAMS: usize = 10;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get("https://app.test/slow/1000")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["path"], "/slow/1000");
    }
    // Ten 1 s responses in series would take 10 s; multiplexed they overlap.
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "{STREAMS} streams took {elapsed:?}: not concurrent"
    );
}
