//! The shape's senders: messages into random rooms, each from a random member, on a fixed
//! schedule, without waiting for answers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use natter_cli::client;
use natter_proto::v1 as pb;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::{latencies::Latencies, population::Population};

/// Filler that gives each message a typical chat line's length (about 60 bytes of text).
const FILLER: &str = "a chat line of a typical length, give or take";

/// One phase's schedule.
pub(super) struct Sends {
    /// The phase's number: each message's text starts with it and the message's index.
    pub(super) phase: usize,
    pub(super) start: Instant,
    pub(super) period: Duration,
    pub(super) total: u32,
    /// The rooms and senders are drawn from this seed.
    pub(super) seed: u64,
}

/// What came of a phase's sends.
pub(super) struct Sent {
    pub(super) answered: u64,
    pub(super) failed: u64,
    /// Deliveries owed by the sends that were answered.
    pub(super) owed: u64,
    /// From each answered send's place in the schedule to its answer.
    pub(super) answer_latencies: Latencies,
}

impl Sends {
    /// Sends every message at its place in the schedule (checked each millisecond) over
    /// `senders`; returns, once all are answered, what came of them.
    pub(super) async fn run(
        self,
        population: Arc<Population>,
        senders: Vec<tonic::transport::Channel>,
    ) -> anyhow::Result<Sent> {
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
                let owed = members.len() as u64;
                let due = self.start + self.period * next;
                answers.push(tokio::spawn(async move {
                    let answered = chat.send_message(request).await.is_ok();
                    answered.then(|| (due.elapsed(), owed))
                }));
                next += 1;
            }
        }
        let mut sent = Sent {
            answered: 0,
            failed: 0,
            owed: 0,
            answer_latencies: Latencies::new(),
        };
        for answer in answers {
            match answer.await? {
                Some((took, owed)) => {
                    sent.answered += 1;
                    sent.owed += owed;
                    sent.answer_latencies.record(took);
                }
                None => sent.failed += 1,
            }
        }
        Ok(sent)
    }
}
