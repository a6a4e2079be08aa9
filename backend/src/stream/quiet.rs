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
//! So the quiet sources are polled with a waker of their own,
//! [`Quiet`](crate::wake_marks::Quiet)'s, which marks them due and then wakes the task. The
//! session polls them only when they are due: on its first poll, after one of them woke it, and
//! right after one of them had an item (it may have more). A delivery then polls the rooms
//! alone. No wake is lost: the task's waker is recorded (when it changed) before the mark is
//! read, and a source that wakes while (or after) the quiet sources are polled marks them due
//! again and wakes the task once more.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, StreamExt};
use natter_proto::v1 as pb;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tokio_util::sync::WaitForCancellationFuture;
use tonic::Status;

use super::follows;
use crate::seams::SharedEvent;

/// What woke a stream's step.
pub(super) enum Next {
    Drain,
    Heartbeat,
    Own(Result<SharedEvent, BroadcastStreamRecvError>),
    Room(follows::LiveItem),
    /// Boxed: a `Status` would make every step's value as large, for what only `Chat`
    /// calls carry.
    Frame(Box<Result<pb::ClientFrame, Status>>),
}

/// Polls the quiet sources (see `quiet`) with their own context, in order of urgency.
pub(super) fn poll_quiet<F>(
    cx: &mut Context<'_>,
    cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    heartbeat: &mut tokio::time::Interval,
    own: &mut Option<BroadcastStream<SharedEvent>>,
    frames: &mut Option<F>,
) -> Poll<Next>
where
    F: Stream<Item = Result<pb::ClientFrame, Status>> + Unpin,
{
    if cancelled.poll(cx).is_ready() {
        return Poll::Ready(Next::Drain);
    }
    if heartbeat.poll_tick(cx).is_ready() {
        return Poll::Ready(Next::Heartbeat);
    }
    // A closed topic (never, while the bus holds it) has nothing more: not an event.
    if let Some(own) = own
        && let Poll::Ready(Some(item)) = own.poll_next_unpin(cx)
    {
        return Poll::Ready(Next::Own(item));
    }
    if let Some(stream) = frames {
        match stream.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => return Poll::Ready(Next::Frame(Box::new(item))),
            // Half-closed by the client: stop polling it, keep the events flowing.
            Poll::Ready(None) => *frames = None,
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake_marks::Quiet;

    #[tokio::test]
    async fn a_drain_that_wakes_the_quiet_waker_is_seen_on_the_next_poll() {
        let token = tokio_util::sync::CancellationToken::new();
        let cancelled = token.cancelled();
        tokio::pin!(cancelled);
        let mut quiet = Quiet::new();
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
