//! ID tokens: tampered claims and signatures (`iss`, `aud`, `alg`, `exp`, `nonce`), key-id games
//! and key URLs in headers, time claims at and beyond the allowed skew.

use super::prelude::*;

// ---------------------------------------------------------------------------------------
// ID token attacks
// ---------------------------------------------------------------------------------------

fn claims(f: impl FnOnce(&mut Value) + Send + 'static) -> Tamper {
    Tamper::claims(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_id_tokens_fail_the_sign_in() {
    let env = SignInEnv::start().await;
    let base = env.fake.base_url();
    let now = unix_now();
    let attacker = format!("{base}/attacker");
    let (jku, x5u) = (
        format!("{attacker}/jwks.json"),
        format!("{attacker}/cert.pem"),
    );
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "nonce changed",
            claims(|c| c["nonce"] = "not-the-nonce".into()),
        ),
        (
            "nonce removed",
            claims(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
        ),
        ("iss without the trailing slash", {
            let b = base.clone();
            claims(move |c| c["iss"] = b.into())
        }),
        (
            "iss another provider",
            claims(|c| c["iss"] = "https://oauth.id.jumpcloud.com/".into()),
        ),
        (
            "aud someone else",
            claims(|c| c["aud"] = json!(["someone-else"])),
        ),
        (
            "aud someone else as a string",
            claims(|c| c["aud"] = json!("someone-else")),
        ),
        (
            "aud missing",
            claims(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "aud [client, other] without azp",
            claims(|c| c["aud"] = json!([CLIENT_ID, "other-client"])),
        ),
        (
            "azp another client",
            claims(|c| c["azp"] = "other-client".into()),
        ),
        (
            "exp in the past beyond the skew",
            claims(move |c| c["exp"] = (now - 121 - 60).into()),
        ),
        (
            "exp missing",
            claims(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "iat 10 minutes in the future",
            claims(move |c| c["iat"] = (now + 600).into()),
        ),
        (
            "sub missing",
            claims(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("sub empty", claims(|c| c["sub"] = "".into())),
        (
            "at_hash wrong",
            claims(|c| c["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
        ("alg none", Tamper::sign(Sign::AlgNone)),
        (
            "HS256 keyed with the public key",
            Tamper::sign(Sign::Hs256WithPublicKey),
        ),
        ("unknown kid", Tamper::sign(Sign::UnknownKid)),
        ("signed by an unpublished key", Tamper::sign(Sign::WrongKey)),
        (
            "header alg RS512 over an RS256 signature",
            Tamper::header(|h| h["alg"] = "RS512".into()),
        ),
        (
            "header alg ES256 over an RS256 signature",
            Tamper::header(|h| h["alg"] = "ES256".into()),
        ),
        ("jku and x5u elsewhere with an unknown kid", {
            let (jku, x5u) = (jku.clone(), x5u.clone());
            Tamper {
                header: Some(Box::new(move |h: &mut Value| {
                    h["jku"] = jku.into();
                    h["x5u"] = x5u.into();
                })),
                sign: Sign::UnknownKid,
                claims: None,
            }
        }),
    ];
    let mut failures = Vec::new();
    for (name, tamper) in cases {
        let issued_before = env.fake.issued().len();
        env.fake.tamper_next_id_token(tamper);
        let mut b = env.browser();
        let cb = b.sign_in_callback("/tampered").await;
        if env.fake.issued().len() != issued_before + 1 {
            failures.push(format!("{name}: the token endpoint was not used"));
        }
        if let Err(e) = check_refused(&cb, 502, name) {
            failures.push(e);
        }
        if let Err(e) = check_no_session(&env, &mut b, name).await {
            failures.push(e);
        }
    }
    let fetched_elsewhere: Vec<String> = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/attacker"))
        .map(|r| r.path.clone())
        .collect();
    if !fetched_elsewhere.is_empty() {
        failures.push(format!(
            "the gateway fetched keys named by the token header: {fetched_elsewhere:?}"
        ));
    }
    // Control: the same flow without tampering signs in, so the refusals above are real.
    let mut b = env.browser();
    let page = b.sign_in("/control").await;
    if page.status != 200 {
        failures.push(format!("control sign-in failed: {}", page.status));
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_and_signs_in() {
    let env = SignInEnv::start().await;
    let before = jwks_fetches(&env.fake);
    assert_eq!(before, 1, "discovery fetched the keys once");
    env.fake.rotate_keys();
    let mut b = env.browser();
    let page = b.sign_in("/rotated").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        jwks_fetches(&env.fake),
        before + 1,
        "the unknown kid caused exactly one re-fetch"
    );
    let mut b = env.browser();
    assert_eq!(b.sign_in("/rotated").await.status, 200);
    assert_eq!(jwks_fetches(&env.fake), before + 1, "the new key is cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_twice() {
    let env = SignInEnv::start().await;
    let before = jwks_fetches(&env.fake);
    let mut failures = Vec::new();
    for i in 0..20 {
        env.fake
            .tamper_next_id_token(Tamper::sign(Sign::UnknownKid));
        let mut b = env.browser();
        let cb = b.sign_in_callback("/flood").await;
        if let Err(e) = check_refused(&cb, 502, &format!("unknown kid #{i}")) {
            failures.push(e);
        }
    }
    report(failures);
    let refetches = jwks_fetches(&env.fake) - before;
    assert!(
        (1..=2).contains(&refetches),
        "20 unknown kids caused {refetches} JWKS fetches"
    );
}

// ---------------------------------------------------------------------------------------
// ID-token header tricks and time claims (beyond tests/it/signin_attacks.rs)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_injection_and_key_url_headers_never_choose_the_key() {
    let env = SignInEnv::start().await;
    let base = env.fake.base_url();
    let kid = env.fake.current_kid();
    let mut failures = Vec::new();
    let fetches_before = jwks_fetches(&env.fake);
    // Correctly signed by the provider's key, but naming a key that does not exist.
    let injected: Vec<Value> = vec![
        json!("../../../../etc/passwd"),
        json!("../../.well-known/jwks.json"),
        json!(format!("{base}/.well-known/jwks.json")),
        json!("' OR '1'='1"),
        json!("1; DROP TABLE keys;--"),
        json!(format!("{kid}\u{0}")),
        json!(format!("{kid} ")),
        json!(kid.to_uppercase()),
        json!("%00"),
        json!("k".repeat(4000)),
        json!("k".repeat(20_000)),
        json!(7),
        json!([kid.clone()]),
        json!({"kid": kid.clone()}),
    ];
    for k in injected {
        let label: String = k.to_string().chars().take(40).collect();
        let v = k.clone();
        env.fake
            .tamper_next_id_token(Tamper::header(move |h| h["kid"] = v));
        let mut b = env.browser();
        let cb = b.sign_in_callback("/kid").await;
        failures.extend(refused(&cb, &format!("kid {label}")));
    }
    let refetches = jwks_fetches(&env.fake) - fetches_before;
    if refetches > 2 {
        failures.push(format!("injected kids caused {refetches} key-set fetches"));
    }
    // jku, x5u, x5c and an embedded jwk name other keys; with the real kid and the
    // provider's signature the token is fine and those headers are ignored...
    let attacker = format!("{base}/attacker");
    let extras = {
        let a = attacker.clone();
        move |h: &mut Value| {
            h["jku"] = format!("{a}/jwks.json").into();
            h["x5u"] = format!("{a}/cert.pem").into();
            h["x5c"] =
                json!(["MIIBszCCAVmgAwIBAgIUQ0ZGRkZGRkZGRkZGRkZGRkZGRkZGRkYwCgYIKoZIzj0EAwI="]);
            h["jwk"] = json!({"kty": "RSA", "n": "sXch", "e": "AQAB", "kid": "attacker"});
        }
    };
    env.fake
        .tamper_next_id_token(Tamper::header(extras.clone()));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/ignored").await;
    if cb.status != 302 || !sets_session(&cb) {
        failures.push(format!(
            "real key with jku/x5u/x5c/jwk present: {}",
            cb.status
        ));
    }
    // ...and when the signature is another key's, they do not make it acceptable.
    for (name, sign, kid_header) in [
        (
            "signed by another key, real kid",
            Sign::WrongKey,
            Some(kid.clone()),
        ),
        ("signed by another key, no kid", Sign::WrongKey, None),
        ("unknown kid", Sign::UnknownKid, None),
    ] {
        let extras = extras.clone();
        env.fake.tamper_next_id_token(Tamper {
            header: Some(Box::new(move |h: &mut Value| {
                extras(h);
                match &kid_header {
                    Some(k) => h["kid"] = k.clone().into(),
                    None if sign == Sign::WrongKey => {
                        h.as_object_mut().unwrap().remove("kid");
                    }
                    None => {}
                }
            })),
            sign,
            claims: None,
        });
        let mut b = env.browser();
        let cb = b.sign_in_callback("/foreign-key").await;
        failures.extend(refused(&cb, name));
    }
    let fetched: Vec<String> = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/attacker"))
        .map(|r| r.path.clone())
        .collect();
    if !fetched.is_empty() {
        failures.push(format!("fetched URLs named by token headers: {fetched:?}"));
    }
    report(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_time_claims_at_and_beyond_the_allowed_skew() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();
    let now = unix_now();
    // (case, claim edit, accepted?) — the gateway allows 120 s of skew.
    type Edit = Box<dyn FnOnce(&mut Value) + Send>;
    let cases: Vec<(&str, Edit, bool)> = vec![
        (
            "iat 60 s ahead (within skew)",
            Box::new(move |c| c["iat"] = (now + 60).into()),
            true,
        ),
        (
            "iat 200 s ahead",
            Box::new(move |c| c["iat"] = (now + 200).into()),
            false,
        ),
        (
            "iat a year ahead",
            Box::new(move |c| c["iat"] = (now + 365 * 86400).into()),
            false,
        ),
        (
            "iat far future as a float",
            Box::new(move |c| c["iat"] = json!((now + 10_000) as f64 + 0.5)),
            false,
        ),
        (
            "iat as a string",
            Box::new(move |c| c["iat"] = now.to_string().into()),
            false,
        ),
        (
            "iat missing",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            false,
        ),
        (
            "exp 60 s ago (within skew)",
            Box::new(move |c| c["exp"] = (now - 60).into()),
            true,
        ),
        (
            "exp as a string",
            Box::new(move |c| c["exp"] = (now + 3600).to_string().into()),
            false,
        ),
        ("exp 0", Box::new(|c| c["exp"] = 0.into()), false),
        ("exp negative", Box::new(|c| c["exp"] = (-1).into()), false),
        // No date at all: openidconnect refuses a time it cannot represent, and nothing
        // overflows on the way.
        (
            "iat negative, far past",
            Box::new(|c| c["iat"] = json!(-1e300)),
            false,
        ),
        (
            "iat a day ago",
            Box::new(move |c| c["iat"] = (now - 86400).into()),
            true,
        ),
    ];
    for (name, edit, accept) in cases {
        env.fake.tamper_next_id_token(Tamper {
            claims: Some(edit),
            ..Tamper::default()
        });
        let mut b = env.browser();
        let cb = b.sign_in_callback("/time").await;
        let ok = cb.status == 302 && sets_session(&cb);
        if ok != accept {
            failures.push(format!(
                "{name}: want accepted={accept}, got {} (session {ok})",
                cb.status
            ));
        }
        if cb.status.as_u16() >= 500 && cb.status != 502 {
            failures.push(format!("{name}: {}", cb.status));
        }
    }
    report(failures);
}

/// RFC 7519 §4.1.5: a JWT "MUST NOT be accepted for processing" before its `nbf`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_not_yet_valid_is_refused() {
    let env = SignInEnv::start().await;
    let now = unix_now();
    env.fake
        .tamper_next_id_token(Tamper::claims(move |c| c["nbf"] = (now + 3600).into()));
    let mut b = env.browser();
    let cb = b.sign_in_callback("/nbf").await;
    report(refused(&cb, "nbf an hour ahead").into_iter().collect());
}

/// An `exp` at the edge of the integer range is refused like any other bad expiry, not
/// by a panic in the request task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exp_at_the_integer_limit_is_refused_without_a_panic() {
    let env = SignInEnv::start().await;
    let mut failures = Vec::new();
    for (name, exp) in [
        ("exp i64::MAX", json!(i64::MAX)),
        ("exp 1e300", json!(1e300)),
    ] {
        env.fake
            .tamper_next_id_token(Tamper::claims(move |c| c["exp"] = exp));
        let mut b = env.browser();
        let first = b.get("/exp").await;
        let idp = idp_get(&location(&first)).await;
        let path = callback_path(&idp);
        let req = Request::get(path.as_str())
            .header("host", "app.test")
            .header("cookie", b.cookie_header().unwrap_or_default())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let tls = b.client.connect("app.test", &[b"http/1.1"]).await;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        match sender.send_request(req).await {
            Ok(resp) => {
                let r = support::collect(resp).await;
                failures.extend(refused(&r, name));
            }
            Err(e) => failures.push(format!("{name}: no answer ({e}): the request task died")),
        }
    }
    report(failures);
}
