//! Natter's whole topology on one machine, without Docker: a `redis-server` (AOF on) or a
//! Redis Cluster of three shards, N
//! `natter-server` instances sharing one secret, and nginx in front of them with the shipped
//! configuration (`nginx/natter.conf.template`), optionally with TLS. `scripts/fleet` runs it
//! for people; the e2e tests and natter-bench run the same code. Every process is killed on
//! drop, and every process's output is kept in a log file.

pub mod http;
mod instance;
mod nginx;
mod process;
mod redis;
mod redis_cluster;
mod tls;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;

pub use instance::{Instance, InstanceConfig};
pub use nginx::{Nginx, NginxConfig, TEMPLATE, check_config};
pub use redis::{Fsync, Redis};
pub use redis_cluster::{Primary, RedisCluster};
pub use tls::SelfSigned;

/// Upper bound of any single wait for a process.
pub const WAIT: Duration = Duration::from_secs(30);

/// A free TCP port on the loopback interface (free when asked; pass it on quickly).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The natter-server binary: `NATTER_SERVER_BIN`, else the one built next to the running
/// executable.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATTER_SERVER_BIN") {
        return Ok(path.into());
    }
    workspace_binary("natter-server")
}

/// A binary of the workspace built next to the running executable (tests run from
/// `target/<profile>/deps`, tools from `target/<profile>`).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
        .with_context(|| {
            format!(
                "no {name} binary near {}: build it (cargo build --workspace --bins)",
                exe.display()
            )
        })
}

/// 32 random bytes as hex: a JWT secret for one fleet.
fn random_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How to lay out a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// natter-server instances behind nginx.
    pub instances: usize,
    /// nginx's public address; port 0 picks a free one.
    pub public: SocketAddr,
    /// TLS on the public port, with a self-signed certificate made for the fleet.
    pub tls: bool,
    /// The natter-server binary.
    pub server_bin: PathBuf,
    /// The built web client, if it should be served.
    pub static_dir: Option<PathBuf>,
    /// Where every process's log goes.
    pub log_dir: PathBuf,
    /// Further arguments for every instance.
    pub instance_args: Vec<String>,
    /// A Redis Cluster of three shards instead of one redis-server.
    pub redis_cluster: bool,
}

/// A Redis that instances share: one server or a cluster.
pub trait SharedRedis {
    /// The natter-server flag and value that point an instance at it.
    fn server_args(&self) -> [String; 2];
}

impl SharedRedis for Redis {
    fn server_args(&self) -> [String; 2] {
        ["--redis-url".into(), self.url()]
    }
}

impl SharedRedis for RedisCluster {
    fn server_args(&self) -> [String; 2] {
        ["--redis-cluster".into(), self.seeds()]
    }
}

/// The fleet's Redis.
#[derive(Debug)]
pub enum FleetRedis {
    /// One redis-server.
    Server(Box<Redis>),
    /// Three primaries with a replica each.
    Cluster(RedisCluster),
}

impl FleetRedis {
    /// The flag and value instances get.
    pub fn server_args(&self) -> [String; 2] {
        match self {
            Self::Server(redis) => redis.server_args(),
            Self::Cluster(cluster) => cluster.server_args(),
        }
    }
}

impl FleetConfig {
    /// Three instances, nginx on a free loopback port, no TLS, logs in `log_dir`.
    pub fn local(log_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            instances: 3,
            public: "127.0.0.1:0".parse()?,
            tls: false,
            server_bin: server_binary()?,
            static_dir: None,
            log_dir: log_dir.to_owned(),
            instance_args: Vec::new(),
            redis_cluster: false,
        })
    }
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    /// The shared Redis.
    pub redis: FleetRedis,
    /// The instances, in nginx's upstream order.
    pub instances: Vec<Instance>,
    /// The load balancer.
    pub nginx: Nginx,
    /// The certificate clients must trust, with TLS.
    pub tls: Option<SelfSigned>,
    /// The JWT secret every instance shares.
    pub secret: String,
    _certs: tempfile::TempDir,
}

impl Fleet {
    /// Starts Redis, the instances (each ready), then nginx in front of them.
    pub async fn start(config: FleetConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.log_dir)?;
        let redis = if config.redis_cluster {
            FleetRedis::Cluster(
                RedisCluster::start(Some(&config.log_dir), Fsync::EverySecond).await?,
            )
        } else {
            FleetRedis::Server(Box::new(Redis::start(&config.log_dir).await?))
        };
        let secret = random_secret()?;
        let instance_config = InstanceConfig {
            server_bin: config.server_bin.clone(),
            redis_args: redis.server_args(),
            jwt_secret: secret.clone(),
            static_dir: config.static_dir.clone(),
            // nginx reaches the instances from the loopback address.
            trusted_proxies: "127.0.0.1".into(),
            extra_args: config.instance_args.clone(),
        };
        let mut instances = Vec::with_capacity(config.instances);
        for n in 1..=config.instances {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            instances.push(
                Instance::start(
                    &format!("natter-{n}"),
                    addr,
                    instance_config.clone(),
                    &config.log_dir,
                )
                .await?,
            );
        }
        let certs = tempfile::tempdir()?;
        let tls = config
            .tls
            .then(|| SelfSigned::create(certs.path()))
            .transpose()?;
        let mut public = config.public;
        if public.port() == 0 {
            public.set_port(free_port()?);
        }
        let nginx = Nginx::start(
            &NginxConfig {
                listen: public,
                tls: tls.as_ref().map(|t| (t.cert.clone(), t.key.clone())),
                upstreams: instances.iter().map(|i| i.addr).collect(),
            },
            &config.log_dir,
        )
        .await?;
        Ok(Self {
            redis,
            instances,
            nginx,
            tls,
            secret,
            _certs: certs,
        })
    }

    /// The public URL: `http://127.0.0.1:P`, or `https://localhost:P` with TLS (the name the
    /// certificate carries).
    pub fn url(&self) -> String {
        let port = self.nginx.addr.port();
        match (&self.tls, self.nginx.addr.ip()) {
            (Some(_), _) => format!("https://localhost:{port}"),
            (None, ip) if ip.is_unspecified() => format!("http://localhost:{port}"),
            (None, ip) => format!("http://{ip}:{port}"),
        }
    }

    /// The instance whose log has a line containing `needle`, if one has.
    pub fn instance_that_logged(&self, needle: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.logged(needle))
    }
}
