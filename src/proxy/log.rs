//! The access log: one line per request, emitted when its response body is done.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
        LINE.with_borrow_mut(|(line, clock)| {
            line.clear();
            self.format(line, clock, now, crate::telemetry::json());
            crate::telemetry::write_line(line);
        });
    }

    /// The line, as of `now`, in JSON or text, ending in a newline.
    ///
    /// Written piece by piece rather than through `format!`: the formatting machinery, a
    /// calendar date worked out for every line and the shortest decimal form of a float
    /// took some 3,800 instructions a line, more than the rest of the request's policy.
    fn format(&self, out: &mut Vec<u8>, clock: &mut Stamp, now: SystemTime, json: bool) {
        let mut n = itoa::Buffer::new();
        let status = self.status.as_u16();
        if json {
            out.extend_from_slice(b"{\"timestamp\":\"");
            clock.write(out, now);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"site\":");
            json_string(out, &self.site);
            out.extend_from_slice(b",\"route\":");
            json_string(out, &self.route);
            out.extend_from_slice(b",\"method\":");
            json_string(out, self.method.as_str());
            out.extend_from_slice(b",\"path\":");
            json_string(out, &self.path);
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(n.format(status).as_bytes());
            out.extend_from_slice(b",\"duration_ms\":");
            self.duration_ms(out);
            out.extend_from_slice(b",\"bytes\":");
            out.extend_from_slice(n.format(self.bytes).as_bytes());
            out.extend_from_slice(b",\"client.ip\":\"");
            write_ip(out, self.client);
            out.extend_from_slice(b"\",\"target\":\"jumpgate::access\"}\n");
        } else {
            clock.write(out, now);
            out.extend_from_slice(b"  INFO jumpgate::access: request site=");
            out.extend_from_slice(self.site.as_bytes());
            out.extend_from_slice(b" route=");
            out.extend_from_slice(self.route.as_bytes());
            out.extend_from_slice(b" method=");
            out.extend_from_slice(self.method.as_str().as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(self.path.as_bytes());
            out.extend_from_slice(b" status=");
            out.extend_from_slice(n.format(status).as_bytes());
            out.extend_from_slice(b" duration_ms=");
            self.duration_ms(out);
            out.extend_from_slice(b" bytes=");
            out.extend_from_slice(n.format(self.bytes).as_bytes());
            out.extend_from_slice(b" client.ip=");
            write_ip(out, self.client);
            out.push(b'\n');
        }
    }

    /// Milliseconds since the request arrived, to the microsecond: `12.345`.
    fn duration_ms(&self, out: &mut Vec<u8>) {
        let us = self.start.elapsed().as_micros();
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(n.format(us / 1000).as_bytes());
        out.push(b'.');
        let frac = n.format(us % 1000 + 1000);
        out.extend_from_slice(&frac.as_bytes()[1..]);
    }
}

/// `ip` as `Display` writes it; IPv4 by hand, as `Display`'s padding support made it cost
/// 1,000 instructions a line.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `s` as a JSON string, quotes included.
fn json_string(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// RFC 3339 timestamps to the microsecond, the calendar part worked out once a second.
#[derive(Default)]
struct Stamp {
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`.
    prefix: Vec<u8>,
}

impl Stamp {
    fn write(&mut self, out: &mut Vec<u8>, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.prefix.is_empty() || since.as_secs() != self.second {
            self.second = since.as_secs();
            self.prefix.clear();
            let whole = UNIX_EPOCH + std::time::Duration::from_secs(self.second);
            let _ = write!(self.prefix, "{}", humantime::format_rfc3339_seconds(whole));
            // `…SSZ` becomes `…SS.`, for the microseconds and the `Z` to follow.
            self.prefix.pop();
            self.prefix.push(b'.');
        }
        out.extend_from_slice(&self.prefix);
        let mut n = itoa::Buffer::new();
        let micros = n.format(since.subsec_micros() + 1_000_000);
        out.extend_from_slice(&micros.as_bytes()[1..]);
        out.push(b'Z');
    }
}

thread_local! {
    /// The line being written and the timestamp's calendar part, reused: one allocation
    /// per thread, not per request.
    static LINE: std::cell::RefCell<(Vec<u8>, Stamp)> =
        std::cell::RefCell::new((Vec::new(), Stamp::default()));
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
        let mut text = Vec::new();
        sample().format(&mut text, &mut Stamp::default(), now, false);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("2025-12-05T18:58:20.123456Z  INFO jumpgate::access: request site=app.test route=/admin method=POST path=/admin/a\"b status=403 duration_ms="),
            "{text}"
        );
        assert!(
            text.ends_with(" bytes=1234 client.ip=192.0.2.7\n"),
            "{text}"
        );

        let mut json = Vec::new();
        sample().format(&mut json, &mut Stamp::default(), now, true);
        let json = String::from_utf8(json).unwrap();
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

    #[test]
    fn addresses_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "192.0.2.7",
            "10.200.30.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    /// The calendar part is reused within a second and worked out again after it; the
    /// microseconds and the duration keep their zeros.
    #[test]
    fn timestamps_and_durations_keep_their_digits() {
        let at = |micros: u64| std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
        let mut stamp = Stamp::default();
        let mut line = |micros: u64| {
            let mut out = Vec::new();
            stamp.write(&mut out, at(micros));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line(1_764_961_100_000_007), "2025-12-05T18:58:20.000007Z");
        assert_eq!(line(1_764_961_100_999_999), "2025-12-05T18:58:20.999999Z");
        assert_eq!(line(1_764_961_101_000_000), "2025-12-05T18:58:21.000000Z");
        assert_eq!(line(1_767_225_599_500_000), "2025-12-31T23:59:59.500000Z");
        assert_eq!(line(1_767_225_600_000_001), "2026-01-01T00:00:00.000001Z");
        // An earlier second again (the clock was set back): worked out afresh.
        assert_eq!(line(1_764_961_100_000_000), "2025-12-05T18:58:20.000000Z");

        let mut log = sample();
        log.start = Instant::now() - std::time::Duration::from_micros(12_003_004);
        let mut out = Vec::new();
        log.duration_ms(&mut out);
        let text = String::from_utf8(out).unwrap();
        let (whole, frac) = text.split_once('.').unwrap();
        assert_eq!(frac.len(), 3, "{text}");
        assert!(whole.parse::<u64>().unwrap() >= 12_003, "{text}");
        let json_value: f64 = text.parse().unwrap();
        assert!(json_value >= 12_003.004, "{text}");
    }
}
