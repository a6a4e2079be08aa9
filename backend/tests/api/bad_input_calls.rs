//! The bad-input suite, second half: invalid messages, other people's rooms, bad Chat
//! frames, raw gRPC-Web bytes and floods (the first half is in `bad_input`).

use natter_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{
    bad_input::{frame, grpc_web, start},
    helpers::*,
};

#[tokio::test]
async fn bad_messages_foreign_rooms_frames_bytes_and_floods_get_their_status() {
    let (app, mut suite, mut mallory, lounge) = start().await;
    let auth = app.auth();
    let login = |username: &str, password: &str| pb::LoginRequest {
        username: username.into(),
        password: password.into(),
    };

    // Messages.
    let send = |room_id: &str, text: &str, client_id: &str| pb::SendMessageRequest {
        room_id: room_id.into(),
        text: text.into(),
        client_id: client_id.into(),
    };
    let own = mallory.create_room("Mallory's").await;
    for (name, request, code, needle) in [
        (
            "empty message",
            send(&own.id, " \n ", ""),
            Code::InvalidArgument,
            "must not be empty",
        ),
        (
            "message too long",
            send(&own.id, &"x".repeat(4001), ""),
            Code::InvalidArgument,
            "at most 4000",
        ),
        (
            "control characters",
            send(&own.id, "bell\u{7}", ""),
            Code::InvalidArgument,
            "control characters",
        ),
        (
            "empty room id",
            send("", "hi", ""),
            Code::InvalidArgument,
            "room_id",
        ),
        (
            "unknown room",
            send("0123456789abcdef0123456789abcdef", "hi", ""),
            Code::NotFound,
            "room not found",
        ),
        (
            "someone else's room",
            send(&lounge.id, "hi", ""),
            Code::PermissionDenied,
            "not a member",
        ),
        (
            "long client id",
            send(&own.id, "hi", &"c".repeat(65)),
            Code::InvalidArgument,
            "client_id",
        ),
    ] {
        let result = mallory.chat.send_message(request).await;
        suite.case(name, result, code, needle).await;
    }

    // Other people's rooms.
    let lounge_id = || lounge.id.clone();
    suite
        .case(
            "someone else's history",
            mallory
                .chat
                .get_history(pb::GetHistoryRequest {
                    room_id: lounge_id(),
                    before_seq: 0,
                    limit: 0,
                })
                .await,
            Code::PermissionDenied,
            "not a member",
        )
        .await;
    suite
        .case(
            "someone else's members",
            mallory
                .chat
                .list_members(pb::ListMembersRequest {
                    room_id: lounge_id(),
                })
                .await,
            Code::PermissionDenied,
            "not a member",
        )
        .await;
    suite
        .case(
            "typing in someone else's room",
            mallory
                .chat
                .set_typing(pb::SetTypingRequest {
                    room_id: lounge_id(),
                    typing: true,
                })
                .await,
            Code::PermissionDenied,
            "not a member",
        )
        .await;
    suite
        .case(
            "leaving a room one is not in",
            mallory
                .chat
                .leave_room(pb::LeaveRoomRequest {
                    room_id: lounge_id(),
                })
                .await,
            Code::PermissionDenied,
            "not a member",
        )
        .await;
    suite
        .case(
            "deleting someone else's room",
            mallory
                .chat
                .delete_room(pb::DeleteRoomRequest {
                    room_id: lounge_id(),
                })
                .await,
            Code::PermissionDenied,
            "owner or an admin",
        )
        .await;
    suite
        .case(
            "removing from someone else's room",
            mallory
                .chat
                .remove_member(pb::RemoveMemberRequest {
                    room_id: lounge_id(),
                    user_id: suite.healthy.user.id.clone(),
                })
                .await,
            Code::PermissionDenied,
            "owner or an admin",
        )
        .await;
    suite
        .case(
            "rotating someone else's code",
            mallory
                .chat
                .rotate_room_code(pb::RotateRoomCodeRequest {
                    room_id: lounge_id(),
                })
                .await,
            Code::PermissionDenied,
            "owner or an admin",
        )
        .await;
    suite
        .case(
            "disabling an account, not an admin",
            mallory
                .chat
                .set_account_disabled(pb::SetAccountDisabledRequest {
                    user_id: suite.healthy.user.id.clone(),
                    disabled: true,
                })
                .await,
            Code::PermissionDenied,
            "only admins",
        )
        .await;
    suite
        .case(
            "directory query too long",
            mallory
                .chat
                .list_users(pb::ListUsersRequest {
                    query: "q".repeat(65),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await,
            Code::InvalidArgument,
            "query",
        )
        .await;
    suite
        .case(
            "forged page token",
            mallory
                .chat
                .list_users(pb::ListUsersRequest {
                    query: String::new(),
                    page_size: 0,
                    page_token: "t".repeat(65),
                })
                .await,
            Code::InvalidArgument,
            "page_token",
        )
        .await;

    // A Chat stream's bad frames are answered on the stream, which stays open.
    let (frames, outgoing) = tokio::sync::mpsc::channel(8);
    let mut events = mallory
        .chat
        .chat(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    let frame_of = |id: &str, frame| pb::ClientFrame {
        frame_id: id.into(),
        frame,
    };
    frames
        .send(frame_of(
            "sub",
            Some(pb::client_frame::Frame::Subscribe(Default::default())),
        ))
        .await
        .unwrap();
    expect_ready(&mut events).await;
    frames.send(frame_of("empty", None)).await.unwrap();
    let error = wait_for_frame_error(&mut events).await;
    assert_eq!(
        (error.frame_id.as_str(), error.code),
        ("empty", Code::InvalidArgument as i32)
    );
    suite.still_serving("a frame with nothing in it").await;
    frames
        .send(frame_of(
            "again",
            Some(pb::client_frame::Frame::Subscribe(Default::default())),
        ))
        .await
        .unwrap();
    let error = wait_for_frame_error(&mut events).await;
    assert_eq!(
        (error.frame_id.as_str(), error.code),
        ("again", Code::FailedPrecondition as i32)
    );
    suite.still_serving("subscribing twice on one stream").await;
    frames
        .send(frame_of(
            "sent",
            Some(pb::client_frame::Frame::Send(send(
                &own.id,
                "after all that",
                "",
            ))),
        ))
        .await
        .unwrap();
    let ack = wait_for_ack(&mut events).await;
    assert_eq!(ack.frame_id, "sent");

    // gRPC-Web over HTTP/1.1, byte by byte.
    let web = "application/grpc-web+proto";
    let malformed = grpc_web(
        &app,
        "/natter.v1.AuthService/Login",
        web,
        &frame(&[0xff; 8], 8),
    )
    .await;
    assert!(
        malformed.contains("grpc-status: 13") || malformed.contains("grpc-status:13"),
        "{malformed}"
    );
    assert!(malformed.contains("failed%20to%20decode"), "{malformed}");
    suite.still_serving("a frame that is not protobuf").await;
    let oversized = grpc_web(
        &app,
        "/natter.v1.AuthService/Login",
        web,
        &frame(&[0; 8], 10 << 20),
    )
    .await;
    assert!(
        oversized.contains("grpc-status: 11") || oversized.contains("grpc-status:11"),
        "{oversized}"
    );
    suite.still_serving("a frame claiming 10 MiB").await;
    let unknown = grpc_web(&app, "/natter.v1.AuthService/Teleport", web, &frame(&[], 0)).await;
    assert!(
        unknown.contains("grpc-status: 12") || unknown.contains("grpc-status:12"),
        "{unknown}"
    );
    suite.still_serving("an unknown method").await;
    let not_grpc = grpc_web(&app, "/natter.v1.AuthService/Login", "text/plain", b"hello").await;
    // Not gRPC at all: plain HTTP's answer.
    assert!(
        not_grpc.starts_with("HTTP/1.1 400 Bad Request"),
        "{not_grpc}"
    );
    suite
        .still_serving("a plain-text body to a gRPC method")
        .await;

    // Floods.
    let flooded = loop {
        match mallory.chat.send_message(send(&own.id, "flood", "")).await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    suite
        .case(
            "a flood of messages",
            Err::<(), _>(flooded),
            Code::ResourceExhausted,
            "too many messages sent",
        )
        .await;
    let guessed = loop {
        match auth.clone().login(login("healthy", "guess")).await {
            Err(status) if status.code() == Code::Unauthenticated => continue,
            other => break other,
        }
    };
    suite
        .case(
            "a flood of password guesses",
            guessed,
            Code::ResourceExhausted,
            "too many sign-in attempts",
        )
        .await;

    assert!(suite.cases >= 25, "only {} cases", suite.cases);
    suite.in_order().await;
}
