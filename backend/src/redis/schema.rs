//! Names of every Redis key and channel, and the format of channel payloads: the contract
//! between the Redis store (which publishes messages from its append script) and the Redis
//! bus (which decodes them). Several deployments share one Redis by using different prefixes.

use natter_proto::v1::{Event, event};
use prost::Message as _;

use natter_proto::FramedEvent;

use crate::{
    convert,
    ids::{RoomId, UserId},
    records::MessageRecord,
    seams::{BusMessage, EventKind, Topic},
};

/// Key and channel names under one prefix.
///
/// On a Redis Cluster every key carries a hash tag (`{...}`) that decides its slot: a room's
/// keys and channel share `{room id}` (so the append script touches one slot), a user's keys
/// `{user id}`, each join code and direct pair its own, usernames `{accounts}` and presence
/// `{presence}` (their scripts read several keys of one group). On a single server the names
/// have no tags, as they always had, so existing data stays where it is.
#[derive(Debug, Clone)]
pub struct Schema {
    prefix: String,
    cluster: bool,
}

impl Schema {
    /// Names under `prefix` (e.g. `natter` gives `natter:user:...`) for a single server.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cluster: false,
        }
    }

    /// Names under `prefix` laid out by hash slot, for a Redis Cluster.
    pub fn clustered(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cluster: true,
        }
    }

    /// Whether names are laid out for a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// An id as it appears in names: its own hash tag on a cluster.
    fn tag(&self, id: &str) -> String {
        if self.cluster {
            format!("{{{id}}}")
        } else {
            id.to_owned()
        }
    }

    /// The segment that puts a group of keys into one slot on a cluster (nothing otherwise).
    fn group(&self, name: &str) -> String {
        if self.cluster {
            format!("{{{name}}}:")
        } else {
            String::new()
        }
    }

    /// The base of presence keys, for the presence scripts that build them from ids.
    pub fn presence_base(&self) -> String {
        format!("{}:{}", self.prefix, self.group("presence"))
    }

    /// JSON `UserRecord`.
    pub fn user(&self, id: &UserId) -> String {
        format!("{}:user:{}", self.prefix, self.tag(id.as_str()))
    }
    /// Username to user id; `SET NX` makes usernames unique.
    pub fn username(&self, name: &str) -> String {
        format!("{}:{}username:{name}", self.prefix, self.group("accounts"))
    }
    /// Sorted set of all usernames (score 0: lexicographic order for paging).
    pub fn usernames(&self) -> String {
        format!("{}:{}usernames", self.prefix, self.group("accounts"))
    }
    /// Set of the room ids a user was added to: an index that may hold rooms the user left
    /// or that were never finished; the room's member set is the truth.
    pub fn user_rooms(&self, id: &UserId) -> String {
        format!("{}:user:{}:rooms", self.prefix, self.tag(id.as_str()))
    }
    /// JSON `RoomRecord` (without `last_seq`, which lives in [`Self::room_seq`]).
    pub fn room(&self, id: &RoomId) -> String {
        format!("{}:room:{}", self.prefix, self.tag(id.as_str()))
    }
    /// The room's last assigned seq (an integer, `INCR`ed by the append script).
    pub fn room_seq(&self, id: &RoomId) -> String {
        format!("{}:seq", self.room(id))
    }
    /// The room's message log: a Redis Stream whose entry ids are `<seq>-0`.
    pub fn room_log(&self, id: &RoomId) -> String {
        format!("{}:log", self.room(id))
    }
    /// Hash `<sender>:<client_id>` to seq, for idempotent sends.
    pub fn room_client_ids(&self, id: &RoomId) -> String {
        format!("{}:cids", self.room(id))
    }
    /// Sorted set of the client-id fields by seq, to forget those of trimmed messages.
    pub fn room_client_id_order(&self, id: &RoomId) -> String {
        format!("{}:cidz", self.room(id))
    }
    /// Set of the room's member ids.
    pub fn room_members(&self, id: &RoomId) -> String {
        format!("{}:members", self.room(id))
    }
    /// Join code to room id.
    pub fn code(&self, code: &str) -> String {
        format!("{}:code:{}", self.prefix, self.tag(code))
    }
    /// Sorted pair of user ids to their direct room id.
    pub fn direct(&self, a: &UserId, b: &UserId) -> String {
        let pair = format!("{a}:{b}");
        format!("{}:direct:{}", self.prefix, self.tag(&pair))
    }
    /// Sorted set of instance ids scored by their last heartbeat (unix ms).
    pub fn instances(&self) -> String {
        format!("{}instances", self.presence_base())
    }
    /// Hash user id to number of open streams on one instance.
    pub fn presence(&self, instance: &str) -> String {
        format!("{}presence:{instance}", self.presence_base())
    }
    /// Stream count updates Redis applied to one instance's presence hash since its last
    /// rewrite (set by the rewrite), so the instance can tell a lost or doubled write.
    pub fn presence_updates(&self, instance: &str) -> String {
        format!("{}updates:{instance}", self.presence_base())
    }

    /// The pub/sub channel of a topic (on a cluster, in its room's or user's slot).
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(id) => format!("{}:ch:room:{}", self.prefix, self.tag(id.as_str())),
            Topic::User(id) => format!("{}:ch:user:{}", self.prefix, self.tag(id.as_str())),
        }
    }

    /// The topic of a channel name, if it is one of ours.
    pub fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":ch:")?;
        let untag = |id: &str| {
            if self.cluster {
                id.strip_prefix('{')?.strip_suffix('}').map(str::to_owned)
            } else {
                Some(id.to_owned())
            }
        };
        if let Some(id) = rest.strip_prefix("room:") {
            Some(Topic::Room(RoomId::from_trusted(untag(id)?)))
        } else {
            let id = untag(rest.strip_prefix("user:")?)?;
            Some(Topic::User(UserId::from_trusted(id)))
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
            kind: EventKind::of(Event::decode(body)?),
            encoded: FramedEvent::from_encoding(body),
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
        for schema in [Schema::new("t1"), Schema::clustered("t1")] {
            for topic in [
                Topic::Room(RoomId::from_trusted("r1")),
                Topic::User(UserId::from_trusted("u1")),
            ] {
                assert_eq!(schema.topic(&schema.channel(&topic)), Some(topic));
            }
            assert_eq!(schema.topic("other:ch:room:r1"), None);
        }
    }

    /// The names a single server has always held stay the same; on a cluster each group
    /// of keys shares its hash tag.
    #[test]
    fn names_are_unchanged_on_a_server_and_tagged_on_a_cluster() {
        let room = RoomId::from_trusted("r1");
        let user = UserId::from_trusted("u1");
        let server = Schema::new("n");
        assert_eq!(server.room_seq(&room), "n:room:r1:seq");
        assert_eq!(server.user_rooms(&user), "n:user:u1:rooms");
        assert_eq!(server.username("al"), "n:username:al");
        assert_eq!(server.presence("i"), "n:presence:i");
        assert_eq!(server.presence_updates("i"), "n:updates:i");
        assert_eq!(server.channel(&Topic::Room(room.clone())), "n:ch:room:r1");

        let cluster = Schema::clustered("n");
        let slot = |key: &str| redis::cluster_routing::Slot::for_key(key);
        let room_keys = [
            cluster.room(&room),
            cluster.room_seq(&room),
            cluster.room_log(&room),
            cluster.room_client_ids(&room),
            cluster.room_client_id_order(&room),
            cluster.room_members(&room),
            cluster.channel(&Topic::Room(room.clone())),
        ];
        assert!(room_keys.iter().all(|k| slot(k) == slot(&room_keys[0])));
        assert_eq!(slot(&cluster.user(&user)), slot(&cluster.user_rooms(&user)));
        assert_eq!(slot(&cluster.username("al")), slot(&cluster.usernames()));
        assert_eq!(slot(&cluster.presence("i")), slot(&cluster.instances()));
        assert_eq!(
            slot(&cluster.presence_updates("i")),
            slot(&cluster.instances())
        );
        assert_eq!(cluster.room_seq(&room), "n:room:{r1}:seq");
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
        let event = decode_payload(payload.as_bytes())
            .unwrap()
            .decoded()
            .expect("an event");
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
