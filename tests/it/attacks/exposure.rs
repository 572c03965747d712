//! Exposure: the gateway's own endpoints on the public listener, secrets in logs, pages,
//! metrics and `Debug` output, and forward-auth asked incomplete questions.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// The gateway's own endpoints on the public listener
// ---------------------------------------------------------------------------------------

/// Text only the admin listener produces.
fn admin_markers(body: &str) -> Vec<&'static str> {
    [
        "jumpgate_requests_total",
        "jumpgate_open_connections",
        "# TYPE",
        "# EOF",
        "not ready",
        "directory snapshot",
    ]
    .into_iter()
    .filter(|m| body.contains(m))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_debug_paths_are_never_the_gateways_own_on_the_public_listener() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        site("app.test", &echo.url(), "public", &[]),
        site("other.test", &echo.url(), "protected", &[]),
        site("enroll.test", &echo.url(), "deny", &[])
    ))
    .await;
    let c = gw.client();
    // Control: the admin listener does produce the markers.
    let (_, m) = gw.admin_get("/metrics").await;
    assert!(!admin_markers(&m).is_empty(), "{m}");
    let paths = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/metrics?format=prometheus",
        "/debug",
        "/debug/pprof/",
        "/debug/pprof/heap",
        "/debug/vars",
        "/status",
        "/server-status",
        "/_jumpgate/metrics",
        "/.well-known/jumpgate/metrics",
        "/.jumpgate/healthz",
        "/.jumpgate/readyz",
        "/.jumpgate/metrics",
        "/.jumpgate/debug/pprof",
        "/.jumpgate/status",
        "/.jumpgate/config",
        "/.JUMPGATE/metrics",
        "/.jumpgate;x/metrics",
        "/%2ejumpgate/metrics",
        "/x/../.jumpgate/metrics",
        "/.jumpgate/../metrics",
    ];
    let mut failures = Vec::new();
    for host in ["app.test", "other.test", "enroll.test"] {
        for path in paths {
            let canonical = jumpgate::canonical::path(path.split('?').next().unwrap())
                .unwrap()
                .into_owned();
            let reserved = canonical.to_ascii_lowercase().starts_with("/.jumpgate");
            let want: u16 = match (reserved, host) {
                (true, _) => 404,
                (false, "app.test") => 200,
                (false, "other.test") => 401,
                _ => 403,
            };
            for h2 in [false, true] {
                let r = if h2 {
                    let req = Request::get(format!("https://{host}{path}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    c.send_h2(host, req).await
                } else {
                    c.get(host, path).await
                };
                let text = r.text();
                let tag = if h2 { "h2 " } else { "" };
                if r.status != want || from_echo(&r) != (want == 200) {
                    failures.push(format!(
                        "{tag}{host}{path}: want {want}, got {} (upstream {})",
                        r.status,
                        from_echo(&r)
                    ));
                }
                let forwarded_as = match path.split_once('?') {
                    Some((_, q)) => format!("{canonical}?{q}"),
                    None => canonical.clone(),
                };
                if want == 200 && from_echo(&r) && r.upstream_path() != forwarded_as {
                    failures.push(format!(
                        "{tag}{host}{path}: upstream saw {}",
                        r.upstream_path()
                    ));
                }
                let found = admin_markers(&text);
                if !found.is_empty() {
                    failures.push(format!(
                        "{tag}{host}{path}: the gateway's own data {found:?}"
                    ));
                }
            }
        }
    }
    // A Host naming the admin listener's address is no site on the public listener.
    let admin_host = gw.admin.to_string();
    for host in ["127.0.0.1", "localhost", admin_host.as_str()] {
        let req = Request::get("/metrics")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = c.send("app.test", req).await;
        if r.status != 421 || !admin_markers(&r.text()).is_empty() {
            failures.push(format!("Host {host}: {}", r.status));
        }
    }
    // The plain-HTTP listener only redirects, whatever the path.
    for path in ["/metrics", "/healthz", "/readyz", "/debug/pprof/"] {
        let resp = support::plain_request(gw.redirect, path, "app.test").await;
        let status = resp.status().as_u16();
        let body = support::collect(resp).await.text();
        if status != 308 || !admin_markers(&body).is_empty() {
            failures.push(format!("redirect listener {path}: {status}"));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Secrets: never in logs, error pages, metrics or Debug output
// ---------------------------------------------------------------------------------------

/// The `jumpgate` binary as a child process, its stderr captured.
struct ChildGateway {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl ChildGateway {
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on a plain-HTTP listener that may not be up yet: (status, body), or `None`.
async fn try_plain_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let reply = parse_raw(&String::from_utf8_lossy(&out));
    Some((reply.status?, reply.body))
}

async fn start_child(env: &SignInEnv, log_level: &str) -> ChildGateway {
    let port = free_port().await;
    let admin_port = free_port().await;
    let dir = env.dir.path().join(format!("child-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let rest = env
        .rest
        .replace("directory.json", &format!("child-{port}/directory.json"));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nshutdown_grace = \"1s\"\n\n[log]\nlevel = \"{log_level}\"\naccess = true\n\n{rest}",
        env.gw.certs.cert.display(),
        env.gw.certs.key.display(),
    );
    let config = dir.join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    env.fake.update_app(CLIENT_ID, |app| {
        app.redirect_uris
            .push(format!("https://app.test:{port}/.jumpgate/callback"));
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_jumpgate"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("JUMPGATE_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let gw = ChildGateway {
        child,
        log,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = try_plain_get(gw.admin, "/readyz").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway process never became ready:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw
}

/// Every secret the gateway handles, as it could appear in text.
fn secrets_of(env: &SignInEnv, extra: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("client secret".into(), CLIENT_SECRET.into()),
        (
            "client_secret_basic credentials".into(),
            STANDARD.encode(format!("{}:{}", encode(CLIENT_ID), encode(CLIENT_SECRET))),
        ),
        ("directory API key".into(), env.fake.api_key()),
    ];
    for issued in env.fake.issued() {
        out.push(("ID token".into(), issued.id_token.clone()));
        if let Some(sig) = issued.id_token.rsplit('.').next() {
            out.push(("ID token signature".into(), sig.to_owned()));
        }
        if let Some(payload) = issued.id_token.split('.').nth(1) {
            out.push(("ID token claims".into(), payload.to_owned()));
        }
        out.push(("access token".into(), issued.access_token.clone()));
        if let Some(r) = &issued.refresh_token {
            out.push(("refresh token".into(), r.clone()));
        }
    }
    for r in env.fake.requests() {
        if r.path == "/oauth2/token" {
            for k in ["code", "code_verifier", "refresh_token", "client_secret"] {
                if let Some(v) = r.form_param(k) {
                    out.push((format!("token request {k}"), v.to_owned()));
                }
            }
        }
    }
    for file in ["session.key", "assertion.key"] {
        if let Ok(text) = std::fs::read_to_string(env.dir.path().join(file)) {
            for line in text
                .lines()
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            {
                out.push((format!("{file} contents"), line.trim().to_owned()));
            }
        }
    }
    for (i, v) in extra.iter().enumerate() {
        out.push((format!("captured value #{i}"), v.clone()));
    }
    out.retain(|(_, v)| v.len() >= 12);
    out
}

fn leaks(where_: &str, text: &str, secrets: &[(String, String)]) -> Vec<String> {
    secrets
        .iter()
        .filter(|(_, v)| text.contains(v.as_str()))
        .map(|(name, _)| format!("{name} found in {where_}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_error_pages_metrics_or_debug_output() {
    let env = SignInEnv::start_with(Options {
        limits: Options::default().limits,
        directory: Some(String::new()),
        ..Options::default()
    })
    .await;
    // ID tokens that expire within the refresh margin, so the session refreshes them.
    env.fake
        .quirks(|q| q.id_token_ttl = Duration::from_secs(200));
    let gw = start_child(&env, "trace").await;
    let client = Client::new(gw.addr, &env.gw.certs.ca);
    let mut b = Browser::new(client.clone(), "app.test");
    let mut captured: Vec<String> = Vec::new();
    let mut pages: Vec<(String, String)> = Vec::new();

    let page = b.sign_in("/secret-page").await;
    assert_eq!(page.status, 200, "{}", page.text());
    if let Some(a) = page.upstream_header("x-jumpgate-assertion") {
        captured.push(a);
    }
    captured.push(b.cookie(SESSION).unwrap());
    captured.extend(b.cookie(SESSION).unwrap().split('.').map(str::to_owned));
    // A page view after sign-in starts the background refresh.
    let refreshes = || {
        env.fake
            .issued()
            .iter()
            .filter(|i| i.grant_type == "refresh_token")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while refreshes() == 0 && Instant::now() < deadline {
        assert_eq!(b.get("/after").await.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refreshes() > 0, "the session never refreshed its tokens");
    // A second sign-in in progress, so a login-binding cookie exists.
    let mut other = Browser::new(client.clone(), "app.test");
    let start = other.get("/pending").await;
    if let Some(v) = set_value(&start, LOGIN) {
        captured.push(v);
    }
    // Error pages, each carrying the session cookie.
    let cookie = b.cookie_header().unwrap();
    let error_requests: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/.jumpgate/nothing", vec![]),
        ("/a%2Fb", vec![]),
        ("/.jumpgate/callback?state=forged&code=forged", vec![]),
        (
            "/.jumpgate/callback?error=server_error&state=forged",
            vec![],
        ),
        ("/.jumpgate/logout", vec![("sec-fetch-site", "cross-site")]),
        ("/.jumpgate/userinfo", vec![]),
        ("/.jumpgate/sign-in?rd=//evil", vec![]),
        ("/.jumpgate/userinfo", vec![("accept", "application/json")]),
    ];
    for (path, headers) in error_requests {
        let r = b.request("GET", path, &headers).await;
        pages.push((format!("{} {path}", r.status), r.text()));
        for (_, v) in r.headers.iter() {
            pages.push((
                format!("{path} header"),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    let raw_421 = client
        .raw(
            "app.test",
            format!("GET / HTTP/1.1\r\nHost: other.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
    pages.push(("421".into(), raw_421));
    // HTTP/2 with the cookie, so its frame logging is covered too.
    let req = Request::get("https://app.test/h2-page")
        .header("cookie", &cookie)
        .header("authorization", format!("Bearer {}", CLIENT_SECRET))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.send_h2("app.test", req).await;
    assert_eq!(r.status, 200);
    // Logout goes to the provider with the client id: a redirect to the provider, by design.
    let out = b
        .request(
            "GET",
            "/.jumpgate/logout",
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert!(matches!(out.status.as_u16(), 200 | 302));
    let metrics = try_plain_get(gw.admin, "/metrics").await.unwrap().1;
    let ready = try_plain_get(gw.admin, "/readyz").await.unwrap().1;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = gw.log();
    drop(gw);

    let secrets = secrets_of(&env, &captured);
    assert!(secrets.len() >= 10, "{secrets:?}");
    assert!(
        log.contains("signed in"),
        "the log was not captured:\n{log}"
    );
    assert!(log.lines().count() > 50, "trace logging is not on:\n{log}");
    let mut failures = leaks("the trace log", &log, &secrets);
    for (what, body) in &pages {
        failures.extend(leaks(&format!("page {what}"), body, &secrets));
    }
    failures.extend(leaks("/metrics", &metrics, &secrets));
    failures.extend(leaks("/readyz", &ready, &secrets));
    if !failures.is_empty() {
        for (name, v) in &secrets {
            if let Some(line) = log.lines().find(|l| l.contains(v.as_str())) {
                failures.push(format!("e.g. {name}: {}", &line[..line.len().min(300)]));
            }
        }
    }
    failures.sort();
    failures.dedup();
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_redacts_every_secret() {
    let text = "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[oidc]\nissuer = \"https://oauth.id.jumpcloud.com/\"\nclient_id = \"client\"\nclient_secret_env = \"JUMPGATE_TEST_UNUSED\"\n[[site]]\nhost = \"app.test\"\nupstream = \"http://127.0.0.1:8000\"\n";
    let config = jumpgate::config::parse(text, std::path::Path::new("/etc/jumpgate/gateway.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let secret_text = "hunter2-client-secret-value";
    let key_material = b"cookie-key-material-that-is-32-bytes-or-more";
    let secret = jumpgate::secret::Secret::new(secret_text.into());
    let key = jumpgate::session::cookie::CookieKey::from_bytes(key_material);
    let oidc = jumpgate::oidc::Oidc::new(config.oidc.clone().unwrap(), secret.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut identity = config.identity.clone();
    identity.signing_key_file = dir.path().join("assertion.key");
    let (signer, _) = jumpgate::identity::Signer::load_or_create(&identity).unwrap();
    let pem = std::fs::read_to_string(&identity.signing_key_file).unwrap();
    let pem_body: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    let mut failures = Vec::new();
    let dumps = [
        ("Secret", format!("{secret:?}")),
        ("CookieKey", format!("{key:?}")),
        ("Oidc", format!("{oidc:?}")),
        ("Oidc (pretty)", format!("{oidc:#?}")),
        ("Signer", format!("{signer:?}")),
        ("Config", format!("{config:?}")),
    ];
    for (what, dump) in &dumps {
        if dump.contains(secret_text) {
            failures.push(format!("{what} shows the client secret"));
        }
        if dump.contains(std::str::from_utf8(key_material).unwrap()) {
            failures.push(format!("{what} shows the cookie key"));
        }
        for line in &pem_body {
            if dump.contains(line) {
                failures.push(format!("{what} shows the signing key"));
            }
        }
    }
    assert_eq!(secret.expose(), secret_text);
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Forward-auth (`/.jumpgate/verify`) with incomplete questions
// ---------------------------------------------------------------------------------------

/// A forward-auth call is a question about another request, described by the front proxy's
/// `X-Forwarded-*` headers. A proxy that leaves one out (nginx `auth_request` sends none of
/// them unless configured to) must get a refusal, not a decision about `/` or `GET`: the
/// front proxy applies the answer to whatever the client really asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_without_the_original_uri_fails_closed() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site(
            "app.test",
            &echo.url(),
            "public",
            &[("/admin", "protected")],
        ),
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    )
    .await;
    let c = gw.client();
    let mut failures = Vec::new();
    // Control: a complete question about /admin is refused (no session).
    for (name, headers, refused) in [
        (
            "complete question about /admin",
            vec![
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-method", "GET"),
            ],
            true,
        ),
        (
            "complete question about /",
            vec![
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/"),
                ("x-forwarded-method", "GET"),
            ],
            false,
        ),
        (
            "no X-Forwarded-Uri",
            vec![
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-method", "GET"),
            ],
            true,
        ),
        (
            "no X-Forwarded-Uri nor method",
            vec![("x-forwarded-host", "app.test")],
            true,
        ),
    ] {
        let (status, _) = support::ask_verify(gw.verify, &headers).await;
        let allowed = (200..300).contains(&status);
        if allowed == refused {
            failures.push(format!("{name}: answered {status}"));
        }
        // The public listener is never forward-auth, whatever the question.
        let mut req = Request::get("/.jumpgate/verify").header("host", "app.test");
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = c
            .send("app.test", req.body(Full::new(Bytes::new())).unwrap())
            .await;
        if r.status != 404 {
            failures.push(format!("{name}: the public listener answered {}", r.status));
        }
    }
    report(failures);
}
