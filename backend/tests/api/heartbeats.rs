//! Heartbeats keep idle streams alive through proxies and idle timeouts, at moments spread
//! over the interval so that streams opened together do not beat in step.

use std::time::Duration;

use natter_proto::v1::{self as pb, event::Event as Ev};

use crate::helpers::*;

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
