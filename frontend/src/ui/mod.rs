//! Components. Every control has a label, and `data-testid`s mark what browser tests use.

#![allow(
    unreachable_pub,
    reason = "#[component] emits `pub` items for its props"
)]

mod auth;
mod conversation;
mod people;
mod shell;
mod widgets;

use leptos::prelude::*;

use crate::{
    context::{Ctx, tick_clock},
    events::run_event_stream,
    session::{follow_other_tabs, keep_token_fresh},
    storage::remember_read,
};

/// The app: the sign-in screen, or the chat once signed in.
#[component]
pub(crate) fn App() -> impl IntoView {
    let ctx = Ctx::new();
    provide_context(ctx);
    tick_clock(ctx);
    // Each session (a stored one at load, or a sign-in) starts the tab's event stream and
    // token refresh; they stop when the epoch moves on (sign-out, or another sign-in).
    Effect::new(move |_| {
        let epoch = ctx.epoch.get();
        if ctx.session.with_untracked(Option::is_some) {
            run_event_stream(ctx, epoch);
            keep_token_fresh(ctx, epoch);
        }
    });
    follow_other_tabs(ctx);
    // How far each room was read, remembered whenever it changes (for unread counts after
    // a reload).
    let read_markers = Memo::new(move |_| ctx.chat.with(|c| (c.me.clone(), c.read_markers())));
    Effect::new(move |_| {
        read_markers.with(|(me, markers)| {
            if !me.is_empty() {
                remember_read(me, markers);
            }
        });
    });
    view! {
        <Show when=move || ctx.session.with(Option::is_some) fallback=|| view! { <auth::AuthScreen/> }>
            // A fresh shell for each session: dialogs and drafts of the previous one go.
            {move || {
                ctx.epoch.track();
                view! { <shell::Shell/> }
            }}
        </Show>
    }
}
