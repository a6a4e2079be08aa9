//! How late a thread that sleeps 1 ms wakes up, measured next to each phase.
//!
//! The shape's tail depends on how soon every thread on this 2-core VM gets a core: the
//! servers', Redis's and the bench's own, and the other guests' on the host, which this VM
//! cannot see. A plain thread that asks to sleep 1 ms, again and again, measures that wait
//! for any thread: how much later than asked it runs. Beside a phase's latencies it tells
//! how much of the tail the machine would add to anything that needs a few wake-ups.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::latencies::Latencies;

const NAP: Duration = Duration::from_millis(1);

/// The probe's thread, running until [`WakeProbe::finish`].
pub(super) struct WakeProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Latencies>,
}

impl WakeProbe {
    pub(super) fn start() -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wake-probe".into())
            .spawn(move || {
                let mut late = Latencies::new();
                while !stopped.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    std::thread::sleep(NAP);
                    late.record(asked.elapsed().saturating_sub(NAP));
                }
                late
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops the probe; p50 and p99 of how late it woke, milliseconds.
    pub(super) fn finish(self) -> anyhow::Result<[f64; 2]> {
        self.stop.store(true, Ordering::Relaxed);
        let late = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the wake-up probe panicked"))?;
        Ok([late.ms(0.5), late.ms(0.99)])
    }
}
