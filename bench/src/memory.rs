//! What open streams cost in server memory: RSS growth per idle stream (many streams of a
//! few users in one room), and per online user (one stream each, every user in 10 rooms of
//! 10 members, so each stream follows 10 rooms and its own topic).

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use natter_proto::v1 as pb;

use crate::deployment::Deployment;
use crate::scenarios::{SUBSCRIBER_USERS, chat, open_streams, register, room_with_members};

/// Rooms each online user is in.
pub(crate) const ROOMS_PER_USER: usize = 10;

/// RSS growth per idle Subscribe stream, bytes, over `streams` streams.
pub(crate) async fn idle_memory(deployment: &Deployment, streams: usize) -> anyhow::Result<f64> {
    let (_, users) = room_with_members(deployment, "idle", SUBSCRIBER_USERS).await?;
    let before = deployment.rss()?;
    open_streams(deployment, &users, streams, Arc::new(AtomicU64::new(0))).await?;
    // Let allocations settle (buffers are sized by then; this is a measurement, not a test).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = deployment.rss()?;
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
    let mut accounts = Vec::with_capacity(users);
    for i in 0..users {
        accounts.push(register(&url, &format!("online{i}")).await?);
    }
    let mut codes = Vec::with_capacity(users);
    for (i, user) in accounts.iter().enumerate() {
        let room = chat(&url, user)?
            .create_room(pb::CreateRoomRequest {
                name: format!("room {i}"),
                password: String::new(),
            })
            .await?
            .into_inner();
        codes.push(room.code);
    }
    for (i, user) in accounts.iter().enumerate() {
        let mut client = chat(&url, user)?;
        for k in 1..ROOMS_PER_USER {
            client
                .join_room(pb::JoinRoomRequest {
                    code: codes[(i + k) % users].clone(),
                    password: String::new(),
                })
                .await?;
        }
    }
    let before = deployment.rss()?;
    open_streams(deployment, &accounts, users, Arc::new(AtomicU64::new(0))).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = deployment.rss()?;
    Ok(after.saturating_sub(before) as f64 / users as f64)
}
