//! A fixed-bucket histogram of durations in the Prometheus text format: one atomic add
//! for the bucket and one for the sum per observation, on the calling thread's stripe (it
//! observes every delivery, see `striped`); stripes summed and buckets made cumulative only
//! when rendered.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::striped::{self, Stripe};

/// Upper bounds (inclusive) of the buckets, in microseconds; one more bucket holds the rest.
/// From half a millisecond (a send on an idle server) to 5 s.
const BOUNDS_US: [u64; 13] = [
    500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

#[derive(Debug, Default)]
pub(crate) struct Histogram {
    stripes: [Stripe<Counts>; striped::STRIPES],
}

/// One stripe's observations.
#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BOUNDS_US.len());
        let counts = &self.stripes[striped::mine()].0;
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counts.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The series of `name` (in seconds, as Prometheus expects), with its help line.
    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for i in 0..=BOUNDS_US.len() {
            cumulative += self
                .stripes
                .iter()
                .map(|stripe| stripe.0.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let le = BOUNDS_US
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        let sum_us: u64 = self
            .stripes
            .iter()
            .map(|stripe| stripe.0.sum_us.load(Ordering::Relaxed))
            .sum();
        let sum = sum_us as f64 / 1e6;
        out.push_str(&format!("{name}_sum {sum}\n{name}_count {cumulative}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_with_sum_and_count() {
        let histogram = Histogram::default();
        // From two threads: their stripes are summed.
        for took in [0, 300, 1_000, 3_000] {
            histogram.observe(Duration::from_micros(took));
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for ms in [3, 40, 9_000] {
                    histogram.observe(Duration::from_millis(ms));
                }
            });
        });
        let mut out = String::new();
        histogram.render("x_seconds", "Test.", &mut out);
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.05\"} 6\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"5\"} 6\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 7\n"), "{out}");
        assert!(out.contains("x_seconds_sum 9.0473\n"), "{out}");
        assert!(out.contains("x_seconds_count 7\n"), "{out}");
    }
}
