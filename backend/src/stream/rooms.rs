//! The rooms a stream follows: subscribing and replaying from cursors, catching up from the
//! log, and following rooms joined, left or deleted while the stream is open.

use std::collections::HashMap;

use natter_proto::v1::{self as pb, RoomChange, event::Event as Ev};
use tokio_stream::{wrappers::BroadcastStream, wrappers::errors::BroadcastStreamRecvError};

use super::{CATCH_UP_BATCH, End, Session};
use crate::{
    convert,
    error::ApiError,
    ids::RoomId,
    metrics::Metrics,
    records::RoomRecord,
    seams::{BusMessage, EventKind, SharedEvent, Topic},
};

/// Rooms up to this many members get their presence repaired after a hole in their feed
/// (see [`Session::send_presence_of`]).
const PRESENCE_REPAIR_MAX_MEMBERS: usize = 200;

impl Session {
    /// Follows every room of the user, sends `Ready`, then replays each room from its cursor.
    pub(super) async fn subscribe(&mut self, request: pb::SubscribeRequest) -> Result<(), End> {
        // The user's own topic first: a room joined from now on is announced there.
        self.own = Some(BroadcastStream::new(
            self.natter
                .follow(&Topic::User(self.user().id.clone()))
                .await?,
        ));
        let rooms = self.natter.rooms_of(&self.user().id).await?;
        self.follows.reserve_exact(rooms.len());
        for room in &rooms {
            let receiver = self.natter.follow(&Topic::Room(room.id.clone())).await?;
            self.follows.insert(room.id.clone(), receiver);
        }
        let mut views = Vec::with_capacity(rooms.len());
        for room in &rooms {
            views.push(convert::room_view(
                &self.natter.room_view(room, &self.user().id).await?,
            ));
        }
        let heartbeat_interval_ms =
            u32::try_from(self.natter.config().heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        self.send(Ev::Ready(pb::Ready {
            rooms: views,
            heartbeat_interval_ms,
        }))
        .await?;

        let cursors: HashMap<&str, u64> = request
            .resume
            .iter()
            .map(|c| (c.room_id.as_str(), c.after_seq))
            .collect();
        for room in &rooms {
            // Without a cursor, the room starts at its newest message at subscription time;
            // catching up from there still delivers anything sent since `rooms_of`.
            // A cursor beyond the log (a confused client) is clamped, or it would swallow
            // the next messages as duplicates.
            let start = cursors
                .get(room.id.as_str())
                .copied()
                .unwrap_or(room.last_seq);
            self.follow_from(room, start.min(room.last_seq)).await?;
        }
        Ok(())
    }

    /// Starts delivering a room's messages after `after_seq`, signalling trimmed history.
    async fn follow_from(&mut self, room: &RoomRecord, after_seq: u64) -> Result<(), End> {
        if let Some(index) = self.follows.position(&room.id) {
            self.follows.at_mut(index).delivered = Some(after_seq);
        }
        self.catch_up(&room.id).await
    }

    /// Delivers everything in the log after the room's last delivered seq.
    async fn catch_up(&mut self, room_id: &RoomId) -> Result<(), End> {
        loop {
            if self.natter.shutdown().is_cancelled() {
                return Err(End::Draining);
            }
            // Looked up per batch: nothing removes a follow while this runs.
            let Some(index) = self.follows.position(room_id) else {
                return Ok(());
            };
            let Some(after) = self.follows.at_mut(index).delivered else {
                return Ok(());
            };
            let batch = self
                .natter
                .log_after(room_id, after, CATCH_UP_BATCH)
                .await?;
            let Some(first) = batch.first() else {
                return Ok(());
            };
            if first.seq > after + 1 {
                self.send(Ev::HistoryTrimmed(pb::HistoryTrimmed {
                    room_id: room_id.to_string(),
                    after_seq: after,
                    first_available_seq: first.seq,
                }))
                .await?;
            }
            let full = batch.len() == CATCH_UP_BATCH;
            for message in &batch {
                self.send_message(index, message).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Delivers a live event of the room followed at `index`. The in-order message is the
    /// hot path; everything else (repair, catch-up, a deleted room) is boxed, see
    /// `Session::serve`, and clones the room's id first, as it may change the follows.
    pub(super) async fn on_room_event(
        &mut self,
        index: usize,
        item: Result<SharedEvent, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        let shared = match item {
            Ok(shared) => shared,
            Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                let room_id = self.follows.room_id(index).clone();
                tracing::debug!(room = %room_id, skipped, "stream lagged; repairing from the log");
                return Box::pin(self.repair_room(&room_id)).await;
            }
        };
        let (kind, encoded) = match shared.as_ref() {
            BusMessage::Event { kind, encoded } => (kind, encoded),
            BusMessage::Resync => {
                let room_id = self.follows.room_id(index).clone();
                return Box::pin(self.repair_room(&room_id)).await;
            }
        };
        match kind {
            &EventKind::Message { seq, sent_at } => {
                let follow = self.follows.at_mut(index);
                let Some(delivered) = follow.delivered.as_mut() else {
                    return Ok(());
                };
                if seq <= *delivered {
                    Ok(())
                } else if seq == *delivered + 1 {
                    *delivered = seq;
                    self.send_encoded(encoded.clone()).await?;
                    let metrics = self.natter.metrics();
                    metrics.messages_delivered.inc(self.open.web);
                    let since_append = crate::auth::now_ms().saturating_sub(sent_at);
                    metrics
                        .fanout_latency
                        .observe(std::time::Duration::from_millis(
                            u64::try_from(since_append).unwrap_or(0),
                        ));
                    Ok(())
                } else {
                    let room_id = follow.room_id.clone();
                    Metrics::inc(&self.natter.metrics().stream_repairs);
                    Box::pin(self.catch_up(&room_id)).await
                }
            }
            EventKind::Typing { user_id }
                if user_id.as_deref() == Some(self.user().id.as_str()) =>
            {
                Ok(())
            }
            EventKind::Control(event) => match &event.event {
                Some(Ev::RoomChanged(change)) if change.change == RoomChange::Deleted as i32 => {
                    let room_id = self.follows.room_id(index).clone();
                    Box::pin(self.drop_room(&room_id, change.clone())).await
                }
                _ => self.send_encoded(encoded.clone()).await,
            },
            EventKind::Typing { .. } | EventKind::Plain => self.send_encoded(encoded.clone()).await,
            EventKind::Empty => Ok(()),
        }
    }

    pub(super) async fn on_own_event(
        &mut self,
        item: Result<SharedEvent, BroadcastStreamRecvError>,
    ) -> Result<(), End> {
        let shared = match item {
            Ok(shared) => shared,
            Err(BroadcastStreamRecvError::Lagged(_)) => return self.resync_rooms().await,
        };
        let event = match shared.as_ref() {
            BusMessage::Event {
                kind: EventKind::Control(event),
                ..
            } => event,
            BusMessage::Event { .. } => return Ok(()),
            BusMessage::Resync => return self.resync_rooms().await,
        };
        if let Some(Ev::SessionEnded(ended)) = &event.event {
            return self.check_session(Some(ended.clone())).await;
        }
        let Some(Ev::RoomChanged(change)) = &event.event else {
            return Ok(());
        };
        let Some(room) = &change.room else {
            return Ok(());
        };
        // Published by this server, so the id is one it made.
        let room_id = RoomId::from_trusted(room.id.clone());
        match RoomChange::try_from(change.change) {
            Ok(RoomChange::Joined) => {
                if self.follows.is_followed(&room_id) {
                    return Ok(());
                }
                let Some(record) = self.natter.room_record(&room_id).await? else {
                    return Ok(()); // deleted meanwhile
                };
                // Messages sent between the join and this subscription are in the log.
                self.follow(&record, room.last_seq, Some(change.clone()))
                    .await
            }
            Ok(RoomChange::Left | RoomChange::Deleted) => {
                self.drop_room(&room_id, change.clone()).await
            }
            _ => Ok(()),
        }
    }

    /// Starts following a room: subscribes to its topic, announces it (if `joined` is given),
    /// then delivers its log after `after_seq`.
    async fn follow(
        &mut self,
        room: &RoomRecord,
        after_seq: u64,
        joined: Option<pb::RoomChanged>,
    ) -> Result<(), End> {
        let receiver = self.natter.follow(&Topic::Room(room.id.clone())).await?;
        self.follows.insert(room.id.clone(), receiver);
        if let Some(change) = joined {
            self.send(Ev::RoomChanged(change)).await?;
        }
        self.follow_from(room, after_seq).await
    }

    /// Stops following a room and tells the client why, once.
    async fn drop_room(&mut self, room_id: &RoomId, change: pb::RoomChanged) -> Result<(), End> {
        if self.follows.remove(room_id) {
            self.send(Ev::RoomChanged(change)).await?;
        }
        Ok(())
    }

    /// After a hole in a room's live feed (lag, bus reconnect): the room may be gone, or the
    /// user may have left it, while events were missed; otherwise the log fills the hole.
    async fn repair_room(&mut self, room_id: &RoomId) -> Result<(), End> {
        Metrics::inc(&self.natter.metrics().stream_repairs);
        let (room, member) = self
            .natter
            .room_and_membership(room_id, &self.user().id)
            .await?;
        match room {
            Some(_) if member => {
                self.catch_up(room_id).await?;
                self.send_presence_of(room_id).await
            }
            Some(room) => {
                let change = room_changed(convert::room(&room, None), RoomChange::Left);
                self.drop_room(room_id, change).await
            }
            None => {
                let gone = pb::Room {
                    id: room_id.to_string(),
                    ..Default::default()
                };
                self.drop_room(room_id, room_changed(gone, RoomChange::Deleted))
                    .await
            }
        }
    }

    /// After a hole in a room's live feed, the presence notices in it are gone for good:
    /// only messages are in the log. So the client is told every member's presence as it
    /// is now, one notice each (what it would have seen last, had it seen everything). A
    /// room larger than [`PRESENCE_REPAIR_MAX_MEMBERS`] is not: that many notices per
    /// lagging stream would cost more than the stale dots they fix, and the member list
    /// (`ListMembers`) is always current. Typing notices are not repaired: they are
    /// transient, and clients let them expire.
    async fn send_presence_of(&mut self, room_id: &RoomId) -> Result<(), End> {
        let members = self.natter.members_with_presence(room_id).await?;
        if members.len() > PRESENCE_REPAIR_MAX_MEMBERS {
            return Ok(());
        }
        for member in &members {
            self.send(Ev::Presence(pb::PresenceChanged {
                room_id: room_id.to_string(),
                user: Some(convert::user_view(member)),
                online: member.online,
            }))
            .await?;
        }
        Ok(())
    }

    /// Some session of the user ended (`ended`, or unknown after missed events): if it is
    /// this stream's (or the account was disabled), the client hears why (the event's
    /// reason, or the refusal's) and the stream ends with UNAUTHENTICATED.
    async fn check_session(&mut self, ended: Option<pb::SessionEnded>) -> Result<(), End> {
        match self.natter.account(&self.caller).await {
            Ok(_) => Ok(()),
            Err(e @ ApiError::Unauthenticated(reason)) => {
                let ended = ended.unwrap_or_else(|| pb::SessionEnded {
                    reason: reason.to_owned(),
                });
                self.send(Ev::SessionEnded(ended)).await?;
                Err(End::Failed(e))
            }
            Err(e) => Err(End::Failed(e)),
        }
    }

    /// After missing own-topic events: follow rooms joined meanwhile, drop rooms left or
    /// deleted meanwhile, telling the client about each. A session ended meanwhile (its
    /// event among the missed ones) ends the stream.
    async fn resync_rooms(&mut self) -> Result<(), End> {
        Metrics::inc(&self.natter.metrics().room_list_resyncs);
        // The missed events may include this session's end: told as they would have.
        self.check_session(None).await?;
        let rooms = self.natter.rooms_of(&self.user().id).await?;
        for id in self.follows.followed() {
            if !rooms.iter().any(|r| r.id == id) {
                self.repair_room(&id).await?;
            }
        }
        for room in rooms {
            if !self.follows.is_followed(&room.id) {
                let view =
                    convert::room_view(&self.natter.room_view(&room, &self.user().id).await?);
                self.follow(
                    &room,
                    room.last_seq,
                    Some(room_changed(view, RoomChange::Joined)),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn room_changed(room: pb::Room, change: RoomChange) -> pb::RoomChanged {
    pb::RoomChanged {
        room: Some(room),
        change: change as i32,
        user: None,
    }
}
