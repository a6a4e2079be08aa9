//! Shared reactive state of the signed-in app and the actions components call.

use std::{future::Future, time::Duration};

use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1 as pb;
use tonic::Status;

use crate::{
    api,
    state::{ChatState, PAGE_SIZE, RoomState, uuid_v4},
    storage::{self, Session},
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
    /// Bumped at every sign-in and sign-out. Background tasks and calls remember the epoch
    /// they were started in and stop (or drop their answer) once it changes, so nothing of
    /// a previous session acts for the next one. A token refresh keeps the epoch.
    pub(crate) epoch: RwSignal<u64>,
}

impl Ctx {
    /// Fresh state, signed in if a session is stored.
    pub(crate) fn new() -> Self {
        let session = Session::load();
        let chat = session.as_ref().map_or_else(ChatState::default, chat_for);
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

    /// Signs in: stores the session (other tabs follow) and starts this tab's.
    pub(crate) fn sign_in(&self, session: Session) {
        session.save();
        self.start_session(session);
    }

    /// Starts a session stored already (by this tab's sign-in or another tab's).
    pub(crate) fn start_session(&self, session: Session) {
        self.chat.set(chat_for(&session));
        self.pane.set(Pane::Welcome);
        self.notice.set(None);
        self.session.set(Some(session));
        self.epoch.update(|e| *e += 1);
    }

    /// Takes up a session another tab stored: the same user's newer token quietly, anyone
    /// else's as a new session.
    pub(crate) fn adopt(&self, stored: Session) {
        let ours = self.session.get_untracked();
        match ours {
            Some(ours) if ours.user_id == stored.user_id => {
                if ours != stored {
                    self.session.set(Some(stored));
                }
            }
            _ => self.start_session(stored),
        }
    }

    /// The server rejected this tab's token. If the browser holds another (a tab refreshed
    /// it, or signed in anew), take that one up; otherwise sign out.
    pub(crate) fn token_rejected(&self) {
        let ours = self.token();
        match Session::load() {
            Some(stored) if Some(&stored.token) != ours.as_ref() => self.adopt(stored),
            _ => self.sign_out(),
        }
    }

    /// The user signs out: the server ends the session (its token stops working everywhere,
    /// also if it was copied), then the tab forgets it. Signing out locally does not wait
    /// for the server: an unreachable server must not keep a user signed in.
    pub(crate) fn log_out(&self) {
        if let Some(token) = self.token() {
            spawn_local(async move {
                let request = api::authed(
                    &token,
                    pb::LogoutRequest {
                        all_sessions: false,
                    },
                );
                let _ = api::auth().logout(request).await;
            });
        }
        self.sign_out();
    }

    /// Signs out: forgets the stored session (other tabs follow) and ends this tab's.
    pub(crate) fn sign_out(&self) {
        Session::clear();
        self.end_session();
    }

    /// Ends this tab's session; the stream and every task of it stop.
    pub(crate) fn end_session(&self) {
        self.epoch.update(|e| *e += 1);
        self.session.set(None);
        self.notice.set(None);
        self.chat.set(ChatState::default());
    }

    /// Shows a failure of an action; a rejected token ends the session (or takes up a
    /// newer one).
    pub(crate) fn fail(&self, status: &Status) {
        if status.code() == tonic::Code::Unauthenticated {
            self.token_rejected();
        } else {
            self.notice.set(Some(api::describe(status)));
        }
    }

    /// Runs a call of the current session and hands its answer to `done`, unless the
    /// session changed meanwhile (an answer for someone who signed out is dropped).
    pub(crate) fn call<T: 'static>(
        &self,
        call: impl Future<Output = Result<T, Status>> + 'static,
        done: impl FnOnce(Result<T, Status>) + 'static,
    ) {
        let ctx = *self;
        let epoch = self.epoch.get_untracked();
        spawn_local(async move {
            let result = call.await;
            if ctx.is_current(epoch) {
                done(result);
            }
        });
    }

    /// Like [`Ctx::call`], for a control that must not send twice (a double click on Create
    /// would make two rooms): nothing is sent while `busy` is set; it is set for the call
    /// and cleared when the answer comes. `request` makes the call with the token.
    pub(crate) fn call_once<T: 'static, F>(
        &self,
        busy: RwSignal<bool>,
        request: impl FnOnce(String) -> F,
        done: impl FnOnce(Result<T, Status>) + 'static,
    ) where
        F: Future<Output = Result<T, Status>> + 'static,
    {
        let Some(token) = self.token().filter(|_| !busy.get_untracked()) else {
            return;
        };
        busy.set(true);
        self.call(request(token), move |result| {
            let _ = busy.try_set(false);
            done(result);
        });
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
            self.load_history(room_id.clone(), 0, || {});
        }
        self.load_members(room_id);
    }

    /// Lists a room's members with their presence.
    pub(crate) fn load_members(&self, room_id: String) {
        let ctx = *self;
        let Some(token) = self.token() else { return };
        let request = pb::ListMembersRequest {
            room_id: room_id.clone(),
        };
        let listing = async move { api::chat().list_members(api::authed(&token, request)).await };
        self.call(listing, move |result| match result {
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
        });
    }

    /// Loads a page of history ending before `before_seq` (0: the newest) and merges it;
    /// `finished` runs when the answer is in.
    pub(crate) fn load_history(
        &self,
        room_id: String,
        before_seq: u64,
        finished: impl FnOnce() + 'static,
    ) {
        let ctx = *self;
        let Some(token) = self.token() else { return };
        let request = pb::GetHistoryRequest {
            room_id: room_id.clone(),
            before_seq,
            limit: PAGE_SIZE,
        };
        let loading = async move { api::chat().get_history(api::authed(&token, request)).await };
        self.call(loading, move |result| {
            finished();
            match result {
                Ok(page) => ctx
                    .chat
                    .update(|c| c.merge_history(&room_id, page.into_inner())),
                Err(status) => ctx.fail(&status),
            }
        });
    }

    /// Sends (or re-sends, with the same client id, so never twice) a message. A network
    /// failure while the stream is up (a connection that died in the browser's pool, say)
    /// is tried again at once, on another connection; if that fails too, the message shows
    /// as failed: the user may retry, and it is sent again when the stream reconnects.
    pub(crate) fn send(&self, room_id: String, client_id: String, text: String) {
        self.send_attempt(room_id, client_id, text, true);
    }

    fn send_attempt(&self, room_id: String, client_id: String, text: String, again: bool) {
        let ctx = *self;
        let Some(token) = self.token() else { return };
        ctx.chat
            .update(|c| c.set_failed(&room_id, &client_id, false));
        let request = pb::SendMessageRequest {
            room_id: room_id.clone(),
            text: text.clone(),
            client_id: client_id.clone(),
        };
        let sending = async move { api::chat().send_message(api::authed(&token, request)).await };
        self.call(sending, move |result| match result {
            Ok(message) => ctx.chat.update(|c| c.acknowledge(message.into_inner())),
            Err(status)
                if again
                    && api::is_transient(&status)
                    && ctx.connection.get_untracked() == Connection::Connected =>
            {
                ctx.send_attempt(room_id, client_id, text, false);
            }
            Err(status) => {
                ctx.chat
                    .update(|c| c.set_failed(&room_id, &client_id, true));
                // The failed message itself offers the retry; only a rejection (not a
                // network failure) needs words.
                if !api::is_transient(&status) {
                    ctx.fail(&status);
                }
            }
        });
    }

    /// Sends again every message that failed: the stream is back, so the network is too.
    pub(crate) fn resend_failed(&self) {
        for (room_id, client_id, text) in self.chat.with_untracked(ChatState::failed_sends) {
            self.send(room_id, client_id, text);
        }
    }

    /// The answer to a leave or delete: the room goes, and so does its pane if it is still
    /// on screen.
    pub(crate) fn room_dropped<T>(&self, room_id: String, result: Result<T, Status>) {
        match result {
            Ok(_) => {
                self.chat.update(|c| c.remove_room(&room_id));
                if self.pane.get_untracked() == Pane::Room(room_id) {
                    self.show(Pane::Welcome);
                }
            }
            Err(status) => self.fail(&status),
        }
    }

    /// Adds a room the user just created, joined or opened, and shows it.
    pub(crate) fn enter_room(&self, room: pb::Room) {
        let id = room.id.clone();
        self.chat.update(|c| c.upsert_room(room));
        self.open_room(id);
    }
}

/// A signed-in user's chat state, with how far they had read each room on an earlier visit.
fn chat_for(session: &Session) -> ChatState {
    ChatState::new(&session.user_id, storage::read_markers(&session.user_id))
}

/// A fresh idempotency key, from the browser's random source (which, unlike
/// `crypto.randomUUID()`, exists on plain-HTTP pages too).
pub(crate) fn new_client_id() -> String {
    let mut bytes = [0u8; 16];
    let filled = window()
        .crypto()
        .and_then(|crypto| crypto.get_random_values_with_u8_array(&mut bytes));
    if filled.is_err() {
        for byte in &mut bytes {
            *byte = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    uuid_v4(bytes)
}

/// Ticks `ctx.now` every second.
pub(crate) fn tick_clock(ctx: Ctx) {
    set_interval(
        move || ctx.now.set(js_sys::Date::now()),
        Duration::from_secs(1),
    );
}
