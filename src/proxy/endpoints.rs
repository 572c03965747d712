//! The gateway's own endpoints under `/.jumpgate/`: sign-in start, callback, logout,
//! userinfo and the assertion key set. Everything else under the prefix is 404.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};

use super::auth::Auth;
use super::body::ResponseBody;
use super::respond::{self, Rejection};
use crate::metrics::{Lately, OutcomeLabel};
use crate::oidc::http::parse_query;
use crate::oidc::OidcError;
use crate::policy::Site;
use crate::session::cookie;

/// Answers a request for a reserved path on `site`.
pub async fn handle(
    auth: Option<&Auth>,
    site: &Site,
    path: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, Rejection> {
    let Some(auth) = auth else {
        return Err(Rejection::NotFound);
    };
    let query = uri.query().map(parse_query).unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if path == auth.oidc.config().callback_path {
        let (code, state, error) = (param("code"), param("state"), param("error"));
        let answer = callback(auth, site, headers, code, state, error).await;
        count_sign_in(auth, answer.as_ref().err());
        return answer;
    }
    if let Some(step_up) = auth
        .step_up
        .as_ref()
        .filter(|s| path == s.config.callback_path)
    {
        return step_up_callback(
            auth,
            step_up,
            site,
            headers,
            param("code"),
            param("state"),
            param("error"),
        )
        .await;
    }
    match path {
        "/.jumpgate/sign-in" => {
            auth.start(site, headers, param("rd").unwrap_or("/"), false)
                .await
        }
        "/.jumpgate/logout" => logout(auth, site, method, headers).await,
        "/.jumpgate/step-up" => {
            let rd = param("rd").unwrap_or("/");
            // A step-up proves more about a signed-in user; without a session, sign in first.
            let step_up = auth
                .sessions
                .from_headers(headers, &site.host)
                .await
                .is_some();
            auth.start(site, headers, rd, step_up).await
        }
        // A POST is answered, with its body, by `backchannel::handle` before this point.
        super::backchannel::PATH => Ok(super::backchannel::method_not_allowed()),
        "/.jumpgate/userinfo" => Ok(userinfo(auth, site, headers).await),
        "/.jumpgate/jwks.json" => {
            let mut response = Response::new(ResponseBody::full(auth.signer.jwks()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            Ok(response)
        }
        _ => Err(Rejection::NotFound),
    }
}

/// Whether a callback completes the kind of sign-in `login` is (a step-up or not), on the
/// site and in the browser (its login cookie) that started it.
/// Counts a sign-in callback: in the metrics by outcome, and lately by why it failed.
fn count_sign_in(auth: &Auth, failed: Option<&Rejection>) {
    let (outcome, label) = match failed {
        None => (OutcomeLabel::ok(), "ok"),
        Some(r) => (
            OutcomeLabel::failed(),
            match r {
                Rejection::SignInExpired => "expired_or_replayed",
                Rejection::IdpDenied => "refused_by_provider",
                Rejection::IdpUnavailable => "provider_or_store_unavailable",
                Rejection::SignInFailed => "not_verified",
                _ => "failed",
            },
        ),
    };
    auth.metrics.sign_ins.get_or_create(&outcome).inc();
    let label = std::sync::Arc::from(label);
    let now = crate::clock::now();
    auth.metrics.recent.count(Lately::SignIn, &label, now);
}

fn started_here(
    auth: &Auth,
    login: &crate::oidc::login::PendingLogin,
    site: &Site,
    headers: &HeaderMap,
    step_up: bool,
) -> bool {
    login.step_up == step_up
        && *login.site == *site.host
        && auth.sessions.has_binding(headers, &login.binding)
}

/// The sign-in (or step-up, with `step_up`) a callback returns from, when this browser and
/// site started it. Its state is consumed whatever happens next: a callback URL works once.
async fn returning_login(
    auth: &Auth,
    site: &Site,
    headers: &HeaderMap,
    state: Option<&str>,
    step_up: bool,
) -> Result<crate::oidc::login::PendingLogin, Rejection> {
    let login = take_login(auth, state).await?;
    if !started_here(auth, &login, site, headers, step_up) {
        tracing::info!(site = %site.host, step_up, "callback from a different browser or site refused");
        return Err(Rejection::SignInExpired);
    }
    Ok(login)
}

/// A callback's `code`, when it is one a provider could have issued.
fn code_param(code: Option<&str>) -> Option<&str> {
    code.filter(|c| !c.is_empty() && c.len() <= 2048)
}

/// What a failed code exchange answers: an unreachable or undiscovered provider is worth a
/// retry; anything else is `refused`.
fn exchange_failed(e: &OidcError, refused: Rejection) -> Rejection {
    match e {
        OidcError::Unavailable(_) | OidcError::NotReady => Rejection::IdpUnavailable,
        _ => refused,
    }
}

async fn callback(
    auth: &Auth,
    site: &Site,
    headers: &HeaderMap,
    code: Option<&str>,
    state: Option<&str>,
    error: Option<&str>,
) -> Result<Response<ResponseBody>, Rejection> {
    let login = returning_login(auth, site, headers, state, false).await?;
    if let Some(error) = error {
        tracing::info!(site = %site.host, idp.error = %error, "identity provider refused the sign-in");
        return Err(match error {
            "access_denied" | "unauthorized_client" | "login_required" | "consent_required" => {
                Rejection::IdpDenied
            }
            "temporarily_unavailable" | "server_error" => Rejection::IdpUnavailable,
            _ => Rejection::SignInFailed,
        });
    }
    let code = code_param(code).ok_or(Rejection::SignInFailed)?;
    let verified = auth.oidc.exchange(code, &login).await.map_err(|e| {
        tracing::warn!(site = %site.host, error = %e, "sign-in callback failed");
        exchange_failed(&e, Rejection::SignInFailed)
    })?;
    tracing::info!(site = %site.host, user.sub = %verified.claims.sub, "signed in");
    auth.audit(
        "sign_in",
        &site.host,
        Some((&verified.claims.sub, verified.claims.email.as_deref())),
        "ok",
        None,
    );
    let (_, set_session) = auth
        .sessions
        .create(site.host.clone(), verified)
        .await
        .map_err(|e| {
            tracing::warn!(site = %site.host, error = %e, "session store unavailable; sign-in refused");
            Rejection::IdpUnavailable
        })?;
    // The login cookie stays: other tabs of this browser may be signing in at the same time.
    Ok(respond::redirect(&login.return_to, &[set_session]))
}

/// Completes a step-up: the token must come from the step-up application (its `aud`), be
/// for the session's user, carry an `auth_time` no earlier than the moment the step-up began
/// (less the allowed skew), and satisfy `require_amr` / `acr_values` when set. Only then is the
/// step-up time recorded in the session.
async fn step_up_callback(
    auth: &Auth,
    step_up: &super::auth::StepUp,
    site: &Site,
    headers: &HeaderMap,
    code: Option<&str>,
    state: Option<&str>,
    error: Option<&str>,
) -> Result<Response<ResponseBody>, Rejection> {
    let login = returning_login(auth, site, headers, state, true).await?;
    let session = auth
        .sessions
        .from_headers(headers, &site.host)
        .await
        .ok_or(Rejection::SignInExpired)?;
    if let Some(error) = error {
        tracing::info!(site = %site.host, user.sub = %session.identity.sub, idp.error = %error, "step-up refused by the identity provider");
        return Err(Rejection::StepUpRefused);
    }
    let code = code_param(code).ok_or(Rejection::StepUpRefused)?;
    let verified = step_up.oidc.exchange(code, &login).await.map_err(|e| {
        tracing::warn!(site = %site.host, user.sub = %session.identity.sub, error = %e, "step-up token refused");
        exchange_failed(&e, Rejection::StepUpRefused)
    })?;
    let c = &verified.claims;
    let skew = step_up.oidc.config().clock_skew.as_secs() as i64;
    let now = crate::clock::now();
    let refusal = if c.sub != session.identity.sub {
        Some("the step-up sign-in was for another user")
    } else if c.auth_time.is_none_or(|t| t < login.started - skew) {
        Some("auth_time missing or older than the step-up request")
    } else if c.auth_time.is_some_and(|t| t > now + skew) {
        Some("auth_time in the future")
    } else if !step_up.config.require_amr.iter().all(|a| c.amr.contains(a)) {
        Some("required amr missing")
    } else if step_up
        .config
        .acr_values
        .as_deref()
        .is_some_and(|acrs| !acrs.split(' ').any(|a| Some(a) == c.acr.as_deref()))
    {
        Some("acr does not match acr_values")
    } else {
        None
    };
    if let Some(why) = refusal {
        tracing::warn!(site = %site.host, user.sub = %session.identity.sub, reason = why, "step-up refused");
        auth.audit(
            "step_up",
            &site.host,
            Some((&session.identity.sub, session.identity.email.as_deref())),
            "refused",
            Some(why),
        );
        return Err(Rejection::StepUpRefused);
    }
    let auth_time = c.auth_time.unwrap_or(now).min(now);
    let (session, set_session) = auth
        .sessions
        .rotate(&session, auth_time)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "session store unavailable; step-up not recorded");
            Rejection::IdpUnavailable
        })?;
    tracing::info!(site = %site.host, user.sub = %session.identity.sub, step_up_time = auth_time, "step-up completed");
    auth.audit(
        "step_up",
        &site.host,
        Some((&session.identity.sub, session.identity.email.as_deref())),
        "ok",
        None,
    );
    Ok(respond::redirect(&login.return_to, &[set_session]))
}

/// Takes the pending sign-in named by `state`; unknown, used, expired → "sign-in expired";
/// a store outage → "sign-in unavailable".
async fn take_login(
    auth: &Auth,
    state: Option<&str>,
) -> Result<crate::oidc::login::PendingLogin, Rejection> {
    let state = state.ok_or(Rejection::SignInExpired)?;
    match auth.sessions.take_login(state).await {
        Ok(Some(login)) => Ok(login),
        Ok(None) => Err(Rejection::SignInExpired),
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable; sign-in callback refused");
            Err(Rejection::IdpUnavailable)
        }
    }
}

/// Whether a state-changing request comes from our own site: browsers send
/// `Sec-Fetch-Site`, and `Origin` on POST. Requests without either (curl) are allowed.
fn same_origin(auth: &Auth, site: &Site, headers: &HeaderMap) -> bool {
    if let Some(v) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !(v.eq_ignore_ascii_case("same-origin") || v.eq_ignore_ascii_case("none")) {
            return false;
        }
    }
    match headers.get(header::ORIGIN).map(HeaderValue::as_bytes) {
        None => true,
        Some(origin) => origin == auth.origin(site).as_bytes(),
    }
}

async fn logout(
    auth: &Auth,
    site: &Site,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, Rejection> {
    if method != Method::GET && method != Method::POST {
        return Err(Rejection::BadRequest);
    }
    if !same_origin(auth, site, headers) {
        return Err(Rejection::CrossSite);
    }
    let session = auth.sessions.from_headers(headers, &site.host).await;
    if let Some(s) = &session {
        auth.sessions.remove(s).await;
        tracing::info!(site = %site.host, user.sub = %s.identity.sub, "signed out");
        auth.audit(
            "logout",
            &site.host,
            Some((&s.identity.sub, s.identity.email.as_deref())),
            "ok",
            None,
        );
    }
    let clear = cookie::clear(cookie::SESSION);
    let mut response = match session
        .is_some()
        .then(|| auth.oidc.end_session_url())
        .flatten()
    {
        Some(url) => respond::redirect(&url, &[clear]),
        None => {
            let mut r = respond::info_page(
                StatusCode::OK,
                "Signed out",
                "You are signed out of this site.",
            );
            r.headers_mut().append(header::SET_COOKIE, clear);
            r
        }
    };
    // Pages the user saw while signed in stay in the browser's cache and history; after a
    // logout, Back must not show them again to whoever uses the browser next.
    response.headers_mut().insert(
        http::header::HeaderName::from_static("clear-site-data"),
        HeaderValue::from_static("\"cache\""),
    );
    Ok(response)
}

async fn userinfo(auth: &Auth, site: &Site, headers: &HeaderMap) -> Response<ResponseBody> {
    let Some(s) = auth.sessions.from_headers(headers, &site.host).await else {
        return respond::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "sign_in_required", "status": 401}),
        );
    };
    let id = &s.identity;
    respond::json(
        StatusCode::OK,
        &serde_json::json!({
            "sub": id.sub,
            "email": id.email,
            "username": id.username,
            "name": id.name,
            "groups": id.groups,
            "auth_time": s.auth_time,
            "session_expires_at": s.expires,
        }),
    )
}
