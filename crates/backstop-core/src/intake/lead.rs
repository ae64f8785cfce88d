//! The lead: one JSON object per call, whatever happened on it.
//!
//! Who called (From, P-Asserted-Identity), who they meant to reach (To), why
//! the call came to us (Diversion, RFC 5806, or History-Info, RFC 7044), when,
//! how it ended and how far the script got. Every call makes one, even one
//! cancelled while ringing: that is still a missed call to return.

use crate::intake::forwarding::{Forwarded, forwarded};
use crate::sip::Transport;
use crate::sip::message::{NameAddr, Request, split_name_addrs};
use serde::Serialize;
use std::time::SystemTime;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Party {
    pub number: Option<String>,
    pub display_name: Option<String>,
    pub uri: String,
}

impl Party {
    fn from_name_addr(n: &NameAddr) -> Party {
        Party { number: number_of(n), display_name: n.display_name.clone(), uri: n.uri.to_string() }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Caller {
    pub number: Option<String>,
    pub display_name: Option<String>,
    pub uri: String,
    /// The network-asserted identity (P-Asserted-Identity), when present.
    pub asserted: Option<Party>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Called {
    pub number: Option<String>,
    pub uri: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lead {
    pub schema_version: u32,
    pub id: String,
    pub call_id: String,
    pub caller: Caller,
    pub called: Called,
    pub forwarded: Option<Forwarded>,
    pub received_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub ended_by: Option<crate::sip::dialog::EndedBy>,
    pub outcome: String,
    /// `udp` or `tcp`.
    pub transport: Transport,
    /// The negotiated codec, once there was one.
    pub codec: Option<String>,
    /// Every key the caller pressed, in order (RFC 4733, SIP INFO or in-band).
    pub dtmf: String,
    /// The caller's address was shown to be real (a listed or loopback source,
    /// TCP, or it acknowledged our answer). A lead without it may come from a
    /// spoofed INVITE: do not text back to it blindly.
    pub source_verified: bool,
    /// The script's answers by step name (see `intake::script::Answer`).
    pub answers: std::collections::BTreeMap<String, crate::intake::script::Answer>,
    /// The whole call's recording (the caller's side), when enabled; relative to the recordings directory.
    pub recording: Option<String>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Lead {
    /// The lead's caller/called/forwarded parts, from the INVITE.
    pub fn from_invite(id: String, invite: &Request, received_at: SystemTime, transport: Transport) -> Lead {
        let asserted = invite
            .frame
            .get("P-Asserted-Identity")
            .and_then(|v| split_name_addrs(v).into_iter().next())
            .and_then(|v| NameAddr::parse(&v))
            .map(|n| Party::from_name_addr(&n));
        let from = Party::from_name_addr(&invite.from);
        let to = Party::from_name_addr(&invite.to);
        Lead {
            schema_version: SCHEMA_VERSION,
            id,
            call_id: invite.call_id.clone(),
            caller: Caller { number: from.number, display_name: from.display_name, uri: from.uri, asserted },
            called: Called { number: to.number, uri: to.uri },
            forwarded: forwarded(invite),
            received_at: rfc3339(received_at),
            answered_at: None,
            ended_at: None,
            duration_ms: None,
            ended_by: None,
            outcome: "not_answered".into(),
            transport,
            codec: None,
            dtmf: String::new(),
            source_verified: false,
            answers: Default::default(),
            recording: None,
        }
    }
}

/// The phone number in a URI: the user part (without visual separators) of a
/// sip/sips URI, or a tel: URI's number.
pub fn number_of(n: &NameAddr) -> Option<String> {
    let uri = n.uri.to_string();
    let user = match uri.strip_prefix("tel:") {
        Some(rest) => rest.to_string(),
        None => n.user()?,
    };
    let user = user.split(';').next().unwrap_or(&user).to_string();
    // Only a dialable user part is a number; `sip:alice@host` has none (its uri says who).
    let cleaned: String = user.chars().filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' ')).collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#') {
        Some(cleaned)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, read_message};

    fn invite(extra: &str) -> Request {
        let msg = format!(
            "INVITE sip:backstop@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: \"Jane Doe\" <sip:+1 (555) 123-4567@carrier.example>;tag=9\r\nTo: <sip:+15559870000@pbx.example>\r\n\
             Call-ID: lead-1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match read_message(msg.as_bytes(), "127.0.0.1:5070".parse().unwrap()) {
            Incoming::Request(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn caller_called_and_pai() {
        let r = invite("P-Asserted-Identity: \"Jane\" <sip:+15551234567@carrier.example>, <tel:+15551234567>\r\n");
        let lead = Lead::from_invite("id".into(), &r, SystemTime::UNIX_EPOCH, Transport::Udp);
        assert_eq!(lead.caller.display_name.as_deref(), Some("Jane Doe"));
        assert_eq!(lead.called.number.as_deref(), Some("+15559870000"));
        assert_eq!(lead.caller.asserted.as_ref().unwrap().number.as_deref(), Some("+15551234567"));
        assert_eq!(lead.received_at, "1970-01-01T00:00:00.000Z");
        assert_eq!(lead.caller.number.as_deref(), Some("+15551234567"), "visual separators are dropped");
        assert_eq!(lead.forwarded, None);
        let json = serde_json::to_value(&lead).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["forwarded"], serde_json::Value::Null);
    }

    #[test]
    fn a_name_is_not_a_number() {
        let msg = "INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:alice@x>;tag=1\r\n\
            To: <tel:+1-555-987-0000>\r\nCall-ID: n1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let Incoming::Request(r) = read_message(msg.as_bytes(), "127.0.0.1:5060".parse().unwrap()) else { panic!() };
        let lead = Lead::from_invite("id".into(), &r, SystemTime::UNIX_EPOCH, Transport::Udp);
        assert_eq!(lead.caller.number, None);
        assert_eq!(lead.caller.uri, "sip:alice@x");
        assert_eq!(lead.called.number.as_deref(), Some("+15559870000"));
    }
}
