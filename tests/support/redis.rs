//! Redis for the tests: the shared one (127.0.0.1:6379, or `JUMPGATE_TEST_REDIS`) with a key
//! prefix of each test's own, and a Redis a test starts for itself on a free port, which it
//! can stop and start. Every process is killed when its value is dropped.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared Redis.
pub fn shared_url() -> String {
    std::env::var("JUMPGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// `[session]` keys for Redis at `url` under `prefix`, with a short grace period.
pub fn session_keys(url: &str, prefix: &str, extra: &str) -> String {
    format!("store = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\nredis_grace = \"2s\"\n{extra}")
}

/// A key prefix of this test's own, removed at the end.
pub struct Prefix(pub String, String);

impl Prefix {
    pub fn new(url: &str) -> Prefix {
        let rand: String = jumpgate::oidc::login::random_token()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        Prefix(format!("jgtest:{rand}:"), url.to_owned())
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(self.1.as_str()) {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.0))
                    .query(&mut c)
                    .unwrap_or_default();
                for k in keys {
                    let _: Result<(), _> = redis::cmd("DEL").arg(k).query(&mut c);
                }
            }
        }
    }
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start on port {port}");
}

/// A Redis of this test's own, which it can stop and start.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl OwnRedis {
    /// A Redis that keeps its data across a stop and start (append-only file). Tests kill it
    /// right after writing; with the default "everysec" a write may wait behind a background
    /// fsync and die with the process.
    pub fn start() -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: [
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect(),
            child: None,
        };
        r.up();
        r
    }

    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        self.child = Some(child);
        wait_listening(self.port, "redis-server");
    }

    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}
