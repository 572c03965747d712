//! Session cookies: tampered, moved to another site or oversized cookies, non-UTF-8 cookies
//! beside ours, and the gateway's cookies kept from the upstream.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// Session cookies
// ---------------------------------------------------------------------------------------

/// A browser whose session cookie is `value` is treated as having no session, and can sign
/// in again from there.
async fn check_tampered_cookie(env: &SignInEnv, name: &str, value: &str) -> Result<(), String> {
    let mut b = env.browser();
    b.set_cookie(SESSION, value);
    let r = b.get("/cookie").await;
    if !is_idp_redirect(env, &r) {
        return Err(format!(
            "{name}: expected a redirect to sign in, got {} {}",
            r.status,
            r.text()
        ));
    }
    let r = b
        .request("GET", "/cookie", &[("accept", "application/json")])
        .await;
    if r.status != 401 {
        return Err(format!("{name}: API request got {}", r.status));
    }
    // No loop: the whole flow, with the tampered cookie still in the jar, signs in.
    let first = b.get("/cookie").await;
    if first.status != 302 {
        return Err(format!("{name}: no redirect: {}", first.status));
    }
    let idp = support::browser::idp_get(&location(&first)).await;
    let cb = b.follow(&idp).await;
    if cb.status != 302 || location(&cb) != "/cookie" {
        return Err(format!(
            "{name}: sign-in after the tampered cookie failed: {} {}",
            cb.status,
            cb.text()
        ));
    }
    let page = b.follow(&cb).await;
    if page.status != 200 {
        return Err(format!("{name}: signed-in page {}", page.status));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_session_cookies_are_no_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let idp = b.authorize("/cookie").await;
    let login = b.cookie(LOGIN).expect("login cookie");
    let cb = b.follow(&idp).await;
    assert_eq!(cb.status, 302);
    let v = b.cookie(SESSION).expect("session cookie");
    assert_eq!(v.len(), 87);
    // Sanity: the untouched value is a session.
    let mut good = env.browser();
    good.set_cookie(SESSION, &v);
    assert_eq!(good.get("/cookie").await.status, 200);

    let cases: Vec<(&str, String)> = vec![
        ("id character flipped", flip(&v, 5)),
        ("tag character flipped", flip(&v, 80)),
        ("last character flipped", flip(&v, 86)),
        ("truncated", v[..86].to_owned()),
        ("tag removed", v[..44].to_owned()),
        ("appended", format!("{v}A")),
        ("empty", String::new()),
        ("login cookie value (other purpose)", login.clone()),
        (
            "id only, tag replaced by id",
            format!("{}.{}", &v[..43], &v[..43]),
        ),
        ("dot moved", {
            let (id, tag) = v.split_once('.').unwrap();
            format!("{}.{}{}", &id[..42], &id[42..], tag)
        }),
        ("padding added", format!("{}=.{}=", &v[..43], &v[44..])),
        (
            "all zeros",
            format!("{}.{}", "A".repeat(43), "A".repeat(43)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, value) in &cases {
        if let Err(e) = check_tampered_cookie(&env, name, value).await {
            failures.push(e);
        }
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_is_valid_only_on_its_own_site() {
    let echo = support::Echo::start().await;
    let sites = format!(
        "{}{}",
        site("app.test", &echo.url(), "protected", &[]),
        site("other.test", &echo.url(), "protected", &[])
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/site").await.status, 200);
    let mut o = Browser::new(env.gw.client(), "other.test");
    o.set_cookie(SESSION, &b.cookie(SESSION).unwrap());
    let r = o.get("/site").await;
    assert!(
        is_idp_redirect(&env, &r),
        "app.test's session let other.test through: {} {}",
        r.status,
        r.text()
    );
    let r = o.get("/.jumpgate/userinfo").await;
    assert_eq!(r.status, 401);
    // It still works where it was made.
    assert_eq!(b.get("/site").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_session_cookie_is_no_session_and_does_not_block_sign_in() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/cookie").await.status, 200);
    let v = b.cookie(SESSION).unwrap();
    let huge = format!("{v}{}", "A".repeat(10 * 1024));
    report(
        check_tampered_cookie(&env, "10 KB session cookie", &huge)
            .await
            .err()
            .into_iter()
            .collect(),
    );
}

// ---------------------------------------------------------------------------------------
// Cookie-header robustness
// ---------------------------------------------------------------------------------------

/// Another cookie on the same host (set by the upstream application, or tossed by a sibling
/// subdomain with `Domain=`) may hold UTF-8 bytes; browsers send it in the same `Cookie`
/// header as the gateway's. It must not hide the gateway's cookies: otherwise anyone who can
/// set a cookie on the parent domain locks every user out of sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_cookie_beside_ours_does_not_hide_the_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/utf8").await.status, 200);
    let real = b.cookie(SESSION).unwrap();
    let mut failures = Vec::new();
    for tossed in ["name=Zoë", "caf\u{e9}=1", "x=\u{1F600}", "theme=\u{ff}"] {
        let header = format!("{tossed}; {SESSION}={real}");
        let got = whoami(&env, &[&header]).await;
        if got.as_deref() != Some(env.alice.as_str()) {
            failures.push(format!(
                "{tossed:?} beside the session: signed in as {got:?}"
            ));
        }
    }
    // And a whole sign-in with such a cookie in the jar completes.
    let mut b = env.browser();
    b.set_cookie("name", "Zoë");
    let callback = b.sign_in_callback("/utf8-signin").await;
    if callback.status != 302 || !sets_session(&callback) {
        failures.push(format!(
            "sign-in with a UTF-8 cookie in the jar: {} {}",
            callback.status,
            callback.text()
        ));
    }
    report(failures);
}

/// The session and login cookies are credentials for the gateway alone: an upstream that
/// logs or echoes request headers (a debug page, an error page, `TRACE`) must never be able
/// to hand them to anyone. Other cookies reach the upstream intact, in one `Cookie` field
/// (RFC 9113 §8.2.3), whether the client spoke HTTP/1.1 or HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_cookies_never_reach_the_upstream() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/cookies").await.status, 200);
    let real = b.cookie(SESSION).unwrap();
    let mut failures = Vec::new();
    let c = env.gw.client();
    for path in ["/protected/x", "/public/x"] {
        for (shape, fields) in [
            (
                "one field",
                vec![format!("app=1; {SESSION}={real}; {SESSION}-login=l; theme=dark")],
            ),
            (
                "a field per cookie",
                vec![
                    "app=1".to_owned(),
                    format!("{SESSION}={real}"),
                    format!("{SESSION}-login=l"),
                    "theme=dark".to_owned(),
                ],
            ),
            (
                "other spellings",
                vec![format!(
                    "app=1; {SESSION}={real}; __host-jumpgate={real}; __HOST-JUMPGATE-LOGIN=x;theme=dark"
                )],
            ),
        ] {
            for h2 in [false, true] {
                let mut req = Request::get(format!("https://app.test{path}"));
                if !h2 {
                    req = req.header("host", "app.test");
                }
                for f in &fields {
                    req = req.header("cookie", f.as_str());
                }
                let req = req.body(Full::new(Bytes::new())).unwrap();
                let r = if h2 {
                    c.send_h2("app.test", req).await
                } else {
                    c.send("app.test", req).await
                };
                let what = format!("{path}, {shape}, h2 {h2}");
                if r.status != 200 || !from_echo(&r) {
                    failures.push(format!("{what}: {} {}", r.status, r.text()));
                    continue;
                }
                let seen = r.upstream_header_all("cookie");
                if seen != ["app=1; theme=dark"] {
                    failures.push(format!("{what}: upstream saw cookies {seen:?}"));
                }
                if r.text().contains(&real) {
                    failures.push(format!("{what}: the session id reached the upstream"));
                }
            }
        }
    }
    // Only the gateway's cookies: no Cookie field at all upstream.
    let req = Request::get("/protected/only")
        .header("host", "app.test")
        .header("cookie", format!("{SESSION}={real}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    if r.status != 200 || !r.upstream_header_all("cookie").is_empty() {
        failures.push(format!(
            "session cookie only: {} upstream saw {:?}",
            r.status,
            r.upstream_header_all("cookie")
        ));
    }
    report(failures);
}

/// A connection remembers the session cookie it last presented, to save opening it again;
/// the store is still asked on every request. A session that ends elsewhere ends on a
/// connection kept alive with it, over HTTP/1.1 and HTTP/2, and a tampered copy of the
/// cookie on that connection is no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_elsewhere_ends_on_a_connection_kept_alive_with_it() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/cookie").await.status, 200);
    let cookie = format!("{SESSION}={}", b.cookie(SESSION).expect("session cookie"));
    let mut tampered = cookie.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let client = env.gw.client();
    let tls = client.connect("app.test", &[b"http/1.1"]).await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let tls = client.connect("app.test", &[b"h2"]).await;
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |uri: &str, cookie: &str| {
        Request::get(uri)
            .header("host", "app.test")
            .header("cookie", cookie)
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut statuses = async |cookie: &str| {
        // An HTTP/1.1 connection takes its next request only once it has finished the last
        // response, which its task may not have noticed yet when the body has been read.
        h1.ready()
            .await
            .expect("HTTP/1.1 connection ready for the next request");
        let one = support::collect(h1.send_request(get("/cookie", cookie)).await.unwrap()).await;
        let two = support::collect(
            h2.send_request(get("https://app.test/cookie", cookie))
                .await
                .unwrap(),
        )
        .await;
        (one.status.as_u16(), two.status.as_u16())
    };
    assert_eq!(statuses(&cookie).await, (200, 200), "signed in");
    assert_eq!(
        statuses(&cookie).await,
        (200, 200),
        "again, on the same connections"
    );
    assert_eq!(
        statuses(&tampered).await,
        (401, 401),
        "tampered, after the real one"
    );
    assert_eq!(
        statuses(&cookie).await,
        (200, 200),
        "the real one still works"
    );

    assert!(
        b.logout().await.status.is_redirection(),
        "logout on its own connection"
    );
    assert_eq!(
        statuses(&cookie).await,
        (401, 401),
        "the ended session still worked on a connection that had presented it"
    );
}
