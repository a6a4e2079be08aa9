//! The bad-input suite: malformed, forged, oversized, cross-room and flooding requests.
//! Each case checks the exact status and its message, then that the server still serves
//! another client (a message sent and acknowledged on another connection).

use base64::Engine;
use natter_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};

use crate::helpers::*;

const SECRET: &str = "an-explicit-test-secret-of-32-bytes-or-more";

/// The healthy client, and the count of cases run.
struct Suite {
    healthy: TestUser,
    room_id: String,
    cases: usize,
}

impl Suite {
    /// Checks one case's outcome, then that the server still serves the healthy client.
    async fn case<T: std::fmt::Debug>(
        &mut self,
        name: &str,
        result: Result<T, tonic::Status>,
        code: Code,
        needle: &str,
    ) {
        let status = result.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{name}: {:?} should mention {needle:?}",
            status.message()
        );
        self.still_serving(name).await;
    }

    async fn still_serving(&mut self, name: &str) {
        let text = format!("still here after: {name}");
        let sent = self.healthy.send(&self.room_id, &text).await;
        assert_eq!(sent.text, text);
        self.cases += 1;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(claims: &serde_json::Value, algorithm: jsonwebtoken::Algorithm, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, &key).unwrap()
}

fn claims(sub: &str, aud: &str, iss: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "role": "admin", "iat": unix_now(), "exp": exp, "iss": iss, "aud": aud,
    })
}

/// `alg: none`: a token with no signature at all.
fn unsigned(claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

fn with_authorization<T>(value: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

/// A raw call over HTTP/1.1 with `frame` as its body; the whole answer as text.
async fn grpc_web(app: &TestApp, path: &str, content_type: &str, frame: &[u8]) -> String {
    let mut connection = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    connection.write_all(frame).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, connection.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A gRPC message frame: uncompressed, `declared` as its length, then `payload`.
fn frame(payload: &[u8], declared: u32) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn forty_kinds_of_bad_input_get_their_status_and_hurt_no_one() {
    let app = spawn_app_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.rate_limits = true;
    })
    .await;
    let mut healthy = app.register("healthy").await;
    let lounge = healthy.create_room("Lounge").await;
    let mut suite = Suite {
        healthy,
        room_id: lounge.id.clone(),
        cases: 0,
    };
    let mut mallory = app.register("mallory").await;
    let mallory_id = mallory.user.id.clone();
    let auth = app.auth();
    let list = || pb::ListRoomsRequest {};
    let now = unix_now();
    let valid = claims(&mallory_id, "natter-api", "natter", now + 600);

    // Tokens.
    let call = |value: &str| with_authorization(value, list());
    let mut anonymous =
        natter_proto::v1::chat_service_client::ChatServiceClient::new(app.channel.clone());
    suite
        .case(
            "no token",
            anonymous.list_rooms(list()).await,
            Code::Unauthenticated,
            "missing authorization",
        )
        .await;
    for (name, value, needle) in [
        (
            "basic scheme",
            "Basic bWFsbG9yeQ==".to_owned(),
            "Bearer <token>",
        ),
        (
            "garbage token",
            "Bearer not.a.jwt".to_owned(),
            "invalid or expired",
        ),
        (
            "wrong signature",
            format!(
                "Bearer {}",
                signed(
                    &valid,
                    jsonwebtoken::Algorithm::HS256,
                    "another-secret-of-32-bytes-or-more!!"
                )
            ),
            "invalid or expired",
        ),
        (
            "expired",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory_id, "natter-api", "natter", now - 3600),
                    jsonwebtoken::Algorithm::HS256,
                    SECRET
                )
            ),
            "invalid or expired",
        ),
        (
            "alg none",
            format!("Bearer {}", unsigned(&valid)),
            "invalid or expired",
        ),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory_id, "someone-else", "natter", now + 600),
                    jsonwebtoken::Algorithm::HS256,
                    SECRET
                )
            ),
            "invalid or expired",
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                signed(
                    &claims(&mallory_id, "natter-api", "evil", now + 600),
                    jsonwebtoken::Algorithm::HS256,
                    SECRET
                )
            ),
            "invalid or expired",
        ),
        (
            "another algorithm with the right key",
            format!(
                "Bearer {}",
                signed(&valid, jsonwebtoken::Algorithm::HS512, SECRET)
            ),
            "invalid or expired",
        ),
        (
            "an account that does not exist",
            format!(
                "Bearer {}",
                signed(
                    &claims("no-such-user", "natter-api", "natter", now + 600),
                    jsonwebtoken::Algorithm::HS256,
                    SECRET
                )
            ),
            "no longer exists",
        ),
    ] {
        let result = anonymous.list_rooms(call(&value)).await;
        suite
            .case(name, result, Code::Unauthenticated, needle)
            .await;
    }

    // Accounts.
    let register = |username: &str, password: &str, display: &str| pb::RegisterRequest {
        username: username.into(),
        password: password.into(),
        display_name: display.into(),
    };
    for (name, request, code, needle) in [
        (
            "short username",
            register("ab", "correct-horse", ""),
            Code::InvalidArgument,
            "username",
        ),
        (
            "username with a space",
            register("mal lory", "correct-horse", ""),
            Code::InvalidArgument,
            "username",
        ),
        (
            "username in Cyrillic",
            register("маллори", "correct-horse", ""),
            Code::InvalidArgument,
            "username",
        ),
        (
            "short password",
            register("newbie", "short", ""),
            Code::InvalidArgument,
            "at least 8",
        ),
        (
            "huge password",
            register("newbie", &"p".repeat(1025), ""),
            Code::InvalidArgument,
            "at most 1024 bytes",
        ),
        (
            "bidi display name",
            register("newbie", "correct-horse", "adm\u{202E}nim"),
            Code::InvalidArgument,
            "direction-changing",
        ),
        (
            "long display name",
            register("newbie", "correct-horse", &"d".repeat(65)),
            Code::InvalidArgument,
            "1-64",
        ),
        (
            "taken username, other case",
            register("HEALTHY", "correct-horse", ""),
            Code::AlreadyExists,
            "taken",
        ),
    ] {
        let result = auth.clone().register(request).await;
        suite.case(name, result, code, needle).await;
    }
    let login = |username: &str, password: &str| pb::LoginRequest {
        username: username.into(),
        password: password.into(),
    };
    suite
        .case(
            "wrong password",
            auth.clone().login(login("healthy", "wrong-horse")).await,
            Code::Unauthenticated,
            "unknown username or wrong password",
        )
        .await;
    suite
        .case(
            "unknown user",
            auth.clone().login(login("nobody", "correct-horse")).await,
            Code::Unauthenticated,
            "unknown username or wrong password",
        )
        .await;

    // Rooms.
    let create = |name: &str, password: &str| pb::CreateRoomRequest {
        name: name.into(),
        password: password.into(),
    };
    for (name, request, needle) in [
        ("empty room name", create("  ", ""), "1-64"),
        (
            "zero-width room name",
            create("gen\u{200B}eral", ""),
            "invisible",
        ),
        ("short room password", create("locked", "abc"), "at least 4"),
    ] {
        let result = mallory.chat.create_room(request).await;
        suite
            .case(name, result, Code::InvalidArgument, needle)
            .await;
    }
    let secret_room = suite
        .healthy
        .chat
        .create_room(create("Secret", "door-code"))
        .await
        .unwrap()
        .into_inner();
    let join = |code: &str, password: &str| pb::JoinRoomRequest {
        code: code.into(),
        password: password.into(),
    };
    suite
        .case(
            "malformed code",
            mallory.chat.join_room(join("0OIL", "")).await,
            Code::InvalidArgument,
            "join code",
        )
        .await;
    suite
        .case(
            "unknown code",
            mallory.chat.join_room(join("ABCDEFGHJKMN", "")).await,
            Code::NotFound,
            "no room has this code",
        )
        .await;
    suite
        .case(
            "wrong room password",
            mallory
                .chat
                .join_room(join(&secret_room.code, "guess"))
                .await,
            Code::PermissionDenied,
            "wrong room password",
        )
        .await;
    let direct = |user_id: &str| pb::OpenDirectRequest {
        user_id: user_id.into(),
    };
    suite
        .case(
            "direct with oneself",
            mallory.chat.open_direct(direct(&mallory_id)).await,
            Code::InvalidArgument,
            "another user",
        )
        .await;
    suite
        .case(
            "direct with nobody",
            mallory
                .chat
                .open_direct(direct("0123456789abcdef0123456789abcdef"))
                .await,
            Code::NotFound,
            "user not found",
        )
        .await;
    suite
        .case(
            "malformed user id",
            mallory.chat.open_direct(direct("../../etc")).await,
            Code::InvalidArgument,
            "user_id",
        )
        .await;

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

    assert!(suite.cases >= 40, "only {} cases", suite.cases);
    // The healthy client's every message arrived, in order.
    let history = suite.healthy.history(&lounge.id).await;
    assert!(history.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(history.last().unwrap().text.starts_with("still here after"));
}
