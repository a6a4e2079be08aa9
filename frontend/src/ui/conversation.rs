//! A conversation: history (older pages load when scrolling up), live messages with day
//! separators, members with presence, who is typing, and the composer.

use leptos::{html, prelude::*, task::spawn_local};
use natter_proto::v1 as pb;
use wasm_bindgen::JsValue;

use super::widgets::CopyButton;
use crate::{
    api,
    context::{Ctx, new_client_id},
    state::{MESSAGE_LIMIT, Pending, RoomState, Row, counter_visible},
};

fn local_day(ms: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    String::from(date.to_locale_date_string("default", &JsValue::UNDEFINED))
}

fn local_time(ms: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"hour".into(), &"2-digit".into());
    let _ = js_sys::Reflect::set(&options, &"minute".into(), &"2-digit".into());
    String::from(date.to_locale_time_string_with_options("default", &options))
}

#[component]
pub(crate) fn Conversation(room_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let id = StoredValue::new(room_id);
    let room = move || {
        ctx.chat
            .with(|c| c.rooms.get(&id.get_value()).map(|r| r.room.clone()))
    };
    let is_owner = move || {
        let me = ctx.chat.with(|c| c.me.clone());
        room().is_some_and(|r| r.owner_id == me && r.kind == pb::RoomKind::Group as i32)
    };
    let title = move || {
        room()
            .map(|r| {
                r.peer
                    .map_or(format!("# {}", r.name), |p| format!("@{}", p.display_name))
            })
            .unwrap_or_default()
    };
    let code = move || room().map(|r| r.code).filter(|c| !c.is_empty());

    // On a phone the member list is hidden until asked for.
    let members_open = RwSignal::new(false);
    // While a leave or delete is on its way, neither can be asked for again.
    let busy = RwSignal::new(false);
    let leave = move |_| {
        let room_id = id.get_value();
        let request = pb::LeaveRoomRequest {
            room_id: room_id.clone(),
        };
        ctx.call_once(
            busy,
            |token| async move { api::chat().leave_room(api::authed(&token, request)).await },
            move |result| ctx.room_dropped(room_id, result),
        );
    };
    let delete = move |_| {
        let name = room().map(|r| r.name).unwrap_or_default();
        let question = format!("Delete \"{name}\" and all its messages for everyone?");
        if busy.get_untracked() || !window().confirm_with_message(&question).unwrap_or(false) {
            return;
        }
        let room_id = id.get_value();
        let request = pb::DeleteRoomRequest {
            room_id: room_id.clone(),
        };
        ctx.call_once(
            busy,
            |token| async move { api::chat().delete_room(api::authed(&token, request)).await },
            move |result| ctx.room_dropped(room_id, result),
        );
    };

    view! {
        <section class="conversation" aria-label=title>
            <header class="conversation-header">
                <h2 data-testid="conversation-title">{title}</h2>
                {move || code().map(|code| view! {
                    <span class="code-chip">"Code " <code data-testid="conversation-code">{code.clone()}</code> <CopyButton text=code/></span>
                })}
                <span class="spacer"></span>
                <button class="only-narrow" data-testid="members-toggle" aria-expanded=move || members_open.get().to_string()
                    on:click=move |_| members_open.update(|open| *open = !*open)>"Members"</button>
                <button data-testid="leave-room" on:click=leave disabled=move || busy.get()>"Leave"</button>
                <Show when=is_owner>
                    <button class="danger" data-testid="delete-room" on:click=delete disabled=move || busy.get()>"Delete"</button>
                </Show>
            </header>
            <div class="conversation-body" class:members-open=move || members_open.get()>
                <Messages room_id=id.get_value()/>
                <Members room_id=id.get_value()/>
            </div>
            <TypingIndicator room_id=id.get_value()/>
            <Composer room_id=id.get_value()/>
        </section>
    }
}

#[component]
fn Messages(room_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let list = NodeRef::<html::Div>::new();
    let id = StoredValue::new(room_id);
    let rows = room_rows(ctx, id);
    let has_more = move || {
        ctx.chat
            .with(|c| c.rooms.get(&id.get_value()).is_some_and(|r| r.has_more))
    };
    let load_older = older_history_loader(ctx, id);
    let pinned = keep_scroll_position(list, rows);
    let on_scroll = move |_| {
        let Some(el) = list.get_untracked() else {
            return;
        };
        pinned.set_value(el.scroll_height() - el.scroll_top() - el.client_height() < 40);
        if el.scroll_top() < 10 && has_more() {
            load_older();
        }
    };
    view! {
        <div class="messages" node_ref=list on:scroll=on_scroll data-testid="message-list" role="log" aria-live="polite" tabindex="0">
            <Show when=has_more>
                <button class="link load-older" data-testid="load-older" on:click=move |_| load_older()>"Load older messages"</button>
            </Show>
            <For each=move || rows.get() key=|row| match row {
                Row::Day(day) => format!("day:{day}"),
                Row::Message { message, username, .. } => {
                    format!("seq:{}:{}", message.seq, username.is_some())
                }
                Row::Pending(pending) => format!("pending:{}:{}", pending.client_id, pending.failed),
            } let(row)>
                {match row {
                    Row::Day(day) => view! { <div class="day" data-testid="day-separator" role="separator">{day}</div> }.into_any(),
                    Row::Message { message, own, username } => {
                        view! { <MessageRow message own username/> }.into_any()
                    }
                    Row::Pending(pending) => view! { <PendingRow pending room_id=id/> }.into_any(),
                }}
            </For>
        </div>
    }
}

/// The rows of a room's list, built again only when this room's list changed, not for every
/// event (typing, presence, other rooms) that touches the chat state.
fn room_rows(ctx: Ctx, id: StoredValue<String>) -> Memo<Vec<Row>> {
    let version = Memo::new(move |_| {
        ctx.chat
            .with(|c| c.rooms.get(&id.get_value()).map(RoomState::list_version))
    });
    Memo::new(move |_| {
        // Read, not just tracked: a memo computes (and follows the chat) only when read.
        version.with(|_| ());
        ctx.chat.with_untracked(|c| {
            c.rooms
                .get(&id.get_value())
                .map(|room| room.rows(&c.me, local_day))
                .unwrap_or_default()
        })
    })
}

/// Loads the page of history before the oldest one loaded: one request at a time, however
/// many scroll events arrive. With nothing loaded yet (the newest page failed, say), the
/// newest page is asked for.
fn older_history_loader(ctx: Ctx, id: StoredValue<String>) -> impl Fn() + Copy {
    let loading = StoredValue::new(false);
    move || {
        let before = ctx.chat.with_untracked(|c| {
            c.rooms
                .get(&id.get_value())
                .map(RoomState::oldest_loaded)
                .unwrap_or(1)
        });
        if before != 1 && !loading.get_value() {
            loading.set_value(true);
            ctx.load_history(id.get_value(), before, move || {
                let _ = loading.try_update_value(|busy| *busy = false);
            });
        }
    }
}

/// Keeps the view pinned to the newest message while the reader is at the bottom (the
/// returned flag, which scrolling updates); when older messages are prepended, keeps what
/// the reader was looking at in place (a new message at the bottom moves nothing).
fn keep_scroll_position(list: NodeRef<html::Div>, rows: Memo<Vec<Row>>) -> StoredValue<bool> {
    let pinned = StoredValue::new(true);
    let height = StoredValue::new(0);
    let first_row = StoredValue::new(None::<u64>);
    Effect::new(move |_| {
        let oldest = rows.with(|rows| {
            rows.iter().find_map(|row| match row {
                Row::Message { message, .. } => Some(message.seq),
                _ => None,
            })
        });
        if let Some(el) = list.get() {
            let grown = el.scroll_height() - height.get_value();
            let prepended = oldest
                .zip(first_row.get_value())
                .is_some_and(|(oldest, first)| oldest < first);
            if pinned.get_value() {
                el.set_scroll_top(el.scroll_height());
            } else if prepended {
                el.set_scroll_top(el.scroll_top() + grown);
            }
            height.set_value(el.scroll_height());
            first_row.set_value(oldest);
        }
    });
    pinned
}

/// A stored message: sender (display name isolated, so its direction cannot spill over,
/// and the username beside it once known), local time, text (always as text).
#[component]
fn MessageRow(message: pb::Message, own: bool, username: Option<String>) -> impl IntoView {
    view! {
        <article class="message" class:own=own data-testid="message" data-seq=message.seq.to_string() data-own=own.to_string()>
            <header>
                <span class="sender" data-testid="message-sender"><bdi>{message.sender_name.clone()}</bdi></span>
                {username.map(|name| view! { " " <span class="muted" data-testid="message-sender-username">"@"{name}</span> })}
                " " <time data-testid="message-time">{local_time(message.sent_at)}</time>
            </header>
            <p class="text">{message.text.clone()}</p>
        </article>
    }
}

/// A message not acknowledged yet; a failed one offers retry (same `client_id`) and discard.
#[component]
fn PendingRow(pending: Pending, room_id: StoredValue<String>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let Pending {
        client_id,
        text,
        failed,
    } = pending;
    let retry = (client_id.clone(), text.clone());
    view! {
        <article class="message own pending" class:failed=failed data-testid="message" data-pending="true">
            <header><span class="sender">"You"</span> <time>{if failed { "not sent" } else { "sending…" }}</time></header>
            <p class="text">{text}</p>
            {failed.then(|| {
                let discard = client_id.clone();
                view! {
                    <button data-testid="retry-send" on:click=move |_| ctx.send(room_id.get_value(), retry.0.clone(), retry.1.clone())>"Retry"</button>
                    <button data-testid="discard-send" on:click=move |_| ctx.chat.update(|c| c.discard(&room_id.get_value(), &discard))>"Discard"</button>
                }
            })}
        </article>
    }
}

#[component]
fn Members(room_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let members = move || {
        ctx.chat.with(|c| {
            c.rooms
                .get(&room_id)
                .map(|r| r.members.values().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
    };
    view! {
        <aside class="members" aria-label="Members">
            <h3>"Members"</h3>
            <ul data-testid="member-list">
                <For each=members key=|u| (u.id.clone(), u.online) let(user)>
                    <li data-testid="member-item" data-username=user.username.clone() data-online=user.online.to_string()>
                        <span class="presence" class:online=user.online>
                            <span class="visually-hidden">{if user.online { "online" } else { "offline" }}</span>
                        </span>
                        <bdi>{user.display_name.clone()}</bdi>
                        " " <span class="muted" data-testid="member-username">"@"{user.username.clone()}</span>
                    </li>
                </For>
            </ul>
        </aside>
    }
}

#[component]
fn TypingIndicator(room_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let names = move || {
        let now = ctx.now.get();
        ctx.chat.with(|c| {
            c.rooms
                .get(&room_id)
                .map(|r| r.typing_names(now))
                .unwrap_or_default()
        })
    };
    view! {
        <p class="typing" data-testid="typing-indicator" aria-live="polite">
            {move || match names().as_slice() {
                [] => String::new(),
                [one] => format!("{one} is typing…"),
                many => format!("{} are typing…", many.join(", ")),
            }}
        </p>
    }
}

#[component]
fn Composer(room_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let text = RwSignal::new(String::new());
    let id = StoredValue::new(room_id);
    let last_typing = StoredValue::new(0.0);
    let chars = move || text.with(|t| t.trim().chars().count());
    let sendable = move || (1..=MESSAGE_LIMIT).contains(&chars());
    let send = move || {
        if !sendable() {
            return;
        }
        let body = text.get_untracked().trim().to_owned();
        let client_id = new_client_id();
        ctx.chat
            .update(|c| c.add_pending(&id.get_value(), &client_id, &body));
        ctx.send(id.get_value(), client_id, body);
        text.set(String::new());
        last_typing.set_value(0.0);
    };
    let on_input = move |ev| {
        text.set(event_target_value(&ev));
        let now = js_sys::Date::now();
        if now - last_typing.get_value() > 3000.0 && !text.with_untracked(String::is_empty) {
            last_typing.set_value(now);
            let Some(token) = ctx.token() else { return };
            let room_id = id.get_value();
            spawn_local(async move {
                let _ = api::chat()
                    .set_typing(api::authed(
                        &token,
                        pb::SetTypingRequest {
                            room_id,
                            typing: true,
                        },
                    ))
                    .await;
            });
        }
    };
    // On touch screens Enter adds a line (their keyboards have no Shift+Enter); Send sends.
    let touch = window()
        .match_media("(pointer: coarse)")
        .ok()
        .flatten()
        .is_some_and(|query| query.matches());
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() && !touch {
            ev.prevent_default();
            send();
        }
    };
    view! {
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
            <label for="composer-input" class="visually-hidden">"Message"</label>
            <textarea id="composer-input" data-testid="composer-input" rows="1" placeholder="Message (Enter sends, Shift+Enter adds a line)"
                prop:value=move || text.get() on:input=on_input on:keydown=on_keydown></textarea>
            <Show when=move || counter_visible(chars())>
                <span class="counter" class:over=move || { chars() > MESSAGE_LIMIT } data-testid="composer-counter">
                    {move || format!("{}/{MESSAGE_LIMIT}", chars())}
                </span>
            </Show>
            <button type="submit" class="primary" data-testid="composer-send" disabled=move || !sendable()>"Send"</button>
        </form>
    }
}
