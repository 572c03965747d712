//! The environment `benches/load.sh` measures jumpgate in: a stand-in JumpCloud (the fake
//! identity provider and directory the tests use), development certificates and gateway
//! configurations, plus a browser stand-in that signs in and hands the session cookie to the
//! load generator. Everything listens on 127.0.0.1 only.
//!
//! ```text
//! bench_env idp --dir DIR --gateway-port P --upstream-port U --admin-port A [--users N]
//!               [--redis-url URL] [--max-seconds S]
//!     Starts the provider (a sign-in application and a step-up application that requires
//!     MFA), writes DIR/dev-ca.pem, DIR/gateway.pem, DIR/gateway.key and four gateway
//!     configurations: gateway-session.toml (sign-in, in-memory sessions, no directory),
//!     gateway-directory.toml (the same plus a [directory] snapshot and allow_groups),
//!     gateway-directory-log.toml (the same, logging as shipped: an access line per request)
//!     and gateway-redis.toml (sessions in Redis at URL, no directory). Every site has /public
//!     (public), /admin (step-up within 15 minutes, for every method) and protects everything else. Prints one
//!     JSON line, then serves for at most S seconds (default 900) or until killed.
//! bench_env signin --dir DIR --gateway-port P [--step-up PATH] [--count N] [--concurrency C]
//!               [--max-seconds S]
//!     Signs in through the gateway's whole code flow (protected page, provider, callback),
//!     then, with --step-up, through the step-up flow for PATH. With N = 1 prints
//!     {"cookie": "__Host-jumpgate=..."}; otherwise runs N sign-ins (at most S seconds, default
//!     20) on C parallel browsers and prints the rate.
//! bench_env floor --dir DIR --port P --upstream-port U
//!     The floor jumpgate is measured against: a TLS reverse proxy on jumpgate's own crates
//!     and settings that does nothing but forward (see `floor`). Serves until killed.
//! ```

#[path = "../tests/support/jumpcloud.rs"]
mod jumpcloud;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// The host the benchmark site is served as.
const HOST: &str = "app.test";
const CLIENT_ID: &str = "jumpgate-bench";
const CLIENT_SECRET: &str = "bench-secret";
const STEP_UP_ID: &str = "jumpgate-bench-step-up";
const STEP_UP_SECRET: &str = "bench-step-up-secret";
const SESSION_COOKIE: &str = "__Host-jumpgate";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The allocator jumpgate's binary uses, so that the floor allocates as the gateway does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").ok_or("--dir is required")?);
    if args.get(1).map(String::as_str) == Some("floor") {
        // The gateway's runtime: worker threads as TOKIO_WORKER_THREADS says, and the
        // scheduler the gateway picks for that many.
        let runtime = jumpgate::runtime::build(jumpgate::runtime::workers()?)?;
        return runtime.block_on(floor(&args, &dir));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("idp") => runtime.block_on(idp(&args, &dir)),
        Some("signin") => runtime.block_on(signin(&args, &dir)),
        _ => Err("usage: bench_env idp|signin|floor --dir DIR ... (see the file's header)".into()),
    }
}

/// Starts the provider, seeds it and writes the gateway configurations.
async fn idp(args: &[String], dir: &Path) -> Result<(), Error> {
    let gateway_port = num(args, "--gateway-port", 0);
    let upstream_port = num(args, "--upstream-port", 0);
    let admin_port = num(args, "--admin-port", 0);
    let users = num(args, "--users", 2_000) as usize;
    let redis_url = arg(args, "--redis-url").unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let max_seconds = num(args, "--max-seconds", 900);
    if gateway_port == 0 || upstream_port == 0 || admin_port == 0 {
        return Err("--gateway-port, --upstream-port and --admin-port are required".into());
    }
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    jumpgate::devcert::write(&dir, &[HOST.to_owned()])?;

    let fake = jumpcloud::FakeJumpCloud::start().await;
    // The signed-in user, in the group the directory configuration allows, plus a directory
    // of `users` others in 100 groups so the snapshot is not trivially small.
    let alice = fake.add_user(jumpcloud::User::new("alice"));
    let staff = fake.add_group("Staff");
    fake.add_member(&staff, &alice);
    let groups: Vec<String> = (0..100)
        .map(|g| fake.add_group(&format!("Team {g:03}")))
        .collect();
    for i in 0..users {
        let id = fake.add_user(jumpcloud::User::new(&format!("user{i:05}")));
        for k in 0..3 {
            fake.add_member(&groups[(i * 7 + k * 31) % groups.len()], &id);
        }
    }
    let mut app = jumpcloud::App::new(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("https://{HOST}:{gateway_port}/.jumpgate/callback"),
    );
    app.groups_claim = Some("memberOf".to_owned());
    app.bind_everyone = true;
    fake.add_app(app);
    let mut step_up = jumpcloud::App::new(
        STEP_UP_ID,
        STEP_UP_SECRET,
        &format!("https://{HOST}:{gateway_port}/.jumpgate/step-up/callback"),
    );
    step_up.require_mfa = true;
    step_up.bind_everyone = true;
    fake.add_app(step_up);
    fake.set_next_login(Some(&alice));

    std::fs::write(dir.join("client-secret"), format!("{CLIENT_SECRET}\n"))?;
    std::fs::write(dir.join("step-up-secret"), format!("{STEP_UP_SECRET}\n"))?;
    std::fs::write(dir.join("api-key"), fake.api_key())?;
    // Access logs off (nginx runs without one too), except in gateway-directory-log.toml,
    // which logs as shipped (level info, an access line per request) against an nginx with
    // its access log on; every sign-in of the benchmark comes from 127.0.0.1, so the per-IP
    // sign-in rate limit is raised out of the way.
    let common = |session: &str, log: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{gateway_port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
             tls_cert = \"gateway.pem\"\ntls_key = \"gateway.key\"\nshutdown_grace = \"1s\"\nstate_dir = \"state\"\n\n\
             [server.limits]\nsign_in_rate = 100000\n\n\
             [log]\n{log}\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"client-secret\"\n\
             scopes = [\"openid\", \"profile\", \"email\"]\ngroups_claim = \"memberOf\"\n\n\
             [oidc.step_up]\nclient_id = \"{STEP_UP_ID}\"\nclient_secret_file = \"step-up-secret\"\n\n\
             [session]\nkey_file = \"state/session.key\"\n{session}\n\
             [identity]\nsigning_key_file = \"state/assertion.key\"\n\n",
            issuer = fake.issuer()
        )
    };
    const QUIET: &str = "level = \"warn\"\naccess = false\n";
    let site = |allow: &str| {
        format!(
            "[[site]]\nhost = \"{HOST}\"\nupstream = \"http://127.0.0.1:{upstream_port}\"\n\
             access = \"protected\"\n{allow}\n  [[site.route]]\n  path = \"/public\"\n  access = \"public\"\n\
             \n  [[site.route]]\n  path = \"/admin\"\n  step_up = \"15m\"\n  step_up_exempt_methods = []\n"
        )
    };
    std::fs::write(
        dir.join("gateway-session.toml"),
        format!("{}{}", common("", QUIET), site("")),
    )?;
    std::fs::write(
        dir.join("gateway-redis.toml"),
        format!(
            "{}{}",
            common(
                &format!(
                    "store = \"redis\"\nredis_url = \"{redis_url}\"\nkey_prefix = \"jumpgate-bench-{}:\"\n",
                    std::process::id()
                ),
                QUIET
            ),
            site("")
        ),
    )?;
    for (file, log) in [
        ("gateway-directory.toml", QUIET),
        (
            "gateway-directory-log.toml",
            "level = \"info\"\naccess = true\n",
        ),
    ] {
        std::fs::write(
            dir.join(file),
            format!(
                "{}[directory]\nprovider = \"jumpcloud\"\napi_url = \"{}\"\napi_key_file = \"api-key\"\n\
                 cache_file = \"state/directory.json\"\nsync_interval = \"10m\"\nrequest_interval = \"1ms\"\n\n{}",
                common("", log),
                fake.base_url(),
                site("allow_groups = [\"Staff\"]")
            ),
        )?;
    }
    println!(
        "{}",
        serde_json::json!({
            "issuer": fake.issuer(),
            "idp": fake.addr().to_string(),
            "ca": dir.join("dev-ca.pem"),
            "configs": [
                dir.join("gateway-session.toml"),
                dir.join("gateway-directory.toml"),
                dir.join("gateway-directory-log.toml"),
                dir.join("gateway-redis.toml"),
            ],
            "directory_users": users + 1,
        })
    );
    tokio::time::sleep(Duration::from_secs(max_seconds)).await;
    Ok(())
}

/// One HTTP/1.1 keep-alive connection, reopened when the server closes it.
struct Conn {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    async fn open(&mut self) -> Result<SendRequest<Empty<Bytes>>, Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            Some(connector) => {
                let tls = connector
                    .connect(ServerName::try_from(HOST.to_owned())?, tcp)
                    .await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }

    async fn get(
        &mut self,
        path: &str,
        host: &str,
        cookie: Option<&str>,
    ) -> Result<(StatusCode, http::HeaderMap), Error> {
        for attempt in 0..2 {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.open().await?,
            };
            let mut req = Request::get(path)
                .header("host", host)
                .header("accept", "text/html")
                .header("sec-fetch-mode", "navigate");
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            match sender.send_request(req.body(Empty::new())?).await {
                Ok(resp) => {
                    let resp: Response<Incoming> = resp;
                    let (parts, body) = resp.into_parts();
                    body.collect().await?;
                    self.sender = Some(sender);
                    return Ok((parts.status, parts.headers));
                }
                Err(e) if attempt == 0 => {
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err("unreachable".into())
    }
}

fn location(headers: &http::HeaderMap) -> Result<String, Error> {
    Ok(headers
        .get("location")
        .ok_or("no Location")?
        .to_str()?
        .to_owned())
}

/// One browser: a cookie jar for the gateway, a connection to it and one to the provider.
struct Browser {
    gateway: Conn,
    idp: Conn,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Keeps every cookie the gateway sets, drops those it clears.
    fn store(&mut self, headers: &http::HeaderMap) {
        for line in headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let (pair, attrs) = line.split_once(';').unwrap_or((line, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            self.cookies.retain(|(k, _)| *k != name);
            if !attrs.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.push((name, value));
            }
        }
    }

    /// GET on the gateway with this browser's cookies.
    async fn gateway_get(&mut self, path: &str) -> Result<(StatusCode, http::HeaderMap), Error> {
        let cookie = self.cookie_header();
        let (status, headers) = self.gateway.get(path, HOST, cookie.as_deref()).await?;
        self.store(&headers);
        Ok((status, headers))
    }

    /// From a gateway page that redirects to the provider, through the provider, to the reply
    /// of the gateway's callback.
    async fn through_provider(&mut self, path: &str) -> Result<(), Error> {
        let (status, headers) = self.gateway_get(path).await?;
        if status != StatusCode::FOUND {
            return Err(format!("{path} answered {status}, not a redirect to the provider").into());
        }
        let authorize = location(&headers)?;
        let rest = authorize
            .strip_prefix("http://")
            .ok_or("provider URL is not http://")?;
        let (authority, provider_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (status, headers) = self.idp.get(provider_path, authority, None).await?;
        if status != StatusCode::FOUND {
            return Err(format!("provider answered {status}").into());
        }
        let callback = location(&headers)?;
        let callback = callback
            .strip_prefix(&format!("https://{HOST}:{}", self.gateway.addr.port()))
            .ok_or("callback on another origin")?
            .to_owned();
        let (status, _) = self.gateway_get(&callback).await?;
        if status != StatusCode::FOUND {
            return Err(format!("callback answered {status}").into());
        }
        Ok(())
    }

    /// The whole code flow from a protected page, then the step-up for `step_up` if given;
    /// returns `__Host-jumpgate=VALUE`.
    async fn sign_in(&mut self, step_up: Option<&str>) -> Result<String, Error> {
        self.cookies.clear();
        self.through_provider("/private").await?;
        if let Some(path) = step_up {
            self.through_provider(path).await?;
            let (status, _) = self.gateway_get(path).await?;
            if status != StatusCode::OK {
                return Err(format!("{path} answered {status} after the step-up").into());
            }
        }
        self.cookies
            .iter()
            .find(|(k, _)| k == SESSION_COOKIE)
            .map(|(k, v)| format!("{k}={v}"))
            .ok_or_else(|| "no session cookie".into())
    }
}

async fn signin(args: &[String], dir: &Path) -> Result<(), Error> {
    let port = num(args, "--gateway-port", 0) as u16;
    let count = num(args, "--count", 1) as usize;
    let concurrency = num(args, "--concurrency", 4).max(1) as usize;
    let max_seconds = num(args, "--max-seconds", 20);
    let mut roots = rustls::RootCertStore::empty();
    for cert in jumpgate::tls::load_certs(&dir.join("dev-ca.pem"))? {
        roots.add(cert)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let info: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("idp.json"))?
            .lines()
            .next()
            .ok_or("empty idp.json")?,
    )?;
    let idp_addr: SocketAddr = info["idp"].as_str().ok_or("no idp address")?.parse()?;
    let step_up = arg(args, "--step-up");
    let browser = || Browser {
        cookies: Vec::new(),
        gateway: Conn {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: Some(connector.clone()),
            sender: None,
        },
        idp: Conn {
            addr: idp_addr,
            tls: None,
            sender: None,
        },
    };
    if count == 1 {
        let cookie = browser().sign_in(step_up.as_deref()).await?;
        println!("{}", serde_json::json!({ "cookie": cookie }));
        return Ok(());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(max_seconds);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut b = browser();
        let (next, done) = (next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                b.sign_in(None).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "signins": done,
            "seconds": seconds,
            "per_second": done as f64 / seconds,
            "concurrency": concurrency,
        })
    );
    Ok(())
}

/// The upstream connection a floor client connection forwards on, made on its first request.
type UpstreamSlot = Arc<Mutex<Option<SendRequest<Incoming>>>>;

/// The least a TLS reverse proxy built on jumpgate's crates does per request, to measure the
/// gateway against: jumpgate's rustls server config and certificate store, its hyper server
/// builders (the same header read timeout, buffer and header limits, HTTP/2 settings), the
/// same runtime and allocator, and one upstream HTTP/1.1 connection per client connection
/// (the requests of one connection come one after another in load.sh). Nothing else: no
/// routing, no policy, no header rewriting, no request id, no access log, no metrics. What
/// jumpgate's public route costs above this is jumpgate's own work; what this costs above
/// nginx is the crates'.
async fn floor(args: &[String], dir: &Path) -> Result<(), Error> {
    let port = u16::try_from(num(args, "--port", 0))?;
    let upstream_port = u16::try_from(num(args, "--upstream-port", 0))?;
    if port == 0 || upstream_port == 0 {
        return Err("--port and --upstream-port are required".into());
    }
    let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
    let certs = jumpgate::tls::CertStore::load(&dir.join("gateway.pem"), &dir.join("gateway.key"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(jumpgate::tls::server_config(certs)?);
    let builders = jumpgate::server::HttpBuilders::new(&jumpgate::config::Limits::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        let builders = builders.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let slot = UpstreamSlot::default();
            let service =
                hyper::service::service_fn(move |req| forward(slot.clone(), upstream, req));
            let io = TokioIo::new(tls);
            let _ = if h2 {
                builders.http2().serve_connection(io, service).await
            } else {
                builders
                    .http1()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await
            };
        });
    }
}

/// Forwards one request on the connection's upstream connection, opening it when there is
/// none or it has closed.
async fn forward(
    slot: UpstreamSlot,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
    let (mut parts, body) = request.into_parts();
    if parts.version == Version::HTTP_2 {
        // An HTTP/1.1 upstream needs a Host header and an origin-form target.
        if let Some(authority) = parts.uri.authority() {
            let host = HeaderValue::from_str(authority.as_str())?;
            parts.headers.insert(http::header::HOST, host);
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = target.parse()?;
        parts.version = Version::HTTP_11;
    }
    let pooled = slot.lock().map_err(|_| "poisoned")?.take();
    let mut sender = match pooled {
        Some(sender) if !sender.is_closed() => sender,
        _ => {
            let tcp = TcpStream::connect(upstream).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    sender.ready().await?;
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    slot.lock().map_err(|_| "poisoned")?.get_or_insert(sender);
    Ok(response)
}
