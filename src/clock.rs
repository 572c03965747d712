//! Wall-clock time for everything that compares against token claims, session ends and
//! snapshot ages, and the jitter that keeps retries from moving in lockstep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `d` ± up to 20 %, so many gateways restarting together do not retry in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let b = crate::secret::random_bytes();
    let factor = 0.8 + (f64::from(b[0]) / 255.0) * 0.4;
    d.mul_f64(factor)
}
