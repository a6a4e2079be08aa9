//! Subscribe streams: live messages, resumes with no gap and no duplicate, rooms joined
//! after subscribing, presence and typing, deleted rooms, the two-way chat stream, and
//! draining on shutdown.

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn two_users_exchange_messages_through_subscribe() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;

    let mut alice_events = alice.subscribe(vec![]).await;
    let mut bob_events = bob.subscribe(vec![]).await;
    let ready = expect_ready(&mut alice_events).await;
    assert_eq!(
        ready
            .rooms
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [room.id.as_str()]
    );
    assert!(ready.heartbeat_interval_ms > 0);
    expect_ready(&mut bob_events).await;

    alice.send(&room.id, "hi bob").await;
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.seq, got.text.as_str(), got.sender_id.as_str()),
        (1, "hi bob", alice.user.id.as_str())
    );
    bob.send(&room.id, "hi alice").await;
    assert_eq!(
        next_message(&mut alice_events).await.seq,
        1,
        "own messages are on the stream too"
    );
    let reply = next_message(&mut alice_events).await;
    assert_eq!((reply.seq, reply.text.as_str()), (2, "hi alice"));
}

#[tokio::test]
async fn rooms_joined_after_subscribing_are_followed() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let mut bob_events = bob.subscribe(vec![]).await;
    assert!(expect_ready(&mut bob_events).await.rooms.is_empty());

    let room = alice.create_room("Later").await;
    let mut alice_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alice_events).await;
    alice.send(&room.id, "before bob").await;
    bob.join(&room.code).await;
    let joined = wait_for_change(&mut bob_events, RoomChange::Joined)
        .await
        .room
        .unwrap();
    assert_eq!(joined.id, room.id);
    let member = wait_for_change(&mut alice_events, RoomChange::MemberJoined)
        .await
        .user
        .unwrap();
    assert_eq!(member.id, bob.user.id);

    alice.send(&room.id, "after bob").await;
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.seq, got.text.as_str()),
        (2, "after bob"),
        "a joined room starts at its newest message"
    );

    // A direct conversation opened by someone else shows up the same way.
    let direct = alice.open_direct(&bob.user.id).await;
    alice.send(&direct.id, "psst").await;
    let joined = wait_for_change(&mut bob_events, RoomChange::Joined)
        .await
        .room
        .unwrap();
    assert_eq!(joined.id, direct.id);
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.room_id.as_str(), got.text.as_str()),
        (direct.id.as_str(), "psst")
    );

    // Leaving removes the room from the stream.
    bob.leave(&room.id).await;
    let left = wait_for_change(&mut bob_events, RoomChange::Left)
        .await
        .room
        .unwrap();
    assert_eq!(left.id, room.id);
    alice.send(&room.id, "bob is gone").await;
    alice.send(&direct.id, "still here?").await;
    let got = next_message(&mut bob_events).await;
    assert_eq!(got.text, "still here?", "nothing from the room bob left");
}

#[tokio::test]
async fn resume_after_disconnect_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 300;
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("Busy").await;
    bob.join(&room.code).await;

    let mut events = bob.subscribe(vec![]).await;
    expect_ready(&mut events).await;

    // Alice keeps sending while bob disconnects and comes back.
    let room_id = room.id.clone();
    let sender = tokio::spawn(async move {
        for i in 1..=TOTAL {
            alice.send(&room_id, &format!("m{i}")).await;
        }
    });

    let mut seen = Vec::new();
    while seen.len() < 40 {
        seen.push(next_message(&mut events).await.seq);
    }
    drop(events);
    let last = *seen.last().unwrap();

    let mut events = bob.subscribe(vec![cursor(&room.id, last)]).await;
    expect_ready(&mut events).await;
    while *seen.last().unwrap() < TOTAL {
        seen.push(next_message(&mut events).await.seq);
    }
    sender.await.unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test]
async fn cursors_replay_what_was_missed_while_offline() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let general = alice.create_room("General").await;
    let random = alice.create_room("Random").await;
    bob.join(&general.code).await;
    bob.join(&random.code).await;
    for i in 1..=5 {
        alice.send(&general.id, &format!("g{i}")).await;
        alice.send(&random.id, &format!("r{i}")).await;
    }

    // Bob had seen general up to 2 and random up to 4; no cursor means "from now".
    let mut events = bob
        .subscribe(vec![cursor(&general.id, 2), cursor(&random.id, 4)])
        .await;
    expect_ready(&mut events).await;
    let mut per_room: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for _ in 0..4 {
        let m = next_message(&mut events).await;
        per_room.entry(m.room_id).or_default().push(m.seq);
    }
    assert_eq!(per_room[&general.id], [3, 4, 5]);
    assert_eq!(per_room[&random.id], [5]);
    alice.send(&general.id, "live").await;
    assert_eq!(next_message(&mut events).await.seq, 6);
}

#[tokio::test]
async fn presence_and_typing_reach_room_members() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;
    let mut alice_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alice_events).await;

    let mut bob_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bob_events).await;
    let online = wait_for_presence(&mut alice_events, &bob.user.id).await;
    assert!(online.online);
    assert_eq!(online.room_id, room.id);
    let members = alice.members(&room.id).await;
    assert!(
        members.iter().all(|m| m.user.as_ref().unwrap().online),
        "both hold a stream"
    );
    let directory = alice
        .chat
        .list_users(pb::ListUsersRequest {
            query: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(directory.users[0].online);

    bob.chat
        .set_typing(pb::SetTypingRequest {
            room_id: room.id.clone(),
            typing: true,
        })
        .await
        .unwrap();
    let typing = wait_for(&mut alice_events, |e| match e {
        Ev::Typing(t) => Some(t),
        _ => None,
    })
    .await;
    assert!(typing.typing);
    assert_eq!(typing.user.unwrap().id, bob.user.id);
    // Bob's own stream does not echo his typing: the next thing he sees is a message.
    alice.send(&room.id, "marker").await;
    assert!(matches!(next_event(&mut bob_events).await, Ev::Message(_)));

    assert_eq!(app.metric("natter_streams_open").await, 2);
    drop(bob_events);
    let offline = wait_for_presence(&mut alice_events, &bob.user.id).await;
    assert!(!offline.online);
    // Bob's session went with his stream's response body: it counted itself closed before
    // his presence changed.
    assert_eq!(app.metric("natter_streams_open").await, 1);
}

#[tokio::test]
async fn deleting_a_room_tells_its_members() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("Doomed").await;
    bob.join(&room.code).await;
    let mut bob_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bob_events).await;
    alice
        .chat
        .delete_room(pb::DeleteRoomRequest {
            room_id: room.id.clone(),
        })
        .await
        .unwrap();
    let deleted = wait_for_change(&mut bob_events, RoomChange::Deleted)
        .await
        .room
        .unwrap();
    assert_eq!(deleted.id, room.id);
}

#[tokio::test]
async fn chat_streams_send_acknowledge_and_receive() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;
    let mut bob_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bob_events).await;

    let (frames, outgoing) = mpsc::channel(16);
    let mut alice_events = alice
        .chat
        .chat(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    let frame = |id: &str, frame: pb::client_frame::Frame| pb::ClientFrame {
        frame: Some(frame),
        frame_id: id.into(),
    };
    frames
        .send(frame(
            "f0",
            pb::client_frame::Frame::Subscribe(pb::SubscribeRequest::default()),
        ))
        .await
        .unwrap();
    expect_ready(&mut alice_events).await;

    let send = |text: &str, client_id: &str| {
        pb::client_frame::Frame::Send(pb::SendMessageRequest {
            room_id: room.id.clone(),
            text: text.into(),
            client_id: client_id.into(),
        })
    };
    frames
        .send(frame("f1", send("over chat", "k1")))
        .await
        .unwrap();
    let ack = wait_for_ack(&mut alice_events).await;
    assert_eq!(ack.frame_id, "f1");
    assert_eq!(ack.message.as_ref().unwrap().seq, 1);
    assert_eq!(next_message(&mut bob_events).await.text, "over chat");

    bob.send(&room.id, "over unary").await;
    let got = wait_for(&mut alice_events, |e| match e {
        Ev::Message(m) if m.seq == 2 => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(got.text, "over unary");

    // A bad frame is answered on the stream, which stays open.
    frames.send(frame("f2", send("", ""))).await.unwrap();
    let error = wait_for_frame_error(&mut alice_events).await;
    assert_eq!(
        (error.frame_id.as_str(), error.code),
        ("f2", Code::InvalidArgument as i32)
    );
    assert!(error.message.contains("text"));
    frames
        .send(frame(
            "f3",
            pb::client_frame::Frame::Subscribe(pb::SubscribeRequest::default()),
        ))
        .await
        .unwrap();
    let error = wait_for_frame_error(&mut alice_events).await;
    assert_eq!(
        (error.frame_id.as_str(), error.code),
        ("f3", Code::FailedPrecondition as i32)
    );

    // Typing over the stream, and a retried send with the same key is acknowledged with
    // the original message.
    frames
        .send(frame(
            "f4",
            pb::client_frame::Frame::Typing(pb::SetTypingRequest {
                room_id: room.id.clone(),
                typing: true,
            }),
        ))
        .await
        .unwrap();
    assert!(matches!(next_event(&mut bob_events).await, Ev::Message(m) if m.seq == 2));
    assert!(matches!(next_event(&mut bob_events).await, Ev::Typing(t) if t.typing));
    frames
        .send(frame("f5", send("over chat", "k1")))
        .await
        .unwrap();
    let ack = wait_for_ack(&mut alice_events).await;
    assert_eq!(ack.message.unwrap().seq, 1);
    assert_eq!(bob.history(&room.id).await.len(), 2);
}

/// Draining: every stream is told to reconnect elsewhere (`GoAway`), then ends with
/// UNAVAILABLE, so that even a client that does not know `GoAway` reconnects and resumes.
#[tokio::test]
async fn streams_are_told_to_go_away_on_shutdown() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    let mut events = alice.subscribe(vec![]).await;
    expect_ready(&mut events).await;
    app.stop().await;
    let (go_away, end) = tokio::time::timeout(WAIT, async {
        let mut go_away = None;
        loop {
            match events.message().await {
                Ok(Some(pb::Event {
                    event: Some(Ev::GoAway(g)),
                })) => go_away = Some(g),
                Ok(Some(_)) => continue,
                other => return (go_away, other),
            }
        }
    })
    .await
    .expect("stream ends");
    assert!(go_away.is_some_and(|g| g.reason.contains("shutting down")));
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("reconnect"), "{status:?}");
}
