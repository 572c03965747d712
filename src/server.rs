//! Listeners and connections: the public TLS accept loop, the plain-HTTP redirect listener,
//! and graceful draining.
//!
//! The accept loop never waits on a client: the TLS handshake (under a timeout) and the HTTP
//! connection run in a task per connection, which a drain signal tells to finish and close.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::canonical;
use crate::config::Limits;
use crate::deadline::ConnectionTimer;
use crate::metrics::OutcomeLabel;
use crate::proxy::{Activity, ConnInfo, Gateway, Live, ResponseBody, Shared};
use crate::wake::Relay;

/// HTTP/1.1 and HTTP/2 server settings for the public listener. The protocol is chosen from
/// ALPN, never by sniffing the first bytes: sniffing waits for the client without a deadline.
#[derive(Debug, Clone)]
pub struct HttpBuilders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl HttpBuilders {
    /// Builders configured from the limits.
    pub fn new(limits: &Limits) -> HttpBuilders {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // Each gateway connection gets a timer of its own (`http1_for_connection`).
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // hyper's floor for its read buffer is 8 KiB.
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        HttpBuilders { h1, h2 }
    }

    /// The HTTP/1.1 server settings, for a server that must match the gateway's but for
    /// jumpgate's own code (the benchmark's floor, `examples/bench_env.rs`): its timer is
    /// hyper-util's, not the one each gateway connection keeps.
    pub fn http1(&self) -> &hyper::server::conn::http1::Builder {
        &self.h1
    }

    /// The HTTP/1.1 server settings for one connection, whose header-read timer is kept
    /// between its requests rather than made anew for each.
    fn http1_for_connection(&self) -> hyper::server::conn::http1::Builder {
        let mut h1 = self.h1.clone();
        h1.timer(ConnectionTimer::new());
        h1
    }

    /// The HTTP/2 server settings.
    pub fn http2(&self) -> &hyper::server::conn::http2::Builder<TokioExecutor> {
        &self.h2
    }
}

/// A hyper connection that can be asked to finish its in-flight requests and close.
trait Drainable: Future<Output = Result<(), hyper::Error>> {
    fn drain(self: Pin<&mut Self>);
}

impl<I, S> Drainable for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Drainable for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, ResponseBody>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The next connection, or `None` once `shutdown` resolves. A failed accept (usually EMFILE,
/// or a connection reset before it was taken) is logged and waited out, never the end.
async fn accept(
    listener: &TcpListener,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}

/// Tells every open connection to finish its in-flight requests and close.
///
/// A connection checks it on every wake-up, so it is a flag and a waker per connection,
/// rather than a `watch` channel: polling a `watch` receiver takes a mutex that every
/// connection shares, and a `select!` over it and the timers cost each request some 500
/// instructions (BENCHMARKS.md, round five).
#[derive(Debug, Default)]
struct Drain {
    draining: AtomicBool,
    /// The connections to wake when draining starts; dead ones are pruned as new ones come.
    waiting: Mutex<Vec<Weak<Relay>>>,
}

impl Drain {
    /// A connection's place on the list.
    fn watch(&self) -> Arc<Relay> {
        let waker = Arc::new(Relay::default());
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() == waiting.capacity() {
            // Before the list grows, drop the connections that have ended: it stays within
            // twice the most connections ever open at once.
            waiting.retain(|w| w.strong_count() > 0);
        }
        waiting.push(Arc::downgrade(&waker));
        waker
    }

    /// Starts draining: every connection, open or still to come, is woken to drain.
    fn start(&self) {
        self.draining.store(true, Ordering::Release);
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiting.iter().filter_map(Weak::upgrade) {
            waker.wake();
        }
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

pin_project! {
    /// Drives one connection: drains it when [`Drain`] says so and, when it is watched
    /// (HTTP/2), drains it once it has had no request in flight for `idle` (its connections
    /// would otherwise stay open for as long as the client answers pings) and drops it
    /// (closing the socket) when no request has started within `silence`, since a client
    /// that completes a handshake and then stays silent must not hold a connection. HTTP/1.1
    /// needs neither: hyper's header read timeout runs from the moment the connection starts
    /// reading and again between requests (tests/it/lifecycle.rs holds it to that).
    /// Resolves to `None` when the connection was dropped as silent.
    struct Drive<C> {
        #[pin]
        conn: C,
        #[pin]
        silence: Option<Sleep>,
        #[pin]
        idle: Option<IdleCheck>,
        activity: Option<Arc<Activity>>,
        drain: Arc<Drain>,
        // Where the connection's task is woken from for a drain and by the idle timer.
        waker: Arc<Relay>,
        draining: bool,
    }
}

impl<C: Drainable> Drive<C> {
    /// A connection with no deadlines of its own.
    fn new(conn: C, drain: Arc<Drain>) -> Self {
        Drive {
            conn,
            silence: None,
            idle: None,
            activity: None,
            waker: drain.watch(),
            drain,
            draining: false,
        }
    }

    /// A connection watched through `activity` for `silence` and `idle`.
    fn watching(self, activity: Arc<Activity>, silence: Duration, idle: Duration) -> Self {
        // Noted as woken, so that the first poll polls the idle timer and the timer takes
        // the relay's waker; no task is registered yet to be woken.
        self.waker.wake_by_ref();
        Drive {
            silence: Some(tokio::time::sleep(silence)),
            idle: Some(IdleCheck {
                timer: tokio::time::sleep(idle),
                waker: Waker::from(self.waker.clone()),
                limit: idle,
            }),
            activity: Some(activity),
            ..self
        }
    }
}

impl<C: Drainable> Future for Drive<C> {
    type Output = Option<Result<(), hyper::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(silence) = this.silence.as_mut().as_pin_mut() {
            // The limit is on a connection that never asks anything. Once a request has come
            // it no longer applies, and the timer goes rather than be polled on every wake-up
            // of the connection until it fires (about 240 instructions an HTTP/2 request).
            if this.activity.as_ref().is_some_and(|a| a.started()) {
                this.silence.set(None);
            } else if silence.poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        if !*this.draining {
            // Registered before the flag is read: a drain that starts after the read wakes
            // this task through the waker.
            this.waker.register(cx.waker());
            if this.drain.is_draining() {
                *this.draining = true;
                this.conn.as_mut().drain();
            }
        }
        if let (false, Some(idle)) = (*this.draining, this.idle.as_mut().as_pin_mut()) {
            // Only once the timer has fired (the relay notes it): the connection is woken
            // twice an HTTP/2 request, and polling a timer that has not fired cost about 240
            // instructions a request.
            if this.waker.release() && idle.expired(this.activity.as_ref()) {
                *this.draining = true;
                this.conn.as_mut().drain();
            }
        }
        // Last, so that a drain started above is acted on in this same poll.
        this.conn.poll(cx).map(Some)
    }
}

pin_project! {
    /// The limit on an HTTP/2 connection's time with no request in flight.
    struct IdleCheck {
        #[pin]
        timer: Sleep,
        // The connection's relay, which notes that the timer fired.
        waker: Waker,
        limit: Duration,
    }
}

impl IdleCheck {
    /// Whether the connection has had no request in flight for the limit; if not, the timer
    /// is set for when it first could have.
    fn expired(self: Pin<&mut Self>, activity: Option<&Arc<Activity>>) -> bool {
        let mut this = self.project();
        let mut cx = Context::from_waker(this.waker);
        while this.timer.as_mut().poll(&mut cx).is_ready() {
            match activity.and_then(|a| a.idle_for()) {
                Some(quiet) if quiet >= *this.limit => return true,
                quiet => this
                    .timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + *this.limit - quiet.unwrap_or_default()),
            }
        }
        false
    }
}

/// Accepts TLS connections on `listener` and serves them until `shutdown` resolves, then
/// drains open connections for up to `grace`.
pub async fn serve_public(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Live>,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let builders = Arc::new(HttpBuilders::new(&limits));
    let drain = Arc::new(Drain::default());
    // Every connection task holds a sender; when all are gone, the drain is complete.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) = accept(&listener, &mut shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let builders = builders.clone();
        let drain = drain.clone();
        let done = done_tx.clone();
        let handshake_timeout = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let metrics = shared.load().metrics.clone();
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    metrics
                        .tls_handshakes
                        .get_or_create(&OutcomeLabel::failed())
                        .inc();
                    tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics
                        .tls_handshakes
                        .get_or_create(&OutcomeLabel::failed())
                        .inc();
                    tracing::debug!(client.addr = %peer, "TLS handshake timed out");
                    return;
                }
            };
            metrics
                .tls_handshakes
                .get_or_create(&OutcomeLabel::ok())
                .inc();
            let sni = tls
                .get_ref()
                .1
                .server_name()
                .and_then(canonical::host)
                .map(|h| h.into_owned());
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = Gateway::new(shared, ConnInfo::new(peer, sni));
            metrics.open_connections.inc();
            let result = if h2 {
                let (service, activity) = service.watched();
                let conn = builders.h2.serve_connection(TokioIo::new(tls), service);
                let (silence, idle) = (limits.header_read_timeout, limits.idle_timeout);
                Drive::new(conn, drain)
                    .watching(activity, silence, idle)
                    .await
            } else {
                let service = hyper::service::service_fn(move |req| service.respond(req));
                let conn = builders
                    .http1_for_connection()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                Drive::new(conn, drain).await
            };
            match result {
                Some(Err(e)) => {
                    tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error")
                }
                None => {
                    tracing::debug!(client.addr = %peer, "no request within the header read timeout; connection closed")
                }
                Some(Ok(())) => {}
            }
            metrics.open_connections.dec();
            drop(done);
        });
    }
    drop(listener);
    tracing::info!(grace = ?grace, "draining connections");
    drain.start();
    drop(done_tx);
    tokio::select! {
        _ = done_rx.recv() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

/// Serves plain HTTP on `listener`, answering every request with 308 to the same path over
/// https on one of the configured sites; unknown hosts get 421 so the listener cannot be
/// used to redirect anywhere else.
pub async fn serve_redirect(
    listener: TcpListener,
    shared: Arc<Live>,
    https_port: u16,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let service_shared = shared.clone();
    serve_plain(listener, limits, shutdown, move |req: Request<Incoming>| {
        redirect_response(&service_shared.load(), https_port, &req)
    })
    .await;
}

fn redirect_response(
    shared: &Shared,
    https_port: u16,
    req: &Request<Incoming>,
) -> Response<ResponseBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(canonical::host);
    let Some(site) = host.as_deref().and_then(|h| shared.routes.site(h)) else {
        return crate::proxy::respond::rejection(
            crate::proxy::respond::Rejection::Misdirected,
            false,
        );
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let location = if https_port == 443 {
        format!("https://{}{}", site.host, pq)
    } else {
        format!("https://{}:{}{}", site.host, https_port, pq)
    };
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A minimal plain-HTTP/1.1 server for the redirect and admin listeners.
pub async fn serve_plain<F>(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Response<ResponseBody> + Send + Sync + Clone + 'static,
{
    serve_plain_async(listener, limits, shutdown, move |req, _peer| {
        let resp = handler(req);
        async move { resp }
    })
    .await;
}

/// Like [`serve_plain`], for handlers that wait (forward-auth) and need the peer address.
pub async fn serve_plain_async<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) = accept(&listener, &mut shutdown).await else {
            break;
        };
        let handler = handler.clone();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(ConnectionTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let resp = handler(req, peer);
                async move { Ok::<_, std::convert::Infallible>(resp.await) }
            }),
        );
        let fut = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
