//! Finding the current Redis master through Sentinel, as the Sentinel client protocol
//! describes it: ask the sentinels in turn for the master's address, then ask that node
//! itself (`ROLE`) whether it is master, since a sentinel cut off from the others may still
//! name the old one.
//!
//! redis-rs's `SentinelClient` does the same walk, but without timeouts (a node that drops
//! packets stalls it for the operating system's connect timeout), without trying the next
//! sentinel when the first one's answer fails the role check, and with one error kind for
//! "unknown master" and "not master"; here each step is bounded and the failure that stopped
//! the walk is kept for `/readyz`. Errors name nodes by `host:port` only, since sentinel URLs
//! may carry passwords.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, Role,
};

use crate::config::SentinelConfig;
use crate::secret::Secret;

/// The most one connect or one reply may take, for sentinels and data nodes alike.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no master could be found. Variants are in the order of how far the search got.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No sentinel answered; one reason per sentinel.
    #[error("no sentinel answered ({})", .0.join("; "))]
    NoSentinel(Vec<String>),
    /// The sentinels that answered know no master by that name.
    #[error("no sentinel knows a master named \"{0}\"")]
    UnknownMaster(String),
    /// The node the sentinels name did not answer, or refused the data nodes' credentials.
    #[error("master \"{name}\" at {addr}, as the sentinels name it, could not be used: {error}")]
    MasterUnreachable {
        /// The master name.
        name: String,
        /// `host:port`.
        addr: String,
        /// Why.
        error: String,
    },
    /// The node the sentinels name is not master, not yet or not any more.
    #[error("{addr}, which the sentinels name master \"{name}\", reports role {role}; a failover may be in progress")]
    NotMaster {
        /// The master name.
        name: String,
        /// `host:port`.
        addr: String,
        /// What it says it is.
        role: &'static str,
    },
}

impl ResolveError {
    fn progress(&self) -> u8 {
        match self {
            ResolveError::NoSentinel(_) => 0,
            ResolveError::UnknownMaster(_) => 1,
            ResolveError::MasterUnreachable { .. } => 2,
            ResolveError::NotMaster { .. } => 3,
        }
    }
}

/// One sentinel, with the connection kept to it between questions.
struct Node {
    client: Client,
    /// `host:port`, for messages.
    label: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

/// The sentinels of one master, and how to reach the data nodes they name.
pub struct Sentinels {
    nodes: Vec<Node>,
    master: String,
    /// `None`: plain TCP; `Some(insecure)`: TLS, as the sentinels are reached.
    tls: Option<bool>,
    data: RedisConnectionInfo,
    /// The sentinel that answered last, asked first next time.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinels")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.label).collect::<Vec<_>>(),
            )
            .field("master", &self.master)
            .finish()
    }
}

fn step_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(STEP_TIMEOUT)
        .set_response_timeout(STEP_TIMEOUT)
}

/// `host` and `port` of a TCP address.
pub fn host_port(addr: &ConnectionAddr) -> Option<(&str, u16)> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.as_str(), *port))
        }
        ConnectionAddr::Unix(_) => None,
    }
}

impl Sentinels {
    /// The sentinels of `config`; `sentinel_password` is used for those whose URL has none,
    /// `data_password` for the data nodes.
    pub fn new(
        config: &SentinelConfig,
        sentinel_password: Option<&Secret>,
        data_password: Option<&Secret>,
    ) -> Result<Sentinels, RedisError> {
        let mut nodes = Vec::with_capacity(config.sentinels.len());
        let mut tls = None;
        for url in &config.sentinels {
            let mut info = url.as_str().into_connection_info()?;
            if info.redis.password.is_none() {
                info.redis.password = sentinel_password.map(|p| p.expose().to_owned());
            }
            if let ConnectionAddr::TcpTls { insecure, .. } = &info.addr {
                tls = Some(*insecure);
            }
            let label = info.addr.to_string();
            nodes.push(Node {
                client: Client::open(info)?,
                label,
                conn: Mutex::new(None),
            });
        }
        Ok(Sentinels {
            nodes,
            master: config.master.clone(),
            tls,
            data: RedisConnectionInfo {
                db: config.database,
                password: data_password.map(|p| p.expose().to_owned()),
                ..RedisConnectionInfo::default()
            },
            preferred: AtomicUsize::new(0),
        })
    }

    /// The master name.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// The sentinels, starting with the one that answered last.
    fn in_turn(&self) -> impl Iterator<Item = (usize, &Node)> + '_ {
        let first = self.preferred.load(Ordering::Relaxed) % self.nodes.len().max(1);
        self.nodes
            .iter()
            .enumerate()
            .cycle()
            .skip(first)
            .take(self.nodes.len())
    }

    /// What one sentinel says the master's address is (`None`: it knows no such master).
    async fn ask(&self, node: &Node) -> Result<Option<(String, u16)>, RedisError> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master);
        let cached = node
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(mut conn) = cached {
            match cmd.query_async(&mut conn).await {
                Ok(answer) => return Ok(answer),
                // The sentinel may have restarted since: one fresh connection is worth a try.
                Err(_) => *node.conn.lock().unwrap_or_else(PoisonError::into_inner) = None,
            }
        }
        let mut conn = node
            .client
            .get_multiplexed_async_connection_with_config(&step_config())
            .await?;
        let answer = cmd.query_async(&mut conn).await?;
        *node.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
        Ok(answer)
    }

    /// The address the sentinels name master now, unchecked: cheap enough to ask every second.
    pub async fn master_addr(&self) -> Result<(String, u16), ResolveError> {
        let mut unanswered = Vec::new();
        let mut unknown = false;
        for (i, node) in self.in_turn() {
            match self.ask(node).await {
                Ok(Some(addr)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(addr);
                }
                Ok(None) => unknown = true,
                Err(e) => unanswered.push(format!("{}: {e}", node.label)),
            }
        }
        Err(if unknown {
            ResolveError::UnknownMaster(self.master.clone())
        } else {
            ResolveError::NoSentinel(unanswered)
        })
    }

    /// A client for the node at `host:port`, reached as the sentinels are.
    fn data_client(&self, host: String, port: u16) -> Result<Client, RedisError> {
        let addr = match self.tls {
            None => ConnectionAddr::Tcp(host, port),
            Some(insecure) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params: None,
            },
        };
        Client::open(ConnectionInfo {
            addr,
            redis: self.data.clone(),
        })
    }

    /// Whether the node `client` reaches says it is master.
    pub async fn confirm(&self, client: &Client) -> Result<(), ResolveError> {
        let addr = client.get_connection_info().addr.to_string();
        let unusable = |e: RedisError| ResolveError::MasterUnreachable {
            name: self.master.clone(),
            addr: addr.clone(),
            error: e.to_string(),
        };
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&step_config())
            .await
            .map_err(unusable)?;
        let role: Role = redis::cmd("ROLE")
            .query_async(&mut conn)
            .await
            .map_err(unusable)?;
        match role {
            Role::Primary { .. } => Ok(()),
            Role::Replica { .. } => Err(self.not_master(addr, "replica")),
            Role::Sentinel { .. } => Err(self.not_master(addr, "sentinel")),
        }
    }

    fn not_master(&self, addr: String, role: &'static str) -> ResolveError {
        ResolveError::NotMaster {
            name: self.master.clone(),
            addr,
            role,
        }
    }

    /// A client for the current master: the first address a sentinel names whose node
    /// confirms it is master. A sentinel whose answer fails that check does not stop the
    /// walk; the next one may know better.
    pub async fn resolve(&self) -> Result<Client, ResolveError> {
        let mut unanswered = Vec::new();
        let mut worst: Option<ResolveError> = None;
        let mut checked: Vec<(String, u16)> = Vec::new();
        for (i, node) in self.in_turn() {
            let (host, port) = match self.ask(node).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    keep_furthest(&mut worst, ResolveError::UnknownMaster(self.master.clone()));
                    continue;
                }
                Err(e) => {
                    unanswered.push(format!("{}: {e}", node.label));
                    continue;
                }
            };
            if checked.iter().any(|(h, p)| *h == host && *p == port) {
                continue;
            }
            checked.push((host.clone(), port));
            let client =
                self.data_client(host.clone(), port)
                    .map_err(|e| ResolveError::MasterUnreachable {
                        name: self.master.clone(),
                        addr: format!("{host}:{port}"),
                        error: e.to_string(),
                    });
            match client {
                Ok(client) => match self.confirm(&client).await {
                    Ok(()) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(client);
                    }
                    Err(e) => keep_furthest(&mut worst, e),
                },
                Err(e) => keep_furthest(&mut worst, e),
            }
        }
        Err(worst.unwrap_or(ResolveError::NoSentinel(unanswered)))
    }
}

fn keep_furthest(worst: &mut Option<ResolveError>, e: ResolveError) {
    if worst.as_ref().is_none_or(|w| e.progress() > w.progress()) {
        *worst = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(urls: &[&str]) -> SentinelConfig {
        SentinelConfig {
            sentinels: urls.iter().map(|u| (*u).to_owned()).collect(),
            master: "mymaster".to_owned(),
            password: None,
            database: 2,
        }
    }

    #[test]
    fn data_nodes_are_reached_as_the_sentinels_are() {
        let pw = Secret::new("data-pw".to_owned());
        let plain = Sentinels::new(&config(&["redis://10.0.0.1:26379"]), None, Some(&pw)).unwrap();
        let c = plain.data_client("10.0.0.7".into(), 6379).unwrap();
        let info = c.get_connection_info();
        assert_eq!(info.addr, ConnectionAddr::Tcp("10.0.0.7".into(), 6379));
        assert_eq!(
            (info.redis.db, info.redis.password.as_deref()),
            (2, Some("data-pw"))
        );
        let tls = Sentinels::new(&config(&["rediss://s.internal:26379"]), None, None).unwrap();
        let c = tls.data_client("10.0.0.7".into(), 6380).unwrap();
        assert!(matches!(
            c.get_connection_info().addr,
            ConnectionAddr::TcpTls {
                insecure: false,
                port: 6380,
                ..
            }
        ));
    }

    #[test]
    fn a_sentinel_url_password_wins_over_the_shared_one() {
        let shared = Secret::new("shared".to_owned());
        let s = Sentinels::new(
            &config(&["redis://:own@10.0.0.1:26379", "redis://10.0.0.2:26379"]),
            Some(&shared),
            None,
        )
        .unwrap();
        let pw: Vec<_> = s
            .nodes
            .iter()
            .map(|n| n.client.get_connection_info().redis.password.clone())
            .collect();
        assert_eq!(pw, [Some("own".to_owned()), Some("shared".to_owned())]);
        // Messages name nodes without their credentials.
        assert_eq!(s.nodes[0].label, "10.0.0.1:26379");
        assert!(!format!("{s:?}").contains("own"));
    }

    #[test]
    fn the_furthest_failure_is_reported() {
        let mut worst = None;
        keep_furthest(&mut worst, ResolveError::UnknownMaster("m".into()));
        keep_furthest(
            &mut worst,
            ResolveError::NotMaster {
                name: "m".into(),
                addr: "a:1".into(),
                role: "replica",
            },
        );
        keep_furthest(&mut worst, ResolveError::UnknownMaster("m".into()));
        assert_eq!(worst.map(|w| w.progress()), Some(3));
    }

    #[tokio::test]
    async fn unreachable_sentinels_are_each_named() {
        // Ports nothing listens on: bound, then released.
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("redis://:secret@127.0.0.1:{p}"))
            .collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let s = Sentinels::new(&config(&urls), None, None).unwrap();
        let e = s.resolve().await.unwrap_err();
        let ResolveError::NoSentinel(why) = &e else {
            panic!("{e}")
        };
        assert_eq!(why.len(), 2, "{e}");
        let text = e.to_string();
        for p in ports {
            assert!(text.contains(&format!("127.0.0.1:{p}")), "{text}");
        }
        assert!(!text.contains("secret"), "{text}");
    }
}
