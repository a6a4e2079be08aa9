//! The bus's listener on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`), so that a room's
//! messages travel only through the shard that owns the room.
//!
//! One cluster connection (RESP3) is dedicated to subscriptions: the redis crate holds one
//! connection per primary in it, routes each `SSUBSCRIBE` to the primary of the channel's
//! slot, and delivers every message of every shard as a push to this task. So an instance
//! holds one subscriber connection per shard, however many streams it serves.
//!
//! Sharded pub/sub is at-most-once like the plain kind, and a subscription can be lost three
//! ways, each repaired from the log:
//! - a node's connection drops: the crate reconnects and resubscribes by itself; the
//!   confirmation this task did not ask for makes the topic's streams re-read the log;
//! - the server drops a subscription (`sunsubscribe` push: its slot moved, or its primary
//!   became a replica): this task subscribes again (routed to the slot's new owner) and,
//!   once confirmed, makes the streams re-read the log;
//! - a primary dies: its replica is promoted, which the crate only learns when a request
//!   fails. After any disconnection, and whenever a keepalive PING to the primaries fails,
//!   this task re-subscribes every followed channel until all are confirmed, then repairs.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use redis::{PushInfo, PushKind, Value, cluster::ClusterClient, cluster_async::ClusterConnection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{COMMAND_TIMEOUT, Command, Inner, SWEEP_INTERVAL};

/// Pushes from the cluster connection (messages and subscription changes of every shard).
pub(crate) type Pushes = mpsc::UnboundedReceiver<PushInfo>;

/// How often subscriptions that failed (a shard failing over) are tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// An answered SSUBSCRIBE: the channel, whether its confirmation must make the streams
/// re-read the log (it replaces a subscription that was lost), and whether it worked.
type Answer = (String, bool, Result<(), ()>);

/// What this task knows about its subscriptions.
#[derive(Default)]
struct Subscriptions {
    /// Channels confirmed subscribed.
    subscribed: HashSet<String>,
    /// Channels with an SSUBSCRIBE in flight, and the streams waiting for it.
    pending: HashMap<String, Vec<oneshot::Sender<()>>>,
    /// Confirmations still expected for SSUBSCRIBEs this task sent, per channel: any other
    /// confirmation is a resubscription by the crate (after a reconnect).
    expected: HashMap<String, u32>,
    /// Unsubscriptions this task sent (the rest come from the server).
    expected_gone: HashMap<String, u32>,
    /// Channels to subscribe again, with whether their streams need a repair afterwards.
    retry: HashMap<String, bool>,
}

impl Subscriptions {
    /// Counts one expected confirmation; false if it was not expected.
    fn take(map: &mut HashMap<String, u32>, channel: &str) -> bool {
        match map.get_mut(channel) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                map.remove(channel);
                true
            }
            None => false,
        }
    }
}

/// Owns the subscription connection for the life of the instance.
pub(super) async fn listen(
    inner: Arc<Inner>,
    client: ClusterClient,
    mut pushes: Pushes,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    let conn = loop {
        let connected = tokio::select! {
            connected = client.get_async_connection() => connected,
            () = shutdown.cancelled() => return,
        };
        match connected {
            Ok(conn) => break conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the Redis Cluster for pub/sub");
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(super::listener::backoff(attempt)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    };
    inner.connected.store(true, Ordering::SeqCst);
    let mut state = Subscriptions::default();
    // Streams that followed before the connection existed: subscribe and repair them.
    while commands.try_recv().is_ok() {}
    for channel in inner.channels() {
        state.retry.insert(channel, true);
    }
    let mut in_flight: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut retry = tokio::time::interval(RETRY_INTERVAL);
    let keepalive_interval = (inner.presence_ttl / 3).max(Duration::from_millis(100));
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive_interval,
        keepalive_interval,
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(Command::Subscribe { topic, confirmed }) = commands.recv() => {
                let channel = inner.schema.channel(&topic);
                if state.subscribed.contains(&channel) {
                    let _ = confirmed.send(());
                } else if let Some(waiters) = state.pending.get_mut(&channel) {
                    waiters.push(confirmed);
                } else {
                    state.pending.insert(channel.clone(), vec![confirmed]);
                    in_flight.push(subscribe(&mut state, conn.clone(), channel, false));
                }
            }
            Some((channel, repair, outcome)) = in_flight.next() => {
                answered(&inner, &mut state, channel, repair, outcome);
            }
            Some(push) = pushes.recv() => on_push(&inner, &mut state, push),
            _ = retry.tick() => {
                for (channel, repair) in std::mem::take(&mut state.retry) {
                    let followed = inner.schema.topic(&channel).is_some_and(|t| inner.follows(&t));
                    if followed && !state.pending.contains_key(&channel) {
                        state.pending.insert(channel.clone(), Vec::new());
                        in_flight.push(subscribe(&mut state, conn.clone(), channel, repair));
                    }
                }
            }
            _ = sweep.tick() => unsubscribe_idle(&inner, &mut state, &conn).await,
            _ = keepalive.tick() => {
                if !ping(&conn).await {
                    tracing::warn!("a Redis Cluster primary did not answer; resubscribing");
                    resubscribe_all(&inner, &mut state);
                }
            }
        }
    }
}

/// Sends one SSUBSCRIBE (channels of different slots cannot share one).
fn subscribe(
    state: &mut Subscriptions,
    mut conn: ClusterConnection,
    channel: String,
    repair: bool,
) -> BoxFuture<'static, Answer> {
    *state.expected.entry(channel.clone()).or_default() += 1;
    Box::pin(async move {
        let sent = tokio::time::timeout(COMMAND_TIMEOUT, conn.ssubscribe(&channel)).await;
        let outcome = match sent {
            Ok(Ok(())) => Ok(()),
            outcome => {
                tracing::debug!(channel, ?outcome, "SSUBSCRIBE failed; trying again");
                Err(())
            }
        };
        (channel, repair, outcome)
    })
}

/// Records an SSUBSCRIBE's outcome. Confirmed: the waiting streams go on (one that gave up
/// waiting may have read the log too early, so it is repaired). Failed: tried again later,
/// with a repair, since the waiting streams went on without it.
fn answered(
    inner: &Inner,
    state: &mut Subscriptions,
    channel: String,
    repair: bool,
    outcome: Result<(), ()>,
) {
    let waiters = state.pending.remove(&channel).unwrap_or_default();
    if outcome.is_err() {
        // Its confirmation may never come: do not let it hide a resubscription's.
        Subscriptions::take(&mut state.expected, &channel);
        state.retry.insert(channel, true);
        return;
    }
    let mut gave_up = false;
    for waiter in waiters {
        gave_up |= waiter.send(()).is_err();
    }
    if repair || gave_up {
        resync(inner, &channel);
    }
    state.subscribed.insert(channel);
}

/// Handles one push: a message, or a change to a subscription.
fn on_push(inner: &Inner, state: &mut Subscriptions, push: PushInfo) {
    let channel = match push.data.first() {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    match push.kind {
        PushKind::SMessage => {
            if let Some(Value::BulkString(payload)) = push.data.get(1) {
                inner.dispatch(&channel, payload);
            }
        }
        // A confirmation this task did not ask for: the crate resubscribed after a
        // reconnect, and what came meanwhile was lost.
        PushKind::SSubscribe if !Subscriptions::take(&mut state.expected, &channel) => {
            resync(inner, &channel);
        }
        PushKind::SUnsubscribe if !Subscriptions::take(&mut state.expected_gone, &channel) => {
            tracing::info!(channel, "Redis dropped a subscription; subscribing again");
            state.subscribed.remove(&channel);
            state.retry.insert(channel, true);
        }
        PushKind::Disconnection => {
            tracing::warn!("a Redis Cluster pub/sub connection dropped; resubscribing");
            resubscribe_all(inner, state);
        }
        _ => {}
    }
}

/// Subscribes every followed channel again (each confirmation repairs its streams): after
/// a disconnection the crate resubscribes to the same node, which is not enough when that
/// node died and its replica took over.
fn resubscribe_all(inner: &Inner, state: &mut Subscriptions) {
    for channel in inner.channels() {
        state.retry.insert(channel, true);
    }
}

fn resync(inner: &Inner, channel: &str) {
    if let Some(topic) = inner.schema.topic(channel) {
        inner.resync(&topic);
    }
}

/// Unsubscribes from channels no local stream follows any more.
async fn unsubscribe_idle(inner: &Inner, state: &mut Subscriptions, conn: &ClusterConnection) {
    for channel in inner.sweep() {
        state.retry.remove(&channel);
        state.subscribed.remove(&channel);
        *state.expected_gone.entry(channel.clone()).or_default() += 1;
        let mut conn = conn.clone();
        let done = tokio::time::timeout(COMMAND_TIMEOUT, conn.sunsubscribe(&channel)).await;
        if !matches!(done, Ok(Ok(()))) {
            // Still subscribed somewhere: its messages are dropped (nobody follows it).
            Subscriptions::take(&mut state.expected_gone, &channel);
            tracing::debug!(channel, "SUNSUBSCRIBE failed");
        }
    }
}

/// Whether every primary answers a PING (the crate sends it to each).
async fn ping(conn: &ClusterConnection) -> bool {
    let mut conn = conn.clone();
    let answered = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("PING").query_async::<Value>(&mut conn),
    )
    .await;
    matches!(answered, Ok(Ok(_)))
}
