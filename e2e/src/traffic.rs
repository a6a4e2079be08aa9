//! Steady chat traffic through the fleet's public port, recorded so that a failure test can
//! prove what every client received: many resuming streams (each on its own connection, so
//! nginx spreads them over the instances) and senders that retry with the same `client_id`
//! until acknowledged.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use natter_cli::{
    client::{self, ChatClient},
    follow::{Backoff, Follower},
    send::send_until_acknowledged,
};
use natter_proto::v1::{self as pb, event::Event as Ev};
use tokio::{sync::watch, task::JoinSet, time::Instant};

use crate::WAIT;

/// Everyone's password.
const PASSWORD: &str = "correct-horse";

/// What one client saw.
#[derive(Debug, Default)]
pub struct Received {
    /// Seqs of every message, per room, in arrival order.
    pub seqs: HashMap<String, Vec<u64>>,
    /// When each of its streams became ready.
    pub ready_at: Vec<Instant>,
}

/// An acknowledged send.
#[derive(Debug, Clone)]
pub struct Acked {
    /// Its room.
    pub room_id: String,
    /// The seq the server gave it.
    pub seq: u64,
    /// Its idempotency key.
    pub client_id: String,
}

/// Users in rooms, streams following them, senders sending.
pub struct Traffic {
    /// The room ids.
    pub rooms: Vec<String>,
    /// One signed-in client per user, for checks.
    pub users: Vec<ChatClient>,
    clients: Vec<Arc<Mutex<Received>>>,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop_sending: watch::Sender<bool>,
    stop_following: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    senders: JoinSet<anyhow::Result<()>>,
}

/// Registers `username` over native gRPC; returns the access token.
pub async fn register(url: &str, username: &str) -> anyhow::Result<String> {
    Ok(client::auth_client(client::channel(url)?)
        .register(pb::RegisterRequest {
            username: username.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// A signed-in client on its own connection to `url`.
pub async fn sign_up(url: &str, username: &str) -> anyhow::Result<ChatClient> {
    client::chat_client(client::channel(url)?, &register(url, username).await?)
}

impl Traffic {
    /// `users` users, all in each of `rooms` rooms; `streams_per_user` streams each, every
    /// stream on its own connection. Returns once every stream is ready.
    pub async fn start(
        url: &str,
        users: usize,
        rooms: usize,
        streams_per_user: usize,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(users);
        let mut tokens = Vec::with_capacity(users);
        for n in 0..users {
            let token = register(url, &format!("user{n}")).await?;
            clients.push(client::chat_client(client::channel(url)?, &token)?);
            tokens.push(token);
        }
        let mut room_ids = Vec::with_capacity(rooms);
        for n in 0..rooms {
            let room = clients[0]
                .create_room(pb::CreateRoomRequest {
                    name: format!("room {n}"),
                    password: String::new(),
                })
                .await?
                .into_inner();
            for user in &mut clients[1..] {
                user.join_room(pb::JoinRoomRequest {
                    code: room.code.clone(),
                    password: String::new(),
                })
                .await?;
            }
            room_ids.push(room.id);
        }
        let (stop_following, following) = watch::channel(false);
        let (stop_sending, _) = watch::channel(false);
        let mut traffic = Self {
            rooms: room_ids,
            users: clients,
            clients: Vec::new(),
            acked: Arc::default(),
            stop_sending,
            stop_following,
            tasks: JoinSet::new(),
            senders: JoinSet::new(),
        };
        let (ready, mut readies) = tokio::sync::mpsc::channel(users * streams_per_user);
        for token in &tokens {
            for _ in 0..streams_per_user {
                let received = Arc::new(Mutex::new(Received::default()));
                traffic.clients.push(received.clone());
                // Every stream starts at seq 0 of every room, so it must see every message.
                let cursors = traffic.rooms.iter().map(|id| (id.clone(), 0)).collect();
                let follower =
                    Follower::resuming(client::chat_client(client::channel(url)?, token)?, cursors);
                traffic
                    .tasks
                    .spawn(follow(follower, received, following.clone(), ready.clone()));
            }
        }
        for _ in 0..users * streams_per_user {
            tokio::time::timeout(WAIT, readies.recv())
                .await
                .context("streams ready in time")?;
        }
        Ok(traffic)
    }

    /// One sender per room, sending every `every` until [`Traffic::stop`].
    pub fn send_steadily(&mut self, every: Duration) -> anyhow::Result<()> {
        for (n, room_id) in self.rooms.iter().enumerate() {
            let sender = self.users[n % self.users.len()].clone();
            self.senders.spawn(send(
                sender,
                room_id.clone(),
                every,
                self.acked.clone(),
                self.stop_sending.subscribe(),
            ));
        }
        Ok(())
    }

    /// Stops the senders, waits until every stream has every acknowledged message, stops the
    /// streams, and checks: per room, each stream received seqs 1, 2, 3... up to the last
    /// acknowledged one, each once, in order; the log holds every acknowledged send once.
    pub async fn stop_and_check(mut self) -> anyhow::Result<Report> {
        self.stop_sending.send_replace(true);
        while let Some(sent) = self.senders.join_next().await {
            sent??;
        }
        let acked = self.acked.lock().expect("acked").clone();
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for ack in &acked {
            let seq = last.entry(ack.room_id.clone()).or_default();
            *seq = (*seq).max(ack.seq);
        }
        let deadline = Instant::now() + WAIT;
        while !self.all_caught_up(&last) {
            ensure!(
                Instant::now() < deadline,
                "streams did not catch up in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop_following.send_replace(true);
        while let Some(followed) = self.tasks.join_next().await {
            followed??;
        }
        for (n, client) in self.clients.iter().enumerate() {
            let client = client.lock().expect("received");
            for (room_id, last_seq) in &last {
                let seqs = client.seqs.get(room_id).map(Vec::as_slice).unwrap_or(&[]);
                let expected: Vec<u64> = (1..=*last_seq).collect();
                let got: Vec<u64> = seqs.iter().copied().take_while(|s| s <= last_seq).collect();
                if got != expected {
                    bail!(
                        "stream {n} in room {room_id} received {seqs:?}, expected 1..={last_seq}"
                    );
                }
            }
        }
        let mut stored_ids: HashMap<String, usize> = HashMap::new();
        for room_id in last.keys() {
            let history = self.users[0]
                .get_history(pb::GetHistoryRequest {
                    room_id: room_id.clone(),
                    before_seq: 0,
                    limit: 200,
                })
                .await?
                .into_inner();
            ensure!(
                !history.has_more,
                "the check reads whole logs: too many messages"
            );
            for message in history.messages {
                *stored_ids.entry(message.client_id).or_default() += 1;
            }
        }
        for ack in &acked {
            ensure!(
                stored_ids.get(&ack.client_id) == Some(&1),
                "acknowledged send {} is in the log {:?} times",
                ack.client_id,
                stored_ids.get(&ack.client_id)
            );
        }
        let ready_at = self
            .clients
            .iter()
            .map(|c| c.lock().expect("received").ready_at.clone())
            .collect();
        Ok(Report {
            acked: acked.len(),
            ready_at,
        })
    }

    /// Waits until `n` more sends than now have been acknowledged.
    pub async fn wait_for_acks(&self, n: usize) -> anyhow::Result<()> {
        let target = self.acked.lock().expect("acked").len() + n;
        let deadline = Instant::now() + WAIT;
        while self.acked.lock().expect("acked").len() < target {
            ensure!(Instant::now() < deadline, "sends stalled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn all_caught_up(&self, last: &BTreeMap<String, u64>) -> bool {
        self.clients.iter().all(|client| {
            let client = client.lock().expect("received");
            last.iter().all(|(room_id, seq)| {
                client
                    .seqs
                    .get(room_id)
                    .and_then(|seqs| seqs.last())
                    .is_some_and(|got| got >= seq)
            })
        })
    }
}

/// What a traffic run did.
#[derive(Debug)]
pub struct Report {
    /// Messages acknowledged.
    pub acked: usize,
    /// Per stream, when each of its streams became ready.
    pub ready_at: Vec<Vec<Instant>>,
}

impl Report {
    /// For the streams that became ready again after `since`: how long that took, at most.
    /// `None` if no stream reconnected.
    pub fn slowest_reconnect_after(&self, since: Instant) -> Option<(usize, Duration)> {
        let reconnects: Vec<Duration> = self
            .ready_at
            .iter()
            .filter_map(|times| times.iter().find(|t| **t > since).map(|t| *t - since))
            .collect();
        reconnects
            .iter()
            .max()
            .map(|slowest| (reconnects.len(), *slowest))
    }
}

async fn follow(
    mut follower: Follower,
    received: Arc<Mutex<Received>>,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let mut first = Some(ready);
    follower = follower.with_backoff(Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_secs(2),
    });
    loop {
        let event = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            event = follower.next() => event?,
        };
        let mut received = received.lock().expect("received");
        match event {
            Ev::Ready(_) => {
                received.ready_at.push(Instant::now());
                if let Some(ready) = first.take() {
                    let _ = ready.try_send(());
                }
            }
            Ev::Message(message) => received
                .seqs
                .entry(message.room_id)
                .or_default()
                .push(message.seq),
            _ => {}
        }
    }
}

/// Sends into `room_id` every `every`; each message is retried with its `client_id` until
/// acknowledged (an instance or Redis may be down meanwhile).
async fn send(
    mut sender: ChatClient,
    room_id: String,
    every: Duration,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        n += 1;
        let request = pb::SendMessageRequest {
            room_id: room_id.clone(),
            text: format!("message {n}"),
            client_id: format!("{room_id}-{n}"),
        };
        let message = send_until_acknowledged(&mut sender, request, WAIT)
            .await
            .with_context(|| format!("message {n} in {room_id} never acknowledged"))?;
        acked.lock().expect("acked").push(Acked {
            room_id: room_id.clone(),
            seq: message.seq,
            client_id: message.client_id,
        });
    }
    Ok(())
}
