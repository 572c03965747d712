//! Forward-auth (`/.jumpgate/verify`): the same canonicalization, route match and policy as
//! reverse-proxy mode, answered as decisions for nginx `auth_request`, Traefik and Caddy.

mod support;

use support::browser::Browser;
use support::env::{Options, SignInEnv};
use support::site;

/// Asks the gateway's plain-HTTP verify listener about (method, uri) on app.test.
async fn verify(env: &SignInEnv, b: &Browser, method: &str, uri: &str) -> (u16, http::HeaderMap) {
    let cookie = b.cookie_header();
    let mut headers = vec![
        ("x-forwarded-method", method),
        ("x-forwarded-host", "app.test"),
        ("x-forwarded-uri", uri),
        ("accept", "application/json"),
    ];
    if let Some(c) = &cookie {
        headers.push(("cookie", c));
    }
    support::ask_verify(env.gw.verify, &headers).await
}

fn sites(echo: &str) -> String {
    format!(
        "{}  [[site.route]]\n  path = \"/blocked\"\n  access = \"deny\"\n  [[site.route]]\n  path = \"/admin\"\n  step_up = \"5m\"\n",
        site("app.test", echo, "protected", &[("/public", "public")])
    )
}

async fn env(trusted: bool) -> SignInEnv {
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let step_up_secret = std::env::temp_dir().join(format!("jg-fa-{}", std::process::id()));
    std::fs::write(&step_up_secret, "x").unwrap();
    SignInEnv::start_with(Options {
        sites: Some(sites(&url)),
        server: if trusted {
            "trusted_proxies = [\"127.0.0.1/32\"]".into()
        } else {
            String::new()
        },
        oidc: format!(
            "\n[oidc.step_up]\nclient_id = \"su\"\nclient_secret_file = \"{}\"\n",
            step_up_secret.display()
        ),
        ..Options::default()
    })
    .await
}

/// What reverse-proxy mode decided, in forward-auth terms.
fn as_verdict(status: u16) -> u16 {
    match status {
        302 => 401, // a navigation sent to sign in (or step up)
        s => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_decides_exactly_like_the_reverse_proxy() {
    let env = env(true).await;
    let mut signed_in = env.browser();
    assert_eq!(signed_in.sign_in("/x").await.status, 200);
    let anonymous = env.browser();
    let paths = [
        "/",
        "/x",
        "/public",
        "/public/a",
        "/PUBLIC/a",
        "/public/../x",
        "/public/%2e%2e/x",
        "/public/.%2E/blocked",
        "/%70ublic/a",
        "/public;x/a",
        "/public/..;/x",
        "/blocked",
        "/Blocked/a",
        "/blocked/../public",
        "//public",
        "/a%2Fb",
        "/a%5Cb",
        "/a%00",
        "/%C0%AE%C0%AE/x",
        "/public?x=../blocked",
        "/x?y=/public",
        "/admin",
        "/admin/users",
        "/Admin",
        "/public/%252e%252e/x",
        "/.jumpgate/userinfo",
        "/.JUMPGATE/x",
        "/api/v1/healthz",
        "/public//x",
        "/./public",
    ];
    for path in paths {
        for (who, b) in [("signed in", &signed_in), ("anonymous", &anonymous)] {
            let mut rp_browser = b.clone();
            let rp = rp_browser
                .request(
                    "GET",
                    path,
                    &[("accept", "application/json"), ("sec-fetch-mode", "cors")],
                )
                .await;
            let (fa, _) = verify(&env, b, "GET", path).await;
            let rp = as_verdict(rp.status.as_u16());
            // Reverse proxy answers gateway endpoints itself; forward-auth never authorizes them.
            let expected = if path.to_ascii_lowercase().starts_with("/.jumpgate") {
                404
            } else {
                rp
            };
            assert_eq!(
                fa, expected,
                "{who} {path}: reverse proxy {rp}, forward-auth {fa}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_answers_carry_identity_and_refusals_say_why() {
    let env = env(true).await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/x").await.status, 200);
    let (status, headers) = verify(&env, &b, "GET", "/reports?q=1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-jumpgate-user"], env.alice.as_str());
    assert_eq!(headers["x-jumpgate-email"], "alice@example.com");
    assert!(headers.contains_key("x-jumpgate-assertion"));
    let anonymous = env.browser();
    let (status, headers) = verify(&env, &anonymous, "GET", "/reports?q=1").await;
    assert_eq!(status, 401);
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.ends_with("/.jumpgate/sign-in?rd=%2Freports%3Fq%3D1"),
        "{location}"
    );
    let (status, headers) = verify(&env, &b, "POST", "/admin/users").await;
    assert_eq!(status, 401, "step-up needed");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_user_authentication"));
    let (status, _) = verify(&env, &b, "GET", "/blocked").await;
    assert_eq!(status, 403);
    let (status, _) = verify(&env, &b, "get", "/x").await;
    assert_eq!(status, 400, "methods are canonical too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_callers_cannot_ask() {
    let env = env(false).await;
    let b = env.browser();
    // Without trusted_proxies, nobody's X-Forwarded-Uri is believed: not even a public path
    // gets a 200, on the verify listener or through the public one.
    let (status, headers) = verify(&env, &b, "GET", "/public").await;
    assert_eq!(status, 403);
    assert!(!headers.contains_key("x-jumpgate-user"));
    let mut through_public = env.browser();
    let r = through_public
        .request(
            "GET",
            "/.jumpgate/verify",
            &[
                ("x-forwarded-uri", "/public"),
                ("x-forwarded-host", "app.test"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
}

/// nginx with `auth_request` in front of an upstream, jumpgate deciding: the full sign-in
/// flow through nginx, identity reaching the upstream, and client-sent identity ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_through_the_full_sign_in() {
    let nginx_bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let nginx_bin = nginx_bin.expect("nginx must be installed (tests/run.sh installs it)");
    let echo = support::Echo::start().await;
    let upstream = echo.url();
    let nginx_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = SignInEnv::start_with(Options {
        sites: Some(site("app.test", &upstream, "protected", &[])),
        server: format!("trusted_proxies = [\"127.0.0.1/32\"]\npublic_port = {nginx_port}"),
        ..Options::default()
    })
    .await;
    env.fake.update_app(support::env::CLIENT_ID, |app| {
        app.redirect_uris
            .push(format!("https://app.test:{nginx_port}/.jumpgate/callback"));
    });
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().display().to_string();
    let conf = format!(
        r#"daemon off;
worker_processes 1;
error_log {p}/error.log warn;
pid {p}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;
  uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
  server {{
    listen 127.0.0.1:{nginx_port} ssl;
    server_name app.test;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location = /.jumpgate-auth {{
      internal;
      proxy_pass http://{verify}/.jumpgate/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header Cookie $http_cookie;
    }}
    location /.jumpgate/ {{
      proxy_pass https://{gw};
      proxy_ssl_server_name on;
      proxy_ssl_name $host;
      proxy_set_header Host $host;
    }}
    location / {{
      auth_request /.jumpgate-auth;
      auth_request_set $jg_user $upstream_http_x_jumpgate_user;
      auth_request_set $jg_groups $upstream_http_x_jumpgate_groups;
      auth_request_set $jg_assertion $upstream_http_x_jumpgate_assertion;
      proxy_set_header X-Jumpgate-User $jg_user;
      proxy_set_header X-Jumpgate-Groups $jg_groups;
      proxy_set_header X-Jumpgate-Assertion $jg_assertion;
      error_page 401 = @signin;
      proxy_pass {upstream};
    }}
    location @signin {{
      return 302 https://$host:{nginx_port}/.jumpgate/sign-in?rd=$request_uri;
    }}
  }}
}}
"#,
        cert = env.gw.certs.cert.display(),
        key = env.gw.certs.key.display(),
        verify = env.gw.verify,
        gw = env.gw.addr,
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut nginx = std::process::Command::new(nginx_bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = nginx.try_wait();
    let _guard = Kill(nginx);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", nginx_port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], nginx_port).into();
    let mut b = Browser::new(support::Client::new(addr, &env.gw.certs.ca), "app.test");
    // Not signed in: nginx sends the browser to jumpgate's sign-in, through nginx.
    let first = b.get("/reports?q=1").await;
    assert_eq!(first.status, 302, "{}", first.text());
    let sign_in = b.follow(&first).await;
    assert_eq!(sign_in.status, 302, "{}", sign_in.text());
    let idp = support::browser::idp_get(&support::browser::location(&sign_in)).await;
    assert_eq!(idp.status, 302, "{}", idp.text());
    let back = b.follow(&idp).await;
    assert_eq!(back.status, 302, "callback through nginx: {}", back.text());
    assert_eq!(support::browser::location(&back), "/reports?q=1");
    // Signed in: nginx forwards to the upstream with jumpgate's identity, not the client's.
    let page = b
        .request(
            "GET",
            "/reports?q=1",
            &[("x-jumpgate-user", "forged-admin")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.upstream_path(), "/reports?q=1");
    assert_eq!(
        page.upstream_header_all("x-jumpgate-user"),
        vec![env.alice.clone()]
    );
    assert_eq!(
        page.upstream_header("x-jumpgate-groups").as_deref(),
        Some("Admins,Staff")
    );
    assert!(page.upstream_header("x-jumpgate-assertion").is_some());
    // Logout through nginx ends it.
    let out = b.get("/.jumpgate/logout").await;
    assert_eq!(out.status, 302);
    assert_eq!(b.get("/reports").await.status, 302);
    drop(echo);
}

/// A front proxy asks about every request a user makes (a single-page app makes dozens a
/// minute), so forward-auth answers are not held to the sign-in rate limit, on the verify
/// listener or on a site's `/.jumpgate/verify`; sign-in starts still are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_is_not_held_to_the_sign_in_rate() {
    let echo = support::Echo::start().await;
    let url = echo.url();
    std::mem::forget(echo);
    let env = SignInEnv::start_with(Options {
        sites: Some(site("app.test", &url, "protected", &[])),
        server: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        limits: "sign_in_rate = 5".into(),
        ..Options::default()
    })
    .await;
    let mut b = env.browser();
    assert_eq!(b.sign_in("/x").await.status, 200);
    for i in 0..30 {
        let (status, _) = verify(&env, &b, "GET", &format!("/page/{i}")).await;
        assert_eq!(status, 200, "call {i} on the verify listener");
        let r = b
            .request(
                "GET",
                "/.jumpgate/verify",
                &[
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-host", "app.test"),
                    ("x-forwarded-uri", "/page"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "call {i} on the public listener");
    }
    // Sign-in starts are limited as before.
    let mut anonymous = env.browser();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            anonymous
                .get("/.jumpgate/sign-in?rd=/")
                .await
                .status
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}
