//! Rate limits, on (as in production): each refusal is RESOURCE_EXHAUSTED with a
//! `retry-after`, and other clients and accounts are not affected.

use natter_proto::v1 as pb;
use tonic::{Code, Request, Status};

use crate::helpers::*;

#[track_caller]
fn assert_limited<T: std::fmt::Debug>(result: Result<T, Status>, needle: &str) {
    let status = result.expect_err("should be rate limited");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(needle), "{status:?}");
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "retry-after {retry_after}"
    );
}

/// A forged forwarding header on each attempt changes nothing: the bucket is the
/// username's (and the connection's real address), never something the client says.
#[tokio::test]
async fn password_guessing_is_limited_per_username_whatever_the_client_claims() {
    let app = spawn_app_with(|c| c.rate_limits = true).await;
    app.register("alice").await;
    app.register("bob").await;
    let guess = |i: usize| {
        let mut request = Request::new(pb::LoginRequest {
            username: "alice".into(),
            password: format!("guess-{i}"),
        });
        let forged = format!("203.0.113.{i}").parse().unwrap();
        request.metadata_mut().insert("x-forwarded-for", forged);
        request
    };
    // Ten guesses go through (the burst); a token comes back every 6 s, so a few more may
    // on a slow machine, but not many.
    let mut limited = None;
    for i in 0..20 {
        match app.auth().login(guess(i)).await {
            Err(status) if status.code() == Code::Unauthenticated => assert!(i < 10 + 3),
            other => {
                limited = Some(other);
                break;
            }
        }
    }
    assert_limited(
        limited.expect("limited within 20 guesses"),
        "too many sign-in attempts for this username",
    );
    // Even the right password waits: the guesser cannot tell it from a wrong one.
    assert_limited(
        app.auth()
            .login(pb::LoginRequest {
                username: "alice".into(),
                password: "correct-horse".into(),
            })
            .await,
        "too many sign-in attempts",
    );
    // Bob, from the same address, signs in.
    app.auth()
        .login(pb::LoginRequest {
            username: "bob".into(),
            password: "correct-horse".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn registrations_are_limited_per_address_unless_exempt() {
    let app = spawn_app_with(|c| c.rate_limits = true).await;
    for i in 0..20 {
        app.register(&format!("user{i}")).await;
    }
    assert_limited(
        app.auth()
            .register(pb::RegisterRequest {
                username: "one-too-many".into(),
                password: "correct-horse".into(),
                display_name: String::new(),
            })
            .await,
        "too many accounts created from here",
    );

    let exempt = spawn_app_with(|c| {
        c.rate_limits = true;
        c.rate_limit_exempt = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for i in 0..21 {
        exempt.register(&format!("user{i}")).await;
    }
}

#[tokio::test]
async fn a_flooding_account_is_slowed_and_others_are_not() {
    let app = spawn_app_with(|c| c.rate_limits = true).await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("flooded").await;
    bob.join(&room.code).await;
    // A burst of 100, then 10 a second: sending as fast as acknowledged outruns that soon.
    let mut sent = 0;
    let limited = loop {
        let result = alice
            .chat
            .send_message(pb::SendMessageRequest {
                room_id: room.id.clone(),
                text: format!("flood {sent}"),
                client_id: String::new(),
            })
            .await;
        match result {
            Ok(_) => sent += 1,
            Err(status) => break Err::<(), _>(status),
        }
        assert!(sent < 1000, "never limited");
    };
    assert!(
        sent >= 100,
        "limited after {sent}, before the burst was used"
    );
    assert_limited(limited, "too many messages sent");
    assert_eq!(
        app.metric(r#"natter_rejections_total{limit="send"}"#).await,
        1
    );
    bob.send(&room.id, "I can still talk").await;
    // Nothing refused was stored, and nothing acknowledged was lost.
    let history = alice.history(&room.id).await;
    assert_eq!(history.last().unwrap().text, "I can still talk");
    assert_eq!(history.last().unwrap().seq, sent + 1);

    for i in 0..9 {
        alice.create_room(&format!("room {i}")).await;
    }
    assert_limited(
        alice
            .chat
            .create_room(pb::CreateRoomRequest {
                name: "one room too many".into(),
                password: String::new(),
            })
            .await,
        "too many rooms created",
    );
}

/// Guessing room codes: every join attempt counts, so a guesser gets ten a minute.
#[tokio::test]
async fn room_code_guessing_is_limited() {
    let app = spawn_app_with(|c| c.rate_limits = true).await;
    let mut alice = app.register("alice").await;
    let mut mallory = app.register("mallory").await;
    let room = alice.create_room("secret").await;
    for guess in ["AAAAAAAA", "BBBBBBBB", "CCCCCCCC", "DDDDDDDD", "EEEEEEEE"] {
        assert_status(
            mallory
                .chat
                .join_room(pb::JoinRoomRequest {
                    code: guess.into(),
                    password: String::new(),
                })
                .await,
            Code::NotFound,
            "no room has this code",
        );
    }
    for _ in 0..5 {
        assert_status(
            mallory
                .chat
                .join_room(pb::JoinRoomRequest {
                    code: "FFFFFFFF".into(),
                    password: String::new(),
                })
                .await,
            Code::NotFound,
            "no room has this code",
        );
    }
    assert_limited(
        mallory
            .chat
            .join_room(pb::JoinRoomRequest {
                code: room.code.clone(),
                password: String::new(),
            })
            .await,
        "too many room joins",
    );
    let mut bob = app.register("bob").await;
    bob.join(&room.code).await;
}
