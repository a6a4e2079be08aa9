//! Many streams (re)subscribing at once, as after an instance died: every one resumes
//! without a gap, and live traffic keeps flowing meanwhile.

use natter_proto::v1 as pb;

use crate::{helpers::*, redis_server::start_redis};

const STREAMS: usize = 200;
const BACKLOG: u64 = 20;

#[tokio::test]
async fn a_storm_of_resumes_over_redis_is_gap_free_and_does_not_stall_live_events() {
    let redis = start_redis().await;
    // One account plays the many clients of the storm: allow it that many streams.
    let many = |c: &mut natter_server::Config| c.max_streams_per_user = STREAMS as u32 + 1;
    let a = spawn_redis_app(&redis, many).await;
    let b = spawn_redis_app(&redis, many).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let room = alice.create_room("Storm").await;
    let lounge = alice.create_room("Lounge").await;
    bob.via(&b.url).join(&room.code).await;
    for i in 1..=BACKLOG {
        alice.send(&room.id, &format!("backlog {i}")).await;
    }
    // carol watches another room on b while the storm hits b.
    let mut carol = a.register("carol").await;
    carol.join(&lounge.code).await;
    let mut lounge_events = carol.via(&b.url).subscribe(vec![]).await;
    expect_ready(&mut lounge_events).await;

    let storm: Vec<_> = (0..STREAMS)
        .map(|_| {
            let mut bob = bob.via(&b.url);
            let room_id = room.id.clone();
            tokio::spawn(async move {
                let cursor = pb::RoomCursor {
                    room_id,
                    after_seq: 0,
                };
                let mut events = bob.subscribe(vec![cursor]).await;
                expect_ready(&mut events).await;
                let mut seqs = Vec::new();
                while seqs.len() < BACKLOG as usize {
                    seqs.push(next_message(&mut events).await.seq);
                }
                (seqs, events)
            })
        })
        .collect();
    // Live messages in the lounge while the storm subscribes.
    for i in 1..=20u64 {
        alice.send(&lounge.id, &format!("live {i}")).await;
    }
    for i in 1..=20u64 {
        assert_eq!(next_message(&mut lounge_events).await.seq, i);
    }

    let mut streams = Vec::with_capacity(STREAMS);
    for task in storm {
        let (seqs, events) = task.await.unwrap();
        assert_eq!(seqs, (1..=BACKLOG).collect::<Vec<_>>());
        streams.push(events);
    }
    // Every stream is subscribed live: the next message is the next one each receives
    // (presence changes of the storm's own streams may come first).
    let next = alice.send(&room.id, "after the storm").await;
    for events in &mut streams {
        assert_eq!(next_message(events).await.seq, next.seq);
    }
}
