//! The shape's latency histograms: microseconds, from 1 µs to a minute.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Longer than this counts as this: a minute is "lost" for any purpose here.
const LONGEST_US: u64 = 60_000_000;

#[derive(Clone)]
pub(super) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(super) fn new() -> Self {
        Self(Histogram::new_with_bounds(1, LONGEST_US, 3).expect("valid bounds"))
    }

    pub(super) fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.min(LONGEST_US));
    }

    /// The `q` quantile, milliseconds.
    pub(super) fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub(super) fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    /// Observations recorded.
    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.0.len()
    }
}
