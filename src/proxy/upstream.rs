//! Connections to upstreams: one pooled hyper-util client per site, over plain TCP or rustls.
//!
//! The request body is streamed straight through; only connect and response-header waits
//! are bounded here (bodies may legitimately take long, and are bounded by the client side).

use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Limits, SiteConfig};
use crate::tls::{self, TlsError};

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or the connection broke before a response.
    #[error("upstream request failed: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// No response headers within the route's timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The client's request body broke while it was being forwarded (malformed chunked
    /// framing, a connection reset mid-upload): the client's fault, not the upstream's.
    #[error("request body from the client failed: {0}")]
    ClientBody(#[source] hyper_util::client::legacy::Error),
}

/// Whether a client error came from the request body we were streaming upstream: hyper
/// reports a failed outgoing body as a user error whose cause is the body's own error,
/// here the server side's `hyper::Error` for the client's connection.
fn is_client_body(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() && std::error::Error::source(h).is_some_and(|c| c.is::<hyper::Error>()) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// A site's upstream: its origin and pooled client.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
}

/// Upstreams for every site, indexed like the configuration's sites.
pub type Upstreams = Arc<[Upstream]>;

/// Builds one client per site.
pub fn build(sites: &[SiteConfig], limits: &Limits) -> Result<Upstreams, TlsError> {
    let mut out = Vec::with_capacity(sites.len());
    for site in sites {
        let connector = tls::https_connector(
            site.upstream.ca_file.as_deref(),
            limits.upstream_connect_timeout,
        )?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(limits.upstream_idle_timeout)
            .pool_max_idle_per_host(256)
            .build(connector);
        let origin = &site.upstream.origin;
        let (Some(scheme), Some(authority)) =
            (origin.scheme().cloned(), origin.authority().cloned())
        else {
            // Validation guarantees both; an origin without them cannot be reached.
            continue;
        };
        out.push(Upstream {
            scheme,
            authority,
            client,
        });
    }
    Ok(out.into())
}

impl Upstream {
    /// The absolute URI for `path_and_query` on this upstream.
    pub fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Sends `req` (URI already rewritten) and waits for the response headers.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // Clients may speak h2 to us; upstreams get HTTP/1.1 (or h2 by ALPN on TLS).
        *req.version_mut() = Version::HTTP_11;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if is_client_body(&e) => Err(UpstreamError::ClientBody(e)),
            Ok(Err(e)) => Err(UpstreamError::Connect(e)),
            Err(_) => Err(UpstreamError::Timeout(timeout)),
        }
    }
}
