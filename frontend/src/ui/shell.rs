//! The signed-in layout: header, sidebar of rooms and conversations, dialogs to create and
//! join rooms, and the main pane.

use leptos::prelude::*;
use natter_proto::v1 as pb;

use super::{conversation::Conversation, people::People, widgets::CopyButton};
use crate::{
    api,
    context::{Ctx, Pane},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialog {
    None,
    Create,
    Join,
}

#[component]
pub(crate) fn Shell() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let dialog = RwSignal::new(Dialog::None);
    let sidebar_open = ctx.sidebar_open;
    let me = move || {
        ctx.session.with(|s| {
            s.as_ref()
                .map(|s| s.display_name.clone())
                .unwrap_or_default()
        })
    };
    let connection = move || ctx.connection.get().label();
    // A notice goes away by itself after a while (it may cover the composer on a phone).
    Effect::new(move |_| {
        if let Some(shown) = ctx.notice.get() {
            set_timeout(
                move || {
                    if ctx.notice.get_untracked().as_ref() == Some(&shown) {
                        ctx.notice.set(None);
                    }
                },
                std::time::Duration::from_secs(8),
            );
        }
    });

    view! {
        <div class="shell" class:sidebar-open=move || sidebar_open.get()>
            <header class="topbar">
                <button class="icon only-narrow" aria-label="Show rooms" data-testid="toggle-sidebar" on:click=move |_| sidebar_open.update(|o| *o = !*o)>"☰"</button>
                <strong class="brand">"Natter"</strong>
                <span class="connection" data-testid="connection-status" data-state=connection role="status">
                    <span class="dot"></span>{connection}
                </span>
                <span class="me" data-testid="me">{me}</span>
                <button data-testid="sign-out" on:click=move |_| ctx.log_out()>"Sign out"</button>
            </header>
            <nav class="sidebar" aria-label="Rooms">
                <div class="sidebar-actions">
                    <button data-testid="create-room-open" on:click=move |_| dialog.set(Dialog::Create)>"New room"</button>
                    <button data-testid="join-room-open" on:click=move |_| dialog.set(Dialog::Join)>"Join"</button>
                    <button data-testid="people-open" on:click=move |_| { ctx.show(Pane::People); sidebar_open.set(false); }>"People"</button>
                </div>
                <RoomList/>
            </nav>
            <main class="pane">
                {move || match ctx.pane.get() {
                    Pane::Welcome => view! { <p class="welcome muted">"Pick a conversation, create a room, or find people."</p> }.into_any(),
                    Pane::Room(id) => view! { <Conversation room_id=id/> }.into_any(),
                    Pane::People => view! { <People/> }.into_any(),
                }}
            </main>
            <Show when=move || dialog.get() == Dialog::Create>
                <CreateRoomDialog close=move || dialog.set(Dialog::None)/>
            </Show>
            <Show when=move || dialog.get() == Dialog::Join>
                <JoinRoomDialog close=move || dialog.set(Dialog::None)/>
            </Show>
            <Show when=move || ctx.notice.with(Option::is_some)>
                <div class="notice" role="alert" data-testid="notice">
                    {move || ctx.notice.get()}
                    <button class="icon" aria-label="Dismiss" on:click=move |_| ctx.notice.set(None)>"×"</button>
                </div>
            </Show>
        </div>
    }
}

#[component]
fn RoomList() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let ids = move || {
        ctx.chat.with(|c| {
            c.sidebar()
                .iter()
                .map(|r| r.room.id.clone())
                .collect::<Vec<_>>()
        })
    };
    view! {
        <ul class="room-list" data-testid="room-list">
            // Keyed by id: a row's button survives unread and presence changes (keeps focus).
            <For each=ids key=|id| id.clone() let(id)>
                <RoomRow id=id/>
            </For>
        </ul>
    }
}

#[component]
fn RoomRow(id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let row = {
        let id = id.clone();
        Memo::new(move |_| {
            ctx.chat.with(|c| {
                c.rooms.get(&id).map(|r| {
                    let peer = r.room.peer.as_ref();
                    let name = peer.map_or(r.room.name.clone(), |p| p.display_name.clone());
                    (name, peer.map(|p| p.online), r.unread())
                })
            })
        })
    };
    let selected = {
        let id = id.clone();
        Memo::new(move |_| ctx.pane.with(|p| *p == Pane::Room(id.clone())))
    };
    let name = move || {
        row.with(|r| {
            r.as_ref()
                .map(|(name, _, _)| name.clone())
                .unwrap_or_default()
        })
    };
    let online = move || row.with(|r| r.as_ref().and_then(|(_, online, _)| *online));
    let unread = move || row.with(|r| r.as_ref().map_or(0, |(_, _, unread)| *unread));
    view! {
        <li>
            <button class="room-item" class:selected=move || selected.get() data-testid="room-item" data-room-name=name
                aria-current=move || if selected.get() { "page" } else { "false" }
                on:click=move |_| ctx.open_room(id.clone())>
                {move || online().map(|on| view! {
                    <span class="presence" class:online=on data-testid="presence-dot" data-online=on.to_string()>
                        <span class="visually-hidden">{if on { "online" } else { "offline" }}</span>
                    </span>
                })}
                <span class="room-name">{move || if online().is_some() { "@" } else { "# " }}<bdi>{name}</bdi></span>
                {move || (unread() > 0).then(|| view! {
                    <span class="badge" data-testid="unread-badge">{unread()}<span class="visually-hidden">" unread"</span></span>
                })}
            </button>
        </li>
    }
}

/// A node ref whose element gets the keyboard focus once it is in the page: a dialog opens
/// with its first field focused (`autofocus` does not apply to elements inserted later).
fn focus_on_open() -> NodeRef<leptos::html::Input> {
    let field = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = field.get() {
            let _ = input.focus();
        }
    });
    field
}

#[component]
fn CreateRoomDialog(close: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let name = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let created = RwSignal::new(None::<pb::Room>);
    let busy = RwSignal::new(false);
    let first_field = focus_on_open();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = pb::CreateRoomRequest {
            name: name.get_untracked(),
            password: password.get_untracked(),
        };
        ctx.call_once(
            busy,
            |token| async move { api::chat().create_room(api::authed(&token, request)).await },
            move |result| match result {
                Ok(room) => {
                    let room = room.into_inner();
                    ctx.enter_room(room.clone());
                    let _ = created.try_set(Some(room));
                }
                Err(status) => {
                    let _ = error.try_set(Some(api::describe(&status)));
                }
            },
        );
    };
    view! {
        <div class="dialog-backdrop" on:keydown=move |ev| if ev.key() == "Escape" { close() }>
            <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="create-title">
                <h2 id="create-title">"New room"</h2>
                {move || match created.get() {
                    Some(room) => view! {
                        <p>"Share this code to invite people:"</p>
                        <p class="code"><code data-testid="room-code">{room.code.clone()}</code> <CopyButton text=room.code.clone()/></p>
                        <button class="primary" data-testid="dialog-done" on:click=move |_| close()>"Done"</button>
                    }.into_any(),
                    None => view! {
                        <form on:submit=submit>
                            <label for="create-name">"Name"</label>
                            <input id="create-name" data-testid="create-room-name" required maxlength="64" node_ref=first_field
                                prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
                            <label for="create-password">"Password (optional)"</label>
                            <input id="create-password" data-testid="create-room-password" type="password"
                                prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev))/>
                            <p class="form-error" role="alert">{move || error.get()}</p>
                            <div class="row">
                                <button type="button" on:click=move |_| close()>"Cancel"</button>
                                <button type="submit" class="primary" data-testid="create-room-submit" disabled=move || busy.get()>"Create"</button>
                            </div>
                        </form>
                    }.into_any(),
                }}
            </div>
        </div>
    }
}

#[component]
fn JoinRoomDialog(close: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let first_field = focus_on_open();
    let code = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = pb::JoinRoomRequest {
            code: code.get_untracked(),
            password: password.get_untracked(),
        };
        ctx.call_once(
            busy,
            |token| async move { api::chat().join_room(api::authed(&token, request)).await },
            move |result| match result {
                Ok(room) => {
                    ctx.enter_room(room.into_inner());
                    close();
                }
                Err(status) => {
                    let _ = error.try_set(Some(api::describe(&status)));
                }
            },
        );
    };
    view! {
        <div class="dialog-backdrop" on:keydown=move |ev| if ev.key() == "Escape" { close() }>
            <form class="dialog" role="dialog" aria-modal="true" aria-labelledby="join-title" on:submit=submit>
                <h2 id="join-title">"Join a room"</h2>
                <label for="join-code">"Join code"</label>
                <input id="join-code" data-testid="join-code" required autocapitalize="characters" node_ref=first_field
                    prop:value=move || code.get() on:input=move |ev| code.set(event_target_value(&ev))/>
                <label for="join-password">"Password (if the room has one)"</label>
                <input id="join-password" data-testid="join-password" type="password"
                    prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev))/>
                <p class="form-error" role="alert" data-testid="join-error">{move || error.get()}</p>
                <div class="row">
                    <button type="button" on:click=move |_| close()>"Cancel"</button>
                    <button type="submit" class="primary" data-testid="join-submit" disabled=move || busy.get()>"Join"</button>
                </div>
            </form>
        </div>
    }
}
