//! A stream of events that survives its server: `Subscribe` with per-room cursors, and when
//! the stream breaks, a new one that resumes exactly where the last one stopped (the server
//! replays what was missed, so nothing is lost and nothing comes twice).
//!
//! A stream that fails is retried with jittered exponential backoff. A `GoAway` (the server
//! is draining for a restart or a deploy) is not a failure: the next stream is opened at
//! once, and behind a load balancer it lands on another instance.

use std::{collections::HashMap, time::Duration};

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};
use tokio::time::Instant;

use crate::client::ChatClient;

/// Reconnection delays after failures.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first retry.
    pub first: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// Longest wait before reconnecting after a `GoAway`: a jitter, so that the clients of a
/// draining instance do not all arrive at the others in the same instant.
const GO_AWAY_JITTER: Duration = Duration::from_millis(250);

/// The caller's events, across reconnections.
pub struct Follower {
    chat: ChatClient,
    backoff: Backoff,
    /// Highest seq seen per followed room: where the next stream resumes.
    cursors: HashMap<String, u64>,
    stream: Option<tonic::Streaming<pb::Event>>,
    /// Failures since the last stream that got as far as `Ready`.
    failures: u32,
    /// When to open the next stream.
    not_before: Instant,
    streams_opened: u64,
}

impl Follower {
    /// Follows every room of the caller, starting live.
    pub fn new(chat: ChatClient) -> Self {
        Self::resuming(chat, HashMap::new())
    }

    /// Follows every room of the caller; rooms with a cursor replay after it.
    pub fn resuming(chat: ChatClient, cursors: HashMap<String, u64>) -> Self {
        Self {
            chat,
            backoff: Backoff::default(),
            cursors,
            stream: None,
            failures: 0,
            not_before: Instant::now(),
            streams_opened: 0,
        }
    }

    /// Other reconnection delays.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Highest seq seen per room.
    pub fn cursors(&self) -> &HashMap<String, u64> {
        &self.cursors
    }

    /// How many streams were opened so far (1 + reconnections).
    pub fn streams_opened(&self) -> u64 {
        self.streams_opened
    }

    /// The next event; reconnects as needed. Heartbeats are returned too (a caller may want
    /// to see that the stream lives). Fails only when the server refuses the caller
    /// (`UNAUTHENTICATED`, `PERMISSION_DENIED`): no reconnection can help then.
    pub async fn next(&mut self) -> Result<Ev, tonic::Status> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                tokio::time::sleep_until(self.not_before).await;
                self.open().await?;
                continue;
            };
            match stream.message().await {
                Ok(Some(pb::Event { event: Some(event) })) => {
                    self.track(&event);
                    return Ok(event);
                }
                Ok(Some(pb::Event { event: None })) => {}
                Ok(None) => self.failed(),
                Err(status) if refused(&status) => return Err(status),
                Err(_) => self.failed(),
            }
        }
    }

    async fn open(&mut self) -> Result<(), tonic::Status> {
        let resume = self
            .cursors
            .iter()
            .map(|(room_id, after_seq)| pb::RoomCursor {
                room_id: room_id.clone(),
                after_seq: *after_seq,
            })
            .collect();
        match self.chat.subscribe(pb::SubscribeRequest { resume }).await {
            Ok(response) => {
                self.streams_opened += 1;
                self.stream = Some(response.into_inner());
                Ok(())
            }
            Err(status) if refused(&status) => Err(status),
            Err(_) => {
                self.failed();
                Ok(())
            }
        }
    }

    /// Records what the event moves forward, and reacts to the stream's own news.
    fn track(&mut self, event: &Ev) {
        match event {
            Ev::Ready(ready) => {
                self.failures = 0;
                let listed: Vec<&str> = ready.rooms.iter().map(|r| r.id.as_str()).collect();
                self.cursors.retain(|id, _| listed.contains(&id.as_str()));
                for room in &ready.rooms {
                    self.cursors.entry(room.id.clone()).or_insert(room.last_seq);
                }
            }
            Ev::Message(message) => {
                let cursor = self.cursors.entry(message.room_id.clone()).or_default();
                *cursor = (*cursor).max(message.seq);
            }
            Ev::RoomChanged(changed) => {
                let Some(room) = &changed.room else { return };
                match RoomChange::try_from(changed.change) {
                    Ok(RoomChange::Joined) => {
                        self.cursors.entry(room.id.clone()).or_insert(room.last_seq);
                    }
                    Ok(RoomChange::Left | RoomChange::Deleted) => {
                        self.cursors.remove(&room.id);
                    }
                    _ => {}
                }
            }
            Ev::GoAway(_) => {
                self.stream = None;
                self.not_before = Instant::now() + GO_AWAY_JITTER.mul_f64(rand::random());
            }
            _ => {}
        }
    }

    /// The stream broke or could not be opened: wait a little longer each time.
    fn failed(&mut self) {
        self.stream = None;
        let ceiling = self
            .backoff
            .first
            .saturating_mul(1 << self.failures.min(16))
            .min(self.backoff.max);
        self.failures += 1;
        self.not_before = Instant::now() + ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0);
    }
}

/// Whether the server refused the caller for good, rather than failed for now.
fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}
