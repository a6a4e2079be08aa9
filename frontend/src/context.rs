//! Shared reactive state of the signed-in app, the tab's one event stream, and the actions
//! components call.

use std::time::Duration;

use futures::{FutureExt, pin_mut, select};
use gloo_timers::future::TimeoutFuture;
use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1::{self as pb, event::Event as Ev};

use crate::{
    api,
    session::Session,
    state::{Backoff, ChatState, PAGE_SIZE, RoomState, silence_limit_ms},
};

/// The state of the event stream, shown in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connection {
    /// Opening the stream for the first time.
    Connecting,
    /// Ready received; events flow.
    Connected,
    /// The stream broke; retrying with backoff.
    Reconnecting,
    /// The browser reports no network.
    Offline,
}

impl Connection {
    /// Word shown to people and used by tests.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Connection::Connecting => "connecting",
            Connection::Connected => "connected",
            Connection::Reconnecting => "reconnecting",
            Connection::Offline => "offline",
        }
    }
}

/// What the main pane shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pane {
    /// Nothing selected.
    Welcome,
    /// A conversation.
    Room(String),
    /// The people directory.
    People,
}

/// Everything components share; `Copy`, so closures take it freely.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    /// The signed-in session, `None` when signed out.
    pub(crate) session: RwSignal<Option<Session>>,
    /// Rooms, messages, presence.
    pub(crate) chat: RwSignal<ChatState>,
    /// The stream's state.
    pub(crate) connection: RwSignal<Connection>,
    /// The main pane.
    pub(crate) pane: RwSignal<Pane>,
    /// A passing notice (errors of actions without a form).
    pub(crate) notice: RwSignal<Option<String>>,
    /// Wall clock, ms, ticking every second (typing indicators expire by it).
    pub(crate) now: RwSignal<f64>,
    /// On narrow screens, whether the room list covers the main pane.
    pub(crate) sidebar_open: RwSignal<bool>,
    /// Bumped at every sign-in and sign-out. Background tasks remember the epoch they were
    /// started in and stop once it changes, so a task of a previous session (waiting out a
    /// backoff, say) never acts for the next one. A token refresh keeps the epoch.
    pub(crate) epoch: RwSignal<u64>,
}

impl Ctx {
    /// Fresh state, signed in if a session is stored.
    pub(crate) fn new() -> Self {
        let session = Session::load();
        let chat = ChatState::new(session.as_ref().map_or("", |s| s.user_id.as_str()));
        Self {
            session: RwSignal::new(session),
            chat: RwSignal::new(chat),
            connection: RwSignal::new(Connection::Connecting),
            pane: RwSignal::new(Pane::Welcome),
            notice: RwSignal::new(None),
            now: RwSignal::new(js_sys::Date::now()),
            sidebar_open: RwSignal::new(true),
            epoch: RwSignal::new(0),
        }
    }

    /// Whether a task started in `epoch` still belongs to the current session.
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        self.epoch.get_untracked() == epoch && self.session.with_untracked(Option::is_some)
    }

    /// Shows a pane. Only a room on screen counts as read, so leaving it clears `active`.
    pub(crate) fn show(&self, pane: Pane) {
        if !matches!(pane, Pane::Room(_)) {
            self.chat.update(|c| c.active = None);
        }
        if self.pane.get_untracked() != pane {
            self.pane.set(pane);
        }
    }

    /// The current token, if signed in.
    pub(crate) fn token(&self) -> Option<String> {
        self.session
            .with_untracked(|s| s.as_ref().map(|s| s.token.clone()))
    }

    /// Signs in: stores the session and starts the stream.
    pub(crate) fn sign_in(&self, session: Session) {
        session.save();
        self.chat.set(ChatState::new(&session.user_id));
        self.pane.set(Pane::Welcome);
        self.session.set(Some(session));
        self.epoch.update(|e| *e += 1);
    }

    /// Signs out: forgets the session; the stream loop stops at its next step.
    pub(crate) fn sign_out(&self) {
        Session::clear();
        self.epoch.update(|e| *e += 1);
        self.session.set(None);
        self.chat.set(ChatState::default());
    }

    /// Shows a failure of an action.
    pub(crate) fn fail(&self, status: &tonic::Status) {
        if status.code() == tonic::Code::Unauthenticated {
            self.sign_out();
        } else {
            self.notice.set(Some(api::describe(status)));
        }
    }

    /// Opens a room: marks it read, loads its newest messages and its members.
    pub(crate) fn open_room(&self, room_id: String) {
        self.sidebar_open.set(false);
        self.chat.update(|c| c.open(&room_id));
        if self.pane.get_untracked() == Pane::Room(room_id.clone()) {
            return; // already on screen: keep its draft and scroll position
        }
        self.pane.set(Pane::Room(room_id.clone()));
        let needs_history = self.chat.with_untracked(|c| {
            c.rooms
                .get(&room_id)
                .is_some_and(RoomState::needs_newest_page)
        });
        if needs_history {
            self.load_history(room_id.clone(), 0);
        }
        self.load_members(room_id);
    }

    /// Lists a room's members with their presence.
    pub(crate) fn load_members(&self, room_id: String) {
        let ctx = *self;
        let Some(token) = self.token() else { return };
        spawn_local(async move {
            match api::chat()
                .list_members(api::authed(
                    &token,
                    pb::ListMembersRequest {
                        room_id: room_id.clone(),
                    },
                ))
                .await
            {
                Ok(response) => ctx.chat.update(|c| {
                    if let Some(room) = c.rooms.get_mut(&room_id) {
                        room.members = response
                            .into_inner()
                            .members
                            .into_iter()
                            .filter_map(|m| m.user)
                            .map(|u| (u.id.clone(), u))
                            .collect();
                    }
                }),
                Err(status) => ctx.fail(&status),
            }
        });
    }

    /// Loads a page of history ending before `before_seq` (0: the newest).
    pub(crate) fn load_history(&self, room_id: String, before_seq: u64) {
        let ctx = *self;
        spawn_local(async move { ctx.fetch_history(room_id, before_seq).await });
    }

    /// Fetches and merges a page of history ending before `before_seq` (0: the newest).
    pub(crate) async fn fetch_history(&self, room_id: String, before_seq: u64) {
        let Some(token) = self.token() else { return };
        let request = pb::GetHistoryRequest {
            room_id: room_id.clone(),
            before_seq,
            limit: PAGE_SIZE,
        };
        match api::chat().get_history(api::authed(&token, request)).await {
            Ok(page) => self
                .chat
                .update(|c| c.merge_history(&room_id, page.into_inner())),
            Err(status) => self.fail(&status),
        }
    }

    /// Sends (or re-sends, with the same client id) a message.
    pub(crate) fn send(&self, room_id: String, client_id: String, text: String) {
        let ctx = *self;
        let Some(token) = self.token() else { return };
        ctx.chat
            .update(|c| c.set_failed(&room_id, &client_id, false));
        spawn_local(async move {
            let request = pb::SendMessageRequest {
                room_id: room_id.clone(),
                text,
                client_id: client_id.clone(),
            };
            match api::chat().send_message(api::authed(&token, request)).await {
                Ok(message) => ctx.chat.update(|c| c.acknowledge(message.into_inner())),
                Err(status) => {
                    ctx.chat
                        .update(|c| c.set_failed(&room_id, &client_id, true));
                    // The failed message itself offers the retry; only a rejection (not a
                    // network failure) needs words.
                    if !api::is_transient(&status) {
                        ctx.fail(&status);
                    }
                }
            }
        });
    }

    /// Runs a leave or delete call, then forgets the room and leaves its pane.
    pub(crate) fn drop_room_after<T>(
        &self,
        room_id: String,
        call: impl std::future::Future<Output = Result<T, tonic::Status>> + 'static,
    ) {
        let ctx = *self;
        spawn_local(async move {
            match call.await {
                Ok(_) => {
                    ctx.chat.update(|c| c.remove_room(&room_id));
                    ctx.show(Pane::Welcome);
                }
                Err(status) => ctx.fail(&status),
            }
        });
    }

    /// Adds a room the user just created, joined or opened, and shows it.
    pub(crate) fn enter_room(&self, room: pb::Room) {
        let id = room.id.clone();
        self.chat.update(|c| c.upsert_room(room));
        self.open_room(id);
    }
}

/// A fresh idempotency key.
pub(crate) fn new_client_id() -> String {
    window()
        .crypto()
        .map(|c| c.random_uuid())
        .unwrap_or_else(|_| format!("{}-{}", js_sys::Date::now(), js_sys::Math::random()))
}

/// Keeps the tab's one event stream open while signed in: reconnects with backoff and
/// resumes with the per-room cursors.
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
            let end = follow_stream(ctx, epoch, &token, &mut heartbeat_ms, &mut backoff).await;
            if end == StreamEnd::SessionOver || !ctx.is_current(epoch) {
                return;
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

/// The server's default heartbeat interval, assumed until a `Ready` tells the real one.
const DEFAULT_HEARTBEAT_MS: u32 = 15_000;

/// Why [`follow_stream`] returned.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// Signed out, or in as someone else: stop for good.
    SessionOver,
    /// The stream failed, ended, went silent, or the browser went offline: reconnect.
    Broken,
}

/// Opens the event stream with the cursors and applies its events until it ends. A stream
/// silent for longer than the heartbeat allows is dead even if the connection looks open
/// (a dead network path or a stuck proxy never says so), and so is one that does not
/// even answer within that time: both count as broken. Dropping the stream aborts its
/// fetch, so the server sees the tab go at once.
async fn follow_stream(
    ctx: Ctx,
    epoch: u64,
    token: &str,
    heartbeat_ms: &mut u32,
    backoff: &mut Backoff,
) -> StreamEnd {
    let ended = session_ended(ctx, epoch).fuse();
    let offline = window_event("offline").fuse();
    pin_mut!(ended, offline);
    let cursors = ctx.chat.with_untracked(ChatState::cursors);
    let mut stream = {
        let opened = api::subscribe(token, cursors).fuse();
        let silence = TimeoutFuture::new(silence_limit_ms(*heartbeat_ms)).fuse();
        pin_mut!(opened, silence);
        select! {
            opened = opened => match opened {
                Ok(stream) => stream,
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    if ctx.is_current(epoch) {
                        ctx.sign_out();
                    }
                    return StreamEnd::SessionOver;
                }
                Err(_) => return StreamEnd::Broken,
            },
            () = silence => return StreamEnd::Broken,
            () = offline => return StreamEnd::Broken,
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
        if let Ev::Ready(ready) = &event {
            *heartbeat_ms = ready.heartbeat_interval_ms;
            backoff.reset();
            ctx.connection.set(Connection::Connected);
            // Presence changes missed while disconnected: list the shown room's members
            // again.
            if let Pane::Room(room_id) = ctx.pane.get_untracked() {
                ctx.load_members(room_id);
            }
        }
        let now = js_sys::Date::now();
        ctx.chat.update(|c| c.apply(event, now));
        // The room on screen may have been left or deleted meanwhile.
        let shown_room_gone = ctx.pane.with_untracked(|p| matches!(p, Pane::Room(_)))
            && ctx.chat.with_untracked(|c| c.active.is_none());
        if shown_room_gone {
            ctx.show(Pane::Welcome);
        }
    }
}

/// Completes at the window's next `name` event (`online`, `offline`). The listener goes
/// when the future completes or is dropped.
async fn window_event(name: &'static str) {
    let (fired, wait) = futures::channel::oneshot::channel::<()>();
    let fired = std::cell::Cell::new(Some(fired));
    let listener = window_event_listener_untyped(name, move |_| {
        if let Some(fired) = fired.take() {
            let _ = fired.send(());
        }
    });
    let _listening = RemoveOnDrop(Some(listener));
    let _ = wait.await;
}

/// Removes a window event listener when dropped.
struct RemoveOnDrop(Option<WindowListenerHandle>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(listener) = self.0.take() {
            listener.remove();
        }
    }
}

/// Completes soon after the session of `epoch` ends (sign-out, or another sign-in).
async fn session_ended(ctx: Ctx, epoch: u64) {
    while ctx.is_current(epoch) {
        TimeoutFuture::new(250).await;
    }
}

/// Refreshes the token a minute before it expires, for as long as the tab stays signed in.
pub(crate) fn keep_token_fresh(ctx: Ctx, epoch: u64) {
    spawn_local(async move {
        loop {
            let Some(expires_at) = ctx
                .session
                .with_untracked(|s| s.as_ref().map(|s| s.expires_at))
            else {
                return;
            };
            let wait = (expires_at - js_sys::Date::now() - 60_000.0).max(5_000.0);
            TimeoutFuture::new(wait.min(f64::from(i32::MAX)) as u32).await;
            let Some(token) = ctx.token().filter(|_| ctx.is_current(epoch)) else {
                return;
            };
            let refreshed = api::auth()
                .refresh_token(api::authed(&token, pb::RefreshTokenRequest {}))
                .await;
            if !ctx.is_current(epoch) {
                return;
            }
            match refreshed {
                Ok(response) => {
                    let session = Session::from_response(response.into_inner());
                    session.save();
                    ctx.session.set(Some(session));
                }
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    ctx.sign_out();
                    return;
                }
                Err(_) => TimeoutFuture::new(10_000).await,
            }
        }
    });
}

/// Ticks `ctx.now` every second.
pub(crate) fn tick_clock(ctx: Ctx) {
    set_interval(
        move || ctx.now.set(js_sys::Date::now()),
        Duration::from_secs(1),
    );
}
