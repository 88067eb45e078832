//! Command line and environment: the names the deployment guides already use.
//!
//! Every flag has an environment fallback so the same binary runs under
//! systemd (`EnvironmentFile=`), in a container, or by hand. Durations are
//! seconds (fractions allowed, so tests can run fast heartbeats).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Where a node listens when neither `--listen` nor `PORT` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";

/// `ringway-backend` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-backend", version, about)]
pub struct Cli {
    /// Address to listen on: a bare port means 127.0.0.1:PORT, or ADDR:PORT.
    #[arg(long, env = "PORT", value_name = "[ADDR:]PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Name of this node in headers, health, logs and Redis (default: <hostname>-<pid>).
    #[arg(long, env = "WORKER_ID", value_name = "ID")]
    pub worker_id: Option<String>,

    /// The deployment node (host, pod) this worker runs on; reported in stats.
    #[arg(long, env = "NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Redis for sessions, history and pub/sub: redis://, rediss:// (TLS) or
    /// redis-cluster://h1:p1,h2:p2 (rediss-cluster:// with TLS). Unset: one node, in memory.
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA that signed the Redis server's certificate (rediss://);
    /// default: the system's trust store.
    #[arg(long, env = "REDIS_TLS_CA", value_name = "PEM")]
    pub redis_tls_ca: Option<PathBuf>,

    /// 1: Redis is one primary with `appendfsync always`, so it never comes
    /// back with less than it acknowledged and a Redis restart keeps room
    /// epochs. 0 (default): the first write after a Redis restart or
    /// failover starts a new epoch in every room it touches.
    #[arg(long, env = "REDIS_DURABLE", value_name = "0|1", default_value = "0", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub redis_durable: bool,

    /// Seconds a session outlives its last sign of life (refreshed while connected).
    #[arg(long, env = "WEBSOCKET_SESSION_TTL", value_name = "SECS", default_value = "3600", value_parser = parse_secs)]
    pub session_ttl: Duration,

    /// Seconds a user stays present in a room after their last connection ended.
    #[arg(long, env = "WS_GRACE_PERIOD", value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub grace_period: Duration,

    /// Seconds between WebSocket pings and between cluster heartbeats; a node
    /// silent for three is dead, and so is a client.
    #[arg(long, env = "WS_HEARTBEAT_INTERVAL", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub heartbeat_interval: Duration,

    /// HS256 secret for connect tokens; unset turns auth off (dev mode, `?user=`).
    #[arg(
        long,
        env = "JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// Comma-separated Origins allowed to open WebSockets; `*` or unset allows any.
    #[arg(long, env = "ALLOWED_ORIGINS", value_name = "LIST")]
    pub allowed_origins: Option<String>,

    /// Largest frame or message a client may send, in bytes (close 1009 above it).
    #[arg(
        long,
        env = "WS_MAX_MESSAGE_SIZE",
        value_name = "BYTES",
        default_value = "65536"
    )]
    pub max_message_size: usize,

    /// Frames per second a connection may send on average.
    #[arg(
        long,
        env = "WS_RATE_LIMIT",
        value_name = "PER_SEC",
        default_value = "100"
    )]
    pub rate_limit: f64,

    /// Frames a connection may send in one burst.
    #[arg(
        long,
        env = "WS_RATE_BURST",
        value_name = "FRAMES",
        default_value = "200"
    )]
    pub rate_burst: u32,

    /// Frames that may wait for a slow client before it is closed with 1013.
    #[arg(
        long,
        env = "WS_OUTBOUND_QUEUE",
        value_name = "FRAMES",
        default_value = "1024"
    )]
    pub outbound_queue: usize,

    /// Messages kept per room for recovery.
    #[arg(
        long,
        env = "HISTORY_SIZE",
        value_name = "MESSAGES",
        default_value = "1000"
    )]
    pub history_size: usize,

    /// Seconds a room's history is kept after its last message.
    #[arg(long, env = "HISTORY_TTL", value_name = "SECS", default_value = "3600", value_parser = parse_secs)]
    pub history_ttl: Duration,

    /// Most messages one `join … since` replays; a bigger gap is `recovered: false`.
    #[arg(long, env = "HISTORY_MAX_RECOVER", value_name = "MESSAGES")]
    pub history_max_recover: Option<usize>,

    /// Development: run this many nodes in one process on consecutive ports
    /// from --listen, sharing Redis or, without REDIS_URL, an in-process broker.
    #[arg(long, value_name = "N", default_value = "1")]
    pub nodes: u16,
}

/// Settled configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP/WebSocket listener binds.
    pub listen: SocketAddr,
    /// This node's unique name in the cluster.
    pub worker_id: String,
    /// The machine or pod it runs on, for operators.
    pub node_id: String,
    /// Redis, or `None` for in-memory single-process mode.
    pub redis: Option<RedisSettings>,
    /// `WEBSOCKET_SESSION_TTL`.
    pub session_ttl: Duration,
    /// `WS_GRACE_PERIOD`.
    pub grace_period: Duration,
    /// `WS_HEARTBEAT_INTERVAL`.
    pub heartbeat_interval: Duration,
    /// `JWT_SECRET`; `None` is dev mode.
    pub jwt_secret: Option<String>,
    /// `ALLOWED_ORIGINS`; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Per-connection limits.
    pub limits: ConnectionLimits,
    /// Room history bounds.
    pub history: HistorySettings,
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The URL as given (`redis://`, `rediss://`, `redis-cluster://…`).
    pub url: String,
    /// CA for TLS connections, if not the system's.
    pub tls_ca: Option<PathBuf>,
    /// `REDIS_DURABLE`: Redis never loses an acknowledged write, so its
    /// restarts keep room epochs.
    pub durable: bool,
}

/// What one client connection may do.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Largest inbound frame/message in bytes.
    pub max_message_size: usize,
    /// Sustained inbound frames per second.
    pub rate_per_sec: f64,
    /// Inbound burst size.
    pub rate_burst: u32,
    /// Frames queued for a client before it counts as too slow.
    pub outbound_queue: usize,
}

/// How much of each room's past is kept for recovery.
#[derive(Debug, Clone, Copy)]
pub struct HistorySettings {
    /// Messages per room.
    pub size: usize,
    /// Kept this long after the room's last message.
    pub ttl: Duration,
    /// Largest gap one recovery replays.
    pub max_recover: usize,
    /// How long a room's epoch and offset outlive its messages, so that a
    /// quiet room keeps its numbering (and clients their positions).
    pub meta_ttl: Duration,
}

/// Why the command line cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range; the message names the flag and variable.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Settle a command line into a node config, checking ranges.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if cli.heartbeat_interval.is_zero() {
            return invalid("--heartbeat-interval / WS_HEARTBEAT_INTERVAL must be above 0");
        }
        if cli.session_ttl < cli.heartbeat_interval * 3 {
            return invalid(
                "--session-ttl / WEBSOCKET_SESSION_TTL must be at least three heartbeat intervals",
            );
        }
        if cli.max_message_size < 128 {
            return invalid("--max-message-size / WS_MAX_MESSAGE_SIZE must be at least 128 bytes");
        }
        if !cli.rate_limit.is_finite() || cli.rate_limit <= 0.0 || cli.rate_burst == 0 {
            return invalid("WS_RATE_LIMIT and WS_RATE_BURST must be above 0");
        }
        if cli.outbound_queue < 16 {
            return invalid("--outbound-queue / WS_OUTBOUND_QUEUE must be at least 16");
        }
        if cli.history_size == 0 || cli.history_ttl.is_zero() {
            return invalid("HISTORY_SIZE and HISTORY_TTL must be above 0");
        }
        let worker_id = cli
            .worker_id
            .as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(default_worker_id);
        if !worker_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return invalid("WORKER_ID may hold only A-Z a-z 0-9 - _ . :");
        }
        let redis = cli
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|url| RedisSettings {
                url: url.to_owned(),
                tls_ca: cli.redis_tls_ca.clone(),
                durable: cli.redis_durable,
            });
        let allowed_origins = cli.allowed_origins.as_deref().and_then(|list| {
            let origins: Vec<String> = list
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            (!origins.is_empty() && !origins.iter().any(|o| o == "*")).then_some(origins)
        });
        Ok(Config {
            listen: cli.listen,
            node_id: cli.node_id.clone().unwrap_or_else(hostname),
            worker_id,
            redis,
            session_ttl: cli.session_ttl,
            grace_period: cli.grace_period,
            heartbeat_interval: cli.heartbeat_interval,
            jwt_secret: cli.jwt_secret.clone().filter(|s| !s.is_empty()),
            allowed_origins,
            limits: ConnectionLimits {
                max_message_size: cli.max_message_size,
                rate_per_sec: cli.rate_limit,
                rate_burst: cli.rate_burst,
                outbound_queue: cli.outbound_queue,
            },
            history: HistorySettings {
                size: cli.history_size,
                ttl: cli.history_ttl,
                max_recover: cli.history_max_recover.unwrap_or(cli.history_size),
                meta_ttl: Duration::from_secs(30 * 24 * 3600).max(cli.history_ttl),
            },
        })
    }

    /// A config for tests and embedding: defaults everywhere, this address
    /// and worker id, no Redis.
    pub fn new(listen: SocketAddr, worker_id: impl Into<String>) -> Self {
        let cli = Cli::parse_from(["ringway-backend"]);
        let mut config = Config::from_cli(&cli).expect("defaults are valid");
        config.listen = listen;
        config.worker_id = worker_id.into();
        config
    }
}

/// `9001` → `127.0.0.1:9001`; `0.0.0.0:9001` and `[::1]:9001` as written.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is neither a port nor ADDR:PORT (e.g. 9001 or 0.0.0.0:9001)"))
}

/// A yes/no setting: `1`/`0`, also `true`/`false`, `yes`/`no`.
pub fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("`{s}` is not 0 or 1")),
    }
}

/// Seconds, fractions allowed: `30`, `0.5`.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a valid number of seconds"))
}

/// `<hostname>-<pid>`, the default worker id.
pub fn default_worker_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ringway".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["ringway-backend"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        Config::from_cli(&cli).map_err(|e| e.to_string())
    }

    #[test]
    fn bare_port_means_loopback() {
        assert_eq!(
            parse_listen("9002").unwrap(),
            "127.0.0.1:9002".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:81").unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("70000").is_err());
    }

    #[test]
    fn seconds_take_fractions() {
        assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_secs("30").unwrap(), Duration::from_secs(30));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }

    #[test]
    fn defaults_and_blank_worker_id() {
        let cfg = parse(&["--listen", "9003", "--worker-id", " "]).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9003".parse().unwrap());
        assert!(cfg.worker_id.ends_with(&format!("-{}", std::process::id())));
        assert!(cfg.redis.is_none());
        assert_eq!(cfg.history.max_recover, cfg.history.size);
        assert!(cfg.allowed_origins.is_none());
    }

    #[test]
    fn durability_is_declared_explicitly() {
        let cfg = parse(&["--redis-url", "redis://127.0.0.1:1"]).unwrap();
        assert!(!cfg.redis.unwrap().durable, "not durable unless declared");
        let cfg = parse(&["--redis-url", "redis://127.0.0.1:1", "--redis-durable", "1"]).unwrap();
        assert!(cfg.redis.unwrap().durable);
        let e = parse(&["--redis-durable", "maybe"]).unwrap_err();
        assert!(
            e.contains("REDIS_DURABLE") || e.contains("redis-durable"),
            "{e}"
        );
    }

    #[test]
    fn origins_list_and_wildcard() {
        let cfg = parse(&["--allowed-origins", "https://a.example/, https://b.example"]).unwrap();
        assert_eq!(
            cfg.allowed_origins.unwrap(),
            vec!["https://a.example", "https://b.example"]
        );
        let cfg = parse(&["--allowed-origins", "https://a.example,*"]).unwrap();
        assert!(cfg.allowed_origins.is_none());
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let e = parse(&["--heartbeat-interval", "0"]).unwrap_err();
        assert!(e.contains("WS_HEARTBEAT_INTERVAL"), "{e}");
        let e = parse(&["--session-ttl", "5", "--heartbeat-interval", "2"]).unwrap_err();
        assert!(e.contains("WEBSOCKET_SESSION_TTL"), "{e}");
        let e = parse(&["--worker-id", "a b"]).unwrap_err();
        assert!(e.contains("WORKER_ID"), "{e}");
        let e = parse(&["--outbound-queue", "2"]).unwrap_err();
        assert!(e.contains("WS_OUTBOUND_QUEUE"), "{e}");
    }
}
