//! Wall-clock time for everything that compares against token claims, session ends and
//! snapshot ages, and the jitter that keeps retries from moving in lockstep.
//!
//! A running gateway reads time through its [`Clock`], never the system's directly, so that
//! a test can move one gateway's time forward (past a session's end, a step-up window, the
//! directory's `max_staleness`) instead of sleeping through it. The free functions are the
//! system's time, for the command-line tools and for what is stamped for other parties.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, by the system's clock.
pub fn now() -> i64 {
    now_ms().div_euclid(1000)
}

/// Milliseconds since the epoch, by the system's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One gateway's time: the system's, or the system's moved forward by what a test asked for.
/// Cloning shares it, so every part of a gateway reads the same time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// How far ahead of the system's clock this one runs, in milliseconds; `None` for the
    /// system's clock itself (the only kind a configuration can make).
    ahead_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that starts at the system's time and that [`Clock::advance`] moves forward.
    /// Time keeps flowing from where it was moved to, so the tokens a provider stamps with
    /// its own clock stay plausible to the gateway as they would to one with a fast clock.
    pub fn adjustable() -> Clock {
        Clock {
            ahead_ms: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    /// Moves an adjustable clock forward by `by`. Returns false, and moves nothing, on the
    /// system's clock, which only the system moves.
    #[must_use = "the system's clock cannot be moved"]
    pub fn advance(&self, by: Duration) -> bool {
        let Some(ahead) = &self.ahead_ms else {
            return false;
        };
        ahead.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        true
    }

    /// Seconds since the epoch.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.ahead_ms {
            None => now_ms(),
            Some(ahead) => now_ms().saturating_add(ahead.load(Ordering::Relaxed)),
        }
    }
}

/// `d` ± up to 20 %, so many gateways restarting together do not retry in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let b = crate::secret::random_bytes();
    let factor = 0.8 + (f64::from(b[0]) / 255.0) * 0.4;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_and_its_clones_with_it() {
        let clock = Clock::adjustable();
        let twin = clock.clone();
        let before = Clock::system().now();
        assert!(clock.advance(Duration::from_secs(3600)));
        let moved = twin.now() - before;
        assert!((3600..3660).contains(&moved), "moved {moved} s");
        assert!((Clock::system().now() - before).abs() < 60);
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let before = Clock::system().now();
        assert!(!Clock::system().advance(Duration::from_secs(3600)));
        assert!((Clock::system().now() - before).abs() < 60);
    }
}
