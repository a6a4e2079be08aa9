//! Everything that speaks to Redis, and the only place that knows its key names: the store
//! (accounts, rooms, memberships, logs as Streams, the atomic append script), the bus (one
//! pub/sub connection per instance, presence) and the key and channel schema they share.

mod bus;
pub mod schema;
mod store;

pub use bus::RedisBus;
pub use store::{RedisStore, connection_manager};
