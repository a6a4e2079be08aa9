//! Registration, sign-in, tokens and the people directory.

use std::net::IpAddr;

use super::Natter;
use crate::{
    auth::{self, Caller, Role},
    domain::{Password, Registration, Username},
    error::{ApiError, ApiResult},
    ids::UserId,
    records::UserRecord,
    seams::search_users,
    views::{Grant, UsersPage},
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
            })
            .await?;
        tracing::info!(user = %user.id, "registered");
        self.grant(&user)
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
            Some(user) if matches => self.grant(&user),
            _ => Err(ApiError::Unauthenticated(BAD_CREDENTIALS)),
        }
    }

    /// Grants or takes back the admin role of an existing account (an operator task: see
    /// [`crate::administer`]).
    pub async fn set_admin(&self, username: &str, admin: bool) -> anyhow::Result<UserRecord> {
        let name = Username::parse(username)?;
        match self.directory.set_admin(name.as_str(), admin).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => anyhow::bail!("no account is named '{}'", name.as_str()),
            Err(e) => Err(anyhow::Error::new(e).context("updating the account")),
        }
    }

    /// A fresh token for the holder of a valid one.
    #[tracing::instrument(name = "refresh_token", skip_all, fields(user = %caller.user_id))]
    pub(crate) async fn refresh(&self, caller: &Caller) -> ApiResult<Grant> {
        let user = self.account(caller).await?;
        self.grant(&user)
    }

    fn grant(&self, user: &UserRecord) -> ApiResult<Grant> {
        let role = if user.admin { Role::Admin } else { Role::User };
        let issued = self.keys.issue(&user.id, role)?;
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
