//! API access without a browser: bearer JWTs from configured issuers, decided on with the
//! same directory and group rules as signed-in users.

use crate::support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::env::{Options, SignInEnv};
use support::site;

const AUDIENCE: &str = "jumpgate-api";

fn mint(env: &SignInEnv, claims: serde_json::Value) -> String {
    let key = env.fake.with_state(|s| s.keys.last().cloned().unwrap());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&key.der)).unwrap()
}

fn mint_typed(env: &SignInEnv, typ: &str, claims: serde_json::Value) -> String {
    let key = env.fake.with_state(|s| s.keys.last().cloned().unwrap());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&key.der)).unwrap()
}

fn claims(env: &SignInEnv, sub: &str) -> serde_json::Value {
    let now = jumpgate::clock::now();
    json!({"iss": env.fake.issuer(), "aud": [AUDIENCE], "sub": sub, "iat": now, "exp": now + 300, "email": "alice@example.com"})
}

async fn start() -> SignInEnv {
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let sites = format!(
        "{}api_tokens = true\n  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n",
        site("app.test", &url, "protected", &[])
    );
    let env = SignInEnv::start_with(Options {
        sites: Some(sites),
        directory: Some(String::new()),
        server: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        session:
            "\n[[api_token]]\nissuer = \"https://issuer.invalid/\"\naudience = \"jumpgate-api\"\n"
                .into(),
        ..Options::default()
    })
    .await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_verified_and_decided_like_users() {
    // The issuer is only known once the fake runs, so the environment is built in two steps.
    let fake_issuer_env = start_with_issuer().await;
    let env = &fake_issuer_env;
    let mut api = env.browser();
    api.headers.clear();
    let good = mint(env, claims(env, &env.alice));
    let r = api
        .request(
            "GET",
            "/data",
            &[
                ("authorization", &format!("Bearer {good}")),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-jumpgate-user").as_deref(),
        Some(env.alice.as_str())
    );
    // Control: a token typed as an access token (RFC 9068) passes like an untyped one.
    let typed = mint_typed(env, "at+jwt", claims(env, &env.alice));
    let r = api
        .request(
            "GET",
            "/data",
            &[("authorization", &format!("Bearer {typed}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff"),
        "groups from the directory"
    );
    assert!(
        api.cookies.is_empty(),
        "API calls never get a session cookie"
    );
    let r = api
        .request(
            "GET",
            "/admin/x",
            &[("authorization", &format!("Bearer {good}"))],
        )
        .await;
    assert_eq!(r.status, 200);

    // Forward-auth decides exactly as the reverse proxy does, bearer tokens included.
    let asked = forward_auth(env, &format!("Bearer {good}")).await;
    assert_eq!(asked.0, 200);
    assert_eq!(
        asked.1.get("x-jumpgate-user").map(|v| v.to_str().unwrap()),
        Some(env.alice.as_str())
    );
    assert_eq!(forward_auth(env, "Bearer not-a-jwt").await.0, 401);

    let now = jumpgate::clock::now();
    let bad: Vec<(&str, String)> = vec![
        (
            "expired",
            mint(
                env,
                json!({"iss": env.fake.issuer(), "aud": [AUDIENCE], "sub": env.alice, "iat": now - 900, "exp": now - 600}),
            ),
        ),
        (
            "wrong audience",
            mint(
                env,
                json!({"iss": env.fake.issuer(), "aud": ["someone-else"], "sub": env.alice, "iat": now, "exp": now + 300}),
            ),
        ),
        (
            "unknown issuer",
            mint(
                env,
                json!({"iss": "https://evil.example/", "aud": [AUDIENCE], "sub": env.alice, "iat": now, "exp": now + 300}),
            ),
        ),
        ("tampered", {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                claims(env, "5f0000000000000000000000").to_string(),
            );
            parts.join(".")
        }),
        ("garbage", "not-a-jwt".to_owned()),
        (
            "an ID token: it carries the nonce of a sign-in",
            mint(
                env,
                json!({"iss": env.fake.issuer(), "aud": [AUDIENCE], "sub": env.alice, "iat": now, "exp": now + 300, "nonce": "n"}),
            ),
        ),
        (
            "typed as another kind of token",
            mint_typed(env, "id_token+jwt", claims(env, &env.alice)),
        ),
        (
            "typed as a logout token",
            mint_typed(env, "logout+jwt", claims(env, &env.alice)),
        ),
    ];
    for (what, token) in bad {
        let r = api
            .request(
                "GET",
                "/data",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("accept", "application/json"),
                ],
            )
            .await;
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            r.headers["www-authenticate"],
            "Bearer error=\"invalid_token\", error_description=\"The access token is invalid or expired\"",
            "{what}"
        );
        assert!(r.upstream_header("x-jumpgate-user").is_none());
    }

    // A token whose sub is no directory id does not become the directory user whose email
    // it states: this issuer is not trusted to match by email, verified or not.
    for verified in [json!("true"), json!(true), json!("false")] {
        let foreign = mint(
            env,
            json!({"iss": env.fake.issuer(), "aud": [AUDIENCE], "sub": "someone-else", "iat": now, "exp": now + 300, "email": "alice@example.com", "email_verified": verified}),
        );
        let r = api
            .request(
                "GET",
                "/data",
                &[("authorization", &format!("Bearer {foreign}"))],
            )
            .await;
        // 403 is the gateway's own page: nothing reached the upstream.
        assert_eq!(r.status, 403, "email_verified {verified}: {}", r.text());
        assert!(r.text().contains("Access refused"), "{}", r.text());
    }

    // The same rules as for people: outside the group, refused; suspended, refused.
    let bob = env.fake.add_user(support::jumpcloud::User::new("bob"));
    env.wait_for_a_sync().await;
    let bobs = mint(
        env,
        json!({"iss": env.fake.issuer(), "aud": [AUDIENCE], "sub": bob, "iat": now, "exp": now + 300}),
    );
    assert_eq!(
        api.request(
            "GET",
            "/data",
            &[("authorization", &format!("Bearer {bobs}"))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.request(
            "GET",
            "/admin/x",
            &[("authorization", &format!("Bearer {bobs}"))]
        )
        .await
        .status,
        403
    );
    env.fake.update_user(&bob, |u| u.suspend());
    env.wait_for_a_sync().await;
    assert_eq!(
        api.request(
            "GET",
            "/data",
            &[("authorization", &format!("Bearer {bobs}"))]
        )
        .await
        .status,
        403
    );
}

/// Asks the forward-auth listener about `GET /data` with this `Authorization` header.
async fn forward_auth(env: &SignInEnv, authorization: &str) -> (u16, http::HeaderMap) {
    support::ask_verify(
        env.gw.verify,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/data"),
            ("authorization", authorization),
            ("accept", "application/json"),
        ],
    )
    .await
}

async fn start_with_issuer() -> SignInEnv {
    // Build once to learn nothing: the [[api_token]] issuer must name the fake's issuer, which
    // the environment writes as the [oidc] issuer too; substitute it in the config text.
    let env = start().await;
    let mut env = env;
    env.rest = env
        .rest
        .replace("https://issuer.invalid/", &env.fake.issuer());
    env.restart_gateway().await;
    env.wait_ready().await;
    env
}
