//! `natter.v1.ChatService`. The auth interceptor has already verified the token.

use std::sync::Arc;

use natter_proto::{
    EncodedEvent,
    v1::{self as pb, server::chat_service_server::ChatService},
};
use tonic::{Request, Response, Status, Streaming};

use super::{
    GrpcWeb,
    answer_body::EventBody,
    caller,
    in_flight::{HeldUntilSent, InFlight},
};
use crate::{
    auth::Caller,
    convert,
    domain::{Password, RoomCode, RoomName, SendMessage, SetTyping},
    error::ApiError,
    ids::{RoomId, UserId},
    listener::ConnectionControl,
    metrics::Limit,
    service::Natter,
    stream::{Outbox, SendWatch, Session, SessionBody},
};

/// The chat over gRPC.
#[derive(Debug, Clone)]
pub(crate) struct ChatApi {
    natter: Arc<Natter>,
    /// The send deadline's record of this instance's streams (`None` without a deadline).
    watch: Option<Arc<SendWatch>>,
    /// History pages being sent, per account.
    history_reads: Arc<InFlight>,
}

impl ChatApi {
    /// The service over shared state.
    pub(crate) fn new(natter: Arc<Natter>, watch: Option<Arc<SendWatch>>) -> Self {
        let history_reads = InFlight::new(natter.config().max_history_reads_per_user);
        Self {
            natter,
            watch,
            history_reads,
        }
    }

    /// Opens a session whose future is the response stream itself (see `stream::body`).
    async fn start_stream(
        &self,
        caller: Caller,
        web: bool,
        connection: Option<Arc<ConnectionControl>>,
        initial: Option<pb::SubscribeRequest>,
        frames: Option<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<EventStream>, Status> {
        let outbox = Arc::new(Outbox::default());
        let session = Session::open(self.natter.clone(), caller, web, outbox.clone()).await?;
        let watched = self.watch.as_ref().map(|watch| watch.watch(connection));
        let body = SessionBody::new(outbox, watched, session.run(initial, frames));
        let mut response = Response::new(futures::stream::empty());
        response
            .extensions_mut()
            .insert(EventBody::new(tonic::body::Body::new(body)));
        Ok(response)
    }
}

fn room_id(raw: &str) -> Result<RoomId, ApiError> {
    Ok(RoomId::parse("room_id", raw)?)
}

/// The response stream of `Subscribe` and `Chat` as tonic sees it: empty. The events are
/// the [`EventBody`] in the answer's extensions, which `answer_body::AnswerBodyLayer`
/// makes the body.
pub(crate) type EventStream = futures::stream::Empty<Result<EncodedEvent, Status>>;

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        Ok(Response::new(convert::users_page(
            &self
                .natter
                .list_users(&caller, &r.query, r.page_size, &r.page_token)
                .await?,
        )))
    }

    async fn set_account_disabled(
        &self,
        request: Request<pb::SetAccountDisabledRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let target = UserId::parse("user_id", &r.user_id).map_err(ApiError::from)?;
        Ok(Response::new(convert::user_view(
            &self
                .natter
                .set_account_disabled(&caller, &target, r.disabled)
                .await?,
        )))
    }

    async fn block_user(
        &self,
        request: Request<pb::BlockUserRequest>,
    ) -> Result<Response<pb::BlockUserResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let target = UserId::parse("user_id", &r.user_id).map_err(ApiError::from)?;
        self.natter.block_user(&caller, &target, r.blocked).await?;
        Ok(Response::new(pb::BlockUserResponse {}))
    }

    async fn rotate_room_code(
        &self,
        request: Request<pb::RotateRoomCodeRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let room_id = room_id(&request.get_ref().room_id)?;
        Ok(Response::new(convert::room_view(
            &self.natter.rotate_room_code(&caller, &room_id).await?,
        )))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let room_id = room_id(&r.room_id)?;
        let member = UserId::parse("user_id", &r.user_id).map_err(ApiError::from)?;
        self.natter
            .remove_member(&caller, &room_id, &member)
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let name = RoomName::parse(&r.name).map_err(ApiError::from)?;
        let password = Password::parse_room(&r.password).map_err(ApiError::from)?;
        Ok(Response::new(convert::room_view(
            &self.natter.create_room(&caller, name, password).await?,
        )))
    }

    async fn join_room(
        &self,
        request: Request<pb::JoinRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let code = RoomCode::parse(&r.code).map_err(ApiError::from)?;
        Ok(Response::new(convert::room_view(
            &self.natter.join_room(&caller, code, &r.password).await?,
        )))
    }

    async fn leave_room(
        &self,
        request: Request<pb::LeaveRoomRequest>,
    ) -> Result<Response<pb::LeaveRoomResponse>, Status> {
        let caller = caller(&request)?;
        let room_id = room_id(&request.get_ref().room_id)?;
        self.natter.leave_room(&caller, &room_id).await?;
        Ok(Response::new(pb::LeaveRoomResponse {}))
    }

    async fn delete_room(
        &self,
        request: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomResponse>, Status> {
        let caller = caller(&request)?;
        let room_id = room_id(&request.get_ref().room_id)?;
        self.natter.delete_room(&caller, &room_id).await?;
        Ok(Response::new(pb::DeleteRoomResponse {}))
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let caller = caller(&request)?;
        let rooms = self.natter.list_rooms(&caller).await?;
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: rooms.iter().map(convert::room_view).collect(),
        }))
    }

    async fn open_direct(
        &self,
        request: Request<pb::OpenDirectRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let caller = caller(&request)?;
        let user_id =
            UserId::parse("user_id", &request.get_ref().user_id).map_err(ApiError::from)?;
        Ok(Response::new(convert::room_view(
            &self.natter.open_direct(&caller, &user_id).await?,
        )))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = caller(&request)?;
        let room_id = room_id(&request.get_ref().room_id)?;
        let members = self.natter.list_members(&caller, &room_id).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.iter().map(convert::member).collect(),
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let caller = caller(&request)?;
        let web = request.extensions().get::<GrpcWeb>().is_some();
        let send = SendMessage::try_from(request.get_ref()).map_err(ApiError::from)?;
        let message = self.natter.send_message(&caller, send).await?;
        self.natter.metrics().messages_received.inc(web);
        Ok(Response::new(convert::message(&message)))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let room_id = room_id(&r.room_id)?;
        let place = self.history_reads.take(&caller.user_id).ok_or_else(|| {
            self.natter.metrics().rejections.count(Limit::HistoryReads);
            ApiError::ResourceExhausted {
                what: "too many history pages are on their way to this account: read them first",
                retry_after: Some(std::time::Duration::from_secs(1)),
            }
        })?;
        let page = self
            .natter
            .history(&caller, &room_id, r.before_seq, r.limit)
            .await?;
        let mut response = Response::new(convert::history_page(&page));
        response
            .extensions_mut()
            .insert(HeldUntilSent(Arc::new(place)));
        Ok(response)
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let caller = caller(&request)?;
        let typing = SetTyping::try_from(request.get_ref()).map_err(ApiError::from)?;
        self.natter.set_typing(&caller, typing).await?;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let web = request.extensions().get::<GrpcWeb>().is_some();
        let connection = request
            .extensions()
            .get::<Arc<ConnectionControl>>()
            .cloned();
        let r = request.into_inner();
        for cursor in &r.resume {
            RoomId::parse("resume.room_id", &cursor.room_id).map_err(ApiError::from)?;
        }
        self.start_stream(caller, web, connection, Some(r), None)
            .await
    }

    type ChatStream = EventStream;

    async fn chat(
        &self,
        request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let web = request.extensions().get::<GrpcWeb>().is_some();
        let connection = request
            .extensions()
            .get::<Arc<ConnectionControl>>()
            .cloned();
        self.start_stream(caller, web, connection, None, Some(request.into_inner()))
            .await
    }
}
