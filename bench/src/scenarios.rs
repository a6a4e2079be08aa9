//! The measured scenarios against a running deployment (1 embedded instance, or several
//! instances over one Redis).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use natter_cli::client::{self, ChatClient};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::sync::Mutex;

use crate::deployment::Deployment;

mod fanout;
pub(crate) use fanout::{Fanout, Pace, fanout, fanout_on};

/// Streams sharing one HTTP/2 connection, as browsers' tabs would not, but as a gateway or
/// a many-user client process would.
pub(crate) const STREAMS_PER_CONNECTION: usize = 50;
/// Users the subscriber streams belong to.
pub(crate) const SUBSCRIBER_USERS: usize = 10;

/// A signed-in user.
#[derive(Clone)]
pub(crate) struct User {
    pub(crate) token: String,
}

pub(crate) async fn register(url: &str, name: &str) -> anyhow::Result<User> {
    let response = client::auth_client(client::channel(url)?)
        .register(pb::RegisterRequest {
            username: name.into(),
            password: "bench-password".into(),
            display_name: String::new(),
        })
        .await?
        .into_inner();
    Ok(User {
        token: response.access_token,
    })
}

pub(crate) fn chat(url: &str, user: &User) -> anyhow::Result<ChatClient> {
    client::chat_client(client::channel(url)?, &user.token)
}

/// A room with `members` users (`prefix0..`), created on the first instance.
pub(crate) async fn room_with_members(
    deployment: &Deployment,
    prefix: &str,
    members: usize,
) -> anyhow::Result<(pb::Room, Vec<User>)> {
    let owner = register(&deployment.url(0), &format!("{prefix}owner")).await?;
    let room = chat(&deployment.url(0), &owner)?
        .create_room(pb::CreateRoomRequest {
            name: prefix.into(),
            password: String::new(),
        })
        .await?
        .into_inner();
    let mut users = Vec::new();
    for i in 0..members {
        let user = register(&deployment.url(0), &format!("{prefix}{i}")).await?;
        chat(&deployment.url(0), &user)?
            .join_room(pb::JoinRoomRequest {
                code: room.code.clone(),
                password: String::new(),
            })
            .await?;
        users.push(user);
    }
    Ok((room, users))
}

/// How the bench's subscriber connections and streams are set up.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    /// Streams multiplexed on one connection.
    pub(crate) streams_each: usize,
    /// HTTP/2 stream and connection windows the client advertises; `None`: tonic's (5 MiB
    /// for the connection, 2 MiB per stream).
    pub(crate) window: Option<u32>,
    /// The cursor every stream resumes from, if any.
    pub(crate) resume: Option<pb::RoomCursor>,
    /// Paired fan-outs (`--paired`): publishing starts once every fan-out sharing this
    /// barrier has its streams open, so their measuring windows coincide.
    pub(crate) start_together: Option<Arc<tokio::sync::Barrier>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            streams_each: STREAMS_PER_CONNECTION,
            window: None,
            resume: None,
            start_together: None,
        }
    }
}

/// Opens `count` Subscribe streams spread over the instances, `STREAMS_PER_CONNECTION` per
/// connection; each counts the messages it receives into `delivered`. Returns once every
/// stream got its Ready.
pub(crate) async fn open_streams(
    deployment: &Deployment,
    users: &[User],
    count: usize,
    delivered: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    open_streams_on(deployment, users, count, Connections::default(), delivered).await
}

/// [`open_streams`] over connections set up as `connections` says.
pub(crate) async fn open_streams_on(
    deployment: &Deployment,
    users: &[User],
    count: usize,
    connections_as: Connections,
    delivered: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let ready = Arc::new(AtomicU64::new(0));
    let mut connections: Vec<Option<tonic::transport::Channel>> =
        vec![None; count.div_ceil(connections_as.streams_each)];
    for k in 0..count {
        let connection_index = k / connections_as.streams_each;
        // One connection serves one instance.
        let url = deployment.url(connection_index);
        let channel = match &connections[connection_index] {
            Some(channel) => channel.clone(),
            None => {
                let channel = tonic::transport::Endpoint::from_shared(url)?
                    .initial_stream_window_size(connections_as.window)
                    .initial_connection_window_size(connections_as.window)
                    .connect()
                    .await?;
                connections[connection_index] = Some(channel.clone());
                channel
            }
        };
        let mut chat = client::chat_client(channel, &users[k % users.len()].token)?;
        let (ready, delivered) = (ready.clone(), delivered.clone());
        let request = pb::SubscribeRequest {
            resume: connections_as.resume.clone().into_iter().collect(),
        };
        tokio::spawn(async move {
            let Ok(response) = chat.subscribe(request).await else {
                return;
            };
            let mut events = response.into_inner();
            while let Ok(Some(event)) = events.message().await {
                match event.event {
                    Some(Ev::Ready(_)) => {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ev::Message(_)) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
    }
    wait_until_ready(&ready, count, Duration::from_secs(120)).await
}

/// Waits until `counter` reaches `target` or `within` passed; whether it got there.
pub(crate) async fn wait_for_count(counter: &AtomicU64, target: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while counter.load(Ordering::Relaxed) < target {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Waits until `ready` counts `streams` Ready events, or fails after `within`.
pub(crate) async fn wait_until_ready(
    ready: &AtomicU64,
    streams: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let all = streams as u64;
    anyhow::ensure!(
        wait_for_count(ready, all, within).await,
        "only {} of {streams} streams became ready",
        ready.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Send-to-receive latencies (seconds) at a fixed rate, sending on the first instance and
/// receiving on the last.
pub(crate) async fn latency(
    deployment: &Deployment,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Vec<f64>> {
    let (room, users) = room_with_members(deployment, "lat", 2).await?;
    let receiver = deployment.url(deployment.servers.len() - 1);
    let mut events = chat(&receiver, &users[0])?
        .subscribe(pb::SubscribeRequest::default())
        .await?
        .into_inner();
    anyhow::ensure!(
        matches!(
            events.message().await?.and_then(|e| e.event),
            Some(Ev::Ready(_))
        ),
        "Ready first"
    );

    let total = (rate as u64 * duration.as_secs()) as usize;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let receiver = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(total);
            while samples.len() < total {
                let Ok(Some(event)) = events.message().await else {
                    break;
                };
                if let Some(Ev::Message(m)) = event.event {
                    let now = Instant::now();
                    let index: usize = m.text.parse().unwrap_or(usize::MAX);
                    if let Some(Some(at)) = sent_at.lock().await.get(index) {
                        samples.push(now.duration_since(*at).as_secs_f64());
                    }
                }
            }
            samples
        })
    };
    let mut sender = chat(&deployment.url(0), &users[1])?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for index in 0..total {
        tick.tick().await;
        sent_at.lock().await[index] = Some(Instant::now());
        sender
            .send_message(pb::SendMessageRequest {
                room_id: room.id.clone(),
                text: index.to_string(),
                client_id: String::new(),
            })
            .await?;
    }
    let mut samples = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .context("receiver")??;
    // Where the slowest ones sit in the run says whether they are warm-up or periodic.
    let mut slowest: Vec<(usize, f64)> = samples.iter().copied().enumerate().collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    let positions: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(i, s)| format!("#{i}: {:.1} ms", s * 1000.0))
        .collect();
    eprintln!(
        "slowest deliveries (message number in the run): {}",
        positions.join(", ")
    );
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// The value at quantile `q` of sorted samples.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank]
}
