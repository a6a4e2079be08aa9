//! The shape's ramp: which rate to try next, from what was sustained and what was not.

/// What the ramp knows so far: the highest rate sustained, and the lowest one not sustained
/// above it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RampBounds {
    pub(super) sustained: Option<u32>,
    failed: Option<u32>,
}

/// Rates the ramp tries are multiples of this (messages/s).
const RAMP_GRAIN: u32 = 25;

impl RampBounds {
    pub(super) fn record(&mut self, rate: u32, sustained: bool) {
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
    /// grain) until it is at most an eighth of the sustained rate; `None` when done, or when
    /// the first rate failed.
    pub(super) fn next_rate(&self) -> Option<u32> {
        match (self.sustained, self.failed) {
            (Some(sustained), None) => Some(sustained * 2),
            (Some(sustained), Some(failed)) if (failed - sustained) * 8 > sustained => {
                let middle = (sustained + failed) / 2 / RAMP_GRAIN * RAMP_GRAIN;
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
