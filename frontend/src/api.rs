//! gRPC-Web calls to the server that served this page (same origin: no CORS needed).

use std::time::Duration;

use natter_proto::v1::{
    self as pb, auth_service_client::AuthServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::{Code, Request, Status, Streaming, metadata::MetadataValue};
use tonic_web_wasm_client::{Client, options::FetchOptions};

/// How long a unary call may take before it is abandoned (its fetch aborted). A connection
/// that died without closing (a suspended laptop, a dropped NAT entry, a stuck proxy) never
/// answers; without a deadline the call, and the button waiting on it, would hang forever.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

fn origin() -> String {
    leptos::prelude::window()
        .location()
        .origin()
        .unwrap_or_default()
}

/// A transport for unary calls: the whole call must finish within [`CALL_DEADLINE`].
fn unary_transport() -> Client {
    Client::new_with_options(origin(), FetchOptions::new().timeout(CALL_DEADLINE))
}

/// The unauthenticated service.
pub(crate) fn auth() -> AuthServiceClient<Client> {
    AuthServiceClient::new(unary_transport())
}

/// The chat service, for unary calls.
pub(crate) fn chat() -> ChatServiceClient<Client> {
    ChatServiceClient::new(unary_transport())
}

/// A request carrying the bearer token.
pub(crate) fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Opens the one event stream of this tab. Its transport has no overall deadline (the
/// stream lives for hours); the caller bounds the wait for its first event instead.
pub(crate) async fn subscribe(
    token: &str,
    resume: Vec<pb::RoomCursor>,
) -> Result<Streaming<pb::Event>, Status> {
    Ok(ChatServiceClient::new(Client::new(origin()))
        .subscribe(authed(token, pb::SubscribeRequest { resume }))
        .await?
        .into_inner())
}

/// Whether a failure says nothing about the request itself: the server could not be
/// reached, was unavailable for a moment, or did not answer in time. Trying the same
/// request again later is right (sends carry their `client_id`, so a retry never
/// duplicates). The server never answers `UNKNOWN` itself: that code is what the browser
/// transport reports for a failed fetch.
pub(crate) fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unknown | Code::Unavailable | Code::DeadlineExceeded
    )
}

/// What to show for a failed call: the server's message, which is written for people, or,
/// for a transport failure, a sentence instead of the browser's error text.
pub(crate) fn describe(status: &Status) -> String {
    match status.code() {
        Code::Unknown => "the server cannot be reached; check the connection and try again".into(),
        Code::DeadlineExceeded => "the server did not answer in time; try again".into(),
        Code::Unavailable if status.message().is_empty() => {
            "the server cannot be reached; try again".into()
        }
        _ => status.message().to_owned(),
    }
}
