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
    // Each sign-in starts the tab's event stream and token refresh; both stop on sign-out.
    Effect::new(move |previous: Option<Option<String>>| {
        let user = ctx.session.with(|s| s.as_ref().map(|s| s.user_id.clone()));
        let changed_user = previous.as_ref().is_none_or(|p| *p != user);
        if user.is_some() && changed_user {
            run_event_stream(ctx);
            keep_token_fresh(ctx);
        }
        user
    });
    view! {
        <Show when=move || ctx.session.with(Option::is_some) fallback=|| view! { <auth::AuthScreen/> }>
            <shell::Shell/>
        </Show>
    }
}
