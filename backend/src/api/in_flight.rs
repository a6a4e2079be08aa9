//! Large answers in flight per account, held until they are sent.
//!
//! A history page is up to about 256 KiB. A client that asks for pages and never reads the
//! answers (HTTP/2 lets it hold thousands of calls open on a few connections, with its
//! flow-control windows shut) would make the server keep every one of them. So each account
//! may have only a few such answers in flight, and an answer stays "in flight" until its
//! last byte has gone to the socket: the place is held by the response body, which hyper
//! drops only once it has taken the whole body (it polls a body only while the client's
//! window has room).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::ids::UserId;

/// Places for answers in flight, per account.
#[derive(Debug)]
pub(crate) struct InFlight {
    max_per_account: usize,
    held: Mutex<HashMap<UserId, usize>>,
}

/// One place, given back when dropped. Put into the answer's extensions (as
/// [`HeldUntilSent`]); `answer_body::AnswerBodyLayer` moves it into the body.
#[derive(Debug)]
pub(crate) struct Place {
    owner: Arc<InFlight>,
    user: UserId,
}

impl InFlight {
    pub(crate) fn new(max_per_account: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_account,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A place for `user`'s next answer, unless all of theirs are taken.
    pub(crate) fn take(self: &Arc<Self>, user: &UserId) -> Option<Place> {
        let mut held = self.held.lock().expect("in-flight lock poisoned");
        // Checked before an entry is made: with a limit of 0, none is ever made.
        if held.get(user).copied().unwrap_or(0) >= self.max_per_account {
            return None;
        }
        *held.entry(user.clone()).or_insert(0) += 1;
        Some(Place {
            owner: self.clone(),
            user: user.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().expect("in-flight lock poisoned");
        if let Some(count) = held.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

/// A [`Place`] in an answer's extensions (which must be `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct HeldUntilSent(pub(crate) Arc<Place>);

/// `body`, holding `place` until the body is dropped (after its last byte went out).
pub(crate) fn holding(body: tonic::body::Body, place: Arc<Place>) -> tonic::body::Body {
    tonic::body::Body::new(Holding {
        body,
        rest: Bytes::new(),
        _place: place,
    })
}

/// Most bytes handed to hyper at once. hyper takes a body's next chunk as soon as the
/// client's window has one byte of room, and HTTP/2 then keeps the whole chunk until the
/// client reads it; a window of one byte per stream would otherwise let every answer leave
/// its place while still in memory. In slices, what is not sent yet stays in the body,
/// which holds the place.
const SLICE: usize = 16 * 1024;

/// A body that holds a place until it is dropped, and hands its data on in slices.
struct Holding {
    body: tonic::body::Body,
    /// The rest of a chunk taken from `body`, not handed on yet.
    rest: Bytes,
    _place: Arc<Place>,
}

impl Body for Holding {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                end => return Poll::Ready(end),
            }
        }
        let n = this.rest.len().min(SLICE);
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.rest.is_empty() {
            self.body.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_held_answer_is_handed_on_in_slices_and_gives_its_place_back_when_done() {
        let in_flight = InFlight::new(1);
        let alice = UserId::from_trusted("alice");
        let place = Arc::new(in_flight.take(&alice).unwrap());
        let answer = Bytes::from(vec![7u8; 3 * SLICE + 5]);
        let mut body = Holding {
            body: tonic::body::Body::new(http_body_util::Full::new(answer.clone())),
            rest: Bytes::new(),
            _place: place,
        };
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            sizes.push(data.len());
            got.extend_from_slice(&data);
            assert!(in_flight.take(&alice).is_none(), "held while sending");
        }
        assert_eq!(sizes, [SLICE, SLICE, SLICE, 5]);
        assert_eq!(got, answer);
        drop(body);
        assert!(in_flight.take(&alice).is_some(), "given back");
    }

    #[test]
    fn an_account_holds_at_most_its_places_and_gets_them_back() {
        let in_flight = InFlight::new(2);
        let (alice, bob) = (UserId::from_trusted("alice"), UserId::from_trusted("bob"));
        let first = in_flight.take(&alice).expect("a place");
        let second = in_flight.take(&alice).expect("a place");
        assert!(in_flight.take(&alice).is_none(), "all of alice's taken");
        assert!(in_flight.take(&bob).is_some(), "bob's are his own");
        drop(first);
        let third = in_flight.take(&alice).expect("given back");
        drop((second, third));
        assert!(in_flight.held.lock().unwrap().is_empty(), "nothing kept");
    }
}
