//! REFER (RFC 3515) as the transferor: the parts that are not dialog
//! plumbing. The dialog ([`UasDialog::refer`]) sends the REFER and hands
//! each NOTIFY of its implicit subscription (RFC 6665) to
//! [`ReferSubscriptions::notify`], which says whether the NOTIFY is ours
//! (200) or not (481), and what it tells: the referred INVITE's status, read
//! from the message/sipfrag body's status line.
//!
//! A subscription is named by its REFER's CSeq, which the notifier echoes as
//! `Event: refer;id=<CSeq>`; a NOTIFY without an id belongs to the first
//! REFER (RFC 3515 §2.4.6), read as the oldest one still open. Leniency where it costs nothing and strictness where it would
//! mislead:
//! * The sipfrag status line may lack its reason phrase, be surrounded by
//!   whitespace, or be followed by headers; the Content-Type is not checked
//!   (old peers write `message/sipfrag;version=2.0`, some `text/plain`), the
//!   status line itself is.
//! * A NOTIFY of ours whose body is unreadable is still answered 200: a 4xx
//!   would end the subscription at the notifier (RFC 6665 §4.2.2) and lose
//!   us the outcome. It reports nothing, unless it terminates the
//!   subscription ([`ReferEvent::Terminated`]).
//! * A retransmitted or reordered NOTIFY (a CSeq not above the last one of
//!   its subscription), and any after the subscription terminated, is
//!   answered 200 and reports nothing.
//!
//! [`UasDialog::refer`]: crate::sip::dialog::UasDialog::refer

use crate::sip::dialog::ReferEvent;
use std::collections::VecDeque;

/// Subscriptions remembered per dialog; older ones are forgotten (their
/// NOTIFYs then get 481). A transfer walks at most a handful of targets.
const MAX_SUBSCRIPTIONS: usize = 8;

/// The status code of a message/sipfrag body (RFC 3420) that starts with a
/// status line: `SIP/2.0 180 Ringing`, or `SIP/2.0 200` without a reason
/// phrase, possibly surrounded by whitespace and followed by header lines.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?.trim_start();
    let line = text.split(['\r', '\n']).next()?.trim();
    let mut parts = line.split([' ', '\t']).filter(|p| !p.is_empty());
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    (100..700).contains(&code).then_some(code)
}

/// The `Event` header of a NOTIFY, if it is the refer package: `Some(id)`
/// for `refer;id=17`, `Some(None)` for a bare `refer`. `None` for another
/// package or an id that is not a number.
pub fn refer_event_id(value: &str) -> Option<Option<u32>> {
    let mut parts = value.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("refer") {
        return None;
    }
    for param in parts {
        let (name, v) = param.split_once('=').map_or((param, ""), |(n, v)| (n.trim(), v.trim()));
        if name.eq_ignore_ascii_case("id") {
            return v.parse::<u32>().ok().map(Some);
        }
    }
    Some(None)
}

/// Whether `uri` is a transfer target we can REFER to: a sip:, sips: or
/// tel: URI with something after the scheme, and nothing that would break
/// out of `Refer-To: <uri>` or the header (whitespace, control characters,
/// quotes, commas, angle brackets). The one rule for the config's `targets`
/// and for the REFER itself, so a target the config accepts always goes out.
pub fn is_refer_target(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else { return false };
    let scheme_ok = ["sip", "sips", "tel"].iter().any(|s| s.eq_ignore_ascii_case(scheme));
    let clean = !uri.chars().any(|c| c.is_whitespace() || c.is_control() || "<>\",".contains(c));
    scheme_ok && !rest.is_empty() && clean
}

/// Whether a `Subscription-State` value (`active;expires=60`,
/// `terminated;reason=noresource`) ends the subscription. A missing header
/// or another state (active, pending, an extension) does not.
pub fn is_terminated(subscription_state: &str) -> bool {
    subscription_state.split(';').next().is_some_and(|s| s.trim().eq_ignore_ascii_case("terminated"))
}

/// What to do with a NOTIFY, as [`ReferSubscriptions::notify`] judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyVerdict {
    /// No subscription of ours (another event package, an unknown id): 481.
    Unknown,
    /// One of ours: answer 200, and report `event` (if any) for REFER `id`.
    Known { id: u32, event: Option<ReferEvent> },
}

#[derive(Debug, Clone)]
struct Subscription {
    id: u32,
    /// CSeq of the last NOTIFY taken for it; an equal or lower one is old news.
    last_cseq: Option<u32>,
    terminated: bool,
}

/// How many NOTIFY CSeqs are remembered to spot retransmissions.
const SEEN_CSEQS: usize = 32;

/// The implicit subscriptions of the REFERs sent in one dialog.
#[derive(Debug, Clone, Default)]
pub struct ReferSubscriptions {
    /// Oldest first.
    subs: VecDeque<Subscription>,
    /// The CSeqs of the NOTIFYs taken lately, of any subscription: one seen
    /// again is a retransmission, whichever subscription a bare `Event:
    /// refer` would now point at.
    seen: VecDeque<u32>,
}

impl ReferSubscriptions {
    /// A REFER with CSeq `id` went out: its subscription may start.
    pub fn open(&mut self, id: u32) {
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            self.subs.pop_front();
        }
        self.subs.push_back(Subscription { id, last_cseq: None, terminated: false });
    }

    /// The REFER `id` was refused or never answered: it has no subscription.
    pub fn forget(&mut self, id: u32) {
        self.subs.retain(|s| s.id != id);
    }

    /// Judge a NOTIFY by its `Event` and `Subscription-State` values, CSeq and body.
    pub fn notify(&mut self, event: Option<&str>, state: Option<&str>, cseq: u32, body: &[u8]) -> NotifyVerdict {
        let Some(id) = event.and_then(refer_event_id) else { return NotifyVerdict::Unknown };
        // Without an id, a NOTIFY is for the first REFER (RFC 3515 §2.4.6): the
        // oldest subscription still open (UAs that leave the id out of every
        // NOTIFY then still reach the one REFER they act on at a time).
        let oldest_open = self.subs.iter().find(|s| !s.terminated).or(self.subs.front()).map(|s| s.id);
        let Some(id) = id.or(oldest_open) else { return NotifyVerdict::Unknown };
        let Some(sub) = self.subs.iter_mut().find(|s| s.id == id) else { return NotifyVerdict::Unknown };
        let repeated = self.seen.contains(&cseq);
        if sub.terminated || repeated || sub.last_cseq.is_some_and(|last| cseq <= last) {
            return NotifyVerdict::Known { id, event: None };
        }
        sub.last_cseq = Some(cseq);
        if self.seen.len() >= SEEN_CSEQS {
            self.seen.pop_front();
        }
        self.seen.push_back(cseq);
        let terminated = state.is_some_and(is_terminated);
        sub.terminated = terminated;
        let event = match sipfrag_status(body) {
            Some(code) => Some(ReferEvent::Notify { code, terminated }),
            None if terminated => Some(ReferEvent::Terminated),
            None => None,
        };
        NotifyVerdict::Known { id, event }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_targets_are_sip_sips_or_tel_uris_that_fit_in_the_header() {
        for ok in ["sip:oncall@10.0.0.7", "SIPS:a@b;transport=tls", "tel:+15551230000", "sip:pbx.example"] {
            assert!(is_refer_target(ok), "{ok}");
        }
        for bad in [
            "",
            "oncall",
            "sip:",
            "mailto:a@b",
            "http://x",
            "sip:a b@c",
            "sip:a@b>x",
            "<sip:a@b>",
            "sip:a@b,sip:c@d",
            "tel:\"1\"",
        ] {
            assert!(!is_refer_target(bad), "{bad:?}");
        }
    }

    #[test]
    fn sipfrag_status_lines_are_read_leniently() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 200"), Some(200), "no reason phrase");
        assert_eq!(sipfrag_status(b"SIP/2.0 486\r\n"), Some(486));
        assert_eq!(sipfrag_status(b"\r\n  SIP/2.0 180 Ringing  \r\n\r\n"), Some(180));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 603 Declined\r\nWarning: 399 x \"no\"\r\nContent-Length: 0\r\n\r\n"),
            Some(603)
        );
        assert_eq!(sipfrag_status(b"sip/2.0  503   Service Unavailable\n"), Some(503));
        for bad in [
            &b""[..],
            b"   ",
            b"SIP/2.0",
            b"SIP/2.0 OK",
            b"SIP/2.0 20 OK",
            b"SIP/2.0 2000 OK",
            b"SIP/2.0 099 x",
            b"SIP/2.0 700 x",
            b"SIP/3.0 200 OK",
            b"INVITE sip:a@b SIP/2.0",
            b"200 OK",
            b"\xff\xfe",
        ] {
            assert_eq!(sipfrag_status(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn event_headers_name_the_refer_they_are_for() {
        assert_eq!(refer_event_id("refer;id=17"), Some(Some(17)));
        assert_eq!(refer_event_id("refer ; id = 17"), Some(Some(17)));
        assert_eq!(refer_event_id("REFER;foo;id=3"), Some(Some(3)));
        assert_eq!(refer_event_id("refer"), Some(None));
        assert_eq!(refer_event_id("refer;foo=bar"), Some(None));
        assert_eq!(refer_event_id("refer;id=abc"), None);
        assert_eq!(refer_event_id("refer;id="), None);
        assert_eq!(refer_event_id("presence;id=17"), None);
        assert_eq!(refer_event_id("dialog"), None);
        assert_eq!(refer_event_id(""), None);
    }

    #[test]
    fn subscription_states() {
        assert!(is_terminated("terminated;reason=noresource"));
        assert!(is_terminated(" Terminated "));
        assert!(!is_terminated("active;expires=60"));
        assert!(!is_terminated("pending"));
        assert!(!is_terminated(""));
    }

    fn notify(subs: &mut ReferSubscriptions, event: &str, state: &str, cseq: u32, body: &str) -> NotifyVerdict {
        subs.notify(Some(event), Some(state), cseq, body.as_bytes())
    }

    fn known(id: u32, code: u16, terminated: bool) -> NotifyVerdict {
        NotifyVerdict::Known { id, event: Some(ReferEvent::Notify { code, terminated }) }
    }

    #[test]
    fn notifies_are_matched_by_id_and_old_news_is_not_reported() {
        let mut subs = ReferSubscriptions::default();
        assert_eq!(notify(&mut subs, "refer", "active", 2, "SIP/2.0 100 Trying"), NotifyVerdict::Unknown);
        subs.open(5);
        assert_eq!(notify(&mut subs, "refer;id=5", "active;expires=60", 2, "SIP/2.0 100 Trying"), known(5, 100, false));
        // Without an id: the first REFER's.
        assert_eq!(notify(&mut subs, "refer", "active", 3, "SIP/2.0 180 Ringing"), known(5, 180, false));
        // A retransmission, and one overtaken by a later NOTIFY: 200, nothing to report.
        let quiet = NotifyVerdict::Known { id: 5, event: None };
        assert_eq!(notify(&mut subs, "refer;id=5", "active", 3, "SIP/2.0 180 Ringing"), quiet);
        assert_eq!(notify(&mut subs, "refer;id=5", "active", 2, "SIP/2.0 100 Trying"), quiet);
        assert_eq!(notify(&mut subs, "refer;id=6", "active", 4, "SIP/2.0 100 Trying"), NotifyVerdict::Unknown);
        assert_eq!(notify(&mut subs, "presence;id=5", "active", 4, "SIP/2.0 100 Trying"), NotifyVerdict::Unknown);
        assert_eq!(subs.notify(None, Some("active"), 4, b"SIP/2.0 100 Trying"), NotifyVerdict::Unknown);
        // An unreadable body: 200 and nothing, unless it ends the subscription.
        assert_eq!(notify(&mut subs, "refer;id=5", "active", 4, "garbage"), quiet);
        assert_eq!(
            notify(&mut subs, "refer;id=5", "terminated;reason=noresource", 5, ""),
            NotifyVerdict::Known { id: 5, event: Some(ReferEvent::Terminated) }
        );
        // After it terminated: still 200 (late retransmissions), nothing reported.
        assert_eq!(notify(&mut subs, "refer;id=5", "active", 9, "SIP/2.0 200 OK"), quiet);
    }

    #[test]
    fn bare_notifies_go_to_the_oldest_open_refer_and_ids_to_their_own() {
        let mut subs = ReferSubscriptions::default();
        subs.open(2);
        subs.open(3);
        // RFC 3515 §2.4.6: no id means the first REFER, even when a later one was sent.
        assert_eq!(notify(&mut subs, "refer", "active", 2, "SIP/2.0 100 Trying"), known(2, 100, false));
        assert_eq!(notify(&mut subs, "refer;id=3", "active", 3, "SIP/2.0 180 Ringing"), known(3, 180, false));
        assert_eq!(notify(&mut subs, "refer", "terminated", 4, "SIP/2.0 486 Busy Here"), known(2, 486, true));
        // The first is over: bare NOTIFYs now belong to the next one still open...
        assert_eq!(notify(&mut subs, "refer", "active", 5, "SIP/2.0 183 Session Progress"), known(3, 183, false));
        // ... and a retransmission of the first's last NOTIFY is old news, not the second's.
        let quiet = NotifyVerdict::Known { id: 3, event: None };
        assert_eq!(notify(&mut subs, "refer", "terminated", 4, "SIP/2.0 486 Busy Here"), quiet);
        // NOTIFYs of two subscriptions may overlap (RFC 6665 orders them per
        // subscription only): a lost one resent after the other's later one still counts.
        let mut two = ReferSubscriptions::default();
        two.open(7);
        two.open(8);
        assert_eq!(notify(&mut two, "refer;id=8", "active", 20, "SIP/2.0 180 Ringing"), known(8, 180, false));
        assert_eq!(notify(&mut two, "refer;id=7", "active", 22, "SIP/2.0 183 Progress"), known(7, 183, false));
        assert_eq!(notify(&mut two, "refer;id=8", "terminated", 21, "SIP/2.0 200 OK"), known(8, 200, true));
        assert_eq!(
            notify(&mut two, "refer;id=8", "terminated", 21, "SIP/2.0 200 OK"),
            NotifyVerdict::Known { id: 8, event: None }
        );
        subs.forget(3);
        assert_eq!(notify(&mut subs, "refer;id=3", "active", 6, "SIP/2.0 180 Ringing"), NotifyVerdict::Unknown);
    }

    #[test]
    fn only_the_newest_subscriptions_are_remembered() {
        let mut subs = ReferSubscriptions::default();
        for id in 1..=(MAX_SUBSCRIPTIONS as u32 + 1) {
            subs.open(id);
        }
        assert_eq!(notify(&mut subs, "refer;id=1", "active", 1, "SIP/2.0 100 Trying"), NotifyVerdict::Unknown);
        assert_eq!(notify(&mut subs, "refer;id=2", "active", 1, "SIP/2.0 100 Trying"), known(2, 100, false));
    }
}
