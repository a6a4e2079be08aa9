//! Counters every delivery writes, striped per thread.
//!
//! Both worker threads deliver at once during a fan-out, and a counter shared by them moves
//! its cache line between the cores on every add: three such adds per delivery (the
//! delivered count, a latency bucket and its sum) cost more than the rest of the counting.
//! So each thread adds to a stripe of its own, on a line of its own, and a reader sums the
//! stripes. A reader may see one stripe's add before another's; every series still only
//! grows.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Stripes per counter: threads beyond this share (correctly, only slower).
pub(super) const STRIPES: usize = 8;

/// One stripe, alone on its cache line (128 bytes: the pair of lines Intel's prefetcher
/// fetches together).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Stripe<T>(pub(super) T);

/// The calling thread's stripe: threads take stripes in turn, the first time they count.
pub(super) fn mine() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    MINE.with(|stripe| *stripe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_stripe_alone_on_its_lines() {
        // Which stripe a thread takes depends on the other tests' threads; that each
        // keeps one, and that stripes do not share lines, does not.
        let here = mine();
        assert!(here < STRIPES);
        assert_eq!(mine(), here, "a thread keeps its stripe");
        let there = std::thread::spawn(|| (mine(), mine())).join().unwrap();
        assert_eq!(there.0, there.1);
        assert_eq!(std::mem::align_of::<Stripe<u8>>(), 128);
        assert_eq!(std::mem::size_of::<[Stripe<u8>; 2]>(), 256);
    }
}
