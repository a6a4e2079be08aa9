//! The redb tables of the embedded store and how records are written into them: JSON
//! values (small, readable with any redb tool), tuple keys so that each room's log, members
//! and idempotency keys are contiguous ranges. Shared by the store, its two seams and the
//! appender.

use anyhow::Context;
use redb::TableDefinition;
use serde::{Serialize, de::DeserializeOwned};

pub(super) const USERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("users");
pub(super) const USERNAMES: TableDefinition<'_, &str, &str> = TableDefinition::new("usernames");
pub(super) const ROOMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rooms");
pub(super) const ROOM_SEQ: TableDefinition<'_, &str, u64> = TableDefinition::new("room_seq");
pub(super) const CODES: TableDefinition<'_, &str, &str> = TableDefinition::new("codes");
pub(super) const DIRECTS: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("directs");
pub(super) const USER_ROOMS: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("user_rooms");
pub(super) const ROOM_USERS: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("room_users");
pub(super) const MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> =
    TableDefinition::new("messages");
pub(super) const CLIENT_IDS: TableDefinition<'_, (&str, &str, &str), u64> =
    TableDefinition::new("client_ids");

/// A record as stored.
pub(super) fn encode<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(value).context("encoding a record")
}

/// A stored record.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).context("decoding a stored record")
}
