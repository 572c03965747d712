//! Live configuration reload: a valid change applies to new requests with no failed request
//! under load; a broken file is refused and the previous configuration stays; settings that
//! cannot change while running are reported as needing a restart.
//!
//! The last part drives the real `jumpgate` binary with real signals: SIGTERM drains (and cuts
//! off what outlives `server.shutdown_grace`), SIGHUP reloads the certificate and the
//! configuration without dropping connections, and a broken file on SIGHUP keeps the old one.

use crate::support;

use support::eventually;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{site, Echo, Gateway};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `text` with a route after its first public one that denies `/new`.
fn deny_new(text: &str) -> String {
    text.replacen(
        "access = \"public\"\n",
        "access = \"public\"\n  [[site.route]]\n  path = \"/new\"\n  access = \"deny\"\n",
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_switches_routes_atomically_and_refuses_a_broken_file() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    assert_eq!(c.get("app.test", "/new/x").await.status, 200);

    // Load: requests keep flowing during the reload; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, stop, failures, done) = (c.clone(), stop.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = c.get("app.test", "/steady").await;
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // A new route denies /new, and a new site appears.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let changed = deny_new(&text) + &site("other.test", &echo.url(), "public", &[]);
    std::fs::write(&gw.config_path, &changed).unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || c
            .get("app.test", "/new/x")
            .await
            .status
            == 403)
        .await,
        "the new route never took effect"
    );
    assert_eq!(
        c.get("other.test", "/").await.status,
        200,
        "the new site serves"
    );

    // A broken file: refused, the previous configuration stays, the failure is counted.
    std::fs::write(
        &gw.config_path,
        changed.replace("access = \"deny\"", "access = \"maybe\""),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || {
            metric(
                &gw.admin_get("/metrics").await.1,
                "jumpgate_config_reloads_total{outcome=\"Failed\"}",
            ) >= 1
        })
        .await
    );
    assert_eq!(
        c.get("app.test", "/new/x").await.status,
        403,
        "the previous configuration stays"
    );

    // A listener change is not applied live but reported.
    let moved = changed.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&gw.config_path, moved).unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || {
            metric(
                &gw.admin_get("/metrics").await.1,
                "jumpgate_config_restart_needed_total",
            ) >= 1
        })
        .await
    );
    assert_eq!(
        c.get("app.test", "/steady").await.status,
        200,
        "still serving on the old listener"
    );

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
}

/// A reload keeps the sign-in rate limit's counts when the limit itself is unchanged: an
/// operator's reload must not hand a client that is being held back a fresh allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_sign_in_rate_counts() {
    let env = support::env::SignInEnv::start_with(support::env::Options {
        limits: "sign_in_rate = 3".into(),
        ..support::env::Options::default()
    })
    .await;
    let mut b = env.browser();
    for _ in 0..3 {
        assert_eq!(b.get("/.jumpgate/sign-in?rd=/").await.status, 302);
    }
    assert_eq!(b.get("/.jumpgate/sign-in?rd=/").await.status, 429);
    let c = env.gw.client();
    let text = std::fs::read_to_string(&env.gw.config_path).unwrap();
    std::fs::write(&env.gw.config_path, deny_new(&text)).unwrap();
    assert!(
        eventually(Duration::from_secs(6), async || c
            .get("app.test", "/new/x")
            .await
            .status
            == 403)
        .await,
        "the reload never took effect"
    );
    assert_eq!(
        b.get("/.jumpgate/sign-in?rd=/").await.status,
        429,
        "the reload reset the counts"
    );
}

/// The real `jumpgate` binary, started as an operator would (`jumpgate run --config FILE`) and
/// driven with real signals sent by `kill`.
///
/// The binary logs each listener's bound address (`"message":"listening"`, with `listener` and
/// `addr`), so every listener is configured as `127.0.0.1:0` and the ports are read from
/// stderr. Certificate and configuration files are replaced keeping their modification time,
/// so the gateway's file polling cannot see the change and only SIGHUP can cause a reload.
mod real_binary {
    use std::convert::Infallible;
    use std::io::BufRead;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::ServerName;
    use serde_json::Value;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, watch};
    use tokio::task::JoinHandle;

    use super::metric;
    use super::support::{site, Certs, Echo, TEST_NAMES};

    /// The bound on every client request, connection attempt and wait in these tests.
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// What the process has written to stderr, and whether stderr has closed.
    #[derive(Default)]
    struct Stderr {
        lines: Vec<String>,
        closed: bool,
    }

    /// A running `jumpgate run` process; killed and reaped when dropped, also on panic.
    struct Jumpgate {
        child: Child,
        stderr: Arc<Mutex<Stderr>>,
        changed: watch::Receiver<u64>,
        /// The public TLS listener, as logged.
        public: SocketAddr,
        /// The admin listener, as logged.
        admin: SocketAddr,
    }

    impl Jumpgate {
        /// Starts the binary on `config` and returns once both listeners are logged and the
        /// process catches SIGHUP and SIGTERM.
        async fn start(config: &Path) -> Jumpgate {
            Self::start_with_workers(config, None).await
        }

        /// As `start`, with `TOKIO_WORKER_THREADS` set when `workers` is given.
        async fn start_with_workers(config: &Path, workers: Option<&str>) -> Jumpgate {
            let mut command = Command::new(env!("CARGO_BIN_EXE_jumpgate"));
            if let Some(n) = workers {
                command.env("TOKIO_WORKER_THREADS", n);
            }
            let mut child = command
                .arg("run")
                .arg("--config")
                .arg(config)
                .env("JUMPGATE_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the jumpgate binary");
            let pipe = child.stderr.take().expect("piped stderr");
            let stderr = Arc::new(Mutex::new(Stderr::default()));
            let (tx, changed) = watch::channel(0u64);
            let sink = stderr.clone();
            // Drains stderr for as long as the process lives, so the pipe never fills.
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .lines
                        .push(line);
                    tx.send_modify(|n| *n += 1);
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
                tx.send_modify(|n| *n += 1);
            });
            let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
            // Built before anything can fail, so the process is killed if start-up panics.
            let mut gw = Jumpgate {
                child,
                stderr,
                changed,
                public: unknown,
                admin: unknown,
            };
            gw.public = gw.listening("public (TLS)").await;
            gw.admin = gw.listening("admin").await;
            gw.wait_for_signal_handlers().await;
            gw
        }

        fn log(&self) -> MutexGuard<'_, Stderr> {
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Everything written to stderr so far, for failure messages.
        fn stderr_text(&self) -> String {
            self.log().lines.join("\n")
        }

        /// How many lines stderr has so far: a mark to wait for lines after.
        fn mark(&self) -> usize {
            self.log().lines.len()
        }

        /// Waits for a JSON log line after line `from` whose message is `message`; returns it.
        async fn wait_for(&self, from: usize, message: &str) -> Value {
            self.wait_for_at(from, message).await.1
        }

        /// Like [`Jumpgate::wait_for`], also returning the line's index.
        async fn wait_for_at(&self, from: usize, message: &str) -> (usize, Value) {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            let mut changed = self.changed.clone();
            loop {
                changed.borrow_and_update();
                {
                    let log = self.log();
                    let found = log
                        .lines
                        .iter()
                        .enumerate()
                        .skip(from)
                        .filter_map(|(i, l)| Some((i, serde_json::from_str::<Value>(l).ok()?)))
                        .find(|(_, v)| v["message"] == message);
                    if let Some(v) = found {
                        return v;
                    }
                    if log.closed {
                        drop(log);
                        panic!(
                            "jumpgate's stderr closed without {message:?}:\n{}",
                            self.stderr_text()
                        );
                    }
                }
                if tokio::time::timeout_at(deadline, changed.changed())
                    .await
                    .is_err()
                {
                    panic!(
                        "no {message:?} on jumpgate's stderr within {TIMEOUT:?}:\n{}",
                        self.stderr_text()
                    );
                }
            }
        }

        /// The address the binary logs for listener `which`.
        async fn listening(&self, which: &str) -> SocketAddr {
            let mut from = 0;
            loop {
                let (at, line) = self.wait_for_at(from, "listening").await;
                if line["listener"] == which {
                    let addr = line["addr"].as_str().unwrap_or_default();
                    return addr
                        .parse()
                        .unwrap_or_else(|e| panic!("listener {which}: {addr:?}: {e}"));
                }
                from = at + 1;
            }
        }

        /// Waits until the process catches SIGHUP and SIGTERM (Linux: `SigCgt` in
        /// /proc/PID/status). The gateway installs its handlers only after it has logged
        /// "listening"; a signal sent before then gets the default action and kills it.
        async fn wait_for_signal_handlers(&self) {
            // Bit N-1 stands for signal N: SIGHUP is 1, SIGTERM 15.
            const SIGHUP: u64 = 1;
            const SIGTERM: u64 = 1 << 14;
            if !Path::new("/proc/self/status").exists() {
                return;
            }
            let status = format!("/proc/{}/status", self.child.id());
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let caught = std::fs::read_to_string(&status).ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("SigCgt:"))
                        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                });
                if caught.is_some_and(|c| c & (SIGHUP | SIGTERM) == SIGHUP | SIGTERM) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "jumpgate did not install SIGHUP and SIGTERM handlers within {TIMEOUT:?} \
                     (SigCgt {caught:x?}):\n{}",
                    self.stderr_text()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Sends `signal` ("TERM", "HUP") with kill(1). The child is never reaped before it is
        /// dropped, so its pid cannot have been reused.
        fn signal(&self, signal: &str) {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(self.child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} failed: {status}");
        }

        /// Whether the process is still running.
        fn running(&mut self) -> bool {
            self.child.try_wait().expect("try_wait").is_none()
        }

        /// Polls for the process's exit for up to `limit`; its status, or `None` if it is
        /// still running.
        async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    return Some(status);
                }
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// GET on the admin listener, bounded: (status, body), or why not.
        async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
            let addr = self.admin;
            let request = async move {
                let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = Request::get(path)
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            };
            tokio::time::timeout(TIMEOUT, request)
                .await
                .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        }

        async fn metrics(&self) -> String {
            self.admin_get("/metrics")
                .await
                .unwrap_or_else(|e| panic!("/metrics: {e}\n{}", self.stderr_text()))
                .1
        }
    }

    impl Drop for Jumpgate {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The gateway's configuration: both listeners on any free port, JSON logs (set in the
    /// file, not with --log-json, which would make every reload report `log` as changed).
    fn config_text(certs: &Certs, grace: &str, sites: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\nshutdown_grace = \"{grace}\"\n\n\
             [log]\nformat = \"json\"\n\n{sites}",
            certs.cert.display(),
            certs.key.display()
        )
    }

    /// Writes the configuration beside the certificates; returns its path.
    fn write_config(certs: &Certs, grace: &str, sites: &str) -> PathBuf {
        let path = certs.dir.path().join("gateway.toml");
        std::fs::write(&path, config_text(certs, grace, sites)).unwrap();
        path
    }

    /// Replaces `path` with `bytes` through a rename, as deploy tools do, keeping the old
    /// modification time: the gateway's polling cannot notice, so only SIGHUP reloads it.
    fn replace_unnoticed(path: &Path, bytes: &[u8]) {
        let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
        let mut name = path.file_name().unwrap().to_owned();
        name.push(".swap");
        let tmp = path.with_file_name(name);
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&tmp, path).unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), mtime);
    }

    fn first_cert_der(pem: &Path) -> Vec<u8> {
        jumpgate::tls::load_certs(pem).unwrap()[0].to_vec()
    }

    /// A TLS client trusting `cas`, speaking HTTP/1.1, without session resumption (a resumed
    /// session would report the certificate of the original handshake).
    fn trusting(cas: &[&Path]) -> Arc<rustls::ClientConfig> {
        super::support::tls_trusting(cas)
    }

    /// A TLS connection to `addr` with SNI app.test, bounded.
    async fn tls_connect(
        addr: SocketAddr,
        tls: &Arc<rustls::ClientConfig>,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            connector
                .connect(ServerName::try_from("app.test").unwrap(), tcp)
                .await
        };
        tokio::time::timeout(TIMEOUT, connect)
            .await
            .expect("TLS connection within the timeout")
            .expect("TLS connection")
    }

    /// The DER of the leaf certificate a fresh connection is served.
    async fn served_leaf(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Vec<u8> {
        let stream = tls_connect(addr, tls).await;
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// One HTTP/1.1 keep-alive connection over TLS: every request on it goes over the same
    /// TCP connection, or fails.
    struct Conn {
        sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        driver: JoinHandle<()>,
    }

    impl Conn {
        async fn open(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Conn {
            let stream = tls_connect(addr, tls).await;
            let (sender, conn) = tokio::time::timeout(
                TIMEOUT,
                hyper::client::conn::http1::handshake(TokioIo::new(stream)),
            )
            .await
            .expect("HTTP/1.1 handshake within the timeout")
            .expect("HTTP/1.1 handshake");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            Conn { sender, driver }
        }

        /// Sends GET `path`; the response head, bounded.
        async fn send(&mut self, path: &str) -> Result<Response<Incoming>, String> {
            let req = Request::get(path)
                .header("host", "app.test")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let sender = &mut self.sender;
            let exchange = async move {
                sender.ready().await?;
                sender.send_request(req).await
            };
            match tokio::time::timeout(TIMEOUT, exchange).await {
                Err(_) => Err(format!("GET {path}: no response head within {TIMEOUT:?}")),
                Ok(Err(e)) => Err(format!("GET {path}: {e}")),
                Ok(Ok(resp)) => Ok(resp),
            }
        }

        async fn try_get(&mut self, path: &str) -> Result<(u16, Bytes), String> {
            let resp = self.send(path).await?;
            let status = resp.status().as_u16();
            Ok((status, read_body(resp).await?))
        }

        async fn get(&mut self, path: &str) -> (u16, Bytes) {
            self.try_get(path).await.unwrap_or_else(|e| panic!("{e}"))
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            self.driver.abort();
        }
    }

    /// The whole body, bounded; an error if the connection breaks first.
    async fn read_body(resp: Response<Incoming>) -> Result<Bytes, String> {
        match tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await {
            Err(_) => Err(format!("body not complete within {TIMEOUT:?}")),
            Ok(Err(e)) => Err(format!("body: {e}")),
            Ok(Ok(body)) => Ok(body.to_bytes()),
        }
    }

    /// GET `path` on a fresh connection: (status, body).
    async fn get(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, path: &str) -> (u16, Bytes) {
        Conn::open(addr, tls).await.get(path).await
    }

    /// The path an echo response reports having received.
    fn echoed_path(body: &Bytes) -> String {
        let v: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
        v["path"].as_str().unwrap_or_default().to_owned()
    }

    /// The size of every [`Slow`] response body.
    const BODY_LEN: usize = 256 * 1024;

    /// The body every [`Slow`] response carries: a recognisable pattern, so a truncated or
    /// mixed-up body cannot pass for the real one.
    fn slow_body() -> Bytes {
        (0..BODY_LEN)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    /// An upstream that announces each request as it arrives. `/slow/MS` answers after `MS`
    /// ms; `/drip/MS` sends its head and half its body at once and the rest after `MS` ms;
    /// anything else answers at once. Every body is [`slow_body`].
    struct Slow {
        addr: SocketAddr,
        arrivals: mpsc::UnboundedReceiver<String>,
        task: JoinHandle<()>,
    }

    impl Slow {
        async fn start() -> Slow {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, arrivals) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| slow(req, tx.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Slow {
                addr,
                arrivals,
                task,
            }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Waits until a request for `path` has reached this upstream.
        async fn arrived(&mut self, path: &str) {
            let wait = async {
                while let Some(p) = self.arrivals.recv().await {
                    if p == path {
                        return;
                    }
                }
            };
            tokio::time::timeout(TIMEOUT, wait)
                .await
                .unwrap_or_else(|_| panic!("{path} never reached the upstream"));
        }
    }

    impl Drop for Slow {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn slow(
        req: Request<Incoming>,
        arrivals: mpsc::UnboundedSender<String>,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
        let path = req.uri().path().to_owned();
        let _ = arrivals.send(path.clone());
        let ms = |s: &str| Duration::from_millis(s.parse().unwrap_or(0));
        let body = slow_body();
        if let Some(wait) = path.strip_prefix("/drip/").map(ms) {
            let halves = [body.slice(..BODY_LEN / 2), body.slice(BODY_LEN / 2..)];
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let half = halves.get(i).cloned();
                async move {
                    if i == 1 {
                        tokio::time::sleep(wait).await;
                    }
                    half.map(|h| (Ok::<_, Infallible>(Frame::data(h)), i + 1))
                }
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut().insert("content-length", BODY_LEN.into());
            return Ok(resp);
        }
        if let Some(wait) = path.strip_prefix("/slow/").map(ms) {
            tokio::time::sleep(wait).await;
        }
        Ok(Response::new(Full::new(body).boxed()))
    }

    /// Waits until a TCP connection to `addr` is refused; panics if `still_busy` has finished
    /// by then (the listener must close while requests are still draining, not at exit).
    async fn wait_refused(addr: SocketAddr, still_busy: &JoinHandle<Result<(u16, Bytes), String>>) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                Ok(Err(_)) => break,
                Ok(Ok(_)) | Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "still accepting connections 3 s after SIGTERM"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        assert!(
            !still_busy.is_finished(),
            "the listener closed only after the in-flight request ended"
        );
    }

    /// SIGTERM with requests in flight that end within `shutdown_grace`: one still waiting for
    /// its upstream's answer, one halfway through its body. Both complete with 200 and their
    /// whole body; the listener closes at once (new connections are refused while they run);
    /// the process exits 0 as soon as they are done, well before the deadline. The process
    /// runs one worker thread, so this is also the single-threaded scheduler end to end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_drains_in_flight_requests_and_exits_0() {
        let mut up = Slow::start().await;
        let certs = Certs::new();
        let config = write_config(&certs, "6s", &site("app.test", &up.url(), "public", &[]));
        let mut gw = Jumpgate::start_with_workers(&config, Some("1")).await;
        let tls = trusting(&[&certs.ca]);
        assert_eq!(get(gw.public, &tls, "/warm-up").await.0, 200);
        // The access line, as JSON like every other line, within the buffer's flush period.
        let line = gw.wait_for(0, "request").await;
        assert_eq!(line["target"], "jumpgate::access", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["path"], "/warm-up", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["site"], "app.test", "{line}");
        assert_eq!(line["client.ip"], "127.0.0.1", "{line}");

        let mut waiting = Conn::open(gw.public, &tls).await;
        let waiting = tokio::spawn(async move { waiting.try_get("/slow/2000").await });
        up.arrived("/slow/2000").await;
        let mut streaming = Conn::open(gw.public, &tls).await;
        let head = streaming.send("/drip/2000").await.unwrap();
        assert_eq!(head.status(), 200);
        let streamed = tokio::spawn(read_body(head));

        let from = gw.mark();
        let sent = Instant::now();
        gw.signal("TERM");
        gw.wait_for(from, "SIGTERM received; shutting down").await;
        wait_refused(gw.public, &waiting).await;

        let (status, body) = tokio::time::timeout(TIMEOUT, waiting)
            .await
            .expect("the waiting request ended")
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.stderr_text()));
        assert_eq!(status, 200);
        assert!(body == slow_body(), "waiting request: {} bytes", body.len());
        let body = tokio::time::timeout(TIMEOUT, streamed)
            .await
            .expect("the streaming request ended")
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.stderr_text()));
        assert!(
            body == slow_body(),
            "streaming request: {} bytes",
            body.len()
        );

        let status = gw
            .exit_within(Duration::from_secs(6 + 3))
            .await
            .unwrap_or_else(|| panic!("still running 9 s after SIGTERM (grace 6 s)"));
        let took = sent.elapsed();
        assert!(status.success(), "exit: {status}\n{}", gw.stderr_text());
        assert!(
            took < Duration::from_secs(5),
            "exit took {took:?}: waited for the 6 s deadline, not the requests"
        );
        gw.wait_for(from, "all connections drained").await;
        gw.wait_for(from, "stopped").await;
        drop(streaming);
        // Nothing buffered is lost at exit: both drained requests have their access line.
        let text = gw.stderr_text();
        for path in ["/slow/2000", "/drip/2000"] {
            assert!(
                text.lines().any(|l| l.contains("\"jumpgate::access\"")
                    && l.contains(&format!("\"path\":\"{path}\""))),
                "no access line for {path}:\n{text}"
            );
        }
    }

    /// SIGTERM with requests in flight that outlive `shutdown_grace`: while draining, /readyz
    /// says 503; at the deadline both are cut off (neither gets its whole answer) and the
    /// process exits 0, not before the deadline and not long after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_cuts_off_requests_at_shutdown_grace_and_exits() {
        let mut up = Slow::start().await;
        let certs = Certs::new();
        let config = write_config(&certs, "2s", &site("app.test", &up.url(), "public", &[]));
        let mut gw = Jumpgate::start(&config).await;
        let tls = trusting(&[&certs.ca]);
        // Ready once the public listener serves: the admin listener may answer first.
        let mut ready = false;
        for _ in 0..100 {
            if gw.admin_get("/readyz").await.is_ok_and(|(s, _)| s == 200) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ready, "never ready:\n{}", gw.stderr_text());

        let mut waiting = Conn::open(gw.public, &tls).await;
        let waiting = tokio::spawn(async move { waiting.try_get("/slow/60000").await });
        up.arrived("/slow/60000").await;
        let mut streaming = Conn::open(gw.public, &tls).await;
        let head = streaming.send("/drip/60000").await.unwrap();
        assert_eq!(head.status(), 200);
        let streamed = tokio::spawn(read_body(head));

        let from = gw.mark();
        let sent = Instant::now();
        gw.signal("TERM");
        gw.wait_for(from, "draining connections").await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match gw.admin_get("/readyz").await {
                Ok((503, _)) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "/readyz while draining: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let status = gw
            .exit_within(Duration::from_secs(2 + 3))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "still running 5 s after SIGTERM (grace 2 s):\n{}",
                    gw.stderr_text()
                )
            });
        let took = sent.elapsed();
        assert!(status.success(), "exit: {status}\n{}", gw.stderr_text());
        assert!(
            took >= Duration::from_millis(1900),
            "exited after {took:?}, before the 2 s grace"
        );
        gw.wait_for(from, "drain deadline passed; closing remaining connections")
            .await;

        let waited = tokio::time::timeout(TIMEOUT, waiting)
            .await
            .expect("the waiting request ended when the process exited")
            .unwrap();
        assert!(
            !matches!(&waited, Ok((200, body)) if *body == slow_body()),
            "a request longer than the grace got its whole answer"
        );
        let streamed = tokio::time::timeout(TIMEOUT, streamed)
            .await
            .expect("the streaming request ended when the process exited")
            .unwrap();
        assert!(
            streamed.is_err(),
            "a body longer than the grace completed: {:?}",
            streamed.map(|b| b.len())
        );
        drop(streaming);
    }

    /// SIGHUP with a new certificate (new CA, new key) and a configuration that turns `/x`
    /// from public to deny: a keep-alive connection opened before keeps working, and the new
    /// rule applies on it; new connections get the new certificate; the reload is counted
    /// and needs no restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sighup_reloads_certificate_and_configuration_without_dropping_connections() {
        let echo = Echo::start().await;
        let certs = Certs::new();
        let sites = |x: &str| site("app.test", &echo.url(), "public", &[("/x", x)]);
        let config = write_config(&certs, "5s", &sites("public"));
        let mut gw = Jumpgate::start(&config).await;

        let new_dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = TEST_NAMES.iter().map(|s| s.to_string()).collect();
        let new = jumpgate::devcert::write(new_dir.path(), &names).unwrap();
        let (old_der, new_der) = (first_cert_der(&certs.cert), first_cert_der(&new.cert));
        assert_ne!(old_der, new_der);
        assert_ne!(
            std::fs::read(&certs.key).unwrap(),
            std::fs::read(&new.key).unwrap()
        );
        let tls = trusting(&[&certs.ca, &new.ca]);
        assert_eq!(served_leaf(gw.public, &tls).await, old_der);
        assert_eq!(get(gw.public, &tls, "/x").await.0, 200);

        let mut kept = Conn::open(gw.public, &tls).await;
        let (status, body) = kept.get("/before").await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, "/before"));

        replace_unnoticed(&certs.key, &std::fs::read(&new.key).unwrap());
        replace_unnoticed(&certs.cert, &std::fs::read(&new.cert).unwrap());
        replace_unnoticed(
            &config,
            config_text(&certs, "5s", &sites("deny")).as_bytes(),
        );
        let from = gw.mark();
        gw.signal("HUP");
        gw.wait_for(from, "SIGHUP: TLS certificate reloaded").await;
        gw.wait_for(from, "configuration reloaded").await;

        assert!(
            served_leaf(gw.public, &tls).await == new_der,
            "a new connection after SIGHUP got the old certificate"
        );
        assert_eq!(get(gw.public, &tls, "/x").await.0, 403, "the new rule");
        let (status, body) = get(gw.public, &tls, "/y").await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, "/y"));

        let (status, body) = kept.get("/after").await;
        assert_eq!((status, echoed_path(&body).as_str()), (200, "/after"));
        assert_eq!(
            kept.get("/x").await.0,
            403,
            "the new rule on a connection opened before the reload"
        );

        let metrics = gw.metrics().await;
        for (series, want) in [
            ("jumpgate_certificate_reloads_total{outcome=\"Ok\"}", 1),
            ("jumpgate_certificate_reloads_total{outcome=\"Failed\"}", 0),
            ("jumpgate_config_reloads_total{outcome=\"Ok\"}", 1),
            ("jumpgate_config_reloads_total{outcome=\"Failed\"}", 0),
            ("jumpgate_config_restart_needed_total", 0),
        ] {
            assert_eq!(metric(&metrics, series), want, "{series}\n{metrics}");
        }
        assert!(gw.running(), "{}", gw.stderr_text());
    }

    /// State shared by the broken-file cases: a gateway whose `/x` is denied, serving `old`.
    struct Before {
        /// The upstream; kept alive for the test.
        _echo: Echo,
        certs: Certs,
        config: PathBuf,
        gw: Jumpgate,
        tls: Arc<rustls::ClientConfig>,
        old: Vec<u8>,
    }

    fn denying_x(echo: &Echo) -> String {
        site("app.test", &echo.url(), "public", &[("/x", "deny")])
    }

    async fn before() -> Before {
        let echo = Echo::start().await;
        let certs = Certs::new();
        let config = write_config(&certs, "5s", &denying_x(&echo));
        let gw = Jumpgate::start(&config).await;
        let tls = trusting(&[&certs.ca]);
        let old = first_cert_der(&certs.cert);
        let b = Before {
            _echo: echo,
            certs,
            config,
            gw,
            tls,
            old,
        };
        b.assert_unchanged().await;
        b
    }

    impl Before {
        /// The gateway serves as it did at start: same certificate, same rules.
        async fn assert_unchanged(&self) {
            let addr = self.gw.public;
            assert!(
                served_leaf(addr, &self.tls).await == self.old,
                "a different certificate is served"
            );
            assert_eq!(get(addr, &self.tls, "/x").await.0, 403, "/x is denied");
            let (status, body) = get(addr, &self.tls, "/y").await;
            assert_eq!((status, echoed_path(&body).as_str()), (200, "/y"));
        }
    }

    /// SIGHUP with a configuration that does not parse (and would open `/x` if it were half
    /// applied): refused and reported on stderr, naming the file and line; counted as a failed
    /// config reload; the old rules and certificate stay and the process keeps running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sighup_with_a_broken_configuration_keeps_the_old_one() {
        let mut b = before().await;
        let good = std::fs::read_to_string(&b.config).unwrap();
        let broken = good.replacen("access = \"deny\"", "access = \"public", 1);
        assert_ne!(good, broken);
        replace_unnoticed(&b.config, broken.as_bytes());

        let from = b.gw.mark();
        b.gw.signal("HUP");
        let refused =
            b.gw.wait_for(
                from,
                "configuration reload refused; the previous configuration stays in force",
            )
            .await;
        assert_eq!(refused["level"], "ERROR", "{refused}");
        let problems = refused["problems"].as_str().unwrap_or_default();
        let line = broken
            .lines()
            .position(|l| l.contains("access = \"public") && !l.ends_with('"'))
            .unwrap()
            + 1;
        assert!(
            problems.contains(&format!("{}:{line}:", b.config.display())),
            "the report names the file and line {line}: {refused}"
        );
        // The same SIGHUP reloaded the unchanged certificate.
        b.gw.wait_for(from, "SIGHUP: TLS certificate reloaded")
            .await;

        b.assert_unchanged().await;
        let metrics = b.gw.metrics().await;
        for (series, want) in [
            ("jumpgate_config_reloads_total{outcome=\"Failed\"}", 1),
            ("jumpgate_config_reloads_total{outcome=\"Ok\"}", 0),
        ] {
            assert_eq!(metric(&metrics, series), want, "{series}\n{metrics}");
        }
        assert!(b.gw.running(), "{}", b.gw.stderr_text());
    }

    /// SIGHUP with a certificate file that does not parse: reported on stderr naming the
    /// file; counted as a failed certificate reload; the old certificate stays in service for
    /// new connections, the rules are unchanged and the process keeps running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sighup_with_a_broken_certificate_keeps_the_old_one() {
        let mut b = before().await;
        replace_unnoticed(&b.certs.cert, b"this is not a certificate\n");

        let from = b.gw.mark();
        b.gw.signal("HUP");
        let failed =
            b.gw.wait_for(
                from,
                "SIGHUP: TLS certificate reload failed; keeping the previous certificate",
            )
            .await;
        assert_eq!(failed["level"], "ERROR", "{failed}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&b.certs.cert.display().to_string()),
            "the report names the certificate file: {failed}"
        );
        // The same SIGHUP reloaded the unchanged configuration.
        b.gw.wait_for(from, "configuration reloaded").await;

        b.assert_unchanged().await;
        let metrics = b.gw.metrics().await;
        for (series, want) in [
            ("jumpgate_certificate_reloads_total{outcome=\"Failed\"}", 1),
            ("jumpgate_certificate_reloads_total{outcome=\"Ok\"}", 0),
        ] {
            assert_eq!(metric(&metrics, series), want, "{series}\n{metrics}");
        }
        assert!(b.gw.running(), "{}", b.gw.stderr_text());
    }
}
