//! Who is in which room, drawn from a fixed seed, and registering and joining all of it on a
//! deployment.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use natter_proto::v1 as pb;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::{
    deployment::Deployment,
    scenarios::{User, chat, register},
};

/// Calls set up concurrently while populating (registration is bounded by the server's
/// argon2 workers anyway).
const SETUP_CONCURRENCY: usize = 32;
/// Who is in which room: member indexes per room.
pub(crate) struct Shape {
    pub(crate) users: usize,
    pub(crate) rooms: Vec<Vec<usize>>,
}

impl Shape {
    /// Each user in 5 to 10 rooms, rooms of 5 to 20 members, drawn from a fixed seed.
    ///
    /// The issue asks for 2,000 rooms of 5-20 members with every one of 10,000 users in 5-10
    /// rooms; both cannot hold (75,000 memberships do not fit in 2,000 rooms of at most 20).
    /// Users' room counts and room sizes are kept; the number of rooms follows from them
    /// (about 6,000 for 10,000 users).
    pub(crate) fn draw(users: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seats = Vec::new();
        for user in 0..users {
            for _ in 0..rng.random_range(5..=10) {
                seats.push(user);
            }
        }
        seats.shuffle(&mut rng);
        let mut rooms = Vec::new();
        let mut seats = seats.as_slice();
        while !seats.is_empty() {
            let size = rng.random_range(5..=20).min(seats.len());
            let (taken, rest) = seats.split_at(size);
            let mut members = taken.to_vec();
            members.sort_unstable();
            members.dedup();
            rooms.push(members);
            seats = rest;
        }
        Self { users, rooms }
    }

    fn memberships(&self) -> usize {
        self.rooms.iter().map(Vec::len).sum()
    }
}

/// The shape, registered and joined on a deployment.
pub(crate) struct Population {
    pub(crate) shape: Shape,
    pub(crate) users: Vec<User>,
    pub(crate) room_ids: Vec<String>,
}

/// Registers every user and creates and joins every room.
pub(crate) async fn populate(deployment: &Deployment, shape: Shape) -> anyhow::Result<Population> {
    let started = Instant::now();
    let users: Vec<User> = stream::iter(0..shape.users)
        .map(|u| {
            let url = deployment.url(u);
            async move { register(&url, &format!("shape{u}")).await }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    eprintln!(
        "registered {} users in {:.0} s",
        users.len(),
        started.elapsed().as_secs_f64()
    );
    let room_ids: Vec<String> = stream::iter(shape.rooms.iter().enumerate())
        .map(|(r, members)| {
            let users = &users;
            let url = deployment.url(r);
            async move {
                let mut owner = chat(&url, &users[members[0]])?;
                let room = owner
                    .create_room(pb::CreateRoomRequest {
                        name: format!("room {r}"),
                        password: String::new(),
                    })
                    .await?
                    .into_inner();
                for &member in &members[1..] {
                    chat(&url, &users[member])?
                        .join_room(pb::JoinRoomRequest {
                            code: room.code.clone(),
                            password: String::new(),
                        })
                        .await?;
                }
                anyhow::Ok(room.id)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    eprintln!(
        "{} rooms, {} memberships, set up after {:.0} s",
        room_ids.len(),
        shape.memberships(),
        started.elapsed().as_secs_f64()
    );
    Ok(Population {
        shape,
        users,
        room_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drawn_shape_has_the_asked_room_sizes_and_rooms_per_user() {
        let shape = Shape::draw(10_000, 7);
        let (last, full) = shape.rooms.split_last().unwrap();
        assert!(last.len() <= 20);
        // A user drawn twice into one room is in it once, so a room may have fewer members
        // than seats, never more.
        assert!(full.iter().all(|members| (3..=20).contains(&members.len())));
        let mut rooms_of = vec![0; shape.users];
        for member in shape.rooms.iter().flatten() {
            rooms_of[*member] += 1;
        }
        assert!(rooms_of.iter().all(|rooms| (3..=10).contains(rooms)));
        let average = shape.memberships() as f64 / shape.users as f64;
        assert!((7.0..8.0).contains(&average), "{average} rooms per user");
        assert!(
            (5_500..6_500).contains(&shape.rooms.len()),
            "{} rooms",
            shape.rooms.len()
        );
    }
}
