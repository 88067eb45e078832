//! The Redis broker: Centrifugo's shape. Per room, a stream
//! `ringway:{room}:stream` (the last `HISTORY_SIZE` messages, expiring
//! `HISTORY_TTL` after the last one) and a meta hash `ringway:{room}:meta`
//! (epoch `e`, top offset `o`, and `r`, the `run_id` of the Redis process
//! that last wrote it; kept much longer, so a quiet room keeps its
//! numbering). A Lua script numbers, appends and `PUBLISH`es in one step,
//! so the live copy carries the offset recovery uses and subscribers see
//! offsets in order; a publish with an idempotency key remembers it in
//! `ringway:{room}:published:<key>` in that same step. Every script first
//! settles the room's epoch by the dataset's identity (see
//! [`ROOM_EPOCH_LUA`]), so an older copy of Redis coming back never
//! reuses offsets under the epoch clients hold. The room is the hash tag:
//! every key a script touches sits in one slot on Redis Cluster.
//!
//! Live delivery runs on one pub/sub connection per node, owned by a
//! subscriber task. It keeps a counted set of wanted channels; when its
//! connection drops it redials with backoff, resubscribes everything in one
//! command, and tells the node ([`Events::resubscribed`]) so that rooms are
//! re-checked for messages published while it was away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Broker, BrokerError, Control, Events, LiveMessage, Published, Recovery};
use crate::config::HistorySettings;
use crate::history::{self, Position, StoredMessage};
use crate::idempotency::{IdempotencyKey, REMEMBER};
use crate::redis_link::{RedisConn, RedisLink, RESPONSE_TIMEOUT};

/// Shared by every script that reads or writes a room: the room's epoch
/// and top, following the dataset's identity. The meta hash records the
/// `run_id` of the Redis process that last wrote it (`r`). A room with no
/// meta, or — unless the setup is declared durable — whose meta was last
/// written by another Redis process (a restart, perhaps from an older
/// snapshot; a promoted replica, whose copy may lack the last writes)
/// starts a new epoch, its stream emptied: offsets are never reused under
/// one epoch. Under `durable == '1'` a restart keeps the epoch.
/// Returns epoch, top.
const ROOM_EPOCH_LUA: &str = r#"
local function room_epoch(stream, meta, fresh, durable, meta_ttl)
  local info = redis.call('INFO', 'server')
  local run = string.match(info, 'run_id:(%x+)')
  local m = redis.call('HMGET', meta, 'e', 'o', 'r')
  if m[1] and (m[3] == run or durable == '1') then
    if m[3] ~= run then redis.call('HSET', meta, 'r', run) end
    return m[1], tonumber(m[2])
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', fresh, 'o', 0, 'r', run)
  redis.call('EXPIRE', meta, meta_ttl)
  return fresh, 0
end
"#;

/// Number, append, trim, expire and publish one message; with an
/// idempotency key (KEYS[3]), answer a key already used with its first
/// position and store nothing, else remember the key with the position.
/// KEYS: stream, meta[, idempotency]. ARGV: channel, body, published_us,
/// maxlen, ttl, meta_ttl, fresh epoch, durable, remember secs.
/// Returns {epoch, offset, repeated}.
const PUBLISH_LUA: &str = r#"
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local e, o = string.match(seen, '^(.*):(%d+)$')
    return {e, tonumber(o), 1}
  end
end
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[7], ARGV[8], ARGV[6])
local off = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], off .. '-0', 'b', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], epoch .. '\n' .. off .. '\n' .. ARGV[3] .. '\n' .. ARGV[2])
if KEYS[3] then
  redis.call('SET', KEYS[3], epoch .. ':' .. off, 'EX', ARGV[9])
end
return {epoch, off, 0}
"#;

/// The room's position and, if asked, the messages after a position.
/// KEYS: stream, meta. ARGV: fresh epoch, meta_ttl, since epoch ('' for
/// none), since offset, max, durable. Returns {epoch, top} without since;
/// {epoch, top, 0} when the gap cannot be replayed; {epoch, top, 1,
/// entries} when it may be (entries still to be checked for holes).
const RECOVER_LUA: &str = r#"
local epoch, top = room_epoch(KEYS[1], KEYS[2], ARGV[1], ARGV[6], ARGV[2])
if ARGV[3] == '' then return {epoch, top} end
local since = tonumber(ARGV[4])
if ARGV[3] ~= epoch or since > top or top - since > tonumber(ARGV[5]) then
  return {epoch, top, 0}
end
if since == top then return {epoch, top, 1, {}} end
return {epoch, top, 1, redis.call('XRANGE', KEYS[1], (since + 1) .. '-0', top .. '-0')}
"#;

/// Messages `(after, upto]` if the room is still in `epoch`.
/// KEYS: stream, meta. ARGV: epoch, after, upto, fresh epoch, durable, meta_ttl.
const RANGE_LUA: &str = r#"
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[4], ARGV[5], ARGV[6])
if epoch ~= ARGV[1] then return false end
return redis.call('XRANGE', KEYS[1], (tonumber(ARGV[2]) + 1) .. '-0', ARGV[3] .. '-0')
"#;

/// A script that works on a room: [`ROOM_EPOCH_LUA`], then `body`.
fn room_script(body: &str) -> Script {
    Script::new(&format!("{ROOM_EPOCH_LUA}{body}"))
}

/// How often an idle pub/sub connection is pinged, to notice a dead link.
const PUBSUB_PING: Duration = Duration::from_secs(3);
/// Longest wait between redial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Channels per SUBSCRIBE command when resubscribing.
const RESUBSCRIBE_BATCH: usize = 500;

fn stream_key(room: &str) -> String {
    format!("ringway:{{{room}}}:stream")
}
fn meta_key(room: &str) -> String {
    format!("ringway:{{{room}}}:meta")
}
fn room_channel(room: &str) -> String {
    format!("ringway:{{{room}}}:live")
}
fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("ringway:{")?.strip_suffix("}:live")
}
fn idempotency_key(room: &str, key: &IdempotencyKey) -> String {
    format!("ringway:{{{room}}}:published:{}", key.as_str())
}
fn node_channel(worker: &str) -> String {
    format!("ringway:node:{worker}")
}

enum SubCmd {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
}

type Probes = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// A node's Redis broker.
pub struct RedisBroker {
    conn: RedisConn,
    cmds: mpsc::Sender<SubCmd>,
    connected: Arc<AtomicBool>,
    probes: Probes,
    next_probe: AtomicU64,
    worker: String,
    settings: HistorySettings,
    /// `REDIS_DURABLE`: a Redis restart keeps room epochs.
    durable: bool,
    publish: Script,
    recover: Script,
    range: Script,
    subscriber: JoinHandle<()>,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisBroker {
    /// A broker for node `worker`, delivering to `events`; `durable` as
    /// `REDIS_DURABLE` says. Starts its subscriber task (which dials Redis
    /// in the background).
    pub fn new(
        link: Arc<RedisLink>,
        worker: &str,
        settings: HistorySettings,
        durable: bool,
        events: Arc<dyn Events>,
    ) -> RedisBroker {
        let (tx, rx) = mpsc::channel(1024);
        let connected = Arc::new(AtomicBool::new(false));
        let probes: Probes = Arc::default();
        let subscriber = Subscriber {
            link: link.clone(),
            cmds: rx,
            wanted: HashMap::new(),
            events,
            connected: connected.clone(),
            probes: probes.clone(),
            node_channel: node_channel(worker),
        };
        RedisBroker {
            conn: link.conn(),
            cmds: tx,
            connected,
            probes,
            next_probe: AtomicU64::new(1),
            worker: worker.to_owned(),
            settings,
            durable,
            publish: room_script(PUBLISH_LUA),
            recover: room_script(RECOVER_LUA),
            range: room_script(RANGE_LUA),
            subscriber: tokio::spawn(subscriber.run()),
        }
    }
}

impl RedisBroker {
    fn durable_arg(&self) -> &'static str {
        if self.durable {
            "1"
        } else {
            "0"
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        room: &str,
        body: &str,
        published_us: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let mut call = self.publish.key(stream_key(room));
        call.key(meta_key(room));
        if let Some(key) = key {
            call.key(idempotency_key(room, key));
        }
        let (epoch, offset, repeated): (String, u64, u8) = call
            .arg(room_channel(room))
            .arg(body)
            .arg(published_us)
            .arg(self.settings.size)
            .arg(self.settings.ttl.as_secs().max(1))
            .arg(self.settings.meta_ttl.as_secs().max(1))
            .arg(history::new_epoch())
            .arg(self.durable_arg())
            .arg(REMEMBER.as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Published {
            position: Position { epoch, offset },
            repeated: repeated == 1,
        })
    }

    async fn position(&self, room: &str) -> Result<Position, BrokerError> {
        Ok(self.recover(room, None, 0).await?.top)
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovery, BrokerError> {
        let (since_epoch, since_offset) = since.map_or(("", 0), |s| (s.epoch.as_str(), s.offset));
        let reply: Vec<Value> = self
            .recover
            .key(stream_key(room))
            .key(meta_key(room))
            .arg(history::new_epoch())
            .arg(self.settings.meta_ttl.as_secs().max(1))
            .arg(since_epoch)
            .arg(since_offset)
            .arg(max)
            .arg(self.durable_arg())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let bad = || BrokerError::Unavailable("unexpected reply from the recover script".into());
        let epoch: String = reply
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        let offset: u64 = reply
            .get(1)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .ok_or_else(bad)?;
        let top = Position { epoch, offset };
        let replay = match (reply.get(2), reply.get(3)) {
            (Some(Value::Int(1)), Some(entries)) => {
                let messages = parse_entries(entries)?;
                let after = since_offset;
                history::is_complete(&messages, after, top.offset).then_some(messages)
            }
            _ => None,
        };
        Ok(Recovery { top, replay })
    }

    async fn range(
        &self,
        room: &str,
        epoch: &str,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<StoredMessage>>, BrokerError> {
        let reply: Value = self
            .range
            .key(stream_key(room))
            .key(meta_key(room))
            .arg(epoch)
            .arg(after)
            .arg(upto)
            .arg(history::new_epoch())
            .arg(self.durable_arg())
            .arg(self.settings.meta_ttl.as_secs().max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        if matches!(reply, Value::Nil) {
            return Ok(None);
        }
        let messages = parse_entries(&reply)?;
        Ok(history::is_complete(&messages, after, upto).then_some(messages))
    }

    async fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        let (ack, acked) = oneshot::channel();
        self.cmds
            .send(SubCmd::Subscribe(room_channel(room), ack))
            .await
            .map_err(|_| BrokerError::Unavailable("subscriber stopped".into()))?;
        acked
            .await
            .map_err(|_| BrokerError::Unavailable("subscriber stopped".into()))?
    }

    async fn unsubscribe(&self, room: &str) {
        let _ = self
            .cmds
            .send(SubCmd::Unsubscribe(room_channel(room)))
            .await;
    }

    async fn send_control(&self, worker: &str, control: Control) -> Result<(), BrokerError> {
        let payload = match control {
            Control::Kick { sid } => format!("kick:{sid}"),
        };
        redis::cmd("PUBLISH")
            .arg(node_channel(worker))
            .arg(payload)
            .exec_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn probe(&self) -> Result<Duration, BrokerError> {
        let start = Instant::now();
        let id = self.next_probe.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let round_trip = async {
            redis::cmd("PUBLISH")
                .arg(node_channel(&self.worker))
                .arg(format!("probe:{id}"))
                .exec_async(&mut self.conn.clone())
                .await?;
            tokio::time::timeout(RESPONSE_TIMEOUT, rx)
                .await
                .map_err(|_| BrokerError::Unavailable("pub/sub probe did not come back".into()))?
                .map_err(|_| BrokerError::Unavailable("subscriber stopped".into()))
        };
        let outcome = round_trip.await;
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        outcome.map(|()| start.elapsed())
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// `[[id, [field, value, …]], …]` → messages (offset from the id).
fn parse_entries(entries: &Value) -> Result<Vec<StoredMessage>, BrokerError> {
    let bad = || BrokerError::Unavailable("unexpected stream entry".into());
    let Value::Array(items) = entries else {
        return Err(bad());
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                return Err(bad());
            };
            let id: String = parts
                .first()
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .ok_or_else(bad)?;
            let offset = id
                .split('-')
                .next()
                .and_then(|o| o.parse().ok())
                .ok_or_else(bad)?;
            let fields: Vec<String> = parts
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .ok_or_else(bad)?;
            let body = fields
                .chunks(2)
                .find(|kv| kv[0] == "b")
                .and_then(|kv| kv.get(1))
                .ok_or_else(bad)?;
            Ok(StoredMessage {
                offset,
                body: Arc::from(body.as_str()),
            })
        })
        .collect()
}

/// The task that owns the node's pub/sub connection.
struct Subscriber {
    link: Arc<RedisLink>,
    cmds: mpsc::Receiver<SubCmd>,
    /// channel → how many subscribe calls want it.
    wanted: HashMap<String, usize>,
    events: Arc<dyn Events>,
    connected: Arc<AtomicBool>,
    probes: Probes,
    node_channel: String,
}

enum Ended {
    /// The broker was dropped: stop for good.
    Stopped,
    /// The link failed: redial.
    LinkLost,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match self.link.pubsub().await {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    match self.serve(pubsub, first).await {
                        Ended::Stopped => return,
                        Ended::LinkLost => {
                            tracing::warn!("redis pub/sub link lost; redialling");
                        }
                    }
                    first = false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "redis pub/sub connect failed");
                }
            }
            self.connected.store(false, Ordering::Relaxed);
            // Wait before redialling, answering commands meanwhile.
            let until = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    cmd = self.cmds.recv() => match cmd {
                        None => return,
                        Some(cmd) => self.while_down(cmd),
                    }
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A command while there is no link: subscriptions fail (uncounted),
    /// unsubscriptions are counted down.
    fn while_down(&mut self, cmd: SubCmd) {
        match cmd {
            SubCmd::Subscribe(_, ack) => {
                let _ = ack.send(Err(BrokerError::Unavailable(
                    "redis pub/sub is not connected".into(),
                )));
            }
            SubCmd::Unsubscribe(channel) => {
                self.count_down(&channel);
            }
        }
    }

    fn count_down(&mut self, channel: &str) -> bool {
        if let Some(n) = self.wanted.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                self.wanted.remove(channel);
                return true;
            }
        }
        false
    }

    async fn serve(&mut self, pubsub: redis::aio::PubSub, first: bool) -> Ended {
        let (mut sink, mut stream) = pubsub.split();
        let mut channels: Vec<String> = self.wanted.keys().cloned().collect();
        channels.push(self.node_channel.clone());
        for batch in channels.chunks(RESUBSCRIBE_BATCH) {
            let done = tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(batch)).await;
            if !matches!(done, Ok(Ok(()))) {
                return Ended::LinkLost;
            }
        }
        self.connected.store(true, Ordering::Relaxed);
        if !first {
            tracing::info!(channels = channels.len(), "redis pub/sub resubscribed");
            self.events.resubscribed();
        }
        let mut ping = tokio::time::interval(PUBSUB_PING);
        ping.reset();
        loop {
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    None => return Ended::Stopped,
                    Some(SubCmd::Subscribe(channel, ack)) => {
                        let count = self.wanted.entry(channel.clone()).or_insert(0);
                        *count += 1;
                        if *count == 1 {
                            let done = tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(&channel)).await;
                            if !matches!(done, Ok(Ok(()))) {
                                self.count_down(&channel);
                                let _ = ack.send(Err(BrokerError::Unavailable("redis SUBSCRIBE failed".into())));
                                return Ended::LinkLost;
                            }
                        }
                        let _ = ack.send(Ok(()));
                    }
                    Some(SubCmd::Unsubscribe(channel)) => {
                        if self.count_down(&channel) {
                            let done = tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(&channel)).await;
                            if !matches!(done, Ok(Ok(()))) {
                                return Ended::LinkLost;
                            }
                        }
                    }
                },
                msg = stream.next() => match msg {
                    None => return Ended::LinkLost,
                    Some(msg) => self.deliver(msg.get_channel_name(), msg.get_payload_bytes()),
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return Ended::LinkLost;
                    }
                }
            }
        }
    }

    fn deliver(&self, channel: &str, payload: &[u8]) {
        let Ok(payload) = std::str::from_utf8(payload) else {
            return;
        };
        if channel == self.node_channel {
            if let Some(id) = payload.strip_prefix("probe:") {
                if let Ok(id) = id.parse::<u64>() {
                    let waiter = self
                        .probes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(());
                    }
                }
            } else if let Some(sid) = payload.strip_prefix("kick:") {
                self.events.control(Control::Kick {
                    sid: sid.to_owned(),
                });
            }
            return;
        }
        let Some(room) = room_of_channel(channel) else {
            return;
        };
        let mut parts = payload.splitn(4, '\n');
        let (Some(epoch), Some(offset), Some(us), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(channel, "malformed live message");
            return;
        };
        let (Ok(offset), Ok(published_us)) = (offset.parse(), us.parse()) else {
            tracing::warn!(channel, "malformed live message");
            return;
        };
        self.events.message(LiveMessage {
            room: Arc::from(room),
            epoch: Arc::from(epoch),
            offset,
            body: Arc::from(body),
            published_us,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_hash_tag() {
        assert_eq!(stream_key("lobby"), "ringway:{lobby}:stream");
        assert_eq!(meta_key("@bob"), "ringway:{@bob}:meta");
        assert_eq!(room_of_channel(&room_channel("a/b")), Some("a/b"));
        assert_eq!(room_of_channel("ringway:node:x"), None);
    }

    #[test]
    fn stream_entries_parse() {
        let v = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"7-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"\"from\":\"a\"".to_vec()),
            ]),
        ])]);
        let m = parse_entries(&v).unwrap();
        assert_eq!(m[0].offset, 7);
        assert_eq!(&*m[0].body, "\"from\":\"a\"");
    }
}
