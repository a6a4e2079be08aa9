//! A real `redis-server` per test (natter-fleet's, as the topology tests use), on a free
//! port with its own data directory, fsynced on every write; killed on drop. Never the shared
//! server on 6379.

use natter_fleet::{Fsync, Redis, RedisCluster};

/// Starts a redis-server for one test.
pub async fn start_redis() -> Redis {
    Redis::start_alone(Fsync::Always)
        .await
        .expect("redis-server on PATH (scripts/test installs it)")
}

/// Starts a Redis Cluster of three primaries and three replicas for one test.
pub async fn start_cluster() -> RedisCluster {
    RedisCluster::start(None, Fsync::EverySecond)
        .await
        .expect("redis-server and redis-cli on PATH (scripts/test installs them)")
}

/// Runs one command with redis-cli-like semantics over a fresh connection.
pub async fn redis_command(redis: &Redis, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}
