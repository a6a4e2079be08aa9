//! The chat's behaviour, independent of the wire: every RPC and REST endpoint calls into
//! [`Natter`]. Inputs are validated domain values; outputs are the API's message types.

mod accounts;
mod announcements;
pub(crate) mod messages;
mod moderation;
mod rooms;

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{Caller, TokenKeys},
    config::Config,
    error::{ApiError, ApiResult},
    ids::{RoomId, UserId},
    records::{RoomRecord, UserRecord},
    seams::{Directory, Log, Presence, SharedEvent, Topic},
    views::{RoomView, UserView},
};

/// Shared state of one server instance: its seams, keys and lifecycle handles. Private:
/// the API, the streams and the server use the narrow methods below, and only the service
/// talks to the seams.
pub struct Natter {
    /// Accounts, rooms and memberships.
    directory: Arc<dyn Directory>,
    /// Message logs and event fan-out.
    log: Arc<dyn Log>,
    /// Who is online.
    presence: Arc<dyn Presence>,
    /// Access-token signing and verification.
    keys: TokenKeys,
    /// Password hashing within bounds.
    passwords: crate::passwords::Passwords,
    /// The configuration this instance runs with.
    config: Config,
    /// Cancelled when the server starts draining; every stream loop watches it.
    shutdown: CancellationToken,
    /// Tracks stream tasks so shutdown can wait for them to finish cleanly.
    tasks: TaskTracker,
    /// Counters for `/metrics`.
    metrics: crate::metrics::Metrics,
    /// Rate limit of typing events.
    typing: messages::TypingThrottle,
    /// Rate limits per client address and per account.
    limits: crate::rate_limits::RateLimits,
    /// Where the admin listener is bound, once it is (`--admin-listen` may ask for port 0).
    admin_address: std::sync::OnceLock<std::net::SocketAddr>,
}

/// The seams an instance runs on.
pub(crate) struct Seams {
    /// Accounts, rooms and memberships.
    pub directory: Arc<dyn Directory>,
    /// Message logs and event fan-out.
    pub log: Arc<dyn Log>,
    /// Who is online.
    pub presence: Arc<dyn Presence>,
}

impl Natter {
    /// An instance over its seams.
    pub(crate) fn new(
        seams: Seams,
        keys: TokenKeys,
        passwords: crate::passwords::Passwords,
        metrics: crate::metrics::Metrics,
        config: Config,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let limits = crate::rate_limits::RateLimits::new(
            config.rate_limits,
            config.rate_limit_exempt.clone(),
            metrics.rejections.clone(),
        );
        Self {
            limits,
            admin_address: std::sync::OnceLock::new(),
            directory: seams.directory,
            log: seams.log,
            presence: seams.presence,
            keys,
            passwords,
            config,
            shutdown,
            tasks,
            metrics,
            typing: Default::default(),
        }
    }

    /// Where the admin listener is bound, if it is.
    pub fn admin_address(&self) -> Option<std::net::SocketAddr> {
        self.admin_address.get().copied()
    }

    /// Records where the admin listener is bound.
    pub(crate) fn admin_bound(&self, address: std::net::SocketAddr) {
        let _ = self.admin_address.set(address);
    }

    /// The configuration this instance runs with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Cancelled when the instance starts draining.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The stream tasks, which a drain waits for.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Counters for `/metrics`.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Token verification.
    pub(crate) fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// `/metrics` in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .render(self.log.reconnects(), self.presence.rewrites())
    }

    /// Whether the directory and the log answer, and whether the instance is draining.
    pub(crate) async fn readiness(&self) -> (bool, bool, bool) {
        let (directory, log) = tokio::join!(self.directory.ready(), self.log.ready());
        (directory, log, self.shutdown.is_cancelled())
    }

    /// Keeps this instance's presence heartbeat alive and announces users who went offline
    /// because another instance died without cleaning up; runs until the drain.
    pub(crate) async fn presence_janitor(self: Arc<Self>) {
        let period = (self.config.presence_ttl / 3).max(std::time::Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.presence.maintain_presence().await {
                Ok(changed) if changed.is_empty() => {}
                Ok(changed) => match self.directory.users(&changed).await {
                    Ok(users) => {
                        for user in &users {
                            self.announce_presence(user).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = ?e, "could not read accounts to announce presence")
                    }
                },
                Err(e) => tracing::warn!(error = ?e, "presence maintenance failed"),
            }
            self.limits.forget_quiet();
        }
    }

    /// Starts receiving a topic's events (for an event stream).
    pub(crate) async fn follow(
        &self,
        topic: &Topic,
    ) -> ApiResult<broadcast::Receiver<SharedEvent>> {
        Ok(self.log.follow(topic).await?)
    }

    /// The rooms a user is in, with their current `last_seq`.
    pub(crate) async fn rooms_of(&self, user_id: &UserId) -> ApiResult<Vec<RoomRecord>> {
        Ok(self.directory.rooms_of(user_id).await?)
    }

    /// A room, if it (still) exists.
    pub(crate) async fn room_record(&self, room_id: &RoomId) -> ApiResult<Option<RoomRecord>> {
        Ok(self.directory.room(room_id).await?)
    }

    /// A room, if it (still) exists, and whether `user_id` is (still) in it.
    pub(crate) async fn room_and_membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> ApiResult<(Option<RoomRecord>, bool)> {
        let room = self.directory.room(room_id).await?;
        let member = self.directory.is_member(room_id, user_id).await?;
        Ok((room, member))
    }

    /// Messages of a room's log after `after_seq`, oldest first.
    pub(crate) async fn log_after(
        &self,
        room_id: &RoomId,
        after_seq: u64,
        limit: usize,
    ) -> ApiResult<Vec<crate::records::MessageRecord>> {
        Ok(self.log.messages_after(room_id, after_seq, limit).await?)
    }
}

impl std::fmt::Debug for Natter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Natter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Natter {
    /// The caller's account. A valid token is refused when its account no longer exists,
    /// is disabled, or its session was signed out: this runs on every call and when a
    /// stream opens, so a revocation holds at once, on every instance.
    pub(crate) async fn account(&self, caller: &Caller) -> ApiResult<UserRecord> {
        let user = self
            .directory
            .user(&caller.user_id)
            .await?
            .ok_or(ApiError::Unauthenticated(
                "the account of this token no longer exists",
            ))?;
        if user.disabled {
            return Err(ApiError::Unauthenticated("this account is disabled"));
        }
        if user.session_ended(&caller.session.id, caller.session.started_ms) {
            return Err(ApiError::Unauthenticated(
                "this session was signed out: sign in again",
            ));
        }
        Ok(user)
    }

    /// The caller's account ([`Self::account`]) and a room it is a member of
    /// ([`Self::member_room`]), read at once: over Redis, one round trip where one after
    /// the other took three. The errors come in the same order: the account's first.
    pub(crate) async fn account_in_room(
        &self,
        caller: &Caller,
        room_id: &RoomId,
    ) -> ApiResult<(UserRecord, RoomRecord)> {
        let (account, room) = tokio::join!(self.account(caller), self.member_room(caller, room_id));
        Ok((account?, room?))
    }

    /// The room, if the caller is a member: NOT_FOUND for an unknown room,
    /// PERMISSION_DENIED for a room the caller is not in.
    pub(crate) async fn member_room(
        &self,
        caller: &Caller,
        room_id: &RoomId,
    ) -> ApiResult<RoomRecord> {
        // Both at once (over Redis, one round trip instead of two); the room's absence is
        // told before the membership, as if read one after the other.
        let (room, member) = tokio::join!(
            self.directory.room(room_id),
            self.directory.is_member(room_id, &caller.user_id)
        );
        let room = room?.ok_or(ApiError::NotFound("room not found"))?;
        if !member? {
            return Err(ApiError::PermissionDenied(
                "you are not a member of this room",
            ));
        }
        Ok(room)
    }

    /// A room as `viewer` sees it: direct rooms carry the other participant.
    pub(crate) async fn room_view(
        &self,
        room: &RoomRecord,
        viewer: &UserId,
    ) -> ApiResult<RoomView> {
        let peer = match room.kind.pair() {
            Some(pair) => {
                let peer_id = if pair[0] == *viewer {
                    &pair[1]
                } else {
                    &pair[0]
                };
                match self.directory.user(peer_id).await? {
                    Some(peer) => Some(self.users_view(&[peer]).await?.remove(0)),
                    None => None,
                }
            }
            None => None,
        };
        Ok(RoomView {
            room: room.clone(),
            peer,
        })
    }

    /// Users with their presence, in the given order.
    pub(crate) async fn users_view(&self, users: &[UserRecord]) -> ApiResult<Vec<UserView>> {
        let ids: Vec<UserId> = users.iter().map(|u| u.id.clone()).collect();
        let online = self.presence.online(&ids).await?;
        Ok(users
            .iter()
            .map(|u| UserView {
                online: online.contains(&u.id),
                user: u.clone(),
            })
            .collect())
    }
}
