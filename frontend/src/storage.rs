//! What the browser keeps in localStorage: the signed-in session (so a reload stays signed
//! in, and the tabs share it), and how far each room was read, per user, for unread counts
//! after a reload. Plain storage: the schedules that use it are in `session`.

use std::collections::BTreeMap;

use natter_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::state::merge_read_markers;

/// The localStorage key of the session (tabs watch it to follow each other).
pub(crate) const KEY: &str = "natter.session";

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
    leptos::prelude::window().local_storage().ok().flatten()
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
    pub(crate) fn stored() -> Option<Self> {
        Self::parse(&storage()?.get_item(KEY).ok().flatten()?)
    }

    /// A session from its stored form (what a storage event carries).
    pub(crate) fn parse(json: &str) -> Option<Self> {
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
