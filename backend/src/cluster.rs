//! The node's life in the cluster, one heartbeat at a time:
//!
//! 1. tell the store it is alive, and learn who else is (cached in
//!    [`ClusterView`] for headers, stats and `/health`);
//! 2. refresh every local session's record and presence, so their TTLs
//!    run from the last sign of life and a lost Redis is refilled;
//! 3. for every worker silent for three of its intervals, try to claim its
//!    cleanup; the one survivor that wins releases its sessions.
//!
//! It also answers the broker's "resubscribed" signal by checking every
//! local room's position, so messages published while the node's pub/sub
//! link was down are delivered from history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hub::Out;
use crate::store::{connected_presence_ttl, now_ms, Beat, Heartbeat, WorkerInfo};
use crate::Node;

/// Concurrent store calls per batch when refreshing sessions.
const REFRESH_BATCH: usize = 256;

/// What this node last learned about the cluster.
#[derive(Default)]
pub struct ClusterView {
    beat: RwLock<Beat>,
    store_healthy: AtomicBool,
    /// A resync failed part-way and must be retried on the next heartbeat.
    resync_pending: AtomicBool,
    cleaned: Mutex<Vec<CleanedWorker>>,
    /// A heartbeat of this process has reached the store.
    registered: AtomicBool,
    /// When a heartbeat last found another process beating as this worker.
    conflict_at: Mutex<Option<Instant>>,
}

/// A dead worker this node cleaned up.
#[derive(Debug, Clone, Serialize)]
pub struct CleanedWorker {
    /// Its worker id.
    pub worker_id: String,
    /// Sessions released.
    pub sessions: usize,
    /// When, Unix ms.
    pub at_ms: u64,
}

impl ClusterView {
    /// Live workers, this one included (1 before the first heartbeat).
    pub fn total_workers(&self) -> usize {
        self.read().alive.len().max(1)
    }

    /// Sessions held by live workers.
    pub fn total_sessions(&self) -> u64 {
        self.read().alive.iter().map(|w| w.sessions).sum()
    }

    /// The live workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.read().alive.clone()
    }

    /// Whether the last heartbeat reached the store.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }

    /// Whether another process has been beating under this node's
    /// `WORKER_ID` within the last `window` (three heartbeats, say: two
    /// duplicates do not see each other on every beat).
    pub fn worker_id_conflict(&self, window: Duration) -> bool {
        self.conflict_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < window)
    }

    /// The dead workers this node cleaned up.
    pub fn cleaned(&self) -> Vec<CleanedWorker> {
        self.cleaned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Beat> {
        self.beat.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Heartbeat until the node stops.
pub async fn run(node: Arc<Node>) {
    let mut stopped = node.stopped();
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(node.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset(); // `serve` beat once already
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => beat(&node).await,
            _ = node.hub.resubscribed.notified() => resync(&node).await,
        }
    }
}

/// Before the first heartbeat: release whatever an earlier process with
/// this `WORKER_ID` left indexed (it crashed and was restarted under the
/// same id, so no survivor saw it die).
pub async fn take_over_id(node: &Arc<Node>) {
    match node.store.clean_dead(&node.config.worker_id).await {
        Ok(0) => {}
        Ok(sessions) => tracing::info!(
            sessions,
            "released the sessions an earlier process with this WORKER_ID still held"
        ),
        Err(e) => node.redis_error(&e),
    }
}

/// One heartbeat: announce, refresh, clean.
pub async fn beat(node: &Arc<Node>) {
    let config = &node.config;
    let view = &node.cluster;
    let heartbeat = Heartbeat {
        worker: &config.worker_id,
        instance: &node.instance,
        node_id: &config.node_id,
        interval: config.heartbeat_interval,
        first: !view.registered.load(Ordering::Relaxed),
    };
    match node.store.heartbeat(heartbeat).await {
        Ok(beat) => {
            view.registered.store(true, Ordering::Relaxed);
            view.store_healthy.store(true, Ordering::Relaxed);
            if beat.conflict {
                tracing::error!(
                    worker_id = %config.worker_id,
                    "another process is beating under this WORKER_ID; give every node its own"
                );
                *view.conflict_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            let dead = beat.dead.clone();
            *view.beat.write().unwrap_or_else(|p| p.into_inner()) = beat;
            node.metrics.workers.set(view.total_workers() as i64);
            node.metrics.sessions.set(view.total_sessions() as i64);
            refresh(node).await;
            for worker in dead {
                clean(node, &worker).await;
            }
            if view.resync_pending.load(Ordering::Relaxed) {
                resync(node).await;
            }
        }
        Err(e) => {
            view.store_healthy.store(false, Ordering::Relaxed);
            node.redis_error(&e);
        }
    }
}

/// Rewrite every local session (last sign of life now, this worker as
/// holder) and its presence.
async fn refresh(node: &Arc<Node>) {
    let config = &node.config;
    let presence_ttl = connected_presence_ttl(config.heartbeat_interval, config.grace_period);
    let conns = node.hub.connections();
    for batch in conns.chunks(REFRESH_BATCH) {
        let calls = batch.iter().filter(|c| !c.closer.is_closing()).map(|conn| {
            let record = conn.update(|r| {
                r.last_seen_ms = now_ms();
                r.worker.clone_from(&config.worker_id);
            });
            async move {
                node.store.save(&record, config.session_ttl).await?;
                for room in &record.rooms {
                    node.store
                        .set_presence(room, &record.user, &record.sid, presence_ttl)
                        .await?;
                }
                Ok::<(), crate::store::StoreError>(())
            }
        });
        for outcome in futures_util::future::join_all(calls).await {
            if let Err(e) = outcome {
                node.redis_error(&e);
            }
        }
    }
}

/// Try to be the survivor that cleans `worker` up.
async fn clean(node: &Arc<Node>, worker: &str) {
    let me = &node.config.worker_id;
    let hold = (node.config.heartbeat_interval * 10).max(Duration::from_secs(30));
    match node.store.claim_dead(worker, me, hold).await {
        Ok(true) => match node.store.clean_dead(worker).await {
            Ok(sessions) => {
                tracing::info!(dead = worker, sessions, "cleaned up a dead worker");
                node.metrics.dead_workers_cleaned.inc();
                node.cluster
                    .cleaned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(CleanedWorker {
                        worker_id: worker.to_owned(),
                        sessions,
                        at_ms: now_ms(),
                    });
            }
            Err(e) => node.redis_error(&e),
        },
        Ok(false) => tracing::debug!(dead = worker, "another survivor is cleaning it"),
        Err(e) => node.redis_error(&e),
    }
}

/// After the broker's link came back: make every local member of every
/// room catch up to the room's top.
pub async fn resync(node: &Arc<Node>) {
    let rooms = node.hub.rooms();
    tracing::info!(
        rooms = rooms.len(),
        "re-checking room positions after a pub/sub reconnect"
    );
    let mut failed = false;
    for room in rooms {
        node.hub.offer(&room, || Out::Mark(room.clone()));
        match node.broker.position(&room).await {
            Ok(top) => node.hub.offer(&room, || Out::Check {
                room: room.clone(),
                top: top.clone(),
            }),
            Err(e) => {
                node.redis_error(&e);
                failed = true;
            }
        }
    }
    node.cluster.resync_pending.store(failed, Ordering::Relaxed);
}
