//! The audit log: one JSON line per access decision and per sign-in, step-up, logout and
//! revocation, to its own file or to stdout. Lines are handed to a writer task so the request
//! path never waits on the disk; nothing secret (cookies, tokens) is ever part of a line.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::HeaderValue;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AuditOutput;

/// One audit record.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// What happened: `access`, `sign_in`, `step_up`, `logout`, `revocation`.
    pub event: &'static str,
    /// User id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// Email, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    /// Site host.
    pub site: &'a str,
    /// Route label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// Method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    /// Canonical path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    /// `allow`, `deny`, `sign_in`, `step_up`, `unavailable`, `ok`, `refused`.
    pub decision: &'static str,
    /// Why, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The client the request is attributed to.
    pub client_ip: IpAddr,
    /// The request id, also sent upstream as `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    record: &'a Record<'a>,
}

/// The audit log handle.
#[derive(Debug)]
pub struct Audit {
    tx: mpsc::UnboundedSender<String>,
    dropped: AtomicU64,
}

impl Audit {
    /// Starts the writer task for `output`. Fails when the file cannot be opened.
    pub fn start(output: &AuditOutput) -> std::io::Result<Audit> {
        let mut sink: Box<dyn Write + Send> = match output {
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                Box::new(options.open(path)?)
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        // A blocking thread: file writes must not stall the runtime's workers.
        std::thread::Builder::new()
            .name("jumpgate-audit".into())
            .spawn(move || {
                while let Some(line) = rx.blocking_recv() {
                    if sink
                        .write_all(line.as_bytes())
                        .and_then(|()| sink.flush())
                        .is_err()
                    {
                        eprintln!("jumpgate: audit log write failed");
                    }
                }
            })?;
        Ok(Audit {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Writes one record.
    pub fn record(&self, record: &Record<'_>) {
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            record,
        };
        match serde_json::to_string(&line) {
            Ok(mut s) => {
                s.push('\n');
                if self.tx.send(s).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Request ids: a random per-process prefix and a counter, cheap and unique.
#[derive(Debug)]
pub struct RequestIds {
    /// Six random bytes in lower-case hex.
    prefix: [u8; 12],
    next: AtomicU64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Default for RequestIds {
    fn default() -> Self {
        let b = crate::secret::random_bytes();
        let mut prefix = [0u8; 12];
        for (pair, byte) in prefix.chunks_mut(2).zip(&b[..6]) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        RequestIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// A new id: `PREFIX-COUNTER`, the counter in hex without leading zeros, as the header
    /// value it travels in (see [`id_value`]).
    ///
    /// Written into a stack buffer by hand: every request takes one, and through `format!`
    /// an id cost some 800 instructions and two allocations (see BENCHMARKS.md).
    pub fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 12 + 1 + 16];
        buf[..12].copy_from_slice(&self.prefix);
        buf[12] = b'-';
        let digits = (64 - n.leading_zeros()).max(1).div_ceil(4) as usize;
        for (i, out) in buf[13..13 + digits].iter_mut().enumerate() {
            let shift = 4 * (digits - 1 - i);
            *out = HEX[((n >> shift) & 0xf) as usize];
        }
        id_value(&buf[..13 + digits])
    }
}

/// A request id's header value from bytes already known to be one (our own hex id, or a
/// value copied from another header value), marked sensitive. Each call copies: the first
/// clone of a value built from bytes allocates the count it is then shared through, and
/// every later clone and drop is an atomic operation, which cost more than copying 20-odd
/// bytes into a value of its own.
pub fn id_value(bytes: &[u8]) -> HeaderValue {
    // `bytes` are visible ASCII (checked where they came from); "-" cannot be reached.
    let mut v = HeaderValue::from_bytes(bytes).unwrap_or(HeaderValue::from_static("-"));
    // Sent as a literal, never indexed, by HTTP/2's header compression: a value used once
    // would only evict useful entries from the peer's table, and looking it up and inserting
    // it cost every response some 3,000 instructions.
    v.set_sensitive(true);
    v
}

/// What every audit line about the current request shares.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The client the request is attributed to.
    pub client_ip: IpAddr,
    /// The request id, as the `X-Request-Id` value it is sent upstream and answered with.
    pub request_id: HeaderValue,
}

impl RequestContext {
    /// The request id as audit lines write it.
    pub fn id(&self) -> &str {
        // Always visible ASCII: ours is hex, a trusted proxy's is checked on arrival.
        self.request_id.to_str().unwrap_or("-")
    }
}

tokio::task_local! {
    /// The request being handled, for audit lines written deep in the request path.
    pub static REQUEST: RequestContext;
}

/// The current request's context, when called inside one.
pub fn current() -> Option<RequestContext> {
    REQUEST.try_with(Clone::clone).ok()
}

/// Fixed-window rate limiting per client IP, for the endpoints a flood would make expensive
/// (sign-in starts and callbacks).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    window: std::time::Duration,
    windows: moka::sync::Cache<
        IpAddr,
        std::sync::Arc<(std::sync::atomic::AtomicU32, std::time::Instant)>,
    >,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per IP per minute.
    pub fn new(per_minute: u32) -> RateLimiter {
        Self::with_window(per_minute, std::time::Duration::from_secs(60))
    }

    /// The requests it allows per IP per window.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// A limiter allowing `limit` requests per IP per `window`.
    pub fn with_window(limit: u32, window: std::time::Duration) -> RateLimiter {
        RateLimiter {
            per_minute: limit,
            window,
            windows: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(window)
                .build(),
        }
    }

    /// `Ok` when `ip` may go on; else the seconds until its window ends.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let window = self.windows.get_with(bucket(ip), || {
            std::sync::Arc::new((
                std::sync::atomic::AtomicU32::new(0),
                std::time::Instant::now(),
            ))
        });
        let n = window.0.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= self.per_minute {
            return Ok(());
        }
        Err(self
            .window
            .saturating_sub(window.1.elapsed())
            .as_secs()
            .max(1))
    }
}

/// The unit a limit counts: one IPv4 address, or one IPv6 /64. A single IPv6 subscriber
/// is usually handed a /64 (or more), so counting single addresses would give one client
/// 2^64 allowances. An IPv4-mapped IPv6 address counts as its IPv4 address.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_slash_64() {
        let r = RateLimiter::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(r.check(a).is_ok() && r.check(b).is_ok());
        assert!(r.check(a).is_err(), "the same /64");
        assert!(r.check("2001:db8:1:2::99".parse().unwrap()).is_err());
        assert!(r.check(other).is_ok(), "another /64");
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(r.check(v4).is_ok() && r.check(mapped).is_ok());
        assert!(r.check(v4).is_err(), "a mapped address is its IPv4 address");
    }

    #[test]
    fn rate_limit_per_ip() {
        let r = RateLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(r.check(a).is_ok() && r.check(a).is_ok() && r.check(a).is_ok());
        let wait = r.check(a).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(r.check(b).is_ok(), "limits are per client");
    }

    #[test]
    fn rate_limit_recovers_after_the_window() {
        let r = RateLimiter::with_window(1, std::time::Duration::from_millis(200));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(r.check(a).is_ok());
        assert!(r.check(a).is_err());
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(r.check(a).is_ok(), "a new window starts");
    }

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::default();
        let (x, y) = (ids.next(), ids.next());
        assert!(x.is_sensitive());
        let (x, y) = (x.to_str().unwrap(), y.to_str().unwrap());
        assert_ne!(x, y);
        assert!(x.starts_with(&y[..12]));
        assert_eq!(x.len(), 14, "{x}");
        assert!(x[..12]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(&x[12..], "-1");
        assert_eq!(&y[12..], "-2");
        // The counter in hex, as `format!("{n:x}")` writes it, at every length.
        for n in [0u64, 9, 10, 15, 16, 255, 256, 0xdead_beef, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            assert_eq!(ids.next().to_str().unwrap()[13..], format!("{n:x}"), "{n}");
        }
    }
}
