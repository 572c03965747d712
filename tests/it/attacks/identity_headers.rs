//! Identity smuggling: forged identity headers in every spelling, overrides of path, method,
//! host and address, folded header lines, and request trailers.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// Identity-header smuggling and obsolete line folding
// ---------------------------------------------------------------------------------------

/// Header names a client might use to pose as the gateway: the identity namespace in every
/// case, with `_` for `-`, duplicated, and nominated in `Connection` so a naive proxy would
/// remove the gateway's own copies.
const FORGED: &str = "X-Jumpgate-User: forged\r\n\
x-jumpgate-user: forged-lower\r\n\
X_JUMPGATE_USER: forged-underscore\r\n\
X-JUMPGATE_user: forged-mixed\r\n\
x_Jumpgate-Email: forged@evil.example\r\n\
X-Jumpgate-Groups: forged-admins\r\n\
X-Jumpgate-Groups: forged-again\r\n\
X-Jumpgate-Assertion: forged.forged.forged\r\n\
X-Jumpgate-Step-Up-Time: 9999999999\r\n\
X-Jumpgate-: forged-empty-suffix\r\n\
X-Jumpgate-Anything-Else: forged\r\n";

fn identity_leaks(echo_body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(headers) = echo_body["headers"].as_object() {
        for (name, values) in headers {
            let norm = name.to_ascii_lowercase().replace('_', "-");
            if norm.starts_with("x-jumpgate") {
                out.push(format!("{name}: {values}"));
            }
            if values.to_string().contains("forged") {
                out.push(format!("{name}: {values}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_in_any_spelling_never_reach_the_upstream() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let variants = [
        ("plain", String::new()),
        (
            "nominated in Connection",
            "Connection: X-Jumpgate-User, x_jumpgate_user, X-Forwarded-For, Host\r\n".to_owned(),
        ),
        (
            "nominated across several Connection headers",
            "Connection: keep-alive\r\nConnection: x-jumpgate-groups\r\nConnection: X-Jumpgate-Assertion\r\n".to_owned(),
        ),
        (
            "with hop-by-hop look-alikes",
            "Keep-Alive: X-Jumpgate-User\r\nTE: trailers\r\nProxy-Connection: X-Jumpgate-User\r\n".to_owned(),
        ),
    ];
    for (name, extra) in &variants {
        let req = format!(
            "GET /public/id HTTP/1.1\r\nHost: app.test\r\n{FORGED}{extra}Connection: close\r\n\r\n"
        );
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        if reply.status != Some(200) {
            failures.push(format!("{name}: status {:?}", reply.status));
            continue;
        }
        let body = reply.json();
        for leak in identity_leaks(&body) {
            failures.push(format!("{name}: {leak} reached the upstream"));
        }
        // The gateway's own forwarding headers survive a client naming them in Connection.
        if body["headers"]["x-forwarded-for"][0] != "127.0.0.1"
            || body["headers"]["x-forwarded-proto"][0] != "https"
            || body["headers"]["host"][0] != format!("app.test:{}", gw.addr.port()).as_str()
        {
            failures.push(format!("{name}: forwarding headers {}", body["headers"]));
        }
    }
    // HTTP/2 (names arrive lower-case; underscores are legal there).
    let mut req = Request::get("https://app.test/public/id");
    for (n, v) in [
        ("x-jumpgate-user", "forged"),
        ("x_jumpgate_user", "forged-underscore"),
        ("x-jumpgate-groups", "forged"),
        ("x_jumpgate-email", "forged"),
        ("x-jumpgate-step-up-time", "9999999999"),
    ] {
        req = req.header(n, v);
    }
    let r = c
        .send_h2("app.test", req.body(Full::new(Bytes::new())).unwrap())
        .await;
    if r.status != 200 {
        failures.push(format!("h2: status {}", r.status));
    } else {
        for leak in identity_leaks(&r.json()) {
            failures.push(format!("h2: {leak} reached the upstream"));
        }
    }
    // Control: an ordinary header in the same requests does reach the upstream.
    let req = "GET /public/id HTTP/1.1\r\nHost: app.test\r\nX-Jumpgatex-User: kept\r\nX-Other: kept\r\nConnection: close\r\n\r\n";
    let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
    let body = reply.json();
    if body["headers"]["x-other"][0] != "kept" || body["headers"]["x-jumpgatex-user"][0] != "kept" {
        failures.push(format!(
            "control headers were not forwarded: {}",
            body["headers"]
        ));
    }
    report(failures);
}

/// Headers through which frameworks let a request choose the path, method, host or client
/// address the application sees, in any case: none reaches the upstream, and the upstream's
/// `Host` is the site's, never the client's spelling or port.
/// A client that is not a trusted proxy cannot choose the request id the upstream, the answer
/// and the audit log go by: its `X-Request-Id`, sent once or twice, is replaced by the
/// gateway's, and the upstream gets exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chosen_request_id_never_reaches_the_upstream() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    for forged in [
        "X-Request-Id: forged-id\r\n",
        "x-request-id: forged-id\r\nX-Request-Id: forged-again\r\n",
    ] {
        let req = format!(
            "GET /public/id HTTP/1.1\r\nHost: app.test\r\n{forged}Connection: close\r\n\r\n"
        );
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        assert_eq!(reply.status, Some(200), "{forged:?}");
        let sent = reply.json()["headers"]["x-request-id"].clone();
        let sent = sent.as_array().expect("a request id upstream");
        assert_eq!(sent.len(), 1, "{forged:?}: {sent:?}");
        let id = sent[0].as_str().unwrap();
        assert!(!id.contains("forged"), "{forged:?}: {id}");
        assert_eq!(
            reply.header("x-request-id"),
            Some(id),
            "the answer names the same id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_method_host_and_address_overrides_never_reach_the_upstream() {
    let echo = Echo::start().await;
    let gw = path_gateway(&echo.url()).await;
    let c = gw.client();
    let overrides = [
        "X-Original-URL: /public/admin",
        "X-Original-URI: /public/admin",
        "X-Rewrite-URL: /public/admin",
        "x-http-method-override: DELETE",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: DELETE",
        "True-Client-IP: 10.0.0.1",
        "CF-Connecting-IP: 10.0.0.1",
        "X-Client-IP: 10.0.0.1",
        "X-Cluster-Client-IP: 10.0.0.1",
        "Fastly-Client-IP: 10.0.0.1",
        "X-Real-IP: 10.0.0.1",
        "X-FORWARDED-HOST: evil.example",
        "X-Forwarded-Prefix: /public/admin",
        "X-Forwarded-Uri: /public/admin",
        "X-Forwarded-Method: DELETE",
        "X-Forwarded-Port: 1",
        "X-Forwarded-Server: evil.example",
        "X-Host: evil.example",
        "X-Original-Host: evil.example",
        "Forwarded: for=10.0.0.1;host=evil.example;proto=http",
    ];
    let mut failures = Vec::new();
    let want_host = format!("app.test:{}", gw.addr.port());
    for host in [
        "app.test",
        "APP.test",
        "app.test.",
        "app.test:1",
        "app.test:443",
    ] {
        let req = format!(
            "GET /public/id HTTP/1.1\r\nHost: {host}\r\n{}\r\nX-Kept: yes\r\nConnection: close\r\n\r\n",
            overrides.join("\r\n")
        );
        let reply = parse_raw(&raw(&c, "app.test", req.as_bytes(), Duration::from_secs(5)).await);
        if reply.status != Some(200) {
            failures.push(format!("Host {host}: status {:?}", reply.status));
            continue;
        }
        let body = reply.json();
        let seen = body["headers"].as_object().cloned().unwrap_or_default();
        for line in overrides {
            let name = line.split(':').next().unwrap().to_ascii_lowercase();
            let value = seen.get(&name).map(ToString::to_string).unwrap_or_default();
            if value.contains("evil")
                || value.contains("admin")
                || value.contains("DELETE")
                || value.contains("10.0.0.1")
            {
                failures.push(format!("Host {host}: {name} reached the upstream: {value}"));
            }
        }
        if seen.get("host").and_then(|v| v[0].as_str()) != Some(&want_host) {
            failures.push(format!(
                "Host {host}: upstream saw Host {:?}",
                seen.get("host")
            ));
        }
        if body["method"] != "GET" || body["path"] != "/public/id" {
            failures.push(format!(
                "Host {host}: upstream saw {} {}",
                body["method"], body["path"]
            ));
        }
        // Controls: the gateway's own forwarding headers, and an ordinary header.
        if seen.get("x-forwarded-host").and_then(|v| v[0].as_str()) != Some("app.test")
            || seen.get("x-kept").and_then(|v| v[0].as_str()) != Some("yes")
        {
            failures.push(format!("Host {host}: forwarding headers {seen:?}"));
        }
    }
    report(failures);
}

/// Obsolete line folding (RFC 9112 §5.2): a server must reject it or replace it with spaces
/// before interpreting the field. A folded line must never reach the upstream as a header of
/// its own, in particular one in the identity namespace. The gateway's answer is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_header_lines_are_rejected_with_400_and_never_forwarded() {
    let up = RawUpstream::start().await;
    let gw = path_gateway(&up.url()).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let cases = [
        (
            "space fold after an ordinary header",
            "X-Other: a\r\n X-Jumpgate-User: forged\r\n",
        ),
        (
            "tab fold after an ordinary header",
            "X-Other: a\r\n\tX-Jumpgate-User: forged\r\n",
        ),
        (
            "fold continuing Host",
            "X-Other: a\r\nX-B: b\r\n  evil.example\r\n",
        ),
        (
            "fold continuing Transfer-Encoding",
            "Transfer-Encoding:\r\n chunked\r\n",
        ),
        (
            "fold continuing Content-Length",
            "Content-Length: 0\r\n 5\r\n",
        ),
        (
            "fold continuing Connection",
            "Connection: keep-alive,\r\n X-Jumpgate-User\r\n",
        ),
        (
            "fold continuing Cookie",
            "Cookie: a=b\r\n __Host-jumpgate=forged\r\n",
        ),
        (
            "fold as the first header line",
            " X-Jumpgate-User: forged\r\nX-Other: a\r\n",
        ),
        (
            "several folds",
            "X-Other: a\r\n b\r\n c\r\n X-Jumpgate-Groups: forged\r\n",
        ),
    ];
    for (i, (name, lines)) in cases.iter().enumerate() {
        let req = format!(
            "GET /public/fold{i} HTTP/1.1\r\nHost: app.test\r\n{lines}Connection: close\r\n\r\n"
        );
        let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(3)).await;
        if raw_status(&text) != Some(400) {
            failures.push(format!("{name}: want 400, got {:?}", text.lines().next()));
        }
        if let Some(s) = up
            .seen()
            .iter()
            .find(|s| s.path() == format!("/public/fold{i}"))
        {
            failures.push(format!("{name}: forwarded as {:?}", s.head));
        }
    }
    // Control: the same request without the fold is forwarded.
    let req = "GET /public/fold-control HTTP/1.1\r\nHost: app.test\r\nX-Other: a b\r\nConnection: close\r\n\r\n";
    let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(3)).await;
    if raw_status(&text) != Some(200)
        || !up.seen().iter().any(|s| s.path() == "/public/fold-control")
    {
        failures.push(format!("control not forwarded: {:?}", text.lines().next()));
    }
    report(failures);
}

/// Trailer fields arrive after the body, where header checks have already run. None of them
/// may reach the upstream as a header or trailer in the identity namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_carry_identity_upstream() {
    let up = RawUpstream::start().await;
    let gw = Gateway::start(&site("app.test", &up.url(), "public", &[])).await;
    let c = gw.client();
    let mut failures = Vec::new();
    let req = "POST /trailers/h1 HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Jumpgate-User, X-Other\r\nTE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Jumpgate-User: forged\r\nx_jumpgate_groups: forged\r\nX-Other: kept\r\n\r\n";
    let text = raw(&c, "app.test", req.as_bytes(), Duration::from_secs(3)).await;
    if raw_status(&text) != Some(200) {
        failures.push(format!("h1: {:?}", text.lines().next()));
    }
    // HTTP/2 trailers.
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-jumpgate-user", "forged".parse().unwrap());
            t.insert("x_jumpgate_groups", "forged".parse().unwrap());
            t.insert("x-other", "kept".parse().unwrap());
            t
        })),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post("https://app.test/trailers/h2")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    match c.try_send_h2("app.test", req).await {
        Ok(r) if r.status == 200 => {}
        other => failures.push(format!("h2: {other:?}")),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in up.seen() {
        let all = format!("{}\n{}", s.head, s.trailers).to_ascii_lowercase();
        if all.contains("forged") || all.replace('_', "-").contains("x-jumpgate") {
            failures.push(format!(
                "{}: identity reached the upstream: {all:?}",
                s.line
            ));
        }
        if s.body != b"hello" {
            failures.push(format!(
                "{}: body {:?}",
                s.line,
                String::from_utf8_lossy(&s.body)
            ));
        }
    }
    if up.seen().len() != 2 {
        failures.push(format!(
            "the upstream saw {:?}",
            up.seen().iter().map(|s| &s.line).collect::<Vec<_>>()
        ));
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Forged identity headers
// ---------------------------------------------------------------------------------------

/// Every header the echo upstream saw, as (name, values).
fn upstream_headers(body: &Value) -> Vec<(String, Vec<String>)> {
    body["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn check_identity(env: &SignInEnv, body: &Value, ctx: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let headers = upstream_headers(body);
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let want = [
        ("x-jumpgate-user", env.alice.as_str()),
        ("x-jumpgate-email", "alice@example.com"),
        ("x-jumpgate-username", "alice"),
        ("x-jumpgate-groups", "Admins,Staff"),
    ];
    for (name, value) in want {
        if get(name) != vec![value.to_owned()] {
            failures.push(format!("{ctx}: {name} is {:?}", get(name)));
        }
    }
    let assertion = get("x-jumpgate-assertion");
    if assertion.len() != 1 {
        failures.push(format!("{ctx}: assertion {assertion:?}"));
    } else {
        let payload = assertion[0].split('.').nth(1).unwrap_or("");
        let claims: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if claims["sub"] != env.alice.as_str() {
            failures.push(format!(
                "{ctx}: assertion is not the gateway's: {}",
                assertion[0]
            ));
        }
    }
    for (name, values) in &headers {
        let lower = name.to_ascii_lowercase();
        let in_namespace = lower.replace('_', "-").starts_with("x-jumpgate-");
        let known = want.iter().any(|(n, _)| n == name) || name == "x-jumpgate-assertion";
        if in_namespace && !known {
            failures.push(format!("{ctx}: {name}: {values:?} reached the upstream"));
        }
        for v in values {
            if v.contains("forged") || v.contains("evil") || v.contains("root") {
                failures.push(format!("{ctx}: {name}: {v:?} reached the upstream"));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/spoof").await.status, 200);
    let cookie = b.cookie(SESSION).unwrap();
    let client = env.gw.client();
    let mut failures = Vec::new();

    let forged_headers = "X-Jumpgate-User: forged-user\r\n\
         x_jumpgate_user: forged-underscore\r\n\
         X-JUMPGATE-EMAIL: evil@example.com\r\n\
         X-Jumpgate-User: forged-duplicate\r\n\
         X-Jumpgate-Groups: admins\r\n\
         x-jumpgate-groups: Admins,root\r\n\
         X_JUMPGATE_GROUPS: root\r\n\
         X-Jumpgate-Username: root\r\n\
         x-jumpgate_username: root\r\n\
         X-Jumpgate-Assertion: eyJforged.eyJforged.forged\r\n\
         X-Jumpgate-Anything: forged\r\n";
    let cases = [
        (
            "every spelling, duplicates, and Connection naming the gateway's headers",
            format!(
                "{forged_headers}Connection: close, X-Jumpgate-User, X-Jumpgate-Groups, x-jumpgate-assertion\r\n"
            ),
        ),
        (
            "Connection alone naming every identity header",
            "Connection: X-Jumpgate-User, X-Jumpgate-Email, X-Jumpgate-Username, X-Jumpgate-Groups, X-Jumpgate-Assertion, close\r\n".to_owned(),
        ),
        (
            "identity headers listed in several Connection headers",
            format!("{forged_headers}Connection: x-jumpgate-user\r\nConnection: close\r\n"),
        ),
    ];
    for (name, extra) in &cases {
        let raw = format!(
            "GET /spoof HTTP/1.1\r\nHost: app.test\r\nCookie: {SESSION}={cookie}\r\n{extra}\r\n"
        );
        let text = client
            .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
            .await;
        let reply = parse_raw(&text);
        if reply.status != Some(200) {
            failures.push(format!("{name}: status {:?}: {text}", reply.status));
            continue;
        }
        failures.extend(check_identity(&env, &reply.json(), name));
    }

    // Obsolete line folding hiding a header in a continuation line: refused or harmless.
    let raw = format!(
        "GET /spoof HTTP/1.1\r\nHost: app.test\r\nCookie: {SESSION}={cookie}\r\nX-Other: a\r\n X-Jumpgate-User: forged-fold\r\nConnection: close\r\n\r\n"
    );
    let text = client
        .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
        .await;
    let reply = parse_raw(&text);
    match reply.status {
        Some(400) => {}
        Some(200) => failures.extend(check_identity(&env, &reply.json(), "obs-fold")),
        other => failures.push(format!("obs-fold: status {other:?}")),
    }

    // HTTP/2, where names arrive lower-case and may carry underscores.
    let req = Request::get("https://app.test/spoof")
        .header("cookie", format!("{SESSION}={cookie}"))
        .header("x-jumpgate-user", "forged-h2")
        .header("x_jumpgate_user", "forged-h2-underscore")
        .header("x-jumpgate-groups", "root")
        .header("x-jumpgate-email", "evil@example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.send_h2("app.test", req).await;
    if r.status != 200 {
        failures.push(format!("h2: status {}", r.status));
    } else {
        failures.extend(check_identity(&env, &r.json(), "h2"));
    }

    // Public routes carry no identity, and forged headers are removed there too.
    let raw = format!(
        "GET /public/x HTTP/1.1\r\nHost: app.test\r\n{forged_headers}Connection: close\r\n\r\n"
    );
    let text = client
        .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
        .await;
    let reply = parse_raw(&text);
    if reply.status != Some(200) {
        failures.push(format!("public: status {:?}", reply.status));
    } else {
        for (name, values) in upstream_headers(&reply.json()) {
            if name.replace('_', "-").starts_with("x-jumpgate-") {
                failures.push(format!("public: {name}: {values:?} reached the upstream"));
            }
        }
    }
    report(failures);
}
