//! The servers under test: 1 embedded instance, several instances over one Redis (directly
//! or behind nginx) or over a Redis Cluster, or the minimal tonic server; and what the
//! benchmark reads off them.

use anyhow::Context;
use natter_fleet::{Fsync, Redis, RedisCluster, SharedRedis};

use crate::procs::Server;

/// A deployment the shape runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Embedded,
    /// 2 instances over one Redis.
    Redis,
    /// 2 instances over a 3-shard Redis Cluster, waiting for this many replicas per send.
    Cluster {
        wait_replicas: u32,
    },
}

impl Kind {
    pub(crate) async fn start(self) -> anyhow::Result<Deployment> {
        match self {
            Self::Embedded => Deployment::embedded().await,
            Self::Redis => Deployment::redis(2).await,
            Self::Cluster { wait_replicas } => Deployment::redis_cluster(2, wait_replicas).await,
        }
    }
}

/// The servers under test.
pub(crate) struct Deployment {
    pub(crate) label: &'static str,
    pub(crate) servers: Vec<Server>,
    /// The Redis processes (one server, or a cluster's nodes).
    redis_pids: Vec<u32>,
    _redis: Option<Box<dyn std::any::Any + Send>>,
    /// Where Redis and nginx log.
    logs: tempfile::TempDir,
    /// nginx in front of the servers, when clients go through it.
    nginx: Option<natter_fleet::Nginx>,
}

impl Deployment {
    pub(crate) async fn embedded() -> anyhow::Result<Self> {
        Self::embedded_binary(&crate::procs::server_binary()?).await
    }

    /// One embedded instance of the natter-server binary at `binary`.
    pub(crate) async fn embedded_binary(binary: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self {
            label: "embedded (1 instance)",
            servers: vec![Server::start_binary(binary, None, false).await?],
            redis_pids: Vec::new(),
            _redis: None,
            logs: tempfile::tempdir()?,
            nginx: None,
        })
    }

    /// One of the two deployments every table compares: 1 embedded instance, or (`redis`)
    /// 2 instances over Redis.
    pub(crate) async fn compared(redis: bool) -> anyhow::Result<Self> {
        if redis {
            Self::redis(2).await
        } else {
            Self::embedded().await
        }
    }

    pub(crate) async fn redis(instances: usize) -> anyhow::Result<Self> {
        Self::redis_with(instances, false).await
    }

    async fn redis_with(instances: usize, behind_nginx: bool) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let redis = Redis::start(logs.path()).await?;
        let mut servers = Vec::new();
        for _ in 0..instances {
            servers.push(Server::start(Some(&redis.server_args()), behind_nginx).await?);
        }
        Ok(Self {
            label: "Redis (2 instances)",
            servers,
            redis_pids: redis.pid().into_iter().collect(),
            _redis: Some(Box::new(redis)),
            logs,
            nginx: None,
        })
    }

    /// Instances over a Redis Cluster of three primaries with a replica each (AOF fsynced
    /// every second, like the single Redis), answering sends once `wait_replicas` replicas
    /// hold them.
    pub(crate) async fn redis_cluster(
        instances: usize,
        wait_replicas: u32,
    ) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let cluster = RedisCluster::start(Some(logs.path()), Fsync::EverySecond).await?;
        let mut args = cluster.server_args().to_vec();
        args.extend(["--redis-wait-replicas".into(), wait_replicas.to_string()]);
        let mut servers = Vec::new();
        for _ in 0..instances {
            servers.push(Server::start(Some(&args), false).await?);
        }
        Ok(Self {
            label: if wait_replicas == 0 {
                "Redis Cluster, 3 shards (2 instances)"
            } else {
                "the same, --redis-wait-replicas 1"
            },
            servers,
            redis_pids: cluster.pids(),
            _redis: Some(Box::new(cluster)),
            logs,
            nginx: None,
        })
    }

    /// 2 instances over Redis with every client going through nginx and the shipped config
    /// (each connection balanced to the instance with the fewest).
    pub(crate) async fn redis_behind_nginx(instances: usize) -> anyhow::Result<Self> {
        let mut deployment = Self::redis_with(instances, true).await?;
        let upstreams = deployment
            .servers
            .iter()
            .map(|s| s.url.trim_start_matches("http://").parse())
            .collect::<Result<_, _>>()?;
        let config = natter_fleet::NginxConfig {
            listen: format!("127.0.0.1:{}", natter_fleet::free_port()?).parse()?,
            tls: None,
            upstreams,
        };
        deployment.nginx = Some(natter_fleet::Nginx::start(&config, deployment.logs.path()).await?);
        deployment.label = "Redis (2 instances) through nginx";
        Ok(deployment)
    }

    /// The minimal tonic server in a process of its own (see `baseline`).
    pub(crate) async fn baseline() -> anyhow::Result<Self> {
        Ok(Self {
            label: "minimal tonic server",
            servers: vec![Server::start_baseline().await?],
            redis_pids: Vec::new(),
            _redis: None,
            logs: tempfile::tempdir()?,
            nginx: None,
        })
    }

    /// Where client `i` connects: instance `i` round robin, or nginx.
    pub(crate) fn url(&self, i: usize) -> String {
        match &self.nginx {
            Some(nginx) => format!("http://{}", nginx.addr),
            None => self.servers[i % self.servers.len()].url.clone(),
        }
    }

    /// Writes to client sockets by all servers so far (`natter_socket_writes_total`), or
    /// `None` for a server that does not count them (one built before the counter, or the
    /// minimal server).
    pub(crate) async fn socket_writes(&self) -> anyhow::Result<Option<u64>> {
        Ok(self
            .metrics(&["natter_socket_writes_total"])
            .await?
            .map(|writes| writes[0] as u64))
    }

    /// `/metrics` series (each its name with any labels, as printed), each summed over the
    /// servers (one request to each), or `None` if a server does not print one of them.
    pub(crate) async fn metrics(&self, series: &[&str]) -> anyhow::Result<Option<Vec<f64>>> {
        let mut totals = vec![0.0; series.len()];
        for server in &self.servers {
            let addr = server
                .url
                .trim_start_matches("http://")
                .parse()
                .context("a server address")?;
            // The minimal server has no /metrics (nor HTTP/1.1): not counted.
            let Ok(metrics) = natter_fleet::http::get(addr, "/metrics", None, "").await else {
                return Ok(None);
            };
            for (name, total) in series.iter().zip(&mut totals) {
                let counted = metrics.body.lines().find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')
                        .and_then(|v| v.trim().parse::<f64>().ok())
                });
                match counted {
                    Some(value) => *total += value,
                    None => return Ok(None),
                }
            }
        }
        Ok(Some(totals))
    }

    /// CPU time of all server processes so far, seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.servers
            .iter()
            .map(|s| crate::procs::cpu_seconds_of(s.pid))
            .sum()
    }

    /// CPU time of each Redis process so far, seconds.
    pub(crate) fn redis_cpu_seconds(&self) -> anyhow::Result<Vec<f64>> {
        self.redis_pids
            .iter()
            .map(|pid| crate::procs::cpu_seconds_of(*pid))
            .collect()
    }

    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        self.servers.iter().map(Server::rss).sum()
    }

    /// The servers' RSS once it stopped falling: read every second until five readings in
    /// a row found no fall (at most 60 s). natter-server's allocator hands freed pages back
    /// over its decay time (10 s), in steps, so a reading right after a burst still counts
    /// memory that is about to go.
    pub(crate) async fn settled_rss(&self) -> anyhow::Result<u64> {
        let mut lowest = self.rss()?;
        let mut calm = 0;
        for _ in 0..60 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = self.rss()?;
            if now < lowest {
                lowest = now;
                calm = 0;
            } else {
                calm += 1;
                if calm == 5 {
                    return Ok(now);
                }
            }
        }
        self.rss()
    }
}
