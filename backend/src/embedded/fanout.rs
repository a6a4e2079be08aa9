//! In-process fan-out: one `broadcast` channel per topic, created on first subscribe and
//! dropped when its last receiver goes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use natter_proto::v1::Event;
use tokio::sync::broadcast;

use crate::seams::{BusMessage, SharedEvent, Topic};

/// The embedded store's fan-out; cheap to clone (all clones share one state).
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalFanout {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Topic channels. A std mutex: it is never held across an `.await`, and each critical
    /// section is a map lookup, so an async mutex would only add overhead.
    topics: Mutex<HashMap<Topic, broadcast::Sender<SharedEvent>>>,
    /// Size of `topics` after the last sweep of unused channels.
    swept_at: Mutex<usize>,
}

impl LocalFanout {
    /// Publishes without awaiting: the embedded store calls this from its one publishing
    /// task, before answering, so that publish order equals seq order. The event is encoded
    /// outside the lock, and only when the topic has a channel (a stream on this process
    /// followed it).
    pub(crate) fn publish_now(&self, topic: &Topic, event: Event) {
        let sender = {
            let topics = self.inner.topics.lock().expect("fan-out lock poisoned");
            match topics.get(topic) {
                Some(sender) => sender.clone(),
                None => return,
            }
        };
        if sender.send(Arc::new(BusMessage::event(event))).is_err() {
            // Nobody listens any more: forget the channel so the map does not grow, unless
            // a stream followed it again meanwhile.
            let mut topics = self.inner.topics.lock().expect("fan-out lock poisoned");
            if topics
                .get(topic)
                .is_some_and(|sender| sender.receiver_count() == 0)
            {
                topics.remove(topic);
            }
        }
    }

    /// A receiver of the topic's events from now on.
    pub(crate) fn receiver(&self, topic: &Topic) -> broadcast::Receiver<SharedEvent> {
        let mut topics = self.inner.topics.lock().expect("fan-out lock poisoned");
        // Channels of topics nobody follows any more (closed streams, deleted rooms) are
        // dropped whenever the map has doubled since the last sweep: amortised O(1).
        let mut swept_at = self.inner.swept_at.lock().expect("fan-out lock poisoned");
        if topics.len() >= (*swept_at * 2).max(64) {
            topics.retain(|_, sender| sender.receiver_count() > 0);
            *swept_at = topics.len();
        }
        drop(swept_at);
        topics
            .entry(topic.clone())
            .or_insert_with(|| broadcast::channel(topic.capacity()).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RoomId, UserId};
    use natter_proto::v1::{Heartbeat, event};

    fn heartbeat(t: i64) -> Event {
        Event {
            event: Some(event::Event::Heartbeat(Heartbeat { server_time: t })),
        }
    }

    #[tokio::test]
    async fn delivers_to_subscribers_in_order_and_forgets_idle_topics() {
        let fanout = LocalFanout::default();
        let topic = Topic::Room(RoomId::from_trusted("r"));
        let mut rx = fanout.receiver(&topic);
        fanout.publish_now(&topic, heartbeat(1));
        fanout.publish_now(&topic, heartbeat(2));
        assert_eq!(*rx.recv().await.unwrap(), BusMessage::event(heartbeat(1)));
        assert_eq!(*rx.recv().await.unwrap(), BusMessage::event(heartbeat(2)));
        drop(rx);
        fanout.publish_now(&topic, heartbeat(3));
        assert!(fanout.inner.topics.lock().unwrap().is_empty());
    }

    #[test]
    fn channels_nobody_follows_are_swept() {
        let fanout = LocalFanout::default();
        let kept = fanout.receiver(&Topic::User(UserId::from_trusted("kept")));
        for i in 0..200 {
            drop(fanout.receiver(&Topic::Room(RoomId::from_trusted(format!("r{i}")))));
        }
        let topics = fanout.inner.topics.lock().unwrap();
        assert!(topics.len() < 70, "{} channels left", topics.len());
        assert!(topics.contains_key(&Topic::User(UserId::from_trusted("kept"))));
        drop(kept);
    }
}
