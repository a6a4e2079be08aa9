//! What the store keeps: accounts, rooms and messages as records. Shared by the stores that
//! keep them, the service that reads them and `convert`, which turns them into wire types.

use crate::ids::{RoomId, UserId};

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    /// Opaque id (UUIDv7).
    pub id: UserId,
    /// Lower-case, unique.
    pub username: String,
    /// Shown to other users.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// May delete any room. Granted to an existing account by an operator
    /// (`natter-server admin grant USERNAME`), never by registering a name.
    #[serde(default)]
    pub admin: bool,
    /// Disabled by an admin: no sign-in, no token works.
    #[serde(default)]
    pub disabled: bool,
    /// Sessions that signed in before this (unix milliseconds) have ended: "sign out
    /// everywhere".
    #[serde(default)]
    pub sessions_after_ms: i64,
    /// Single sessions signed out, each kept until no token of it could be refreshed any
    /// more (then it is pruned).
    #[serde(default)]
    pub ended_sessions: Vec<EndedSession>,
    /// Users who may not open a direct room with this one.
    #[serde(default)]
    pub blocked: Vec<UserId>,
}

/// A session that was signed out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndedSession {
    /// The session id.
    pub id: String,
    /// Unix milliseconds after which the session is past its maximum age anyway.
    pub until_ms: i64,
}

/// A change to an account, applied atomically by the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// Grant or take back the admin role.
    Admin(bool),
    /// Disable the account (ending every session) or enable it again.
    Disabled(bool),
    /// Sign one session out (until it would have expired anyway).
    EndSession(EndedSession),
    /// Sign every session that started before this instant (unix ms) out.
    EndSessionsBefore(i64),
    /// Block (or unblock) a user.
    Block {
        /// Who.
        user: UserId,
        /// False unblocks.
        blocked: bool,
    },
}

impl UserRecord {
    /// Applies a change at `now_ms`; ended sessions past their maximum age are pruned.
    pub fn apply(&mut self, change: &AccountChange, now_ms: i64) {
        match change {
            AccountChange::Admin(admin) => self.admin = *admin,
            AccountChange::Disabled(disabled) => {
                self.disabled = *disabled;
                // Enabled again, the account starts over: no session from before comes back.
                if *disabled {
                    self.sessions_after_ms = self.sessions_after_ms.max(now_ms.saturating_add(1));
                    self.ended_sessions.clear();
                }
            }
            AccountChange::EndSession(session) => {
                if !self.ended_sessions.iter().any(|s| s.id == session.id) {
                    self.ended_sessions.push(session.clone());
                }
            }
            AccountChange::Block { user, blocked } => {
                self.blocked.retain(|b| b != user);
                if *blocked {
                    self.blocked.push(user.clone());
                }
            }
            AccountChange::EndSessionsBefore(at) => {
                self.sessions_after_ms = self.sessions_after_ms.max(*at);
                self.ended_sessions.clear();
            }
        }
        self.ended_sessions.retain(|s| s.until_ms > now_ms);
    }

    /// Whether a session (by id and sign-in time) has been signed out.
    pub fn session_ended(&self, id: &str, started_ms: i64) -> bool {
        started_ms < self.sessions_after_ms || self.ended_sessions.iter().any(|s| s.id == id)
    }
}

/// What kind of room, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomKind {
    /// Joined by its code, and its password when it has one.
    Group {
        /// The join code.
        code: String,
        /// argon2id PHC string of the join password, if any.
        password_hash: Option<String>,
    },
    /// The one conversation of two users, found by the pair.
    Direct {
        /// Both participants' ids, sorted.
        pair: [UserId; 2],
    },
}

impl RoomKind {
    /// The join code of a group room.
    pub fn code(&self) -> Option<&str> {
        match self {
            RoomKind::Group { code, .. } => Some(code),
            RoomKind::Direct { .. } => None,
        }
    }

    /// The password hash of a group room that has a password.
    pub fn password_hash(&self) -> Option<&str> {
        match self {
            RoomKind::Group { password_hash, .. } => password_hash.as_deref(),
            RoomKind::Direct { .. } => None,
        }
    }

    /// The two participants of a direct room.
    pub fn pair(&self) -> Option<&[UserId; 2]> {
        match self {
            RoomKind::Direct { pair } => Some(pair),
            RoomKind::Group { .. } => None,
        }
    }
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "StoredRoom", into = "StoredRoom")]
pub struct RoomRecord {
    /// Opaque id (UUIDv7).
    pub id: RoomId,
    /// Display name (for direct rooms: the two usernames).
    pub name: String,
    /// Creator; may delete the room.
    pub owner_id: UserId,
    /// Group (code, password) or direct (the pair).
    pub kind: RoomKind,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Seq of the newest message, 0 when empty: derived from the log when read, never
    /// stored.
    pub last_seq: u64,
    /// Oldest seq still in the log (1 unless trimmed by retention): derived when read,
    /// never stored.
    pub first_seq: u64,
}

/// How a room is written down: the flat form of the first release, so that data written by
/// earlier versions reads back. `last_seq` and `first_seq` are derived from the log when a
/// room is read: they are not written, and those in old records are ignored.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRoom {
    id: RoomId,
    name: String,
    code: Option<String>,
    owner_id: UserId,
    password_hash: Option<String>,
    kind: StoredKind,
    created_at: i64,
    direct_pair: Option<[UserId; 2]>,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum StoredKind {
    Group,
    Direct,
}

impl TryFrom<StoredRoom> for RoomRecord {
    type Error = &'static str;

    /// Refuses the flat forms that name no room: a group without its code, a direct room
    /// without its pair.
    fn try_from(stored: StoredRoom) -> Result<Self, Self::Error> {
        let kind = match stored.kind {
            StoredKind::Group => RoomKind::Group {
                code: stored.code.ok_or("a group room without its code")?,
                password_hash: stored.password_hash,
            },
            StoredKind::Direct => RoomKind::Direct {
                pair: stored.direct_pair.ok_or("a direct room without its pair")?,
            },
        };
        Ok(Self {
            id: stored.id,
            name: stored.name,
            owner_id: stored.owner_id,
            kind,
            created_at: stored.created_at,
            // Filled in from the log by the store that reads the room.
            last_seq: 0,
            first_seq: 1,
        })
    }
}

impl From<RoomRecord> for StoredRoom {
    fn from(room: RoomRecord) -> Self {
        let (kind, code, password_hash, direct_pair) = match room.kind {
            RoomKind::Group {
                code,
                password_hash,
            } => (StoredKind::Group, Some(code), password_hash, None),
            RoomKind::Direct { pair } => (StoredKind::Direct, None, None, Some(pair)),
        };
        Self {
            id: room.id,
            name: room.name,
            code,
            owner_id: room.owner_id,
            password_hash,
            kind,
            created_at: room.created_at,
            direct_pair,
        }
    }
}

/// A message in a room's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    /// Opaque id (UUIDv7).
    pub id: String,
    /// The room whose log holds it.
    pub room_id: RoomId,
    /// Per-room sequence number, 1-based, without holes.
    pub seq: u64,
    /// Author's user id.
    pub sender_id: UserId,
    /// Author's display name at the time of sending.
    pub sender_name: String,
    /// Validated text.
    pub text: String,
    /// Unix milliseconds.
    pub sent_at: i64,
    /// Sender's idempotency key (may be empty).
    pub client_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rooms written by earlier versions (a flat record, with the seqs it no longer
    /// writes) read back, and are written the same way but for the derived seqs.
    #[test]
    fn rooms_keep_their_stored_form() {
        let group = r#"{"id":"r1","name":"Lobby","code":"ABCD2345","owner_id":"u1","password_hash":null,"kind":"Group","created_at":5,"last_seq":7,"first_seq":1,"direct_pair":null}"#;
        let room: RoomRecord = serde_json::from_str(group).unwrap();
        assert_eq!(room.kind.code(), Some("ABCD2345"));
        assert_eq!((room.last_seq, room.first_seq), (0, 1), "derived, not read");
        assert_eq!(
            serde_json::to_string(&room).unwrap(),
            group.replace(r#""last_seq":7,"first_seq":1,"#, "")
        );
        let direct = r#"{"id":"d1","name":"a & b","code":null,"owner_id":"u1","password_hash":null,"kind":"Direct","created_at":5,"direct_pair":["u1","u2"]}"#;
        let room: RoomRecord = serde_json::from_str(direct).unwrap();
        assert_eq!(
            room.kind.pair(),
            Some(&[UserId::from_trusted("u1"), UserId::from_trusted("u2")])
        );
        assert_eq!(serde_json::to_string(&room).unwrap(), direct);
        let broken = direct.replace(r#"["u1","u2"]"#, "null");
        let error = serde_json::from_str::<RoomRecord>(&broken).unwrap_err();
        assert!(error.to_string().contains("without its pair"), "{error}");
    }
}
