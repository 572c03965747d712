//! Path and host confusion: `..`, encodings, `//`, `;` parameters, case and Host/SNI/authority
//! disagreements, over HTTP/1.1 and HTTP/2, judged by what the upstream received.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// Path and host confusion
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Want {
    /// Forwarded; the upstream saw exactly this request target.
    Fwd(&'static str),
    /// Answered by the gateway with this status; never forwarded.
    No(u16),
}
use Want::{Fwd, No};

/// Routes: `/public` public, `/public/admin` deny, everything else protected (no sign-in
/// configured, so 401). These cases add to the canonicalization table in tests/it/paths.rs.
const PATH_CASES: &[(&str, Want)] = &[
    // Backslashes in every disguise.
    ("/public\\..\\secret", No(400)),
    ("/public/..\\..\\secret", No(400)),
    ("/public/%5c..%5csecret", No(400)),
    ("/public/%5C%2e%2e%5Csecret", No(400)),
    ("/public/\\admin", No(400)),
    ("/public%5cadmin", No(400)),
    (
        "/public/%255c..%255csecret",
        Fwd("/public/%255c..%255csecret"),
    ),
    // `;` parameters hiding segments, dot-segments and the deny rule.
    ("/public;/../secret", No(401)),
    ("/public;x=1/..;/secret", No(400)),
    ("/public/admin;jsessionid=1", No(403)),
    ("/public/admin;/x", No(403)),
    ("/public;a;b/admin;c", No(403)),
    ("/public/%3b/../admin", No(403)),
    ("/public/admin%3bx", Fwd("/public/admin%3Bx")),
    ("/secret;/public/x", No(401)),
    ("/secret;public", No(401)),
    // `#` and `?` encoded into the path stay literal segment bytes.
    ("/public%23/../secret", No(401)),
    ("/secret%23/../public/x", Fwd("/public/x")),
    ("/secret%3f/public", No(401)),
    ("/secret%3F/../../public", Fwd("/public")),
    ("/public/%23admin", Fwd("/public/%23admin")),
    // Double and mixed encoding: decoded once, `%25` stays.
    (
        "/public/%252e%252e/%252e%252e/secret",
        Fwd("/public/%252e%252e/%252e%252e/secret"),
    ),
    (
        "/public/%25%32%65%25%32%65/secret",
        Fwd("/public/%252e%252e/secret"),
    ),
    ("/public/%%32%65%%32%65/secret", No(400)),
    ("/public/%2%65%2%65/secret", No(400)),
    ("/%70ublic/%61dmin", No(403)),
    ("/%50UBLIC/%41DMIN", No(403)),
    ("/public/%2e%2e%2fsecret", No(400)),
    // Overlong and invalid UTF-8 for `.`, `/` and `\`, and non-shortest forms.
    ("/public/%c0%ae%c0%ae/secret", No(400)),
    ("/public/%e0%80%ae%e0%80%ae/secret", No(400)),
    ("/public/%f0%80%80%ae/secret", No(400)),
    ("/public/%c0%af..%c0%afsecret", No(400)),
    ("/public/%c1%9c..%c1%9csecret", No(400)),
    ("/public/%c0%2e%c0%2e/secret", No(400)),
    ("/public/%ed%a0%80", No(400)),
    ("/public/%f4%90%80%80", No(400)),
    ("/public/%80", No(400)),
    // Look-alike separators and dots are ordinary characters, forwarded as routed.
    (
        "/public/%ef%bc%8f..%ef%bc%8fsecret",
        Fwd("/public/%EF%BC%8F..%EF%BC%8Fsecret"),
    ),
    (
        "/public/%e2%80%a4%e2%80%a4/secret",
        Fwd("/public/%E2%80%A4%E2%80%A4/secret"),
    ),
    ("/public/%e2%88%95admin", Fwd("/public/%E2%88%95admin")),
    // Nor does it stretch a public route: a case-sensitive upstream serves another
    // resource at /PUBLIC, and one that keeps `;` parameters another segment at /public;x.
    ("/PUBLIC/x", No(401)),
    ("/Public", No(401)),
    ("/pUBLIC/a/b", No(401)),
    ("/public;x/a", No(401)),
    ("/public;jsessionid=1", No(401)),
    ("/public/x", Fwd("/public/x")),
    ("/public/x;y", Fwd("/public/x;y")),
    // Mixed case never escapes a rule.
    ("/PUBLIC/ADMIN", No(403)),
    ("/pUbLiC/aDmIn/x", No(403)),
    ("/Public/./Admin/", No(403)),
    ("/PUBLIC//ADMIN", No(403)),
    ("/public/admin/", No(403)),
    ("/public/admin//x", No(403)),
    ("/public/x/../admin", No(403)),
    ("/public/./admin", No(403)),
    // Trailing dots and spaces are different segment names: routed and forwarded as is.
    ("/public/admin.", Fwd("/public/admin.")),
    ("/public/admin%2e", Fwd("/public/admin.")),
    ("/public/admin%20", Fwd("/public/admin%20")),
    ("/public/admin%09", No(400)),
    ("/public/admin%00.html", No(400)),
    // Raw bytes that are never valid in a path.
    ("/public/a\"b", No(400)),
    ("/public/a<b>", No(400)),
    ("/public/a{b}", No(400)),
    ("/public/a|b", No(400)),
    ("/public/a^b", No(400)),
    ("/public/a`b", No(400)),
];

/// A `'static` copy of a string, for expectations built at run time (a test leaks a few).
fn sent_static(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn judge(target: &str, want: Want, status: u16, upstream_path: Option<String>) -> Option<String> {
    match (want, upstream_path) {
        (Fwd(p), Some(got)) if status == 200 && got == p => None,
        (Fwd(p), got) => Some(format!(
            "{target}: want forwarded as {p:?}, got {status}, upstream saw {got:?}"
        )),
        (No(code), None) if status == code => None,
        (No(code), got) => Some(format!(
            "{target}: want {code} from the gateway, got {status}, upstream saw {got:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_confusion_beyond_the_canonical_table_over_http1_and_http2() {
    assert!(PATH_CASES.len() >= 50);
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let mut h2_ran = 0;
    for &(target, want) in PATH_CASES {
        let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        let reply = parse_raw(&text);
        let Some(status) = reply.status else {
            failures.push(format!("{target}: no response"));
            continue;
        };
        let upstream = (reply.header("x-upstream") == Some("echo"))
            .then(|| reply.json()["path"].as_str().unwrap_or("").to_owned());
        failures.extend(judge(target, want, status, upstream));

        // HTTP/2, for every target the http crate can carry.
        let Ok(req) =
            Request::get(format!("https://app.test{target}")).body(Full::new(Bytes::new()))
        else {
            continue;
        };
        h2_ran += 1;
        match c.try_send_h2("app.test", req).await {
            Ok(r) => {
                let upstream = from_echo(&r).then(|| r.upstream_path());
                failures.extend(
                    judge(target, want, r.status.as_u16(), upstream).map(|f| format!("h2 {f}")),
                );
            }
            Err(e) => {
                if matches!(want, Fwd(_)) {
                    failures.push(format!("h2 {target}: {e}"));
                }
            }
        }
    }
    assert!(h2_ran >= 40, "only {h2_ran} cases went over HTTP/2");
    report(failures);
}

/// Host, `:authority` and SNI: a request is decided for exactly one site, and the TLS server
/// name, when there is one, must be that site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_authority_and_sni_must_agree_over_http1_and_http2() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}",
        site("app.test", &echo.url(), "public", &[]),
        site("other.test", &echo.url(), "protected", &[])
    ))
    .await;
    let c = gw.client();
    let mut failures = Vec::new();
    // (SNI, raw Host header lines, expected status, forwarded?)
    let h1: &[(&str, &str, u16, bool)] = &[
        ("app.test", "Host: app.test\r\n", 200, true),
        ("app.test", "Host: APP.TEST\r\n", 200, true),
        ("app.test", "Host: app.test.\r\n", 200, true),
        ("app.test", "Host: app.test:443\r\n", 200, true),
        ("app.test", "Host: other.test\r\n", 421, false),
        ("app.test", "Host: OTHER.test.\r\n", 421, false),
        ("app.test", "Host: other.test:443\r\n", 421, false),
        // Not a host name at all: refused as malformed.
        ("app.test", "Host: app.test..\r\n", 400, false),
        ("app.test", "Host: .app.test\r\n", 400, false),
        ("app.test", "Host: app.test.other.test\r\n", 421, false),
        ("app.test", "Host: app.test:\r\n", 400, false),
        ("app.test", "Host: app.test:x\r\n", 400, false),
        ("app.test", "Host: app.test:443:443\r\n", 400, false),
        ("app.test", "Host: app.test:4430000\r\n", 400, false),
        ("app.test", "Host: evil@app.test\r\n", 400, false),
        ("app.test", "Host: app.test/..\r\n", 400, false),
        ("app.test", "Host: app.test\\x\r\n", 400, false),
        ("app.test", "Host: app test\r\n", 400, false),
        ("app.test", "Host: \r\n", 400, false),
        ("app.test", "", 400, false),
        (
            "app.test",
            "Host: app.test\r\nHost: app.test\r\n",
            400,
            false,
        ),
        (
            "app.test",
            "Host: app.test\r\nHost: other.test\r\n",
            400,
            false,
        ),
        (
            "app.test",
            "Host: other.test\r\nHost: app.test\r\n",
            400,
            false,
        ),
        ("app.test", "Host: app.test, other.test\r\n", 400, false),
        ("other.test", "Host: app.test\r\n", 421, false),
        ("other.test", "Host: other.test\r\n", 401, false),
        ("localhost", "Host: app.test\r\n", 421, false),
        ("localhost", "Host: localhost\r\n", 421, false),
        ("app.test", "Host: 127.0.0.1\r\n", 421, false),
        ("app.test", "Host: [::1]\r\n", 421, false),
        (
            "app.test",
            "X-Forwarded-Host: other.test\r\nHost: app.test\r\n",
            200,
            true,
        ),
        (
            "app.test",
            "Forwarded: host=other.test\r\nHost: app.test\r\n",
            200,
            true,
        ),
    ];
    for &(sni, host_lines, want, forwarded) in h1 {
        let req = format!("GET /h HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, sni, req.as_bytes(), Duration::from_secs(5)).await);
        let fwd = reply.header("x-upstream") == Some("echo");
        if reply.status != Some(want) || fwd != forwarded {
            failures.push(format!(
                "h1 SNI {sni} {host_lines:?}: want {want} (forwarded {forwarded}), got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
        if fwd {
            let j = reply.json();
            let xfh = j["headers"]["x-forwarded-host"][0].as_str().unwrap_or("");
            if xfh != "app.test" {
                failures.push(format!("h1 {host_lines:?}: X-Forwarded-Host {xfh:?}"));
            }
        }
    }
    // Absolute-form request targets: the authority decides, and must agree with Host and SNI.
    let absolute: &[(&str, &str, &str, u16)] = &[
        ("app.test", "https://app.test/h", "app.test", 200),
        ("app.test", "http://app.test/h", "app.test", 200),
        ("app.test", "https://other.test/h", "other.test", 421),
        ("app.test", "https://other.test/h", "app.test", 400),
        ("app.test", "https://app.test/h", "other.test", 400),
        ("app.test", "https://app.test:8443/h", "app.test", 200),
        ("app.test", "https://evil.example/h", "app.test", 400),
        (
            "app.test",
            "https://app.test@evil.example/h",
            "app.test",
            400,
        ),
        (
            "app.test",
            "https://evil.example@app.test/h",
            "app.test",
            400,
        ),
        ("app.test", "ftp://app.test/h", "app.test", 200),
    ];
    for &(sni, target, host, want) in absolute {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, sni, req.as_bytes(), Duration::from_secs(5)).await);
        let fwd = reply.header("x-upstream") == Some("echo");
        if reply.status != Some(want) || fwd != (want == 200) {
            failures.push(format!(
                "absolute {target} Host {host}: want {want}, got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
        if fwd && reply.json()["path"] != "/h" {
            failures.push(format!(
                "absolute {target}: upstream saw {}",
                reply.json()["path"]
            ));
        }
    }
    // No SNI at all (an IP-address connection): Host alone picks the site, and that site's
    // policy applies.
    let mut no_sni = (*support::tls_config(&gw.certs.ca, &[b"http/1.1"])).clone();
    no_sni.enable_sni = false;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(no_sni));
    for (host, want, forwarded) in [("other.test", 401, false), ("app.test", 200, true)] {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let mut tls = connector
            .connect(
                rustls::pki_types::ServerName::try_from("app.test").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let req = format!("GET /h HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        let reply = parse_raw(&String::from_utf8_lossy(&out));
        let fwd = reply.header("x-upstream") == Some("echo");
        if reply.status != Some(want) || fwd != forwarded {
            failures.push(format!(
                "no SNI, Host {host}: want {want}, got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
    }
    // HTTP/2: :authority against SNI, and a Host header that disagrees with :authority.
    let h2: &[(&str, &str, Option<&str>, u16)] = &[
        ("app.test", "app.test", None, 200),
        ("app.test", "APP.test.", None, 200),
        ("app.test", "other.test", None, 421),
        ("other.test", "app.test", None, 421),
        ("app.test", "app.test", Some("other.test"), 400),
        ("app.test", "other.test", Some("app.test"), 400),
    ];
    for &(sni, authority, host, want) in h2 {
        let mut req = Request::get(format!("https://{authority}/h"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        match c.try_send_h2(sni, req).await {
            Ok(r) if r.status == want && from_echo(&r) == (want == 200) => {}
            Ok(r) => failures.push(format!(
                "h2 SNI {sni} :authority {authority} host {host:?}: want {want}, got {} (forwarded {})",
                r.status,
                from_echo(&r)
            )),
            Err(e) => {
                if want == 200 {
                    failures.push(format!("h2 {authority}: {e}"));
                }
            }
        }
    }
    // HTTP/2 without :authority, SNI naming the protected site and only a Host header naming
    // the public one (raw frames): never served as the public site.
    let outcome = h2_raw(
        &c,
        "other.test",
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/h"),
            ("host", "app.test"),
        ],
        None,
    )
    .await;
    if outcome == H2Outcome::Response(0x88) {
        failures
            .push("h2 Host app.test without :authority on SNI other.test was answered 200".into());
    }
    // One HTTP/2 connection reused for another site (browsers coalesce connections when the
    // certificate covers both names): the second site is never served on it.
    let tls = c.connect("app.test", &[b"h2"]).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [("app.test", 200), ("other.test", 421), ("app.test", 200)] {
        let req = Request::get(format!("https://{authority}/coalesced"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = support::collect(sender.send_request(req).await.unwrap()).await;
        if r.status != want {
            failures.push(format!(
                "coalesced h2 connection, {authority}: want {want}, got {}",
                r.status
            ));
        }
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_case_unknown_and_connect_never_escape_the_policy() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let long = "A".repeat(4096);
    // (request line, acceptable statuses, forwarded?). No status: the connection may also
    // simply be closed.
    let cases: Vec<(String, &[u16], bool)> = vec![
        ("GET /public/x HTTP/1.1".into(), &[200], true),
        ("get /public/x HTTP/1.1".into(), &[400], false),
        ("gEt /secret HTTP/1.1".into(), &[400], false),
        ("Post /secret HTTP/1.1".into(), &[400], false),
        ("delete /public/admin HTTP/1.1".into(), &[400], false),
        ("PURGE /public/x HTTP/1.1".into(), &[200], true),
        ("PURGE /secret HTTP/1.1".into(), &[401], false),
        ("PROPFIND /secret HTTP/1.1".into(), &[401], false),
        ("MKCOL /public/admin/x HTTP/1.1".into(), &[403], false),
        ("FOO_BAR /secret HTTP/1.1".into(), &[401], false),
        ("M-SEARCH /public/x HTTP/1.1".into(), &[200], true),
        ("OPTIONS /secret HTTP/1.1".into(), &[401], false),
        ("OPTIONS /public/admin HTTP/1.1".into(), &[403], false),
        ("HEAD /secret HTTP/1.1".into(), &[401], false),
        ("TRACE /secret HTTP/1.1".into(), &[405], false),
        ("TRACK /secret HTTP/1.1".into(), &[405], false),
        ("TRACE /public/x HTTP/1.1".into(), &[405], false),
        ("TRACK /public/x HTTP/1.1".into(), &[405], false),
        ("DELETE /public/admin/x HTTP/1.1".into(), &[403], false),
        ("CONNECT app.test:443 HTTP/1.1".into(), &[400], false),
        ("CONNECT /secret HTTP/1.1".into(), &[400, 401], false),
        ("CONNECT evil.example:22 HTTP/1.1".into(), &[400], false),
        (format!("{long} /secret HTTP/1.1"), &[400, 401], false),
        ("G\u{7f}ET /public/x HTTP/1.1".into(), &[400], false),
        ("GE(T /public/x HTTP/1.1".into(), &[400], false),
        ("GET /public/x HTTP/1.0".into(), &[200], true),
        ("GET /public/x HTTP/2.0".into(), &[400, 505], false),
        ("GET /public/x HTTP/1.2".into(), &[400, 505], false),
        ("GET /public/x".into(), &[400], false),
        ("GET  /public/x HTTP/1.1".into(), &[400], false),
        ("GET /public/x  HTTP/1.1".into(), &[400], false),
        ("GET\t/public/x HTTP/1.1".into(), &[400], false),
    ];
    for (line, want, forwarded) in &cases {
        let req = format!("{line}\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        // An HTTP/1.0 request is answered with an HTTP/1.0 status line.
        let reply = parse_raw(&text.replacen("HTTP/1.0 ", "HTTP/1.1 ", 1));
        let fwd = reply.header("x-upstream") == Some("echo");
        let short: String = line.chars().take(60).collect();
        let status_ok = match reply.status {
            Some(s) => want.contains(&s),
            None => !forwarded,
        };
        if fwd != *forwarded || !status_ok {
            failures.push(format!(
                "{short:?}: want {want:?} (forwarded {forwarded}), got {:?} (forwarded {fwd})",
                reply.status
            ));
        }
        if fwd {
            let method = line.split(' ').next().unwrap();
            if reply.json()["method"] != method {
                failures.push(format!(
                    "{short:?}: upstream saw method {}",
                    reply.json()["method"]
                ));
            }
        }
    }
    // HTTP/2 carries any method token: the same rules apply.
    for (method, path, want) in [
        ("PURGE", "/secret", 401),
        ("TRACE", "/public/admin", 405),
        ("TRACE", "/public/x", 405),
        ("PROPFIND", "/public/x", 200),
        ("lowercase", "/public/x", 400),
    ] {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("https://app.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        match c.try_send_h2("app.test", req).await {
            Ok(r) if r.status == want && from_echo(&r) == (want == 200) => {}
            Ok(r) => failures.push(format!("h2 {method} {path}: want {want}, got {}", r.status)),
            Err(e) => {
                if want == 200 {
                    failures.push(format!("h2 {method} {path}: {e}"));
                }
            }
        }
    }
    report(failures);
}

/// A public prefix matches the path only: never the query string, a fragment or an encoded
/// `?` or `#` inside the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_prefixes_are_never_matched_against_the_query_or_fragment() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let cases: &[(&str, Want)] = &[
        ("/secret?/public", No(401)),
        ("/secret?/public/", No(401)),
        ("/secret?path=/public", No(401)),
        ("/secret?=/public", No(401)),
        ("/secret??/public", No(401)),
        ("/secret?%2Fpublic", No(401)),
        ("/secret?x=1&/public", No(401)),
        ("/secret?;/public", No(401)),
        ("/secret?/../public", No(401)),
        ("/secret?/public#/public", No(401)),
        ("/secret#/public", No(401)),
        ("/secret#?/public", No(401)),
        ("/secret%3F/public", No(401)),
        ("/secret%3f/public/x", No(401)),
        ("/secret%23/public", No(401)),
        ("/secret/%3F/public", No(401)),
        ("/?/public", No(401)),
        ("/?public", No(401)),
        ("?/public", No(400)),
        ("/public/admin?/public/x", No(403)),
        ("/public/admin?x=/public", No(403)),
        ("/public/admin#/public", No(403)),
        ("/public?/secret", Fwd("/public?/secret")),
        ("/public?x=/public/admin", Fwd("/public?x=/public/admin")),
        ("/public/x?/../../secret", Fwd("/public/x?/../../secret")),
    ];
    for &(target, want) in cases {
        let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        let upstream = (reply.header("x-upstream") == Some("echo"))
            .then(|| reply.json()["path"].as_str().unwrap_or("").to_owned());
        failures.extend(judge(target, want, reply.status.unwrap_or(0), upstream));
        if !target.starts_with('/') {
            continue;
        }
        // The client crate drops a fragment itself; judge what it sent.
        let sent = target.split('#').next().unwrap_or(target);
        let Ok(req) = Request::get(format!("https://app.test{sent}")).body(Full::new(Bytes::new()))
        else {
            continue;
        };
        if let Ok(r) = c.try_send_h2("app.test", req).await {
            let upstream = from_echo(&r).then(|| r.upstream_path());
            let want = match want {
                Fwd(_) => Fwd(sent_static(sent)),
                other => other,
            };
            failures
                .extend(judge(sent, want, r.status.as_u16(), upstream).map(|f| format!("h2 {f}")));
        }
    }
    report(failures);
}

/// A segment made only of `;` parameters is an empty segment to an upstream that strips
/// parameters (Tomcat, Jetty and servlet containers do, then collapse `//`), so it must not
/// hide the segment after it from a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_only_segment_cannot_hide_a_rule() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for target in [
        "/public/;/admin",
        "/public/;x/admin",
        "/public/;jsessionid=1/admin/x",
        "/public/;/;/admin",
        "/public;/;/admin",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        let upstream = (reply.header("x-upstream") == Some("echo"))
            .then(|| reply.json()["path"].as_str().unwrap_or("").to_owned());
        let ok = (reply.status == Some(403) || reply.status == Some(400)) && upstream.is_none();
        if !ok {
            failures.push(format!(
                "{target}: want 403 (or 400), got {:?}, upstream saw {upstream:?}",
                reply.status
            ));
        }
    }
    report(failures);
}

/// `canonical::host` output is the site key; canonicalizing it again must not change it.
/// The spellings that have no single canonical form (empty labels, a second `:`, a port
/// that is not a number) are refused: `canonical::host` says none, and a request carrying
/// one as its Host gets 400 and is never forwarded, over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_host_is_a_fixed_point() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for host in [
        "APP.te.:84st.:8443",
        "a:b:443",
        "app.test..",
        "app.test:x:1",
        "app..test",
        "app.test:443:443",
        "app.test:99999999",
    ] {
        if let Some(h) = jumpgate::canonical::host(host) {
            let again = jumpgate::canonical::host(&h);
            if again.as_deref() != Some(&*h) {
                failures.push(format!("{host:?} -> {h:?} -> {again:?}"));
            }
        }
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        if raw_status(&text) != Some(400) || text.contains("\"x-upstream\"") {
            failures.push(format!("Host {host:?}: {:.120}", text));
        }
    }
    // Control: the canonical spelling and its variants are one site.
    for ok in ["app.test", "APP.test.", "app.test:443"] {
        assert_eq!(
            jumpgate::canonical::host(ok).as_deref(),
            Some("app.test"),
            "{ok}"
        );
        let req = format!("GET /x HTTP/1.1\r\nHost: {ok}\r\nConnection: close\r\n\r\n");
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        if raw_status(&text) != Some(200) {
            failures.push(format!("control Host {ok:?}: {:.120}", text));
        }
    }
    report(failures);
}
