//! The shape's senders: messages into random rooms, each from a random member, on a fixed
//! schedule, without waiting for answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use natter_cli::client;
use natter_proto::v1 as pb;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::population::Population;

/// Filler that gives each message a typical chat line's length (about 60 bytes of text).
const FILLER: &str = "a chat line of a typical length, give or take";

/// One phase's schedule and what came of it.
#[derive(Clone)]
pub(super) struct Sends {
    /// The phase's number: each message's text starts with it and the message's index.
    pub(super) phase: usize,
    pub(super) start: Instant,
    pub(super) period: Duration,
    pub(super) total: u32,
    /// The rooms and senders are drawn from this seed.
    pub(super) seed: u64,
    pub(super) sent: Arc<AtomicU64>,
    pub(super) failed: Arc<AtomicU64>,
    /// Deliveries owed by the sends that were answered.
    pub(super) expected: Arc<AtomicU64>,
}

impl Sends {
    /// Sends every message at its place in the schedule (checked each millisecond) over
    /// `senders`; returns, once all are answered, the time from each one's place in the
    /// schedule to its answer, in microseconds.
    pub(super) async fn run(
        self,
        population: Arc<Population>,
        senders: Vec<tonic::transport::Channel>,
    ) -> anyhow::Result<Histogram<u64>> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut next = 0u32;
        let mut answers = Vec::new();
        while next < self.total {
            tick.tick().await;
            let now = Instant::now();
            while next < self.total && self.start + self.period * next <= now {
                let room = rng.random_range(0..population.room_ids.len());
                let members = &population.shape.rooms[room];
                let sender = members[rng.random_range(0..members.len())];
                let mut chat = client::chat_client(
                    senders[sender % senders.len()].clone(),
                    &population.users[sender].token,
                )?;
                let request = pb::SendMessageRequest {
                    room_id: population.room_ids[room].clone(),
                    text: format!("{} {next} {FILLER}", self.phase),
                    client_id: String::new(),
                };
                let (sent, failed, expected) = (
                    self.sent.clone(),
                    self.failed.clone(),
                    self.expected.clone(),
                );
                let owed = members.len() as u64;
                let due = self.start + self.period * next;
                answers.push(tokio::spawn(async move {
                    let answered = chat.send_message(request).await.is_ok();
                    if answered {
                        sent.fetch_add(1, Ordering::Relaxed);
                        expected.fetch_add(owed, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    answered.then(|| due.elapsed())
                }));
                next += 1;
            }
        }
        let mut answer_latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for answer in answers {
            if let Some(took) = answer.await? {
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                answer_latencies.saturating_record(micros.min(60_000_000));
            }
        }
        Ok(answer_latencies)
    }
}
