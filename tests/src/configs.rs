//! Proxy configs for tests: one place that writes the TOML the tests start
//! the proxy with, so each test states only what it varies.

use std::net::SocketAddr;

/// Settings a test varies; everything else is a sensible test default.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Servers of the single upstream `app`, with weights.
    pub servers: Vec<(SocketAddr, u32)>,
    /// `balance = …`
    pub balance: &'static str,
    /// `hash_key = [...]`
    pub hash_key: Vec<&'static str>,
    /// `balance_factor = …` (0 = off)
    pub balance_factor: f64,
    /// Extra lines inside `[upstream.app]` (timeouts…).
    pub upstream_extra: String,
    /// A whole `[upstream.app.health_check]` block, or empty for none.
    pub health_check: String,
    /// A whole `[upstream.app.passive]` block, or empty for the defaults.
    pub passive: String,
    /// The route's `host`.
    pub route_host: &'static str,
    /// `trusted_proxies`, or empty for no `[limits]` block.
    pub trusted_proxies: Vec<&'static str>,
    /// Extra lines inside `[admin]` (a `token`…).
    pub admin_extra: String,
    /// Whole sections appended at the end (another `[[listener]]`…).
    pub extra: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            balance: "consistent-hash",
            hash_key: vec![
                "cookie:sid",
                "query:sid",
                "header:x-session-id",
                "client-ip",
            ],
            balance_factor: 0.0,
            upstream_extra: String::new(),
            health_check: String::new(),
            passive: String::new(),
            route_host: "*",
            trusted_proxies: Vec::new(),
            admin_extra: String::new(),
            extra: String::new(),
        }
    }
}

impl ProxyConfig {
    /// A config over `servers`, each of weight 1.
    pub fn over(servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            servers: servers.into_iter().map(|a| (a, 1)).collect(),
            ..Self::default()
        }
    }

    /// The TOML text, with `{LISTEN}` and `{ADMIN}` left for the harness.
    pub fn toml(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|(a, w)| format!("  {{ addr = \"{a}\", weight = {w} }},"))
            .collect();
        let keys: Vec<String> = self.hash_key.iter().map(|k| format!("\"{k}\"")).collect();
        let limits = if self.trusted_proxies.is_empty() {
            String::new()
        } else {
            let nets: Vec<String> = self
                .trusted_proxies
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            format!("[limits]\ntrusted_proxies = [{}]\n", nets.join(", "))
        };
        format!(
            r#"[server]
threads = 2
grace_period = "1s"

[admin]
listen = "{{ADMIN}}"
{admin_extra}

[[listener]]
listen = "{{LISTEN}}"

[[route]]
host = "{host}"
path_prefix = "/"
upstream = "app"

[upstream.app]
balance = "{balance}"
hash_key = [{keys}]
balance_factor = {factor}
connect_timeout = "1s"
{extra}
servers = [
{servers}
]
{health}
{passive}
{limits}
{sections}"#,
            host = self.route_host,
            balance = self.balance,
            keys = keys.join(", "),
            factor = self.balance_factor,
            extra = self.upstream_extra,
            servers = servers.join("\n"),
            health = self.health_check,
            passive = self.passive,
            limits = limits,
            admin_extra = self.admin_extra,
            sections = self.extra,
        )
    }
}
