//! What makes the client usable by everyone: keyboard use with a visible focus, labelled
//! controls, light and dark themes, long messages that wrap; and the smaller flows: a wrong
//! password, a room with a password, copying its join code.

use natter_e2e::{Browser, Driver, Server};
use serde_json::json;

use crate::{ENTER, ESCAPE, PASSWORD, TAB, create_room, native_user, register, settled_message};

/// Controls (inputs, buttons, text areas) on screen without an accessible name: no label,
/// no `aria-label`, no text.
async fn unlabelled_controls(browser: &Browser) -> anyhow::Result<Vec<String>> {
    let found = browser
        .eval(
            "[...document.querySelectorAll('input, textarea, select, button')]
                .filter(c => c.getClientRects().length > 0)
                .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')
                    && !c.getAttribute('aria-labelledby') && !c.textContent.trim())
                .map(c => c.outerHTML)",
        )
        .await?;
    Ok(serde_json::from_value(found)?)
}

/// The computed outline of the focused element, e.g. `solid 3px`.
async fn focus_outline(browser: &Browser) -> anyhow::Result<String> {
    let outline = browser
        .eval(
            "(s => s.outlineStyle + ' ' + s.outlineWidth)(getComputedStyle(document.activeElement))",
        )
        .await?;
    Ok(outline.as_str().unwrap_or_default().to_owned())
}

/// The page's background colour.
async fn background(browser: &Browser) -> anyhow::Result<String> {
    let colour = browser
        .eval("getComputedStyle(document.documentElement).backgroundColor")
        .await?;
    Ok(colour.as_str().unwrap_or_default().to_owned())
}

/// Whether anything in the message list sticks out sideways.
async fn overflows_sideways(browser: &Browser) -> anyhow::Result<bool> {
    let overflow = browser
        .eval(
            "(l => l.scrollWidth > l.clientWidth
                || [...l.querySelectorAll('[data-testid=message]')].some(m => m.scrollWidth > m.clientWidth))
              (document.querySelector('[data-testid=message-list]'))",
        )
        .await?;
    Ok(overflow.as_bool().unwrap_or(true))
}

#[tokio::test]
async fn keyboard_labels_themes_and_careful_details() -> anyhow::Result<()> {
    let server = Server::start().await?;
    native_user(&server.url, "hana").await?;
    let driver = Driver::start().await?;
    let hana = driver.desktop().await?;

    // Signing in with the keyboard alone, the focus always visible; a wrong password is
    // said on the form, not next to a field (which one was wrong is not given away).
    hana.client.goto(&server.url).await?;
    hana.find("[data-testid=auth-form]").await?;
    assert_eq!(unlabelled_controls(&hana).await?, Vec::<String>::new());
    hana.type_keys(TAB).await?;
    assert_eq!(hana.focused_test_id().await?, "auth-username");
    assert_eq!(focus_outline(&hana).await?, "solid 3px");
    hana.type_keys(&format!("hana{TAB}wrong-horse{ENTER}"))
        .await?;
    hana.text_contains("auth-error", "unknown username or wrong password")
        .await?;
    assert_eq!(hana.focused_test_id().await?, "auth-password");
    hana.fill("[data-testid=auth-password]", PASSWORD).await?;
    hana.type_keys(ENTER).await?;
    hana.find("[data-testid=connection-status][data-state=connected]")
        .await?;

    // A room with a password, created from the keyboard: the dialog opens with its first
    // field focused and Escape closes it.
    hana.find("[data-testid=create-room-open]")
        .await?
        .send_keys(ENTER)
        .await?;
    assert_eq!(hana.focused_test_id().await?, "create-room-name");
    assert_eq!(unlabelled_controls(&hana).await?, Vec::<String>::new());
    hana.type_keys(ESCAPE).await?;
    hana.gone("[data-testid=create-room-name]").await?;
    let code = create_room(&hana, "Study", "open sesame").await?;

    // Copying the join code puts it on the clipboard.
    hana.cdp(
        "Browser.grantPermissions",
        json!({ "origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"] }),
    )
    .await?;
    hana.click("[role=dialog] [data-testid=copy-code]").await?;
    hana.text_contains("copy-code", "Copied").await?;
    assert_eq!(
        hana.eval("navigator.clipboard.readText()").await?,
        json!(code)
    );
    hana.click("[data-testid=dialog-done]").await?;
    assert_eq!(unlabelled_controls(&hana).await?, Vec::<String>::new());

    // Ivan's system prefers dark: the client follows it.
    let ivan = driver.desktop().await?;
    ivan.cdp(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await?;
    register(&ivan, &server.url, "ivan", "Ivan").await?;
    assert_eq!(background(&ivan).await?, "rgb(21, 23, 28)");
    assert_eq!(background(&hana).await?, "rgb(255, 255, 255)");

    // Joining needs the room's password: a wrong one is refused on the form.
    ivan.click("[data-testid=join-room-open]").await?;
    ivan.fill("[data-testid=join-code]", &code).await?;
    ivan.fill("[data-testid=join-password]", "open barley")
        .await?;
    ivan.click("[data-testid=join-submit]").await?;
    ivan.text_contains("join-error", "wrong room password")
        .await?;
    ivan.fill("[data-testid=join-password]", "open sesame")
        .await?;
    ivan.click("[data-testid=join-submit]").await?;
    ivan.text_contains("conversation-title", "Study").await?;

    // A long unbroken message and a long link wrap inside their bubble.
    let long_word = "w".repeat(1500);
    let long_link = format!("https://example.com/{}", "path/".repeat(120));
    ivan.fill(
        "[data-testid=composer-input]",
        &format!("{long_word} {long_link}{ENTER}"),
    )
    .await?;
    settled_message(&ivan, &long_word[..100]).await?;
    hana.click("[data-testid=room-item][data-room-name=Study]")
        .await?;
    settled_message(&hana, &long_word[..100]).await?;
    assert!(!overflows_sideways(&ivan).await?);
    assert!(!overflows_sideways(&hana).await?);
    assert_eq!(unlabelled_controls(&hana).await?, Vec::<String>::new());
    hana.click("[data-testid=people-open]").await?;
    hana.find("[data-testid=people-item][data-username=ivan]")
        .await?;
    assert_eq!(unlabelled_controls(&hana).await?, Vec::<String>::new());

    // On a plain-HTTP address other than localhost the page is no secure context: the
    // browser offers neither a clipboard API nor crypto.randomUUID(). Sending still works,
    // and the copy button says it could not copy.
    let jun = driver.desktop_resolving("natter.test").await?;
    let plain_http = format!("http://natter.test:{}", server.addr().port());
    register(&jun, &plain_http, "jun", "Jun").await?;
    assert_eq!(jun.eval("window.isSecureContext").await?, json!(false));
    create_room(&jun, "Plain", "").await?;
    jun.click("[role=dialog] [data-testid=copy-code]").await?;
    jun.text_contains("copy-code", "Copy failed").await?;
    jun.click("[data-testid=dialog-done]").await?;
    jun.fill(
        "[data-testid=composer-input]",
        &format!("sent over plain HTTP{ENTER}"),
    )
    .await?;
    settled_message(&jun, "sent over plain HTTP").await?;

    ivan.screenshot("interface-ivan-dark").await?;
    Ok(())
}
