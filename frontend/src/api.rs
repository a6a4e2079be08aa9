//! gRPC-Web calls to the server that served this page (same origin: no CORS needed).

use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::{Request, Status, Streaming, metadata::MetadataValue};
use tonic_web_wasm_client::Client;

fn origin() -> String {
    leptos::prelude::window()
        .location()
        .origin()
        .unwrap_or_default()
}

/// The unauthenticated service.
pub(crate) fn auth() -> AuthServiceClient<Client> {
    AuthServiceClient::new(Client::new(origin()))
}

/// The chat service.
pub(crate) fn chat() -> ChatServiceClient<Client> {
    ChatServiceClient::new(Client::new(origin()))
}

/// A request carrying the bearer token.
pub(crate) fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Opens the one event stream of this tab.
pub(crate) async fn subscribe(
    token: &str,
    resume: Vec<pb::RoomCursor>,
) -> Result<Streaming<pb::Event>, Status> {
    Ok(chat()
        .subscribe(authed(token, pb::SubscribeRequest { resume }))
        .await?
        .into_inner())
}

/// What to show for a failed call: the server's message, which is written for people.
pub(crate) fn describe(status: &Status) -> String {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown if status.message().is_empty() => {
            "the server cannot be reached; try again".into()
        }
        _ => status.message().to_owned(),
    }
}
