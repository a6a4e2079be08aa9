//! Presence over Redis between heartbeats: the steady round writes nothing per user, and
//! each reason to rewrite an instance's presence hash from its own mirror does rewrite it.
//! Tests change the instance's keys directly (one instance per Redis, prefix "natter") to
//! stand for a write Redis lost, or applied behind the instance's back.

use std::time::Duration;

use crate::helpers::*;
use crate::redis_server::{redis_command, start_redis};
use natter_fleet::Redis;

/// The only instance's id, from the instances' heartbeat set.
async fn instance_id(redis: &Redis) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let ids: Vec<String> = redis::from_redis_value(
                redis_command(redis, &["ZRANGE", "natter:instances", "0", "-1"]).await,
            )
            .unwrap();
            if let [id] = ids.as_slice() {
                return id.clone();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("one instance's heartbeat")
}

/// The count of a user's streams in the instance's presence hash (None: not there).
async fn stream_count(redis: &Redis, instance: &str, user_id: &str) -> Option<i64> {
    let key = format!("natter:presence:{instance}");
    redis::from_redis_value(redis_command(redis, &["HGET", &key, user_id]).await).unwrap()
}

/// Waits (bounded) until the user's count in the hash is `expected`.
async fn wait_for_count(redis: &Redis, instance: &str, user_id: &str, expected: Option<i64>) {
    poll_until(
        &format!("{user_id}'s stream count in Redis never became {expected:?}"),
        || async { stream_count(redis, instance, user_id).await == expected },
    )
    .await;
}

/// Waits (bounded) until the instance's heartbeat advances `rounds` times.
async fn wait_for_heartbeats(redis: &Redis, instance: &str, rounds: usize) {
    let score = || async {
        redis::from_redis_value::<Option<String>>(
            redis_command(redis, &["ZSCORE", "natter:instances", instance]).await,
        )
        .unwrap()
    };
    tokio::time::timeout(WAIT * 2, async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..rounds {
            let before = score().await;
            while score().await == before {
                poll.tick().await;
            }
        }
    })
    .await
    .expect("the heartbeat advances");
}

/// How many times Redis ran `command` (scripts' calls included), from INFO commandstats.
async fn calls(redis: &Redis, command: &str) -> u64 {
    let info: String =
        redis::from_redis_value(redis_command(redis, &["INFO", "commandstats"]).await).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The instance's presence hash.
fn hash_of(instance: &str) -> String {
    format!("natter:presence:{instance}")
}

/// Asserts that two heartbeat rounds read and write no user (steady rounds).
async fn assert_rounds_are_steady(redis: &Redis, instance: &str) {
    let touched = (calls(redis, "hset").await, calls(redis, "hmget").await);
    wait_for_heartbeats(redis, instance, 2).await;
    assert_eq!(
        (calls(redis, "hset").await, calls(redis, "hmget").await),
        touched,
        "a steady round reads and writes no user"
    );
}

/// alice and bob in one room, alice's stream Ready (bob has none).
async fn alice_and_bob_in_a_room(
    app: &TestApp,
) -> (
    TestUser,
    TestUser,
    natter_proto::v1::Room,
    tonic::Streaming<natter_proto::v1::Event>,
) {
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let room = alice.create_room("General").await;
    bob.join(&room.code).await;
    let mut alice_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alice_events).await;
    (alice, bob, room, alice_events)
}

/// alice with one stream, counted in Redis, and a heartbeat round since: the instance's id.
async fn alice_counted_once(
    redis: &Redis,
    app: &TestApp,
) -> (TestUser, tonic::Streaming<natter_proto::v1::Event>, String) {
    let mut alice = app.register("alice").await;
    let events = alice.subscribe(vec![]).await;
    let instance = instance_id(redis).await;
    wait_for_count(redis, &instance, &alice.user.id, Some(1)).await;
    wait_for_heartbeats(redis, &instance, 1).await;
    (alice, events, instance)
}

#[tokio::test]
async fn steady_rounds_refresh_the_heartbeat_without_writing_any_user() {
    let redis = start_redis().await;
    let app = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    let _alice_events = alice.subscribe(vec![]).await;
    let _bob_events = bob.subscribe(vec![]).await;
    let instance = instance_id(&redis).await;
    wait_for_count(&redis, &instance, &alice.user.id, Some(1)).await;
    wait_for_heartbeats(&redis, &instance, 1).await;

    // A steady round still renews the hash's expiry (4 TTLs: 12 s here).
    redis_command(&redis, &["PEXPIRE", &hash_of(&instance), "5000"]).await;
    let rewrites = app.metric("natter_presence_rewrites_total").await;
    assert!(rewrites >= 1, "the first round rewrites");
    assert_rounds_are_steady(&redis, &instance).await;
    assert_eq!(
        app.metric("natter_presence_rewrites_total").await,
        rewrites,
        "steady rounds are not counted as rewrites"
    );
    let expiry: i64 =
        redis::from_redis_value(redis_command(&redis, &["PTTL", &hash_of(&instance)]).await)
            .unwrap();
    assert!(expiry > 9_000, "the hash's expiry is renewed: {expiry} ms");
    assert_eq!(stream_count(&redis, &instance, &bob.user.id).await, Some(1));
}

#[tokio::test]
async fn a_user_redis_lost_is_restored_and_announced_online() {
    let redis = start_redis().await;
    let app = spawn_redis_app(&redis, |_| {}).await;
    let (mut alice, mut bob, room, mut alice_events) = alice_and_bob_in_a_room(&app).await;
    let _bob_events = bob.subscribe(vec![]).await;
    assert!(wait_for_presence(&mut alice_events, "bob").await.online);
    let instance = instance_id(&redis).await;
    wait_for_heartbeats(&redis, &instance, 1).await;
    let rewrites = app.metric("natter_presence_rewrites_total").await;

    redis_command(&redis, &["HDEL", &hash_of(&instance), &bob.user.id]).await;
    let members = alice.members(&room.id).await;
    let bob_member = members
        .iter()
        .find_map(|m| m.user.as_ref().filter(|u| u.username == "bob"))
        .unwrap();
    assert!(!bob_member.online, "Redis no longer counts bob");

    let announced = tokio::time::timeout(WAIT, wait_for_presence(&mut alice_events, "bob"))
        .await
        .expect("the next round notices the hash lost a user, rewrites it and announces bob");
    assert!(announced.online);
    assert_eq!(stream_count(&redis, &instance, &bob.user.id).await, Some(1));
    assert!(app.metric("natter_presence_rewrites_total").await > rewrites);
}

#[tokio::test]
async fn a_user_redis_counts_wrongly_is_removed_and_announced_offline() {
    let redis = start_redis().await;
    let app = spawn_redis_app(&redis, |_| {}).await;
    let (alice, bob, _room, mut alice_events) = alice_and_bob_in_a_room(&app).await;
    let instance = instance_id(&redis).await;
    wait_for_count(&redis, &instance, &alice.user.id, Some(1)).await;

    // bob has no stream; Redis counts one (the close of his last stream was lost, say).
    redis_command(&redis, &["HSET", &hash_of(&instance), &bob.user.id, "1"]).await;
    let announced = tokio::time::timeout(WAIT, wait_for_presence(&mut alice_events, "bob"))
        .await
        .expect("the next round removes bob from the hash and announces him");
    assert!(!announced.online);
    assert_eq!(stream_count(&redis, &instance, &bob.user.id).await, None);
}

#[tokio::test]
async fn an_acknowledged_update_redis_lost_is_rewritten() {
    let redis = start_redis().await;
    let app = spawn_redis_app(&redis, |_| {}).await;
    let mut alice = app.register("alice").await;
    let _first = alice.subscribe(vec![]).await;
    let _second = alice.subscribe(vec![]).await;
    let instance = instance_id(&redis).await;
    wait_for_count(&redis, &instance, &alice.user.id, Some(2)).await;
    wait_for_heartbeats(&redis, &instance, 1).await;

    // What a restart from an older snapshot or a failover does: the second stream's update,
    // answered, is gone, with the count of applied updates. The number of users is the same.
    redis_command(&redis, &["HSET", &hash_of(&instance), &alice.user.id, "1"]).await;
    redis_command(&redis, &["DECR", &format!("natter:updates:{instance}")]).await;
    wait_for_count(&redis, &instance, &alice.user.id, Some(2)).await;
}

#[tokio::test]
async fn an_instance_whose_heartbeat_redis_lost_rewrites_its_hash() {
    let redis = start_redis().await;
    let app = spawn_redis_app(&redis, |_| {}).await;
    let (alice, _events, instance) = alice_counted_once(&redis, &app).await;

    redis_command(&redis, &["HSET", &hash_of(&instance), &alice.user.id, "7"]).await;
    redis_command(&redis, &["ZREM", "natter:instances", &instance]).await;
    wait_for_count(&redis, &instance, &alice.user.id, Some(1)).await;
}

#[tokio::test]
async fn a_stream_count_update_that_failed_is_corrected_by_the_next_round() {
    let redis = start_redis().await;
    // A TTL long enough that the pause below does not make the instance's own heartbeat
    // look too old (which would also cause a rewrite), and that no round starts during it.
    let app = spawn_redis_app(&redis, |c| c.presence_ttl = Duration::from_secs(20)).await;
    let (mut alice, _first, instance) = alice_counted_once(&redis, &app).await;

    // Writes wait longer than the instance waits for an answer: the second stream's count
    // update fails on the instance (the stream is refused), then Redis applies it.
    let increments = calls(&redis, "hincrby").await;
    redis_command(&redis, &["CLIENT", "PAUSE", "4500", "WRITE"]).await;
    let refused = alice
        .chat
        .subscribe(natter_proto::v1::SubscribeRequest { resume: vec![] })
        .await
        .expect_err("the stream cannot be counted");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    poll_until("Redis applies the update after the pause", || async {
        calls(&redis, "hincrby").await != increments
    })
    .await;

    wait_for_count(&redis, &instance, &alice.user.id, Some(1)).await;
    assert_eq!(app.metric("natter_bus_reconnects_total").await, 0);
}

#[tokio::test]
async fn an_update_abandoned_by_a_leaving_client_does_not_stop_steady_rounds() {
    let redis = start_redis().await;
    let app = spawn_redis_app(&redis, |_| {}).await;
    let (mut alice, _first, instance) = alice_counted_once(&redis, &app).await;

    // The client gives up on a stream while its count update waits for Redis: the server
    // drops the opening, and with it the update's future.
    redis_command(&redis, &["CLIENT", "PAUSE", "1500", "WRITE"]).await;
    let opening = alice
        .chat
        .subscribe(natter_proto::v1::SubscribeRequest { resume: vec![] });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), opening)
            .await
            .is_err(),
        "the opening waits for Redis"
    );
    wait_for_heartbeats(&redis, &instance, 2).await;
    wait_for_count(&redis, &instance, &alice.user.id, Some(1)).await;

    // A later rewrite (here for a user Redis counts wrongly) must still be able to trust
    // itself: no update counts as in flight any more.
    redis_command(&redis, &["HSET", &hash_of(&instance), "nobody", "1"]).await;
    wait_for_count(&redis, &instance, "nobody", None).await;
    wait_for_heartbeats(&redis, &instance, 1).await;
    assert_rounds_are_steady(&redis, &instance).await;
}
