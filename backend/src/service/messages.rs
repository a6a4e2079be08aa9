//! Sending, history and typing.

use natter_proto::v1 as pb;

use super::Natter;
use crate::{
    auth::{self, Caller},
    bus::Topic,
    convert,
    domain::{ClientId, MessageText, new_id},
    error::ApiResult,
    store::{MessageRecord, NewMessage},
};

const DEFAULT_HISTORY: usize = 50;
const MAX_HISTORY: usize = 200;

impl Natter {
    /// Appends a message; a retry with the same `client_id` returns the original.
    #[tracing::instrument(name = "send_message", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub async fn send_message(
        &self,
        caller: &Caller,
        room_id: &str,
        text: MessageText,
        client_id: ClientId,
    ) -> ApiResult<pb::Message> {
        let sender = self.account(caller).await?;
        self.member_room(caller, room_id).await?;
        let appended = self
            .store
            .append_message(NewMessage {
                message: MessageRecord {
                    id: new_id(),
                    room_id: room_id.to_owned(),
                    seq: 0,
                    sender_id: sender.id,
                    sender_name: sender.display_name,
                    text: text.as_str().to_owned(),
                    sent_at: auth::now_ms(),
                    client_id: client_id.as_str().to_owned(),
                },
            })
            .await?;
        tracing::debug!(
            seq = appended.message.seq,
            created = appended.created,
            "message stored"
        );
        if appended.created {
            crate::metrics::Metrics::inc(&self.metrics.messages_stored);
        }
        Ok(convert::message(&appended.message))
    }

    /// A page of history, oldest first, ending before `before_seq` (0: the newest).
    #[tracing::instrument(name = "get_history", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub async fn history(
        &self,
        caller: &Caller,
        room_id: &str,
        before_seq: u64,
        limit: u32,
    ) -> ApiResult<pb::GetHistoryResponse> {
        let room = self.member_room(caller, room_id).await?;
        let limit = match limit as usize {
            0 => DEFAULT_HISTORY,
            n => n.min(MAX_HISTORY),
        };
        let messages = self
            .store
            .messages_before(room_id, before_seq, limit)
            .await?;
        let has_more = messages
            .first()
            .is_some_and(|oldest| oldest.seq > room.first_seq.max(1));
        Ok(pb::GetHistoryResponse {
            messages: messages.iter().map(convert::message).collect(),
            has_more,
        })
    }

    /// Tells the room's other members that the caller is (or stopped) typing. Transient:
    /// nothing is stored.
    #[tracing::instrument(name = "set_typing", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub async fn set_typing(&self, caller: &Caller, room_id: &str, typing: bool) -> ApiResult<()> {
        let user = self.account(caller).await?;
        self.member_room(caller, room_id).await?;
        let event = pb::event::Event::Typing(pb::Typing {
            room_id: room_id.to_owned(),
            user: Some(convert::user(&user, true)),
            typing,
        });
        self.bus
            .publish(&Topic::Room(room_id.to_owned()), convert::event(event))
            .await?;
        Ok(())
    }
}
