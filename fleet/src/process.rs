//! A child process whose output is kept: written to a log file (a test artifact) and held in
//! memory so that a test can wait for a line. Killed on drop.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::Notify,
};

/// Output lines of a process, shared with the tasks that read its pipes.
#[derive(Debug, Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    grew: Notify,
}

/// A running child process with its output captured.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    output: Arc<Output>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` in its own process group, appending its stdout and stderr to `log`.
    pub(crate) async fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .await
            .with_context(|| format!("opening {}", log.display()))?;
        let file = Arc::new(tokio::sync::Mutex::new(file));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {:?}", command.as_std().get_program()))?;
        let output = Arc::new(Output::default());
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        tokio::spawn(keep(stdout, output.clone(), file.clone()));
        tokio::spawn(keep(stderr, output.clone(), file));
        Ok(Self {
            child,
            output,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Where its output goes.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Whether any output line so far contains `needle`.
    pub(crate) fn said(&self, needle: &str) -> bool {
        self.output
            .lines
            .lock()
            .expect("output lock")
            .iter()
            .any(|line| line.contains(needle))
    }

    /// Waits until an output line contains `needle`.
    pub(crate) async fn wait_for_output(&self, needle: &str, wait: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(wait, async {
            loop {
                let grew = self.output.grew.notified();
                if self.said(needle) {
                    return;
                }
                grew.await;
            }
        })
        .await
        .with_context(|| format!("no '{needle}' in {} in time", self.log.display()))
    }

    /// Sends a signal (`TERM`, `KILL`, ...) to the process.
    pub(crate) fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit.
    pub(crate) async fn wait(
        &mut self,
        wait: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        tokio::time::timeout(wait, self.child.wait())
            .await
            .context("the process did not exit in time")?
            .context("waiting for the process")
    }

    /// Kills the process and everything it started (SIGKILL to its group) and reaps it.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        self.kill_group();
        self.child.kill().await?;
        Ok(())
    }

    fn kill_group(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Process {
    /// The whole group goes: nginx's workers would otherwise outlive their master.
    fn drop(&mut self) {
        self.kill_group();
    }
}

async fn keep(
    pipe: impl AsyncRead + Unpin,
    output: Arc<Output>,
    file: Arc<tokio::sync::Mutex<tokio::fs::File>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        {
            let mut file = file.lock().await;
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
        output.lines.lock().expect("output lock").push(line);
        output.grew.notify_waiters();
    }
}
