//! `Follows`: each event with its room's entry, every room in turn, and only the rooms that
//! woke the stream polled again (slots, the shared slot, one room alone, a left room's slot).

use super::*;
use crate::seams::BusMessage;
use futures::StreamExt;
use std::sync::{Arc, atomic::Ordering};

fn room(name: &str) -> RoomId {
    RoomId::from_trusted(name.to_owned())
}

/// The next item, failing the test if none comes in time (a lost wake would hang it).
async fn next_in_time(follows: &mut Follows) -> Option<LiveItem> {
    tokio::time::timeout(std::time::Duration::from_secs(5), follows.next())
        .await
        .expect("the stream was woken")
}

/// `count` rooms `r0`, `r1`, ..., each on a channel of its own, registered by a first poll.
fn rooms(count: usize) -> (Follows, Vec<tokio::sync::broadcast::Sender<SharedEvent>>) {
    let senders: Vec<_> = (0..count)
        .map(|_| tokio::sync::broadcast::channel::<SharedEvent>(16).0)
        .collect();
    let mut follows = Follows::default();
    for (n, sender) in senders.iter().enumerate() {
        follows.insert(room(&format!("r{n}")), sender.subscribe());
    }
    let task = futures::task::noop_waker();
    assert!(poll_once(&mut follows, &task).is_pending());
    (follows, senders)
}

#[tokio::test]
async fn live_events_come_with_their_rooms_entry_and_every_room_gets_its_turn() {
    let (busy, _) = tokio::sync::broadcast::channel(16);
    let (quiet, _) = tokio::sync::broadcast::channel(16);
    let mut follows = Follows::default();
    follows.insert(room("busy"), busy.subscribe());
    follows.insert(room("quiet"), quiet.subscribe());
    for _ in 0..8 {
        busy.send(Arc::new(BusMessage::Resync)).unwrap();
    }
    quiet.send(Arc::new(BusMessage::Resync)).unwrap();
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let (index, item) = next_in_time(&mut follows).await.expect("an event");
        assert!(item.is_ok());
        rooms.push(follows.room_id(index).to_string());
    }
    assert!(rooms.contains(&"quiet".to_owned()), "{rooms:?}");
}

#[tokio::test]
async fn a_room_is_followed_for_the_client_from_its_replay_until_removed() {
    let (sender, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
    let mut follows = Follows::default();
    follows.insert(room("a"), sender.subscribe());
    assert!(!follows.is_followed(&room("a")), "not before the replay");
    let index = follows.position(&room("a")).unwrap();
    follows.at_mut(index).delivered = Some(7);
    follows.insert(room("a"), sender.subscribe());
    assert_eq!(
        follows.delivered(&room("a")),
        Some(7),
        "kept on a new receiver"
    );
    assert_eq!(follows.followed(), [room("a")]);
    assert!(follows.remove(&room("a")));
    assert!(!follows.remove(&room("a")));
    assert!(follows.followed().is_empty());
}

/// A task waker that counts its wakes.
#[derive(Default)]
struct Counter(std::sync::atomic::AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn poll_once(follows: &mut Follows, task: &Waker) -> Poll<Option<LiveItem>> {
    Pin::new(follows).poll_next(&mut Context::from_waker(task))
}

#[test]
fn only_the_room_that_woke_the_stream_is_polled_again() {
    let senders: Vec<_> = (0..3)
        .map(|_| tokio::sync::broadcast::channel::<SharedEvent>(16).0)
        .collect();
    let mut follows = Follows::default();
    for (name, sender) in ["a", "b", "c"].iter().zip(&senders) {
        follows.insert(room(name), sender.subscribe());
    }
    let counter = Arc::new(Counter::default());
    let task = Waker::from(counter.clone());
    assert!(
        poll_once(&mut follows, &task).is_pending(),
        "all registered"
    );
    assert_eq!(follows.due, 0);

    senders[1].send(Arc::new(BusMessage::Resync)).unwrap();
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        1,
        "the task is woken once"
    );
    let b = follows.position(&room("b")).unwrap();
    assert_eq!(
        follows.woken.as_ref().unwrap().bits.load(Ordering::Acquire),
        1 << follows.rooms[b].slot,
        "only b's slot is marked"
    );
    match poll_once(&mut follows, &task) {
        Poll::Ready(Some((index, Ok(_)))) => assert_eq!(index, b),
        other => panic!("expected b's event, got {other:?}"),
    }
    assert_eq!(
        follows.due,
        1 << follows.rooms[b].slot,
        "b again: it may have more"
    );
    assert!(poll_once(&mut follows, &task).is_pending());
    assert_eq!(
        (
            follows.due,
            follows.woken.as_ref().unwrap().bits.load(Ordering::Acquire)
        ),
        (0, 0)
    );
}

#[tokio::test]
async fn rooms_beyond_the_63rd_share_a_slot_and_still_deliver() {
    let (mut follows, senders) = rooms(70);
    let slots: Vec<u32> = follows.rooms.iter().map(|f| f.slot).collect();
    assert_eq!(slots[..63], (0..63).collect::<Vec<u32>>()[..]);
    assert!(slots[63..].iter().all(|&slot| slot == SHARED_SLOT));

    for n in [3, 64, 69] {
        senders[n].send(Arc::new(BusMessage::Resync)).unwrap();
    }
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let (index, item) = next_in_time(&mut follows).await.expect("an event");
        assert!(item.is_ok());
        rooms.push(follows.room_id(index).to_string());
    }
    rooms.sort();
    assert_eq!(rooms, ["r3", "r64", "r69"]);
}

#[test]
fn a_room_followed_alone_is_heard_once_a_second_room_comes() {
    let (first, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
    let (second, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
    let mut follows = Follows::default();
    follows.insert(room("a"), first.subscribe());
    follows.insert(room("left"), second.subscribe());
    let counter = Arc::new(Counter::default());
    let task = Waker::from(counter.clone());
    assert!(
        poll_once(&mut follows, &task).is_pending(),
        "each with its own"
    );
    follows.remove(&room("left"));
    assert!(
        poll_once(&mut follows, &task).is_pending(),
        "a alone, with the task's"
    );
    follows.insert(room("b"), second.subscribe());
    assert!(
        poll_once(&mut follows, &task).is_pending(),
        "both, with their own"
    );
    first.send(Arc::new(BusMessage::Resync)).unwrap();
    assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    match poll_once(&mut follows, &task) {
        Poll::Ready(Some((index, Ok(_)))) => assert_eq!(follows.room_id(index), &room("a")),
        other => panic!("expected a's event, got {other:?}"),
    }
}

#[test]
fn a_left_rooms_slot_goes_to_the_next_room() {
    let (sender, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
    let mut follows = Follows::default();
    follows.insert(room("a"), sender.subscribe());
    follows.insert(room("b"), sender.subscribe());
    let a_slot = follows.rooms[0].slot;
    follows.remove(&room("a"));
    follows.insert(room("c"), sender.subscribe());
    let c = follows.position(&room("c")).unwrap();
    assert_eq!(follows.rooms[c].slot, a_slot);
}

#[tokio::test]
async fn a_closed_channel_is_not_polled_again() {
    let (sender, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
    let mut follows = Follows::default();
    follows.insert(room("a"), sender.subscribe());
    drop(sender);
    assert!(next_in_time(&mut follows).await.is_none());
    assert!(follows.rooms[0].closed);
    assert!(next_in_time(&mut follows).await.is_none());
}

#[tokio::test]
async fn the_rooms_sharing_a_slot_take_turns() {
    let (mut follows, senders) = rooms(65);
    for _ in 0..8 {
        senders[63].send(Arc::new(BusMessage::Resync)).unwrap();
    }
    senders[64].send(Arc::new(BusMessage::Resync)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (index, _) = next_in_time(&mut follows).await.expect("an event");
        seen.push(follows.room_id(index).to_string());
    }
    assert!(seen.contains(&"r64".to_owned()), "{seen:?}");
}

#[tokio::test]
async fn a_new_receiver_for_a_followed_room_is_polled() {
    let (mut follows, _senders) = rooms(2);
    let (replacement, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
    follows.insert(room("r0"), replacement.subscribe());
    let task = futures::task::noop_waker();
    assert!(
        poll_once(&mut follows, &task).is_pending(),
        "registers the new one"
    );
    replacement.send(Arc::new(BusMessage::Resync)).unwrap();
    let (index, _) = next_in_time(&mut follows).await.expect("an event");
    assert_eq!(follows.room_id(index), &room("r0"));
}

#[tokio::test]
async fn when_every_room_closed_there_is_nothing_more() {
    let (mut follows, senders) = rooms(3);
    drop(senders);
    assert!(next_in_time(&mut follows).await.is_none());
    assert!(follows.rooms.iter().all(|follow| follow.closed));
}
