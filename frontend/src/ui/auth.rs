//! Sign in and register, with server errors shown next to the field they concern.

use leptos::{prelude::*, task::spawn_local};
use natter_proto::v1 as pb;

use crate::{api, context::Ctx, state::field_error, storage::Session};

#[component]
pub(crate) fn AuthScreen() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let registering = RwSignal::new(false);
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let display_name = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    // (field, message): field is "" for errors that concern the whole form.
    let error = RwSignal::new(None::<(String, String)>);
    let error_for = move |field: &'static str| {
        move || {
            error.with(|e| {
                e.as_ref()
                    .filter(|(f, _)| f == field)
                    .map(|(_, m)| m.clone())
            })
        }
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        error.set(None);
        let (name, secret, shown) = (
            username.get_untracked(),
            password.get_untracked(),
            display_name.get_untracked(),
        );
        let register = registering.get_untracked();
        spawn_local(async move {
            let result = if register {
                api::auth()
                    .register(pb::RegisterRequest {
                        username: name,
                        password: secret,
                        display_name: shown,
                    })
                    .await
            } else {
                api::auth()
                    .login(pb::LoginRequest {
                        username: name,
                        password: secret,
                    })
                    .await
            };
            busy.set(false);
            match result {
                Ok(response) => ctx.sign_in(Session::from_response(response.into_inner())),
                Err(status) => {
                    let message = api::describe(&status);
                    let placed = match field_error(&message) {
                        Some((field, reason)) => (field.to_owned(), reason.to_owned()),
                        None if status.code() == tonic::Code::AlreadyExists => {
                            ("username".into(), message.clone())
                        }
                        None => (String::new(), message.clone()),
                    };
                    error.set(Some(placed));
                }
            }
        });
    };

    view! {
        <main class="auth">
            <form class="auth-card" on:submit=submit data-testid="auth-form">
                <h1>"Natter"</h1>
                <p class="muted">{move || if registering.get() { "Create your account" } else { "Sign in to chat" }}</p>
                <label for="auth-username">"Username"</label>
                <input id="auth-username" data-testid="auth-username" autocomplete="username" required
                    prop:value=move || username.get()
                    on:input=move |ev| username.set(event_target_value(&ev))
                    aria-invalid=move || error_for("username")().is_some().to_string()/>
                <p class="field-error" data-testid="auth-error-username">{error_for("username")}</p>
                <Show when=move || registering.get()>
                    <label for="auth-display-name">"Display name (optional)"</label>
                    <input id="auth-display-name" data-testid="auth-display-name" autocomplete="nickname"
                        prop:value=move || display_name.get()
                        on:input=move |ev| display_name.set(event_target_value(&ev))/>
                    <p class="field-error" data-testid="auth-error-display_name">{error_for("display_name")}</p>
                </Show>
                <label for="auth-password">"Password"</label>
                <input id="auth-password" data-testid="auth-password" type="password" required
                    autocomplete=move || if registering.get() { "new-password" } else { "current-password" }
                    prop:value=move || password.get()
                    on:input=move |ev| password.set(event_target_value(&ev))
                    aria-invalid=move || error_for("password")().is_some().to_string()/>
                <p class="field-error" data-testid="auth-error-password">{error_for("password")}</p>
                <p class="form-error" role="alert" data-testid="auth-error">{error_for("")}</p>
                <button type="submit" class="primary" data-testid="auth-submit" disabled=move || busy.get()>
                    {move || if registering.get() { "Create account" } else { "Sign in" }}
                </button>
                <button type="button" class="link" data-testid="auth-switch"
                    on:click=move |_| { registering.update(|r| *r = !*r); error.set(None); }>
                    {move || if registering.get() { "I already have an account" } else { "Create an account" }}
                </button>
            </form>
        </main>
    }
}
