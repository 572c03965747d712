//! Prometheus metrics: every counter and histogram the gateway exports, in one registry.
//!
//! Label values come from the configuration (site host, route path) or from small fixed sets
//! (status code, error kind), never from request data, so a client cannot grow the series count.
//! Site and route labels share the configuration's `Arc<str>`s, so counting a request copies
//! no string.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label value shared with the configuration (a site host, a route label).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub Arc<str>);

impl EncodeLabelValue for LabelText {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// Site host, or `-` when no site matched.
    pub site: LabelText,
    /// Route path, `*` for the site default, `-` when no site matched.
    pub route: LabelText,
    /// Response status code.
    pub status: u16,
}

/// Labels of a per-site histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// Site host.
    pub site: LabelText,
}

/// Kinds of upstream failure.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum UpstreamFailure {
    /// Could not connect, or the connection broke before a response.
    Connect,
    /// No response headers within the timeout.
    Timeout,
}

/// Labels of an upstream failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabel {
    /// Site host.
    pub site: LabelText,
    /// What failed.
    pub kind: UpstreamFailure,
}

/// Labels holding an HTTP status (0 for a transport failure).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status code.
    pub status: u16,
}

/// Success or failure of an operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// It worked.
    Ok,
    /// It did not.
    Failed,
}

/// A label set holding just an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: Outcome,
}

impl OutcomeLabel {
    /// `outcome="ok"`.
    pub fn ok() -> Self {
        OutcomeLabel {
            outcome: Outcome::Ok,
        }
    }
    /// `outcome="failed"`.
    pub fn failed() -> Self {
        OutcomeLabel {
            outcome: Outcome::Failed,
        }
    }
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by site, route and status.
    pub requests: Family<RequestLabel, Counter>,
    /// Request duration to response headers, by site.
    pub latency: Family<SiteLabel, Histogram, fn() -> Histogram>,
    /// Upstream failures by site and kind.
    pub upstream_errors: Family<UpstreamErrorLabel, Counter>,
    /// TLS handshakes by outcome.
    pub tls_handshakes: Family<OutcomeLabel, Counter>,
    /// Certificate reloads by outcome.
    pub cert_reloads: Family<OutcomeLabel, Counter>,
    /// Client connections currently open.
    pub open_connections: Gauge<i64, AtomicI64>,
    /// Upgraded (WebSocket) tunnels currently open.
    pub open_tunnels: Gauge<i64, AtomicI64>,
    /// Time of the last successful directory sync (seconds since the epoch).
    pub directory_last_success: Gauge<i64, AtomicI64>,
    /// Duration of the last successful directory sync.
    pub directory_sync_duration_ms: Gauge<i64, AtomicI64>,
    /// Directory records fetched.
    pub directory_records: Counter,
    /// Users in the snapshot in service.
    pub directory_users: Gauge<i64, AtomicI64>,
    /// Directory API errors by status.
    pub directory_api_errors: Family<StatusLabel, Counter>,
    /// Directory API retries.
    pub directory_retries: Counter,
    /// Failed directory syncs.
    pub directory_sync_failures: Counter,
    /// Access decisions refused, by reason.
    pub denials: Family<ReasonLabel, Counter>,
    /// Configuration reloads by outcome.
    pub config_reloads: Family<OutcomeLabel, Counter>,
    /// Reloads that changed settings needing a restart.
    pub config_restart_needed: Counter,
}

/// Labels holding a decision reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jumpgate");
        let requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by site, route and status",
            requests.clone(),
        );
        let latency = Family::<SiteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request received to response headers sent, by site",
            latency.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests that failed to reach an upstream, by site and kind",
            upstream_errors.clone(),
        );
        let tls_handshakes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the public listener, by outcome",
            tls_handshakes.clone(),
        );
        let cert_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "certificate_reloads",
            "TLS certificate reloads, by outcome",
            cert_reloads.clone(),
        );
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let open_tunnels = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_tunnels",
            "Upgraded (WebSocket) connections currently tunneled",
            open_tunnels.clone(),
        );
        let directory_last_success = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "directory_last_success_timestamp_seconds",
            "Time of the last successful directory sync",
            directory_last_success.clone(),
        );
        let directory_sync_duration_ms = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "directory_sync_duration_milliseconds",
            "Duration of the last successful directory sync",
            directory_sync_duration_ms.clone(),
        );
        let directory_records = Counter::default();
        registry.register(
            "directory_records_fetched",
            "Directory records fetched",
            directory_records.clone(),
        );
        let directory_users = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "directory_users",
            "Users in the directory snapshot in service",
            directory_users.clone(),
        );
        let directory_api_errors = Family::<StatusLabel, Counter>::default();
        registry.register(
            "directory_api_errors",
            "Directory API errors by HTTP status (0: no response)",
            directory_api_errors.clone(),
        );
        let directory_retries = Counter::default();
        registry.register(
            "directory_api_retries",
            "Directory API requests retried",
            directory_retries.clone(),
        );
        let directory_sync_failures = Counter::default();
        registry.register(
            "directory_sync_failures",
            "Directory syncs that failed",
            directory_sync_failures.clone(),
        );
        let denials = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "access_denied",
            "Protected requests refused, by reason",
            denials.clone(),
        );
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome",
            config_reloads.clone(),
        );
        let config_restart_needed = Counter::default();
        registry.register(
            "config_restart_needed",
            "Reloads that changed settings which only take effect after a restart",
            config_restart_needed.clone(),
        );
        Metrics {
            config_reloads,
            config_restart_needed,
            directory_last_success,
            directory_sync_duration_ms,
            directory_records,
            directory_users,
            directory_api_errors,
            directory_retries,
            directory_sync_failures,
            denials,
            registry,
            requests,
            latency,
            upstream_errors,
            tls_handshakes,
            cert_reloads,
            open_connections,
            open_tunnels,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
