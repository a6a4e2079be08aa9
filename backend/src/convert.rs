//! Records and the service's views to wire types: the only place that builds protobuf
//! values from them.

use natter_proto::v1 as pb;

use crate::{
    records::{MessageRecord, RoomKind, RoomRecord, UserRecord},
    views::{Grant, HistoryPage, MemberView, Notice, RoomChange, RoomView, UserView, UsersPage},
};

/// A message as clients see it.
pub(crate) fn message(m: &MessageRecord) -> pb::Message {
    pb::Message {
        id: m.id.clone(),
        room_id: m.room_id.to_string(),
        seq: m.seq,
        sender_id: m.sender_id.to_string(),
        sender_name: m.sender_name.clone(),
        text: m.text.clone(),
        sent_at: m.sent_at,
        client_id: m.client_id.clone(),
    }
}

/// A user as others see them; never includes the password hash.
pub(crate) fn user(u: &UserRecord, online: bool) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        online,
    }
}

/// A room as clients see it; `peer` is the other participant of a direct room.
pub(crate) fn room(r: &RoomRecord, peer: Option<pb::User>) -> pb::Room {
    pb::Room {
        id: r.id.to_string(),
        name: r.name.clone(),
        code: r.kind.code().unwrap_or_default().to_owned(),
        owner_id: r.owner_id.to_string(),
        has_password: r.kind.password_hash().is_some(),
        kind: match r.kind {
            RoomKind::Group { .. } => pb::RoomKind::Group,
            RoomKind::Direct { .. } => pb::RoomKind::Direct,
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

/// A user with presence.
pub(crate) fn user_view(v: &UserView) -> pb::User {
    user(&v.user, v.online)
}

/// A room as its viewer sees it.
pub(crate) fn room_view(v: &RoomView) -> pb::Room {
    room(&v.room, v.peer.as_ref().map(user_view))
}

/// A member of a room.
pub(crate) fn member(v: &MemberView) -> pb::Member {
    pb::Member {
        user: Some(user_view(&v.user)),
        is_owner: v.is_owner,
    }
}

/// A signed-in session.
pub(crate) fn grant(g: &Grant) -> pb::AuthResponse {
    pb::AuthResponse {
        access_token: g.token.clone(),
        expires_at: g.expires_at,
        expires_in_ms: g.expires_in_ms,
        user: Some(user(&g.user, false)),
        role: g.role.as_str().to_owned(),
    }
}

/// A page of the directory.
pub(crate) fn users_page(p: &UsersPage) -> pb::ListUsersResponse {
    pb::ListUsersResponse {
        users: p.users.iter().map(user_view).collect(),
        next_page_token: p.next_page_token.clone(),
    }
}

/// A page of history.
pub(crate) fn history_page(p: &HistoryPage) -> pb::GetHistoryResponse {
    pb::GetHistoryResponse {
        messages: p.messages.iter().map(message).collect(),
        has_more: p.has_more,
    }
}

/// How a room changed.
pub(crate) fn room_change(c: RoomChange) -> pb::RoomChange {
    match c {
        RoomChange::Joined => pb::RoomChange::Joined,
        RoomChange::Left => pb::RoomChange::Left,
        RoomChange::Deleted => pb::RoomChange::Deleted,
        RoomChange::MemberJoined => pb::RoomChange::MemberJoined,
        RoomChange::MemberLeft => pb::RoomChange::MemberLeft,
    }
}

/// A transient notice as the event streams carry it.
pub(crate) fn notice(n: &Notice) -> pb::Event {
    event(match n {
        Notice::RoomChanged { room, change, user } => {
            pb::event::Event::RoomChanged(pb::RoomChanged {
                room: Some(room_view(room)),
                change: room_change(*change) as i32,
                user: user.as_ref().map(user_view),
            })
        }
        Notice::Presence { room_id, user } => pb::event::Event::Presence(pb::PresenceChanged {
            room_id: room_id.to_string(),
            user: Some(user_view(user)),
            online: user.online,
        }),
        Notice::Typing {
            room_id,
            user,
            typing,
        } => pb::event::Event::Typing(pb::Typing {
            room_id: room_id.to_string(),
            user: Some(user_view(user)),
            typing: *typing,
        }),
        Notice::SessionEnded { reason } => pb::event::Event::SessionEnded(pb::SessionEnded {
            reason: (*reason).to_owned(),
        }),
    })
}
