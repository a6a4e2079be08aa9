//! The session's task waker, as kept by the wakers that stand between its sources and the
//! task (the quiet sources' waker and each room's, see `quiet` and `follows`).
//!
//! Such a waker first records which source woke, then wakes the task. The task's waker is
//! kept, not taken, by a wake, and replaced only when a poll brings another one (hyper polls
//! a stream from one task for its whole life): a poll compares two pointers instead of
//! taking a lock or swapping an atomic.

use std::{
    sync::Mutex,
    task::{Context, Waker},
};

/// The task to wake, shared with the wakers.
#[derive(Default)]
pub(super) struct SharedTask(Mutex<Option<Waker>>);

impl SharedTask {
    /// Wakes the task as a poll last recorded it (nothing before the first poll).
    pub(super) fn wake(&self) {
        if let Some(task) = &*self.0.lock().expect("task waker lock poisoned") {
            task.wake_by_ref();
        }
    }
}

/// The poller's side: the waker it last recorded in a [`SharedTask`].
#[derive(Default)]
pub(super) struct RecordedTask(Option<Waker>);

impl RecordedTask {
    /// Records the task to wake (`cx`, the session's own context) in `shared`, if it
    /// changed. Call on every poll, before reading what the wakers marked, so that no wake
    /// is lost.
    pub(super) fn record(&mut self, shared: &SharedTask, cx: &Context<'_>) {
        if self
            .0
            .as_ref()
            .is_some_and(|recorded| recorded.will_wake(cx.waker()))
        {
            return;
        }
        let task = cx.waker().clone();
        *shared.0.lock().expect("task waker lock poisoned") = Some(task.clone());
        self.0 = Some(task);
    }
}
