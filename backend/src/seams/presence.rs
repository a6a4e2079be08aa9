//! The Presence seam: who holds an event stream right now, across instances.

use std::collections::HashSet;

use async_trait::async_trait;

use super::log::BusError;
use crate::ids::UserId;

/// Users' open streams, counted per instance and across the fleet.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records one more open stream of a user; how many the user has open now, across the
    /// fleet and counting this one (1: the user just came online). Counted atomically, so
    /// a limit checked against it cannot be passed by streams opening at once.
    async fn stream_opened(&self, user_id: &UserId) -> Result<u64, BusError>;
    /// Records one stream of a user closing; true if the user just went offline.
    async fn stream_closed(&self, user_id: &UserId) -> Result<bool, BusError>;
    /// Which of these users are online.
    async fn online(&self, user_ids: &[UserId]) -> Result<HashSet<UserId>, BusError>;
    /// Refreshes this instance's liveness and returns users who just went offline because
    /// the instance holding their streams died; called periodically.
    async fn maintain_presence(&self) -> Result<Vec<UserId>, BusError>;
    /// Times this instance rewrote the fleet's copy of its counts from its own (where there
    /// is such a copy): rewrites that keep coming say the copy keeps disagreeing, or that
    /// streams churn too fast for a round to find no update in flight.
    fn rewrites(&self) -> u64;
}
