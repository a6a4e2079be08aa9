//! The Redis Log: the append script assigns the seq, appends to the room's Stream and
//! publishes, in one atomic step; ranges are `XRANGE`/`XREVRANGE`; following is the bus.

use async_trait::async_trait;
use natter_proto::v1::Event;
use redis::{AsyncCommands, ErrorKind, ScriptInvocation, ServerErrorKind};
use tokio::sync::broadcast;

/// Longest a send waits for replicas (`--redis-wait-replicas`) before it is answered
/// UNAVAILABLE.
const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

use super::{
    LogEntry, RedisStore, ReplicaWait, entry_message, internal, scripts::APPEND, store_error,
    to_json,
};
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
        let publish = match (&self.replica_wait, self.schema.is_cluster()) {
            (Some(_), _) => "",
            (None, true) => "SPUBLISH",
            (None, false) => "PUBLISH",
        };
        let mut invocation = APPEND.prepare_invoke();
        invocation
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
            .arg(publish);
        let (status, seq, stored): (i64, u64, Vec<u8>) = if let Some(wait) = &self.replica_wait {
            wait.append(&invocation, room).await?
        } else {
            invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?
        };
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
        if self.replica_wait.is_some() {
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

impl ReplicaWait {
    /// Runs the append script and `WAIT` in one pipeline, so both go to the room's primary
    /// on one connection. `WAIT` counts the replicas holding what the primary had written
    /// when this connection's previous command ran (Redis notes the offset after each
    /// command). Sent on its own, it could leave as the first command of a fresh connection
    /// (after a reconnect, or to the replica a failover promoted) and answer at once for a
    /// write it never saw; right behind the script, it covers the message, also on a retry
    /// that finds the message already stored. It goes on the next lane, where the blocked
    /// connection holds up nothing but other waiting appends.
    ///
    /// Short of the configured replicas the send is answered UNAVAILABLE: the message is in
    /// the log (and may be delivered), but a failover now could lose it, so the client
    /// should retry with the same client id, which finds it rather than sending it twice.
    async fn append(
        &self,
        invocation: &ScriptInvocation<'_>,
        room: &RoomId,
    ) -> StoreResult<(i64, u64, Vec<u8>)> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(self.replicas)
            .arg(u64::try_from(REPLICA_WAIT.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.lane();
        let answer = match pipe.query_async(&mut conn).await {
            // A primary that never ran it (a promoted replica, a restarted server).
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                invocation
                    .load_async(&mut conn)
                    .await
                    .map_err(store_error)?;
                pipe.query_async(&mut conn).await
            }
            answer => answer,
        };
        let (appended, acknowledged): ((i64, u64, Vec<u8>), u32) = answer.map_err(store_error)?;
        // (An unknown room or a non-member wrote nothing: their answer stands.)
        let stored = matches!(appended.0, 0 | 1);
        if stored && acknowledged < self.replicas {
            return Err(StoreError::Unavailable(anyhow::anyhow!(
                "{acknowledged} of {} replicas acknowledged a message of room {room} in time",
                self.replicas
            )));
        }
        Ok(appended)
    }
}
