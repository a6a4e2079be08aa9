//! The signed-in session: kept in localStorage so a reload stays signed in, shared by the
//! browser's tabs (signing in or out in one does it in all), and refreshed before its
//! token expires. Also how far each room was read, per user, for unread counts after a
//! reload.

use std::collections::BTreeMap;

use futures::{FutureExt, pin_mut, select};
use gloo_timers::future::TimeoutFuture;
use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    api,
    context::Ctx,
    events::window_event,
    state::{REFRESH_CHECK_MS, merge_read_markers, refresh_in_ms, refresh_lead_ms},
};

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
        Self::stored().filter(|s| s.expires_at > js_sys::Date::now())
    }

    /// The stored session, expired or not.
    fn stored() -> Option<Self> {
        Self::parse(&storage()?.get_item(KEY).ok().flatten()?)
    }

    fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
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

/// Remembers how far `user_id` has read each room, never moving back a marker that
/// another tab of the same user moved further.
pub(crate) fn remember_read(user_id: &str, markers: &BTreeMap<String, u64>) {
    let merged = merge_read_markers(read_markers(user_id), markers.clone());
    if let (Some(storage), Ok(json)) = (storage(), serde_json::to_string(&merged)) {
        let _ = storage.set_item(&read_markers_key(user_id), &json);
    }
}

/// Refreshes the token ahead of its expiry for as long as the session of `epoch` lasts.
/// The schedule is looked at again at least every 30 s, and at once when the tab comes
/// back into view or the network returns, so a laptop waking from sleep refreshes before
/// the token runs out. Tabs share the session: a token another tab refreshed is taken
/// rather than asked for again, and a refreshed token is stored only if the browser still
/// holds the session it replaces.
pub(crate) fn keep_token_fresh(ctx: Ctx, epoch: u64) {
    spawn_local(async move {
        // Tabs of one session wake at the same moment: a little jitter lets the first
        // refresh reach the others before they ask too.
        let jitter = js_sys::Math::random();
        loop {
            let Some(ours) = ctx
                .session
                .get_untracked()
                .filter(|_| ctx.is_current(epoch))
            else {
                return;
            };
            let fresher = Session::load()
                .filter(|s| s.user_id == ours.user_id && s.expires_at > ours.expires_at);
            if let Some(stored) = fresher {
                ctx.adopt(stored);
                continue;
            }
            let lead = refresh_lead_ms(ours.lifetime_ms);
            let wait = refresh_in_ms(js_sys::Date::now(), ours.expires_at, ours.lifetime_ms);
            if wait > 0.0 {
                let wait = if wait < REFRESH_CHECK_MS {
                    wait + jitter * (lead / 8.0).min(2_000.0)
                } else {
                    wait
                };
                wake_after(wait).await;
                continue;
            }
            let refreshed = api::auth()
                .refresh_token(api::authed(&ours.token, pb::RefreshTokenRequest {}))
                .await;
            if !ctx.is_current(epoch) {
                return;
            }
            match refreshed {
                Ok(response) => match Session::stored() {
                    Some(stored) if stored.token == ours.token => {
                        let session = Session::from_response(response.into_inner());
                        session.save();
                        ctx.session.set(Some(session));
                    }
                    Some(stored) => ctx.adopt(stored),
                    None => ctx.end_session(),
                },
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    ctx.token_rejected();
                }
                // Unreachable for now: try again shortly, until the token expires.
                Err(_) => wake_after(5_000.0).await,
            }
        }
    });
}

/// Waits `ms`, or less: until the tab comes back into view or the network returns.
async fn wake_after(ms: f64) {
    let timer = TimeoutFuture::new(ms.min(f64::from(u32::MAX)) as u32).fuse();
    let shown = window_event("visibilitychange").fuse();
    let online = window_event("online").fuse();
    pin_mut!(timer, shown, online);
    select! {
        () = timer => {},
        () = shown => {},
        () = online => {},
    }
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
        let written = event.new_value().as_deref().and_then(Session::parse);
        match written {
            Some(stored) => ctx.adopt(stored),
            None if ctx.session.with_untracked(Option::is_some) => ctx.end_session(),
            None => {}
        }
    });
}
