//! The realistic chat shape: many users, each in a handful of small rooms, one stream each
//! (half native gRPC multiplexed on shared connections, half gRPC-Web over HTTP/1.1 with a
//! connection each, as browsers), and messages sent at a fixed total rate into random rooms.
//!
//! Latency is measured open-loop: each message's send time is its place in the schedule
//! (phase start + index / rate), not the moment a sender got round to it, so a stall on
//! either side shows up in the figures instead of slowing the load down.

mod population;
mod streams;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use natter_cli::client;
use natter_proto::v1 as pb;

use crate::deployment::{Deployment, Kind};
use population::{Population, Shape, populate};
use rand::{Rng, SeedableRng, rngs::StdRng};
use streams::{Streams, open_streams};

/// Filler that gives each message a typical chat line's length (about 60 bytes of text).
const FILLER: &str = "a chat line of a typical length, give or take";

/// One phase's figures.
pub(crate) struct Phase {
    pub(crate) rate: u32,
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) seconds: f64,
    pub(crate) server_cpu_seconds: f64,
    /// CPU time of each Redis process over the phase (none for the embedded mode).
    pub(crate) redis_cpu_seconds: Vec<f64>,
    /// CPU time of this process (every client: the senders and the 10,000 streams).
    pub(crate) bench_cpu_seconds: f64,
    /// p50, p99, p99.9 and max, milliseconds.
    pub(crate) latency_ms: [f64; 4],
}

impl Phase {
    /// Every send answered, every delivery made within the drain time, p99 under 100 ms.
    pub(crate) fn sustained(&self) -> bool {
        self.failed == 0 && self.delivered >= self.expected && self.latency_ms[1] <= 100.0
    }
}

/// The shape on a deployment: opens every stream, finds the highest sustainable rate (5 s
/// per step, from `ramp_from` messages/s), then measures `seconds` at 25, 50 and 75 % of it.
/// Returns the ramp's phases and the measured ones.
pub(crate) async fn run(
    deployment: &Deployment,
    population: &Population,
    ramp_from: u32,
    seconds: u64,
) -> anyhow::Result<(Vec<Phase>, Vec<Phase>)> {
    let streams = open_streams(deployment, population).await?;
    eprintln!("{} streams ready", population.users.len());
    // Doubling until a rate is not sustained, then once between the last two (3/4 of the
    // failed rate): the highest sustained rate is then known within a third.
    let mut ramp = Vec::new();
    let mut rate = ramp_from;
    let mut refined = false;
    loop {
        let phase = phase(
            deployment,
            population,
            &streams,
            rate,
            Duration::from_secs(5),
        )
        .await?;
        eprintln!(
            "ramp: {rate}/s: {} of {} delivered, p99 {:.1} ms",
            phase.delivered, phase.expected, phase.latency_ms[1]
        );
        let sustained = phase.sustained();
        ramp.push(phase);
        if refined {
            break;
        } else if sustained {
            rate *= 2;
        } else if ramp.len() > 1 {
            refined = true;
            rate = rate * 3 / 4;
        } else {
            break;
        }
    }
    let highest = ramp
        .iter()
        .filter(|p| p.sustained())
        .map(|p| p.rate)
        .max()
        .context("not even the first rate was sustained")?;
    let mut measured = Vec::new();
    for share in [25, 50, 75] {
        let rate = highest * share / 100;
        let seconds = Duration::from_secs(seconds);
        measured.push(phase(deployment, population, &streams, rate, seconds).await?);
    }
    Ok((ramp, measured))
}

/// Sends `rate` messages/s for `duration` into random rooms, each from a random member,
/// without waiting for answers; then gives deliveries up to 5 s to arrive.
async fn phase(
    deployment: &Deployment,
    population: &Population,
    streams: &Streams,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let senders = &streams.senders;
    let rate = rate.max(1);
    let period = Duration::from_secs(1) / rate;
    let total = (f64::from(rate) * duration.as_secs_f64()) as u32;
    let mut rng = StdRng::seed_from_u64(u64::from(rate));
    let start = Instant::now() + Duration::from_millis(100);
    let index = {
        let mut phases = streams.phases.lock().expect("phases");
        phases.schedules.push((start, period));
        phases
            .latencies
            .push(Histogram::new_with_bounds(1, 60_000_000, 3)?);
        phases.delivered.push(Arc::default());
        phases.schedules.len() - 1
    };
    let delivered = streams.phases.lock().expect("phases").delivered[index].clone();
    let cpu_before = deployment.cpu_seconds()?;
    let redis_before = deployment.redis_cpu_seconds()?;
    let bench_before = crate::procs::cpu_seconds_of(std::process::id())?;
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Deliveries owed by the sends that were answered.
    let expected = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut next = 0u32;
    let mut answers = Vec::new();
    while next < total {
        tick.tick().await;
        let now = Instant::now();
        while next < total && start + period * next <= now {
            let room = rng.random_range(0..population.room_ids.len());
            let members = &population.shape.rooms[room];
            let sender = members[rng.random_range(0..members.len())];
            let mut chat = client::chat_client(
                senders[sender % senders.len()].clone(),
                &population.users[sender].token,
            )?;
            let request = pb::SendMessageRequest {
                room_id: population.room_ids[room].clone(),
                text: format!("{index} {next} {FILLER}"),
                client_id: String::new(),
            };
            let (sent, failed, expected) = (sent.clone(), failed.clone(), expected.clone());
            let owed = members.len() as u64;
            answers.push(tokio::spawn(async move {
                if chat.send_message(request).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                    expected.fetch_add(owed, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }));
            next += 1;
        }
    }
    for answer in answers {
        answer.await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let expected = expected.load(Ordering::Relaxed);
    crate::scenarios::wait_for_count(&delivered, expected, Duration::from_secs(5)).await;
    let server_cpu_seconds = deployment.cpu_seconds()? - cpu_before;
    let bench_cpu_seconds = crate::procs::cpu_seconds_of(std::process::id())? - bench_before;
    let redis_cpu_seconds = deployment
        .redis_cpu_seconds()?
        .iter()
        .zip(redis_before)
        .map(|(after, before)| after - before)
        .collect();
    let delivered = delivered.load(Ordering::Relaxed);
    let latencies = streams.phases.lock().expect("phases").latencies[index].clone();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    Ok(Phase {
        rate,
        sent: sent.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        expected,
        delivered,
        seconds,
        server_cpu_seconds,
        redis_cpu_seconds,
        bench_cpu_seconds,
        latency_ms: [
            ms(0.5),
            ms(0.99),
            ms(0.999),
            latencies.max() as f64 / 1000.0,
        ],
    })
}

/// Runs the shape on each kind of deployment and prints a table.
pub(crate) async fn report(
    kinds: &[Kind],
    users: usize,
    ramp_from: u32,
    seconds: u64,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut tables = Vec::new();
    for kind in kinds {
        let deployment = kind.start().await?;
        eprintln!("== {}", deployment.label);
        let population = populate(&deployment, Shape::draw(users, 7)).await?;
        let rooms = population.room_ids.len();
        let (ramp, measured) = run(&deployment, &population, ramp_from, seconds).await?;
        tables.push((deployment.label, rooms, ramp, measured));
    }
    println!(
        "| deployment | rate (msg/s) | share of highest sustained | deliveries/s | server CPU per message (send + fan-out) | per delivery | Redis CPU per message: all processes / busiest | latency p50 / p99 / p99.9 / max | sent / failed | delivered of expected | cores busy: servers + Redis + clients (of {cores}) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, rooms, ramp, measured) in &tables {
        let highest = ramp.iter().filter(|p| p.sustained()).map(|p| p.rate).max();
        let tried: Vec<String> = ramp
            .iter()
            .map(|p| {
                format!(
                    "{}{}",
                    p.rate,
                    if p.sustained() {
                        ""
                    } else {
                        " (not sustained)"
                    }
                )
            })
            .collect();
        eprintln!(
            "{label}: {users} users, {rooms} rooms; ramp {}",
            tried.join(", ")
        );
        for (phase, share) in measured.iter().zip(["25 %", "50 %", "75 %"]) {
            let per_message = |cpu: f64| cpu * 1e6 / phase.sent.max(1) as f64;
            let redis = match phase.redis_cpu_seconds.as_slice() {
                [] => "none".to_owned(),
                processes => format!(
                    "{:.1} / {:.1} µs",
                    per_message(processes.iter().sum()),
                    per_message(processes.iter().copied().fold(0.0, f64::max))
                ),
            };
            // A fold from 0.0: `sum` of no f64 is -0.0, printed as "-0.00".
            let redis_cpu = phase.redis_cpu_seconds.iter().fold(0.0, |all, p| all + p);
            let busy =
                (phase.server_cpu_seconds + redis_cpu + phase.bench_cpu_seconds) / phase.seconds;
            println!(
                "| {label} | {} | {share} of {} | {:.0} | {:.1} µs | {:.2} µs | {redis} | {:.2} / {:.2} / {:.2} / {:.2} ms | {} / {} | {} of {} | {busy:.2} = {:.2} + {:.2} + {:.2} |",
                phase.rate,
                highest.unwrap_or_default(),
                phase.delivered as f64 / phase.seconds,
                per_message(phase.server_cpu_seconds),
                phase.server_cpu_seconds * 1e6 / phase.delivered.max(1) as f64,
                phase.latency_ms[0],
                phase.latency_ms[1],
                phase.latency_ms[2],
                phase.latency_ms[3],
                phase.sent,
                phase.failed,
                phase.delivered,
                phase.expected,
                phase.server_cpu_seconds / phase.seconds,
                redis_cpu / phase.seconds,
                phase.bench_cpu_seconds / phase.seconds,
            );
        }
    }
    Ok(())
}
