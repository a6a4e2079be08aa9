//! The connection under trouble: a stream that goes silent without an error, a browser that
//! loses its network, a send whose answer is lost. Each time the client notices, recovers,
//! and resumes with its cursors: nothing missing, nothing twice.

use std::time::Duration;

use natter_e2e::{Browser, Driver, Server, StallingProxy};
use serde_json::json;

use crate::{
    ENTER, assert_contiguous, count_messages, count_stored, create_room, join, native_user,
    register, say, settled_message,
};

/// Cuts the browser's network off, or gives it back (as the browser sees it: requests fail
/// at once and `navigator.onLine` follows).
async fn network(browser: &Browser, online: bool) -> anyhow::Result<()> {
    let conditions = json!({
        "offline": !online, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1,
    });
    browser
        .cdp("Network.emulateNetworkConditions", conditions)
        .await?;
    Ok(())
}

const CONNECTED: &str = "[data-testid=connection-status][data-state=connected]";

#[tokio::test]
async fn silence_a_lost_network_and_a_lost_answer_are_survived() -> anyhow::Result<()> {
    // Heartbeats every second: a stream silent for 2.5 s is dead.
    let server = Server::start_with(|c| c.heartbeat_interval = Duration::from_secs(1)).await?;
    let proxy = StallingProxy::start(server.addr()).await?;
    let driver = Driver::start().await?;
    let frank = driver.desktop().await?;
    register(&frank, &proxy.url, "frank", "Frank").await?;
    let code = create_room(&frank, "Porch", "").await?;
    frank.click("[data-testid=dialog-done]").await?;
    let mut gina = native_user(&server.url, "gina").await?;
    let porch = join(&mut gina, &code).await?;
    say(&mut gina, &porch, "before the silence").await?;
    frank.text_contains("message", "before the silence").await?;

    // Every connection the browser has goes silent, with no error and no close. What Gina
    // sends now can only arrive on a new stream, opened once the old one is seen as dead.
    proxy.stall_open_connections();
    say(&mut gina, &porch, "while the line is dead").await?;
    frank
        .text_contains("message", "while the line is dead")
        .await?;
    frank.find(CONNECTED).await?;
    // Sending works again too (however long a dead pooled connection takes to give up).
    frank
        .fill(
            "[data-testid=composer-input]",
            &format!("back again{ENTER}"),
        )
        .await?;
    settled_message(&frank, "back again").await?;

    // The network goes away: the indicator says so at once. When it returns, the client
    // reconnects and what was sent meanwhile arrives.
    network(&frank, false).await?;
    frank
        .find("[data-testid=connection-status][data-state=offline]")
        .await?;
    say(&mut gina, &porch, "while you were offline").await?;
    network(&frank, true).await?;
    frank
        .text_contains("message", "while you were offline")
        .await?;
    frank.find(CONNECTED).await?;

    // A send reaches the server but its answer does not come back: the message shows as
    // pending at once, then (after the call's deadline) as failed. The retry, with the same
    // client id, reaches the server too, which answers with the message stored already (a
    // retry the server counts): it exists once, on the server and, when answers flow
    // again, on screen.
    proxy.hold_answers(true);
    frank
        .fill("[data-testid=composer-input]", &format!("said once{ENTER}"))
        .await?;
    frank
        .find("[data-testid=message][data-pending=true]")
        .await?;
    frank.click("[data-testid=retry-send]").await?;
    assert_eq!(count_stored(&mut gina, &porch, "said once").await?, 1);
    proxy.hold_answers(false);
    settled_message(&frank, "said once").await?;
    frank.find(CONNECTED).await?;
    assert_eq!(count_stored(&mut gina, &porch, "said once").await?, 1);
    assert_eq!(count_messages(&frank, "said once").await?, 1);
    assert!(server.metric("natter_send_retries_total").await? >= 1);

    let seqs = assert_contiguous(&frank).await?;
    assert_eq!(seqs, [1, 2, 3, 4, 5], "every message once, in order");
    frank.screenshot("resilience-frank").await?;
    Ok(())
}
