//! What each signed-in command does: one function per command.

use anyhow::Context;
use natter_cli::{
    client::{self, ChatClient},
    follow::Follower,
    format::{RoomNames, message_line},
    send::send_until_acknowledged,
};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::io::AsyncBufReadExt;

/// `natter users [QUERY]`: the directory, page by page.
pub(crate) async fn users(chat: &mut ChatClient, query: String) -> anyhow::Result<()> {
    let mut page_token = String::new();
    loop {
        let request = pb::ListUsersRequest {
            query: query.clone(),
            page_size: 200,
            page_token,
        };
        let page = chat.list_users(request).await?.into_inner();
        for user in page.users {
            let dot = if user.online { "●" } else { "○" };
            println!("{dot} {:<32} {}", user.username, user.display_name);
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// `natter rooms`: the caller's rooms and direct conversations.
pub(crate) async fn rooms(chat: &mut ChatClient) -> anyhow::Result<()> {
    let rooms = chat
        .list_rooms(pb::ListRoomsRequest {})
        .await?
        .into_inner()
        .rooms;
    for room in rooms {
        match &room.peer {
            Some(peer) => println!(
                "@{:<31} {:<10} {:>6} msgs  {}",
                peer.username, "(direct)", room.last_seq, room.id
            ),
            None => println!(
                "{:<32} {:<10} {:>6} msgs  {}",
                room.name, room.code, room.last_seq, room.id
            ),
        }
    }
    Ok(())
}

/// `natter create-room NAME`: prints the join code.
pub(crate) async fn create_room(
    chat: &mut ChatClient,
    name: String,
    password: String,
) -> anyhow::Result<()> {
    let room = chat
        .create_room(pb::CreateRoomRequest { name, password })
        .await?
        .into_inner();
    println!(
        "created [{}] with join code {} (id {})",
        room.name, room.code, room.id
    );
    Ok(())
}

/// `natter join CODE`.
pub(crate) async fn join(
    chat: &mut ChatClient,
    code: String,
    password: String,
) -> anyhow::Result<()> {
    let room = chat
        .join_room(pb::JoinRoomRequest { code, password })
        .await?
        .into_inner();
    println!("joined [{}] (id {})", room.name, room.id);
    Ok(())
}

/// `natter dm USER`: opens (or finds) the direct conversation.
pub(crate) async fn dm(chat: &mut ChatClient, user: &str) -> anyhow::Result<()> {
    let peer = client::resolve_user(chat, user).await?;
    let room = chat
        .open_direct(pb::OpenDirectRequest { user_id: peer.id })
        .await?
        .into_inner();
    println!(
        "direct conversation with @{} (id {})",
        peer.username, room.id
    );
    Ok(())
}

/// `natter send ROOM TEXT`: retried until acknowledged.
pub(crate) async fn send(chat: &mut ChatClient, room: &str, text: String) -> anyhow::Result<()> {
    let room = client::resolve_room(chat, room).await?;
    let request = pb::SendMessageRequest {
        room_id: room.id,
        text,
        client_id: String::new(),
    };
    let message = send_until_acknowledged(chat, request, SEND_PATIENCE).await?;
    println!("sent #{}", message.seq);
    Ok(())
}

/// `natter history ROOM`: the newest messages.
pub(crate) async fn history(chat: &mut ChatClient, room: &str, limit: u32) -> anyhow::Result<()> {
    let room = client::resolve_room(chat, room).await?;
    let label = room
        .peer
        .as_ref()
        .map_or(room.name.clone(), |p| format!("@{}", p.username));
    let request = pb::GetHistoryRequest {
        room_id: room.id,
        before_seq: 0,
        limit,
    };
    for message in chat.get_history(request).await?.into_inner().messages {
        println!("{}", message_line(&label, &message));
    }
    Ok(())
}

/// `natter tail`: every room's events, reconnecting and resuming by itself.
pub(crate) async fn tail(chat: ChatClient) -> anyhow::Result<()> {
    let mut events = Follower::new(chat);
    let mut names = RoomNames::default();
    loop {
        if let Some(line) = names.line(&events.next().await?) {
            println!("{line}");
        }
    }
}

/// How long a line is retried while the server is away before `chat` gives up on it.
const SEND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Interactive chat: lines from stdin are sent in order, each retried with its `client_id`
/// until acknowledged; the room's events are printed from a stream that reconnects and
/// resumes by itself (at once when the server drains). At end of input, waits for every line
/// to be acknowledged, then exits.
pub(crate) async fn chat(mut chat: ChatClient, room: &str) -> anyhow::Result<()> {
    let room = client::resolve_room(&mut chat, room).await?;
    let cursors = [(room.id.clone(), room.last_seq)].into_iter().collect();
    let mut events = Follower::resuming(chat.clone(), cursors);
    let (lines_out, lines_in) = tokio::sync::mpsc::channel::<String>(64);
    let (acks, mut acked) = tokio::sync::mpsc::channel(64);
    let sender = tokio::spawn(send_lines(chat, room.id.clone(), lines_in, acks));
    eprintln!(
        "* chatting in [{}]; type a line and press Enter, Ctrl-D to quit",
        room.name
    );

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut lines_out = Some(lines_out);
    let mut names = RoomNames::default();
    loop {
        tokio::select! {
            line = lines.next_line(), if lines_out.is_some() => match line? {
                Some(text) if text.trim().is_empty() => {}
                Some(text) => {
                    if let Some(out) = &lines_out {
                        out.send(text).await.context("the sender stopped")?;
                    }
                }
                None => lines_out = None,
            },
            ack = acked.recv() => match ack {
                Some(line) => println!("{line}"),
                // Input ended and every line was answered.
                None => break,
            },
            event = events.next() => {
                let event = event?;
                match &event {
                    Ev::Message(m) if m.room_id != room.id => continue,
                    Ev::Presence(p) if p.room_id != room.id => continue,
                    Ev::Typing(t) if t.room_id != room.id => continue,
                    _ => {}
                }
                if let Some(line) = names.line(&event) {
                    println!("{line}");
                }
            }
        }
    }
    sender.await?
}

/// Sends each line in order until acknowledged, reporting `* sent #seq` (or why a line was
/// refused) on `acks`.
async fn send_lines(
    mut chat: ChatClient,
    room_id: String,
    mut lines: tokio::sync::mpsc::Receiver<String>,
    acks: tokio::sync::mpsc::Sender<String>,
) -> anyhow::Result<()> {
    while let Some(text) = lines.recv().await {
        let request = pb::SendMessageRequest {
            room_id: room_id.clone(),
            text,
            client_id: String::new(),
        };
        let line = match send_until_acknowledged(&mut chat, request, SEND_PATIENCE).await {
            Ok(message) => format!("* sent #{}", message.seq),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(status).context("sign in again (natter login)");
            }
            Err(status) => format!("! not sent: {}", status.message()),
        };
        let _ = acks.send(line).await;
    }
    Ok(())
}
