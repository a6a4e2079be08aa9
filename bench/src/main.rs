//! `natter-bench`: measures Natter on this machine and prints a Markdown report.
//!
//! It starts its own redis-server and natter-server processes (the release binary next to
//! this one, or `NATTER_SERVER_BIN`) and drives them with native gRPC clients:
//! fan-out throughput, end-to-end latency, memory per idle stream, for the embedded mode
//! and for 2 instances over Redis, plus two baselines of the machine itself.

mod baseline;
mod deployment;
mod memory;
mod paired;
mod procs;
mod scenarios;
mod shape;
mod store_ceiling;
mod storm;

use std::time::Duration;

use clap::Parser;
use deployment::{Deployment, Kind};
use scenarios::percentile;

#[derive(Debug, Parser)]
#[command(name = "natter-bench", about = "Measure Natter on this machine")]
struct Args {
    /// Subscriber streams in the fan-out test.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Users publishing as fast as acknowledged in the fan-out test.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Seconds of publishing in the fan-out test.
    #[arg(long, default_value_t = 10)]
    fanout_seconds: u64,
    /// Messages per second in the latency test.
    #[arg(long, default_value_t = 100)]
    latency_rate: u32,
    /// Seconds of the latency test.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Idle streams in the memory test.
    #[arg(long, default_value_t = 5000)]
    idle_streams: usize,
    /// Online users in the per-user memory test (one stream each, each in 10 rooms).
    #[arg(long, default_value_t = 500)]
    online_users: usize,
    /// Instead: the cost of the load balancer. Fan-out and latency for 2 instances over
    /// Redis, clients connected directly and through nginx (the shipped config), in one run.
    #[arg(long)]
    nginx: bool,
    /// Instead: delivery to clients that keep HTTP/2's default 64 KiB flow-control windows
    /// (as Node's http2 and grpc-js do) next to tonic's 5 MiB / 2 MiB: 100 streams on 2
    /// connections, 4 publishers for 3 s, then the time until everything is delivered.
    #[arg(long)]
    windows: bool,
    /// Instead: the memory slope, RSS per idle stream at 1k, 10k and 50k streams, embedded
    /// and over Redis (and per online user at 1k users, each in 10 rooms).
    #[arg(long)]
    memory_slope: bool,
    /// Instead: only the memory rows of the standard run (RSS per idle stream and per online
    /// user, embedded and Redis), for reading one deployment's memory under a profiler.
    #[arg(long)]
    memory: bool,
    /// Instead: a reconnect storm, this many streams resuming a room with a 50-message
    /// backlog at once, while another room carries 50 messages/s (embedded and Redis).
    #[arg(long)]
    storm: Option<usize>,
    /// Instead: two builds' embedded fan-outs at the same time, this many rounds, for CPU per
    /// delivery that this VM's drift does not blur: A is `NATTER_SERVER_BIN` (else the
    /// binary next to this one), B is `NATTER_SERVER_BIN_B` (`--subscribers` streams each,
    /// `--fanout-seconds` of publishing)
    #[arg(long)]
    paired: Option<usize>,
    /// With `--paired`: both builds' publishers send this many messages per second in all,
    /// instead of each sending as soon as its last message is answered. Builds that answer
    /// at different speeds then still fan out the same rate, so each stream wakes for about
    /// as many events in both.
    #[arg(long, requires = "paired", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    paired_rate: Option<u32>,
    /// Instead: the realistic chat shape, this many users (10000 in BENCHMARKS.md) in rooms
    /// of 5-20, each in 5-10 rooms, one stream each (half native gRPC, half gRPC-Web over
    /// HTTP/1.1), messages into random rooms at fixed rates: the highest sustainable rate,
    /// then open-loop latency at 25, 50 and 75 % of it (embedded and Redis).
    #[arg(long)]
    shape: Option<usize>,
    /// Instead: the realistic shape with this many users on 2 instances over one Redis,
    /// over a Redis Cluster of 3 shards, and over that cluster with --redis-wait-replicas 1,
    /// in one run (with Redis CPU per message: all Redis processes, and the busiest one).
    #[arg(long)]
    cluster: Option<usize>,
    /// Instead: the Redis side alone, natter's store appending and publishing flat out (no
    /// gRPC, no streams) for this many seconds on one Redis server and on 3-shard clusters
    /// (no replica; one replica each; one each with --redis-wait-replicas 1).
    #[arg(long)]
    store_ceiling: Option<u64>,
    /// The first rate of the shape's ramp (messages/s); it doubles until not sustained, then
    /// halves the gap until it is within an eighth (or no multiple of 25 lies inside it).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    shape_ramp_from: u32,
    /// Instead of the shape's ramp, take this as the highest sustainable rate (messages/s):
    /// the phases run at 25, 50 and 75 % of it, so two builds are measured at the same rates.
    #[arg(long, conflicts_with = "shape_ramp_from", value_parser = clap::value_parser!(u32).range(4..=1_000_000))]
    shape_highest: Option<u32>,
    /// Seconds of each measured rate of the shape.
    #[arg(long, default_value_t = 10)]
    shape_seconds: u64,
    /// Internal: run the minimal tonic server as a process of its own (the same-regime
    /// ceiling), printing `address=...` on stderr.
    #[arg(long, hide = true)]
    serve_baseline: bool,
}

fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_baseline {
        return baseline::serve_baseline().await;
    }
    if let Some(rounds) = args.paired {
        let pace = args
            .paired_rate
            .map_or(scenarios::Pace::AsAnswered, scenarios::Pace::PerSecond);
        return paired::report(rounds, args.subscribers, args.fanout_seconds, pace).await;
    }
    if args.nginx {
        return through_nginx(&args).await;
    }
    if args.windows {
        return with_default_windows().await;
    }
    if args.memory_slope {
        return memory::slope().await;
    }
    if args.memory {
        return memory::rows(args.idle_streams, args.online_users).await;
    }
    let shape_highest = match args.shape_highest {
        Some(rate) => shape::Highest::Given(rate),
        None => shape::Highest::Ramp {
            from: args.shape_ramp_from,
        },
    };
    if let Some(users) = args.shape {
        let kinds = [Kind::Embedded, Kind::Redis];
        return shape::report(&kinds, users, shape_highest, args.shape_seconds).await;
    }
    if let Some(seconds) = args.store_ceiling {
        return store_ceiling::report(seconds).await;
    }
    if let Some(users) = args.cluster {
        let kinds = [
            Kind::Redis,
            Kind::Cluster { wait_replicas: 0 },
            Kind::Cluster { wait_replicas: 1 },
        ];
        return shape::report(&kinds, users, shape_highest, args.shape_seconds).await;
    }
    if let Some(streams) = args.storm {
        return reconnect_storm(streams).await;
    }
    println!("| measurement | embedded (1 instance) | Redis (2 instances) |");
    println!("|---|---|---|");

    let mut fanout = Vec::new();
    let mut latency = Vec::new();
    let mut per_stream = Vec::new();
    let mut per_user = Vec::new();
    for redis in [false, true] {
        let deploy = async || Deployment::compared(redis).await;
        let (f, l) = fanout_and_latency(&args, deploy).await?;
        fanout.push(f);
        latency.push(l);
        let (stream, user) = memory::of(args.idle_streams, args.online_users, redis).await?;
        per_stream.push(stream);
        per_user.push(user);
    }
    row(
        &format!(
            "fan-out: messages sent ({} publishers, {} s)",
            args.publishers, args.fanout_seconds
        ),
        &|i| fanout[i].sent.to_string(),
    );
    delivery_rows(&args, &fanout, &latency);
    memory::table_rows(args.idle_streams, args.online_users, &per_stream, &per_user);

    eprintln!("== baselines");
    let logs = tempfile::tempdir()?;
    let redis = natter_fleet::Redis::start(logs.path()).await?;
    let rtt = baseline::redis_round_trip(&redis, 5000).await?;
    println!();
    println!("| baseline | value |");
    println!("|---|---|");
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        println!(
            "| raw Redis PUBLISH -> SUBSCRIBE round trip {name} | {} |",
            ms(percentile(&rtt, q))
        );
    }
    let same = scenarios::fanout(
        &Deployment::baseline().await?,
        args.subscribers,
        args.publishers,
        Duration::from_secs(args.fanout_seconds),
    )
    .await?;
    let same_rate = same.delivered as f64 / same.seconds;
    println!(
        "| minimal tonic server, own process, same clients and closed-loop publishing: deliveries/s to {} streams | {same_rate:.0} |",
        args.subscribers
    );
    println!(
        "| the same: server CPU per delivery | {:.2} µs |",
        same.server_cpu_seconds * 1e6 / same.delivered.max(1) as f64
    );
    for (i, column) in ["embedded", "Redis"].iter().enumerate() {
        println!(
            "| Natter {column} fan-out as a share of it | {:.2} |",
            fanout[i].delivered as f64 / fanout[i].seconds / same_rate
        );
    }
    let (delivered, seconds) =
        baseline::tonic_broadcast(args.subscribers, Duration::from_secs(args.fanout_seconds))
            .await?;
    println!(
        "| minimal tonic server, in process, open-loop pre-encoded broadcast (batched ceiling) to {} streams | {:.0} deliveries/s |",
        args.subscribers,
        delivered as f64 / seconds
    );
    Ok(())
}

/// A reconnect storm on the embedded mode and on 2 instances over Redis.
async fn reconnect_storm(streams: usize) -> anyhow::Result<()> {
    const BACKLOG: u64 = 50;
    println!(
        "| deployment | all {streams} Ready | all caught up ({BACKLOG} messages each) | live latency p50 / p99 / p99.9 meanwhile (50 msg/s, another room) |"
    );
    println!("|---|---|---|---|");
    for redis in [false, true] {
        let deployment = Deployment::compared(redis).await?;
        eprintln!("== {}", deployment.label);
        let storm =
            storm::storm(&deployment, streams, BACKLOG, 50, Duration::from_secs(10)).await?;
        let live = &storm.live_latency;
        println!(
            "| {} | {:.2} s | {:.2} s{} | {} / {} / {} |",
            deployment.label,
            storm.ready_seconds,
            storm.caught_up_seconds,
            if storm.complete {
                ""
            } else {
                " (incomplete after 120 s)"
            },
            ms(percentile(live, 0.5)),
            ms(percentile(live, 0.99)),
            ms(percentile(live, 0.999))
        );
    }
    Ok(())
}

/// Delivery to 100 streams on 2 connections with 64 KiB windows and with tonic's, embedded.
async fn with_default_windows() -> anyhow::Result<()> {
    const PUBLISHING: Duration = Duration::from_secs(3);
    println!(
        "| client windows (stream / connection) | sends acknowledged/s | deliveries/s while publishing and draining | time to deliver the rest after the last send | all delivered |"
    );
    println!("|---|---|---|---|---|");
    for (label, window) in [
        ("64 KiB / 64 KiB (HTTP/2 default)", Some(65_535)),
        ("2 MiB / 5 MiB (tonic)", None),
    ] {
        let deployment = Deployment::embedded().await?;
        let connections = scenarios::Connections {
            streams_each: 50,
            window,
            ..scenarios::Connections::default()
        };
        let f = scenarios::fanout_on(
            &deployment,
            100,
            4,
            PUBLISHING,
            scenarios::Pace::AsAnswered,
            connections,
        )
        .await?;
        println!(
            "| {label} | {:.0} | {:.0} | {:.2} s | {} of {} |",
            f.sent as f64 / PUBLISHING.as_secs_f64(),
            f.delivered as f64 / f.seconds,
            (f.seconds - PUBLISHING.as_secs_f64()).max(0.0),
            f.delivered,
            f.sent * 100
        );
    }
    Ok(())
}

/// Fan-out and latency of 2 instances over Redis, direct and through nginx, in one run.
async fn through_nginx(args: &Args) -> anyhow::Result<()> {
    let mut fanout = Vec::new();
    let mut latency = Vec::new();
    for via_nginx in [false, true] {
        let deploy = async || match via_nginx {
            true => Deployment::redis_behind_nginx(2).await,
            false => Deployment::redis(2).await,
        };
        let (f, l) = fanout_and_latency(args, deploy).await?;
        fanout.push(f);
        latency.push(l);
    }
    println!("| measurement | Redis (2 instances), direct | the same through nginx |");
    println!("|---|---|---|");
    delivery_rows(args, &fanout, &latency);
    Ok(())
}

/// One table row from a value per column.
pub(crate) fn row(name: &str, f: &dyn Fn(usize) -> String) {
    println!("| {name} | {} | {} |", f(0), f(1));
}

/// The fan-out and latency rows of a two-column table.
fn delivery_rows(args: &Args, fanout: &[scenarios::Fanout], latency: &[Vec<f64>]) {
    row(
        &format!("fan-out: deliveries/s to {} streams", args.subscribers),
        &|i| format!("{:.0}", fanout[i].delivered as f64 / fanout[i].seconds),
    );
    row("fan-out: server CPU per delivery", &|i| {
        format!(
            "{:.2} µs",
            fanout[i].server_cpu_seconds * 1e6 / fanout[i].delivered.max(1) as f64
        )
    });
    row(
        "fan-out: socket writes per delivery",
        &|i| match fanout[i].socket_writes {
            Some(writes) => format!("{:.3}", writes as f64 / fanout[i].delivered.max(1) as f64),
            None => "not counted by this server".into(),
        },
    );
    row("fan-out: all delivered", &|i| {
        format!(
            "{} of {}",
            fanout[i].delivered,
            fanout[i].sent * args.subscribers as u64
        )
    });
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        row(
            &format!("latency {name} at {} msg/s", args.latency_rate),
            &|i| ms(percentile(&latency[i], q)),
        );
    }
}

/// The fan-out and latency scenarios, each on a fresh deployment from `deploy`.
async fn fanout_and_latency(
    args: &Args,
    deploy: impl AsyncFn() -> anyhow::Result<Deployment>,
) -> anyhow::Result<(scenarios::Fanout, Vec<f64>)> {
    let deployment = deploy().await?;
    eprintln!("== {}", deployment.label);
    let fanout = scenarios::fanout(
        &deployment,
        args.subscribers,
        args.publishers,
        Duration::from_secs(args.fanout_seconds),
    )
    .await?;
    drop(deployment);
    let latency = scenarios::latency(
        &deploy().await?,
        args.latency_rate,
        Duration::from_secs(args.latency_seconds),
    )
    .await?;
    Ok((fanout, latency))
}
