//! Retry policy for deliveries, as pure functions: what an attempt's result
//! means (delivered, retry, dead) and how long to wait before the next one.
//!
//! Backoff is the core's [`Backoff`], the one registration uses too:
//! doubling from 1 s, capped at the sink's maximum interval (default 60 s:
//! a lead is worth most in its first minutes, so we never back off for
//! hours), with ±20 % jitter. A `Retry-After` from the receiver is honoured
//! up to that cap. After the maximum age the event is dead-lettered.

use backstop_core::backoff::Backoff;
use std::time::Duration;

/// The wait after the first failed attempt.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// An HTTP status, with `Retry-After` in seconds if the receiver sent one.
    Status { code: u16, retry_after: Option<u64> },
    /// Timeout, refused connection, reset...
    Transport(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { after: Option<Duration>, why: String },
    Dead { why: String },
}

/// 2xx delivered; 408, 429 and 5xx retry; any other 4xx (and 3xx) is permanent.
pub fn classify(a: &Attempt) -> Verdict {
    match a {
        Attempt::Status { code, .. } if (200..300).contains(code) => Verdict::Delivered,
        Attempt::Status { code, retry_after } if *code == 408 || *code == 429 || *code >= 500 => {
            Verdict::Retry { after: retry_after.map(Duration::from_secs), why: format!("HTTP {code}") }
        }
        Attempt::Status { code, .. } => Verdict::Dead { why: format!("HTTP {code} (permanent)") },
        Attempt::Transport(e) => Verdict::Retry { after: None, why: e.clone() },
    }
}

/// The wait after `attempts` failed attempts (1 = the first failure).
/// `jitter` is a uniform random number in [0, 1).
pub fn backoff(attempts: u32, max_interval: Duration, retry_after: Option<Duration>, jitter: f64) -> Duration {
    match retry_after {
        Some(ra) => ra.min(max_interval),
        None => Backoff { first: FIRST_RETRY, max: max_interval }.wait(attempts, jitter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let st = |code| Attempt::Status { code, retry_after: None };
        assert_eq!(classify(&st(200)), Verdict::Delivered);
        assert_eq!(classify(&st(204)), Verdict::Delivered);
        for code in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(&st(code)), Verdict::Retry { .. }), "{code}");
        }
        for code in [301, 400, 401, 404, 410, 422] {
            assert!(matches!(classify(&st(code)), Verdict::Dead { .. }), "{code}");
        }
        assert!(matches!(classify(&Attempt::Transport("timeout".into())), Verdict::Retry { .. }));
        let ra = classify(&Attempt::Status { code: 503, retry_after: Some(7) });
        assert_eq!(ra, Verdict::Retry { after: Some(Duration::from_secs(7)), why: "HTTP 503".into() });
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let max = Duration::from_secs(60);
        let mid: Vec<u64> = (1..=8).map(|a| backoff(a, max, None, 0.5).as_millis() as u64).collect();
        assert_eq!(mid, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
        assert_eq!(backoff(1, max, None, 0.0), Duration::from_millis(800));
        assert_eq!(backoff(3, max, None, 0.999_999).as_millis(), 4799);
        // Jitter never pushes past the cap.
        assert_eq!(backoff(30, max, None, 0.99), max);
        // Retry-After is honoured, but not beyond the cap.
        assert_eq!(backoff(1, max, Some(Duration::from_secs(5)), 0.5), Duration::from_secs(5));
        assert_eq!(backoff(1, max, Some(Duration::from_secs(3600)), 0.5), max);
    }
}
