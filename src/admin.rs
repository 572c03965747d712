//! The admin listener: liveness, readiness, Prometheus metrics and the status page. It is
//! bound to its own address and never answers on the public listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::proxy::ResponseBody;
use crate::status::Status;

/// Whether the gateway is ready to serve traffic.
#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    oidc: Option<Arc<crate::oidc::Oidc>>,
    step_up: Option<Arc<crate::oidc::Oidc>>,
    directory: Option<Arc<crate::directory::Directory>>,
    redis: Option<Arc<crate::shared::RedisStore>>,
    /// The gateway's time, which the snapshot's age is counted on.
    clock: crate::clock::Clock,
}

impl Readiness {
    /// Readiness that also waits for the identity provider's discovery, when sign-in is on,
    /// and for the step-up application's, when step-up is configured.
    pub fn new(
        oidc: Option<Arc<crate::oidc::Oidc>>,
        step_up: Option<Arc<crate::oidc::Oidc>>,
        directory: Option<Arc<crate::directory::Directory>>,
        redis: Option<Arc<crate::shared::RedisStore>>,
        clock: crate::clock::Clock,
    ) -> Readiness {
        Readiness {
            listening: AtomicBool::new(false),
            oidc,
            step_up,
            directory,
            redis,
            clock,
        }
    }

    /// Marks the public listener as serving.
    pub fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Release);
    }

    /// Why the gateway is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.listening.load(Ordering::Acquire) {
            return Some("public listener not serving".to_owned());
        }
        if self.oidc.as_ref().is_some_and(|o| !o.is_ready()) {
            return Some("identity provider not discovered yet".to_owned());
        }
        if self.step_up.as_ref().is_some_and(|o| !o.is_ready()) {
            return Some("step-up provider not discovered yet".to_owned());
        }
        if let Some(reason) = self.redis.as_ref().and_then(|r| r.not_ready_reason()) {
            return Some(reason);
        }
        self.directory
            .as_ref()
            .and_then(|d| d.not_ready_reason(self.clock.now()))
    }

    /// A line describing the directory snapshot's age, when there is a directory.
    pub fn directory_line(&self) -> String {
        match &self.directory {
            None => String::new(),
            Some(d) => match d.age(self.clock.now()) {
                Some(age) => format!("directory snapshot age: {age} s\n"),
                None => "directory snapshot: none\n".to_owned(),
            },
        }
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Answers one admin request.
pub fn handle<B>(req: &Request<B>, status: &Status) -> Response<ResponseBody> {
    let (readiness, metrics) = (&status.readiness, &status.metrics);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            "text/plain; charset=utf-8",
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8"),
        "/readyz" => match readiness.not_ready_reason() {
            None => text(
                StatusCode::OK,
                format!("ready\n{}", readiness.directory_line()),
                "text/plain; charset=utf-8",
            ),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n{}", readiness.directory_line()),
                "text/plain; charset=utf-8",
            ),
        },
        "/metrics" => {
            status.refresh_gauges();
            text(
                StatusCode::OK,
                metrics.encode(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        "/status" if !crate::proxy::respond::wants_json(req.headers()) => text(
            StatusCode::OK,
            crate::status::html(&status.report(status.clock.now())),
            "text/html; charset=utf-8",
        ),
        "/status" | "/status.json" => text(
            StatusCode::OK,
            crate::status::json(&status.report(status.clock.now())),
            "application/json",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found\n".into(),
            "text/plain; charset=utf-8",
        ),
    }
}
