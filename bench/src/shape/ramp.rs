//! The shape's ramp: which rate to try next, from what was sustained and what was not.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use super::{Phase, Population, Streams, phase};
use crate::deployment::Deployment;

/// The highest rate sustained for 5 s, and the ramp's phases. Doubling from `from` until a
/// rate is not sustained, then halving the gap between the highest rate sustained and the
/// lowest one not sustained above it, until the gap is at most an eighth of the sustained
/// one: the highest sustainable rate, and with it the shares measured after it, is then
/// known within 12.5 % or 25 messages/s (a doubling alone left a factor of two).
pub(super) async fn find_highest(
    deployment: &Deployment,
    population: &Arc<Population>,
    streams: &Streams,
    from: u32,
) -> anyhow::Result<(Vec<Phase>, u32)> {
    let mut ramp = Vec::new();
    let mut bounds = RampBounds::default();
    let mut rate = from;
    loop {
        let phase = phase(
            deployment,
            population,
            streams,
            rate,
            Duration::from_secs(5),
        )
        .await?;
        eprintln!(
            "ramp: {rate}/s: {} of {} delivered, p99 {:.1} ms",
            phase.delivered, phase.expected, phase.latency_ms[1]
        );
        bounds.record(rate, phase.sustained());
        ramp.push(phase);
        match bounds.next_rate() {
            Some(next) => rate = next,
            None => break,
        }
    }
    let highest = bounds
        .sustained
        .context("not even the first rate was sustained")?;
    Ok((ramp, highest))
}

/// What the ramp knows so far: the highest rate sustained, and the lowest one not sustained
/// above it.
#[derive(Debug, Default, PartialEq)]
struct RampBounds {
    sustained: Option<u32>,
    failed: Option<u32>,
}

/// Rates the ramp tries are multiples of this (messages/s): finer steps than this are within
/// the run-to-run scatter of one build's highest rate, and round rates read better.
const RAMP_GRAIN: u32 = 25;

impl RampBounds {
    /// Takes in whether `rate` was sustained: a success raises the floor, a failure above the
    /// floor lowers the ceiling.
    fn record(&mut self, rate: u32, sustained: bool) {
        if sustained {
            self.sustained = self.sustained.max(Some(rate));
            // A failure at or below a sustained rate was noise: the bisection goes on above.
            if self.failed.is_some_and(|failed| failed <= rate) {
                self.failed = None;
            }
        } else if self.sustained.is_none_or(|sustained| rate > sustained) {
            self.failed = Some(self.failed.map_or(rate, |failed| failed.min(rate)));
        }
    }

    /// The next rate to try: double while nothing failed, then the middle of the gap (on the
    /// grain) until it is at most an eighth of the sustained rate or no multiple of the grain
    /// lies inside it; `None` when done, when the first rate failed, or past `u32::MAX`.
    fn next_rate(&self) -> Option<u32> {
        match (self.sustained, self.failed) {
            (Some(sustained), None) => sustained.checked_mul(2),
            (Some(sustained), Some(failed))
                if u64::from(failed - sustained) * 8 > u64::from(sustained) =>
            {
                let middle = (sustained + (failed - sustained) / 2) / RAMP_GRAIN * RAMP_GRAIN;
                (middle > sustained).then_some(middle)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rates a ramp tries when every rate up to `limit` is sustained.
    fn tried_up_to(from: u32, limit: u32) -> (Vec<u32>, Option<u32>) {
        let mut bounds = RampBounds::default();
        let mut tried = vec![from];
        bounds.record(from, from <= limit);
        while let Some(next) = bounds.next_rate() {
            tried.push(next);
            bounds.record(next, next <= limit);
        }
        (tried, bounds.sustained)
    }

    #[test]
    fn the_ramp_doubles_then_halves_the_gap_to_within_an_eighth() {
        assert_eq!(
            tried_up_to(250, 2600),
            (
                vec![250, 500, 1000, 2000, 4000, 3000, 2500, 2750],
                Some(2500)
            )
        );
        assert_eq!(
            tried_up_to(250, 1000),
            (vec![250, 500, 1000, 2000, 1500, 1250, 1125], Some(1000))
        );
        assert_eq!(tried_up_to(250, 100), (vec![250], None));
        assert_eq!(
            tried_up_to(10, 30),
            (vec![10, 20, 40, 25], Some(25)),
            "no multiple of 25 between 25 and 40: done, though not within an eighth"
        );
        let doubled_past_the_type = RampBounds {
            sustained: Some(u32::MAX / 2 + 1),
            failed: None,
        };
        assert_eq!(doubled_past_the_type.next_rate(), None);
    }

    #[test]
    fn a_failure_below_a_sustained_rate_does_not_end_the_ramp() {
        let mut bounds = RampBounds::default();
        bounds.record(1000, true);
        bounds.record(2000, false);
        bounds.record(1500, true);
        bounds.record(1000, false);
        assert_eq!(
            bounds,
            RampBounds {
                sustained: Some(1500),
                failed: Some(2000)
            }
        );
        bounds.record(1750, true);
        bounds.record(1500, false);
        assert_eq!(bounds.next_rate(), Some(1875));
        bounds.record(1875, true);
        assert_eq!(bounds.next_rate(), None, "2000 - 1875 is within an eighth");
    }
}
