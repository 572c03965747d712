//! The jumpgate demo: development certificates, a small upstream that shows what it
//! received, and the gateway in front of it on https://localhost:8443, with no identity
//! provider tenant needed.
//!
//! Run with `cargo run --release --example demo`, then open https://localhost:8443/
//! (the browser will warn about the development CA unless you trust `.jumpgate-demo/dev-ca.pem`).

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

    let text = include_str!("../config/demo.toml")
        .replace("@CERT@", &certs.cert.display().to_string())
        .replace("@KEY@", &certs.key.display().to_string())
        .replace("@UPSTREAM@", &format!("http://{upstream_addr}"));
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, &text)?;
    let config = jumpgate::config::Config::load(&config_path)?;
    jumpgate::telemetry::init(&config.log);
    let listeners = jumpgate::Listeners::bind(&config).await?;
    println!();
    println!("  jumpgate demo is up:");
    println!("    https://localhost:8443/          a public page (the upstream shows the headers it got)");
    println!("    https://localhost:8443/private   a protected page");
    println!("    https://localhost:8443/internal  a denied page");
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
