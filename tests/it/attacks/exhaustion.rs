//! Exhaustion: oversized and deeply nested requests, tokens and directory answers, header
//! sections over the limit, and slow or abandoned uploads.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// Oversized and deeply nested inputs
// ---------------------------------------------------------------------------------------

/// Nested arrays `depth` deep, built without recursion.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// A status line of a raw answer, or `None` when the connection was simply closed.
fn raw_answer(text: &str) -> Option<u16> {
    raw_status(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_before_sign_in_never_500_loop_or_forward() {
    let env = SignInEnv::start().await;
    let c = env.gw.client();
    let mut failures = Vec::new();
    let big = "a".repeat(64 * 1024);
    let many: String = (0..60)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(1024)))
        .collect();
    let query = "q".repeat(100 * 1024);
    let cases = [
        ("64 KB header", format!("GET /big HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")),
        ("60 KB of headers", format!("GET /many HTTP/1.1\r\nHost: app.test\r\n{many}Connection: close\r\n\r\n")),
        ("100 KB query string", format!("GET /q?{query} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")),
        ("100 KB path", format!("GET /{query} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")),
        ("64 KB cookie", format!("GET /c HTTP/1.1\r\nHost: app.test\r\nCookie: {SESSION}={big}\r\nConnection: close\r\n\r\n")),
    ];
    for (name, req) in &cases {
        let text = raw_tolerant(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
        match raw_answer(&text) {
            None | Some(400) | Some(414) | Some(431) => {}
            other => failures.push(format!("{name}: answered {other:?}")),
        }
    }
    // The same over HTTP/2.
    for (name, uri, header) in [
        (
            "h2 40 KB query",
            format!("https://app.test/q?{}", &query[..40 * 1024]),
            None,
        ),
        (
            "h2 64 KB header",
            "https://app.test/h".to_owned(),
            Some(big.clone()),
        ),
    ] {
        let mut req = Request::get(uri);
        if let Some(v) = header {
            req = req.header("x-big", v);
        }
        if let Ok(r) = c
            .try_send_h2("app.test", req.body(Full::new(Bytes::new())).unwrap())
            .await
        {
            if !matches!(r.status.as_u16(), 400 | 414 | 431) {
                failures.push(format!("{name}: answered {}", r.status));
            }
        }
    }
    let upstream_saw_any = env
        .gw
        .admin_get("/metrics")
        .await
        .1
        .contains("status=\"200\"");
    if upstream_saw_any {
        failures.push("an oversized request was forwarded".into());
    }

    // 10 KB of other cookies in the jar: the sign-in still works, without a loop.
    let mut b = env.browser();
    for i in 0..10 {
        b.set_cookie(&format!("app{i}"), &"v".repeat(1000));
    }
    let first = b.get("/cookies").await;
    if !is_idp_redirect(&env, &first) {
        failures.push(format!(
            "10 KB of cookies: {} instead of a sign-in redirect",
            first.status
        ));
    } else {
        let idp = idp_get(&location(&first)).await;
        let cb = b.follow(&idp).await;
        if cb.status != 302 || !sets_session(&cb) {
            failures.push(format!(
                "10 KB of cookies: callback {} {}",
                cb.status,
                cb.text()
            ));
        } else {
            let page = b.follow(&cb).await;
            if page.status != 200 || !from_echo(&page) {
                failures.push(format!(
                    "10 KB of cookies: page {} after sign-in",
                    page.status
                ));
            }
        }
    }
    // A 10 KB session cookie is no session: one redirect to sign in, never a 5xx.
    let mut b = env.browser();
    b.set_cookie(SESSION, &"A".repeat(10 * 1024));
    let r = b.get("/huge-session").await;
    if !is_idp_redirect(&env, &r) {
        failures.push(format!("10 KB session cookie: {}", r.status));
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deeply_nested_id_tokens_fail_the_sign_in_cleanly() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();
    let cases: Vec<(&str, Tamper, &[u16])> = vec![
        (
            "1 MB ID token",
            Tamper::claims(|c| c["pad"] = "x".repeat(1024 * 1024).into()),
            &[502, 503],
        ),
        (
            "20 KB ID token",
            Tamper::claims(|c| c["pad"] = "x".repeat(20 * 1024).into()),
            &[502],
        ),
        (
            "claims nested 600 deep",
            Tamper::claims(|c| c["deep"] = nested(600)),
            &[502],
        ),
        (
            "header nested 600 deep",
            Tamper::header(|h| h["deep"] = nested(600)),
            &[302, 502],
        ),
        (
            "groups claim with 5000 entries",
            Tamper::claims(|c| {
                c["memberOf"] = json!((0..5000).map(|i| format!("g{i}")).collect::<Vec<_>>())
            }),
            &[302, 502],
        ),
    ];
    for (name, tamper, allowed) in cases {
        env.fake.tamper_next_id_token(tamper);
        let mut b = env.browser();
        let cb = b.sign_in_callback("/big-token").await;
        if !allowed.contains(&cb.status.as_u16()) {
            failures.push(format!("{name}: {} {}", cb.status, cb.text()));
        }
        if cb.status != 302 && sets_session(&cb) {
            failures.push(format!("{name}: a session without a redirect"));
        }
    }
    // The gateway is unharmed: a normal sign-in works afterwards.
    let mut b = env.browser();
    if b.sign_in("/after").await.status != 200 {
        failures.push("sign-in after the oversized tokens failed".into());
    }
    report(failures);
}

/// A directory API answer nested deeper than any parser should follow fails the sync; the
/// last good snapshot ages out and protected routes fail closed (503), public routes keep
/// working, and the next clean answer restores access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_directory_json_fails_closed_and_recovers() {
    let env = SignInEnv::start_with(Options {
        limits: Options::default().limits,
        directory: Some("max_staleness = \"2s\"\n".into()),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/dir").await.status, 200);
    env.fake.directory_faults(|f: &mut DirectoryFaults| {
        f.extra_fields
            .push(("*".into(), "deep".into(), nested(600)));
    });
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while Instant::now() < deadline {
        if b.get("/dir").await.status == 503 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !closed {
        failures
            .push("protected routes never failed closed while the directory was unreadable".into());
    }
    let public = b.get("/public/x").await;
    if public.status != 200 || !from_echo(&public) {
        failures.push(format!("public route during the outage: {}", public.status));
    }
    env.fake
        .directory_faults(|f: &mut DirectoryFaults| f.extra_fields.clear());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = false;
    while Instant::now() < deadline {
        if b.get("/dir").await.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !back {
        failures.push("access did not come back after the directory recovered".into());
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Slow and abandoned clients
// ---------------------------------------------------------------------------------------

fn open_connections(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("jumpgate_open_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// Uploads abandoned mid-body (HTTP/1.1 and HTTP/2) hold no one else up, and the gateway
/// lets go of them once the upstream's answer is overdue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_neither_block_others_nor_live_forever() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &echo.url(), "public", &[]),
        "",
        "upstream_response_timeout = \"4s\"\n",
    )
    .await;
    let c = gw.client();
    let baseline = open_connections(&gw.admin_get("/metrics").await.1);
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut tls = c.connect("app.test", &[b"http/1.1"]).await;
        tls.write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10000000\r\n\r\n",
        )
        .await
        .unwrap();
        tls.write_all(&[b'u'; 16 * 1024]).await.unwrap();
        stalled.push(tls);
    }
    // HTTP/2 streams whose bodies stop after one chunk, several on one connection.
    let mut h2_tasks = Vec::new();
    for _ in 0..2 {
        let tls = c.connect("app.test", &[b"h2"]).await;
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        for _ in 0..5 {
            let mut sender = sender.clone();
            h2_tasks.push(tokio::spawn(async move {
                let body = StreamBody::new(
                    futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(
                        Frame::data(Bytes::from(vec![b'u'; 16 * 1024])),
                    )])
                    .chain(futures_util::stream::pending()),
                );
                let req = Request::post("https://app.test/upload").body(body).unwrap();
                sender.send_request(req).await.map(|r| r.status().as_u16())
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..20 {
        let t = Instant::now();
        let r = c.get("app.test", &format!("/others/{i}")).await;
        if r.status != 200 || t.elapsed() > Duration::from_secs(2) {
            failures.push(format!(
                "request {i} beside the stalled uploads: {} in {:?}",
                r.status,
                t.elapsed()
            ));
        }
    }
    if started.elapsed() > Duration::from_secs(10) {
        failures.push(format!("20 requests took {:?}", started.elapsed()));
    }
    // Each stalled HTTP/1.1 upload is answered (504) or closed once the upstream's answer is
    // overdue, not held open forever.
    let mut ended = 0;
    for tls in &mut stalled {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(8), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => ended += 1,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if raw_status(&text).is_some_and(|s| s == 504 || s == 502 || s == 400) {
                    ended += 1;
                } else {
                    failures.push(format!("stalled upload answered {:?}", text.lines().next()));
                }
            }
            Err(_) => {}
        }
    }
    if ended != stalled.len() {
        failures.push(format!(
            "{} of {} stalled uploads were still held open",
            stalled.len() - ended,
            stalled.len()
        ));
    }
    for t in h2_tasks {
        match tokio::time::timeout(Duration::from_secs(8), t).await {
            Ok(Ok(Ok(504 | 502 | 400))) | Ok(Ok(Err(_))) => {}
            other => failures.push(format!("stalled h2 upload: {other:?}")),
        }
    }
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now_open = -1.0;
    while Instant::now() < deadline {
        now_open = open_connections(&gw.admin_get("/metrics").await.1);
        if now_open <= baseline + 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if now_open > baseline + 2.0 {
        failures.push(format!(
            "open connections stayed at {now_open} (baseline {baseline})"
        ));
    }
    report(failures);
}

/// `server.limits.max_header_bytes` is documented as the largest request header section;
/// a section above it is refused with 431, whether one big field or many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_sections_over_max_header_bytes_are_refused() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let mut failures = Vec::new();
    for kb in [34usize, 40, 46] {
        let n = kb * 1024 / 1030;
        let many: String = (0..n)
            .map(|i| format!("X-Pad-{i:04}: {}\r\n", "p".repeat(1016)))
            .collect();
        let one = format!("X-Big: {}\r\n", "b".repeat(kb * 1024));
        for (shape, headers) in [("many fields", many), ("one field", one)] {
            let req =
                format!("GET /h HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n");
            let text = raw_tolerant(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await;
            if raw_status(&text) != Some(431) {
                failures.push(format!("{kb} KB in {shape}: {:?}", raw_status(&text)));
            }
        }
    }
    report(failures);
}
