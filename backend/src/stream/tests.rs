//! The session's lifecycle against a real embedded server: opening, dropping, draining.

use std::{future::Future, sync::atomic::Ordering, task::Context};

use prost::Message;

use super::*;
use crate::{
    config::Config,
    domain::{Registration, RoomName},
    ids::RoomId,
    server,
};

/// An embedded server in a fresh data directory (returned, to live as long as the test),
/// with one user in one room.
async fn bob_in_a_room() -> (tempfile::TempDir, Arc<Natter>, Caller, RoomId) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.data_dir = dir.path().into();
    let natter = server::build(config).await.unwrap();
    let registration = Registration::parse("bob", "correct-horse-battery", "").unwrap();
    let grant = natter.register(registration, None).await.unwrap();
    let caller = natter.keys().verify(&grant.token).unwrap();
    let name = RoomName::parse("General").unwrap();
    let room = natter.create_room(&caller, name, None).await.unwrap().room;
    (dir, natter, caller, room.id)
}

/// The opening call can be dropped at any await (the client leaves): here once presence
/// has counted the stream, while its coming online is being announced.
#[tokio::test]
async fn a_session_dropped_while_it_opens_is_counted_closed() {
    let (_dir, natter, caller, room_id) = bob_in_a_room().await;
    let outbox = Arc::new(Outbox::default());
    let mut open = Box::pin(Session::open(natter.clone(), caller.clone(), false, outbox));
    let waker = futures::task::noop_waker();
    // Polled by hand until presence has counted the stream (the store's reads complete on
    // their own threads meanwhile); then the client goes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let std::task::Poll::Ready(session) =
            open.as_mut().poll(&mut Context::from_waker(&waker))
        {
            drop(session);
            break;
        }
        let members = natter.list_members(&caller, &room_id).await.unwrap();
        if members[0].user.online {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never counted");
        tokio::task::yield_now().await;
    }
    drop(open);

    natter.tasks().close();
    natter.tasks().wait().await;
    let members = natter.list_members(&caller, &room_id).await.unwrap();
    assert!(!members[0].user.online, "counted closed");
    assert_eq!(natter.metrics().streams_open.load(Ordering::Relaxed), 0);
}

/// Draining ends a stream between two catch-up batches instead of after its whole
/// backlog, so a long resume cannot outlast the drain timeout.
#[tokio::test]
async fn a_stream_catching_up_when_the_server_drains_is_told_at_once() {
    let (_dir, natter, caller, room_id) = bob_in_a_room().await;
    for n in 0..3 {
        let send = pb::SendMessageRequest {
            room_id: room_id.to_string(),
            text: format!("backlog {n}"),
            client_id: String::new(),
        };
        let send = crate::domain::SendMessage::try_from(&send).unwrap();
        natter.send_message(&caller, send).await.unwrap();
    }
    natter.shutdown().cancel();
    let outbox = Arc::new(Outbox::default());
    let session = Session::open(natter.clone(), caller, false, outbox.clone())
        .await
        .unwrap();
    let resume = pb::SubscribeRequest {
        resume: vec![pb::RoomCursor {
            room_id: room_id.to_string(),
            after_seq: 0,
        }],
    };
    let no_frames = None::<futures::stream::Empty<Result<pb::ClientFrame, Status>>>;
    let body = SessionBody::new(outbox, None, session.run(Some(resume), no_frames));
    let items = super::body::read_back::items(body).await;
    let events: Vec<_> = items
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .map(|encoded| {
            pb::Event::decode(encoded.encoding())
                .unwrap()
                .event
                .unwrap()
        })
        .collect();
    assert!(matches!(events[0], Ev::Ready(_)), "{events:?}");
    assert!(
        matches!(events[1], Ev::GoAway(_)),
        "no backlog first: {events:?}"
    );
    let status = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

/// What an idle stream holds is mostly its session's future, boxed once in the response
/// body for the stream's whole life. Rare paths are boxed, events are encoded before any
/// wait, and nothing is stored twice (see `Session::run`): a change that makes the future
/// grow again (it was 2,784 bytes before, about a third of an idle stream) fails here.
#[tokio::test]
async fn an_idle_streams_future_stays_small() {
    let (_dir, natter, caller, _room_id) = bob_in_a_room().await;
    let outbox = Arc::new(Outbox::default());
    let session = Session::open(natter.clone(), caller, false, outbox)
        .await
        .unwrap();
    let future = session.run(None, None::<tonic::Streaming<pb::ClientFrame>>);
    let size = std::mem::size_of_val(&future);
    assert!(size <= 1024, "a stream's future takes {size} bytes");
}

/// A stream's first heartbeat comes between half an interval and one interval after it
/// opened, at the drawn share of the way.
#[test]
fn the_first_heartbeat_is_due_within_one_interval() {
    let interval = std::time::Duration::from_secs(15);
    assert_eq!(
        first_heartbeat_after(interval, 0.0),
        std::time::Duration::from_millis(7500)
    );
    assert_eq!(
        first_heartbeat_after(interval, 0.5),
        std::time::Duration::from_millis(11_250)
    );
    assert!(first_heartbeat_after(interval, 0.999_999) < interval);
}
