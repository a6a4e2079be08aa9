//! In-process fan-out: one `broadcast` channel per topic, created on first subscribe and
//! dropped when its last receiver goes.
//!
//! Everything the embedded store publishes goes through one [`PublishQueue`], emptied by one
//! task on the runtime. Appended messages are queued after their senders were answered, so
//! a sender does not wait for the fan-out, and wake-ups of streams come from a runtime
//! thread. One queue for messages, transient events and new followers keeps one order per
//! room: an event published after an append was answered is delivered after that message,
//! and a follower receives exactly what was published after it followed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use natter_proto::v1::Event;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::seams::{BusError, BusMessage, SharedEvent, Topic};

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

/// What the publisher task does, in queue order.
enum Queued {
    /// Publish these events.
    Publish(Vec<(Topic, Event)>),
    /// A receiver of the topic, for a stream that starts following it.
    Follow(Topic, oneshot::Sender<broadcast::Receiver<SharedEvent>>),
}

/// The way to the fan-out: publishes and follows, carried out in the order they are queued.
#[derive(Debug, Clone)]
pub(crate) struct PublishQueue(mpsc::UnboundedSender<Queued>);

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Publish(events) => write!(f, "Publish({} events)", events.len()),
            Queued::Follow(topic, _) => write!(f, "Follow({topic})"),
        }
    }
}

impl PublishQueue {
    /// Queues events for publishing, after everything queued before.
    pub(crate) fn publish(&self, events: Vec<(Topic, Event)>) {
        // Fails only once the runtime, and with it every follower, is gone.
        let _ = self.0.send(Queued::Publish(events));
    }

    /// A receiver of the topic's events published after everything queued so far.
    pub(crate) async fn follow(
        &self,
        topic: &Topic,
    ) -> Result<broadcast::Receiver<SharedEvent>, BusError> {
        let gone = || BusError(anyhow::anyhow!("the embedded fan-out has stopped"));
        let (reply, receiver) = oneshot::channel();
        self.0
            .send(Queued::Follow(topic.clone(), reply))
            .map_err(|_| gone())?;
        receiver.await.map_err(|_| gone())
    }
}

impl LocalFanout {
    /// Starts the task that carries out what is queued, on the current runtime. It ends
    /// when every clone of the queue is gone.
    pub(crate) fn start_publisher(&self) -> anyhow::Result<PublishQueue> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the embedded fan-out publishes on a Tokio runtime")?;
        let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
        let fanout = self.clone();
        runtime.spawn(async move {
            while let Some(work) = queued.recv().await {
                match work {
                    Queued::Publish(events) => {
                        for (topic, event) in events {
                            fanout.publish_now(&topic, event);
                        }
                    }
                    Queued::Follow(topic, reply) => {
                        let _ = reply.send(fanout.receiver(&topic));
                    }
                }
            }
        });
        Ok(PublishQueue(queue))
    }

    /// Publishes without awaiting. The event is encoded outside the lock, and only when the
    /// topic has followers on this process.
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
