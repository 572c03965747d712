//! `jumpgate check` against the live directory: every group the configuration names must
//! exist in JumpCloud and, with `directory.application_id`, be bound to that application;
//! otherwise the rule silently admits no one through it.
//!
//! Only the group list (and the application's bindings) is read, with at most one retry per
//! request, so a check stays quick; an unreachable directory is reported and checks nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Problem};
use crate::directory::jumpcloud::{JumpCloud, SyncError};
use crate::directory::snapshot::Reference;
use crate::metrics::Metrics;

/// Longest wait for one API request during a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the directory said about the configuration.
#[derive(Debug, Default)]
pub struct Findings {
    /// Problems that make the configuration unusable (exit 64).
    pub problems: Vec<Problem>,
    /// Rules that admit no one through a group (the gateway still runs).
    pub warnings: Vec<Problem>,
    /// Why nothing could be checked, when the directory was not reachable.
    pub unchecked: Option<String>,
}

/// Each `allow_groups` list in the configuration with its key: the site's, then its routes'.
fn group_lists(config: &Config) -> Vec<(String, &[String])> {
    let mut out = Vec::new();
    for (i, site) in config.sites.iter().enumerate() {
        if !site.allow.groups.is_empty() {
            out.push((format!("site[{i}].allow_groups"), &site.allow.groups[..]));
        }
        for (j, route) in site.routes.iter().enumerate() {
            if let Some(allow) = route.allow.as_ref().filter(|a| !a.groups.is_empty()) {
                out.push((
                    format!("site[{i}].route[{j}].allow_groups"),
                    &allow.groups[..],
                ));
            }
        }
    }
    out
}

/// Reads the directory's groups and compares the configuration's group references with them.
/// Nothing to do without `[directory]` or without any `allow_groups`.
pub async fn groups(config: &Config) -> Findings {
    let Some(dc) = &config.directory else {
        return Findings::default();
    };
    let lists = group_lists(config);
    if lists.is_empty() {
        return Findings::default();
    }
    let mut dc = dc.clone();
    dc.max_retries = dc.max_retries.min(1);
    dc.request_timeout = dc.request_timeout.min(CHECK_TIMEOUT);
    let client = match crate::oidc::http::IdpClient::new(
        config.oidc.as_ref().and_then(|o| o.ca_file.as_deref()),
        dc.request_timeout,
    ) {
        Ok(c) => c,
        Err(e) => return unchecked(format!("no HTTP client for the directory API: {e}")),
    };
    let api_key = match crate::secret::load(&dc.api_key, "directory.api_key") {
        Ok(k) => k,
        Err(e) => return unchecked(e.to_string()),
    };
    let metrics = Arc::new(Metrics::new());
    let mut api = JumpCloud::new(&dc, &client, &api_key, &metrics);
    let read = async {
        let groups = api.group_list().await?;
        let bound = match dc.application_id.as_deref() {
            Some(app) => Some(api.app_groups(app).await?),
            None => None,
        };
        Ok::<_, SyncError>((groups, bound))
    };
    let (groups, bound) = match read.await {
        Ok(found) => found,
        // 401 is the key; a 403 may be JumpCloud blocking this address for a while, which
        // says nothing about the configuration (it falls through to "not checked").
        Err(SyncError::Status { status: 401, path }) => {
            let key = match &dc.api_key {
                crate::config::SecretSource::File(_) => "directory.api_key_file",
                crate::config::SecretSource::Env(_) => "directory.api_key_env",
            };
            return Findings {
                problems: crate::config::at_keys(
                    config,
                    vec![(
                        key.to_owned(),
                        format!("the directory API refused this key ({path} answered 401); use a read-only API key of this organisation (and directory.org_id for a multi-tenant administrator)"),
                    )],
                ),
                ..Findings::default()
            };
        }
        Err(SyncError::Status { status: 404, path }) if dc.application_id.is_some() => {
            return Findings {
                problems: crate::config::at_keys(
                    config,
                    vec![(
                        "directory.application_id".to_owned(),
                        format!("the directory has no such application ({path} answered 404)"),
                    )],
                ),
                ..Findings::default()
            };
        }
        Err(e) => return unchecked(format!("the directory API could not be read: {e}")),
    };
    // The references resolve exactly as they will in service: through a snapshot of the
    // groups just read (their members are not needed to know what a reference finds).
    let raw = crate::directory::RawDirectory {
        taken_at: crate::clock::now(),
        users: Vec::new(),
        groups: groups
            .into_iter()
            .map(|(id, name)| crate::directory::snapshot::RawGroup {
                id,
                name,
                members: Vec::new(),
            })
            .collect(),
        app_groups: bound,
    };
    let refs: Vec<String> = lists
        .iter()
        .flat_map(|(_, refs)| refs.iter().cloned())
        .collect();
    let snapshot = crate::directory::Snapshot::build(&raw, &refs, 0);
    let app = dc.application_id.as_deref().unwrap_or_default();
    let mut found = Vec::new();
    let mut r = 0;
    for (key, names) in lists {
        for name in names {
            match snapshot.reference(r) {
                Reference::Found => {}
                Reference::Missing => found.push((
                    key.clone(),
                    format!("warning: group {name:?} does not exist in the directory (names are case-sensitive), so it admits no one"),
                )),
                Reference::Unbound => found.push((
                    key.clone(),
                    format!("warning: group {name:?} is not bound to application {app:?} in JumpCloud, so its members are refused"),
                )),
            }
            r += 1;
        }
    }
    Findings {
        warnings: crate::config::at_keys(config, found),
        ..Findings::default()
    }
}

fn unchecked(why: String) -> Findings {
    Findings {
        unchecked: Some(why),
        ..Findings::default()
    }
}
