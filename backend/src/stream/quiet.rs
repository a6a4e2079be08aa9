//! Polling a stream's quiet sources only when one of them woke it.
//!
//! A session waits on its rooms (the hot path: every delivery wakes it) and on sources that
//! rarely have anything: the server's drain, the heartbeat timer, the user's own topic and,
//! for `Chat`, the client's frames. Polling a source that is not ready re-registers the
//! task with it, and for two of them that takes locks every stream shares: the drain's
//! cancellation token locks its tree node and its waiter list on every poll, and the own
//! topic locks the topic's waiter list (shared by all the user's streams). A `select!`
//! over all of them paid those locks on every delivery.
//!
//! So the quiet sources are polled with a waker of their own, [`Quiet`]'s, which marks them
//! due and then wakes the task. The session polls them only when they are due: on its
//! first poll, after one of them woke it, and right after one of them had an item (it may
//! have more). A delivery then polls the rooms alone. No wake is lost: the task's waker is
//! recorded on every poll before the mark is read, and a source that wakes while (or after)
//! the quiet sources are polled marks them due again and wakes the task once more.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Wake, Waker},
};

use futures::task::AtomicWaker;

/// The quiet sources' waker, for one session.
pub(super) struct Quiet {
    state: Arc<QuietState>,
    waker: Waker,
}

struct QuietState {
    /// A quiet source woke (or has not been polled yet): poll them all.
    due: AtomicBool,
    /// The session's task, as its last poll gave it.
    task: AtomicWaker,
}

impl Wake for QuietState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.due.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Quiet {
    /// Due at once: the first poll registers every quiet source.
    pub(super) fn new() -> Self {
        let state = Arc::new(QuietState {
            due: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(state.clone()),
            state,
        }
    }

    /// Records the task to wake (`cx`, the session's own context). Call on every poll.
    pub(super) fn register(&self, cx: &Context<'_>) {
        self.state.task.register(cx.waker());
    }

    /// If the quiet sources are due, clears the mark and gives the context to poll them
    /// with; `None` when nothing woke them since they were last polled.
    pub(super) fn take_due(&self) -> Option<Context<'_>> {
        self.state
            .due
            .swap(false, Ordering::AcqRel)
            .then(|| Context::from_waker(&self.waker))
    }

    /// A quiet source had an item: poll them again on the next step, without a wake.
    pub(super) fn again(&self) {
        self.state.due.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

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
        let quiet = Quiet::new();
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
    }

    #[tokio::test]
    async fn a_drain_that_wakes_the_quiet_waker_is_seen_on_the_next_poll() {
        let token = tokio_util::sync::CancellationToken::new();
        let cancelled = token.cancelled();
        tokio::pin!(cancelled);
        let quiet = Quiet::new();
        let polls = std::future::poll_fn(|cx| {
            quiet.register(cx);
            match quiet.take_due() {
                Some(mut quiet_cx) => cancelled.as_mut().poll(&mut quiet_cx).map(|()| "drained"),
                None => Poll::Pending,
            }
        });
        let cancel = async {
            tokio::task::yield_now().await;
            token.cancel();
        };
        let (outcome, ()) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(polls, cancel)
        })
        .await
        .expect("the drain woke the task");
        assert_eq!(outcome, "drained");
    }
}
