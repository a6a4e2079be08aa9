//! The client's state, in plain Rust so it is unit-tested natively: rooms and their
//! messages merged from history pages and live events, pending sends, unread counts, typing,
//! presence, and the cursors used to resume a broken stream.

use std::collections::{BTreeMap, HashMap};

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};

/// A message as shown: stored (with a seq) or still on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Idempotency key: a retry reuses it, so a resend never duplicates.
    pub client_id: String,
    /// What the user typed.
    pub text: String,
    /// Whether the last attempt failed (the UI offers a retry).
    pub failed: bool,
}

/// One room or direct conversation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoomState {
    /// The room as the server last described it.
    pub room: pb::Room,
    /// Known messages by seq: history pages and live events merge here without duplicates.
    pub messages: BTreeMap<u64, pb::Message>,
    /// Sends not yet acknowledged, in the order they were made.
    pub pending: Vec<Pending>,
    /// Highest seq received through the event stream: where a resumed stream continues.
    pub cursor: u64,
    /// Highest seq the user has seen (the room was open when it arrived).
    pub read: u64,
    /// Whether history older than the oldest loaded message exists.
    pub has_more: bool,
    /// Members by user id, with presence, once listed.
    pub members: BTreeMap<String, pb::User>,
    /// Who is typing: user id to (display name, expiry in ms since the epoch).
    pub typing: HashMap<String, (String, f64)>,
}

impl RoomState {
    fn new(room: pb::Room) -> Self {
        let last = room.last_seq;
        Self {
            cursor: last,
            read: last,
            has_more: last > 0,
            room,
            ..Default::default()
        }
    }

    /// Messages not seen yet.
    pub fn unread(&self) -> u64 {
        self.room.last_seq.saturating_sub(self.read)
    }

    /// The seq before which older history should be requested (0: the newest page).
    pub fn oldest_loaded(&self) -> u64 {
        self.messages.keys().next().copied().unwrap_or(0)
    }

    /// Whether the newest page of history should be fetched before the room is shown: fewer
    /// messages are known than that page holds (say, only those that arrived live since
    /// sign-in) while older ones exist.
    pub fn needs_newest_page(&self) -> bool {
        let page = self.room.last_seq.min(u64::from(PAGE_SIZE));
        self.has_more && (self.messages.len() as u64) < page
    }

    /// Names of those typing now.
    pub fn typing_names(&self, now_ms: f64) -> Vec<String> {
        let mut names: Vec<String> = self
            .typing
            .values()
            .filter(|(_, until)| *until > now_ms)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    fn insert(&mut self, message: pb::Message) {
        self.room.last_seq = self.room.last_seq.max(message.seq);
        if !message.client_id.is_empty() {
            self.pending.retain(|p| p.client_id != message.client_id);
        }
        self.messages.insert(message.seq, message);
    }
}

/// Messages per page of history.
pub const PAGE_SIZE: u32 = 50;

/// How long a "typing" event shows without a new one, ms.
pub const TYPING_SHOWN_MS: f64 = 6000.0;

/// Everything the signed-in client knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatState {
    /// The signed-in user's id.
    pub me: String,
    /// Rooms by id.
    pub rooms: BTreeMap<String, RoomState>,
    /// The room on screen, if any.
    pub active: Option<String>,
}

impl ChatState {
    /// State for a signed-in user.
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            ..Default::default()
        }
    }

    /// Rooms for the sidebar: group rooms by name, then direct conversations by peer.
    pub fn sidebar(&self) -> Vec<&RoomState> {
        let mut rooms: Vec<&RoomState> = self.rooms.values().collect();
        rooms.sort_by_key(|r| {
            (
                r.room.kind == pb::RoomKind::Direct as i32,
                r.room.name.to_lowercase(),
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

    /// Adds or refreshes a room (from `ListRooms`, `Ready`, a join or a create).
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
                self.rooms.insert(room.id.clone(), RoomState::new(room));
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
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let oldest_before = room.oldest_loaded();
        let page_oldest = page.messages.first().map(|m| m.seq);
        for message in page.messages {
            room.insert(message);
        }
        // Only a page at the old end says whether even older history exists.
        if oldest_before == 0 || page_oldest.is_some_and(|seq| seq <= oldest_before) {
            room.has_more = page.has_more;
        }
        if self.active.as_deref() == Some(room_id) {
            room.read = room.room.last_seq;
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

    /// A send was acknowledged with its stored message.
    pub fn acknowledge(&mut self, message: pb::Message) {
        let active = self.active.clone();
        if let Some(room) = self.rooms.get_mut(&message.room_id) {
            let seq = message.seq;
            room.insert(message);
            if active.as_deref() == Some(room.room.id.as_str()) {
                room.read = room.read.max(seq);
            }
        }
    }

    /// Applies one stream event.
    pub fn apply(&mut self, event: Ev, now_ms: f64) {
        match event {
            Ev::Ready(ready) => {
                let listed: Vec<String> = ready.rooms.iter().map(|r| r.id.clone()).collect();
                self.rooms.retain(|id, _| listed.contains(id));
                if self.active.as_ref().is_some_and(|id| !listed.contains(id)) {
                    self.active = None;
                }
                for room in ready.rooms {
                    self.upsert_room(room);
                }
            }
            Ev::Message(message) => {
                let active = self.active.clone();
                if let Some(room) = self.rooms.get_mut(&message.room_id) {
                    room.cursor = room.cursor.max(message.seq);
                    room.typing.remove(&message.sender_id);
                    let (seq, own) = (message.seq, message.sender_id == self.me);
                    room.insert(message);
                    if own || active.as_deref() == Some(room.room.id.as_str()) {
                        room.read = room.read.max(seq);
                    }
                }
            }
            Ev::Presence(presence) => {
                let Some(user) = presence.user else { return };
                if let Some(room) = self.rooms.get_mut(&presence.room_id) {
                    if let Some(member) = room.members.get_mut(&user.id) {
                        member.online = presence.online;
                    }
                    if let Some(peer) = room.room.peer.as_mut().filter(|p| p.id == user.id) {
                        peer.online = presence.online;
                    }
                }
            }
            Ev::Typing(typing) => {
                let Some(user) = typing.user else { return };
                if user.id == self.me {
                    return;
                }
                if let Some(room) = self.rooms.get_mut(&typing.room_id) {
                    if typing.typing {
                        room.typing
                            .insert(user.id, (user.display_name, now_ms + TYPING_SHOWN_MS));
                    } else {
                        room.typing.remove(&user.id);
                    }
                }
            }
            Ev::RoomChanged(changed) => {
                let Some(room) = changed.room else { return };
                match RoomChange::try_from(changed.change) {
                    Ok(RoomChange::Joined) => self.upsert_room(room),
                    Ok(RoomChange::Left | RoomChange::Deleted) => self.remove_room(&room.id),
                    Ok(RoomChange::MemberJoined) => {
                        if let (Some(state), Some(user)) =
                            (self.rooms.get_mut(&room.id), changed.user)
                        {
                            state.members.insert(user.id.clone(), user);
                        }
                    }
                    Ok(RoomChange::MemberLeft) => {
                        if let (Some(state), Some(user)) =
                            (self.rooms.get_mut(&room.id), changed.user)
                        {
                            state.members.remove(&user.id);
                        }
                    }
                    _ => {}
                }
            }
            Ev::HistoryTrimmed(trimmed) => {
                if let Some(room) = self.rooms.get_mut(&trimmed.room_id) {
                    room.cursor = room
                        .cursor
                        .max(trimmed.first_available_seq.saturating_sub(1));
                }
            }
            Ev::Heartbeat(_) | Ev::SendAck(_) | Ev::FrameError(_) => {}
        }
    }
}

/// Reconnection delays: exponential from 500 ms to 15 s, with jitter so that clients cut off
/// together do not come back together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt, ms; `random` is uniform in [0, 1).
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        let ceiling = (500.0 * 2f64.powi(self.attempt.min(5) as i32)).min(15_000.0);
        self.attempt += 1;
        ceiling / 2.0 + ceiling / 2.0 * random
    }

    /// Attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A connection succeeded: start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How long a stream may stay silent before it is considered dead, ms: two and a half
/// heartbeat intervals (one late heartbeat is tolerated, two are not).
pub fn silence_limit_ms(heartbeat_interval_ms: u32) -> u32 {
    heartbeat_interval_ms.clamp(1000, 600_000) / 2 * 5
}

/// Splits a server error like `username: must be ...` into (field, reason).
pub fn field_error(message: &str) -> Option<(&str, &str)> {
    let (field, reason) = message.split_once(": ")?;
    field
        .chars()
        .all(|c| c.is_ascii_lowercase() || c == '_')
        .then_some((field, reason))
}

/// Whether a message of `chars` characters should show the length counter.
pub fn counter_visible(chars: usize) -> bool {
    chars >= MESSAGE_LIMIT - 500
}

/// Longest message the server accepts, in characters.
pub const MESSAGE_LIMIT: usize = 4000;

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, last_seq: u64) -> pb::Room {
        pb::Room {
            id: id.into(),
            name: id.into(),
            last_seq,
            kind: pb::RoomKind::Group as i32,
            ..Default::default()
        }
    }

    fn message(room: &str, seq: u64, sender: &str, client_id: &str) -> pb::Message {
        pb::Message {
            room_id: room.into(),
            seq,
            sender_id: sender.into(),
            text: format!("m{seq}"),
            client_id: client_id.into(),
            ..Default::default()
        }
    }

    fn ready(rooms: Vec<pb::Room>) -> Ev {
        Ev::Ready(pb::Ready {
            rooms,
            heartbeat_interval_ms: 15_000,
        })
    }

    fn seqs(state: &ChatState, room: &str) -> Vec<u64> {
        state.rooms[room].messages.keys().copied().collect()
    }

    #[test]
    fn history_and_live_events_merge_by_seq_without_duplicates() {
        let mut state = ChatState::new("me");
        state.apply(ready(vec![room("r", 5)]), 0.0);
        state.open("r");
        state.apply(Ev::Message(message("r", 6, "bob", "")), 0.0);
        // The newest page overlaps the live message; older pages come later.
        let newest = pb::GetHistoryResponse {
            messages: (4..=6).map(|s| message("r", s, "bob", "")).collect(),
            has_more: true,
        };
        state.merge_history("r", newest);
        state.apply(Ev::Message(message("r", 6, "bob", "")), 0.0);
        let older = pb::GetHistoryResponse {
            messages: (1..=3).map(|s| message("r", s, "bob", "")).collect(),
            has_more: false,
        };
        state.merge_history("r", older);
        assert_eq!(seqs(&state, "r"), [1, 2, 3, 4, 5, 6]);
        assert!(!state.rooms["r"].has_more);
        assert_eq!(state.rooms["r"].oldest_loaded(), 1);
    }

    #[test]
    fn a_room_opened_after_live_messages_still_gets_its_newest_page() {
        let mut state = ChatState::new("me");
        state.apply(ready(vec![room("busy", 60), room("quiet", 0)]), 0.0);
        state.apply(Ev::Message(message("busy", 61, "bob", "")), 0.0);
        state.apply(Ev::Message(message("busy", 62, "bob", "")), 0.0);
        assert!(state.rooms["busy"].needs_newest_page());
        assert!(
            !state.rooms["quiet"].needs_newest_page(),
            "nothing to fetch"
        );
        let newest = pb::GetHistoryResponse {
            messages: (13..=62).map(|s| message("busy", s, "bob", "")).collect(),
            has_more: true,
        };
        state.merge_history("busy", newest);
        assert!(!state.rooms["busy"].needs_newest_page());
        // A log trimmed to fewer messages than a page: once fetched, not fetched again.
        state.apply(ready(vec![room("busy", 62), room("trimmed", 100)]), 0.0);
        let kept = pb::GetHistoryResponse {
            messages: (91..=100)
                .map(|s| message("trimmed", s, "bob", ""))
                .collect(),
            has_more: false,
        };
        assert!(state.rooms["trimmed"].needs_newest_page());
        state.merge_history("trimmed", kept);
        assert!(!state.rooms["trimmed"].needs_newest_page());
    }

    #[test]
    fn unread_counts_follow_what_was_on_screen() {
        let mut state = ChatState::new("me");
        state.apply(ready(vec![room("a", 3), room("b", 0)]), 0.0);
        assert_eq!(
            state.rooms["a"].unread(),
            0,
            "what existed before sign-in is not unread"
        );
        state.open("a");
        state.apply(Ev::Message(message("b", 1, "bob", "")), 0.0);
        state.apply(Ev::Message(message("b", 2, "bob", "")), 0.0);
        state.apply(Ev::Message(message("a", 4, "bob", "")), 0.0);
        assert_eq!(
            (state.rooms["a"].unread(), state.rooms["b"].unread()),
            (0, 2)
        );
        state.apply(Ev::Message(message("b", 3, "me", "")), 0.0);
        assert_eq!(
            state.rooms["b"].unread(),
            0,
            "answering marks the room read"
        );
        state.apply(Ev::Message(message("b", 4, "bob", "")), 0.0);
        state.open("b");
        assert_eq!(state.rooms["b"].unread(), 0);
    }

    #[test]
    fn cursors_track_the_stream_for_resuming() {
        let mut state = ChatState::new("me");
        state.apply(ready(vec![room("a", 3), room("b", 7)]), 0.0);
        state.apply(Ev::Message(message("a", 4, "bob", "")), 0.0);
        // History does not move the cursor: only the stream does.
        state.merge_history(
            "b",
            pb::GetHistoryResponse {
                messages: vec![message("b", 2, "x", "")],
                has_more: true,
            },
        );
        let cursors: HashMap<String, u64> = state
            .cursors()
            .into_iter()
            .map(|c| (c.room_id, c.after_seq))
            .collect();
        assert_eq!(cursors, HashMap::from([("a".into(), 4), ("b".into(), 7)]));
        // After a reconnect, Ready drops rooms left meanwhile and keeps cursors of the others.
        state.apply(ready(vec![room("a", 6)]), 0.0);
        assert_eq!(
            state.cursors(),
            vec![pb::RoomCursor {
                room_id: "a".into(),
                after_seq: 4
            }]
        );
        state.apply(
            Ev::HistoryTrimmed(pb::HistoryTrimmed {
                room_id: "a".into(),
                after_seq: 4,
                first_available_seq: 9,
            }),
            0.0,
        );
        assert_eq!(state.cursors()[0].after_seq, 8);
    }

    #[test]
    fn pending_sends_settle_on_acknowledgement_or_stream() {
        let mut state = ChatState::new("me");
        state.apply(ready(vec![room("r", 0)]), 0.0);
        state.add_pending("r", "c1", "hello");
        state.add_pending("r", "c2", "again");
        state.set_failed("r", "c2", true);
        assert!(state.rooms["r"].pending[1].failed);
        state.add_pending("r", "c3", "never mind");
        state.discard("r", "c3");
        assert_eq!(state.rooms["r"].pending.len(), 2);
        state.acknowledge(message("r", 1, "me", "c1"));
        // The same message arriving on the stream changes nothing.
        state.apply(Ev::Message(message("r", 1, "me", "c1")), 0.0);
        state.apply(Ev::Message(message("r", 2, "me", "c2")), 0.0);
        assert!(state.rooms["r"].pending.is_empty());
        assert_eq!(seqs(&state, "r"), [1, 2]);
    }

    #[test]
    fn typing_expires_and_ignores_self() {
        let mut state = ChatState::new("me");
        state.apply(ready(vec![room("r", 0)]), 0.0);
        let typing = |id: &str, on: bool| {
            Ev::Typing(pb::Typing {
                room_id: "r".into(),
                user: Some(pb::User {
                    id: id.into(),
                    display_name: id.to_uppercase(),
                    ..Default::default()
                }),
                typing: on,
            })
        };
        state.apply(typing("bob", true), 1000.0);
        state.apply(typing("me", true), 1000.0);
        assert_eq!(state.rooms["r"].typing_names(2000.0), ["BOB"]);
        assert!(
            state.rooms["r"]
                .typing_names(1000.0 + TYPING_SHOWN_MS + 1.0)
                .is_empty()
        );
        state.apply(typing("bob", false), 1500.0);
        assert!(state.rooms["r"].typing_names(2000.0).is_empty());
        state.apply(typing("bob", true), 3000.0);
        state.apply(Ev::Message(message("r", 1, "bob", "")), 3100.0);
        assert!(
            state.rooms["r"].typing_names(3200.0).is_empty(),
            "a message ends typing"
        );
    }

    #[test]
    fn presence_and_membership_changes() {
        let mut state = ChatState::new("me");
        let direct = pb::Room {
            id: "d".into(),
            kind: pb::RoomKind::Direct as i32,
            peer: Some(pb::User {
                id: "bob".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        state.apply(ready(vec![direct]), 0.0);
        state.apply(
            Ev::Presence(pb::PresenceChanged {
                room_id: "d".into(),
                user: Some(pb::User {
                    id: "bob".into(),
                    ..Default::default()
                }),
                online: true,
            }),
            0.0,
        );
        assert!(state.rooms["d"].room.peer.as_ref().unwrap().online);
        let change = |kind: RoomChange, room: pb::Room| {
            Ev::RoomChanged(pb::RoomChanged {
                room: Some(room),
                change: kind as i32,
                user: None,
            })
        };
        state.apply(change(RoomChange::Joined, room("g", 2)), 0.0);
        state.open("g");
        assert_eq!(
            state
                .sidebar()
                .iter()
                .map(|r| r.room.id.as_str())
                .collect::<Vec<_>>(),
            ["g", "d"]
        );
        state.apply(change(RoomChange::Deleted, room("g", 2)), 0.0);
        assert!(state.active.is_none() && !state.rooms.contains_key("g"));
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay_ms(0.0);
        let second = backoff.next_delay_ms(0.999);
        assert!((250.0..=500.0).contains(&first) && (500.0..=1000.0).contains(&second));
        for _ in 0..10 {
            assert!(backoff.next_delay_ms(0.999) <= 15_000.0);
        }
        assert_eq!(backoff.attempts(), 12);
        backoff.reset();
        assert!(backoff.next_delay_ms(0.5) < 500.0);
    }

    #[test]
    fn silence_and_errors() {
        assert_eq!(silence_limit_ms(15_000), 37_500);
        assert_eq!(silence_limit_ms(0), 2_500, "a nonsense interval is clamped");
        assert_eq!(
            field_error("username: must be 3-32 characters"),
            Some(("username", "must be 3-32 characters"))
        );
        assert_eq!(field_error("unknown username or wrong password"), None);
        assert!(!counter_visible(10) && counter_visible(3600));
    }
}
