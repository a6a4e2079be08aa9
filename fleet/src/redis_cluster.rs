//! A local Redis Cluster: three primaries with one replica each, or two
//! (`redis-server --cluster-enabled yes` on free ports, joined by `redis-cli --cluster
//! create`), each with AOF on and its own data directory, all killed on drop. Short node
//! timeouts, so that a failover takes about two seconds rather than fifteen.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::{WAIT, process::Process, redis::Fsync};

/// How long a node may be unreachable before its replica takes over (ms).
const NODE_TIMEOUT_MS: &str = "1000";
/// Primaries.
const PRIMARIES: usize = 3;

/// One node of the cluster.
#[derive(Debug)]
struct Node {
    port: u16,
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
    process: Option<Process>,
}

/// A running Redis Cluster.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    fsync: Fsync,
    _dir: TempDir,
}

/// A primary as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its node id.
    pub id: String,
    /// Inclusive slot ranges it serves.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes and joins them into a cluster of three shards of two nodes, logging
    /// into their own directory (or `log_dir` when given, for the fleet).
    pub async fn start(log_dir: Option<&Path>, fsync: Fsync) -> anyhow::Result<Self> {
        Self::start_with_replicas(log_dir, fsync, 1).await
    }

    /// Starts a cluster of three shards with `replicas` replicas each: with two, a shard
    /// still has a replica after one failover.
    pub async fn start_with_replicas(
        log_dir: Option<&Path>,
        fsync: Fsync,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = cluster_ports(PRIMARIES * (1 + replicas))?;
        let mut nodes = Vec::new();
        for port in ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let log = log_dir
                .unwrap_or(&node_dir)
                .join(format!("redis-{port}.log"));
            nodes.push(Node {
                port,
                dir: node_dir,
                log,
                process: None,
            });
        }
        let mut cluster = Self {
            nodes,
            fsync,
            _dir: dir,
        };
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index).await?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .context("redis-cli on PATH")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        cluster.wait_until_healthy().await?;
        Ok(cluster)
    }

    /// Every node's URL, comma-separated: the seed list for `--redis-cluster`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process ids of the live nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.process.as_ref().and_then(|p| p.pid()))
            .collect()
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    async fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &node.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
            // Replicas sync at once (the default waits 5 s to batch them).
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync"])
            .arg(match self.fsync {
                Fsync::EverySecond => "everysec",
                Fsync::Always => "always",
            })
            .args(["--daemonize", "no", "--logfile", "", "--dir"])
            .arg(&node.dir);
        let process = Process::spawn(command, &node.log).await?;
        process
            .wait_for_output("Ready to accept connections", WAIT)
            .await?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    /// Runs redis-cli against one node and returns its output.
    pub async fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .await?;
        if !output.status.success() {
            bail!("redis-cli {args:?} failed");
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The primaries as the first live node sees them.
    pub async fn primaries(&self) -> anyhow::Result<Vec<Primary>> {
        let port = self.live_port().context("no live node")?;
        let nodes = self.cli(port, &["cluster", "nodes"]).await?;
        let mut primaries = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8
                || !fields[2].contains("master")
                || fields[2].contains("fail")
                || fields.len() == 8
            {
                continue;
            }
            let port = node_port(fields[1])?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    Ok((start.parse()?, end.parse()?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            primaries.push(Primary {
                port,
                id: fields[0].to_owned(),
                slots,
            });
        }
        primaries.sort_by_key(|p| p.slots.first().copied());
        Ok(primaries)
    }

    /// The primary that serves `slot`.
    pub async fn primary_of(&self, slot: u16) -> anyhow::Result<Primary> {
        self.primaries()
            .await?
            .into_iter()
            .find(|p| p.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .with_context(|| format!("nobody serves slot {slot}"))
    }

    /// The ports of `primary`'s replicas.
    pub async fn replicas_of(&self, primary: &Primary) -> anyhow::Result<Vec<u16>> {
        let port = self.live_port().context("no live node")?;
        let replicas = self
            .cli(port, &["cluster", "replicas", &primary.id])
            .await?;
        replicas
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .map(node_port)
            .collect()
    }

    /// Freezes one node (SIGSTOP) until [`Self::thaw`]: it keeps its connections but
    /// answers nothing, as a hung process or a stalled VM does.
    pub fn freeze(&self, port: u16) -> anyhow::Result<()> {
        self.process_on(port)?.signal("STOP")
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn thaw(&self, port: u16) -> anyhow::Result<()> {
        self.process_on(port)?.signal("CONT")
    }

    fn process_on(&self, port: u16) -> anyhow::Result<&Process> {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.process.as_ref())
            .with_context(|| format!("no live node on port {port}"))
    }

    fn live_port(&self) -> Option<u16> {
        self.nodes
            .iter()
            .find(|n| n.process.is_some())
            .map(|n| n.port)
    }

    /// Kills one node (SIGKILL), as a crash does.
    pub async fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .context("no such node")?;
        if let Some(mut process) = node.process.take() {
            process.kill().await?;
        }
        Ok(())
    }

    /// Waits until every live node reports the cluster healthy with all slots served by a
    /// live primary (after a kill: until its replica has taken over) and every live replica
    /// in sync with its primary.
    pub async fn wait_until_healthy(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.healthy().await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the cluster did not become healthy in time");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn healthy(&self) -> bool {
        let live_nodes = self.nodes.iter().filter(|n| n.process.is_some()).count();
        for node in self.nodes.iter().filter(|n| n.process.is_some()) {
            let Ok(info) = self.cli(node.port, &["cluster", "info"]).await else {
                return false;
            };
            // Every node must already see every live replica (gossip converges after the
            // replicas' own links are up; `replicas_of` asks one node).
            let Ok(nodes) = self.cli(node.port, &["cluster", "nodes"]).await else {
                return false;
            };
            let replicas_seen = nodes
                .lines()
                .filter(|l| l.contains("slave") && !l.contains("fail"))
                .count();
            if replicas_seen != live_nodes - PRIMARIES {
                return false;
            }
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                return false;
            }
            let Ok(replication) = self.cli(node.port, &["info", "replication"]).await else {
                return false;
            };
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return false;
            }
        }
        let live = |port: u16| {
            self.nodes
                .iter()
                .any(|n| n.port == port && n.process.is_some())
        };
        self.primaries()
            .await
            .is_ok_and(|p| p.len() == PRIMARIES && p.iter().all(|p| live(p.port)))
    }

    /// Moves one slot, with its keys, from its primary to `to`, as `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE the keys in batches, then SETSLOT NODE
    /// on both ends.
    pub async fn move_slot(&self, slot: u16, to: &Primary) -> anyhow::Result<()> {
        let from = self.primary_of(slot).await?;
        if from.id == to.id {
            return Ok(());
        }
        let slot_arg = slot.to_string();
        let to_port = to.port.to_string();
        self.cli(
            to.port,
            &["cluster", "setslot", &slot_arg, "importing", &from.id],
        )
        .await?;
        self.cli(
            from.port,
            &["cluster", "setslot", &slot_arg, "migrating", &to.id],
        )
        .await?;
        loop {
            let keys = self
                .cli(from.port, &["cluster", "getkeysinslot", &slot_arg, "100"])
                .await?;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "keys"];
            args.extend(keys);
            self.cli(from.port, &args).await?;
        }
        for node in [to, &from] {
            self.cli(
                node.port,
                &["cluster", "setslot", &slot_arg, "node", &to.id],
            )
            .await?;
        }
        self.wait_until_healthy().await
    }
}

/// `count` ports for cluster nodes: each free with its bus port (+10000) free too, both
/// below the kernel's ephemeral range (32768 and up on Linux), so that no outgoing
/// connection or `free_port` of a test running alongside takes a bus port between this
/// check and the node's start.
fn cluster_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    use std::net::TcpListener;
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let seed =
        u64::from(std::process::id()) ^ u64::from(std::time::UNIX_EPOCH.elapsed()?.subsec_nanos());
    let mut candidate = 10_000 + (seed % 12_000) as u16;
    let mut tried = 0;
    while ports.len() < count {
        tried += 1;
        if tried > 10_000 {
            bail!("no free port pairs for a cluster");
        }
        candidate = if candidate >= 22_000 {
            10_000
        } else {
            candidate + 1
        };
        let (Ok(a), Ok(b)) = (
            TcpListener::bind(("127.0.0.1", candidate)),
            TcpListener::bind(("127.0.0.1", candidate + 10_000)),
        ) else {
            continue;
        };
        held.push((a, b));
        ports.push(candidate);
    }
    Ok(ports)
}

/// The port of a node address as `CLUSTER NODES` writes it (`127.0.0.1:7000@17000`).
fn node_port(address: &str) -> anyhow::Result<u16> {
    let port = address.split(['@', ':']).nth(1).context("node address")?;
    Ok(port.parse()?)
}
