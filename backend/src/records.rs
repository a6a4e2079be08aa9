//! What the store keeps: accounts, rooms and messages as records. Shared by the stores that
//! keep them, the service that reads them and `convert`, which turns them into wire types.

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    /// Opaque id (UUIDv7).
    pub id: String,
    /// Lower-case, unique.
    pub username: String,
    /// Shown to other users.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Whether a room is a shared group or a conversation between two users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RoomKind {
    /// Joined by code.
    Group,
    /// Exactly two members, found by the pair.
    Direct,
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomRecord {
    /// Opaque id (UUIDv7).
    pub id: String,
    /// Display name (for direct rooms: the two usernames).
    pub name: String,
    /// Join code; `None` for direct rooms, which nobody joins by code.
    pub code: Option<String>,
    /// Creator; may delete the room.
    pub owner_id: String,
    /// argon2id PHC string of the join password, if any.
    pub password_hash: Option<String>,
    /// Group or direct.
    pub kind: RoomKind,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Seq of the newest message, 0 when empty.
    pub last_seq: u64,
    /// Oldest seq still in the log (1 unless trimmed by retention).
    pub first_seq: u64,
    /// For direct rooms: both participants' ids, sorted.
    pub direct_pair: Option<[String; 2]>,
}

/// A message in a room's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    /// Opaque id (UUIDv7).
    pub id: String,
    /// The room whose log holds it.
    pub room_id: String,
    /// Per-room sequence number, 1-based, without holes.
    pub seq: u64,
    /// Author's user id.
    pub sender_id: String,
    /// Author's display name at the time of sending.
    pub sender_name: String,
    /// Validated text.
    pub text: String,
    /// Unix milliseconds.
    pub sent_at: i64,
    /// Sender's idempotency key (may be empty).
    pub client_id: String,
}
