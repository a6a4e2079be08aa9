//! The people directory: search, paging, and direct conversations.

use leptos::prelude::*;
use natter_proto::v1 as pb;

use crate::{api, context::Ctx};

#[component]
pub(crate) fn People() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let query = RwSignal::new(String::new());
    let users = RwSignal::new(Vec::<pb::User>::new());
    let next = RwSignal::new(String::new());
    // Each search bumps the generation, so a slow answer to an older query is dropped.
    let generation = StoredValue::new(0u32);
    let fetch = move |append: bool| {
        let Some(token) = ctx.token() else { return };
        let page_token = if append {
            next.get_untracked()
        } else {
            String::new()
        };
        generation.update_value(|g| *g += 1);
        let mine = generation.get_value();
        let request = pb::ListUsersRequest {
            query: query.get_untracked(),
            page_size: 25,
            page_token,
        };
        let listing = async move { api::chat().list_users(api::authed(&token, request)).await };
        ctx.call(listing, move |result| match result {
            // The pane may be gone by now (try_: a disposed value must not panic).
            Ok(page) if generation.try_get_value() == Some(mine) => {
                let page = page.into_inner();
                let _ = users.try_update(|u| {
                    if !append {
                        u.clear();
                    }
                    u.extend(page.users);
                });
                let _ = next.try_set(page.next_page_token);
            }
            Ok(_) => {}
            Err(status) => ctx.fail(&status),
        });
    };
    fetch(false);
    let me = move || {
        ctx.session
            .with(|s| s.as_ref().map(|s| s.user_id.clone()).unwrap_or_default())
    };
    let message = move |user_id: String| {
        let Some(token) = ctx.token() else { return };
        let opening = async move {
            api::chat()
                .open_direct(api::authed(&token, pb::OpenDirectRequest { user_id }))
                .await
        };
        ctx.call(opening, move |result| match result {
            Ok(room) => ctx.enter_room(room.into_inner()),
            Err(status) => ctx.fail(&status),
        });
    };
    view! {
        <section class="people" aria-labelledby="people-title">
            <h2 id="people-title">"People"</h2>
            <label for="people-search">"Search by name"</label>
            <input id="people-search" data-testid="people-search" type="search" placeholder="Name or username"
                prop:value=move || query.get()
                on:input=move |ev| { query.set(event_target_value(&ev)); fetch(false); }/>
            <ul class="people-list">
                <For each=move || users.get() key=|u| (u.id.clone(), u.online) let(user)>
                    {
                        let id = user.id.clone();
                        let is_me = me() == user.id;
                        view! {
                            <li data-testid="people-item" data-username=user.username.clone()>
                                <span class="presence" class:online=user.online>
                                    <span class="visually-hidden">{if user.online { "online" } else { "offline" }}</span>
                                </span>
                                <span class="person"><bdi>{user.display_name.clone()}</bdi> <span class="muted">"@"{user.username.clone()}</span></span>
                                {(!is_me).then(|| view! {
                                    <button data-testid="open-direct" on:click=move |_| message(id.clone())>"Message"</button>
                                })}
                            </li>
                        }
                    }
                </For>
            </ul>
            <Show when=move || !next.with(String::is_empty)>
                <button data-testid="people-more" on:click=move |_| fetch(true)>"Load more"</button>
            </Show>
        </section>
    }
}
