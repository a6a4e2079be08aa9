//! Human-readable lines for events, shared by `tail` and `chat`.

use std::collections::HashMap;

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};

/// Room names by id, kept current from `Ready` and `RoomChanged` events.
#[derive(Debug, Default)]
pub struct RoomNames(HashMap<String, String>);

impl RoomNames {
    fn label(&self, room_id: &str) -> String {
        self.0
            .get(room_id)
            .cloned()
            .unwrap_or_else(|| room_id.to_owned())
    }

    fn remember(&mut self, room: &pb::Room) {
        let name = match &room.peer {
            Some(peer) => format!("@{}", peer.username),
            None => room.name.clone(),
        };
        self.0.insert(room.id.clone(), name);
    }

    /// The line to print for an event, or `None` for events not worth a line (heartbeats).
    pub fn line(&mut self, event: &Ev) -> Option<String> {
        Some(match event {
            Ev::Ready(ready) => {
                ready.rooms.iter().for_each(|r| self.remember(r));
                format!("* connected, following {} room(s)", ready.rooms.len())
            }
            Ev::Message(m) => message_line(&self.label(&m.room_id), m),
            Ev::Presence(p) => {
                let who = p.user.as_ref().map_or("someone", |u| u.username.as_str());
                let state = if p.online { "online" } else { "offline" };
                format!("* {who} is {state} [{}]", self.label(&p.room_id))
            }
            Ev::Typing(t) if t.typing => {
                let who = t.user.as_ref().map_or("someone", |u| u.username.as_str());
                format!("* {who} is typing [{}]", self.label(&t.room_id))
            }
            Ev::Typing(_) | Ev::Heartbeat(_) => return None,
            Ev::RoomChanged(c) => {
                let room = c.room.clone().unwrap_or_default();
                self.remember(&room);
                let who = c.user.as_ref().map_or("someone", |u| u.username.as_str());
                let label = self.label(&room.id);
                match RoomChange::try_from(c.change).unwrap_or(RoomChange::Unspecified) {
                    RoomChange::Joined => format!("* you are in [{label}] (code {})", room.code),
                    RoomChange::Left => format!("* you left [{label}]"),
                    RoomChange::Deleted => format!("* [{label}] was deleted"),
                    RoomChange::MemberJoined => format!("* {who} joined [{label}]"),
                    RoomChange::MemberLeft => format!("* {who} left [{label}]"),
                    RoomChange::Unspecified => return None,
                }
            }
            Ev::SendAck(ack) => format!("* sent #{}", ack.message.as_ref().map_or(0, |m| m.seq)),
            Ev::FrameError(e) => format!("! {}", e.message),
            Ev::GoAway(g) => format!("* {}; reconnecting", g.reason),
            Ev::SessionEnded(s) => format!("! session ended ({}): sign in again", s.reason),
            Ev::HistoryTrimmed(t) => format!(
                "! [{}] history before #{} is no longer kept",
                self.label(&t.room_id),
                t.first_available_seq
            ),
        })
    }
}

/// `[room] #seq sender: text`, with continuation lines indented.
pub fn message_line(room: &str, m: &pb::Message) -> String {
    let text = m.text.replace('\n', "\n    ");
    format!("[{room}] #{} {}: {text}", m.seq, m.sender_name)
}
