//! Chromium under chromedriver: one process group per driver, a fresh profile per browser.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use fantoccini::{
    Client, ClientBuilder, Locator,
    actions::{InputSource, KeyAction, KeyActions},
    elements::Element,
    wd::WebDriverCompatibleCommand,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::{WAIT, artifacts_dir};

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
        self.browser(None, &[]).await
    }

    /// A desktop browser in which `host` is a name for this machine (127.0.0.1): a page
    /// served there is not a secure context, as on any plain-HTTP address but localhost.
    pub async fn desktop_resolving(&self, host: &str) -> anyhow::Result<Browser> {
        let rule = format!("--host-resolver-rules=MAP {host} 127.0.0.1");
        self.browser(None, &[rule]).await
    }

    /// A desktop browser that accepts any TLS certificate (a fleet's self-signed one).
    pub async fn desktop_trusting_any_certificate(&self) -> anyhow::Result<Browser> {
        self.browser(None, &["--ignore-certificate-errors".to_owned()])
            .await
    }

    /// A headless Chromium with a fresh profile emulating a 375 x 812 phone screen (touch,
    /// device pixel ratio 1).
    pub async fn phone(&self) -> anyhow::Result<Browser> {
        let metrics = serde_json::json!({
            "deviceMetrics": { "width": 375, "height": 812, "pixelRatio": 1.0, "touch": true }
        });
        self.browser(Some(metrics), &[]).await
    }

    async fn browser(
        &self,
        mobile_emulation: Option<serde_json::Value>,
        extra_args: &[String],
    ) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        let mut chrome_options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if let Some(args) = chrome_options["args"].as_array_mut() {
            args.extend(extra_args.iter().map(|arg| arg.as_str().into()));
        }
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
        self.wait_for(Locator::Css(css)).await
    }

    /// Waits for an element matching an XPath expression.
    pub async fn find_xpath(&self, xpath: &str) -> anyhow::Result<Element> {
        self.wait_for(Locator::XPath(xpath)).await
    }

    async fn wait_for(&self, locator: Locator<'_>) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(locator)
            .await
            .with_context(|| format!("no element matches {locator:?}"))
    }

    /// Presses and releases each key of `keys` (characters and WebDriver key codes such as
    /// Tab), one after the other, wherever the keyboard focus is: what a person at a
    /// keyboard does, without pointing at an element.
    pub async fn type_keys(&self, keys: &str) -> anyhow::Result<()> {
        let mut keyboard = KeyActions::new("keyboard".into());
        for key in keys.chars() {
            keyboard = keyboard
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(keyboard).await?;
        Ok(())
    }

    /// The `data-testid` of the element with the keyboard focus.
    pub async fn focused_test_id(&self) -> anyhow::Result<String> {
        let id = self
            .client
            .execute("return document.activeElement.dataset.testid || ''", vec![])
            .await?;
        Ok(id.as_str().unwrap_or_default().to_owned())
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

    /// Runs a Chrome DevTools Protocol command in this browser (network conditions, media
    /// emulation, permissions: what WebDriver itself cannot do) and returns its result.
    pub async fn cdp(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let command = DevToolsCommand {
            method: method.to_owned(),
            params,
        };
        self.client
            .issue_cmd(command)
            .await
            .with_context(|| format!("DevTools command {method}"))
    }

    /// Evaluates a JavaScript expression (which may be a promise) in the page.
    pub async fn eval(&self, expression: &str) -> anyhow::Result<serde_json::Value> {
        let script = format!("return await ({expression});");
        Ok(self.client.execute(&script, vec![]).await?)
    }

    /// Writes a PNG of the page to the test-artifacts folder.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

/// A DevTools command, sent through chromedriver's `goog/cdp/execute` endpoint.
#[derive(Debug)]
struct DevToolsCommand {
    method: String,
    params: serde_json::Value,
}

impl WebDriverCompatibleCommand for DevToolsCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = serde_json::json!({ "cmd": self.method, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}
