//! The single-slot steps the directory's changes are made of (see the parent module for
//! the order that keeps an interrupted change invisible).

use redis::AsyncCommands;

use super::super::{
    RedisStore,
    scripts::{CREATE_ROOM, DELETE_IF_EQUAL, DELETE_ROOM},
    store_error, to_json,
};
use crate::{
    ids::{RoomId, UserId},
    records::RoomRecord,
    seams::StoreResult,
};

impl RedisStore {
    pub(super) async fn index_room(&self, user_id: &UserId, room_id: &RoomId) -> StoreResult<()> {
        let _: i64 = self
            .conn
            .clone()
            .sadd(self.schema.user_rooms(user_id), room_id)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Only for rooms that do not exist (never will again) or were never finished.
    pub(super) async fn unindex_room(&self, user_id: &UserId, room_id: &RoomId) -> StoreResult<()> {
        let _: i64 = self
            .conn
            .clone()
            .srem(self.schema.user_rooms(user_id), room_id)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    pub(super) async fn create_room_keys(
        &self,
        room: &RoomRecord,
        members: &[&UserId],
    ) -> StoreResult<()> {
        let mut script = CREATE_ROOM.key(self.schema.room(&room.id));
        script
            .key(self.schema.room_seq(&room.id))
            .key(self.schema.room_members(&room.id))
            .arg(to_json(room)?);
        for member in members {
            script.arg(*member);
        }
        let _: i64 = script
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Deletes a room's own keys; returns its members.
    pub(super) async fn delete_room_keys(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>> {
        DELETE_ROOM
            .key(self.schema.room(room_id))
            .key(self.schema.room_members(room_id))
            .key(self.schema.room_seq(room_id))
            .key(self.schema.room_log(room_id))
            .key(self.schema.room_client_ids(room_id))
            .key(self.schema.room_client_id_order(room_id))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)
    }

    /// Deletes a pointer if it still points at `room_id`.
    pub(super) async fn release_pointer(&self, key: &str, room_id: &RoomId) -> StoreResult<()> {
        let _: i64 = DELETE_IF_EQUAL
            .key(key)
            .arg(room_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
