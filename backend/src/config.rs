//! Command line and environment: the names the deployment guides already use.
//!
//! Every flag has an environment fallback so the same binary runs under
//! systemd (`EnvironmentFile=`), in a container, or by hand.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;

/// Where a node listens when neither `--listen` nor `PORT` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";

/// `ringway-backend` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-backend", version, about)]
pub struct Cli {
    /// Address to listen on: a bare port means 127.0.0.1:PORT, or ADDR:PORT.
    #[arg(
        long,
        env = "PORT",
        value_name = "[ADDR:]PORT",
        default_value = DEFAULT_LISTEN,
        value_parser = parse_listen,
    )]
    pub listen: SocketAddr,

    /// Name of this node in headers, health and logs (default: <hostname>-<pid>).
    #[arg(long, env = "WORKER_ID", value_name = "ID")]
    pub worker_id: Option<String>,

    /// Redis for sessions and pub/sub. Not used by this skeleton yet: the node
    /// runs single-node, in memory.
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// Settled configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub worker_id: String,
    /// Given but ignored until the Redis-backed store lands.
    pub redis_url: Option<String>,
}

impl Config {
    /// Defaults filled in: the worker id becomes `<hostname>-<pid>` when unset or blank.
    pub fn from_cli(cli: Cli) -> Self {
        let worker_id = cli
            .worker_id
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(default_worker_id);
        let redis_url = cli.redis_url.filter(|u| !u.trim().is_empty());
        Config {
            listen: cli.listen,
            worker_id,
            redis_url,
        }
    }

    /// A config for tests and embedding: the given address and worker id, no Redis.
    pub fn new(listen: SocketAddr, worker_id: impl Into<String>) -> Self {
        Config {
            listen,
            worker_id: worker_id.into(),
            redis_url: None,
        }
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

    #[test]
    fn bare_port_means_loopback() {
        assert_eq!(
            parse_listen("9002").unwrap(),
            "127.0.0.1:9002".parse().unwrap()
        );
    }

    #[test]
    fn addr_port_is_taken_as_written() {
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:81").unwrap(),
            "[::1]:81".parse().unwrap()
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("70000").is_err());
        assert!(parse_listen("").is_err());
    }

    #[test]
    fn flags_and_defaults() {
        let cli = Cli::try_parse_from(["ringway-backend", "--listen", "9003", "--worker-id", "n3"])
            .unwrap();
        let cfg = Config::from_cli(cli);
        assert_eq!(cfg.listen, "127.0.0.1:9003".parse().unwrap());
        assert_eq!(cfg.worker_id, "n3");

        let cli =
            Cli::try_parse_from(["ringway-backend", "--listen", "1", "--worker-id", " "]).unwrap();
        let cfg = Config::from_cli(cli);
        assert!(
            cfg.worker_id.ends_with(&format!("-{}", std::process::id())),
            "{}",
            cfg.worker_id
        );
    }
}
