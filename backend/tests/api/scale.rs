//! Several instances over one real Redis: one chat service. The tests that hold for any
//! Redis run twice: on one redis-server and on a Redis Cluster of three shards.

use std::{collections::HashMap, net::SocketAddr};

use natter_fleet::{Instance, SharedRedis};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::{helpers::*, redis_server::start_redis};

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
