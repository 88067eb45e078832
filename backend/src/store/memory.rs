//! The in-process store: the same semantics as Redis, kept in maps, with
//! expiry checked on read. Shared (`Arc`) by every node of one process.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{now_ms, Beat, Heartbeat, SessionRecord, Store, StoreError, WorkerInfo};

/// Sessions, presence and workers of one process.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, (SessionRecord, Instant)>,
    /// worker → sids it holds.
    index: HashMap<String, HashSet<String>>,
    /// room → (user, sid) → present until.
    presence: HashMap<String, HashMap<(String, String), Instant>>,
    workers: HashMap<String, Worker>,
    claims: HashMap<String, Instant>,
}

struct Worker {
    node_id: String,
    instance: String,
    last_beat: Instant,
    interval: Duration,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn live_session(&mut self, sid: &str) -> Option<&mut SessionRecord> {
        let now = Instant::now();
        if self
            .sessions
            .get(sid)
            .is_some_and(|(_, until)| *until <= now)
        {
            self.sessions.remove(sid);
        }
        self.sessions.get_mut(sid).map(|(r, _)| r)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().live_session(sid).cloned())
    }

    async fn save(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !record.worker.is_empty() {
            state
                .index
                .entry(record.worker.clone())
                .or_default()
                .insert(record.sid.clone());
        }
        state
            .sessions
            .insert(record.sid.clone(), (record.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn release(&self, sid: &str, worker: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(set) = state.index.get_mut(worker) {
            set.remove(sid);
        }
        let now = Instant::now();
        if let Some(record) = state.live_session(sid) {
            if record.worker == worker {
                record.worker.clear();
            }
            record.last_seen_ms = now_ms();
            state.sessions.get_mut(sid).expect("live").1 = now + ttl;
        }
        Ok(())
    }

    async fn set_presence(
        &self,
        room: &str,
        user: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.lock()
            .presence
            .entry(room.to_owned())
            .or_default()
            .insert((user.to_owned(), sid.to_owned()), Instant::now() + ttl);
        Ok(())
    }

    async fn remove_presence(&self, room: &str, user: &str, sid: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(members) = state.presence.get_mut(room) {
            members.remove(&(user.to_owned(), sid.to_owned()));
            if members.is_empty() {
                state.presence.remove(room);
            }
        }
        Ok(())
    }

    async fn presence(&self, room: &str) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(members) = state.presence.get_mut(room) else {
            return Ok(Vec::new());
        };
        members.retain(|_, until| *until > now);
        let users: BTreeSet<String> = members.keys().map(|(u, _)| u.clone()).collect();
        Ok(users.into_iter().collect())
    }

    async fn heartbeat(&self, hb: Heartbeat<'_>) -> Result<Beat, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let previous = state.workers.insert(
            hb.worker.to_owned(),
            Worker {
                node_id: hb.node_id.to_owned(),
                instance: hb.instance.to_owned(),
                last_beat: now,
                interval: hb.interval,
            },
        );
        let conflict = !hb.first && previous.is_some_and(|w| w.instance != hb.instance);
        let mut beat = Beat {
            conflict,
            ..Beat::default()
        };
        for (id, w) in &state.workers {
            let silent = now.duration_since(w.last_beat);
            if silent > w.interval * 3 {
                beat.dead.push(id.clone());
            } else {
                beat.alive.push(WorkerInfo {
                    worker_id: id.clone(),
                    node_id: w.node_id.clone(),
                    sessions: state.index.get(id).map_or(0, |s| s.len() as u64),
                    last_beat_ms_ago: silent.as_millis() as u64,
                });
            }
        }
        beat.alive.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        beat.dead.sort();
        Ok(beat)
    }

    async fn claim_dead(&self, dead: &str, _me: &str, hold: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.claims.get(dead) {
            Some(until) if *until > now => Ok(false),
            _ => {
                state.claims.insert(dead.to_owned(), now + hold);
                Ok(true)
            }
        }
    }

    async fn clean_dead(&self, dead: &str) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let sids = state.index.remove(dead).unwrap_or_default();
        let mut released = 0;
        for sid in sids {
            if let Some(record) = state.live_session(&sid) {
                if record.worker == dead {
                    record.worker.clear();
                    released += 1;
                }
            }
        }
        state.workers.remove(dead);
        Ok(released)
    }

    async fn leave(&self, worker: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.workers.remove(worker);
        state.index.remove(worker);
        Ok(())
    }

    async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        drop(self.lock());
        Ok(start.elapsed())
    }
}
