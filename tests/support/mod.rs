//! Test fixtures: a real gateway on 127.0.0.1:0 with development certificates, an echo
//! upstream that reports exactly what it received, and TLS clients that can send both
//! well-formed requests (HTTP/1.1 or HTTP/2) and raw bytes.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Development certificates in a temporary directory.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Host names on the test server certificate, beyond localhost.
pub const TEST_NAMES: [&str; 3] = ["app.test", "other.test", "enroll.test"];

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = TEST_NAMES.iter().map(|s| s.to_string()).collect();
        let c = jumpgate::devcert::write(dir.path(), &names).unwrap();
        Certs {
            ca: c.ca,
            cert: c.cert,
            key: c.key,
            dir,
        }
    }
}

/// A gateway running in this process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub redirect: SocketAddr,
    /// The plain-HTTP forward-auth listener.
    pub verify: SocketAddr,
    pub certs: Certs,
    pub config_path: PathBuf,
    /// The gateway's time: a test moves it forward instead of sleeping.
    pub clock: jumpgate::clock::Clock,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), jumpgate::StartError>>>,
}

impl Gateway {
    /// Starts a gateway whose config is `[server]` (filled in here) plus `rest` (sites,
    /// routes, limits as `[server.limits]` must come through `limits`).
    pub async fn start(rest: &str) -> Gateway {
        Self::start_with(rest, "", "").await
    }

    /// Like [`start`], with extra `[server]` keys and a `[server.limits]` body.
    pub async fn start_with(rest: &str, server_extra: &str, limits: &str) -> Gateway {
        let certs = Certs::new();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nshutdown_grace = \"5s\"\n{server_extra}\n[server.limits]\n{limits}\n\n{rest}\n",
            certs.cert.display(),
            certs.key.display()
        );
        let config_path = certs.dir.path().join("gateway.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = jumpgate::config::Config::load(&config_path)
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirect = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let verify = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let verify_addr = verify.local_addr().unwrap();
        let addr = public.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let redirect_addr = redirect.local_addr().unwrap();
        let listeners = jumpgate::Listeners {
            public,
            admin: Some(admin),
            redirect: Some(redirect),
            verify: Some(verify),
        };
        let (tx, rx) = oneshot::channel();
        let clock = jumpgate::clock::Clock::adjustable();
        let task = tokio::spawn(jumpgate::run_with(
            config,
            listeners,
            clock.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Gateway {
            addr,
            admin: admin_addr,
            redirect: redirect_addr,
            verify: verify_addr,
            certs,
            config_path,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Moves the gateway's time forward by `by`, as if that long had passed.
    pub fn advance(&self, by: Duration) {
        assert!(
            self.clock.advance(by),
            "test gateways keep an adjustable clock"
        );
    }

    /// A client trusting this gateway's CA.
    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.certs.ca)
    }

    /// Asks the gateway to stop and returns its task.
    pub fn shutdown(&mut self) -> JoinHandle<Result<(), jumpgate::StartError>> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    /// GET on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        plain_get(self.admin, path, "localhost").await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Asks a forward-auth listener (`server.verify_listen`) a question, as a front proxy does:
/// `GET /.jumpgate/verify` with `headers` (the `X-Forwarded-*` description of the request).
/// Returns the status and headers of the answer.
pub async fn ask_verify(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, http::HeaderMap) {
    tokio::time::timeout(Duration::from_secs(20), ask_verify_unbounded(addr, headers))
        .await
        .expect("the forward-auth listener answers within 20 s")
}

async fn ask_verify_unbounded(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get("/.jumpgate/verify").header("host", "jumpgate.internal");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let _ = resp.into_body().collect().await;
    (status, headers)
}

/// GET over plain HTTP/1.1 (admin and redirect listeners).
pub async fn plain_get(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    let resp = plain_request(addr, path, host).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// GET over plain HTTP/1.1, returning the whole response.
pub async fn plain_request(addr: SocketAddr, path: &str, host: &str) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// A TLS client for one gateway address; every request opens a fresh connection so tests
/// control SNI, Host and protocol precisely.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

/// The gateway's session cookie.
pub const SESSION: &str = "__Host-jumpgate";
/// The cookie binding a sign-in in progress to its browser.
pub const LOGIN: &str = "__Host-jumpgate-login";

/// Seconds since the epoch, as the gateway's clock reads.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Fails the test with every failure a table of cases found, one per line.
pub fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whether a reply came from the echo upstream.
pub fn from_echo(r: &Reply) -> bool {
    r.headers.get("x-upstream").is_some_and(|v| v == "echo")
}

/// A collected response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    /// What the echo upstream saw: the request target it received.
    pub fn upstream_path(&self) -> String {
        self.json()["path"].as_str().unwrap().to_owned()
    }
    /// A header the echo upstream received (first value), lower-case name.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
    pub fn upstream_header_all(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
}

pub fn tls_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = client_config(&[ca]);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS client trusting `cas`, speaking HTTP/1.1, without session resumption (a resumed
/// session would report the certificate of the original handshake).
pub fn tls_trusting(cas: &[&Path]) -> Arc<rustls::ClientConfig> {
    let mut config = client_config(cas);
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn client_config(cas: &[&Path]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in jumpgate::tls::load_certs(ca).unwrap() {
            roots.add(cert).unwrap();
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Client {
    pub fn new(addr: SocketAddr, ca: &Path) -> Client {
        Client {
            addr,
            tls: tls_config(ca, &[b"http/1.1"]),
        }
    }

    /// Opens a TLS connection with SNI `sni`.
    pub async fn connect(
        &self,
        sni: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut config = (*self.tls).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        connector
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .unwrap()
    }

    /// GET `path` on `host` over HTTP/1.1.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(
            host,
            Request::get(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }

    /// Sends `req` over HTTP/1.1 with SNI `host` and collects the response.
    pub async fn send(&self, host: &str, req: Request<Full<Bytes>>) -> Reply {
        let tls = self.connect(host, &[b"http/1.1"]).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        collect(sender.send_request(req).await.unwrap()).await
    }

    /// Sends `req` over HTTP/2 (ALPN h2) with SNI `host`.
    pub async fn send_h2(&self, host: &str, req: Request<Full<Bytes>>) -> Reply {
        let tls = self.connect(host, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        collect(sender.send_request(req).await.unwrap()).await
    }

    /// Writes `raw` bytes on a fresh TLS connection and reads until the server closes or
    /// `wait` passes; returns what came back.
    pub async fn raw(&self, sni: &str, raw: &[u8], wait: Duration) -> String {
        let mut tls = self.connect(sni, &[b"http/1.1"]).await;
        tls.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, async {
            let mut buf = [0u8; 8192];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

pub async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Lines a file of JSON lines holds, once `pred` holds for one of them (audit lines are
/// written as events happen, some from background tasks).
pub async fn audit_lines(
    log: &std::path::Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    eventually(Duration::from_secs(5), async || read().iter().any(&pred)).await;
    read()
}

/// Polls `f` until it is true or `limit` passes; whether it became true.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The status code of a raw HTTP/1.1 response text.
pub fn raw_status(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// An upstream that answers every request with JSON describing it, plus a few special paths:
/// `/stream/BYTES` streams a body of that size, `/upload` reads the body and reports its size,
/// `/slow/MS` answers after a delay, `/ws` is a WebSocket echo.
pub struct Echo {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(echo))
                        .with_upgrades()
                        .await;
                });
            }
        });
        Echo { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(mut req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Some(n) = path.strip_prefix("/stream/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(0u64, move |sent| {
            let chunk = chunk.clone();
            async move {
                if sent >= total {
                    return None;
                }
                let n = (total - sent).min(chunk.len() as u64);
                Some((
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                    sent + n,
                ))
            }
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut().insert("content-length", total.into());
        return Ok(resp);
    }
    if path == "/upload" {
        let mut total = 0u64;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            // A body the gateway aborts (the client's broke) just ends the count.
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
            }
        }
        return Ok(Response::new(
            Full::new(Bytes::from(format!("{{\"received\":{total}}}"))).boxed(),
        ));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned().unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let resp = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        return Ok(resp);
    }
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let values: Vec<serde_json::Value> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.insert(name.as_str().to_owned(), values.into());
    }
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": path,
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("x-upstream", "echo".parse().unwrap());
    if path.starts_with("/cached/") {
        resp.headers_mut()
            .insert("cache-control", "public, max-age=60".parse().unwrap());
    }
    // Hop-by-hop headers the gateway must remove on the way back.
    resp.headers_mut()
        .insert("connection", "x-upstream-private".parse().unwrap());
    resp.headers_mut()
        .insert("x-upstream-private", "secret".parse().unwrap());
    resp.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(resp)
}

/// A site block for the echo upstream.
pub fn site(host: &str, upstream: &str, access: &str, routes: &[(&str, &str)]) -> String {
    let mut s =
        format!("[[site]]\nhost = \"{host}\"\nupstream = \"{upstream}\"\naccess = \"{access}\"\n");
    for (path, access) in routes {
        s.push_str(&format!(
            "  [[site.route]]\n  path = \"{path}\"\n  access = \"{access}\"\n"
        ));
    }
    s
}

/// A raw HTTP/1.1 response, parsed: status, lower-cased header names, body (de-chunked).
#[derive(Debug)]
pub struct RawReply {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Parses the text returned by [`Client::raw`]: the first response only; a chunked body is
/// decoded.
pub fn parse_raw(text: &str) -> RawReply {
    let status = raw_status(text);
    let Some(end) = text.find("\r\n\r\n") else {
        return RawReply {
            status,
            headers: Vec::new(),
            body: String::new(),
        };
    };
    let headers: Vec<(String, String)> = text[..end]
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &text[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size_line, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
        }
        out
    } else {
        match headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            Some(n) if n <= rest.len() => rest[..n].to_owned(),
            _ => rest.to_owned(),
        }
    };
    RawReply {
        status,
        headers,
        body,
    }
}

impl Client {
    /// Like [`Client::send_h2`], but returns an error instead of panicking when the
    /// connection or the stream fails (a reset stream, a refused header block).
    pub async fn try_send_h2<B>(&self, host: &str, req: Request<B>) -> Result<Reply, String>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tls = self.connect(host, &[b"h2"]).await;
        if tls.get_ref().1.alpn_protocol() != Some(&b"h2"[..]) {
            return Err("h2 not negotiated".into());
        }
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
pub mod browser;
pub mod env;
pub mod jumpcloud;
pub mod raw;
pub mod redis;

/// Runs `f` with a bound: a request that hangs fails the test instead of hanging it.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("no answer within 20 s")
}

/// Whether a server certificate from [`TestCa::server_tls`] is valid now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// rcgen's default validity, which includes today.
    Current,
    /// Valid through 2020 only.
    Expired,
}

/// A private certificate authority made in the test, for the gateway's outbound TLS (the
/// identity provider, the directory API, upstreams): its certificate in a PEM file to give
/// the gateway (`oidc.ca_file`, `upstream_ca_file`), and server certificates it signs.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA certificate, PEM.
    pub file: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A fresh CA; `name` is its common name.
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, cert.pem()).unwrap();
        TestCa {
            dir,
            file,
            cert,
            key,
        }
    }

    /// A rustls server config (HTTP/1.1) presenting a certificate for `names` signed by this
    /// CA. A name that parses as an IP address becomes an IP address name, as a client
    /// connecting to `https://127.0.0.1:PORT` needs.
    pub fn server_tls(&self, names: &[&str], validity: Validity) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let chain = vec![cert.der().clone()];
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key.into())
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// GET on an `https://IP:PORT/...` URL (the fake provider serving TLS), trusting `ca`.
pub async fn https_get(url: &str, ca: &Path) -> Reply {
    let rest = url.strip_prefix("https://").expect("an https:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse().expect("an IP:PORT authority");
    let req = Request::get(if path.is_empty() { "/" } else { path })
        .header("host", authority)
        .body(Full::new(Bytes::new()))
        .unwrap();
    within(Client::new(addr, ca).send(&addr.ip().to_string(), req)).await
}

/// [`Echo`] over TLS: the same answers, plus `x-upstream-tls` with the protocol version the
/// connection negotiated (e.g. `TLSv1_3`), so a test sees the gateway came over TLS. Failed
/// handshakes are recorded as the server saw them.
pub struct TlsEcho {
    pub addr: SocketAddr,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl TlsEcho {
    /// Listens on 127.0.0.1, presenting the certificate of `config`.
    pub async fn start(config: Arc<rustls::ServerConfig>) -> TlsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = failures.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return seen.lock().unwrap().push(e.to_string()),
                        Err(_) => {
                            return seen.lock().unwrap().push("handshake timed out".to_owned())
                        }
                    };
                    let version = stream
                        .get_ref()
                        .1
                        .protocol_version()
                        .map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
                    let version = http::HeaderValue::from_str(&version).unwrap();
                    let service = hyper::service::service_fn(move |req| {
                        let version = version.clone();
                        async move {
                            let mut resp = echo(req).await?;
                            resp.headers_mut().insert("x-upstream-tls", version);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsEcho {
            addr,
            failures,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every failed handshake so far, e.g. `received fatal alert: UnknownCA`.
    pub fn tls_failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
