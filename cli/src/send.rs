//! Sending that survives a failing server: a message is sent again, with the same
//! `client_id`, until the server acknowledges it. The server stores a `client_id` once per
//! room and sender, so a retry after a lost answer returns the stored message instead of a
//! second copy.

use std::time::Duration;

use natter_proto::v1 as pb;
use tokio::time::Instant;

use crate::client::ChatClient;

/// Longest wait for one attempt's answer: a connection that died without closing never
/// answers.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` (a `client_id` is made when it has none) until acknowledged. Refusals
/// (invalid text, not a member, ...) are returned at once; failures that may pass
/// (`UNAVAILABLE`, a timeout, a broken connection) are retried with a growing pause until
/// `give_up_after` has passed.
pub async fn send_until_acknowledged(
    chat: &mut ChatClient,
    mut request: pb::SendMessageRequest,
    give_up_after: Duration,
) -> Result<pb::Message, tonic::Status> {
    if request.client_id.is_empty() {
        request.client_id = uuid::Uuid::now_v7().to_string();
    }
    let deadline = Instant::now() + give_up_after;
    let mut pause = Duration::from_millis(100);
    loop {
        let status =
            match tokio::time::timeout(ATTEMPT_TIMEOUT, chat.send_message(request.clone())).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if !may_pass(&status) => return Err(status),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("the server did not answer in time"),
            };
        if Instant::now() + pause > deadline {
            return Err(status);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Whether a failed send may succeed if tried again.
fn may_pass(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}
