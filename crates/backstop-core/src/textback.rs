//! The instant text-back: whether a missed call's caller gets a text
//! message, as the lead records it (`lead.text_back`).
//!
//! The policy is a plain function of what is known when `call.missed` is
//! delivered: the caller's number, whether the source was verified and the
//! call judged junk (from the lead), and, looked up by the runtime, when that
//! number was last texted from the same sender and whether it opted out of
//! that sender's texts (STOP to that number). A text goes out only when
//! every rule holds; otherwise the first rule that fails names the
//! [`SkipReason`]:
//!
//! 1. `invalid_number`: the caller's number is not one a text can reach
//!    ([`textable`]: anonymous, a short code, not E.164 and not a North
//!    American number, a NANP service or premium code);
//! 2. `unverified_source`: the INVITE's source address was not shown to be
//!    real, so the number may be spoofed;
//! 3. `junk`: a junk rule matched the call;
//! 4. `opted_out`: the number sent STOP to the sending number (and no START
//!    to it since); a STOP to one of our numbers is not one to another;
//! 5. `recently_texted`: it was texted within `once_per` already.
//!
//! Whether a number is a mobile one cannot be known without a paid lookup:
//! a landline passes these rules and the provider refuses or drops the text.

use serde::{Deserialize, Serialize};

/// What became of the text-back for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextBackStatus {
    /// The provider accepted the message (`sid` is its id).
    Sent,
    /// No text was sent, by policy (`reason` says which rule).
    Skipped,
    /// The provider refused it, or it could not be reached until the event gave up.
    Failed,
}

/// The text-back as the lead carries it. Fields in alphabetical order, as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextBack {
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The provider's message id (Twilio `SM...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub status: TextBackStatus,
}

impl TextBack {
    pub fn sent(sid: Option<String>) -> TextBack {
        TextBack { reason: None, sid, status: TextBackStatus::Sent }
    }

    pub fn skipped(reason: SkipReason) -> TextBack {
        TextBack { reason: Some(reason.as_str().to_string()), sid: None, status: TextBackStatus::Skipped }
    }

    pub fn failed(reason: impl Into<String>) -> TextBack {
        TextBack { reason: Some(reason.into()), sid: None, status: TextBackStatus::Failed }
    }
}

/// Why no text was sent: the `reason` of a skipped text-back, on the wire as
/// these snake_case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Anonymous, a short code, or not a number a text can reach.
    InvalidNumber,
    /// `source_verified` is false: the caller ID may be spoofed.
    UnverifiedSource,
    /// A junk rule matched the call.
    Junk,
    /// The number opted out of this sender's texts (STOP).
    OptedOut,
    /// Texted from the same sender within `once_per_hours`.
    RecentlyTexted,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::InvalidNumber,
        SkipReason::UnverifiedSource,
        SkipReason::Junk,
        SkipReason::OptedOut,
        SkipReason::RecentlyTexted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidNumber => "invalid_number",
            SkipReason::UnverifiedSource => "unverified_source",
            SkipReason::Junk => "junk",
            SkipReason::OptedOut => "opted_out",
            SkipReason::RecentlyTexted => "recently_texted",
        }
    }
}

/// The shortest and longest E.164 number taken, in digits with the country
/// code: 15 is E.164's maximum; below 8 are short codes and the few tiny
/// national plans (which we give up rather than text a short code).
pub const MIN_DIGITS: usize = 8;
pub const MAX_DIGITS: usize = 15;

/// The caller's number as E.164 (`+15551230001`), if a text can reach it.
///
/// Visual separators (space, `-`, `.`, `(`, `)`) are dropped. A number
/// with `+` must have 8 to 15 digits, not starting with 0. Without `+`, only
/// a North American number is read: 10 digits, or 11 starting with 1,
/// becomes `+1` and the 10 digits (anything else without `+`, a short code
/// or a national number of another plan, is refused rather than guessed).
/// A North American number needs an area code starting 2-9, and is
/// refused for the N11 service codes and the 900 premium area code. (The
/// exchange is not checked: test numbers such as 555-123-xxxx are common.)
pub fn textable(number: &str) -> Option<String> {
    let number = number.trim();
    let (plus, rest) = match number.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, number),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let e164 = if plus {
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) || digits.starts_with('0') {
            return None;
        }
        digits
    } else {
        match digits.len() {
            10 => format!("1{digits}"),
            11 if digits.starts_with('1') => digits,
            _ => return None,
        }
    };
    if let Some(national) = e164.strip_prefix('1')
        && !nanp_plausible(national)
    {
        return None;
    }
    Some(format!("+{e164}"))
}

/// A North American national number (10 digits) that can be a subscriber's:
/// the area code starts with 2-9 and is no N11 service code, nor 900.
fn nanp_plausible(national: &str) -> bool {
    let b = national.as_bytes();
    if b.len() != 10 {
        return false;
    }
    let npa = &national[..3];
    let n11 = b[1] == b'1' && b[2] == b'1';
    (b'2'..=b'9').contains(&b[0]) && !n11 && npa != "900"
}

/// What the policy is given about one `call.missed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The caller's number as the lead has it (`None`: anonymous).
    pub caller: Option<String>,
    pub source_verified: bool,
    pub junk: bool,
    /// The number opted out of texts from this sender (looked up by its
    /// [`textable`] form and the sending number).
    pub opted_out: bool,
    /// When the number was last texted from this sender, Unix ms.
    pub last_sent_ms: Option<i64>,
}

/// Send to `to` (E.164), or skip and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send { to: String },
    Skip(SkipReason),
}

/// Decide for `facts` at `now_ms`, allowing one text per number per
/// `once_per_ms`. The runtime looks `opted_out` and `last_sent_ms` up under
/// the number [`textable`] gives and the sending number.
pub fn decide(facts: &Facts, now_ms: i64, once_per_ms: i64) -> Decision {
    let Some(to) = facts.caller.as_deref().and_then(textable) else {
        return Decision::Skip(SkipReason::InvalidNumber);
    };
    if !facts.source_verified {
        return Decision::Skip(SkipReason::UnverifiedSource);
    }
    if facts.junk {
        return Decision::Skip(SkipReason::Junk);
    }
    if facts.opted_out {
        return Decision::Skip(SkipReason::OptedOut);
    }
    if facts.last_sent_ms.is_some_and(|t| now_ms.saturating_sub(t) < once_per_ms) {
        return Decision::Skip(SkipReason::RecentlyTexted);
    }
    Decision::Send { to }
}

/// An opt-out keyword (`Some(true)`: stop; `Some(false)`: start again) in an
/// inbound message's body, as the carriers and Twilio read them: the whole
/// body, trimmed, any case.
pub fn opt_keyword(body: &str) -> Option<bool> {
    const STOP: [&str; 8] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"];
    const START: [&str; 3] = ["START", "YES", "UNSTOP"];
    let word = body.trim();
    if STOP.iter().any(|k| k.eq_ignore_ascii_case(word)) {
        Some(true)
    } else if START.iter().any(|k| k.eq_ignore_ascii_case(word)) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn ok() -> Facts {
        Facts {
            caller: Some("+15551230001".into()),
            source_verified: true,
            junk: false,
            opted_out: false,
            last_sent_ms: None,
        }
    }

    #[test]
    fn a_verified_mobile_caller_gets_a_text() {
        assert_eq!(decide(&ok(), 100 * HOUR, 24 * HOUR), Decision::Send { to: "+15551230001".into() });
    }

    #[test]
    fn numbers_a_text_can_reach() {
        for (raw, e164) in [
            ("+15551230001", "+15551230001"),
            ("+1 (555) 123-0001", "+15551230001"),
            ("5551230001", "+15551230001"),
            ("1-555-123-0001", "+15551230001"),
            ("15551230001", "+15551230001"),
            ("+447700900123", "+447700900123"),
            ("+49 151 23456789", "+4915123456789"),
            ("+61412345678", "+61412345678"),
        ] {
            assert_eq!(textable(raw).as_deref(), Some(e164), "{raw}");
        }
        for raw in [
            "",
            "anonymous",
            "Anonymous",
            "restricted",
            "12345",             // a short code
            "+12345",            // too short for E.164
            "+1234567",          // 7 digits
            "+1234567890123456", // 16 digits
            "+05551230001",      // no country code starts with 0
            "447700900123",      // not NANP and no +: not guessed
            "555123000",         // 9 digits
            "25551230001",       // 11 digits not starting with 1
            "+15551230001;ext=2",
            "+1555123000a",
            "+19005550100", // premium
            "+14115550100", // N11
            "+10555123000", // NPA starting 0
            "+1555123000",  // 10 digits after +1: too short for NANP
            "sip:+15551230001@x",
        ] {
            assert_eq!(textable(raw), None, "{raw}");
        }
    }

    #[test]
    fn an_anonymous_or_unreachable_number_is_an_invalid_number() {
        for caller in [None, Some("anonymous"), Some("22395"), Some("+19005550100")] {
            let f = Facts { caller: caller.map(String::from), ..ok() };
            assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::InvalidNumber), "{caller:?}");
        }
    }

    #[test]
    fn an_unverified_source_is_not_texted() {
        let f = Facts { source_verified: false, ..ok() };
        assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::UnverifiedSource));
    }

    #[test]
    fn junk_is_not_texted() {
        let f = Facts { junk: true, ..ok() };
        assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::Junk));
    }

    #[test]
    fn an_opted_out_number_is_not_texted() {
        let f = Facts { opted_out: true, ..ok() };
        assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::OptedOut));
        // Opted out wins over recently texted: it is the lasting reason.
        let f = Facts { opted_out: true, last_sent_ms: Some(0), ..ok() };
        assert_eq!(decide(&f, 1, HOUR), Decision::Skip(SkipReason::OptedOut));
    }

    #[test]
    fn once_per_window() {
        let f = Facts { last_sent_ms: Some(10 * HOUR), ..ok() };
        assert_eq!(decide(&f, 10 * HOUR, 24 * HOUR), Decision::Skip(SkipReason::RecentlyTexted));
        assert_eq!(decide(&f, 34 * HOUR - 1, 24 * HOUR), Decision::Skip(SkipReason::RecentlyTexted));
        assert_eq!(decide(&f, 34 * HOUR, 24 * HOUR), Decision::Send { to: "+15551230001".into() });
        // A clock that went back counts as recent.
        assert_eq!(decide(&f, 9 * HOUR, 24 * HOUR), Decision::Skip(SkipReason::RecentlyTexted));
    }

    #[test]
    fn the_first_failing_rule_names_the_reason() {
        let f = Facts {
            caller: Some("12345".into()),
            source_verified: false,
            junk: true,
            opted_out: true,
            last_sent_ms: Some(0),
        };
        assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::InvalidNumber));
        let f = Facts { caller: ok().caller, ..f };
        assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::UnverifiedSource));
        let f = Facts { source_verified: true, ..f };
        assert_eq!(decide(&f, 0, HOUR), Decision::Skip(SkipReason::Junk));
    }

    #[test]
    fn reasons_and_statuses_on_the_wire() {
        for r in SkipReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(TextBack::skipped(r).reason.as_deref(), Some(r.as_str()));
        }
        let t = serde_json::to_string(&TextBack::sent(Some("SMx".into()))).unwrap();
        assert_eq!(t, r#"{"sid":"SMx","status":"sent"}"#);
        let t = serde_json::to_string(&TextBack::skipped(SkipReason::RecentlyTexted)).unwrap();
        assert_eq!(t, r#"{"reason":"recently_texted","status":"skipped"}"#);
    }

    #[test]
    fn opt_out_keywords() {
        for w in ["STOP", "stop", " Stop\n", "STOPALL", "unsubscribe", "CANCEL", "end", "Quit", "OPTOUT", "revoke"] {
            assert_eq!(opt_keyword(w), Some(true), "{w}");
        }
        for w in ["START", "yes", "Unstop "] {
            assert_eq!(opt_keyword(w), Some(false), "{w}");
        }
        for w in ["please stop", "STOP IT", "", "HELP", "no", "stopp"] {
            assert_eq!(opt_keyword(w), None, "{w}");
        }
    }
}
