//! Shared state that outlives any one node: sessions, presence, and the
//! membership of the cluster itself. Two implementations behind one trait,
//! checked by one test suite (`tests/tests/backend_traits.rs`):
//!
//! - [`memory`]: in process (one node, or the nodes of one process).
//! - [`redis`]: Redis, so that a session survives its node.
//!
//! Invariants both keep:
//! - A session record is written while its client is connected (on
//!   connect, on every room change, and every heartbeat), not only at
//!   disconnect, so a node that dies leaves a resumable record behind. It
//!   expires `WEBSOCKET_SESSION_TTL` after its last refresh.
//! - A session is indexed under the worker that holds it; `release`
//!   clears the worker only if it is still the caller (a resume elsewhere
//!   wins).
//! - Presence entries expire by themselves; nobody has to remove a crashed
//!   node's users.
//! - A worker is dead when its last heartbeat is older than three of its
//!   own intervals; `claim_dead` lets exactly one survivor clean it.
//! - Each heartbeat carries the beating process' instance id; a different
//!   instance found on any beat but a process' first is a `WORKER_ID`
//!   conflict.

pub mod memory;
pub mod redis;

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or answered with an error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// One session: who it is, where it lives, what it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id the client resumes with.
    pub sid: String,
    /// The user it belongs to; a resume by another user is refused.
    pub user: String,
    /// The worker holding its connection now; empty when none does.
    pub worker: String,
    /// When it was made, Unix ms.
    pub created_ms: u64,
    /// Its last sign of life, Unix ms.
    pub last_seen_ms: u64,
    /// Rooms it has joined (including `*` and its inbox).
    pub rooms: BTreeSet<String>,
    /// Application data carried with the session (the token's `meta` claim).
    pub metadata: serde_json::Value,
}

/// A live worker, as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    /// Its `WORKER_ID`.
    pub worker_id: String,
    /// Its `NODE_ID`.
    pub node_id: String,
    /// Sessions it holds.
    pub sessions: u64,
    /// Milliseconds since its last heartbeat.
    pub last_beat_ms_ago: u64,
}

/// One worker's heartbeat, as the store records it.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    /// Its `WORKER_ID`.
    pub worker: &'a str,
    /// This process' incarnation of the worker (fresh at every start), so
    /// that two processes given one `WORKER_ID` can be told apart.
    pub instance: &'a str,
    /// Its `NODE_ID`.
    pub node_id: &'a str,
    /// How often it beats; it is dead after three silent intervals.
    pub interval: Duration,
    /// Its first beat since the process started: taking the id over from
    /// an earlier process (a restart) is expected then, not a conflict.
    pub first: bool,
}

/// What a heartbeat learns about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Beat {
    /// Every worker whose heartbeat is recent, this one included.
    pub alive: Vec<WorkerInfo>,
    /// Workers silent for more than three of their intervals.
    pub dead: Vec<String>,
    /// Another process beat under this worker's id since its previous
    /// beat: two live processes share one `WORKER_ID`.
    pub conflict: bool,
}

/// Sessions, presence and cluster membership.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The session `sid`, if it has not expired.
    async fn load(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Write the whole record, index it under its worker, and expire it
    /// `ttl` from now. Also how a node refreshes its live sessions.
    async fn save(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError>;

    /// The session's connection on `worker` ended: stamp `last_seen`, clear
    /// the worker if it is still `worker`, keep the record for `ttl`.
    async fn release(&self, sid: &str, worker: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Mark `user` (through session `sid`) present in `room` for `ttl`.
    async fn set_presence(
        &self,
        room: &str,
        user: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// End `sid`'s presence in `room` now.
    async fn remove_presence(&self, room: &str, user: &str, sid: &str) -> Result<(), StoreError>;

    /// Users present in `room`, sorted, each once.
    async fn presence(&self, room: &str) -> Result<Vec<String>, StoreError>;

    /// Record that a worker is alive and learn who else is, who is dead,
    /// and whether another process is using its id.
    async fn heartbeat(&self, beat: Heartbeat<'_>) -> Result<Beat, StoreError>;

    /// Try to become the one survivor that cleans up `dead`. True for
    /// exactly one caller while the claim lasts (`hold`).
    async fn claim_dead(&self, dead: &str, me: &str, hold: Duration) -> Result<bool, StoreError>;

    /// Release every session still held by `dead` and forget the worker.
    /// Returns how many sessions were released.
    async fn clean_dead(&self, dead: &str) -> Result<usize, StoreError>;

    /// Leave the cluster on a clean shutdown (sessions are kept, released).
    async fn leave(&self, worker: &str) -> Result<(), StoreError>;

    /// A real round trip to the store; the time it took.
    async fn ping(&self) -> Result<Duration, StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a connected session's presence lasts between refreshes: three
/// heartbeats plus the grace period, so a crash looks like a disconnect.
pub fn connected_presence_ttl(heartbeat: Duration, grace: Duration) -> Duration {
    heartbeat * 3 + grace
}
