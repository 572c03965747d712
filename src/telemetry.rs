//! Logging set-up: human-readable lines or JSON lines, filtered by level.
//!
//! The filter comes from `JUMPGATE_LOG` when set (a `tracing` directive), else from the
//! configuration. Header values are never recorded as fields anywhere in jumpgate, so
//! credentials cannot reach the log whatever the level.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. A second call (tests start several gateways) is a no-op.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("JUMPGATE_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
