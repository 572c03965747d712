//! jumpgate: a TLS reverse-proxy authentication gateway.
//!
//! # Layout
//! - [`config`]: the validated configuration, parsed once.
//! - [`server`]: listeners, TLS handshakes, HTTP connections, draining; [`deadline`]:
//!   timers kept from one request to the next.
//! - [`proxy`]: the request pipeline, upstream forwarding, tunnels and the gateway's own pages.
//! - [`canonical`]: the canonical method, host and path a request is routed and forwarded on.
//! - [`policy`]: compiled routes and pure access decisions.
//! - [`headers`]: hop-by-hop, forwarding and identity header hygiene.
//! - [`tls`]: rustls server and client configs, certificate reload.
//! - [`oidc`]: sign-in with the identity provider; [`session`]: server-side sessions and
//!   cookies; [`identity`]: identity headers and the signed assertion sent upstream.
//! - [`directory`]: the JumpCloud directory snapshot, its sync and its cache.
//! - [`admin`], [`metrics`], [`telemetry`], [`shutdown`], [`devcert`]; [`runtime`]: the
//!   scheduler and its worker threads; [`wake`]: wakers that remember being used.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod audit;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod devcert;
pub mod directory;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod session;
pub mod shared;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod wake;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admin::Readiness;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::proxy::Shared;
use crate::tls::{CertStore, TlsError};

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(2);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The config key naming the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A secret named in the configuration could not be read.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// The cookie key could not be loaded or created.
    #[error(transparent)]
    CookieKey(#[from] session::cookie::KeyError),
    /// The assertion signing key could not be loaded or created.
    #[error(transparent)]
    SigningKey(#[from] identity::IdentityError),
    /// The audit log file could not be opened.
    #[error("audit.output: {source}")]
    Audit {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The Redis settings are unusable.
    #[error(transparent)]
    Redis(#[from] session::StoreError),
}

/// The sockets the gateway serves on. Tests bind `127.0.0.1:0` themselves.
#[derive(Debug)]
pub struct Listeners {
    /// Public TLS listener.
    pub public: TcpListener,
    /// Plain-HTTP listener that redirects to https.
    pub redirect: Option<TcpListener>,
    /// Admin listener (health, readiness, metrics).
    pub admin: Option<TcpListener>,
    /// Forward-auth listener (plain HTTP, for a proxy on the same host or network).
    pub verify: Option<TcpListener>,
}

impl Listeners {
    /// The public listener, and the others.
    fn split(self) -> (TcpListener, SideListeners) {
        let side = SideListeners {
            admin: self.admin,
            verify: self.verify,
            redirect: self.redirect,
        };
        (self.public, side)
    }

    /// Binds every address the configuration names.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        async fn one(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { key, addr, source })
        }
        let server = &config.server;
        Ok(Listeners {
            public: one("server.listen", server.listen).await?,
            redirect: match server.http_redirect_listen {
                Some(addr) => Some(one("server.http_redirect_listen", addr).await?),
                None => None,
            },
            admin: match server.admin_listen {
                Some(addr) => Some(one("server.admin_listen", addr).await?),
                None => None,
            },
            verify: match server.verify_listen {
                Some(addr) => Some(one("server.verify_listen", addr).await?),
                None => None,
            },
        })
    }
}

/// Runs the gateway on `listeners` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish within `server.shutdown_grace`, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_with(config, listeners, Clock::system(), shutdown).await
}

/// [`run`], keeping time by `clock`: a test moves an adjustable clock past a session's end or
/// the directory's `max_staleness` instead of sleeping through it.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let https_port = listeners.public.local_addr().map_or(443, |a| a.port());
    let public_port = config.server.public_port.unwrap_or(https_port);
    // Built once for the life of the process...
    let services = Services::start(&config, public_port, clock)?;
    let (tunnel_stop, tunnel_rx) = shutdown::channel();
    // ...and the routing built on them, which a reload replaces whole.
    let (shared, sync) = services.routing(&config, public_port, tunnel_rx.receiver())?;
    let readiness = Arc::new(services.readiness(shared.directory.clone()));
    let shared: Arc<proxy::Live> = Arc::new(arc_swap::ArcSwap::from_pointee(shared));
    let (stop, stopped) = shutdown::channel();
    let background = services.spawn_background(&config, &shared, sync, &stopped);

    let limits = &config.server.limits;
    let (public, side) = listeners.split();
    let metrics = &services.metrics;
    let status = Arc::new(status::Status {
        started: services.clock.now(),
        clock: services.clock.clone(),
        live: shared.clone(),
        certs: services.certs.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });
    // Ready before the admin listener can answer: its task may run on another worker at once,
    // and the public listener is already bound, its accept loop next on this task.
    log_listening("public (TLS)", &public);
    readiness.set_listening(true);
    let serving = side.serve(limits, &stopped, &status, &shared, https_port);

    let public_readiness = readiness.clone();
    let stop_accepting = async move {
        shutdown.await;
        public_readiness.set_listening(false);
    };
    let (grace, acceptor) = (config.server.shutdown_grace, services.acceptor.clone());
    server::serve_public(
        public,
        acceptor,
        shared,
        limits.clone(),
        grace,
        stop_accepting,
    )
    .await;

    // Tunnels, the side listeners and the loops beside them stop with the public one.
    tunnel_stop.stop();
    stop.stop();
    for task in serving {
        let _ = task.await;
    }
    join_within(background, grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// What start-up builds once and keeps for the life of the process: metrics, the TLS
/// certificate, the audit log, sign-in and sessions, API-token issuers, the shared store.
/// The routing built on them ([`Shared`]) is what a reload replaces.
struct Services {
    metrics: Arc<Metrics>,
    certs: Arc<CertStore>,
    acceptor: TlsAcceptor,
    audit: Option<Arc<audit::Audit>>,
    auth: Option<Arc<proxy::auth::Auth>>,
    api_tokens: Option<Arc<oidc::api_token::ApiTokens>>,
    redis: Option<Arc<crate::shared::RedisStore>>,
    clock: Clock,
}

/// The directory and the syncer that keeps it, when `[directory]` is set.
type Sync = Option<(directory::Syncer, Arc<directory::Directory>)>;

impl Services {
    fn start(config: &Config, public_port: u16, clock: Clock) -> Result<Services, StartError> {
        let certs = CertStore::load(&config.server.tls_cert, &config.server.tls_key)?;
        let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
        let audit = match &config.audit {
            Some(output) => Some(Arc::new(
                audit::Audit::start(output).map_err(|source| StartError::Audit { source })?,
            )),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let auth = build_auth(config, public_port, &audit, &metrics, &clock)?;
        let api_tokens = match config.api_tokens.is_empty() {
            true => None,
            false => {
                let oidc = config.oidc.as_ref();
                let skew = oidc.map_or(Duration::from_secs(120), |o| o.clock_skew);
                let ca = oidc.and_then(|o| o.ca_file.as_deref());
                let tokens = oidc::api_token::ApiTokens::new(&config.api_tokens, ca, skew)?;
                Some(Arc::new(tokens))
            }
        };
        let redis = auth.as_ref().and_then(|a| a.sessions.shared().cloned());
        Ok(Services {
            metrics,
            certs,
            acceptor,
            audit,
            auth,
            api_tokens,
            redis,
            clock,
        })
    }

    /// The routing for `config` on these services, with the directory (its last good
    /// snapshot already in force, so a restart during a JumpCloud outage enforces it).
    fn routing(
        &self,
        config: &Config,
        public_port: u16,
        tunnels: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Shared, Sync), StartError> {
        let metrics = self.metrics.clone();
        let mut shared = Shared::new(
            config,
            public_port,
            self.auth.clone(),
            metrics,
            tunnels,
            self.clock.clone(),
        )?;
        shared.audit = self.audit.clone();
        shared.api_tokens = self.api_tokens.clone();
        let Some(dc) = &config.directory else {
            return Ok((shared, None));
        };
        let groups = shared.routes.group_refs().to_vec();
        let directory = Arc::new(directory::Directory::new(dc.max_staleness, groups));
        let ca = config.oidc.as_ref().and_then(|o| o.ca_file.as_deref());
        let syncer = directory::Syncer {
            config: dc.clone(),
            client: oidc::http::IdpClient::new(ca, dc.request_timeout)?,
            api_key: secret::load(&dc.api_key, "directory.api_key")?,
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
        };
        syncer.load_cache_into(&directory);
        shared.directory = Some(directory.clone());
        Ok((shared, Some((syncer, directory))))
    }

    fn readiness(&self, directory: Option<Arc<directory::Directory>>) -> Readiness {
        let auth = self.auth.as_ref();
        let step_up = auth
            .and_then(|a| a.step_up.as_ref())
            .map(|s| s.oidc.clone());
        Readiness::new(
            auth.map(|a| a.oidc.clone()),
            step_up,
            directory,
            self.redis.clone(),
            self.clock.clone(),
        )
    }

    /// The loops that run beside the listeners: certificate and configuration watching,
    /// SIGHUP, idle upstream connections, provider discovery, API-token keys, the shared
    /// store's events, the sync.
    fn spawn_background(
        &self,
        config: &Config,
        shared: &Arc<proxy::Live>,
        sync: Sync,
        stopped: &shutdown::Stop,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let metrics = &self.metrics;
        let reload_requested = Arc::new(tokio::sync::Notify::new());
        let hangups = shutdown::Hangups::new();
        let certs = self.certs.clone();
        let mut tasks = vec![
            until(stopped, certs.clone().watch(CERT_POLL, metrics.clone())),
            until(
                stopped,
                reload_on_sighup(hangups, certs, metrics.clone(), reload_requested.clone()),
            ),
            until(
                stopped,
                reload::watch(
                    config.source.clone(),
                    config.clone(),
                    shared.clone(),
                    metrics.clone(),
                    reload_requested,
                ),
            ),
            until(stopped, proxy::upstream::sweep_idle(shared.clone())),
        ];
        if let Some(auth) = &self.auth {
            tasks.push(until(stopped, auth.oidc.clone().discover_until_ready()));
            if let Some(step_up) = &auth.step_up {
                tasks.push(until(stopped, step_up.oidc.clone().discover_until_ready()));
            }
        }
        if let Some(tokens) = &self.api_tokens {
            tasks.push(until(stopped, tokens.clone().run()));
        }
        if let (Some(store), Some(auth)) = (&self.redis, &self.auth) {
            let (auth, notify) = (auth.clone(), store.clone());
            tasks.push(until(
                stopped,
                store.clone().run(move |event| {
                    if let crate::shared::Event::Snapshot(_) = event {
                        notify.snapshot_published.notify_waiters();
                    }
                    auth.sessions.apply(&event);
                }),
            ));
        }
        match (sync, &self.redis) {
            (Some((syncer, directory)), Some(store)) => {
                tasks.push(until(stopped, syncer.run_shared(directory, store.clone())));
            }
            (Some((syncer, directory)), None) => tasks.push(until(stopped, syncer.run(directory))),
            (None, _) => {}
        }
        tasks
    }
}

/// Runs `task` in its own task until it ends or `stopped` is set, whichever is first: a loop
/// is told to stop at one of its waits, and can be joined.
fn until(
    stopped: &shutdown::Stop,
    task: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let stopped = stopped.clone().wait();
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = stopped => {}
        }
    })
}

/// Joins the background loops, within `deadline`; any still running then is cut off.
async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, deadline: Duration) {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(deadline, futures_util::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!("background tasks still running at the drain deadline; cut off");
        aborts.iter().for_each(|a| a.abort());
    }
}

/// The listeners beside the public one.
struct SideListeners {
    admin: Option<TcpListener>,
    verify: Option<TcpListener>,
    redirect: Option<TcpListener>,
}

impl SideListeners {
    /// Serves each until `stopped`; the handles finish once their connections have.
    fn serve(
        self,
        limits: &config::Limits,
        stopped: &shutdown::Stop,
        status: &Arc<status::Status>,
        shared: &Arc<proxy::Live>,
        https_port: u16,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut serving = Vec::new();
        if let Some(listener) = self.admin {
            serving.push(serve_admin(listener, limits, stopped, status));
        }
        if let Some(listener) = self.verify {
            serving.push(serve_forward_auth(listener, limits, stopped, shared));
        }
        if let Some(listener) = self.redirect {
            log_listening("http redirect", &listener);
            let (shared, done) = (shared.clone(), stopped.clone().wait());
            let redirect =
                server::serve_redirect(listener, shared, https_port, limits.clone(), done);
            serving.push(tokio::spawn(redirect));
        }
        serving
    }
}

/// The admin listener: health, readiness, metrics and the status page.
fn serve_admin(
    listener: TcpListener,
    limits: &config::Limits,
    stopped: &shutdown::Stop,
    status: &Arc<status::Status>,
) -> tokio::task::JoinHandle<()> {
    log_listening("admin", &listener);
    let status = status.clone();
    tokio::spawn(server::serve_plain(
        listener,
        limits.clone(),
        stopped.clone().wait(),
        move |req| admin::handle(&req, &status),
    ))
}

/// The forward-auth listener: `/.jumpgate/verify` only, for the front proxy.
fn serve_forward_auth(
    listener: TcpListener,
    limits: &config::Limits,
    stopped: &shutdown::Stop,
    shared: &Arc<proxy::Live>,
) -> tokio::task::JoinHandle<()> {
    log_listening("forward-auth", &listener);
    let shared = shared.clone();
    tokio::spawn(server::serve_plain_async(
        listener,
        limits.clone(),
        stopped.clone().wait(),
        move |req, peer| {
            let shared = shared.clone();
            async move {
                let shared = shared.load_full();
                let json = proxy::respond::wants_json(req.headers());
                if req.uri().path() != proxy::forward_auth::VERIFY_PATH {
                    return proxy::respond::rejection(proxy::respond::Rejection::NotFound, json);
                }
                let mut headers = req.headers().clone();
                headers::mark_sensitive(&mut headers);
                proxy::forward_auth::serve(&shared, peer.ip(), &headers, json).await
            }
        },
    ))
}

/// Loads the client secret and keys and builds the sign-in state, when `[oidc]` is set.
fn build_auth(
    config: &Config,
    public_port: u16,
    audit: &Option<Arc<audit::Audit>>,
    metrics: &Arc<Metrics>,
    clock: &Clock,
) -> Result<Option<Arc<proxy::auth::Auth>>, StartError> {
    let Some(oidc_config) = &config.oidc else {
        return Ok(None);
    };
    let secret = secret::load(&oidc_config.client_secret, "oidc.client_secret")?;
    let oidc = Arc::new(oidc::Oidc::new(oidc_config.clone(), secret)?);
    let (key, created) = session::cookie::CookieKey::load_or_create(&config.session.key_file)?;
    if created {
        tracing::info!(path = %config.session.key_file.display(), "generated a new cookie key");
    }
    let (signer, created) = identity::Signer::load_or_create(&config.identity)?;
    if created {
        tracing::info!(path = %config.identity.signing_key_file.display(), "generated a new assertion signing key");
    }
    let step_up = match &oidc_config.step_up {
        Some(su) => {
            let secret = secret::load(&su.client_secret, "oidc.step_up.client_secret")?;
            Some(proxy::auth::StepUp {
                oidc: Arc::new(oidc::Oidc::for_step_up(oidc_config, su, secret)?),
                config: su.clone(),
            })
        }
        None => None,
    };
    let shared = match &config.session.redis {
        Some(rc) if config.session.store == config::StoreKind::Redis => {
            let passwords = crate::shared::Passwords::load(rc)?;
            Some(crate::shared::RedisStore::new(rc, passwords)?)
        }
        _ => None,
    };
    Ok(Some(Arc::new(proxy::auth::Auth {
        audit: audit.clone(),
        metrics: metrics.clone(),
        oidc,
        sessions: session::Sessions::with_shared(&config.session, key, shared, clock.clone()),
        signer,
        public_port,
        step_up,
    })))
}

fn log_listening(what: &str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listener = what, addr = %addr, "listening");
    }
}

/// Reloads the certificate on every SIGHUP.
async fn reload_on_sighup(
    mut hangups: shutdown::Hangups,
    certs: Arc<CertStore>,
    metrics: Arc<Metrics>,
    config: Arc<tokio::sync::Notify>,
) {
    while hangups.recv().await {
        config.notify_one();
        match certs.reload() {
            Ok(()) => {
                metrics
                    .cert_reloads
                    .get_or_create(&OutcomeLabel::ok())
                    .inc();
                tracing::info!("SIGHUP: TLS certificate reloaded");
            }
            Err(e) => {
                metrics
                    .cert_reloads
                    .get_or_create(&OutcomeLabel::failed())
                    .inc();
                tracing::error!(error = %e, "SIGHUP: TLS certificate reload failed; keeping the previous certificate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A background loop never ends by itself; the stop flag ends it at its next wait, and
    /// the drain joins it instead of leaving it running.
    #[tokio::test]
    async fn background_loops_stop_and_are_joined() {
        let (stop, stopped) = shutdown::channel();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = ran.clone();
        let task = until(&stopped, async move {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        let handle = task.abort_handle();
        stop.stop();
        let joined = tokio::time::timeout(
            Duration::from_secs(5),
            join_within(vec![task], Duration::from_secs(5)),
        );
        joined.await.expect("joined within the deadline");
        assert!(handle.is_finished());
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
