//! Several instances over one real Redis: one chat service. The tests that hold for any
//! Redis run twice: on one redis-server and on a Redis Cluster of three shards.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use natter_fleet::{Instance, SharedRedis};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{
    helpers::*,
    redis_server::{redis_command, start_redis},
};

/// Each test on one redis-server (`scale::server::...`) and on a Redis Cluster of three
/// shards (`scale::cluster::...`).
macro_rules! on_server_and_cluster {
    ($($test:ident),* $(,)?) => {
        mod server {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::redis_server::start_redis().await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::redis_server::start_cluster().await).await;
                }
            )*
        }
    };
}

on_server_and_cluster!(
    messages_cross_instances_to_subscribe_and_chat_streams,
    concurrent_senders_on_three_instances_share_one_order,
    a_client_resumes_on_another_instance_without_gap_or_duplicate,
    a_dead_instance_takes_its_users_offline,
    an_admin_granted_through_redis_holds_on_every_instance,
);

fn cursor(room_id: &str, after_seq: u64) -> pb::RoomCursor {
    pb::RoomCursor {
        room_id: room_id.into(),
        after_seq,
    }
}

async fn messages_cross_instances_to_subscribe_and_chat_streams(redis: impl SharedRedis) {
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let c = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let carol = a.register("carol").await;
    let room = alice.create_room("General").await;
    let mut bob = b.connect(&bob);
    let mut carol = c.connect(&carol);
    assert_eq!(
        bob.join(&room.code).await.id,
        room.id,
        "a code made on A works on B"
    );
    carol.join(&room.code).await;

    let mut bob_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bob_events).await;
    let (frames, outgoing) = mpsc::channel(8);
    frames
        .send(pb::ClientFrame {
            frame: Some(pb::client_frame::Frame::Subscribe(
                pb::SubscribeRequest::default(),
            )),
            frame_id: String::new(),
        })
        .await
        .unwrap();
    let mut carol_events = carol
        .chat
        .chat(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    expect_ready(&mut carol_events).await;

    alice.send(&room.id, "from A").await;
    assert_eq!(next_message(&mut bob_events).await.text, "from A");
    assert_eq!(next_message(&mut carol_events).await.text, "from A");

    // Presence and typing cross instances too.
    let members = alice.members(&room.id).await;
    let online: HashMap<String, bool> = members
        .iter()
        .map(|m| {
            (
                m.user.clone().unwrap().username,
                m.user.as_ref().unwrap().online,
            )
        })
        .collect();
    assert_eq!(
        online,
        HashMap::from([
            ("alice".into(), false),
            ("bob".into(), true),
            ("carol".into(), true)
        ])
    );
    bob.chat
        .set_typing(pb::SetTypingRequest {
            room_id: room.id.clone(),
            typing: true,
        })
        .await
        .unwrap();
    let typing = wait_for(&mut carol_events, |e| match e {
        Ev::Typing(t) => t.user,
        _ => None,
    })
    .await;
    assert_eq!(typing.username, "bob");

    // Idempotency holds across instances.
    let send = |client_id: &str| pb::SendMessageRequest {
        room_id: room.id.clone(),
        text: "once".into(),
        client_id: client_id.into(),
    };
    let first = alice
        .chat
        .send_message(send("k1"))
        .await
        .unwrap()
        .into_inner();
    let retry = b
        .connect(&alice)
        .chat
        .send_message(send("k1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    assert_eq!(bob.history(&room.id).await.len(), 2);
}

async fn concurrent_senders_on_three_instances_share_one_order(redis: impl SharedRedis) {
    const SENDERS_PER_INSTANCE: usize = 5;
    const MESSAGES_EACH: usize = 20;
    const TOTAL: u64 = (3 * SENDERS_PER_INSTANCE * MESSAGES_EACH) as u64;
    let fleet = [
        spawn_redis_app(&redis, |_| {}).await,
        spawn_redis_app(&redis, |_| {}).await,
        spawn_redis_app(&redis, |_| {}).await,
    ];
    let mut owner = fleet[0].register("owner").await;
    let room = owner.create_room("Busy").await;

    let mut streams = Vec::new();
    for (i, app) in fleet.iter().enumerate() {
        let mut watcher = app.connect(&fleet[0].register(&format!("watcher{i}")).await);
        watcher.join(&room.code).await;
        let mut events = watcher.subscribe(vec![]).await;
        expect_ready(&mut events).await;
        streams.push(events);
    }
    let mut senders = Vec::new();
    for (i, app) in fleet.iter().enumerate() {
        for s in 0..SENDERS_PER_INSTANCE {
            let mut sender = app.connect(&fleet[0].register(&format!("sender{i}x{s}")).await);
            sender.join(&room.code).await;
            let room_id = room.id.clone();
            senders.push(tokio::spawn(async move {
                for m in 0..MESSAGES_EACH {
                    sender.send(&room_id, &format!("{i}/{s}/{m}")).await;
                }
            }));
        }
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut orders = Vec::new();
    for events in &mut streams {
        let mut seen = Vec::new();
        while seen.len() < TOTAL as usize {
            let m = next_message(events).await;
            seen.push((m.seq, m.id));
        }
        assert_eq!(
            seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=TOTAL).collect::<Vec<_>>()
        );
        orders.push(seen);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "every instance saw the same message at each seq"
    );
}

async fn a_client_resumes_on_another_instance_without_gap_or_duplicate(redis: impl SharedRedis) {
    const TOTAL: u64 = 200;
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let c = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room = alice.create_room("General").await;
    let mut bob_on_a = a.connect(&bob);
    bob_on_a.join(&room.code).await;
    let mut events = bob_on_a.subscribe(vec![]).await;
    expect_ready(&mut events).await;

    let room_id = room.id.clone();
    let sender = tokio::spawn(async move {
        for i in 1..=TOTAL {
            alice.send(&room_id, &format!("m{i}")).await;
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 50 {
        seen.push(next_message(&mut events).await.seq);
    }
    drop(events);
    let mut bob_on_b = b.connect(&bob);
    let mut events = bob_on_b
        .subscribe(vec![cursor(&room.id, *seen.last().unwrap())])
        .await;
    expect_ready(&mut events).await;
    while *seen.last().unwrap() < TOTAL {
        seen.push(next_message(&mut events).await.seq);
    }
    sender.await.unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test]
async fn killed_pubsub_connections_are_repaired_from_the_log() {
    let redis = start_redis().await;
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let room = alice.create_room("General").await;
    let mut bob = b.connect(&bob);
    bob.join(&room.code).await;
    let mut events = bob.subscribe(vec![]).await;
    expect_ready(&mut events).await;
    alice.send(&room.id, "before").await;
    assert_eq!(next_message(&mut events).await.seq, 1);

    // Cut every subscriber connection, then publish at once: the instances reconnect only
    // after a jittered backoff of at least 50 ms, so these messages are published while
    // nobody is subscribed, and only the log can deliver them.
    redis_command(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    for i in 2..=11 {
        alice.send(&room.id, &format!("during {i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 10 {
        seen.push(next_message(&mut events).await.seq);
    }
    assert_eq!(seen, (2..=11).collect::<Vec<_>>());
    assert!(b.metric("natter_bus_reconnects_total").await >= 1);
    assert!(b.metric("natter_stream_repairs_total").await >= 1);
    alice.send(&room.id, "after").await;
    assert_eq!(next_message(&mut events).await.seq, 12);
}

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

#[tokio::test]
async fn redis_mode_refuses_to_start_without_a_shared_secret() {
    let redis = start_redis().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.redis_url = Some(redis.url().into());
    let error = natter_server::build(config.clone()).await.unwrap_err();
    assert!(format!("{error:#}").contains("--jwt-secret"), "{error:#}");
    config.jwt_secret = Some("too-short".into());
    let error = natter_server::build(config).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("at least 32 bytes"),
        "{error:#}"
    );
}

async fn a_dead_instance_takes_its_users_offline(redis: impl SharedRedis) {
    let a = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let room = alice.create_room("General").await;
    let mut alice_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alice_events).await;

    // bob's instance is a separate process, killed without any cleanup.
    let logs = tempfile::tempdir().unwrap();
    let config = instance_config(&redis, &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], natter_fleet::free_port().unwrap()));
    let mut process = Instance::start("doomed", addr, config, logs.path())
        .await
        .unwrap();
    let mut bob = bob.via(&process.url());
    bob.join(&room.code).await;
    let mut bob_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bob_events).await;
    let online = wait_for_presence(&mut alice_events, "bob").await.online;
    assert!(online);

    process.kill().await.unwrap();
    let offline = wait_for_presence(&mut alice_events, "bob").await.online;
    assert!(!offline, "announced by a surviving instance");
    let members = alice.members(&room.id).await;
    assert!(
        members
            .iter()
            .all(|m| !m.user.as_ref().unwrap().online
                || m.user.as_ref().unwrap().username == "alice")
    );
}

#[tokio::test]
async fn one_pubsub_connection_per_instance_and_channels_only_while_followed() {
    let redis = start_redis().await;
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = a.register("alice").await;
    let room = alice.create_room("General").await;
    let mut streams = Vec::new();
    for (i, app) in [&a, &b].into_iter().cycle().take(20).enumerate() {
        let mut user = app.connect(&a.register(&format!("user{i}")).await);
        user.join(&room.code).await;
        let mut events = user.subscribe(vec![]).await;
        expect_ready(&mut events).await;
        streams.push(events);
    }
    let clients: String =
        redis::from_redis_value(redis_command(&redis, &["CLIENT", "LIST", "TYPE", "pubsub"]).await)
            .unwrap();
    assert_eq!(
        clients.lines().count(),
        2,
        "20 streams, 2 instances, 2 connections:\n{clients}"
    );
    // Keepalive PINGs (every second with this TTL) must not pass for a dead connection.
    let reconnects = a.metric("natter_bus_reconnects_total").await
        + b.metric("natter_bus_reconnects_total").await;

    let channel = format!("natter:ch:room:{}", room.id);
    let subscribers = |value: redis::Value| -> i64 {
        let redis::Value::Array(items) = value else {
            panic!("{value:?}")
        };
        redis::from_redis_value(items[1].clone()).unwrap()
    };
    assert_eq!(
        subscribers(redis_command(&redis, &["PUBSUB", "NUMSUB", &channel]).await),
        2
    );
    drop(streams);
    // Idle channels are unsubscribed by a periodic sweep (every 5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while subscribers(redis_command(&redis, &["PUBSUB", "NUMSUB", &channel]).await) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room channel is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = a.metric("natter_bus_reconnects_total").await
        + b.metric("natter_bus_reconnects_total").await;
    assert_eq!(
        (reconnects, after),
        (0, 0),
        "no reconnects while Redis is healthy"
    );
}

#[tokio::test]
async fn deployments_with_different_prefixes_share_one_redis_without_meeting() {
    let redis = start_redis().await;
    let blue = spawn_redis_app(&redis, |c| c.redis_prefix = "blue".into()).await;
    let green = spawn_redis_app(&redis, |c| c.redis_prefix = "green".into()).await;
    let mut blue_alice = blue.register("alice").await;
    let mut green_alice = green.register("alice").await;
    let room = blue_alice.create_room("Blue only").await;
    let joined = green_alice
        .chat
        .join_room(pb::JoinRoomRequest {
            code: room.code.clone(),
            password: String::new(),
        })
        .await;
    assert_eq!(joined.unwrap_err().code(), Code::NotFound);
}

/// An admin granted on one instance (an operator task against the shared Redis) is an
/// admin on every instance at once: the role is read from the account, not the token.
async fn an_admin_granted_through_redis_holds_on_every_instance(redis: impl SharedRedis) {
    let a = spawn_redis_app(&redis, |_| {}).await;
    let b = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = a.register("alice").await;
    let moderator = a.register("moderator").await;
    let room = alice.create_room("Unruly").await;
    let mut on_b = moderator.via(&b.url);
    let delete = |room_id: &str| pb::DeleteRoomRequest {
        room_id: room_id.into(),
    };
    assert_eq!(
        on_b.chat
            .delete_room(delete(&room.id))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    a.natter.set_admin("moderator", true).await.unwrap();
    on_b.chat.delete_room(delete(&room.id)).await.unwrap();
    assert!(alice.rooms().await.is_empty());
}
