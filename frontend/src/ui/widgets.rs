//! Small components more than one screen uses.

use leptos::{prelude::*, task::spawn_local};

/// Copies text to the clipboard, and says whether that worked: a browser may refuse (no
/// permission), and on plain-HTTP pages other than localhost it has no clipboard API at
/// all. On failure the text is still there to select.
#[component]
pub(crate) fn CopyButton(text: String) -> impl IntoView {
    let copied = RwSignal::new(None::<bool>);
    let copy = move |_| {
        let navigator = window().navigator();
        let clipboard = js_sys::Reflect::get(&navigator, &"clipboard".into())
            .ok()
            .filter(|clipboard| !clipboard.is_undefined());
        let written = clipboard.map(|_| navigator.clipboard().write_text(&text));
        spawn_local(async move {
            let ok = match written {
                Some(promise) => wasm_bindgen_futures::JsFuture::from(promise).await.is_ok(),
                None => false,
            };
            let _ = copied.try_set(Some(ok));
            set_timeout(
                move || {
                    let _ = copied.try_set(None);
                },
                std::time::Duration::from_secs(2),
            );
        });
    };
    view! {
        <button type="button" data-testid="copy-code" on:click=copy>
            {move || match copied.get() {
                None => "Copy",
                Some(true) => "Copied",
                Some(false) => "Copy failed: select the code",
            }}
        </button>
    }
}
