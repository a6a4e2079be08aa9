//! Rate limits: token buckets (the `governor` crate) per client address and per account.
//!
//! Addresses are the ones the listener established: the socket's peer, or the client named
//! in a PROXY header from a trusted balancer. Nothing a client sends in a request (such as
//! `X-Forwarded-For`) is believed, so a forged header cannot move a client to a fresh
//! bucket. IPv6 clients are limited per /64, the block one subscriber usually holds.
//!
//! Buckets are per instance: behind a balancer spreading clients over N instances, a
//! client gets at most N times these rates. The buckets of clients and accounts that have
//! been quiet long enough to be full again are forgotten periodically, so the maps stay
//! as large as the recently active population.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};
use ipnet::IpNet;

use crate::{
    error::ApiError,
    ids::UserId,
    metrics::{Limit, Rejections},
};

/// What an account does that is limited per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Joining a room by code (code guessing).
    Join,
    /// Creating a group room.
    CreateRoom,
    /// Opening a direct room.
    OpenDirect,
    /// Sending a message.
    Send,
    /// Signalling typing.
    Typing,
}

/// `n` as a quota count (every quota below is a positive constant).
fn n(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The quotas of accounts. Humans stay far below them; scripts hit them.
fn quota(action: Action) -> Quota {
    match action {
        Action::Join => Quota::per_minute(n(10)).allow_burst(n(10)),
        Action::CreateRoom => Quota::per_minute(n(10)).allow_burst(n(10)),
        Action::OpenDirect => Quota::per_minute(n(20)).allow_burst(n(20)),
        Action::Send => Quota::per_second(n(10)).allow_burst(n(100)),
        Action::Typing => Quota::per_second(n(5)).allow_burst(n(20)),
    }
}

/// Sign-in attempts per client address: one address may sign several people in (a
/// household, an office), so it gets more than one username does.
fn sign_in_per_address() -> Quota {
    Quota::per_minute(n(30)).allow_burst(n(30))
}

/// Sign-in attempts per username, from anywhere: password guessing is slow.
fn sign_in_per_username() -> Quota {
    Quota::per_minute(n(10)).allow_burst(n(10))
}

/// Accounts created per client address.
fn registrations_per_address() -> Quota {
    Quota::per_hour(n(20)).allow_burst(n(20))
}

/// Every bucket of one instance.
#[derive(Debug)]
pub(crate) struct RateLimits {
    enabled: bool,
    rejections: std::sync::Arc<Rejections>,
    exempt: Vec<IpNet>,
    sign_in_by_address: DefaultKeyedRateLimiter<IpAddr>,
    /// By the username tried (existing or not), so that guessing one account's password
    /// from many addresses is limited too.
    sign_in_by_username: DefaultKeyedRateLimiter<String>,
    register_by_address: DefaultKeyedRateLimiter<IpAddr>,
    join: DefaultKeyedRateLimiter<UserId>,
    create_room: DefaultKeyedRateLimiter<UserId>,
    open_direct: DefaultKeyedRateLimiter<UserId>,
    send: DefaultKeyedRateLimiter<UserId>,
    typing: DefaultKeyedRateLimiter<UserId>,
}

impl RateLimits {
    /// Limits as configured: `enabled` false turns them all off (benchmarks and tests that
    /// play many clients with few accounts); addresses in `exempt` are not limited by
    /// address (their accounts still are).
    pub(crate) fn new(
        enabled: bool,
        exempt: Vec<IpNet>,
        rejections: std::sync::Arc<Rejections>,
    ) -> Self {
        Self {
            enabled,
            rejections,
            exempt,
            sign_in_by_address: DefaultKeyedRateLimiter::keyed(sign_in_per_address()),
            sign_in_by_username: DefaultKeyedRateLimiter::keyed(sign_in_per_username()),
            register_by_address: DefaultKeyedRateLimiter::keyed(registrations_per_address()),
            join: DefaultKeyedRateLimiter::keyed(quota(Action::Join)),
            create_room: DefaultKeyedRateLimiter::keyed(quota(Action::CreateRoom)),
            open_direct: DefaultKeyedRateLimiter::keyed(quota(Action::OpenDirect)),
            send: DefaultKeyedRateLimiter::keyed(quota(Action::Send)),
            typing: DefaultKeyedRateLimiter::keyed(quota(Action::Typing)),
        }
    }

    /// Counts a sign-in attempt by `client` for `username`.
    pub(crate) fn sign_in(&self, client: Option<IpAddr>, username: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(key) = self.address_key(client) {
            self.check(
                &self.sign_in_by_address,
                &key,
                "too many sign-in attempts from here",
                Limit::SignIn,
            )?;
        }
        self.check(
            &self.sign_in_by_username,
            &username.trim().to_lowercase(),
            "too many sign-in attempts for this username",
            Limit::SignIn,
        )
    }

    /// Counts an account creation by `client`.
    pub(crate) fn register(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        match self.address_key(client) {
            Some(key) => self.check(
                &self.register_by_address,
                &key,
                "too many accounts created from here",
                Limit::Register,
            ),
            None => Ok(()),
        }
    }

    /// Counts an action of an account.
    pub(crate) fn account(&self, action: Action, user: &UserId) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let (limiter, what, limit) = match action {
            Action::Join => (&self.join, "too many room joins", Limit::Join),
            Action::CreateRoom => (
                &self.create_room,
                "too many rooms created",
                Limit::CreateRoom,
            ),
            Action::OpenDirect => (
                &self.open_direct,
                "too many direct rooms opened",
                Limit::OpenDirect,
            ),
            Action::Send => (&self.send, "too many messages sent", Limit::Send),
            Action::Typing => (&self.typing, "too many typing signals", Limit::Typing),
        };
        self.check(limiter, user, what, limit)
    }

    /// Forgets buckets that are full again (their clients have been quiet long enough):
    /// called periodically, it keeps memory proportional to recent activity.
    pub(crate) fn forget_quiet(&self) {
        self.sign_in_by_address.retain_recent();
        self.sign_in_by_username.retain_recent();
        self.register_by_address.retain_recent();
        self.join.retain_recent();
        self.create_room.retain_recent();
        self.open_direct.retain_recent();
        self.send.retain_recent();
        self.typing.retain_recent();
    }

    /// The bucket key of a client address, or `None` when it is exempt or unknown.
    fn address_key(&self, client: Option<IpAddr>) -> Option<IpAddr> {
        let ip = client?.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        Some(match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        })
    }
}

impl RateLimits {
    /// Takes one token from `key`'s bucket, or counts the refusal and says when the next
    /// token comes.
    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        what: &'static str,
        limit: Limit,
    ) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            self.rejections.count(limit);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::ResourceExhausted {
                what,
                retry_after: Some(wait.max(Duration::from_secs(1))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::from_trusted(id)
    }

    #[test]
    fn an_account_over_its_quota_is_told_when_to_retry() {
        let limits = RateLimits::new(true, Vec::new(), Default::default());
        for _ in 0..10 {
            limits.account(Action::CreateRoom, &user("a")).unwrap();
        }
        let Err(ApiError::ResourceExhausted { what, retry_after }) =
            limits.account(Action::CreateRoom, &user("a"))
        else {
            panic!("the eleventh room within a minute should be refused");
        };
        assert_eq!(what, "too many rooms created");
        let retry_after = retry_after.unwrap();
        assert!(retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(6));
        // Another account, and another action of the same account, are not affected.
        limits.account(Action::CreateRoom, &user("b")).unwrap();
        limits.account(Action::Send, &user("a")).unwrap();
    }

    #[test]
    fn sign_ins_are_limited_by_address_and_by_username() {
        let limits = RateLimits::new(true, Vec::new(), Default::default());
        let home: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            limits.sign_in(Some(home), "alice").unwrap();
        }
        // Alice's username is exhausted from anywhere, in any case.
        let elsewhere: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(limits.sign_in(Some(elsewhere), " ALICE ").is_err());
        // The address has room for other accounts up to its own quota.
        for i in 0..20 {
            limits.sign_in(Some(home), &format!("user{i}")).unwrap();
        }
        assert!(limits.sign_in(Some(home), "someone-else").is_err());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_exempt_addresses_are_not_limited() {
        let limits = RateLimits::new(
            true,
            vec!["10.0.0.0/8".parse().unwrap()],
            Default::default(),
        );
        for i in 0..20 {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            limits.register(Some(ip)).unwrap();
        }
        let same_block: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(limits.register(Some(same_block)).is_err());
        let other_block: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        limits.register(Some(other_block)).unwrap();
        for _ in 0..50 {
            limits.register(Some("10.1.2.3".parse().unwrap())).unwrap();
        }
    }

    #[test]
    fn disabled_limits_refuse_nothing() {
        let limits = RateLimits::new(false, Vec::new(), Default::default());
        for _ in 0..1000 {
            limits.account(Action::Send, &user("a")).unwrap();
            limits.sign_in(None, "a").unwrap();
        }
    }
}
