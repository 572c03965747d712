//! Every response the gateway makes up itself, and the one place where a [`Rejection`]
//! becomes HTTP.
//!
//! Pages say what happened in words a user can act on and nothing more: no internal
//! addresses, error chains or configuration. The detail goes to the log at the call site.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;

/// Why a request was answered by the gateway instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed request: bad path, method, host or framing.
    BadRequest,
    /// No site for this host, or the host disagrees with the TLS server name.
    Misdirected,
    /// The route needs a signed-in user.
    SignInRequired,
    /// The route refuses this request.
    Forbidden,
    /// A path under the gateway's own prefix that does not exist.
    NotFound,
    /// The upstream could not be reached or broke the connection.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// A callback whose sign-in is unknown, expired, already used or from another browser.
    SignInExpired,
    /// The identity provider refused the sign-in (`access_denied`).
    IdpDenied,
    /// The identity provider cannot be reached, so no new sign-in can start or finish.
    IdpUnavailable,
    /// The identity provider's answer could not be verified.
    SignInFailed,
    /// A logout or other gateway action arriving from another site.
    CrossSite,
    /// The directory snapshot is missing or too old to decide a protected request.
    DirectoryUnavailable,
    /// A step-up sign-in could not be accepted as a fresh multi-factor sign-in.
    StepUpRefused,
    /// Too many sign-in or forward-auth requests from one client.
    TooManyRequests,
    /// A bearer API token that did not verify.
    InvalidToken,
    /// The request's header section is larger than `server.limits.max_header_bytes`.
    HeadersTooLarge,
    /// A method the gateway never forwards (`TRACE`, `TRACK`: they echo the request,
    /// credentials included, back to whoever can read the answer).
    MethodNotAllowed,
}

impl Rejection {
    /// The status code for this rejection.
    pub fn status(self) -> StatusCode {
        match self {
            Rejection::BadRequest => StatusCode::BAD_REQUEST,
            Rejection::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Rejection::SignInRequired => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::BadGateway => StatusCode::BAD_GATEWAY,
            Rejection::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::SignInExpired => StatusCode::BAD_REQUEST,
            Rejection::IdpDenied => StatusCode::FORBIDDEN,
            Rejection::IdpUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::SignInFailed => StatusCode::BAD_GATEWAY,
            Rejection::CrossSite => StatusCode::FORBIDDEN,
            Rejection::DirectoryUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::StepUpRefused => StatusCode::FORBIDDEN,
            Rejection::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Rejection::InvalidToken => StatusCode::UNAUTHORIZED,
            Rejection::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A short title and a sentence for the user.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Rejection::BadRequest => ("Bad request", "The request could not be understood."),
            Rejection::Misdirected => (
                "Unknown site",
                "This gateway does not serve the site you asked for. Check the address.",
            ),
            Rejection::SignInRequired => (
                "Sign-in required",
                "This page needs you to sign in, and sign-in is not configured on this gateway.",
            ),
            Rejection::Forbidden => (
                "Access refused",
                "You do not have access to this page. If you think you should, ask your administrator.",
            ),
            Rejection::NotFound => ("Not found", "There is nothing here."),
            Rejection::BadGateway => (
                "Service unavailable",
                "The service behind this gateway could not be reached. Try again in a moment.",
            ),
            Rejection::GatewayTimeout => (
                "Service did not answer",
                "The service behind this gateway did not answer in time. Try again in a moment.",
            ),
            Rejection::SignInExpired => (
                "Sign-in expired",
                "This sign-in link has expired or was already used. Go back to the page you wanted and sign in again.",
            ),
            Rejection::IdpDenied => (
                "Sign-in refused",
                "Your identity provider refused the sign-in: your account may not be allowed to use this application. Ask your administrator to grant access.",
            ),
            Rejection::IdpUnavailable => (
                "Sign-in unavailable",
                "The sign-in service cannot be reached right now. Try again in a few minutes.",
            ),
            Rejection::SignInFailed => (
                "Sign-in failed",
                "The sign-in could not be completed. Go back to the page you wanted and try again.",
            ),
            Rejection::CrossSite => (
                "Request refused",
                "This request came from another site and was refused.",
            ),
            Rejection::DirectoryUnavailable => (
                "Access cannot be checked",
                "The gateway cannot confirm your access right now because its copy of the user directory is out of date. Try again in a few minutes; if this persists, tell your administrator.",
            ),
            Rejection::StepUpRefused => (
                "Additional sign-in not accepted",
                "This action needs a recent sign-in with your second factor, and that sign-in could not be confirmed. Go back and try again.",
            ),
            Rejection::TooManyRequests => (
                "Too many attempts",
                "Too many sign-in attempts came from your address. Wait a minute, then try again.",
            ),
            Rejection::InvalidToken => (
                "Invalid token",
                "The access token was not accepted: it may have expired or was not issued for this service.",
            ),
            Rejection::HeadersTooLarge => (
                "Request too large",
                "The request's headers are too large. Clearing this site's cookies may help.",
            ),
            Rejection::MethodNotAllowed => (
                "Method not allowed",
                "This gateway does not accept that request method.",
            ),
        }
    }

    /// A machine-readable error code for JSON clients.
    fn code(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::Misdirected => "misdirected_request",
            Rejection::SignInRequired => "sign_in_required",
            Rejection::Forbidden => "forbidden",
            Rejection::NotFound => "not_found",
            Rejection::BadGateway => "bad_gateway",
            Rejection::GatewayTimeout => "gateway_timeout",
            Rejection::SignInExpired => "sign_in_expired",
            Rejection::IdpDenied => "sign_in_refused",
            Rejection::IdpUnavailable => "sign_in_unavailable",
            Rejection::SignInFailed => "sign_in_failed",
            Rejection::CrossSite => "cross_site",
            Rejection::DirectoryUnavailable => "directory_unavailable",
            Rejection::StepUpRefused => "step_up_refused",
            Rejection::TooManyRequests => "too_many_requests",
            Rejection::InvalidToken => "invalid_token",
            Rejection::HeadersTooLarge => "request_header_fields_too_large",
            Rejection::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// Whether the client prefers JSON to HTML, judged from `Accept`.
pub fn wants_json(headers: &HeaderMap) -> bool {
    accepts_json(headers.get(header::ACCEPT))
}

/// [`wants_json`] from the `Accept` value itself, for a request whose headers have gone
/// upstream by the time the gateway answers it.
///
/// Case is ignored by comparing in place: a browser's `Accept` lists six media types or so,
/// and lowering each into a new string was an allocation per type.
pub fn accepts_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut json = None;
    let mut html = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().as_bytes();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let suffix = media.len().checked_sub(5).map(|at| &media[at..]);
        if media.eq_ignore_ascii_case(b"application/json")
            || suffix.is_some_and(|s| s.eq_ignore_ascii_case(b"+json"))
        {
            json = Some(json.map_or(q, |j: f32| j.max(q)));
        } else if media.eq_ignore_ascii_case(b"text/html") {
            html = Some(html.map_or(q, |h: f32| h.max(q)));
        }
    }
    match (json, html) {
        (Some(j), Some(h)) => j > h,
        (Some(j), None) => j > 0.0,
        _ => false,
    }
}

/// 429 with `Retry-After: wait` seconds.
pub fn too_many(wait: u64, json: bool) -> Response<ResponseBody> {
    let mut r = rejection(Rejection::TooManyRequests, json);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    r
}

/// A `302 Found` to `location`, never cached, with extra `Set-Cookie` values.
pub fn redirect(location: &str, cookies: &[HeaderValue]) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        headers.append(header::SET_COOKIE, c.clone());
    }
    response
}

/// A `303 See Other` to `location`: after a form post, the browser follows it with a GET.
pub fn redirect_see_other(location: &str) -> Response<ResponseBody> {
    let mut response = redirect(location, &[]);
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

/// A JSON response, never cached.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An informational HTML page (e.g. "signed out").
pub fn info_page(status: StatusCode, title: &str, text: &str) -> Response<ResponseBody> {
    page(status, "info", (title, text), false)
}

/// Turns a rejection into a response: JSON when the client asked for it (see [`wants_json`]),
/// else an HTML page.
pub fn rejection(r: Rejection, json: bool) -> Response<ResponseBody> {
    let mut response = page(r.status(), r.code(), r.words(), json);
    if r == Rejection::InvalidToken {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\", error_description=\"The access token is invalid or expired\""),
        );
    }
    response
}

fn page(
    status: StatusCode,
    code: &str,
    (title, text): (&str, &str),
    json: bool,
) -> Response<ResponseBody> {
    let (content_type, body) = if json {
        (
            "application/json",
            format!(
                "{{\"error\":\"{code}\",\"status\":{},\"message\":{}}}",
                status.as_u16(),
                serde_json::Value::from(text)
            ),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
                 <title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;\
                 margin:15vh auto;padding:0 1rem;color:#1f2933}}h1{{font-size:1.5rem}}\
                 small{{color:#616e7c}}</style></head><body><h1>{title}</h1><p>{text}</p>\
                 <p><small>{} · jumpgate</small></p></body></html>\n",
                status.as_u16()
            ),
        )
    };
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !json {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_per_rejection() {
        let table = [
            (Rejection::BadRequest, 400),
            (Rejection::Misdirected, 421),
            (Rejection::SignInRequired, 401),
            (Rejection::Forbidden, 403),
            (Rejection::NotFound, 404),
            (Rejection::BadGateway, 502),
            (Rejection::GatewayTimeout, 504),
            (Rejection::SignInExpired, 400),
            (Rejection::IdpDenied, 403),
            (Rejection::IdpUnavailable, 503),
            (Rejection::SignInFailed, 502),
            (Rejection::CrossSite, 403),
            (Rejection::DirectoryUnavailable, 503),
            (Rejection::StepUpRefused, 403),
            (Rejection::TooManyRequests, 429),
            (Rejection::InvalidToken, 401),
            (Rejection::HeadersTooLarge, 431),
            (Rejection::MethodNotAllowed, 405),
        ];
        for (r, code) in table {
            let resp = rejection(r, false);
            assert_eq!(resp.status().as_u16(), code);
            assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        }
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_json(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(wants_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(!wants_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/html;q=0.5"),
        );
        assert!(wants_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/problem+json"),
        );
        assert!(wants_json(&h));
        for (accept, json) in [
            // What browsers send on a navigation, and fetch's usual preference.
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
                false,
            ),
            ("application/json, text/plain, */*", true),
            ("Application/JSON", true),
            ("application/Problem+JSON;q=0.9, text/html;q=0.8", true),
            ("text/html, application/json;q=0.5", false),
            ("application/json;q=0", false),
            ("+json", true),
            ("json", false),
            ("", false),
        ] {
            let v = HeaderValue::from_static(accept);
            assert_eq!(accepts_json(Some(&v)), json, "{accept}");
        }
        assert!(!accepts_json(None));
    }
}
