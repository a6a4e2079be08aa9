//! The send deadline: a stream whose client stops reading is ended after `--send-timeout`,
//! its resume delivers everything in order, and other clients are not held up.

use std::time::Duration;

use natter_proto::v1::{self as pb, event::Event as Ev};

use crate::helpers::*;

#[tokio::test]
async fn a_stream_whose_client_stops_reading_is_ended_and_resumes_without_a_gap() {
    let app = spawn_app_with(|c| {
        c.send_timeout = Duration::from_millis(500);
        c.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("Flood").await;
    bob.join(&room.code).await;
    let mut alice_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alice_events).await;
    // Bob's connection has 16 KiB windows, and he never reads past Ready.
    let mut stuck = bob.via_small_windows(&app.url).subscribe(vec![]).await;
    expect_ready(&mut stuck).await;

    const TOTAL: u64 = 200;
    let long = "x".repeat(3_990);
    for i in 1..=TOTAL {
        alice.send(&room.id, &format!("{i:03} {long}")).await;
    }
    // Alice, reading, gets everything while bob's stream is stuck.
    for i in 1..=TOTAL {
        assert_eq!(next_message(&mut alice_events).await.seq, i);
    }
    let ended = "natter_rejections_total{limit=\"send_timeout\"}";
    app.wait_for_metric(ended, |n| n > 0).await;

    // What reached bob before the end is in order from the first message, and the call
    // then fails (the connection was closed) instead of hanging.
    let mut seqs = Vec::new();
    let status = tokio::time::timeout(WAIT, async {
        loop {
            match stuck.message().await {
                Ok(Some(pb::Event {
                    event: Some(Ev::Message(message)),
                })) => seqs.push(message.seq),
                Ok(Some(_)) => {}
                Ok(None) => panic!("ended cleanly, as if nothing were left"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stream ends instead of going on");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
        ),
        "{status:?}"
    );
    let last = seqs.last().copied().unwrap_or(0);
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    assert!(last < TOTAL, "bob was not stuck: got all {last}");

    // The resume delivers the rest, in order, without a gap or a duplicate.
    let cursor = pb::RoomCursor {
        room_id: room.id.clone(),
        after_seq: last,
    };
    let mut resumed = bob.via(&app.url).subscribe(vec![cursor]).await;
    expect_ready(&mut resumed).await;
    for seq in last + 1..=TOTAL {
        assert_eq!(next_message(&mut resumed).await.seq, seq);
    }
}
