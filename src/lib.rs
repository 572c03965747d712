//! jumpgate: a TLS reverse-proxy authentication gateway.
//!
//! # Layout
//! - [`config`]: the validated configuration, parsed once.
//! - [`server`]: listeners, TLS handshakes, HTTP connections, draining.
//! - [`proxy`]: the request pipeline, upstream forwarding, tunnels and the gateway's own pages.
//! - [`canonical`]: the canonical method, host and path a request is routed and forwarded on.
//! - [`policy`]: compiled routes and pure access decisions.
//! - [`headers`]: hop-by-hop, forwarding and identity header hygiene.
//! - [`tls`]: rustls server and client configs, certificate reload.
//! - [`oidc`]: sign-in with the identity provider; [`session`]: server-side sessions and
//!   cookies; [`identity`]: identity headers and the signed assertion sent upstream.
//! - [`directory`]: the JumpCloud directory snapshot, its sync and its cache.
//! - [`admin`], [`metrics`], [`telemetry`], [`shutdown`], [`devcert`].

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
pub mod devcert;
pub mod directory;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod shared;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admin::Readiness;
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
    let metrics = Arc::new(Metrics::new());
    let certs = CertStore::load(&config.server.tls_cert, &config.server.tls_key)?;
    let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
    let (tunnel_stop, tunnel_rx) = shutdown::channel();
    let public_port = config.server.public_port.unwrap_or_else(|| {
        listeners
            .public
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(443)
    });
    let audit = match &config.audit {
        Some(output) => Some(Arc::new(
            audit::Audit::start(output).map_err(|source| StartError::Audit { source })?,
        )),
        None => None,
    };
    let auth = build_auth(&config, public_port, &audit)?;
    let mut shared = Shared::new(
        &config,
        public_port,
        auth.clone(),
        metrics.clone(),
        tunnel_rx.receiver(),
    )?;
    shared.audit = audit;
    if !config.api_tokens.is_empty() {
        let skew = config
            .oidc
            .as_ref()
            .map_or(std::time::Duration::from_secs(120), |o| o.clock_skew);
        let ca = config.oidc.as_ref().and_then(|o| o.ca_file.as_deref());
        shared.api_tokens = Some(Arc::new(oidc::api_token::ApiTokens::new(
            &config.api_tokens,
            ca,
            skew,
        )?));
    }
    let syncer = match &config.directory {
        Some(dc) => {
            let directory = Arc::new(directory::Directory::new(
                dc.max_staleness,
                shared.routes.group_refs().to_vec(),
            ));
            let syncer = directory::Syncer {
                config: dc.clone(),
                client: oidc::http::IdpClient::new(
                    config.oidc.as_ref().and_then(|o| o.ca_file.as_deref()),
                    dc.request_timeout,
                )?,
                api_key: secret::load(&dc.api_key, "directory.api_key")?,
                metrics: metrics.clone(),
            };
            // The last good snapshot is in force before the first sync, so a restart during
            // a JumpCloud outage still enforces it.
            syncer.load_cache_into(&directory);
            shared.directory = Some(directory.clone());
            Some((syncer, directory))
        }
        None => None,
    };
    let directory_handle = shared.directory.clone();
    let shared: Arc<proxy::Live> = Arc::new(arc_swap::ArcSwap::from_pointee(shared));
    let redis = auth.as_ref().and_then(|a| a.sessions.shared().cloned());
    let readiness = Arc::new(Readiness::new(
        auth.as_ref().map(|a| a.oidc.clone()),
        auth.as_ref()
            .and_then(|a| a.step_up.as_ref())
            .map(|s| s.oidc.clone()),
        directory_handle,
        redis.clone(),
    ));
    let (stop, stopped) = shutdown::channel();
    let limits = config.server.limits.clone();

    let reload_requested = Arc::new(tokio::sync::Notify::new());
    let mut background = vec![
        tokio::spawn(certs.clone().watch(CERT_POLL, metrics.clone())),
        tokio::spawn(reload_on_sighup(
            shutdown::Hangups::new(),
            certs,
            metrics.clone(),
            reload_requested.clone(),
        )),
        tokio::spawn(reload::watch(
            config.source.clone(),
            config.clone(),
            shared.clone(),
            metrics.clone(),
            reload_requested,
        )),
    ];
    if let Some(auth) = &auth {
        background.push(tokio::spawn(auth.oidc.clone().discover_until_ready()));
        if let Some(step_up) = &auth.step_up {
            background.push(tokio::spawn(step_up.oidc.clone().discover_until_ready()));
        }
    }
    if let Some(tokens) = shared.load().api_tokens.clone() {
        background.push(tokio::spawn(tokens.run()));
    }
    if let (Some(store), Some(auth)) = (&redis, &auth) {
        let auth = auth.clone();
        let notify = store.clone();
        background.push(tokio::spawn(store.clone().run(move |event| {
            if let crate::shared::Event::Snapshot(_) = event {
                notify.snapshot_published.notify_waiters();
            }
            auth.sessions.apply(&event);
        })));
    }
    match (syncer, &redis) {
        (Some((syncer, directory)), Some(store)) => {
            background.push(tokio::spawn(syncer.run_shared(directory, store.clone())));
        }
        (Some((syncer, directory)), None) => background.push(tokio::spawn(syncer.run(directory))),
        (None, _) => {}
    }

    let mut listeners_done = Vec::new();
    if let Some(listener) = listeners.admin {
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        log_listening("admin", &listener);
        listeners_done.push(tokio::spawn(server::serve_plain(
            listener,
            limits.clone(),
            stopped.clone().wait(),
            move |req| admin::handle(&req, &readiness, &metrics),
        )));
    }
    if let Some(listener) = listeners.verify {
        log_listening("forward-auth", &listener);
        let shared = shared.clone();
        listeners_done.push(tokio::spawn(server::serve_plain_async(
            listener,
            limits.clone(),
            stopped.clone().wait(),
            move |req, peer| {
                let shared = shared.clone();
                async move {
                    let shared = shared.load_full();
                    let json = proxy::respond::wants_json(req.headers());
                    if req.uri().path() != proxy::verify::VERIFY_PATH {
                        return proxy::respond::rejection(
                            proxy::respond::Rejection::NotFound,
                            json,
                        );
                    }
                    let mut headers = req.headers().clone();
                    headers::mark_sensitive(&mut headers);
                    proxy::verify::serve(&shared, peer.ip(), &headers, json).await
                }
            },
        )));
    }
    let https_port = listeners
        .public
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(443);
    if let Some(listener) = listeners.redirect {
        log_listening("http redirect", &listener);
        listeners_done.push(tokio::spawn(server::serve_redirect(
            listener,
            shared.clone(),
            https_port,
            limits.clone(),
            stopped.clone().wait(),
        )));
    }

    log_listening("public (TLS)", &listeners.public);
    readiness.set_listening(true);
    let public_readiness = readiness.clone();
    server::serve_public(
        listeners.public,
        acceptor,
        shared,
        limits,
        config.server.shutdown_grace,
        async move {
            shutdown.await;
            public_readiness.set_listening(false);
        },
    )
    .await;

    tunnel_stop.stop();
    stop.stop();
    for task in listeners_done {
        let _ = task.await;
    }
    for task in background {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Loads the client secret and keys and builds the sign-in state, when `[oidc]` is set.
fn build_auth(
    config: &Config,
    public_port: u16,
    audit: &Option<Arc<audit::Audit>>,
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
        oidc,
        sessions: session::Sessions::with_shared(&config.session, key, shared),
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
