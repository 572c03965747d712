//! Connections to upstreams: one pool of HTTP/1.1 connections per site, over plain TCP or
//! rustls.
//!
//! The request body is streamed straight through; only the wait for response headers is
//! bounded here (bodies may legitimately take long, and are bounded by the client side).
//!
//! The pool is ours rather than hyper-util's legacy `Client`, because a site has exactly one
//! origin: the legacy client keys its pool by scheme and authority, hashing both on every
//! checkout and return, and spawns a task per request to wait for the connection to become
//! free again; that was about 5,000 instructions of a proxied request (BENCHMARKS.md). Here
//! a connection goes back to its site's pool when the response body has been read to its
//! end, and is taken again newest first. What the legacy client did that matters is kept:
//! idle connections expire, a connection the upstream closed is never handed out, and a
//! request that could not be written on a pooled connection is sent once more on a new one.
//!
//! A connection's protocol state (hyper's dispatcher, which reads and writes its socket) has
//! no task of its own: the request that holds the connection drives it, while it waits for
//! the response and while its response body is read. A task of its own cost three task polls
//! and two cross-task wake-ups a request, each answer passing from that task to the client's
//! by channel (BENCHMARKS.md, round eleven). Only the request holding a connection can have
//! made it progress, so the answer and the body are looked at right after the connection has
//! been driven, without leaving a waker, and the wake-ups hyper sends the connection's
//! driver from inside that look (a body frame taken, a request queued) are held back: each
//! would queue the client's task to run again for nothing. Those from its socket reach the
//! task, and one that arrives while held back is passed on once the look is over, unless the
//! look found the work ready (the connection is then driven again). An idle pooled connection
//! is driven by no one; the upstream closing it is seen when the next request drives it,
//! before that request is written, and the request then goes on a new connection, or when
//! [`sweep_idle`] looks at the pool, which lets the socket go.
//!
//! Each connection also keeps the [`Deadline`] that bounds the wait for its responses: armed
//! anew for every request, a timer costs a registration and a removal under the runtime's
//! timer lock, while a kept deadline is moved on by recording the new instant.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::Uri;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower_service::Service;

use crate::clock::Clock;
use crate::config::{Limits, SiteConfig};
use crate::deadline::Deadline;
use crate::tls::{self, TlsError};
use crate::wake::Relay;

/// Idle connections kept per site, beyond which a finished connection is closed.
const MAX_IDLE: usize = 256;

/// How often [`sweep_idle`] looks at the idle connections.
const SWEEP: Duration = Duration::from_secs(1);

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened (refused, unreachable, TLS failed).
    #[error("upstream connection failed: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection broke before a response.
    #[error("upstream request failed: {0}")]
    Request(#[source] hyper::Error),
    /// No response headers within the route's timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The client's request body broke while it was being forwarded (malformed chunked
    /// framing, a connection reset mid-upload): the client's fault, not the upstream's.
    #[error("request body from the client failed: {0}")]
    ClientBody(#[source] hyper::Error),
}

/// Whether a request error came from the request body we were streaming upstream: hyper
/// reports a failed outgoing body as a user error whose cause is the body's own error,
/// here the server side's `hyper::Error` for the client's connection.
fn is_client_body(e: &hyper::Error) -> bool {
    e.is_user() && std::error::Error::source(e).is_some_and(|c| c.is::<hyper::Error>())
}

/// hyper's side of an upstream connection: its socket and protocol state, a future that
/// ends when the connection closes or is handed to an upgrade. Boxed because hyper does not
/// name the type of a connection with upgrades; one allocation a connection, not a request.
type Dispatch = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A connection and the timer that bounds the wait for its responses.
///
/// While the connection idles, its socket (through the relay, until the sweep drives it
/// without a waker) and its timer still hold the waker of the last request that drove it; if
/// either fires then, that client connection is woken once for nothing, and a finished one
/// is freed only then. Both are bounded by the pool (at most `MAX_IDLE` a site, for at most
/// the idle time or the deadline).
struct Lent {
    sender: SendRequest<Incoming>,
    /// `None` once hyper has finished with the connection; a finished dispatch must not be
    /// polled again.
    dispatch: Option<Dispatch>,
    /// The waker the dispatch is polled with: a [`Relay`] to the task driving it.
    relay: Arc<Relay>,
    waker: Waker,
    deadline: Deadline,
}

impl Lent {
    fn new(sender: SendRequest<Incoming>, dispatch: Dispatch, deadline: Deadline) -> Lent {
        let relay = Arc::new(Relay::default());
        Lent {
            sender,
            dispatch: Some(dispatch),
            waker: Waker::from(relay.clone()),
            relay,
            deadline,
        }
    }

    /// Lets hyper read and write the connection as far as it can; the connection wakes
    /// `cx`'s task when it can go further. Whether it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(dispatch) = self.dispatch.as_mut() else {
            return false;
        };
        self.relay.register(cx.waker());
        let Poll::Ready(ended) = dispatch
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
        else {
            return true;
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream connection ended");
        }
        self.dispatch = None;
        false
    }

    /// Hands what is left of the connection's work (an upgrade to complete, an upload the
    /// upstream answered before it ended) to a task of its own, which ends with it.
    fn set_apart(&mut self) {
        let Some(dispatch) = self.dispatch.take() else {
            return;
        };
        // Outside a runtime (only when one is being torn down) the connection just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = dispatch.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
        }
    }
}

/// Polls `work`, whose progress only driving `conn` can make, right after driving it. With
/// the connection still open, `work` is polled without a waker and the connection's own
/// wake-ups are held back meanwhile: either would be woken from inside this very poll
/// whenever `work` and the connection hand each other something, queueing the task to run
/// again for nothing. One held back is passed on if `work` is still pending, as it may have
/// come from the socket. Once the connection has ended, `work` gets `cx` as usual.
fn after_driving<T>(
    conn: &mut Lent,
    cx: &mut Context<'_>,
    work: impl FnOnce(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    if !conn.drive(cx) {
        return work(cx);
    }
    let (polled, missed) = conn.relay.quietly(work);
    if missed && polled.is_pending() {
        cx.waker().wake_by_ref();
    }
    polled
}

/// A connection waiting in the pool, and since when (milliseconds on the gateway's clock).
struct Idle {
    conn: Lent,
    since_ms: i64,
}

/// A site's idle connections, newest last.
struct Pool {
    idle: Mutex<Vec<Idle>>,
    idle_timeout_ms: i64,
    clock: Clock,
}

impl Pool {
    /// Whether a connection idle since `since_ms` may still be used at `now`.
    fn fresh(&self, since_ms: i64, now: i64) -> bool {
        now - since_ms < self.idle_timeout_ms
    }

    /// The newest idle connection that is still open, free and within its idle time at
    /// `now` (the request's reading of the gateway's clock); closed and expired ones met on
    /// the way are dropped.
    fn take(&self, now: i64) -> Option<Lent> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if self.fresh(c.since_ms, now) && c.conn.sender.is_ready() {
                return Some(c.conn);
            }
        }
        None
    }

    /// Lets go of the idle connections the upstream has closed or that have outlived their
    /// idle time.
    fn sweep(&self) {
        let now = self.clock.now_ms();
        // Without a waker: a connection's next request registers its own.
        let mut quiet = Context::from_waker(Waker::noop());
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(|c| {
            self.fresh(c.since_ms, now) && c.conn.drive(&mut quiet) && c.conn.sender.is_ready()
        });
    }

    /// Puts a connection whose exchange is over back, if it can take another request.
    fn put(&self, mut conn: Lent) {
        if !conn.sender.is_ready() {
            // Still busy (an upload the upstream answered before it ended) or closed: hyper
            // finishes what is in flight apart, then closes it.
            conn.set_apart();
            return;
        }
        let now = self.clock.now_ms();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Over the bound, the oldest (at the front) go; expired ones are never taken, and
        // the sweep lets them go.
        let over = (idle.len() + 1).saturating_sub(MAX_IDLE);
        idle.drain(..over);
        idle.push(Idle {
            conn,
            since_ms: now,
        });
    }
}

/// A connection lent to one exchange; [`Checkin::done`] returns it once the response body
/// has been read to its end. Dropped instead, the connection closes.
pub struct Checkin {
    conn: Lent,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checkin")
    }
}

impl Checkin {
    /// Polls the response body, which only driving the connection can fill: what the last
    /// drive left in it first, so that a body that came with its head (the common case) is
    /// read without driving the connection again; otherwise right after driving it (see
    /// [`after_driving`]).
    pub fn read<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut body: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if self.conn.dispatch.is_some() {
            // A wake-up held back here is for the drive that follows if the body is still
            // pending, or for the next read's if not.
            let (polled, _) = self.conn.relay.quietly(&mut body);
            if polled.is_ready() {
                return polled;
            }
        }
        after_driving(&mut self.conn, cx, body)
    }

    /// The response body has been read to its end: the connection may serve another.
    pub fn done(self) {
        self.pool.put(self.conn);
    }
}

/// A site's upstream: its origin, connector and pool.
pub struct Upstream {
    origin: Uri,
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Upstreams for every site, indexed like the configuration's sites.
pub type Upstreams = Arc<[Upstream]>;

/// Builds one pool per site; idle time is counted on `clock`.
pub fn build(sites: &[SiteConfig], limits: &Limits, clock: &Clock) -> Result<Upstreams, TlsError> {
    let mut out = Vec::with_capacity(sites.len());
    for site in sites {
        let connector = tls::https_connector(
            site.upstream.ca_file.as_deref(),
            limits.upstream_connect_timeout,
        )?;
        out.push(Upstream {
            origin: site.upstream.origin.clone(),
            connector,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                idle_timeout_ms: i64::try_from(limits.upstream_idle_timeout.as_millis())
                    .unwrap_or(i64::MAX),
                clock: clock.clone(),
            }),
        });
    }
    Ok(out.into())
}

impl Upstream {
    /// Sends `req` (its URI in origin-form) and waits at most `timeout` for the response
    /// headers. A pooled connection is taken if one is within its idle time at `now_ms`, the
    /// request's reading of the gateway's clock. The [`Checkin`] goes with the response body.
    ///
    /// Not an `async fn`: one copies its arguments into its body's locals before starting,
    /// and the request path copies every byte of its futures more than once; the `async`
    /// block uses the request where it was captured.
    pub fn forward(
        &self,
        mut req: Request<Incoming>,
        timeout: Duration,
        now_ms: i64,
    ) -> impl Future<Output = Result<(Response<Incoming>, Checkin), UpstreamError>> + '_ {
        // Clients may speak h2 to us; upstreams get HTTP/1.1.
        *req.version_mut() = Version::HTTP_11;
        async move {
            // The configuration refuses durations over ten years, so the clock can count
            // this far ahead.
            let deadline = Instant::now() + timeout;
            let late = || UpstreamError::Timeout(timeout);
            let req = match self.pool.take(now_ms) {
                Some(mut conn) => {
                    conn.deadline.set(deadline);
                    // Queueing the request wakes the connection's last driver, which is about
                    // to be this request's task driving it anyway.
                    let (sent, _) = conn.relay.quietly(|_| conn.sender.try_send_request(req));
                    match exchange(&mut conn, sent).await.ok_or_else(late)? {
                        Ok(response) => return Ok(self.answered(response, conn)),
                        Err(mut e) => match e.take_message() {
                            // Not written: the upstream had closed the idle connection. Once
                            // more, on a new one, within what is left of the same time.
                            Some(req) => req,
                            None => return Err(request_error(e.into_error())),
                        },
                    }
                }
                None => req,
            };
            // Boxed: connecting is the rare case, and its future (TCP, TLS, the handshake) is
            // large enough that inline it would be copied with every request's future. A
            // timer of its own, once a connection: the kept one is made with the connection.
            let connected = Box::pin(self.connect());
            let (sender, dispatch) = tokio::time::timeout_at(deadline, connected)
                .await
                .map_err(|_| late())??;
            let mut conn = Lent::new(sender, dispatch, Deadline::new(deadline));
            let sent = conn.sender.send_request(req);
            match exchange(&mut conn, sent).await.ok_or_else(late)? {
                Ok(response) => Ok(self.answered(response, conn)),
                Err(e) => Err(request_error(e)),
            }
        }
    }

    /// The answer and the connection it came on, which goes with its body; a connection
    /// switching protocols belongs to the upgrade from here.
    fn answered(
        &self,
        response: Response<Incoming>,
        mut conn: Lent,
    ) -> (Response<Incoming>, Checkin) {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // hyper hands the socket over once its dispatch has run to its end, which the
            // upgrade's waiter cannot drive; the connection never returns to the pool.
            conn.set_apart();
        }
        let checkin = Checkin {
            conn,
            pool: self.pool.clone(),
        };
        (response, checkin)
    }

    /// A new connection: the handle requests are sent on, and hyper's side of it.
    async fn connect(&self) -> Result<(SendRequest<Incoming>, Dispatch), UpstreamError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        // With upgrades: an upgraded connection (a WebSocket) is handed to the tunnel.
        Ok((sender, Box::pin(conn.with_upgrades())))
    }
}

/// Every [`SWEEP`], lets go of the idle connections that the upstream has closed or that
/// have outlived their idle time, in the pools of the configuration in force. Nothing else
/// reads an idle connection, so one the upstream closed would otherwise keep its socket
/// (half closed) until the site's next request; a pool outlived by a reload goes with the
/// configuration it belongs to.
pub async fn sweep_idle(live: Arc<super::Live>) {
    let mut ticks = tokio::time::interval(SWEEP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for upstream in live.load().upstreams.iter() {
            upstream.pool.sweep();
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's wait for its answer on `conn`: the answer, or `None` once the connection's
    /// deadline has passed first.
    struct Exchange<'c, F> {
        #[pin]
        answer: F,
        conn: &'c mut Lent,
    }
}

fn exchange<F: Future>(conn: &mut Lent, answer: F) -> Exchange<'_, F> {
    Exchange { answer, conn }
}

impl<F: Future> Future for Exchange<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = this.answer;
        if let Poll::Ready(done) = after_driving(this.conn, cx, |cx| answer.as_mut().poll(cx)) {
            return Poll::Ready(Some(done));
        }
        Pin::new(&mut this.conn.deadline).poll(cx).map(|()| None)
    }
}

fn request_error(e: hyper::Error) -> UpstreamError {
    match is_client_body(&e) {
        true => UpstreamError::ClientBody(e),
        false => UpstreamError::Request(e),
    }
}
