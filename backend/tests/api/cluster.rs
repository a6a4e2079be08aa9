//! Natter on a real Redis Cluster of three primaries with a replica each: rooms spread over
//! the shards, each instance holds one subscriber connection per shard, and the fleet rides
//! out a primary's death and a slot's migration under traffic without a gap, a duplicate or
//! a lost acknowledged message; a send waiting for replicas never succeeds before they
//! hold the message.

use std::{collections::BTreeSet, time::Duration};

use natter_fleet::{Primary, RedisCluster};
use natter_proto::v1 as pb;
use tokio::{sync::watch, task::JoinHandle};
use tonic::Code;

use crate::{helpers::*, redis_server::start_cluster};

/// The slot of a room (its keys and channel share it).
async fn room_slot(cluster: &RedisCluster, room_id: &str) -> u16 {
    let key = format!("natter:room:{{{room_id}}}");
    let answer = cluster
        .cli(cluster.ports()[0], &["cluster", "keyslot", &key])
        .await
        .unwrap();
    answer.trim().parse().unwrap()
}

/// The primary that owns a room's slot, and its replicas (at least one).
async fn room_shard(cluster: &RedisCluster, room_id: &str) -> (Primary, Vec<u16>) {
    let primary = cluster
        .primary_of(room_slot(cluster, room_id).await)
        .await
        .unwrap();
    let replicas = cluster.replicas_of(&primary).await.unwrap();
    assert!(!replicas.is_empty(), "{primary:?} has a replica");
    (primary, replicas)
}

/// How many connections on `primary` hold shard-channel subscriptions (`ssub=` in CLIENT
/// LIST), and how many subscribers `channel` has there.
async fn subscribers(cluster: &RedisCluster, primary: &Primary, channel: &str) -> (usize, u64) {
    let clients = cluster
        .cli(primary.port, &["client", "list"])
        .await
        .unwrap();
    let subscribed = clients
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .any(|field| field.starts_with("ssub=") && field != "ssub=0")
        })
        .count();
    let numsub = cluster
        .cli(primary.port, &["pubsub", "shardnumsub", channel])
        .await
        .unwrap();
    let count = numsub.lines().nth(1).unwrap_or("0").trim().parse().unwrap();
    (subscribed, count)
}

#[tokio::test]
async fn rooms_spread_over_every_shard_and_each_instance_subscribes_once_per_shard() {
    let cluster = start_cluster().await;
    let a = spawn_redis_app(&cluster, |_| {}).await;
    let b = spawn_redis_app(&cluster, |_| {}).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let mut bob = b.connect(&bob);
    let primaries = cluster.primaries().await.unwrap();
    assert_eq!(primaries.len(), 3);

    // Rooms until every shard owns one (ids are random: a few suffice).
    let mut rooms = Vec::new();
    let mut shards = BTreeSet::new();
    while shards.len() < 3 {
        assert!(rooms.len() < 40, "40 rooms all on fewer than three shards");
        let room = alice.create_room(&format!("room {}", rooms.len())).await;
        let owner = cluster
            .primary_of(room_slot(&cluster, &room.id).await)
            .await
            .unwrap();
        shards.insert(owner.port);
        bob.join(&room.code).await;
        rooms.push((room, owner));
    }

    let mut alice_events = alice.subscribe(vec![]).await;
    expect_ready(&mut alice_events).await;
    let mut bob_events = bob.subscribe(vec![]).await;
    expect_ready(&mut bob_events).await;
    for (room, _) in &rooms {
        alice.send(&room.id, "from A").await;
        bob.send(&room.id, "from B").await;
    }
    // Both streams see both messages of every room, whichever shard and instance.
    let expected: BTreeSet<(String, u64)> = rooms
        .iter()
        .flat_map(|(room, _)| [(room.id.clone(), 1), (room.id.clone(), 2)])
        .collect();
    for events in [&mut alice_events, &mut bob_events] {
        let mut seen = BTreeSet::new();
        while seen.len() < expected.len() {
            let message = next_message(events).await;
            assert!(seen.insert((message.room_id, message.seq)), "no duplicate");
        }
        assert_eq!(seen, expected);
    }

    // Each instance: one subscriber connection per shard, whatever the number of rooms.
    for primary in &primaries {
        let (room, _) = rooms.iter().find(|(_, owner)| owner == primary).unwrap();
        let channel = format!("natter:ch:room:{{{}}}", room.id);
        assert_eq!(
            subscribers(&cluster, primary, &channel).await,
            (2, 2),
            "two instances, one connection each on {primary:?}"
        );
    }
}

/// Sends `count` messages one after the other, each with a client id, retrying a failed
/// send (with the same id) until it is acknowledged. Every failure must be UNAVAILABLE.
/// Reports the number acknowledged so far; returns the acknowledged messages.
fn steady_sender(
    mut sender: TestUser,
    room_id: String,
    count: u64,
) -> (JoinHandle<Vec<pb::Message>>, watch::Receiver<u64>) {
    let (acked, acks) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 1..=count {
            let deadline = tokio::time::Instant::now() + WAIT;
            let message = loop {
                let answer = sender
                    .chat
                    .send_message(pb::SendMessageRequest {
                        room_id: room_id.clone(),
                        text: format!("m{i}"),
                        client_id: format!("c{i}"),
                    })
                    .await;
                match answer {
                    Ok(message) => break message.into_inner(),
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        assert!(tokio::time::Instant::now() < deadline, "m{i} never landed");
                        // A client's retry pace, not a synchronisation.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            sent.push(message);
            acked.send_replace(i);
        }
        sent
    });
    (task, acks)
}

/// Reads a room's messages from a stream until `last` arrives, resuming from the last seq
/// seen whenever the stream fails (as clients do), and checks they are `1..=last` in order.
async fn read_all(
    reader: &mut TestUser,
    mut events: tonic::Streaming<pb::Event>,
    room_id: &str,
    last: u64,
) -> Vec<pb::Message> {
    let mut seen: Vec<pb::Message> = Vec::new();
    while seen.last().map_or(0, |m| m.seq) < last {
        let Ok(event) = tokio::time::timeout(WAIT, events.message()).await else {
            panic!(
                "no event in time after seq {}",
                seen.last().map_or(0, |m| m.seq)
            );
        };
        match event {
            Ok(Some(pb::Event {
                event: Some(pb::event::Event::Message(message)),
            })) => {
                assert_eq!(message.room_id, room_id);
                seen.push(message);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let after_seq = seen.last().map_or(0, |m| m.seq);
                events = reader
                    .subscribe(vec![pb::RoomCursor {
                        room_id: room_id.into(),
                        after_seq,
                    }])
                    .await;
            }
        }
    }
    let seqs: Vec<u64> = seen.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "no gap, no duplicate");
    seen
}

/// Two instances chatting in one room while `disrupt` happens to the cluster once some
/// messages are acknowledged. Every acknowledged message is in the history and on the
/// other instance's stream, once, in order, with the same text at the same seq.
async fn chat_through(
    cluster: &mut RedisCluster,
    wait_replicas: u32,
    disrupt: impl AsyncFnOnce(&mut RedisCluster, u16),
) {
    const MESSAGES: u64 = 60;
    let a = spawn_redis_app(&*cluster, |c| c.redis_wait_replicas = wait_replicas).await;
    let b = spawn_redis_app(&*cluster, |c| c.redis_wait_replicas = wait_replicas).await;
    let mut alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let room = alice.create_room("Busy").await;
    let mut bob = b.connect(&bob);
    bob.join(&room.code).await;
    let mut events = bob.subscribe(vec![]).await;
    expect_ready(&mut events).await;

    let (sender, mut acks) = steady_sender(alice, room.id.clone(), MESSAGES);
    acks.wait_for(|n| *n >= 15).await.unwrap();
    let slot = room_slot(cluster, &room.id).await;
    disrupt(cluster, slot).await;
    let acknowledged = sender.await.unwrap();

    // The log first: a stream that waits in vain for a seq is then told apart from a log
    // that lost an acknowledged message.
    let texts = |messages: &[pb::Message]| -> Vec<(u64, String)> {
        messages.iter().map(|m| (m.seq, m.text.clone())).collect()
    };
    let expected: Vec<(u64, String)> = (1..=MESSAGES).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(
        texts(&acknowledged),
        expected,
        "each send acknowledged once"
    );
    assert_eq!(
        texts(&bob.history(&room.id).await),
        expected,
        "the log holds what was acknowledged"
    );
    let streamed = read_all(&mut bob, events, &room.id, MESSAGES).await;
    assert_eq!(texts(&streamed), expected, "and so does the stream");
}

/// With two replicas per shard, so that the shard still has one to wait for after its
/// primary died (waiting for a replica that does not exist fails every send, by design).
#[tokio::test]
async fn a_primary_dies_under_traffic_and_nothing_acknowledged_is_lost() {
    let mut cluster = RedisCluster::start_with_replicas(None, natter_fleet::Fsync::EverySecond, 2)
        .await
        .unwrap();
    chat_through(&mut cluster, 1, async |cluster, slot| {
        let primary = cluster.primary_of(slot).await.unwrap();
        cluster.kill(primary.port).await.unwrap();
        cluster.wait_until_healthy().await.unwrap();
        let now = cluster.primary_of(slot).await.unwrap();
        assert_ne!(now.port, primary.port, "its replica took over");
    })
    .await;
}

#[tokio::test]
async fn a_busy_rooms_slot_moves_to_another_shard_without_gap_or_duplicate() {
    let mut cluster = start_cluster().await;
    chat_through(&mut cluster, 0, async |cluster, slot| {
        let from = cluster.primary_of(slot).await.unwrap();
        let primaries = cluster.primaries().await.unwrap();
        let to = primaries.iter().find(|p| p.id != from.id).unwrap();
        cluster.move_slot(slot, to).await.unwrap();
        assert_eq!(cluster.primary_of(slot).await.unwrap().id, to.id);
    })
    .await;
}

/// With --redis-wait-replicas, a send whose replica does not answer fails UNAVAILABLE, and
/// so does its retry on another instance (which finds the message already stored), until
/// the replica holds the message: then the retry succeeds with the seq the first attempt
/// took, and the room holds the message once.
#[tokio::test]
async fn a_send_succeeds_only_once_a_replica_holds_it_even_retried_elsewhere() {
    let cluster = start_cluster().await;
    let a = spawn_redis_app(&cluster, |c| c.redis_wait_replicas = 1).await;
    let b = spawn_redis_app(&cluster, |c| c.redis_wait_replicas = 1).await;
    let mut alice = a.register("alice").await;
    let room = alice.create_room("Careful").await;
    let mut alice_on_b = b.connect(&alice);
    let (_, replicas) = room_shard(&cluster, &room.id).await;
    let request = || pb::SendMessageRequest {
        room_id: room.id.clone(),
        text: "kept".into(),
        client_id: "once".into(),
    };

    for replica in &replicas {
        cluster.freeze(*replica).unwrap();
    }
    for user in [&mut alice, &mut alice_on_b] {
        let status = user.chat.send_message(request()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    for replica in &replicas {
        cluster.thaw(*replica).unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let sent = loop {
        match alice_on_b.chat.send_message(request()).await {
            Ok(sent) => break sent.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(tokio::time::Instant::now() < deadline, "never acknowledged");
                // A client's retry pace, not a synchronisation.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!((sent.seq, sent.text.as_str()), (1, "kept"));
    let history = alice.history(&room.id).await;
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1],
        "one message, however many attempts"
    );
}

/// `WAIT` blocks the connection it runs on until replicas answer: a send waiting for a
/// frozen replica must not hold up other requests to the same primary (they would queue
/// behind it on a shared connection for the whole wait).
#[tokio::test]
async fn a_send_waiting_for_replicas_does_not_hold_up_other_requests_to_its_primary() {
    let cluster = start_cluster().await;
    let a = spawn_redis_app(&cluster, |c| c.redis_wait_replicas = 1).await;
    let mut alice = a.register("alice").await;
    let room = alice.create_room("Patient").await;
    let mut waiting_alice = a.connect(&alice);
    let (primary, replicas) = room_shard(&cluster, &room.id).await;
    // The first send loads the append script (a NOSCRIPT answer would be followed by a WAIT
    // covering nothing of this test).
    alice.send(&room.id, "first").await;
    for replica in &replicas {
        cluster.freeze(*replica).unwrap();
    }
    let room_id = room.id.clone();
    let send = tokio::spawn(async move {
        waiting_alice
            .chat
            .send_message(pb::SendMessageRequest {
                room_id,
                text: "waits".into(),
                client_id: "w1".into(),
            })
            .await
    });
    let blocked_waits = async || {
        let clients = cluster
            .cli(primary.port, &["client", "list"])
            .await
            .unwrap();
        clients
            .lines()
            .filter(|line| line.contains("cmd=wait") && line.contains("flags=b"))
            .count()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while blocked_waits().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no WAIT blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let history = alice.history(&room.id).await;
    assert_eq!(
        history.len(),
        2,
        "the log holds the waiting message: {history:?}"
    );
    assert_eq!(
        blocked_waits().await,
        1,
        "the read was answered while the send still waited"
    );
    let status = send.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for replica in &replicas {
        cluster.thaw(*replica).unwrap();
    }
}
