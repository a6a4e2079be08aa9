//! The embedded store: one redb file in the data directory holds the directory and every
//! room's log, so an append checks membership in the same transaction that writes it.
//!
//! redb gives ACID transactions with one writer at a time and fsync on commit, so a message
//! acknowledged to its sender survives a crash. Records are JSON (small, readable with any
//! redb tool); keys are tuples so each room's log, members and idempotency keys are
//! contiguous ranges.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use redb::{Database, ReadableTable, TableDefinition};

use super::{
    appender::Appender,
    fanout::LocalFanout,
    tables::{
        CLIENT_IDS, CODES, DIRECTS, MESSAGES, ROOM_SEQ, ROOM_USERS, ROOMS, USER_ROOMS, USERNAMES,
        USERS, decode, encode,
    },
};
use crate::{
    records::RoomRecord,
    seams::{StoreError, StoreResult},
};

/// The embedded directory and log. Appends publish on its own in-process fan-out.
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) db: Arc<Database>,
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// The group-committing writer of messages (see `appender`).
    pub(super) appender: Appender,
    /// Followers of topics on this process.
    pub(super) fanout: LocalFanout,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

/// A room with its current `last_seq`, read through any transaction's tables.
pub(super) fn room_from<R, S>(rooms: &R, seqs: &S, id: &str) -> anyhow::Result<Option<RoomRecord>>
where
    R: ReadableTable<&'static str, &'static [u8]>,
    S: ReadableTable<&'static str, u64>,
{
    let Some(bytes) = rooms.get(id)? else {
        return Ok(None);
    };
    let mut room: RoomRecord = decode(bytes.value())?;
    room.last_seq = seqs.get(id)?.map_or(0, |s| s.value());
    Ok(Some(room))
}

/// The id an index table (usernames, join codes) maps `key` to, if any.
pub(super) fn indexed_id(
    txn: &redb::ReadTransaction,
    index: TableDefinition<'_, &str, &str>,
    key: &str,
) -> anyhow::Result<Option<String>> {
    Ok(txn
        .open_table(index)?
        .get(key)?
        .map(|g| g.value().to_owned()))
}

/// Raised inside a transaction when the room it works on does not exist.
#[derive(Debug, thiserror::Error)]
#[error("room not found")]
struct Gone;

/// Fails with [`Gone`] unless the room exists (read through the given transaction's view).
pub(super) fn require_room<T: ReadableTable<&'static str, &'static [u8]>>(
    rooms: &T,
    id: &str,
) -> anyhow::Result<()> {
    match rooms.get(id)? {
        Some(_) => Ok(()),
        None => Err(Gone.into()),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `natter.redb` in `data_dir` and its tables.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("natter.redb");
        let db = Database::create(&path)
            .with_context(|| format!("opening the database at {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(USERS)?;
        txn.open_table(USERNAMES)?;
        txn.open_table(ROOMS)?;
        txn.open_table(ROOM_SEQ)?;
        txn.open_table(CODES)?;
        txn.open_table(DIRECTS)?;
        txn.open_table(USER_ROOMS)?;
        txn.open_table(ROOM_USERS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(CLIENT_IDS)?;
        txn.commit()?;
        let db = Arc::new(db);
        let fanout = LocalFanout::default();
        let appender = Appender::start(db.clone(), fanout.clone())?;
        Ok(Self {
            db,
            inner: Arc::new(Inner { appender, fanout }),
        })
    }

    /// Runs blocking database work off the async runtime: writes, and reads that scan a
    /// range (their length is the caller's data, not ours).
    pub(super) async fn blocking<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&EmbeddedStore) -> anyhow::Result<T> + Send + 'static,
    {
        let store = self.clone();
        let done = tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| StoreError::Internal(e.into()))?;
        store_result(done)
    }

    /// Runs a read of one key in place, on the caller's thread.
    ///
    /// Such a read is a few B-tree pages, normally in redb's cache or the OS's, and takes
    /// microseconds. Sending it to the blocking pool cost more than the read: a thread
    /// woken and two context switches each way, three times per `SendMessage` (account,
    /// room, membership), which was about a third of the call's CPU (BENCHMARKS.md). The
    /// rare read that misses both caches blocks this worker for one disk read, the price
    /// of not paying the hop on every call.
    pub(super) fn point_read<T>(
        &self,
        read: impl FnOnce(&EmbeddedStore) -> anyhow::Result<T>,
    ) -> StoreResult<T> {
        store_result(read(self))
    }

    pub(super) fn read_room(
        &self,
        txn: &redb::ReadTransaction,
        id: &str,
    ) -> anyhow::Result<Option<RoomRecord>> {
        room_from(&txn.open_table(ROOMS)?, &txn.open_table(ROOM_SEQ)?, id)
    }

    pub(super) fn insert_room(
        txn: &redb::WriteTransaction,
        room: &RoomRecord,
        members: &[&str],
    ) -> anyhow::Result<()> {
        txn.open_table(ROOMS)?
            .insert(room.id.as_str(), encode(room)?.as_slice())?;
        txn.open_table(ROOM_SEQ)?.insert(room.id.as_str(), 0)?;
        let mut user_rooms = txn.open_table(USER_ROOMS)?;
        let mut room_users = txn.open_table(ROOM_USERS)?;
        for member in members {
            user_rooms.insert((*member, room.id.as_str()), ())?;
            room_users.insert((room.id.as_str(), *member), ())?;
        }
        Ok(())
    }
}

/// A store call's outcome: a room deleted under it is `RoomNotFound`, anything else internal.
fn store_result<T>(done: anyhow::Result<T>) -> StoreResult<T> {
    done.map_err(|e| match e.downcast::<Gone>() {
        Ok(Gone) => StoreError::RoomNotFound,
        Err(e) => StoreError::Internal(e),
    })
}

/// Second components of the `(owner, *)` keys of a membership table.
pub(super) fn members_in_range<T>(table: &T, owner: &str) -> anyhow::Result<Vec<String>>
where
    T: ReadableTable<(&'static str, &'static str), ()>,
{
    let mut out = Vec::new();
    for entry in table.range((owner, "")..)? {
        let (key, _) = entry?;
        let (first, second) = key.value();
        if first != owner {
            break;
        }
        out.push(second.to_owned());
    }
    Ok(out)
}
