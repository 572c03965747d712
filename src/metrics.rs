//! Prometheus metrics: every counter and histogram the gateway exports, in one registry.
//!
//! Label values come from the configuration (site host, route path) or from small fixed sets
//! (status code, error kind), never from request data, so a client cannot grow the series count.
//! Site and route labels share the configuration's `Arc<str>`s, so counting a request copies
//! no string.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
    /// `outcome="Ok"` (labels are the variants' names).
    pub fn ok() -> Self {
        OutcomeLabel {
            outcome: Outcome::Ok,
        }
    }
    /// `outcome="Failed"`.
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
    /// `directory.max_staleness` in seconds (0 without a directory), for alerts on the age.
    pub directory_max_staleness: Gauge<i64, AtomicI64>,
    /// The served certificate's `notAfter`, by its first name.
    pub cert_expiry: Family<CertLabel, Gauge<i64, AtomicI64>>,
    /// 1 when the session store answers, by kind.
    pub session_store_up: Family<StoreLabel, Gauge<i64, AtomicI64>>,
    /// Sign-in callbacks, by outcome.
    pub sign_ins: Family<OutcomeLabel, Counter>,
    /// What happened lately, for the status page.
    pub recent: Recent,
}

/// Labels naming a certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// Its first name.
    pub certificate: String,
}

/// Labels naming the session store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    /// `memory` or `redis`.
    pub store: &'static str,
}

/// Labels of the build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// What the status page counts over the last hour.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lately {
    /// A sign-in callback, labelled `ok` or why it failed.
    SignIn,
    /// A protected request refused, labelled with the reason.
    Denial,
    /// A request that did not reach its upstream, labelled with the site.
    UpstreamError,
}

/// Counts by kind and label over the last hour, in one-minute buckets. Prometheus counters
/// only grow and need a Prometheus to be read as rates; the status page answers "lately"
/// on its own. Only rare events are counted here (sign-ins, refusals, upstream failures),
/// so one lock is cheap.
#[derive(Debug, Default)]
pub struct Recent {
    minutes: std::sync::Mutex<std::collections::VecDeque<Minute>>,
}

/// One minute's counts: the minute (seconds since the epoch / 60), then by kind and label.
type Minute = (i64, Vec<(Lately, Arc<str>, u64)>);

impl Recent {
    /// Counts one event of `kind` labelled `label` at `now` (seconds).
    pub fn count(&self, kind: Lately, label: &Arc<str>, now: i64) {
        let minute = now.div_euclid(60);
        let mut minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while minutes.front().is_some_and(|(m, _)| *m <= minute - 60) {
            minutes.pop_front();
        }
        if minutes.back().is_none_or(|(m, _)| *m != minute) {
            minutes.push_back((minute, Vec::new()));
        }
        if let Some((_, counts)) = minutes.back_mut() {
            match counts.iter_mut().find(|(k, l, _)| *k == kind && l == label) {
                Some((_, _, n)) => *n += 1,
                None => counts.push((kind, label.clone(), 1)),
            }
        }
    }

    /// Totals by kind and label over the hour up to `now`, largest first within a kind.
    pub fn last_hour(&self, now: i64) -> Vec<(Lately, Arc<str>, u64)> {
        let since = now.div_euclid(60) - 60;
        let minutes = self
            .minutes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut totals: Vec<(Lately, Arc<str>, u64)> = Vec::new();
        for (_, counts) in minutes.iter().filter(|(m, _)| *m > since) {
            for (kind, label, n) in counts {
                match totals.iter_mut().find(|(k, l, _)| k == kind && l == label) {
                    Some((_, _, t)) => *t += n,
                    None => totals.push((*kind, label.clone(), *n)),
                }
            }
        }
        totals.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
        totals
    }
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
        let directory_max_staleness = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "directory_max_staleness_seconds",
            "The configured directory.max_staleness (0: no directory)",
            directory_max_staleness.clone(),
        );
        let cert_expiry = Family::<CertLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the served TLS certificate expires, by its first name",
            cert_expiry.clone(),
        );
        let session_store_up = Family::<StoreLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "session_store_up",
            "1 when the session store answers, by kind (memory or redis)",
            session_store_up.clone(),
        );
        let sign_ins = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sign_ins",
            "Sign-in callbacks, by outcome",
            sign_ins.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge<i64, AtomicI64>>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version (always 1)", build_info);
        Metrics {
            directory_max_staleness,
            cert_expiry,
            session_store_up,
            sign_ins,
            recent: Recent::default(),
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

/// Statuses whose request counter a route keeps resolved, sorted; a request answered with
/// any other status is counted through the label lookup.
const COMMON_STATUSES: [u16; 22] = [
    200, 201, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 421, 429, 431, 500,
    502, 503, 504,
];

/// One route's request counters and its site's latency histogram, resolved on first use and
/// kept, so that counting a request neither hashes its labels nor takes the family's lock:
/// the two lookups cost every request about 1,000 instructions (BENCHMARKS.md). Each holds
/// the series the family holds (a shared handle), so `/metrics` reads the same numbers, and a
/// series still appears only once something was counted in it.
#[derive(Debug)]
pub struct RouteCounters {
    site: LabelText,
    route: LabelText,
    requests: [OnceLock<Counter>; COMMON_STATUSES.len()],
    latency: OnceLock<Histogram>,
}

impl RouteCounters {
    /// Counters for requests to `route` on `site`, as their labels name them.
    pub fn new(site: Arc<str>, route: Arc<str>) -> RouteCounters {
        RouteCounters {
            site: LabelText(site),
            route: LabelText(route),
            requests: std::array::from_fn(|_| OnceLock::new()),
            latency: OnceLock::new(),
        }
    }

    /// Counts a request answered with `status`, its answer ready after `elapsed`.
    pub fn record(&self, metrics: &Metrics, status: u16, elapsed: Duration) {
        let label = || RequestLabel {
            site: self.site.clone(),
            route: self.route.clone(),
            status,
        };
        match COMMON_STATUSES.binary_search(&status) {
            Ok(i) => self.requests[i]
                .get_or_init(|| metrics.requests.get_or_create(&label()).clone())
                .inc(),
            Err(_) => metrics.requests.get_or_create(&label()).inc(),
        };
        let latency = self.latency.get_or_init(|| {
            let label = SiteLabel {
                site: self.site.clone(),
            };
            metrics.latency.get_or_create(&label).clone()
        });
        latency.observe(elapsed.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_count_into_the_families_series() {
        let metrics = Metrics::new();
        let counters = RouteCounters::new(Arc::from("app.test"), Arc::from("/admin"));
        for status in [200, 200, 404, 418] {
            counters.record(&metrics, status, Duration::from_millis(3));
        }
        let text = metrics.encode();
        for line in [
            "jumpgate_requests_total{site=\"app.test\",route=\"/admin\",status=\"200\"} 2",
            "jumpgate_requests_total{site=\"app.test\",route=\"/admin\",status=\"404\"} 1",
            // Not among the statuses kept resolved: counted through the label lookup.
            "jumpgate_requests_total{site=\"app.test\",route=\"/admin\",status=\"418\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("status=\"201\""),
            "a status never answered has a series"
        );
        // A second set for the same route (a reloaded configuration) adds to the same series.
        let reloaded = RouteCounters::new(Arc::from("app.test"), Arc::from("/admin"));
        reloaded.record(&metrics, 200, Duration::from_millis(1));
        let text = metrics.encode();
        assert!(text.contains(
            "jumpgate_requests_total{site=\"app.test\",route=\"/admin\",status=\"200\"} 3"
        ));
        assert!(text.contains("jumpgate_request_duration_seconds_count{site=\"app.test\"} 5"));
    }

    #[test]
    fn recent_counts_cover_the_last_hour_only() {
        let r = Recent::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        r.count(Lately::Denial, &a, 1_000);
        r.count(Lately::Denial, &b, 1_030);
        r.count(Lately::Denial, &b, 1_100);
        r.count(Lately::SignIn, &a, 1_100);
        assert_eq!(
            r.last_hour(1_100),
            vec![
                (Lately::SignIn, a.clone(), 1),
                (Lately::Denial, b.clone(), 2),
                (Lately::Denial, a.clone(), 1),
            ]
        );
        // An hour after the second event, the first two minutes are gone; counting prunes.
        assert_eq!(
            r.last_hour(1_030 + 3_600),
            vec![
                (Lately::SignIn, a.clone(), 1),
                (Lately::Denial, b.clone(), 1)
            ]
        );
        r.count(Lately::UpstreamError, &a, 10_000);
        assert_eq!(r.last_hour(10_000), vec![(Lately::UpstreamError, a, 1)]);
        assert_eq!(r.minutes.lock().unwrap().len(), 1);
    }
}
