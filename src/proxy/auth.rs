//! Sign-in glue for the request path: the state that joins the identity provider, the session
//! store and the assertion signer, and what a client sees when it must sign in.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::body::ResponseBody;
use super::respond::{self, Rejection};
use crate::identity::Signer;
use crate::oidc::http::urlencode;
use crate::oidc::login::PendingLogin;
use crate::oidc::{Oidc, OidcError};
use crate::policy::return_to::safe_return_to;
use crate::policy::Site;
use crate::session::{Session, Sessions};

/// Refresh the provider's tokens when the ID token expires within this many seconds.
const REFRESH_MARGIN: i64 = 300;
/// After a failed refresh, wait this long before the next attempt.
const REFRESH_RETRY: i64 = 30;

/// Everything sign-in needs, present when `[oidc]` is configured.
#[derive(Debug)]
pub struct Auth {
    /// The provider client.
    pub oidc: Arc<Oidc>,
    /// Sessions and sign-ins in progress.
    pub sessions: Sessions,
    /// Assertion signer.
    pub signer: Signer,
    /// The port browsers use to reach the gateway.
    pub public_port: u16,
    /// The step-up application, when `[oidc.step_up]` is configured.
    pub step_up: Option<StepUp>,
    /// The audit log, when configured.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// Where sign-ins are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Auth {
    /// Writes an audit line about the current request.
    pub fn audit(
        &self,
        event: &'static str,
        site: &str,
        user: Option<(&str, Option<&str>)>,
        decision: &'static str,
        reason: Option<&str>,
    ) {
        let (Some(audit), Some(ctx)) = (&self.audit, crate::audit::current()) else {
            return;
        };
        audit.record(&crate::audit::Record {
            event,
            user: user.map(|u| u.0),
            email: user.and_then(|u| u.1),
            site,
            route: None,
            method: None,
            path: None,
            decision,
            reason,
            client_ip: ctx.client_ip,
            request_id: Some(ctx.id()),
        });
    }
}

/// The step-up application and its requirements.
#[derive(Debug)]
pub struct StepUp {
    /// Its client.
    pub oidc: Arc<Oidc>,
    /// Its configuration.
    pub config: crate::config::StepUpConfig,
}

impl Auth {
    /// `https://host[:port]` for a site, as browsers reach it.
    pub fn origin(&self, site: &Site) -> String {
        if self.public_port == 443 {
            format!("https://{}", site.host)
        } else {
            format!("https://{}:{}", site.host, self.public_port)
        }
    }

    /// Starts a sign-in (or, with `step_up`, a step-up) on `site` that returns to
    /// `return_to`, and answers with the redirect to the provider.
    pub async fn start(
        &self,
        site: &Site,
        headers: &HeaderMap,
        return_to: &str,
        step_up: bool,
    ) -> Result<Response<ResponseBody>, Rejection> {
        let oidc = match (step_up, &self.step_up) {
            (false, _) => &self.oidc,
            (true, Some(s)) => &s.oidc,
            (true, None) => return Err(Rejection::Forbidden),
        };
        if !oidc.is_ready() {
            return Err(Rejection::IdpUnavailable);
        }
        let return_to = safe_return_to(return_to).unwrap_or_else(|| "/".to_owned());
        let (binding, set_binding) = self.sessions.binding(headers);
        let redirect_uri = format!("{}{}", self.origin(site), oidc.config().callback_path);
        let login = PendingLogin::new(site.host.clone(), return_to, redirect_uri, binding, step_up);
        let url = oidc
            .authorize_url(&login)
            .map_err(|_| Rejection::IdpUnavailable)?;
        if let Err(e) = self.sessions.start_login(login).await {
            tracing::warn!(error = %e, "session store unavailable; sign-in not started");
            return Err(Rejection::IdpUnavailable);
        }
        let cookies: Vec<HeaderValue> = set_binding.into_iter().collect();
        Ok(respond::redirect(&url, &cookies))
    }

    /// Refreshes the provider's tokens in the background when they are about to expire.
    /// A refused refresh (the user was suspended or unbound at the provider) ends the
    /// session; an unreachable provider leaves it alone.
    pub fn maybe_refresh(self: &Arc<Self>, session: &Arc<Session>) {
        let now = crate::clock::now();
        let Some(refresh_token) = session.claim_refresh(now, REFRESH_MARGIN) else {
            return;
        };
        let auth = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            match auth
                .oidc
                .refresh(&refresh_token, &session.identity.sub)
                .await
            {
                Ok(login) => auth.sessions.refreshed(&session, login).await,
                Err(OidcError::Rejected(code)) => {
                    tracing::info!(user.sub = %session.identity.sub, error = %code, "refresh refused by the provider; session ended");
                    auth.sessions.remove(&session).await;
                }
                Err(e) => {
                    tracing::warn!(user.sub = %session.identity.sub, error = %e, "token refresh failed; session kept");
                    session.refresh_failed(crate::clock::now() + REFRESH_RETRY);
                }
            }
        });
    }
}

/// Where a sign-in or step-up returns to: the canonical path and the query as sent.
pub fn return_to(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// Sets the identity headers and the assertion `permit` grants, on a request going upstream
/// or on a forward-auth answer; nothing when the permit carries no session.
pub fn set_identity(
    headers: &mut HeaderMap,
    auth: &Auth,
    names: &crate::identity::HeaderNames,
    permit: &crate::policy::Permit,
    now: i64,
) {
    let Some(session) = permit.session() else {
        return;
    };
    let user = permit.user();
    let assertion = auth.signer.assertion(
        session,
        user.map(|(_, u)| u.group_names.as_slice()),
        permit.step_up_time(),
        now,
    );
    crate::identity::set_headers(
        headers,
        names,
        session,
        user.map(|(_, u)| u.groups_header.as_ref()),
        assertion,
        permit.step_up_time(),
    );
}

// Named once: a lookup by `&str` parses the name again on every call.
static X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

/// Whether a request is a browser navigation (which may be redirected) rather than an API
/// call or a script's request (which must get a 401 it can handle).
pub fn is_navigation(method: &Method, headers: &HeaderMap, json: bool) -> bool {
    if (method != Method::GET && method != Method::HEAD) || json {
        return false;
    }
    if headers.contains_key(&X_REQUESTED_WITH) || headers.contains_key(header::UPGRADE) {
        return false;
    }
    match headers.get(&SEC_FETCH_MODE).and_then(|v| v.to_str().ok()) {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        None => true,
    }
}

/// Who sent a request that may not pass yet, which decides how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A browser's page load: redirected into the sign-in or step-up.
    Page,
    /// A browser's native form post: sent through the step-up to post again (a sign-in
    /// answers it as a script, since its session is gone and the form with it).
    Form,
    /// A script or API client: 401 with JSON saying where to go.
    Script,
}

/// Tells [`Asker`]s apart, from the method, the headers and whether JSON is wanted.
pub fn asker(method: &Method, headers: &HeaderMap, json: bool) -> Asker {
    if is_navigation(method, headers, json) {
        Asker::Page
    } else if is_form_navigation(method, headers, json) {
        Asker::Form
    } else {
        Asker::Script
    }
}

/// Whether a POST is a browser's top-level form submission, whose answer the browser shows
/// as a page (an HTML form can only GET or POST).
fn is_form_navigation(method: &Method, headers: &HeaderMap, json: bool) -> bool {
    if method != Method::POST || json || headers.contains_key(&X_REQUESTED_WITH) {
        return false;
    }
    match headers.get(&SEC_FETCH_MODE).and_then(|v| v.to_str().ok()) {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        // Browsers without Fetch Metadata: a form's content type, and a page wanted back.
        None => {
            let form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| {
                    let t = t.trim_start().to_ascii_lowercase();
                    t.starts_with("application/x-www-form-urlencoded")
                        || t.starts_with("multipart/form-data")
                });
            let html = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
            form && html
        }
    }
}

/// The path and query of a same-site `Referer`, for returning a browser to the page it came
/// from; anything else is `None`.
fn referer_path(auth: &Auth, site: &Site, headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let rest = referer.strip_prefix(&auth.origin(site))?;
    rest.starts_with('/').then(|| rest.to_owned())
}

/// The absolute URL of the gateway's `endpoint` (`sign-in`, `step-up`) on `site`, which
/// starts it and then returns the browser to `rd`.
fn entry_url(auth: &Auth, site: &Site, endpoint: &str, rd: &str) -> String {
    format!(
        "{}/.jumpgate/{endpoint}?rd={}",
        auth.origin(site),
        urlencode(rd)
    )
}

/// What a client without a session gets on a protected route: a redirect into the sign-in
/// for navigations, 401 JSON with the URL that starts it for everything else.
pub async fn sign_in_required(
    auth: &Auth,
    site: &Site,
    method: &Method,
    headers: &HeaderMap,
    return_to: &str,
    json: bool,
) -> Result<Response<ResponseBody>, Rejection> {
    if asker(method, headers, json) == Asker::Page {
        return auth.start(site, headers, return_to, false).await;
    }
    let url = entry_url(auth, site, "sign-in", return_to);
    let mut response = respond::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "error": "sign_in_required",
            "status": 401,
            "message": "Sign in first, then retry the request.",
            "sign_in_url": url,
        }),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Cookie realm=\"jumpgate\""),
    );
    Ok(response)
}

/// What a signed-in client gets on a route that needs a fresher multi-factor sign-in: a
/// redirect into the step-up for navigations; for everything else 401 with an RFC 9470
/// challenge and the URL that starts the step-up (a request body is never replayed; the
/// client retries after the step-up).
pub async fn step_up_required(
    auth: &Auth,
    site: &Site,
    method: &Method,
    headers: &HeaderMap,
    return_to: &str,
    json: bool,
    max_age: i64,
) -> Result<Response<ResponseBody>, Rejection> {
    let Some(step_up) = &auth.step_up else {
        return Err(Rejection::Forbidden);
    };
    let asker = asker(method, headers, json);
    if asker == Asker::Page {
        return auth.start(site, headers, return_to, true).await;
    }
    if asker == Asker::Form {
        // A native form post (Defguard's consent page, say) shows its answer as a page: a
        // 401 JSON body there is raw text the user cannot act on, and the body cannot be
        // replayed after the step-up. So the browser goes through the step-up and back to
        // the page that posted the form, to submit it again.
        let back = referer_path(auth, site, headers).unwrap_or_else(|| "/".to_owned());
        let url = entry_url(auth, site, "step-up", &back);
        return Ok(respond::redirect_see_other(&url));
    }
    let url = entry_url(auth, site, "step-up", return_to);
    let mut challenge = format!(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A recent multi-factor sign-in is required\", max_age=\"{max_age}\""
    );
    if let Some(acr) = &step_up.config.acr_values {
        challenge.push_str(&format!(", acr_values=\"{acr}\""));
    }
    let mut response = respond::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "error": "insufficient_user_authentication",
            "status": 401,
            "message": "A recent multi-factor sign-in is required. Open step_up_url, then retry the request.",
            "max_age": max_age,
            "step_up_url": url,
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_detection() {
        let mut h = HeaderMap::new();
        assert!(is_navigation(&Method::GET, &h, false));
        assert!(!is_navigation(&Method::POST, &h, false));
        assert!(!is_navigation(&Method::GET, &h, true));
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        assert!(!is_navigation(&Method::GET, &h, false));
        h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(is_navigation(&Method::GET, &h, false));
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!is_navigation(&Method::GET, &h, false));
    }
}
