//! The Redis store, for running several instances as one service.
//!
//! Layout (see [`Schema`]): records are JSON strings; memberships are sets; each room's log
//! is a Redis Stream whose entry ids are `<seq>-0`. Streams fit a chat log: ordered, range
//! reads by seq in both directions (`XRANGE`/`XREVRANGE`) without a secondary index, compact
//! storage, and trimming built in (`XADD MAXLEN`) for retention. Changes to several keys of
//! one slot run as Lua scripts, which Redis executes atomically; the append script also
//! publishes the message, so seq assignment, log append and fan-out are one step that all
//! instances observe in the same order. No command touches two slots, so the same code runs
//! on one server and on a Redis Cluster.

mod directory;
mod log;
mod scripts;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use redis::{AsyncCommands, RedisError};

use super::{
    RedisConn, RedisTarget,
    bus::RedisBus,
    schema::{Schema, decode_log_entry},
};
use crate::{
    ids::{RoomId, UserId},
    records::{MessageRecord, RoomRecord, UserRecord},
    seams::{StoreError, StoreResult},
};

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
                    // Redirects left after the cluster client's retries: the topology is
                    // changing (a failover, a slot migration).
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
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

/// Waiting for replicas before a send is answered (`--redis-wait-replicas`).
///
/// `WAIT` blocks its connection: Redis reads nothing more from it until the replicas
/// answer, so on the store's shared connection every waiting append to a primary would
/// queue behind the previous one's replication round trip, and so would every other request
/// to that primary. Waiting appends take [`WAIT_LANES`] connections of their own in turn.
struct ReplicaWait {
    /// Replicas that must hold a message (at least 1).
    replicas: u32,
    lanes: Vec<RedisConn>,
    next: AtomicUsize,
}

const WAIT_LANES: usize = 8;

impl ReplicaWait {
    /// The next lane (a clone: connections are shared handles).
    fn lane(&self) -> RedisConn {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.lanes[turn % self.lanes.len()].clone()
    }
}

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    schema: Schema,
    /// Messages kept per room; 0 keeps all.
    retention: u64,
    /// Set when sends are answered only once replicas hold the message.
    replica_wait: Option<Arc<ReplicaWait>>,
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
    /// A store over a connection (which connects lazily and reconnects by itself).
    pub fn new(conn: RedisConn, schema: Schema, retention: u64, bus: RedisBus) -> Self {
        Self {
            conn,
            schema,
            retention,
            replica_wait: None,
            bus,
        }
    }

    /// Answers a send only once `replicas` replicas hold the message (Redis `WAIT`), so
    /// that a failover cannot lose an acknowledged message. Opens [`WAIT_LANES`] more
    /// connections to `target` for those appends.
    pub fn waiting_for_replicas(self, replicas: u32, target: &RedisTarget) -> anyhow::Result<Self> {
        if replicas == 0 {
            return Ok(self);
        }
        let lanes = (0..WAIT_LANES)
            .map(|_| RedisConn::open(target))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            replica_wait: Some(Arc::new(ReplicaWait {
                replicas,
                lanes,
                next: AtomicUsize::new(0),
            })),
            ..self
        })
    }

    /// Rooms with their current last seq and first retained seq, in the order of `ids`,
    /// leaving out those that do not exist (and, given `member`, those it is not a member
    /// of: a user's room index may hold rooms they left).
    ///
    /// On one server every room's reads go in one pipeline: one request in flight per call.
    /// A Redis Cluster refuses a pipeline that spans slots, so there each room gets its own
    /// pipeline in its room's slot, all in flight at once. (One pipeline per room on a single
    /// server too put ten thousand requests in flight on the shared connection when a
    /// thousand users in ten rooms subscribed at once; BENCHMARKS.md records what it cost.)
    pub(super) async fn load_rooms(
        &self,
        ids: &[RoomId],
        member: Option<&UserId>,
    ) -> StoreResult<Vec<RoomRecord>> {
        let rows = if self.schema.is_cluster() {
            let loads = ids
                .iter()
                .map(|id| self.query_rooms(std::slice::from_ref(id), member));
            futures::future::try_join_all(loads)
                .await?
                .into_iter()
                .flatten()
                .collect()
        } else {
            self.query_rooms(ids, member).await?
        };
        let mut rooms = Vec::with_capacity(rows.len());
        for (json, seq, first, is_member) in rows {
            let Some(json) = json.filter(|_| is_member) else {
                continue;
            };
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

    /// The accounts of `ids` that exist, in order: one MGET on a single server; on a cluster
    /// (each account in its own slot) the GETs go out at once.
    pub(super) async fn load_users(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
        let records: Vec<Option<Vec<u8>>> = if ids.is_empty() {
            Vec::new()
        } else if self.schema.is_cluster() {
            let reads = ids.iter().map(|id| async move {
                self.conn
                    .clone()
                    .get::<_, Option<Vec<u8>>>(self.schema.user(id))
                    .await
                    .map_err(store_error)
            });
            futures::future::try_join_all(reads).await?
        } else {
            let keys: Vec<String> = ids.iter().map(|id| self.schema.user(id)).collect();
            redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?
        };
        records
            .into_iter()
            .flatten()
            .map(|json| serde_json::from_slice(&json).map_err(internal))
            .collect()
    }

    /// One pipeline reading each room of `ids`: its record, last seq, first log entry and
    /// (given `member`) whether `member` belongs to it.
    async fn query_rooms(
        &self,
        ids: &[RoomId],
        member: Option<&UserId>,
    ) -> StoreResult<Vec<RoomRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.get(self.schema.room(id))
                .get(self.schema.room_seq(id))
                .xrange_count(self.schema.room_log(id), "-", "+", 1);
            if let Some(member) = member {
                pipe.sismember(self.schema.room_members(id), member);
            }
        }
        let mut conn = self.conn.clone();
        if member.is_some() {
            pipe.query_async(&mut conn).await.map_err(store_error)
        } else {
            type Unasked = (Option<Vec<u8>>, Option<u64>, Vec<LogEntry>);
            let rows: Vec<Unasked> = pipe.query_async(&mut conn).await.map_err(store_error)?;
            Ok(rows
                .into_iter()
                .map(|(json, seq, first)| (json, seq, first, true))
                .collect())
        }
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

/// A room's reads in [`RedisStore::query_rooms`]: record, last seq, first log entry, and
/// whether the asked-about user is a member.
type RoomRow = (Option<Vec<u8>>, Option<u64>, Vec<LogEntry>, bool);

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
