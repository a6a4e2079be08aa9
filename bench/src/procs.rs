//! natter-server processes the benchmark runs (on port 0, killed on drop); Redis and nginx
//! come from natter-fleet.

use std::{path::PathBuf, process::Stdio};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// JWT secret shared by the benchmark's instances.
pub(crate) const SECRET: &str = "natter-bench-secret-shared-by-all-instances";

/// A natter-server process.
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) pid: u32,
    _child: Child,
    _dir: tempfile::TempDir,
}

pub(crate) fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATTER_SERVER_BIN") {
        return Ok(path.into());
    }
    let path = std::env::current_exe()?.with_file_name("natter-server");
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it (cargo build --release -p natter-server)",
        path.display()
    );
    Ok(path)
}

impl Server {
    /// Starts an instance (embedded when `redis` is `None`, else the flags that point it at
    /// Redis) and waits until it listens; `behind_nginx` makes it trust a PROXY protocol
    /// header from the loopback address.
    pub(crate) async fn start(
        redis: Option<&[String]>,
        behind_nginx: bool,
    ) -> anyhow::Result<Self> {
        Self::start_binary(&server_binary()?, redis, behind_nginx).await
    }

    /// [`Server::start`] with the natter-server binary at `binary`.
    pub(crate) async fn start_binary(
        binary: &std::path::Path,
        redis: Option<&[String]>,
        behind_nginx: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(binary);
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
                "--data-dir",
            ])
            .arg(dir.path())
            // The benchmarks play many clients with few accounts, and up to 50,000 streams
            // and more on one instance: the abuse limits and rate limits would refuse them.
            .args([
                "--max-streams-per-user",
                "1000000",
                "--max-streams",
                "1000000",
                "--rate-limits",
                "false",
            ])
            .env("RUST_LOG", "warn,natter_server::server=info")
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(redis) = redis {
            command.args(redis).args(["--redis-prefix", "bench"]);
        }
        if behind_nginx {
            command.args(["--trusted-proxies", "127.0.0.1"]);
        }
        Self::spawn(command, dir).await
    }

    /// Starts the minimal tonic server (`natter-bench --serve-baseline`) as its own process.
    pub(crate) async fn start_baseline() -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--serve-baseline")
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Self::spawn(command, tempfile::tempdir()?).await
    }

    /// Spawns a server that prints `address=<addr>` on stderr once it listens.
    async fn spawn(mut command: Command, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let mut child = command.spawn().context("starting a server")?;
        let pid = child.id().context("pid")?;
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("address=").nth(1) {
                let address = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Ok(Self {
                    url: format!("http://{address}"),
                    pid,
                    _child: child,
                    _dir: dir,
                });
            }
        }
        bail!("the server exited before listening")
    }

    /// Resident memory of the process, bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid)
    }
}

/// CPU time (user + system) a process has used so far, seconds, from /proc.
pub(crate) fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces): the
    // state is the 1st, utime the 12th and stime the 13th (fields 14 and 15 of proc(5)).
    let after_name = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux (getconf CLK_TCK).
    Ok(ticks as f64 / 100.0)
}

/// Resident memory of a process, from /proc.
pub(crate) fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}
