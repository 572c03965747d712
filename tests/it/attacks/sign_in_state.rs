//! Sign-in state: forged, replayed, expired and cross-browser state, injected codes, session
//! fixation, cookie tossing and logout CSRF.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_state_is_refused() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    // A real sign-in in progress in this very browser, with a real code from the provider.
    let idp = b.authorize("/forged").await;
    let code = query_param(&location(&idp), "code").unwrap();
    let real_state = query_param(&location(&idp), "state").unwrap();
    let random = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let mut failures = Vec::new();
    for (name, query) in [
        ("random state", format!("code={code}&state={random}")),
        (
            "state one character off",
            format!(
                "code={code}&state={}",
                encode(&flip(&real_state, real_state.len() - 1))
            ),
        ),
        ("no state", format!("code={code}")),
        ("empty state", format!("code={code}&state=")),
        (
            "huge state",
            format!("code={code}&state={}", "A".repeat(4096)),
        ),
        (
            "state padded with a space",
            format!("code={code}&state=%20{}", encode(&real_state)),
        ),
    ] {
        let r = b.get(&format!("/.jumpgate/callback?{query}")).await;
        if let Err(e) = check_refused(&r, 400, name) {
            failures.push(e);
        }
        if let Err(e) = check_no_session(&env, &mut b, name).await {
            failures.push(e);
        }
    }
    assert!(
        env.fake.issued().is_empty(),
        "a forged state must never reach the token endpoint"
    );
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_works_once() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    let idp = b.authorize("/once").await;
    let callback = gateway_path(&location(&idp));
    // An attacker who copied the browser (cookies included) before the callback.
    let mut copy = b.clone();
    let ok = b.follow(&idp).await;
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert_eq!(location(&ok), "/once");
    assert!(b.cookie(SESSION).is_some());

    let mut failures = Vec::new();
    let again = b.get(&callback).await;
    if let Err(e) = check_refused(&again, 400, "same browser replays the callback") {
        failures.push(e);
    }
    let r = copy.get(&callback).await;
    if let Err(e) = check_refused(&r, 400, "copied browser replays the callback") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut copy, "copied browser").await {
        failures.push(e);
    }
    report(failures);
    assert_eq!(env.fake.issued().len(), 1, "the code was exchanged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_state_is_refused() {
    let env = SignInEnv::start_with(Options {
        session: "login_timeout = \"1s\"".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    let idp = b.authorize("/slow").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = b.follow(&idp).await;
    let mut failures = Vec::new();
    if let Err(e) = check_refused(&r, 400, "callback after login_timeout") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut b, "expired state").await {
        failures.push(e);
    }
    report(failures);
    assert!(env.fake.issued().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_completes_only_in_the_browser_and_site_that_started_it() {
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
    let mut failures = Vec::new();

    // B has no login cookie at all (the victim was lured to the attacker's callback URL, or
    // the attacker completes the victim's).
    let mut a = env.browser();
    let idp = a.authorize("/a").await;
    let mut b = env.browser();
    let r = b.follow(&idp).await;
    if let Err(e) = check_refused(&r, 400, "browser without login cookie") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut b, "browser without login cookie").await {
        failures.push(e);
    }

    // C has its own login cookie from its own sign-in in progress.
    let mut a = env.browser();
    let idp = a.authorize("/a").await;
    let mut c = env.browser();
    let _own = c.authorize("/c").await;
    assert!(c.cookie(LOGIN).is_some());
    assert_ne!(c.cookie(LOGIN), a.cookie(LOGIN));
    let r = c.follow(&idp).await;
    if let Err(e) = check_refused(&r, 400, "browser with another login cookie") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut c, "browser with another login cookie").await {
        failures.push(e);
    }

    // D is on another site of the same gateway, holding A's login cookie.
    let mut a = env.browser();
    let idp = a.authorize("/a").await;
    let mut d = Browser::new(env.gw.client(), "other.test");
    d.set_cookie(LOGIN, &a.cookie(LOGIN).unwrap());
    let r = d.get(&gateway_path(&location(&idp))).await;
    if let Err(e) = check_refused(&r, 400, "callback on another site") {
        failures.push(e);
    }
    let r = d.get("/protected/after").await;
    if !is_idp_redirect(&env, &r) {
        failures.push(format!("other site: no sign-in redirect: {}", r.status));
    }
    report(failures);
    assert!(
        env.fake.issued().is_empty(),
        "no code from another browser or site reached the token endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_need_a_valid_state() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();

    let mut b = env.browser();
    let first = b.get("/err").await;
    let state = query_param(&location(&first), "state").unwrap();
    let r = b
        .get(&format!(
            "/.jumpgate/callback?error=access_denied&error_description=The+user+is+not+authorized&state={}",
            encode(&state)
        ))
        .await;
    if let Err(e) = check_refused(&r, 403, "access_denied with a valid state") {
        failures.push(e);
    }
    if let Err(e) = check_no_session(&env, &mut b, "access_denied").await {
        failures.push(e);
    }

    let mut b = env.browser();
    let _ = b.get("/err").await;
    for (name, query) in [
        (
            "access_denied with an unknown state",
            "error=access_denied&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ),
        (
            "access_denied without state",
            "error=access_denied".to_owned(),
        ),
    ] {
        let r = b.get(&format!("/.jumpgate/callback?{query}")).await;
        if let Err(e) = check_refused(&r, 400, name) {
            failures.push(e);
        }
        if let Err(e) = check_no_session(&env, &mut b, name).await {
            failures.push(e);
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------------------
// Sign-in: state and nonce replay, code injection, fixation, tossing, logout CSRF
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_state_nonce_and_injected_codes_are_refused() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();

    // A nonce from an earlier, completed sign-in in the same browser.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/first").await.status, 200);
    let old_nonce = env.fake.issued().last().unwrap().nonce.clone().unwrap();
    env.fake
        .tamper_next_id_token(Tamper::claims(move |c| c["nonce"] = old_nonce.into()));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/nonce-replay").await;
    failures.extend(refused(&cb, "a nonce from an earlier sign-in"));

    // A state whose exchange failed is spent: replaying its callback URL does not retry.
    env.fake.tamper_next_id_token(Tamper::sign(Sign::WrongKey));
    let mut b = env.browser();
    let idp = b.authorize("/failed-once").await;
    let path = callback_path(&idp);
    failures.extend(refused(&b.get(&path).await, "tampered token"));
    let again = b.get(&path).await;
    if again.status != 400 || sets_session(&again) {
        failures.push(format!("replay after a failed exchange: {}", again.status));
    }

    // A state refused by the provider is spent too.
    let mut b = env.browser();
    let idp = b.authorize("/provider-error").await;
    let path = callback_path(&idp);
    let state = support::browser::query_param(&path, "state").unwrap();
    let r = b
        .get(&format!(
            "/.jumpgate/callback?error=access_denied&state={}",
            encode(&state)
        ))
        .await;
    failures.extend(refused(&r, "provider error"));
    let r = b.get(&path).await;
    if r.status != 400 || sets_session(&r) {
        failures.push(format!(
            "the real code after a provider error: {}",
            r.status
        ));
    }

    // Authorization-code injection: a code issued for another browser's sign-in, delivered
    // with this browser's state. PKCE and the nonce bind a code to the sign-in it was
    // issued for.
    let mut victim = env.browser();
    let victim_idp = victim.authorize("/victim").await;
    let mut attacker = env.browser();
    let attacker_idp = attacker.authorize("/attacker").await;
    let victim_state = support::browser::query_param(&callback_path(&victim_idp), "state").unwrap();
    let attacker_code =
        support::browser::query_param(&callback_path(&attacker_idp), "code").unwrap();
    let r = victim
        .get(&format!(
            "/.jumpgate/callback?code={}&state={}",
            encode(&attacker_code),
            encode(&victim_state)
        ))
        .await;
    failures.extend(refused(&r, "another sign-in's code"));

    // Parameter pollution: a forged state or code placed before the real ones.
    for (name, order) in [
        ("forged state first", "state=forged&code={C}&state={S}"),
        ("forged code first", "code=forged&code={C}&state={S}"),
        ("empty state first", "state=&state={S}&code={C}"),
    ] {
        let mut b = env.browser();
        let idp = b.authorize("/pollution").await;
        let path = callback_path(&idp);
        let s = support::browser::query_param(&path, "state").unwrap();
        let code = support::browser::query_param(&path, "code").unwrap();
        let q = order
            .replace("{C}", &encode(&code))
            .replace("{S}", &encode(&s));
        let r = b.get(&format!("/.jumpgate/callback?{q}")).await;
        failures.extend(refused(&r, name));
    }

    // Control: an untouched sign-in still works after all of the above.
    let mut b = env.browser();
    if b.sign_in("/control").await.status != 200 {
        failures.push("control sign-in failed".into());
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_planted_before_sign_in_is_never_the_session_after_it() {
    let env = SignInEnv::start().await;
    let mallory = add_mallory(&env);
    let mut failures = Vec::new();
    // Values an attacker can know: her own logged-out session, a random well-formed value,
    // junk, and her live login-binding cookie.
    env.fake.set_next_login(Some(&mallory));
    let mut m = env.browser();
    assert_eq!(m.sign_in("/m").await.status, 200);
    let dead = m.cookie(SESSION).unwrap();
    let out = m.logout().await;
    assert!(
        matches!(out.status.as_u16(), 200 | 302),
        "logout: {}",
        out.status
    );
    assert_eq!(whoami(&env, &[&format!("{SESSION}={dead}")]).await, None);
    let mut m2 = env.browser();
    let start = m2.get("/m2").await;
    let binding = set_value(&start, LOGIN).unwrap();
    let well_formed = format!("{}.{}", "A".repeat(43), "B".repeat(43));
    let planted = [dead.clone(), well_formed, "fixated".to_owned(), binding];

    env.fake.set_next_login(Some(&env.alice));
    for value in &planted {
        let mut b = env.browser();
        b.set_cookie(SESSION, value);
        let page = b.sign_in("/fixation").await;
        if page.status != 200 {
            failures.push(format!(
                "planted {value:.20}: sign-in failed {}",
                page.status
            ));
            continue;
        }
        let now = b.cookie(SESSION).unwrap_or_default();
        if &now == value {
            failures.push(format!("planted {value:.20}: kept as the session"));
        }
        if whoami(&env, &[&format!("{SESSION}={value}")])
            .await
            .is_some()
        {
            failures.push(format!(
                "planted {value:.20}: signed in after the victim's sign-in"
            ));
        }
        if whoami(&env, &[&format!("{SESSION}={now}")])
            .await
            .as_deref()
            != Some(env.alice.as_str())
        {
            failures.push(format!(
                "planted {value:.20}: the new session is not alice's"
            ));
        }
    }
    // Signing in again over a live session issues a new session id.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/again").await.status, 200);
    let before = b.cookie(SESSION).unwrap();
    let cb = b.sign_in_callback("/.jumpgate/sign-in?rd=/again").await;
    if set_value(&cb, SESSION).is_none_or(|v| v == before) {
        failures.push("a second sign-in kept the session id".into());
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_host_only_and_tossed_cookies_neither_break_nor_hijack_a_session() {
    let env = SignInEnv::start().await;
    let mallory = add_mallory(&env);
    let mut failures = Vec::new();
    // Every Set-Cookie of a whole sign-in, a page view and a logout.
    let mut b = env.browser();
    let mut lines = Vec::new();
    let start = b.get("/toss").await;
    lines.extend(set_cookies(&start));
    let idp = idp_get(&location(&start)).await;
    let cb = b.follow(&idp).await;
    lines.extend(set_cookies(&cb));
    let page = b.follow(&cb).await;
    assert_eq!(page.status, 200);
    lines.extend(set_cookies(&page));
    let real = b.cookie(SESSION).unwrap();
    let mut b2 = b.clone();
    let out = b2.logout().await;
    lines.extend(set_cookies(&out));
    // b2's logout ended the session; sign in again for the tossing cases.
    let mut b = env.browser();
    assert_eq!(b.sign_in("/toss").await.status, 200);
    let real_after = b.cookie(SESSION).unwrap();
    assert_ne!(real, real_after);
    let real = real_after;
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        let attrs: Vec<&str> = lower.split(';').skip(1).map(str::trim).collect();
        if !line.starts_with("__Host-") {
            failures.push(format!("cookie without the __Host- prefix: {line}"));
        }
        if attrs.iter().any(|a| a.starts_with("domain")) {
            failures.push(format!("Domain attribute: {line}"));
        }
        if !attrs.contains(&"path=/") || attrs.iter().filter(|a| a.starts_with("path")).count() != 1
        {
            failures.push(format!("not exactly Path=/: {line}"));
        }
        for must in ["secure", "httponly"] {
            if !attrs.contains(&must) {
                failures.push(format!("no {must}: {line}"));
            }
        }
        if !attrs
            .iter()
            .any(|a| *a == "samesite=lax" || *a == "samesite=strict")
        {
            failures.push(format!("no SameSite=Lax/Strict: {line}"));
        }
    }
    // Tossed cookies: forged values with the same name, before or after the real one, in
    // one Cookie header or several, never break the session or put someone else in it.
    env.fake.set_next_login(Some(&mallory));
    let mut m = env.browser();
    assert_eq!(m.sign_in("/m").await.status, 200);
    let m_cookie = m.cookie(SESSION).unwrap();
    let mut m_out = m.clone();
    m_out.logout().await;
    let forged = format!("{}.{}", "A".repeat(43), "B".repeat(43));
    let alice = Some(env.alice.clone());
    let cases: Vec<(&str, Vec<String>, Option<String>)> = vec![
        ("control", vec![format!("{SESSION}={real}")], alice.clone()),
        (
            "forged first",
            vec![format!("{SESSION}=forged; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "forged last",
            vec![format!("{SESSION}={real}; {SESSION}=forged")],
            alice.clone(),
        ),
        (
            "well-formed forgery first",
            vec![format!("{SESSION}={forged}; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "a dead session first",
            vec![format!("{SESSION}={m_cookie}; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "empty first",
            vec![format!("{SESSION}=; {SESSION}={real}")],
            alice.clone(),
        ),
        (
            "oversized first",
            vec![format!("{SESSION}={}; {SESSION}={real}", "A".repeat(4000))],
            alice.clone(),
        ),
        (
            "forged in a Cookie header of its own, first",
            vec![format!("{SESSION}={forged}"), format!("{SESSION}={real}")],
            alice.clone(),
        ),
        (
            "many junk cookies around it",
            vec![format!(
                "{}; {SESSION}={real}; {}",
                (0..60)
                    .map(|i| format!("junk{i}={}", "j".repeat(100)))
                    .collect::<Vec<_>>()
                    .join("; "),
                (0..60)
                    .map(|i| format!("more{i}=x"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )],
            alice.clone(),
        ),
        (
            "lower-case prefix",
            vec![format!("__host-jumpgate={real}")],
            None,
        ),
        ("other case", vec![format!("__HOST-JUMPGATE={real}")], None),
        ("prefix missing", vec![format!("jumpgate={real}")], None),
        (
            "the login cookie's name",
            vec![format!("{LOGIN}={real}")],
            None,
        ),
        (
            "a value with a suffix",
            vec![format!("{SESSION}={real}x")],
            None,
        ),
        (
            "a truncated value",
            vec![format!("{SESSION}={}", &real[..86])],
            None,
        ),
    ];
    for (name, headers, want) in cases {
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let got = whoami(&env, &refs).await;
        if got != want {
            failures.push(format!("{name}: signed in as {got:?}, want {want:?}"));
        }
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refuses_cross_site_requests_and_keeps_the_session() {
    let env = SignInEnv::start().await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/csrf").await.status, 200);
    let cookie = format!("{SESSION}={}", b.cookie(SESSION).unwrap());
    let port = env.gw.addr.port();
    let origin = format!("https://app.test:{port}");
    let evil_sub = format!("https://app.test.evil.example:{port}");
    let http_origin = format!("http://app.test:{port}");
    let sibling = format!("https://other.test:{port}");
    let mut failures = Vec::new();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("GET", vec![("sec-fetch-site", "cross-site")]),
        ("GET", vec![("sec-fetch-site", "CROSS-SITE")]),
        ("GET", vec![("sec-fetch-site", "same-site")]),
        (
            "GET",
            vec![("sec-fetch-site", "cross-site"), ("referer", &origin)],
        ),
        ("POST", vec![("sec-fetch-site", "cross-site")]),
        ("POST", vec![("sec-fetch-site", "same-site")]),
        ("POST", vec![("origin", "https://evil.example")]),
        ("POST", vec![("origin", "null")]),
        ("POST", vec![("origin", &evil_sub)]),
        ("POST", vec![("origin", &http_origin)]),
        ("POST", vec![("origin", &sibling)]),
        ("POST", vec![("origin", "https://app.test")]),
        (
            "POST",
            vec![
                ("sec-fetch-site", "none"),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "POST",
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "POST",
            vec![("origin", &origin), ("sec-fetch-site", "cross-site")],
        ),
    ];
    for (method, headers) in &cases {
        let mut req = Request::builder()
            .method(*method)
            .uri("/.jumpgate/logout")
            .header("host", "app.test")
            .header("cookie", &cookie);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = env
            .gw
            .client()
            .send("app.test", req.body(Full::new(Bytes::new())).unwrap())
            .await;
        if r.status != 403 || !set_cookies(&r).is_empty() {
            failures.push(format!(
                "{method} {headers:?}: want 403 without Set-Cookie, got {} {:?}",
                r.status,
                set_cookies(&r)
            ));
        }
        if whoami(&env, &[&cookie]).await.as_deref() != Some(env.alice.as_str()) {
            failures.push(format!("{method} {headers:?}: the session ended"));
            break;
        }
    }
    // Methods other than GET and POST change nothing.
    for method in ["PUT", "DELETE", "PATCH"] {
        let req = Request::builder()
            .method(method)
            .uri("/.jumpgate/logout")
            .header("host", "app.test")
            .header("cookie", &cookie)
            .header("origin", &origin)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = env.gw.client().send("app.test", req).await;
        if r.status.is_success() || r.status.is_redirection() {
            failures.push(format!("{method} logout answered {}", r.status));
        }
    }
    if whoami(&env, &[&cookie]).await.as_deref() != Some(env.alice.as_str()) {
        failures.push("the session ended before the legitimate logout".into());
    }
    // Control: a same-origin logout ends the session.
    let r = b
        .request(
            "POST",
            "/.jumpgate/logout",
            &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        )
        .await;
    if !matches!(r.status.as_u16(), 200 | 302) || whoami(&env, &[&cookie]).await.is_some() {
        failures.push(format!(
            "same-origin logout did not end the session: {}",
            r.status
        ));
    }
    report(failures);
}
