//! The Redis store. Keys:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `ringway:session:{sid}` | hash | `user`, `worker`, `created`, `last_seen`, `rooms` (JSON), `meta` (JSON); TTL `WEBSOCKET_SESSION_TTL` |
//! | `ringway:{room}:presence` | zset | member `user` + US + `sid`, score = present-until (Redis clock, ms) |
//! | `ringway:{cluster}:nodes` | zset | worker → last heartbeat (Redis clock, ms) |
//! | `ringway:{cluster}:node:<id>` | hash | `interval` (ms), `node`, `instance` (the process beating as it) |
//! | `ringway:{cluster}:node:<id>:sessions` | set | sids the worker holds |
//! | `ringway:{cluster}:cleanup:<id>` | string | the survivor cleaning a dead worker (`SET NX PX`) |
//!
//! Every time comparison uses Redis' clock (`TIME` inside scripts), so
//! nodes on machines with skewed clocks agree on who is dead and who is
//! present. Cluster-wide keys share the `{cluster}` hash tag, so the
//! heartbeat script can read them all in one slot on Redis Cluster; each
//! session and each room is its own slot.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Script, Value};

use super::{now_ms, Beat, Heartbeat, SessionRecord, Store, StoreError, WorkerInfo};
use crate::redis_link::RedisConn;

/// Separates user and sid in a presence member.
const PRESENCE_SEP: char = '\u{1f}';

/// Record a heartbeat; list alive (with session counts) and dead workers;
/// say whether another instance beat under this id since our last beat.
/// KEYS: nodes zset, this node's hash. ARGV: worker, interval ms, node id,
/// instance, first beat ('1' or '0').
const HEARTBEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local previous = redis.call('HGET', KEYS[2], 'instance')
local conflict = 0
if ARGV[5] == '0' and previous and previous ~= ARGV[4] then conflict = 1 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], 'interval', ARGV[2], 'node', ARGV[3], 'instance', ARGV[4])
local alive, dead = {}, {}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  local id, beat = all[i], tonumber(all[i + 1])
  local h = 'ringway:{cluster}:node:' .. id
  local interval = tonumber(redis.call('HGET', h, 'interval') or ARGV[2])
  if now - beat > 3 * interval then
    table.insert(dead, id)
  else
    local node = redis.call('HGET', h, 'node') or ''
    table.insert(alive, {id, node, redis.call('SCARD', h .. ':sessions'), now - beat})
  end
end
return {alive, dead, conflict}
"#;

/// Clear a session's worker if it is still ARGV[1]; stamp last_seen; expire.
/// KEYS: session. ARGV: worker, last_seen ms, ttl s (0: keep the TTL).
/// Returns 1 if released.
const RELEASE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local released = 0
if redis.call('HGET', KEYS[1], 'worker') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'worker', '')
  released = 1
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return released
"#;

/// Write a whole session record and its expiry. KEYS: session.
/// ARGV: ttl s, user, worker, created, last_seen, rooms, meta.
const SAVE_LUA: &str = r#"
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'worker', ARGV[3], 'created', ARGV[4],
  'last_seen', ARGV[5], 'rooms', ARGV[6], 'meta', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// KEYS: presence zset. ARGV: member, ttl ms.
const SET_PRESENCE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"#;

/// KEYS: presence zset. Drops expired members; returns the rest.
const PRESENCE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// Forget a dead worker. KEYS: nodes zset, its hash, its session set.
const FORGET_LUA: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"#;

fn session_key(sid: &str) -> String {
    format!("ringway:session:{{{sid}}}")
}
fn presence_key(room: &str) -> String {
    format!("ringway:{{{room}}}:presence")
}
const NODES_KEY: &str = "ringway:{cluster}:nodes";
fn node_key(worker: &str) -> String {
    format!("ringway:{{cluster}}:node:{worker}")
}
fn node_sessions_key(worker: &str) -> String {
    format!("ringway:{{cluster}}:node:{worker}:sessions")
}
fn cleanup_key(worker: &str) -> String {
    format!("ringway:{{cluster}}:cleanup:{worker}")
}

/// Sessions, presence and membership in Redis.
pub struct RedisStore {
    conn: RedisConn,
    heartbeat: Script,
    save: Script,
    release: Script,
    set_presence: Script,
    presence: Script,
    forget: Script,
}

impl RedisStore {
    /// A store on this command connection.
    pub fn new(conn: RedisConn) -> Self {
        RedisStore {
            conn,
            heartbeat: Script::new(HEARTBEAT_LUA),
            save: Script::new(SAVE_LUA),
            release: Script::new(RELEASE_LUA),
            set_presence: Script::new(SET_PRESENCE_LUA),
            presence: Script::new(PRESENCE_LUA),
            forget: Script::new(FORGET_LUA),
        }
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }
}

fn field<T: redis::FromRedisValue>(fields: &[(String, Value)], name: &str) -> Option<T> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| redis::from_redis_value_ref(v).ok())
}

#[async_trait]
impl Store for RedisStore {
    async fn load(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        let fields: Vec<(String, Value)> = redis::cmd("HGETALL")
            .arg(session_key(sid))
            .query_async(&mut self.conn())
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let rooms: String = field(&fields, "rooms").unwrap_or_else(|| "[]".into());
        let meta: String = field(&fields, "meta").unwrap_or_else(|| "null".into());
        Ok(Some(SessionRecord {
            sid: sid.to_owned(),
            user: field(&fields, "user").unwrap_or_default(),
            worker: field(&fields, "worker").unwrap_or_default(),
            created_ms: field(&fields, "created").unwrap_or_default(),
            last_seen_ms: field(&fields, "last_seen").unwrap_or_default(),
            rooms: serde_json::from_str::<BTreeSet<String>>(&rooms).unwrap_or_default(),
            metadata: serde_json::from_str(&meta).unwrap_or_default(),
        }))
    }

    async fn save(&self, record: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        let key = session_key(&record.sid);
        let rooms = serde_json::to_string(&record.rooms).expect("rooms serialize");
        let meta = record.metadata.to_string();
        let created = record.created_ms.to_string();
        let last_seen = record.last_seen_ms.to_string();
        let mut conn = self.conn();
        let mut invocation = self.save.key(&key);
        invocation
            .arg(ttl.as_secs().max(1))
            .arg(&record.user)
            .arg(&record.worker)
            .arg(created)
            .arg(last_seen)
            .arg(rooms)
            .arg(meta);
        let write = invocation.invoke_async::<i64>(&mut conn);
        let mut index_conn = self.conn();
        let index = async {
            if record.worker.is_empty() {
                return Ok(());
            }
            redis::cmd("SADD")
                .arg(node_sessions_key(&record.worker))
                .arg(&record.sid)
                .exec_async(&mut index_conn)
                .await
        };
        let (written, indexed) = tokio::join!(write, index);
        written?;
        indexed?;
        Ok(())
    }

    async fn release(&self, sid: &str, worker: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut index_conn = self.conn();
        let mut invocation = self.release.key(session_key(sid));
        invocation
            .arg(worker)
            .arg(now_ms())
            .arg(ttl.as_secs().max(1));
        let released = invocation.invoke_async::<i64>(&mut conn);
        let mut srem = redis::cmd("SREM");
        srem.arg(node_sessions_key(worker)).arg(sid);
        let unindex = srem.exec_async(&mut index_conn);
        let (released, unindexed) = tokio::join!(released, unindex);
        released?;
        unindexed?;
        Ok(())
    }

    async fn set_presence(
        &self,
        room: &str,
        user: &str,
        sid: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.set_presence
            .key(presence_key(room))
            .arg(format!("{user}{PRESENCE_SEP}{sid}"))
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn remove_presence(&self, room: &str, user: &str, sid: &str) -> Result<(), StoreError> {
        redis::cmd("ZREM")
            .arg(presence_key(room))
            .arg(format!("{user}{PRESENCE_SEP}{sid}"))
            .exec_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn presence(&self, room: &str) -> Result<Vec<String>, StoreError> {
        let members: Vec<String> = self
            .presence
            .key(presence_key(room))
            .invoke_async(&mut self.conn())
            .await?;
        let users: BTreeSet<String> = members
            .iter()
            .filter_map(|m| m.split_once(PRESENCE_SEP).map(|(u, _)| u.to_owned()))
            .collect();
        Ok(users.into_iter().collect())
    }

    async fn heartbeat(&self, hb: Heartbeat<'_>) -> Result<Beat, StoreError> {
        type Reply = (Vec<(String, String, u64, u64)>, Vec<String>, i64);
        let (alive, dead, conflict): Reply = self
            .heartbeat
            .key(NODES_KEY)
            .key(node_key(hb.worker))
            .arg(hb.worker)
            .arg(hb.interval.as_millis().max(1) as u64)
            .arg(hb.node_id)
            .arg(hb.instance)
            .arg(if hb.first { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await?;
        let mut alive: Vec<WorkerInfo> = alive
            .into_iter()
            .map(|(worker_id, node_id, sessions, ago)| WorkerInfo {
                worker_id,
                node_id,
                sessions,
                last_beat_ms_ago: ago,
            })
            .collect();
        alive.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(Beat {
            alive,
            dead,
            conflict: conflict == 1,
        })
    }

    async fn claim_dead(&self, dead: &str, me: &str, hold: Duration) -> Result<bool, StoreError> {
        let won: Option<String> = redis::cmd("SET")
            .arg(cleanup_key(dead))
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(hold.as_millis().max(1) as u64)
            .query_async(&mut self.conn())
            .await?;
        Ok(won.is_some())
    }

    async fn clean_dead(&self, dead: &str) -> Result<usize, StoreError> {
        let sids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(node_sessions_key(dead))
            .query_async(&mut self.conn())
            .await?;
        let now = now_ms();
        let mut released = 0;
        for chunk in sids.chunks(256) {
            let calls = chunk.iter().map(|sid| {
                let mut conn = self.conn();
                let script = &self.release;
                async move {
                    script
                        .key(session_key(sid))
                        .arg(dead)
                        .arg(now)
                        .arg(0)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            });
            for outcome in futures_util::future::join_all(calls).await {
                released += outcome? as usize;
            }
        }
        self.forget
            .key(NODES_KEY)
            .key(node_key(dead))
            .key(node_sessions_key(dead))
            .arg(dead)
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        Ok(released)
    }

    async fn leave(&self, worker: &str) -> Result<(), StoreError> {
        self.forget
            .key(NODES_KEY)
            .key(node_key(worker))
            .key(node_sessions_key(worker))
            .arg(worker)
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(start.elapsed())
    }
}
