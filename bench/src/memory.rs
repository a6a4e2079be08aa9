//! What open streams cost in server memory: RSS growth per idle stream (many streams of a
//! few users in one room), and per online user (one stream each, every user in 10 rooms of
//! 10 members, so each stream follows 10 rooms and its own topic).

use std::sync::{Arc, atomic::AtomicU64};

use futures::{StreamExt, TryStreamExt, stream};
use natter_proto::v1 as pb;

use crate::deployment::Deployment;
use crate::scenarios::{SUBSCRIBER_USERS, User, chat, open_streams, register, room_with_members};

/// Setup calls in flight at once.
const SETUP_CALLS: usize = 8;

/// Rooms each online user is in.
pub(crate) const ROOMS_PER_USER: usize = 10;

/// RSS growth per idle Subscribe stream, bytes, over `streams` streams.
pub(crate) async fn idle_memory(deployment: &Deployment, streams: usize) -> anyhow::Result<f64> {
    let (_, users) = room_with_members(deployment, "idle", SUBSCRIBER_USERS).await?;
    let before = deployment.settled_rss().await?;
    open_streams(deployment, &users, streams, Arc::new(AtomicU64::new(0))).await?;
    let after = deployment.settled_rss().await?;
    Ok(after.saturating_sub(before) as f64 / streams as f64)
}

/// RSS growth per online user, bytes: `users` users, as many rooms of [`ROOMS_PER_USER`]
/// members (user `i` owns room `i` and joins the next nine), then one idle stream per user.
pub(crate) async fn online_user_memory(
    deployment: &Deployment,
    users: usize,
) -> anyhow::Result<f64> {
    anyhow::ensure!(users >= ROOMS_PER_USER, "at least {ROOMS_PER_USER} users");
    let url = deployment.url(0);
    // A few calls at once: thousands of users, each hashed with argon2 (about 25 ms).
    let accounts: Vec<User> = stream::iter(0..users)
        .map(|i| {
            let url = &url;
            async move { register(url, &format!("online{i}")).await }
        })
        .buffered(SETUP_CALLS)
        .try_collect()
        .await?;
    let codes: Vec<String> = stream::iter(accounts.iter().enumerate())
        .map(|(i, user)| {
            let url = &url;
            async move {
                let room = chat(url, user)?
                    .create_room(pb::CreateRoomRequest {
                        name: format!("room {i}"),
                        password: String::new(),
                    })
                    .await?
                    .into_inner();
                anyhow::Ok(room.code)
            }
        })
        .buffered(SETUP_CALLS)
        .try_collect()
        .await?;
    stream::iter(
        accounts
            .iter()
            .enumerate()
            .flat_map(|(i, user)| (1..ROOMS_PER_USER).map(move |k| (user, (i + k) % users))),
    )
    .map(|(user, room)| {
        let (url, code) = (&url, codes[room].clone());
        async move {
            chat(url, user)?
                .join_room(pb::JoinRoomRequest {
                    code,
                    password: String::new(),
                })
                .await?;
            anyhow::Ok(())
        }
    })
    .buffer_unordered(SETUP_CALLS)
    .try_collect::<()>()
    .await?;
    let before = deployment.settled_rss().await?;
    open_streams(deployment, &accounts, users, Arc::new(AtomicU64::new(0))).await?;
    let after = deployment.settled_rss().await?;
    Ok(after.saturating_sub(before) as f64 / users as f64)
}
