//! `natter`: chat from the command line over native gRPC.

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use natter_cli::{
    client::{self, ChatClient},
    follow::Follower,
    format::{RoomNames, message_line},
    session::Session,
};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::io::AsyncBufReadExt;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Chat on a Natter server from the command line.
#[derive(Debug, Parser)]
#[command(name = "natter", version, about)]
struct Cli {
    /// Server URL; defaults to the one you logged in to, else http://127.0.0.1:8080.
    #[arg(long, global = true, env = "NATTER_SERVER")]
    server: Option<String>,
    /// PEM certificate to trust for an https:// server instead of the system's authorities
    /// (a self-signed deployment, such as scripts/fleet --tls).
    #[arg(long, global = true, env = "NATTER_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account and sign in (password from NATTER_PASSWORD or a prompt).
    Register {
        username: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Sign in and save the token (password from NATTER_PASSWORD or a prompt).
    Login { username: String },
    /// List people, optionally matching QUERY.
    Users { query: Option<String> },
    /// List your rooms and direct conversations.
    Rooms,
    /// Create a room and print its join code.
    CreateRoom {
        name: String,
        /// Password others need to join.
        #[arg(long, default_value = "")]
        password: String,
    },
    /// Join a room by its code.
    Join {
        code: String,
        #[arg(long, default_value = "")]
        password: String,
    },
    /// Open (or create) the direct conversation with USER.
    Dm { user: String },
    /// Send TEXT to ROOM (id, code, name, or @user for a direct conversation).
    Send { room: String, text: String },
    /// Print the latest messages of ROOM.
    History {
        room: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print events of all your rooms as they happen; reconnects and resumes by itself.
    Tail,
    /// Chat in ROOM: lines from stdin are sent, the room's events are printed.
    Chat { room: String },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli).await {
        match error.downcast_ref::<tonic::Status>() {
            Some(status) => eprintln!("error: {} ({:?})", status.message(), status.code()),
            None => eprintln!("error: {error:#}"),
        }
        std::process::exit(1);
    }
}

fn password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("NATTER_PASSWORD") {
        return Ok(password);
    }
    eprint!("password: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let saved = Session::load();
    let server = cli
        .server
        .clone()
        .or_else(|| saved.as_ref().ok().map(|s| s.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let channel = match &cli.ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            client::channel_trusting(&server, &pem)?
        }
        None => client::channel(&server)?,
    };
    match cli.command {
        Command::Register {
            username,
            display_name,
        } => {
            let request = pb::RegisterRequest {
                username,
                password: password()?,
                display_name,
            };
            let response = client::auth_client(channel)
                .register(request)
                .await?
                .into_inner();
            save(&server, response)
        }
        Command::Login { username } => {
            let request = pb::LoginRequest {
                username,
                password: password()?,
            };
            let response = client::auth_client(channel)
                .login(request)
                .await?
                .into_inner();
            save(&server, response)
        }
        command => {
            let session = saved?;
            if cli.server.as_ref().is_some_and(|s| *s != session.server) {
                bail!(
                    "you are logged in to {}, not {server}; log in again",
                    session.server
                );
            }
            let chat = client::chat_client(channel, &session.token)?;
            signed_in(chat, command).await
        }
    }
}

fn save(server: &str, response: pb::AuthResponse) -> anyhow::Result<()> {
    let user = response.user.context("the server sent no user")?;
    let session = Session {
        server: server.to_owned(),
        token: response.access_token,
        expires_at: response.expires_at,
        user_id: user.id,
        username: user.username.clone(),
    };
    session.save()?;
    println!("signed in as {} ({})", user.username, user.display_name);
    Ok(())
}

async fn signed_in(mut chat: ChatClient, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Users { query } => {
            let mut page_token = String::new();
            loop {
                let request = pb::ListUsersRequest {
                    query: query.clone().unwrap_or_default(),
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
        Command::Rooms => {
            for room in chat
                .list_rooms(pb::ListRoomsRequest {})
                .await?
                .into_inner()
                .rooms
            {
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
        Command::CreateRoom { name, password } => {
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
        Command::Join { code, password } => {
            let room = chat
                .join_room(pb::JoinRoomRequest { code, password })
                .await?
                .into_inner();
            println!("joined [{}] (id {})", room.name, room.id);
            Ok(())
        }
        Command::Dm { user } => {
            let peer = client::resolve_user(&mut chat, &user).await?;
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
        Command::Send { room, text } => {
            let room = client::resolve_room(&mut chat, &room).await?;
            let client_id = uuid::Uuid::now_v7().to_string();
            let message = chat
                .send_message(pb::SendMessageRequest {
                    room_id: room.id,
                    text,
                    client_id,
                })
                .await?
                .into_inner();
            println!("sent #{}", message.seq);
            Ok(())
        }
        Command::History { room, limit } => {
            let room = client::resolve_room(&mut chat, &room).await?;
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
        Command::Tail => {
            let mut events = Follower::new(chat);
            let mut names = RoomNames::default();
            loop {
                if let Some(line) = names.line(&events.next().await?) {
                    println!("{line}");
                }
            }
        }
        Command::Chat { room } => chat_in_room(chat, &room).await,
        Command::Register { .. } | Command::Login { .. } => {
            bail!("register and login run without a session")
        }
    }
}

/// Interactive chat over the bidirectional `Chat` stream. At end of input, waits for every
/// line to be acknowledged, then exits.
async fn chat_in_room(mut chat: ChatClient, room: &str) -> anyhow::Result<()> {
    let room = client::resolve_room(&mut chat, room).await?;
    let (frames, outgoing) = tokio::sync::mpsc::channel(64);
    let subscribe = pb::SubscribeRequest {
        resume: vec![pb::RoomCursor {
            room_id: room.id.clone(),
            after_seq: room.last_seq,
        }],
    };
    frames
        .send(pb::ClientFrame {
            frame: Some(pb::client_frame::Frame::Subscribe(subscribe)),
            frame_id: String::new(),
        })
        .await?;
    let mut events = chat.chat(ReceiverStream::new(outgoing)).await?.into_inner();
    eprintln!(
        "* chatting in [{}]; type a line and press Enter, Ctrl-D to quit",
        room.name
    );

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    let mut pending = 0usize;
    let mut frames = Some(frames);
    let mut names = RoomNames::default();
    loop {
        if !input_open && pending == 0 {
            return Ok(());
        }
        tokio::select! {
            line = lines.next_line(), if input_open => match line? {
                Some(text) if text.trim().is_empty() => {}
                Some(text) => {
                    let send = pb::SendMessageRequest { room_id: room.id.clone(), text, client_id: uuid::Uuid::now_v7().to_string() };
                    let frame = pb::ClientFrame { frame: Some(pb::client_frame::Frame::Send(send)), frame_id: String::new() };
                    frames.as_ref().context("stream closed")?.send(frame).await.context("the server closed the stream")?;
                    pending += 1;
                }
                None => {
                    input_open = false;
                    frames = None;
                }
            },
            event = events.next() => {
                let Some(event) = event.transpose()?.and_then(|e| e.event) else {
                    bail!("the server closed the stream");
                };
                match &event {
                    Ev::SendAck(_) | Ev::FrameError(_) => pending = pending.saturating_sub(1),
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
}
