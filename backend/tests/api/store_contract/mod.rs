//! The contract of the Directory and Log seams: one test per property, each run against
//! both implementations (a fresh redb file; a fresh redis-server), so a failure names the
//! property and the implementation (`store_contract::redis::deleting_a_room_...`).

use std::{sync::Arc, time::Duration};

use natter_server::{
    embedded::EmbeddedStore,
    ids::{RoomId, UserId},
    records::{MessageRecord, RoomKind, RoomRecord, UserRecord},
    redis::{RedisBus, RedisConn, RedisStore, RedisTarget, schema::Schema},
    seams::{Directory, Log, NewMessage},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::redis_server::{start_cluster, start_redis};

mod directory;
mod log;

/// One implementation of the two seams, and whatever must live as long as it.
struct Seams {
    directory: Arc<dyn Directory>,
    log: Arc<dyn Log>,
    _lives: Box<dyn std::any::Any + Send>,
}

async fn embedded() -> Seams {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    Seams {
        directory: store.clone(),
        log: store,
        _lives: Box::new(dir),
    }
}

async fn redis() -> Seams {
    let redis = start_redis().await;
    redis_seams(
        RedisTarget::Server(redis.url()),
        Schema::new("contract"),
        redis,
    )
}

/// The same seams on a Redis Cluster of three shards: every operation must keep to one
/// hash slot per command, or the cluster refuses it.
async fn cluster() -> Seams {
    let cluster = start_cluster().await;
    let seeds = cluster.seeds().split(',').map(String::from).collect();
    redis_seams(
        RedisTarget::Cluster(seeds),
        Schema::clustered("contract"),
        cluster,
    )
}

fn redis_seams(target: RedisTarget, schema: Schema, server: impl Send + 'static) -> Seams {
    let conn = RedisConn::open(&target).unwrap();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let bus = RedisBus::start(
        &target,
        conn.clone(),
        schema.clone(),
        Duration::from_secs(3),
        shutdown.clone(),
        &tasks,
    )
    .unwrap();
    let store = Arc::new(RedisStore::new(conn, schema, 0, bus));
    Seams {
        directory: store.clone(),
        log: store,
        _lives: Box::new((server, shutdown.drop_guard())),
    }
}

/// Each property as a test for each implementation.
macro_rules! contract {
    ($($area:ident :: $property:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$area::$property(&super::embedded().await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$area::$property(&super::redis().await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$area::$property(&super::cluster().await).await;
                }
            )*
        }
    };
}

contract!(
    directory::accounts_are_unique_and_found_by_name_and_id,
    directory::the_directory_pages_and_matches_display_names,
    directory::codes_are_unique_and_membership_is_tracked,
    directory::direct_rooms_are_one_per_pair,
    log::appends_get_consecutive_seqs_and_retries_are_idempotent_per_sender,
    log::the_log_reads_ranges_both_ways,
    log::appends_are_refused_for_unknown_rooms_and_non_members,
    log::deleting_a_room_removes_it_everywhere,
    log::appends_reach_followers_in_seq_order,
);

fn uid(id: &str) -> UserId {
    UserId::from_trusted(id)
}

fn rid(id: &str) -> RoomId {
    RoomId::from_trusted(id)
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        id: uid(&format!("id{name}")),
        username: name.into(),
        display_name: format!("{name} shown"),
        password_hash: "hash".into(),
        created_at: 1,
        admin: false,
        disabled: false,
        sessions_after_ms: 0,
        ended_sessions: Vec::new(),
        blocked: Vec::new(),
    }
}

fn room(id: &str, code: Option<&str>, owner: &str) -> RoomRecord {
    RoomRecord {
        id: rid(id),
        name: format!("room {id}"),
        owner_id: uid(owner),
        kind: match code {
            Some(code) => RoomKind::Group {
                code: code.into(),
                password_hash: None,
            },
            None => RoomKind::Direct {
                pair: [uid("idalice"), uid("idbob")],
            },
        },
        created_at: 2,
        last_seq: 0,
        first_seq: 1,
    }
}

/// The direct room of alice and bob.
fn room_with_pair(id: &str) -> RoomRecord {
    room(id, None, "idalice")
}

fn message(room_id: &str, sender: &str, text: &str, client_id: &str) -> NewMessage {
    NewMessage {
        id: format!("m-{text}"),
        room_id: rid(room_id),
        sender_id: uid(sender),
        sender_name: sender.into(),
        text: text.into(),
        sent_at: 3,
        client_id: client_id.into(),
    }
}

/// The first messages of a room's log.
async fn log_of(s: &Seams, room: &str) -> Vec<MessageRecord> {
    s.log.messages_after(&rid(room), 0, 10).await.unwrap()
}

fn seqs(messages: &[MessageRecord]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

async fn users(s: &Seams, names: &[&str]) {
    for name in names {
        s.directory.create_user(user(name)).await.unwrap();
    }
}

/// alice owns group room r1 (code CODE0001); bob is a member.
async fn group_room(s: &Seams) {
    users(s, &["alice", "bob", "carol"]).await;
    assert!(
        s.directory
            .create_room(room("r1", Some("CODE0001"), "idalice"))
            .await
            .unwrap()
    );
    assert!(
        s.directory
            .add_member(&rid("r1"), &uid("idbob"))
            .await
            .unwrap()
    );
}

/// r1 with messages a, b, c (no key), d (key k1 by alice), e (key k1 by bob).
async fn five_messages(s: &Seams) {
    group_room(s).await;
    for text in ["a", "b", "c"] {
        s.log
            .append(message("r1", "idalice", text, ""))
            .await
            .unwrap();
    }
    s.log
        .append(message("r1", "idalice", "d", "k1"))
        .await
        .unwrap();
    s.log
        .append(message("r1", "idbob", "e", "k1"))
        .await
        .unwrap();
}
