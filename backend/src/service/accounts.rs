//! Registration, sign-in, tokens and the people directory.

use std::net::IpAddr;

use anyhow::Context;

use super::Natter;
use crate::{
    auth::{self, Caller, Role, Session},
    domain::{Password, Registration, Username},
    error::{ApiError, ApiResult},
    ids::UserId,
    records::{AccountChange, EndedSession, UserRecord},
    seams::{Topic, search_users},
    views::{Grant, Notice, UsersPage},
};

/// Same message for an unknown user and a wrong password: which usernames exist is not
/// revealed to someone guessing.
const BAD_CREDENTIALS: &str = "unknown username or wrong password";
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;

impl Natter {
    /// Creates an account and signs it in.
    #[tracing::instrument(name = "register", skip_all, fields(username = %registration.username))]
    pub(crate) async fn register(
        &self,
        registration: Registration,
        client: Option<IpAddr>,
    ) -> ApiResult<Grant> {
        self.limits.register(client)?;
        let Registration {
            username,
            password,
            display_name,
        } = registration;
        let password_hash = self.passwords.hash(password.expose().to_owned()).await?;
        let user = self
            .directory
            .create_user(UserRecord {
                id: UserId::generate(),
                username: username.as_str().to_owned(),
                display_name: display_name.as_str().to_owned(),
                password_hash,
                created_at: auth::now_ms(),
                admin: false,
                disabled: false,
                sessions_after_ms: 0,
                ended_sessions: Vec::new(),
                blocked: Vec::new(),
            })
            .await?;
        tracing::info!(user = %user.id, "registered");
        self.grant(&user, &Session::start())
    }

    /// Signs in with username and password.
    #[tracing::instrument(name = "login", skip_all, fields(username = %username))]
    pub(crate) async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> ApiResult<Grant> {
        Password::check_size("password", password)?;
        self.limits.sign_in(client, username)?;
        // A malformed username cannot exist; answer like for any unknown one.
        let user = match Username::parse(username) {
            Ok(name) => self.directory.user_by_username(name.as_str()).await?,
            Err(_) => None,
        };
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => self.passwords.dummy_hash().to_owned(),
        };
        let matches = self.passwords.verify(password.to_owned(), hash).await?;
        match user {
            // Said only to whoever knows the password.
            Some(user) if matches && user.disabled => {
                Err(ApiError::PermissionDenied("this account is disabled"))
            }
            Some(user) if matches => self.grant(&user, &Session::start()),
            _ => Err(ApiError::Unauthenticated(BAD_CREDENTIALS)),
        }
    }

    /// Grants or takes back the admin role of an existing account (an operator task: see
    /// [`crate::administer`]).
    pub async fn set_admin(&self, username: &str, admin: bool) -> anyhow::Result<UserRecord> {
        let name = Username::parse(username)?;
        let missing = || anyhow::anyhow!("no account is named '{}'", name.as_str());
        let user = self
            .directory
            .user_by_username(name.as_str())
            .await
            .context("reading the account")?
            .ok_or_else(missing)?;
        self.directory
            .change_account(&user.id, &AccountChange::Admin(admin))
            .await
            .context("updating the account")?
            .ok_or_else(missing)
    }

    /// A fresh token for the holder of a valid one.
    #[tracing::instrument(name = "refresh_token", skip_all, fields(user = %caller.user_id))]
    pub(crate) async fn refresh(&self, caller: &Caller) -> ApiResult<Grant> {
        let user = self.account(caller).await?;
        let age = auth::now_ms().saturating_sub(caller.session.started_ms);
        if u128::try_from(age).unwrap_or(0) > self.config.max_session_age.as_millis() {
            return Err(ApiError::Unauthenticated(
                "this session reached its maximum age: sign in again",
            ));
        }
        self.grant(&user, &caller.session)
    }

    /// Ends the caller's session, or all of the account's sessions. Tokens of an ended
    /// session fail on every call from now on; its open streams re-check and end.
    #[tracing::instrument(name = "logout", skip_all, fields(user = %caller.user_id, all))]
    pub(crate) async fn logout(&self, caller: &Caller, all: bool) -> ApiResult<()> {
        self.account(caller).await?;
        let change = if all {
            AccountChange::EndSessionsBefore(auth::now_ms().saturating_add(1))
        } else {
            let max_age =
                i64::try_from(self.config.max_session_age.as_millis()).unwrap_or(i64::MAX);
            AccountChange::EndSession(EndedSession {
                id: caller.session.id.clone(),
                until_ms: caller.session.started_ms.saturating_add(max_age),
            })
        };
        self.directory
            .change_account(&caller.user_id, &change)
            .await?
            .ok_or(ApiError::Unauthenticated(
                "the account of this token no longer exists",
            ))?;
        self.end_sessions(&caller.user_id, "signed out").await;
        Ok(())
    }

    /// Tells the user's streams, on every instance, to check their session now.
    pub(super) async fn end_sessions(&self, user_id: &UserId, reason: &'static str) {
        self.announce(
            Topic::User(user_id.clone()),
            Notice::SessionEnded { reason },
        )
        .await;
    }

    fn grant(&self, user: &UserRecord, session: &Session) -> ApiResult<Grant> {
        let role = if user.admin { Role::Admin } else { Role::User };
        let issued = self.keys.issue(&user.id, role, session)?;
        Ok(Grant {
            token: issued.token,
            expires_at: issued.expires_at_ms,
            expires_in_ms: issued.expires_in_ms,
            user: user.clone(),
            role,
        })
    }

    /// One page of the people directory. The page token is the last username of the
    /// previous page, so pages stay stable while accounts are added.
    #[tracing::instrument(name = "list_users", skip_all, fields(user = %caller.user_id))]
    pub(crate) async fn list_users(
        &self,
        caller: &Caller,
        query: &str,
        page_size: u32,
        page_token: &str,
    ) -> ApiResult<UsersPage> {
        self.account(caller).await?;
        let limit = match page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        if query.chars().count() > 64 {
            return Err(
                crate::domain::InvalidField::new("query", "must be at most 64 characters").into(),
            );
        }
        if page_token.len() > 64 {
            return Err(crate::domain::InvalidField::new(
                "page_token",
                "is not a token from a previous page",
            )
            .into());
        }
        let page = search_users(&*self.directory, query.trim(), page_token, limit).await?;
        Ok(UsersPage {
            users: self.users_view(&page.users).await?,
            next_page_token: page.next_after.unwrap_or_default(),
        })
    }
}
