//! Two people chat through the web client, each in their own headless Chromium: Alice on a
//! desktop-sized window, Bob at phone width (375 px).

use std::time::Duration;

use natter_e2e::{Browser, Driver, Server, WAIT};
use tokio::time::Instant;

use crate::{
    ENTER, PASSWORD, SHIFT, assert_contiguous, count_messages, create_room, join, native_user,
    register, say, settled_message,
};

#[tokio::test]
async fn two_people_chat_in_the_browser() -> anyhow::Result<()> {
    // A long heartbeat interval: a stream that lingers after sign-out would show (see the end).
    let mut server =
        Server::start_with(|c| c.heartbeat_interval = Duration::from_secs(120)).await?;
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
    let code = create_room(&alice, "Lobby", "").await?;
    assert_eq!(code.len(), 12, "{code}");
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
    let first = "[data-testid=message][data-seq='1']";
    let sender = bob
        .find(&format!("{first} [data-testid=message-sender]"))
        .await?;
    assert_eq!(sender.text().await?, "Alice");
    // The username beside the display name (which anyone could choose alike).
    let username = bob
        .find(&format!("{first} [data-testid=message-sender-username]"))
        .await?;
    assert_eq!(username.text().await?, "@alice");
    let time = bob
        .find(&format!("{first} [data-testid=message-time]"))
        .await?
        .text()
        .await?;
    assert!(
        time.len() >= 5 && time.as_bytes()[2] == b':',
        "a local time such as 09:41 AM: {time:?}"
    );
    bob.fill("[data-testid=composer-input]", "Hi Ali").await?;
    alice
        .text_contains("typing-indicator", "Bob is typing")
        .await?;
    // On a touch screen Enter adds a line and the Send button sends.
    bob.find("[data-testid=composer-input]")
        .await?
        .send_keys(&format!("ce{ENTER}:)"))
        .await?;
    bob.click("[data-testid=composer-send]").await?;
    let reply = alice.text_contains("message", "Hi Alice").await?;
    assert!(reply.contains("Hi Alice\n:)"), "{reply:?}");
    alice
        .find("[data-testid=member-item][data-username=bob][data-online=true]")
        .await?;
    bob.find("[data-testid=message][data-own=true]").await?;
    // The phone layout shows the member list on demand.
    bob.click("[data-testid=members-toggle]").await?;
    bob.find("[data-testid=member-item][data-username=alice][data-online=true]")
        .await?;
    bob.click("[data-testid=members-toggle]").await?;

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

    // Carol, on the native client, fills the Lobby while neither looks at it: seqs 3..=72.
    let mut carol = native_user(&server.url, "carol").await?;
    let lobby_id = join(&mut carol, &code).await?;
    for i in 1..=70 {
        say(&mut carol, &lobby_id, &format!("filler {i}")).await?;
    }
    bob.click("[data-testid=toggle-sidebar]").await?;
    bob.text_contains("unread-badge", "70").await?;
    // The browser remembers how far Bob had read: after a reload, still 70 unread.
    bob.client.refresh().await?;
    bob.find("[data-testid=connection-status][data-state=connected]")
        .await?;
    bob.text_contains("unread-badge", "70").await?;

    // After a reload Alice is still signed in; the newest page loads, older ones on demand.
    alice.client.refresh().await?;
    alice
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    alice
        .click("[data-testid=room-item][data-room-name=Lobby]")
        .await?;
    alice.find("[data-testid=message][data-seq='72']").await?;
    assert!(
        alice
            .all("[data-testid=message][data-seq='1']")
            .await?
            .is_empty(),
        "only the newest page at first"
    );
    // Scrolling to the top loads older pages.
    let scroll_up = "document.querySelector('[data-testid=message-list]').scrollTop = 0";
    alice.client.execute(scroll_up, vec![]).await?;
    alice.find("[data-testid=message][data-seq='22']").await?;
    alice.client.execute(scroll_up, vec![]).await?;
    alice.text_contains("message", "Hello Bob").await?;
    alice.find("[data-testid=day-separator]").await?;

    // The composer: nothing to send when empty (neither the button nor Enter), Shift+Enter
    // adds a line, a counter near the limit.
    assert!(
        !alice
            .find("[data-testid=composer-send]")
            .await?
            .is_enabled()
            .await?
    );
    alice
        .fill("[data-testid=composer-input]", &format!("  {ENTER}"))
        .await?;
    assert!(
        alice
            .all("[data-testid=message][data-pending=true]")
            .await?
            .is_empty(),
        "blank input is not sent"
    );
    alice
        .fill(
            "[data-testid=composer-input]",
            &format!("two{SHIFT}{ENTER}{SHIFT}lines{ENTER}"),
        )
        .await?;
    let two_lines = alice.text_contains("message", "lines").await?;
    assert!(two_lines.contains("two\nlines"), "{two_lines:?}");
    let long_draft = "const box = document.querySelector('[data-testid=composer-input]'); \
        box.value = 'x'.repeat(3700); box.dispatchEvent(new Event('input', { bubbles: true }));";
    alice.client.execute(long_draft, vec![]).await?;
    alice.text_contains("composer-counter", "3700/4000").await?;
    alice.fill("[data-testid=composer-input]", "").await?;

    // An outage: the indicator says so and a send fails visibly. Once the server is back the
    // stream resumes from its cursors, Carol's message (sent before Alice's client is back)
    // arrives once, and the failed send goes again by itself (same client_id) and lands once.
    server.stop().await?;
    alice
        .find("[data-testid=connection-status][data-state=reconnecting]")
        .await?;
    alice
        .fill(
            "[data-testid=composer-input]",
            &format!("sent during the outage{ENTER}"),
        )
        .await?;
    alice.find("[data-testid=retry-send]").await?;
    server.start_again().await?;
    say(&mut carol, &lobby_id, "after the blip").await?;
    settled_message(&alice, "sent during the outage").await?;
    alice.text_contains("message", "after the blip").await?;
    alice
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    assert_eq!(count_messages(&alice, "sent during the outage").await?, 1);
    let seqs = assert_contiguous(&alice).await?;
    assert_eq!(
        (seqs.first(), seqs.last()),
        (Some(&1), Some(&75)),
        "all 75, in order"
    );
    assert!(
        alice.all("[data-testid=notice]").await?.is_empty(),
        "a failed send offers its retry, with no notice on top"
    );

    // Bob leaves the Lobby; Alice deletes a room of hers after confirming.
    bob.click("[data-testid=room-item][data-room-name=Lobby]")
        .await?;
    bob.click("[data-testid=leave-room]").await?;
    bob.gone("[data-testid=room-item][data-room-name=Lobby]")
        .await?;
    create_room(&alice, "Scratch", "").await?;
    alice.click("[data-testid=dialog-done]").await?;
    alice.text_contains("conversation-title", "Scratch").await?;
    // Changing one's mind keeps the room; confirming deletes it.
    alice.click("[data-testid=delete-room]").await?;
    alice.client.dismiss_alert().await?;
    alice.text_contains("conversation-title", "Scratch").await?;
    alice.click("[data-testid=delete-room]").await?;
    alice.client.accept_alert().await?;
    alice
        .gone("[data-testid=room-item][data-room-name=Scratch]")
        .await?;

    alice
        .click("[data-testid=room-item][data-room-name=Lobby]")
        .await?;
    alice.screenshot("browser-alice-desktop").await?;
    bob.click("[data-testid=toggle-sidebar]").await?;
    bob.click("[data-testid=room-item][data-room-name=Alice]")
        .await?;
    bob.screenshot("browser-bob-phone").await?;
    bob.click("[data-testid=sign-out]").await?;
    bob.find("[data-testid=auth-form]").await?;
    // Signing out closes Bob's stream at once: Alice sees him go offline.
    alice
        .find("[data-testid=room-item][data-room-name=Bob] [data-testid=presence-dot][data-online=false]")
        .await?;
    alice.client.close().await?;
    bob.client.close().await?;
    Ok(())
}

/// The token stored in a browser's localStorage.
async fn stored_token(browser: &Browser) -> anyhow::Result<String> {
    let session = browser
        .client
        .execute("return localStorage.getItem('natter.session')", vec![])
        .await?;
    let session: serde_json::Value = serde_json::from_str(session.as_str().unwrap_or("{}"))?;
    Ok(session["token"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn sessions_outlive_their_tokens_and_tabs_share_them() -> anyhow::Result<()> {
    // 12 s tokens, refreshed a quarter of their life (3 s) before expiry.
    let ttl = Duration::from_secs(12);
    let server = Server::start_with(|c| {
        c.token_ttl = ttl;
        // The test plays 30 people from this one address: past its registration limit.
        c.rate_limit_exempt =
            vec![natter_server::config::parse_net("127.0.0.1").expect("an address")];
    })
    .await?;
    let driver = Driver::start().await?;
    let dana = driver.desktop().await?;
    register(&dana, &server.url, "dana", "Dana").await?;
    let signed_in = Instant::now();
    let first_tab = dana.client.window().await?;

    // A second tab of the same browser is signed in already.
    let second_tab = dana.client.new_window(true).await?.handle;
    dana.client.switch_to_window(second_tab.clone()).await?;
    dana.client.goto(&server.url).await?;
    dana.find("[data-testid=connection-status][data-state=connected]")
        .await?;

    // Past the first token's expiry, after two refreshes, the session lives on.
    let mut tokens = vec![stored_token(&dana).await?];
    let deadline = signed_in + ttl + WAIT;
    while tokens.len() < 3 || signed_in.elapsed() < ttl + Duration::from_secs(1) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "tokens not refreshed: {tokens:?}"
        );
        let token = stored_token(&dana).await?;
        if tokens.last() != Some(&token) {
            tokens.push(token);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Calls work, and both tabs' streams live on: a message sent by someone else arrives
    // live in each.
    let code = create_room(&dana, "Fresh", "").await?;
    dana.click("[data-testid=dialog-done]").await?;
    let mut erin = native_user(&server.url, "erin").await?;
    let room_id = join(&mut erin, &code).await?;
    say(&mut erin, &room_id, "still live").await?;
    dana.text_contains("message", "still live").await?;
    dana.client.switch_to_window(first_tab.clone()).await?;
    dana.click("[data-testid=room-item][data-room-name=Fresh]")
        .await?;
    dana.text_contains("message", "still live").await?;
    dana.find("[data-testid=connection-status][data-state=connected]")
        .await?;

    // Signing out in one tab signs out the other.
    dana.client.switch_to_window(second_tab.clone()).await?;
    dana.click("[data-testid=sign-out]").await?;
    dana.client.switch_to_window(first_tab.clone()).await?;
    dana.find("[data-testid=auth-form]").await?;
    // ... and signing in again in this one brings the other back too.
    dana.fill("[data-testid=auth-username]", "dana").await?;
    dana.fill("[data-testid=auth-password]", PASSWORD).await?;
    dana.click("[data-testid=auth-submit]").await?;
    dana.find("[data-testid=connection-status][data-state=connected]")
        .await?;
    dana.client.switch_to_window(second_tab).await?;
    dana.find("[data-testid=connection-status][data-state=connected]")
        .await?;

    // The directory pages by 25.
    for i in 0..30 {
        native_user(&server.url, &format!("user{i:02}")).await?;
    }
    dana.click("[data-testid=people-open]").await?;
    dana.find("[data-testid=people-item][data-username=user22]")
        .await?;
    assert_eq!(dana.all("[data-testid=people-item]").await?.len(), 25);
    dana.click("[data-testid=people-more]").await?;
    dana.find("[data-testid=people-item][data-username=user29]")
        .await?;
    assert_eq!(dana.all("[data-testid=people-item]").await?.len(), 32);
    dana.fill("[data-testid=people-search]", "user0").await?;
    dana.find("[data-testid=people-item][data-username=user09]")
        .await?;
    dana.gone("[data-testid=people-item][data-username=user10]")
        .await?;
    assert_eq!(dana.all("[data-testid=people-item]").await?.len(), 10);
    dana.screenshot("sessions-dana-people").await?;
    Ok(())
}
