//! Group commit for message appends.
//!
//! Every acknowledged message is fsynced before its answer, and an fsync costs the same for
//! one message as for a hundred. So appends go to one writer thread, which takes every request
//! waiting at that moment, writes them all in ONE transaction, commits (one fsync), and
//! hands the batch to one task on the async runtime, which publishes the messages in seq order
//! and answers each. Alone, a message waits for nothing; under load, many share a commit. The
//! single writer and the single publishing task keep publish order equal to seq order.
//!
//! Why publish from the runtime: publishing a message wakes every stream following its room.
//! Woken from a thread outside the runtime, each of a thousand wakes went through the
//! runtime's shared queue and its workers were woken through the kernel; woken from a worker,
//! they stay in that worker's own queue (and the other worker steals its share). One wake per
//! batch crosses over instead of one per stream and message.

use std::{
    sync::{Arc, mpsc},
    thread::JoinHandle,
};

use anyhow::Context;
use natter_proto::v1::{Event, event};
use redb::{Database, ReadableTable};
use tokio::sync::oneshot;

use super::{
    fanout::LocalFanout,
    tables::{CLIENT_IDS, MESSAGES, ROOM_SEQ, ROOM_USERS, decode, encode},
};
use crate::{
    convert,
    seams::{Appended, NewMessage, StoreError, StoreResult, Topic},
};

/// Most appends sharing one commit: bounds the latency a batch adds to its first member.
const MAX_BATCH: usize = 256;

struct Request {
    message: NewMessage,
    reply: oneshot::Sender<StoreResult<Appended>>,
}

/// A committed batch on its way to the publishing task: each request's answer and outcome,
/// in seq order.
type Committed = Vec<(
    oneshot::Sender<StoreResult<Appended>>,
    StoreResult<Appended>,
)>;

/// The writer thread and the way to it. Dropping it waits for the thread, so that the
/// database file is closed when the store is gone (a restart may open it again at once).
pub(super) struct Appender {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Appender {
    /// Starts the writer thread, and its publishing task on the current runtime.
    pub(super) fn start(db: Arc<Database>, fanout: LocalFanout) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the embedded store publishes on the async runtime: open it inside one")?;
        let (committed, to_publish) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(publish_committed(fanout, to_publish));
        let (requests, incoming) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("natter-appender".into())
            .spawn(move || write_batches(&db, &incoming, &committed))
            .context("starting the appender thread")?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Appends (or finds the earlier message of a retried client id), once committed.
    pub(super) async fn append(&self, new: NewMessage) -> StoreResult<Appended> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            message: new,
            reply,
        };
        self.requests
            .as_ref()
            .and_then(|requests| requests.send(request).ok())
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("the appender has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("the appender dropped a request")))?
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: until every sender is gone, commit whatever is waiting as one batch.
fn write_batches(
    db: &Database,
    incoming: &mpsc::Receiver<Request>,
    committed: &tokio::sync::mpsc::UnboundedSender<Committed>,
) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        match commit(db, &batch) {
            Ok(outcomes) => {
                let replies = batch.into_iter().map(|request| request.reply);
                // The runtime is gone (the process is ending): the callers with it.
                let _ = committed.send(replies.zip(outcomes).collect());
            }
            Err(e) => {
                tracing::error!(error = ?e, "committing a batch of messages failed");
                for request in batch {
                    let failure = anyhow::anyhow!("committing a batch of messages failed: {e:#}");
                    let _ = request.reply.send(Err(StoreError::Internal(failure)));
                }
            }
        }
    }
}

/// The publishing task: publishes each committed message, in seq order, then answers it,
/// until the writer thread is gone.
async fn publish_committed(
    fanout: LocalFanout,
    mut to_publish: tokio::sync::mpsc::UnboundedReceiver<Committed>,
) {
    while let Some(batch) = to_publish.recv().await {
        for (reply, outcome) in batch {
            if let Ok(appended) = &outcome
                && appended.created
            {
                let message = &appended.message;
                let event = Event {
                    event: Some(event::Event::Message(convert::message(message))),
                };
                fanout.publish_now(&Topic::Room(message.room_id.clone()), event);
            }
            let _ = reply.send(outcome);
        }
    }
}

/// Writes a batch in one transaction. The outer error fails the whole batch (nothing was
/// stored); an inner one concerns its request only (its room is gone).
fn commit(db: &Database, batch: &[Request]) -> anyhow::Result<Vec<StoreResult<Appended>>> {
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut client_ids = txn.open_table(CLIENT_IDS)?;
        let mut seqs = txn.open_table(ROOM_SEQ)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let members = txn.open_table(ROOM_USERS)?;
        for request in batch {
            let new = &request.message;
            let room = new.room_id.clone();
            let key = (
                room.as_str(),
                new.sender_id.as_str(),
                new.client_id.as_str(),
            );
            // The room and the membership first, for a retry too: the service checks
            // neither before appending, so a sender who left is refused here.
            let Some(last) = seqs.get(room.as_str())?.map(|g| g.value()) else {
                outcomes.push(Err(StoreError::RoomNotFound));
                continue;
            };
            if members
                .get((room.as_str(), new.sender_id.as_str()))?
                .is_none()
            {
                outcomes.push(Err(StoreError::NotMember));
                continue;
            }
            // A retry, possibly of a message earlier in this same batch (the transaction
            // sees its own writes).
            if !new.client_id.is_empty()
                && let Some(seq) = client_ids.get(key)?.map(|g| g.value())
            {
                let bytes = messages
                    .get((room.as_str(), seq))?
                    .context("idempotency key points nowhere")?;
                outcomes.push(Ok(Appended {
                    message: decode(bytes.value())?,
                    created: false,
                }));
                continue;
            }
            let message = new.clone().with_seq(last + 1);
            seqs.insert(room.as_str(), message.seq)?;
            messages.insert((room.as_str(), message.seq), encode(&message)?.as_slice())?;
            if !message.client_id.is_empty() {
                client_ids.insert(key, message.seq)?;
            }
            outcomes.push(Ok(Appended {
                message,
                created: true,
            }));
        }
    }
    // A batch of refusals and retries wrote nothing: a commit would still be durable (an
    // fsync), which refused sends, now checked here and not before, must not cost the
    // senders queued behind them.
    if outcomes
        .iter()
        .any(|outcome| outcome.as_ref().is_ok_and(|appended| appended.created))
    {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(outcomes)
}
