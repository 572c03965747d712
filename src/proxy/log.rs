//! The access log: one line per request, emitted when its response body is done.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};

/// What one access-log line says. Never holds header values, so cookies and credentials
/// cannot reach the log.
#[derive(Debug)]
pub struct AccessLog {
    /// Site host, or `-`.
    pub site: Arc<str>,
    /// Route label, or `-`.
    pub route: Arc<str>,
    /// Request method.
    pub method: Method,
    /// Canonical path (or `-` when the path was refused).
    pub path: String,
    /// Response status.
    pub status: StatusCode,
    /// When the request arrived.
    pub start: Instant,
    /// Response body bytes sent.
    pub bytes: u64,
    /// The client the request is attributed to.
    pub client: IpAddr,
}

impl AccessLog {
    /// Writes the line.
    pub fn emit(&self) {
        tracing::info!(
            target: "jumpgate::access",
            site = %self.site,
            route = %self.route,
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            bytes = self.bytes,
            client.ip = %self.client,
            "request"
        );
    }
}
