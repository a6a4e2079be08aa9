//! The realistic chat shape: many users, each in a handful of small rooms, one stream each
//! (half native gRPC multiplexed on shared connections, half gRPC-Web over HTTP/1.1 with a
//! connection each, as browsers), and messages sent at a fixed total rate into random rooms.
//!
//! Latency is measured open-loop: each message's send time is its place in the schedule
//! (phase start + index / rate), not the moment a sender got round to it, so a stall on
//! either side shows up in the figures instead of slowing the load down.

mod latencies;
mod population;
mod ramp;
mod senders;
mod streams;
mod wake_probe;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::deployment::{Deployment, Kind};
use latencies::Latencies;
use population::{Population, Shape, populate};
use senders::Sends;
use streams::{Streams, open_streams};
use wake_probe::WakeProbe;

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
    /// p50 and p99 of the time from a send's place in the schedule to its answer,
    /// milliseconds: splits the end-to-end latency into the send's part and the fan-out's.
    pub(crate) answer_ms: [f64; 2],
    /// Deliveries later than the 5 ms goal, per 100 ms window of the schedule.
    pub(crate) late: Vec<u32>,
    /// Of the sends the servers stored, the share that took them over 5 ms: in the
    /// service (checks and append), and in the append alone.
    pub(crate) slow_in_server: Option<[f64; 2]>,
    /// How late a thread sleeping 1 ms woke during the phase, p50 and p99, milliseconds
    /// (see `wake_probe`).
    pub(crate) wake_late_ms: [f64; 2],
}

impl Phase {
    /// Every send answered, every delivery made within the drain time, p99 under 100 ms.
    pub(crate) fn sustained(&self) -> bool {
        self.failed == 0 && self.delivered >= self.expected && self.latency_ms[1] <= 100.0
    }
}

/// Where the shape's 25, 50 and 75 % are taken from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Highest {
    /// The highest rate a ramp from this rate sustains (see [`ramp::find_highest`]).
    Ramp { from: u32 },
    /// This rate, taken as given: two builds measured at the same rates, without a ramp's
    /// scatter moving one build's phases away from the other's.
    Given(u32),
}

/// The shape on a deployment: opens every stream, finds the highest sustainable rate (or
/// takes the given one), then measures `seconds` at 25, 50 and 75 % of it. Returns the
/// ramp's phases (none for a given rate), the highest rate and the measured phases.
pub(crate) async fn run(
    deployment: &Deployment,
    population: &Arc<Population>,
    highest: Highest,
    seconds: u64,
) -> anyhow::Result<(Vec<Phase>, u32, Vec<Phase>)> {
    let streams = open_streams(deployment, population).await?;
    eprintln!("{} streams ready", population.users.len());
    let idle = WakeProbe::start()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let [p50, p99] = idle.finish()?;
    eprintln!(
        "with every stream open and no message sent, a 1 ms sleep woke {p50:.2} ms late at p50, {p99:.2} ms at p99"
    );
    let (ramp, highest) = match highest {
        Highest::Ramp { from } => {
            ramp::find_highest(deployment, population, &streams, from).await?
        }
        Highest::Given(rate) => (Vec::new(), rate),
    };
    let mut measured = Vec::new();
    for share in [25, 50, 75] {
        let rate = highest * share / 100;
        let seconds = Duration::from_secs(seconds);
        measured.push(phase(deployment, population, &streams, rate, seconds).await?);
    }
    Ok((ramp, highest, measured))
}

/// Sends `rate` messages/s for `duration` into random rooms, each from a random member,
/// without waiting for answers; then gives deliveries up to 5 s to arrive.
async fn phase(
    deployment: &Deployment,
    population: &Arc<Population>,
    streams: &Streams,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let rate = rate.max(1);
    let period = Duration::from_secs(1) / rate;
    let total = (f64::from(rate) * duration.as_secs_f64()) as u32;
    let start = Instant::now() + Duration::from_millis(100);
    let index = {
        let mut phases = streams.phases.lock().expect("phases");
        phases.schedules.push((start, period));
        phases.latencies.push(Latencies::new());
        phases.delivered.push(Arc::default());
        let windows = duration.as_millis() / streams::WINDOW.as_millis() + 1;
        phases.late.push(vec![0; usize::try_from(windows)?]);
        phases.schedules.len() - 1
    };
    let delivered = streams.phases.lock().expect("phases").delivered[index].clone();
    let cpu_before = deployment.cpu_seconds()?;
    let redis_before = deployment.redis_cpu_seconds()?;
    let bench_before = crate::procs::cpu_seconds_of(std::process::id())?;
    let slow_before = SlowSends::read(deployment).await?;
    let probe = WakeProbe::start()?;
    let sends = Sends {
        phase: index,
        start,
        period,
        total,
        seed: u64::from(rate),
    };
    let sent = streams
        .sending
        .handle()
        .spawn(sends.run(population.clone(), streams.senders.clone()))
        .await??;
    let seconds = start.elapsed().as_secs_f64();
    let wake_late_ms = probe.finish()?;
    let expected = sent.owed;
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
    let slow_in_server = match (slow_before, SlowSends::read(deployment).await?) {
        (Some(before), Some(after)) => Some(after.shares_since(&before)),
        _ => None,
    };
    let (latencies, late) = {
        let phases = streams.phases.lock().expect("phases");
        (phases.latencies[index].clone(), phases.late[index].clone())
    };
    Ok(Phase {
        rate,
        sent: sent.answered,
        failed: sent.failed,
        expected,
        delivered,
        seconds,
        server_cpu_seconds,
        redis_cpu_seconds,
        bench_cpu_seconds,
        latency_ms: [
            latencies.ms(0.5),
            latencies.ms(0.99),
            latencies.ms(0.999),
            latencies.max_ms(),
        ],
        answer_ms: [
            sent.answer_latencies.ms(0.5),
            sent.answer_latencies.ms(0.99),
        ],
        late,
        slow_in_server,
        wake_late_ms,
    })
}

/// Runs the shape on each kind of deployment and prints a table.
pub(crate) async fn report(
    kinds: &[Kind],
    users: usize,
    highest: Highest,
    seconds: u64,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut tables = Vec::new();
    for kind in kinds {
        let deployment = kind.start().await?;
        eprintln!("== {}", deployment.label);
        let population = Arc::new(populate(&deployment, Shape::draw(users, 7)).await?);
        let rooms = population.room_ids.len();
        let (ramp, highest, measured) = run(&deployment, &population, highest, seconds).await?;
        tables.push((deployment.label, rooms, ramp, highest, measured));
    }
    println!(
        "| deployment | rate (msg/s) | share of highest sustained | deliveries/s | server CPU per message (send + fan-out) | per delivery | Redis CPU per message: all processes / busiest | latency p50 / p99 / p99.9 / max | answer p50 / p99 | sends over 5 ms in the servers: in the service / in the append | late (over 5 ms): in how many 100 ms windows; the worst three | a 1 ms sleep woke late by, p50 / p99 | sent / failed | delivered of expected | cores busy: servers + Redis + clients (of {cores}) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, rooms, ramp, highest, measured) in &tables {
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
        let ramp = if tried.is_empty() {
            "none (the highest rate given)".to_owned()
        } else {
            tried.join(", ")
        };
        eprintln!("{label}: {users} users, {rooms} rooms; ramp {ramp}");
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
                "| {label} | {} | {share} of {} | {:.0} | {:.1} µs | {:.2} µs | {redis} | {:.2} / {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} ms | {} | {} | {:.2} / {:.2} ms | {} / {} | {} of {} | {busy:.2} = {:.2} + {:.2} + {:.2} |",
                phase.rate,
                highest,
                phase.delivered as f64 / phase.seconds,
                per_message(phase.server_cpu_seconds),
                phase.server_cpu_seconds * 1e6 / phase.delivered.max(1) as f64,
                phase.latency_ms[0],
                phase.latency_ms[1],
                phase.latency_ms[2],
                phase.latency_ms[3],
                phase.answer_ms[0],
                phase.answer_ms[1],
                phase.slow_in_server.map_or_else(
                    || "not counted".to_owned(),
                    |[service, append]| format!(
                        "{:.2} % / {:.2} %",
                        service * 100.0,
                        append * 100.0
                    )
                ),
                late_windows(&phase.late),
                phase.wake_late_ms[0],
                phase.wake_late_ms[1],
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

/// Where a phase's late deliveries fell: how many of its 100 ms windows hold any, and the
/// three that hold most (start within the phase, count). Bunched in a few windows, the tail
/// is a few stalls; spread over most, it is contention.
fn late_windows(late: &[u32]) -> String {
    let total: u32 = late.iter().sum();
    if total == 0 {
        return "none".to_owned();
    }
    let mut worst: Vec<(usize, u32)> = late.iter().copied().enumerate().collect();
    worst.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    let worst: Vec<String> = worst
        .iter()
        .take(3)
        .filter(|&&(_, count)| count > 0)
        .map(|&(window, count)| {
            let at = window as f64 * streams::WINDOW.as_secs_f64();
            format!("{count} at {at:.1} s")
        })
        .collect();
    format!(
        "{total} in {} of {}; {}",
        late.iter().filter(|&&count| count > 0).count(),
        late.len(),
        worst.join(", ")
    )
}

/// The servers' counts of sends that took them over 5 ms
/// (`natter_send_duration_seconds`, `natter_append_duration_seconds`).
struct SlowSends {
    /// Per histogram: all observations, and those within 5 ms.
    counts: [(f64, f64); 2],
}

impl SlowSends {
    /// `None` for servers without the series.
    async fn read(deployment: &Deployment) -> anyhow::Result<Option<Self>> {
        let Some(read) = deployment
            .metrics(&[
                "natter_send_duration_seconds_count",
                "natter_send_duration_seconds_bucket{le=\"0.005\"}",
                "natter_append_duration_seconds_count",
                "natter_append_duration_seconds_bucket{le=\"0.005\"}",
            ])
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            counts: [(read[0], read[1]), (read[2], read[3])],
        }))
    }

    /// Per histogram, the share of the observations since `before` that were over 5 ms.
    fn shares_since(&self, before: &Self) -> [f64; 2] {
        let share = |i: usize| {
            let all = self.counts[i].0 - before.counts[i].0;
            let within = self.counts[i].1 - before.counts[i].1;
            if all > 0.0 { (all - within) / all } else { 0.0 }
        };
        [share(0), share(1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_windows_tell_where_the_late_deliveries_fell() {
        assert_eq!(late_windows(&[0, 0, 0]), "none");
        assert_eq!(
            late_windows(&[0, 3, 0, 5, 1]),
            "9 in 3 of 5; 5 at 0.3 s, 3 at 0.1 s, 1 at 0.4 s"
        );
    }

    #[test]
    fn slow_sends_are_the_share_over_5_ms_since_the_last_reading() {
        let before = SlowSends {
            counts: [(10.0, 8.0), (10.0, 10.0)],
        };
        let after = SlowSends {
            counts: [(20.0, 15.0), (20.0, 19.0)],
        };
        assert_eq!(after.shares_since(&before), [0.3, 0.1]);
        assert_eq!(after.shares_since(&after), [0.0, 0.0]);
    }
}
