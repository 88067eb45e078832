//! How a node reaches Redis: the URL forms (`redis://`, `rediss://`,
//! `redis-cluster://h1:p1,h2:p2`, `rediss-cluster://…`), TLS trust, and the
//! two kinds of connection every Redis-backed part uses:
//!
//! - [`RedisConn`]: one multiplexed command connection (a reconnecting
//!   `ConnectionManager`, or a cluster connection that routes by slot).
//!   Cheap to clone; concurrent commands pipeline on it.
//! - [`RedisLink::pubsub`]: a dedicated pub/sub connection. On a cluster,
//!   plain `PUBLISH` reaches subscribers on every shard, so one connection
//!   to any reachable node serves; [`RedisLink::pubsub`] rotates through the
//!   start nodes.
//!
//! Both are lazy: a node starts while Redis is down and connects when it
//! comes back. Timeouts are short so a dead Redis fails calls quickly
//! instead of stalling clients.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, TlsCertificates, Value};

use crate::config::RedisSettings;

/// How long to wait for a TCP (+TLS) connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for any one reply.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why Redis settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The URL is not one of the accepted forms.
    #[error("REDIS_URL: {0}")]
    BadUrl(String),
    /// The CA file could not be read.
    #[error("REDIS_TLS_CA {path}: {error}")]
    BadCa {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// redis-rs refused the settings.
    #[error("REDIS_URL: {0}")]
    Client(#[from] redis::RedisError),
}

/// A node's way into Redis: the command connection and the means to open
/// pub/sub connections.
pub struct RedisLink {
    conn: RedisConn,
    pubsub_clients: Vec<redis::Client>,
    next_pubsub: AtomicUsize,
    /// `standalone` or `cluster`, for logs and stats.
    pub mode: &'static str,
}

/// A command connection, standalone or cluster.
#[derive(Clone)]
pub enum RedisConn {
    /// One server (or a proxy in front of many), reconnecting by itself.
    Single(ConnectionManager),
    /// A Redis Cluster, routing each command to its slot's shard.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A parsed `REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis://` or `rediss://`: passed to redis-rs as written.
    Standalone(String),
    /// `redis-cluster://` or `rediss-cluster://`: one URL per start node.
    Cluster(Vec<String>),
}

/// Split a `REDIS_URL` into the form redis-rs takes.
pub fn parse_url(url: &str) -> Result<Target, LinkError> {
    let bad = |why: &str| LinkError::BadUrl(format!("{why} (got `{}`)", redact(url)));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad("expected redis://, rediss://, redis-cluster:// or rediss-cluster://")
    })?;
    match scheme {
        "redis" | "rediss" => Ok(Target::Standalone(url.to_owned())),
        "redis-cluster" | "rediss-cluster" => {
            let node_scheme = if scheme == "redis-cluster" {
                "redis"
            } else {
                "rediss"
            };
            let (userinfo, hosts) = match rest.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            let nodes: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains(':') {
                        format!("{node_scheme}://{userinfo}{h}")
                    } else {
                        format!("{node_scheme}://{userinfo}{h}:6379")
                    }
                })
                .collect();
            if nodes.is_empty() {
                return Err(bad("a cluster URL needs at least one host:port"));
            }
            Ok(Target::Cluster(nodes))
        }
        _ => Err(bad(
            "expected redis://, rediss://, redis-cluster:// or rediss-cluster://",
        )),
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn tls_certs(ca: Option<&Path>) -> Result<Option<TlsCertificates>, LinkError> {
    let Some(path) = ca else { return Ok(None) };
    let pem = std::fs::read(path).map_err(|error| LinkError::BadCa {
        path: path.display().to_string(),
        error,
    })?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

/// Commands are small and pipelined on one connection: Nagle would hold
/// the second of two writes for the first one's ACK.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

fn client(url: &str, certs: &Option<TlsCertificates>) -> Result<redis::Client, LinkError> {
    let info = url.into_connection_info()?.set_tcp_settings(tcp_settings());
    Ok(match certs {
        Some(c) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: c.root_cert.clone(),
            },
        )?,
        _ => redis::Client::open(info)?,
    })
}

impl RedisLink {
    /// Set up (lazily: nothing is dialled yet) from the node's settings.
    pub fn new(settings: &RedisSettings) -> Result<RedisLink, LinkError> {
        let certs = tls_certs(settings.tls_ca.as_deref())?;
        match parse_url(&settings.url)? {
            Target::Standalone(url) => {
                let client = client(&url, &certs)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                Ok(RedisLink {
                    conn: RedisConn::Single(manager),
                    pubsub_clients: vec![client],
                    next_pubsub: AtomicUsize::new(0),
                    mode: "standalone",
                })
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .tcp_settings(tcp_settings())
                    .retries(2)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT);
                if let Some(c) = &certs {
                    builder = builder.certs(TlsCertificates {
                        client_tls: None,
                        root_cert: c.root_cert.clone(),
                    });
                }
                let cluster = builder.build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                let conn = cluster.get_pending_async_connection_with_config(config);
                let pubsub_clients = nodes
                    .iter()
                    .map(|n| client(n, &certs))
                    .collect::<Result<_, _>>()?;
                Ok(RedisLink {
                    conn: RedisConn::Cluster(conn),
                    pubsub_clients,
                    next_pubsub: AtomicUsize::new(0),
                    mode: "cluster",
                })
            }
        }
    }

    /// A handle on the shared command connection.
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Open a fresh pub/sub connection, trying each start node in turn.
    pub async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        let mut last_error = None;
        for _ in 0..self.pubsub_clients.len() {
            let i = self.next_pubsub.fetch_add(1, Ordering::Relaxed) % self.pubsub_clients.len();
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT * 2,
                self.pubsub_clients[i].get_async_pubsub(),
            )
            .await;
            match attempt {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    last_error = Some(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "pub/sub connect timed out",
                    )))
                }
            }
        }
        Err(last_error.expect("at least one pub/sub client"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6379/0").unwrap(),
            Target::Standalone("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            parse_url("rediss://:pw@h:1").unwrap(),
            Target::Standalone("rediss://:pw@h:1".into())
        );
        assert_eq!(
            parse_url("redis-cluster://a:7000,b:7001,c").unwrap(),
            Target::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into(),
                "redis://c:6379".into()
            ])
        );
        assert_eq!(
            parse_url("rediss-cluster://u:p@a:1,b:2/").unwrap(),
            Target::Cluster(vec!["rediss://u:p@a:1".into(), "rediss://u:p@b:2".into()])
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("localhost:6379").is_err());
        assert!(parse_url("redis-cluster://").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let e = parse_url("ftp://:secret@h").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
