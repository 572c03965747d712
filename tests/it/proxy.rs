//! The reverse proxy end to end: real TLS in, real HTTP upstream, routing, header hygiene,
//! errors and the admin and redirect listeners.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{raw_status, site, Echo, Gateway};

#[tokio::test]
async fn public_route_reaches_upstream_and_protected_does_not() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site(
        "app.test",
        &echo.url(),
        "protected",
        &[("/api/v1/health", "public"), ("/blocked", "deny")],
    ))
    .await;
    let c = gw.client();

    let r = c.get("app.test", "/api/v1/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_path(), "/api/v1/health");
    assert_eq!(r.headers["x-upstream"], "echo");

    // Segment boundary: /api/v1/healthz is not /api/v1/health.
    let r = c.get("app.test", "/api/v1/healthz").await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Sign-in required"));
    assert!(
        r.headers.get("x-upstream").is_none(),
        "a protected route must never be forwarded"
    );

    let r = c.get("app.test", "/blocked/x").await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("x-upstream").is_none());
}

#[tokio::test]
async fn unknown_host_is_421_and_sni_must_match_host() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}{}",
        site("app.test", &echo.url(), "public", &[]),
        site("other.test", &echo.url(), "protected", &[])
    ))
    .await;
    let c = gw.client();
    let r = c.get("localhost", "/").await;
    assert_eq!(r.status, 421);

    // SNI names the public site, Host the protected one: refused, not routed by either.
    let req = Request::get("/")
        .header("host", "other.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 421);

    // Host is case-insensitive and a trailing dot is ignored.
    let req = Request::get("/x")
        .header("host", "APP.test.")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("host"),
        Some(format!("app.test:{}", gw.addr.port())),
        "the upstream gets the site's host and public port, never the client's spelling"
    );
}

#[tokio::test]
async fn errors_are_html_or_json_by_accept() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "protected", &[])).await;
    let c = gw.client();
    let req = Request::get("/")
        .header("host", "app.test")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json()["error"], "sign_in_required");
    let req = Request::get("/")
        .header("host", "app.test")
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().contains("<h1>Sign-in required</h1>"));
}

#[tokio::test]
async fn hop_by_hop_headers_removed_both_ways() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let req = Request::get("/h")
        .header("host", "app.test")
        .header("connection", "keep-alive, x-drop-me, X-Also")
        .header("x-drop-me", "1")
        .header("x-also", "1")
        .header("keep-alive", "timeout=9")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("upgrade", "h2c")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.status, 200);
    for gone in [
        "x-drop-me",
        "x-also",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert_eq!(r.upstream_header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(r.upstream_header("x-kept").as_deref(), Some("yes"));
    // The upstream's own hop-by-hop headers do not reach the client.
    assert!(r.headers.get("x-upstream-private").is_none());
    assert!(r.headers.get("keep-alive").is_none());
}

#[tokio::test]
async fn forwarded_headers_are_ours_from_untrusted_clients() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let req = Request::get("/f")
        .header("host", "app.test")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(r.upstream_header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("app.test")
    );
    assert_eq!(r.upstream_header("x-real-ip"), None);
    assert_eq!(r.upstream_header("forwarded"), None);
}

#[tokio::test]
async fn forwarded_chain_kept_from_trusted_proxy() {
    let echo = Echo::start().await;
    let gw = Gateway::start_with(
        &site("app.test", &echo.url(), "public", &[]),
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    )
    .await;
    let c = gw.client();
    let req = Request::get("/f")
        .header("host", "app.test")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send("app.test", req).await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[tokio::test]
async fn identity_headers_from_clients_are_stripped_on_every_route() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let raw = b"GET /id HTTP/1.1\r\nHost: app.test\r\nX-Jumpgate-User: admin\r\nx-jumpgate-email: a@b\r\nX_Jumpgate_Groups: admins\r\nX-JUMPGATE-ASSERTION: e30\r\nx-jumpgate-user: again\r\nConnection: close\r\n\r\n";
    let text = c.raw("app.test", raw, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&text), Some(200), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let lower = body.to_ascii_lowercase();
    assert!(
        !lower.contains("jumpgate"),
        "identity header reached upstream: {body}"
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port nobody listens on: bind then drop.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let echo = Echo::start().await;
    let gw = Gateway::start(&format!(
        "{}\n{}upstream_response_timeout = \"300ms\"\n",
        site("other.test", &format!("http://{dead}"), "public", &[]),
        site("app.test", &echo.url(), "public", &[]),
    ))
    .await;
    let c = gw.client();
    let r = c.get("other.test", "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("could not be reached"));
    let r = c.get("app.test", "/slow/2000").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        !r.text().contains("127.0.0.1"),
        "no internal detail in error pages"
    );
    let r = c.get("app.test", "/slow/10").await;
    assert_eq!(r.status, 200);
    let metrics = gw.admin_get("/metrics").await.1;
    assert!(
        metrics.contains("jumpgate_upstream_errors_total{site=\"app.test\",kind=\"Timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn admin_endpoints_only_on_admin_listener() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("localhost", &echo.url(), "public", &[])).await;
    assert_eq!(gw.admin_get("/healthz").await.0, 200);
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    let c = gw.client();
    let r = c.get("localhost", "/x").await;
    assert_eq!(r.status, 200);
    let (status, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("jumpgate_requests_total{site=\"localhost\",route=\"*\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("jumpgate_tls_handshakes_total{outcome=\"Ok\"}"));
    assert!(metrics.contains("jumpgate_request_duration_seconds"));
    assert!(metrics.contains("jumpgate_open_connections"));
    // On the public listener these paths belong to the upstream, not the gateway.
    let r = c.get("localhost", "/metrics").await;
    assert_eq!(r.upstream_path(), "/metrics");
}

#[tokio::test]
async fn plain_http_redirects_to_https_for_known_sites_only() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let resp = support::plain_request(gw.redirect, "/a/b?c=d", "app.test").await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{}/a/b?c=d", gw.addr.port())
    );
    let resp = support::plain_request(gw.redirect, "/", "evil.example").await;
    assert_eq!(resp.status(), 421);
}

#[tokio::test]
async fn http2_client_is_proxied() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    let req = Request::get("https://app.test/h2/path?q=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = c.send_h2("app.test", req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_path(), "/h2/path?q=1");
    assert_eq!(
        r.upstream_header("host"),
        Some(format!("app.test:{}", gw.addr.port()))
    );
    assert_eq!(r.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn gateway_namespace_is_never_forwarded_in_any_spelling() {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site("app.test", &echo.url(), "public", &[])).await;
    let c = gw.client();
    for path in [
        "/.jumpgate/x",
        "/.JUMPGATE/x",
        "/.JumpGate/logout",
        "/.jumpgate;x/y",
        "/.jumpgate",
        "/a/../.jumpgate/x",
    ] {
        let r = c.get("app.test", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.headers.get("x-upstream").is_none(),
            "{path} reached the upstream"
        );
    }
}
