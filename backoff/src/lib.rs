//! [`Backoff`]: exponential backoff with jitter — the one raftkv retries with (the Clerk
//! between rounds of attempts, the TCP transport between reconnects).
//!
//! The wait starts at `min` and doubles after each use, up to `max`; each wait is drawn
//! uniformly from `[d/2, d]` so that clients or nodes that failed together do not retry in
//! step. It is pure: the caller passes a random `u64` to [`Backoff::next`] (from a seeded
//! generator under simulation), so the same inputs give the same waits.
//!
//! ```
//! use std::time::Duration;
//! use raftkv_backoff::Backoff;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
//! let waits: Vec<Duration> = (0..4).map(|i| backoff.next(u64::MAX - i)).collect();
//! // 10 ms, 20, 40, 40 (capped), each jittered down by at most half.
//! assert!(waits[0] <= Duration::from_millis(10) && waits[0] >= Duration::from_millis(5));
//! assert!(waits[3] <= Duration::from_millis(40) && waits[3] >= Duration::from_millis(20));
//! backoff.reset();
//! assert!(backoff.next(0) <= Duration::from_millis(10));
//! ```

use std::time::Duration;

/// Exponential backoff with jitter. See the crate doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The bound of the next wait. Invariant: `min <= current <= max`.
    current: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max` (a `max` below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            current: min,
        }
    }

    /// The next wait, drawn from `[d/2, d]` with `random`, where `d` is the current bound;
    /// then the bound doubles (up to `max`).
    pub fn next(&mut self, random: u64) -> Duration {
        let nanos = u64::try_from(self.current.as_nanos()).unwrap_or(u64::MAX);
        let low = nanos / 2;
        let span = nanos - low; // the draw is low + [0, span]
        let wait = low + random.checked_rem(span.saturating_add(1)).unwrap_or(0);
        self.current = self.current.saturating_mul(2).min(self.max);
        Duration::from_nanos(wait)
    }

    /// The bound of the next wait, before jitter.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Starts again from `min` (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_up_to_max_and_stay_within_half_to_whole() {
        let mut b = Backoff::new(ms(4), ms(20));
        let bounds = [4, 8, 16, 20, 20];
        for (i, bound) in bounds.into_iter().enumerate() {
            assert_eq!(b.current(), ms(bound), "step {i}");
            for random in [0, 1, u64::MAX, 0x1234_5678_9abc_def0] {
                let mut probe = b.clone();
                let w = probe.next(random);
                assert!(w >= ms(bound) / 2 && w <= ms(bound), "step {i}: {w:?}");
            }
            b.next(7);
        }
    }

    #[test]
    fn extremes_of_the_draw_reach_both_ends() {
        let mut b = Backoff::new(Duration::from_nanos(10), Duration::from_nanos(10));
        assert_eq!(b.next(0), Duration::from_nanos(5));
        assert_eq!(b.next(5), Duration::from_nanos(10));
    }

    #[test]
    fn reset_returns_to_min_and_max_below_min_is_min() {
        let mut b = Backoff::new(ms(5), ms(1));
        assert_eq!(b.current(), ms(5));
        b.next(0);
        assert_eq!(b.current(), ms(5));
        let mut b = Backoff::new(ms(5), ms(100));
        b.next(0);
        b.next(0);
        assert_eq!(b.current(), ms(20));
        b.reset();
        assert_eq!(b.current(), ms(5));
    }

    #[test]
    fn zero_min_waits_zero() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next(u64::MAX), Duration::ZERO);
    }
}
