//! The embedded store: one redb file in the data directory holds the directory and every
//! room's log, so an append checks membership in the same transaction that writes it.
//!
//! redb gives ACID transactions with one writer at a time and fsync on commit, so a message
//! acknowledged to its sender survives a crash. Records are JSON (small, readable with any
//! redb tool); keys are tuples so each room's log, members and idempotency keys are
//! contiguous ranges.

use crate::ids::{RoomId, UserId};
use std::{path::Path, sync::Arc};

use anyhow::Context;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use natter_proto::v1::Event;
use tokio::sync::broadcast;

use super::{appender::Appender, fanout::LocalFanout};
use crate::{
    records::{MessageRecord, RoomRecord, UserRecord},
    seams::{
        Appended, BusError, Directory, Log, NewMessage, SharedEvent, StoreError, StoreResult, Topic,
    },
};

const USERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<'_, &str, &str> = TableDefinition::new("usernames");
const ROOMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rooms");
pub(super) const ROOM_SEQ: TableDefinition<'_, &str, u64> = TableDefinition::new("room_seq");
const CODES: TableDefinition<'_, &str, &str> = TableDefinition::new("codes");
const DIRECTS: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("directs");
const USER_ROOMS: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("user_rooms");
pub(super) const ROOM_USERS: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("room_users");
pub(super) const MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> =
    TableDefinition::new("messages");
pub(super) const CLIENT_IDS: TableDefinition<'_, (&str, &str, &str), u64> =
    TableDefinition::new("client_ids");

/// The embedded directory and log. Appends publish on its own in-process fan-out.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    inner: Arc<Inner>,
}

struct Inner {
    /// The group-committing writer of messages (see `appender`).
    appender: Appender,
    /// Followers of topics on this process.
    fanout: LocalFanout,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

/// A room with its current `last_seq`, read through any transaction's tables.
fn room_from<R, S>(rooms: &R, seqs: &S, id: &str) -> anyhow::Result<Option<RoomRecord>>
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
fn indexed_id(
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
fn require_room<T: ReadableTable<&'static str, &'static [u8]>>(
    rooms: &T,
    id: &str,
) -> anyhow::Result<()> {
    match rooms.get(id)? {
        Some(_) => Ok(()),
        None => Err(Gone.into()),
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(value).context("encoding a record")
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).context("decoding a stored record")
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

    /// Runs blocking database work off the async runtime.
    async fn blocking<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&EmbeddedStore) -> anyhow::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| StoreError::Internal(e.into()))?
            .map_err(|e| match e.downcast::<Gone>() {
                Ok(Gone) => StoreError::RoomNotFound,
                Err(e) => StoreError::Internal(e),
            })
    }

    fn read_room(
        &self,
        txn: &redb::ReadTransaction,
        id: &str,
    ) -> anyhow::Result<Option<RoomRecord>> {
        room_from(&txn.open_table(ROOMS)?, &txn.open_table(ROOM_SEQ)?, id)
    }

    fn insert_room(
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

#[async_trait]
impl Directory for EmbeddedStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<UserRecord> {
        let created = self
            .blocking(move |s| {
                let txn = s.db.begin_write()?;
                {
                    let mut names = txn.open_table(USERNAMES)?;
                    if names.get(user.username.as_str())?.is_some() {
                        return Ok(None);
                    }
                    names.insert(user.username.as_str(), user.id.as_str())?;
                    txn.open_table(USERS)?
                        .insert(user.id.as_str(), encode(&user)?.as_slice())?;
                }
                txn.commit()?;
                Ok(Some(user))
            })
            .await?;
        created.ok_or(StoreError::UsernameTaken)
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let Some(id) = indexed_id(&txn, USERNAMES, &username)? else {
                return Ok(None);
            };
            let users = txn.open_table(USERS)?;
            users
                .get(id.as_str())?
                .map(|b| decode(b.value()))
                .transpose()
        })
        .await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        let id = id.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let users = txn.open_table(USERS)?;
            users
                .get(id.as_str())?
                .map(|b| decode(b.value()))
                .transpose()
        })
        .await
    }

    async fn users_after(
        &self,
        after_username: &str,
        count: usize,
    ) -> StoreResult<Vec<UserRecord>> {
        let after = after_username.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let names = txn.open_table(USERNAMES)?;
            let users = txn.open_table(USERS)?;
            let mut out = Vec::with_capacity(count);
            for entry in names.range(after.as_str()..)? {
                let (name, id) = entry?;
                if name.value() == after {
                    continue;
                }
                if out.len() == count {
                    break;
                }
                if let Some(bytes) = users.get(id.value())? {
                    out.push(decode(bytes.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_room(&self, room: RoomRecord) -> StoreResult<bool> {
        self.blocking(move |s| {
            let code = room
                .kind
                .code()
                .context("a group room needs a code")?
                .to_owned();
            let txn = s.db.begin_write()?;
            {
                let mut codes = txn.open_table(CODES)?;
                if codes.get(code.as_str())?.is_some() {
                    return Ok(false);
                }
                codes.insert(code.as_str(), room.id.as_str())?;
            }
            Self::insert_room(&txn, &room, &[room.owner_id.as_str()])?;
            txn.commit()?;
            Ok(true)
        })
        .await
    }

    async fn room(&self, id: &RoomId) -> StoreResult<Option<RoomRecord>> {
        let id = id.to_owned();
        self.blocking(move |s| s.read_room(&s.db.begin_read()?, id.as_str()))
            .await
    }

    async fn room_by_code(&self, code: &str) -> StoreResult<Option<RoomRecord>> {
        let code = code.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let Some(id) = indexed_id(&txn, CODES, &code)? else {
                return Ok(None);
            };
            s.read_room(&txn, &id)
        })
        .await
    }

    async fn open_direct(&self, candidate: RoomRecord) -> StoreResult<(RoomRecord, bool)> {
        self.blocking(move |s| {
            let [a, b] = candidate
                .kind
                .pair()
                .cloned()
                .context("a direct room needs its pair")?;
            let txn = s.db.begin_write()?;
            let existing = txn
                .open_table(DIRECTS)?
                .get((a.as_str(), b.as_str()))?
                .map(|g| g.value().to_owned());
            if let Some(id) = existing {
                let room = room_from(&txn.open_table(ROOMS)?, &txn.open_table(ROOM_SEQ)?, &id)?
                    .context("direct room index points nowhere")?;
                return Ok((room, false));
            }
            txn.open_table(DIRECTS)?
                .insert((a.as_str(), b.as_str()), candidate.id.as_str())?;
            Self::insert_room(&txn, &candidate, &[a.as_str(), b.as_str()])?;
            txn.commit()?;
            Ok((candidate, true))
        })
        .await
    }

    async fn delete_room(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>> {
        let room_id = room_id.to_owned();
        self.blocking(move |s| {
            let id = room_id.as_str();
            let txn = s.db.begin_write()?;
            let members = {
                let mut rooms = txn.open_table(ROOMS)?;
                let Some(bytes) = rooms.remove(id)? else {
                    return Ok(Vec::new());
                };
                let room: RoomRecord = decode(bytes.value())?;
                drop(bytes);
                drop(rooms);
                if let Some(code) = room.kind.code() {
                    txn.open_table(CODES)?.remove(code)?;
                }
                if let Some([a, b]) = room.kind.pair() {
                    txn.open_table(DIRECTS)?.remove((a.as_str(), b.as_str()))?;
                }
                txn.open_table(ROOM_SEQ)?.remove(id)?;

                let mut room_users = txn.open_table(ROOM_USERS)?;
                let mut user_rooms = txn.open_table(USER_ROOMS)?;
                let members = members_in_range(&room_users, id)?;
                for member in &members {
                    room_users.remove((id, member.as_str()))?;
                    user_rooms.remove((member.as_str(), id))?;
                }

                let mut messages = txn.open_table(MESSAGES)?;
                let seqs: Vec<u64> = messages
                    .range((id, 0)..=(id, u64::MAX))?
                    .map(|e| e.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for seq in seqs {
                    messages.remove((id, seq))?;
                }

                let mut client_ids = txn.open_table(CLIENT_IDS)?;
                let mut keys = Vec::new();
                for entry in client_ids.range((id, "", "")..)? {
                    let (key, _) = entry?;
                    let (room, sender, client_id) = key.value();
                    if room != id {
                        break;
                    }
                    keys.push((sender.to_owned(), client_id.to_owned()));
                }
                for (sender, client_id) in &keys {
                    client_ids.remove((id, sender.as_str(), client_id.as_str()))?;
                }
                members
            };
            txn.commit()?;
            Ok(members.into_iter().map(UserId::from_trusted).collect())
        })
        .await
    }

    async fn add_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
        self.blocking(move |s| {
            let txn = s.db.begin_write()?;
            require_room(&txn.open_table(ROOMS)?, room_id.as_str())?;
            let added = txn
                .open_table(ROOM_USERS)?
                .insert((room_id.as_str(), user_id.as_str()), ())?
                .is_none();
            txn.open_table(USER_ROOMS)?
                .insert((user_id.as_str(), room_id.as_str()), ())?;
            txn.commit()?;
            Ok(added)
        })
        .await
    }

    async fn remove_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
        self.blocking(move |s| {
            let txn = s.db.begin_write()?;
            let removed = txn
                .open_table(ROOM_USERS)?
                .remove((room_id.as_str(), user_id.as_str()))?
                .is_some();
            txn.open_table(USER_ROOMS)?
                .remove((user_id.as_str(), room_id.as_str()))?;
            txn.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn is_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            Ok(txn
                .open_table(ROOM_USERS)?
                .get((room_id.as_str(), user_id.as_str()))?
                .is_some())
        })
        .await
    }

    async fn rooms_of(&self, user_id: &UserId) -> StoreResult<Vec<RoomRecord>> {
        let user_id = user_id.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let ids = members_in_range(&txn.open_table(USER_ROOMS)?, user_id.as_str())?;
            let mut rooms = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(room) = s.read_room(&txn, &id)? {
                    rooms.push(room);
                }
            }
            Ok(rooms)
        })
        .await
    }

    async fn members_of(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>> {
        let room_id = room_id.to_owned();
        self.blocking(move |s| {
            let members = members_in_range(
                &s.db.begin_read()?.open_table(ROOM_USERS)?,
                room_id.as_str(),
            )?;
            Ok(members.into_iter().map(UserId::from_trusted).collect())
        })
        .await
    }

    async fn ready(&self) -> bool {
        self.blocking(|s| Ok(s.db.begin_read().is_ok()))
            .await
            .unwrap_or(false)
    }
}

#[async_trait]
impl Log for EmbeddedStore {
    async fn append(&self, new: NewMessage) -> StoreResult<Appended> {
        self.inner.appender.append(new).await
    }

    async fn messages_after(
        &self,
        room_id: &RoomId,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let room_id = room_id.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let start = after_seq.saturating_add(1);
            messages
                .range((room_id.as_str(), start)..=(room_id.as_str(), u64::MAX))?
                .take(limit)
                .map(|e| decode(e?.1.value()))
                .collect()
        })
        .await
    }

    async fn messages_before(
        &self,
        room_id: &RoomId,
        before_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let room_id = room_id.to_owned();
        let end = if before_seq == 0 {
            u64::MAX
        } else {
            before_seq
        };
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let mut newest_first: Vec<MessageRecord> = messages
                .range((room_id.as_str(), 0)..(room_id.as_str(), end))?
                .rev()
                .take(limit)
                .map(|e| decode(e?.1.value()))
                .collect::<anyhow::Result<_>>()?;
            newest_first.reverse();
            Ok(newest_first)
        })
        .await
    }

    async fn follow(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        Ok(self.inner.fanout.receiver(topic))
    }

    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError> {
        self.inner.fanout.publish_now(topic, event);
        Ok(())
    }

    async fn ready(&self) -> bool {
        Directory::ready(self).await
    }

    fn reconnects(&self) -> u64 {
        0
    }
}

/// Second components of the `(owner, *)` keys of a membership table.
fn members_in_range<T>(table: &T, owner: &str) -> anyhow::Result<Vec<String>>
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
