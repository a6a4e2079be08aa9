//! `natter-server`: loads configuration, sets up logging, binds, runs until Ctrl-C/SIGTERM.
//! `natter-server admin grant|revoke USERNAME` runs an operator task instead.

use anyhow::Context;
use clap::Parser;
use natter_server::{Config, config::Command, telemetry};

/// jemalloc rather than glibc's malloc: a burst of work (thousands of streams opening at
/// once after an instance died, each awaiting its reads) leaves glibc's heaps holed
/// between long-lived allocations, and glibc keeps that memory for good. Over Redis that
/// doubled the resident memory of an idle stream (BENCHMARKS.md, "jemalloc"). jemalloc
/// hands freed pages back to the kernel after a decay time (10 s by default), and costs
/// no more CPU per delivery.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    if let Some(Command::Admin { action }) = config.command.take() {
        telemetry::init_as("warn", config.log_format);
        println!("{}", natter_server::administer(config, action).await?);
        return Ok(());
    }
    telemetry::init_as("info", config.log_format);
    if let Err(e) = return_freed_memory() {
        // Serving matters more: memory freed after a burst then returns only while the
        // process allocates.
        tracing::warn!(error = %e, "jemalloc's background threads did not start");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let natter = natter_server::build(config).await?;
    natter_server::run(listener, natter, natter_server::shutdown_signal()).await
}

/// Starts jemalloc's background threads. Without them, freed pages are only returned
/// while the process allocates, so an instance that went quiet after a burst would keep
/// the burst's memory. `_RJEM_MALLOC_CONF` can still tune the decay times.
fn return_freed_memory() -> anyhow::Result<()> {
    tikv_jemalloc_ctl::background_thread::write(true)
        .map_err(|e| anyhow::anyhow!("starting the allocator's background threads: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// Resident memory of this process, bytes (`/proc/self/statm`, pages of 4 KiB).
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages");
        pages * 4096
    }

    #[test]
    fn memory_freed_after_a_burst_goes_back_to_the_kernel_while_idle() {
        const BURST: usize = 64 << 20;
        super::return_freed_memory().expect("background threads");
        // Many small allocations, as a burst of openings makes, each written to.
        let blocks: Vec<Vec<u8>> = (0..BURST / 4096).map(|_| vec![1u8; 4096]).collect();
        let peak = resident();
        drop(blocks);
        // Nothing allocates from here on: only the background threads can purge.
        let deadline = Instant::now() + Duration::from_secs(60);
        while resident() > peak - (BURST as u64) / 2 {
            assert!(
                Instant::now() < deadline,
                "resident memory stayed at {} MiB after freeing {} MiB (peak {} MiB)",
                resident() >> 20,
                BURST >> 20,
                peak >> 20
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
