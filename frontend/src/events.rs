//! The tab's one event stream: open it with the per-room cursors, apply what arrives, and
//! when it breaks, goes silent or the network goes, reconnect with backoff.

use futures::{FutureExt, pin_mut, select};
use gloo_timers::future::TimeoutFuture;
use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1::{self as pb, event::Event as Ev};

use crate::{
    api,
    browser::window_event,
    context::{Connection, Ctx, Pane},
    state::{Backoff, ChatState, go_away_delay_ms, silence_limit_ms},
};

/// The server's default heartbeat interval, assumed until a `Ready` tells the real one.
const DEFAULT_HEARTBEAT_MS: u32 = 15_000;

/// Keeps the tab's one event stream open while the session of `epoch` lasts: reconnects
/// with backoff and resumes with the per-room cursors.
pub(crate) fn run_event_stream(ctx: Ctx, epoch: u64) {
    spawn_local(async move {
        let mut backoff = Backoff::default();
        // The server's heartbeat interval, learned from `Ready`: it bounds every silence.
        let mut heartbeat_ms = DEFAULT_HEARTBEAT_MS;
        loop {
            let Some(token) = ctx.token().filter(|_| ctx.is_current(epoch)) else {
                return;
            };
            let online = window().navigator().on_line();
            ctx.connection.set(match (online, backoff.attempts()) {
                (false, _) => Connection::Offline,
                (true, 0) => Connection::Connecting,
                (true, _) => Connection::Reconnecting,
            });
            let mut ready_at = None;
            let end = follow_stream(ctx, epoch, &token, &mut heartbeat_ms, &mut ready_at).await;
            if end == StreamEnd::SessionOver || !ctx.is_current(epoch) {
                return;
            }
            if end == StreamEnd::NetworkBack {
                continue;
            }
            if end == StreamEnd::GoAway {
                // The server is draining: reconnect now (behind a load balancer, to another
                // instance) and resume; the failure backoff stays as it was.
                ctx.connection.set(Connection::Reconnecting);
                TimeoutFuture::new(go_away_delay_ms(js_sys::Math::random()) as u32).await;
                continue;
            }
            if let Some(ready_at) = ready_at {
                backoff.stream_ended(js_sys::Date::now() - ready_at);
            }
            let online = window().navigator().on_line();
            ctx.connection.set(if online {
                Connection::Reconnecting
            } else {
                Connection::Offline
            });
            // Wait out the backoff, or less: the browser coming back online is the moment
            // to try again.
            let delay = TimeoutFuture::new(backoff.next_delay_ms(js_sys::Math::random()) as u32);
            let back_online = window_event("online");
            pin_mut!(back_online);
            select! {
                () = delay.fuse() => {},
                () = back_online.fuse() => {},
            }
        }
    });
}

/// Why [`follow_stream`] returned.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// Signed out, or in as someone else: stop for good.
    SessionOver,
    /// The stream failed, ended, went silent, or the browser went offline: reconnect.
    Broken,
    /// The network came back while the stream was still opening: try again at once.
    NetworkBack,
    /// The server said it is going away (`GoAway`): reconnect at once, elsewhere.
    GoAway,
}

/// Opens the event stream with the cursors and applies its events until it ends; sets
/// `ready_at` when its `Ready` arrives. A stream silent for longer than the heartbeat
/// allows is dead even if the connection looks open (a dead network path or a stuck proxy
/// never says so), and so is one that does not even answer within that time. Dropping the
/// stream aborts its fetch, so the server sees the tab go at once.
async fn follow_stream(
    ctx: Ctx,
    epoch: u64,
    token: &str,
    heartbeat_ms: &mut u32,
    ready_at: &mut Option<f64>,
) -> StreamEnd {
    let ended = session_ended(ctx, epoch).fuse();
    let offline = window_event("offline").fuse();
    pin_mut!(ended, offline);
    let cursors = ctx.chat.with_untracked(ChatState::cursors);
    let mut stream = {
        let opened = api::subscribe(token, cursors).fuse();
        let silence = TimeoutFuture::new(silence_limit_ms(*heartbeat_ms)).fuse();
        let online = window_event("online").fuse();
        pin_mut!(opened, silence, online);
        select! {
            opened = opened => match opened {
                Ok(stream) => stream,
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    if ctx.is_current(epoch) {
                        ctx.token_rejected();
                    }
                    return StreamEnd::Broken;
                }
                Err(_) => return StreamEnd::Broken,
            },
            () = silence => return StreamEnd::Broken,
            () = offline => return StreamEnd::Broken,
            () = online => return StreamEnd::NetworkBack,
            () = ended => return StreamEnd::SessionOver,
        }
    };
    loop {
        let next = stream.message().fuse();
        let silence = TimeoutFuture::new(silence_limit_ms(*heartbeat_ms)).fuse();
        pin_mut!(next, silence);
        let event = select! {
            message = next => message,
            () = silence => return StreamEnd::Broken,
            () = offline => return StreamEnd::Broken,
            () = ended => return StreamEnd::SessionOver,
        };
        if !ctx.is_current(epoch) {
            return StreamEnd::SessionOver;
        }
        let Ok(Some(pb::Event { event: Some(event) })) = event else {
            return StreamEnd::Broken;
        };
        let ready = match &event {
            Ev::Ready(ready) => Some(ready.heartbeat_interval_ms),
            Ev::GoAway(_) => return StreamEnd::GoAway,
            _ => None,
        };
        let now = js_sys::Date::now();
        ctx.chat.maybe_update(|c| c.apply(event, now));
        if let Some(interval_ms) = ready {
            *heartbeat_ms = interval_ms;
            *ready_at = Some(now);
            ctx.connection.set(Connection::Connected);
            // What was missed while disconnected: presence (list the shown room's members
            // again) and the answers to failed sends (send them again).
            if let Pane::Room(room_id) = ctx.pane.get_untracked() {
                ctx.load_members(room_id);
            }
            ctx.resend_failed();
        }
        // The room on screen may have been left or deleted meanwhile.
        let shown_room_gone = ctx.pane.with_untracked(|p| matches!(p, Pane::Room(_)))
            && ctx.chat.with_untracked(|c| c.active.is_none());
        if shown_room_gone {
            ctx.show(Pane::Welcome);
        }
    }
}

/// Completes soon after the session of `epoch` ends (sign-out, or another sign-in).
async fn session_ended(ctx: Ctx, epoch: u64) {
    while ctx.is_current(epoch) {
        TimeoutFuture::new(250).await;
    }
}
