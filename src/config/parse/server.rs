//! Reading `[server]`, `[server.limits]` and `[log]`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::auth;
use super::raw::{kind, Key};
use super::reader::{get, need, Entry, Reader};
use super::schema::{LimitsFile, LogFile, ServerFile};
use crate::config::{Limits, LogConfig, LogFormat, ServerConfig};

pub(super) fn read_server(r: Reader<'_, ServerFile>) -> Option<ServerConfig> {
    let listen =
        need!(r, listen, "\"IP:PORT\" such as \"0.0.0.0:8443\"").map(|e| (e.addr(), e.line));
    let tls_cert = need!(r, tls_cert, "the path of a PEM certificate chain").and_then(|e| e.path());
    let tls_key = need!(r, tls_key, "the path of a PEM private key").and_then(|e| e.path());
    let redirect = get!(r, http_redirect_listen).map(|e| (e.addr(), e.line));
    let admin = get!(r, admin_listen).map(|e| (e.addr(), e.line));
    let verify = get!(r, verify_listen).map(|e| (e.addr(), e.line));
    let trusted_proxies = match get!(r, trusted_proxies) {
        Some(e) => read_proxies(&e),
        None => Some(Vec::new()),
    };
    // Who may ask forward-auth questions is a separate, narrower grant than whose
    // X-Forwarded-For is believed: a load balancer in front of the gateway is trusted for
    // the client's address, but the clients behind it must never ask questions themselves.
    let verify_clients = match get!(r, verify_clients) {
        Some(e) => read_proxies(&e),
        None => Some(vec![
            IpNet::from(IpAddr::from([127, 0, 0, 1])),
            IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ]),
    };
    let verify_uri_header = match get!(r, verify_uri_header) {
        None => Some(crate::config::UriHeader::XForwardedUri),
        Some(e) => e
            .str("\"x-forwarded-uri\" or \"x-original-uri\"")
            .and_then(|s| {
                if s.eq_ignore_ascii_case("x-forwarded-uri") {
                    Some(crate::config::UriHeader::XForwardedUri)
                } else if s.eq_ignore_ascii_case("x-original-uri") {
                    Some(crate::config::UriHeader::XOriginalUri)
                } else {
                    e.report(format!(
                        "\"{s}\" is not a header forward-auth reads the URI from; expected \"x-forwarded-uri\" (Traefik, Caddy, the nginx example) or \"x-original-uri\""
                    ));
                    None
                }
            }),
    };
    let shutdown_grace = match get!(r, shutdown_grace) {
        Some(e) => e.duration(true),
        None => Some(Duration::from_secs(30)),
    };
    let limits = match get!(r, limits) {
        Some(e) => e.table("a [server.limits] table").and_then(read_limits),
        None => Some(Limits::default()),
    };
    let public_port = match get!(r, public_port) {
        Some(e) => e.int_in(1..=65535).map(|p| Some(p as u16)),
        None => Some(None),
    };
    let state_dir = auth::state_dir(get!(r, state_dir), &r.cx.base);

    // Two listeners on one port would fail at bind time; saying so here names both keys.
    let mut clashes = false;
    let mut bound: Vec<(String, SocketAddr, Option<usize>)> = Vec::new();
    for (key, found) in [
        ("listen", listen),
        ("http_redirect_listen", redirect),
        ("admin_listen", admin),
        ("verify_listen", verify),
    ] {
        let Some((Some(addr), line)) = found else {
            continue;
        };
        let key = r.key_path(key);
        for (other, b, other_line) in &bound {
            if clash(addr, *b) {
                let at = other_line
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                r.cx.report(
                    line,
                    key.clone(),
                    format!("{addr} overlaps {other} {b}{at}; each listener needs its own port"),
                );
                clashes = true;
            }
        }
        bound.push((key, addr, line));
    }
    r.finish();

    let redirect = match redirect {
        Some((a, _)) => Some(a?),
        None => None,
    };
    let admin = match admin {
        Some((a, _)) => Some(a?),
        None => None,
    };
    let verify = match verify {
        Some((a, _)) => Some(a?),
        None => None,
    };
    if clashes {
        return None;
    }
    Some(ServerConfig {
        listen: listen?.0?,
        tls_cert: tls_cert?,
        tls_key: tls_key?,
        http_redirect_listen: redirect,
        admin_listen: admin,
        verify_listen: verify,
        trusted_proxies: trusted_proxies?,
        verify_clients: verify_clients?,
        verify_uri_header: verify_uri_header?,
        shutdown_grace: shutdown_grace?,
        public_port: public_port?,
        state_dir: state_dir?,
        limits: limits?,
    })
}

/// Whether two listeners would fight over one port: the same port (0 means "any free port",
/// never a clash) on the same address, or where either is a wildcard address.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn read_proxies(e: &Entry<'_, Key<kind::List>>) -> Option<Vec<IpNet>> {
    const EXPECTED: &str =
        "a CIDR block such as \"10.0.0.0/8\" or a single IP address such as \"192.0.2.10\"";
    let items = e.array(&format!("an array of strings, each {EXPECTED}"))?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(s) = item.str(&format!("a string, {EXPECTED}")) else {
            ok = false;
            continue;
        };
        let net = match s.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
        };
        match net {
            // Host bits set usually mean a typo in the prefix length; trusting a wider or
            // narrower range than intended is a security mistake, so ask rather than guess.
            Some(net) if net.trunc() != net => {
                item.report(format!(
                    "\"{s}\" has host bits set; did you mean \"{}\"?",
                    net.trunc()
                ));
                ok = false;
            }
            Some(net) => out.push(net),
            None => {
                item.report(format!(
                    "\"{s}\" is not a CIDR block or IP address; expected {EXPECTED}"
                ));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn read_limits(r: Reader<'_, LimitsFile>) -> Option<Limits> {
    let d = Limits::default();
    let mut ok = true;
    let mut int = |e: Option<Entry<'_, Key<kind::Int>>>,
                   range: std::ops::RangeInclusive<i64>,
                   default: usize| match e {
        Some(e) => e.int_in(range).unwrap_or_else(|| {
            ok = false;
            default
        }),
        None => default,
    };
    let max_header_bytes = int(
        get!(r, max_header_bytes),
        1024..=1_048_576,
        d.max_header_bytes,
    );
    let max_headers = int(get!(r, max_headers), 8..=1000, d.max_headers);
    let sign_in_rate = int(get!(r, sign_in_rate), 1..=100_000, d.sign_in_rate as usize) as u32;
    let mut dur = |e: Option<Entry<'_, Key<kind::Duration>>>, default: Duration| match e {
        Some(e) => e.duration(false).unwrap_or_else(|| {
            ok = false;
            default
        }),
        None => default,
    };
    let limits = Limits {
        max_header_bytes,
        max_headers,
        tls_handshake_timeout: dur(get!(r, tls_handshake_timeout), d.tls_handshake_timeout),
        header_read_timeout: dur(get!(r, header_read_timeout), d.header_read_timeout),
        upstream_connect_timeout: dur(
            get!(r, upstream_connect_timeout),
            d.upstream_connect_timeout,
        ),
        upstream_response_timeout: dur(
            get!(r, upstream_response_timeout),
            d.upstream_response_timeout,
        ),
        upstream_idle_timeout: dur(get!(r, upstream_idle_timeout), d.upstream_idle_timeout),
        tunnel_idle_timeout: dur(get!(r, tunnel_idle_timeout), d.tunnel_idle_timeout),
        idle_timeout: dur(get!(r, idle_timeout), d.idle_timeout),
        sign_in_rate,
    };
    r.finish();
    ok.then_some(limits)
}

pub(super) fn read_log(r: Reader<'_, LogFile>) -> Option<LogConfig> {
    let d = LogConfig::default();
    let format = match get!(r, format) {
        Some(e) => e.str("\"text\" or \"json\"").and_then(|s| match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => {
                e.report(format!(
                    "\"{s}\" is not a log format; expected \"text\" or \"json\""
                ));
                None
            }
        }),
        None => Some(d.format),
    };
    let level = match get!(r, level) {
        Some(e) => e
            .str("a log filter such as \"info\"")
            .and_then(|s| check_level(&e, s)),
        None => Some(d.level),
    };
    let access = match get!(r, access) {
        Some(e) => e.bool(),
        None => Some(d.access),
    };
    r.finish();
    Some(LogConfig {
        format: format?,
        level: level?,
        access: access?,
    })
}

fn check_level(e: &Entry<'_, Key<kind::Str>>, s: &str) -> Option<String> {
    const EXPECTED: &str =
        "one of trace, debug, info, warn, error, off, or filter directives such as \"info,jumpgate=debug\"";
    let word = s.trim();
    // A bare word that is not a level is a valid filter meaning "everything from target <word>",
    // which silences the gateway's own logs; it is nearly always a misspelt level.
    let bare = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let is_level = ["trace", "debug", "info", "warn", "error", "off"]
        .contains(&word.to_ascii_lowercase().as_str());
    if word.is_empty() || (bare && !is_level) {
        e.report(format!("\"{s}\" is not a log level; expected {EXPECTED}"));
        return None;
    }
    match tracing_subscriber::EnvFilter::try_new(s) {
        Ok(_) => Some(s.to_owned()),
        Err(err) => {
            e.report(format!(
                "\"{s}\" is not a valid log filter ({err}); expected {EXPECTED}"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;

    #[test]
    fn listen_not_an_address() {
        let text = MINIMAL.replace("\"0.0.0.0:8443\"", "\"8443\"");
        let (line, key, msg) = one(&text);
        assert_eq!((line, key.as_str()), (Some(2), "server.listen"));
        assert!(
            msg.starts_with(
                "\"8443\" is not a socket address; expected \"IP:PORT\" such as \"0.0.0.0:8443\""
            ),
            "{msg}"
        );
        let (_, _, msg) = one(&MINIMAL.replace("\"0.0.0.0:8443\"", "\"localhost:8443\""));
        assert!(msg.contains("not a host name"), "{msg}");
    }

    #[test]
    fn limits_ranges() {
        let p = problems(&server_with(
            "[server.limits]\nmax_header_bytes = 100\nmax_headers = 5000",
        ));
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(6), "server.limits.max_header_bytes"),
                (Some(7), "server.limits.max_headers")
            ]
        );
        assert!(
            p[0].message
                .contains("expected an integer from 1024 to 1048576"),
            "{}",
            p[0].message
        );
        assert!(
            p[1].message.contains("expected an integer from 8 to 1000"),
            "{}",
            p[1].message
        );
    }

    #[test]
    fn listener_clashes() {
        let (line, key, msg) = one(&server_with("admin_listen = \"0.0.0.0:8443\""));
        assert_eq!((line, key.as_str()), (Some(5), "server.admin_listen"));
        assert!(
            msg.contains("overlaps server.listen 0.0.0.0:8443 (line 2)"),
            "{msg}"
        );

        let (line, key, _) = one(&server_with("http_redirect_listen = \"127.0.0.1:8443\""));
        assert_eq!(
            (line, key.as_str()),
            (Some(5), "server.http_redirect_listen")
        );

        let (_, key, _) = one(&server_with(
            "http_redirect_listen = \"0.0.0.0:8080\"\nadmin_listen = \"0.0.0.0:8080\"",
        ));
        assert_eq!(key, "server.admin_listen");

        ok(&server_with("admin_listen = \"127.0.0.1:8443\"\n")
            .replace("0.0.0.0:8443", "192.0.2.1:8443"));
        let c = ok(&MINIMAL.replace("0.0.0.0:8443", "127.0.0.1:0").replace(
            "tls_key = \"c.key\"\n",
            "tls_key = \"c.key\"\nadmin_listen = \"127.0.0.1:0\"\n",
        ));
        assert_eq!(c.server.admin_listen.map(|a| a.port()), Some(0));
    }

    #[test]
    fn trusted_proxies_each_element_on_its_line() {
        let text = server_with(
            "trusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n  \"10.1.2.3/8\",\n  7,\n]",
        );
        let p = problems(&text);
        let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(7), "server.trusted_proxies[1]"),
                (Some(8), "server.trusted_proxies[2]"),
                (Some(9), "server.trusted_proxies[3]"),
            ]
        );
        assert!(
            p[0].message.contains("is not a CIDR block or IP address"),
            "{}",
            p[0].message
        );
        assert!(
            p[1].message.contains("did you mean \"10.0.0.0/8\"?"),
            "{}",
            p[1].message
        );
        assert!(p[2].message.contains("found integer 7"), "{}", p[2].message);
    }

    #[test]
    fn log_settings() {
        let (line, key, msg) = one(&site_with("[log]\nformat = \"xml\""));
        assert_eq!((line, key.as_str()), (Some(10), "log.format"));
        assert!(msg.contains("expected \"text\" or \"json\""), "{msg}");
        let (_, key, msg) = one(&site_with("[log]\nlevel = \"verbose\""));
        assert_eq!(key, "log.level");
        assert!(msg.contains("is not a log level"), "{msg}");
        let (_, key, _) = one(&site_with("[log]\nlevel = \"jumpgate=loud\""));
        assert_eq!(key, "log.level");
        ok(&site_with("[log]\nlevel = \"warn,jumpgate::proxy=trace\""));
        ok(&site_with("[log]\nlevel = \"DEBUG\""));
    }
}
