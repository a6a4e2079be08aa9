//! The signed-in session, kept in localStorage so a reload stays signed in.

use serde::{Deserialize, Serialize};

const KEY: &str = "natter.session";

/// Token and user of the signed-in account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// Access token.
    pub(crate) token: String,
    /// Expiry, ms since the epoch.
    pub(crate) expires_at: f64,
    /// User id.
    pub(crate) user_id: String,
    /// Username.
    pub(crate) username: String,
    /// Display name.
    pub(crate) display_name: String,
}

impl Session {
    /// From a sign-in answer.
    pub(crate) fn from_response(response: natter_proto::v1::AuthResponse) -> Self {
        let user = response.user.unwrap_or_default();
        Self {
            token: response.access_token,
            expires_at: response.expires_at as f64,
            user_id: user.id,
            username: user.username,
            display_name: user.display_name,
        }
    }

    fn storage() -> Option<web_sys::Storage> {
        leptos::prelude::window().local_storage().ok().flatten()
    }

    /// The stored session, unless missing or expired.
    pub(crate) fn load() -> Option<Self> {
        let json = Self::storage()?.get_item(KEY).ok().flatten()?;
        let session: Self = serde_json::from_str(&json).ok()?;
        (session.expires_at > js_sys::Date::now()).then_some(session)
    }

    /// Stores the session.
    pub(crate) fn save(&self) {
        if let (Some(storage), Ok(json)) = (Self::storage(), serde_json::to_string(self)) {
            let _ = storage.set_item(KEY, &json);
        }
    }

    /// Forgets the stored session.
    pub(crate) fn clear() {
        if let Some(storage) = Self::storage() {
            let _ = storage.remove_item(KEY);
        }
    }
}
