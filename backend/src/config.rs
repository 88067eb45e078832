//! Command line and environment: the names the deployment guides already use.
//!
//! Every flag has an environment fallback so the same binary runs under
//! systemd (`EnvironmentFile=`), in a container, or by hand. Durations are
//! seconds (fractions allowed, so tests can run fast heartbeats).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Where a node listens when neither `--listen` nor `PORT` is given
/// (a bare port: bound on `HOST`, by default 127.0.0.1).
pub const DEFAULT_LISTEN: &str = "9001";

/// Shortest `JWT_SECRET` accepted, in bytes: an HS256 key shorter than the
/// hash's 256-bit output is weaker than the algorithm, and short secrets
/// are guessed offline from a single token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Shortest `API_KEY` accepted, in bytes: it is a bearer password for
/// writing into any room, so it must not be guessable.
pub const MIN_API_KEY_BYTES: usize = 16;

/// `--listen` / `PORT` as written: a bare port (bound on `HOST`) or a
/// whole address (which wins over `HOST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenArg {
    /// `9001`: the port, on `HOST`.
    Port(u16),
    /// `0.0.0.0:9001`, `[::1]:9001`: exactly this.
    Addr(SocketAddr),
}

impl FromStr for ListenArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(port) = s.parse::<u16>() {
            return Ok(ListenArg::Port(port));
        }
        s.parse::<SocketAddr>().map(ListenArg::Addr).map_err(|_| {
            format!("`{s}` is neither a port nor ADDR:PORT (e.g. 9001 or 0.0.0.0:9001)")
        })
    }
}

/// `ringway-backend` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-backend", version, about)]
pub struct Cli {
    /// Address to listen on: a bare port (bound on HOST), or ADDR:PORT.
    #[arg(long, env = "PORT", value_name = "[ADDR:]PORT", default_value = DEFAULT_LISTEN, value_parser = ListenArg::from_str)]
    pub listen: ListenArg,

    /// Address a bare PORT binds (a container sets 0.0.0.0); ignored when
    /// --listen / PORT names an address itself.
    #[arg(long, env = "HOST", value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: IpAddr,

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

    /// HS256 secret for connect tokens, at least 32 bytes; unset turns auth
    /// off (dev mode, `?user=`, logged as a warning at start).
    #[arg(
        long,
        env = "JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// The `aud` tokens must carry; unset: any `aud` (or none) is accepted.
    #[arg(long, env = "JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// The `iss` tokens must carry; unset: not checked.
    #[arg(long, env = "JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// Clock skew tolerated on a token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY", value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub jwt_leeway: Duration,

    /// Bearer key of the HTTP publish API (`POST /api/publish` …), at least
    /// 16 bytes; unset: the API is off (404).
    #[arg(long, env = "API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Most WebSocket connections this node holds; 0: no cap.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "N", default_value = "0")]
    pub max_connections: usize,

    /// Most WebSocket connections one user holds on this node; 0: no cap.
    #[arg(
        long,
        env = "MAX_CONNECTIONS_PER_USER",
        value_name = "N",
        default_value = "0"
    )]
    pub max_connections_per_user: usize,

    /// Most WebSocket connections one client IP (an IPv6 /64) holds on this node; 0: no cap.
    #[arg(
        long,
        env = "MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value = "0"
    )]
    pub max_connections_per_ip: usize,

    /// Comma-separated addresses or CIDRs whose X-Forwarded-For is believed
    /// (the proxy in front); unset: the peer address is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "LIST")]
    pub trusted_proxies: Option<String>,

    /// Publishes and broadcasts per second one user may send on this node,
    /// all their connections together (default: WS_RATE_LIMIT).
    #[arg(long, env = "USER_PUBLISH_RATE", value_name = "PER_SEC")]
    pub user_publish_rate: Option<f64>,

    /// Publishes one user may send in one burst (default: WS_RATE_BURST).
    #[arg(long, env = "USER_PUBLISH_BURST", value_name = "FRAMES")]
    pub user_publish_burst: Option<u32>,

    /// Direct messages per second one user may send on this node.
    #[arg(
        long,
        env = "USER_DIRECT_RATE",
        value_name = "PER_SEC",
        default_value = "20"
    )]
    pub user_direct_rate: f64,

    /// Direct messages one user may send in one burst.
    #[arg(
        long,
        env = "USER_DIRECT_BURST",
        value_name = "FRAMES",
        default_value = "40"
    )]
    pub user_direct_burst: u32,

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
    /// Token checks; its secret `None` is dev mode.
    pub auth: AuthSettings,
    /// `API_KEY`; `None` turns the HTTP publish API off.
    pub api_key: Option<String>,
    /// Connection caps and per-user rates.
    pub admission: AdmissionSettings,
    /// `ALLOWED_ORIGINS`; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Per-connection limits.
    pub limits: ConnectionLimits,
    /// Room history bounds.
    pub history: HistorySettings,
}

/// How connect tokens are checked (`JWT_*`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `JWT_SECRET`; `None` is dev mode.
    pub secret: Option<String>,
    /// `JWT_AUDIENCE`: the required `aud`, if any.
    pub audience: Option<String>,
    /// `JWT_ISSUER`: the required `iss`, if any.
    pub issuer: Option<String>,
    /// `JWT_LEEWAY`: clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Who may hold connections on a node and how fast one user may write:
/// the caps that keep one user, one address or a crowd from taking a node.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// `MAX_CONNECTIONS`; 0: none.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_USER`; 0: none.
    pub max_per_user: usize,
    /// `MAX_CONNECTIONS_PER_IP`; 0: none.
    pub max_per_ip: usize,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `USER_PUBLISH_RATE` per second, `USER_PUBLISH_BURST`.
    pub publish_rate: (f64, u32),
    /// `USER_DIRECT_RATE` per second, `USER_DIRECT_BURST`.
    pub direct_rate: (f64, u32),
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
        let secret = cli.jwt_secret.clone().filter(|s| !s.is_empty());
        if secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_JWT_SECRET_BYTES)
        {
            return Err(ConfigError::Invalid(format!(
                "JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes (a shorter HS256 secret \
                 can be guessed offline from one token); generate one with `openssl rand -base64 48`"
            )));
        }
        let api_key = cli.api_key.clone().filter(|k| !k.is_empty());
        if api_key
            .as_ref()
            .is_some_and(|k| k.len() < MIN_API_KEY_BYTES)
        {
            return Err(ConfigError::Invalid(format!(
                "API_KEY must be at least {MIN_API_KEY_BYTES} bytes; generate one with `openssl rand -base64 32`"
            )));
        }
        let trusted_proxies = match cli.trusted_proxies.as_deref() {
            None => Vec::new(),
            Some(list) => parse_nets(list).map_err(ConfigError::Invalid)?,
        };
        let publish_rate = (
            cli.user_publish_rate.unwrap_or(cli.rate_limit),
            cli.user_publish_burst.unwrap_or(cli.rate_burst),
        );
        let direct_rate = (cli.user_direct_rate, cli.user_direct_burst);
        for (name, (rate, burst)) in [("USER_PUBLISH", publish_rate), ("USER_DIRECT", direct_rate)]
        {
            if !rate.is_finite() || rate <= 0.0 || burst == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name}_RATE and {name}_BURST must be above 0"
                )));
            }
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
        let listen = match cli.listen {
            ListenArg::Port(port) => SocketAddr::new(cli.host, port),
            ListenArg::Addr(addr) => addr,
        };
        Ok(Config {
            listen,
            node_id: cli.node_id.clone().unwrap_or_else(hostname),
            worker_id,
            redis,
            session_ttl: cli.session_ttl,
            grace_period: cli.grace_period,
            heartbeat_interval: cli.heartbeat_interval,
            auth: AuthSettings {
                secret,
                audience: cli.jwt_audience.clone().filter(|s| !s.is_empty()),
                issuer: cli.jwt_issuer.clone().filter(|s| !s.is_empty()),
                leeway: cli.jwt_leeway,
            },
            api_key,
            admission: AdmissionSettings {
                max_connections: cli.max_connections,
                max_per_user: cli.max_connections_per_user,
                max_per_ip: cli.max_connections_per_ip,
                trusted_proxies,
                publish_rate,
                direct_rate,
            },
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

/// `TRUSTED_PROXIES`: comma-separated addresses (`10.0.0.5`) or CIDRs (`10.0.0.0/8`).
pub fn parse_nets(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("TRUSTED_PROXIES: `{s}` is neither an address nor a CIDR"))
        })
        .collect()
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
mod tests;
