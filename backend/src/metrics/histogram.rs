//! A fixed-bucket histogram of milliseconds in the Prometheus text format: one atomic add
//! for the bucket and one for the sum per observation, on the calling thread's stripe (it
//! observes every delivery, see `striped`); stripes summed and buckets made cumulative only
//! when rendered.

use std::sync::atomic::{AtomicU64, Ordering};

use super::striped::{self, Stripe};

/// Upper bounds (inclusive) of the buckets, in milliseconds; one more bucket holds the rest.
const BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000];

#[derive(Debug, Default)]
pub(crate) struct Histogram {
    stripes: [Stripe<Counts>; striped::STRIPES],
}

/// One stripe's observations.
#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS_MS.len() + 1],
    sum_ms: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, ms: u64) {
        let bucket = BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(BOUNDS_MS.len());
        let counts = &self.stripes[striped::mine()].0;
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counts.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The series of `name` (in seconds, as Prometheus expects), with its help line.
    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for i in 0..=BOUNDS_MS.len() {
            cumulative += self
                .stripes
                .iter()
                .map(|stripe| stripe.0.buckets[i].load(Ordering::Relaxed))
                .sum::<u64>();
            let le = BOUNDS_MS.get(i).map_or_else(
                || "+Inf".to_owned(),
                |ms| format!("{}", *ms as f64 / 1000.0),
            );
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        let sum_ms: u64 = self
            .stripes
            .iter()
            .map(|stripe| stripe.0.sum_ms.load(Ordering::Relaxed))
            .sum();
        let sum = sum_ms as f64 / 1000.0;
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
        for ms in [0, 1, 3] {
            histogram.observe(ms);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for ms in [3, 40, 9_000] {
                    histogram.observe(ms);
                }
            });
        });
        let mut out = String::new();
        histogram.render("x_seconds", "Test.", &mut out);
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.05\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"5\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("x_seconds_sum 9.047\n"), "{out}");
        assert!(out.contains("x_seconds_count 6\n"), "{out}");
    }
}
