//! The send deadline: a stream whose client takes nothing for `--send-timeout` is ended.
//!
//! hyper takes a response body's next chunk only once the previous one has found room in
//! the client's flow-control window. A stream whose client stopped reading is therefore
//! not polled any more: its own timers cannot fire, and a status sent on it would wait
//! behind the events the client does not take. So each body records its last poll, and one
//! sweeper per instance looks at every stream. A healthy stream is polled at least once per
//! heartbeat interval (its heartbeat timer wakes it, and an idle body is polled as soon as
//! it is woken), so one not polled for a heartbeat interval plus the send timeout is stuck,
//! and its connection is closed. That reaches the client at once, as a broken call
//! (UNAVAILABLE), and the client resumes with its cursors and gets everything, in order,
//! from the log. Over HTTP/2 the other calls on that connection break too; they are the
//! same client's, and resume the same way (behind a proxy that multiplexes many clients on
//! one upstream connection, turn the deadline off with `--send-timeout 0`).
//!
//! Whether the body was last left waiting on the client or on us cannot be seen from here
//! (tonic gathers several events per chunk, and hyper keeps the last chunk itself), so a
//! session stuck on a dependency for that long would be ended too: the store's calls time
//! out long before (Redis after 3 s).
//!
//! What a stuck stream holds meanwhile is bounded anyway (its outbox and one catch-up
//! batch); the deadline gives the connection and the stream's place back.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{
    listener::ConnectionControl,
    metrics::{Limit, Rejections},
};

/// In `last_poll`: the sweeper ended the stream (so it is counted once).
const ENDED: u64 = u64::MAX;

/// Every open stream's last poll, for the sweeper.
#[derive(Debug)]
pub(crate) struct SendWatch {
    epoch: Instant,
    streams: Mutex<Vec<Weak<Watched>>>,
}

/// One stream's entry: when its body was last polled, and its connection.
#[derive(Debug)]
pub(crate) struct Watched {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last poll; [`ENDED`] once the sweeper ended it.
    last_poll: AtomicU64,
    connection: Option<Arc<ConnectionControl>>,
}

impl Watched {
    /// Records a poll of the stream's body: one clock read and one store per poll (a poll
    /// hands on whatever events are ready, not one).
    pub(crate) fn polled(&self) {
        let now = millis(self.epoch.elapsed());
        // A stream already ended stays ended (its connection is going).
        let _ = self
            .last_poll
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                (last != ENDED).then_some(now)
            });
    }
}

impl Default for SendWatch {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            streams: Mutex::new(Vec::new()),
        }
    }
}

impl SendWatch {
    /// Watches a new stream carried by `connection` (none in unit tests).
    pub(crate) fn watch(&self, connection: Option<Arc<ConnectionControl>>) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            epoch: self.epoch,
            last_poll: AtomicU64::new(millis(self.epoch.elapsed())),
            connection,
        });
        self.streams
            .lock()
            .expect("send watch lock poisoned")
            .push(Arc::downgrade(&watched));
        watched
    }

    /// Ends streams not polled for longer than `stuck_after`, checking a few times per
    /// that period. It goes on while the server drains (a stuck client would hold the
    /// drain to its timeout) and stops once draining has begun and no stream is left.
    pub(crate) async fn sweep(
        self: Arc<Self>,
        stuck_after: Duration,
        rejections: Arc<Rejections>,
        draining: CancellationToken,
    ) {
        let period = (stuck_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_seen = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = draining.cancelled(), if !drain_seen => drain_seen = true,
            }
            for _ in 0..self.end_stuck(stuck_after) {
                rejections.count(Limit::SendTimeout);
            }
            if draining.is_cancelled()
                && self
                    .streams
                    .lock()
                    .expect("send watch lock poisoned")
                    .is_empty()
            {
                return;
            }
        }
    }

    /// Closes the connections of streams not polled for longer than `stuck_after` and
    /// forgets streams that are gone; how many it ended.
    fn end_stuck(&self, stuck_after: Duration) -> usize {
        let now = millis(self.epoch.elapsed());
        let limit = millis(stuck_after);
        let mut ended = 0;
        self.streams
            .lock()
            .expect("send watch lock poisoned")
            .retain(|entry| {
                let Some(watched) = entry.upgrade() else {
                    return false;
                };
                let last = watched.last_poll.load(Ordering::Relaxed);
                if last != ENDED && now.saturating_sub(last) > limit {
                    watched.last_poll.store(ENDED, Ordering::Relaxed);
                    tracing::warn!(
                        stuck_ms = now - last,
                        "an event stream's client took nothing for too long: closing its connection"
                    );
                    if let Some(connection) = &watched.connection {
                        connection.close();
                    }
                    ended += 1;
                }
                true
            });
        ended
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(ENDED - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streams_not_polled_for_the_deadline_are_ended_once_and_gone_ones_forgotten() {
        let watch = SendWatch::default();
        let stuck = watch.watch(None);
        let reading = watch.watch(None);
        let gone = watch.watch(None);
        drop(gone);
        // The watch reads the real clock: poll, bounded, until the deadline has passed.
        let deadline = Duration::from_millis(30);
        let started = Instant::now();
        let mut ended = 0;
        while ended == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "never ended");
            reading.polled();
            ended = watch.end_stuck(deadline);
            std::thread::yield_now();
        }
        assert_eq!(ended, 1);
        assert_eq!(stuck.last_poll.load(Ordering::Relaxed), ENDED);
        assert_ne!(reading.last_poll.load(Ordering::Relaxed), ENDED);
        stuck.polled();
        assert_eq!(
            stuck.last_poll.load(Ordering::Relaxed),
            ENDED,
            "ended stays ended"
        );
        assert_eq!(watch.end_stuck(deadline), 0, "counted once");
        assert_eq!(
            watch.streams.lock().unwrap().len(),
            2,
            "the dropped one forgotten"
        );
    }
}
