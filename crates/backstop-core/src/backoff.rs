//! How long to wait after a failure before trying again, for everything
//! that retries: registering with a registrar, delivering a lead. The wait
//! doubles from a first interval up to a cap, and is spread by ±20 %
//! jitter so that many clients failing together do not retry together.
//!
//! The jitter is an input, as time is: the registration derives it from
//! its seed (so a test sees the same waits every run), delivery draws it.
//! A peer's `Retry-After` stays with the caller, whose rules differ: a
//! registrar's is a floor (a 403 must never spin), a webhook's is capped
//! (a lead is worth most in its first minutes).

use std::time::Duration;

/// Exponential backoff: `first` after one failure, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row (1 = the first), with
    /// `jitter` a uniform number in [0, 1) choosing a factor in 0.8..1.2.
    /// Jitter never takes the wait past `max`.
    ///
    /// ```
    /// use backstop_core::backoff::Backoff;
    /// use std::time::Duration;
    ///
    /// let b = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60) };
    /// assert_eq!(b.wait(3, 0.5), Duration::from_secs(4));
    /// assert_eq!(b.wait(1, 0.0), Duration::from_millis(800));
    /// assert_eq!(b.wait(40, 0.99), Duration::from_secs(60));
    /// ```
    pub fn wait(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1);
        let exponential = self.first.saturating_mul(2u32.saturating_pow(doublings)).min(self.max);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        // Checked: a cap near Duration::MAX times 1.2 does not fit.
        Duration::try_from_secs_f64(exponential.as_secs_f64() * factor).unwrap_or(self.max).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_wait_up_to_the_cap() {
        let b = Backoff { first: Duration::from_secs(5), max: Duration::from_secs(300) };
        let waits: Vec<u64> = (1..=9).map(|n| b.wait(n, 0.5).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // However many failures: no overflow, still the cap.
        assert_eq!(b.wait(u32::MAX, 0.5), b.max);
        // Zero failures reads as one.
        assert_eq!(b.wait(0, 0.5), b.first);
    }

    #[test]
    fn jitter_spreads_by_twenty_percent_and_never_passes_the_cap() {
        let b = Backoff { first: Duration::from_secs(10), max: Duration::from_secs(60) };
        assert_eq!(b.wait(1, 0.0), Duration::from_secs(8));
        assert_eq!(b.wait(1, 0.999_999).as_millis(), 11_999);
        assert_eq!(b.wait(3, 0.5), Duration::from_secs(40));
        assert_eq!(b.wait(4, 0.99), b.max);
        assert_eq!(b.wait(4, 0.0), Duration::from_millis(48_000));
        // Out-of-range jitter is clamped.
        assert_eq!(b.wait(1, -3.0), Duration::from_secs(8));
        assert_eq!(b.wait(1, 7.0), Duration::from_secs(12));
    }
}
