//! Rooms: creating, joining by code, leaving, deleting, direct conversations and members.

use super::Natter;
use crate::{
    auth::{self, Caller},
    domain::{Password, RoomCode, RoomName},
    error::{ApiError, ApiResult},
    ids::{RoomId, UserId},
    records::{RoomKind, RoomRecord},
    seams::Topic,
    views::{MemberView, Notice, RoomChange, RoomView, UserView},
};
use crate::{metrics::Limit, rate_limits::Action};

/// Attempts at drawing an unused join code; with 7.9e17 codes, a second one is rare.
const CODE_ATTEMPTS: usize = 8;

const YOU_ARE_FULL: &str =
    "you are in the most rooms an account may be in (--max-rooms-per-user): leave one first";
const PEER_IS_FULL: &str = "the other user is in the most rooms an account may be in";

impl Natter {
    /// Refuses when the user is in `--max-rooms-per-user` rooms already. Two joins racing
    /// at the limit may both pass: the limit bounds what one account can make the server
    /// hold, and one room over it does not matter for that.
    async fn ensure_room_quota(&self, user_id: &UserId, full: &'static str) -> ApiResult<()> {
        if self.directory.rooms_of(user_id).await?.len() >= self.config.max_rooms_per_user {
            self.metrics.rejections.count(Limit::RoomsPerUser);
            return Err(ApiError::ResourceExhausted {
                what: full,
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Creates a group room owned by the caller.
    #[tracing::instrument(name = "create_room", skip_all, fields(user = %caller.user_id))]
    pub(crate) async fn create_room(
        &self,
        caller: &Caller,
        name: RoomName,
        password: Option<Password>,
    ) -> ApiResult<RoomView> {
        self.limits.account(Action::CreateRoom, &caller.user_id)?;
        self.account(caller).await?;
        self.ensure_room_quota(&caller.user_id, YOU_ARE_FULL)
            .await?;
        let password_hash = match password {
            Some(p) => Some(self.passwords.hash(p.expose().to_owned()).await?),
            None => None,
        };
        let id = RoomId::generate();
        let created_at = auth::now_ms();
        for _ in 0..CODE_ATTEMPTS {
            let room = RoomRecord {
                id: id.clone(),
                name: name.as_str().to_owned(),
                owner_id: caller.user_id.clone(),
                kind: RoomKind::Group {
                    code: RoomCode::generate().as_str().to_owned(),
                    password_hash: password_hash.clone(),
                },
                created_at,
                last_seq: 0,
                first_seq: 1,
            };
            if self.directory.create_room(room.clone()).await? {
                tracing::info!(room = %room.id, "room created");
                let view = RoomView::plain(&room);
                self.announce_to_user(&caller.user_id, view.clone(), RoomChange::Joined)
                    .await;
                return Ok(view);
            }
        }
        Err(ApiError::Internal(anyhow::anyhow!(
            "no free join code after {CODE_ATTEMPTS} attempts"
        )))
    }

    /// Joins a group room by code; joining a room one is already in just returns it.
    #[tracing::instrument(name = "join_room", skip_all, fields(user = %caller.user_id))]
    pub(crate) async fn join_room(
        &self,
        caller: &Caller,
        code: RoomCode,
        password: &str,
    ) -> ApiResult<RoomView> {
        Password::check_size("password", password)?;
        self.limits.account(Action::Join, &caller.user_id)?;
        let user = self.account(caller).await?;
        let room = self
            .directory
            .room_by_code(code.as_str())
            .await?
            .ok_or(ApiError::NotFound("no room has this code"))?;
        // Members are not asked again: joining twice just returns the room.
        let member = self.directory.is_member(&room.id, &user.id).await?;
        if !member {
            self.ensure_room_quota(&user.id, YOU_ARE_FULL).await?;
        }
        if let Some(hash) = room.kind.password_hash()
            && !member
            && !self
                .passwords
                .verify(password.to_owned(), hash.to_owned())
                .await?
        {
            return Err(ApiError::PermissionDenied("wrong room password"));
        }
        let view = RoomView::plain(&room);
        if self.directory.add_member(&room.id, &user.id).await? {
            tracing::info!(room = %room.id, "joined");
            let member = self
                .users_view(std::slice::from_ref(&user))
                .await?
                .remove(0);
            self.announce_member(view.clone(), member, RoomChange::MemberJoined)
                .await;
        }
        // Announced on every call: a retried join (it is idempotent) heals a lost
        // announcement. Streams already following the room ignore a repeat.
        self.confirm_joined(&user.id, view.clone()).await?;
        Ok(view)
    }

    /// Leaves a room. History stays; the owner may still delete it later.
    #[tracing::instrument(name = "leave_room", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub(crate) async fn leave_room(&self, caller: &Caller, room_id: &RoomId) -> ApiResult<()> {
        let (user, room) = self.account_in_room(caller, room_id).await?;
        if self.directory.remove_member(room_id, &user.id).await? {
            let view = self.room_view(&room, &user.id).await?;
            self.announce_to_user(&user.id, view.clone(), RoomChange::Left)
                .await;
            let leaver = UserView {
                user,
                online: false,
            };
            self.announce_member(view, leaver, RoomChange::MemberLeft)
                .await;
        }
        Ok(())
    }

    /// Deletes a room with its history: the owner or an admin only.
    #[tracing::instrument(name = "delete_room", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub(crate) async fn delete_room(&self, caller: &Caller, room_id: &RoomId) -> ApiResult<()> {
        let room = self.owned_room(caller, room_id).await?;
        let former_members = self.directory.delete_room(room_id).await?;
        tracing::info!("room deleted");
        let view = RoomView::plain(&room);
        let notice = Notice::RoomChanged {
            room: view.clone(),
            change: RoomChange::Deleted,
            user: None,
        };
        self.announce(Topic::Room(room.id), notice).await;
        // Also on each member's own topic: a stream that subscribed to the room just as it
        // was deleted, or whose room receiver lagged, still learns of it.
        for member in former_members {
            self.announce_to_user(&member, view.clone(), RoomChange::Deleted)
                .await;
        }
        Ok(())
    }

    /// The caller's rooms, oldest first.
    #[tracing::instrument(name = "list_rooms", skip_all, fields(user = %caller.user_id))]
    pub(crate) async fn list_rooms(&self, caller: &Caller) -> ApiResult<Vec<RoomView>> {
        self.account(caller).await?;
        let mut rooms = self.directory.rooms_of(&caller.user_id).await?;
        rooms.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut views = Vec::with_capacity(rooms.len());
        for room in &rooms {
            views.push(self.room_view(room, &caller.user_id).await?);
        }
        Ok(views)
    }

    /// The direct room between the caller and another user, created on first use. Either
    /// side gets the same room. The caller comes back if they had left; the other side does
    /// not (nobody is put back into a conversation they left), and a user who blocked the
    /// caller is not reached at all.
    #[tracing::instrument(name = "open_direct", skip_all, fields(user = %caller.user_id, peer = %peer_id))]
    pub(crate) async fn open_direct(
        &self,
        caller: &Caller,
        peer_id: &UserId,
    ) -> ApiResult<RoomView> {
        self.limits.account(Action::OpenDirect, &caller.user_id)?;
        let me = self.account(caller).await?;
        if *peer_id == me.id {
            return Err(crate::domain::InvalidField::new("user_id", "must be another user").into());
        }
        let peer = self
            .directory
            .user(peer_id)
            .await?
            .ok_or(ApiError::NotFound("user not found"))?;
        if peer.blocked.contains(&me.id) {
            return Err(ApiError::PermissionDenied(
                "this user does not take direct messages from you",
            ));
        }
        if me.blocked.contains(&peer.id) {
            return Err(ApiError::FailedPrecondition(
                "you blocked this user: unblock them first",
            ));
        }
        let mut pair = [me.id.clone(), peer.id.clone()];
        pair.sort();
        // A direct room either side is in already costs that side nothing.
        for (user, full) in [(&me.id, YOU_ARE_FULL), (&peer.id, PEER_IS_FULL)] {
            let rooms = self.directory.rooms_of(user).await?;
            let in_it = rooms
                .iter()
                .any(|room| matches!(&room.kind, RoomKind::Direct { pair: p } if *p == pair));
            if !in_it && rooms.len() >= self.config.max_rooms_per_user {
                self.metrics.rejections.count(Limit::RoomsPerUser);
                return Err(ApiError::ResourceExhausted {
                    what: full,
                    retry_after: None,
                });
            }
        }
        let mut names = [me.username.clone(), peer.username.clone()];
        names.sort();
        let candidate = RoomRecord {
            id: RoomId::generate(),
            name: names.join(" & "),
            owner_id: me.id.clone(),
            kind: RoomKind::Direct { pair },
            created_at: auth::now_ms(),
            last_seq: 0,
            first_seq: 1,
        };
        let (room, created) = self.directory.open_direct(candidate).await?;
        if created {
            let view = self.room_view(&room, &peer.id).await?;
            self.announce_to_user(&peer.id, view, RoomChange::Joined)
                .await;
        } else {
            self.directory.add_member(&room.id, &me.id).await?;
        }
        // As for joins: the caller's own streams hear of the room on every call.
        let view = self.room_view(&room, &me.id).await?;
        self.confirm_joined(&me.id, view.clone()).await?;
        Ok(view)
    }

    /// Members of a room the caller belongs to, owner first, with presence.
    #[tracing::instrument(name = "list_members", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub(crate) async fn list_members(
        &self,
        caller: &Caller,
        room_id: &RoomId,
    ) -> ApiResult<Vec<MemberView>> {
        let (_, room) = self.account_in_room(caller, room_id).await?;
        let mut members = self.members_with_presence(room_id).await?;
        let owner = &room.owner_id;
        members.sort_by(|a, b| {
            (a.user.id != *owner, &a.user.username).cmp(&(b.user.id != *owner, &b.user.username))
        });
        Ok(members
            .into_iter()
            .map(|user| MemberView {
                is_owner: user.user.id == *owner,
                user,
            })
            .collect())
    }

    /// A room's members with their presence, in no particular order.
    pub(crate) async fn members_with_presence(&self, room_id: &RoomId) -> ApiResult<Vec<UserView>> {
        let ids = self.directory.members_of(room_id).await?;
        let users = self.directory.users(&ids).await?;
        self.users_view(&users).await
    }
}
