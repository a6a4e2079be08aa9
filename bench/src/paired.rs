//! `natter-bench --paired N`: two builds' fan-outs at the same time, N rounds.
//!
//! This VM's speed drifts between runs by more than most changes to the delivery path are
//! worth (the minimal server alone measured 0.84-2.37 µs per delivery within a day), so
//! builds measured one after the other cannot be told apart. Here build A
//! (`NATTER_SERVER_BIN`, else the one next to this binary) and build B
//! (`NATTER_SERVER_BIN_B`) each run the standard fan-out (one room, 1,000 streams, 4
//! publishers waiting for their answers) on an embedded instance of its own, and both
//! publish over the same window, so both meet the same drift. The two fan-outs share the
//! two cores, so each figure is higher than in a run alone: compare A with B, not with
//! the other tables.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    deployment::Deployment,
    scenarios::{self, Connections, Pace},
};

/// CPU per delivery of both builds, round by round, and the medians.
pub(crate) async fn report(
    rounds: usize,
    subscribers: usize,
    seconds: u64,
    pace: Pace,
) -> anyhow::Result<()> {
    let a = crate::procs::server_binary()?;
    let b: PathBuf = std::env::var_os("NATTER_SERVER_BIN_B")
        .context("NATTER_SERVER_BIN_B: the natter-server binary to compare with")?
        .into();
    println!("A: {}  \nB: {}\n", a.display(), b.display());
    if let Pace::PerSecond(rate) = pace {
        println!("Both publish {rate} messages/s in all.\n");
    }
    println!(
        "| round | A: messages/s | A: server CPU per delivery | B: messages/s | B: server CPU per delivery | B / A |"
    );
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::with_capacity(rounds);
    let (mut cpu_a, mut cpu_b) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (deployment_a, deployment_b) = tokio::try_join!(
            Deployment::embedded_binary(&a),
            Deployment::embedded_binary(&b)
        )?;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let run = |deployment| {
            let connections = Connections {
                start_together: Some(barrier.clone()),
                ..Connections::default()
            };
            async move {
                scenarios::fanout_on(
                    deployment,
                    subscribers,
                    4,
                    Duration::from_secs(seconds),
                    pace,
                    connections,
                )
                .await
            }
        };
        let (fanout_a, fanout_b) = tokio::try_join!(run(&deployment_a), run(&deployment_b))?;
        let per_delivery = |f: &scenarios::Fanout| {
            anyhow::ensure!(
                f.delivered == f.sent * subscribers as u64,
                "a delivery went missing"
            );
            Ok(f.server_cpu_seconds * 1e6 / f.delivered.max(1) as f64)
        };
        let (us_a, us_b) = (per_delivery(&fanout_a)?, per_delivery(&fanout_b)?);
        let rate = |f: &scenarios::Fanout| f.sent as f64 / seconds as f64;
        println!(
            "| {round} | {:.0} | {us_a:.2} µs | {:.0} | {us_b:.2} µs | {:.3} |",
            rate(&fanout_a),
            rate(&fanout_b),
            us_b / us_a
        );
        ratios.push(us_b / us_a);
        cpu_a.push(us_a);
        cpu_b.push(us_b);
    }
    let lower = ratios.iter().filter(|r| **r < 1.0).count();
    println!(
        "| median | | {:.2} µs | | {:.2} µs | {:.3} |",
        median(&mut cpu_a),
        median(&mut cpu_b),
        median(&mut ratios)
    );
    println!("\nB used less CPU per delivery than A in {lower} of {rounds} rounds.");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
