//! `natter-server`: loads configuration, sets up logging, binds, runs until Ctrl-C/SIGTERM.

use anyhow::Context;
use clap::Parser;
use natter_server::{Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init("info");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let natter = natter_server::build(config).await?;
    natter_server::run(listener, natter, natter_server::shutdown_signal()).await
}
