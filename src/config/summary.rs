//! The one-screen summary `jumpgate check` prints for a valid config.
//!
//! It shows the config as the gateway understood it (resolved paths, defaults filled in,
//! inherited access made explicit), so an operator can spot a wrong assumption before deploying.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Config, Limits, LogFormat, RedisTarget, RouteConfig, SiteConfig, StoreKind};

/// Renders `config` for a human: listeners, TLS, proxies and limits, then each site with its
/// routes.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let s = &config.server;
    // `write!` into a String cannot fail; ignoring the Result keeps the code free of unwraps.
    let _ = writeln!(out, "config  {}", config.source.display());
    let _ = writeln!(out);
    let none = || "-".to_owned();
    let rows: Vec<(&str, String)> = vec![
        ("listen (https)", s.listen.to_string()),
        (
            "http redirect",
            s.http_redirect_listen.map_or_else(none, |a| a.to_string()),
        ),
        ("admin", s.admin_listen.map_or_else(none, |a| a.to_string())),
        ("tls cert", s.tls_cert.display().to_string()),
        ("tls key", s.tls_key.display().to_string()),
        (
            "trusted proxies",
            if s.trusted_proxies.is_empty() {
                "none".to_owned()
            } else {
                s.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("shutdown grace", dur(s.shutdown_grace)),
        (
            "sign-in",
            config.oidc.as_ref().map_or_else(
                || "not configured: protected routes answer 401".to_owned(),
                |o| {
                    format!(
                        "{} (client {}, callback {})",
                        o.issuer, o.client_id, o.callback_path
                    )
                },
            ),
        ),
        (
            "sessions",
            format!(
                "{}, lifetime {}, idle {}",
                match config.session.store {
                    StoreKind::Memory => "memory",
                    StoreKind::Redis => "redis",
                },
                dur(config.session.lifetime),
                dur(config.session.idle_timeout)
            ),
        ),
        (
            "redis",
            config
                .session
                .redis
                .as_ref()
                .map_or_else(none, |r| redis(&r.target)),
        ),
        ("limits", limits(&s.limits)),
        (
            "log",
            format!(
                "{}, level {}, access log {}",
                match config.log.format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                },
                config.log.level,
                if config.log.access { "on" } else { "off" }
            ),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "sites ({})", config.sites.len());
    for site in &config.sites {
        write_site(&mut out, site);
    }
    out
}

fn write_site(out: &mut String, site: &SiteConfig) {
    let origin = &site.upstream.origin;
    // The stored origin carries path "/"; without it the line reads like what was configured.
    let origin = match (origin.scheme_str(), origin.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => origin.to_string(),
    };
    let mut head = format!("  {} -> {origin}  [{}]", site.host, site.access);
    if let Some(ca) = &site.upstream.ca_file {
        let _ = write!(head, "  ca {}", ca.display());
    }
    let t = timeouts(site.tunnel_idle_timeout, site.upstream_response_timeout);
    if !t.is_empty() {
        let _ = write!(head, "  ({t})");
    }
    let _ = writeln!(out, "{head}");
    let rows: Vec<(&str, String, String)> =
        site.routes.iter().map(|r| route_row(r, site)).collect();
    let path_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let access_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (path, access, t) in rows {
        let line = format!("    {path:<path_width$}  {access:<access_width$}  {t}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn route_row<'r>(route: &'r RouteConfig, site: &SiteConfig) -> (&'r str, String, String) {
    // An inherited rule is marked so the reader sees the route does not set it itself.
    let access = match route.access {
        Some(a) => a.to_string(),
        None => format!("{} (site)", site.access),
    };
    let t = timeouts(route.tunnel_idle_timeout, route.upstream_response_timeout);
    let t = if t.is_empty() { t } else { format!("({t})") };
    (&route.path, access, t)
}

fn timeouts(tunnel_idle: Option<Duration>, response: Option<Duration>) -> String {
    let mut parts = Vec::new();
    if let Some(d) = tunnel_idle {
        parts.push(format!("tunnel idle {}", dur(d)));
    }
    if let Some(d) = response {
        parts.push(format!("response {}", dur(d)));
    }
    parts.join(", ")
}

/// The limits that differ from the defaults, or "defaults": the full list rarely matters and
/// would push the sites off the screen.
fn limits(l: &Limits) -> String {
    let d = Limits::default();
    let mut parts = Vec::new();
    if l.max_header_bytes != d.max_header_bytes {
        parts.push(format!("max_header_bytes {}", l.max_header_bytes));
    }
    if l.max_headers != d.max_headers {
        parts.push(format!("max_headers {}", l.max_headers));
    }
    let durations = [
        (
            "tls_handshake_timeout",
            l.tls_handshake_timeout,
            d.tls_handshake_timeout,
        ),
        (
            "header_read_timeout",
            l.header_read_timeout,
            d.header_read_timeout,
        ),
        (
            "upstream_connect_timeout",
            l.upstream_connect_timeout,
            d.upstream_connect_timeout,
        ),
        (
            "upstream_response_timeout",
            l.upstream_response_timeout,
            d.upstream_response_timeout,
        ),
        (
            "upstream_idle_timeout",
            l.upstream_idle_timeout,
            d.upstream_idle_timeout,
        ),
        (
            "tunnel_idle_timeout",
            l.tunnel_idle_timeout,
            d.tunnel_idle_timeout,
        ),
        ("idle_timeout", l.idle_timeout, d.idle_timeout),
    ];
    for (name, v, default) in durations {
        if v != default {
            parts.push(format!("{name} {}", dur(v)));
        }
    }
    if parts.is_empty() {
        "defaults".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Where Redis is, by `host:port` only: URLs may carry passwords.
fn redis(target: &RedisTarget) -> String {
    let addr = |url: &str| {
        redis::IntoConnectionInfo::into_connection_info(url)
            .map_or_else(|_| "?".to_owned(), |i| i.addr.to_string())
    };
    match target {
        RedisTarget::Url(url) => addr(url),
        RedisTarget::Sentinel(s) => format!(
            "master \"{}\" through sentinels {}",
            s.master,
            s.sentinels
                .iter()
                .map(|u| addr(u))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TEXT: &str = r#"
[server]
listen = "0.0.0.0:8443"
tls_cert = "certs/gw.pem"
tls_key = "/etc/gw.key"
admin_listen = "127.0.0.1:9090"
trusted_proxies = ["10.0.0.0/8"]
[server.limits]
max_headers = 50
[[site]]
host = "Defguard.Example.NET."
upstream = "http://127.0.0.1:8000"
  [[site.route]]
  path = "/api/v1/health"
  access = "public"
  [[site.route]]
  path = "/api/v1/long"
  upstream_response_timeout = "5m"
[[site]]
host = "enroll.example.net"
upstream = "https://enroll.internal:8443"
access = "public"
tunnel_idle_timeout = "150s"
"#;

    #[test]
    fn summarises_listeners_sites_and_routes() {
        let config = match crate::config::parse(TEXT, Path::new("/etc/jumpgate/gateway.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let text = summary(&config);
        let lines: Vec<&str> = text.lines().collect();
        let has = |needle: &str| assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        has("config  /etc/jumpgate/gateway.toml");
        has("listen (https)   0.0.0.0:8443");
        has("http redirect    -");
        has("admin            127.0.0.1:9090");
        has("tls cert         /etc/jumpgate/certs/gw.pem");
        has("tls key          /etc/gw.key");
        has("trusted proxies  10.0.0.0/8");
        has("shutdown grace   30s");
        has("limits           max_headers 50");
        has("log              text, level info, access log on");
        has("sites (2)");
        has("  defguard.example.net -> http://127.0.0.1:8000  [protected]");
        has("    /api/v1/health  public\n");
        has("    /api/v1/long    protected (site)  (response 5m)\n");
        has("  enroll.example.net -> https://enroll.internal:8443  [public]  (tunnel idle 2m 30s)");
        // One screen.
        assert!(lines.len() <= 24, "{} lines:\n{text}", lines.len());
        assert!(
            lines.iter().all(|l| l.len() <= 100 && l.trim_end() == *l),
            "{text}"
        );
    }

    #[test]
    fn redis_is_named_without_its_passwords() {
        let with = |session: &str| {
            let text = format!("{TEXT}[session]\nstore = \"redis\"\n{session}");
            match crate::config::parse(&text, Path::new("/etc/jumpgate/gateway.toml")) {
                Ok(c) => summary(&c),
                Err(e) => panic!("{e}"),
            }
        };
        let text = with("redis_url = \"rediss://:hunter2@redis.internal:6380/1\"\n");
        assert!(
            text.contains("sessions         redis, lifetime 12h, idle 1h"),
            "{text}"
        );
        assert!(
            text.contains("redis            redis.internal:6380\n"),
            "{text}"
        );
        let text = with("redis_sentinels = [\"redis://:hunter2@10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\nredis_sentinel_master = \"mymaster\"\n");
        assert!(
            text.contains("redis            master \"mymaster\" through sentinels 10.0.0.1:26379, 10.0.0.2:26379\n"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let text = summary(
            &crate::config::parse(TEXT, Path::new("/g.toml")).unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(text.contains("redis            -\n"), "{text}");
    }

    #[test]
    fn default_limits_are_summarised_in_one_word() {
        assert_eq!(limits(&Limits::default()), "defaults");
    }
}
