//! A fixed-bucket histogram of milliseconds in the Prometheus text format: one atomic add
//! for the bucket and one for the sum per observation, buckets made cumulative only when
//! rendered.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (inclusive) of the buckets, in milliseconds; one more bucket holds the rest.
const BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000];

#[derive(Debug, Default)]
pub(crate) struct Histogram {
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
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The series of `name` (in seconds, as Prometheus expects), with its help line.
    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = BOUNDS_MS.get(i).map_or_else(
                || "+Inf".to_owned(),
                |ms| format!("{}", *ms as f64 / 1000.0),
            );
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        out.push_str(&format!("{name}_sum {sum}\n{name}_count {cumulative}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_with_sum_and_count() {
        let histogram = Histogram::default();
        for ms in [0, 1, 3, 3, 40, 9_000] {
            histogram.observe(ms);
        }
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
