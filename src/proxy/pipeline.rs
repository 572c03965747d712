//! THE request path, top to bottom. Every step is one call into the module that owns it;
//! the order of the steps is decided here and nowhere else.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::access;
use super::body::ResponseBody;
use super::log::AccessLog;
use super::respond::{self, Rejection};
use super::upstream::{Checkin, UpstreamError};
use super::{auth, endpoints, tunnel, ConnInfo, InFlight, Shared};
use crate::audit::{RequestContext, REQUEST};
use crate::canonical;
use crate::headers;
use crate::metrics::{LabelText, Lately, RouteCounters, UpstreamErrorLabel, UpstreamFailure};
use crate::policy::routes::{Route, Site};
use crate::policy::Permit;
use crate::policy::Verdict;

/// The site and route of a request that matched none, shared rather than allocated.
static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// The gateway's own path prefix, reserved on every site.
pub const RESERVED_PREFIX: &str = "/.jumpgate/";

/// What the request path keeps about a request besides the request itself: filled in as the
/// request goes, read once it is answered.
struct Ledger<'s> {
    /// Its access-log line.
    log: AccessLog,
    /// The counters of the route it matched.
    counters: &'s RouteCounters,
    /// What its audit lines name it by.
    context: RequestContext,
    /// Its `Accept`, kept to decide whether the gateway's own answers are JSON: parsed only
    /// when the gateway answers, which forwarded requests never need.
    accept: Option<HeaderValue>,
}

impl Ledger<'_> {
    /// Whether the client wants the gateway's own answers as JSON.
    fn json(&self) -> bool {
        respond::accepts_json(self.accept.as_ref())
    }
}

/// Handles one request: answers it or forwards it, and accounts for it. `in_flight`, when
/// the connection counts its requests, goes with the response body.
///
/// Not an `async fn`, nor is [`forward`]: one copies its arguments into its state before
/// its body starts (the request is 264 bytes, and the copy a call into `memcpy` per request);
/// an `async move` block uses them where they were captured. It owns the configuration and
/// the connection's handles, so the service returns this future as it is: a wrapper awaiting
/// it would hold a second copy of the request in its own state, and hyper moves the whole
/// state into place once per request.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
    in_flight: Option<InFlight>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static {
    async move {
        let (shared, conn) = (&*shared, &*conn);
        let start = Instant::now();
        headers::mark_sensitive(req.headers_mut());
        let client = headers::client_ip(req.headers(), conn.peer_ip(), &shared.trusted_proxies);
        let request_id = request_id(shared, conn.peer_ip(), req.headers());
        let mut ledger = Ledger {
            log: AccessLog {
                site: NONE.clone(),
                route: NONE.clone(),
                method: req.method().clone(),
                path: String::from("-"),
                status: StatusCode::OK,
                start,
                bytes: 0,
                client,
            },
            counters: &shared.unmatched_counters,
            accept: req.headers().get(header::ACCEPT).cloned(),
            context: RequestContext {
                client_ip: client,
                request_id,
            },
        };
        let mut response = match forward(shared, conn, req, &mut ledger).await {
            Ok(response) => response,
            Err(rejection) => respond::rejection(rejection, ledger.json()),
        };
        let Ledger {
            mut log,
            counters,
            context,
            ..
        } = ledger;
        // The upstream was sent a copy; the answer takes the value itself.
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), context.request_id);
        log.status = response.status();
        counters.record(&shared.metrics, log.status.as_u16(), start.elapsed());
        if shared.access_log {
            response.body_mut().set_log(Box::new(log));
        }
        if let Some(in_flight) = in_flight {
            response.body_mut().set_in_flight(in_flight);
        }
        Ok(response)
    }
}

/// Decides and, when allowed, forwards. `Err` is an early answer from the gateway. What the
/// request matched is left in the ledger.
#[allow(clippy::manual_async_fn)] // on purpose: see `handle`
fn forward<'a, 's>(
    shared: &'s Shared,
    conn: &'a ConnInfo,
    mut req: Request<Incoming>,
    ledger: &'a mut Ledger<'s>,
) -> impl Future<Output = Result<Response<ResponseBody>, Rejection>> + use<'a, 's> {
    // The request is changed in place on its way upstream, never taken apart: each part
    // taken out would be another field of this future (and it is moved whole once per
    // request), and taking it apart and back together copies it twice.
    async move {
        // 1. Size, then canonical method, host and path: everything after this reads only these.
        let target = Target::read(shared, conn, &mut req)?;
        let path = target.path()?;
        if shared.access_log {
            ledger.log.path = path.to_string();
        }
        // 2. No identity header from a client survives, on any route.
        headers::strip_inbound_identity(req.headers_mut(), &shared.extra_identity_headers);
        // 3. Site and route; the gateway's own endpoints answer here.
        let site = target.site.ok_or(Rejection::Misdirected)?;
        let readings = site.readings(&path);
        let route = readings.primary();
        ledger.log.site = site.host.clone();
        ledger.log.route = route.label.clone();
        if let Some(c) = shared
            .route_counters
            .get(site.upstream)
            .and_then(|site_counters| site_counters.get(route.slot))
        {
            ledger.counters = c;
        }
        if is_reserved(&path) {
            // Boxed, as is the challenge below: their futures are large and rare, and inline
            // they would be copied with every request's future (see BENCHMARKS.md). Their audit
            // lines, written deep in sign-in, find the request's context in a task-local.
            let (client, json) = (ledger.log.client, ledger.json());
            let endpoint = gateway_endpoint(shared, site, &path, &target.uri, req, client, json);
            return Box::pin(REQUEST.scope(ledger.context.clone(), endpoint)).await;
        }
        // 4. The access decision, on the request's session when the route needs one.
        // The request's one reading of the clock: the decision, the session's limits and the
        // upstream pool's idle times are all judged at it.
        let now_ms = shared.clock.now_ms();
        let now = now_ms.div_euclid(1000);
        let upgrade = headers::is_upgrade(req.headers());
        let asked = access::Asked::new(site, readings, req.method(), upgrade, &path, req.headers())
            .on_connection(&conn.session_cookie)
            .in_request(&ledger.context);
        let permit = match access::verdict(shared, asked, now_ms).await? {
            Verdict::Allow(permit) => permit,
            verdict => {
                let (client, json) = (ledger.log.client, ledger.json());
                let challenge = challenge(
                    shared,
                    site,
                    &path,
                    &target.uri,
                    &req,
                    verdict,
                    client,
                    json,
                );
                return Box::pin(REQUEST.scope(ledger.context.clone(), challenge)).await;
            }
        };
        // 5. The upstream request, identity set through the permit.
        let upgrade = upgrade && req.version() == Version::HTTP_11;
        let outgoing = Outgoing {
            site,
            path: &path,
            received: target.uri.path_and_query(),
            upgrade,
            request_id: &ledger.context.request_id,
            now,
        };
        let accept = outgoing.prepare(shared, conn, &permit, &mut req)?;
        // 6. Forwarded, streaming; an upgrade becomes a tunnel.
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let upstream = &shared.upstreams[site.upstream];
        let (response, checkin) = upstream
            .forward(req, route.upstream_response_timeout, now_ms)
            .await
            .map_err(|e| upstream_failed(shared, site, route, e))?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return switch_protocols(shared, site, route, response, client_upgrade, accept);
        }
        // 7. The answer, finished.
        Ok(finish(response, checkin, &permit))
    }
}

/// What step 1 reads off a request: the site its canonical host names, if any, and its URI
/// (the path is made canonical from it, borrowed, by [`Target::path`]).
struct Target<'s> {
    site: Option<&'s Site>,
    uri: http::Uri,
}

impl<'s> Target<'s> {
    /// The header section's size, the method, and the host (which must agree with the TLS
    /// server name); the URI is taken out of the request.
    fn read(
        shared: &'s Shared,
        conn: &ConnInfo,
        req: &mut Request<Incoming>,
    ) -> Result<Target<'s>, Rejection> {
        if headers::section_size(req.method(), req.uri(), req.headers()) > shared.max_header_bytes {
            return Err(Rejection::HeadersTooLarge);
        }
        if !canonical::method_ok(req.method().as_str()) {
            return Err(Rejection::BadRequest);
        }
        if canonical::method_echoes(req.method().as_str()) {
            return Err(Rejection::MethodNotAllowed);
        }
        let host = request_host(req)?;
        if conn.sni.as_deref().is_some_and(|sni| sni != host) {
            return Err(Rejection::Misdirected);
        }
        // Looked up while the host is still borrowed from the request; from here on the
        // site's own host stands for it.
        let site = shared.routes.site(&host);
        let uri = std::mem::take(req.uri_mut());
        Ok(Target { site, uri })
    }

    /// The canonical path; a path with no canonical form is refused.
    fn path(&self) -> Result<std::borrow::Cow<'_, str>, Rejection> {
        canonical::path(self.uri.path()).map_err(|e| {
            tracing::debug!(error = %e, "refused request path");
            Rejection::BadRequest
        })
    }
}

/// The gateway's own endpoints (`/.jumpgate/…`), in their one canonical spelling only:
/// another spelling of the namespace (case, `;params`) is never forwarded either.
#[allow(clippy::too_many_arguments)]
async fn gateway_endpoint(
    shared: &Shared,
    site: &Site,
    path: &str,
    uri: &http::Uri,
    req: Request<Incoming>,
    client: IpAddr,
    json: bool,
) -> Result<Response<ResponseBody>, Rejection> {
    if !path.starts_with(RESERVED_PREFIX) {
        return Err(Rejection::NotFound);
    }
    if is_rate_limited_endpoint(path, shared) {
        if let Err(wait) = shared.rate_limit.check(client) {
            return Ok(respond::too_many(wait, json));
        }
    }
    let (parts, body) = req.into_parts();
    if let Some(auth) = super::backchannel::route(shared, path, &parts.method) {
        return Ok(super::backchannel::handle(auth, body, &parts.headers).await);
    }
    let auth = shared.auth.as_deref();
    endpoints::handle(auth, site, path, &parts.method, uri, &parts.headers).await
}

/// The answer to a request that may not pass yet: a sign-in, or a fresher MFA step-up.
#[allow(clippy::too_many_arguments)]
async fn challenge(
    shared: &Shared,
    site: &Site,
    path: &str,
    uri: &http::Uri,
    req: &Request<Incoming>,
    verdict: Verdict,
    client: IpAddr,
    json: bool,
) -> Result<Response<ResponseBody>, Rejection> {
    let return_to = auth::return_to(path, uri.query());
    match (verdict, &shared.auth) {
        (Verdict::Allow(_), _) => unreachable!("an allowed request is forwarded"),
        (Verdict::SignIn, None) => Err(Rejection::SignInRequired),
        (Verdict::StepUp { .. }, None) => Err(Rejection::Forbidden),
        (Verdict::SignIn, Some(auth)) => {
            if let Err(wait) = shared.rate_limit.check(client) {
                return Ok(respond::too_many(wait, json));
            }
            auth::sign_in_required(auth, site, req.method(), req.headers(), &return_to, json).await
        }
        (Verdict::StepUp { max_age }, Some(auth)) => {
            let (method, headers) = (req.method(), req.headers());
            auth::step_up_required(auth, site, method, headers, &return_to, json, max_age).await
        }
    }
}

/// An allowed request on its way upstream.
struct Outgoing<'a> {
    site: &'a Site,
    path: &'a str,
    /// The path and query as the client sent them.
    received: Option<&'a PathAndQuery>,
    upgrade: bool,
    request_id: &'a HeaderValue,
    now: i64,
}

impl Outgoing<'_> {
    /// Makes the request the upstream's, in place: hop-by-hop headers and the gateway's
    /// cookies gone, forwarding headers ours, identity only from the permit, the site's Host,
    /// the canonical path. Returns what the upstream must answer a WebSocket handshake with.
    fn prepare(
        &self,
        shared: &Shared,
        conn: &ConnInfo,
        permit: &Permit,
        req: &mut Request<Incoming>,
    ) -> Result<Option<HeaderValue>, Rejection> {
        // Without a key the handshake is malformed and is not forwarded.
        let accept = match self.upgrade {
            true => Some(headers::websocket_accept(req.headers()).ok_or(Rejection::BadRequest)?),
            false => None,
        };
        let peer = conn.peer_ip();
        let trusted = headers::is_trusted(peer, &shared.trusted_proxies);
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h, self.upgrade);
        headers::strip_gateway_cookies(h);
        let host = &shared.forwarded_hosts[self.site.upstream];
        headers::set_forwarded(h, peer, conn.peer_value.as_ref(), trusted, host);
        h.insert(
            X_REQUEST_ID.clone(),
            crate::audit::id_value(self.request_id.as_bytes()),
        );
        if let Some(auth) = &shared.auth {
            let names = &shared.identity_headers[self.site.upstream];
            auth::set_identity(h, auth, names, permit, self.now);
            if let Some(session) = permit.session() {
                auth.maybe_refresh(session);
            }
        }
        // The host the request was decided on, as browsers reach it: never the client's
        // spelling (case, trailing dot, another port), which an upstream building URLs from
        // it would hand to the next user. HTTP/2 carries none; an HTTP/1.1 upstream needs one.
        h.insert(
            header::HOST,
            shared.upstream_hosts[self.site.upstream].clone(),
        );
        // Most paths are already canonical: then the received target is shared (a reference
        // count) rather than rebuilt, checked and copied.
        let path_and_query = match self.received {
            Some(pq) if pq.path() == self.path => pq.clone(),
            received => match received.and_then(PathAndQuery::query) {
                Some(q) => PathAndQuery::try_from(format!("{}?{q}", self.path)),
                None => PathAndQuery::try_from(self.path),
            }
            .map_err(|_| Rejection::BadRequest)?,
        };
        // Origin-form, as an HTTP/1.1 request line carries it; `Host` names the upstream.
        *req.uri_mut() = path_and_query.into();
        Ok(accept)
    }
}

/// What the client is told when its request could not be forwarded: 502 or 504, counted, or
/// 400 when it was the client's own body that failed.
fn upstream_failed(shared: &Shared, site: &Site, route: &Route, e: UpstreamError) -> Rejection {
    if let UpstreamError::ClientBody(_) = e {
        tracing::debug!(site = %site.host, route = %route.label, error = %ErrorChain(&e), "request body from the client failed");
        return Rejection::BadRequest;
    }
    let kind = match e {
        UpstreamError::Timeout(_) => UpstreamFailure::Timeout,
        _ => UpstreamFailure::Connect,
    };
    tracing::warn!(site = %site.host, route = %route.label, error = %ErrorChain(&e), "upstream request failed");
    let label = UpstreamErrorLabel {
        site: LabelText(site.host.clone()),
        kind,
    };
    shared.metrics.upstream_errors.get_or_create(&label).inc();
    let now = crate::clock::now();
    shared
        .metrics
        .recent
        .count(Lately::UpstreamError, &site.host, now);
    match kind {
        UpstreamFailure::Connect => Rejection::BadGateway,
        UpstreamFailure::Timeout => Rejection::GatewayTimeout,
    }
}

/// A 101 hands the client a raw socket to the upstream, past every later rule: only a real
/// answer to this request's WebSocket handshake opens one, and the tunnel is pumped in its
/// own task until either side closes, it idles out, or the gateway shuts down.
fn switch_protocols(
    shared: &Shared,
    site: &Site,
    route: &Route,
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    accept: Option<HeaderValue>,
) -> Result<Response<ResponseBody>, Rejection> {
    let (Some(client_upgrade), Some(accept)) = (client_upgrade, accept) else {
        tracing::warn!(site = %site.host, "upstream switched protocols without being asked");
        return Err(Rejection::BadGateway);
    };
    if !headers::is_websocket_switch(response.headers(), &accept) {
        tracing::warn!(site = %site.host, route = %route.label, "upstream answered 101 without accepting the WebSocket handshake");
        return Err(Rejection::BadGateway);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let idle = route.tunnel_idle_timeout;
    let shutdown = shared.shutdown.clone();
    let metrics = shared.metrics.clone();
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                metrics.open_tunnels.inc();
                tunnel::pump(client, upstream, idle, shutdown).await;
                metrics.open_tunnels.dec();
            }
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    });
    let (mut parts, _) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, true);
    Ok(Response::from_parts(parts, ResponseBody::empty()))
}

/// The upstream's answer for the client: hop-by-hop headers gone, and private to the
/// signed-in user unless the upstream chose its own caching.
fn finish(
    response: Response<Incoming>,
    checkin: Checkin,
    permit: &Permit,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if permit.session().is_some() && !parts.headers.contains_key(header::CACHE_CONTROL) {
        // A page made for one signed-in user must never be kept by a shared cache in
        // front of the gateway and handed to someone else.
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    Response::from_parts(parts, ResponseBody::stream(body, checkin))
}

/// Whether a canonical path is in the gateway's namespace in any spelling a server might
/// treat as equal (case, `;` parameters).
pub fn is_reserved(path: &str) -> bool {
    let key = crate::policy::routes::match_key(path);
    // The namespace's root, `/.jumpgate`, or anything under it.
    let root = &RESERVED_PREFIX[..RESERVED_PREFIX.len() - 1];
    key.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

static X_REQUEST_ID: http::header::HeaderName =
    http::header::HeaderName::from_static("x-request-id");

/// The request's id: a trusted proxy's `X-Request-Id` when it sent a sane one, else ours.
pub(super) fn request_id(shared: &Shared, peer: IpAddr, headers: &http::HeaderMap) -> HeaderValue {
    if headers::is_trusted(peer, &shared.trusted_proxies) {
        if let Some(v) = headers.get(&X_REQUEST_ID).map(HeaderValue::as_bytes) {
            if !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic) {
                return crate::audit::id_value(v);
            }
        }
    }
    shared.request_ids.next()
}

/// Endpoints a flood would make expensive: sign-in starts and callbacks (each costs the
/// provider a round trip). Forward-auth is not one: a front proxy asks about every request
/// a user makes, and an answer costs no more than a proxied request.
fn is_rate_limited_endpoint(path: &str, shared: &Shared) -> bool {
    if matches!(path, "/.jumpgate/sign-in" | "/.jumpgate/step-up") {
        return true;
    }
    shared.auth.as_ref().is_some_and(|a| {
        path == a.oidc.config().callback_path
            || a.step_up
                .as_ref()
                .is_some_and(|s| path == s.config.callback_path)
    })
}

/// The request's host, canonical. `:authority` (HTTP/2, absolute-form) and `Host` must agree.
fn request_host(req: &Request<Incoming>) -> Result<Cow<'_, str>, Rejection> {
    let mut host_headers = req.headers().get_all(header::HOST).iter();
    let from_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(Rejection::BadRequest);
    }
    let from_header = match from_header {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(canonical::host)
                .ok_or(Rejection::BadRequest)?,
        ),
        None => None,
    };
    let from_uri = match req.uri().authority() {
        Some(a) => {
            if a.as_str().contains('@') {
                return Err(Rejection::BadRequest);
            }
            Some(canonical::host(a.as_str()).ok_or(Rejection::BadRequest)?)
        }
        None => None,
    };
    match (from_uri, from_header) {
        (Some(u), Some(h)) if u != h => Err(Rejection::BadRequest),
        (Some(u), _) => Ok(u),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(Rejection::BadRequest),
    }
}

/// Displays an error with its `source()` chain, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_reserved;

    #[test]
    fn the_gateway_namespace_in_every_spelling_and_nothing_beside_it() {
        for path in [
            "/.jumpgate",
            "/.jumpgate/",
            "/.jumpgate/callback",
            "/.JumpGate/callback",
            "/.jumpgate;x/callback",
            "/.JUMPGATE;p",
        ] {
            assert!(is_reserved(path), "{path}");
        }
        for path in [
            "/",
            "/.jumpgat",
            "/.jumpgatex",
            "/.jumpgate-x/callback",
            "/a/.jumpgate/callback",
            "/jumpgate/callback",
        ] {
            assert!(!is_reserved(path), "{path}");
        }
    }
}
