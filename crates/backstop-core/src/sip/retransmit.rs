//! Retransmission, RFC 3261 style, written once for every message we resend
//! until it is answered: our requests (Timer A/E with B/F: REGISTER, BYE)
//! and the responses that wait for an ACK (the 2xx of §13.3.1.4, Timer G/H
//! for a non-2xx). First resend after T1, the interval doubling up to T2,
//! and giving up 64×T1 after the first send.
//!
//! Sans-IO: time is an input, and the message to resend goes into the
//! caller's queue. On a reliable transport the caller asks for no resends
//! and only the give-up time runs (Timer B/F/H), except for a 2xx, which the
//! UAS core resends end to end because a later hop may be UDP.

use crate::sip::SipTransmit;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One message being retransmitted, and when.
#[derive(Debug, Clone)]
pub struct Retransmit {
    /// What is resent, and where.
    pub message: SipTransmit,
    /// False on a reliable transport: only the give-up time runs.
    resend: bool,
    next: Instant,
    interval: Duration,
    t2: Duration,
    give_up: Instant,
}

impl Retransmit {
    /// Start the timers for `message`, just sent at `now`: first resend at
    /// `now + t1`, giving up at `now + 64×t1`.
    pub fn new(message: SipTransmit, now: Instant, t1: Duration, t2: Duration, resend: bool) -> Retransmit {
        Retransmit { message, resend, next: now + t1, interval: t1, t2, give_up: now + t1 * 64 }
    }

    /// When [`Retransmit::gave_up`] next has something to do.
    pub fn deadline(&self) -> Instant {
        if self.resend { self.next.min(self.give_up) } else { self.give_up }
    }

    /// At `now`: true once the give-up time has passed (nothing is sent
    /// then); otherwise the message goes into `out` when a resend is due,
    /// and the interval doubles, up to T2.
    pub fn gave_up(&mut self, now: Instant, out: &mut VecDeque<SipTransmit>) -> bool {
        if now >= self.give_up {
            return true;
        }
        if self.resend && now >= self.next {
            out.push_back(self.message.clone());
            self.interval = (self.interval * 2).min(self.t2);
            self.next = now + self.interval;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Duration = Duration::from_millis(500);
    const T2: Duration = Duration::from_secs(4);

    fn message() -> SipTransmit {
        SipTransmit { dest: "127.0.0.1:5060".parse().unwrap(), bytes: b"BYE".to_vec() }
    }

    /// Drive the timer by its own deadlines: the resend times (after the
    /// first send) and the give-up time.
    fn run(resend: bool) -> (Vec<u128>, u128) {
        let t0 = Instant::now();
        let mut r = Retransmit::new(message(), t0, T1, T2, resend);
        let mut out = VecDeque::new();
        let mut resends = Vec::new();
        loop {
            let at = r.deadline();
            if r.gave_up(at, &mut out) {
                return (resends, (at - t0).as_millis());
            }
            if let Some(m) = out.pop_front() {
                assert_eq!(m, message());
                resends.push((at - t0).as_millis());
            }
            assert!(out.is_empty());
        }
    }

    #[test]
    fn resends_on_t1_doubling_to_t2_and_gives_up_at_64_t1() {
        let (resends, gave_up) = run(true);
        assert_eq!(resends, [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
        assert_eq!(gave_up, 32_000);
    }

    #[test]
    fn without_resends_only_the_give_up_time_runs() {
        let (resends, gave_up) = run(false);
        assert!(resends.is_empty());
        assert_eq!(gave_up, 32_000);
    }

    #[test]
    fn nothing_is_sent_before_it_is_due_and_late_timeouts_resend_once() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(message(), t0, T1, T2, true);
        let mut out = VecDeque::new();
        assert!(!r.gave_up(t0 + Duration::from_millis(499), &mut out));
        assert!(out.is_empty());
        // Woken late: one resend, and the next interval counts from now.
        assert!(!r.gave_up(t0 + Duration::from_millis(2000), &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(r.deadline(), t0 + Duration::from_millis(3000));
        assert!(r.gave_up(t0 + T1 * 64, &mut out));
        assert_eq!(out.len(), 1, "nothing is sent when giving up");
    }
}
