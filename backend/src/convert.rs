//! Stored records to wire types. The only place that builds proto values from records.

use natter_proto::v1 as pb;

use crate::records::{MessageRecord, RoomKind, RoomRecord, UserRecord};

/// A message as clients see it.
pub(crate) fn message(m: &MessageRecord) -> pb::Message {
    pb::Message {
        id: m.id.clone(),
        room_id: m.room_id.clone(),
        seq: m.seq,
        sender_id: m.sender_id.clone(),
        sender_name: m.sender_name.clone(),
        text: m.text.clone(),
        sent_at: m.sent_at,
        client_id: m.client_id.clone(),
    }
}

/// A user as others see them; never includes the password hash.
pub(crate) fn user(u: &UserRecord, online: bool) -> pb::User {
    pb::User {
        id: u.id.clone(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        online,
    }
}

/// A room as clients see it; `peer` is the other participant of a direct room.
pub(crate) fn room(r: &RoomRecord, peer: Option<pb::User>) -> pb::Room {
    pb::Room {
        id: r.id.clone(),
        name: r.name.clone(),
        code: r.code.clone().unwrap_or_default(),
        owner_id: r.owner_id.clone(),
        has_password: r.password_hash.is_some(),
        kind: match r.kind {
            RoomKind::Group => pb::RoomKind::Group,
            RoomKind::Direct => pb::RoomKind::Direct,
        } as i32,
        created_at: r.created_at,
        last_seq: r.last_seq,
        peer,
        first_seq: r.first_seq,
    }
}

/// Wraps an event payload.
pub(crate) fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}
