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

/// Whether a failed send may succeed if tried again: the server is away or busy, or the
/// connection broke. A broken connection (a reset, or a GOAWAY racing the request while an
/// instance drains) reaches the caller as a status with the transport error as its source,
/// whatever its code: tonic reports h2 errors as INTERNAL.
fn may_pass(status: &tonic::Status) -> bool {
    let transient = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    );
    transient || std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_connections_and_absent_servers_are_retried_refusals_are_not() {
        assert!(may_pass(&tonic::Status::unavailable("restarting")));
        // What a request racing an instance's GOAWAY gets: INTERNAL, with the h2 error as
        // its source.
        let mut broken = tonic::Status::internal("h2 protocol error: http2 error");
        broken.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection error received: not a result of an error",
        )));
        assert!(may_pass(&broken), "{broken:?}");
        assert!(!may_pass(&tonic::Status::internal("internal error")));
        assert!(!may_pass(&tonic::Status::invalid_argument(
            "text: too long"
        )));
        assert!(!may_pass(&tonic::Status::permission_denied("not a member")));
    }
}
