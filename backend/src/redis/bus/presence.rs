//! Presence over Redis: each instance keeps a hash of its users' open stream counts and a
//! heartbeat in a sorted set; a user is online while any live instance counts them.
//!
//! The instance's own mirror of its counts is the truth; Redis holds a copy kept up to date
//! one stream at a time (STREAM_DELTA), which also counts the updates it applied. The
//! heartbeat (every third of the TTL) normally touches only the heartbeat and the keys'
//! expiry, in O(1) whatever the instance serves: rewriting the whole hash each time blocked
//! Redis for ~18 ms per round with 5,000 users (BENCHMARKS.md), the size of the shape's p99
//! tail. The hash is rewritten from the mirror only when it may differ:
//! - on the first round;
//! - when Redis' hash has another number of users than the mirror (Redis lost it, or
//!   reaped this instance while it was cut off);
//! - when this instance's previous heartbeat is missing or too old (it was cut off);
//! - when Redis applied fewer updates than the instance saw answered (a restart from an
//!   older snapshot, a failover that lost writes) or more than it sent (a client retry
//!   applied twice);
//! - after an update failed or was abandoned (Redis may or may not apply it);
//!
//! and a rewrite counts as a match only if no update was in flight while it ran (one could
//! be applied on top of a snapshot that already held it). A rewrite announces the users it
//! restores and the users it removes, so a stale count cannot leave someone shown online.
//! Under constant churn a rewrite may rarely find no update in flight; rounds then rewrite,
//! as every round did before.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{
    RedisBus, bus_error,
    scripts::{MAINTAIN, MAINTAIN_STEADY, ONLINE, STREAM_DELTA},
};
use crate::{
    ids::UserId,
    seams::{BusError, Presence},
};

/// This instance's side of presence, behind one lock (never held across an await).
#[derive(Default)]
pub(super) struct LocalPresence {
    /// Open streams per user on this instance: the truth Redis' hash copies.
    streams: HashMap<UserId, i64>,
    /// Stream count updates sent to Redis, answered with success, and not answered yet.
    updates_sent: u64,
    updates_applied: u64,
    updates_unanswered: u64,
    /// Whether Redis' hash is known to equal `streams`: the last rewrite overlapped no
    /// update, and none failed or was abandoned since.
    matched: bool,
    /// Rewrites Redis answered (`natter_presence_rewrites_total`).
    rewrites: u64,
}

impl LocalPresence {
    fn add(&mut self, user_id: &UserId, delta: i64) {
        let count = self.streams.entry(user_id.clone()).or_default();
        *count += delta;
        if *count <= 0 {
            self.streams.remove(user_id);
        }
    }

    /// A stream count update leaves for Redis: the mirror changes at once.
    fn update_sent(&mut self, user_id: &UserId, delta: i64) {
        self.add(user_id, delta);
        self.updates_sent += 1;
        self.updates_unanswered += 1;
    }

    /// Redis answered an update. On failure Redis may or may not have applied it: the
    /// next round rewrites the hash. A stream that failed to open will not exist: take it
    /// back out of the mirror. A failed close stays recorded (the stream is gone).
    fn update_answered(&mut self, user_id: &UserId, delta: i64, applied: bool) {
        self.updates_unanswered -= 1;
        if applied {
            self.updates_applied += 1;
        } else {
            self.matched = false;
            if delta > 0 {
                self.add(user_id, -delta);
            }
        }
    }

    /// An update's caller went away before Redis answered: its outcome is unknown.
    fn update_abandoned(&mut self) {
        self.updates_unanswered -= 1;
        self.matched = false;
    }

    /// What the steady round compares with Redis (users, updates applied, updates sent),
    /// or `None` when Redis' hash may differ and must be rewritten.
    fn steady_check(&self) -> Option<(usize, u64, u64)> {
        self.matched
            .then_some((self.streams.len(), self.updates_applied, self.updates_sent))
    }

    /// The mirror as a rewrite sends it. Until the rewrite is answered the hash is not
    /// known to match.
    fn snapshot(&mut self) -> Snapshot {
        self.matched = false;
        Snapshot {
            streams: self
                .streams
                .iter()
                .map(|(user, count)| (user.clone(), *count))
                .collect(),
            updates_sent: self.updates_sent,
            clean: self.updates_unanswered == 0,
        }
    }

    /// Redis answered the rewrite of `snapshot`. Its counter now equals the snapshot's
    /// `updates_sent` (a retry of an update answered since would be counted too). The hash
    /// matches the mirror only if no update overlapped the rewrite: none was in flight when
    /// the snapshot was taken (it could be applied on top of a snapshot that already held
    /// it) and none was sent or is still unanswered since.
    fn rewrite_answered(&mut self, snapshot: &Snapshot) {
        self.rewrites += 1;
        self.matched = snapshot.clean
            && self.updates_unanswered == 0
            && self.updates_sent == snapshot.updates_sent;
        if self.matched {
            self.updates_applied = self.updates_sent;
        }
    }
}

/// One stream count update on its way to Redis. Dropped unanswered (its caller went away:
/// a client left while its stream was opening), its outcome is unknown: the next round
/// rewrites the hash.
struct UpdateInFlight<'a> {
    bus: &'a RedisBus,
    answered: bool,
}

impl Drop for UpdateInFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.bus.local().update_abandoned();
        }
    }
}

/// What a full rewrite needs: the mirror, and the updates sent when it was taken.
struct Snapshot {
    streams: Vec<(UserId, i64)>,
    updates_sent: u64,
    clean: bool,
}

impl RedisBus {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.inner.presence_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalPresence> {
        self.inner.presence.lock().expect("presence lock poisoned")
    }

    async fn stream_delta(&self, user_id: &UserId, delta: i64) -> Result<i64, BusError> {
        self.local().update_sent(user_id, delta);
        let mut in_flight = UpdateInFlight {
            bus: self,
            answered: false,
        };
        let total = STREAM_DELTA
            .key(self.inner.schema.presence(&self.inner.instance))
            .key(self.inner.schema.instances())
            .key(self.inner.schema.presence_updates(&self.inner.instance))
            .arg(user_id)
            .arg(delta)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base())
            .arg(&self.inner.instance)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error);
        in_flight.answered = true;
        self.local().update_answered(user_id, delta, total.is_ok());
        total
    }

    /// The steady round: heartbeat, the keys' expiry and reaping, if Redis' hash still
    /// matches the mirror. `None` when it may not: the caller rewrites it.
    async fn maintain_steady(&self) -> Result<Option<Vec<UserId>>, BusError> {
        let Some((users, applied, sent)) = self.local().steady_check() else {
            return Ok(None);
        };
        let (matched, gone): (bool, Vec<UserId>) = MAINTAIN_STEADY
            .key(self.inner.schema.instances())
            .key(self.inner.schema.presence(&self.inner.instance))
            .key(self.inner.schema.presence_updates(&self.inner.instance))
            .arg(&self.inner.instance)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base())
            .arg(users)
            .arg(applied)
            .arg(sent)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        Ok(matched.then_some(gone))
    }

    /// Rewrites the hash from the mirror (see the module's docs for when).
    async fn maintain_rewriting(&self) -> Result<Vec<UserId>, BusError> {
        let snapshot = self.local().snapshot();
        let mut script = MAINTAIN.key(self.inner.schema.instances());
        script
            .key(self.inner.schema.presence(&self.inner.instance))
            .key(self.inner.schema.presence_updates(&self.inner.instance))
            .arg(&self.inner.instance)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base())
            .arg(snapshot.updates_sent);
        for (user, count) in &snapshot.streams {
            script.arg(user).arg(count);
        }
        let (gone, back, removed): (Vec<UserId>, Vec<UserId>, Vec<UserId>) = script
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        self.local().rewrite_answered(&snapshot);
        if !back.is_empty() || !removed.is_empty() {
            tracing::warn!(
                restored = back.len(),
                removed = removed.len(),
                "presence in Redis differed from this instance's; rewritten and announced"
            );
        }
        Ok(gone.into_iter().chain(back).chain(removed).collect())
    }
}

#[async_trait]
impl Presence for RedisBus {
    async fn stream_opened(&self, user_id: &UserId) -> Result<u64, BusError> {
        Ok(u64::try_from(self.stream_delta(user_id, 1).await?).unwrap_or(0))
    }

    async fn stream_closed(&self, user_id: &UserId) -> Result<bool, BusError> {
        Ok(self.stream_delta(user_id, -1).await? <= 0)
    }

    async fn online(&self, user_ids: &[UserId]) -> Result<HashSet<UserId>, BusError> {
        if user_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let flags: Vec<i64> = ONLINE
            .key(self.inner.schema.instances())
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base())
            .arg(user_ids)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        Ok(user_ids
            .iter()
            .zip(flags)
            .filter(|(_, flag)| *flag == 1)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn maintain_presence(&self) -> Result<Vec<UserId>, BusError> {
        match self.maintain_steady().await? {
            Some(gone) => Ok(gone),
            None => self.maintain_rewriting().await,
        }
    }

    fn rewrites(&self) -> u64 {
        self.local().rewrites
    }
}

#[cfg(test)]
mod tests {
    use super::LocalPresence;
    use crate::ids::UserId;

    fn user(name: &str) -> UserId {
        UserId::from_trusted(name)
    }

    /// A rewrite with nothing in flight: the steady round trusts the hash from then on.
    fn matched_presence() -> LocalPresence {
        let mut local = LocalPresence::default();
        local.update_sent(&user("ann"), 1);
        local.update_answered(&user("ann"), 1, true);
        let snapshot = local.snapshot();
        local.rewrite_answered(&snapshot);
        assert_eq!(local.steady_check(), Some((1, 1, 1)));
        local
    }

    #[test]
    fn a_rewrite_no_update_overlapped_matches() {
        let local = matched_presence();
        assert_eq!(local.rewrites, 1);
    }

    #[test]
    fn an_update_in_flight_when_the_snapshot_was_taken_spoils_the_match() {
        let mut local = matched_presence();
        local.update_sent(&user("bob"), 1);
        let snapshot = local.snapshot();
        // Answered before the rewrite: Redis may apply it on top of the snapshot that
        // already counts it.
        local.update_answered(&user("bob"), 1, true);
        local.rewrite_answered(&snapshot);
        assert_eq!(local.steady_check(), None, "the next round rewrites again");
    }

    #[test]
    fn an_update_sent_while_the_rewrite_ran_spoils_the_match() {
        let mut local = matched_presence();
        let snapshot = local.snapshot();
        local.update_sent(&user("bob"), 1);
        local.update_answered(&user("bob"), 1, true);
        local.rewrite_answered(&snapshot);
        assert_eq!(local.steady_check(), None);
    }

    #[test]
    fn a_failed_or_abandoned_update_spoils_the_match_and_a_failed_opening_leaves_the_mirror() {
        let mut local = matched_presence();
        local.update_sent(&user("bob"), 1);
        local.update_answered(&user("bob"), 1, false);
        assert_eq!(local.steady_check(), None);
        assert!(!local.streams.contains_key(&user("bob")));

        let mut local = matched_presence();
        local.update_sent(&user("ann"), -1);
        local.update_abandoned();
        assert_eq!(local.steady_check(), None);
        assert!(
            !local.streams.contains_key(&user("ann")),
            "the stream is gone"
        );
    }

    #[test]
    fn after_a_matching_rewrite_the_steady_round_counts_from_the_updates_sent() {
        let mut local = matched_presence();
        local.update_sent(&user("bob"), 1);
        local.update_answered(&user("bob"), 1, true);
        assert_eq!(local.steady_check(), Some((2, 2, 2)));
    }
}
