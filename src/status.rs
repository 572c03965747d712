//! The admin listener's status page: what an operator woken at night looks at first, as
//! HTML for people and JSON for scripts. Read-only, never on the public listener, and
//! nothing on it is a secret: the configuration is `jumpgate check`'s summary (Redis by
//! host only), and no token, key or cookie is ever read here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::admin::Readiness;
use crate::directory::snapshot::Reference;
use crate::metrics::{CertLabel, Lately, Metrics, StoreLabel};
use crate::proxy::Live;
use crate::tls::CertStore;

/// What the page is made from: the services and the routing in force.
#[derive(Debug)]
pub struct Status {
    /// When the process started (seconds since the epoch).
    pub started: i64,
    /// The routing in force (a reload swaps it).
    pub live: Arc<Live>,
    /// The served certificate.
    pub certs: Arc<CertStore>,
    /// Metrics, and the last hour's counts.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Arc<Readiness>,
    /// The gateway's time.
    pub clock: crate::clock::Clock,
}

/// The page's content.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The running version.
    pub version: &'static str,
    /// When the report was made (RFC 3339).
    pub now: String,
    /// Seconds since the process started.
    pub uptime_seconds: i64,
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Why not, when it does not.
    pub not_ready: Option<String>,
    /// The served TLS certificate.
    pub certificate: Option<Certificate>,
    /// The directory sync, when `[directory]` is set.
    pub directory: Option<DirectoryStatus>,
    /// The session store.
    pub sessions: SessionStore,
    /// Counts over the last hour.
    pub last_hour: LastHour,
    /// The configuration as `jumpgate check` summarises it.
    pub config: String,
}

/// The served certificate.
#[derive(Debug, Serialize)]
pub struct Certificate {
    /// The names it is valid for.
    pub names: Vec<String>,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// Days until then (negative: expired).
    pub days_left: i64,
}

/// The directory sync.
#[derive(Debug, Serialize)]
pub struct DirectoryStatus {
    /// When the snapshot in service was taken (RFC 3339), if there is one.
    pub last_success: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<i64>,
    /// `directory.max_staleness` in seconds: past it, protected requests are refused.
    pub max_staleness_seconds: i64,
    /// Whether protected requests can be decided now.
    pub fresh: bool,
    /// Users, groups and memberships in the snapshot.
    pub users: usize,
    /// Groups.
    pub groups: usize,
    /// Memberships.
    pub memberships: usize,
    /// Groups named in the configuration that admit no one.
    pub warnings: Vec<String>,
    /// The last sync's failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When it failed (RFC 3339).
    pub last_error_at: Option<String>,
    /// Failed syncs in a row.
    pub failures_in_a_row: u32,
    /// Why the cache file was not written at the last sync.
    pub cache_error: Option<String>,
    /// With Redis: `held` (this instance syncs), `other` (another does), `unknown`.
    pub sync_lease: Option<&'static str>,
}

/// The session store.
#[derive(Debug, Serialize)]
pub struct SessionStore {
    /// `memory`, `redis` or `none` (no sign-in configured).
    pub store: &'static str,
    /// Whether it answers.
    pub reachable: bool,
    /// Why not.
    pub problem: Option<String>,
}

/// Counts over the last hour, by label.
#[derive(Debug, Default, Serialize)]
pub struct LastHour {
    /// Sign-in callbacks: `ok`, or why they failed.
    pub sign_ins: BTreeMap<String, u64>,
    /// Refused protected requests, by reason.
    pub denials: BTreeMap<String, u64>,
    /// Requests that did not reach their upstream, by site.
    pub upstream_errors: BTreeMap<String, u64>,
}

fn rfc3339(t: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

impl Status {
    /// The report at `now`.
    pub fn report(&self, now: i64) -> Report {
        let shared = self.live.load();
        let not_ready = self.readiness.not_ready_reason();
        let certificate = self.certs.info().map(|c| Certificate {
            expires: rfc3339(c.not_after),
            days_left: (c.not_after - now).div_euclid(86_400),
            names: c.names,
        });
        let directory = shared.directory.as_ref().map(|d| {
            let snapshot = d.snapshot();
            let sync = d.sync_status();
            let refs = shared.routes.group_refs();
            let warnings = match &snapshot {
                None => Vec::new(),
                Some(s) => refs
                    .iter()
                    .enumerate()
                    .filter_map(|(r, group)| match s.reference(r) {
                        Reference::Found => None,
                        Reference::Missing => Some(format!(
                            "group {group:?} named in the configuration does not exist in the directory; it admits no one"
                        )),
                        Reference::Unbound => Some(format!(
                            "group {group:?} named in the configuration is not bound to the application; it admits no one"
                        )),
                    })
                    .collect(),
            };
            let shared_sessions = shared
                .auth
                .as_ref()
                .is_some_and(|a| a.sessions.shared().is_some());
            DirectoryStatus {
                last_success: snapshot.as_ref().map(|s| rfc3339(s.taken_at)),
                age_seconds: snapshot.as_ref().map(|s| now - s.taken_at),
                max_staleness_seconds: d.max_staleness(),
                fresh: d.fresh(now).is_ok(),
                users: snapshot.as_ref().map_or(0, |s| s.user_count()),
                groups: snapshot.as_ref().map_or(0, |s| s.group_count()),
                memberships: snapshot.as_ref().map_or(0, |s| s.membership_count()),
                warnings,
                last_error_at: sync.last_error.as_ref().map(|(t, _)| rfc3339(*t)),
                last_error: sync.last_error.map(|(_, e)| e),
                failures_in_a_row: sync.failures_in_a_row,
                cache_error: sync.cache_error,
                sync_lease: shared_sessions.then_some(match sync.lease_held {
                    Some(true) => "held",
                    Some(false) => "other",
                    None => "unknown",
                }),
            }
        });
        let sessions = session_store(&shared);
        let mut last_hour = LastHour::default();
        for (kind, label, n) in self.metrics.recent.last_hour(now) {
            let list = match kind {
                Lately::SignIn => &mut last_hour.sign_ins,
                Lately::Denial => &mut last_hour.denials,
                Lately::UpstreamError => &mut last_hour.upstream_errors,
            };
            list.insert(label.to_string(), n);
        }
        Report {
            version: env!("CARGO_PKG_VERSION"),
            now: rfc3339(now),
            uptime_seconds: now - self.started,
            ready: not_ready.is_none(),
            not_ready,
            certificate,
            directory,
            sessions,
            last_hour,
            config: shared.summary.to_string(),
        }
    }

    /// Sets the gauges that are read rather than counted, just before a scrape: the
    /// certificate's expiry, the session store's reachability, the allowed staleness.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        let shared = self.live.load();
        m.cert_expiry.clear();
        if let Some(info) = self.certs.info() {
            let certificate = info.names.first().cloned().unwrap_or_default();
            m.cert_expiry
                .get_or_create(&CertLabel { certificate })
                .set(info.not_after);
        }
        let sessions = session_store(&shared);
        if sessions.store != "none" {
            m.session_store_up
                .get_or_create(&StoreLabel {
                    store: sessions.store,
                })
                .set(i64::from(sessions.reachable));
        }
        m.directory_max_staleness
            .set(shared.directory.as_ref().map_or(0, |d| d.max_staleness()));
    }
}

/// The session store in force, and whether it answers.
fn session_store(shared: &crate::proxy::Shared) -> SessionStore {
    match &shared.auth {
        None => SessionStore {
            store: "none",
            reachable: true,
            problem: None,
        },
        Some(auth) => match auth.sessions.shared() {
            None => SessionStore {
                store: "memory",
                reachable: true,
                problem: None,
            },
            Some(redis) => {
                let problem = redis.not_ready_reason();
                SessionStore {
                    store: "redis",
                    reachable: problem.is_none(),
                    problem,
                }
            }
        },
    }
}

/// `report` as JSON.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".to_owned())
}

/// Escapes text for HTML. Five replacements; a crate would add a dependency for less
/// than this function.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}

/// `report` as a page: problems first, in words, then the detail.
pub fn html(report: &Report) -> String {
    use std::fmt::Write;
    let mut problems: Vec<String> = Vec::new();
    if let Some(why) = &report.not_ready {
        problems.push(format!("Not ready: {why}."));
    }
    if let Some(c) = &report.certificate {
        if c.days_left < 14 {
            problems.push(format!(
                "The TLS certificate expires in {} days ({}).",
                c.days_left, c.expires
            ));
        }
    }
    if let Some(d) = &report.directory {
        if !d.fresh {
            problems.push("The directory snapshot is missing or older than max_staleness: protected requests are refused (503).".to_owned());
        }
        if let Some(e) = &d.last_error {
            problems.push(format!(
                "The directory sync is failing ({} in a row): {e}",
                d.failures_in_a_row
            ));
        }
        if let Some(e) = &d.cache_error {
            problems.push(format!("The directory cache file was not written: {e}"));
        }
        problems.extend(d.warnings.iter().cloned());
    }
    if let Some(p) = &report.sessions.problem {
        problems.push(format!(
            "The session store ({}) is unreachable: {p}",
            report.sessions.store
        ));
    }

    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>jumpgate status</title><style>\
         body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1f2933}}\
         h1{{font-size:1.4rem}}h2{{font-size:1.1rem;margin-top:1.6rem}}\
         table{{border-collapse:collapse}}td,th{{text-align:left;padding:.2rem 1.2rem .2rem 0;vertical-align:top}}\
         th{{font-weight:600;color:#52606d}}.ok{{color:#1d7a3d}}.bad{{color:#b42318}}\
         .problems{{border-left:4px solid #b42318;padding:.4rem 1rem;background:#fef3f2}}\
         pre{{background:#f5f7fa;padding:.8rem;overflow:auto;font-size:13px}}</style></head><body>\
         <h1>jumpgate {} <span class=\"{}\">{}</span></h1>\
         <p>{} · up {} · <a href=\"/status.json\">JSON</a></p>",
        esc(report.version),
        if report.ready { "ok" } else { "bad" },
        if report.ready { "ready" } else { "not ready" },
        esc(&report.now),
        ago(report.uptime_seconds),
    );
    if problems.is_empty() {
        out.push_str("<p class=\"ok\" id=\"problems\">No problems.</p>");
    } else {
        out.push_str("<div class=\"problems\" id=\"problems\"><ul>");
        for p in &problems {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        out.push_str("</ul></div>");
    }

    out.push_str("<h2>Directory</h2>");
    match &report.directory {
        None => out.push_str(
            "<p>No directory configured: access is decided from sign-in tokens alone.</p>",
        ),
        Some(d) => {
            let _ = write!(
                out,
                "<table id=\"directory\"><tr><th>snapshot</th><td class=\"{}\">{}</td></tr>\
                 <tr><th>last success</th><td>{}</td></tr>\
                 <tr><th>contents</th><td>{} users, {} groups, {} memberships</td></tr>\
                 <tr><th>last error</th><td>{}</td></tr>",
                if d.fresh { "ok" } else { "bad" },
                match d.age_seconds {
                    Some(age) => format!(
                        "{} old of {} allowed",
                        ago(age),
                        ago(d.max_staleness_seconds)
                    ),
                    None => "none yet".to_owned(),
                },
                esc(d.last_success.as_deref().unwrap_or("never")),
                d.users,
                d.groups,
                d.memberships,
                match (&d.last_error, &d.last_error_at) {
                    (Some(e), Some(at)) => esc(&format!("{at}: {e}")),
                    _ => "none".to_owned(),
                },
            );
            if let Some(lease) = d.sync_lease {
                let _ = write!(
                    out,
                    "<tr><th>sync lease</th><td>{}</td></tr>",
                    match lease {
                        "held" => "held by this instance (it syncs)",
                        "other" => "held by another instance (this one loads its snapshots)",
                        _ => "unknown (Redis unreachable)",
                    }
                );
            }
            out.push_str("</table>");
        }
    }

    out.push_str("<h2>Sessions</h2>");
    let _ = write!(
        out,
        "<table id=\"sessions\"><tr><th>store</th><td>{}</td></tr><tr><th>reachable</th><td class=\"{}\">{}</td></tr></table>",
        report.sessions.store,
        if report.sessions.reachable { "ok" } else { "bad" },
        match &report.sessions.problem {
            None => "yes".to_owned(),
            Some(p) => esc(&format!("no: {p}")),
        },
    );

    out.push_str("<h2>TLS certificate</h2>");
    match &report.certificate {
        None => out.push_str("<p class=\"bad\">unreadable</p>"),
        Some(c) => {
            let _ = write!(
                out,
                "<table id=\"certificate\"><tr><th>names</th><td>{}</td></tr><tr><th>expires</th><td class=\"{}\">{} ({} days)</td></tr></table>",
                esc(&c.names.join(", ")),
                if c.days_left < 14 { "bad" } else { "ok" },
                esc(&c.expires),
                c.days_left,
            );
        }
    }

    out.push_str("<h2>Last hour</h2><table id=\"last-hour\">");
    for (title, rows) in [
        ("sign-ins", &report.last_hour.sign_ins),
        ("denials", &report.last_hour.denials),
        ("upstream errors", &report.last_hour.upstream_errors),
    ] {
        let cells = if rows.is_empty() {
            "none".to_owned()
        } else {
            let mut rows: Vec<_> = rows.iter().collect();
            rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            rows.iter()
                .map(|(label, n)| format!("{} {n}", esc(label)))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        let _ = write!(out, "<tr><th>{title}</th><td>{cells}</td></tr>");
    }
    out.push_str("</table>");

    let _ = writeln!(
        out,
        "<h2>Configuration</h2><pre id=\"config\">{}</pre></body></html>",
        esc(&report.config)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_times_are_rfc3339() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(ago(59), "59 s");
        assert_eq!(ago(3_600), "60 min");
        assert_eq!(ago(90_000), "25 h");
    }
}
