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
            let mut local = self.bus.local();
            local.updates_unanswered -= 1;
            local.matched = false;
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
        {
            let mut local = self.local();
            local.add(user_id, delta);
            local.updates_sent += 1;
            local.updates_unanswered += 1;
        }
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
        let mut local = self.local();
        local.updates_unanswered -= 1;
        if total.is_ok() {
            local.updates_applied += 1;
        } else {
            // Redis may or may not have applied it: the next round rewrites the hash. A
            // stream that failed to open will not exist: take it back out of the mirror. A
            // failed close stays recorded (the stream is gone).
            local.matched = false;
            if delta > 0 {
                local.add(user_id, -delta);
            }
        }
        total
    }

    /// The steady round: heartbeat, the keys' expiry and reaping, if Redis' hash still
    /// matches the mirror. `None` when it may not: the caller rewrites it.
    async fn maintain_steady(&self) -> Result<Option<Vec<UserId>>, BusError> {
        let (users, applied, sent) = {
            let local = self.local();
            if !local.matched {
                return Ok(None);
            }
            (
                local.streams.len(),
                local.updates_applied,
                local.updates_sent,
            )
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
        let snapshot = {
            let mut local = self.local();
            local.matched = false;
            Snapshot {
                streams: local
                    .streams
                    .iter()
                    .map(|(user, count)| (user.clone(), *count))
                    .collect(),
                updates_sent: local.updates_sent,
                clean: local.updates_unanswered == 0,
            }
        };
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
        {
            let mut local = self.local();
            local.rewrites += 1;
            // Redis' counter now equals `updates_sent` (a retry of an update answered since
            // the snapshot would be counted too): the steady check starts from there.
            local.matched = snapshot.clean
                && local.updates_unanswered == 0
                && local.updates_sent == snapshot.updates_sent;
            if local.matched {
                local.updates_applied = local.updates_sent;
            }
        }
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
