//! Owners (and admins) moderate their rooms: rotate the join code, remove a member.

use natter_proto::v1::{self as pb, RoomChange};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn an_owner_removes_a_member_and_rotates_the_code_to_keep_them_out() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let mut carol = app.register("carol").await;
    let room = alice.create_room("Club").await;
    bob.join(&room.code).await;
    carol.join(&room.code).await;
    let mut bobs_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bobs_events).await;
    let mut alices_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alices_events).await;

    let remove = |user_id: &str| pb::RemoveMemberRequest {
        room_id: room.id.clone(),
        user_id: user_id.into(),
    };
    assert_status(
        carol.chat.remove_member(remove(&bob.user.id)).await,
        Code::PermissionDenied,
        "only the room's owner or an admin",
    );
    assert_status(
        alice.chat.remove_member(remove(&alice.user.id)).await,
        Code::InvalidArgument,
        "the owner cannot be removed",
    );
    alice
        .chat
        .remove_member(remove(&bob.user.id))
        .await
        .unwrap();
    assert_status(
        alice.chat.remove_member(remove(&bob.user.id)).await,
        Code::NotFound,
        "not a member",
    );

    // Bob's stream drops the room; the others hear that he left.
    let left = wait_for_change(&mut bobs_events, RoomChange::Left).await;
    assert_eq!(left.room.unwrap().id, room.id);
    let gone = wait_for_change(&mut alices_events, RoomChange::MemberLeft).await;
    assert_eq!(gone.user.unwrap().id, bob.user.id);
    assert_status(
        bob.chat
            .send_message(pb::SendMessageRequest {
                room_id: room.id.clone(),
                text: "still here?".into(),
                client_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "not a member",
    );

    // The old code would let him back in: the owner rotates it.
    let rotate = || pb::RotateRoomCodeRequest {
        room_id: room.id.clone(),
    };
    assert_status(
        carol.chat.rotate_room_code(rotate()).await,
        Code::PermissionDenied,
        "only the room's owner",
    );
    let rotated = alice
        .chat
        .rotate_room_code(rotate())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.code, room.code);
    assert_eq!(rotated.code.len(), 12);
    assert_status(
        bob.chat
            .join_room(pb::JoinRoomRequest {
                code: room.code.clone(),
                password: String::new(),
            })
            .await,
        Code::NotFound,
        "no room has this code",
    );
    // Members keep the room; the new code works for newcomers.
    assert_eq!(carol.rooms().await[0].code, rotated.code);
    let mut dave = app.register("dave").await;
    dave.join(&rotated.code).await;
    alice.send(&room.id, "welcome, dave").await;
    assert_eq!(dave.history(&room.id).await.len(), 1);
}

#[tokio::test]
async fn direct_rooms_have_no_code_to_rotate_and_no_one_to_remove() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let direct = alice.open_direct(&bob.user.id).await;
    assert_status(
        alice
            .chat
            .rotate_room_code(pb::RotateRoomCodeRequest {
                room_id: direct.id.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "direct rooms",
    );
    assert_status(
        alice
            .chat
            .remove_member(pb::RemoveMemberRequest {
                room_id: direct.id,
                user_id: bob.user.id.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "direct rooms",
    );
}

#[tokio::test]
async fn a_blocked_user_cannot_open_a_direct_room_and_no_one_is_pulled_back_into_one() {
    let app = spawn_app().await;
    let mut bob = app.register("bob").await;
    let mut mallory = app.register("mallory").await;
    let direct = |user_id: &str| pb::OpenDirectRequest {
        user_id: user_id.into(),
    };
    let block = |user_id: &str, blocked| pb::BlockUserRequest {
        user_id: user_id.into(),
        blocked,
    };

    // Bob leaves the direct room mallory opened; her opening it again does not bring him
    // back (only he can).
    let room = mallory.open_direct(&bob.user.id).await;
    assert_eq!(bob.rooms().await.len(), 1);
    bob.leave(&room.id).await;
    assert_eq!(mallory.open_direct(&bob.user.id).await.id, room.id);
    assert!(
        bob.rooms().await.is_empty(),
        "pulled back into a room he left"
    );

    bob.chat
        .block_user(block(&mallory.user.id, true))
        .await
        .unwrap();
    assert_status(
        mallory.chat.open_direct(direct(&bob.user.id)).await,
        Code::PermissionDenied,
        "does not take direct messages from you",
    );
    assert_status(
        bob.chat.open_direct(direct(&mallory.user.id)).await,
        Code::FailedPrecondition,
        "unblock them first",
    );
    assert_status(
        bob.chat.block_user(block(&bob.user.id, true)).await,
        Code::InvalidArgument,
        "another user",
    );
    assert_status(
        bob.chat
            .block_user(block("0123456789abcdef0123456789abcdef", true))
            .await,
        Code::NotFound,
        "user not found",
    );

    bob.chat
        .block_user(block(&mallory.user.id, false))
        .await
        .unwrap();
    assert_eq!(bob.open_direct(&mallory.user.id).await.id, room.id);
    assert_eq!(bob.rooms().await.len(), 1, "back, by his own choice");
}
