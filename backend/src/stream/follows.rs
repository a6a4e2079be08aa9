//! The rooms a stream follows: for each, its live receiver and the last seq delivered, in
//! one entry.
//!
//! A `StreamMap` of receivers next to a `HashMap` of seqs kept every room id three times
//! (both maps' keys, and a clone per live event, which `StreamMap` hands out with each item)
//! and hashed it on every delivery. Here a live event comes with its entry's index, so the
//! hot path reads and updates its room's seq in place. A user follows tens of rooms, not
//! thousands: the lookups by id (catching up, joins, leaves) scan a short vector.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{ids::RoomId, seams::SharedEvent};

/// A live event of the followed room at an index (valid until the follows change).
pub(super) type LiveItem = (usize, Result<SharedEvent, BroadcastStreamRecvError>);

/// One followed room.
pub(super) struct Follow {
    pub(super) room_id: RoomId,
    /// Highest seq delivered; `None` until the room's replay starts (live events are
    /// ignored until then: the replay reads the log after they were published).
    pub(super) delivered: Option<u64>,
    live: BroadcastStream<SharedEvent>,
    /// The topic's channel closed (the bus keeps it open while anyone follows it, so this
    /// is defensive): not polled again.
    closed: bool,
}

/// The rooms a stream follows.
#[derive(Default)]
pub(super) struct Follows {
    rooms: Vec<Follow>,
    /// Where the next poll starts, rotating, so that a busy room cannot starve the others.
    next_start: usize,
}

impl Follows {
    /// Room for `rooms` follows without growing (a stream's rooms are known when it
    /// subscribes; growth would leave spare capacity for the stream's life).
    pub(super) fn reserve_exact(&mut self, rooms: usize) {
        self.rooms.reserve_exact(rooms);
    }

    /// Follows a room live; replaces the receiver if it is followed already, keeping
    /// its seq.
    pub(super) fn insert(
        &mut self,
        room_id: RoomId,
        receiver: tokio::sync::broadcast::Receiver<SharedEvent>,
    ) {
        let live = BroadcastStream::new(receiver);
        match self.position(&room_id) {
            Some(index) => {
                let follow = &mut self.rooms[index];
                follow.live = live;
                follow.closed = false;
            }
            None => self.rooms.push(Follow {
                room_id,
                delivered: None,
                live,
                closed: false,
            }),
        }
    }

    /// The index of a room's entry.
    pub(super) fn position(&self, room_id: &RoomId) -> Option<usize> {
        self.rooms.iter().position(|f| &f.room_id == room_id)
    }

    /// The entry at `index` (from [`Follows::position`] or a [`LiveItem`]).
    pub(super) fn at_mut(&mut self, index: usize) -> &mut Follow {
        &mut self.rooms[index]
    }

    /// The room id of the entry at `index`.
    pub(super) fn room_id(&self, index: usize) -> &RoomId {
        &self.rooms[index].room_id
    }

    /// Highest seq delivered in a room, if its replay has started.
    pub(super) fn delivered(&self, room_id: &RoomId) -> Option<u64> {
        self.position(room_id)
            .and_then(|index| self.rooms[index].delivered)
    }

    /// Whether a room's replay has started (it is followed for the client).
    pub(super) fn is_followed(&self, room_id: &RoomId) -> bool {
        self.delivered(room_id).is_some()
    }

    /// Rooms followed for the client.
    pub(super) fn followed(&self) -> Vec<RoomId> {
        self.rooms
            .iter()
            .filter(|f| f.delivered.is_some())
            .map(|f| f.room_id.clone())
            .collect()
    }

    /// Stops following a room; `true` if it was followed for the client.
    pub(super) fn remove(&mut self, room_id: &RoomId) -> bool {
        match self.position(room_id) {
            Some(index) => self.rooms.swap_remove(index).delivered.is_some(),
            None => false,
        }
    }
}

impl Stream for Follows {
    type Item = LiveItem;

    /// The next live event of any room; `None` when no room can have one.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LiveItem>> {
        let this = &mut *self;
        let count = this.rooms.len();
        let start = this.next_start % count.max(1);
        this.next_start = start + 1;
        let mut open = false;
        for offset in 0..count {
            let index = (start + offset) % count;
            let follow = &mut this.rooms[index];
            if follow.closed {
                continue;
            }
            match Pin::new(&mut follow.live).poll_next(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some((index, item))),
                Poll::Ready(None) => follow.closed = true,
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::BusMessage;
    use futures::StreamExt;
    use std::sync::Arc;

    fn room(name: &str) -> RoomId {
        RoomId::from_trusted(name.to_owned())
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
            let (index, item) = follows.next().await.expect("an event");
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

    #[tokio::test]
    async fn a_closed_channel_is_not_polled_again() {
        let (sender, _) = tokio::sync::broadcast::channel::<SharedEvent>(16);
        let mut follows = Follows::default();
        follows.insert(room("a"), sender.subscribe());
        drop(sender);
        assert!(follows.next().await.is_none());
        assert!(follows.rooms[0].closed);
        assert!(follows.next().await.is_none());
    }
}
