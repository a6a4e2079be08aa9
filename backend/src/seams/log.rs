//! The Log seam: each room's message log and the fan-out of events to every stream that
//! follows a topic. Appending a message, giving it the room's next seq and publishing it are
//! one step (as Centrifuge's broker saves to history and publishes atomically), so every
//! observer sees one order per room; the log is read back by seq range in both directions.
//!
//! Events travel as `Arc`s through one bounded broadcast channel per topic on each
//! instance, so an event is built and encoded once however many streams receive it.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use super::directory::StoreResult;
use crate::{
    ids::{RoomId, UserId},
    records::MessageRecord,
};
use natter_proto::{
    FramedEvent,
    v1::{Event, event::Event as Ev},
};
use tokio::sync::broadcast;

/// Where events go: a room (its messages, typing, presence and membership changes) or one
/// user (changes to that user's own room list, so their streams pick up new rooms).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Everything happening in a room, for its members.
    Room(RoomId),
    /// Changes to a user's set of rooms, for that user's streams.
    User(UserId),
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
pub enum BusMessage {
    /// An event to deliver, encoded once for all the streams it goes to.
    Event {
        /// What streams look at to decide whether to send it (seq checks, filters).
        kind: EventKind,
        /// The event encoded and framed as a gRPC message, which streams send as is.
        encoded: FramedEvent,
    },
    /// The bus may have missed events (its connection to the broker was re-established):
    /// receivers must re-read what they follow from the store.
    Resync,
}

/// The little of an event that streams look into; the rest of it stays encoded.
///
/// A room's ring keeps its last events for every member's stream, and the decoded event
/// kept next to its encoding doubled what each one held (a message's text twice, and a
/// presence notice's user record besides its bytes).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A room's message: streams deliver it in seq order and repair gaps from the log.
    Message {
        /// Its seq in the room.
        seq: u64,
        /// When it was appended (unix milliseconds), for the fan-out latency series.
        sent_at: i64,
    },
    /// Someone typing: not echoed to the typist's own streams.
    Typing {
        /// Whose notice it is.
        user_id: Option<String>,
    },
    /// A room changed (joined, left, deleted) or a session ended: rare, and streams act on
    /// what it says.
    Control(Box<Event>),
    /// Anything else (presence, heartbeats): sent as is.
    Plain,
    /// No body (an event this build does not know, from a newer instance): nothing to send.
    Empty,
}

impl EventKind {
    /// What streams need of `event`.
    pub fn of(event: Event) -> Self {
        match &event.event {
            Some(Ev::Message(message)) => EventKind::Message {
                seq: message.seq,
                sent_at: message.sent_at,
            },
            Some(Ev::Typing(typing)) => EventKind::Typing {
                user_id: typing.user.as_ref().map(|user| user.id.clone()),
            },
            Some(Ev::RoomChanged(_) | Ev::SessionEnded(_)) => EventKind::Control(Box::new(event)),
            Some(_) => EventKind::Plain,
            None => EventKind::Empty,
        }
    }
}

impl BusMessage {
    /// Wraps an event, encoding it once.
    pub fn event(event: Event) -> Self {
        let encoded = FramedEvent::from(&event);
        BusMessage::Event {
            kind: EventKind::of(event),
            encoded,
        }
    }

    /// The whole event, decoded again from its encoding (for tests and tools; streams look
    /// at [`EventKind`] only).
    pub fn decoded(&self) -> Option<Event> {
        match self {
            BusMessage::Event { encoded, .. } => prost::Message::decode(encoded.encoding()).ok(),
            BusMessage::Resync => None,
        }
    }
}

/// A bus message as shared between all receivers of a topic: built once, never copied.
pub type SharedEvent = Arc<BusMessage>;

impl Topic {
    /// Capacity of the topic's local broadcast, allocated in full when the first stream
    /// follows it. A receiver that falls further behind gets `Lagged`: a room's messages
    /// are then repaired from the log and a user's room list is read again (telling the
    /// client of a session ended meanwhile), so this bounds memory, not correctness of the
    /// log or the room list. A room's transient events missed that way (presence, typing,
    /// member notices) are gone, as they were with larger buffers in a larger burst.
    /// 16 events per room (from 64) and 4 per user (from 16) cost about 2 KiB less per
    /// online user in 10 rooms; 32 and 16 were measured too (BENCHMARKS.md).
    pub fn capacity(&self) -> usize {
        match self {
            Topic::Room(_) => 16,
            Topic::User(_) => 4,
        }
    }
}

/// A failure to reach the fan-out or presence broker.
#[derive(Debug, thiserror::Error)]
#[error("event bus unavailable")]
pub struct BusError(#[source] pub anyhow::Error);

/// A message to append: everything but its seq, which only the log assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Opaque id (UUIDv7).
    pub id: String,
    /// The room whose log it goes into.
    pub room_id: RoomId,
    /// Author's user id.
    pub sender_id: UserId,
    /// Author's display name at the time of sending.
    pub sender_name: String,
    /// Validated text.
    pub text: String,
    /// Unix milliseconds.
    pub sent_at: i64,
    /// Sender's idempotency key (may be empty).
    pub client_id: String,
}

impl NewMessage {
    /// The message as stored under `seq`.
    pub fn with_seq(self, seq: u64) -> MessageRecord {
        MessageRecord {
            id: self.id,
            room_id: self.room_id,
            seq,
            sender_id: self.sender_id,
            sender_name: self.sender_name,
            text: self.text,
            sent_at: self.sent_at,
            client_id: self.client_id,
        }
    }
}

/// Outcome of [`Log::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message (the original one, for a retried `client_id`).
    pub message: MessageRecord,
    /// False when `client_id` matched an earlier message and nothing was stored.
    pub created: bool,
}

/// Message logs and event fan-out shared by every stream on every instance.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Assigns the next seq, appends the message and publishes it to the room's topic on
    /// the bus, as one step: every observer sees one order per room without holes. A known
    /// non-empty `(room, sender, client_id)` returns the original message instead.
    /// `RoomNotFound` if the room is gone, `NotMember` if the sender is not in it (checked in
    /// the same step and before a retry's lookup, so no message slips in after its sender
    /// left, and the service need not read either before appending).
    async fn append(&self, new: NewMessage) -> StoreResult<Appended>;
    /// Messages with seq > `after_seq`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        room_id: &RoomId,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>>;
    /// Messages with seq < `before_seq` (0: from the newest), the newest `limit` of them,
    /// returned oldest first.
    async fn messages_before(
        &self,
        room_id: &RoomId,
        before_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>>;

    /// Starts receiving a topic's events. Events published after this returns are received
    /// (in publish order), which is what lets a stream follow first and read the log second.
    async fn follow(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError>;
    /// Delivers a transient event (typing, presence, membership) to the current receivers of
    /// a topic. Delivery is at most once; messages go through [`Log::append`] instead.
    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError>;

    /// Whether the log and its fan-out can serve now (for `/readyz`).
    async fn ready(&self) -> bool;

    /// Times the connection to the broker was re-established.
    fn reconnects(&self) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::v1 as pb;

    fn wrap(event: Ev) -> BusMessage {
        BusMessage::event(Event { event: Some(event) })
    }

    fn kind(message: &BusMessage) -> &EventKind {
        match message {
            BusMessage::Event { kind, .. } => kind,
            BusMessage::Resync => panic!("an event"),
        }
    }

    /// Streams decide from the kind alone and send the encoding, so the kind must carry
    /// exactly what they look at, and the encoding the whole event.
    #[test]
    fn an_event_keeps_what_streams_look_at_and_its_whole_encoding() {
        let message = wrap(Ev::Message(pb::Message {
            seq: 7,
            sent_at: 1_795_312_361_000,
            text: "a long text kept only once, encoded".into(),
            ..Default::default()
        }));
        assert_eq!(
            kind(&message),
            &EventKind::Message {
                seq: 7,
                sent_at: 1_795_312_361_000
            }
        );
        let Some(Ev::Message(back)) = message.decoded().unwrap().event else {
            panic!("the message");
        };
        assert_eq!(back.text, "a long text kept only once, encoded");

        let typing = wrap(Ev::Typing(pb::Typing {
            room_id: "r".into(),
            user: Some(pb::User {
                id: "u1".into(),
                ..Default::default()
            }),
            typing: true,
        }));
        assert_eq!(
            kind(&typing),
            &EventKind::Typing {
                user_id: Some("u1".into())
            }
        );

        let change = Ev::RoomChanged(pb::RoomChanged {
            room: None,
            change: pb::RoomChange::Deleted as i32,
            user: None,
        });
        assert_eq!(
            kind(&wrap(change.clone())),
            &EventKind::Control(Box::new(Event {
                event: Some(change)
            }))
        );

        let heartbeat = wrap(Ev::Heartbeat(pb::Heartbeat { server_time: 1 }));
        assert_eq!(kind(&heartbeat), &EventKind::Plain);
        assert_eq!(
            kind(&BusMessage::event(Event { event: None })),
            &EventKind::Empty
        );
        assert_eq!(BusMessage::Resync.decoded(), None);
    }
}
