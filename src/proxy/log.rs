//! The access log: one line per request, emitted when its response body is done.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use std::fmt::Write;

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
    /// Writes the line, when the log level lets `jumpgate::access` lines through.
    ///
    /// Formatted here rather than by `tracing`'s formatter: one line per request went
    /// through field visitors, a fresh `String` and a filter lookup each time, and cost more
    /// CPU than the rest of a protected request's policy work (see BENCHMARKS.md). The line
    /// is the one `tracing` would write, in text or JSON, built in a buffer kept per thread.
    pub fn emit(&self) {
        if !tracing::enabled!(target: "jumpgate::access", tracing::Level::INFO) {
            return;
        }
        let now = std::time::SystemTime::now();
        LINE.with_borrow_mut(|line| {
            line.clear();
            self.format(line, now, crate::telemetry::json());
            crate::telemetry::write_line(line.as_bytes());
        });
    }

    /// The line, as of `now`, in JSON or text, ending in a newline.
    fn format(&self, out: &mut String, now: std::time::SystemTime, json: bool) {
        let time = humantime::format_rfc3339_micros(now);
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let status = self.status.as_u16();
        if json {
            let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
            let _ = writeln!(
                out,
                "{{\"timestamp\":\"{time}\",\"level\":\"INFO\",\"message\":\"request\",\"site\":{},\"route\":{},\"method\":{},\"path\":{},\"status\":{status},\"duration_ms\":{ms},\"bytes\":{},\"client.ip\":\"{}\",\"target\":\"jumpgate::access\"}}",
                text(&self.site),
                text(&self.route),
                text(self.method.as_str()),
                text(&self.path),
                self.bytes,
                self.client,
            );
        } else {
            let _ = writeln!(
                out,
                "{time}  INFO jumpgate::access: request site={} route={} method={} path={} status={status} duration_ms={ms} bytes={} client.ip={}",
                self.site, self.route, self.method, self.path, self.bytes, self.client,
            );
        }
    }
}

thread_local! {
    /// The line being written, reused: one allocation per thread, not per request.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AccessLog {
        AccessLog {
            site: Arc::from("app.test"),
            route: Arc::from("/admin"),
            method: Method::POST,
            path: "/admin/a\"b".to_owned(),
            status: StatusCode::FORBIDDEN,
            start: Instant::now(),
            bytes: 1234,
            client: "192.0.2.7".parse().unwrap(),
        }
    }

    #[test]
    fn lines_are_what_tracing_would_write() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_764_961_100_123_456);
        let mut text = String::new();
        sample().format(&mut text, now, false);
        assert!(
            text.starts_with("2025-12-05T18:58:20.123456Z  INFO jumpgate::access: request site=app.test route=/admin method=POST path=/admin/a\"b status=403 duration_ms="),
            "{text}"
        );
        assert!(
            text.ends_with(" bytes=1234 client.ip=192.0.2.7\n"),
            "{text}"
        );

        let mut json = String::new();
        sample().format(&mut json, now, true);
        assert_eq!(json.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["timestamp"], "2025-12-05T18:58:20.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "jumpgate::access");
        assert_eq!(v["message"], "request");
        assert_eq!(v["path"], "/admin/a\"b");
        assert_eq!(v["status"], 403);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["client.ip"], "192.0.2.7");
        assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    }
}
