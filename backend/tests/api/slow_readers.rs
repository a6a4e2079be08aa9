//! A stream that falls behind (its client reads slowly) is repaired, never skipped: the
//! messages it missed are read again from the log in seq order, and the room list changes,
//! the session's end and presence it missed are told as they are now.

use natter_proto::v1::{self as pb, event::Event as Ev};
use tonic::Code;

use crate::helpers::*;

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
