//! The rooms a stream follows: for each, its live receiver and the last seq delivered, in
//! one entry.
//!
//! A `StreamMap` of receivers next to a `HashMap` of seqs kept every room id three times
//! (both maps' keys, and a clone per live event, which `StreamMap` hands out with each item)
//! and hashed it on every delivery. Here a live event comes with its entry's index, so the
//! hot path reads and updates its room's seq in place. A user follows tens of rooms, not
//! thousands: the lookups by id (catching up, joins, leaves) scan a short vector.
//!
//! Only the rooms that woke the stream are polled. Polling a receiver with nothing new
//! locks its room's tail and re-registers the task there, and with every room polled on
//! every wake, a user in ten rooms paid that ten times per delivery (and per heartbeat):
//! in the realistic shape it was the largest item of the server's profile. So each room
//! is polled with a waker of its own, which marks the room's slot (a bit of one word per
//! stream) and then wakes the task; a poll takes the marks and polls those rooms alone, a
//! room that had an item again on the next poll (it may have more), and a room whose
//! receiver is new. A room takes a free slot of its own when it is followed, from the 63
//! there are; rooms followed while all 63 are taken share the last one (and stay there if
//! a slot frees up later: they are only polled together, in turn).
//! No wake is lost: the task's waker is recorded before the marks are taken, and a room
//! that wakes while (or after) it is polled marks its slot again and wakes the task.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Wake, Waker},
};

use futures::Stream;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::wake_marks::{Marks, RecordedTask};
use crate::{ids::RoomId, seams::SharedEvent};

/// A live event of the followed room at an index (valid until the follows change).
pub(super) type LiveItem = (usize, Result<SharedEvent, BroadcastStreamRecvError>);

/// The slot shared by every room beyond the first 63.
const SHARED_SLOT: u32 = 63;

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
    slot: u32,
    /// Marks `slot` and wakes the task: the receiver is polled with it. Made when this
    /// room is first polled next to others (a stream in one room never needs it).
    waker: Option<Waker>,
}

/// One room's waker: marks the room's slot in the marks its stream's rooms share.
struct RoomWaker {
    slot_bit: u64,
    woken: Arc<Marks>,
}

impl Wake for RoomWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.mark_and_wake(self.slot_bit);
    }
}

/// The rooms a stream follows.
#[derive(Default)]
pub(super) struct Follows {
    rooms: Vec<Follow>,
    /// Made with the first room waker.
    woken: Option<Arc<Marks>>,
    recorded: RecordedTask,
    /// Slots to poll besides those that woke: new receivers, rooms that had an item, and
    /// every room once when a stream in one room gets more.
    due: u64,
    /// Slots held by a room of their own.
    used: u64,
    /// Where the next poll starts, rotating, so that a busy room cannot starve the others:
    /// the slot, and within the shared slot the room's index.
    next_slot: u32,
    next_shared: usize,
    /// The last poll polled the only room with the task's own waker (see `poll_next`).
    direct: bool,
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
        let slot = match self.position(&room_id) {
            Some(index) => {
                let follow = &mut self.rooms[index];
                follow.live = live;
                follow.closed = false;
                follow.slot
            }
            None => {
                let slot = self.take_slot();
                self.rooms.push(Follow {
                    room_id,
                    delivered: None,
                    live,
                    closed: false,
                    slot,
                    waker: None,
                });
                slot
            }
        };
        // A new receiver has not registered the task yet: poll it.
        self.due |= 1 << slot;
    }

    /// A free slot of its own, else the shared one.
    fn take_slot(&mut self) -> u32 {
        let free = !self.used & !(1 << SHARED_SLOT);
        if free == 0 {
            return SHARED_SLOT;
        }
        let slot = free.trailing_zeros();
        self.used |= 1 << slot;
        slot
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
        let Some(index) = self.position(room_id) else {
            return false;
        };
        let follow = self.rooms.swap_remove(index);
        if follow.slot != SHARED_SLOT {
            // A mark left on it only makes its next holder polled once for nothing.
            self.used &= !(1 << follow.slot);
        }
        follow.delivered.is_some()
    }
}

/// The next item of a room of `rooms` in `slot` (rotating within the shared slot from
/// `next_shared`), polling each with its own waker.
fn poll_slot(
    rooms: &mut [Follow],
    next_shared: &mut usize,
    slot: u32,
    woken: &Arc<Marks>,
) -> Option<LiveItem> {
    let count = rooms.len();
    let start = if slot == SHARED_SLOT {
        *next_shared % count.max(1)
    } else {
        0
    };
    for offset in 0..count {
        let index = (start + offset) % count;
        let follow = &mut rooms[index];
        if follow.slot != slot || follow.closed {
            continue;
        }
        let waker = follow.waker.get_or_insert_with(|| {
            Waker::from(Arc::new(RoomWaker {
                slot_bit: 1 << slot,
                woken: woken.clone(),
            }))
        });
        let mut room_cx = Context::from_waker(waker);
        match Pin::new(&mut follow.live).poll_next(&mut room_cx) {
            Poll::Ready(Some(item)) => {
                if slot == SHARED_SLOT {
                    *next_shared = index + 1;
                }
                return Some((index, item));
            }
            Poll::Ready(None) => follow.closed = true,
            Poll::Pending => {}
        }
        if slot != SHARED_SLOT {
            // A slot of its own holds one room.
            break;
        }
    }
    None
}

impl Stream for Follows {
    type Item = LiveItem;

    /// The next live event of a room that woke the stream; `None` when no room can have
    /// one.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LiveItem>> {
        let this = &mut *self;
        if this.rooms.is_empty() {
            this.direct = false;
            return Poll::Ready(None);
        }
        // With one room, polling every room is polling the one that woke: it is polled
        // with the task's own waker, which saves a lock per wake. Its wakes then mark no
        // slot, so when more rooms come, every room is due once, to register its own.
        if let [only] = this.rooms.as_mut_slice() {
            this.direct = true;
            if only.closed {
                return Poll::Ready(None);
            }
            return match Pin::new(&mut only.live).poll_next(cx) {
                Poll::Ready(Some(item)) => Poll::Ready(Some((0, item))),
                Poll::Ready(None) => {
                    only.closed = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        if std::mem::take(&mut this.direct) {
            this.due |= this.rooms.iter().fold(0, |due, f| due | 1 << f.slot);
        }
        let Follows {
            rooms,
            woken,
            recorded,
            due,
            next_slot,
            next_shared,
            ..
        } = this;
        let woken = woken.get_or_insert_default();
        recorded.record(woken, cx);
        *due |= woken.take();
        while *due != 0 {
            let slot = (due.rotate_right(*next_slot).trailing_zeros() + *next_slot) % 64;
            let bit = 1 << slot;
            *due &= !bit;
            *next_slot = (slot + 1) % 64;
            if let Some(item) = poll_slot(rooms, next_shared, slot, woken) {
                *due |= bit;
                return Poll::Ready(Some(item));
            }
        }
        if rooms.iter().any(|follow| !follow.closed) {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

#[cfg(test)]
mod tests;
