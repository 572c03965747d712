//! The HTTP/1.1 header-read timer: one per connection, kept between its requests.
//!
//! hyper's HTTP/1.1 server asks its timer for a new sleep each time it starts reading a
//! request head and drops it once the head is read. With a plain tokio timer that is, for
//! every request, an allocation, a registration in the runtime's timer wheel under its lock,
//! a deregistration under the lock again and a free. [`ConnectionTimer`] hands hyper a
//! sleep that, when dropped, gives its tokio timer back to the connection, and the next
//! request's sleep takes it up again without touching it: a timer that fires before the
//! deadline of the sleep holding it is moved on to that deadline then, which under steady
//! traffic is once per header timeout rather than once per request. No crate offers this:
//! hyper's `Timer` trait leaves reuse to the implementation, and hyper-util's `TokioTimer`
//! makes a new timer each time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A [`hyper::rt::Timer`] for one connection's HTTP/1.1 server.
///
/// The kept timer stays registered with the deadline it last had, never a later one than the
/// sleep that holds it; when it fires early it wakes the connection's task once, for the sleep
/// to move it on. If the connection closes, its timer goes with it.
#[derive(Clone, Default)]
pub struct ConnectionTimer {
    spare: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl ConnectionTimer {
    /// A timer with nothing kept yet.
    pub fn new() -> ConnectionTimer {
        ConnectionTimer::default()
    }
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        match Instant::now().checked_add(duration) {
            Some(deadline) => self.sleep_until(deadline),
            // Beyond the clock's reach: tokio's own sleep stands for "never" then.
            None => {
                let sleep = Box::pin(tokio::time::sleep(duration));
                Box::pin(Kept {
                    deadline: sleep.deadline(),
                    sleep: Some(sleep),
                    home: self.spare.clone(),
                })
            }
        }
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let kept = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let sleep = match kept {
            // The usual case, a later deadline than the kept timer's: left as it is.
            Some(sleep) if sleep.deadline() <= deadline => sleep,
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Box::pin(Kept {
            deadline,
            sleep: Some(sleep),
            home: self.spare.clone(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Kept>() {
            Some(kept) => kept.get_mut().reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep lent to hyper: it ends at `deadline`, on a tokio timer set no later than that,
/// which goes back to the connection when hyper drops the sleep.
struct Kept {
    deadline: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    home: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl Kept {
    fn reset(&mut self, deadline: tokio::time::Instant) {
        self.deadline = deadline;
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
        }
    }
}

impl Future for Kept {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Ready(());
        };
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= this.deadline {
                return Poll::Ready(());
            }
            // Fired at an earlier request's deadline: on to this one's.
            sleep.as_mut().reset(this.deadline);
        }
    }
}

impl hyper::rt::Sleep for Kept {}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            *self.home.lock().unwrap_or_else(PoisonError::into_inner) = Some(sleep);
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
        let mut next = timer.sleep(ms(200));
        assert!(
            tokio::time::timeout(ms(100), &mut next).await.is_err(),
            "a kept timer ended a sleep at the deadline of the sleep before"
        );
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("a kept timer that fired early was not moved on");
        assert!(timer.spare.lock().unwrap().is_some());

        // Near, then dropped and left to pass: the next, later deadline must not be cut short
        // by the earlier one.
        drop(timer.sleep(ms(10)));
        tokio::time::sleep(ms(40)).await;
        let mut next = timer.sleep(ms(200));
        assert!(
            tokio::time::timeout(ms(100), &mut next).await.is_err(),
            "a kept timer fired at the deadline it had before its reset"
        );
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("a kept timer whose old deadline had passed never fired again");
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
