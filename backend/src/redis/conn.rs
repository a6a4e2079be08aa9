//! One command connection to Redis, whichever Redis it is: a single server (a managed
//! connection that reconnects by itself) or a Redis Cluster (the redis crate's cluster client,
//! which routes each command to the primary of its key's slot and follows `MOVED`/`ASK`).
//! The store and the bus send commands through [`RedisConn`] and never ask which it is; what
//! differs (sharded pub/sub, key hash tags) is decided once, from [`RedisTarget`].

use std::time::Duration;

use anyhow::Context;
use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a command may wait for its answer (then: UNAVAILABLE, never a hang).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`--redis-url`).
    Server(String),
    /// A Redis Cluster, by seed nodes (`--redis-cluster`); the rest is discovered.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Whether keys and channels must be laid out by hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A cluster client for these seeds; the bus's own has a receiver for pushes (pub/sub
    /// messages and subscription changes of every node).
    pub(crate) fn cluster_client(
        seeds: &[String],
        pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> anyhow::Result<ClusterClient> {
        let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str));
        if let Some(pushes) = pushes {
            builder = builder.push_sender(pushes);
        }
        builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // Redirects during a slot migration and a failover's few seconds; past them the
            // caller gets UNAVAILABLE rather than a long wait.
            .retries(12)
            .min_retry_wait(100)
            .max_retry_wait(1000)
            .overall_response_timeout(Some(RESPONSE_TIMEOUT * 2))
            .build()
            .context("invalid Redis Cluster seed URLs")
    }
}

/// A command connection to a single server or to a cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// To one server.
    Server(ConnectionManager),
    /// To every primary of a cluster, chosen per command by its key's slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Opens a connection that connects lazily and reconnects by itself, so that the server
    /// starts (and reports not ready) while Redis is down.
    pub fn open(target: &RedisTarget) -> anyhow::Result<Self> {
        match target {
            RedisTarget::Server(url) => {
                let client = redis::Client::open(url.as_str()).context("invalid Redis URL")?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Self::Server(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTarget::Cluster(seeds) => {
                let client = RedisTarget::cluster_client(seeds, None)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
