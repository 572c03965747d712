//! The access decision both modes share: the request's session (cookie, or bearer token on
//! sites that accept them), the directory snapshot, [`policy::decide`], and what a decision
//! leaves behind (audit line, log line, metrics, revocation). Reverse proxy and forward-auth
//! differ only in how they answer a decision, so they can never decide differently.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::Method;

use super::respond::Rejection;
use super::Shared;
use crate::audit::RequestContext;
use crate::config::Access;
use crate::metrics::{Lately, ReasonLabel};
use crate::policy::routes::Readings;
use crate::policy::{self, Refusal, Route, Site, Verdict};
use crate::session::{OpenedCookie, Session};

/// The request a decision is about, canonical: what the policy judges, and what the
/// session and the audit line are read from.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The request as the policy sees it.
    pub request: policy::Asked<'a>,
    /// Its canonical path.
    pub path: &'a str,
    /// Its headers (cookies, `Authorization`).
    pub headers: &'a HeaderMap,
    /// Where its connection remembers the session cookie it last presented, if it does.
    pub opened: Option<&'a OpenedCookie>,
    /// What its audit lines name it by; without it, the task-local context.
    pub context: Option<&'a RequestContext>,
}

impl<'a> Asked<'a> {
    /// The request on `site` whose path yields `readings`; `upgrade` says it asks to switch
    /// protocols (a WebSocket handshake).
    pub fn new(
        site: &'a Site,
        readings: Readings<'a>,
        method: &'a Method,
        upgrade: bool,
        path: &'a str,
        headers: &'a HeaderMap,
    ) -> Asked<'a> {
        let request = policy::Asked {
            site,
            readings,
            method,
            upgrade,
            // Read only where the site steps up at navigation; elsewhere not worth its
            // three header lookups on every request.
            page_load: site.step_up_on_navigation
                && super::auth::is_navigation(method, headers, false),
        };
        Asked {
            request,
            path,
            headers,
            opened: None,
            context: None,
        }
    }

    /// The same request, arriving on a connection that remembers its session cookie in
    /// `opened`.
    pub fn on_connection(self, opened: &'a OpenedCookie) -> Asked<'a> {
        Asked {
            opened: Some(opened),
            ..self
        }
    }

    /// The same request, whose audit lines name it by `context`.
    pub fn in_request(self, context: &'a RequestContext) -> Asked<'a> {
        Asked {
            context: Some(context),
            ..self
        }
    }
}

/// Decides `asked` at `now_ms` (milliseconds on the gateway's clock: the request's one
/// reading, shared with the session lookup). `Err` is a refusal, already logged, audited and
/// counted; a user the directory no longer admits has had every session ended.
pub async fn verdict(shared: &Shared, asked: Asked<'_>, now_ms: i64) -> Result<Verdict, Rejection> {
    let now = now_ms.div_euclid(1000);
    let Asked {
        request,
        path,
        headers,
        opened,
        context,
    } = asked;
    let policy::Asked {
        site,
        readings,
        method,
        ..
    } = request;
    let protected = readings.all().iter().any(|r| r.access == Access::Protected);
    let mut session = match (protected, &shared.auth) {
        (true, Some(auth)) => {
            auth.sessions
                .from_headers_on(headers, &site.host, opened, now_ms)
                .await
        }
        _ => None,
    };
    if session.is_none() && protected && site.api_tokens {
        if let Some(token) = bearer(headers) {
            // Boxed: rare, and its future would otherwise enlarge every request's.
            session = Some(Box::pin(api_token_session(shared, site, token)).await?);
        }
    }
    let directory = match (&shared.directory, &session) {
        (Some(d), Some(_)) => Some(d.fresh(now)),
        _ => None,
    };
    let (route, decision) = policy::judge(&request, session.clone(), directory, now);
    let asked = Audited {
        site,
        route,
        method,
        context,
    };
    match decision {
        Ok(Verdict::Allow(permit)) => {
            audit(
                shared,
                asked,
                path,
                permit.session().map(|s| &**s),
                "allow",
                None,
            );
            Ok(Verdict::Allow(permit))
        }
        Ok(Verdict::SignIn) => {
            audit(shared, asked, path, None, "sign_in", None);
            Ok(Verdict::SignIn)
        }
        Ok(Verdict::StepUp { max_age }) => {
            audit(shared, asked, path, session.as_deref(), "step_up", None);
            Ok(Verdict::StepUp { max_age })
        }
        Err(Refusal::Deny(reason)) => {
            audit(
                shared,
                asked,
                path,
                session.as_deref(),
                "deny",
                Some(reason.as_str()),
            );
            let user = session.as_ref().map_or("-", |s| s.identity.sub.as_str());
            tracing::info!(site = %site.host, route = %route.label, path = %path, user.sub = %user, reason = reason.as_str(), "access denied");
            shared
                .metrics
                .denials
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
            let label = Arc::from(reason.as_str());
            shared.metrics.recent.count(Lately::Denial, &label, now);
            if let (true, Some(s), Some(auth)) = (reason.ends_session(), &session, &shared.auth) {
                // The user may use nothing any more: every one of their sessions ends now,
                // on every instance, not at expiry. Once per user and minute: a client
                // replaying a valid API token of a user the directory lacks must not buy a
                // store-wide revocation with every request.
                if auth.sessions.claim_revocation(&s.identity.sub) {
                    let revoke = async {
                        auth.sessions.revoke_user(&s.identity.sub).await;
                        auth.audit(
                            "revocation",
                            &site.host,
                            Some((&s.identity.sub, s.identity.email.as_deref())),
                            "ok",
                            Some(reason.as_str()),
                        );
                    };
                    // Boxed: rare, and its future would otherwise enlarge every request's.
                    match context {
                        Some(c) => Box::pin(crate::audit::REQUEST.scope(c.clone(), revoke)).await,
                        None => Box::pin(revoke).await,
                    }
                }
            }
            Err(Rejection::Forbidden)
        }
        Err(Refusal::Unavailable(why)) => {
            audit(
                shared,
                asked,
                path,
                session.as_deref(),
                "unavailable",
                Some("directory_stale"),
            );
            tracing::warn!(site = %site.host, route = %route.label, reason = ?why, "directory snapshot unavailable or too old; failing closed");
            shared
                .metrics
                .denials
                .get_or_create(&ReasonLabel {
                    reason: "directory_unavailable",
                })
                .inc();
            let label = Arc::from("directory_unavailable");
            shared.metrics.recent.count(Lately::Denial, &label, now);
            Err(Rejection::DirectoryUnavailable)
        }
    }
}

/// What an audit line names of the request: the route that decided it.
#[derive(Clone, Copy)]
struct Audited<'a> {
    site: &'a Site,
    route: &'a Route,
    method: &'a Method,
    context: Option<&'a RequestContext>,
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A per-request session from a verified API token; a bad token is 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"`, never a redirect to sign in.
async fn api_token_session(
    shared: &Shared,
    site: &Site,
    token: &str,
) -> Result<Arc<Session>, Rejection> {
    let (Some(tokens), Some(auth)) = (&shared.api_tokens, &shared.auth) else {
        return Err(Rejection::InvalidToken);
    };
    match tokens.verify(token).await {
        Ok(claims) => Ok(auth.sessions.ephemeral(site.host.clone(), claims)),
        Err(e) => {
            tracing::info!(site = %site.host, error = %e, "API token refused");
            Err(Rejection::InvalidToken)
        }
    }
}

/// One audit line for an access decision, when the audit log is on.
fn audit(
    shared: &Shared,
    asked: Audited<'_>,
    path: &str,
    session: Option<&Session>,
    decision: &'static str,
    reason: Option<&str>,
) {
    let Some(audit) = &shared.audit else {
        return;
    };
    let ctx = match asked.context {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None => match crate::audit::current() {
            Some(c) => std::borrow::Cow::Owned(c),
            None => return,
        },
    };
    audit.record(&crate::audit::Record {
        event: "access",
        user: session.map(|s| s.identity.sub.as_str()),
        email: session.and_then(|s| s.identity.email.as_deref()),
        site: &asked.site.host,
        route: Some(&asked.route.label),
        method: Some(asked.method.as_str()),
        path: Some(path),
        decision,
        reason,
        client_ip: ctx.client_ip,
        request_id: Some(ctx.id()),
    });
}
