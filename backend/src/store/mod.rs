//! The Store seam: accounts, rooms, memberships and each room's message log.
//!
//! Two implementations exist: [`embedded::EmbeddedStore`] (redb, on disk, the default) and
//! the Redis store (module `redis`) for scale-out. Nothing else knows which one is in use.

pub mod embedded;

use async_trait::async_trait;

pub use crate::records::{MessageRecord, RoomKind, RoomRecord, UserRecord};

/// What a store operation can fail with. Only the first variants are expected outcomes;
/// `Unavailable` and `Internal` carry the cause for logs and never reach clients verbatim.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another account already has this (case-insensitive) username.
    #[error("username is taken")]
    UsernameTaken,
    /// The room does not exist (any more): it may have been deleted meanwhile.
    #[error("room not found")]
    RoomNotFound,
    /// The sender is not (or no longer) a member of the room.
    #[error("not a member of the room")]
    NotMember,
    /// The backing service cannot be reached right now; retrying later may work.
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: corruption, a bug, an unexpected reply.
    #[error("store failure")]
    Internal(#[source] anyhow::Error),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// One page of the user directory.
#[derive(Debug, Clone, Default)]
pub struct UserPage {
    /// Matching users, ordered by username.
    pub users: Vec<UserRecord>,
    /// Where the next page starts (the last username examined), if the scan stopped early.
    pub next_after: Option<String>,
}

/// Most usernames a directory query examines per page, so that a search matching nobody
/// costs a bounded amount of work; the client continues with the page token.
pub const DIRECTORY_SCAN_LIMIT: usize = 2000;

/// A message to append; the store assigns `seq` (and keeps `id` and `sent_at` as given).
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message as it will be stored, with `seq` ignored.
    pub message: MessageRecord,
}

/// Outcome of [`Store::append_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message (the original one, for a retried `client_id`).
    pub message: MessageRecord,
    /// False when `client_id` matched an earlier message and nothing was stored.
    pub created: bool,
}

/// Persistent state of the chat. Methods are small and each is atomic on its own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; `UsernameTaken` if the username exists.
    async fn create_user(&self, user: UserRecord) -> StoreResult<UserRecord>;
    /// Looks up an account by its normalised username.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Looks up an account by id.
    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>>;
    /// Users whose username or display name contains `query` (case-insensitive), ordered by
    /// username, starting after `after_username`: at most `limit` of them, examining at most
    /// [`DIRECTORY_SCAN_LIMIT`] usernames.
    async fn list_users(
        &self,
        query: &str,
        after_username: &str,
        limit: usize,
    ) -> StoreResult<UserPage>;

    /// Stores a new group room (its code must be unused; the store retries nothing) and
    /// makes the owner a member. Returns false if the code is taken.
    async fn create_room(&self, room: RoomRecord) -> StoreResult<bool>;
    /// Looks up a room by id.
    async fn room(&self, id: &str) -> StoreResult<Option<RoomRecord>>;
    /// Looks up a group room by its normalised join code.
    async fn room_by_code(&self, code: &str) -> StoreResult<Option<RoomRecord>>;
    /// Returns the direct room of this pair, creating `candidate` (with both as members)
    /// if there is none yet. The bool is true when it was created.
    async fn open_direct(&self, candidate: RoomRecord) -> StoreResult<(RoomRecord, bool)>;
    /// Deletes a room, its memberships and its log; returns the former members.
    async fn delete_room(&self, room_id: &str) -> StoreResult<Vec<String>>;

    /// Adds a member; false if already a member; `RoomNotFound` if the room is gone.
    async fn add_member(&self, room_id: &str, user_id: &str) -> StoreResult<bool>;
    /// Removes a member; false if not a member.
    async fn remove_member(&self, room_id: &str, user_id: &str) -> StoreResult<bool>;
    /// Whether the user is a member of the room.
    async fn is_member(&self, room_id: &str, user_id: &str) -> StoreResult<bool>;
    /// The rooms a user belongs to, with current `last_seq`.
    async fn rooms_of(&self, user_id: &str) -> StoreResult<Vec<RoomRecord>>;
    /// Member ids of a room.
    async fn members_of(&self, room_id: &str) -> StoreResult<Vec<String>>;

    /// Assigns the next seq, appends the message and publishes it to the room's topic on
    /// the bus, as one step: every observer sees one order per room without holes. A known
    /// non-empty `(room, sender, client_id)` returns the original message instead.
    /// `RoomNotFound` if the room is gone, `NotMember` if the sender is not in it (checked in
    /// the same step, so no message slips in after its sender left).
    async fn append_message(&self, new: NewMessage) -> StoreResult<Appended>;
    /// Messages with seq > `after_seq`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        room_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>>;
    /// Messages with seq < `before_seq` (0: from the newest), the newest `limit` of them,
    /// returned oldest first.
    async fn messages_before(
        &self,
        room_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>>;

    /// Whether the store can serve requests now (for `/readyz`).
    async fn ready(&self) -> bool;
}
