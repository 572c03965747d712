//! The jumpgate demo: development certificates, a stand-in JumpCloud (the same fake identity
//! provider the tests use, with a user picker instead of a password page), a small upstream
//! that shows what it received, and the gateway in front of it on https://localhost:8443. No
//! JumpCloud tenant is needed.
//!
//! Run with `cargo run --release --example demo`, then open https://localhost:8443/
//! (the browser will warn about the development CA unless you trust `.jumpgate-demo/dev-ca.pem`).

#[path = "../tests/support/jumpcloud.rs"]
mod jumpcloud;

use std::convert::Infallible;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const STATE_DIR: &str = ".jumpgate-demo";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(STATE_DIR);
    let certs = jumpgate::devcert::write(dir, &[])?;
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(serve_upstream(upstream));

    let idp = jumpcloud::FakeJumpCloud::start_on(([127, 0, 0, 1], 9000).into()).await;
    seed(&idp);
    std::fs::write(dir.join("client-secret"), "demo-secret\n")?;
    let state = std::fs::canonicalize(dir)?;
    let text = include_str!("../config/demo.toml")
        .replace("@CERT@", &state.join("gateway.pem").display().to_string())
        .replace("@KEY@", &state.join("gateway.key").display().to_string())
        .replace("@STATE@", &state.display().to_string())
        .replace("@ISSUER@", &idp.issuer())
        .replace("@UPSTREAM@", &format!("http://{upstream_addr}"));
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, &text)?;
    let config = jumpgate::config::Config::load(&config_path)?;
    jumpgate::telemetry::init(&config.log);
    let listeners = jumpgate::Listeners::bind(&config).await?;
    println!();
    println!("  jumpgate demo is up:");
    println!("    https://localhost:8443/          protected: sign in (pick a user), then see who you are");
    println!("    https://localhost:8443/public    public: no sign-in");
    println!("    https://localhost:8443/internal  denied to everyone");
    println!("    https://localhost:8443/.jumpgate/logout   sign out");
    println!("  Identity provider (stand-in JumpCloud): {}", idp.issuer());
    println!("    http://localhost:8080/           redirects to https");
    println!("    http://127.0.0.1:9090/metrics    admin listener (health, readiness, metrics)");
    println!("  Development CA: {}", certs.ca.display());
    println!(
        "  e.g. curl --cacert {} https://localhost:8443/",
        certs.ca.display()
    );
    println!();
    jumpgate::run(config, listeners, jumpgate::shutdown::signal()).await?;
    Ok(())
}

/// Users and groups for the demo. Carol is suspended, so JumpCloud refuses her sign-in.
fn seed(idp: &jumpcloud::FakeJumpCloud) {
    let alice = idp.add_user(jumpcloud::User::new("alice.admin"));
    let bob = idp.add_user(jumpcloud::User::new("bob.staff"));
    let mut carol = jumpcloud::User::new("carol.suspended");
    carol.suspend();
    let carol = idp.add_user(carol);
    let admins = idp.add_group("Defguard Admins");
    let staff = idp.add_group("Staff");
    idp.add_member(&admins, &alice);
    idp.add_member(&staff, &alice);
    idp.add_member(&staff, &bob);
    idp.add_member(&staff, &carol);
    let mut app = jumpcloud::App::new(
        "jumpgate-demo",
        "demo-secret",
        "https://localhost:8443/.jumpgate/callback",
    );
    app.groups_claim = Some("memberOf".to_owned());
    app.bound_groups = vec![admins, staff];
    idp.add_app(app);
    idp.set_next_login(None);
}

async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(page))
                .await;
        });
    }
}

/// Shows the request as the upstream received it: what an application behind jumpgate sees.
async fn page(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut rows = String::new();
    for (name, value) in req.headers() {
        let value = if name == http::header::COOKIE || name == http::header::AUTHORIZATION {
            "(hidden)".to_owned()
        } else {
            escape(&String::from_utf8_lossy(value.as_bytes()))
        };
        rows.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name.as_str()),
            value
        ));
    }
    let body = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Demo upstream</title>\
         <style>body{{font:15px system-ui,sans-serif;max-width:48rem;margin:3rem auto}}\
         th{{text-align:left;padding-right:1rem}}td,th{{border-bottom:1px solid #ddd}}</style>\
         <h1>Demo upstream</h1><p>{} {}</p><table>{rows}</table></html>",
        escape(req.method().as_str()),
        escape(&req.uri().to_string())
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(resp)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
