//! `jumpgate explain`: what the gateway would decide on one request, and why, from the
//! configuration and the cached directory snapshot alone (no network). The decision is the
//! gateway's own: [`policy::judge`] on the same compiled routes and snapshot, and the answer
//! is chosen by the request path's own [`auth::asker`].

use std::fmt::Write;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{Access, Config};
use crate::directory::snapshot::RawUser;
use crate::directory::{load_cache, CacheError, Directory, RawDirectory, Snapshot, Unavailable};
use crate::policy::{self, Refusal, Route, Routes, Verdict};
use crate::proxy::auth::{self, Asker};
use crate::proxy::pipeline::RESERVED_PREFIX;
use crate::proxy::respond::wants_json;
use crate::session::{Identity, Session};

/// The request to explain.
#[derive(Debug, Clone)]
pub struct Question {
    /// The user's id or email; `None` for a request without a session.
    pub user: Option<String>,
    /// The method.
    pub method: Method,
    /// The URL as a browser would request it (`https://host/path?query`).
    pub url: String,
    /// Request headers that change the answer (`Accept`, `Sec-Fetch-Mode`, `Upgrade`…).
    pub headers: HeaderMap,
    /// How many seconds ago the session last stepped up; `None`: never.
    pub step_up_age: Option<i64>,
}

/// What the gateway does with the request, as the command's exit status tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded (or, for forward-auth, said yes to).
    Allow,
    /// Refused: the route, the directory, or no site at all.
    Deny,
    /// No session: sent to sign in.
    SignIn,
    /// Signed in, but a fresher multi-factor sign-in is asked first.
    StepUp,
}

impl Outcome {
    /// The exit status of `jumpgate explain`: 0 allow, 10 deny, 11 sign-in, 12 step-up
    /// (clear of 1 for errors, 2 for usage and 64 for a bad configuration).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Allow => 0,
            Outcome::Deny => 10,
            Outcome::SignIn => 11,
            Outcome::StepUp => 12,
        }
    }
}

/// The explanation: the outcome, the status the gateway answers with (`None` when the
/// upstream answers), and the report for people.
#[derive(Debug)]
pub struct Explanation {
    /// What happens.
    pub outcome: Outcome,
    /// The gateway's own status code, when it answers instead of the upstream.
    pub status: Option<u16>,
    /// The decision's stable name, as the audit log writes it (`allow`, `deny`, …).
    pub decision: &'static str,
    /// The reason, as the audit log writes it, for a refusal.
    pub reason: Option<&'static str>,
    /// The route that decided, as the audit log and metrics name it.
    pub route: Option<Arc<str>>,
    /// The report.
    pub text: String,
}

/// Why a request cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The URL is not one a browser could send.
    #[error("{0}")]
    Url(String),
    /// The cached snapshot exists but cannot be read.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Explains `q` as the gateway configured by `config` would decide it at `now`.
pub fn explain(config: &Config, q: &Question, now: i64) -> Result<Explanation, ExplainError> {
    let uri: http::Uri = q
        .url
        .parse()
        .map_err(|e| ExplainError::Url(format!("{}: {e}", q.url)))?;
    let authority = uri
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .ok_or_else(|| {
            ExplainError::Url(format!("{}: give the whole URL, https://host/path", q.url))
        })?;
    let host = crate::canonical::host(authority.as_str())
        .ok_or_else(|| ExplainError::Url(format!("{}: not a host name", authority)))?;
    let mut out = String::new();
    let _ = writeln!(out, "request      {} {}", q.method, q.url);
    let path = match crate::canonical::path(uri.path()) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                out,
                "path         {} has no canonical form: {e}",
                uri.path()
            );
            return Ok(answered(out, Outcome::Deny, Some(400), "bad_request", None));
        }
    };
    let routes = Routes::compile(config);
    let Some(site) = routes.site(&host) else {
        let _ = writeln!(out, "site         none is configured for {host}");
        return Ok(answered(out, Outcome::Deny, Some(421), "misdirected", None));
    };
    let _ = writeln!(out, "site         {}", site.host);
    let _ = writeln!(out, "path         {path} (canonical)");
    if path.starts_with(RESERVED_PREFIX) {
        let _ = writeln!(
            out,
            "route        the gateway's own endpoint ({RESERVED_PREFIX}…), never forwarded"
        );
        return Ok(answered(
            out,
            Outcome::Allow,
            None,
            "gateway_endpoint",
            None,
        ));
    }
    let readings = site.readings(&path);
    let refs = routes.group_refs();
    let names = |indices: &[usize]| -> String {
        indices
            .iter()
            .map(|&r| refs.get(r).map_or("?", String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, route) in readings.all().iter().enumerate() {
        let label = if i == 0 { "route" } else { "also" };
        let _ = writeln!(out, "{label:<12} {}", describe_route(route, &names));
    }

    // The directory as the gateway would have it, from the cache it writes at every sync.
    let mut raw_users: Option<Arc<RawDirectory>> = None;
    let directory = match &config.directory {
        None => None,
        Some(dc) => {
            let handle = Directory::new(dc.max_staleness, refs.to_vec());
            match load_cache(&dc.cache_file)? {
                Some(raw) => {
                    let raw = Arc::new(raw);
                    let snapshot = handle.publish(raw.clone());
                    raw_users = Some(raw);
                    let _ = writeln!(
                        out,
                        "directory    {}: {} s old (max {} s), {} users, {} groups",
                        dc.cache_file.display(),
                        now - snapshot.taken_at,
                        dc.max_staleness.as_secs(),
                        snapshot.user_count(),
                        snapshot.group_count(),
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "directory    {}: no cached snapshot",
                        dc.cache_file.display()
                    );
                }
            }
            Some(handle.fresh(now))
        }
    };

    let session = q.user.as_deref().map(|who| {
        let identity = identity_of(who, directory.as_ref());
        Session::detached(
            site.host.clone(),
            identity,
            q.step_up_age.map(|age| now - age),
            now,
        )
    });
    match (&session, &directory) {
        (None, _) => {
            let _ = writeln!(out, "user         none (no session)");
        }
        (Some(s), Some(Ok(snapshot))) => {
            describe_user(&mut out, s, snapshot, raw_users.as_deref());
        }
        (Some(s), _) => {
            let _ = writeln!(
                out,
                "user         {} (no directory to look up)",
                s.identity.sub
            );
        }
    }

    let json = wants_json(&q.headers);
    let asked = policy::Asked {
        site,
        readings,
        method: &q.method,
        upgrade: crate::headers::is_upgrade(&q.headers),
        page_load: auth::is_navigation(&q.method, &q.headers, false),
    };
    let (route, decision) = policy::judge(&asked, session, directory, now);
    let _ = writeln!(out, "decided by   {}", route.label);
    let asker = auth::asker(&q.method, &q.headers, json);
    let step_up_app = config
        .oidc
        .as_ref()
        .and_then(|o| o.step_up.as_ref())
        .map(|s| s.client_id.as_str());
    let signs_in = config.oidc.is_some();
    let route_label = Some(route.label.clone());
    let (outcome, status, name, reason, line) = match decision {
        Ok(Verdict::Allow(permit)) => {
            let step = match permit.step_up_time() {
                Some(t) => format!(", step-up {} s ago within the route's limit", now - t),
                None => String::new(),
            };
            let who = if permit.session().is_some() {
                "with the user's identity"
            } else {
                "without identity (public route)"
            };
            (Outcome::Allow, None, "allow", None, format!("allow: forwarded to the upstream {who}{step}"))
        }
        Err(Refusal::Deny(reason)) => (
            Outcome::Deny,
            Some(403),
            "deny",
            Some(reason.as_str()),
            format!("deny ({}): 403 Forbidden", reason.as_str()),
        ),
        Err(Refusal::Unavailable(why)) => {
            let why = match why {
                Unavailable::NeverSynced => "the directory was never synced",
                Unavailable::Stale => "the directory snapshot is older than max_staleness",
            };
            (
                Outcome::Deny,
                Some(503),
                "unavailable",
                Some("directory_stale"),
                format!("unavailable: {why}; 503, fail closed"),
            )
        }
        Ok(Verdict::SignIn) => match (signs_in, asker) {
            (false, _) => (
                Outcome::SignIn,
                Some(401),
                "sign_in",
                None,
                "sign-in: 401, no [oidc] is configured to sign in with".to_owned(),
            ),
            (true, Asker::Page) => (
                Outcome::SignIn,
                Some(302),
                "sign_in",
                None,
                "sign-in: 302 to the identity provider, back here after".to_owned(),
            ),
            (true, _) => (
                Outcome::SignIn,
                Some(401),
                "sign_in",
                None,
                "sign-in: 401 sign_in_required (JSON with sign_in_url), for a script to handle".to_owned(),
            ),
        },
        Ok(Verdict::StepUp { max_age }) => match (step_up_app.filter(|_| signs_in), asker) {
            (None, _) => (
                Outcome::StepUp,
                Some(403),
                "step_up",
                None,
                "step-up: asked, but no [oidc.step_up] is configured; 403".to_owned(),
            ),
            (Some(app), Asker::Page) => (
                Outcome::StepUp,
                Some(302),
                "step_up",
                None,
                format!("step-up: 302 to the step-up application {app} (fresh MFA sign-in, no older than {max_age} s)"),
            ),
            (Some(app), Asker::Form) => (
                Outcome::StepUp,
                Some(303),
                "step_up",
                None,
                format!("step-up: 303 through the step-up application {app}, back to the page that posted the form (max age {max_age} s)"),
            ),
            (Some(app), Asker::Script) => (
                Outcome::StepUp,
                Some(401),
                "step_up",
                None,
                format!("step-up: 401 insufficient_user_authentication, max_age=\"{max_age}\"; step_up_url starts the application {app}"),
            ),
        },
    };
    let _ = writeln!(out, "verdict      {line}");
    let mut e = answered(out, outcome, status, name, reason);
    e.route = route_label;
    Ok(e)
}

fn answered(
    text: String,
    outcome: Outcome,
    status: Option<u16>,
    decision: &'static str,
    reason: Option<&'static str>,
) -> Explanation {
    Explanation {
        outcome,
        status,
        decision,
        reason,
        route: None,
        text,
    }
}

/// The identity a session of `who` would carry: the directory user's id and email when the
/// snapshot knows them (a session's `sub` is JumpCloud's user id), else `who` as the id.
fn identity_of(who: &str, directory: Option<&Result<Arc<Snapshot>, Unavailable>>) -> Identity {
    let found = match directory {
        // By id, else by email: the snapshot's own indexes.
        Some(Ok(snapshot)) => snapshot.user(who, Some(who)),
        _ => None,
    };
    Identity {
        sub: found.map_or_else(|| who.to_owned(), |u| u.id.to_string()),
        email: found.and_then(|u| u.email.as_deref().map(str::to_owned)),
        email_matches: false,
        username: found.and_then(|u| u.username.as_deref().map(str::to_owned)),
        name: None,
        groups: Vec::new(),
    }
}

fn describe_route(route: &Route, names: &dyn Fn(&[usize]) -> String) -> String {
    let mut s = format!("{} ({}", route.label, access_name(route.access));
    if route.access == Access::Protected {
        if route.allow.is_anyone() {
            s.push_str(", any active user");
        } else {
            if !route.allow.groups.is_empty() {
                let _ = write!(s, ", groups: {}", names(&route.allow.groups));
            }
            if !route.allow.users.is_empty() {
                let _ = write!(s, ", users: {}", route.allow.users.join(", "));
            }
        }
        if let Some(rule) = &route.step_up {
            let _ = write!(s, "; step-up within {} s", rule.max_age);
            if !rule.exempt.is_empty() {
                let exempt: Vec<&str> = rule.exempt.iter().map(Method::as_str).collect();
                let _ = write!(s, " except {}", exempt.join(", "));
            }
            if !rule.groups.is_empty() {
                let _ = write!(s, " for groups {}", names(&rule.groups));
            }
        }
    }
    s.push(')');
    s
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Protected => "protected",
        Access::Deny => "deny",
    }
}

fn describe_user(out: &mut String, s: &Session, snapshot: &Snapshot, raw: Option<&RawDirectory>) {
    let Some(user) = snapshot.user(&s.identity.sub, None) else {
        let _ = writeln!(
            out,
            "user         {}: not in the directory snapshot",
            s.identity.sub
        );
        return;
    };
    let state = raw
        .and_then(|r| r.users.iter().find(|u| u.id == *user.id))
        .map_or_else(|| "?".to_owned(), state_of);
    let _ = writeln!(
        out,
        "user         {} {}: {} ({}), {}",
        user.id,
        user.email.as_deref().unwrap_or("(no email)"),
        if user.active { "active" } else { "inactive" },
        state,
        if snapshot.bound_to_app(user) {
            "bound to the application"
        } else {
            "not bound to the application"
        },
    );
    let groups = if user.group_names.is_empty() {
        "none".to_owned()
    } else {
        user.group_names.join(", ")
    };
    let _ = writeln!(out, "groups       {groups}");
}

fn state_of(u: &RawUser) -> String {
    let mut s = u.state.clone();
    for (flag, name) in [
        (u.suspended, "suspended"),
        (u.account_locked, "locked"),
        (u.password_expired, "password expired"),
        (!u.activated, "not activated"),
    ] {
        if flag {
            let _ = write!(s, ", {name}");
        }
    }
    if let Some(p) = &u.problem {
        let _ = write!(s, ", unreadable record: {p}");
    }
    s
}
