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
//! Each connection also keeps the [`Deadline`] that bounds the wait for its responses: armed
//! anew for every request, a timer costs a registration and a removal under the runtime's
//! timer lock, while a kept deadline is moved on by recording the new instant.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::{Request, Response, Version};
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

/// Idle connections kept per site, beyond which a finished connection is closed.
const MAX_IDLE: usize = 256;

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

/// A connection and the timer that bounds the wait for its responses.
///
/// While the connection idles, its timer still holds the waker of the last request that
/// polled it; if the timer fires then, that client connection is woken once for nothing,
/// and a finished one is freed only then. Both are bounded by the pool (at most `MAX_IDLE`
/// a site, for at most the deadline).
struct Lent {
    sender: SendRequest<Incoming>,
    deadline: Deadline,
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
    /// The newest idle connection that is still open, free and within its idle time at
    /// `now` (the request's reading of the gateway's clock); closed and expired ones met on
    /// the way are dropped.
    fn take(&self, now: i64) -> Option<Lent> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if now - c.since_ms < self.idle_timeout_ms && c.conn.sender.is_ready() {
                return Some(c.conn);
            }
        }
        None
    }

    /// Puts a connection whose exchange is over back, if it can take another request.
    fn put(&self, conn: Lent) {
        if !conn.sender.is_ready() {
            // Still busy (an upload the upstream answered before it ended) or closed:
            // dropping it lets hyper finish what is in flight and close.
            return;
        }
        let now = self.clock.now_ms();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The oldest are at the front: expired ones go first, then any over the bound.
        let expired = idle
            .iter()
            .take_while(|c| now - c.since_ms >= self.idle_timeout_ms)
            .count();
        let over = (idle.len() - expired + 1).saturating_sub(MAX_IDLE);
        idle.drain(..expired + over);
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
                    let sent = conn.sender.try_send_request(req);
                    match within(&mut conn.deadline, sent).await.ok_or_else(late)? {
                        Ok(response) => return Ok((response, self.checkin(conn))),
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
            let mut timer = Deadline::new(deadline);
            // Boxed: connecting is the rare case, and its future (TCP, TLS, the handshake) is
            // large enough that inline it would be copied with every request's future.
            let connected = Box::pin(self.connect());
            let mut sender = within(&mut timer, connected).await.ok_or_else(late)??;
            let sent = sender.send_request(req);
            match within(&mut timer, sent).await.ok_or_else(late)? {
                Ok(response) => {
                    let conn = Lent {
                        sender,
                        deadline: timer,
                    };
                    Ok((response, self.checkin(conn)))
                }
                Err(e) => Err(request_error(e)),
            }
        }
    }

    fn checkin(&self, conn: Lent) -> Checkin {
        Checkin {
            conn,
            pool: self.pool.clone(),
        }
    }

    /// A new connection, its I/O driven by a task of its own until it closes.
    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            // An upgraded connection (a WebSocket) is handed to the tunnel from here.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

pin_project_lite::pin_project! {
    /// `work`'s output, or `None` once `deadline` has passed first: `tokio::time::Timeout`
    /// with the connection's timer, which that type cannot borrow.
    struct Within<'d, F> {
        #[pin]
        work: F,
        deadline: &'d mut Deadline,
    }
}

fn within<F: Future>(deadline: &mut Deadline, work: F) -> Within<'_, F> {
    Within { work, deadline }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.work.poll(cx) {
            return Poll::Ready(Some(done));
        }
        Pin::new(&mut **this.deadline).poll(cx).map(|()| None)
    }
}

fn request_error(e: hyper::Error) -> UpstreamError {
    match is_client_body(&e) {
        true => UpstreamError::ClientBody(e),
        false => UpstreamError::Request(e),
    }
}
