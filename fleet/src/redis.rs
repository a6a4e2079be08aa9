//! A redis-server on a free port with AOF persistence, its own data directory, and its log
//! kept. Never the shared server on 6379.

use std::{path::Path, time::Duration};

use tempfile::TempDir;
use tokio::process::Command;

use crate::{WAIT, free_port, process::Process};

/// When redis-server fsyncs its append-only file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every second: a common production setting; a kill loses up to a second of writes.
    EverySecond,
    /// On every write: a kill loses nothing acknowledged (what the durability tests need).
    Always,
}

impl Fsync {
    fn as_arg(self) -> &'static str {
        match self {
            Fsync::EverySecond => "everysec",
            Fsync::Always => "always",
        }
    }
}

/// A redis-server process.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    fsync: Fsync,
    dir: TempDir,
    log: std::path::PathBuf,
    process: Option<Process>,
}

impl Redis {
    /// Starts redis-server with AOF fsynced every second (a common production setting),
    /// logging into `log_dir`.
    pub async fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, log_dir.join("redis.log"), Fsync::EverySecond).await
    }

    /// Starts redis-server with the given fsync policy, keeping its log in its own data
    /// directory (gone with it): for tests that start one per case.
    pub async fn start_alone(fsync: Fsync) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("redis.log");
        Self::start_in(dir, log, fsync).await
    }

    async fn start_in(dir: TempDir, log: std::path::PathBuf, fsync: Fsync) -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?,
            fsync,
            dir,
            log,
            process: None,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid())
    }

    /// Its URL, e.g. `redis://127.0.0.1:41234/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync.as_arg(),
            ])
            .args(["--daemonize", "no", "--logfile", "", "--dir"])
            .arg(self.dir.path());
        let process = Process::spawn(command, &self.log).await?;
        process
            .wait_for_output("Ready to accept connections", WAIT)
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// Kills it (SIGKILL): only what reached the AOF survives.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill().await?;
        }
        Ok(())
    }

    /// Restarts it the way an operator does (SIGTERM: Redis writes its AOF out and exits),
    /// on the same port and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.signal("TERM")?;
            process.wait(WAIT).await?;
        }
        self.start_again().await
    }

    /// Starts it again on the same port and data (killing it first if it runs).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        // The port was ours a moment ago; wait for the kernel to let it go if it must.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
