//! Components. Every control has a label, and `data-testid`s mark what browser tests use.

#![allow(
    unreachable_pub,
    reason = "#[component] emits `pub` items for its props"
)]

mod auth;
mod conversation;
mod people;
mod shell;

use leptos::prelude::*;

use crate::context::{Ctx, keep_token_fresh, run_event_stream, tick_clock};

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
    view! {
        <Show when=move || ctx.session.with(Option::is_some) fallback=|| view! { <auth::AuthScreen/> }>
            <shell::Shell/>
        </Show>
    }
}
