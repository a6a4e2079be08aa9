//! Reading a test's streams and checking its answers: events, acknowledgements, statuses.

use std::time::Duration;

use natter_proto::v1::{self as pb, event::Event as Ev};
use tonic::{Request, Status};

use super::WAIT;

/// Polls every 20 ms (bounded by [`WAIT`]) until `holds`; panics with `what` otherwise. For
/// state the test can only read, such as Redis keys or a seam's readiness.
pub async fn poll_until<F: Future<Output = bool>>(what: &str, mut holds: impl FnMut() -> F) {
    tokio::time::timeout(WAIT, async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while !holds().await {
            poll.tick().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// Where a resuming stream picks a room up: after `after_seq`.
pub fn cursor(room_id: &str, after_seq: u64) -> pb::RoomCursor {
    pb::RoomCursor {
        room_id: room_id.into(),
        after_seq,
    }
}

/// The next event other than a heartbeat, failing the test after [`WAIT`].
pub async fn next_event(stream: &mut tonic::Streaming<pb::Event>) -> Ev {
    loop {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event in time")
            .expect("stream healthy")
            .expect("stream open")
            .event
            .expect("event set");
        if !matches!(event, Ev::Heartbeat(_)) {
            return event;
        }
    }
}

/// Skips events until a message arrives and returns it.
pub async fn next_message(stream: &mut tonic::Streaming<pb::Event>) -> pb::Message {
    loop {
        if let Ev::Message(message) = next_event(stream).await {
            return message;
        }
    }
}

/// Skips events until `pick` accepts one.
pub async fn wait_for<T>(
    stream: &mut tonic::Streaming<pb::Event>,
    mut pick: impl FnMut(Ev) -> Option<T>,
) -> T {
    loop {
        if let Some(found) = pick(next_event(stream).await) {
            return found;
        }
    }
}

/// Skips events until a room change of the given kind arrives.
pub async fn wait_for_change(
    stream: &mut tonic::Streaming<pb::Event>,
    change: pb::RoomChange,
) -> pb::RoomChanged {
    wait_for(stream, |e| match e {
        Ev::RoomChanged(c) if c.change == change as i32 => Some(c),
        _ => None,
    })
    .await
}

/// Skips events until a presence change of the user (by id or username) arrives.
pub async fn wait_for_presence(
    stream: &mut tonic::Streaming<pb::Event>,
    user: &str,
) -> pb::PresenceChanged {
    wait_for(stream, |e| match e {
        Ev::Presence(p)
            if p.user
                .as_ref()
                .is_some_and(|u| u.id == user || u.username == user) =>
        {
            Some(p)
        }
        _ => None,
    })
    .await
}

/// Skips events until a `Chat` send acknowledgement arrives.
pub async fn wait_for_ack(stream: &mut tonic::Streaming<pb::Event>) -> pb::SendAck {
    wait_for(stream, |e| match e {
        Ev::SendAck(a) => Some(a),
        _ => None,
    })
    .await
}

/// Skips events until a `Chat` frame error arrives.
pub async fn wait_for_frame_error(stream: &mut tonic::Streaming<pb::Event>) -> pb::FrameError {
    wait_for(stream, |e| match e {
        Ev::FrameError(f) => Some(f),
        _ => None,
    })
    .await
}

/// Expects the first event to be `Ready` and returns it.
pub async fn expect_ready(stream: &mut tonic::Streaming<pb::Event>) -> pb::Ready {
    match next_event(stream).await {
        Ev::Ready(ready) => ready,
        other => panic!("expected Ready first, got {other:?}"),
    }
}

/// Asserts a call failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: tonic::Code,
    needle: &str,
) {
    let status = result.expect_err("call should fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

/// Seconds since the unix epoch (for crafting tokens).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A request carrying `authorization: <value>` as given (tokens, schemes, garbage).
pub fn with_authorization<T>(value: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

/// Reads a stream until it ends; the events it carried and its final status.
pub async fn until_the_end(stream: &mut tonic::Streaming<pb::Event>) -> (Vec<Ev>, Status) {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.message()).await.unwrap() {
            Ok(Some(pb::Event { event: Some(event) })) => events.push(event),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status; events: {events:?}"),
            Err(status) => return (events, status),
        }
    }
}
