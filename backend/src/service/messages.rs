//! Sending, history and typing.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::Natter;
use crate::rate_limits::Action;
use crate::{
    auth::{self, Caller},
    domain::{SendMessage, SetTyping, new_id},
    error::ApiResult,
    ids::{RoomId, UserId},
    records::MessageRecord,
    seams::{NewMessage, Topic},
    views::{HistoryPage, Notice, UserView},
};

/// Shortest interval between two typing events of one user in one room. Clients send
/// "typing" at most every few seconds; more is noise that would only push other events out
/// of the room's broadcast buffer. Clients should expire a typing indicator by themselves.
const TYPING_INTERVAL: Duration = Duration::from_millis(500);

/// Drops typing events that follow another of the same user and room too closely.
#[derive(Debug, Default)]
pub(crate) struct TypingThrottle {
    last: Mutex<HashMap<(UserId, RoomId), Instant>>,
}

impl TypingThrottle {
    /// Whether an event may go out now (and records it if so).
    fn admit(&self, user_id: &UserId, room_id: &RoomId) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().expect("typing lock poisoned");
        if last.len() > 10_000 {
            last.retain(|_, at| now.duration_since(*at) < TYPING_INTERVAL);
        }
        let key = (user_id.clone(), room_id.clone());
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < TYPING_INTERVAL => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }

    /// A sent message ends a burst of typing: the next "typing" starts a new one and goes out.
    fn reset(&self, user_id: &UserId, room_id: &RoomId) {
        let mut last = self.last.lock().expect("typing lock poisoned");
        last.remove(&(user_id.clone(), room_id.clone()));
    }
}

const DEFAULT_HISTORY: usize = 50;
const MAX_HISTORY: usize = 200;

/// Largest page of history, in bytes of message text and metadata: 200 messages of 4,000
/// characters would make a 3 MB answer, and an answer the client does not read stays in
/// the server's memory (HTTP/2 holds what does not fit the client's window). The client
/// pages on with `before_seq`.
const MAX_HISTORY_BYTES: usize = 256 * 1024;

/// What a message costs a page besides its text (ids, names, numbers), roughly.
const MESSAGE_OVERHEAD_BYTES: usize = 128;

/// Drops the oldest messages of a page (oldest first) until it fits `budget`, keeping at
/// least the newest; whether any were dropped.
fn keep_newest_within(page: &mut Vec<MessageRecord>, budget: usize) -> bool {
    let mut total = 0;
    let over = page.iter().rposition(|message| {
        total += message.text.len() + message.sender_name.len() + MESSAGE_OVERHEAD_BYTES;
        total > budget
    });
    match over {
        Some(index) => {
            let keep_from = (index + 1).min(page.len() - 1);
            page.drain(..keep_from);
            keep_from > 0
        }
        None => false,
    }
}

impl Natter {
    /// Appends a message; a retry with the same `client_id` returns the original.
    #[tracing::instrument(name = "send_message", skip_all, fields(user = %caller.user_id, room = %send.room_id))]
    pub(crate) async fn send_message(
        &self,
        caller: &Caller,
        send: SendMessage,
    ) -> ApiResult<MessageRecord> {
        let SendMessage {
            room_id,
            text,
            client_id,
        } = send;
        let room_id = &room_id;
        let started = Instant::now();
        self.limits.account(Action::Send, &caller.user_id)?;
        // Only the account is read first: the append itself refuses an unknown room and a
        // sender who is not a member, atomically with storing. Reading both here as well
        // cost every send the room's record and a membership check (over Redis, four more
        // commands, as counted in BENCHMARKS.md), and their answer could be stale by the
        // time the append ran anyway.
        let sender = self.account(caller).await?;
        let appending = Instant::now();
        let appended = self
            .log
            .append(NewMessage {
                id: new_id(),
                room_id: room_id.clone(),
                sender_id: sender.id,
                sender_name: sender.display_name,
                text: text.as_str().to_owned(),
                sent_at: auth::now_ms(),
                client_id: client_id.as_str().to_owned(),
            })
            .await?;
        let metrics = &self.metrics;
        metrics.append_duration.observe(appending.elapsed());
        metrics.send_duration.observe(started.elapsed());
        tracing::debug!(
            seq = appended.message.seq,
            created = appended.created,
            "message stored"
        );
        crate::metrics::Metrics::inc(if appended.created {
            &self.metrics.messages_stored
        } else {
            &self.metrics.send_retries
        });
        self.typing.reset(&caller.user_id, room_id);
        Ok(appended.message)
    }

    /// A page of history, oldest first, ending before `before_seq` (0: the newest).
    #[tracing::instrument(name = "get_history", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub(crate) async fn history(
        &self,
        caller: &Caller,
        room_id: &RoomId,
        before_seq: u64,
        limit: u32,
    ) -> ApiResult<HistoryPage> {
        let (_, room) = self.account_in_room(caller, room_id).await?;
        let limit = match limit as usize {
            0 => DEFAULT_HISTORY,
            n => n.min(MAX_HISTORY),
        };
        let mut messages = self.log.messages_before(room_id, before_seq, limit).await?;
        let trimmed = keep_newest_within(&mut messages, MAX_HISTORY_BYTES);
        let has_more = trimmed
            || messages
                .first()
                .is_some_and(|oldest| oldest.seq > room.first_seq.max(1));
        Ok(HistoryPage { messages, has_more })
    }

    /// Tells the room's other members that the caller is (or stopped) typing. Transient:
    /// nothing is stored.
    #[tracing::instrument(name = "set_typing", skip_all, fields(user = %caller.user_id, room = %typing.room_id))]
    pub(crate) async fn set_typing(&self, caller: &Caller, typing: SetTyping) -> ApiResult<()> {
        let SetTyping { room_id, typing } = typing;
        let room_id = &room_id;
        self.limits.account(Action::Typing, &caller.user_id)?;
        let (user, _) = self.account_in_room(caller, room_id).await?;
        if !self.typing.admit(&user.id, room_id) {
            return Ok(());
        }
        let notice = Notice::Typing {
            room_id: room_id.clone(),
            user: UserView { user, online: true },
            typing,
        };
        self.publish(&Topic::Room(room_id.clone()), &notice).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_is_throttled_per_user_and_room() {
        let throttle = TypingThrottle::default();
        assert!(throttle.admit(&UserId::from_trusted("u1"), &RoomId::from_trusted("r1")));
        assert!(
            !throttle.admit(&UserId::from_trusted("u1"), &RoomId::from_trusted("r1")),
            "too soon after the last one"
        );
        assert!(
            throttle.admit(&UserId::from_trusted("u1"), &RoomId::from_trusted("r2")),
            "another room"
        );
        assert!(
            throttle.admit(&UserId::from_trusted("u2"), &RoomId::from_trusted("r1")),
            "another user"
        );
        throttle.reset(&UserId::from_trusted("u1"), &RoomId::from_trusted("r1"));
        assert!(
            throttle.admit(&UserId::from_trusted("u1"), &RoomId::from_trusted("r1")),
            "a sent message starts a new burst"
        );
    }
}
