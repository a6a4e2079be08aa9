//! Names of every Redis key and channel, and the format of channel payloads: the contract
//! between the Redis store (which publishes messages from its append script) and the Redis
//! bus (which decodes them). Several deployments share one Redis by using different prefixes.

use natter_proto::v1::{Event, event};
use prost::Message as _;

use natter_proto::EncodedEvent;

use crate::{
    convert,
    ids::{RoomId, UserId},
    records::MessageRecord,
    seams::{BusMessage, Topic},
};

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct Schema {
    prefix: String,
}

impl Schema {
    /// Names under `prefix` (e.g. `natter` gives `natter:user:...`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix with its trailing separator, for scripts that build keys themselves.
    pub fn base(&self) -> String {
        format!("{}:", self.prefix)
    }

    /// JSON `UserRecord`.
    pub fn user(&self, id: &UserId) -> String {
        format!("{}:user:{id}", self.prefix)
    }
    /// Username to user id; `SET NX` makes usernames unique.
    pub fn username(&self, name: &str) -> String {
        format!("{}:username:{name}", self.prefix)
    }
    /// Sorted set of all usernames (score 0: lexicographic order for paging).
    pub fn usernames(&self) -> String {
        format!("{}:usernames", self.prefix)
    }
    /// Set of the room ids a user belongs to.
    pub fn user_rooms(&self, id: &UserId) -> String {
        format!("{}:user:{id}:rooms", self.prefix)
    }
    /// JSON `RoomRecord` (without `last_seq`, which lives in [`Self::room_seq`]).
    pub fn room(&self, id: &RoomId) -> String {
        format!("{}:room:{id}", self.prefix)
    }
    /// The room's last assigned seq (an integer, `INCR`ed by the append script).
    pub fn room_seq(&self, id: &RoomId) -> String {
        format!("{}:room:{id}:seq", self.prefix)
    }
    /// The room's message log: a Redis Stream whose entry ids are `<seq>-0`.
    pub fn room_log(&self, id: &RoomId) -> String {
        format!("{}:room:{id}:log", self.prefix)
    }
    /// Hash `<sender>:<client_id>` to seq, for idempotent sends.
    pub fn room_client_ids(&self, id: &RoomId) -> String {
        format!("{}:room:{id}:cids", self.prefix)
    }
    /// Sorted set of the client-id fields by seq, to forget those of trimmed messages.
    pub fn room_client_id_order(&self, id: &RoomId) -> String {
        format!("{}:room:{id}:cidz", self.prefix)
    }
    /// Set of the room's member ids.
    pub fn room_members(&self, id: &RoomId) -> String {
        format!("{}:room:{id}:members", self.prefix)
    }
    /// Join code to room id.
    pub fn code(&self, code: &str) -> String {
        format!("{}:code:{code}", self.prefix)
    }
    /// Sorted pair of user ids to their direct room id.
    pub fn direct(&self, a: &UserId, b: &UserId) -> String {
        format!("{}:direct:{a}:{b}", self.prefix)
    }
    /// Sorted set of instance ids scored by their last heartbeat (unix ms).
    pub fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }
    /// Hash user id to number of open streams on one instance.
    pub fn presence(&self, instance: &str) -> String {
        format!("{}:presence:{instance}", self.prefix)
    }

    /// The pub/sub channel of a topic.
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(id) => format!("{}:ch:room:{id}", self.prefix),
            Topic::User(id) => format!("{}:ch:user:{id}", self.prefix),
        }
    }

    /// The topic of a channel name, if it is one of ours.
    pub fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":ch:")?;
        if let Some(id) = rest.strip_prefix("room:") {
            Some(Topic::Room(RoomId::from_trusted(id)))
        } else {
            rest.strip_prefix("user:")
                .map(|id| Topic::User(UserId::from_trusted(id)))
        }
    }
}

/// Payload tag of an event encoded by Rust code: `E` + protobuf `Event`.
const EVENT_TAG: u8 = b'E';
/// Payload tag of a message published by the append script: `M<seq>\n<MessageRecord JSON>`.
/// The script cannot build protobuf, and JSON with the seq outside keeps it a plain
/// concatenation (no JSON editing in Lua, whose numbers are doubles).
pub const MESSAGE_TAG: &str = "M";

/// Encodes an event for PUBLISH.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + event.encoded_len());
    payload.push(EVENT_TAG);
    event.encode(&mut payload).expect("a Vec grows as needed");
    payload
}

/// Decodes a channel payload into what local streams receive. An `E` payload already holds
/// the event's encoding, which is kept as is; a message from the append script is encoded
/// here, once per instance.
pub fn decode_payload(payload: &[u8]) -> anyhow::Result<BusMessage> {
    match payload.split_first() {
        Some((&EVENT_TAG, body)) => Ok(BusMessage::Event {
            event: Event::decode(body)?,
            encoded: EncodedEvent(bytes::Bytes::copy_from_slice(body)),
        }),
        Some((b'M', body)) => {
            let newline = body
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| anyhow::anyhow!("message payload without a seq line"))?;
            let seq: u64 = std::str::from_utf8(&body[..newline])?.parse()?;
            let record = decode_log_entry(seq, &body[newline + 1..])?;
            Ok(BusMessage::event(Event {
                event: Some(event::Event::Message(convert::message(&record))),
            }))
        }
        _ => anyhow::bail!("unknown payload tag"),
    }
}

/// A log entry (`MessageRecord` JSON stored without its seq) with its seq put back.
pub fn decode_log_entry(seq: u64, json: &[u8]) -> anyhow::Result<MessageRecord> {
    let mut record: MessageRecord = serde_json::from_slice(json)?;
    record.seq = seq;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::v1::Heartbeat;

    #[test]
    fn channels_map_back_to_topics() {
        let schema = Schema::new("t1");
        for topic in [
            Topic::Room(RoomId::from_trusted("r1")),
            Topic::User(UserId::from_trusted("u1")),
        ] {
            assert_eq!(schema.topic(&schema.channel(&topic)), Some(topic));
        }
        assert_eq!(schema.topic("other:ch:room:r1"), None);
    }

    #[test]
    fn payloads_round_trip() {
        let event = Event {
            event: Some(event::Event::Heartbeat(Heartbeat { server_time: 7 })),
        };
        assert_eq!(
            decode_payload(&encode_event(&event)).unwrap(),
            BusMessage::event(event)
        );

        let record = MessageRecord {
            id: "m".into(),
            room_id: RoomId::from_trusted("r"),
            seq: 0,
            sender_id: UserId::from_trusted("u"),
            sender_name: "U".into(),
            text: "hi\nthere".into(),
            sent_at: 1_795_312_361_000,
            client_id: String::new(),
        };
        let payload = format!("M42\n{}", serde_json::to_string(&record).unwrap());
        let BusMessage::Event { event, .. } = decode_payload(payload.as_bytes()).unwrap() else {
            panic!("an event");
        };
        let Some(event::Event::Message(message)) = event.event else {
            panic!("a message");
        };
        assert_eq!(
            (message.seq, message.text.as_str(), message.sent_at),
            (42, "hi\nthere", 1_795_312_361_000)
        );
        assert!(decode_payload(b"Xjunk").is_err());
    }
}

/// Ids go to Redis as their text, like the strings they were before they had types, and
/// come back the same way.
macro_rules! id_as_redis_arg {
    ($($id:ty),*) => {$(
        impl redis::ToRedisArgs for $id {
            fn write_redis_args<W>(&self, out: &mut W)
            where
                W: ?Sized + redis::RedisWrite,
            {
                out.write_arg(self.as_str().as_bytes())
            }
        }

        impl redis::ToSingleRedisArg for $id {}

        /// Redis only holds ids this server wrote.
        impl redis::FromRedisValue for $id {
            fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
                String::from_redis_value(v).map(<$id>::from_trusted)
            }
        }
    )*};
}

id_as_redis_arg!(UserId, RoomId);
