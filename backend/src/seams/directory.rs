//! The Directory seam: accounts, rooms and memberships (plain records, each call atomic on
//! its own).

use async_trait::async_trait;

use crate::{
    ids::{RoomId, UserId},
    records::{AccountChange, RoomRecord, UserRecord},
};

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

/// Accounts, rooms and memberships. Methods are small and each is atomic on its own.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Creates an account; `UsernameTaken` if the username exists.
    async fn create_user(&self, user: UserRecord) -> StoreResult<UserRecord>;
    /// Looks up an account by its normalised username.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Looks up an account by id.
    async fn user(&self, id: &UserId) -> StoreResult<Option<UserRecord>>;
    /// Looks up accounts by id at once (a room's members: one round trip over Redis, not
    /// one per member): those that exist, in the order asked.
    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<UserRecord>>;
    /// Changes an account atomically (no concurrent change is lost); the updated account,
    /// or `None` if there is no such account.
    async fn change_account(
        &self,
        id: &UserId,
        change: &AccountChange,
    ) -> StoreResult<Option<UserRecord>>;
    /// Up to `count` accounts in username order, starting after `after_username` (from
    /// the first when empty). The directory search ([`search_users`]) pages through these.
    async fn users_after(&self, after_username: &str, count: usize)
    -> StoreResult<Vec<UserRecord>>;

    /// Stores a new group room (its code must be unused; the store retries nothing) and
    /// makes the owner a member. Returns false if the code is taken.
    async fn create_room(&self, room: RoomRecord) -> StoreResult<bool>;
    /// Looks up a room by id.
    async fn room(&self, id: &RoomId) -> StoreResult<Option<RoomRecord>>;
    /// Looks up a group room by its normalised join code.
    async fn room_by_code(&self, code: &str) -> StoreResult<Option<RoomRecord>>;
    /// Replaces a group room's join code: `None` if there is no such group room,
    /// `Some(false)` if `new_code` is taken (nothing changed), `Some(true)` once the old
    /// code no longer finds the room and the new one does.
    async fn change_code(&self, room_id: &RoomId, new_code: &str) -> StoreResult<Option<bool>>;
    /// Returns the direct room of this pair, creating `candidate` (with both as members)
    /// if there is none yet. The bool is true when it was created.
    async fn open_direct(&self, candidate: RoomRecord) -> StoreResult<(RoomRecord, bool)>;
    /// Deletes a room, its memberships and its log; returns the former members.
    async fn delete_room(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>>;

    /// Adds a member; false if already a member; `RoomNotFound` if the room is gone.
    async fn add_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool>;
    /// Removes a member; false if not a member.
    async fn remove_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool>;
    /// Whether the user is a member of the room.
    async fn is_member(&self, room_id: &RoomId, user_id: &UserId) -> StoreResult<bool>;
    /// The rooms a user belongs to, with current `last_seq`.
    async fn rooms_of(&self, user_id: &UserId) -> StoreResult<Vec<RoomRecord>>;
    /// Member ids of a room.
    async fn members_of(&self, room_id: &RoomId) -> StoreResult<Vec<UserId>>;

    /// Whether the store can serve requests now (for `/readyz`).
    async fn ready(&self) -> bool;
}

/// Users whose username or display name contains `query` (case-insensitive), ordered by
/// username, starting after `after_username`: at most `limit` of them, examining at most
/// [`DIRECTORY_SCAN_LIMIT`] accounts, so that a search matching nobody costs bounded work.
/// Written once, over [`Directory::users_after`], for every implementation.
pub async fn search_users(
    directory: &(impl Directory + ?Sized),
    query: &str,
    after_username: &str,
    limit: usize,
) -> StoreResult<UserPage> {
    const BATCH: usize = 200;
    let query = query.to_lowercase();
    let mut page = UserPage::default();
    let mut cursor = after_username.to_owned();
    let mut examined = 0;
    loop {
        let batch = directory.users_after(&cursor, BATCH).await?;
        if batch.is_empty() {
            return Ok(page);
        }
        for user in batch {
            if page.users.len() == limit || examined == DIRECTORY_SCAN_LIMIT {
                // More accounts follow: the next page starts after the last one examined.
                page.next_after = Some(cursor);
                return Ok(page);
            }
            examined += 1;
            cursor.clone_from(&user.username);
            if user.username.contains(&query) || user.display_name.to_lowercase().contains(&query) {
                page.users.push(user);
            }
        }
    }
}
