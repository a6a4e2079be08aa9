use natter_proto::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn everything_survives_a_restart() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;
    let direct = alice.open_direct(&bob.user.id).await;
    for i in 0..5 {
        alice.send(&room.id, &format!("before restart {i}")).await;
    }
    bob.send(&direct.id, "psst").await;
    let before = alice.history(&room.id).await;

    let data_dir = app.stop().await;
    let config = test_config(&data_dir);
    let app = spawn_app_in(data_dir, config).await;

    // The generated JWT secret was kept: old tokens still work, and so do passwords.
    let mut old_token = app.chat_with_token(&alice.token);
    let rooms = old_token
        .list_rooms(pb::ListRoomsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rooms;
    assert_eq!(rooms.len(), 2);
    let login = app
        .auth()
        .login(pb::LoginRequest {
            username: "bob".into(),
            password: "correct-horse".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bob = TestUser {
        user: login.user.unwrap(),
        chat: app.chat_with_token(&login.access_token),
        token: login.access_token,
    };

    assert_eq!(bob.history(&room.id).await, before);
    assert_eq!(bob.history(&direct.id).await[0].text, "psst");
    let members = bob.members(&room.id).await;
    assert_eq!(members.len(), 2);
    // The sequence continues where it stopped, and the join code still works.
    assert_eq!(bob.send(&room.id, "after restart").await.seq, 6);
    let mut carol = app.register("carol").await;
    assert_eq!(carol.join(&room.code).await.id, room.id);
}
