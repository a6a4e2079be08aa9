//! Two people chat through the web client, each in their own headless Chromium: Alice on a
//! desktop-sized window, Bob at phone width (375 px).

use natter_e2e::{Driver, Server};

use crate::{ENTER, SHIFT, assert_no_duplicates, create_room, join, native_user, register, say};

#[tokio::test]
async fn two_people_chat_in_the_browser() -> anyhow::Result<()> {
    // A long heartbeat interval: a stream that lingers after sign-out would show (see the end).
    let mut server =
        Server::start_with(|c| c.heartbeat_interval = std::time::Duration::from_secs(120)).await?;
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

    // The composer: nothing to send when empty, Shift+Enter adds a line, a counter near the limit.
    assert!(
        !alice
            .find("[data-testid=composer-send]")
            .await?
            .is_enabled()
            .await?
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

    // An outage: the indicator says so, a send fails visibly, and once the server is back the
    // retry (same client_id) lands once, the stream resumes from its cursors, and Carol's
    // message, sent before Alice's client is back, arrives once.
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
    alice.click("[data-testid=retry-send]").await?;
    alice
        .text_contains("message", "sent during the outage")
        .await?;
    alice.text_contains("message", "after the blip").await?;
    alice
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    let mut sent_once = 0;
    for message in alice.all("[data-testid=message]").await? {
        if message.text().await?.contains("sent during the outage") {
            sent_once += 1;
        }
    }
    assert_eq!(sent_once, 1, "the retried message exists once");
    let seqs = assert_no_duplicates(&alice).await?;
    assert!(seqs.contains(&75), "{seqs:?}");
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

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() -> anyhow::Result<()> {
    // A 65 s token is refreshed a minute before expiry, so 5 s after sign-in.
    let server = Server::start_with(|c| c.token_ttl = std::time::Duration::from_secs(65)).await?;
    let driver = Driver::start().await?;
    let dana = driver.desktop().await?;
    register(&dana, &server.url, "dana", "Dana").await?;
    let stored = || async {
        let session = dana
            .client
            .execute("return localStorage.getItem('natter.session')", vec![])
            .await?;
        let session: serde_json::Value = serde_json::from_str(session.as_str().unwrap_or("{}"))?;
        anyhow::Ok(session["token"].as_str().unwrap_or_default().to_owned())
    };
    let first = stored().await?;
    assert!(!first.is_empty());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while stored().await? == first {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the token was not refreshed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The new token works for calls, and the event stream lives on: a message sent by
    // someone else still arrives live.
    let code = create_room(&dana, "Fresh", "").await?;
    dana.click("[data-testid=dialog-done]").await?;
    let mut erin = native_user(&server.url, "erin").await?;
    let room_id = join(&mut erin, &code).await?;
    say(&mut erin, &room_id, "still live").await?;
    dana.text_contains("message", "still live").await?;
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
    Ok(())
}
