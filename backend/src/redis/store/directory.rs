//! The Redis Directory: accounts, rooms and memberships as JSON strings and sets; changes
//! that touch several keys run as Lua scripts, atomically.

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{
    RedisStore, internal,
    scripts::{
        ADD_MEMBER, CHANGE_CODE, CREATE_ROOM, CREATE_USER, DELETE_ROOM, OPEN_DIRECT, REPLACE_USER,
    },
    store_error, to_json,
};
use crate::{
    ids::{RoomId, UserId},
    records::{AccountChange, RoomKind, RoomRecord, UserRecord},
    seams::{Directory, StoreError, StoreResult},
};

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

    /// A compare-and-set loop: read, change, write only if nobody wrote meanwhile (a
    /// sign-out racing an admin's change loses neither).
    async fn change_account(
        &self,
        id: &UserId,
        change: &AccountChange,
    ) -> StoreResult<Option<UserRecord>> {
        const ATTEMPTS: usize = 16;
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
            let replaced: i64 = REPLACE_USER
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

    async fn change_code(&self, room_id: &RoomId, new_code: &str) -> StoreResult<Option<bool>> {
        const ATTEMPTS: usize = 16;
        for _ in 0..ATTEMPTS {
            let read: Option<Vec<u8>> = self
                .conn
                .clone()
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
            let changed: i64 = CHANGE_CODE
                .key(self.schema.room(room_id))
                .key(self.schema.code(&old_code))
                .key(self.schema.code(new_code))
                .arg(read)
                .arg(to_json(&room)?)
                .arg(room_id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?;
            match changed {
                1 => return Ok(Some(true)),
                0 => return Ok(Some(false)),
                _ => {}
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
