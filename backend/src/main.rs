//! `natter-server`: loads configuration, sets up logging, binds, runs until Ctrl-C/SIGTERM.
//! `natter-server admin grant|revoke USERNAME` runs an operator task instead.

use anyhow::Context;
use clap::Parser;
use natter_server::{Config, config::Command, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    if let Some(Command::Admin { action }) = config.command.take() {
        telemetry::init_as("warn", config.log_format);
        println!("{}", natter_server::administer(config, action).await?);
        return Ok(());
    }
    telemetry::init_as("info", config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let natter = natter_server::build(config).await?;
    natter_server::run(listener, natter, natter_server::shutdown_signal()).await
}
