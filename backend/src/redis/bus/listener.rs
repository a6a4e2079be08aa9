//! The task that owns the instance's one pub/sub connection: connect and resubscribe, then
//! pump until the connection ends (returning why), then again after a jittered backoff.
//! The redis crate's pub/sub connection never reconnects by itself, and what was published
//! while it was down is lost: every (re)connection makes the streams repair from the log.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use rand::Rng;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{COMMAND_TIMEOUT, Command, Inner, SWEEP_INTERVAL};
use crate::seams::Topic;

/// Commands from the bus to its listener.
type Commands = mpsc::UnboundedReceiver<Command>;

/// Most subscriptions sent in one SUBSCRIBE.
const MAX_BATCH: usize = 1024;

/// A stream waiting for its topic's SUBSCRIBE to be confirmed.
type Waiter = (Topic, oneshot::Sender<()>);

/// SUBSCRIBEs sent and not answered yet. The pump keeps dispatching messages meanwhile: a
/// storm of reconnecting streams must not stall the delivery of live events.
type InFlight = FuturesUnordered<BoxFuture<'static, Result<Vec<Waiter>, &'static str>>>;

/// How an attempt to connect went.
enum Connect {
    Ready(PubSubSink, PubSubStream),
    Failed,
    Shutdown,
}

/// Why a connection stopped serving.
enum Ended {
    Shutdown,
    Lost(&'static str),
}

/// Owns the pub/sub connection for the life of the instance.
pub(super) async fn listen(
    inner: Arc<Inner>,
    client: redis::Client,
    mut commands: Commands,
    shutdown: CancellationToken,
) {
    let mut attempt = 0u32;
    let mut ever_connected = false;
    loop {
        if ever_connected || attempt > 0 {
            tokio::select! {
                () = tokio::time::sleep(backoff(attempt)) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let (mut sink, mut stream) =
            match connect_and_resubscribe(&inner, &client, &mut commands, &shutdown).await {
                Connect::Ready(sink, stream) => (sink, stream),
                Connect::Failed => {
                    attempt += 1;
                    continue;
                }
                Connect::Shutdown => return,
            };
        attempt = 0;
        inner.connected.store(true, Ordering::SeqCst);
        if ever_connected {
            inner.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("Redis pub/sub reconnected; repairing streams from the log");
        }
        // Also on the first connection: a stream may have subscribed before it existed.
        inner.resync_all();
        ever_connected = true;
        let ended = pump(&inner, &mut sink, &mut stream, &mut commands, &shutdown).await;
        inner.connected.store(false, Ordering::SeqCst);
        match ended {
            Ended::Shutdown => return,
            Ended::Lost(why) => {
                tracing::warn!(why, "lost the Redis pub/sub connection; reconnecting");
            }
        }
    }
}

/// Opens a pub/sub connection and subscribes it to every channel a local stream follows.
async fn connect_and_resubscribe(
    inner: &Inner,
    client: &redis::Client,
    commands: &mut Commands,
    shutdown: &CancellationToken,
) -> Connect {
    let pubsub = tokio::select! {
        pubsub = client.get_async_pubsub() => pubsub,
        () = shutdown.cancelled() => return Connect::Shutdown,
    };
    let (mut sink, stream) = match pubsub {
        Ok(pubsub) => pubsub.split(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the Redis pub/sub connection");
            return Connect::Failed;
        }
    };
    // Queued subscriptions are covered by the snapshot below and by the Resync after it.
    while commands.try_recv().is_ok() {}
    let channels = inner.channels();
    if !channels.is_empty() {
        let subscribed = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels)).await;
        if !matches!(subscribed, Ok(Ok(()))) {
            tracing::warn!(outcome = ?subscribed, "cannot resubscribe");
            return Connect::Failed;
        }
    }
    Connect::Ready(sink, stream)
}

/// Serves one connection: new subscriptions, incoming messages, sweeps of idle channels
/// and keepalive pings, until the connection fails or the server shuts down.
async fn pump(
    inner: &Inner,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    commands: &mut Commands,
    shutdown: &CancellationToken,
) -> Ended {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let keepalive_interval = (inner.presence_ttl / 3).max(Duration::from_millis(100));
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive_interval,
        keepalive_interval,
    );
    let mut in_flight = InFlight::new();
    loop {
        let step = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            Some(command) = commands.recv() => {
                in_flight.push(subscribe(inner, sink.clone(), command, commands));
                Ok(())
            }
            Some(answered) = in_flight.next() => answered.map(|waiters| confirm(inner, waiters)),
            message = stream.next() => match message {
                Some(message) => {
                    inner.dispatch(message.get_channel_name(), message.get_payload_bytes());
                    Ok(())
                }
                None => Err("the connection closed"),
            },
            _ = sweep.tick() => unsubscribe_idle(inner, sink).await,
            _ = keepalive.tick() => ping(sink).await,
        };
        if let Err(why) = step {
            return Ended::Lost(why);
        }
    }
}

/// Subscribes the connection to the topic of `first` and of every other subscription
/// already queued (up to [`MAX_BATCH`]), in one SUBSCRIBE whose answer the returned future
/// waits for.
fn subscribe(
    inner: &Inner,
    mut sink: PubSubSink,
    first: Command,
    commands: &mut Commands,
) -> BoxFuture<'static, Result<Vec<Waiter>, &'static str>> {
    let queued = std::iter::from_fn(|| commands.try_recv().ok()).take(MAX_BATCH - 1);
    let mut waiters = Vec::new();
    let mut channels = Vec::new();
    for Command::Subscribe { topic, confirmed } in std::iter::once(first).chain(queued) {
        if !inner.follows(&topic) {
            continue; // swept meanwhile: nobody waits for it any more
        }
        channels.push(inner.schema.channel(&topic));
        waiters.push((topic, confirmed));
    }
    Box::pin(async move {
        if !channels.is_empty() {
            let subscribed = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels)).await;
            if !matches!(subscribed, Ok(Ok(()))) {
                return Err("SUBSCRIBE failed");
            }
        }
        Ok(waiters)
    })
}

/// Tells the streams that waited that their topics are subscribed.
fn confirm(inner: &Inner, waiters: Vec<Waiter>) {
    for (topic, confirmed) in waiters {
        if confirmed.send(()).is_err() {
            // The subscriber stopped waiting and may have read the log before this
            // SUBSCRIBE took effect: make it read again.
            inner.resync(&topic);
        }
    }
}

/// Unsubscribes from channels no local stream follows any more.
async fn unsubscribe_idle(inner: &Inner, sink: &mut PubSubSink) -> Result<(), &'static str> {
    let idle = inner.sweep();
    if idle.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&idle)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err("UNSUBSCRIBE failed"),
    }
}

/// A half-open connection (a partition without a reset) never ends the stream: an
/// unanswered PING is how it is noticed. (In subscribed mode the answer is a
/// `["pong", ""]` array, hence `Value`.)
async fn ping(sink: &mut PubSubSink) -> Result<(), &'static str> {
    let answered = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
    match answered {
        Ok(Ok(_)) => Ok(()),
        _ => Err("the connection did not answer a PING"),
    }
}

/// Jittered exponential backoff: 100 ms doubling up to 5 s, each between 50% and 100%.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(ceiling / 2..=ceiling))
}
