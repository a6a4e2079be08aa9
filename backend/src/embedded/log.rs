//! The embedded Log: appends go to the appender thread (one writer, group commits; one task
//! publishes in seq order); ranges are read from the messages table; following is the in-process
//! fan-out.

use async_trait::async_trait;
use natter_proto::v1::Event;
use redb::ReadableDatabase;
use tokio::sync::broadcast;

use super::{
    store::EmbeddedStore,
    tables::{MESSAGES, decode},
};
use crate::{
    ids::RoomId,
    records::MessageRecord,
    seams::{Appended, BusError, Directory, Log, NewMessage, SharedEvent, StoreResult, Topic},
};

#[async_trait]
impl Log for EmbeddedStore {
    async fn append(&self, new: NewMessage) -> StoreResult<Appended> {
        self.inner.appender.append(new).await
    }

    async fn messages_after(
        &self,
        room_id: &RoomId,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let room_id = room_id.to_owned();
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let start = after_seq.saturating_add(1);
            messages
                .range((room_id.as_str(), start)..=(room_id.as_str(), u64::MAX))?
                .take(limit)
                .map(|e| decode(e?.1.value()))
                .collect()
        })
        .await
    }

    async fn messages_before(
        &self,
        room_id: &RoomId,
        before_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let room_id = room_id.to_owned();
        let end = if before_seq == 0 {
            u64::MAX
        } else {
            before_seq
        };
        self.blocking(move |s| {
            let txn = s.db.begin_read()?;
            let messages = txn.open_table(MESSAGES)?;
            let mut newest_first: Vec<MessageRecord> = messages
                .range((room_id.as_str(), 0)..(room_id.as_str(), end))?
                .rev()
                .take(limit)
                .map(|e| decode(e?.1.value()))
                .collect::<anyhow::Result<_>>()?;
            newest_first.reverse();
            Ok(newest_first)
        })
        .await
    }

    async fn follow(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        Ok(self.inner.fanout.receiver(topic))
    }

    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError> {
        self.inner.fanout.publish_now(topic, event);
        Ok(())
    }

    async fn ready(&self) -> bool {
        Directory::ready(self).await
    }

    fn reconnects(&self) -> u64 {
        0
    }
}
