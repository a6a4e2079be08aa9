//! `natter`: chat from the command line over native gRPC.

mod commands;

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use natter_cli::{
    client::{self, ChatClient},
    session::Session,
};
use natter_proto::v1 as pb;

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
        Command::Users { query } => commands::users(&mut chat, query.unwrap_or_default()).await,
        Command::Rooms => commands::rooms(&mut chat).await,
        Command::CreateRoom { name, password } => {
            commands::create_room(&mut chat, name, password).await
        }
        Command::Join { code, password } => commands::join(&mut chat, code, password).await,
        Command::Dm { user } => commands::dm(&mut chat, &user).await,
        Command::Send { room, text } => commands::send(&mut chat, &room, text).await,
        Command::History { room, limit } => commands::history(&mut chat, &room, limit).await,
        Command::Tail => commands::tail(chat).await,
        Command::Chat { room } => commands::chat(chat, &room).await,
        Command::Register { .. } | Command::Login { .. } => {
            bail!("register and login run without a session")
        }
    }
}
