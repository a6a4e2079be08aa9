use natter_proto::v1 as pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn create_join_list_and_members() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;

    let room = alice.create_room("General").await;
    assert_eq!(room.name, "General");
    assert_eq!(room.owner_id, alice.user.id);
    assert_eq!(room.kind, pb::RoomKind::Group as i32);
    assert_eq!(room.code.len(), 12);
    assert!(!room.has_password);
    assert_eq!(room.last_seq, 0);

    // Codes are forgiving: lower case and a dash in the middle still match.
    let typed = format!("{}-{}", &room.code[..4].to_lowercase(), &room.code[4..]);
    let joined = bob.join(&typed).await;
    assert_eq!(joined.id, room.id);
    // Joining again is harmless.
    assert_eq!(bob.join(&room.code).await.id, room.id);

    let rooms = bob.rooms().await;
    assert_eq!(
        rooms.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [room.id.as_str()]
    );

    let members = alice.members(&room.id).await;
    assert_eq!(members.len(), 2);
    assert!(members[0].is_owner);
    assert_eq!(members[0].user.as_ref().unwrap().id, alice.user.id);
    assert_eq!(members[1].user.as_ref().unwrap().id, bob.user.id);
    assert!(members.iter().all(|m| !m.user.as_ref().unwrap().online));
}

#[tokio::test]
async fn room_errors() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let mut carol = app.register("carol").await;

    for (name, expected) in [("", "name"), (&"n".repeat(65) as &str, "name")] {
        let result = alice
            .chat
            .create_room(pb::CreateRoomRequest {
                name: name.into(),
                password: String::new(),
            })
            .await;
        assert_status(result, Code::InvalidArgument, expected);
    }
    let secret = alice
        .chat
        .create_room(pb::CreateRoomRequest {
            name: "Secret".into(),
            password: "open sesame".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(secret.has_password);

    let join = |code: &str, password: &str| pb::JoinRoomRequest {
        code: code.into(),
        password: password.into(),
    };
    assert_status(
        bob.chat.join_room(join(&secret.code, "guess")).await,
        Code::PermissionDenied,
        "password",
    );
    assert_status(
        bob.chat.join_room(join("ZZZZZZZZ", "")).await,
        Code::NotFound,
        "code",
    );
    assert_status(
        bob.chat.join_room(join("nope", "")).await,
        Code::InvalidArgument,
        "code",
    );
    bob.chat
        .join_room(join(&secret.code, "open sesame"))
        .await
        .unwrap();

    // Not a member: every room-scoped call is PERMISSION_DENIED.
    let room_id = secret.id.clone();
    assert_status(
        carol
            .chat
            .list_members(pb::ListMembersRequest {
                room_id: room_id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "member",
    );
    assert_status(
        carol
            .chat
            .get_history(pb::GetHistoryRequest {
                room_id: room_id.clone(),
                before_seq: 0,
                limit: 10,
            })
            .await,
        Code::PermissionDenied,
        "member",
    );
    assert_status(
        carol
            .chat
            .set_typing(pb::SetTypingRequest {
                room_id: room_id.clone(),
                typing: true,
            })
            .await,
        Code::PermissionDenied,
        "member",
    );
    assert_status(
        carol
            .chat
            .leave_room(pb::LeaveRoomRequest {
                room_id: room_id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "member",
    );

    // Unknown and malformed room ids.
    let unknown = "0".repeat(32);
    assert_status(
        carol
            .chat
            .list_members(pb::ListMembersRequest {
                room_id: unknown.clone(),
            })
            .await,
        Code::NotFound,
        "room",
    );
    assert_status(
        carol
            .chat
            .delete_room(pb::DeleteRoomRequest { room_id: unknown })
            .await,
        Code::NotFound,
        "room",
    );
    assert_status(
        carol
            .chat
            .list_members(pb::ListMembersRequest {
                room_id: "../x".into(),
            })
            .await,
        Code::InvalidArgument,
        "room_id",
    );

    // Someone else's room cannot be deleted, even by a member.
    assert_status(
        bob.chat
            .delete_room(pb::DeleteRoomRequest {
                room_id: room_id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "owner",
    );
}

#[tokio::test]
async fn leave_and_delete() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let mut admin = app.register("admin").await;
    app.natter.set_admin("admin", true).await.unwrap();
    let room = alice.create_room("Temp").await;
    bob.join(&room.code).await;

    bob.leave(&room.id).await;
    assert!(bob.rooms().await.is_empty());
    assert_status(
        bob.chat
            .send_message(pb::SendMessageRequest {
                room_id: room.id.clone(),
                text: "hi".into(),
                client_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "member",
    );

    alice
        .chat
        .delete_room(pb::DeleteRoomRequest {
            room_id: room.id.clone(),
        })
        .await
        .unwrap();
    assert!(alice.rooms().await.is_empty());
    assert_status(
        bob.chat
            .join_room(pb::JoinRoomRequest {
                code: room.code.clone(),
                password: String::new(),
            })
            .await,
        Code::NotFound,
        "code",
    );

    // An admin may delete a room they do not own (and are not in).
    let other = alice.create_room("Other").await;
    admin
        .chat
        .delete_room(pb::DeleteRoomRequest {
            room_id: other.id.clone(),
        })
        .await
        .unwrap();
    assert_status(
        alice
            .chat
            .list_members(pb::ListMembersRequest { room_id: other.id })
            .await,
        Code::NotFound,
        "room",
    );
}

#[tokio::test]
async fn direct_rooms_are_one_per_pair() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;

    let from_alice = alice.open_direct(&bob.user.id).await;
    let again = alice.open_direct(&bob.user.id).await;
    let from_bob = bob.open_direct(&alice.user.id).await;
    assert_eq!(from_alice.id, again.id);
    assert_eq!(from_alice.id, from_bob.id);
    assert_eq!(from_alice.kind, pb::RoomKind::Direct as i32);
    assert!(from_alice.code.is_empty());
    assert_eq!(from_alice.peer.as_ref().unwrap().id, bob.user.id);
    assert_eq!(from_bob.peer.as_ref().unwrap().id, alice.user.id);

    let bobs_rooms = bob.rooms().await;
    assert_eq!(bobs_rooms.len(), 1);
    assert_eq!(bobs_rooms[0].peer.as_ref().unwrap().id, alice.user.id);

    assert_status(
        alice
            .chat
            .open_direct(pb::OpenDirectRequest {
                user_id: "0".repeat(32),
            })
            .await,
        Code::NotFound,
        "user",
    );
    assert_status(
        alice
            .chat
            .open_direct(pb::OpenDirectRequest {
                user_id: alice.user.id.clone(),
            })
            .await,
        Code::InvalidArgument,
        "user_id",
    );
}
