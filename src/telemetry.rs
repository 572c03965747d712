//! Logging set-up: human-readable lines or JSON lines, filtered by level.
//!
//! The filter comes from `JUMPGATE_LOG` when set (a `tracing` directive), else from the
//! configuration. Header values are never recorded as fields anywhere in jumpgate, so
//! credentials cannot reach the log whatever the level.

use std::io::{BufWriter, IsTerminal, Stderr, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Every log line goes through this buffer to stderr. The access log writes a line per
/// request; written straight to stderr, each would be a system call on the request's thread.
/// Here a line is a copy under a lock; a background thread writes the buffer out every
/// [`FLUSH_EVERY`], and a full buffer is written at once. Hand-written rather than
/// tracing-appender's non-blocking writer, which needs a guard kept alive for the whole
/// process and brings a date-time crate for rolling files jumpgate does not use.
static OUT: Mutex<Option<BufWriter<Stderr>>> = Mutex::new(None);

/// Whether lines are JSON (else text), as the subscriber was set up.
static JSON: AtomicBool = AtomicBool::new(false);

/// How long a log line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A handle on the shared buffer, as `tracing_subscriber` asks for one per event.
struct Buffered;

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = OUT.lock().unwrap_or_else(PoisonError::into_inner);
        match out.as_mut() {
            Some(w) => w.write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        flush();
        Ok(())
    }
}

/// Whether log lines are JSON lines (else text), for the lines written without `tracing`.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Adds one whole line, already formatted, to the buffer the subscriber writes to: the
/// access log's way in (see `proxy::log`).
pub fn write_line(line: &[u8]) {
    let _ = Buffered.write_all(line);
}

/// Writes out whatever log lines are buffered. Call before the process exits.
pub fn flush() {
    let mut out = OUT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(w) = out.as_mut() {
        let _ = w.flush();
    }
}

/// Installs the global subscriber. A second call (tests start several gateways) is a no-op.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("JUMPGATE_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    {
        let mut out = OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if out.is_none() {
            *out = Some(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
            let _ = std::thread::Builder::new()
                .name("jumpgate-log".into())
                .spawn(|| loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                });
        }
    }
    // Colour only for a person at a terminal: escape codes in a file or the journal are
    // noise to every reader and cost formatting time on every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| Buffered);
    JSON.store(log.format == LogFormat::Json, Ordering::Relaxed);
    let _ = match log.format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
