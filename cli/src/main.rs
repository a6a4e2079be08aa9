//! `natter`: chat from the command line over native gRPC.

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use natter_cli::{
    client::{self, ChatClient},
    follow::Follower,
    format::{RoomNames, message_line},
    send::send_until_acknowledged,
    session::Session,
};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::io::AsyncBufReadExt;

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
            let request = pb::SendMessageRequest {
                room_id: room.id,
                text,
                client_id: String::new(),
            };
            let message = send_until_acknowledged(&mut chat, request, SEND_PATIENCE).await?;
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

/// How long a line is retried while the server is away before `chat` gives up on it.
const SEND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Interactive chat: lines from stdin are sent in order, each retried with its `client_id`
/// until acknowledged; the room's events are printed from a stream that reconnects and
/// resumes by itself (at once when the server drains). At end of input, waits for every line
/// to be acknowledged, then exits.
async fn chat_in_room(mut chat: ChatClient, room: &str) -> anyhow::Result<()> {
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
