//! The Redis bus: ONE pub/sub connection per instance, however many streams it serves.
//!
//! A room's channel is subscribed while at least one local stream follows the room, and
//! every message arriving on it is decoded once and handed to the room's local broadcast as
//! an `Arc`. Redis pub/sub is at-most-once and the redis crate's pub/sub connection does not
//! reconnect, so a listener task owns the connection: when it drops, the task reconnects with
//! jittered exponential backoff, resubscribes to every followed channel, and then sends
//! [`BusMessage::Resync`] to every local topic, which makes each stream repair its rooms from
//! the log (anything published during the outage is delivered, in order, once).
//!
//! Presence lives in Redis too: each instance keeps a hash of its users' open stream counts
//! and a heartbeat in a sorted set; a user is online while any live instance counts them.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use natter_proto::v1::Event;
use rand::Rng;
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Bus, BusError, BusMessage, SharedEvent, TOPIC_CAPACITY, Topic};
use crate::redis_schema::{Schema, decode_payload, encode_event};

/// How often channels that no local stream follows any more are unsubscribed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a subscribe waits for Redis to confirm; past it, the reconnect resync covers it.
const SUBSCRIBE_CONFIRMATION: Duration = Duration::from_secs(3);

/// Adds (or removes) one stream of a user on this instance and returns the user's open
/// streams over all live instances. Uses Redis' clock so instances' clocks need not agree.
static STREAM_DELTA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: this instance's presence hash, instances zset. ARGV: user, delta, instance, ttl ms, prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local own = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if own <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4] * 4)
redis.call('ZADD', KEYS[2], now, ARGV[3])
local total = 0
for _, instance in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now - ARGV[4], '+inf')) do
  total = total + tonumber(redis.call('HGET', ARGV[5] .. 'presence:' .. instance, ARGV[1]) or '0')
end
return total",
    )
});

/// 1 or 0 for each user in ARGV[3..]: online on some live instance.
static ONLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: instances zset. ARGV: ttl ms, prefix, users...
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - ARGV[1], '+inf')
local result = {}
for i = 3, #ARGV do
  result[i - 2] = 0
  for _, instance in ipairs(live) do
    if redis.call('HEXISTS', ARGV[2] .. 'presence:' .. instance, ARGV[i]) == 1 then
      result[i - 2] = 1
      break
    end
  end
end
return result",
    )
});

/// Refreshes this instance's heartbeat and claims instances whose heartbeat is too old:
/// returns their users that are not online anywhere else. Atomic, so exactly one survivor
/// announces each such user. Returns -1 first if this instance had itself been reaped (it
/// was unreachable for too long) so that it can re-register its streams.
static MAINTAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: instances zset, this instance's presence hash. ARGV: instance, ttl ms, prefix
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local readded = redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2] * 4)
local gone = {}
if readded == 1 then table.insert(gone, -1) end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - ARGV[2], '+inf')
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ARGV[2]))) do
  redis.call('ZREM', KEYS[1], dead)
  local hash = ARGV[3] .. 'presence:' .. dead
  for _, user in ipairs(redis.call('HKEYS', hash)) do
    local elsewhere = false
    for _, instance in ipairs(live) do
      if redis.call('HEXISTS', ARGV[3] .. 'presence:' .. instance, user) == 1 then elsewhere = true end
    end
    if not elsewhere then table.insert(gone, user) end
  end
  redis.call('DEL', hash)
end
return gone",
    )
});

enum Command {
    Subscribe {
        channel: String,
        confirmed: oneshot::Sender<()>,
    },
}

/// The Redis bus; cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Commands: PUBLISH and presence scripts.
    conn: ConnectionManager,
    schema: Schema,
    /// This instance's id in presence keys.
    instance: String,
    presence_ttl: Duration,
    /// Local channels per topic. A std mutex, never held across an await.
    topics: Mutex<HashMap<Topic, broadcast::Sender<SharedEvent>>>,
    /// To the listener task, which owns the pub/sub connection.
    commands: mpsc::UnboundedSender<Command>,
    /// Whether the pub/sub connection is up and subscribed.
    connected: AtomicBool,
    /// Times the pub/sub connection was re-established.
    reconnects: AtomicU64,
    /// This instance's open streams per user, to re-register after being reaped.
    local_streams: Mutex<HashMap<String, i64>>,
}

impl RedisBus {
    /// Starts the listener task (tracked, stopped by `shutdown`) and returns the bus.
    pub fn start(
        url: &str,
        conn: ConnectionManager,
        schema: Schema,
        presence_ttl: Duration,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            schema,
            instance: crate::domain::new_id(),
            presence_ttl,
            topics: Mutex::default(),
            commands,
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            local_streams: Mutex::default(),
        });
        tasks.spawn(listen(inner.clone(), client, receiver, shutdown));
        Ok(Self { inner })
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.inner.presence_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    async fn stream_delta(&self, user_id: &str, delta: i64) -> Result<i64, BusError> {
        {
            let mut local = self
                .inner
                .local_streams
                .lock()
                .expect("presence lock poisoned");
            let count = local.entry(user_id.to_owned()).or_default();
            *count += delta;
            if *count <= 0 {
                local.remove(user_id);
            }
        }
        STREAM_DELTA
            .key(self.inner.schema.presence(&self.inner.instance))
            .key(self.inner.schema.instances())
            .arg(user_id)
            .arg(delta)
            .arg(&self.inner.instance)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.base())
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)
    }
}

fn bus_error(e: redis::RedisError) -> BusError {
    BusError(e.into())
}

impl Inner {
    fn channels(&self) -> Vec<String> {
        let topics = self.topics.lock().expect("bus lock poisoned");
        topics.keys().map(|t| self.schema.channel(t)).collect()
    }

    /// Hands a pub/sub message to its topic's local receivers, decoded once.
    fn dispatch(&self, msg: &redis::Msg) {
        let Some(topic) = self.schema.topic(msg.get_channel_name()) else {
            return;
        };
        let message = match decode_payload(msg.get_payload_bytes()) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(channel = msg.get_channel_name(), error = ?e, "undecodable bus payload");
                return;
            }
        };
        let topics = self.topics.lock().expect("bus lock poisoned");
        if let Some(sender) = topics.get(&topic) {
            let _ = sender.send(Arc::new(message));
        }
    }

    /// Tells every local receiver that events may have been missed.
    fn resync_all(&self) {
        let topics = self.topics.lock().expect("bus lock poisoned");
        let resync = Arc::new(BusMessage::Resync);
        for sender in topics.values() {
            let _ = sender.send(resync.clone());
        }
    }

    /// Forgets topics without local receivers; returns their channels to unsubscribe.
    fn sweep(&self) -> Vec<String> {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        let idle: Vec<Topic> = topics
            .iter()
            .filter(|(_, s)| s.receiver_count() == 0)
            .map(|(t, _)| t.clone())
            .collect();
        idle.iter()
            .map(|topic| {
                topics.remove(topic);
                self.schema.channel(topic)
            })
            .collect()
    }
}

/// Jittered exponential backoff: 100 ms doubling up to 5 s, each between 50% and 100%.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(ceiling / 2..=ceiling))
}

/// Owns the pub/sub connection for the life of the instance.
async fn listen(
    inner: Arc<Inner>,
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    let mut ever_connected = false;
    loop {
        if ever_connected || attempt > 0 {
            tokio::select! {
                () = tokio::time::sleep(backoff(attempt)) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let pubsub = tokio::select! {
            pubsub = client.get_async_pubsub() => pubsub,
            () = shutdown.cancelled() => return,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot open the Redis pub/sub connection");
                attempt += 1;
                continue;
            }
        };
        let channels = inner.channels();
        if !channels.is_empty()
            && let Err(e) = sink.subscribe(&channels).await
        {
            tracing::warn!(error = %e, "cannot resubscribe");
            attempt += 1;
            continue;
        }
        attempt = 0;
        inner.connected.store(true, Ordering::SeqCst);
        if ever_connected {
            inner.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                channels = channels.len(),
                "Redis pub/sub reconnected; repairing streams from the log"
            );
            inner.resync_all();
        }
        ever_connected = true;

        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(command) = commands.recv() => match command {
                    Command::Subscribe { channel, confirmed } => {
                        if sink.subscribe(&channel).await.is_err() {
                            break;
                        }
                        let _ = confirmed.send(());
                    }
                },
                message = stream.next() => match message {
                    Some(message) => inner.dispatch(&message),
                    None => break,
                },
                _ = sweep.tick() => {
                    let idle = inner.sweep();
                    if !idle.is_empty() && sink.unsubscribe(&idle).await.is_err() {
                        break;
                    }
                }
            }
        }
        inner.connected.store(false, Ordering::SeqCst);
        tracing::warn!("lost the Redis pub/sub connection; reconnecting");
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn subscribe(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        let receiver = {
            let mut topics = self.inner.topics.lock().expect("bus lock poisoned");
            topics
                .entry(topic.clone())
                .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0)
                .subscribe()
        };
        // Asked even for a topic already followed here: another stream's SUBSCRIBE may still
        // be unconfirmed, and an idempotent SUBSCRIBE is what guarantees the contract.
        let (confirmed, confirmation) = oneshot::channel();
        let channel = self.inner.schema.channel(topic);
        if self
            .inner
            .commands
            .send(Command::Subscribe { channel, confirmed })
            .is_err()
        {
            return Err(BusError(anyhow::anyhow!("the bus is shut down")));
        }
        // While disconnected, nothing to wait for: the reconnect resubscribes this channel and
        // then sends Resync, which makes the stream re-read the log.
        if self.inner.connected.load(Ordering::SeqCst) {
            let _ = tokio::time::timeout(SUBSCRIBE_CONFIRMATION, confirmation).await;
        }
        Ok(receiver)
    }

    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError> {
        let _: i64 = self
            .inner
            .conn
            .clone()
            .publish(self.inner.schema.channel(topic), encode_event(&event))
            .await
            .map_err(bus_error)?;
        Ok(())
    }

    async fn stream_opened(&self, user_id: &str) -> Result<bool, BusError> {
        Ok(self.stream_delta(user_id, 1).await? == 1)
    }

    async fn stream_closed(&self, user_id: &str) -> Result<bool, BusError> {
        Ok(self.stream_delta(user_id, -1).await? <= 0)
    }

    async fn online(&self, user_ids: &[String]) -> Result<HashSet<String>, BusError> {
        if user_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let flags: Vec<i64> = ONLINE
            .key(self.inner.schema.instances())
            .arg(self.ttl_ms())
            .arg(self.inner.schema.base())
            .arg(user_ids)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        Ok(user_ids
            .iter()
            .zip(flags)
            .filter(|(_, flag)| *flag == 1)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn maintain_presence(&self) -> Result<Vec<String>, BusError> {
        let mut gone: Vec<redis::Value> = MAINTAIN
            .key(self.inner.schema.instances())
            .key(self.inner.schema.presence(&self.inner.instance))
            .arg(&self.inner.instance)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.base())
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        if matches!(gone.first(), Some(redis::Value::Int(-1))) {
            gone.remove(0);
            // This instance was reaped while unreachable: register its streams again.
            let local: Vec<(String, i64)> = self
                .inner
                .local_streams
                .lock()
                .expect("presence lock poisoned")
                .clone()
                .into_iter()
                .collect();
            if !local.is_empty() {
                tracing::warn!(
                    users = local.len(),
                    "re-registering presence after being considered dead"
                );
                let _: () = self
                    .inner
                    .conn
                    .clone()
                    .hset_multiple(self.inner.schema.presence(&self.inner.instance), &local)
                    .await
                    .map_err(bus_error)?;
            }
        }
        Ok(gone
            .into_iter()
            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
            .collect())
    }

    async fn ready(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
            && redis::cmd("PING")
                .query_async::<String>(&mut self.inner.conn.clone())
                .await
                .is_ok()
    }

    fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }
}
