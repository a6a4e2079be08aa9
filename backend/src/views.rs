//! What the service answers with: records as a given viewer sees them, and the transient
//! notices it publishes. Plain domain values; `convert` turns them into wire types.

use crate::{
    auth::Role,
    ids::RoomId,
    records::{MessageRecord, RoomRecord, UserRecord},
};

/// A user with their presence.
#[derive(Debug, Clone)]
pub(crate) struct UserView {
    pub(crate) user: UserRecord,
    pub(crate) online: bool,
}

/// A room as one member sees it: a direct room carries the other participant.
#[derive(Debug, Clone)]
pub(crate) struct RoomView {
    pub(crate) room: RoomRecord,
    pub(crate) peer: Option<UserView>,
}

impl RoomView {
    /// A room seen without a peer (group rooms, and announcements about a room).
    pub(crate) fn plain(room: &RoomRecord) -> Self {
        Self {
            room: room.clone(),
            peer: None,
        }
    }
}

/// A member of a room.
#[derive(Debug, Clone)]
pub(crate) struct MemberView {
    pub(crate) user: UserView,
    pub(crate) is_owner: bool,
}

/// A signed-in session: the access token and whom it is for.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) token: String,
    /// Expiry, unix milliseconds (server clock).
    pub(crate) expires_at: i64,
    /// Lifetime from now, milliseconds.
    pub(crate) expires_in_ms: i64,
    pub(crate) user: UserRecord,
    pub(crate) role: Role,
}

/// A page of the user directory.
#[derive(Debug, Clone)]
pub(crate) struct UsersPage {
    pub(crate) users: Vec<UserView>,
    /// Where the next page starts; empty on the last page.
    pub(crate) next_page_token: String,
}

/// A page of a room's history, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct HistoryPage {
    pub(crate) messages: Vec<MessageRecord>,
    pub(crate) has_more: bool,
}

/// How a room changed for whoever hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomChange {
    /// The hearer joined (created, opened) the room.
    Joined,
    /// The hearer left it.
    Left,
    /// It was deleted.
    Deleted,
    /// Someone else joined.
    MemberJoined,
    /// Someone else left.
    MemberLeft,
}

/// A transient event the service publishes (messages go through the log instead).
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per announcement and converted at once, never stored"
)]
pub(crate) enum Notice {
    /// A room was joined, left or deleted; `user` is the member concerned, for member changes.
    RoomChanged {
        room: RoomView,
        change: RoomChange,
        user: Option<UserView>,
    },
    /// A member came online or went offline.
    Presence { room_id: RoomId, user: UserView },
    /// A member started or stopped typing.
    Typing {
        room_id: RoomId,
        user: UserView,
        typing: bool,
    },
    /// Sessions of the user ended (signed out, disabled): each stream re-checks its own.
    SessionEnded { reason: &'static str },
}
