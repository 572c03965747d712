//! The environment of jumpgate's browser tests (`tests/e2e/`), in one process: the fake
//! JumpCloud seeded with users, an upstream application, and four gateways on 127.0.0.1 with
//! ephemeral ports and one set of development certificates.
//!
//! - gateway `a`: sign-in through the fake JumpCloud, with `[directory]` reading the fake's
//!   directory API every second; site `localhost` for "Staff" and "Admins", `/admin` for
//!   "Admins" only, `/public` public, and step-up routes when the build supports
//!   `[oidc.step_up]`;
//! - gateway `b`: sign-in through another OpenID provider whose issuer, client id and secret
//!   are given by the caller (`E2E_OIDC_ISSUER`, `E2E_OIDC_CLIENT_ID`, `E2E_OIDC_CLIENT_SECRET`
//!   or `--oidc-issuer`, `--oidc-client-id`, `--oidc-client-secret`); absent without them;
//! - gateway `c`: its identity provider and its upstream cannot be reached (error pages);
//! - gateway `d`: no `[oidc]` at all (the "sign-in required" page);
//! - gateway `e`: the shipped `config/defguard.toml` (its `[[site]]` sections, hosts and
//!   upstreams swapped) in front of the Defguard stand-ins (`tests/support/defguard.rs`):
//!   core on `defguard.localhost`, Edge on `enroll.localhost`, with the fake's sign-in and
//!   step-up applications and directory. Defguard's own "Sign in with JumpCloud" goes to the
//!   fake too (a third application, as Defguard's JumpCloud guide sets it up); Defguard's
//!   `alice` is an admin there and `bob` an ordinary user, matched by email.
//!
//! Users: alice ("Admins", "Staff", "Defguard Admins"), bob ("Staff", "Defguard Users"),
//! carol ("Staff", suspendable) and dave (in no group, so JumpCloud refuses him).
//!
//! It prints one JSON line on stdout with every URL once all is ready, then reads commands
//! on stdin, one per line, answering one line each (`ok` or `ok VALUE`, or `error ...`):
//!
//! ```text
//! next-login alice|bob|carol|dave   the fake signs this user in without asking
//! next-login chooser                the fake shows its user chooser
//! suspend USER / reactivate USER    changes the user in the directory
//! clear-idp-sessions                ends every session at the fake
//! logins / sessions-ended           counters of the fake
//! step-ups                          tokens the fake issued to the step-up application
//! defguard-logins                   sign-ins at the Defguard stand-in
//! defguard-settings                 the stand-in's instance name
//! ```
//!
//! End of input stops everything. Run it with `cargo run --example e2e_env`.

#[path = "../tests/support/jumpcloud.rs"]
mod jumpcloud;

#[path = "../tests/support/defguard.rs"]
mod defguard;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;

const CLIENT_ID: &str = "jumpgate-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-4b1f9c";
const STEP_UP_CLIENT_ID: &str = "jumpgate-e2e-step-up";
const STEP_UP_CLIENT_SECRET: &str = "e2e-step-up-secret-77d2a0";
/// Defguard's own JumpCloud application ("Sign in with JumpCloud").
const DEFGUARD_CLIENT_ID: &str = "defguard-e2e";
const DEFGUARD_CLIENT_SECRET: &str = "e2e-defguard-secret-5c31e8";
/// An application that uses Defguard as its OpenID provider; its redirect URI is a public
/// page behind gateway `a`.
const WIKI_CLIENT_ID: &str = "wiki";
const WIKI_CLIENT_SECRET: &str = "e2e-wiki-secret-90ab7f";
/// Gateway `e`'s hosts (Chromium resolves `*.localhost` to loopback).
const DEFGUARD_HOST: &str = "defguard.localhost";
const ENROLL_HOST: &str = "enroll.localhost";
/// The shipped configuration for Defguard.
const DEFGUARD_TOML: &str = include_str!("../config/defguard.toml");

/// The caller's second identity provider, for gateway `b`.
struct OtherIdp {
    issuer: String,
    client_id: String,
    client_secret: String,
}

impl OtherIdp {
    fn from_args() -> Option<OtherIdp> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for (env, key) in [
            ("E2E_OIDC_ISSUER", "issuer"),
            ("E2E_OIDC_CLIENT_ID", "client-id"),
            ("E2E_OIDC_CLIENT_SECRET", "client-secret"),
        ] {
            if let Ok(v) = std::env::var(env) {
                values.insert(key.to_owned(), v);
            }
        }
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if let Some(key) = arg.strip_prefix("--oidc-") {
                if let Some(v) = args.next() {
                    values.insert(key.to_owned(), v);
                }
            }
        }
        Some(OtherIdp {
            issuer: values.remove("issuer")?,
            client_id: values.remove("client-id")?,
            client_secret: values.remove("client-secret")?,
        })
    }
}

/// A gateway being started: its listeners are bound first, so its port is known before its
/// configuration is written.
struct Bound {
    name: &'static str,
    public: TcpListener,
    admin: TcpListener,
    dir: PathBuf,
}

impl Bound {
    async fn new(root: &Path, name: &'static str) -> Result<Bound, Error> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(Bound {
            name,
            public: TcpListener::bind("127.0.0.1:0").await?,
            admin: TcpListener::bind("127.0.0.1:0").await?,
            dir,
        })
    }

    fn port(&self) -> u16 {
        self.public.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    fn origin(&self) -> String {
        format!("https://localhost:{}", self.port())
    }

    /// Writes `[server]` plus `rest` and loads it.
    fn config(
        &self,
        certs: &jumpgate::devcert::DevCerts,
        rest: &str,
    ) -> Result<jumpgate::config::Config, String> {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = {}\ntls_key = {}\nshutdown_grace = \"1s\"\nstate_dir = {}\n\n[log]\nlevel = \"warn,jumpgate=info\"\n\n{rest}\n",
            toml_str(&certs.cert),
            toml_str(&certs.key),
            toml_str(self.dir.join("state")),
        );
        let path = self.dir.join("gateway.toml");
        std::fs::write(&path, &text).map_err(|e| e.to_string())?;
        jumpgate::config::Config::load(&path).map_err(|e| format!("gateway {}: {e}", self.name))
    }

    fn start(
        self,
        config: jumpgate::config::Config,
        stop: &watch::Receiver<bool>,
    ) -> JoinHandle<Result<(), jumpgate::StartError>> {
        let listeners = jumpgate::Listeners {
            public: self.public,
            admin: Some(self.admin),
            redirect: None,
            verify: None,
        };
        let mut stop = stop.clone();
        tokio::spawn(jumpgate::run(config, listeners, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    }
}

/// A TOML basic string.
fn toml_str(p: impl AsRef<std::ffi::OsStr>) -> String {
    let s = p.as_ref().to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn write_secret(dir: &Path, name: &str, value: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n"))?;
    Ok(path)
}

/// A port nothing listens on (bound, then released).
async fn dead_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let other_idp = OtherIdp::from_args();
    let tmp = tempfile::Builder::new().prefix("jumpgate-e2e-").tempdir()?;
    let root = tmp.path().to_owned();
    let certs = jumpgate::devcert::write(
        &root.join("certs"),
        &[DEFGUARD_HOST.to_owned(), ENROLL_HOST.to_owned()],
    )?;

    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(serve_upstream(upstream));
    let upstream_url = format!("http://{upstream_addr}");

    // The fake JumpCloud and its directory.
    let idp = jumpcloud::FakeJumpCloud::start().await;
    let users = seed(&idp);
    let defguard_groups = seed_defguard(&idp, &users);
    let api_key = write_secret(&root, "api-key", &idp.api_key())?;
    let secret = write_secret(&root, "client-secret", CLIENT_SECRET)?;
    let step_up_secret = write_secret(&root, "step-up-secret", STEP_UP_CLIENT_SECRET)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut gateways = serde_json::Map::new();

    // Gateway a: the fake JumpCloud, its directory, groups per route, step-up.
    let a = Bound::new(&root, "a").await?;
    let a_origin = a.origin();
    idp.update_app(CLIENT_ID, |app| {
        app.redirect_uris = vec![format!("{a_origin}/.jumpgate/callback")];
        app.post_logout_redirect_uris = vec![format!("{a_origin}/public/signed-out")];
    });
    idp.update_app(STEP_UP_CLIENT_ID, |app| {
        app.redirect_uris = vec![format!("{a_origin}/.jumpgate/step-up/callback")];
    });
    let directory = format!(
        "[directory]\nprovider = \"jumpcloud\"\napi_url = \"{}\"\napi_key_file = {}\ncache_file = {}\nsync_interval = \"1s\"\nmax_staleness = \"1h\"\nrequest_interval = \"1ms\"\nrequest_timeout = \"5s\"\nretry_backoff = \"100ms\"\n",
        idp.base_url(),
        toml_str(&api_key),
        toml_str(a.dir.join("directory.json")),
    );
    let oidc_a = format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = {}\nscopes = [\"openid\", \"profile\", \"email\"]\ngroups_claim = \"memberOf\"\npost_logout_redirect_uri = \"{a_origin}/public/signed-out\"\n",
        idp.issuer(),
        toml_str(&secret),
    );
    let step_up_table = format!(
        "[oidc.step_up]\nclient_id = \"{STEP_UP_CLIENT_ID}\"\nclient_secret_file = {}\n",
        toml_str(&step_up_secret)
    );
    // `/step-up` asks it of every request; `/step-up-post` exempts the safe methods, as
    // routes do by default.
    let site_a = format!(
        "[[site]]\nhost = \"localhost\"\nupstream = \"{upstream_url}\"\naccess = \"protected\"\nallow_groups = [\"Staff\", \"Admins\"]\n\n  [[site.route]]\n  path = \"/admin\"\n  allow_groups = [\"Admins\"]\n\n  [[site.route]]\n  path = \"/public\"\n  access = \"public\"\n\n  [[site.route]]\n  path = \"/step-up\"\n  step_up = \"15m\"\n  step_up_exempt_methods = []\n\n  [[site.route]]\n  path = \"/step-up-post\"\n  step_up = \"15m\"\n"
    );
    // A configuration the build refuses is an error, never a reason to drop routes.
    let config_a = a.config(
        &certs,
        &format!("{oidc_a}\n{step_up_table}\n{directory}\n{site_a}"),
    )?;
    let step_up = json!({"enabled": true});
    jumpgate::telemetry::init(&config_a.log);
    let a_admin = a.admin_addr();
    let a_port = a.port();
    tasks.push(a.start(config_a, &stop_rx));
    gateways.insert("a".into(), gateway_json(a_port, a_admin));

    // Gateway b: the caller's OpenID provider.
    let mut b_admin = None;
    if let Some(other) = &other_idp {
        let b = Bound::new(&root, "b").await?;
        let secret_b = write_secret(&b.dir, "client-secret", &other.client_secret)?;
        let rest = format!(
            "[oidc]\nissuer = {}\nclient_id = {}\nclient_secret_file = {}\nscopes = [\"openid\", \"profile\", \"email\"]\nidp_logout = false\n\n[[site]]\nhost = \"localhost\"\nupstream = \"{upstream_url}\"\naccess = \"protected\"\n\n  [[site.route]]\n  path = \"/public\"\n  access = \"public\"\n",
            toml_str(&other.issuer),
            toml_str(&other.client_id),
            toml_str(&secret_b)
        );
        let config = b.config(&certs, &rest)?;
        b_admin = b.admin_addr();
        gateways.insert("b".into(), gateway_json(b.port(), b_admin));
        tasks.push(b.start(config, &stop_rx));
    }

    // Gateway c: nothing behind it answers.
    let c = Bound::new(&root, "c").await?;
    let secret_c = write_secret(&c.dir, "client-secret", CLIENT_SECRET)?;
    let rest = format!(
        "[oidc]\nissuer = \"http://127.0.0.1:{}/\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = {}\n\n[[site]]\nhost = \"localhost\"\nupstream = \"http://127.0.0.1:{}\"\naccess = \"protected\"\n\n  [[site.route]]\n  path = \"/down\"\n  access = \"public\"\n",
        dead_port().await?,
        toml_str(&secret_c),
        dead_port().await?,
    );
    let config = c.config(&certs, &rest)?;
    gateways.insert("c".into(), gateway_json(c.port(), c.admin_addr()));
    tasks.push(c.start(config, &stop_rx));

    // Gateway e: the shipped Defguard configuration in front of the Defguard stand-ins.
    let dg_core = defguard::Core::start().await;
    let dg_edge = defguard::Edge::start().await;
    let e = Bound::new(&root, "e").await?;
    let e_core = format!("https://{DEFGUARD_HOST}:{}", e.port());
    let e_enroll = format!("https://{ENROLL_HOST}:{}", e.port());
    idp.update_app(CLIENT_ID, |app| {
        app.redirect_uris
            .push(format!("{e_core}/.jumpgate/callback"));
    });
    idp.update_app(STEP_UP_CLIENT_ID, |app| {
        app.redirect_uris
            .push(format!("{e_core}/.jumpgate/step-up/callback"));
    });
    let defguard_app = jumpcloud::App {
        bound_groups: defguard_groups,
        ..jumpcloud::App::new(
            DEFGUARD_CLIENT_ID,
            DEFGUARD_CLIENT_SECRET,
            &format!("{e_core}/auth/callback"),
        )
    };
    idp.add_app(defguard_app);
    // DEFGUARD_URL is the public address; its JumpCloud integration is the fake's third
    // application. JumpCloud's alice is Defguard's admin, bob an ordinary user.
    dg_core.set_public_url(&e_core);
    dg_core.set_openid(Some(defguard::OpenIdProvider::issuer(
        &idp.issuer(),
        DEFGUARD_CLIENT_ID,
        DEFGUARD_CLIENT_SECRET,
    )));
    dg_core.with_state(|s| {
        for u in &mut s.users {
            if u.username == defguard::USER {
                u.admin = true;
            }
        }
        let id = s.users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
        s.users.push(defguard::DgUser::new(id, "bob", false));
    });
    let mut wiki = defguard::OAuthClient::new(
        2,
        WIKI_CLIENT_ID,
        WIKI_CLIENT_SECRET,
        &format!("{a_origin}/public/wiki/callback"),
    );
    wiki.name = "Wiki".to_owned();
    dg_core.add_oauth_client(wiki);
    dg_edge.set_public_url(&e_enroll);
    dg_edge.with_state(|s| s.core_url = e_core.clone());
    let sites_e = defguard_sites(&dg_core.url(), &dg_edge.url())?;
    let oidc_e = format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = {}\nscopes = [\"openid\", \"profile\", \"email\"]\ngroups_claim = \"memberOf\"\n",
        idp.issuer(),
        toml_str(&secret),
    );
    let directory_e = format!(
        "[directory]\nprovider = \"jumpcloud\"\napi_url = \"{}\"\napi_key_file = {}\ncache_file = {}\nsync_interval = \"1s\"\nmax_staleness = \"1h\"\nrequest_interval = \"1ms\"\nrequest_timeout = \"5s\"\nretry_backoff = \"100ms\"\n",
        idp.base_url(),
        toml_str(&api_key),
        toml_str(e.dir.join("directory.json")),
    );
    let config_e = e.config(
        &certs,
        &format!("{oidc_e}\n{step_up_table}\n{directory_e}\n{sites_e}"),
    )?;
    let e_admin = e.admin_addr();
    let mut e_json = gateway_json(e.port(), e_admin);
    e_json["url"] = json!(e_core);
    e_json["enroll"] = json!(e_enroll);
    gateways.insert("e".into(), e_json);
    tasks.push(e.start(config_e, &stop_rx));

    // Gateway d: no sign-in configured.
    let d = Bound::new(&root, "d").await?;
    let rest = format!(
        "[[site]]\nhost = \"localhost\"\nupstream = \"{upstream_url}\"\naccess = \"protected\"\n\n  [[site.route]]\n  path = \"/public\"\n  access = \"public\"\n"
    );
    let config = d.config(&certs, &rest)?;
    gateways.insert("d".into(), gateway_json(d.port(), d.admin_addr()));
    tasks.push(d.start(config, &stop_rx));

    // Ready when a and e have discovered the provider and synced the directory, and b has
    // discovered its provider.
    for (name, admin) in [("a", a_admin), ("b", b_admin), ("e", e_admin)] {
        if let Some(admin) = admin {
            wait_ready(name, admin, Duration::from_secs(30)).await?;
        }
    }

    let line = json!({
        "ready": true,
        "gateways": gateways,
        "cert": certs.cert,
        "ca": certs.ca,
        "idp": {"issuer": idp.issuer(), "base": idp.base_url()},
        "upstream": upstream_url,
        "users": users,
        "secrets": [CLIENT_SECRET, STEP_UP_CLIENT_SECRET, idp.api_key(), DEFGUARD_CLIENT_SECRET, WIKI_CLIENT_SECRET],
        "step_up": step_up,
        "defguard": {
            "core": dg_core.url(),
            "edge": dg_edge.url(),
            "enrollment_token": defguard::ENROLLMENT_TOKEN,
            "password": defguard::PASSWORD,
            "oauth": {
                "client_id": WIKI_CLIENT_ID,
                "client_secret": WIKI_CLIENT_SECRET,
                "redirect_uri": format!("{a_origin}/public/wiki/callback"),
            },
        },
    });
    say(&line.to_string())?;

    let commands = commands(&idp, &users, &dg_core);
    tokio::select! {
        r = commands => r?,
        _ = jumpgate::shutdown::signal() => {}
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    idp.stop().await;
    drop(tmp);
    Ok(())
}

fn gateway_json(port: u16, admin: Option<SocketAddr>) -> serde_json::Value {
    json!({
        "url": format!("https://localhost:{port}"),
        "port": port,
        "admin": admin.map(|a| format!("http://{a}")),
    })
}

/// Users, groups and the two SSO applications (sign-in, and step-up with MFA required).
fn seed(idp: &jumpcloud::FakeJumpCloud) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    for name in ["alice", "bob", "carol", "dave"] {
        users.insert(name.to_owned(), idp.add_user(jumpcloud::User::new(name)));
    }
    let admins = idp.add_group("Admins");
    let staff = idp.add_group("Staff");
    idp.add_member(&admins, &users["alice"]);
    for name in ["alice", "bob", "carol"] {
        idp.add_member(&staff, &users[name]);
    }
    for (client_id, secret, mfa) in [
        (CLIENT_ID, CLIENT_SECRET, false),
        (STEP_UP_CLIENT_ID, STEP_UP_CLIENT_SECRET, true),
    ] {
        let mut app = jumpcloud::App::new(client_id, secret, "https://unused.invalid/");
        app.groups_claim = Some("memberOf".into());
        app.bound_groups = vec![admins.clone(), staff.clone()];
        app.require_mfa = mfa;
        idp.add_app(app);
    }
    idp.set_next_login(None);
    users
}

/// The groups of `config/defguard.toml`: "Defguard Users" (bob) and "Defguard Admins"
/// (alice). Their ids.
fn seed_defguard(idp: &jumpcloud::FakeJumpCloud, users: &BTreeMap<String, String>) -> Vec<String> {
    let dg_users = idp.add_group("Defguard Users");
    let dg_admins = idp.add_group("Defguard Admins");
    idp.add_member(&dg_users, &users["bob"]);
    idp.add_member(&dg_admins, &users["alice"]);
    vec![dg_users, dg_admins]
}

/// The `[[site]]` sections of the shipped `config/defguard.toml`, its hosts and upstreams
/// swapped for gateway `e`'s and the stand-ins'. A needle the file lacks is an error: a
/// changed file must not silently stop being what the browser tests run.
fn defguard_sites(core: &str, edge: &str) -> Result<String, Error> {
    let start = DEFGUARD_TOML
        .find("\n[[site]]")
        .ok_or("config/defguard.toml has no [[site]]")?
        + 1;
    let mut sites = DEFGUARD_TOML[start..].to_owned();
    for (from, to) in [
        ("defguard.example.net", DEFGUARD_HOST),
        ("enroll.example.net", ENROLL_HOST),
        ("http://127.0.0.1:8000", core),
        ("http://127.0.0.1:8080", edge),
    ] {
        if !sites.contains(from) {
            return Err(format!("config/defguard.toml no longer contains {from:?}").into());
        }
        sites = sites.replace(from, to);
    }
    Ok(sites)
}

/// Polls the admin listener's `/readyz` until it answers 200.
async fn wait_ready(name: &str, admin: SocketAddr, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match plain_get(admin, "/readyz").await {
            Ok((200, _)) => return Ok(()),
            Ok((_, body)) => last = body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("gateway {name} never became ready: {}", last.trim()).into())
}

async fn plain_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await??;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// Writes one line on stdout, at once.
fn say(line: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Reads commands from stdin until end of input, answering each with one line.
async fn commands(
    idp: &jumpcloud::FakeJumpCloud,
    users: &BTreeMap<String, String>,
    dg_core: &defguard::Core,
) -> Result<(), Error> {
    // Standard input is read on a thread of its own: a read blocks.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let user = |name: &str| {
            users
                .get(name)
                .cloned()
                .ok_or_else(|| format!("error unknown user {name}"))
        };
        let answer: Result<String, String> = match words.as_slice() {
            [] => continue,
            ["next-login", "chooser"] => {
                idp.set_next_login(None);
                Ok("ok".into())
            }
            ["next-login", name] => user(name).map(|id| {
                idp.set_next_login(Some(&id));
                "ok".into()
            }),
            ["suspend", name] => user(name).map(|id| {
                idp.update_user(&id, |u| u.suspend());
                "ok".into()
            }),
            ["reactivate", name] => user(name).map(|id| {
                idp.update_user(&id, |u| u.reactivate());
                "ok".into()
            }),
            ["clear-idp-sessions"] => {
                idp.clear_sessions();
                Ok("ok".into())
            }
            ["logins"] => Ok(format!("ok {}", idp.logins())),
            ["sessions-ended"] => Ok(format!("ok {}", idp.sessions_ended())),
            ["step-ups"] => Ok(format!(
                "ok {}",
                idp.issued()
                    .iter()
                    .filter(|i| i.client_id == STEP_UP_CLIENT_ID && i.mfa)
                    .count()
            )),
            ["defguard-logins"] => Ok(format!("ok {}", dg_core.with_state(|s| s.logins))),
            ["defguard-settings"] => Ok(format!(
                "ok {}",
                dg_core.settings()["instance_name"].as_str().unwrap_or("")
            )),
            _ => Err(format!("error unknown command: {line}")),
        };
        say(&answer.unwrap_or_else(|e| e))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The upstream application
// ---------------------------------------------------------------------------------------

async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(upstream))
                .with_upgrades()
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

const IDENTITY: [(&str, &str); 6] = [
    ("user", "x-jumpgate-user"),
    ("email", "x-jumpgate-email"),
    ("username", "x-jumpgate-username"),
    ("groups", "x-jumpgate-groups"),
    ("step_up_time", "x-jumpgate-step-up-time"),
    ("assertion", "x-jumpgate-assertion"),
];

/// Every page shows the request and the identity headers it arrived with; `/ws` is a
/// WebSocket echo and `/ws-page` a page that talks to it.
async fn upstream(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" && req.headers().contains_key("sec-websocket-key") {
        return Ok(websocket(&mut req));
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut identity = serde_json::Map::new();
    for (key, name) in IDENTITY {
        identity.insert(key.into(), header(name).into());
    }
    let claims = header("x-jumpgate-assertion")
        .and_then(|t| t.split('.').nth(1).map(str::to_owned))
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let method = req.method().as_str().to_owned();
    let wants_json = header("accept").is_some_and(|a| a.contains("application/json"));
    let (content_type, body) = if wants_json {
        (
            "application/json",
            json!({"method": method, "target": target, "identity": identity, "assertion_claims": claims})
                .to_string(),
        )
    } else if path == "/ws-page" {
        ("text/html; charset=utf-8", WS_PAGE.to_owned())
    } else {
        (
            "text/html; charset=utf-8",
            page(&method, &target, &identity, claims.as_ref()),
        )
    };
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(content_type));
    Ok(resp)
}

fn page(
    method: &str,
    target: &str,
    identity: &serde_json::Map<String, serde_json::Value>,
    claims: Option<&serde_json::Value>,
) -> String {
    let mut rows = String::new();
    for (key, name) in IDENTITY {
        let value = match identity.get(key).and_then(|v| v.as_str()) {
            None => "(none)".to_owned(),
            Some(v) if key == "assertion" => format!("present, {} bytes", v.len()),
            Some(v) => escape(v),
        };
        rows.push_str(&format!(
            "<tr><th>{name}</th><td id=\"{key}\">{value}</td></tr>"
        ));
    }
    let claims = claims
        .map(|c| serde_json::to_string_pretty(c).unwrap_or_default())
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Upstream app</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <style>body{{font:15px system-ui,sans-serif;max-width:48rem;margin:3rem auto}}\
         th{{text-align:left;padding-right:1rem}}td,th{{border-bottom:1px solid #ddd}}</style></head>\
         <body><h1>Upstream app</h1><p id=\"request\">{} {}</p><table>{rows}</table>\
         <h2>Assertion claims</h2><pre id=\"claims\">{}</pre></body></html>",
        escape(method),
        escape(target),
        escape(&claims)
    )
}

const WS_PAGE: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>WebSocket echo</title>
<link rel="icon" href="data:,">
<style>body{font:15px system-ui,sans-serif;max-width:48rem;margin:3rem auto}</style></head>
<body><h1>WebSocket echo</h1><p>Status: <span id="status">connecting</span></p><ol id="log"></ol>
<script>
  const status = document.getElementById('status');
  const log = document.getElementById('log');
  window.wsOpens = 0;
  window.wsReceived = [];
  const ws = new WebSocket('wss://' + location.host + '/ws');
  window.ws = ws;
  ws.onopen = () => { window.wsOpens += 1; status.textContent = 'open'; };
  ws.onmessage = (e) => {
    window.wsReceived.push(e.data);
    const li = document.createElement('li');
    const text = String(e.data);
    li.textContent = 'echo: ' + text.slice(0, 24) + (text.length > 24 ? '… (' + text.length + ' characters)' : '');
    log.appendChild(li);
  };
  ws.onclose = (e) => { status.textContent = 'closed ' + e.code; };
  ws.onerror = () => { status.textContent = 'error'; };
  window.wsSend = (text) => ws.send(text);
</script></body></html>"#;

/// Answers a WebSocket handshake and echoes every text or binary message.
fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(full(String::new()));
    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", http::HeaderValue::from_static("upgrade"));
    h.insert("upgrade", http::HeaderValue::from_static("websocket"));
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
