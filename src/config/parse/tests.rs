//! The parser against whole config files: every message, line and key it reports.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::reader::{closest, edit_distance};
use super::*;
use crate::config::{Access, Limits, LogFormat, Problem, RouteConfig};

pub(super) const FILE: &str = "/etc/jumpgate/gateway.toml";

pub(super) fn ok(text: &str) -> Config {
    match parse(text, Path::new(FILE)) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

pub(super) fn problems(text: &str) -> Vec<Problem> {
    match parse(text, Path::new(FILE)) {
        Ok(_) => panic!("expected problems, config was accepted:\n{text}"),
        Err(ConfigError::Invalid(p)) => p,
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// The single problem `text` has, as (line, key, message).
pub(super) fn one(text: &str) -> (Option<usize>, String, String) {
    let p = problems(text);
    assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
    let p = &p[0];
    assert_eq!(p.file, Path::new(FILE));
    (p.line, p.key.clone(), p.message.clone())
}

pub(super) const MINIMAL: &str = r#"[server]
listen = "0.0.0.0:8443"
tls_cert = "c.pem"
tls_key = "c.key"

[[site]]
host = "app.example.net"
upstream = "http://127.0.0.1:8000"
"#;

/// MINIMAL with `extra` appended to the [server] table (line 5 onwards).
pub(super) fn server_with(extra: &str) -> String {
    MINIMAL.replacen(
        "tls_key = \"c.key\"\n",
        &format!("tls_key = \"c.key\"\n{extra}\n"),
        1,
    )
}

/// MINIMAL with `extra` appended to the site (line 9 onwards).
pub(super) fn site_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

#[test]
fn full_config() {
    let c = ok(r#"
[server]
listen = "0.0.0.0:8443"
tls_cert = "certs/gateway.pem"
tls_key = "/abs/gateway.key"
http_redirect_listen = "0.0.0.0:8080"
admin_listen = "127.0.0.1:9090"
trusted_proxies = ["10.0.0.0/8", "192.0.2.10", "2001:db8::/32", "::1"]
shutdown_grace = "10s"

[server.limits]
max_header_bytes = 65536
max_headers = 50
tls_handshake_timeout = "5s"
header_read_timeout = "20s"
upstream_connect_timeout = "3s"
upstream_response_timeout = "90s"
upstream_idle_timeout = "30s"
tunnel_idle_timeout = "10m"
idle_timeout = "45s"

[log]
format = "json"
level = "info,jumpgate=debug"
access = false

[[site]]
host = "Defguard.Example.NET."
upstream = "http://127.0.0.1:8000"
access = "protected"
tunnel_idle_timeout = "1h"
upstream_response_timeout = "5m"

  [[site.route]]
  path = "/api/v1/health"
  access = "public"

  [[site.route]]
  path = "/admin/"
  access = "deny"
  tunnel_idle_timeout = "150s"
  upstream_response_timeout = "12h"

[[site]]
host = "secure.example.net"
upstream = "HTTPS://Secure.Internal:8443/"
upstream_ca_file = "ca/internal.pem"
access = "public"
route = [{ path = "/" , access = "protected" }]
"#);
    assert_eq!(c.source, Path::new(FILE));
    let s = &c.server;
    assert_eq!(s.listen, "0.0.0.0:8443".parse::<SocketAddr>().unwrap());
    assert_eq!(s.tls_cert, Path::new("/etc/jumpgate/certs/gateway.pem"));
    assert_eq!(s.tls_key, Path::new("/abs/gateway.key"));
    assert_eq!(
        s.http_redirect_listen,
        Some("0.0.0.0:8080".parse().unwrap())
    );
    assert_eq!(s.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    let nets: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.0.2.10/32", "2001:db8::/32", "::1/128"]
    );
    assert_eq!(s.shutdown_grace, Duration::from_secs(10));
    assert_eq!(
        s.limits,
        Limits {
            max_header_bytes: 65536,
            max_headers: 50,
            tls_handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(20),
            upstream_connect_timeout: Duration::from_secs(3),
            upstream_response_timeout: Duration::from_secs(90),
            upstream_idle_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(45),
            sign_in_rate: 60,
        }
    );
    assert_eq!(
        c.log,
        LogConfig {
            format: LogFormat::Json,
            level: "info,jumpgate=debug".to_owned(),
            access: false
        }
    );
    assert_eq!(c.sites.len(), 2);
    let d = &c.sites[0];
    assert_eq!(d.host, "defguard.example.net");
    assert_eq!(d.upstream.origin.scheme_str(), Some("http"));
    assert_eq!(
        d.upstream.origin.authority().map(|a| a.as_str()),
        Some("127.0.0.1:8000")
    );
    assert_eq!(d.upstream.origin.path(), "/");
    assert!(!d.upstream.is_tls());
    assert_eq!(d.upstream.ca_file, None);
    assert_eq!(d.access, Access::Protected);
    assert_eq!(d.tunnel_idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(d.upstream_response_timeout, Some(Duration::from_secs(300)));
    assert_eq!(
        d.routes,
        [
            RouteConfig {
                path: "/api/v1/health".to_owned(),
                access: Some(Access::Public),
                tunnel_idle_timeout: None,
                upstream_response_timeout: None,
                allow: None,
                step_up: None,
                step_up_exempt_methods: vec![],
                step_up_groups: vec![],
            },
            RouteConfig {
                path: "/admin".to_owned(),
                access: Some(Access::Deny),
                tunnel_idle_timeout: Some(Duration::from_secs(150)),
                upstream_response_timeout: Some(Duration::from_secs(12 * 3600)),
                allow: None,
                step_up: None,
                step_up_exempt_methods: vec![],
                step_up_groups: vec![],
            },
        ]
    );
    let e = &c.sites[1];
    assert_eq!(
        e.upstream.origin.to_string(),
        "https://secure.internal:8443/"
    );
    assert!(e.upstream.is_tls());
    assert_eq!(
        e.upstream.ca_file.as_deref(),
        Some(Path::new("/etc/jumpgate/ca/internal.pem"))
    );
    assert_eq!(e.access, Access::Public);
    assert_eq!(e.routes.len(), 1);
    assert_eq!(e.routes[0].path, "/");
    assert_eq!(e.routes[0].access, Some(Access::Protected));
}

#[test]
fn defaults() {
    let c = ok(MINIMAL);
    assert_eq!(c.server.http_redirect_listen, None);
    assert_eq!(c.server.admin_listen, None);
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.server.limits, Limits::default());
    assert_eq!(c.log, LogConfig::default());
    let site = &c.sites[0];
    assert_eq!(site.access, Access::Protected);
    assert_eq!(site.tunnel_idle_timeout, None);
    assert_eq!(site.upstream_response_timeout, None);
    assert!(site.routes.is_empty());
    assert_eq!(c.server.tls_cert, Path::new("/etc/jumpgate/c.pem"));
}

#[test]
fn relative_paths_follow_the_config_file() {
    let c = match parse(MINIMAL, Path::new("gateway.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.server.tls_cert, Path::new("c.pem"));
    let c = match parse(MINIMAL, Path::new("conf/gateway.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.server.tls_key, Path::new("conf/c.key"));
}

#[test]
fn reference_config_parses() {
    let text = include_str!("../../../config/gateway.toml");
    let c = match parse(text, Path::new("config/gateway.toml")) {
        Ok(c) => c,
        Err(e) => panic!("config/gateway.toml:\n{e}"),
    };
    assert_eq!(c.server.tls_cert, Path::new("config/../certs/gateway.pem"));
    assert_eq!(c.server.tls_key, Path::new("config/../certs/gateway.key"));
    assert_eq!(c.server.limits, Limits::default());
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.log, LogConfig::default());
    let hosts: Vec<&str> = c.sites.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, ["defguard.example.net", "enroll.example.net"]);
    assert_eq!(c.sites[0].access, Access::Protected);
    assert_eq!(c.sites[0].routes[0].path, "/api/v1/health");
    assert_eq!(c.sites[0].routes[0].access, Some(Access::Public));
    assert_eq!(c.sites[1].access, Access::Public);
    assert_eq!(c.sites[1].routes[0].path, "/api/v1/client-mfa/remote");
    assert_eq!(
        c.sites[1].routes[0].tunnel_idle_timeout,
        Some(Duration::from_secs(150))
    );
}

#[test]
fn reference_config_documents_every_key() {
    // Every key the schema declares is written out (set or commented) in the reference
    // config, so the reference stays complete as keys are added; the list of keys comes from
    // the declaration itself.
    use super::raw::field_names;
    use super::schema::*;
    let text = include_str!("../../../config/gateway.toml");
    // A key is written out when a line (commented or not) starts with it, alone or in a
    // comma-separated list ("allow_groups, allow_users  ..."), or when a table header ends
    // with it.
    let written = |key: &str| {
        text.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            if let Some(header) = line.strip_prefix('[') {
                let header = header.trim_start_matches('[');
                let name = header.split(']').next().unwrap_or_default();
                return name == key || name.ends_with(&format!(".{key}"));
            }
            let mut names = Vec::new();
            for word in line.split_whitespace() {
                names.push(word.trim_end_matches(','));
                if !word.ends_with(',') {
                    break;
                }
            }
            names.contains(&key)
        })
    };
    let tables = [
        field_names::<ConfigFile>(),
        field_names::<ServerFile>(),
        field_names::<LimitsFile>(),
        field_names::<LogFile>(),
        field_names::<SiteFile>(),
        field_names::<RouteFile>(),
        field_names::<HeadersFile>(),
        field_names::<OidcFile>(),
        field_names::<StepUpFile>(),
        field_names::<SessionFile>(),
        field_names::<IdentityFile>(),
        field_names::<DirectoryFile>(),
        field_names::<AuditFile>(),
        field_names::<ApiTokenFile>(),
    ];
    let mut missing = Vec::new();
    for key in tables.into_iter().flatten() {
        // Declared only to say what replaced it; the reference does not teach it.
        if *key != "step_up_methods" && !written(key) {
            missing.push(*key);
        }
    }
    assert!(tables.iter().all(|t| !t.is_empty()));
    assert_eq!(
        missing,
        Vec::<&str>::new(),
        "config/gateway.toml does not write out these keys"
    );
}

#[test]
fn toml_syntax_error_has_its_line() {
    let (line, key, msg) = one("[server]\nlisten = \"0.0.0.0:8443\nx = 1\n");
    assert_eq!(line, Some(2));
    assert_eq!(key, "toml");
    assert!(msg.starts_with("invalid TOML"), "{msg}");
}

#[test]
fn duplicate_toml_key_is_a_syntax_error() {
    let (line, key, _) = one(&server_with("listen = \"0.0.0.0:1\""));
    assert_eq!((line, key.as_str()), (Some(5), "toml"));
}

#[test]
fn unknown_keys_everywhere_with_hints() {
    let text = r#"lisen = 1
[server]
listen = "0.0.0.0:8443"
tls_cert = "c.pem"
tls_key = "c.key"
adminlisten = "127.0.0.1:9090"
[server.limits]
max_header = 1
[log]
colour = true
[[site]]
host = "a.example"
upstrem = "http://x"
upstream = "http://x"
  [[site.route]]
  path = "/a"
  acess = "public"
[sever]
"#;
    let p = problems(text);
    let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(1), "lisen"),
            (Some(6), "server.adminlisten"),
            (Some(8), "server.limits.max_header"),
            (Some(10), "log.colour"),
            (Some(13), "site[0].upstrem"),
            (Some(17), "site[0].route[0].acess"),
            (Some(18), "sever"),
        ],
        "{p:#?}"
    );
    assert!(
        p[1].message.contains("did you mean \"admin_listen\"?"),
        "{}",
        p[1].message
    );
    assert!(
        p[2].message.contains("did you mean \"max_headers\"?"),
        "{}",
        p[2].message
    );
    assert!(
        p[3].message
            .contains("known keys here: format, level, access"),
        "{}",
        p[3].message
    );
    assert!(
        p[4].message.contains("did you mean \"upstream\"?"),
        "{}",
        p[4].message
    );
    assert!(
        p[5].message.contains("did you mean \"access\"?"),
        "{}",
        p[5].message
    );
    assert!(
        p[6].message.contains("did you mean \"server\"?"),
        "{}",
        p[6].message
    );
    assert!(
        p[0].message.contains("at the top level"),
        "{}",
        p[0].message
    );
}

#[test]
fn many_problems_at_once_in_file_order() {
    let text = r#"[server]
listen = 8443
tls_cert = "c.pem"
tls_key = "c.key"
shutdown_grace = 30

[[site]]
host = "app.example.net"
upstream = "ftp://127.0.0.1"
access = "maybe"

  [[site.route]]
  path = "api"
"#;
    let p = problems(text);
    let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(2), "server.listen"),
            (Some(5), "server.shutdown_grace"),
            (Some(9), "site[0].upstream"),
            (Some(10), "site[0].access"),
            (Some(13), "site[0].route[0].path"),
        ]
    );
    assert_eq!(
        p[0].message,
        "expected a string \"IP:PORT\" such as \"0.0.0.0:8443\", found integer 8443; write \"0.0.0.0:8443\""
    );
    assert!(p[1].message.contains("write \"30s\""), "{}", p[1].message);
    assert!(
        p[2].message.contains("only http:// and https://"),
        "{}",
        p[2].message
    );
    assert!(
        p[3].message.contains("\"maybe\" is not an access rule"),
        "{}",
        p[3].message
    );
    assert!(
        p[4].message.contains("does not start with \"/\""),
        "{}",
        p[4].message
    );
    assert_eq!(
        p[0].to_string(),
        format!("{FILE}:2: server.listen: {}", p[0].message),
        "the display form is FILE:LINE: key: message"
    );
}

#[test]
fn missing_required_keys_and_tables() {
    let (line, key, msg) = one(&MINIMAL.replace("tls_cert = \"c.pem\"\n", ""));
    assert_eq!((line, key.as_str()), (Some(1), "server.tls_cert"));
    assert!(msg.contains("missing required key in [server]"), "{msg}");

    let p = problems("[log]\nlevel = \"info\"\n");
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["server", "site"]);
    assert!(p.iter().all(|p| p.line.is_none()));
    assert_eq!(
        p[0].to_string(),
        format!("{FILE}: server: {}", p[0].message)
    );

    let (line, key, _) = one(&MINIMAL.replace("host = \"app.example.net\"\n", ""));
    assert_eq!((line, key.as_str()), (Some(6), "site[0].host"));
}

#[test]
fn wrong_types() {
    let (line, key, msg) = one(&server_with("trusted_proxies = \"10.0.0.0/8\""));
    assert_eq!((line, key.as_str()), (Some(5), "server.trusted_proxies"));
    assert!(
        msg.contains("expected an array of strings") && msg.contains("found string \"10.0.0.0/8\""),
        "{msg}"
    );

    let (line, key, msg) = one(&format!(
        "server = 1\n{}",
        &MINIMAL[MINIMAL.find("[[site]]").unwrap_or(0)..]
    ));
    assert_eq!((line, key.as_str()), (Some(1), "server"));
    assert!(
        msg.contains("expected a [server] table, found integer 1"),
        "{msg}"
    );

    let (line, key, msg) = one(&server_with("[log]\naccess = \"yes\""));
    assert_eq!((line, key.as_str()), (Some(6), "log.access"));
    assert!(msg.contains("expected true or false"), "{msg}");

    let (_, key, msg) = one(&site_with("host2 = 1\n")
        .replace("host2 = 1\n", "")
        .replace("host = \"app.example.net\"", "host = [\"a\"]"));
    assert_eq!(key, "site[0].host");
    assert!(msg.contains("found array"), "{msg}");
}

#[test]
fn every_kind_of_wrong_value_is_reported_and_the_rest_still_read() {
    // One file with a wrong value of each TOML kind, in values, tables and arrays of tables:
    // reading the file structs never stops, so each is reported at its own line.
    let text = format!(
        "log = 1979-05-27T07:32:00Z\n{}{}",
        server_with("shutdown_grace = true\ntrusted_proxies = { a = 1 }\nlimits = \"big\""),
        "[[api_token]]\naudience = 1\n[[api_token]]\nissuer = \"https://idp.example/\"\naudience = \"api\"\nmatch_by_email = \"no\"\n\
         [oidc]\nclient_id = 7\nclient_secret_env = \"S\"\nscopes = [\"openid\", 2.5]\nstep_up = [1]\n"
    );
    let got: Vec<(Option<usize>, String, String)> = problems(&text)
        .into_iter()
        .map(|p| (p.line, p.key, p.message))
        .collect();
    let want = [
        (
            Some(1),
            "log",
            "expected a [log] table, found datetime 1979-05-27T07:32:00Z",
        ),
        (Some(6), "server.shutdown_grace", "found boolean true"),
        (
            Some(7),
            "server.trusted_proxies",
            "found inline table { a = 1 }",
        ),
        (
            Some(8),
            "server.limits",
            "expected a [server.limits] table, found string \"big\"",
        ),
        (
            Some(13),
            "api_token[0].issuer",
            "missing required key in api_token[0]",
        ),
        (
            Some(14),
            "api_token[0].audience",
            "expected an audience string, found integer 1",
        ),
        (
            Some(18),
            "api_token[1].match_by_email",
            "expected true or false, found string \"no\"",
        ),
        (
            Some(20),
            "oidc.client_id",
            "expected a client id string, found integer 7",
        ),
        (
            Some(22),
            "oidc.scopes[1]",
            "expected a scope name, found float 2.5",
        ),
        (
            Some(23),
            "oidc.step_up",
            "expected an [oidc.step_up] table, found array [1]",
        ),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((line, key, msg), (want_line, want_key, want_msg)) in got.iter().zip(want) {
        assert_eq!((*line, key.as_str()), (want_line, want_key), "{msg}");
        assert!(msg.contains(want_msg), "{key}: {msg}");
    }
}

#[test]
fn every_toml_spelling_of_a_table_reads_the_same() {
    let headers = ok(&site_with(
        "[log]\nformat = \"json\"\n[server.limits]\nmax_headers = 50",
    ));
    for text in [
        // Dotted keys, inline tables, and a super-table first named by its sub-table.
        format!(
            "log.format = \"json\"\n{}",
            server_with("limits.max_headers = 50")
        ),
        format!(
            "log = {{ format = \"json\" }}\n{}",
            server_with("limits = { max_headers = 50 }")
        ),
        format!(
            "log.format = \"json\"\n{}",
            MINIMAL.replacen(
                "[server]\n",
                "[server.limits]\nmax_headers = 50\n[server]\n",
                1
            )
        ),
    ] {
        let c = ok(&text);
        assert_eq!(c.log.format, headers.log.format, "{text}");
        assert_eq!(c.server.limits.max_headers, 50, "{text}");
    }
    // Unknown keys are found in every spelling too, with their own lines.
    let (line, key, msg) = one(&format!(
        "log = {{ format = \"json\", acess = true }}\n{MINIMAL}"
    ));
    assert_eq!((line, key.as_str()), (Some(1), "log.acess"));
    assert!(msg.contains("did you mean \"access\"?"), "{msg}");
    let (line, key, msg) = one(&server_with("limits.max_hedaers = 5"));
    assert_eq!((line, key.as_str()), (Some(5), "server.limits.max_hedaers"));
    assert!(msg.contains("did you mean \"max_headers\"?"), "{msg}");
    // A quoted key that looks like a path is one key, found at its line.
    let (line, key, msg) = one(&server_with("\"limits.x[0]\" = 1"));
    assert_eq!((line, key.as_str()), (Some(5), "server.limits.x[0]"));
    assert!(
        msg.contains("unknown key \"limits.x[0]\" in [server]"),
        "{msg}"
    );
}

#[test]
fn durations() {
    let (line, key, msg) = one(&server_with("shutdown_grace = \"soon\""));
    assert_eq!((line, key.as_str()), (Some(5), "server.shutdown_grace"));
    assert!(msg.starts_with("\"soon\" is not a duration"), "{msg}");
    assert!(
        msg.contains("expected a duration string such as \"30s\""),
        "{msg}"
    );

    let (line, key, msg) = one(&server_with(
        "[server.limits]\ntunnel_idle_timeout = \"0s\"",
    ));
    assert_eq!(
        (line, key.as_str()),
        (Some(6), "server.limits.tunnel_idle_timeout")
    );
    assert!(msg.contains("greater than zero"), "{msg}");

    let c = ok(&server_with("shutdown_grace = \"0s\""));
    assert_eq!(c.server.shutdown_grace, Duration::ZERO);

    // The session store's cache refuses a lifetime of over 1,000 years by panicking, and a
    // deadline that far ahead overflows the clock: such a duration stops the check instead.
    for (text, line, key) in [
        (
            site_with("[session]\nlifetime = \"2000y\""),
            Some(10),
            "session.lifetime",
        ),
        (
            server_with("[server.limits]\nupstream_response_timeout = \"1000000000000s\""),
            Some(6),
            "server.limits.upstream_response_timeout",
        ),
        (
            server_with("shutdown_grace = \"3651d\""),
            Some(5),
            "server.shutdown_grace",
        ),
    ] {
        let (l, k, msg) = one(&text);
        assert_eq!((l, k.as_str()), (line, key));
        assert!(msg.contains("longer than ten years"), "{msg}");
    }
    let c = ok(&server_with("shutdown_grace = \"3650d\""));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(3650 * 86_400));

    let (line, key, _) = one(&site_with(
        "  [[site.route]]\n  path = \"/x\"\n  tunnel_idle_timeout = 150",
    ));
    assert_eq!(
        (line, key.as_str()),
        (Some(11), "site[0].route[0].tunnel_idle_timeout")
    );
}

#[test]
fn edit_distance_and_hints() {
    assert_eq!(edit_distance("upstrem", "upstream"), 1);
    assert_eq!(edit_distance("acess", "access"), 1);
    assert_eq!(edit_distance("lsiten", "listen"), 1);
    assert_eq!(closest("Listen", &["listen", "tls_key"]), Some("listen"));
    assert_eq!(
        closest("tls-cert", &["listen", "tls_cert"]),
        Some("tls_cert")
    );
    assert_eq!(closest("colour", &["format", "level", "access"]), None);
}

#[test]
fn check_files_reports_missing_files_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let text =
        site_with("upstream_ca_file = \"ca.pem\"").replace("http://127.0.0.1:8000", "https://x");
    std::fs::write(&file, &text).unwrap();
    std::fs::write(dir.path().join("c.pem"), "x").unwrap();
    std::fs::create_dir(dir.path().join("c.key")).unwrap();
    let c = match parse(&text, &file) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let p = check_files(&c);
    let got: Vec<(Option<usize>, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(4), "server.tls_key"),
            (Some(9), "site[0].upstream_ca_file")
        ]
    );
    assert!(
        p[0].message.contains("is not a regular file"),
        "{}",
        p[0].message
    );
    assert!(p[1].message.contains("no such file"), "{}", p[1].message);
    assert_eq!(p[1].file, file);

    std::fs::remove_dir(dir.path().join("c.key")).unwrap();
    std::fs::write(dir.path().join("c.key"), "x").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    assert_eq!(check_files(&c), []);
}
