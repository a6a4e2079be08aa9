//! The fan-out: one room, many streams, a few publishers; deliveries and the servers' CPU.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use natter_proto::v1 as pb;

use super::{
    Connections, SUBSCRIBER_USERS, chat, open_streams_on, room_with_members, wait_for_count,
};
use crate::deployment::Deployment;

pub(crate) struct Fanout {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) seconds: f64,
    /// CPU time (user + system) the server processes spent over the run.
    pub(crate) server_cpu_seconds: f64,
    /// Writes to client sockets over the run, if the servers count them.
    pub(crate) socket_writes: Option<u64>,
}

/// How the fan-out's publishers pace their sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// Each publisher sends its next message as soon as its last one is answered, so the
    /// rate is whatever the server's answers allow.
    AsAnswered,
    /// All publishers together send this many messages per second, each on a schedule of
    /// its own (staggered), still one in flight each: a publisher whose answer comes late
    /// sends its next one late, which the achieved rate shows.
    PerSecond(u32),
}

impl Pace {
    /// Publisher `i`'s schedule (of `publishers`, from `start`), staggered by a share of the
    /// period each; `None` when sends follow answers.
    fn schedule(
        self,
        start: Instant,
        i: usize,
        publishers: usize,
    ) -> Option<tokio::time::Interval> {
        let Pace::PerSecond(rate) = self else {
            return None;
        };
        let period = Duration::from_secs(publishers as u64) / rate;
        let first = tokio::time::Instant::from_std(start) + period * i as u32 / publishers as u32;
        let mut schedule = tokio::time::interval_at(first, period);
        schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(schedule)
    }
}

/// One room, `subscribers` streams spread over the instances, `publishers` users sending as
/// fast as their sends are acknowledged for `duration`; then waits for every delivery.
pub(crate) async fn fanout(
    deployment: &Deployment,
    subscribers: usize,
    publishers: usize,
    duration: Duration,
) -> anyhow::Result<Fanout> {
    fanout_on(
        deployment,
        subscribers,
        publishers,
        duration,
        Pace::AsAnswered,
        Connections::default(),
    )
    .await
}

/// [`fanout`] paced as `pace` says, with the subscribers' connections set up as
/// `connections` says.
pub(crate) async fn fanout_on(
    deployment: &Deployment,
    subscribers: usize,
    publishers: usize,
    duration: Duration,
    pace: Pace,
    connections: Connections,
) -> anyhow::Result<Fanout> {
    let (room, users) = room_with_members(deployment, "fan", SUBSCRIBER_USERS + publishers).await?;
    let (watchers, senders) = users.split_at(SUBSCRIBER_USERS);
    let delivered = Arc::new(AtomicU64::new(0));
    let start_together = connections.start_together.clone();
    open_streams_on(
        deployment,
        watchers,
        subscribers,
        connections,
        delivered.clone(),
    )
    .await?;
    if let Some(barrier) = start_together {
        barrier.wait().await;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let cpu_before = deployment.cpu_seconds()?;
    let writes_before = deployment.socket_writes().await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        let mut chat = chat(&deployment.url(i), sender)?;
        let (room_id, sent) = (room.id.clone(), sent.clone());
        let mut schedule = pace.schedule(start, i, publishers);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                if let Some(schedule) = &mut schedule {
                    schedule.tick().await;
                    if start.elapsed() >= duration {
                        break;
                    }
                }
                n += 1;
                let text = format!("fan-out message {n} from publisher {i}");
                if chat
                    .send_message(pb::SendMessageRequest {
                        room_id: room_id.clone(),
                        text,
                        client_id: String::new(),
                    })
                    .await
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let expected = sent.load(Ordering::Relaxed) * subscribers as u64;
    wait_for_count(&delivered, expected, Duration::from_secs(120)).await;
    let server_cpu_seconds = deployment.cpu_seconds()? - cpu_before;
    let socket_writes = match (writes_before, deployment.socket_writes().await?) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(Fanout {
        sent: sent.load(Ordering::Relaxed),
        delivered: delivered.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
        server_cpu_seconds,
        socket_writes,
    })
}
