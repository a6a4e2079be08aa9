//! A reconnect storm: many streams resuming from a cursor at once, as when the clients of an
//! instance that died all come back: how long until every stream is Ready and caught up,
//! and what live messages in another room see meanwhile.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use natter_proto::v1 as pb;

use crate::deployment::Deployment;
use crate::scenarios::{
    Connections, SUBSCRIBER_USERS, chat, latency, open_streams_on, room_with_members,
    wait_for_count,
};

/// What a storm measured.
pub(crate) struct Storm {
    /// From the first stream opened until the last one got its Ready.
    pub(crate) ready_seconds: f64,
    /// From the first stream opened until every stream received the whole backlog.
    pub(crate) caught_up_seconds: f64,
    /// Whether every stream did.
    pub(crate) complete: bool,
    /// Send-to-receive latencies of live messages in another room, seconds, sorted.
    pub(crate) live_latency: Vec<f64>,
}

/// `streams` streams resume a room from seq 0 at once, each owing `backlog` messages, while
/// another room carries `live_rate` messages/s for `live_for`.
pub(crate) async fn storm(
    deployment: &Deployment,
    streams: usize,
    backlog: u64,
    live_rate: u32,
    live_for: Duration,
) -> anyhow::Result<Storm> {
    let (room, users) = room_with_members(deployment, "storm", SUBSCRIBER_USERS + 1).await?;
    let (watchers, publisher) = users.split_at(SUBSCRIBER_USERS);
    let mut sender = chat(&deployment.url(0), &publisher[0])?;
    for n in 1..=backlog {
        sender
            .send_message(pb::SendMessageRequest {
                room_id: room.id.clone(),
                text: format!("backlog message {n} of the storm room"),
                client_id: String::new(),
            })
            .await?;
    }
    let resuming = Connections {
        resume: Some(pb::RoomCursor {
            room_id: room.id.clone(),
            after_seq: 0,
        }),
        ..Connections::default()
    };
    let the_storm = async {
        let start = Instant::now();
        let delivered = Arc::new(AtomicU64::new(0));
        open_streams_on(deployment, watchers, streams, resuming, delivered.clone()).await?;
        let ready_seconds = start.elapsed().as_secs_f64();
        let expected = streams as u64 * backlog;
        let complete = wait_for_count(&delivered, expected, Duration::from_secs(120)).await;
        anyhow::Ok((ready_seconds, start.elapsed().as_secs_f64(), complete))
    };
    let (storm, live_latency) = tokio::join!(the_storm, latency(deployment, live_rate, live_for));
    let (ready_seconds, caught_up_seconds, complete) = storm?;
    Ok(Storm {
        ready_seconds,
        caught_up_seconds,
        complete,
        live_latency: live_latency?,
    })
}
