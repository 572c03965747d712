//! Path canonicalization end to end: hand-written request lines over real TLS, checking both
//! the route decision and the exact request target the upstream received, and that HTTP/2
//! reaches the same decisions.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use support::{parse_raw, site, Echo, Gateway};

/// What a request must produce.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// 200 from the upstream, which saw exactly this request target.
    Fwd(&'static str),
    /// This status from the gateway; the upstream never saw the request.
    No(u16),
}
use Want::{Fwd, No};

/// (method, request target as written on the request line, expectation).
/// Routes: `/public` public, `/public/admin` deny, `/api/v1/health` public, `/assets` public;
/// everything else protected (401, sign-in is not configured).
const CASES: &[(&str, &str, Want)] = &[
    // Baseline.
    ("GET", "/public", Fwd("/public")),
    ("GET", "/public/x", Fwd("/public/x")),
    ("GET", "/secret", No(401)),
    // `..` climbing out of /public, raw and percent-encoded in every case mix.
    ("GET", "/public/../secret", No(401)),
    ("GET", "/public/%2e%2e/secret", No(401)),
    ("GET", "/public/%2E%2E/secret", No(401)),
    ("GET", "/public/%2e%2E/secret", No(401)),
    ("GET", "/public/%2E%2e/secret", No(401)),
    ("GET", "/public/.%2e/secret", No(401)),
    ("GET", "/public/.%2E/secret", No(401)),
    ("GET", "/public/%2e./secret", No(401)),
    ("GET", "/public/%2E./secret", No(401)),
    ("GET", "/public/..", No(401)),
    ("GET", "/public/%2e%2e", No(401)),
    ("GET", "/public/x/../../secret", No(401)),
    ("GET", "/public/../secret?x=1", No(401)),
    // `..` that stays inside /public, or climbs above the root and back.
    ("GET", "/public/../public/x", Fwd("/public/x")),
    ("GET", "/public/../../../public", Fwd("/public")),
    ("GET", "/public/x/..", Fwd("/public/")),
    ("GET", "/public/admin/../x", Fwd("/public/x")),
    ("GET", "/public/x/../admin", No(403)),
    // Empty and `.` segments.
    ("GET", "//public", Fwd("/public")),
    ("GET", "/public//x", Fwd("/public/x")),
    ("GET", "/./public", Fwd("/public")),
    ("GET", "/public/./x", Fwd("/public/x")),
    ("GET", "/public/%2e", Fwd("/public/")),
    // Encoded separators, backslashes, control bytes, bad escapes.
    ("GET", "/public/a%2Fb", No(400)),
    ("GET", "/public/a%2fb", No(400)),
    ("GET", "/public/..%2f..%2fsecret", No(400)),
    ("GET", "/public/a%5Cb", No(400)),
    ("GET", "/public/a%5cb", No(400)),
    ("GET", "/public/a\\b", No(400)),
    ("GET", "/public/..\\secret", No(400)),
    ("GET", "/public/a%00", No(400)),
    ("GET", "/public/a%0d%0aX-Injected:%20yes", No(400)),
    ("GET", "/public/a%7f", No(400)),
    ("GET", "/public/%zz", No(400)),
    ("GET", "/public/%4", No(400)),
    // `;` parameters: kept when forwarding, never on a dot-segment; matched both with and
    // without them, the stricter route applying (an upstream that keeps them serves another
    // segment at /public;x).
    ("GET", "/public;x/y", No(401)),
    ("GET", "/public/y;x", Fwd("/public/y;x")),
    ("GET", "/public/..;/secret", No(400)),
    ("GET", "/public/.;/x", No(400)),
    ("GET", "/public/%2e%2e;/secret", No(400)),
    ("GET", "/secret;/public", No(401)),
    ("GET", "/public/admin;x", No(403)),
    ("GET", "/public;x/admin;y/z", No(403)),
    // Case: matched folded and as sent, the stricter route applying; forwarded as sent.
    ("GET", "/PUBLIC/x", No(401)),
    ("GET", "/public/X", Fwd("/public/X")),
    ("GET", "/Public/Admin", No(403)),
    ("GET", "/public/ADMIN/x", No(403)),
    ("GET", "/public/%41dmin", No(403)),
    ("GET", "/public/adm%69n", No(403)),
    // Segment boundaries and longest prefix.
    ("GET", "/publicx", No(401)),
    ("GET", "/public/admin", No(403)),
    ("GET", "/public/administrator", Fwd("/public/administrator")),
    ("GET", "/api/v1/health", Fwd("/api/v1/health")),
    ("GET", "/api/v1/healthz", No(401)),
    ("GET", "/api/v1/health/", Fwd("/api/v1/health/")),
    ("GET", "/api/v1", No(401)),
    ("GET", "/assets", Fwd("/assets")),
    ("GET", "/%61ssets/x", Fwd("/assets/x")),
    ("GET", "/%41SSETS/x", No(401)),
    ("GET", "/%61ssets/X", Fwd("/assets/X")),
    ("GET", "/assetsx", No(401)),
    // Double encoding is decoded once only: `%25` stays, matched literally.
    (
        "GET",
        "/public/%252e%252e/secret",
        Fwd("/public/%252e%252e/secret"),
    ),
    ("GET", "/secret/%252e%252e/public", No(401)),
    ("GET", "/%252e%252e/public", No(401)),
    ("GET", "/public/%252F", Fwd("/public/%252F")),
    // UTF-8: overlong and invalid forms refused, valid escapes upper-cased.
    ("GET", "/public/%c0%ae%c0%ae/secret", No(400)),
    ("GET", "/public/%C0%AE", No(400)),
    ("GET", "/public/%ff", No(400)),
    ("GET", "/public/caf%c3%a9", Fwd("/public/caf%C3%A9")),
    ("GET", "/public/a%20b", Fwd("/public/a%20b")),
    // Query strings: kept verbatim, never part of the route decision.
    ("GET", "/secret?x=/public", No(401)),
    ("GET", "/secret?/public/../x", No(401)),
    ("GET", "/public?a=../..", Fwd("/public?a=../..")),
    (
        "GET",
        "/public/x?a=%2e%2e%2F&b=..;/",
        Fwd("/public/x?a=%2e%2e%2F&b=..;/"),
    ),
    // A raw `#` on the request line: the `http` crate drops the fragment while parsing, so
    // nothing after it is routed or forwarded; it can never carry a request past /public.
    ("GET", "/public/x#frag", Fwd("/public/x")),
    ("GET", "/public#/../../secret", Fwd("/public")),
    ("GET", "/secret#/public", No(401)),
    // Absolute-form: the authority must agree with Host (Host: app.test on every case).
    ("GET", "https://app.test/public/x", Fwd("/public/x")),
    ("GET", "https://APP.test/public/x", Fwd("/public/x")),
    ("GET", "https://app.test/secret", No(401)),
    ("GET", "https://app.test/public/../secret", No(401)),
    ("GET", "https://other.test/public/x", No(400)),
    ("GET", "https://user@app.test/public/x", No(400)),
    // Methods: upper-case tokens only; unknown ones are forwarded as they are.
    ("get", "/public", No(400)),
    ("Get", "/public", No(400)),
    ("PURGE", "/public/x", Fwd("/public/x")),
    ("PURGE", "/secret", No(401)),
    ("OPTIONS", "/public", Fwd("/public")),
    ("OPTIONS", "*", No(400)),
];

async fn gateway() -> (Echo, Gateway) {
    let echo = Echo::start().await;
    let gw = Gateway::start(&site(
        "app.test",
        &echo.url(),
        "protected",
        &[
            ("/public", "public"),
            ("/public/admin", "deny"),
            ("/api/v1/health", "public"),
            ("/assets", "public"),
        ],
    ))
    .await;
    (echo, gw)
}

/// Checks one outcome; returns a description of what is wrong, if anything.
fn check(
    method: &str,
    want: Want,
    status: u16,
    from_upstream: bool,
    upstream: Option<(String, String)>,
) -> Option<String> {
    match want {
        Fwd(path) => {
            if status != 200 {
                return Some(format!("want 200 {path}, got {status}"));
            }
            if !from_upstream {
                return Some("200 without x-upstream: not from the upstream".into());
            }
            let Some((got_method, got_path)) = upstream else {
                return Some("the upstream's echo could not be read".into());
            };
            if got_path != path {
                return Some(format!("upstream saw {got_path:?}, want {path:?}"));
            }
            if got_method != method {
                return Some(format!("upstream saw method {got_method}, want {method}"));
            }
            None
        }
        No(code) => {
            if status != code {
                return Some(format!(
                    "want {code}, got {status} (upstream saw {upstream:?})"
                ));
            }
            if from_upstream {
                return Some(format!(
                    "{code} came from the upstream: the request was forwarded"
                ));
            }
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_paths_over_http1() {
    assert!(CASES.len() >= 35);
    let (_echo, gw) = gateway().await;
    let c = gw.client();
    let mut failures = Vec::new();
    for &(method, target, want) in CASES {
        let raw =
            format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let text = c
            .raw("app.test", raw.as_bytes(), Duration::from_secs(5))
            .await;
        let reply = parse_raw(&text);
        let Some(status) = reply.status else {
            failures.push(format!("{method} {target}: no response: {text:?}"));
            continue;
        };
        let from_upstream = reply.header("x-upstream") == Some("echo");
        let upstream = from_upstream.then(|| {
            let j = reply.json();
            (
                j["method"].as_str().unwrap_or("").to_owned(),
                j["path"].as_str().unwrap_or("").to_owned(),
            )
        });
        if let Some(problem) = check(method, want, status, from_upstream, upstream) {
            failures.push(format!("{method} {target}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// The same table over HTTP/2, for every case the `http` crate can express as a request
/// (origin-form targets; the client crate refuses the rest, or drops a fragment itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_paths_over_http2_reach_the_same_decisions() {
    let (_echo, gw) = gateway().await;
    let c = gw.client();
    let mut failures = Vec::new();
    let mut ran = 0;
    for &(method, target, want) in CASES {
        if !target.starts_with('/') || target.contains('#') {
            continue;
        }
        let Ok(method_h2) = Method::from_bytes(method.as_bytes()) else {
            continue;
        };
        let Ok(req) = Request::builder()
            .method(method_h2)
            .uri(format!("https://app.test{target}"))
            .body(Full::new(Bytes::new()))
        else {
            continue;
        };
        ran += 1;
        match c.try_send_h2("app.test", req).await {
            Ok(r) => {
                let from_upstream = r.headers.get("x-upstream").is_some_and(|v| v == "echo");
                let upstream = from_upstream.then(|| {
                    let j = r.json();
                    (
                        j["method"].as_str().unwrap_or("").to_owned(),
                        j["path"].as_str().unwrap_or("").to_owned(),
                    )
                });
                if let Some(problem) =
                    check(method, want, r.status.as_u16(), from_upstream, upstream)
                {
                    failures.push(format!("h2 {method} {target}: {problem}"));
                }
            }
            // A stream refused by the HTTP/2 layer is never forwarded: acceptable for a
            // request the table rejects, a failure for one it forwards.
            Err(e) => {
                if matches!(want, Fwd(_)) {
                    failures.push(format!("h2 {method} {target}: request failed: {e}"));
                }
            }
        }
    }
    assert!(ran >= 35, "only {ran} cases could be sent over HTTP/2");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
