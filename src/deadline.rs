//! Deadlines on timers kept from one request to the next: a connection's wait for its
//! upstream's answer, and hyper's header-read timeout on each client connection.
//!
//! A tokio timer armed anew costs an allocation, a registration in the runtime's timer wheel
//! under its lock, and a removal under the lock again; reset to a later deadline it still
//! turns the instant into the wheel's ticks and reaches the driver. A [`Deadline`] is moved
//! later by recording the new instant only: its timer keeps the earlier one, and when that
//! fires, the timer is moved on to the recorded instant. Under steady traffic a kept timer so
//! fires once per timeout rather than once per request.
//!
//! hyper's HTTP/1.1 server asks its timer for a new sleep each time it starts reading a
//! request head and drops it once the head is read. [`ConnectionTimer`] lends it sleeps on
//! one kept [`Deadline`] per connection, which comes back when hyper drops the sleep. No
//! crate offers this: hyper's `Timer` trait leaves reuse to the implementation, and
//! hyper-util's `TokioTimer` makes a new timer each time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

/// An instant to wait for, on a timer that may be set earlier and is moved on when it fires.
pub struct Deadline {
    at: tokio::time::Instant,
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A deadline at `at`, on a timer of its own.
    pub fn new(at: tokio::time::Instant) -> Deadline {
        Deadline {
            at,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// A deadline `after` from now; one beyond the clock's reach is tokio's "never".
    fn after(after: Duration) -> Deadline {
        let timer = Box::pin(tokio::time::sleep(after));
        Deadline {
            at: timer.deadline(),
            timer,
        }
    }

    /// Moves the deadline to `at`. The timer is only touched when `at` is earlier than it.
    pub fn set(&mut self, at: tokio::time::Instant) {
        self.at = at;
        if self.timer.deadline() > at {
            self.timer.as_mut().reset(at);
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            std::task::ready!(this.timer.as_mut().poll(cx));
            if this.timer.deadline() >= this.at {
                return Poll::Ready(());
            }
            // Fired at an earlier deadline: on to this one.
            this.timer.as_mut().reset(this.at);
        }
    }
}

/// A [`hyper::rt::Timer`] for one connection's HTTP/1.1 server, lending sleeps on the
/// connection's kept [`Deadline`]. If the connection closes, its timer goes with it.
#[derive(Clone, Default)]
pub struct ConnectionTimer {
    spare: Arc<Mutex<Option<Deadline>>>,
}

impl ConnectionTimer {
    /// A timer with nothing kept yet.
    pub fn new() -> ConnectionTimer {
        ConnectionTimer::default()
    }

    fn lend(&self, deadline: Deadline) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Kept {
            deadline: Some(deadline),
            home: self.spare.clone(),
        })
    }
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        match Instant::now().checked_add(duration) {
            Some(deadline) => self.sleep_until(deadline),
            None => self.lend(Deadline::after(duration)),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let at = tokio::time::Instant::from_std(deadline);
        let kept = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let deadline = match kept {
            Some(mut kept) => {
                kept.set(at);
                kept
            }
            None => Deadline::new(at),
        };
        self.lend(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Kept>() {
            Some(kept) => {
                if let Some(d) = kept.get_mut().deadline.as_mut() {
                    d.set(new_deadline.into());
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep lent to hyper; its deadline goes back to the connection when hyper drops it.
struct Kept {
    deadline: Option<Deadline>,
    home: Arc<Mutex<Option<Deadline>>>,
}

impl Future for Kept {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut().deadline.as_mut() {
            Some(d) => Pin::new(d).poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl hyper::rt::Sleep for Kept {}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(d) = self.deadline.take() {
            *self.home.lock().unwrap_or_else(PoisonError::into_inner) = Some(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn a_sleep_ends_at_its_deadline() {
        let timer = ConnectionTimer::new();
        let start = Instant::now();
        timer.sleep(ms(40)).await;
        assert!(start.elapsed() >= ms(40), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_dropped_sleep_is_kept_and_the_next_one_keeps_its_own_deadline() {
        let timer = ConnectionTimer::new();
        // Far off, then dropped: the next, nearer deadline must not wait for it.
        drop(timer.sleep(Duration::from_secs(3600)));
        assert!(
            timer.spare.lock().unwrap().is_some(),
            "the timer was not kept"
        );
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), timer.sleep(ms(30)))
            .await
            .expect("a kept timer reset to a nearer deadline never fired");
        assert!(start.elapsed() >= ms(30), "{:?}", start.elapsed());
        assert!(timer.spare.lock().unwrap().is_some());

        // Near, then dropped while still ahead: the next, later deadline must outlast it.
        drop(timer.sleep(ms(30)));
        ends_at_its_own_deadline(&timer, "the earlier deadline, still ahead when dropped").await;
        assert!(timer.spare.lock().unwrap().is_some());

        // Near, then dropped and left to pass: the next, later deadline must not be cut short
        // by the earlier one.
        drop(timer.sleep(ms(10)));
        tokio::time::sleep(ms(40)).await;
        ends_at_its_own_deadline(&timer, "the earlier deadline, passed while kept").await;
    }

    /// A 200 ms sleep from `timer` is still running after 100 ms, and ends after all:
    /// a kept timer set earlier (`earlier` says how) neither ends it early nor loses it.
    async fn ends_at_its_own_deadline(timer: &ConnectionTimer, earlier: &str) {
        let mut next = timer.sleep(ms(200));
        assert!(
            tokio::time::timeout(ms(100), &mut next).await.is_err(),
            "a kept timer ended a sleep at {earlier}"
        );
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .unwrap_or_else(|_| panic!("a kept timer that fired at {earlier} was not moved on"));
    }

    #[tokio::test]
    async fn reset_moves_the_deadline_of_a_lent_sleep() {
        let timer = ConnectionTimer::new();
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        timer.reset(&mut sleep, Instant::now() + ms(20));
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("reset to a nearer deadline did not take");
    }
}
