//! Redis for the tests: the shared one (127.0.0.1:6379, or `JUMPGATE_TEST_REDIS`) with a key
//! prefix of each test's own, and servers a test starts for itself on free ports: a lone
//! Redis it can stop and start, or a Sentinel group (master, replica, sentinels) it can fail
//! over. Every process is killed when its value is dropped.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let rand: String = jumpgate::secret::random_token()
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

/// Polls `f` (blocking) until it is true or `limit` passes, at least once; whether it
/// became true.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis of this test's own, which it can stop and start.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    password: Option<String>,
    child: Option<Child>,
}

impl OwnRedis {
    /// A Redis that keeps its data across a stop and start (append-only file). Tests kill it
    /// right after writing; with the default "everysec" a write may wait behind a background
    /// fsync and die with the process.
    pub fn start() -> OwnRedis {
        Self::start_with(
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            None,
        )
    }

    /// A Redis started with `args`, requiring `password` when given.
    pub fn start_with(args: &[&str], password: Option<&str>) -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            password: password.map(str::to_owned),
            child: None,
        };
        r.up();
        r
    }

    pub fn up(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p, "--masterauth", p]);
        }
        let child = cmd
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
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Runs one command on this server.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut c)
    }

    /// How many clients of this server subscribe to `channel`.
    pub fn subscribers(&self, channel: &str) -> i64 {
        self.query::<(String, i64)>(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel))
            .map_or(0, |(_, n)| n)
    }

    /// What `ROLE` says: "master" or "slave".
    pub fn role(&self) -> Option<String> {
        let v: Vec<redis::Value> = self.query(&redis::cmd("ROLE")).ok()?;
        match v.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// A sentinel of this test's own.
pub struct OwnSentinel {
    pub port: u16,
    password: String,
    child: Child,
}

impl OwnSentinel {
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// Runs one command on this sentinel.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut c)
    }

    /// The master's port this sentinel names for `name`.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let addr: Option<(String, u16)> = self
            .query(
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(name),
            )
            .ok()?;
        addr.map(|(_, port)| port)
    }
}

impl Drop for OwnSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master, one replica and `n` sentinels watching them with quorum 1. The data nodes
/// require `DATA_PASSWORD`, the sentinels `SENTINEL_PASSWORD`; both are also in files, for
/// `redis_password_file` and `redis_sentinel_password_file`.
pub struct SentinelGroup {
    pub name: String,
    /// The data nodes; which one is master changes with failovers.
    pub nodes: [OwnRedis; 2],
    pub sentinels: Vec<OwnSentinel>,
    dir: tempfile::TempDir,
}

pub const DATA_PASSWORD: &str = "data-secret";
pub const SENTINEL_PASSWORD: &str = "sentinel-secret";

impl SentinelGroup {
    /// Starts the group; `down_after` is how long the master must be unreachable before a
    /// sentinel fails it over.
    pub fn start(name: &str, sentinels: usize, down_after: Duration) -> SentinelGroup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("data-password"),
            format!("{DATA_PASSWORD}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sentinel-password"),
            format!("{SENTINEL_PASSWORD}\n"),
        )
        .unwrap();
        let volatile = ["--save", "", "--appendonly", "no"];
        let master = OwnRedis::start_with(&volatile, Some(DATA_PASSWORD));
        let port = master.port.to_string();
        let mut args = volatile.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = OwnRedis::start_with(&args, Some(DATA_PASSWORD));
        assert!(
            until(Duration::from_secs(10), || {
                replica
                    .query::<String>(redis::cmd("INFO").arg("replication"))
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            }),
            "the replica did not sync with the master"
        );
        let sentinels = (0..sentinels)
            .map(|i| {
                let port = free_port();
                // Sentinel rewrites its file, so each gets a writable one of its own.
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\nrequirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\nsentinel monitor {name} 127.0.0.1 {master} 1\nsentinel auth-pass {name} {DATA_PASSWORD}\nsentinel down-after-milliseconds {name} {down}\nsentinel failover-timeout {name} 10000\nsentinel parallel-syncs {name} 1\n",
                        dir = dir.path().display(),
                        master = master.port,
                        down = down_after.as_millis(),
                    ),
                )
                .unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server must be installed (tests/run.sh installs it)");
                wait_listening(port, "redis sentinel");
                OwnSentinel {
                    port,
                    password: SENTINEL_PASSWORD.to_owned(),
                    child,
                }
            })
            .collect();
        let group = SentinelGroup {
            name: name.to_owned(),
            nodes: [master, replica],
            sentinels,
            dir,
        };
        // A failover needs a replica every sentinel has seen and considers healthy.
        for s in &group.sentinels {
            assert!(
                until(Duration::from_secs(20), || {
                    s.query::<Vec<std::collections::HashMap<String, String>>>(
                        redis::cmd("SENTINEL").arg("REPLICAS").arg(name),
                    )
                    .is_ok_and(|rs| {
                        rs.iter().any(|r| {
                            r.get("flags").is_some_and(|f| f == "slave")
                                && r.get("master-link-status").is_some_and(|l| l == "ok")
                        })
                    })
                }),
                "sentinel on {} never saw a healthy replica",
                s.port
            );
        }
        group
    }

    pub fn data_password_file(&self) -> PathBuf {
        self.dir.path().join("data-password")
    }

    pub fn sentinel_password_file(&self) -> PathBuf {
        self.dir.path().join("sentinel-password")
    }

    /// The node the first sentinel names master.
    pub fn master(&self) -> &OwnRedis {
        let port = self.sentinels[0]
            .master_port(&self.name)
            .expect("the sentinel names a master");
        self.node(port)
    }

    /// The other data node.
    pub fn replica(&self) -> &OwnRedis {
        let master = self.master().port;
        self.nodes.iter().find(|n| n.port != master).unwrap()
    }

    pub fn node(&self, port: u16) -> &OwnRedis {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    pub fn node_mut(&mut self, port: u16) -> &mut OwnRedis {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// Waits until the replica has everything the master wrote.
    pub fn wait_replicated(&self) {
        let acked: i64 = self
            .master()
            .query(redis::cmd("WAIT").arg(1).arg(5000))
            .unwrap();
        assert_eq!(
            acked, 1,
            "the replica did not acknowledge the master's writes"
        );
    }

    /// Waits until every sentinel names the node on `port` master and that node says it is.
    pub fn wait_master(&self, port: u16, limit: Duration) -> bool {
        until(limit, || {
            self.sentinels
                .iter()
                .all(|s| s.master_port(&self.name) == Some(port))
                && self.node(port).role().as_deref() == Some("master")
        })
    }

    /// Fails the master over to the replica through the first sentinel and waits until the
    /// sentinels report it; returns the new master's port.
    pub fn failover(&self) -> u16 {
        let to = self.replica().port;
        // Refused while a sentinel still considers the replica unfit, or another failover runs.
        assert!(
            until(Duration::from_secs(10), || {
                self.sentinels[0]
                    .query::<()>(redis::cmd("SENTINEL").arg("FAILOVER").arg(&self.name))
                    .is_ok()
            }),
            "SENTINEL FAILOVER was refused"
        );
        assert!(
            self.wait_master(to, Duration::from_secs(20)),
            "the sentinels did not report the new master"
        );
        to
    }
}
