//! What woke a session, and its task: shared by the wakers that stand between its sources
//! and the task (the quiet sources' waker and each room's, see `quiet` and `follows`).
//!
//! Such a waker marks its source's bit, then wakes the task; a poll takes the marks and
//! polls those sources alone. The task's waker is kept, not taken, by a wake, and replaced
//! only when a poll brings another one (hyper polls a stream from one task for its whole
//! life): a poll compares two pointers instead of taking a lock or swapping an atomic.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Waker},
};

/// The sources marked since the last poll took them, and the task to wake.
#[derive(Default)]
pub(super) struct Marks {
    pub(super) bits: AtomicU64,
    task: Mutex<Option<Waker>>,
}

impl Marks {
    /// Marks `bits` without a wake: the poller looks again anyway.
    pub(super) fn mark(&self, bits: u64) {
        self.bits.fetch_or(bits, Ordering::Release);
    }

    /// Marks `bits` and wakes the task as a poll last recorded it (nothing before the
    /// first poll).
    pub(super) fn mark_and_wake(&self, bits: u64) {
        self.mark(bits);
        if let Some(task) = &*self.task.lock().expect("task waker lock poisoned") {
            task.wake_by_ref();
        }
    }

    /// Takes every mark.
    pub(super) fn take(&self) -> u64 {
        self.bits.swap(0, Ordering::Acquire)
    }
}

/// The poller's side: the waker it last recorded in a [`Marks`].
#[derive(Default)]
pub(super) struct RecordedTask(Option<Waker>);

impl RecordedTask {
    /// Records the task to wake (`cx`, the session's own context) in `marks`, if it
    /// changed. Call on every poll, before taking the marks, so that no wake is lost.
    pub(super) fn record(&mut self, marks: &Marks, cx: &Context<'_>) {
        if self
            .0
            .as_ref()
            .is_some_and(|recorded| recorded.will_wake(cx.waker()))
        {
            return;
        }
        let task = cx.waker().clone();
        *marks.task.lock().expect("task waker lock poisoned") = Some(task.clone());
        self.0 = Some(task);
    }
}
