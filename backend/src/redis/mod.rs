//! Everything that speaks to Redis, and the only place that knows its key names: the store
//! (accounts, rooms, memberships, logs as Streams, the atomic append script), the bus (one
//! pub/sub connection per instance, or per shard on a Redis Cluster; presence), the command
//! connection to a server or a cluster, and the key and channel schema they share.

mod bus;
mod conn;
pub mod schema;
mod store;

pub use bus::RedisBus;
pub use conn::{RedisConn, RedisTarget};
pub use store::RedisStore;
