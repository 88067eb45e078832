//! `ringway-backend`: the WebSocket node behind `ringway-proxy`. Nodes
//! share sessions, presence and room history through Redis, so a session
//! survives its node: a client that lands elsewhere after a crash, a
//! scale-out or a reload resumes it and gets every missed message, in
//! order, exactly once. Without Redis, one process runs alone (or several
//! nodes of one process share an in-process broker).
//!
//! The map, from the socket inwards:
//! - [`http`]: the router — `/ws`, `/health`, `/api/websocket/stats`,
//!   `/metrics` and the `X-WebSocket-*` headers.
//! - [`auth`]: who may connect (JWT, dev mode, Origin allow-list), with
//!   [`permissions`] (the rooms a token grants) and [`admission`] (the
//!   connection caps and per-user rates).
//! - [`api`]: the HTTP publish API for application servers.
//! - [`session`]: one connection: connect, reader (client frames), writer
//!   (ordered, de-duplicated delivery by a pure ordering machine), limits.
//! - [`idempotency`]: the keys under which publishes are remembered.
//! - [`protocol`]: the wire format (`docs/PROTOCOL.md`); [`history`]: the
//!   ordering and recovery rules.
//! - [`hub`]: local connections and rooms, and the fan-out.
//! - [`broker`]: numbered, stored, fanned-out room messages (memory or
//!   Redis); [`store`]: sessions, presence, membership (memory or Redis);
//!   [`redis_link`]: how both reach Redis.
//! - [`cluster`]: heartbeats, session refresh, dead-node cleanup.
//! - [`config`], [`metrics`].

pub mod admission;
pub mod api;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod history;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod metrics;
pub mod permissions;
pub mod protocol;
pub mod redis_link;
pub mod session;
pub mod store;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Notify};

use crate::admission::Admission;
use crate::auth::Auth;
use crate::broker::{Broker, MemoryBus, RedisBroker};
use crate::cluster::ClusterView;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::redis_link::{LinkError, RedisLink};
use crate::store::{MemoryStore, RedisStore, Store};

pub use config::Config;

/// How long shutdown waits for WebSockets to finish their close handshake.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the nodes of one process share: Redis, or the in-process broker
/// and store.
pub enum Backplane {
    /// No Redis: one process is the whole cluster.
    Memory {
        /// Room logs and subscriptions.
        bus: Arc<MemoryBus>,
        /// Sessions, presence, workers.
        store: Arc<MemoryStore>,
    },
    /// Redis (standalone or cluster).
    Redis {
        /// The connections.
        link: Arc<RedisLink>,
        /// Sessions, presence, workers.
        store: Arc<RedisStore>,
    },
}

impl Backplane {
    /// Redis when the config names it, else in memory. Nothing is dialled yet.
    pub fn new(config: &Config) -> Result<Backplane, LinkError> {
        Ok(match &config.redis {
            Some(settings) => {
                let link = Arc::new(RedisLink::new(settings)?);
                let store = Arc::new(RedisStore::new(link.conn()));
                Backplane::Redis { link, store }
            }
            None => Backplane::Memory {
                bus: MemoryBus::new(config.history),
                store: MemoryStore::new(),
            },
        })
    }

    /// `memory`, `standalone` or `cluster`.
    pub fn mode(&self) -> &'static str {
        match self {
            Backplane::Memory { .. } => "memory",
            Backplane::Redis { link, .. } => link.mode,
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backplane::Memory { store, .. } => store.clone(),
            Backplane::Redis { store, .. } => store.clone(),
        }
    }

    fn broker(&self, config: &Config, hub: Arc<Hub>) -> Arc<dyn Broker> {
        match self {
            Backplane::Memory { bus, .. } => Arc::new(bus.attach(&config.worker_id, hub)),
            Backplane::Redis { link, .. } => Arc::new(RedisBroker::new(
                link.clone(),
                &config.worker_id,
                config.history,
                config.redis.as_ref().is_some_and(|r| r.durable),
                hub,
            )),
        }
    }
}

/// One node: its config and every part it runs with.
pub struct Node {
    /// Its settings.
    pub config: Config,
    /// Sessions, presence, membership.
    pub store: Arc<dyn Store>,
    /// Room messages.
    pub broker: Arc<dyn Broker>,
    /// Local connections and rooms.
    pub hub: Arc<Hub>,
    /// Its Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Its connect policy.
    pub auth: Auth,
    /// Its connection caps and per-user rates.
    pub admission: Arc<Admission>,
    /// What it knows of the cluster.
    pub cluster: ClusterView,
    /// `memory`, `standalone` or `cluster`.
    pub mode: &'static str,
    /// This process' incarnation of `worker_id`, fresh at every start.
    pub instance: String,
    started: Instant,
    shutting_down: AtomicBool,
    stopped: watch::Sender<bool>,
    idle: Notify,
    /// Session tasks not finished yet (their store cleanup included).
    running: AtomicUsize,
    last_error_log: AtomicU64,
}

impl Node {
    /// Assemble a node on `backplane`. Nothing runs until [`serve`].
    pub fn new(config: Config, backplane: &Backplane) -> Arc<Node> {
        let metrics = Arc::new(Metrics::new(&config.worker_id));
        let hub = Hub::new(metrics.clone());
        let broker = backplane.broker(&config, hub.clone());
        Arc::new(Node {
            auth: Auth::new(&config.auth),
            admission: Admission::new(config.admission.clone()),
            store: backplane.store(),
            broker,
            hub,
            metrics,
            cluster: ClusterView::default(),
            mode: backplane.mode(),
            instance: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            stopped: watch::Sender::new(false),
            idle: Notify::new(),
            running: AtomicUsize::new(0),
            last_error_log: AtomicU64::new(0),
            config,
        })
    }

    /// Count a failed Redis call; log it at most once a second.
    pub fn redis_error(&self, e: &dyn std::fmt::Display) {
        self.metrics.redis_errors.inc();
        let now = self.started.elapsed().as_secs();
        if self.last_error_log.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(error = %e, "redis call failed; serving local clients only until it is back");
        }
    }

    /// Whether shutdown has begun (new connections are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Seconds since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Begin shutdown: refuse new connections, close every WebSocket with
    /// 1001 so clients reconnect (through the proxy) to another node.
    pub fn begin_shutdown(&self) {
        if !self.shutting_down.swap(true, Ordering::Relaxed) {
            tracing::info!(
                connections = self.hub.local_connections(),
                "shutting down: closing websockets with 1001"
            );
            self.hub
                .close_all(protocol::CLOSE_GOING_AWAY, "node shutting down");
        }
    }

    /// A receiver that turns true when the node's background work must stop.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stopped.subscribe()
    }

    /// A connection's session task began.
    pub(crate) fn connection_started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's session task is done, its session released in the store.
    pub(crate) fn connection_ended(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.idle.notify_waiters();
    }

    /// Wait until every connection has ended and released its session, or
    /// `timeout`. True when none is left.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.running.load(Ordering::Relaxed) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Serve `node` on `listener` until `shutdown` resolves; then stop
/// accepting, close every WebSocket with 1001, wait (at most
/// [`CLOSE_WAIT`]) for them to go, and leave the cluster. Sessions stay in
/// the store for their clients to resume elsewhere.
pub async fn serve<F>(listener: TcpListener, node: Arc<Node>, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    cluster::take_over_id(&node).await;
    cluster::beat(&node).await;
    let heartbeat = tokio::spawn(cluster::run(node.clone()));
    let app = http::router(node.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Frames are small and latency matters; the writer batches bursts itself.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let closing = node.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.begin_shutdown();
        })
        .await;
    node.begin_shutdown();
    if !node.wait_idle(CLOSE_WAIT).await {
        tracing::warn!(
            left = node.hub.local_connections(),
            "websockets still open after {CLOSE_WAIT:?}; dropping them"
        );
    }
    node.stopped.send_replace(true);
    let _ = heartbeat.await;
    if let Err(e) = node.store.leave(&node.config.worker_id).await {
        node.redis_error(&e);
    }
    served
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Redis settings are unusable.
    #[error(transparent)]
    Redis(#[from] LinkError),
    /// The listen address could not be bound.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, io::Error),
    /// The listener failed while serving.
    #[error("listener: {0}")]
    Io(#[from] io::Error),
}

/// Run `count` nodes (1 in production; more for a development cluster in
/// one process) on one backplane until `shutdown` resolves. Node *i* listens
/// on the configured port + *i* and is named `WORKER_ID-<i+1>` when there
/// are several. Once every listener is bound, a service manager is told
/// `READY=1` (sd_notify; nothing is sent without `NOTIFY_SOCKET`).
pub async fn run<F>(base: Config, count: u16, shutdown: F) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let backplane = Backplane::new(&base)?;
    warn_if_open(&base);
    let (stop, stopped) = watch::channel(false);
    let mut nodes = Vec::new();
    for i in 0..count.max(1) {
        let mut config = base.clone();
        if count > 1 {
            config.listen.set_port(base.listen.port() + i);
            config.worker_id = format!("{}-{}", base.worker_id, i + 1);
        }
        let listener = listen(config.listen).map_err(|e| RunError::Bind(config.listen, e))?;
        let node = Node::new(config, &backplane);
        tracing::info!(
            listen = %local_addr_text(&listener),
            worker_id = %node.config.worker_id,
            mode = node.mode,
            "ringway-backend listening"
        );
        let mut stopped = stopped.clone();
        let node_shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        nodes.push(tokio::spawn(serve(listener, node, node_shutdown)));
    }
    ringway_notify::ready(); // ringway:notify READY=1: every listener is bound
    shutdown.await;
    stop.send_replace(true);
    for node in nodes {
        match node.await {
            Ok(served) => served?,
            Err(e) => return Err(RunError::Io(io::Error::other(e))),
        }
    }
    Ok(())
}

/// Say loudly, at start, when anyone can claim to be anyone: dev mode
/// (no `JWT_SECRET`) is for a laptop, never for a reachable node.
fn warn_if_open(config: &Config) {
    if config.auth.secret.is_some() {
        return;
    }
    let exposed = !config.listen.ip().is_loopback();
    tracing::warn!(
        listen = %config.listen,
        "DEV MODE: JWT_SECRET is not set, so authentication is OFF: any client may \
         claim any user with ?user=, join and publish into every room and broadcast. \
         Set JWT_SECRET (at least 32 bytes) before exposing this node{}",
        if exposed { " -- and it listens beyond loopback NOW" } else { "" }
    );
}

/// Pending connections the kernel queues for a listener. When a node dies,
/// its clients reconnect to the survivors at once; the usual 128 made some
/// of them wait out a SYN retransmit (1 s). The kernel caps it at somaxconn.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind a listener with [`LISTEN_BACKLOG`].
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn local_addr_text(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string())
}
