//! The web client in real headless Chromium against real servers: one test binary, a module
//! per theme.

mod chat;
mod fleet;
mod interface;
mod resilience;

use natter_cli::client::ChatClient;
use natter_e2e::Browser;
use natter_proto::v1 as pb;

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";
/// WebDriver's Shift key: held until pressed again (or the end of the keys).
const SHIFT: &str = "\u{E008}";
/// WebDriver's Tab key.
const TAB: &str = "\u{E004}";
/// WebDriver's Escape key.
const ESCAPE: &str = "\u{E00C}";

/// Everyone's password in these tests.
const PASSWORD: &str = "correct-horse";

/// A user on the native gRPC client.
async fn native_user(url: &str, username: &str) -> anyhow::Result<ChatClient> {
    natter_e2e::traffic::sign_up(url, username).await
}

/// Joins a room by its code as a native user; returns the room's id.
async fn join(user: &mut ChatClient, code: &str) -> anyhow::Result<String> {
    let room = user
        .join_room(pb::JoinRoomRequest {
            code: code.into(),
            password: String::new(),
        })
        .await?
        .into_inner();
    Ok(room.id)
}

/// Sends a message as a native user.
async fn say(user: &mut ChatClient, room_id: &str, text: &str) -> anyhow::Result<pb::Message> {
    Ok(user
        .send_message(pb::SendMessageRequest {
            room_id: room_id.into(),
            text: text.into(),
            client_id: String::new(),
        })
        .await?
        .into_inner())
}

/// Registers through the web client's form and waits for the event stream.
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
        .fill("[data-testid=auth-password]", PASSWORD)
        .await?;
    browser.click("[data-testid=auth-submit]").await?;
    browser
        .find("[data-testid=connection-status][data-state=connected]")
        .await?;
    Ok(())
}

/// Creates a room through the dialog and returns its join code (the dialog stays open).
async fn create_room(browser: &Browser, name: &str, password: &str) -> anyhow::Result<String> {
    browser.click("[data-testid=create-room-open]").await?;
    browser.fill("[data-testid=create-room-name]", name).await?;
    browser
        .fill("[data-testid=create-room-password]", password)
        .await?;
    browser.click("[data-testid=create-room-submit]").await?;
    Ok(browser
        .find("[data-testid=room-code]")
        .await?
        .text()
        .await?)
}

/// Waits for a message the server stored (not a pending one) whose text contains `needle`.
async fn settled_message(browser: &Browser, needle: &str) -> anyhow::Result<String> {
    let xpath = format!(r#"//*[@data-testid="message" and @data-seq and contains(., "{needle}")]"#);
    Ok(browser.find_xpath(&xpath).await?.text().await?)
}

/// The seqs of the stored messages on screen, which must run without a gap and in order;
/// returns them.
async fn assert_contiguous(browser: &Browser) -> anyhow::Result<Vec<u64>> {
    let seqs: Vec<u64> = browser
        .all_attributes("[data-testid=message]", "data-seq")
        .await?
        .iter()
        .map(|seq| seq.parse())
        .collect::<Result<_, _>>()?;
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "missing or misplaced messages: {seqs:?}"
    );
    Ok(seqs)
}

/// How many messages on screen (stored or pending) contain `needle`.
async fn count_messages(browser: &Browser, needle: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    for message in browser.all("[data-testid=message]").await? {
        if message.text().await?.contains(needle) {
            count += 1;
        }
    }
    Ok(count)
}

/// How many messages of a room's whole history, as the server keeps it, contain `needle`.
async fn count_stored(user: &mut ChatClient, room_id: &str, needle: &str) -> anyhow::Result<usize> {
    let history = user
        .get_history(pb::GetHistoryRequest {
            room_id: room_id.into(),
            before_seq: 0,
            limit: 1000,
        })
        .await?
        .into_inner();
    Ok(history
        .messages
        .iter()
        .filter(|m| m.text.contains(needle))
        .count())
}
