//! Wakers that pass a task's wake-ups on and remember that they came.
//!
//! Written here because neither tokio nor futures offers one: `AtomicWaker` passes a wake-up
//! on but forgets it, and a future's owner sometimes needs to know whether this waker, rather
//! than another source, woke it (an upstream connection polled on a client's task; a timer
//! that should be polled only once it has fired).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Passes the wake-ups it is given on to the task registered in it, except while held back,
/// and notes each one for [`Relay::release`].
#[derive(Debug, Default)]
pub struct Relay {
    task: AtomicWaker,
    /// [`HELD`] while wake-ups are held back, with [`WOKEN`] once one has come.
    state: AtomicU8,
}

const HELD: u8 = 1;
const WOKEN: u8 = 2;

impl Relay {
    /// The task to pass wake-ups on to, from now on.
    pub fn register(&self, task: &Waker) {
        self.task.register(task);
    }

    /// Holds wake-ups back until [`Relay::release`]; one noted before is forgotten.
    pub fn hold(&self) {
        self.state.store(HELD, Ordering::Release);
    }

    /// Lets wake-ups through again; whether one came since they were held back or, on a
    /// relay never held, since the last call.
    pub fn release(&self) -> bool {
        self.state.swap(0, Ordering::AcqRel) & WOKEN != 0
    }

    /// Runs `work` with wake-ups held back and without a waker of its own; with its result,
    /// whether a wake-up came meanwhile.
    pub fn quietly<T>(&self, work: impl FnOnce(&mut Context<'_>) -> T) -> (T, bool) {
        self.hold();
        let done = work(&mut Context::from_waker(Waker::noop()));
        (done, self.release())
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // One read-modify-write, so a wake-up racing `release` is either seen by it or
        // passed on.
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & HELD == 0 {
            self.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task's waker that counts its wake-ups.
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_relay_passes_wake_ups_on_except_while_held_back() {
        let task = Arc::new(Counted(AtomicUsize::new(0)));
        let woken = || task.0.load(Ordering::SeqCst);
        let relay = Arc::new(Relay::default());
        let waker = Waker::from(relay.clone());

        relay.register(&Waker::from(task.clone()));
        waker.wake_by_ref();
        assert_eq!(woken(), 1, "passed on");
        assert!(relay.release(), "and noted, on a relay never held");
        assert!(!relay.release(), "once");

        relay.register(&Waker::from(task.clone()));
        relay.hold();
        waker.wake_by_ref();
        assert_eq!(woken(), 1, "held back");
        assert!(relay.release(), "and remembered for the one releasing");
        waker.wake_by_ref();
        assert_eq!(woken(), 2, "passed on once released");

        // One passed on before holding is not taken for one held back.
        relay.hold();
        assert!(!relay.release());
    }
}
