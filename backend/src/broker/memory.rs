//! The in-process broker: a [`MemoryBus`] holds every room's log and the
//! subscriptions of every node attached to it; each node talks to it
//! through its own [`MemoryBroker`] handle.
//!
//! Publishing appends, delivers and remembers its idempotency key under
//! one lock, so subscribers see a room's messages in offset order and a
//! repeated key stores nothing, as with Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Broker, BrokerError, Control, Events, LiveMessage, Published, Recovery};
use crate::config::HistorySettings;
use crate::history::{self, Gap, Position, StoredMessage};
use crate::idempotency::{IdempotencyKey, REMEMBER};

/// Rooms and subscriptions shared by every node of one process.
pub struct MemoryBus {
    state: Mutex<BusState>,
    settings: HistorySettings,
    next_handle: AtomicU64,
}

#[derive(Default)]
struct BusState {
    rooms: HashMap<String, RoomLog>,
    /// room → handle → subscription count.
    subscriptions: HashMap<String, HashMap<u64, usize>>,
    /// handle → its node's events.
    nodes: HashMap<u64, Attached>,
    /// (room, idempotency key) → the position its publish got.
    remembered: HashMap<(String, IdempotencyKey), Position>,
    /// When each remembered key is forgotten, oldest first.
    forget_at: VecDeque<(Instant, String, IdempotencyKey)>,
}

struct Attached {
    worker: String,
    events: Arc<dyn Events>,
}

struct RoomLog {
    epoch: Arc<str>,
    top: u64,
    messages: VecDeque<StoredMessage>,
    /// Messages are dropped after this (`HISTORY_TTL` since the last publish).
    messages_until: Instant,
    /// The numbering itself is forgotten after this.
    meta_until: Instant,
}

impl RoomLog {
    fn new(settings: &HistorySettings, now: Instant) -> Self {
        RoomLog {
            epoch: history::new_epoch().into(),
            top: 0,
            messages: VecDeque::new(),
            messages_until: now + settings.ttl,
            meta_until: now + settings.meta_ttl,
        }
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.to_string(),
            offset: self.top,
        }
    }

    fn range(&self, after: u64, upto: u64) -> Option<Vec<StoredMessage>> {
        let found: Vec<StoredMessage> = self
            .messages
            .iter()
            .filter(|m| m.offset > after && m.offset <= upto)
            .cloned()
            .collect();
        history::is_complete(&found, after, upto).then_some(found)
    }
}

impl MemoryBus {
    /// An empty bus keeping history as `settings` say.
    pub fn new(settings: HistorySettings) -> Arc<Self> {
        Arc::new(MemoryBus {
            state: Mutex::new(BusState::default()),
            settings,
            next_handle: AtomicU64::new(1),
        })
    }

    /// Attach a node: its broker handle, delivering to `events`.
    pub fn attach(self: &Arc<Self>, worker: &str, events: Arc<dyn Events>) -> MemoryBroker {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.lock().nodes.insert(
            handle,
            Attached {
                worker: worker.to_owned(),
                events,
            },
        );
        MemoryBroker {
            bus: self.clone(),
            handle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BusState {
    /// The position a publish under `key` got, unless it is forgotten.
    fn remembered(&mut self, room: &str, key: &IdempotencyKey, now: Instant) -> Option<Position> {
        while self.forget_at.front().is_some_and(|(at, _, _)| *at <= now) {
            if let Some((_, room, key)) = self.forget_at.pop_front() {
                self.remembered.remove(&(room, key));
            }
        }
        self.remembered
            .get(&(room.to_owned(), key.clone()))
            .cloned()
    }

    fn remember(&mut self, room: &str, key: &IdempotencyKey, position: Position, now: Instant) {
        let entry = (room.to_owned(), key.clone());
        self.forget_at
            .push_back((now + REMEMBER, entry.0.clone(), entry.1.clone()));
        self.remembered.insert(entry, position);
    }

    /// The room's log, with expiry applied (history first, then numbering).
    fn room(&mut self, room: &str, settings: &HistorySettings) -> &mut RoomLog {
        let now = Instant::now();
        let log = self
            .rooms
            .entry(room.to_owned())
            .or_insert_with(|| RoomLog::new(settings, now));
        if now >= log.meta_until {
            *log = RoomLog::new(settings, now);
        } else if now >= log.messages_until {
            log.messages.clear();
        }
        log
    }
}

/// One node's handle on a [`MemoryBus`]. Detaches when dropped.
pub struct MemoryBroker {
    bus: Arc<MemoryBus>,
    handle: u64,
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        let mut state = self.bus.lock();
        state.nodes.remove(&self.handle);
        for subs in state.subscriptions.values_mut() {
            subs.remove(&self.handle);
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        room: &str,
        body: &str,
        published_us: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let settings = self.bus.settings;
        let mut guard = self.bus.lock();
        let state = &mut *guard;
        let now = Instant::now();
        if let Some(position) = key.and_then(|k| state.remembered(room, k, now)) {
            return Ok(Published {
                position,
                repeated: true,
            });
        }
        let log = state.room(room, &settings);
        log.top += 1;
        log.messages_until = now + settings.ttl;
        log.meta_until = now + settings.meta_ttl;
        let body: Arc<str> = Arc::from(body);
        log.messages.push_back(StoredMessage {
            offset: log.top,
            body: body.clone(),
        });
        while log.messages.len() > settings.size {
            log.messages.pop_front();
        }
        let position = log.position();
        let live = LiveMessage {
            room: Arc::from(room),
            epoch: log.epoch.clone(),
            offset: log.top,
            body,
            published_us,
        };
        // Delivered under the lock: subscribers see offsets in order.
        if let Some(subs) = state.subscriptions.get(room) {
            for handle in subs.keys() {
                if let Some(node) = state.nodes.get(handle) {
                    node.events.message(live.clone());
                }
            }
        }
        if let Some(key) = key {
            state.remember(room, key, position.clone(), now);
        }
        Ok(Published {
            position,
            repeated: false,
        })
    }

    async fn position(&self, room: &str) -> Result<Position, BrokerError> {
        let settings = self.bus.settings;
        Ok(self.bus.lock().room(room, &settings).position())
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovery, BrokerError> {
        let settings = self.bus.settings;
        let mut state = self.bus.lock();
        let log = state.room(room, &settings);
        let top = log.position();
        let replay = since.and_then(|since| match history::gap(since, &top, max) {
            Gap::None => Some(Vec::new()),
            Gap::Range { after, upto } => log.range(after, upto),
            Gap::Lost => None,
        });
        Ok(Recovery { top, replay })
    }

    async fn range(
        &self,
        room: &str,
        epoch: &str,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<StoredMessage>>, BrokerError> {
        let settings = self.bus.settings;
        let mut state = self.bus.lock();
        let log = state.room(room, &settings);
        if &*log.epoch != epoch {
            return Ok(None);
        }
        Ok(log.range(after, upto))
    }

    async fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        *self
            .bus
            .lock()
            .subscriptions
            .entry(room.to_owned())
            .or_default()
            .entry(self.handle)
            .or_default() += 1;
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) {
        let mut state = self.bus.lock();
        if let Some(subs) = state.subscriptions.get_mut(room) {
            if let Some(count) = subs.get_mut(&self.handle) {
                *count -= 1;
                if *count == 0 {
                    subs.remove(&self.handle);
                }
            }
            if subs.is_empty() {
                state.subscriptions.remove(room);
            }
        }
    }

    async fn send_control(&self, worker: &str, control: Control) -> Result<(), BrokerError> {
        let state = self.bus.lock();
        for node in state.nodes.values().filter(|n| n.worker == worker) {
            node.events.control(control.clone());
        }
        Ok(())
    }

    async fn probe(&self) -> Result<Duration, BrokerError> {
        let start = Instant::now();
        drop(self.bus.lock());
        Ok(start.elapsed())
    }

    fn is_connected(&self) -> bool {
        true
    }
}
