//! The client's state, in plain Rust so it is unit-tested natively: rooms and their
//! messages merged from history pages and live events, pending sends, unread counts, typing,
//! presence, and the cursors used to resume a broken stream.

mod input;
mod room;
mod timing;

use std::collections::BTreeMap;

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};

pub use input::{MESSAGE_LIMIT, counter_visible, field_error, uuid_v4};
pub use room::{PAGE_SIZE, Pending, RoomState, Row, TYPING_SHOWN_MS};
pub use timing::{
    Backoff, HEALTHY_STREAM_MS, REFRESH_CHECK_MS, go_away_delay_ms, refresh_in_ms, refresh_lead_ms,
    silence_limit_ms,
};

/// Everything the signed-in client knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatState {
    /// The signed-in user's id.
    pub me: String,
    /// Rooms by id.
    pub rooms: BTreeMap<String, RoomState>,
    /// The room on screen, if any.
    pub active: Option<String>,
    /// How far the user had read each room in an earlier visit (kept by the browser), for
    /// rooms not seen yet in this one.
    remembered_read: BTreeMap<String, u64>,
}

impl ChatState {
    /// State for a signed-in user who, in an earlier visit, had read each room up to the
    /// seq in `remembered_read`: what arrived since counts as unread.
    pub fn new(me: &str, remembered_read: BTreeMap<String, u64>) -> Self {
        Self {
            me: me.to_owned(),
            remembered_read,
            ..Default::default()
        }
    }

    /// How far each room has been read: what to remember for the next visit. Until the
    /// stream says which rooms exist, that is what was remembered.
    pub fn read_markers(&self) -> BTreeMap<String, u64> {
        let mut markers = self.remembered_read.clone();
        markers.extend(self.rooms.iter().map(|(id, room)| (id.clone(), room.read)));
        markers
    }

    /// Sends that failed (for want of a connection, or an answer): what to try again once
    /// the stream is back, as (room id, client id, text).
    pub fn failed_sends(&self) -> Vec<(String, String, String)> {
        self.rooms
            .values()
            .flat_map(|room| {
                room.pending
                    .iter()
                    .filter(|p| p.failed)
                    .map(|p| (room.room.id.clone(), p.client_id.clone(), p.text.clone()))
            })
            .collect()
    }

    /// Rooms for the sidebar: group rooms, then direct conversations, each by the name shown.
    pub fn sidebar(&self) -> Vec<&RoomState> {
        let mut rooms: Vec<&RoomState> = self.rooms.values().collect();
        rooms.sort_by_key(|r| {
            (
                r.room.kind == pb::RoomKind::Direct as i32,
                r.shown_name().to_lowercase(),
            )
        });
        rooms
    }

    /// Where to resume each room after a reconnect.
    pub fn cursors(&self) -> Vec<pb::RoomCursor> {
        self.rooms
            .values()
            .map(|r| pb::RoomCursor {
                room_id: r.room.id.clone(),
                after_seq: r.cursor,
            })
            .collect()
    }

    /// Makes a room the one on screen; everything in it counts as read.
    pub fn open(&mut self, room_id: &str) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.read = room.room.last_seq;
            self.active = Some(room_id.to_owned());
        }
    }

    /// Adds or refreshes a room (from `Ready`, a join, a create or a direct open).
    pub fn upsert_room(&mut self, room: pb::Room) {
        match self.rooms.get_mut(&room.id) {
            Some(existing) => {
                let last = existing.room.last_seq.max(room.last_seq);
                existing.room = pb::Room {
                    last_seq: last,
                    ..room
                };
            }
            None => {
                let remembered = self.remembered_read.get(&room.id).copied();
                self.rooms
                    .insert(room.id.clone(), RoomState::new(room, remembered));
            }
        }
    }

    /// Forgets a room the user left or that was deleted.
    pub fn remove_room(&mut self, room_id: &str) {
        self.rooms.remove(room_id);
        if self.active.as_deref() == Some(room_id) {
            self.active = None;
        }
    }

    /// Merges a page of history (oldest first).
    pub fn merge_history(&mut self, room_id: &str, page: pb::GetHistoryResponse) {
        let active = self.active.as_deref() == Some(room_id);
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.merge_history(page);
            if active {
                room.read = room.room.last_seq;
            }
        }
    }

    /// Starts a send: shows it as pending at once.
    pub fn add_pending(&mut self, room_id: &str, client_id: &str, text: &str) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.pending.push(Pending {
                client_id: client_id.into(),
                text: text.into(),
                failed: false,
            });
        }
    }

    /// Marks a pending send failed (or, with `false`, being retried).
    pub fn set_failed(&mut self, room_id: &str, client_id: &str, failed: bool) {
        if let Some(pending) = self
            .rooms
            .get_mut(room_id)
            .and_then(|r| r.pending.iter_mut().find(|p| p.client_id == client_id))
        {
            pending.failed = failed;
        }
    }

    /// Drops a pending send the user gave up on.
    pub fn discard(&mut self, room_id: &str, client_id: &str) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.pending.retain(|p| p.client_id != client_id);
        }
    }

    /// A send was acknowledged with its stored message: the user's own, so it is read.
    pub fn acknowledge(&mut self, message: pb::Message) {
        if let Some(room) = self.rooms.get_mut(&message.room_id) {
            room.read = room.read.max(message.seq);
            room.insert(message);
        }
    }

    /// Applies one stream event; says whether anything changed (a heartbeat changes
    /// nothing, so nothing needs drawing again).
    pub fn apply(&mut self, event: Ev, now_ms: f64) -> bool {
        match event {
            Ev::Ready(ready) => {
                let listed: Vec<String> = ready.rooms.iter().map(|r| r.id.clone()).collect();
                self.rooms.retain(|id, _| listed.contains(id));
                self.remembered_read.retain(|id, _| listed.contains(id));
                if self.active.as_ref().is_some_and(|id| !listed.contains(id)) {
                    self.active = None;
                }
                for room in ready.rooms {
                    self.upsert_room(room);
                }
                // The room on screen stays read, whatever arrived while disconnected.
                if let Some(room) = self.active.as_ref().and_then(|id| self.rooms.get_mut(id)) {
                    room.read = room.room.last_seq;
                }
            }
            Ev::Message(message) => {
                let active = self.active.as_deref() == Some(message.room_id.as_str());
                let Some(room) = self.rooms.get_mut(&message.room_id) else {
                    return false;
                };
                room.cursor = room.cursor.max(message.seq);
                room.typing.remove(&message.sender_id);
                let (seq, own) = (message.seq, message.sender_id == self.me);
                room.insert(message);
                if own || active {
                    room.read = room.read.max(seq);
                }
            }
            Ev::Presence(presence) => {
                let (Some(user), Some(room)) =
                    (presence.user, self.rooms.get_mut(&presence.room_id))
                else {
                    return false;
                };
                if let Some(member) = room.members.get_mut(&user.id) {
                    member.online = presence.online;
                }
                if let Some(peer) = room.room.peer.as_mut().filter(|p| p.id == user.id) {
                    peer.online = presence.online;
                }
            }
            Ev::Typing(typing) => {
                let (Some(user), Some(room)) = (typing.user, self.rooms.get_mut(&typing.room_id))
                else {
                    return false;
                };
                if user.id == self.me {
                    return false;
                }
                if typing.typing {
                    let until = now_ms + TYPING_SHOWN_MS;
                    room.typing.insert(user.id, (user.display_name, until));
                } else {
                    room.typing.remove(&user.id);
                }
            }
            Ev::RoomChanged(changed) => {
                let Some(room) = changed.room else {
                    return false;
                };
                match (RoomChange::try_from(changed.change), changed.user) {
                    (Ok(RoomChange::Joined), _) => self.upsert_room(room),
                    (Ok(RoomChange::Left | RoomChange::Deleted), _) => self.remove_room(&room.id),
                    (Ok(RoomChange::MemberJoined), Some(user)) => {
                        if let Some(state) = self.rooms.get_mut(&room.id) {
                            state.members.insert(user.id.clone(), user);
                        }
                    }
                    (Ok(RoomChange::MemberLeft), Some(user)) => {
                        if let Some(state) = self.rooms.get_mut(&room.id) {
                            state.members.remove(&user.id);
                        }
                    }
                    _ => return false,
                }
            }
            Ev::HistoryTrimmed(trimmed) => {
                let Some(room) = self.rooms.get_mut(&trimmed.room_id) else {
                    return false;
                };
                room.cursor = room
                    .cursor
                    .max(trimmed.first_available_seq.saturating_sub(1));
            }
            // The stream ends next; the session's end is handled where streams end.
            Ev::Heartbeat(_)
            | Ev::SendAck(_)
            | Ev::FrameError(_)
            | Ev::GoAway(_)
            | Ev::SessionEnded(_) => return false,
        }
        true
    }
}

/// Read markers to store, given those stored (perhaps by another tab of the same user):
/// per room the further of the two, so a tab never moves a marker back.
pub fn merge_read_markers(
    mut stored: BTreeMap<String, u64>,
    ours: BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    for (room, read) in ours {
        let marker = stored.entry(room).or_default();
        *marker = (*marker).max(read);
    }
    stored
}

#[cfg(test)]
mod tests;
