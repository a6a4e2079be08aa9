//! Configuration from flags and environment variables (flags win).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::redis::RedisTarget;

/// natter-server: a real-time chat server speaking native gRPC, gRPC-Web and HTTP on one port.
///
/// With no arguments it runs the embedded default: data in ./data, no external services.
#[derive(Debug, Clone, Parser)]
#[command(name = "natter-server", version, about)]
pub struct Config {
    /// An operator task instead of serving (run with the server's own flags or
    /// environment, so it finds the same data).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on for gRPC, gRPC-Web and HTTP alike.
    #[arg(long, env = "NATTER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Directory for the embedded database and the generated JWT secret.
    #[arg(long, env = "NATTER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Secret for signing access tokens (HS256). When unset, a random one is generated
    /// once and kept in the data directory. Prefer --jwt-secret-file: a flag's value shows
    /// in `ps` to every user of the machine.
    #[arg(long, env = "NATTER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// File holding the secret for signing access tokens (surrounding whitespace ignored),
    /// instead of --jwt-secret.
    #[arg(long, env = "NATTER_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Lifetime of access tokens, e.g. 900s, 30m, 12h, 7d (plain numbers are seconds).
    #[arg(long, env = "NATTER_TOKEN_TTL", default_value = "12h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Removed: admin by username could be taken by whoever registered a listed name
    /// first. Starting with it fails and says what to use instead.
    #[arg(long, env = "NATTER_ADMINS", value_delimiter = ',', hide = true)]
    pub admins: Vec<String>,

    /// Longest a session lasts from its sign-in, however often its token is refreshed.
    #[arg(long, env = "NATTER_MAX_SESSION_AGE", default_value = "30d", value_parser = parse_duration)]
    pub max_session_age: Duration,

    /// Interval between Heartbeat events on idle streams; keep it below proxies' idle timeouts.
    #[arg(long, env = "NATTER_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Redis URL (e.g. redis://127.0.0.1:6379/0). When set, accounts, rooms and logs live in
    /// Redis and events fan out through Redis pub/sub, so any number of instances form one
    /// service. Requires an explicit --jwt-secret shared by all instances.
    #[arg(long, env = "NATTER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Redis Cluster seed nodes instead of one server (comma-separated URLs, e.g.
    /// redis://10.0.0.1:7000,redis://10.0.0.2:7000; the rest of the cluster is discovered).
    /// Keys are laid out by hash slot and rooms fan out through sharded pub/sub, so traffic
    /// spreads over the shards.
    #[arg(long, env = "NATTER_REDIS_CLUSTER", hide_env_values = true)]
    pub redis_cluster: Option<Secret>,

    /// Replicas that must hold a message before its send is answered (Redis WAIT, at most
    /// 1 s; short of it the send fails UNAVAILABLE and a retry with the same client id finds
    /// the message). 0 answers once the primary has it: a failover right after may lose it.
    #[arg(long, env = "NATTER_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    #[arg(long, env = "NATTER_REDIS_PREFIX", default_value = "natter")]
    pub redis_prefix: String,

    /// Messages kept per room in Redis (0 keeps everything). Older ones are trimmed; clients
    /// resuming from before the kept window get a HistoryTrimmed event.
    #[arg(long, env = "NATTER_HISTORY_RETENTION", default_value_t = 0)]
    pub history_retention: u64,

    /// In Redis mode: an instance that stops sending heartbeats for this long is considered
    /// dead, and its users go offline for everyone.
    #[arg(long, env = "NATTER_PRESENCE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Addresses (IPs or CIDR blocks, comma-separated) of load balancers allowed to send a
    /// PROXY protocol header (v1 or v2) with the real client address. A header from any other
    /// address is refused; connections without one are served as they are.
    #[arg(long, env = "NATTER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// On SIGTERM/Ctrl-C: how long open calls may take to finish after every stream has
    /// been told to reconnect elsewhere.
    #[arg(long, env = "NATTER_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Largest request message accepted, in bytes (a chat message is at most 4,000
    /// characters); larger ones are refused with OUT_OF_RANGE before they are decoded.
    #[arg(long, env = "NATTER_MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,

    /// Concurrent HTTP/2 streams (calls) one connection may open; more are refused by
    /// HTTP/2 itself (REFUSED_STREAM) until some finish.
    #[arg(long, env = "NATTER_MAX_STREAMS_PER_CONNECTION", default_value_t = 256)]
    pub max_streams_per_connection: u32,

    /// Event streams (Subscribe or Chat) one account may hold open, across every instance.
    /// One Chat stream carries all of a user's rooms; a few cover several tabs and devices.
    #[arg(long, env = "NATTER_MAX_STREAMS_PER_USER", default_value_t = 16)]
    pub max_streams_per_user: u32,

    /// Event streams this instance holds open at most (an idle one costs about 8 KiB).
    #[arg(long, env = "NATTER_MAX_STREAMS", default_value_t = 50_000)]
    pub max_streams: u32,

    /// Rooms (direct ones included) one account may be in.
    #[arg(long, env = "NATTER_MAX_ROOMS_PER_USER", default_value_t = 500)]
    pub max_rooms_per_user: usize,

    /// History pages (up to about 256 KiB each) being sent to one account at once, per
    /// instance: a client that asks and never reads cannot make the server hold more.
    #[arg(long, env = "NATTER_MAX_HISTORY_READS_PER_USER", default_value_t = 8)]
    pub max_history_reads_per_user: usize,

    /// Client connections this instance holds at most; further ones are closed at once.
    #[arg(long, env = "NATTER_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// An HTTP/1.1 connection that takes longer than this to send a request's head (a
    /// slowloris client), or sits idle between requests this long, is closed.
    #[arg(long, env = "NATTER_HTTP1_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http1_header_timeout: Duration,

    /// An event stream whose client takes nothing for this long (its flow-control window
    /// stays full) is ended by closing its connection; the client resumes with its cursors
    /// and loses nothing. `0` turns it off (behind a proxy that carries many clients on one
    /// HTTP/2 connection, which one slow client would break for all).
    #[arg(long, env = "NATTER_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// Deadline of a unary call (streams are not bounded by it); a client's shorter
    /// `grpc-timeout` wins.
    #[arg(long, env = "NATTER_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Rate limits per client address and per account (sign-ins, registrations, joins,
    /// room creation, direct rooms, sends, typing). `false` turns them off, for
    /// benchmarks that play many clients with few accounts.
    #[arg(long, env = "NATTER_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limits: bool,

    /// Client addresses (IPs or CIDR blocks, comma-separated) not rate limited by address,
    /// such as a trusted internal network. Their accounts are still limited.
    #[arg(long, env = "NATTER_RATE_LIMIT_EXEMPT", value_delimiter = ',', value_parser = parse_net)]
    pub rate_limit_exempt: Vec<ipnet::IpNet>,

    /// gRPC server reflection (service and message descriptions for tools such as grpcurl)
    /// on the public port. `false` turns it off.
    #[arg(long, env = "NATTER_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,

    /// A separate address for `/metrics` (with its own `/healthz` and `/readyz` for the
    /// orchestrator), e.g. 127.0.0.1:9090. When set, `/metrics` leaves the public port.
    #[arg(long, env = "NATTER_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Log lines as text, or as JSON objects (one per line) for log collectors.
    #[arg(long, env = "NATTER_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,

    /// Other origins (comma-separated, e.g. https://chat.example.com) whose pages may call
    /// the gRPC-Web API; the gRPC status headers are exposed to them. Empty: this server's
    /// own origin only.
    #[arg(long, env = "NATTER_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Directory with the built web client, served at `/`.
    #[arg(long, env = "NATTER_STATIC_DIR", default_value = "frontend/dist")]
    pub static_dir: PathBuf,
}

/// Operator tasks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage the admin role (admins may delete any room).
    Admin {
        /// What to do.
        #[command(subcommand)]
        action: AdminAction,
    },
}

/// What `natter-server admin` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminAction {
    /// Makes an existing account an admin.
    Grant {
        /// The account's username.
        username: String,
    },
    /// Takes the admin role back.
    Revoke {
        /// The account's username.
        username: String,
    },
}

/// A value that must not show in logs or errors (the token secret, a Redis URL with its
/// password): its `Debug` is redacted, so a configuration can be printed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Config {
    /// The defaults, as if started with no flags and no environment.
    pub fn defaults() -> Self {
        Self::parse_from(["natter-server"])
    }

    /// Which Redis to use, if any: one server, or a cluster by its seeds.
    pub fn redis_target(&self) -> anyhow::Result<Option<RedisTarget>> {
        let target = match (&self.redis_url, &self.redis_cluster) {
            (Some(_), Some(_)) => anyhow::bail!(
                "both --redis-url and --redis-cluster (or NATTER_REDIS_URL and \
                 NATTER_REDIS_CLUSTER) are set: use --redis-url for one server, \
                 --redis-cluster for a cluster's seed nodes"
            ),
            (Some(url), None) => Some(RedisTarget::Server(checked_redis_url(
                url.expose(),
                "--redis-url",
            )?)),
            (None, Some(seeds)) => {
                let seeds = seeds
                    .expose()
                    .split(',')
                    .map(str::trim)
                    .filter(|seed| !seed.is_empty())
                    .enumerate()
                    .map(|(i, seed)| {
                        checked_redis_url(seed, &format!("seed {} of --redis-cluster", i + 1))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                anyhow::ensure!(
                    !seeds.is_empty(),
                    "--redis-cluster lists no seed node: give one or more URLs such as \
                     redis://10.0.0.1:7000,redis://10.0.0.2:7000"
                );
                Some(RedisTarget::Cluster(seeds))
            }
            (None, None) => None,
        };
        anyhow::ensure!(
            target.is_some() || self.redis_wait_replicas == 0,
            "--redis-wait-replicas needs Redis (--redis-url or --redis-cluster)"
        );
        Ok(target)
    }
}

/// A Redis URL as given, if the redis crate understands it. The error names the flag, not
/// the value, which may hold a password.
fn checked_redis_url(url: &str, what: &str) -> anyhow::Result<String> {
    use redis::IntoConnectionInfo as _;
    url.into_connection_info().map_err(|_| {
        anyhow::anyhow!("{what} is not a Redis URL like redis://[:password@]host:port[/db]")
    })?;
    Ok(url.to_owned())
}

/// Parses `10.0.0.0/8`, or a single address such as `127.0.0.1` or `::1`.
pub fn parse_net(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{raw}' is neither an IP address nor a CIDR block like 10.0.0.0/8"))
}

/// Parses `90`, `90s`, `15m`, `12h` or `7d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration like 30s, 15m, 12h or 7d"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => return Ok(Duration::from_millis(number)),
        "m" => number * 60,
        "h" => number * 3600,
        "d" => number * 86_400,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{raw}': use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_redis_target_at_most_and_every_seed_checked() {
        let parse = |args: &[&str]| {
            Config::parse_from(std::iter::once("natter-server").chain(args.iter().copied()))
                .redis_target()
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--redis-url", "redis://h:1/"]).unwrap(),
            Some(RedisTarget::Server("redis://h:1/".into()))
        );
        assert_eq!(
            parse(&["--redis-cluster", "redis://a:1, redis://b:2,"]).unwrap(),
            Some(RedisTarget::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        let both = parse(&[
            "--redis-url",
            "redis://h:1",
            "--redis-cluster",
            "redis://a:1",
        ]);
        assert!(
            both.unwrap_err()
                .to_string()
                .contains("both --redis-url and --redis-cluster")
        );
        let bad = parse(&["--redis-cluster", "redis://a:1,http://:pw@b"]).unwrap_err();
        assert!(
            bad.to_string()
                .contains("seed 2 of --redis-cluster is not a Redis URL")
        );
        assert!(!bad.to_string().contains("pw"));
        assert!(
            parse(&["--redis-cluster", " , "])
                .unwrap_err()
                .to_string()
                .contains("no seed")
        );
        let wait = parse(&["--redis-wait-replicas", "1"]).unwrap_err();
        assert!(wait.to_string().contains("needs Redis"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let config = Config::parse_from([
            "natter-server",
            "--trusted-proxies",
            "127.0.0.1, 10.0.0.0/8,::1",
        ]);
        let nets: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        assert!(parse_net("nginx").is_err());
        assert!(Config::defaults().trusted_proxies.is_empty());
        assert_eq!(Config::defaults().drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let config = Config::parse_from([
            "natter-server",
            "--jwt-secret",
            "very-secret-signing-key-of-32-bytes",
            "--redis-url",
            "redis://:hunter2@cache:6379/0",
        ]);
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("jwt_secret: Some(<redacted>)"), "{shown}");
    }

    #[test]
    fn a_secret_comes_from_a_flag_or_a_file_not_both() {
        let both = Config::try_parse_from([
            "natter-server",
            "--jwt-secret",
            "x",
            "--jwt-secret-file",
            "/run/secrets/jwt",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = Config::defaults();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
    }
}
