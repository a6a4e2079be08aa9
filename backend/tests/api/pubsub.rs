//! An instance's one Redis pub/sub connection: shared by all its streams, subscribed to a
//! room's channel only while a stream follows it, and repaired from the log when cut.

use std::time::Duration;

use crate::{
    helpers::*,
    redis_server::{redis_command, start_redis},
};

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
