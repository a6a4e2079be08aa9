//! The signed-in session: kept in localStorage so a reload stays signed in, shared by the
//! browser's tabs (signing in or out in one does it in all), and refreshed before its
//! token expires. Also how far each room was read, per user, for unread counts after a
//! reload.

use std::collections::BTreeMap;

use gloo_timers::future::TimeoutFuture;
use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{api, context::Ctx, state::refresh_in_ms};

const KEY: &str = "natter.session";

/// Token and user of the signed-in account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// Access token.
    pub(crate) token: String,
    /// Expiry in this browser's clock, ms since the epoch.
    pub(crate) expires_at: f64,
    /// The token's whole lifetime, ms.
    #[serde(default = "default_lifetime_ms")]
    pub(crate) lifetime_ms: f64,
    /// User id.
    pub(crate) user_id: String,
    /// Username.
    pub(crate) username: String,
    /// Display name.
    pub(crate) display_name: String,
}

/// The server's default token lifetime (12 h), for sessions stored before lifetimes were.
fn default_lifetime_ms() -> f64 {
    12.0 * 3_600_000.0
}

fn storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

impl Session {
    /// From a sign-in or refresh answer. The expiry is reckoned from the token's lifetime
    /// and this browser's clock, so a clock that is off does not make it expire early.
    pub(crate) fn from_response(response: pb::AuthResponse) -> Self {
        let now = js_sys::Date::now();
        let lifetime_ms = match response.expires_in_ms {
            0 => response.expires_at as f64 - now,
            relative => relative as f64,
        };
        let user = response.user.unwrap_or_default();
        Self {
            token: response.access_token,
            expires_at: now + lifetime_ms,
            lifetime_ms,
            user_id: user.id,
            username: user.username,
            display_name: user.display_name,
        }
    }

    /// The stored session, unless missing or expired.
    pub(crate) fn load() -> Option<Self> {
        let json = storage()?.get_item(KEY).ok().flatten()?;
        let session: Self = serde_json::from_str(&json).ok()?;
        (session.expires_at > js_sys::Date::now()).then_some(session)
    }

    /// Stores the session.
    pub(crate) fn save(&self) {
        if let (Some(storage), Ok(json)) = (storage(), serde_json::to_string(self)) {
            let _ = storage.set_item(KEY, &json);
        }
    }

    /// Forgets the stored session.
    pub(crate) fn clear() {
        if let Some(storage) = storage() {
            let _ = storage.remove_item(KEY);
        }
    }
}

fn read_markers_key(user_id: &str) -> String {
    format!("natter.read.{user_id}")
}

/// How far `user_id` had read each room, as last remembered in this browser.
pub(crate) fn read_markers(user_id: &str) -> BTreeMap<String, u64> {
    storage()
        .and_then(|s| s.get_item(&read_markers_key(user_id)).ok().flatten())
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

/// Remembers how far `user_id` has read each room.
pub(crate) fn remember_read(user_id: &str, markers: &BTreeMap<String, u64>) {
    if let (Some(storage), Ok(json)) = (storage(), serde_json::to_string(markers)) {
        let _ = storage.set_item(&read_markers_key(user_id), &json);
    }
}

/// Refreshes the token ahead of its expiry for as long as the session of `epoch` lasts.
/// The schedule is looked at again at least every 30 s, so a laptop waking from sleep
/// refreshes at once rather than when an old timer fires.
pub(crate) fn keep_token_fresh(ctx: Ctx, epoch: u64) {
    spawn_local(async move {
        loop {
            let Some((expires_at, lifetime)) = ctx
                .session
                .with_untracked(|s| s.as_ref().map(|s| (s.expires_at, s.lifetime_ms)))
            else {
                return;
            };
            let wait = refresh_in_ms(js_sys::Date::now(), expires_at, lifetime);
            if wait > 0.0 {
                TimeoutFuture::new(wait as u32).await;
                if !ctx.is_current(epoch) {
                    return;
                }
                continue;
            }
            let Some(token) = ctx.token() else { return };
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
                // Unreachable for now: try again shortly, until the token expires.
                Err(_) => TimeoutFuture::new(5_000).await,
            }
        }
    });
}

/// Follows what the browser's other tabs do with the shared session: signing out there
/// signs out here, a token refreshed there is used here, and signing in there (as anyone)
/// switches this tab to that session.
pub(crate) fn follow_other_tabs(ctx: Ctx) {
    // Lives as long as the page: the handle is not kept.
    let _ = window_event_listener(leptos::ev::storage, move |event| {
        // No key: the whole storage was cleared.
        if event.key().is_some_and(|key| key != KEY) {
            return;
        }
        let ours = ctx.session.get_untracked();
        match (Session::load(), ours) {
            (None, Some(_)) => ctx.end_session(),
            (Some(stored), Some(ours)) if stored.user_id == ours.user_id => {
                if stored != ours {
                    ctx.session.set(Some(stored));
                }
            }
            (Some(stored), _) => ctx.start_session(stored),
            (None, None) => {}
        }
    });
}
