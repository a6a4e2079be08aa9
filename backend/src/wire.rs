//! The wire, inbound: generated request types become validated domain commands here, once,
//! for every door they come through (gRPC in `api/`, `Chat` frames in `stream`, JSON in
//! `http`). Outbound conversion of records is in `convert`.

use natter_proto::v1 as pb;

use crate::{
    domain::{ClientId, InvalidField, MessageText, Registration, SendMessage, SetTyping},
    ids::RoomId,
};

/// `Register` (the JSON endpoint calls [`Registration::parse`] with its fields).
impl TryFrom<&pb::RegisterRequest> for Registration {
    type Error = InvalidField;

    fn try_from(r: &pb::RegisterRequest) -> Result<Self, InvalidField> {
        Self::parse(&r.username, &r.password, &r.display_name)
    }
}

/// `SendMessage`, or a `Chat` send frame.
impl TryFrom<&pb::SendMessageRequest> for SendMessage {
    type Error = InvalidField;

    fn try_from(r: &pb::SendMessageRequest) -> Result<Self, InvalidField> {
        Ok(Self {
            room_id: RoomId::parse("room_id", &r.room_id)?,
            text: MessageText::parse(&r.text)?,
            client_id: ClientId::parse(&r.client_id)?,
        })
    }
}

/// `SetTyping`, or a `Chat` typing frame.
impl TryFrom<&pb::SetTypingRequest> for SetTyping {
    type Error = InvalidField;

    fn try_from(r: &pb::SetTypingRequest) -> Result<Self, InvalidField> {
        Ok(Self {
            room_id: RoomId::parse("room_id", &r.room_id)?,
            typing: r.typing,
        })
    }
}
