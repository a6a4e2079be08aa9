//! The bad-input suite: malformed, forged, oversized, cross-room and flooding requests.
//! Each case checks the exact status and its message, then that the server still serves
//! another client (a message sent and acknowledged on another connection).

use base64::Engine;
use natter_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::*;

const SECRET: &str = "an-explicit-test-secret-of-32-bytes-or-more";

/// The healthy client, and the count of cases run.
pub(crate) struct Suite {
    pub(crate) healthy: TestUser,
    room_id: String,
    pub(crate) cases: usize,
}

/// The suite's server (rate limits on, a known token secret), its healthy client in its
/// room, and mallory, who sends the bad input.
pub(crate) async fn start() -> (TestApp, Suite, TestUser, pb::Room) {
    let app = spawn_app_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.rate_limits = true;
    })
    .await;
    let mut healthy = app.register("healthy").await;
    let lounge = healthy.create_room("Lounge").await;
    let suite = Suite {
        healthy,
        room_id: lounge.id.clone(),
        cases: 0,
    };
    let mallory = app.register("mallory").await;
    (app, suite, mallory, lounge)
}

impl Suite {
    /// Checks one case's outcome, then that the server still serves the healthy client.
    pub(crate) async fn case<T: std::fmt::Debug>(
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

    pub(crate) async fn still_serving(&mut self, name: &str) {
        let text = format!("still here after: {name}");
        let sent = self.healthy.send(&self.room_id, &text).await;
        assert_eq!(sent.text, text);
        self.cases += 1;
    }

    /// The healthy client's every message arrived, in order.
    pub(crate) async fn in_order(&mut self) {
        let history = self.healthy.history(&self.room_id).await;
        assert!(history.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert!(history.last().unwrap().text.starts_with("still here after"));
    }
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

/// A raw call over HTTP/1.1 with `frame` as its body; the whole answer as text.
pub(crate) async fn grpc_web(
    app: &TestApp,
    path: &str,
    content_type: &str,
    frame: &[u8],
) -> String {
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
pub(crate) fn frame(payload: &[u8], declared: u32) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn bad_tokens_accounts_and_rooms_get_their_status_and_hurt_no_one() {
    let (app, mut suite, mut mallory, _) = start().await;
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

    assert!(suite.cases >= 25, "only {} cases", suite.cases);
    suite.in_order().await;
}
