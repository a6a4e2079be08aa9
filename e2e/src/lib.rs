//! Harness for browser tests and measurements: a natter-server on a free port serving the
//! built web client, a chromedriver, and headless Chromium sessions with their own
//! profiles (so each is a separate person: separate storage, separate streams). Every
//! process is killed on drop.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

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

/// A chromedriver process and the browsers it starts.
pub struct Driver {
    url: String,
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(group) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
        }
    }
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it says it is ready.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // Its own process group: on drop the whole group goes, browsers included (killing
        // chromedriver alone would orphan the Chromium processes it started).
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver (Debian package chromium-driver)")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("started successfully") {
                    return Ok(());
                }
            }
            bail!("chromedriver exited before it was ready")
        })
        .await??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        })
    }

    /// A headless Chromium with a fresh profile and a desktop window of 1280 x 800.
    pub async fn desktop(&self) -> anyhow::Result<Browser> {
        self.browser(None).await
    }

    /// A headless Chromium with a fresh profile emulating a 375 x 812 phone screen (touch,
    /// device pixel ratio 1).
    pub async fn phone(&self) -> anyhow::Result<Browser> {
        self.browser(Some(serde_json::json!({ "deviceMetrics": { "width": 375, "height": 812, "pixelRatio": 1.0, "touch": true } }))).await
    }

    async fn browser(
        &self,
        mobile_emulation: Option<serde_json::Value>,
    ) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        let chrome_options = serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-quic",
                    format!("--user-data-dir={}", profile.path().display()),
                                                            "--window-size=1280,800",
                ],
        });
        let mut chrome_options = chrome_options;
        if let Some(emulation) = mobile_emulation {
            chrome_options["mobileEmulation"] = emulation;
        }
        capabilities.insert("goog:chromeOptions".into(), chrome_options);
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&self.url)
            .await?;
        Ok(Browser {
            client,
            _profile: profile,
        })
    }
}

/// One person's browser.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _profile: TempDir,
}

impl Browser {
    /// Waits for an element matching a CSS selector.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element matches {css}"))
    }

    /// Waits for an element with `data-testid` = `test_id` whose text contains `needle`
    /// (which must not contain a double quote); returns its text. An element re-rendered
    /// between being found and being read is looked up again.
    pub async fn text_contains(&self, test_id: &str, needle: &str) -> anyhow::Result<String> {
        let xpath = format!(r#"//*[@data-testid="{test_id}" and contains(., "{needle}")]"#);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let element = self
                .client
                .wait()
                .at_most(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .for_element(Locator::XPath(&xpath))
                .await
                .with_context(|| format!("no {test_id} contains {needle:?}"))?;
            match element.text().await {
                Ok(text) => return Ok(text),
                // Replaced meanwhile (a stale element): look it up again.
                Err(_) if tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// The values of `attribute` of every element matching `css` now.
    pub async fn all_attributes(&self, css: &str, attribute: &str) -> anyhow::Result<Vec<String>> {
        let mut values = Vec::new();
        for element in self.all(css).await? {
            values.extend(element.attr(attribute).await?);
        }
        Ok(values)
    }

    /// Waits until nothing matches `css` (WebDriver has no "wait for absence": this polls,
    /// bounded by [`WAIT`]).
    pub async fn gone(&self, css: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.all(css).await?.is_empty() {
            if tokio::time::Instant::now() > deadline {
                bail!("{css} is still there");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// Replaces the value of the input matching `css` with `text` (keystrokes).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let input = self.find(css).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Writes a PNG of the page to the test-artifacts folder.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}
