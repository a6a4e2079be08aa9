//! Presence over Redis: each instance keeps a hash of its users' open stream counts and a
//! heartbeat in a sorted set; a user is online while any live instance counts them.
//!
//! The instance's own mirror of its counts is the truth; Redis holds a copy kept up to date
//! one stream at a time (STREAM_DELTA). The heartbeat (every third of the TTL) normally
//! touches only the heartbeat and the hash's expiry, in O(1) whatever the instance serves:
//! rewriting the whole hash each time blocked Redis for ~18 ms per round with 5,000 users
//! (BENCHMARKS.md), the size of the shape's p99 tail. The hash is rewritten from the mirror
//! only when it may differ:
//! - on the first round, and whenever Redis' hash has another number of users than the mirror
//!   (Redis lost it, or reaped this instance while it was cut off);
//! - when this instance's previous heartbeat is missing or too old (it was cut off);
//! - after a stream count update failed (Redis may or may not have applied it);
//! - after the pub/sub connection was re-established (Redis may have restarted and lost
//!   acknowledged writes);
//!
//! and a rewrite counts as a match only if no update was in flight while it ran (one could
//! be applied on top of a snapshot that already held it). What is left undetected (two
//! opposite losses in one round, a count drifting while the user stays online) cannot make
//! anyone look online or offline wrongly for long: when either side's count for a user
//! reaches zero, the number of users differs and the next round rewrites the hash.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
};

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
    /// Stream count updates sent to Redis so far, and those not answered yet.
    updates_begun: u64,
    updates_unanswered: u64,
    /// `Some(reconnects)` while Redis' hash is known to equal `streams`: the last rewrite
    /// overlapped no update, and no update failed since. Holds the pub/sub reconnect count
    /// of that rewrite, since a reconnect means Redis may have lost writes.
    matched_at: Option<u64>,
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

/// What a full rewrite needs: the mirror and the updates counter when it was taken.
struct Snapshot {
    streams: Vec<(UserId, i64)>,
    updates_begun: u64,
    clean: bool,
    reconnects: u64,
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
            local.updates_begun += 1;
            local.updates_unanswered += 1;
        }
        let total = STREAM_DELTA
            .key(self.inner.schema.presence(&self.inner.instance))
            .key(self.inner.schema.instances())
            .arg(user_id)
            .arg(delta)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base())
            .arg(&self.inner.instance)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error);
        let mut local = self.local();
        local.updates_unanswered -= 1;
        if total.is_err() {
            // Redis may or may not have applied it: the next round rewrites the hash. A
            // stream that failed to open will not exist: take it back out of the mirror. A
            // failed close stays recorded (the stream is gone).
            local.matched_at = None;
            if delta > 0 {
                local.add(user_id, -delta);
            }
        }
        total
    }

    /// The steady round: heartbeat, the hash's expiry and reaping, if Redis' hash still
    /// matches the mirror. `None` when it may not: the caller rewrites it.
    async fn maintain_steady(&self) -> Result<Option<Vec<UserId>>, BusError> {
        let users = {
            let local = self.local();
            match local.matched_at {
                Some(reconnects) if reconnects == self.inner.reconnects.load(Ordering::SeqCst) => {
                    local.streams.len()
                }
                _ => return Ok(None),
            }
        };
        let (matched, gone): (bool, Vec<UserId>) = MAINTAIN_STEADY
            .key(self.inner.schema.instances())
            .key(self.inner.schema.presence(&self.inner.instance))
            .arg(&self.inner.instance)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base())
            .arg(users)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        Ok(matched.then_some(gone))
    }

    /// Rewrites the hash from the mirror (see the module's docs for when).
    async fn maintain_rewriting(&self) -> Result<Vec<UserId>, BusError> {
        let snapshot = {
            let mut local = self.local();
            local.matched_at = None;
            Snapshot {
                streams: local
                    .streams
                    .iter()
                    .map(|(user, count)| (user.clone(), *count))
                    .collect(),
                updates_begun: local.updates_begun,
                clean: local.updates_unanswered == 0,
                reconnects: self.inner.reconnects.load(Ordering::SeqCst),
            }
        };
        let mut script = MAINTAIN.key(self.inner.schema.instances());
        script
            .key(self.inner.schema.presence(&self.inner.instance))
            .arg(&self.inner.instance)
            .arg(self.ttl_ms())
            .arg(self.inner.schema.presence_base());
        for (user, count) in &snapshot.streams {
            script.arg(user).arg(count);
        }
        let (gone, back): (Vec<UserId>, Vec<UserId>) = script
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(bus_error)?;
        {
            let mut local = self.local();
            if snapshot.clean
                && local.updates_unanswered == 0
                && local.updates_begun == snapshot.updates_begun
            {
                local.matched_at = Some(snapshot.reconnects);
            }
        }
        if !back.is_empty() {
            tracing::warn!(
                users = back.len(),
                "presence restored after Redis lost it or considered this instance dead"
            );
        }
        Ok(gone.into_iter().chain(back).collect())
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
}
