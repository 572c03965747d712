//! Open redirects: every place a client can name where the gateway sends a browser next.
//!
//! Sign-in returns to `rd` (`/.jumpgate/sign-in?rd=`, `/.jumpgate/step-up?rd=`) or to the
//! protected page a navigation came from; after the provider's callback the gateway answers
//! with a `Location`. For a corpus of several hundred payloads, generated systematically
//! (schemes, `//`, `/\`, `\\`, single and double encoding, tabs, CR, LF, NUL, Unicode dots
//! and slashes, userinfo tricks, `javascript:` and `data:`, IDN and IP forms, fragments, very
//! long values), that final `Location` must be a path on the same site: it starts with a
//! single `/`, never `//` or `/\` (raw or percent-decoded), has no scheme, no byte a browser
//! strips or reinterprets, and is not one of the gateway's own endpoints. Logout must only
//! ever redirect to the provider's end-session endpoint with the client id and the
//! configured `post_logout_redirect_uri` (never the ID token), never to a client-chosen URL.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// The payload corpus
// ---------------------------------------------------------------------------------------

/// Where a redirect should not go, in several spellings.
const HOSTS: &[&str] = &[
    "evil.example",
    "evil.example:443/path?x=1",
    "2130706433",
    "0x7f.0.0.1",
    "[::ffff:127.0.0.1]",
    "xn--e1afmkfd.example",
    "\u{435}vil.example",
    "evil\u{3002}example",
    "app.test.evil.example",
];

/// Ways to turn a host into something a browser may read as another origin.
const PREFIXES: &[&str] = &[
    "//",
    "///",
    "////",
    "/\\",
    "\\\\",
    "\\/",
    "/\\/",
    "/\\\\",
    "\\/\\/",
    "https://",
    "http://",
    "HTTPS://",
    "https:",
    "https:/",
    "https:\\\\",
    "//\t",
    "/\t/",
    "\t//",
    " //",
    "\u{b}//",
    "/%09/",
    "/%0a/",
    "/%0d/",
    "/%00/",
    "/%0d%0a/",
    "/\r\n/",
    "/\n/",
    "/\0/",
    "/%2f",
    "/%2F/",
    "%2f%2f",
    "/%5c",
    "/%5C/",
    "%5c%5c",
    "/%252f/",
    "/%25%32%66/",
    "/%c0%af/",
    "/%e2%81%84",
    "/\u{ff0f}",
    "\u{ff0f}\u{ff0f}",
    "/\u{2215}",
    "/\u{3002}",
    "/.//",
    "/..//",
    "/%2e%2e//",
    "/%2e/%2e%2e//",
    "/x/..//",
    "//;@",
    "/@",
    "//app.test@",
    "https://app.test@",
    "//app.test%40",
];

/// Whole payloads that need no host.
fn specials() -> Vec<String> {
    let mut v: Vec<String> = [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(document.domain)",
        "java\tscript:alert(1)",
        "javascript://%0aalert(1)",
        "javascript://app.test/%0aalert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "mailto:a@evil.example",
        "ftp://evil.example/",
        "#//evil.example",
        "?//evil.example",
        "/#//evil.example",
        "/%23//evil.example",
        "//evil.example#@app.test",
        "https://evil.example?@app.test",
        "//evil.example\\@app.test",
        "https://app.test%2eevil.example",
        "https://app.test%252eevil.example",
        "%",
        "%zz//evil.example",
        "%%2f%2fevil.example",
        "",
        " ",
        "\\",
        "/.jumpgate/logout",
        "/.JUMPGATE/logout",
        "/.Jumpgate;v=1/logout",
        "/.jumpgate/callback?code=x&state=y",
        "/x/../.jumpgate/logout",
        "/%2ejumpgate/logout",
        "/.jumpgate/sign-in?rd=//evil.example",
        "/.jumpgate/step-up?rd=https://evil.example",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    v.push(format!("/{}//evil.example", "a".repeat(3000)));
    v.push(format!("//{}.example", "e".repeat(3000)));
    v.push(format!("{}evil.example", "/".repeat(500)));
    v.push(format!("/{}", "%2f".repeat(700)));
    v.push("/\u{feff}/evil.example".into());
    v.push("/\u{200b}/evil.example".into());
    v.push("/\u{2028}/evil.example".into());
    v
}

fn payloads() -> Vec<String> {
    let mut out = Vec::new();
    for (i, prefix) in PREFIXES.iter().enumerate() {
        // Every prefix with the plain host; a rotating selection of the other spellings.
        out.push(format!("{prefix}{}", HOSTS[0]));
        out.push(format!("{prefix}{}", HOSTS[1 + i % (HOSTS.len() - 1)]));
        out.push(format!(
            "{prefix}{}",
            HOSTS[1 + (i + 3) % (HOSTS.len() - 1)]
        ));
        out.push(format!(
            "{prefix}{}",
            HOSTS[1 + (i + 6) % (HOSTS.len() - 1)]
        ));
    }
    out.extend(specials());
    out.sort();
    out.dedup();
    out
}

/// Legitimate targets, which must come back exactly.
const GOOD: &[&str] = &[
    "/",
    "/a/b?c=d",
    "/a%20b",
    "/dashboard?tab=2&next=%2F%2Fevil.example",
    "/evil.example",
    "/search?q=//evil.example",
    "/x?u=https://evil.example/",
];

// ---------------------------------------------------------------------------------------
// Judging a Location
// ---------------------------------------------------------------------------------------

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Why following `location` from `https://app.test/` could leave the site or land on a
/// gateway endpoint, if it could.
fn unsafe_location(location: &[u8]) -> Option<String> {
    if location.first() != Some(&b'/') {
        return Some("not a path (a scheme, or relative)".into());
    }
    if matches!(location.get(1), Some(b'/' | b'\\')) {
        return Some("starts with // or /\\".into());
    }
    if let Some(c) = location
        .iter()
        .find(|&&c| !(0x21..0x7f).contains(&c) || c == b'\\')
    {
        return Some(format!(
            "byte {c:#04x}, which browsers strip or reinterpret"
        ));
    }
    // Browsers resolve a Location without decoding it; the gateway promises more: not even
    // its percent-decoded form starts with `//` or `/\`.
    let once = percent_decode(location);
    if matches!(once.get(1), Some(b'/' | b'\\')) || once.starts_with(b"/\t") {
        return Some("percent-decodes to another host".into());
    }
    let path = once
        .split(|&b| b == b'?' || b == b'#')
        .next()
        .unwrap_or(&[]);
    if path.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Some("a control byte once percent-decoded".into());
    }
    if lands_on_the_gateway(path) {
        return Some("a gateway endpoint".into());
    }
    None
}

/// Whether a percent-decoded path, resolved as a server may resolve it (dot-segments,
/// empty segments merged, `;parameters` dropped, ASCII case folded), is in the gateway's
/// `/.jumpgate` namespace.
/// Written here from RFC 3986 §5.2.4, independently of the gateway's own canonicalization,
/// so that a mistake there cannot hide here.
fn lands_on_the_gateway(path: &[u8]) -> bool {
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for raw in path.split(|&b| b == b'/').skip(1) {
        let name: Vec<u8> = raw
            .split(|&b| b == b';')
            .next()
            .unwrap_or(&[])
            .to_ascii_lowercase();
        match name.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(name),
        }
    }
    segments.first().is_some_and(|s| s == b".jumpgate")
}

#[test]
fn the_judge_refuses_what_it_should() {
    for bad in [
        "//evil",
        "/\\evil",
        "https://evil",
        "evil",
        "/\tevil",
        "/%2F/evil",
        "/%5Cevil",
        "/.jumpgate/logout",
        "/x/../.jumpgate/logout",
        "/.JUMPGATE/x",
        "/.Jumpgate;v=1/logout",
        "/%2Ejumpgate/logout",
        "/a/%2e%2e/.jumpgate/x",
        "/.jumpgate",
        "/\u{e9}",
        "",
    ] {
        assert!(unsafe_location(bad.as_bytes()).is_some(), "{bad:?}");
    }
    for good in GOOD {
        assert!(unsafe_location(good.as_bytes()).is_none(), "{good:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Flows
// ---------------------------------------------------------------------------------------

/// From a reply that redirected to the provider, completes the sign-in and returns the
/// callback's `Location` (raw bytes).
async fn finish(b: &mut Browser, start: &Reply) -> Result<Vec<u8>, String> {
    let idp = idp_get(&location(start)).await;
    if idp.status != 302 {
        return Err(format!("provider answered {}", idp.status));
    }
    let cb = b.follow(&idp).await;
    if cb.status != 302 {
        return Err(format!("callback answered {} {}", cb.status, cb.text()));
    }
    if b.cookie(SESSION).is_none() {
        return Err("callback set no session".into());
    }
    cb.headers
        .get("location")
        .map(|v| v.as_bytes().to_vec())
        .ok_or_else(|| "callback without Location".into())
}

/// Runs `check` for every item, eight at a time, and collects the failures.
async fn in_batches<T, F, Fut>(items: Vec<T>, check: F) -> Vec<String>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let mut failures = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<Fut> = items.by_ref().take(8).map(&check).collect();
        failures.extend(
            futures_util::future::join_all(batch)
                .await
                .into_iter()
                .flatten(),
        );
    }
    failures
}

/// `?rd=` on the sign-in and step-up entry points, percent-encoded as a form would send it
/// and, where the request line allows, written raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rd_on_the_sign_in_entry_points_never_leads_off_site() {
    let env = SignInEnv::start().await;
    let corpus = payloads();
    assert!(corpus.len() >= 200, "only {} payloads", corpus.len());
    let mut cases: Vec<(String, String)> = Vec::new();
    for p in &corpus {
        for entry in ["/.jumpgate/sign-in", "/.jumpgate/step-up"] {
            cases.push((p.clone(), format!("{entry}?rd={}", encode(p))));
        }
        let raw = format!("/.jumpgate/sign-in?rd={p}");
        if http::uri::PathAndQuery::try_from(raw.as_str()).is_ok() && !p.contains(['&', '#', '+']) {
            cases.push((p.clone(), raw));
        }
    }
    let total = cases.len();
    let env = &env;
    let failures = in_batches(cases, |(payload, target)| async move {
        let mut b = env.browser();
        let start = b.get(&target).await;
        if !is_idp_redirect(env, &start) {
            return Some(format!(
                "{payload:?} via {target:.80}: sign-in did not start: {}",
                start.status
            ));
        }
        match finish(&mut b, &start).await {
            Err(e) => Some(format!("{payload:?} via {target:.80}: {e}")),
            Ok(loc) => unsafe_location(&loc).map(|why| {
                format!(
                    "{payload:?} via {target:.80} → Location {:?}: {why}",
                    String::from_utf8_lossy(&loc)
                )
            }),
        }
    })
    .await;
    // Legitimate targets come back exactly.
    let mut failures = failures;
    for good in GOOD {
        let mut b = env.browser();
        let start = b
            .get(&format!("/.jumpgate/sign-in?rd={}", encode(good)))
            .await;
        match finish(&mut b, &start).await {
            Ok(loc) if loc == good.as_bytes() => {}
            other => failures.push(format!("legitimate {good:?}: {other:?}")),
        }
    }
    assert!(total >= 400, "only {total} requests");
    report(failures);
}

/// The return-to remembered from a protected navigation: the request target itself, with
/// its query, is where the browser is sent back after sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_from_a_protected_navigation_never_leads_off_site() {
    let env = SignInEnv::start().await;
    let mut targets: Vec<(String, String)> = Vec::new();
    for p in payloads() {
        let mut candidates = vec![format!("/next?to={p}"), format!("/{p}")];
        if p.starts_with('/') {
            candidates.push(p.clone());
        }
        for t in candidates {
            // The gateway's own endpoints answer for themselves (the entry points are the
            // test above); here only pages that need a sign-in.
            let reserved = lands_on_the_gateway(&percent_decode(
                t.split(['?', '#']).next().unwrap_or("").as_bytes(),
            ));
            if !reserved && t.len() < 4000 && Request::get(t.as_str()).body(()).is_ok() {
                targets.push((p.clone(), t));
            }
        }
    }
    let sent = targets.len();
    assert!(
        sent >= 200,
        "only {sent} payloads can be sent as request targets"
    );
    let env = &env;
    let completed = &std::sync::atomic::AtomicUsize::new(0);
    let mut failures = in_batches(targets.clone(), |(payload, target)| async move {
        let mut b = env.browser();
        let start = b.get(&target).await;
        if start.status == 400 {
            // The gateway refused the path itself: nothing to return to.
            return None;
        }
        completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !is_idp_redirect(env, &start) {
            return Some(format!(
                "{payload:?} as {target:.80}: {} instead of a sign-in redirect",
                start.status
            ));
        }
        match finish(&mut b, &start).await {
            Err(e) => Some(format!("{payload:?} as {target:.80}: {e}")),
            Ok(loc) => unsafe_location(&loc).map(|why| {
                format!(
                    "{payload:?} as {target:.80} → Location {:?}: {why}",
                    String::from_utf8_lossy(&loc)
                )
            }),
        }
    })
    .await;
    let completed = completed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        completed >= 200,
        "only {completed} navigations went through a sign-in"
    );
    // API clients get the sign-in URL in JSON instead: always the gateway's own origin.
    let origin = format!(
        "https://app.test:{}/.jumpgate/sign-in?rd=",
        env.gw.addr.port()
    );
    failures.extend(
        in_batches(targets, |(payload, target)| {
            let origin = origin.clone();
            async move {
                let mut b = env.browser();
                let r = b
                    .request(
                        "GET",
                        &target,
                        &[("accept", "application/json"), ("sec-fetch-mode", "cors")],
                    )
                    .await;
                if r.status != 401 {
                    return (r.status != 400).then(|| format!("{payload:?} as JSON: {}", r.status));
                }
                let url = r.json()["sign_in_url"].as_str().unwrap_or("").to_owned();
                (!url.starts_with(&origin))
                    .then(|| format!("{payload:?} as JSON: sign_in_url {url:?}"))
            }
        })
        .await,
    );
    // A legitimate deep link comes back exactly.
    let mut b = env.browser();
    let start = b.get("/deep/link?x=1&y=%2F").await;
    match finish(&mut b, &start).await {
        Ok(loc) if loc == b"/deep/link?x=1&y=%2F" => {}
        other => failures.push(format!("deep link: {other:?}")),
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------------------

/// Parameter names peers and frameworks use for "where to go next".
const NEXT_PARAMS: &[&str] = &[
    "rd",
    "redirect",
    "redirect_uri",
    "redirect_url",
    "post_logout_redirect_uri",
    "return_to",
    "returnTo",
    "next",
    "url",
    "continue",
    "target",
    "goto",
    "destination",
    "state",
    "id_token_hint",
    "client_id",
    "end_session_endpoint",
];

const EVIL: &[&str] = &[
    "https://evil.example/",
    "//evil.example",
    "/\\evil.example",
    "javascript:alert(1)",
    "https://app.test.evil.example/",
    "http://127.0.0.1:1/",
];

/// What a logout answer may be: a local page, or the provider's end-session endpoint with
/// exactly the client id and the configured `post_logout_redirect_uri`, and never the ID token.
fn check_logout(
    env: &SignInEnv,
    r: &Reply,
    id_token: Option<&str>,
    post_logout: Option<&str>,
    ctx: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    let Some(loc) = r.headers.get("location") else {
        if r.status != 200 {
            failures.push(format!("{ctx}: {} without Location", r.status));
        }
        return failures;
    };
    let loc = String::from_utf8_lossy(loc.as_bytes()).into_owned();
    let endpoint = format!("{}/oauth2/sessions/logout?", env.fake.base_url());
    let Some(query) = loc.strip_prefix(&endpoint) else {
        failures.push(format!("{ctx}: redirected to {loc:?}"));
        return failures;
    };
    if loc.contains("evil") || loc.contains("127.0.0.1:1") || loc.contains("javascript") {
        failures.push(format!("{ctx}: an attacker's value in {loc:?}"));
    }
    for (k, v) in parse_query(query) {
        match k.as_str() {
            "post_logout_redirect_uri" if Some(v.as_str()) == post_logout => {}
            "client_id" if v == support::env::CLIENT_ID => {}
            _ => failures.push(format!(
                "{ctx}: unexpected {k}={v:.60} in the logout redirect"
            )),
        }
    }
    if let Some(t) = id_token.filter(|t| loc.contains(*t)) {
        failures.push(format!(
            "{ctx}: the ID token {t:.20}... is in the logout URL"
        ));
    }
    if !query.contains("client_id=") {
        failures.push(format!("{ctx}: no client_id"));
    }
    failures
}

async fn logout_cases(env: &SignInEnv, post_logout: Option<&str>, idp_logout: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let mut queries: Vec<(String, String)> = NEXT_PARAMS
        .iter()
        .map(|p| (format!("{p}=evil"), format!("{p}={}", encode(EVIL[0]))))
        .collect();
    for evil in EVIL {
        let all: Vec<String> = NEXT_PARAMS
            .iter()
            .map(|p| format!("{p}={}", encode(evil)))
            .collect();
        queries.push((format!("every parameter = {evil}"), all.join("&")));
    }
    for (name, query) in &queries {
        for method in ["GET", "POST"] {
            let mut b = env.browser();
            let page = b.sign_in("/logout-me").await;
            assert_eq!(page.status, 200);
            let id_token = env.fake.issued().last().unwrap().id_token.clone();
            let r = if method == "GET" {
                b.request(
                    "GET",
                    &format!("/.jumpgate/logout?{query}"),
                    &[("sec-fetch-site", "same-origin")],
                )
                .await
            } else {
                // A form post carrying the same parameters in its body and its URL.
                let req = Request::post(format!("/.jumpgate/logout?{query}"))
                    .header("host", "app.test")
                    .header("cookie", b.cookie_header().unwrap())
                    .header("sec-fetch-site", "same-origin")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(query.clone())))
                    .unwrap();
                b.client.send("app.test", req).await
            };
            let ctx = format!("{method} logout, {name}");
            if !idp_logout && r.headers.contains_key("location") {
                failures.push(format!("{ctx}: redirected although idp_logout = false"));
            }
            failures.extend(check_logout(env, &r, Some(&id_token), post_logout, &ctx));
        }
    }
    // Without a session: a local page, never a redirect.
    for (name, query) in queries.iter().rev().take(EVIL.len()) {
        let mut b = env.browser();
        let r = b
            .request(
                "GET",
                &format!("/.jumpgate/logout?{query}"),
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        if r.headers.contains_key("location") || r.status != 200 {
            failures.push(format!(
                "logout without a session, {name}: {} {:?}",
                r.status,
                r.headers.get("location")
            ));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_never_redirects_to_a_client_chosen_url() {
    let post_logout = "https://app.test/signed-out";
    let env = SignInEnv::start_with(Options {
        limits: Options::default().limits,
        oidc: format!("post_logout_redirect_uri = \"{post_logout}\"\n"),
        ..Options::default()
    })
    .await;
    let failures = logout_cases(&env, Some(post_logout), true).await;
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_provider_logout_is_always_a_local_page() {
    let env = SignInEnv::start_with(Options {
        limits: Options::default().limits,
        oidc: "idp_logout = false\n".into(),
        ..Options::default()
    })
    .await;
    let failures = logout_cases(&env, None, false).await;
    // The page itself names no client-chosen place either.
    let mut b = env.browser();
    b.sign_in("/x").await;
    let r = b
        .request(
            "GET",
            "/.jumpgate/logout?rd=https://evil.example/",
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    let mut failures = failures;
    if r.text().contains("evil.example") {
        failures.push("the signed-out page repeats the rd value".into());
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Open redirects
// ---------------------------------------------------------------------------------------

/// Whether a browser following `location` from `https://app.test/` stays on that host and
/// avoids the gateway's own endpoints. Browsers drop tabs and newlines anywhere in a URL,
/// strip leading spaces and control characters and read `\` as `/`, so all of those are
/// refused outright.
fn safe_location(location: &str) -> Result<(), String> {
    let b = location.as_bytes();
    if b.first() != Some(&b'/') {
        return Err("does not start with /".into());
    }
    if matches!(b.get(1), Some(b'/') | Some(b'\\')) {
        return Err("starts with // or /\\".into());
    }
    if let Some(c) = b
        .iter()
        .find(|&&c| c < 0x21 || c == 0x7f || c == b'\\' || c >= 0x80)
    {
        return Err(format!("contains byte {c:#04x}"));
    }
    let decoded = url_decode(location);
    let d = decoded.as_bytes();
    if matches!(d.get(1), Some(b'/') | Some(b'\\')) {
        return Err(format!("decodes to {decoded:?}"));
    }
    let path = decoded.split(['?', '#']).next().unwrap_or("");
    if path.to_ascii_lowercase().starts_with("/.jumpgate") {
        return Err("returns to a gateway endpoint".into());
    }
    Ok(())
}

#[test]
fn safe_location_rejects_what_it_should() {
    for bad in [
        "//evil",
        "/\\evil",
        "https://evil",
        "evil",
        "/\tevil",
        "/%2F/evil",
        "/%5Cevil",
        "/.jumpgate/logout",
        "/é",
    ] {
        assert!(safe_location(bad).is_err(), "{bad:?}");
    }
    for good in ["/", "/a/b?c=d", "/a%20b", "/?next=//evil"] {
        assert!(safe_location(good).is_ok(), "{good:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_never_returns_to_another_host() {
    let env = SignInEnv::start().await;
    let payloads: &[&str] = &[
        "//evil.example",
        "/\\evil.example",
        "/\\\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "https:evil.example",
        "https://evil.example",
        "HTTPS://evil.example",
        "http:/\\/evil.example",
        "//evil.example/%2F..",
        "///evil.example",
        "////evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "/%2f%2fevil.example",
        "/%5Cevil.example",
        "/%5c%5cevil.example",
        "%5C%5Cevil.example",
        "/\tevil.example",
        "/\t/evil.example",
        "\t//evil.example",
        "/%09/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "%0d%0aLocation:%20https://evil.example",
        "/%0d%0aLocation:%20https://evil.example",
        "/x\r\nLocation: https://evil.example",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/.jumpgate/logout",
        "/%2ejumpgate/logout",
        "/x/../.jumpgate/logout",
        "/.jumpgate/callback?code=x&state=y",
        "//evil%00.example",
        "/\0/evil.example",
        "/%00/evil.example",
        "/%2e%2e//evil.example",
        "/..//evil.example",
        "/.//evil.example",
        "/%2e//evil.example",
        " //evil.example",
        " /evil",
        "/\u{7f}/evil.example",
        "/%E3%80%82evil.example",
        "/\u{3002}evil.example",
        "/\u{ff0f}evil.example",
        "//app.test@evil.example",
        "/@evil.example",
        "https://app.test.evil.example/",
        "",
        "/%252f%252fevil.example",
        "/%25%32%66/evil.example",
        "?//evil.example",
        "#//evil.example",
    ];
    assert!(payloads.len() >= 30);
    let mut failures = Vec::new();
    for payload in payloads {
        let mut b = env.browser();
        let start = b
            .get(&format!("/.jumpgate/sign-in?rd={}", encode(payload)))
            .await;
        if !is_idp_redirect(&env, &start) {
            failures.push(format!(
                "{payload:?}: sign-in did not start: {} {}",
                start.status,
                start.text()
            ));
            continue;
        }
        let idp = support::browser::idp_get(&location(&start)).await;
        let cb = b.follow(&idp).await;
        if cb.status != 302 {
            failures.push(format!("{payload:?}: callback {} {}", cb.status, cb.text()));
            continue;
        }
        let Some(to) = cb.headers.get("location") else {
            failures.push(format!("{payload:?}: callback without Location"));
            continue;
        };
        let to = String::from_utf8_lossy(to.as_bytes()).into_owned();
        if let Err(e) = safe_location(&to) {
            failures.push(format!("{payload:?} → Location {to:?}: {e}"));
        }
    }
    // Legitimate targets come back exactly.
    for good in [
        "/a/b?c=d",
        "/a%20b",
        "/dashboard?tab=2&x=%2F",
        "/evil.example",
        "/",
    ] {
        let mut b = env.browser();
        let start = b
            .get(&format!("/.jumpgate/sign-in?rd={}", encode(good)))
            .await;
        let idp = support::browser::idp_get(&location(&start)).await;
        let cb = b.follow(&idp).await;
        if cb.status != 302 || location(&cb) != *good {
            failures.push(format!(
                "legitimate {good:?} not preserved: {} {:?}",
                cb.status,
                cb.headers.get("location")
            ));
        }
    }
    report(failures);
}
