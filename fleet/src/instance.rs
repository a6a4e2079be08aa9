//! One natter-server process on a fixed port (nginx's configuration names it), which can be
//! killed, drained and started again on the same port.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::{WAIT, http::get, process::Process};

/// How an instance is started.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The natter-server binary.
    pub server_bin: PathBuf,
    /// `--redis-url URL` or `--redis-cluster SEEDS` (see [`crate::SharedRedis`]).
    pub redis_args: [String; 2],
    /// `--jwt-secret`, the same on every instance.
    pub jwt_secret: String,
    /// `--static-dir` (the built web client), if any.
    pub static_dir: Option<PathBuf>,
    /// `--trusted-proxies`.
    pub trusted_proxies: String,
    /// Further arguments (say `--heartbeat-interval 2s`).
    pub extra_args: Vec<String>,
}

/// A natter-server process of the fleet.
#[derive(Debug)]
pub struct Instance {
    /// Its name in logs, e.g. `natter-1`.
    pub name: String,
    /// Its own address (behind nginx).
    pub addr: SocketAddr,
    config: InstanceConfig,
    data: TempDir,
    log: PathBuf,
    process: Option<Process>,
}

impl Instance {
    /// Starts an instance on `addr` and waits until it is ready.
    pub async fn start(
        name: &str,
        addr: SocketAddr,
        config: InstanceConfig,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut instance = Self {
            name: name.to_owned(),
            addr,
            config,
            data: tempfile::tempdir()?,
            log: log_dir.join(format!("{name}.log")),
            process: None,
        };
        instance.start_again().await?;
        Ok(instance)
    }

    /// Its own URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where its log goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Whether its log has a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.process.as_ref().is_some_and(|p| p.said(needle))
    }

    /// Waits until its log has a line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> anyhow::Result<()> {
        self.process
            .as_ref()
            .context("the instance is not running")?
            .wait_for_output(needle, WAIT)
            .await
    }

    /// Starts the process (again, after a kill or a drain) and waits until it is ready.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.config.server_bin);
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.config.redis_args)
            .args(["--redis-prefix", "natter"])
            .args(["--jwt-secret", &self.config.jwt_secret])
            .args(["--trusted-proxies", &self.config.trusted_proxies])
            .args(&self.config.extra_args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if let Some(dir) = &self.config.static_dir {
            command.arg("--static-dir").arg(dir);
        }
        let process = Process::spawn(command, &self.log).await?;
        self.process = Some(process);
        self.wait_ready().await
    }

    /// Polls `/readyz` until it answers 200: listening, Redis reachable, not draining.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.ready().await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} not ready in time (log: {})",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn ready(&self) -> bool {
        matches!(get(self.addr, "/readyz", None, "").await, Ok(a) if a.status == 200)
    }

    /// The value of a counter or gauge from its `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<i64> {
        let metrics = get(self.addr, "/metrics", None, "").await?.body;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .with_context(|| format!("no {name} in the metrics of {}", self.name))?
            .trim()
            .parse()
            .context("a metric that is not a number")
    }

    /// `kill -9`: no drain, no cleanup, as a crash.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit (it drains first).
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if self.process.is_none() {
            return Ok(());
        }
        self.begin_drain()?;
        let status = self.wait_exit().await?;
        if !status.success() {
            bail!("{} exited with {status} after SIGTERM", self.name);
        }
        Ok(())
    }

    /// Sends SIGTERM without waiting: the instance drains while the caller watches.
    pub fn begin_drain(&self) -> anyhow::Result<()> {
        self.process
            .as_ref()
            .context("the instance is not running")?
            .signal("TERM")
    }

    /// Waits for a draining instance to exit.
    pub async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut process = self.process.take().context("the instance is not running")?;
        process.wait(WAIT).await
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }
}
