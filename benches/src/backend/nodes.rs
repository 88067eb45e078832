//! The system under test: `redis-server` and `ringway-backend` nodes,
//! started with the `ringway-tests` harness (free loopback ports, readiness
//! polled, killed when dropped).
//!
//! Two backplanes, so that Redis' share of the latency can be isolated:
//! - [`Deployment::redis`]: a private Redis and one process per node, as
//!   in production.
//! - [`Deployment::memory_pair`]: one process running two nodes
//!   (`--nodes 2`) that share the in-process broker: the same node code,
//!   no Redis.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use ringway_tests::backend::{Backend, RedisServer};
use ringway_tests::{free_port, http_client, target_bin, wait_for_http_ok, Child};

use crate::procs::{PidGuard, Watched};
use crate::stats::Scrape;

/// The node settings every benchmark uses.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `WS_RATE_LIMIT` and `WS_RATE_BURST`: high, so the per-connection
    /// limiter never throttles a publisher.
    pub rate_limit: u64,
    /// `WS_OUTBOUND_QUEUE`: frames that may wait for one client.
    pub outbound_queue: usize,
    /// `WS_HEARTBEAT_INTERVAL`, seconds (pings, cluster heartbeats).
    pub heartbeat_secs: f64,
    /// More variables, set last (`HISTORY_SIZE`, `RUST_LOG`, an
    /// `LD_PRELOAD` for an experiment …).
    pub extra_env: Vec<(String, String)>,
}

impl NodeSettings {
    /// The environment a node gets (the harness clears every other
    /// variable the backend reads).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("WS_RATE_LIMIT".into(), self.rate_limit.to_string()),
            ("WS_RATE_BURST".into(), self.rate_limit.to_string()),
            ("WS_OUTBOUND_QUEUE".into(), self.outbound_queue.to_string()),
            (
                "WS_HEARTBEAT_INTERVAL".into(),
                self.heartbeat_secs.to_string(),
            ),
            // The harness default adds debug logs; production runs at info.
            ("RUST_LOG".into(), "info".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }
}

/// One node as clients reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its `WORKER_ID`.
    pub worker_id: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Endpoint {
    /// The dev-mode WebSocket URL for `user`.
    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/ws?user={user}", self.addr)
    }

    /// Read its `/metrics`.
    pub async fn scrape(&self) -> anyhow::Result<Scrape> {
        let url = format!("http://{}/metrics", self.addr);
        let text = http_client()
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .text()
            .await
            .with_context(|| format!("GET {url}"))?;
        Ok(Scrape::parse(&text))
    }
}

/// Running processes and the nodes they serve. Dropping it kills them all.
pub struct Deployment {
    /// `redis` or `memory`.
    pub backplane: &'static str,
    /// The nodes, in start order.
    pub nodes: Vec<Endpoint>,
    /// Processes to measure CPU use of (this process not included).
    pub watched: Vec<Watched>,
    settings: NodeSettings,
    backends: Vec<Backend>,
    memory: Option<Child>,
    redis: Option<RedisServer>,
    _guards: Vec<PidGuard>,
}

impl Deployment {
    /// A private Redis and `nodes` node processes using it.
    pub async fn redis(nodes: usize, settings: &NodeSettings) -> anyhow::Result<Deployment> {
        let redis = RedisServer::start().await;
        let info = redis.cmd(&["INFO", "server"]);
        let pid: u32 = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("process_id:"))
            .and_then(|p| p.parse().ok())
            .context("redis INFO server has no process_id")?;
        let mut dep = Deployment {
            backplane: "redis",
            nodes: Vec::new(),
            watched: vec![Watched::new("redis", pid)],
            settings: settings.clone(),
            backends: Vec::new(),
            memory: None,
            _guards: vec![PidGuard::new(pid, "redis-server")],
            redis: Some(redis),
        };
        for _ in 0..nodes {
            dep.add_node().await?;
        }
        Ok(dep)
    }

    /// Start one more node process on this deployment's Redis.
    pub async fn add_node(&mut self) -> anyhow::Result<Endpoint> {
        let redis = self
            .redis
            .as_ref()
            .context("only a Redis deployment can grow")?;
        let name = node_name(self.backends.len());
        let worker_id = format!("bench-{}", name.to_lowercase().replace(' ', "-"));
        let mut env = self.settings.env();
        env.push(("REDIS_URL".into(), redis.url()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let backend = Backend::start(&worker_id, &env).await;
        let pid = backend.child.pid();
        self._guards.push(PidGuard::new(pid, &worker_id));
        self.watched.push(Watched::new(&name, pid));
        let endpoint = Endpoint {
            worker_id,
            addr: backend.addr,
        };
        self.nodes.push(endpoint.clone());
        self.backends.push(backend);
        Ok(endpoint)
    }

    /// One `ringway-backend --nodes 2` process without Redis: two nodes on
    /// consecutive ports sharing the in-process broker.
    pub async fn memory_pair(settings: &NodeSettings) -> anyhow::Result<Deployment> {
        let port = consecutive_free_ports();
        let mut cmd = Command::new(target_bin("ringway-backend"));
        cmd.env_clear()
            .envs(settings.env())
            .args(["--nodes", "2", "--worker-id", "bench-mem", "--listen"])
            .arg(format!("127.0.0.1:{port}"));
        let child = Child::spawn(cmd);
        let pid = child.pid();
        let guard = PidGuard::new(pid, "ringway-backend --nodes 2");
        let nodes: Vec<Endpoint> = (0..2)
            .map(|i| Endpoint {
                worker_id: format!("bench-mem-{}", i + 1),
                addr: SocketAddr::from(([127, 0, 0, 1], port + i)),
            })
            .collect();
        for node in &nodes {
            let url = format!("http://{}/health", node.addr);
            if let Err(e) = wait_for_http_ok(&url, Duration::from_secs(20)).await {
                anyhow::bail!("memory pair did not start: {e}\n{}", child.log());
            }
        }
        Ok(Deployment {
            backplane: "memory",
            nodes,
            watched: vec![Watched::new("nodes A+B (one process)", pid)],
            settings: settings.clone(),
            backends: Vec::new(),
            memory: Some(child),
            redis: None,
            _guards: vec![guard],
        })
    }

    /// WARN and ERROR lines the node processes logged so far (a benchmark
    /// that provoked them says so).
    pub fn warnings(&self) -> Vec<String> {
        let logs = self
            .backends
            .iter()
            .map(|b| b.child.log())
            .chain(self.memory.iter().map(|c| c.log()));
        logs.flat_map(|log| {
            log.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
    }
}

/// "node A", "node B", …
pub fn node_name(i: usize) -> String {
    format!("node {}", (b'A' + i as u8) as char)
}

/// A port `p` such that `p` and `p + 1` are both free now.
fn consecutive_free_ports() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}
