//! The async runtime the gateway serves on: how many worker threads, and which scheduler.
//!
//! With one worker (a one-CPU container, or `TOKIO_WORKER_THREADS=1`) the gateway runs on
//! tokio's current-thread scheduler instead of a work-stealing pool of one. Both run every
//! task on one thread; the pool of one still pays for what only several workers need (the
//! shared run queue's atomics, the search for a worker to wake, parking through the pool),
//! about 860 instructions a proxied request (BENCHMARKS.md, round thirteen). With more
//! workers the multi-thread scheduler is kept: work stealing is what spreads connections
//! over the cores.

use std::io;
use std::num::NonZeroUsize;

/// The environment variable tokio reads for its worker count, honoured as tokio honours it.
pub const WORKERS_VAR: &str = "TOKIO_WORKER_THREADS";

/// A worker count that is not a positive whole number.
#[derive(Debug, thiserror::Error)]
#[error("{WORKERS_VAR}={0:?}: not a positive whole number of worker threads")]
pub struct BadWorkers(String);

/// The worker threads to run: `TOKIO_WORKER_THREADS` when set, else the CPUs this process
/// may use (which counts a container's CPU quota).
pub fn workers() -> Result<NonZeroUsize, BadWorkers> {
    match std::env::var(WORKERS_VAR) {
        Ok(v) => parse_workers(&v),
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
        }
        Err(std::env::VarError::NotUnicode(v)) => Err(BadWorkers(v.to_string_lossy().into())),
    }
}

/// A worker count as the variable spells it.
fn parse_workers(v: &str) -> Result<NonZeroUsize, BadWorkers> {
    v.trim().parse().map_err(|_| BadWorkers(v.to_owned()))
}

/// The runtime for `workers` worker threads, timers and I/O enabled.
pub fn build(workers: NonZeroUsize) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers.get() == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers.get());
        b
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_runs_on_the_current_thread_scheduler_and_more_on_the_pool() {
        let one = build(NonZeroUsize::MIN).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = build(NonZeroUsize::new(2).unwrap()).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
        // Either one serves: a spawned task runs and timers fire.
        for rt in [one, two] {
            let got = rt.block_on(async {
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    7
                })
                .await
                .unwrap()
            });
            assert_eq!(got, 7);
        }
    }

    #[test]
    fn a_worker_count_must_be_a_positive_whole_number() {
        assert_eq!(parse_workers("1").unwrap().get(), 1);
        assert_eq!(parse_workers(" 4 ").unwrap().get(), 4);
        for bad in ["0", "", "-1", "two", "1.5"] {
            let e = parse_workers(bad).unwrap_err().to_string();
            assert!(e.starts_with("TOKIO_WORKER_THREADS="), "{bad}: {e}");
        }
    }
}
