//! `natter-fleet`: runs the whole topology on this machine (what `scripts/fleet` starts):
//! redis-server with AOF (or, with --redis-cluster, a cluster of three shards), three
//! natter-server instances sharing one secret, and nginx with
//! the shipped configuration on one public port. Stops everything on Ctrl-C or SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use natter_fleet::{Fleet, FleetConfig, FleetRedis, server_binary};

/// Run Natter as a fleet on this machine.
#[derive(Debug, Parser)]
#[command(name = "natter-fleet")]
struct Args {
    /// Public port (nginx).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address nginx listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// TLS on the public port (HTTP/2 for browsers), with a self-signed certificate.
    #[arg(long)]
    tls: bool,
    /// Number of natter-server instances.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// The built web client.
    #[arg(long, default_value = "frontend/dist")]
    static_dir: PathBuf,
    /// Where the logs of every process go.
    #[arg(long, default_value = "fleet-logs")]
    log_dir: PathBuf,
    /// A local Redis Cluster (three primaries, three replicas) instead of one redis-server.
    #[arg(long)]
    redis_cluster: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = FleetConfig {
        instances: args.instances,
        public: SocketAddr::new(args.bind, args.port),
        tls: args.tls,
        server_bin: server_binary()?,
        static_dir: Some(args.static_dir),
        log_dir: args.log_dir.clone(),
        instance_args: Vec::new(),
        redis_cluster: args.redis_cluster,
    };
    let mut fleet = Fleet::start(config).await.context("starting the fleet")?;
    println!("Natter fleet ready: {}", fleet.url());
    if let Some(tls) = &fleet.tls {
        let ca = args.log_dir.join("natter-ca.crt");
        std::fs::write(&ca, &tls.cert_pem)?;
        println!(
            "  self-signed certificate: {} (natter --ca-cert it, or accept it in the browser)",
            ca.display()
        );
    }
    for instance in &fleet.instances {
        println!("  {}: {}", instance.name, instance.url());
    }
    match &fleet.redis {
        FleetRedis::Server(redis) => println!("  redis: {}", redis.url()),
        FleetRedis::Cluster(cluster) => println!("  redis cluster: {}", cluster.seeds()),
    }
    println!("  logs: {}/", args.log_dir.display());
    println!("Ctrl-C stops everything.");
    shutdown_signal().await?;
    println!("stopping: draining the instances");
    for instance in &mut fleet.instances {
        instance.terminate().await?;
    }
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
