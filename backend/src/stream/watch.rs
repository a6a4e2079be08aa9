//! The send deadline: a stream whose client takes nothing for `--send-timeout` is ended.
//!
//! hyper takes a response body's next chunk only once the previous one has found room in
//! the client's flow-control window. A stream whose client stopped reading is therefore
//! not polled any more: its own timers cannot fire, and a status sent on it would wait
//! behind the events the client does not take. So each body marks that it was polled, and
//! one sweeper per instance looks at every stream, noting when it last found the mark. A
//! healthy stream is polled at least once per heartbeat interval (its heartbeat timer wakes
//! it, and an idle body is polled as soon as it is woken), so one not polled for a heartbeat
//! interval plus the send timeout is stuck, and its connection is closed. That reaches the client at once, as a broken call
//! (UNAVAILABLE), and the client resumes with its cursors and gets everything, in order,
//! from the log. Over HTTP/2 the other calls on that connection break too; they are the
//! same client's, and resume the same way (behind a proxy that multiplexes many clients on
//! one upstream connection, turn the deadline off with `--send-timeout 0`).
//!
//! Whether the body was last left waiting on the client or on us cannot be seen from here
//! (the body frames several events per chunk, and hyper keeps the last chunk itself), so a
//! session stuck on a dependency for that long would be ended too: the store's calls time
//! out long before (Redis after 3 s).
//!
//! What a stuck stream holds meanwhile is bounded anyway (its outbox and one catch-up
//! batch); the deadline gives the connection and the stream's place back.
//!
//! A poll only sets a flag: it happens once or twice per delivery, and reading the clock
//! there cost a few per cent of the fan-out's CPU. The sweeper reads the clock once per
//! round instead. A stream is thus ended at most one round later than its deadline, never
//! earlier, and a late round (a busy runtime) cannot make a healthy stream look stuck.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{
    listener::ConnectionControl,
    metrics::{Limit, Rejections},
};

/// Every open stream, for the sweeper.
#[derive(Debug, Default)]
pub(crate) struct SendWatch {
    streams: Mutex<Vec<Entry>>,
}

/// The sweeper's record of one stream.
#[derive(Debug)]
struct Entry {
    watched: Weak<Watched>,
    /// When the sweeper last found the stream polled (or began watching it).
    last_seen_polled: Instant,
    /// The sweeper ended it (so it is counted once).
    ended: bool,
}

/// One stream's mark, set by its body, and its connection.
#[derive(Debug)]
pub(crate) struct Watched {
    /// Set by every poll of the body, cleared by the sweeper when it looks.
    polled: AtomicBool,
    connection: Option<Arc<ConnectionControl>>,
}

impl Watched {
    /// Records a poll of the stream's body: one store, no clock.
    pub(crate) fn polled(&self) {
        self.polled.store(true, Ordering::Relaxed);
    }
}

impl SendWatch {
    /// Watches a new stream carried by `connection` (none in unit tests).
    pub(crate) fn watch(&self, connection: Option<Arc<ConnectionControl>>) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            polled: AtomicBool::new(false),
            connection,
        });
        self.streams
            .lock()
            .expect("send watch lock poisoned")
            .push(Entry {
                watched: Arc::downgrade(&watched),
                last_seen_polled: Instant::now(),
                ended: false,
            });
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

    /// Closes the connections of streams not found polled for longer than `stuck_after`
    /// and forgets streams that are gone; how many it ended.
    fn end_stuck(&self, stuck_after: Duration) -> usize {
        self.end_stuck_at(Instant::now(), stuck_after)
    }

    /// [`SendWatch::end_stuck`] as of `now`.
    fn end_stuck_at(&self, now: Instant, stuck_after: Duration) -> usize {
        let mut ended = 0;
        self.streams
            .lock()
            .expect("send watch lock poisoned")
            .retain_mut(|entry| {
                let Some(watched) = entry.watched.upgrade() else {
                    return false;
                };
                if watched.polled.swap(false, Ordering::Relaxed) {
                    entry.last_seen_polled = now;
                }
                let quiet = now.duration_since(entry.last_seen_polled);
                if !entry.ended && quiet > stuck_after {
                    entry.ended = true;
                    tracing::warn!(
                        stuck_ms = u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_flags(watch: &SendWatch) -> Vec<bool> {
        let streams = watch.streams.lock().unwrap();
        streams.iter().map(|entry| entry.ended).collect()
    }

    #[test]
    fn only_streams_not_polled_for_the_deadline_are_ended_once_and_gone_ones_forgotten() {
        let watch = SendWatch::default();
        let stuck = watch.watch(None);
        let reading = watch.watch(None);
        let gone = watch.watch(None);
        drop(gone);
        let deadline = Duration::from_secs(30);
        let start = Instant::now();
        let round =
            |seconds: u64| watch.end_stuck_at(start + Duration::from_secs(seconds), deadline);
        reading.polled();
        assert_eq!(round(10), 0, "nobody stuck yet");
        reading.polled();
        assert_eq!(round(25), 0, "not longer than the deadline");
        reading.polled();
        assert_eq!(round(31), 1, "the stream never polled");
        assert_eq!(
            ended_flags(&watch),
            [true, false],
            "the dropped one forgotten"
        );
        stuck.polled();
        reading.polled();
        assert_eq!(round(70), 0, "counted once");
        assert_eq!(ended_flags(&watch), [true, false], "ended stays ended");
        assert_eq!(round(101), 1, "the reader, quiet since 70 s");
    }

    #[test]
    fn a_late_sweep_does_not_end_a_stream_polled_since_the_last_one() {
        let watch = SendWatch::default();
        let reading = watch.watch(None);
        let deadline = Duration::from_secs(30);
        let start = Instant::now();
        // Sweeps far apart (a busy runtime), the stream polled in between each time.
        for minutes in 1..=5 {
            reading.polled();
            let late = start + Duration::from_secs(60 * minutes);
            assert_eq!(watch.end_stuck_at(late, deadline), 0);
        }
        assert_eq!(ended_flags(&watch), [false]);
    }
}
