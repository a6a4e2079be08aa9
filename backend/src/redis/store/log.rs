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
        let room = &message.room_id;
        let client_field = if message.client_id.is_empty() {
            String::new()
        } else {
            format!("{}:{}", message.sender_id, message.client_id)
        };
        let (status, seq, stored): (i64, u64, Vec<u8>) = APPEND
            .key(self.schema.room(room))
            .key(self.schema.room_seq(room))
            .key(self.schema.room_log(room))
            .key(self.schema.room_client_ids(room))
            .key(self.schema.room_client_id_order(room))
            .key(self.schema.room_members(room))
            .arg(client_field)
            .arg(to_json(&message)?)
            .arg(self.schema.channel(&Topic::Room(room.clone())))
            .arg(self.retention)
            .arg(MESSAGE_TAG)
            .arg(&message.sender_id)
            .arg(if self.schema.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            })
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        if status >= 0 && self.wait_replicas > 0 {
            self.wait_for_replicas(room).await?;
        }
        match status {
            -1 => Err(StoreError::RoomNotFound),
            -2 => Err(StoreError::NotMember),
            1 => Ok(Appended {
                message: MessageRecord { seq, ..message },
                created: true,
            }),
            // A retry. If the original was trimmed away, this request describes it.
            _ if stored.is_empty() => Ok(Appended {
                message: MessageRecord { seq, ..message },
                created: false,
            }),
            _ => Ok(Appended {
                message: decode_log_entry(seq, &stored).map_err(internal)?,
                created: false,
            }),
        }
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
