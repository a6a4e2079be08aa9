//! Presence of one process: a count of open streams per user.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;

use crate::{
    ids::UserId,
    seams::{BusError, Presence},
};

/// Open streams per user; a user is online while their count is above zero.
#[derive(Debug, Default)]
pub struct LocalPresence {
    streams: Mutex<HashMap<UserId, u64>>,
}

#[async_trait]
impl Presence for LocalPresence {
    async fn stream_opened(&self, user_id: &UserId) -> Result<u64, BusError> {
        let mut streams = self.streams.lock().expect("presence lock poisoned");
        let count = streams.entry(user_id.clone()).or_default();
        *count += 1;
        Ok(*count)
    }

    async fn stream_closed(&self, user_id: &UserId) -> Result<bool, BusError> {
        let mut streams = self.streams.lock().expect("presence lock poisoned");
        match streams.get_mut(user_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                Ok(false)
            }
            Some(_) => {
                streams.remove(user_id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn online(&self, user_ids: &[UserId]) -> Result<HashSet<UserId>, BusError> {
        let streams = self.streams.lock().expect("presence lock poisoned");
        Ok(user_ids
            .iter()
            .filter(|id| streams.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn maintain_presence(&self) -> Result<Vec<UserId>, BusError> {
        // One process: its users' streams die with it.
        Ok(Vec::new())
    }

    fn rewrites(&self) -> u64 {
        // The counts are kept here only: there is no copy to rewrite.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn presence_counts_streams() {
        let presence = LocalPresence::default();
        assert_eq!(
            presence
                .stream_opened(&UserId::from_trusted("u"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            presence
                .stream_opened(&UserId::from_trusted("u"))
                .await
                .unwrap(),
            2
        );
        assert!(
            !presence
                .stream_closed(&UserId::from_trusted("u"))
                .await
                .unwrap()
        );
        assert_eq!(
            presence
                .online(&[UserId::from_trusted("u")])
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            presence
                .stream_closed(&UserId::from_trusted("u"))
                .await
                .unwrap()
        );
        assert!(
            presence
                .online(&[UserId::from_trusted("u")])
                .await
                .unwrap()
                .is_empty()
        );
    }
}
