//! The session *is* the response body: one hop from a room's broadcast to tonic's encoder.
//!
//! A session used to run on a task of its own and hand each event to the response body
//! through a per-stream channel. Every delivery then woke two tasks (the session's and
//! hyper's task for the HTTP stream), and every stream paid for the task and the channel.
//! Now the session's future is polled by the body itself, inside hyper's task: the session
//! queues events in its [`Outbox`], the body hands them to tonic (which encodes whatever is
//! ready into one frame), and when the outbox is empty the body polls the session again.
//!
//! Backpressure is unchanged: hyper takes the body's next chunk only once the previous one
//! has found room in the client's flow-control window, so a client that stops reading
//! stops its session too (see `watch` for the deadline that then ends it); its broadcast
//! receivers then lag and the session repairs from the log once polled again. A client that
//! goes away drops the body, and with it the session (whose guard records the closed stream).

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::Stream;
use natter_proto::EncodedEvent;
use tonic::Status;

use super::watch::Watched;

/// Events queued before the session stops to let the body take them. It bounds what one
/// stream holds beyond its catch-up batch.
pub(crate) const OUTBOX_CAPACITY: usize = 128;

/// A drained outbox buffer keeps its allocation up to this many items.
const KEPT_CAPACITY: usize = 16;

/// What a session hands to tonic: an encoded event, or the status that ends the call. The
/// status is boxed: a bare `Status` (about 180 bytes) would make every slot of the outbox's
/// buffers that large, for an item that comes at most once per stream.
pub(crate) type OutboxItem = Result<EncodedEvent, Box<Status>>;

/// Events the session produced and the body has not taken yet.
///
/// The session and the body run in one task and never at the same time; the mutex is there
/// because the session's future must be `Send`, so it is never contended (one uncontended
/// lock per event queued, one per batch taken).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<OutboxItem>>,
}

/// How [`Outbox::push`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued, with room left.
    AtOnce,
    /// Queued and the outbox was full: the body has taken everything since.
    AfterWaiting,
}

impl Outbox {
    /// Queues an item; when the outbox is full, returns to the body until it has taken them.
    pub(crate) async fn push(&self, item: OutboxItem) -> Pushed {
        if self.enqueue(item) < OUTBOX_CAPACITY {
            return Pushed::AtOnce;
        }
        YieldToBody { yielded: false }.await;
        Pushed::AfterWaiting
    }

    /// Queues an item without ever waiting (for the last words of a stream).
    pub(crate) fn push_now(&self, item: OutboxItem) {
        self.enqueue(item);
    }

    /// Queues an item; how many are queued now.
    fn enqueue(&self, item: OutboxItem) -> usize {
        let mut queue = self.queue.lock().expect("outbox lock poisoned");
        queue.push_back(item);
        queue.len()
    }

    /// Swaps everything queued into `ready`, which the body has emptied. The two buffers
    /// trade places; one grown by a burst is dropped, so an idle stream keeps small ones.
    fn take_into(&self, ready: &mut VecDeque<OutboxItem>) {
        debug_assert!(ready.is_empty());
        let mut queue = self.queue.lock().expect("outbox lock poisoned");
        std::mem::swap(&mut *queue, ready);
        if queue.capacity() > KEPT_CAPACITY {
            *queue = VecDeque::new();
        }
    }
}

/// Pending exactly once, without arranging a wake-up. Only the session awaits it, with its
/// outbox non-empty: the body then returns those events and polls the session again when
/// they are gone, which is the wake-up.
struct YieldToBody {
    yielded: bool,
}

impl Future for YieldToBody {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            Poll::Pending
        }
    }
}

/// A response body that runs a session: the session's future, and the events it queued.
pub(crate) struct SessionBody<S> {
    /// `None` once the session has ended.
    session: Option<Pin<Box<S>>>,
    outbox: Arc<Outbox>,
    /// Taken from the outbox, not yet handed to tonic.
    ready: VecDeque<OutboxItem>,
    /// The send deadline's record of this stream's polls.
    watched: Option<Arc<Watched>>,
}

impl<S: Future<Output = ()>> SessionBody<S> {
    /// A body for `session`, which queues its events in `outbox`; its polls are recorded
    /// in `watched`.
    pub(crate) fn new(outbox: Arc<Outbox>, watched: Option<Arc<Watched>>, session: S) -> Self {
        Self {
            session: Some(Box::pin(session)),
            outbox,
            ready: VecDeque::new(),
            watched,
        }
    }
}

impl<S: Future<Output = ()>> Stream for SessionBody<S> {
    type Item = Result<EncodedEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(watched) = &this.watched {
            watched.polled();
        }
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item.map_err(|status| *status)));
            }
            let Some(session) = this.session.as_mut() else {
                return Poll::Ready(None);
            };
            if session.as_mut().poll(cx).is_ready() {
                this.session = None;
            }
            this.outbox.take_into(&mut this.ready);
            if this.ready.is_empty() && this.session.is_some() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn event(n: u8) -> OutboxItem {
        Ok(EncodedEvent(bytes::Bytes::from(vec![n])))
    }

    #[tokio::test]
    async fn a_full_outbox_returns_to_the_body_and_the_session_goes_on_after() {
        let outbox = Arc::new(Outbox::default());
        let producer = outbox.clone();
        let total = OUTBOX_CAPACITY * 3 + 1;
        let body = SessionBody::new(outbox, None, async move {
            for n in 0..total {
                producer.push(event((n % 251) as u8)).await;
            }
            producer.push_now(Err(Box::new(Status::unavailable("bye"))));
        });
        let items: Vec<_> = body.collect().await;
        assert_eq!(items.len(), total + 1);
        for (n, item) in items[..total].iter().enumerate() {
            let got = item.as_ref().expect("an event").clone();
            assert_eq!(got, EncodedEvent(bytes::Bytes::from(vec![(n % 251) as u8])));
        }
        assert_eq!(items[total].as_ref().unwrap_err().message(), "bye");
    }

    #[tokio::test]
    async fn the_body_holds_at_most_one_outbox_of_events_ahead_of_its_reader() {
        let outbox = Arc::new(Outbox::default());
        let producer = outbox.clone();
        let produced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = produced.clone();
        let mut body = SessionBody::new(outbox, None, async move {
            loop {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                producer.push(event(0)).await;
            }
        });
        for taken in 1..=500 {
            let item = body.next().await.expect("the session never ends");
            assert!(item.is_ok());
            let ahead = produced.load(std::sync::atomic::Ordering::Relaxed) - taken;
            assert!(ahead <= OUTBOX_CAPACITY, "{ahead} events ahead");
        }
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken_through_the_body() {
        let outbox = Arc::new(Outbox::default());
        let producer = outbox.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut body = SessionBody::new(outbox, None, async move {
            let n = rx.await.expect("a value");
            producer.push(event(n)).await;
        });
        let reader = tokio::spawn(async move { body.next().await });
        tx.send(7).unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(
            first.unwrap().unwrap(),
            EncodedEvent(bytes::Bytes::from(vec![7]))
        );
    }
}
