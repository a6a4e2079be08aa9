//! The Redis store, for running several instances as one service.
//!
//! Layout (see [`Schema`]): records are JSON strings; memberships are sets; each room's log
//! is a Redis Stream whose entry ids are `<seq>-0`. Streams fit a chat log: ordered, range
//! reads by seq in both directions (`XRANGE`/`XREVRANGE`) without a secondary index, compact
//! storage, and trimming built in (`XADD MAXLEN`) for retention. Multi-key changes run as Lua
//! scripts, which Redis executes atomically; the append script also PUBLISHes the message,
//! so seq assignment, log append and fan-out are one step that all instances observe in the
//! same order.

mod directory;
mod log;
mod scripts;

use std::time::Duration;

use anyhow::Context;
use redis::{
    AsyncCommands, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    bus::RedisBus,
    schema::{Schema, decode_log_entry},
};
use crate::{
    ids::{RoomId, UserId},
    records::{MessageRecord, RoomRecord, UserRecord},
    seams::{StoreError, StoreResult},
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

pub(super) fn store_error(e: RedisError) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(e.into())
    } else {
        StoreError::Internal(e.into())
    }
}

pub(super) fn internal(e: impl Into<anyhow::Error>) -> StoreError {
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
    pub(super) async fn load_rooms(&self, ids: &[RoomId]) -> StoreResult<Vec<RoomRecord>> {
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

    pub(super) async fn users_by_ids(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
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
pub(super) type LogEntry = (String, Vec<(String, Vec<u8>)>);

pub(super) fn entry_seq(entry: &LogEntry) -> StoreResult<u64> {
    entry
        .0
        .split_once('-')
        .and_then(|(seq, _)| seq.parse().ok())
        .ok_or_else(|| internal(anyhow::anyhow!("unexpected stream id {}", entry.0)))
}

pub(super) fn entry_message(entry: &LogEntry) -> StoreResult<MessageRecord> {
    let seq = entry_seq(entry)?;
    let json = entry
        .1
        .iter()
        .find_map(|(field, value)| (field == "m").then_some(value))
        .ok_or_else(|| internal(anyhow::anyhow!("log entry {} without a message", entry.0)))?;
    decode_log_entry(seq, json).map_err(internal)
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(internal)
}
