//! The Redis store, for running several instances as one service.
//!
//! Layout (see [`Schema`]): records are JSON strings; memberships are sets; each room's log
//! is a Redis Stream whose entry ids are `<seq>-0`. Streams fit a chat log: ordered, range
//! reads by seq in both directions (`XRANGE`/`XREVRANGE`) without a secondary index, compact
//! storage, and trimming built in (`XADD MAXLEN`) for retention. Multi-key changes run as Lua
//! scripts, which Redis executes atomically; the append script also PUBLISHes the message,
//! so seq assignment, log append and fan-out are one step that all instances observe in the
//! same order.

mod scripts;

use crate::ids::{RoomId, UserId};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use redis::{
    AsyncCommands, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use scripts::{ADD_MEMBER, APPEND, CREATE_ROOM, CREATE_USER, DELETE_ROOM, OPEN_DIRECT};

use natter_proto::v1::Event;
use tokio::sync::broadcast;

use super::{
    bus::RedisBus,
    schema::{MESSAGE_TAG, Schema, decode_log_entry},
};
use crate::{
    records::{MessageRecord, RoomRecord, UserRecord},
    seams::{
        Appended, BusError, Directory, Log, NewMessage, SharedEvent, StoreError, StoreResult, Topic,
    },
};

/// Opens a managed connection: reconnects by itself, and never lets a command wait long on
/// a dead server (the caller gets UNAVAILABLE instead).
pub fn connection_manager(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("invalid Redis URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// Whether a Redis error means "the server cannot be reached now" (UNAVAILABLE, retry later)
/// rather than a bug.
pub(crate) fn is_unavailable(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    // Refusals of a server that is out of memory, cannot persist, is busy running a script
    // or lacks replicas: retrying later may work.
    const TRANSIENT_CODES: &[&str] = &["OOM", "MISCONF", "BUSY", "NOREPLICAS", "LOADING"];
    e.code().is_some_and(|code| TRANSIENT_CODES.contains(&code))
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

fn store_error(e: RedisError) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.into())
    } else {
        StoreError::Internal(e.into())
    }
}

fn internal(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Internal(e.into())
}

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    schema: Schema,
    /// Messages kept per room; 0 keeps all.
    retention: u64,
    /// This instance's pub/sub connection: the log's live side.
    bus: RedisBus,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store over a managed connection (which connects lazily and reconnects by itself).
    pub fn new(conn: ConnectionManager, schema: Schema, retention: u64, bus: RedisBus) -> Self {
        Self {
            conn,
            schema,
            retention,
            bus,
        }
    }

    /// Rooms with their current last seq and first retained seq, in the order of `ids`.
    async fn load_rooms(&self, ids: &[RoomId]) -> StoreResult<Vec<RoomRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.get(self.schema.room(id))
                .get(self.schema.room_seq(id))
                .xrange_count(self.schema.room_log(id), "-", "+", 1);
        }
        type Row = (Option<Vec<u8>>, Option<u64>, Vec<LogEntry>);
        let rows: Vec<Row> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let mut rooms = Vec::with_capacity(rows.len());
        for (json, seq, first) in rows {
            let Some(json) = json else { continue };
            let mut room: RoomRecord = serde_json::from_slice(&json).map_err(internal)?;
            room.last_seq = seq.unwrap_or(0);
            room.first_seq = match first.first() {
                Some(entry) => entry_seq(entry)?,
                None => room.last_seq + 1,
            };
            rooms.push(room);
        }
        Ok(rooms)
    }

    async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.schema.user(id)).collect();
        let rows: Vec<Option<Vec<u8>>> = self.conn.clone().mget(keys).await.map_err(store_error)?;
        rows.into_iter()
            .flatten()
            .map(|json| serde_json::from_slice(&json).map_err(internal))
            .collect()
    }
}

/// One XRANGE entry: id and field/value pairs.
type LogEntry = (String, Vec<(String, Vec<u8>)>);

fn entry_seq(entry: &LogEntry) -> StoreResult<u64> {
    entry
        .0
        .split_once('-')
        .and_then(|(seq, _)| seq.parse().ok())
        .ok_or_else(|| internal(anyhow::anyhow!("unexpected stream id {}", entry.0)))
}

fn entry_message(entry: &LogEntry) -> StoreResult<MessageRecord> {
    let seq = entry_seq(entry)?;
    let json = entry
        .1
        .iter()
        .find_map(|(field, value)| (field == "m").then_some(value))
        .ok_or_else(|| internal(anyhow::anyhow!("log entry {} without a message", entry.0)))?;
    decode_log_entry(seq, json).map_err(internal)
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(internal)
}

#[async_trait]
impl Directory for RedisStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<UserRecord> {
        let created: i64 = CREATE_USER
            .key(self.schema.username(&user.username))
            .key(self.schema.user(&user.id))
            .key(self.schema.usernames())
            .arg(&user.id)
            .arg(to_json(&user)?)
            .arg(&user.username)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        if created == 1 {
            Ok(user)
        } else {
            Err(StoreError::UsernameTaken)
        }
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let id: Option<UserId> = self
            .conn
            .clone()
            .get(self.schema.username(username))
            .await
            .map_err(store_error)?;
        match id {
            Some(id) => self.user(&id).await,
            None => Ok(None),
        }
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        let json: Option<Vec<u8>> = self
            .conn
            .clone()
            .get(self.schema.user(id))
            .await
            .map_err(store_error)?;
        json.map(|j| serde_json::from_slice(&j).map_err(internal))
            .transpose()
    }

    async fn users_after(
        &self,
        after_username: &str,
        count: usize,
    ) -> StoreResult<Vec<UserRecord>> {
        let start = if after_username.is_empty() {
            "-".to_owned()
        } else {
            format!("({after_username}")
        };
        let names: Vec<String> = self
            .conn
            .clone()
            .zrangebylex_limit(self.schema.usernames(), start, "+", 0, count as isize)
            .await
            .map_err(store_error)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Option<UserId>> = self
            .conn
            .clone()
            .mget(
                names
                    .iter()
                    .map(|n| self.schema.username(n))
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(store_error)?;
        self.users_by_ids(&ids.into_iter().flatten().collect::<Vec<_>>())
            .await
    }

    async fn create_room(&self, room: RoomRecord) -> StoreResult<bool> {
        let code = room
            .kind
            .code()
            .map(str::to_owned)
            .ok_or_else(|| internal(anyhow::anyhow!("a group room needs a code")))?;
        let created: i64 = CREATE_ROOM
            .key(self.schema.code(&code))
            .key(self.schema.room(&room.id))
            .key(self.schema.room_seq(&room.id))
            .key(self.schema.room_members(&room.id))
            .key(self.schema.user_rooms(&room.owner_id))
            .arg(&room.id)
            .arg(to_json(&room)?)
            .arg(&room.owner_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(created == 1)
    }

    async fn room(&self, id: &RoomId) -> StoreResult<Option<RoomRecord>> {
        Ok(self.load_rooms(std::slice::from_ref(id)).await?.pop())
    }

    async fn room_by_code(&self, code: &str) -> StoreResult<Option<RoomRecord>> {
        let id: Option<RoomId> = self
            .conn
            .clone()
            .get(self.schema.code(code))
            .await
            .map_err(store_error)?;
        match id {
            Some(id) => self.room(&id).await,
            None => Ok(None),
        }
    }

    async fn open_direct(&self, candidate: RoomRecord) -> StoreResult<(RoomRecord, bool)> {
        let [a, b] = candidate
            .kind
            .pair()
            .cloned()
            .ok_or_else(|| internal(anyhow::anyhow!("a direct room needs its pair")))?;
        let (created, id): (i64, RoomId) = OPEN_DIRECT
            .key(self.schema.direct(&a, &b))
            .key(self.schema.room(&candidate.id))
            .key(self.schema.room_seq(&candidate.id))
            .key(self.schema.room_members(&candidate.id))
            .key(self.schema.user_rooms(&a))
            .key(self.schema.user_rooms(&b))
            .arg(&candidate.id)
            .arg(to_json(&candidate)?)
            .arg(&a)
            .arg(&b)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        if created == 1 {
            return Ok((candidate, true));
        }
        let room = self.room(&id).await?.ok_or(StoreError::RoomNotFound)?;
        Ok((room, false))
    }

    async fn delete_room(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>> {
        let Some(room) = self.room(room_id).await? else {
            return Ok(Vec::new());
        };
        let mut invocation = DELETE_ROOM.key(self.schema.room(room_id));
        invocation
            .key(self.schema.room_members(room_id))
            .key(self.schema.room_seq(room_id))
            .key(self.schema.room_log(room_id))
            .key(self.schema.room_client_ids(room_id))
            .key(self.schema.room_client_id_order(room_id));
        if let Some(code) = room.kind.code() {
            invocation.key(self.schema.code(code));
        }
        if let Some([a, b]) = room.kind.pair() {
            invocation.key(self.schema.direct(a, b));
        }
        let members: Vec<UserId> = invocation
            .arg(room_id)
            .arg(self.schema.base())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(members)
    }

    async fn add_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        let added: i64 = ADD_MEMBER
            .key(self.schema.room(room_id))
            .key(self.schema.room_members(room_id))
            .key(self.schema.user_rooms(user_id))
            .arg(user_id)
            .arg(room_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        match added {
            -1 => Err(StoreError::RoomNotFound),
            n => Ok(n == 1),
        }
    }

    async fn remove_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        let (removed, _): (i64, i64) = redis::pipe()
            .atomic()
            .srem(self.schema.room_members(room_id), user_id)
            .srem(self.schema.user_rooms(user_id), room_id)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(removed == 1)
    }

    async fn is_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        self.conn
            .clone()
            .sismember(self.schema.room_members(room_id), user_id)
            .await
            .map_err(store_error)
    }

    async fn rooms_of(&self, user_id: &UserId) -> StoreResult<Vec<RoomRecord>> {
        let ids: Vec<RoomId> = self
            .conn
            .clone()
            .smembers(self.schema.user_rooms(user_id))
            .await
            .map_err(store_error)?;
        self.load_rooms(&ids).await
    }

    async fn members_of(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>> {
        self.conn
            .clone()
            .smembers(self.schema.room_members(room_id))
            .await
            .map_err(store_error)
    }

    async fn ready(&self) -> bool {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .is_ok()
    }
}

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
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
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
