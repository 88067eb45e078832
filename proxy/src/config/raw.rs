//! The file as written: serde mirrors of the TOML, every table `deny_unknown_fields`.
//! Nothing outside `config` sees these types; validation turns them into the public ones.
//!
//! Counts are read as `i64` (TOML's integer) and durations as strings, so
//! that a negative, huge or misspelt value reaches validation and gets a
//! message with its allowed range instead of serde's "expected u32". Only
//! the shape (a string where a string belongs) is checked here.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Balance, LogFormat};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) threads: Option<i64>,
    pub(super) grace_period: Option<String>,
    pub(super) graceful_shutdown_timeout: Option<String>,
    pub(super) upgrade_sock: Option<PathBuf>,
    pub(super) max_connections: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) access: Option<String>,
    pub(super) format: Option<LogFormat>,
    pub(super) query: Option<bool>,
    pub(super) buffer: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
    pub(super) token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) listen: String,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) sni: Vec<RawSni>,
    pub(super) proxy_protocol: Option<bool>,
    pub(super) redirect_https: Option<i64>,
    pub(super) redirect_except: Option<Vec<String>>,
    pub(super) hsts: Option<String>,
    pub(super) http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ocsp: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSni {
    pub(super) names: Vec<String>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ocsp: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) host: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) upstream: String,
    pub(super) limits: Option<RawRouteLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteLimits {
    pub(super) requests_per_second: Option<i64>,
    pub(super) burst: Option<i64>,
    pub(super) websocket_upgrades_per_second: Option<i64>,
    pub(super) websocket_upgrades_burst: Option<i64>,
    pub(super) max_body_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) balance: Option<Balance>,
    pub(super) hash_key: Option<Vec<String>>,
    pub(super) balance_factor: Option<f64>,
    pub(super) connect_timeout: Option<String>,
    pub(super) read_timeout: Option<String>,
    pub(super) write_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) keepalive_timeout: Option<String>,
    pub(super) drain_timeout: Option<String>,
    pub(super) retries: Option<i64>,
    pub(super) slow_start: Option<String>,
    pub(super) keepalive_connections: Option<i64>,
    pub(super) tls: Option<bool>,
    pub(super) sni: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) verify: Option<bool>,
    pub(super) servers: Vec<RawServerSpec>,
    pub(super) health_check: Option<RawHealthCheck>,
    pub(super) passive: Option<RawPassive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerSpec {
    pub(super) addr: String,
    pub(super) weight: Option<i64>,
    pub(super) backup: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawCheckKind {
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) kind: Option<RawCheckKind>,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) rise: Option<i64>,
    pub(super) fall: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassive {
    pub(super) max_fails: Option<i64>,
    pub(super) fail_timeout: Option<String>,
    pub(super) count_5xx: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) requests_per_second: Option<i64>,
    pub(super) burst: Option<i64>,
    pub(super) websocket_upgrades_per_second: Option<i64>,
    pub(super) websocket_upgrades_burst: Option<i64>,
    pub(super) max_connections_per_ip: Option<i64>,
    pub(super) max_websockets_per_ip: Option<i64>,
    pub(super) header_timeout: Option<String>,
    pub(super) tls_handshake_timeout: Option<String>,
    pub(super) keepalive_timeout: Option<String>,
    pub(super) client_write_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) max_request_line_bytes: Option<i64>,
    pub(super) max_header_bytes: Option<i64>,
    pub(super) max_body_bytes: Option<i64>,
    pub(super) h2_max_concurrent_streams: Option<i64>,
}
