//! The embedded Directory: accounts, rooms and memberships in the redb tables of
//! [`EmbeddedStore`], each call one transaction.

use anyhow::Context;
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::{
    store::{EmbeddedStore, indexed_id, members_in_range, require_room, room_from},
    tables::{
        CLIENT_IDS, CODES, DIRECTS, MESSAGES, ROOM_SEQ, ROOM_USERS, ROOMS, USER_ROOMS, USERNAMES,
        USERS, decode, encode,
    },
};
use crate::{
    ids::{RoomId, UserId},
    records::{AccountChange, RoomKind, RoomRecord, UserRecord},
    seams::{Directory, StoreError, StoreResult},
};

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
        self.point_read(|s| {
            let txn = s.db.begin_read()?;
            let Some(id) = indexed_id(&txn, USERNAMES, username)? else {
                return Ok(None);
            };
            let users = txn.open_table(USERS)?;
            users
                .get(id.as_str())?
                .map(|b| decode(b.value()))
                .transpose()
        })
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        self.point_read(|s| {
            let txn = s.db.begin_read()?;
            let users = txn.open_table(USERS)?;
            users
                .get(id.as_str())?
                .map(|b| decode(b.value()))
                .transpose()
        })
    }

    /// Many keys: on the blocking pool, like range scans (see `point_read`).
    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
        let ids = ids.to_vec();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let users = txn.open_table(USERS)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(user) = users.get(id.as_str())? {
                    found.push(decode(user.value())?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn change_account(
        &self,
        id: &UserId,
        change: &AccountChange,
    ) -> StoreResult<Option<UserRecord>> {
        let id = id.to_owned();
        let change = change.clone();
        self.blocking(move |s| {
            let txn = s.db.begin_write()?;
            let updated = {
                let mut users = txn.open_table(USERS)?;
                let Some(mut user) = users
                    .get(id.as_str())?
                    .map(|b| decode::<UserRecord>(b.value()))
                    .transpose()?
                else {
                    return Ok(None);
                };
                user.apply(&change, crate::auth::now_ms());
                users.insert(id.as_str(), encode(&user)?.as_slice())?;
                user
            };
            txn.commit()?;
            Ok(Some(updated))
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
        self.point_read(|s| s.read_room(&s.db.begin_read()?, id.as_str()))
    }

    async fn change_code(&self, room_id: &RoomId, new_code: &str) -> StoreResult<Option<bool>> {
        let (room_id, new_code) = (room_id.to_owned(), new_code.to_owned());
        self.blocking(move |s| {
            let txn = s.db.begin_write()?;
            {
                let mut rooms = txn.open_table(ROOMS)?;
                let Some(mut room) = rooms
                    .get(room_id.as_str())?
                    .map(|b| decode::<RoomRecord>(b.value()))
                    .transpose()?
                else {
                    return Ok(None);
                };
                let RoomKind::Group { code, .. } = &mut room.kind else {
                    return Ok(None);
                };
                let mut codes = txn.open_table(CODES)?;
                if codes.get(new_code.as_str())?.is_some() {
                    return Ok(Some(false));
                }
                codes.remove(code.as_str())?;
                codes.insert(new_code.as_str(), room_id.as_str())?;
                *code = new_code;
                rooms.insert(room_id.as_str(), encode(&room)?.as_slice())?;
            }
            txn.commit()?;
            Ok(Some(true))
        })
        .await
    }

    async fn room_by_code(&self, code: &str) -> StoreResult<Option<RoomRecord>> {
        self.point_read(|s| {
            let txn = s.db.begin_read()?;
            let Some(id) = indexed_id(&txn, CODES, code)? else {
                return Ok(None);
            };
            s.read_room(&txn, &id)
        })
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
        self.point_read(|s| {
            let txn = s.db.begin_read()?;
            Ok(txn
                .open_table(ROOM_USERS)?
                .get((room_id.as_str(), user_id.as_str()))?
                .is_some())
        })
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
