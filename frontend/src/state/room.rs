//! One room or direct conversation as the client knows it, and the rows its message list
//! shows.

use std::collections::{BTreeMap, HashMap};

use natter_proto::v1 as pb;

/// Messages per page of history.
pub const PAGE_SIZE: u32 = 50;

/// How long a "typing" event shows without a new one, ms.
pub const TYPING_SHOWN_MS: f64 = 6000.0;

/// A send not acknowledged yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Idempotency key: a retry reuses it, so a resend never duplicates.
    pub client_id: String,
    /// What the user typed.
    pub text: String,
    /// Whether the last attempt failed (the UI offers a retry).
    pub failed: bool,
}

/// One row of a conversation's message list.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A day separator with its label.
    Day(String),
    /// A stored message; `own` when the signed-in user sent it.
    Message {
        /// The message.
        message: pb::Message,
        /// Sent by the signed-in user.
        own: bool,
        /// The sender's username, once the room's members are known: shown beside the
        /// display name, which anyone may choose alike.
        username: Option<String>,
    },
    /// A send on its way (or failed).
    Pending(Pending),
}

/// A room's message list in brief (see [`RoomState::list_version`]). Stored messages are
/// never edited, so their count and first and last seqs say which are there; pending sends
/// are listed with their state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListVersion {
    messages: usize,
    first: Option<u64>,
    last: Option<u64>,
    pending: Vec<(String, bool)>,
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
    /// Highest seq the user has seen.
    pub read: u64,
    /// Whether history older than the oldest loaded message exists.
    pub has_more: bool,
    /// Members by user id, with presence, once listed.
    pub members: BTreeMap<String, pb::User>,
    /// Who is typing: user id to (display name, expiry in ms since the epoch).
    pub typing: HashMap<String, (String, f64)>,
}

impl RoomState {
    /// A room first seen now. Everything in it counts as read unless `remembered_read`
    /// (from an earlier visit in this browser) says how far the user had read.
    pub(crate) fn new(room: pb::Room, remembered_read: Option<u64>) -> Self {
        let last = room.last_seq;
        Self {
            cursor: last,
            read: remembered_read.map_or(last, |read| read.min(last)),
            has_more: last > 0,
            room,
            ..Default::default()
        }
    }

    /// The name people see: the peer's for a direct conversation, else the room's.
    pub fn shown_name(&self) -> &str {
        self.room
            .peer
            .as_ref()
            .map_or(self.room.name.as_str(), |peer| peer.display_name.as_str())
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

    /// What the message list shows, in brief: it changes whenever [`RoomState::rows`] would,
    /// and not for typing or presence.
    pub fn list_version(&self) -> ListVersion {
        ListVersion {
            messages: self.messages.len(),
            first: self.messages.keys().next().copied(),
            last: self.messages.keys().next_back().copied(),
            pending: self
                .pending
                .iter()
                .map(|p| (p.client_id.clone(), p.failed))
                .collect(),
        }
    }

    /// The message list: messages in seq order with a separator wherever the day changes
    /// (`day_of` names the local day of a time in ms), then the sends on their way.
    pub fn rows(&self, me: &str, day_of: impl Fn(i64) -> String) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.messages.len() + self.pending.len() + 1);
        let mut day = None;
        for message in self.messages.values() {
            let this_day = day_of(message.sent_at);
            if day.as_ref() != Some(&this_day) {
                rows.push(Row::Day(this_day.clone()));
                day = Some(this_day);
            }
            rows.push(Row::Message {
                own: message.sender_id == me,
                username: self
                    .members
                    .get(&message.sender_id)
                    .map(|user| user.username.clone()),
                message: message.clone(),
            });
        }
        rows.extend(self.pending.iter().cloned().map(Row::Pending));
        rows
    }

    pub(crate) fn insert(&mut self, message: pb::Message) {
        self.room.last_seq = self.room.last_seq.max(message.seq);
        if !message.client_id.is_empty() {
            self.pending.retain(|p| p.client_id != message.client_id);
        }
        self.messages.insert(message.seq, message);
    }

    /// Merges a page of history (oldest first).
    pub(crate) fn merge_history(&mut self, page: pb::GetHistoryResponse) {
        let oldest_before = self.oldest_loaded();
        let page_oldest = page.messages.first().map(|m| m.seq);
        for message in page.messages {
            self.insert(message);
        }
        // Only a page at the old end (or an empty one) says whether older history exists.
        if oldest_before == 0 || page_oldest.is_none_or(|seq| seq <= oldest_before) {
            self.has_more = page.has_more;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn room(id: &str, last_seq: u64) -> pb::Room {
        pb::Room {
            id: id.into(),
            name: id.into(),
            last_seq,
            kind: pb::RoomKind::Group as i32,
            ..Default::default()
        }
    }

    pub(crate) fn message(room: &str, seq: u64, sender: &str, client_id: &str) -> pb::Message {
        pb::Message {
            room_id: room.into(),
            seq,
            sender_id: sender.into(),
            text: format!("m{seq}"),
            client_id: client_id.into(),
            ..Default::default()
        }
    }

    fn page(
        room: &str,
        seqs: std::ops::RangeInclusive<u64>,
        has_more: bool,
    ) -> pb::GetHistoryResponse {
        pb::GetHistoryResponse {
            messages: seqs.map(|s| message(room, s, "bob", "")).collect(),
            has_more,
        }
    }

    #[test]
    fn a_room_opened_after_live_messages_still_gets_its_newest_page() {
        let mut busy = RoomState::new(room("busy", 60), None);
        busy.insert(message("busy", 61, "bob", ""));
        busy.insert(message("busy", 62, "bob", ""));
        assert!(busy.needs_newest_page());
        busy.merge_history(page("busy", 13..=62, true));
        assert!(!busy.needs_newest_page());
        assert!(busy.has_more, "the newest page does not end the history");
        assert!(!RoomState::new(room("quiet", 0), None).needs_newest_page());
        // A log trimmed to fewer messages than a page: once fetched, not fetched again.
        let mut trimmed = RoomState::new(room("trimmed", 100), None);
        assert!(trimmed.needs_newest_page());
        trimmed.merge_history(page("trimmed", 91..=100, false));
        assert!(!trimmed.needs_newest_page());
    }

    #[test]
    fn an_empty_older_page_ends_the_history() {
        let mut room = RoomState::new(room("r", 80), None);
        room.merge_history(page("r", 31..=80, true));
        assert!(room.has_more);
        let empty = |has_more| pb::GetHistoryResponse {
            messages: Vec::new(),
            has_more,
        };
        room.merge_history(empty(true));
        assert!(
            room.has_more,
            "an empty page that says there is more is believed"
        );
        room.merge_history(empty(false));
        assert!(!room.has_more, "older history was trimmed away");
    }

    #[test]
    fn rows_name_senders_by_username_once_the_members_are_known() {
        let mut room = RoomState::new(room("r", 0), None);
        room.insert(message("r", 1, "u-alice", ""));
        let usernames = |room: &RoomState| -> Vec<Option<String>> {
            room.rows("me", |_| "today".into())
                .into_iter()
                .filter_map(|row| match row {
                    Row::Message { username, .. } => Some(username),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(usernames(&room), [None]);
        room.members.insert(
            "u-alice".into(),
            pb::User {
                id: "u-alice".into(),
                username: "alice".into(),
                display_name: "Alice".into(),
                online: true,
            },
        );
        assert_eq!(usernames(&room), [Some("alice".to_owned())]);
    }

    #[test]
    fn rows_separate_days_and_end_with_pending_sends() {
        let mut room = RoomState::new(room("r", 0), None);
        let day = 86_400_000;
        for (seq, sent_at, sender) in [(1, 10, "bob"), (2, 20, "me"), (3, day + 5, "bob")] {
            room.insert(pb::Message {
                sent_at,
                ..message("r", seq, sender, "")
            });
        }
        room.pending.push(Pending {
            client_id: "c".into(),
            text: "on its way".into(),
            failed: false,
        });
        let rows = room.rows("me", |ms| format!("day {}", ms / day));
        let shape: Vec<String> = rows
            .iter()
            .map(|row| match row {
                Row::Day(label) => label.clone(),
                Row::Message { message, own, .. } => {
                    format!("{}{}", message.seq, if *own { "*" } else { "" })
                }
                Row::Pending(pending) => pending.text.clone(),
            })
            .collect();
        assert_eq!(shape, ["day 0", "1", "2*", "day 1", "3", "on its way"]);
    }

    #[test]
    fn the_list_version_moves_with_the_rows_only() {
        let mut room = RoomState::new(room("r", 5), None);
        let mut seen = vec![room.list_version()];
        let mut changed = |room: &RoomState| {
            let version = room.list_version();
            let new = !seen.contains(&version);
            seen.push(version);
            new
        };
        room.insert(message("r", 6, "bob", ""));
        assert!(changed(&room), "a live message");
        room.merge_history(page("r", 2..=5, true));
        assert!(changed(&room), "an older page");
        room.pending.push(Pending {
            client_id: "c".into(),
            text: "hi".into(),
            failed: false,
        });
        assert!(changed(&room), "a send");
        room.pending[0].failed = true;
        assert!(changed(&room), "a failed send");
        room.typing.insert("bob".into(), ("Bob".into(), 1.0));
        room.read = 6;
        assert!(!changed(&room), "typing and reading change no row");
    }

    #[test]
    fn typing_names_expire() {
        let mut room = RoomState::new(room("r", 0), None);
        room.typing.insert("b".into(), ("Bob".into(), 1000.0));
        room.typing.insert("a".into(), ("Ann".into(), 3000.0));
        assert_eq!(room.typing_names(500.0), ["Ann", "Bob"]);
        assert_eq!(room.typing_names(2000.0), ["Ann"]);
    }
}
