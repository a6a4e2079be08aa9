//! What Redis keeps: a restart of Redis loses no acknowledged message, and retention trims
//! history and tells a resuming client so.

use std::time::Duration;

use natter_proto::v1::{self as pb, event::Event as Ev};
use tonic::Code;

use crate::{
    helpers::*,
    redis_server::{redis_command, start_redis},
};

#[tokio::test]
async fn redis_restart_loses_no_acknowledged_message() {
    const TOTAL: u64 = 60;
    let mut redis = start_redis().await;
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let room = alice.create_room("General").await;
    let mut bob = b.connect(&bob);
    bob.join(&room.code).await;

    // bob's client: reads, and on any stream failure reconnects with its cursor.
    let bob_room = room.id.clone();
    let reader = tokio::spawn(async move {
        let mut seen: Vec<u64> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < TOTAL as usize {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bob did not catch up: {seen:?}"
            );
            let after = seen.last().copied().unwrap_or(0);
            let request = pb::SubscribeRequest {
                resume: vec![cursor(&bob_room, after)],
            };
            let Ok(response) = bob.chat.subscribe(request).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut events = response.into_inner();
            while let Ok(Some(event)) = events.message().await {
                if let Some(Ev::Message(m)) = event.event {
                    assert_eq!(
                        m.seq,
                        seen.len() as u64 + 1,
                        "in order, no gap, no duplicate"
                    );
                    seen.push(m.seq);
                }
                if seen.len() == TOTAL as usize {
                    break;
                }
            }
        }
        seen
    });

    // alice sends 60 messages, retrying each with its client_id until acknowledged; Redis
    // dies and comes back in the middle.
    let mut unavailable = 0;
    let mut restarted = false;
    for i in 1..=TOTAL {
        if i == TOTAL / 2 {
            redis.kill().await.unwrap();
            let send = alice
                .chat
                .send_message(pb::SendMessageRequest {
                    room_id: room.id.clone(),
                    text: "lost?".into(),
                    client_id: format!("k{i}"),
                })
                .await;
            assert_eq!(
                send.unwrap_err().code(),
                Code::Unavailable,
                "no false success while Redis is down"
            );
            let ready = crate::probes::http_request(&a, "GET", "/readyz", None).await;
            assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
            // Counted where operators look (process-wide: other tests may add to it).
            assert!(a.metric("natter_store_errors_total").await >= 1);
            unavailable += 1;
            redis.start_again().await.unwrap();
            restarted = true;
        }
        loop {
            let request = pb::SendMessageRequest {
                room_id: room.id.clone(),
                text: format!("m{i}"),
                client_id: format!("k{i}"),
            };
            match alice.chat.send_message(request).await {
                Ok(message) => {
                    assert_eq!(message.into_inner().seq, i);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    assert!(restarted && unavailable >= 1);
    let seen = tokio::time::timeout(Duration::from_secs(90), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
    // The stream caught up from the log, which may finish before the instance's pub/sub
    // listener is back (it reconnects with a backoff): ready again by itself, in bounded time.
    let recovered = tokio::time::timeout(WAIT, async {
        loop {
            let ready = crate::probes::http_request(&a, "GET", "/readyz", None).await;
            if ready.starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(recovered.is_ok(), "/readyz never answered 200 again");
}

#[tokio::test]
async fn retention_trims_history_and_says_so_on_resume() {
    let redis = start_redis().await;
    let a = spawn_redis_app(&redis, |c| c.history_retention = 5).await;
    let mut alice = a.register("alice").await;
    let room = alice.create_room("Short memory").await;
    let send = |i: u64| pb::SendMessageRequest {
        room_id: room.id.clone(),
        text: format!("m{i}"),
        client_id: format!("c{i}"),
    };
    for i in 1..=300 {
        alice.chat.send_message(send(i)).await.unwrap();
    }
    // Idempotency keys are kept as long as their messages: a recent retry still finds the
    // original, and the keys of trimmed messages are gone.
    assert_eq!(
        alice
            .chat
            .send_message(send(300))
            .await
            .unwrap()
            .into_inner()
            .seq,
        300
    );
    let keys: i64 = redis::from_redis_value(
        redis_command(&redis, &["HLEN", &format!("natter:room:{}:cids", room.id)]).await,
    )
    .unwrap();
    assert!((5..300).contains(&keys), "{keys} idempotency keys kept");
    // Trimming is approximate (whole stream nodes), so at least 5 and far fewer than 300 remain.
    let history = alice
        .chat
        .get_history(pb::GetHistoryRequest {
            room_id: room.id.clone(),
            before_seq: 0,
            limit: 200,
        })
        .await
        .unwrap()
        .into_inner();
    let first = history.messages.first().unwrap().seq;
    assert!(
        history.messages.len() >= 5 && first > 1,
        "{}",
        history.messages.len()
    );
    assert!(!history.has_more, "nothing older is kept");
    assert_eq!(history.messages.last().unwrap().seq, 300);

    let mut events = alice.subscribe(vec![cursor(&room.id, 2)]).await;
    expect_ready(&mut events).await;
    let Ev::HistoryTrimmed(trimmed) = next_event(&mut events).await else {
        panic!("HistoryTrimmed first")
    };
    assert_eq!((trimmed.after_seq, trimmed.first_available_seq), (2, first));
    assert_eq!(next_message(&mut events).await.seq, first);
}
