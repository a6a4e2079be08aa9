//! A native gRPC client for Natter: connection, bearer token, and name resolution helpers.
//! The `natter` binary, the end-to-end tests and the benchmarks all use it.

use anyhow::{Context, bail};
use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// The interceptor for a token.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(
            format!("Bearer {token}")
                .parse()
                .context("the token is not valid ASCII")?,
        ))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The chat client with its token attached.
pub type ChatClient = ChatServiceClient<InterceptedService<Channel, Bearer>>;

/// A lazily connected channel to `server` (e.g. `http://127.0.0.1:8080`, or
/// `https://chat.example.org` checked against the system's trusted certificates).
pub fn channel(server: &str) -> anyhow::Result<Channel> {
    connect(server, None)
}

/// A channel to an `https://` server whose certificate is signed by `ca_pem` (a self-signed
/// deployment, say) instead of a certificate authority the system trusts.
pub fn channel_trusting(server: &str, ca_pem: &[u8]) -> anyhow::Result<Channel> {
    connect(server, Some(ca_pem))
}

fn connect(server: &str, ca_pem: Option<&[u8]>) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("'{server}' is not a valid server URL"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    if server.starts_with("https://") {
        let tls = match ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .context("setting up TLS for the server")?;
    } else if ca_pem.is_some() {
        bail!("a CA certificate is only used with an https:// server URL");
    }
    Ok(endpoint.connect_lazy())
}

/// The unauthenticated client.
pub fn auth_client(channel: Channel) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(channel)
}

/// The chat client for a token.
pub fn chat_client(channel: Channel, token: &str) -> anyhow::Result<ChatClient> {
    Ok(ChatServiceClient::with_interceptor(
        channel,
        Bearer::new(token)?,
    ))
}

/// Finds one of the caller's rooms by id, join code, name (case-insensitive) or
/// `@username` for a direct conversation.
pub async fn resolve_room(chat: &mut ChatClient, needle: &str) -> anyhow::Result<pb::Room> {
    let rooms = chat
        .list_rooms(pb::ListRoomsRequest {})
        .await?
        .into_inner()
        .rooms;
    let normalised_code: String = needle
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let matches: Vec<&pb::Room> = if let Some(username) = needle.strip_prefix('@') {
        rooms
            .iter()
            .filter(|r| {
                r.peer
                    .as_ref()
                    .is_some_and(|p| p.username.eq_ignore_ascii_case(username))
            })
            .collect()
    } else if let Some(room) = rooms
        .iter()
        .find(|r| r.id == needle || (!r.code.is_empty() && r.code == normalised_code))
    {
        vec![room]
    } else {
        rooms
            .iter()
            .filter(|r| r.name.eq_ignore_ascii_case(needle))
            .collect()
    };
    match matches.as_slice() {
        [room] => Ok((*room).clone()),
        [] => bail!("you have no room matching '{needle}' (try `natter rooms`)"),
        _ => bail!("'{needle}' matches several rooms; use the room id or code"),
    }
}

/// Finds a user by exact username through the directory.
pub async fn resolve_user(chat: &mut ChatClient, username: &str) -> anyhow::Result<pb::User> {
    let username = username.trim_start_matches('@').to_lowercase();
    let mut page_token = String::new();
    loop {
        let page = chat
            .list_users(pb::ListUsersRequest {
                query: username.clone(),
                page_size: 200,
                page_token,
            })
            .await?
            .into_inner();
        if let Some(user) = page.users.into_iter().find(|u| u.username == username) {
            return Ok(user);
        }
        if page.next_page_token.is_empty() {
            bail!("no user named '{username}'");
        }
        page_token = page.next_page_token;
    }
}
