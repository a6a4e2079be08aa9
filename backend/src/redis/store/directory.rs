//! The Redis Directory: accounts, rooms and memberships as JSON strings and sets.
//!
//! Every command stays within one hash slot (a Redis Cluster refuses the rest), so a change
//! that spans a user's keys, a room's keys and a join code or direct pair is a sequence of
//! single-slot steps. They are ordered so that an interruption (an instance killed between
//! two steps, a shard failing over) leaves nothing a reader can see:
//! - a user's room index is written before the room's member set and never trusted alone:
//!   readers keep the rooms whose member set holds the user;
//! - a pointer (username, join code, direct pair) is claimed before its target exists and
//!   verified on reading (a code must be the room's code, a pair's room must exist); an
//!   abandoned claim only keeps that code or name from being used again;
//! - a room is deleted before its pointers and index entries.

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{
    RedisStore, internal,
    scripts::{ADD_MEMBER, CLAIM_USERNAME, REPLACE_IF_UNCHANGED},
    store_error, to_json,
};
use crate::{
    ids::{RoomId, UserId},
    records::{AccountChange, RoomKind, RoomRecord, UserRecord},
    seams::{Directory, StoreError, StoreResult},
};

mod steps;

/// Rounds of a compare-and-set loop before giving up with UNAVAILABLE.
const ATTEMPTS: usize = 16;

#[async_trait]
impl Directory for RedisStore {
    /// The record first (unreachable until its name points at it), then the name.
    async fn create_user(&self, user: UserRecord) -> StoreResult<UserRecord> {
        let mut conn = self.conn.clone();
        let created: bool = conn
            .set_nx(self.schema.user(&user.id), to_json(&user)?)
            .await
            .map_err(store_error)?;
        if !created {
            // Ids are random: only a retry of this very call gets here.
            return match self.user_by_username(&user.username).await? {
                Some(_) => Err(StoreError::UsernameTaken),
                None => Err(internal(anyhow::anyhow!("account id {} in use", user.id))),
            };
        }
        let claimed: i64 = CLAIM_USERNAME
            .key(self.schema.username(&user.username))
            .key(self.schema.usernames())
            .arg(&user.id)
            .arg(&user.username)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        if claimed == 1 {
            return Ok(user);
        }
        let _: i64 = conn
            .del(self.schema.user(&user.id))
            .await
            .map_err(store_error)?;
        Err(StoreError::UsernameTaken)
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

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>> {
        self.load_users(ids).await
    }

    /// A compare-and-set loop: read, change, write only if nobody wrote meanwhile (a
    /// sign-out racing an admin's change loses neither).
    async fn change_account(
        &self,
        id: &UserId,
        change: &AccountChange,
    ) -> StoreResult<Option<UserRecord>> {
        for _ in 0..ATTEMPTS {
            let read: Option<Vec<u8>> = self
                .conn
                .clone()
                .get(self.schema.user(id))
                .await
                .map_err(store_error)?;
            let Some(read) = read else {
                return Ok(None);
            };
            let mut user: UserRecord = serde_json::from_slice(&read).map_err(internal)?;
            user.apply(change, crate::auth::now_ms());
            let replaced: i64 = REPLACE_IF_UNCHANGED
                .key(self.schema.user(id))
                .arg(read)
                .arg(to_json(&user)?)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?;
            if replaced == 1 {
                return Ok(Some(user));
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "account {id} changed concurrently {ATTEMPTS} times in a row"
        )))
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

    /// Index, code, then the room: a room exists only once its code points at it.
    async fn create_room(&self, room: RoomRecord) -> StoreResult<bool> {
        let code = room
            .kind
            .code()
            .map(str::to_owned)
            .ok_or_else(|| internal(anyhow::anyhow!("a group room needs a code")))?;
        self.index_room(&room.owner_id, &room.id).await?;
        let claimed: bool = self
            .conn
            .clone()
            .set_nx(self.schema.code(&code), &room.id)
            .await
            .map_err(store_error)?;
        if !claimed {
            self.unindex_room(&room.owner_id, &room.id).await?;
            return Ok(false);
        }
        self.create_room_keys(&room, &[&room.owner_id]).await?;
        Ok(true)
    }

    async fn room(&self, id: &RoomId) -> StoreResult<Option<RoomRecord>> {
        Ok(self.load_rooms(std::slice::from_ref(id), None).await?.pop())
    }

    /// Claim the new code, swap the record if nobody changed it meanwhile, then let the old
    /// code go. Until then both codes point at the room; readers believe only the code in
    /// its record.
    async fn change_code(&self, room_id: &RoomId, new_code: &str) -> StoreResult<Option<bool>> {
        let mut conn = self.conn.clone();
        for _ in 0..ATTEMPTS {
            let read: Option<Vec<u8>> = conn
                .get(self.schema.room(room_id))
                .await
                .map_err(store_error)?;
            let Some(read) = read else {
                return Ok(None);
            };
            let mut room: RoomRecord = serde_json::from_slice(&read).map_err(internal)?;
            let RoomKind::Group { code, .. } = &mut room.kind else {
                return Ok(None);
            };
            let old_code = std::mem::replace(code, new_code.to_owned());
            let claimed: bool = conn
                .set_nx(self.schema.code(new_code), room_id)
                .await
                .map_err(store_error)?;
            if !claimed {
                return Ok(Some(false));
            }
            let replaced: i64 = REPLACE_IF_UNCHANGED
                .key(self.schema.room(room_id))
                .arg(read)
                .arg(to_json(&room)?)
                .invoke_async(&mut conn)
                .await
                .map_err(store_error)?;
            let released = if replaced == 1 {
                old_code
            } else {
                new_code.to_owned()
            };
            self.release_pointer(&self.schema.code(&released), room_id)
                .await?;
            if replaced == 1 {
                return Ok(Some(true));
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "room {room_id} changed concurrently {ATTEMPTS} times in a row"
        )))
    }

    async fn room_by_code(&self, code: &str) -> StoreResult<Option<RoomRecord>> {
        let id: Option<RoomId> = self
            .conn
            .clone()
            .get(self.schema.code(code))
            .await
            .map_err(store_error)?;
        let Some(id) = id else { return Ok(None) };
        Ok(self
            .room(&id)
            .await?
            .filter(|room| room.kind.code() == Some(code)))
    }

    /// Index both users, claim the pair, then create the room. A pair that points at a room
    /// that does not exist (its creator stopped half-way, or it was deleted) is taken over;
    /// a creator that finds its claim taken over after creating its room removes the room.
    async fn open_direct(&self, candidate: RoomRecord) -> StoreResult<(RoomRecord, bool)> {
        let [a, b] = candidate
            .kind
            .pair()
            .cloned()
            .ok_or_else(|| internal(anyhow::anyhow!("a direct room needs its pair")))?;
        let pair_key = self.schema.direct(&a, &b);
        let mut conn = self.conn.clone();
        for _ in 0..ATTEMPTS {
            let existing: Option<RoomId> = conn.get(&pair_key).await.map_err(store_error)?;
            if let Some(id) = &existing
                && let Some(room) = self.room(id).await?
            {
                return Ok((room, false));
            }
            for user in [&a, &b] {
                self.index_room(user, &candidate.id).await?;
            }
            let claimed: i64 = match &existing {
                None => i64::from(
                    conn.set_nx::<_, _, bool>(&pair_key, &candidate.id)
                        .await
                        .map_err(store_error)?,
                ),
                Some(stale) => REPLACE_IF_UNCHANGED
                    .key(&pair_key)
                    .arg(stale)
                    .arg(&candidate.id)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(store_error)?,
            };
            if claimed == 1 {
                self.create_room_keys(&candidate, &[&a, &b]).await?;
                let holder: Option<RoomId> = conn.get(&pair_key).await.map_err(store_error)?;
                if holder.as_ref() == Some(&candidate.id) {
                    return Ok((candidate, true));
                }
                self.delete_room_keys(&candidate.id).await?;
            }
            for user in [&a, &b] {
                self.unindex_room(user, &candidate.id).await?;
            }
        }
        Err(StoreError::Unavailable(anyhow::anyhow!(
            "the direct room of {a} and {b} changed concurrently {ATTEMPTS} times in a row"
        )))
    }

    /// The room's keys first (appends stop there), then its pointer and index entries.
    async fn delete_room(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>> {
        let Some(room) = self.room(room_id).await? else {
            return Ok(Vec::new());
        };
        let members = self.delete_room_keys(room_id).await?;
        if let Some(code) = room.kind.code() {
            self.release_pointer(&self.schema.code(code), room_id)
                .await?;
        }
        if let Some([a, b]) = room.kind.pair() {
            self.release_pointer(&self.schema.direct(a, b), room_id)
                .await?;
        }
        for member in &members {
            self.unindex_room(member, room_id).await?;
        }
        Ok(members)
    }

    async fn add_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        self.index_room(user_id, room_id).await?;
        let added: i64 = ADD_MEMBER
            .key(self.schema.room(room_id))
            .key(self.schema.room_members(room_id))
            .arg(user_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        match added {
            -1 => {
                self.unindex_room(user_id, room_id).await?;
                Err(StoreError::RoomNotFound)
            }
            n => Ok(n == 1),
        }
    }

    /// Only the member set: the index entry stays (readers check the set), because taking
    /// it out could race a join that added it back.
    async fn remove_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool> {
        let removed: i64 = self
            .conn
            .clone()
            .srem(self.schema.room_members(room_id), user_id)
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
        self.load_rooms(&ids, Some(user_id)).await
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
