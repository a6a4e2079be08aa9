//! The Redis Log: the append script assigns the seq, appends to the room's Stream and
//! publishes, in one atomic step; ranges are `XRANGE`/`XREVRANGE`; following is the bus.

use async_trait::async_trait;
use natter_proto::v1::Event;
use redis::AsyncCommands;
use tokio::sync::broadcast;

/// Longest a send waits for replicas (`--redis-wait-replicas`) before it is answered
/// UNAVAILABLE.
const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

use super::{LogEntry, RedisStore, entry_message, internal, scripts::APPEND, store_error, to_json};
use crate::{
    ids::RoomId,
    records::MessageRecord,
    redis::schema::{MESSAGE_TAG, decode_log_entry},
    seams::{
        Appended, BusError, Directory, Log, NewMessage, SharedEvent, StoreError, StoreResult, Topic,
    },
};

#[async_trait]
impl Log for RedisStore {
    async fn append(&self, new: NewMessage) -> StoreResult<Appended> {
        // Stored as the record it becomes; the log entry's id gives the seq on reading.
        let message = new.with_seq(0);
        let room = &message.room_id.clone();
        let client_field = if message.client_id.is_empty() {
            String::new()
        } else {
            format!("{}:{}", message.sender_id, message.client_id)
        };
        let json = to_json(&message)?;
        // Waiting for replicas, the message is published only once they hold it: a stream
        // must never show a message that a failover then loses (and whose seq it reuses).
        let publish = match (self.wait_replicas, self.schema.is_cluster()) {
            (1.., _) => "",
            (0, true) => "SPUBLISH",
            (0, false) => "PUBLISH",
        };
        let (status, seq, stored): (i64, u64, Vec<u8>) = APPEND
            .key(self.schema.room(room))
            .key(self.schema.room_seq(room))
            .key(self.schema.room_log(room))
            .key(self.schema.room_client_ids(room))
            .key(self.schema.room_client_id_order(room))
            .key(self.schema.room_members(room))
            .arg(client_field)
            .arg(&json)
            .arg(self.schema.channel(&Topic::Room(room.clone())))
            .arg(self.retention)
            .arg(MESSAGE_TAG)
            .arg(&message.sender_id)
            .arg(publish)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let appended = match status {
            -1 => return Err(StoreError::RoomNotFound),
            -2 => return Err(StoreError::NotMember),
            1 => Appended {
                message: MessageRecord { seq, ..message },
                created: true,
            },
            // A retry. If the original was trimmed away, this request describes it.
            _ if stored.is_empty() => Appended {
                message: MessageRecord { seq, ..message },
                created: false,
            },
            _ => Appended {
                message: decode_log_entry(seq, &stored).map_err(internal)?,
                created: false,
            },
        };
        if self.wait_replicas > 0 {
            self.wait_for_replicas(room).await?;
            // Also for a retry: the first attempt may have stopped before publishing, and
            // a second delivery of one seq is dropped by every stream.
            let body = if status == 1 {
                json.into_bytes()
            } else {
                stored
            };
            if !body.is_empty() {
                let mut payload = format!("{MESSAGE_TAG}{seq}\n").into_bytes();
                payload.extend_from_slice(&body);
                self.bus
                    .publish_payload(&Topic::Room(room.clone()), payload)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.0))?;
            }
        }
        Ok(appended)
    }

    async fn messages_after(
        &self,
        room_id: &RoomId,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let entries: Vec<LogEntry> = self
            .conn
            .clone()
            .xrange_count(
                self.schema.room_log(room_id),
                format!("{}-0", after_seq + 1),
                "+",
                limit,
            )
            .await
            .map_err(store_error)?;
        entries.iter().map(entry_message).collect()
    }

    async fn messages_before(
        &self,
        room_id: &RoomId,
        before_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        if before_seq == 1 {
            return Ok(Vec::new());
        }
        let end = if before_seq == 0 {
            "+".to_owned()
        } else {
            format!("{}-0", before_seq - 1)
        };
        let entries: Vec<LogEntry> = self
            .conn
            .clone()
            .xrevrange_count(self.schema.room_log(room_id), end, "-", limit)
            .await
            .map_err(store_error)?;
        entries.iter().rev().map(entry_message).collect()
    }

    async fn follow(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        self.bus.subscribe(topic).await
    }

    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError> {
        self.bus.publish(topic, event).await
    }

    async fn ready(&self) -> bool {
        Directory::ready(self).await && self.bus.ready().await
    }

    fn reconnects(&self) -> u64 {
        self.bus.reconnects()
    }
}

impl RedisStore {
    /// Waits until the configured number of replicas hold everything written to the room's
    /// primary so far. Short of that the send is answered UNAVAILABLE: the message is in the
    /// log (and may be delivered), but a failover now could lose it, so the client should
    /// retry with the same client id, which finds it rather than sending it twice.
    async fn wait_for_replicas(&self, room: &RoomId) -> StoreResult<()> {
        let acknowledged = self
            .conn
            .clone()
            .wait_for_replicas(
                &self.schema.room_seq(room),
                self.wait_replicas,
                REPLICA_WAIT,
            )
            .await
            .map_err(store_error)?;
        if acknowledged < self.wait_replicas {
            return Err(StoreError::Unavailable(anyhow::anyhow!(
                "{acknowledged} of {} replicas acknowledged a message of room {room} in time",
                self.wait_replicas
            )));
        }
        Ok(())
    }
}
