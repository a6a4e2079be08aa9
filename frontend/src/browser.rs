//! Small helpers over the browser's own events.

use leptos::prelude::*;

/// Completes at the window's next `name` event (`online`, `offline`). The listener goes
/// when the future completes or is dropped.
pub(crate) async fn window_event(name: &'static str) {
    let (fired, wait) = futures::channel::oneshot::channel::<()>();
    let fired = std::cell::Cell::new(Some(fired));
    let listener = window_event_listener_untyped(name, move |_| {
        if let Some(fired) = fired.take() {
            let _ = fired.send(());
        }
    });
    let _listening = RemoveOnDrop(Some(listener));
    let _ = wait.await;
}

/// Removes a window event listener when dropped.
struct RemoveOnDrop(Option<WindowListenerHandle>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(listener) = self.0.take() {
            listener.remove();
        }
    }
}
