//! What the service tells the streams: notices of room changes and presence, published
//! on the users' and rooms' topics, and the presence bookkeeping of streams opening and
//! closing that decides when a user's rooms hear of them.

use super::Natter;
use crate::{
    convert,
    error::{ApiError, ApiResult},
    ids::UserId,
    records::UserRecord,
    seams::Topic,
    views::{Notice, RoomChange, RoomView, UserView},
};

impl Natter {
    /// Publishes a notice, or says why it could not.
    pub(super) async fn publish(&self, topic: &Topic, notice: &Notice) -> ApiResult<()> {
        Ok(self.log.publish(topic, convert::notice(notice)).await?)
    }

    /// Publishes a notice; failures are logged, not returned, because notices are transient
    /// and the action they describe has already been stored.
    pub(crate) async fn announce(&self, topic: Topic, notice: Notice) {
        if let Err(e) = self.publish(&topic, &notice).await {
            tracing::warn!(%topic, error = ?e, "could not publish an event");
        }
    }

    /// Tells `user_id`'s own streams that their room list changed.
    pub(crate) async fn announce_to_user(
        &self,
        user_id: &UserId,
        room: RoomView,
        change: RoomChange,
    ) {
        let notice = Notice::RoomChanged {
            room,
            change,
            user: None,
        };
        self.announce(Topic::User(user_id.clone()), notice).await;
    }

    /// Tells `user_id`'s own streams that they are in `room`, failing if that cannot be
    /// published: their streams follow a room only once they hear of it, so a join must not
    /// report success while its announcement was lost (a retried join heals it).
    pub(crate) async fn confirm_joined(&self, user_id: &UserId, room: RoomView) -> ApiResult<()> {
        let notice = Notice::RoomChanged {
            room,
            change: RoomChange::Joined,
            user: None,
        };
        self.publish(&Topic::User(user_id.clone()), &notice).await
    }

    /// Tells a room's members that someone joined or left.
    pub(crate) async fn announce_member(&self, room: RoomView, user: UserView, change: RoomChange) {
        let topic = Topic::Room(room.room.id.clone());
        let notice = Notice::RoomChanged {
            room,
            change,
            user: Some(user),
        };
        self.announce(topic, notice).await;
    }

    /// Records a stream opening and, if the user just came online, tells their rooms. A
    /// user over `--max-streams-per-user` (counted across the fleet) is refused, and the
    /// stream is taken back out of the count.
    pub(crate) async fn stream_opened(&self, user: &UserRecord) -> ApiResult<()> {
        let open = self.presence.stream_opened(&user.id).await?;
        if open > u64::from(self.config.max_streams_per_user) {
            self.metrics
                .rejections
                .count(crate::metrics::Limit::StreamsPerUser);
            self.stream_closed(user).await;
            return Err(ApiError::ResourceExhausted {
                what: "this account has the most event streams open that it may (close one, \
                       or use one Chat stream for all rooms)",
                retry_after: None,
            });
        }
        if open == 1 {
            self.announce_presence(user).await;
        }
        Ok(())
    }

    /// Records a stream closing and, if the user just went offline, tells their rooms.
    pub(crate) async fn stream_closed(&self, user: &UserRecord) {
        match self.presence.stream_closed(&user.id).await {
            Ok(true) => self.announce_presence(user).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user = %user.id, error = ?e, "could not record a closed stream")
            }
        }
    }

    /// Announces a user's presence. The state published is read again after listing the
    /// rooms, not taken from the transition: two streams opening and closing at once can
    /// announce in either order, and both then publish the state that holds.
    pub(crate) async fn announce_presence(&self, user: &UserRecord) {
        let rooms = match self.directory.rooms_of(&user.id).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(user = %user.id, error = ?e, "could not list rooms for presence");
                return;
            }
        };
        let online = match self.presence.online(std::slice::from_ref(&user.id)).await {
            Ok(online) => online.contains(&user.id),
            Err(e) => {
                tracing::warn!(user = %user.id, error = ?e, "could not read presence");
                return;
            }
        };
        let user = UserView {
            user: user.clone(),
            online,
        };
        for room in rooms {
            let notice = Notice::Presence {
                room_id: room.id.clone(),
                user: user.clone(),
            };
            self.announce(Topic::Room(room.id), notice).await;
        }
    }
}
