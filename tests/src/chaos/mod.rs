//! The chaos run: many clients in many rooms behind the proxy and three
//! nodes, publishers sending numbered messages with ids, while a node is
//! killed (`kill -9`) and restarted every few seconds and Redis is
//! restarted once. At the end every client's view of its room is judged
//! ([`verdict`]): lost, duplicated, out of order, and resets told.
//!
//! Used by the short CI test (`tests/tests/backend_chaos.rs`) and by the
//! longer run (`ringway-chaos`, `scripts/chaos.sh`).

pub mod client;
pub mod verdict;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::watch;

use crate::backend::{Backend, RedisOpts, RedisServer};
use crate::configs::ProxyConfig;
use crate::Proxy;
use client::Identity;
use verdict::{judge, Pos, Tally};

/// How a chaos run goes.
#[derive(Debug, Clone)]
pub struct ChaosOpts {
    /// Subscribing clients (spread evenly over the rooms).
    pub clients: usize,
    /// Rooms, one publisher each.
    pub rooms: usize,
    /// How long the faults go on.
    pub duration: Duration,
    /// A node is killed this often (and restarted a second later).
    pub kill_every: Duration,
    /// Each publisher's pause between two acked messages.
    pub publish_every: Duration,
    /// `REDIS_DURABLE=1` on the nodes (Redis has `appendfsync always` either way).
    pub durable: bool,
}

/// What a chaos run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChaosReport {
    /// Whether the nodes declared Redis durable.
    pub durable: bool,
    /// Subscribing clients.
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Messages acked to publishers.
    pub acked: u64,
    /// Summed over every client.
    #[serde(flatten)]
    pub tally: Tally,
    /// Nodes killed with SIGKILL.
    pub node_kills: u32,
    /// Redis restarts.
    pub redis_restarts: u32,
    /// Subscribers that had not caught up with their room's last message
    /// when the run gave up waiting (their missing messages count as lost).
    pub behind: usize,
    /// Wall time of the whole run, seconds.
    pub secs: f64,
}

impl ChaosReport {
    /// One line for logs: every count that matters.
    pub fn line(&self) -> String {
        format!(
            "chaos ({}durable): {} clients, {} rooms, {} node kills, {} redis restarts: \
             acked {}, delivered {}, lost {}, duplicated {}, out-of-order {}, resets {}, behind {} ({:.0} s)",
            if self.durable { "" } else { "not " },
            self.clients,
            self.rooms,
            self.node_kills,
            self.redis_restarts,
            self.acked,
            self.tally.delivered,
            self.tally.lost,
            self.tally.duplicated,
            self.tally.out_of_order,
            self.tally.resets,
            self.behind,
            self.secs,
        )
    }
}

/// `127.0.0.2` … `127.0.0.51`: clients spread over source addresses, so
/// per-address limits of an edge see a realistic mix.
fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 50) as u8))
}

/// Run the chaos as `opts` say and judge it.
pub async fn run(opts: &ChaosOpts) -> ChaosReport {
    let started = Instant::now();
    let mut redis = RedisServer::start_with(RedisOpts {
        persistent: true,
        ..RedisOpts::default()
    })
    .await;
    let url = redis.url();
    let durable = if opts.durable { "1" } else { "0" };
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_DURABLE", durable),
        ("WS_HEARTBEAT_INTERVAL", "1"),
        ("WEBSOCKET_SESSION_TTL", "120"),
        ("WS_GRACE_PERIOD", "5"),
        ("WS_RATE_LIMIT", "10000"),
        ("WS_RATE_BURST", "10000"),
    ];
    let mut nodes =
        join_all(["chaos-1", "chaos-2", "chaos-3"].map(|n| Backend::start(n, &env))).await;
    let config = ProxyConfig {
        hash_key: vec!["query:sid", "client-ip"],
        health_check: "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\n\
                       interval = \"300ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 2\n"
            .into(),
        ..ProxyConfig::over(nodes.iter().map(|n| n.addr))
    };
    let proxy = Proxy::start(&config.toml()).await;
    let room = |r: usize| format!("chaos-{r}");

    let (stop_subs, subs_stopped) = watch::channel(false);
    let (stop_pubs, pubs_stopped) = watch::channel(false);
    let mut subscribers = Vec::new();
    for i in 0..opts.clients {
        let who = Identity {
            proxy: proxy.listen,
            source: source(i),
            sid: format!("sub-{i}"),
            user: format!("u{i}"),
            room: room(i % opts.rooms),
        };
        let progress = Arc::new(Mutex::new(None));
        let task = tokio::spawn(client::subscribe(
            who,
            subs_stopped.clone(),
            progress.clone(),
        ));
        subscribers.push((i % opts.rooms, progress, task));
    }
    // Everyone has joined before the first message.
    let joined = crate::backend::eventually(Duration::from_secs(60), || async {
        subscribers
            .iter()
            .all(|(_, p, _)| p.lock().unwrap_or_else(|e| e.into_inner()).is_some())
    })
    .await;
    assert!(joined, "not every subscriber could join");
    let publishers: Vec<_> = (0..opts.rooms)
        .map(|r| {
            let who = Identity {
                proxy: proxy.listen,
                source: source(opts.clients + r),
                sid: format!("pub-{r}"),
                user: format!("p{r}"),
                room: room(r),
            };
            tokio::spawn(client::publish(
                who,
                opts.publish_every,
                pubs_stopped.clone(),
            ))
        })
        .collect();

    // The faults.
    let (mut node_kills, mut redis_restarts) = (0u32, 0u32);
    let chaos_start = Instant::now();
    let redis_at = opts.duration / 2 + opts.kill_every / 4;
    let mut next_kill = opts.kill_every;
    loop {
        let elapsed = chaos_start.elapsed();
        if elapsed >= opts.duration {
            break;
        }
        if redis_restarts == 0 && elapsed >= redis_at {
            redis.restart().await; // kill -9, then start again from its AOF
            redis_restarts += 1;
        }
        if elapsed >= next_kill {
            let node = &mut nodes[node_kills as usize % 3];
            node.child.kill();
            node_kills += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            node.restart().await;
            next_kill += opts.kill_every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Publishers finish their last message; then every subscriber must
    // reach its room's last position.
    stop_pubs.send_replace(true);
    let mut acked: Vec<HashMap<Pos, u64>> = vec![HashMap::new(); opts.rooms];
    let mut tops: Vec<Pos> = vec![(String::new(), 0); opts.rooms];
    for (r, task) in publishers.into_iter().enumerate() {
        let acks = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a publisher could not finish its last message")
            .expect("publisher task");
        if let Some((_, last)) = acks.last() {
            tops[r] = last.clone();
        }
        acked[r] = acks.into_iter().map(|(n, pos)| (pos, n)).collect();
    }
    let caught_up = |subs: &[(usize, Arc<Mutex<Option<Pos>>>, _)]| {
        subs.iter()
            .filter(|(r, p, _)| {
                p.lock().unwrap_or_else(|e| e.into_inner()).as_ref() != Some(&tops[*r])
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while caught_up(&subscribers) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let behind = caught_up(&subscribers);
    stop_subs.send_replace(true);

    let mut tally = Tally::default();
    for (r, _, task) in subscribers {
        let seen = task.await.expect("subscriber task");
        tally += judge(&seen, &acked[r], &tops[r]);
    }
    drop(proxy);
    ChaosReport {
        durable: opts.durable,
        clients: opts.clients,
        rooms: opts.rooms,
        acked: acked.iter().map(|a| a.len() as u64).sum(),
        tally,
        node_kills,
        redis_restarts,
        behind,
        secs: started.elapsed().as_secs_f64(),
    }
}
