//! The Log's properties: seqs, idempotent retries, ranges, refusals, following; and two
//! properties of the embedded log alone.

use std::sync::Arc;

use natter_proto::v1::{self as pb, event::Event as Ev};
use natter_server::seams::{StoreError, Topic};

use super::{Seams, embedded, five_messages, group_room, log_of, message, rid, room, seqs, uid};
use crate::helpers::WAIT;

pub(super) async fn appends_get_consecutive_seqs_and_retries_are_idempotent_per_sender(s: &Seams) {
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

pub(super) async fn the_log_reads_ranges_both_ways(s: &Seams) {
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

pub(super) async fn appends_are_refused_for_unknown_rooms_and_non_members(s: &Seams) {
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
    // A retry is checked like a first attempt: the service relies on the append alone to
    // refuse a sender who left, so a stored key must not let one through.
    s.log
        .append(message("r1", "idbob", "kept", "k1"))
        .await
        .unwrap();
    assert!(
        s.directory
            .remove_member(&rid("r1"), &uid("idbob"))
            .await
            .unwrap()
    );
    assert!(
        matches!(
            s.log.append(message("r1", "idbob", "kept", "k1")).await,
            Err(StoreError::NotMember)
        ),
        "bob left r1: his retry is refused, not answered with the stored message"
    );
    assert_eq!(seqs(&log_of(s, "r1").await), [1]);
}

pub(super) async fn deleting_a_room_removes_it_everywhere(s: &Seams) {
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

pub(super) async fn appends_reach_followers_in_seq_order(s: &Seams) {
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
