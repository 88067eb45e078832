//! The file as written: serde mirrors of the TOML, every table `deny_unknown_fields`.
//! Nothing outside `config` sees these types; `validate` turns them into the public ones.

use std::path::PathBuf;

use serde::Deserialize;

use super::Balance;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) threads: Option<usize>,
    pub(super) grace_period: Option<String>,
    pub(super) graceful_shutdown_timeout: Option<String>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSni {
    pub(super) names: Vec<String>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) host: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) upstream: String,
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
    pub(super) retries: Option<usize>,
    pub(super) servers: Vec<RawServerSpec>,
    pub(super) health_check: Option<RawHealthCheck>,
    pub(super) passive: Option<RawPassive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerSpec {
    pub(super) addr: String,
    pub(super) weight: Option<u32>,
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
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassive {
    pub(super) max_fails: Option<u32>,
    pub(super) fail_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) requests_per_second: Option<u32>,
    pub(super) burst: Option<u32>,
    pub(super) max_connections_per_ip: Option<u32>,
    pub(super) websocket_upgrades_per_second: Option<u32>,
}
