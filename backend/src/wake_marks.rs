//! What woke a task, so that a poll polls only that: the wakers that stand between a task's
//! sources and the task (a session's rooms and its quiet sources, see `stream`; a
//! connection's close and the server's drain, see `connections`).
//!
//! Such a waker marks its source's bit, then wakes the task; a poll takes the marks and
//! polls those sources alone. The task's waker is kept, not taken, by a wake, and replaced
//! only when a poll brings another one (hyper polls a stream, and the server a connection,
//! from one task for its whole life): a poll compares two pointers instead of taking a lock
//! or swapping an atomic.
//!
//! Why it matters: polling a future that is not ready re-registers the task with it, and
//! some sources take locks for that which every task shares. A cancellation token locks its
//! tree node and its waiter list on every poll; a broadcast topic locks its waiter list.
//! Polled on every wake next to a busy source, they cost those locks on every delivery, and
//! the cache lines bounce between the cores.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Wake, Waker},
};

/// The sources marked since the last poll took them, and the task to wake.
#[derive(Default)]
pub(crate) struct Marks {
    pub(crate) bits: AtomicU64,
    task: Mutex<Option<Waker>>,
}

impl Marks {
    /// Marks `bits` without a wake: the poller looks again anyway.
    pub(crate) fn mark(&self, bits: u64) {
        self.bits.fetch_or(bits, Ordering::Release);
    }

    /// Marks `bits` and wakes the task as a poll last recorded it (nothing before the
    /// first poll).
    pub(crate) fn mark_and_wake(&self, bits: u64) {
        self.mark(bits);
        if let Some(task) = &*self.task.lock().expect("task waker lock poisoned") {
            task.wake_by_ref();
        }
    }

    /// Takes every mark.
    pub(crate) fn take(&self) -> u64 {
        self.bits.swap(0, Ordering::Acquire)
    }
}

/// The poller's side: the waker it last recorded in a [`Marks`].
#[derive(Default)]
pub(crate) struct RecordedTask(Option<Waker>);

impl RecordedTask {
    /// Records the task to wake (`cx`, the poller's own context) in `marks`, if it
    /// changed. Call on every poll, before taking the marks, so that no wake is lost.
    pub(crate) fn record(&mut self, marks: &Marks, cx: &Context<'_>) {
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

/// The waker of a task's quiet sources: sources that are rarely ready (a drain, a close, a
/// timer), polled only after one of them woke the task.
pub(crate) struct Quiet {
    state: Arc<QuietState>,
    waker: Waker,
    recorded: RecordedTask,
}

/// The quiet sources' one mark: one of them woke (or they have not been polled yet), so
/// poll them all.
struct QuietState(Marks);

/// The quiet sources' bit in their marks.
const DUE: u64 = 1;

impl Wake for QuietState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.mark_and_wake(DUE);
    }
}

impl Quiet {
    /// Due at once: the first poll registers every quiet source.
    pub(crate) fn new() -> Self {
        let state = Arc::new(QuietState(Marks::default()));
        state.0.mark(DUE);
        Self {
            waker: Waker::from(state.clone()),
            state,
            recorded: RecordedTask::default(),
        }
    }

    /// Records the task to wake (`cx`, the poller's own context), if it changed. Call on
    /// every poll, before [`Quiet::take_due`].
    pub(crate) fn register(&mut self, cx: &Context<'_>) {
        self.recorded.record(&self.state.0, cx);
    }

    /// If the quiet sources are due, clears the mark and gives the context to poll them
    /// with; `None` when nothing woke them since they were last polled.
    pub(crate) fn take_due(&self) -> Option<Context<'_>> {
        (self.state.0.take() != 0).then(|| Context::from_waker(&self.waker))
    }

    /// A quiet source had an item: poll them again on the next step, without a wake.
    pub(crate) fn again(&self) {
        self.state.0.mark(DUE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn quiet_sources_are_due_first_then_only_after_they_woke_the_task() {
        let counter = Arc::new(Counter::default());
        let task = Waker::from(counter.clone());
        let cx = Context::from_waker(&task);
        let mut quiet = Quiet::new();
        quiet.register(&cx);
        let source_waker = quiet
            .take_due()
            .expect("due on the first poll")
            .waker()
            .clone();
        assert!(quiet.take_due().is_none(), "nothing woke them since");

        source_waker.wake_by_ref();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1, "the task is woken");
        quiet.register(&cx);
        assert!(quiet.take_due().is_some(), "due after a wake");
        assert!(quiet.take_due().is_none());

        quiet.again();
        assert!(quiet.take_due().is_some(), "due again after an item");

        source_waker.wake_by_ref();
        assert_eq!(
            counter.0.load(Ordering::Relaxed),
            2,
            "a wake keeps the waker"
        );
        let other = Arc::new(Counter::default());
        let other_task = Waker::from(other.clone());
        quiet.register(&Context::from_waker(&other_task));
        source_waker.wake_by_ref();
        assert_eq!(
            other.0.load(Ordering::Relaxed),
            1,
            "a new task waker is used"
        );
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
    }
}
