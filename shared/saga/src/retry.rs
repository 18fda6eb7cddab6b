//! Retry delays for transient saga failures (Temporal-style: retry forever,
//! exponentially spaced, capped) and for internal ones (the same delays, a
//! bounded number of times).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The delay before attempt `attempt + 1` after `attempt` (1-based) failed
/// transiently: `base × 2^(attempt−1)`, at most `max`. Deterministic (no
/// jitter) so that tests can wait for a known delay.
pub fn backoff_delay(attempt: i32, base: Duration, max: Duration) -> Duration {
    let nth = usize::try_from(attempt.max(1) - 1).unwrap_or(0).min(64);
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build();
    let delay = delays.nth(nth).unwrap_or(max).min(max);
    // Whole milliseconds (the factor is applied in floating point).
    Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff_delay(1, base, max), Duration::from_millis(100));
        assert_eq!(backoff_delay(2, base, max), Duration::from_millis(200));
        assert_eq!(backoff_delay(3, base, max), Duration::from_millis(400));
        assert_eq!(backoff_delay(5, base, max), Duration::from_secs(1));
        assert_eq!(backoff_delay(10_000, base, max), Duration::from_secs(1));
        assert_eq!(backoff_delay(0, base, max), Duration::from_millis(100));
    }
}
