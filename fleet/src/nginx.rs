//! nginx with the shipped configuration (`nginx/natter.conf.template`), rendered for this
//! machine's ports the way the official image's envsubst step renders it for compose.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::process::Command;

use crate::{WAIT, process::Process};

/// The one configuration file, shared with docker-compose.yml.
pub const TEMPLATE: &str = include_str!("../../nginx/natter.conf.template");

/// Debian's nginx has the stream module as a dynamic module (package libnginx-mod-stream);
/// the official image has it built in.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// What the template leaves open.
#[derive(Debug, Clone)]
pub struct NginxConfig {
    /// The public address.
    pub listen: SocketAddr,
    /// TLS certificate chain and key (PEM files), for TLS on the public port.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The instances.
    pub upstreams: Vec<SocketAddr>,
}

impl NginxConfig {
    /// The `server` lines of the upstream block, as compose's NATTER_UPSTREAM_SERVERS holds
    /// them. Passive failover marks an instance down for 1 s after one failed connect; the
    /// same instances again as `backup` with no failure accounting are what nginx tries when
    /// every instance is marked (a rolling restart faster than the marks expire), instead of
    /// refusing the client while instances are up.
    pub fn upstream_servers(&self) -> String {
        let primaries = self
            .upstreams
            .iter()
            .map(|addr| format!("server {addr} max_fails=1 fail_timeout=1s;"));
        let backups = self
            .upstreams
            .iter()
            .map(|addr| format!("server {addr} backup max_fails=0;"));
        primaries.chain(backups).collect::<Vec<_>>().join(" ")
    }

    /// The template with every placeholder filled in (nginx's own `$variables` stay).
    pub fn render(&self) -> anyhow::Result<String> {
        let listen = match self.tls {
            Some(_) => format!("{} ssl", self.listen),
            None => self.listen.to_string(),
        };
        // Without TLS: a path with a variable, which nginx reads only in a TLS handshake
        // (newer nginx loads a fixed path at start even without `ssl` on the listen line).
        let (cert, key) = match &self.tls {
            Some((cert, key)) => (cert.display().to_string(), key.display().to_string()),
            None => (
                "/nonexistent/$ssl_server_name.crt".to_owned(),
                "/nonexistent/$ssl_server_name.key".to_owned(),
            ),
        };
        let rendered = TEMPLATE
            .replace("${NATTER_LISTEN}", &listen)
            .replace("${NATTER_UPSTREAM_SERVERS}", &self.upstream_servers())
            .replace("${NATTER_TLS_CERT}", &cert)
            .replace("${NATTER_TLS_KEY}", &key);
        if let Some(left) = rendered
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .find(|line| line.contains("${NATTER_"))
        {
            bail!("the nginx template has a placeholder this renderer does not know: {left}");
        }
        Ok(rendered)
    }
}

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    /// The public address.
    pub addr: SocketAddr,
    _dir: TempDir,
    process: Process,
}

impl Nginx {
    /// Renders the configuration, checks it (`nginx -t`) and starts nginx in the foreground.
    pub async fn start(config: &NginxConfig, log_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = write_config(config, dir.path())?;
        check(&conf, dir.path()).await?;
        let mut command = Command::new("nginx");
        command.args(nginx_args(&conf, dir.path(), "daemon off;"));
        let process = Process::spawn(command, &log_dir.join("nginx.log")).await?;
        process
            .wait_for_output("start worker process", WAIT)
            .await?;
        Ok(Self {
            addr: config.listen,
            _dir: dir,
            process,
        })
    }

    /// Whether its log has a line containing `needle` (its access log is there too).
    pub fn logged(&self, needle: &str) -> bool {
        self.process.said(needle)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        self.process.log()
    }
}

/// Renders `config` into `dir/nginx.conf`.
fn write_config(config: &NginxConfig, dir: &Path) -> anyhow::Result<PathBuf> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config.render()?)?;
    Ok(conf)
}

/// `nginx -t` on the rendered configuration.
pub async fn check_config(config: &NginxConfig) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let conf = write_config(config, dir.path())?;
    check(&conf, dir.path()).await
}

async fn check(conf: &Path, prefix: &Path) -> anyhow::Result<()> {
    let output = Command::new("nginx")
        .arg("-t")
        .args(nginx_args(conf, prefix, ""))
        .output()
        .await
        .context("running nginx -t (Debian packages nginx and libnginx-mod-stream)")?;
    if !output.status.success() {
        bail!(
            "nginx -t failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// nginx run from its own prefix, with its early errors on stderr, loading the stream module
/// where it is a separate file.
fn nginx_args(conf: &Path, prefix: &Path, extra_globals: &str) -> Vec<String> {
    let mut globals = extra_globals.to_owned();
    if Path::new(STREAM_MODULE).exists() {
        globals.push_str(&format!(" load_module {STREAM_MODULE};"));
    }
    vec![
        "-e".into(),
        "stderr".into(),
        "-p".into(),
        prefix.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-g".into(),
        globals,
    ]
}
