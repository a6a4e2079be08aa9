//! When to act: reconnection backoff, the silence that means a stream is dead, and when to
//! refresh a token.

/// How long a stream must have lived to count as a success that resets the backoff, ms. A
/// server that accepts a stream and drops it at once would otherwise be hammered.
pub const HEALTHY_STREAM_MS: f64 = 10_000.0;

/// Reconnection delays: exponential from 500 ms to 15 s, with jitter so that clients cut off
/// together do not come back together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt, ms; `random` is uniform in [0, 1).
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        let ceiling = (500.0 * 2f64.powi(self.attempt.min(5) as i32)).min(15_000.0);
        self.attempt += 1;
        ceiling / 2.0 + ceiling / 2.0 * random
    }

    /// Attempts since the last healthy stream.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A stream that had started (its `Ready` arrived) ended after `lived_ms`: if it lived
    /// long enough, start over with short delays; if it died young, keep them growing.
    pub fn stream_ended(&mut self, lived_ms: f64) {
        if lived_ms >= HEALTHY_STREAM_MS {
            self.attempt = 0;
        }
    }
}

/// The wait before reconnecting after the server said it is going away (a restart or a
/// deploy), ms: no failure backoff, since nothing failed, only a jitter of up to half a
/// second so that the thousands of clients of a draining instance do not reach the others in
/// the same instant.
pub fn go_away_delay_ms(random: f64) -> f64 {
    500.0 * random
}

/// How long a stream may stay silent before it is considered dead, ms: two and a half
/// heartbeat intervals (one late heartbeat is tolerated, two are not).
pub fn silence_limit_ms(heartbeat_interval_ms: u32) -> u32 {
    heartbeat_interval_ms.clamp(1000, 600_000) / 2 * 5
}

/// Longest single wait before the refresh schedule is looked at again, ms: a timer sleeps
/// through a suspended laptop, so a long one would wake up too late.
pub const REFRESH_CHECK_MS: f64 = 30_000.0;

/// How long before expiry a token is refreshed, ms: five minutes (a browser may delay the
/// timers of a hidden tab by a minute, and a refresh may fail and be tried again), or a
/// quarter of the lifetime for short-lived tokens.
pub fn refresh_lead_ms(lifetime_ms: f64) -> f64 {
    (lifetime_ms / 4.0).min(300_000.0)
}

/// How long to wait before refreshing a token, ms (0: now): until [`refresh_lead_ms`]
/// before expiry, and never longer than [`REFRESH_CHECK_MS`]. Times are in this browser's
/// clock: `expires_at_ms` was computed from the server's relative lifetime when the token
/// arrived, so a wrong clock does not matter.
pub fn refresh_in_ms(now_ms: f64, expires_at_ms: f64, lifetime_ms: f64) -> f64 {
    (expires_at_ms - refresh_lead_ms(lifetime_ms) - now_ms).clamp(0.0, REFRESH_CHECK_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_away_is_no_failure() {
        let mut backoff = Backoff::default();
        for _ in 0..8 {
            backoff.next_delay_ms(0.5);
        }
        assert!(backoff.next_delay_ms(0.0) >= 7_500.0);
        assert!(go_away_delay_ms(0.0) == 0.0 && go_away_delay_ms(0.999) < 500.0);
    }

    #[test]
    fn backoff_grows_with_jitter_and_only_a_healthy_stream_resets_it() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay_ms(0.0);
        let second = backoff.next_delay_ms(0.999);
        assert!((250.0..=500.0).contains(&first) && (500.0..=1000.0).contains(&second));
        for _ in 0..10 {
            assert!(backoff.next_delay_ms(0.999) <= 15_000.0);
        }
        assert_eq!(backoff.attempts(), 12);
        backoff.stream_ended(300.0);
        assert_eq!(
            backoff.attempts(),
            12,
            "a stream dropped at once is no success"
        );
        backoff.stream_ended(HEALTHY_STREAM_MS);
        assert_eq!(backoff.attempts(), 0);
        assert!(backoff.next_delay_ms(0.5) < 500.0);
    }

    #[test]
    fn silence_limit_is_two_and_a_half_heartbeats() {
        assert_eq!(silence_limit_ms(15_000), 37_500);
        assert_eq!(silence_limit_ms(0), 2_500, "a nonsense interval is clamped");
    }

    #[test]
    fn tokens_are_refreshed_ahead_of_expiry_checking_at_least_every_30_s() {
        let hour = 3_600_000.0;
        // A 12 h token: five minutes before expiry, looked at again every 30 s until then.
        let expiry = 12.0 * hour;
        assert_eq!(refresh_in_ms(0.0, expiry, 12.0 * hour), REFRESH_CHECK_MS);
        assert_eq!(
            refresh_in_ms(expiry - 310_000.0, expiry, 12.0 * hour),
            10_000.0
        );
        // A 12 s token: a quarter of its life (3 s) before expiry.
        assert_eq!(refresh_in_ms(0.0, 12_000.0, 12_000.0), 9_000.0);
        // Overdue (a laptop woke up late): now.
        assert_eq!(refresh_in_ms(11_500.0, 12_000.0, 12_000.0), 0.0);
    }
}
