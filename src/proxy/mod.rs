//! The reverse proxy: the gateway's hyper service and the state every request reads.
//!
//! Only this module touches `Request` and `Response`. Its parts: [`pipeline`] is the request
//! path from top to bottom; [`upstream`] reaches upstreams; [`tunnel`] carries upgraded
//! connections; [`respond`] renders every response the gateway makes itself.

pub mod access;
pub mod auth;
pub mod backchannel;
pub mod body;
pub mod endpoints;
pub mod forward_auth;
pub mod log;
pub mod pipeline;
pub mod respond;
pub mod tunnel;
pub mod upstream;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderName;
use http::{Request, Response};
use hyper::body::Incoming;
use ipnet::IpNet;
use tokio::sync::watch;

use crate::config::Config;
use crate::identity::HeaderNames;
use crate::metrics::{Metrics, RouteCounters};
use crate::policy::Routes;
use crate::tls::TlsError;

use self::auth::Auth;

pub use body::ResponseBody;

/// State shared by every request, built once from the configuration.
#[derive(Debug)]
pub struct Shared {
    /// Compiled sites and routes.
    pub routes: Routes,
    /// One upstream per site, indexed like the configured sites.
    pub upstreams: upstream::Upstreams,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Peers that may ask forward-auth questions.
    pub verify_clients: Vec<IpNet>,
    /// The header forward-auth reads the original URI from.
    pub verify_uri_header: crate::config::UriHeader,
    /// Identity header names beyond the `X-Jumpgate-` namespace that clients may not send.
    pub extra_identity_headers: Vec<HeaderName>,
    /// Identity header names per site, indexed like the configured sites.
    pub identity_headers: Vec<HeaderNames>,
    /// The `Host` each site's upstream receives, indexed like the configured sites: the
    /// site's host, with the public port when it is not 443, never a client's spelling.
    pub upstream_hosts: Vec<http::HeaderValue>,
    /// Each site's host as `X-Forwarded-Host` carries it, indexed like the configured sites.
    pub forwarded_hosts: Vec<http::HeaderValue>,
    /// The port browsers use.
    pub public_port: u16,
    /// Sign-in, when `[oidc]` is configured.
    pub auth: Option<Arc<Auth>>,
    /// The directory, when `[directory]` is configured.
    pub directory: Option<Arc<crate::directory::Directory>>,
    /// The audit log, when `[audit]` is configured.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Request ids.
    pub request_ids: crate::audit::RequestIds,
    /// Bearer token issuers, when `[[api_token]]` is configured.
    pub api_tokens: Option<Arc<crate::oidc::api_token::ApiTokens>>,
    /// Rate limits on sign-in starts and callbacks.
    pub rate_limit: Arc<crate::audit::RateLimiter>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Each route's request counters, by site index and [`Route::slot`](crate::policy::Route).
    pub route_counters: Vec<Box<[RouteCounters]>>,
    /// The counters of requests that matched no site.
    pub unmatched_counters: RouteCounters,
    /// Whether to write access-log lines.
    pub access_log: bool,
    /// The configuration as `jumpgate check` summarises it (no secrets), for `/status`.
    pub summary: Arc<str>,
    /// The gateway's time, which every access decision is made at.
    pub clock: crate::clock::Clock,
    /// `server.limits.max_header_bytes`, enforced on the parsed header section (hyper's
    /// own limit bounds only its read buffer, which one TLS record can overshoot).
    pub max_header_bytes: usize,
    /// Flips to `true` when the drain deadline has passed, ending tunnels.
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Builds the request-path state from a validated configuration and the sign-in state.
    pub fn new(
        config: &Config,
        public_port: u16,
        auth: Option<Arc<Auth>>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
        clock: crate::clock::Clock,
    ) -> Result<Shared, TlsError> {
        let upstream_hosts = config
            .sites
            .iter()
            .map(|s| {
                let authority = if public_port == 443 {
                    s.host.clone()
                } else {
                    format!("{}:{public_port}", s.host)
                };
                // Site hosts are validated as canonical host names at load time.
                http::HeaderValue::from_str(&authority)
                    .unwrap_or(http::HeaderValue::from_static("invalid"))
            })
            .collect();
        let forwarded_hosts = config
            .sites
            .iter()
            .map(|s| {
                http::HeaderValue::from_str(&s.host)
                    .unwrap_or(http::HeaderValue::from_static("invalid"))
            })
            .collect();
        let identity_headers: Vec<HeaderNames> = config
            .sites
            .iter()
            .map(|s| HeaderNames::new(&s.headers))
            .collect();
        let mut extra_identity_headers: Vec<HeaderName> = Vec::new();
        for names in &identity_headers {
            for name in names.all() {
                if !crate::headers::is_identity_header(name.as_str(), &[])
                    && !extra_identity_headers.contains(name)
                {
                    extra_identity_headers.push(name.clone());
                }
            }
        }
        Ok(Shared {
            routes: Routes::compile(config),
            upstreams: upstream::build(&config.sites, &config.server.limits, &clock)?,
            trusted_proxies: config.server.trusted_proxies.clone(),
            verify_clients: config.server.verify_clients.clone(),
            verify_uri_header: config.server.verify_uri_header,
            extra_identity_headers,
            identity_headers,
            upstream_hosts,
            forwarded_hosts,
            public_port,
            auth,
            directory: None,
            audit: None,
            api_tokens: None,
            request_ids: crate::audit::RequestIds::default(),
            rate_limit: Arc::new(crate::audit::RateLimiter::new(
                config.server.limits.sign_in_rate,
            )),
            metrics,
            route_counters: route_counters(config),
            unmatched_counters: RouteCounters::new(Arc::from("-"), Arc::from("-")),
            access_log: config.log.access,
            summary: Arc::from(crate::config::summary(config)),
            max_header_bytes: config.server.limits.max_header_bytes,
            shutdown,
            clock,
        })
    }
}

/// Request counters for every configured route, indexed like [`Shared::route_counters`]:
/// by site in configuration order, then the site's default, then its routes as configured,
/// as [`Route::slot`](crate::policy::Route) numbers them.
fn route_counters(config: &Config) -> Vec<Box<[RouteCounters]>> {
    config
        .sites
        .iter()
        .map(|site| {
            let host: Arc<str> = Arc::from(site.host.as_str());
            std::iter::once("*")
                .chain(site.routes.iter().map(|r| r.path.as_str()))
                .map(|label| RouteCounters::new(host.clone(), Arc::from(label)))
                .collect()
        })
        .collect()
}

/// The request-path state in force, replaced whole when the configuration is reloaded.
pub type Live = arc_swap::ArcSwap<Shared>;

impl Shared {
    /// The state for a reloaded `config`: new sites, routes, upstreams, header names and
    /// trusted proxies; sign-in, sessions, the directory, the audit log and metrics carry over.
    pub fn rebuild(&self, config: &Config) -> Result<Shared, TlsError> {
        let mut next = Shared::new(
            config,
            self.public_port,
            self.auth.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
            self.clock.clone(),
        )?;
        next.routes = Routes::compile_extending(config, self.routes.group_refs());
        next.directory = self.directory.clone();
        next.audit = self.audit.clone();
        next.api_tokens = self.api_tokens.clone();
        // A reload must not hand every client a fresh allowance.
        if self.rate_limit.per_minute() == config.server.limits.sign_in_rate {
            next.rate_limit = self.rate_limit.clone();
        }
        Ok(next)
    }
}

/// What the gateway knows about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The TLS server name the client asked for, lower-cased, if any.
    pub sni: Option<String>,
    /// The peer's address as a header value (for `X-Forwarded-For`), made once.
    pub peer_value: Option<http::HeaderValue>,
    /// The session cookie the connection last presented, opened.
    pub session_cookie: crate::session::OpenedCookie,
}

impl ConnInfo {
    /// What a connection from `peer`, asking for server name `sni`, is known by.
    pub fn new(peer: SocketAddr, sni: Option<String>) -> ConnInfo {
        ConnInfo {
            peer,
            sni,
            peer_value: http::HeaderValue::from_str(&peer.ip().to_string()).ok(),
            session_cookie: crate::session::OpenedCookie::default(),
        }
    }

    /// The peer's IP address.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip()
    }
}

/// What a connection is doing: whether a request ever arrived, how many are in flight (until
/// their response bodies are finished or abandoned), and since when none has been.
#[derive(Debug)]
pub struct Activity {
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the last request in flight ended.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether a request has arrived on the connection.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// How long no request has been in flight, or `None` while one is.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.started.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight; dropped with its response body.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.epoch.elapsed().as_millis() as u64;
        self.0.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The hyper service for one client connection.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Live>,
    conn: Arc<ConnInfo>,
    activity: Option<Arc<Activity>>,
}

impl Gateway {
    /// A service for a connection with `conn`'s properties.
    pub fn new(shared: Arc<Live>, conn: ConnInfo) -> Gateway {
        Gateway {
            shared,
            conn: Arc::new(conn),
            activity: None,
        }
    }

    /// The same service, keeping count of what its connection is doing, for deadlines on
    /// silence and idleness. Only connections that need them pay for the count: HTTP/1.1's
    /// deadlines are hyper's.
    pub fn watched(self) -> (Gateway, Arc<Activity>) {
        let activity = Arc::new(Activity::new());
        let watched = Gateway {
            activity: Some(activity.clone()),
            ..self
        };
        (watched, activity)
    }

    /// Answers one request on this connection. Not boxed, so a server that names the
    /// service's future through generics (`service_fn`, as HTTP/1.1 does) keeps it in its
    /// own state and allocates nothing per request.
    pub fn respond(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send + 'static
    {
        let in_flight = self.activity.as_ref().map(|a| a.begin());
        // Each request takes the configuration in force when it arrives and keeps it to the
        // end, so a reload never changes the rules under a request in flight.
        pipeline::handle(self.shared.load_full(), self.conn.clone(), req, in_flight)
    }
}

/// HTTP/2 runs each request as a task of its own, which moves the service's future: boxed,
/// the move is of a pointer.
impl hyper::service::Service<Request<Incoming>> for Gateway {
    type Response = Response<ResponseBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.respond(req))
    }
}
