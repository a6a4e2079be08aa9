//! natter-web: Natter's browser client, a Leptos client-side-rendered app talking gRPC-Web
//! to the server that serves it. One `Subscribe` stream per tab carries every room's events;
//! everything else is a unary call.
//!
//! The state logic ([`state`]) is plain Rust and compiles (and is tested) natively; the UI
//! exists only for `wasm32`.

pub mod state;

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod context;
#[cfg(target_arch = "wasm32")]
mod events;
#[cfg(target_arch = "wasm32")]
mod session;
#[cfg(target_arch = "wasm32")]
mod storage;
#[cfg(target_arch = "wasm32")]
mod ui;

/// Entry point: mounts the app on `<body>`.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(ui::App);
}
