//! The contract of the Directory and Log seams: one test per property, each run against
//! both implementations (a fresh redb file; a fresh redis-server), so a failure names the
//! property and the implementation (`store_contract::redis::deleting_a_room_...`).

use std::{sync::Arc, time::Duration};

use natter_proto::v1::{self as pb, event::Event as Ev};
use natter_server::{
    embedded::EmbeddedStore,
    ids::{RoomId, UserId},
    records::{AccountChange, EndedSession, MessageRecord, RoomKind, RoomRecord, UserRecord},
    redis::{RedisBus, RedisConn, RedisStore, RedisTarget, schema::Schema},
    seams::{Directory, Log, NewMessage, StoreError, Topic, search_users},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    helpers::{WAIT, poll_until},
    redis_server::{start_cluster, start_redis},
};

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
    ($($property:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$property(&super::embedded().await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$property(&super::redis().await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$property(&super::cluster().await).await;
                }
            )*
        }
    };
}

contract!(
    accounts_are_unique_and_found_by_name_and_id,
    the_directory_pages_and_matches_display_names,
    codes_are_unique_and_membership_is_tracked,
    direct_rooms_are_one_per_pair,
    appends_get_consecutive_seqs_and_retries_are_idempotent_per_sender,
    the_log_reads_ranges_both_ways,
    appends_are_refused_for_unknown_rooms_and_non_members,
    deleting_a_room_removes_it_everywhere,
    appends_reach_followers_in_seq_order,
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

async fn accounts_are_unique_and_found_by_name_and_id(s: &Seams) {
    // Ready once connected: the Redis bus connects its pub/sub link on a task of its own
    // (a cluster's takes longest), so readiness is awaited, within a bound.
    poll_until("the seams become ready", || async {
        s.directory.ready().await && s.log.ready().await
    })
    .await;
    users(s, &["alice", "bob", "carol"]).await;
    assert!(matches!(
        s.directory.create_user(user("alice")).await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(
        s.directory.user_by_username("bob").await.unwrap().unwrap(),
        user("bob")
    );
    assert_eq!(
        s.directory.user(&uid("idcarol")).await.unwrap().unwrap(),
        user("carol")
    );
    assert!(s.directory.user(&uid("nobody")).await.unwrap().is_none());
    let asked = [uid("idcarol"), uid("nobody"), uid("idalice")];
    assert_eq!(
        s.directory.users(&asked).await.unwrap(),
        vec![user("carol"), user("alice")],
        "those that exist, in the order asked"
    );
    assert!(s.directory.users(&[]).await.unwrap().is_empty());

    let change = |id: &str, change: AccountChange| {
        let directory = s.directory.clone();
        let id = uid(id);
        async move { directory.change_account(&id, &change).await.unwrap() }
    };
    let granted = change("idbob", AccountChange::Admin(true)).await.unwrap();
    assert!(granted.admin);
    assert_eq!(
        s.directory.user(&uid("idbob")).await.unwrap(),
        Some(granted)
    );
    assert!(
        !s.directory
            .user(&uid("idalice"))
            .await
            .unwrap()
            .unwrap()
            .admin
    );
    let revoked = change("idbob", AccountChange::Admin(false)).await.unwrap();
    assert_eq!(revoked, user("bob"));
    assert!(change("nobody", AccountChange::Admin(true)).await.is_none());

    // Concurrent changes of one account are all kept.
    let far = i64::MAX / 2;
    let changes = (0..8).map(|i| {
        change(
            "idcarol",
            AccountChange::EndSession(EndedSession {
                id: format!("session{i}"),
                until_ms: far,
            }),
        )
    });
    futures::future::join_all(changes).await;
    let carol = s.directory.user(&uid("idcarol")).await.unwrap().unwrap();
    assert_eq!(carol.ended_sessions.len(), 8);
    assert!(carol.session_ended("session3", 1));
    assert!(!carol.session_ended("session9", 1));
}

async fn the_directory_pages_and_matches_display_names(s: &Seams) {
    users(s, &["alice", "bob", "carol", "dave", "erin"]).await;
    let names = |page: &natter_server::seams::UserPage| -> Vec<String> {
        page.users.iter().map(|u| u.username.clone()).collect()
    };
    let first = search_users(&*s.directory, "", "", 2).await.unwrap();
    assert_eq!(names(&first), ["alice", "bob"]);
    let next = first.next_after.clone().expect("more pages");
    let rest = search_users(&*s.directory, "", &next, 10).await.unwrap();
    assert_eq!(names(&rest), ["carol", "dave", "erin"]);
    assert!(rest.next_after.is_none());
    let shown = search_users(&*s.directory, "ERIN SH", "", 10)
        .await
        .unwrap();
    assert_eq!(
        names(&shown),
        ["erin"],
        "display names match case-insensitively"
    );
}

async fn codes_are_unique_and_membership_is_tracked(s: &Seams) {
    group_room(s).await;
    let d = &s.directory;
    assert!(
        !d.create_room(room("r2", Some("CODE0001"), "idbob"))
            .await
            .unwrap(),
        "codes are unique"
    );
    assert!(d.room(&rid("r2")).await.unwrap().is_none());
    assert_eq!(d.room_by_code("CODE0001").await.unwrap().unwrap().id, "r1");
    assert!(
        d.is_member(&rid("r1"), &uid("idalice")).await.unwrap(),
        "the owner is a member"
    );
    assert!(!d.add_member(&rid("r1"), &uid("idbob")).await.unwrap());
    assert!(matches!(
        d.add_member(&rid("nowhere"), &uid("idbob")).await,
        Err(StoreError::RoomNotFound)
    ));
    let mut members = d.members_of(&rid("r1")).await.unwrap();
    members.sort();
    assert_eq!(members, ["idalice", "idbob"]);
    assert!(d.add_member(&rid("r1"), &uid("idcarol")).await.unwrap());
    assert!(d.remove_member(&rid("r1"), &uid("idcarol")).await.unwrap());
    assert!(!d.remove_member(&rid("r1"), &uid("idcarol")).await.unwrap());
    assert!(d.rooms_of(&uid("idcarol")).await.unwrap().is_empty());

    // A new code finds the room, the old one nothing; a taken code changes nothing.
    let r1 = d.room_by_code("CODE0001").await.unwrap().unwrap();
    assert_eq!(
        s.directory.change_code(&r1.id, "FRESH1").await.unwrap(),
        Some(true)
    );
    assert!(d.room_by_code("CODE0001").await.unwrap().is_none());
    let found = s.directory.room_by_code("FRESH1").await.unwrap().unwrap();
    assert_eq!(
        (found.id.clone(), found.kind.code()),
        (r1.id.clone(), Some("FRESH1"))
    );
    assert!(
        d.create_room(room("r9", Some("TAKEN1"), "idalice"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.directory.change_code(&r1.id, "TAKEN1").await.unwrap(),
        Some(false)
    );
    assert_eq!(
        s.directory
            .room_by_code("FRESH1")
            .await
            .unwrap()
            .unwrap()
            .id,
        r1.id
    );
    assert_eq!(
        s.directory.change_code(&rid("nope"), "X").await.unwrap(),
        None
    );
}

async fn direct_rooms_are_one_per_pair(s: &Seams) {
    group_room(s).await;
    let d = &s.directory;
    let (created, fresh) = d.open_direct(room_with_pair("d1")).await.unwrap();
    assert!(fresh);
    assert_eq!(created.id, "d1");
    let (existing, fresh) = d.open_direct(room_with_pair("d2")).await.unwrap();
    assert_eq!((existing.id.as_str(), fresh), ("d1", false));
    assert!(d.is_member(&rid("d1"), &uid("idbob")).await.unwrap());
    let mut bobs: Vec<RoomId> = d
        .rooms_of(&uid("idbob"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    bobs.sort();
    assert_eq!(bobs, ["d1", "r1"]);
    d.delete_room(&rid("d1")).await.unwrap();
    let (recreated, fresh) = d.open_direct(room_with_pair("d3")).await.unwrap();
    assert_eq!(
        (recreated.id.as_str(), fresh),
        ("d3", true),
        "the pair is free again"
    );
}

async fn appends_get_consecutive_seqs_and_retries_are_idempotent_per_sender(s: &Seams) {
    group_room(s).await;
    for (i, text) in ["a", "b", "c"].iter().enumerate() {
        let appended = s
            .log
            .append(message("r1", "idalice", text, ""))
            .await
            .unwrap();
        assert_eq!(
            (appended.message.seq, appended.created),
            (i as u64 + 1, true)
        );
    }
    let keyed = s
        .log
        .append(message("r1", "idalice", "d", "k1"))
        .await
        .unwrap();
    assert_eq!(keyed.message.seq, 4);
    let retry = s
        .log
        .append(message("r1", "idalice", "d", "k1"))
        .await
        .unwrap();
    assert_eq!((retry.message, retry.created), (keyed.message, false));
    let other = s
        .log
        .append(message("r1", "idbob", "e", "k1"))
        .await
        .unwrap();
    assert_eq!(
        (other.message.seq, other.created),
        (5, true),
        "a key is the sender's own"
    );
    let r1 = s.directory.room(&rid("r1")).await.unwrap().unwrap();
    assert_eq!((r1.last_seq, r1.first_seq), (5, 1));
}

async fn the_log_reads_ranges_both_ways(s: &Seams) {
    five_messages(s).await;
    let log = &s.log;
    assert_eq!(
        seqs(&log.messages_after(&rid("r1"), 0, 10).await.unwrap()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        seqs(&log.messages_after(&rid("r1"), 2, 2).await.unwrap()),
        [3, 4]
    );
    assert!(
        log.messages_after(&rid("r1"), 5, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        seqs(&log.messages_before(&rid("r1"), 0, 2).await.unwrap()),
        [4, 5]
    );
    assert_eq!(
        seqs(&log.messages_before(&rid("r1"), 3, 10).await.unwrap()),
        [1, 2]
    );
    assert!(
        log.messages_before(&rid("r1"), 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let stored = &log.messages_after(&rid("r1"), 3, 1).await.unwrap()[0];
    assert_eq!(
        (
            stored.text.as_str(),
            stored.client_id.as_str(),
            stored.sent_at
        ),
        ("d", "k1", 3)
    );
}

async fn appends_are_refused_for_unknown_rooms_and_non_members(s: &Seams) {
    group_room(s).await;
    assert!(matches!(
        s.log.append(message("nowhere", "idalice", "x", "")).await,
        Err(StoreError::RoomNotFound)
    ));
    assert!(
        matches!(
            s.log.append(message("r1", "idcarol", "sneaky", "")).await,
            Err(StoreError::NotMember)
        ),
        "carol is not in r1: her append is refused in the same step"
    );
    assert!(log_of(s, "r1").await.is_empty());
}

async fn deleting_a_room_removes_it_everywhere(s: &Seams) {
    five_messages(s).await;
    let d = &s.directory;
    let mut former = d.delete_room(&rid("r1")).await.unwrap();
    former.sort();
    assert_eq!(former, ["idalice", "idbob"]);
    assert!(d.room(&rid("r1")).await.unwrap().is_none());
    assert!(d.room_by_code("CODE0001").await.unwrap().is_none());
    assert!(!d.is_member(&rid("r1"), &uid("idbob")).await.unwrap());
    assert!(d.rooms_of(&uid("idbob")).await.unwrap().is_empty());
    assert!(log_of(s, "r1").await.is_empty());
    assert!(matches!(
        s.log.append(message("r1", "idalice", "x", "")).await,
        Err(StoreError::RoomNotFound)
    ));
    assert!(
        d.delete_room(&rid("r1")).await.unwrap().is_empty(),
        "deleting twice is harmless"
    );
    assert!(
        d.create_room(room("r3", Some("CODE0001"), "idbob"))
            .await
            .unwrap(),
        "the code is free again"
    );
}

async fn appends_reach_followers_in_seq_order(s: &Seams) {
    group_room(s).await;
    let mut follower = s.log.follow(&Topic::Room(rid("r1"))).await.unwrap();
    for text in ["a", "b", "c"] {
        s.log
            .append(message("r1", "idalice", text, ""))
            .await
            .unwrap();
    }
    let typing = pb::Event {
        event: Some(Ev::Typing(pb::Typing {
            room_id: "r1".into(),
            user: None,
            typing: true,
        })),
    };
    s.log
        .publish(&Topic::Room(rid("r1")), typing.clone())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match next_followed(&mut follower).await {
            Some(pb::Event {
                event: Some(Ev::Message(m)),
            }) => seen.push(format!("#{}", m.seq)),
            Some(event) if event == typing => seen.push("typing".into()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["#1", "#2", "#3", "typing"]);
}

/// The next event a follower receives, decoded; it must come in time and not lag.
async fn next_followed(
    follower: &mut tokio::sync::broadcast::Receiver<natter_server::seams::SharedEvent>,
) -> Option<pb::Event> {
    tokio::time::timeout(WAIT, follower.recv())
        .await
        .expect("an event in time")
        .expect("the follower keeps up")
        .decoded()
}

/// The direct room of alice and bob.
fn room_with_pair(id: &str) -> RoomRecord {
    room(id, None, "idalice")
}

/// Records the name of the thread that wakes it.
struct WokenOn(std::sync::Mutex<Option<String>>);

impl std::task::Wake for WokenOn {
    fn wake(self: Arc<Self>) {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        *self.0.lock().unwrap() = Some(thread);
    }
}

/// The embedded log publishes each commit from a task on the runtime, so the wakes of the
/// streams following a room stay in a worker's queue instead of crossing from the writer
/// thread one by one; in seq order, and each message before its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_publishes_on_the_runtime_in_seq_order_before_answering() {
    use std::future::Future;
    let s = embedded().await;
    group_room(&s).await;
    let mut follower = s.log.follow(&Topic::Room(rid("r1"))).await.unwrap();

    let woken_on = Arc::new(WokenOn(std::sync::Mutex::new(None)));
    let waker = std::task::Waker::from(woken_on.clone());
    {
        let mut waiting = std::pin::pin!(follower.recv());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        let first = s.log.append(message("r1", "idalice", "first", "")).await;
        assert_eq!(first.unwrap().message.seq, 1);
        assert_eq!(
            woken_on.0.lock().unwrap().as_deref(),
            Some("tokio-rt-worker"),
            "the publish woke the stream from a runtime worker, before the answer"
        );
    }

    // Fewer than a room topic holds (16), so the follower, not reading meanwhile, keeps up.
    let sends = (0..14).map(|n| s.log.append(message("r1", "idbob", &format!("m{n}"), "")));
    for appended in futures::future::join_all(sends).await {
        assert!(appended.unwrap().created);
    }
    let mut published = Vec::new();
    while published.len() < 15 {
        match next_followed(&mut follower).await {
            Some(pb::Event {
                event: Some(Ev::Message(m)),
            }) => published.push(m.seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(published, (1..=15).collect::<Vec<u64>>());
}

/// Reads of one key (an account, a room, a membership: every `SendMessage` makes these
/// three) run in place, not on the blocking pool: they answer while every thread of the
/// pool is taken, where a hop through the pool would wait behind the work holding it.
#[test]
fn the_embedded_stores_reads_of_one_key_do_not_wait_for_the_blocking_pool() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let s = embedded().await;
        group_room(&s).await;
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = tokio::task::spawn_blocking(move || {
            started.send(()).unwrap();
            held.recv_timeout(WAIT)
        });
        running
            .recv_timeout(WAIT)
            .expect("the pool's one thread is taken");
        let reads = async {
            (
                s.directory.user(&uid("idbob")).await,
                s.directory.user_by_username("carol").await,
                s.directory.room(&rid("r1")).await,
                s.directory.room_by_code("CODE0001").await,
                s.directory.is_member(&rid("r1"), &uid("idbob")).await,
            )
        };
        let answered = tokio::time::timeout(WAIT, reads).await;
        release.send(()).unwrap();
        holder.await.unwrap().expect("released");
        let (bob, carol, room, by_code, member) = answered.expect("answered with the pool busy");
        assert_eq!(bob.unwrap().unwrap().username, "bob");
        assert_eq!(carol.unwrap().unwrap().id, uid("idcarol"));
        assert_eq!(room.unwrap().unwrap().id, rid("r1"));
        assert_eq!(by_code.unwrap().unwrap().id, rid("r1"));
        assert!(member.unwrap());
    });
}
