//! Sessions that end: sign-out (one session or all), a maximum age across refreshes,
//! streams that end with their token, and accounts disabled by an admin; over Redis, on
//! every instance.

use std::time::Duration;

use natter_proto::v1::{self as pb, auth_service_client::AuthServiceClient, event::Event as Ev};
use tonic::{Code, Request};

use crate::{helpers::*, redis_server::start_redis};

const SECRET: &str = "an-explicit-test-secret-of-32-bytes-or-more";

/// A token signed with [`SECRET`] for `user_id`, with the given expiry and session start.
fn token(user_id: &str, exp: u64, session_started_ms: u64) -> String {
    let claims = serde_json::json!({
        "sub": user_id, "role": "user", "iat": unix_now(), "exp": exp,
        "sid": "crafted-session", "sat": session_started_ms,
        "iss": "natter", "aud": "natter-api",
    });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    with_authorization(&format!("Bearer {token}"), message)
}

async fn login(app: &TestApp, username: &str) -> String {
    app.auth()
        .login(pb::LoginRequest {
            username: username.into(),
            password: "correct-horse".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

#[tokio::test]
async fn signing_out_ends_that_session_and_its_streams_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let other_session = login(&app, "alice").await;
    let mut stream = app
        .chat_with_token(&alice.token)
        .subscribe(pb::SubscribeRequest { resume: vec![] })
        .await
        .unwrap()
        .into_inner();
    expect_ready(&mut stream).await;

    sign_out(&app, &alice.token, false).await;

    let (events, status) = until_the_end(&mut stream).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::SessionEnded(s) if s.reason == "signed out")),
        "{events:?}"
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_status(
        app.chat_with_token(&alice.token)
            .list_rooms(pb::ListRoomsRequest {})
            .await,
        Code::Unauthenticated,
        "this session was signed out",
    );
    assert_status(
        app.auth()
            .refresh_token(with_token(&alice.token, pb::RefreshTokenRequest {}))
            .await,
        Code::Unauthenticated,
        "signed out",
    );
    // The other session goes on, and so do its refreshes.
    app.chat_with_token(&other_session)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
    let refreshed = app
        .auth()
        .refresh_token(with_token(&other_session, pb::RefreshTokenRequest {}))
        .await
        .unwrap()
        .into_inner();
    app.chat_with_token(&refreshed.access_token)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_but_not_the_account() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let other_session = login(&app, "alice").await;
    sign_out(&app, &other_session, true).await;
    for token in [&alice.token, &other_session] {
        assert_status(
            app.chat_with_token(token)
                .list_rooms(pb::ListRoomsRequest {})
                .await,
            Code::Unauthenticated,
            "signed out",
        );
    }
    let fresh = login(&app, "alice").await;
    app.chat_with_token(&fresh)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_cannot_be_refreshed_past_its_maximum_age() {
    let app = spawn_app_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    let alice = app.register("alice").await;
    let now = unix_now();
    let young = token(&alice.user.id, now + 600, (now - 3600) * 1000);
    app.auth()
        .refresh_token(with_token(&young, pb::RefreshTokenRequest {}))
        .await
        .unwrap();
    // Signed in 31 days ago (the default maximum is 30), refreshed ever since.
    let old = token(&alice.user.id, now + 600, (now - 31 * 86_400) * 1000);
    app.chat_with_token(&old)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
    assert_status(
        app.auth()
            .refresh_token(with_token(&old, pb::RefreshTokenRequest {}))
            .await,
        Code::Unauthenticated,
        "maximum age",
    );
}

/// A stream outlives its token by at most one heartbeat: then `GoAway` (a client with a
/// refreshed token resumes at once) and UNAUTHENTICATED.
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = spawn_app_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.heartbeat_interval = Duration::from_millis(100);
    })
    .await;
    let alice = app.register("alice").await;
    let now = unix_now();
    // Expired a second ago: still accepted within the verifier's 5 s leeway, so the
    // stream opens, and ends at its first heartbeat.
    let expiring = token(&alice.user.id, now - 1, now * 1000);
    let mut stream = app
        .chat_with_token(&expiring)
        .subscribe(pb::SubscribeRequest { resume: vec![] })
        .await
        .unwrap()
        .into_inner();
    let (events, status) = until_the_end(&mut stream).await;
    assert!(matches!(events.first(), Some(Ev::Ready(_))), "{events:?}");
    assert!(
        matches!(events.last(), Some(Ev::GoAway(g)) if g.reason.contains("expired")),
        "{events:?}"
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}

/// An admin disables an account on one instance: its stream on another instance ends at
/// once, its tokens stop working everywhere and it cannot sign in; enabled again, it
/// signs in anew.
#[tokio::test]
async fn a_disabled_account_is_locked_out_on_every_instance() {
    let redis = start_redis().await;
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let mut admin = a.register("admin").await;
    a.natter.set_admin("admin", true).await.unwrap();
    let mut bob = a.register("bob").await;
    let mut bobs_stream = bob.via(&b.url).subscribe(vec![]).await;
    expect_ready(&mut bobs_stream).await;

    let disable = |disabled| pb::SetAccountDisabledRequest {
        user_id: bob.user.id.clone(),
        disabled,
    };
    assert_status(
        bob.chat.set_account_disabled(disable(true)).await,
        Code::PermissionDenied,
        "only admins",
    );
    admin
        .chat
        .set_account_disabled(disable(true))
        .await
        .unwrap();

    let (events, status) = until_the_end(&mut bobs_stream).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::SessionEnded(s) if s.reason.contains("disabled"))),
        "{events:?}"
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_status(
        bob.via(&b.url)
            .chat
            .list_rooms(pb::ListRoomsRequest {})
            .await,
        Code::Unauthenticated,
        "this account is disabled",
    );
    let sign_in = || async {
        AuthServiceClient::new(b.channel.clone())
            .login(pb::LoginRequest {
                username: "bob".into(),
                password: "correct-horse".into(),
            })
            .await
    };
    assert_status(sign_in().await, Code::PermissionDenied, "disabled");

    admin
        .chat
        .set_account_disabled(disable(false))
        .await
        .unwrap();
    // Enabled again, bob signs in anew: the sessions from before do not come back.
    assert_status(
        bob.chat.list_rooms(pb::ListRoomsRequest {}).await,
        Code::Unauthenticated,
        "signed out",
    );
    let fresh = sign_in().await.unwrap().into_inner().access_token;
    a.chat_with_token(&fresh)
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap();
}

/// Signing out on one instance ends the session's stream on another.
#[tokio::test]
async fn signing_out_over_redis_ends_streams_on_other_instances() {
    let redis = start_redis().await;
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let alice = a.register("alice").await;
    let mut on_b = alice.via(&b.url).subscribe(vec![]).await;
    expect_ready(&mut on_b).await;
    sign_out(&a, &alice.token, false).await;
    let (_, status) = until_the_end(&mut on_b).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

/// A call naming a room is checked against the caller's account first: a signed-out
/// session learns that it must sign in again, not whether the room exists or whether it is
/// a member (the account, the room and the membership are read at once).
#[tokio::test]
async fn a_signed_out_session_is_told_so_before_anything_about_the_room() {
    let app = spawn_app().await;
    let mut bob = app.register("bob").await;
    let room = bob.create_room("Bob's").await;
    let alice = app.register("alice").await;
    sign_out(&app, &alice.token, false).await;
    let mut chat = app.chat_with_token(&alice.token);
    for room_id in ["no-such-room".to_owned(), room.id] {
        let sent = chat
            .send_message(pb::SendMessageRequest {
                room_id: room_id.clone(),
                text: "hello".into(),
                client_id: String::new(),
            })
            .await;
        assert_eq!(
            sent.unwrap_err().code(),
            Code::Unauthenticated,
            "room {room_id}"
        );
    }
}

/// Signs `token`'s session out (or every session of its account).
async fn sign_out(app: &TestApp, token: &str, all_sessions: bool) {
    app.auth()
        .logout(with_token(token, pb::LogoutRequest { all_sessions }))
        .await
        .unwrap();
}
