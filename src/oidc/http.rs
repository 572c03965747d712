//! The HTTP client the gateway uses to talk to its identity provider: rustls, bounded
//! response sizes, timeouts, and never a followed redirect (a redirect from a token or
//! discovery endpoint is an error, not a hint).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::{self, TlsError};

/// Largest response body accepted from the provider.
const MAX_BODY: usize = 1024 * 1024;

/// Why a provider request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL could not be used.
    #[error("bad URL {0}")]
    Url(String),
    /// No connection or no complete response.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The body could not be read or was too large.
    #[error("response from {url} unreadable or larger than {MAX_BODY} bytes")]
    Body {
        /// Where.
        url: String,
    },
    /// The provider answered with a server error.
    #[error("{url} answered {status}")]
    Status {
        /// Where.
        url: String,
        /// What.
        status: StatusCode,
    },
    /// No response within the timeout.
    #[error("request to {url} timed out")]
    Timeout {
        /// Where.
        url: String,
    },
}

/// A response from the provider, fully read.
#[derive(Debug)]
pub struct Fetched {
    /// Status code.
    pub status: StatusCode,
    /// `Retry-After` in seconds, when sent.
    pub retry_after: Option<u64>,
    /// Body.
    pub body: Bytes,
}

/// Client for the identity provider (and, later, the directory API).
#[derive(Debug, Clone)]
pub struct IdpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl IdpClient {
    /// A client trusting the web PKI plus `ca_file`.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<IdpClient, TlsError> {
        let connector = tls::https_connector(ca_file, timeout)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(IdpClient { client, timeout })
    }

    /// `GET url`, optionally with extra headers.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Fetched, FetchError> {
        self.send(Method::GET, url, headers, None).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Fetched, FetchError> {
        let uri: Uri = url.parse().map_err(|_| FetchError::Url(url.to_owned()))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| FetchError::Url(url.to_owned()))?;
        let (status, headers, body) = self.exchange(req).await?;
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        Ok(Fetched {
            status,
            retry_after,
            body,
        })
    }

    /// One request and its whole response, within the timeout and the body limit.
    async fn exchange(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), FetchError> {
        let url = req.uri().to_string();
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("jumpgate/", env!("CARGO_PKG_VERSION"))),
        );
        for v in req.headers_mut().values_mut() {
            // Credentials travel in these headers; keep them out of any debug output.
            v.set_sensitive(true);
        }
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|source| FetchError::Transport {
                    url: url.clone(),
                    source,
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|_| FetchError::Body { url: url.clone() })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout { url: url.clone() })?
    }
}

/// openidconnect's requests (code exchange, refresh) go through this client: the same
/// TLS roots, timeouts, body limit and refusal to follow redirects as every other request
/// to the provider, and no second HTTP stack.
impl<'c> openidconnect::AsyncHttpClient<'c> for IdpClient {
    type Error = FetchError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let req = Request::from_parts(parts, Full::new(Bytes::from(body)));
            let url = req.uri().to_string();
            let (status, headers, body) = self.exchange(req).await?;
            // A provider that is down answers 5xx, often with an HTML page: an outage to
            // retry later, not a refusal of the code or of the refresh token.
            if status.is_server_error() {
                return Err(FetchError::Status { url, status });
            }
            let mut resp = openidconnect::HttpResponse::new(body.to_vec());
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            Ok(resp)
        })
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), so the result is safe in
/// a query string, a form body and `client_secret_basic` credentials alike.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 0xf) as usize]));
        }
    }
    out
}

/// Decodes a query string into pairs (`+` is a space; malformed escapes are kept as text).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (urldecode(k), urldecode(v))
        })
        .collect()
}

fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trip() {
        assert_eq!(urlencode("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        let q = parse_query("code=abc&state=x%2Fy&empty=&plus=a+b&bad=%zz&tail=%4");
        assert_eq!(q[0], ("code".into(), "abc".into()));
        assert_eq!(q[1], ("state".into(), "x/y".into()));
        assert_eq!(q[2], ("empty".into(), "".into()));
        assert_eq!(q[3], ("plus".into(), "a b".into()));
        assert_eq!(q[4], ("bad".into(), "%zz".into()));
        assert_eq!(q[5], ("tail".into(), "%4".into()));
    }
}
