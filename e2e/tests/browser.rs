//! Two people chat through the web client, each in their own headless Chromium: Alice on a
//! desktop-sized window, Bob at phone width (375 px).

use natter_e2e::{Browser, Driver, Server};

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

async fn register(
    browser: &Browser,
    url: &str,
    username: &str,
    display_name: &str,
) -> anyhow::Result<()> {
    browser.client.goto(url).await?;
    browser.click("[data-testid=auth-switch]").await?;
    browser
        .fill("[data-testid=auth-username]", username)
        .await?;
    browser
        .fill("[data-testid=auth-display-name]", display_name)
        .await?;
    browser
        .fill("[data-testid=auth-password]", "correct-horse")
        .await?;
    browser.click("[data-testid=auth-submit]").await?;
    browser
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    Ok(())
}

#[tokio::test]
async fn two_people_chat_in_the_browser() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let driver = Driver::start().await?;
    let alice = driver.desktop().await?;
    let bob = driver.phone().await?;

    // A rejected registration shows the server's reason next to the field.
    alice.client.goto(&server.url).await?;
    alice.click("[data-testid=auth-switch]").await?;
    alice.fill("[data-testid=auth-username]", "alice").await?;
    alice
        .fill("[data-testid=auth-display-name]", "Alice")
        .await?;
    alice.fill("[data-testid=auth-password]", "short").await?;
    alice.click("[data-testid=auth-submit]").await?;
    alice
        .text_contains("auth-error-password", "at least 8 characters")
        .await?;
    alice
        .fill("[data-testid=auth-password]", "correct-horse")
        .await?;
    alice.click("[data-testid=auth-submit]").await?;
    alice
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    register(&bob, &server.url, "bob", "Bob").await?;
    let width = bob
        .client
        .execute("return window.innerWidth", vec![])
        .await?;
    assert_eq!(width, serde_json::json!(375), "Bob's screen is phone-sized");

    // Alice creates a room; Bob joins with its code.
    alice.click("[data-testid=create-room-open]").await?;
    alice
        .fill("[data-testid=create-room-name]", "Lobby")
        .await?;
    alice.click("[data-testid=create-room-submit]").await?;
    let code = alice.find("[data-testid=room-code]").await?.text().await?;
    assert_eq!(code.len(), 8, "{code}");
    alice.click("[data-testid=dialog-done]").await?;
    bob.click("[data-testid=join-room-open]").await?;
    bob.fill("[data-testid=join-code]", &code.to_lowercase())
        .await?;
    bob.click("[data-testid=join-submit]").await?;
    bob.text_contains("conversation-title", "Lobby").await?;

    // Messages both ways (Enter sends), typing and presence.
    alice
        .fill(
            "[data-testid=composer-input]",
            &format!("Hello Bob <b>not bold</b>{ENTER}"),
        )
        .await?;
    let received = bob.text_contains("message", "Hello Bob").await?;
    assert!(
        received.contains("<b>not bold</b>"),
        "text stays text: {received}"
    );
    bob.fill("[data-testid=composer-input]", "Hi Ali").await?;
    alice
        .text_contains("typing-indicator", "Bob is typing")
        .await?;
    bob.find("[data-testid=composer-input]")
        .await?
        .send_keys(&format!("ce{ENTER}"))
        .await?;
    alice.text_contains("message", "Hi Alice").await?;
    alice
        .find("[data-testid=member-item][data-username=bob][data-online=true]")
        .await?;
    bob.find("[data-testid=message][data-own=true]").await?;

    // Alice finds Bob in the directory and opens a direct conversation.
    alice.click("[data-testid=people-open]").await?;
    alice.fill("[data-testid=people-search]", "bob").await?;
    alice
        .click("[data-testid=people-item][data-username=bob] [data-testid=open-direct]")
        .await?;
    alice.text_contains("conversation-title", "@Bob").await?;
    alice
        .fill("[data-testid=composer-input]", &format!("psst{ENTER}"))
        .await?;
    bob.click("[data-testid=toggle-sidebar]").await?;
    let direct = "[data-testid=room-item][data-room-name=Alice]";
    bob.find(&format!("{direct} [data-testid=unread-badge]"))
        .await?;
    bob.find(&format!(
        "{direct} [data-testid=presence-dot][data-online=true]"
    ))
    .await?;
    bob.click(direct).await?;
    bob.text_contains("message", "psst").await?;
    alice
        .fill("[data-testid=composer-input]", "one more thing")
        .await?;
    bob.text_contains("typing-indicator", "Alice is typing")
        .await?;

    // After a reload Alice is still signed in, and the history is there.
    alice.client.refresh().await?;
    alice
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    alice
        .click("[data-testid=room-item][data-room-name=Lobby]")
        .await?;
    alice.text_contains("message", "Hi Alice").await?;
    alice.text_contains("message", "Hello Bob").await?;
    alice.find("[data-testid=day-separator]").await?;

    alice.screenshot("browser-alice-desktop").await?;
    bob.screenshot("browser-bob-phone").await?;
    alice.client.close().await?;
    bob.client.close().await?;
    Ok(())
}
