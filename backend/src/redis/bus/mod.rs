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
//! Presence lives in Redis too (see `presence`).

mod listener;
mod presence;
mod scripts;
mod sharded;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use natter_proto::v1::Event;
use redis::AsyncCommands;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::redis::{
    RedisConn, RedisTarget,
    schema::{Schema, decode_payload, encode_event},
};
use crate::seams::{BusError, BusMessage, SharedEvent, Topic};

/// How often channels that no local stream follows any more are unsubscribed.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a subscribe waits for Redis to confirm; past it, a Resync follows the SUBSCRIBE.
const SUBSCRIBE_CONFIRMATION: Duration = Duration::from_secs(3);
/// Longest a command on the pub/sub connection may take before the connection is replaced.
/// (The connection is also pinged at the presence heartbeat's pace, a third of its TTL.)
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) enum Command {
    Subscribe {
        topic: Topic,
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

pub(super) struct Inner {
    /// Commands: PUBLISH and presence scripts.
    conn: RedisConn,
    pub(super) schema: Schema,
    /// This instance's id in presence keys.
    instance: String,
    pub(super) presence_ttl: Duration,
    /// Local channels per topic. A std mutex, never held across an await.
    topics: Mutex<HashMap<Topic, broadcast::Sender<SharedEvent>>>,
    /// To the listener task, which owns the pub/sub connection.
    commands: mpsc::UnboundedSender<Command>,
    /// Whether the pub/sub connection is up and subscribed.
    pub(super) connected: AtomicBool,
    /// Times the pub/sub connection was re-established.
    pub(super) reconnects: AtomicU64,
    /// This instance's presence: its mirror of stream counts and whether Redis matches it.
    presence: Mutex<presence::LocalPresence>,
}

impl RedisBus {
    /// Starts the listener task (tracked, stopped by `shutdown`) and returns the bus: plain
    /// pub/sub on a single server, sharded pub/sub on a cluster.
    pub fn start(
        target: &RedisTarget,
        conn: RedisConn,
        schema: Schema,
        presence_ttl: Duration,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Self> {
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
            presence: Mutex::default(),
        });
        match target {
            RedisTarget::Server(url) => {
                let client = redis::Client::open(url.as_str())?;
                tasks.spawn(listener::listen(inner.clone(), client, receiver, shutdown));
            }
            RedisTarget::Cluster(seeds) => {
                let (pushes, pushed) = mpsc::unbounded_channel();
                let client = RedisTarget::cluster_client(seeds, Some(pushes))?;
                tasks.spawn(sharded::listen(
                    inner.clone(),
                    client,
                    pushed,
                    receiver,
                    shutdown,
                ));
            }
        }
        Ok(Self { inner })
    }
}

fn bus_error(e: redis::RedisError) -> BusError {
    BusError(e.into())
}

impl Inner {
    pub(super) fn channels(&self) -> Vec<String> {
        let topics = self.topics.lock().expect("bus lock poisoned");
        topics.keys().map(|t| self.schema.channel(t)).collect()
    }

    /// Hands a pub/sub message to its topic's local receivers, decoded once (and not at all
    /// for a channel no local stream follows any more).
    pub(super) fn dispatch(&self, channel: &str, payload: &[u8]) {
        let Some(topic) = self.schema.topic(channel) else {
            return;
        };
        let Some(sender) = self
            .topics
            .lock()
            .expect("bus lock poisoned")
            .get(&topic)
            .cloned()
        else {
            return;
        };
        match decode_payload(payload) {
            Ok(message) => {
                let _ = sender.send(Arc::new(message));
            }
            Err(e) => {
                tracing::warn!(channel, error = ?e, "undecodable bus payload");
            }
        }
    }

    /// Whether some local stream follows the topic.
    pub(super) fn follows(&self, topic: &Topic) -> bool {
        self.topics
            .lock()
            .expect("bus lock poisoned")
            .contains_key(topic)
    }

    /// Tells one topic's local receivers that events may have been missed.
    pub(super) fn resync(&self, topic: &Topic) {
        if let Some(sender) = self.topics.lock().expect("bus lock poisoned").get(topic) {
            let _ = sender.send(Arc::new(BusMessage::Resync));
        }
    }

    /// Tells every local receiver that events may have been missed.
    pub(super) fn resync_all(&self) {
        let topics = self.topics.lock().expect("bus lock poisoned");
        let resync = Arc::new(BusMessage::Resync);
        for sender in topics.values() {
            let _ = sender.send(resync.clone());
        }
    }

    /// Forgets topics without local receivers; returns their channels to unsubscribe.
    pub(super) fn sweep(&self) -> Vec<String> {
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

/// The fan-out half, used by the Redis log.
impl RedisBus {
    /// Starts receiving a topic's events (see `Log::follow`).
    pub(crate) async fn subscribe(
        &self,
        topic: &Topic,
    ) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        let receiver = {
            let mut topics = self.inner.topics.lock().expect("bus lock poisoned");
            topics
                .entry(topic.clone())
                .or_insert_with(|| broadcast::channel(topic.capacity()).0)
                .subscribe()
        };
        // Asked even for a topic already followed here: another stream's SUBSCRIBE may still
        // be unconfirmed, and an idempotent SUBSCRIBE is what guarantees the contract.
        let (confirmed, confirmation) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Subscribe {
                topic: topic.clone(),
                confirmed,
            })
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

    /// Delivers an event to the topic's receivers on every instance (see `Log::publish`).
    pub(crate) async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError> {
        self.publish_payload(topic, encode_event(&event)).await
    }

    /// Publishes an encoded payload (see `schema`) on the topic's channel.
    pub(crate) async fn publish_payload(
        &self,
        topic: &Topic,
        payload: Vec<u8>,
    ) -> Result<(), BusError> {
        let channel = self.inner.schema.channel(topic);
        let mut conn = self.inner.conn.clone();
        let _: i64 = if self.inner.schema.is_cluster() {
            scripts::SHARD_PUBLISH
                .key(channel)
                .arg(payload)
                .invoke_async(&mut conn)
                .await
        } else {
            conn.publish(channel, payload).await
        }
        .map_err(bus_error)?;
        Ok(())
    }

    /// Whether the pub/sub connection is up.
    pub(crate) async fn ready(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
            && redis::cmd("PING")
                .query_async::<String>(&mut self.inner.conn.clone())
                .await
                .is_ok()
    }

    /// Times the pub/sub connection was re-established.
    pub(crate) fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }
}
