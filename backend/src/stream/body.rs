//! The session *is* the response body: one hop from a room's broadcast to the socket.
//!
//! A session used to run on a task of its own and hand each event to the response body
//! through a per-stream channel. Every delivery then woke two tasks (the session's and
//! hyper's task for the HTTP stream), and every stream paid for the task and the channel.
//! Now the session's future is polled by the body itself, inside hyper's task: the session
//! queues events in its [`Outbox`], the body frames whatever is queued into one chunk, and
//! when the outbox is empty the body polls the session again.
//!
//! The body frames gRPC messages itself instead of handing a stream to tonic: tonic's
//! encoder keeps one buffer per call for the call's whole life, grown to the largest batch
//! it ever encoded (the `Ready` event with a user's rooms, a catch-up burst), which made
//! about 3 KiB of every online user's memory. Here each chunk is allocated at its exact
//! size and freed once written, so an idle stream holds no buffer at all. The events are
//! already framed (see [`FramedEvent`]), once for all the streams an event goes to: a chunk
//! of one event (the common case of a live delivery) is that event's bytes, shared, with no
//! allocation or copy; several are copied into one chunk.
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

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use natter_proto::FramedEvent;
use tonic::Status;

use super::watch::Watched;

/// Events queued before the session stops to let the body take them. It bounds what one
/// stream holds beyond its catch-up batch.
pub(crate) const OUTBOX_CAPACITY: usize = 128;

/// A drained outbox buffer keeps its allocation up to this many items.
const KEPT_CAPACITY: usize = 16;

/// Most bytes of events framed into one chunk (more when one event alone is larger): as
/// tonic's default yield threshold, so a catch-up burst leaves in a few large writes without
/// one allocation holding the whole burst.
const CHUNK_BYTES: usize = 32 * 1024;

/// What a session hands to its body: an encoded event, or the status that ends the call. The
/// status is boxed: a bare `Status` (about 180 bytes) would make every slot of the outbox's
/// buffers that large, for an item that comes at most once per stream.
pub(crate) type OutboxItem = Result<FramedEvent, Box<Status>>;

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
    /// Taken from the outbox, not yet framed.
    ready: VecDeque<OutboxItem>,
    /// The send deadline's record of this stream's polls.
    watched: Option<Arc<Watched>>,
    /// The trailers (the call's status) have been returned: nothing follows.
    finished: bool,
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
            finished: false,
        }
    }

    /// The next chunk from the events taken: every event ready, in order, up to
    /// [`CHUNK_BYTES`]; or the trailers, when a status ends the stream.
    fn next_frame(&mut self) -> Result<Frame<Bytes>, Status> {
        let mut events = 0;
        let mut size = 0;
        for item in &self.ready {
            let Ok(event) = item else { break };
            let framed = event.framed().len();
            // Too large for a gRPC length (never, in practice): ends the call below.
            if !event.fits() || (events > 0 && size + framed > CHUNK_BYTES) {
                break;
            }
            events += 1;
            size += framed;
        }
        if events == 0 {
            let status = match self.ready.pop_front() {
                Some(Err(status)) => *status,
                Some(Ok(_)) => Status::internal("an event is larger than a gRPC message may be"),
                None => unreachable!("called with an event or a status ready"),
            };
            return self.finish(&status);
        }
        if events == 1
            && let Some(Ok(event)) = self.ready.pop_front()
        {
            return Ok(Frame::data(event.into_framed()));
        }
        let mut chunk = BytesMut::with_capacity(size);
        // All of them events (counted above): `flatten` yields each.
        for event in self.ready.drain(..events).flatten() {
            chunk.put_slice(event.framed());
        }
        Ok(Frame::data(chunk.freeze()))
    }

    /// Ends the call with `status`: the trailers, and nothing after them. The session (if
    /// it still runs) is dropped with whatever it had queued, as a status ends the stream.
    fn finish(&mut self, status: &Status) -> Result<Frame<Bytes>, Status> {
        self.finished = true;
        self.session = None;
        self.ready.clear();
        let mut trailers = http::HeaderMap::with_capacity(3);
        status.add_header(&mut trailers)?;
        Ok(Frame::trailers(trailers))
    }
}

impl<S: Future<Output = ()>> http_body::Body for SessionBody<S> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(watched) = &this.watched {
            watched.polled();
        }
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if !this.ready.is_empty() {
                return Poll::Ready(Some(this.next_frame()));
            }
            let Some(session) = this.session.as_mut() else {
                // The session ended without a status: the call succeeded.
                return Poll::Ready(Some(this.finish(&Status::ok(""))));
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

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

/// Test helpers: a body read back as the events and the status a gRPC client would see.
#[cfg(test)]
pub(crate) mod read_back {
    use super::*;
    use bytes::Buf;
    use http_body_util::BodyExt;

    /// The body's chunks, each split back into its events; the status from the trailers.
    pub(crate) async fn chunks<B>(mut body: B) -> (Vec<Vec<FramedEvent>>, Option<Status>)
    where
        B: http_body::Body<Data = Bytes, Error = Status> + Unpin,
    {
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("no body error");
            if let Some(trailers) = frame.trailers_ref() {
                assert!(body.frame().await.is_none(), "nothing after the trailers");
                return (chunks, Status::from_header_map(trailers));
            }
            let mut data = frame.into_data().expect("data or trailers");
            let mut events = Vec::new();
            while data.has_remaining() {
                assert_eq!(data.get_u8(), 0, "never compressed");
                let length = data.get_u32() as usize;
                events.push(FramedEvent::from_encoding(&data.split_to(length)));
            }
            chunks.push(events);
        }
        (chunks, None)
    }

    /// The body's events in order, then its status, as [`OutboxItem`]s.
    pub(crate) async fn items<B>(body: B) -> Vec<Result<FramedEvent, Status>>
    where
        B: http_body::Body<Data = Bytes, Error = Status> + Unpin,
    {
        let (chunks, status) = chunks(body).await;
        let mut items: Vec<_> = chunks.into_iter().flatten().map(Ok).collect();
        items.extend(status.filter(|s| s.code() != tonic::Code::Ok).map(Err));
        items
    }
}

#[cfg(test)]
mod tests {
    use super::read_back::{chunks, items};
    use super::*;
    use http_body_util::BodyExt;

    fn event(n: u8) -> OutboxItem {
        Ok(FramedEvent::from_encoding(&[n]))
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
        let items = items(body).await;
        assert_eq!(items.len(), total + 1);
        for (n, item) in items[..total].iter().enumerate() {
            let got = item.as_ref().expect("an event").clone();
            assert_eq!(got, FramedEvent::from_encoding(&[(n % 251) as u8]));
        }
        assert_eq!(items[total].as_ref().unwrap_err().message(), "bye");
    }

    #[tokio::test]
    async fn events_ready_together_leave_in_one_chunk_of_bounded_size() {
        let outbox = Arc::new(Outbox::default());
        let producer = outbox.clone();
        let big = FramedEvent::from_encoding(&[1u8; CHUNK_BYTES]);
        let small = FramedEvent::from_encoding(&[2u8; 1000]);
        let (big_event, small_event) = (big.clone(), small.clone());
        let body = SessionBody::new(outbox, None, async move {
            for _ in 0..3 {
                producer.push_now(Ok(small_event.clone()));
            }
            producer.push_now(Ok(big_event));
            for _ in 0..40 {
                producer.push_now(Ok(small_event.clone()));
            }
        });
        let (chunks, status) = chunks(body).await;
        assert_eq!(status.expect("trailers").code(), tonic::Code::Ok);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        // Three small ones together, the one too large for a chunk alone, then the rest
        // in chunks that stay within the bound.
        assert_eq!(sizes, [3, 1, 32, 8], "events per chunk");
        assert_eq!(chunks[1][0], big);
        assert!(
            chunks
                .iter()
                .flatten()
                .filter(|e| **e != big)
                .all(|e| *e == small)
        );
    }

    #[tokio::test]
    async fn a_chunk_of_one_event_is_the_events_framed_bytes_not_a_copy() {
        let outbox = Arc::new(Outbox::default());
        let producer = outbox.clone();
        let event = FramedEvent::from_encoding(b"one live delivery");
        let shared = event.clone();
        let mut body = SessionBody::new(outbox, None, async move {
            producer.push_now(Ok(shared));
        });
        let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(chunk, event.framed());
        assert_eq!(chunk.as_ptr(), event.framed().as_ptr(), "the same bytes");
    }

    #[tokio::test]
    async fn nothing_follows_the_status_that_ends_a_stream() {
        let outbox = Arc::new(Outbox::default());
        let producer = outbox.clone();
        let body = SessionBody::new(outbox, None, async move {
            producer.push_now(event(1));
            producer.push_now(Err(Box::new(Status::unauthenticated("expired"))));
            producer.push_now(event(2));
        });
        let items = items(body).await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].as_ref().unwrap().encoding()[..], [1]);
        assert_eq!(
            items[1].as_ref().unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
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
        let mut taken = 0;
        while taken < 500 {
            let frame = body.frame().await.expect("the session never ends").unwrap();
            taken += frame.into_data().expect("events").len() / (FramedEvent::PREFIX + 1);
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
        let reader = tokio::spawn(async move { body.frame().await });
        tx.send(7).unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("woken")
            .unwrap();
        let data = first.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data[..], [0, 0, 0, 0, 1, 7]);
    }
}
