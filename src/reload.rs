//! Live configuration reload, on SIGHUP and when the file changes: the new file is validated
//! completely first; if valid, sites, routes, policy, upstreams and trusted proxies switch
//! atomically for new requests while requests in flight finish on the old ones; if not, the old
//! configuration stays and the problems are logged and counted. Settings that cannot change
//! while running (listeners, keys, sign-in, sessions, directory, audit, limits) are reported as
//! needing a restart and left as they are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::proxy::Live;

/// How often the file is checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// The keys whose change needs a restart, comparing `old` and `new`.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (a, b) = (&old.server, &new.server);
    let mut check = |key: &'static str, same: bool| {
        if !same {
            keys.push(key);
        }
    };
    check("server.listen", a.listen == b.listen);
    check(
        "server.http_redirect_listen",
        a.http_redirect_listen == b.http_redirect_listen,
    );
    check("server.admin_listen", a.admin_listen == b.admin_listen);
    check("server.verify_listen", a.verify_listen == b.verify_listen);
    check("server.tls_cert", a.tls_cert == b.tls_cert);
    check("server.tls_key", a.tls_key == b.tls_key);
    check("server.public_port", a.public_port == b.public_port);
    check("server.state_dir", a.state_dir == b.state_dir);
    check(
        "server.shutdown_grace",
        a.shutdown_grace == b.shutdown_grace,
    );
    check("server.limits", a.limits == b.limits);
    check("log", old.log == new.log);
    check(
        "oidc",
        format!("{:?}", old.oidc) == format!("{:?}", new.oidc),
    );
    check(
        "session",
        format!("{:?}", old.session) == format!("{:?}", new.session),
    );
    check(
        "identity",
        format!("{:?}", old.identity) == format!("{:?}", new.identity),
    );
    check(
        "directory",
        format!("{:?}", old.directory) == format!("{:?}", new.directory),
    );
    check("audit", old.audit == new.audit);
    keys
}

/// Watches `path` (and `requested`, signalled on SIGHUP) and applies valid changes to `live`.
pub async fn watch(
    path: PathBuf,
    mut current: Config,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    requested: Arc<Notify>,
) {
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: Option<SystemTime> = mtime(&path);
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {
                let now = mtime(&path);
                if now == seen {
                    continue;
                }
                seen = now;
            }
            () = requested.notified() => {}
        }
        match Config::load(&path) {
            Err(e) => {
                metrics
                    .config_reloads
                    .get_or_create(&OutcomeLabel::failed())
                    .inc();
                tracing::error!(problems = %e, "configuration reload refused; the previous configuration stays in force");
            }
            Ok(new) => {
                let restart = restart_needed(&current, &new);
                let rebuilt = live.load().rebuild(&new);
                match rebuilt {
                    Ok(next) => {
                        if let Some(directory) = &next.directory {
                            directory.regroup(next.routes.group_refs().to_vec());
                        }
                        live.store(Arc::new(next));
                        metrics
                            .config_reloads
                            .get_or_create(&OutcomeLabel::ok())
                            .inc();
                        tracing::info!(sites = new.sites.len(), "configuration reloaded");
                        if !restart.is_empty() {
                            metrics.config_restart_needed.inc();
                            tracing::warn!(keys = ?restart, "these settings changed but only take effect after a restart");
                        }
                        current = new;
                    }
                    Err(e) => {
                        metrics
                            .config_reloads
                            .get_or_create(&OutcomeLabel::failed())
                            .inc();
                        tracing::error!(error = %e, "configuration reload refused; the previous configuration stays in force");
                    }
                }
            }
        }
    }
}
