//! The Bus seam: fan-out of events to every stream that follows a topic, and presence.
//!
//! Two implementations exist: [`local::LocalBus`] (in-process, the default) and the Redis
//! pub/sub bus for scale-out. Events travel as `Arc`s through one bounded broadcast channel
//! per topic, so an event is built once however many streams receive it.

pub mod local;

use std::{collections::HashSet, fmt, sync::Arc};

use async_trait::async_trait;
use natter_proto::{EncodedEvent, v1::Event};
use tokio::sync::broadcast;

/// Where events go: a room (its messages, typing, presence and membership changes) or one
/// user (changes to that user's own room list, so their streams pick up new rooms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Everything happening in a room, for its members.
    Room(String),
    /// Changes to a user's set of rooms, for that user's streams.
    User(String),
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Room(id) => write!(f, "room:{id}"),
            Topic::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// What a topic's receivers get.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "always behind an Arc, never moved by value"
)]
pub enum BusMessage {
    /// An event to deliver, with its encoding, made once for all the streams it goes to.
    Event {
        /// The event, for streams that look into it (seq checks, filters).
        event: Event,
        /// The same event encoded, which streams send as is.
        encoded: EncodedEvent,
    },
    /// The bus may have missed events (its connection to the broker was re-established):
    /// receivers must re-read what they follow from the store.
    Resync,
}

impl BusMessage {
    /// Wraps an event, encoding it once.
    pub fn event(event: Event) -> Self {
        let encoded = EncodedEvent::from(&event);
        BusMessage::Event { event, encoded }
    }
}

/// A bus message as shared between all receivers of a topic: built once, never copied.
pub type SharedEvent = Arc<BusMessage>;

/// Capacity of each topic's local broadcast. A receiver that falls further behind gets
/// `Lagged` and repairs from the message log, so this bounds memory, not correctness.
pub const TOPIC_CAPACITY: usize = 1024;

/// A failure to reach the bus.
#[derive(Debug, thiserror::Error)]
#[error("event bus unavailable")]
pub struct BusError(#[source] pub anyhow::Error);

/// Fan-out and presence shared by every stream on every instance.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Starts receiving a topic's events. Events published after this returns are received
    /// (in publish order), which is what lets a stream subscribe first and read the log second.
    async fn subscribe(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError>;
    /// Delivers an event to the current receivers of a topic. Delivery is at most once;
    /// messages are repaired from the log by seq, other events are transient.
    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError>;

    /// Records one more open stream of a user; true if the user just came online.
    async fn stream_opened(&self, user_id: &str) -> Result<bool, BusError>;
    /// Records one stream of a user closing; true if the user just went offline.
    async fn stream_closed(&self, user_id: &str) -> Result<bool, BusError>;
    /// Which of these users are online.
    async fn online(&self, user_ids: &[String]) -> Result<HashSet<String>, BusError>;

    /// Refreshes this instance's liveness and returns users who just went offline because
    /// the instance holding their streams died; called periodically.
    async fn maintain_presence(&self) -> Result<Vec<String>, BusError>;

    /// Whether the bus can deliver now (for `/readyz`).
    async fn ready(&self) -> bool;

    /// Times the connection to the broker was re-established.
    fn reconnects(&self) -> u64;
}
