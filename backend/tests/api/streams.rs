use std::time::Duration;

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::helpers::*;

fn cursor(room_id: &str, after_seq: u64) -> pb::RoomCursor {
    pb::RoomCursor {
        room_id: room_id.into(),
        after_seq,
    }
}

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
async fn room_list_changes_missed_by_a_slow_reader_are_read_again() {
    // The stream is stuck behind a flood it does not read while its user joins more rooms
    // than the user's topic buffers (4): the joins are not lost, the list is read again.
    const JOINS: usize = 40;
    let app = spawn_app().await;
    let (mut alice, mut bob, flood, mut events) = flood_a_slow_reader(&app).await;
    let mut joined_rooms = std::collections::BTreeSet::new();
    for i in 0..JOINS {
        let room = alice.create_room(&format!("Room {i}")).await;
        bob.join(&room.code).await;
        joined_rooms.insert(room.id);
    }
    let mut seqs = Vec::new();
    let mut announced = std::collections::BTreeSet::new();
    while seqs.len() < FLOOD as usize || announced.len() < JOINS {
        match next_event(&mut events).await {
            Ev::Message(m) if m.room_id == flood.id => seqs.push(m.seq),
            Ev::RoomChanged(change) if change.change == pb::RoomChange::Joined as i32 => {
                announced.insert(change.room.unwrap().id);
            }
            _ => {}
        }
    }
    assert_eq!(seqs, (1..=FLOOD).collect::<Vec<_>>());
    assert_eq!(announced, joined_rooms);
    assert!(
        app.metric("natter_room_list_resyncs_total").await > 0,
        "the missed-changes path was exercised"
    );
    alice.send(&flood.id, "after").await;
    assert_eq!(next_message(&mut events).await.seq, FLOOD + 1);
}

#[tokio::test]
async fn a_session_ended_among_room_list_changes_a_slow_reader_missed_is_still_told() {
    // More room-list changes than the user's topic buffers (4), then the account is
    // disabled: the stream reads its list again, finds the session over and says why.
    let app = spawn_app().await;
    let (mut alice, mut bob, _flood, mut events) = flood_a_slow_reader(&app).await;
    app.natter.set_admin("alice", true).await.unwrap();
    for i in 0..8 {
        let room = alice.create_room(&format!("Room {i}")).await;
        bob.join(&room.code).await;
    }
    alice
        .chat
        .set_account_disabled(pb::SetAccountDisabledRequest {
            user_id: bob.user.id.clone(),
            disabled: true,
        })
        .await
        .unwrap();
    let (seen, status) = until_the_end(&mut events).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Ev::SessionEnded(s) if s.reason.contains("disabled"))),
        "told why"
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        app.metric("natter_room_list_resyncs_total").await > 0,
        "the missed-changes path was exercised"
    );
}

#[tokio::test]
async fn a_reader_that_falls_far_behind_is_repaired_from_the_log() {
    // More messages than a room topic buffers (16) plus the outbox (128): the unread stream's
    // bus receiver lags, and the session must fill the hole from the log.
    let app = spawn_app().await;
    let (_, _, _, mut events) = flood_a_slow_reader(&app).await;
    let mut seen = Vec::with_capacity(FLOOD as usize);
    while seen.len() < FLOOD as usize {
        seen.push(next_message(&mut events).await.seq);
    }
    assert_eq!(seen, (1..=FLOOD).collect::<Vec<_>>());
    assert!(
        app.metric("natter_stream_repairs_total").await > 0,
        "the lag path was exercised"
    );
    assert_eq!(app.metric("natter_messages_stored_total").await, FLOOD);
}

#[tokio::test]
async fn presence_a_slow_reader_missed_is_told_as_it_is_now() {
    // Carol comes online in the room while bob's stream is stuck behind a flood, and more
    // messages than a room topic buffers (16) push her notice out: repairing the hole from
    // the log brings the messages back, and the members' presence is told as it is now.
    const AFTER: u64 = 32;
    let app = spawn_app().await;
    let (mut alice, _bob, flood, mut events) = flood_a_slow_reader(&app).await;
    let mut carol = app.register("carol").await;
    carol.join(&flood.code).await;
    let mut carol_events = carol.subscribe(vec![]).await;
    expect_ready(&mut carol_events).await;
    for i in 1..=AFTER {
        alice.send(&flood.id, &format!("after {i}")).await;
    }
    let (mut last_seq, mut carol_online) = (0, false);
    while last_seq < FLOOD + AFTER || !carol_online {
        match next_event(&mut events).await {
            Ev::Message(m) if m.room_id == flood.id => {
                assert_eq!(m.seq, last_seq + 1, "no gap, no duplicate");
                last_seq = m.seq;
            }
            Ev::Presence(p) if p.user.as_ref().is_some_and(|u| u.id == carol.user.id) => {
                assert_eq!(p.room_id, flood.id);
                carol_online = p.online;
            }
            _ => {}
        }
    }
    assert!(
        app.metric("natter_stream_repairs_total").await > 0,
        "the lag path was exercised"
    );
}

/// Messages sent into a room while a member's stream is not read.
const FLOOD: u64 = 3000;

/// alice sends [`FLOOD`] messages into a room that bob follows on a stream he does not
/// read, over a connection with small windows: the stream backs up into the server.
/// Returns alice, bob (on his own connection), the room and bob's unread stream.
async fn flood_a_slow_reader(
    app: &TestApp,
) -> (TestUser, TestUser, pb::Room, tonic::Streaming<pb::Event>) {
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let flood = alice.create_room("Flood").await;
    bob.join(&flood.code).await;
    let mut events = bob.via_small_windows(&app.url).subscribe(vec![]).await;
    expect_ready(&mut events).await;
    for i in 1..=FLOOD {
        alice.send(&flood.id, &format!("m{i}")).await;
    }
    (alice, bob, flood, events)
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
async fn idle_streams_get_heartbeats() {
    let app = spawn_app_with(|c| c.heartbeat_interval = Duration::from_millis(100)).await;
    let mut alice = app.register("alice").await;
    let mut events = alice.subscribe(vec![]).await;
    let ready = expect_ready(&mut events).await;
    assert_eq!(ready.heartbeat_interval_ms, 100);
    for _ in 0..2 {
        let event = tokio::time::timeout(WAIT, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(event.event, Some(Ev::Heartbeat(_))), "{event:?}");
    }
}

/// Streams opened together get their first heartbeats at moments spread over the second half
/// of the interval (a random phase each): beating in step, they would send a burst of frames every interval
/// for as long as they stay open.
#[tokio::test]
async fn streams_opened_together_beat_at_spread_moments() {
    const STREAMS: usize = 12;
    let interval = Duration::from_secs(2);
    let app = spawn_app_with(|c| c.heartbeat_interval = interval).await;
    let alice = app.register("alice").await;
    let opened = futures::future::join_all((0..STREAMS).map(|_| {
        let mut client = alice.chat.clone();
        async move {
            let mut events = client
                .subscribe(pb::SubscribeRequest::default())
                .await
                .expect("subscribe")
                .into_inner();
            expect_ready(&mut events).await;
            events
        }
    }))
    .await;
    let first_beats = futures::future::join_all(opened.into_iter().map(|mut events| async move {
        let event = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("a heartbeat within the wait")
            .unwrap()
            .unwrap();
        assert!(matches!(event.event, Some(Ev::Heartbeat(_))), "{event:?}");
        tokio::time::Instant::now()
    }))
    .await;
    let earliest = first_beats.iter().min().unwrap();
    let latest = first_beats.iter().max().unwrap();
    // In step they would all come within milliseconds. The phases are drawn over the second
    // half of the interval: twelve of them fall within an eighth of the interval (a quarter
    // of that half) with a probability of about 12 * 0.25^11 (3 in a million).
    assert!(
        *latest - *earliest >= interval / 8,
        "first heartbeats within {:?} of each other",
        *latest - *earliest
    );
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
