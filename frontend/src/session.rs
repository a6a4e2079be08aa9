//! The signed-in session over time: refreshed before its token expires, and shared by the
//! browser's tabs (signing in or out in one does it in all). What is stored is in `storage`.

use futures::{FutureExt, pin_mut, select};
use gloo_timers::future::TimeoutFuture;
use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1 as pb;

use crate::{
    api,
    browser::window_event,
    context::Ctx,
    state::{REFRESH_CHECK_MS, refresh_in_ms, refresh_lead_ms},
    storage::{KEY, Session},
};

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
