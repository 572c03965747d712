//! `jumpgate directory sync`: one sync by hand, with counts and who would gain or lose access
//! to each site compared with the cached snapshot.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Access, Config};
use crate::directory::snapshot::Reference;
use crate::directory::{load_cache, store_cache, Directory, Snapshot, Syncer};
use crate::metrics::Metrics;
use crate::policy::{admits, Routes};

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No `[directory]` in the configuration.
    #[error("the configuration has no [directory] table")]
    NotConfigured,
    /// The API key could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The sync failed.
    #[error(transparent)]
    Sync(#[from] crate::directory::jumpcloud::SyncError),
    /// The cache could not be written.
    #[error(transparent)]
    Cache(#[from] crate::directory::CacheError),
}

/// Users each site's default rule admits in `snapshot` (by email, else id).
fn admitted(snapshot: &Snapshot, routes: &Routes, host: &str) -> BTreeSet<String> {
    let Some(site) = routes.site(host) else {
        return BTreeSet::new();
    };
    snapshot
        .users()
        .iter()
        .filter(|u| admits(snapshot, u, &site.default.allow).is_ok())
        .map(|u| {
            u.email
                .as_deref()
                .map_or_else(|| u.id.to_string(), str::to_owned)
        })
        .collect()
}

/// Runs one sync and describes it; with `write`, the result replaces the cache file.
pub async fn sync_report(config: &Config, write: bool) -> Result<String, ReportError> {
    let dc = config
        .directory
        .as_ref()
        .ok_or(ReportError::NotConfigured)?;
    let routes = Routes::compile(config);
    let refs = routes.group_refs().to_vec();
    let syncer = Syncer {
        clock: crate::clock::Clock::system(),
        config: dc.clone(),
        client: crate::oidc::http::IdpClient::new(
            config.oidc.as_ref().and_then(|o| o.ca_file.as_deref()),
            dc.request_timeout,
        )?,
        api_key: crate::secret::load(&dc.api_key, "directory.api_key")?,
        metrics: Arc::new(Metrics::new()),
    };
    let (raw, fetched) = syncer.read().await?;
    let raw = Arc::new(raw);
    let fresh = Directory::new(Duration::MAX, refs.clone()).publish(raw.clone());
    let cached = match load_cache(&dc.cache_file) {
        Ok(Some(old)) => Some(Directory::new(Duration::MAX, refs).publish(Arc::new(old))),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cached snapshot unreadable; comparing with nothing");
            None
        }
    };

    let mut out = String::new();
    let mut by_state: std::collections::BTreeMap<&str, usize> = Default::default();
    for u in &raw.users {
        let key = if u.problem.is_some() {
            "unreadable (inactive)"
        } else {
            u.state.as_str()
        };
        *by_state.entry(key).or_default() += 1;
    }
    let _ = writeln!(out, "records fetched   {fetched}");
    let _ = writeln!(out, "users             {}", fresh.user_count());
    for (state, n) in &by_state {
        let _ = writeln!(out, "  {state:<16}{n}");
    }
    let active = fresh.users().iter().filter(|u| u.active).count();
    let _ = writeln!(out, "  active          {active}");
    let _ = writeln!(out, "groups            {}", fresh.group_count());
    let _ = writeln!(out, "memberships       {}", fresh.membership_count());
    for (r, group) in routes.group_refs().iter().enumerate() {
        match fresh.reference(r) {
            Reference::Found => {}
            Reference::Missing => {
                let _ = writeln!(
                    out,
                    "warning: group {group:?} named in the configuration does not exist in the directory"
                );
            }
            Reference::Unbound => {
                let _ = writeln!(
                    out,
                    "warning: group {group:?} named in the configuration is not bound to the application"
                );
            }
        }
    }
    let _ = writeln!(out);
    for site in &config.sites {
        if site.access != Access::Protected
            && site
                .routes
                .iter()
                .all(|r| r.access != Some(Access::Protected))
        {
            continue;
        }
        let now = admitted(&fresh, &routes, &site.host);
        let _ = writeln!(
            out,
            "site {}: {} users admitted by its default rule",
            site.host,
            now.len()
        );
        if let Some(old) = &cached {
            let before = admitted(old, &routes, &site.host);
            for gain in now.difference(&before) {
                let _ = writeln!(out, "  + {gain}");
            }
            for loss in before.difference(&now) {
                let _ = writeln!(out, "  - {loss}");
            }
        } else {
            let _ = writeln!(out, "  (no cached snapshot to compare with)");
        }
    }
    if write {
        store_cache(&dc.cache_file, &raw)?;
        let _ = writeln!(out, "\nwrote {}", dc.cache_file.display());
    } else {
        let _ = writeln!(out, "\ndry run: {} unchanged", dc.cache_file.display());
    }
    Ok(out)
}
