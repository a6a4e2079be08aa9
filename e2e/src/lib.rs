//! Harness for browser tests and measurements: a natter-server on a free port serving the
//! built web client, a chromedriver, and headless Chromium sessions with their own
//! profiles (so each is a separate person: separate storage, separate streams). Every
//! process is killed on drop.

mod browser;
pub mod grpc_web;
mod proxy;
pub mod traffic;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use tempfile::TempDir;

pub use browser::{Browser, Driver};
pub use proxy::StallingProxy;

/// Upper bound of any single wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// The built web client (`scripts/build-web`).
pub fn web_client_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../frontend/dist");
    if !dir.join("index.html").exists() {
        bail!(
            "{} has no build of the web client: run scripts/build-web",
            dir.display()
        );
    }
    Ok(dir)
}

/// Where screenshots go.
pub fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A server on the embedded default serving the web client.
pub struct Server {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    config: natter_server::Config,
    _data: TempDir,
    running: Option<Running>,
}

type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

impl Server {
    /// Starts a server in this process on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with adjusted settings.
    pub async fn start_with(
        adjust: impl FnOnce(&mut natter_server::Config),
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut config = natter_server::Config::defaults();
        config.data_dir = data.path().to_path_buf();
        config.static_dir = web_client_dir()?;
        config.listen = "127.0.0.1:0".parse()?;
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        config.listen = listener.local_addr()?;
        let mut server = Self {
            url: format!("http://{}", config.listen),
            config,
            _data: data,
            running: None,
        };
        server.serve(listener).await?;
        Ok(server)
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        let natter = natter_server::build(self.config.clone()).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(natter_server::run(listener, natter, async {
            let _ = stopped.await;
        }));
        self.running = Some((stop, task));
        Ok(())
    }

    /// The current value of a counter or gauge from its `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let response = natter_fleet::http::get(self.addr(), "/metrics", None, "")
            .await?
            .body;
        let value = response
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .with_context(|| format!("no {name} in {response}"))?;
        Ok(value.trim().parse()?)
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.config.listen
    }

    /// Shuts the server down gracefully (streams end); its address and data stay reserved
    /// for [`Server::start_again`]. Together: an outage, as a deploy or a crash looks to clients.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, task).await???;
        }
        Ok(())
    }

    /// Starts the stopped server again on the same address and data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.config.listen).await?;
        self.serve(listener).await
    }
}
