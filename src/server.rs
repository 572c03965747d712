//! Listeners and connections: the public TLS accept loop, the plain-HTTP redirect listener,
//! and graceful draining.
//!
//! The accept loop never waits on a client: the TLS handshake (under a timeout) and the HTTP
//! connection run in a task per connection, watched by hyper-util's graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::canonical;
use crate::config::Limits;
use crate::metrics::OutcomeLabel;
use crate::proxy::{ConnInfo, Gateway, ResponseBody, Shared};

/// The HTTP server settings shared by every connection on the public listener.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Accepts TLS connections on `listener` and serves them until `shutdown` resolves, then
/// drains open connections for up to `grace`.
pub async fn serve_public(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(http_builder(&limits));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let metrics = shared.metrics.clone();
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
            let service = Gateway::new(shared, ConnInfo { peer, sni });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            metrics.open_connections.inc();
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
            }
            metrics.open_connections.dec();
        });
    }
    drop(listener);
    tracing::info!(grace = ?grace, "draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

/// Serves plain HTTP on `listener`, answering every request with 308 to the same path over
/// https on one of the configured sites; unknown hosts get 421 so the listener cannot be
/// used to redirect anywhere else.
pub async fn serve_redirect(
    listener: TcpListener,
    shared: Arc<Shared>,
    https_port: u16,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let service_shared = shared.clone();
    serve_plain(listener, limits, shutdown, move |req: Request<Incoming>| {
        redirect_response(&service_shared, https_port, &req)
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let handler = handler.clone();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let resp = handler(req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
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
