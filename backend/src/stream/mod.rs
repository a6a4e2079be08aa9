//! One event stream (a `Subscribe` or `Chat` call): replay from cursors, then live events of
//! all the user's rooms, in per-room seq order, with no gap and no duplicate.
//!
//! How order is kept: the stream subscribes to a room's topic *before* reading its log, so
//! nothing published after the read can be missed; live messages at or below the last
//! delivered seq are dropped as duplicates; a live message further ahead than the next seq
//! (a lagging receiver, a bus reconnect) triggers a read of the missing range from the log.
//! The log, not the bus, is the source of truth; the bus only says "something new".

mod body;
mod follows;
mod open;
mod quiet;
mod rooms;
mod watch;

use std::{future::Future, sync::Arc, task::Poll, time::Duration};

use futures::{Stream, StreamExt};
use natter_proto::{
    FramedEvent,
    v1::{self as pb, event::Event as Ev},
};
use tokio_stream::wrappers::BroadcastStream;
use tonic::Status;

use body::Pushed;
pub(crate) use body::{Outbox, SessionBody};
use open::OpenStream;
use quiet::{Next, poll_quiet};
pub(crate) use watch::SendWatch;

use crate::{
    auth::{self, Caller},
    convert,
    error::{ApiError, ApiResult},
    records::{MessageRecord, UserRecord},
    seams::SharedEvent,
    service::Natter,
};

/// Messages read from the log per store call while catching up: also what a stream holds
/// beyond its outbox while it waits for a slow client, so it stays small: 64 messages of
/// at most 4,000 characters, about 1 MB at the very worst.
const CATCH_UP_BATCH: usize = 64;

/// Why a stream stopped.
enum End {
    /// The client's half of a `Chat` call broke: the call is over.
    Closed,
    /// The server is draining: the client should reconnect at once (elsewhere) and resume.
    Draining,
    /// A dependency failed; the client should reconnect and resume with its cursors.
    Failed(ApiError),
}

impl From<ApiError> for End {
    fn from(e: ApiError) -> Self {
        End::Failed(e)
    }
}

/// The state of one open event stream.
pub(crate) struct Session {
    natter: Arc<Natter>,
    caller: Caller,
    /// Counts this stream open (in the metrics and in presence) until it is dropped; it
    /// holds the user's record for the session too (see [`Session::user`]).
    open: OpenStream,
    out: Arc<Outbox>,
    /// Followed rooms: their live receivers and the highest seq delivered in each.
    follows: follows::Follows,
    /// Receiver of the user's own topic (room list changes); `None` until subscribed.
    own: Option<BroadcastStream<SharedEvent>>,
}

impl Session {
    /// A session for a signed-in caller; `web` when the call came over gRPC-Web.
    pub(crate) async fn open(
        natter: Arc<Natter>,
        caller: Caller,
        web: bool,
        out: Arc<Outbox>,
    ) -> ApiResult<Self> {
        let user = natter.account(&caller).await?;
        let mut open = OpenStream::admit(natter.clone(), user, web)?;
        // Counted in presence from the first poll of `stream_opened`: the client may leave
        // (dropping this future and the guard with it) while the rest of it awaits. A
        // refused or failed open takes its count back itself. This happens before the call
        // is answered, so a refusal (the account's stream limit) is the call's status, and
        // a stream the client never reads cannot hold a place it was not given.
        open.counted_in_presence = true;
        if let Err(e) = Box::pin(natter.stream_opened(&open.user)).await {
            open.counted_in_presence = false;
            return Err(e);
        }
        Ok(Self {
            natter,
            caller,
            open,
            out,
            follows: follows::Follows::default(),
            own: None,
        })
    }

    /// Runs the stream until the client leaves, the server shuts down or a dependency fails.
    /// `frames` carries a `Chat` call's client frames; a `Subscribe` call passes `initial`.
    ///
    /// Not an `async fn` awaiting `serve`: rustc keeps an awaited future's temporary next to
    /// the awaited copy (rust-lang/rust#62958), so the wrapper held `serve`'s state twice,
    /// and this future lives as long as the stream. A combinator holds it once. The frames
    /// are boxed here for the same reason: a `Streaming` held inline (~230 bytes) would make
    /// every stream pay for what only `Chat` calls use.
    pub(crate) fn run<F>(
        self,
        initial: Option<pb::SubscribeRequest>,
        frames: Option<F>,
    ) -> impl Future<Output = ()>
    where
        F: Stream<Item = Result<pb::ClientFrame, Status>> + Unpin,
    {
        futures::FutureExt::map(
            self.serve(initial, frames.map(Box::new)),
            |(session, end)| {
                session.finish(end);
            },
        )
    }

    /// The signed-in user (the record read when the stream opened).
    fn user(&self) -> &UserRecord {
        &self.open.user
    }

    /// Tells the client why its stream ended, where there is something to say.
    fn finish(self, end: End) {
        match end {
            End::Closed => {}
            End::Failed(e) => self.out.push_now(Err(Box::new(e.into()))),
            // Without waiting: a client too slow to take these is told by the stream's end.
            End::Draining => {
                let go_away = Ev::GoAway(pb::GoAway {
                    reason: "this server is shutting down".into(),
                });
                self.out
                    .push_now(Ok(FramedEvent::from(&convert::event(go_away))));
                self.out.push_now(Err(Box::new(Status::unavailable(
                    "this server is shutting down: reconnect and resume with your cursors",
                ))));
            }
        }
    }

    /// The stream's life: subscribing (for `Subscribe`), then live events, heartbeats and
    /// client frames until it ends; the session comes back with why.
    ///
    /// An `async` block rather than an `async fn`: an `async fn` moves its arguments into
    /// locals and keeps both copies (rust-lang/rust#62958), the session twice; the block
    /// uses the captured session in place.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the session twice"
    )]
    fn serve<F>(
        mut self,
        initial: Option<pb::SubscribeRequest>,
        mut frames: Option<F>,
    ) -> impl Future<Output = (Self, End)>
    where
        F: Stream<Item = Result<pb::ClientFrame, Status>> + Unpin,
    {
        async move {
            if let Some(request) = initial
                && let Err(end) = Box::pin(self.subscribe(request)).await
            {
                return (self, end);
            }
            let interval = self
                .natter
                .config()
                .heartbeat_interval
                .max(Duration::from_millis(10));
            let first = first_heartbeat_after(interval, rand::random::<f64>());
            let mut heartbeat =
                tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The cancellation future is made once: polling it registers a waiter in a list
            // shared by every stream, which must not happen again per event.
            let shutdown = self.natter.shutdown().clone();
            let cancelled = shutdown.cancelled();
            tokio::pin!(cancelled);
            // Only the rooms are polled on every step; the rest only when one of them woke
            // the stream (see `quiet`). A step from a quiet source is followed by one that
            // polls the rooms first, so a client sending frames fast cannot starve them.
            let mut quiet = crate::wake_marks::Quiet::new();
            let mut rooms_first = true;
            // A future is as large as its largest await, and this one lives as long as the
            // stream: the rare paths (subscribing, client frames, room-list changes, repairs)
            // are boxed, so an idle stream holds only the hot path's state.
            loop {
                let next = std::future::poll_fn(|cx| {
                    quiet.register(cx);
                    if rooms_first && let Poll::Ready(Some(item)) = self.follows.poll_next_unpin(cx)
                    {
                        return Poll::Ready(Next::Room(item));
                    }
                    if let Some(mut quiet_cx) = quiet.take_due() {
                        let next = poll_quiet(
                            &mut quiet_cx,
                            cancelled.as_mut(),
                            &mut heartbeat,
                            &mut self.own,
                            &mut frames,
                        );
                        if let Poll::Ready(next) = next {
                            quiet.again();
                            return Poll::Ready(next);
                        }
                    }
                    if !rooms_first
                        && let Poll::Ready(Some(item)) = self.follows.poll_next_unpin(cx)
                    {
                        return Poll::Ready(Next::Room(item));
                    }
                    Poll::Pending
                })
                .await;
                rooms_first = !matches!(next, Next::Room(_));
                let step = match next {
                    Next::Drain => Err(End::Draining),
                    Next::Heartbeat => self.on_heartbeat().await,
                    Next::Own(item) => Box::pin(self.on_own_event(item)).await,
                    Next::Room((index, item)) => self.on_room_event(index, item).await,
                    Next::Frame(frame) => match *frame {
                        Ok(frame) => Box::pin(self.on_frame(frame)).await,
                        Err(status) => {
                            tracing::debug!(%status, "client frame stream failed");
                            Err(End::Closed)
                        }
                    },
                };
                if let Err(end) = step {
                    return (self, end);
                }
            }
        }
    }

    /// Sends a heartbeat, unless the stream's token has expired: then the stream ends, with
    /// `GoAway` first (a client holding a refreshed token reconnects with it at once and
    /// resumes) and UNAUTHENTICATED. Checked at each heartbeat, so a stream outlives its
    /// token by at most one heartbeat interval, without a timer of its own.
    async fn on_heartbeat(&self) -> Result<(), End> {
        if auth::unix_now().as_secs() >= self.caller.expires_at {
            self.send(Ev::GoAway(pb::GoAway {
                reason: "the access token expired: resume with a fresh one".into(),
            }))
            .await?;
            return Err(End::Failed(ApiError::Unauthenticated(
                "the access token of this stream expired",
            )));
        }
        self.send(Ev::Heartbeat(pb::Heartbeat {
            server_time: auth::now_ms(),
        }))
        .await
    }

    /// Delivers the next message of the room followed at `index` and records it as
    /// delivered.
    async fn send_message(&mut self, index: usize, message: &MessageRecord) -> Result<(), End> {
        self.follows.at_mut(index).delivered = Some(message.seq);
        self.send(Ev::Message(convert::message(message))).await?;
        self.natter.metrics().messages_delivered.inc(self.open.web);
        Ok(())
    }

    /// Queues an event for this client only, encoding it at once: the event is not kept
    /// across the wait for room in the outbox, so every future awaiting this stays small
    /// (an `Ev` is ~300 bytes, and a stream's future is as large as its largest await).
    fn send(&self, event: Ev) -> impl Future<Output = Result<(), End>> + Send + '_ {
        self.send_encoded(FramedEvent::from(&convert::event(event)))
    }

    /// Queues an encoded event. When the outbox is full this returns to the response body
    /// until the client has taken them (its bus receivers lag meanwhile and are repaired).
    /// Draining is noticed here too, after such a wait: a long catch-up or a slow client
    /// does not keep the stream past shutdown. (The common case, room in the outbox, reads
    /// no shared state.)
    async fn send_encoded(&self, event: FramedEvent) -> Result<(), End> {
        if self.out.push(Ok(event)).await == Pushed::AfterWaiting
            && self.natter.shutdown().is_cancelled()
        {
            return Err(End::Draining);
        }
        Ok(())
    }

    /// Handles one `Chat` frame. Errors are answered on the stream; it stays open.
    async fn on_frame(&mut self, frame: pb::ClientFrame) -> Result<(), End> {
        let frame_id = frame.frame_id.clone();
        let outcome: ApiResult<Option<Ev>> = match frame.frame {
            Some(pb::client_frame::Frame::Subscribe(request)) => {
                if self.own.is_some() {
                    Err(ApiError::FailedPrecondition(
                        "this stream is already subscribed",
                    ))
                } else {
                    return self.subscribe(request).await;
                }
            }
            Some(pb::client_frame::Frame::Send(send)) => {
                match crate::domain::SendMessage::try_from(&send) {
                    Ok(send) => self.natter.send_message(&self.caller, send).await,
                    Err(invalid) => Err(invalid.into()),
                }
                .inspect(|_| self.natter.metrics().messages_received.inc(self.open.web))
                .map(|message| {
                    Some(Ev::SendAck(pb::SendAck {
                        frame_id: frame_id.clone(),
                        message: Some(convert::message(&message)),
                    }))
                })
            }
            Some(pb::client_frame::Frame::Typing(typing)) => {
                match crate::domain::SetTyping::try_from(&typing) {
                    Ok(typing) => self.natter.set_typing(&self.caller, typing).await,
                    Err(invalid) => Err(invalid.into()),
                }
                .map(|()| None)
            }
            None => Err(crate::domain::InvalidField::new(
                "frame",
                "must be one of subscribe, send or typing",
            )
            .into()),
        };
        match outcome {
            Ok(Some(event)) => self.send(event).await,
            Ok(None) => Ok(()),
            Err(e) => {
                let status = tonic::Status::from(e);
                self.send(Ev::FrameError(pb::FrameError {
                    frame_id,
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                }))
                .await
            }
        }
    }
}

/// When a stream's first heartbeat is due: between half an interval and one interval after
/// it opened, at `unit` (drawn from [0, 1) per stream) of the way. Streams opened together
/// (every client of an instance that went away, resuming at once) would otherwise beat
/// together for as long as they stay open: every interval, a burst of thousands of frames,
/// delaying the messages sent during it. A random phase per stream spreads the same beats.
/// Never later than one interval, which clients and the send deadline count on; never
/// sooner than half of one, so that a `Chat` client has time to send its `Subscribe` frame
/// before anything but `Ready` could reach it.
fn first_heartbeat_after(interval: Duration, unit: f64) -> Duration {
    interval / 2 + (interval / 2).mul_f64(unit)
}

#[cfg(test)]
mod tests;
