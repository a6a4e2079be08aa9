//! In-process bus: one `broadcast` channel per topic, created on first subscribe and dropped
//! when its last receiver goes, plus an in-memory presence table.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use natter_proto::v1::Event;
use tokio::sync::broadcast;

use super::{Bus, BusError, BusMessage, SharedEvent, TOPIC_CAPACITY, Topic};

/// The embedded default's bus; cheap to clone (all clones share one state).
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Topic channels. A std mutex: it is never held across an `.await`, and each critical
    /// section is a map lookup, so an async mutex would only add overhead.
    topics: Mutex<HashMap<Topic, broadcast::Sender<SharedEvent>>>,
    /// Size of `topics` after the last sweep of unused channels.
    swept_at: Mutex<usize>,
    /// Open streams per user; a user is online while their count is above zero.
    streams: Mutex<HashMap<String, usize>>,
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes without awaiting: the embedded store calls this while it still holds its
    /// append lock, so that publish order equals seq order.
    pub fn publish_now(&self, topic: &Topic, event: Event) {
        let mut topics = self.inner.topics.lock().expect("bus lock poisoned");
        if let Some(sender) = topics.get(topic)
            && sender.send(Arc::new(BusMessage::event(event))).is_err()
        {
            // Nobody listens any more: forget the channel so the map does not grow.
            topics.remove(topic);
        }
    }

    fn receiver(&self, topic: &Topic) -> broadcast::Receiver<SharedEvent> {
        let mut topics = self.inner.topics.lock().expect("bus lock poisoned");
        // Channels of topics nobody follows any more (closed streams, deleted rooms) are
        // dropped whenever the map has doubled since the last sweep: amortised O(1).
        let mut swept_at = self.inner.swept_at.lock().expect("bus lock poisoned");
        if topics.len() >= (*swept_at * 2).max(64) {
            topics.retain(|_, sender| sender.receiver_count() > 0);
            *swept_at = topics.len();
        }
        drop(swept_at);
        topics
            .entry(topic.clone())
            .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0)
            .subscribe()
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn subscribe(&self, topic: &Topic) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        Ok(self.receiver(topic))
    }

    async fn publish(&self, topic: &Topic, event: Event) -> Result<(), BusError> {
        self.publish_now(topic, event);
        Ok(())
    }

    async fn stream_opened(&self, user_id: &str) -> Result<bool, BusError> {
        let mut streams = self.inner.streams.lock().expect("presence lock poisoned");
        let count = streams.entry(user_id.to_owned()).or_default();
        *count += 1;
        Ok(*count == 1)
    }

    async fn stream_closed(&self, user_id: &str) -> Result<bool, BusError> {
        let mut streams = self.inner.streams.lock().expect("presence lock poisoned");
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

    async fn online(&self, user_ids: &[String]) -> Result<HashSet<String>, BusError> {
        let streams = self.inner.streams.lock().expect("presence lock poisoned");
        Ok(user_ids
            .iter()
            .filter(|id| streams.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn maintain_presence(&self) -> Result<Vec<String>, BusError> {
        // One process: its users' streams die with it.
        Ok(Vec::new())
    }

    async fn ready(&self) -> bool {
        true
    }

    fn reconnects(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::v1::{Heartbeat, event};

    fn heartbeat(t: i64) -> Event {
        Event {
            event: Some(event::Event::Heartbeat(Heartbeat { server_time: t })),
        }
    }

    #[tokio::test]
    async fn delivers_to_subscribers_in_order_and_forgets_idle_topics() {
        let bus = LocalBus::new();
        let topic = Topic::Room("r".into());
        let mut rx = bus.subscribe(&topic).await.unwrap();
        bus.publish(&topic, heartbeat(1)).await.unwrap();
        bus.publish(&topic, heartbeat(2)).await.unwrap();
        assert_eq!(*rx.recv().await.unwrap(), BusMessage::event(heartbeat(1)));
        assert_eq!(*rx.recv().await.unwrap(), BusMessage::event(heartbeat(2)));
        drop(rx);
        bus.publish(&topic, heartbeat(3)).await.unwrap();
        assert!(bus.inner.topics.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn channels_nobody_follows_are_swept() {
        let bus = LocalBus::new();
        let kept = bus.subscribe(&Topic::User("kept".into())).await.unwrap();
        for i in 0..200 {
            drop(bus.subscribe(&Topic::Room(format!("r{i}"))).await.unwrap());
        }
        let topics = bus.inner.topics.lock().unwrap();
        assert!(topics.len() < 70, "{} channels left", topics.len());
        assert!(topics.contains_key(&Topic::User("kept".into())));
        drop(kept);
    }

    #[tokio::test]
    async fn presence_counts_streams() {
        let bus = LocalBus::new();
        assert!(bus.stream_opened("u").await.unwrap());
        assert!(!bus.stream_opened("u").await.unwrap());
        assert!(!bus.stream_closed("u").await.unwrap());
        assert_eq!(bus.online(&["u".into()]).await.unwrap().len(), 1);
        assert!(bus.stream_closed("u").await.unwrap());
        assert!(bus.online(&["u".into()]).await.unwrap().is_empty());
    }
}
