//! Moderation: owners and admins manage rooms (rotate the join code, remove a member), and
//! admins disable accounts.

use super::Natter;
use crate::{
    auth::Caller,
    domain::{InvalidField, RoomCode},
    error::{ApiError, ApiResult},
    ids::{RoomId, UserId},
    records::{AccountChange, RoomKind, RoomRecord},
    views::{RoomChange, RoomView, UserView},
};

/// Attempts at drawing an unused code; with 7.9e17 codes, a second one is rare.
const CODE_ATTEMPTS: usize = 8;

/// Users one account may block: it bounds the account's record.
const MAX_BLOCKED: usize = 1000;

impl Natter {
    /// The room `room_id`, if the caller is its owner or an admin. Admin rights are read
    /// from the account now, not from when the token was issued.
    pub(super) async fn owned_room(
        &self,
        caller: &Caller,
        room_id: &RoomId,
    ) -> ApiResult<RoomRecord> {
        let user = self.account(caller).await?;
        let room = self
            .directory
            .room(room_id)
            .await?
            .ok_or(ApiError::NotFound("room not found"))?;
        if room.owner_id != caller.user_id && !user.admin {
            return Err(ApiError::PermissionDenied(
                "only the room's owner or an admin may do this",
            ));
        }
        Ok(room)
    }

    /// The group room `room_id`, if the caller is its owner or an admin.
    async fn moderated_room(&self, caller: &Caller, room_id: &RoomId) -> ApiResult<RoomRecord> {
        let room = self.owned_room(caller, room_id).await?;
        if !matches!(room.kind, RoomKind::Group { .. }) {
            return Err(ApiError::FailedPrecondition(
                "direct rooms have no code and no one to remove",
            ));
        }
        Ok(room)
    }

    /// Gives a group room a new join code; the old one stops finding it at once.
    #[tracing::instrument(name = "rotate_room_code", skip_all, fields(user = %caller.user_id, room = %room_id))]
    pub(crate) async fn rotate_room_code(
        &self,
        caller: &Caller,
        room_id: &RoomId,
    ) -> ApiResult<RoomView> {
        self.moderated_room(caller, room_id).await?;
        for _ in 0..CODE_ATTEMPTS {
            let code = RoomCode::generate();
            match self.directory.change_code(room_id, code.as_str()).await? {
                Some(true) => {
                    tracing::info!("join code rotated");
                    let room = self
                        .directory
                        .room(room_id)
                        .await?
                        .ok_or(ApiError::NotFound("room not found"))?;
                    return Ok(RoomView::plain(&room));
                }
                Some(false) => continue,
                None => return Err(ApiError::NotFound("room not found")),
            }
        }
        Err(ApiError::Internal(anyhow::anyhow!(
            "no free join code after {CODE_ATTEMPTS} attempts"
        )))
    }

    /// Removes a member from a group room; they and the room's members are told, as when
    /// someone leaves.
    #[tracing::instrument(name = "remove_member", skip_all, fields(user = %caller.user_id, room = %room_id, member = %member))]
    pub(crate) async fn remove_member(
        &self,
        caller: &Caller,
        room_id: &RoomId,
        member: &UserId,
    ) -> ApiResult<()> {
        let room = self.moderated_room(caller, room_id).await?;
        if *member == room.owner_id {
            return Err(InvalidField::new("user_id", "the owner cannot be removed").into());
        }
        let removed = self
            .directory
            .user(member)
            .await?
            .ok_or(ApiError::NotFound("user not found"))?;
        if !self.directory.remove_member(room_id, member).await? {
            return Err(ApiError::NotFound("this user is not a member of the room"));
        }
        tracing::info!("member removed");
        let view = RoomView::plain(&room);
        self.announce_to_user(member, view.clone(), RoomChange::Left)
            .await;
        let user = self
            .users_view(std::slice::from_ref(&removed))
            .await?
            .remove(0);
        self.announce_member(view, user, RoomChange::MemberLeft)
            .await;
        Ok(())
    }

    /// Admins only: disables or enables an account. Disabling ends its streams.
    #[tracing::instrument(name = "set_account_disabled", skip_all, fields(user = %caller.user_id, target = %target))]
    pub(crate) async fn set_account_disabled(
        &self,
        caller: &Caller,
        target: &UserId,
        disabled: bool,
    ) -> ApiResult<UserView> {
        if !self.account(caller).await?.admin {
            return Err(ApiError::PermissionDenied(
                "only admins may disable accounts",
            ));
        }
        if *target == caller.user_id {
            return Err(crate::domain::InvalidField::new(
                "user_id",
                "must be another account than your own",
            )
            .into());
        }
        let user = self
            .directory
            .change_account(target, &AccountChange::Disabled(disabled))
            .await?
            .ok_or(ApiError::NotFound("user not found"))?;
        tracing::info!(disabled, "account disabled or enabled");
        if disabled {
            self.end_sessions(target, "this account was disabled").await;
        }
        Ok(self
            .users_view(std::slice::from_ref(&user))
            .await?
            .remove(0))
    }

    /// Blocks or unblocks another user for direct rooms.
    #[tracing::instrument(name = "block_user", skip_all, fields(user = %caller.user_id, target = %target, blocked))]
    pub(crate) async fn block_user(
        &self,
        caller: &Caller,
        target: &UserId,
        blocked: bool,
    ) -> ApiResult<()> {
        let me = self.account(caller).await?;
        if *target == me.id {
            return Err(InvalidField::new("user_id", "must be another user").into());
        }
        self.directory
            .user(target)
            .await?
            .ok_or(ApiError::NotFound("user not found"))?;
        if blocked && !me.blocked.contains(target) && me.blocked.len() >= MAX_BLOCKED {
            return Err(ApiError::ResourceExhausted {
                what: "you have blocked the most users an account may: unblock one first",
                retry_after: None,
            });
        }
        let change = AccountChange::Block {
            user: target.clone(),
            blocked,
        };
        self.directory
            .change_account(&me.id, &change)
            .await?
            .ok_or(ApiError::Unauthenticated(
                "the account of this token no longer exists",
            ))?;
        Ok(())
    }
}
