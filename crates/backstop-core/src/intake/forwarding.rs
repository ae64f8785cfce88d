//! Why a call reached us: the redirection history a PBX or carrier sends,
//! either as Diversion (RFC 5806: the topmost entry is the latest
//! diversion, each with `reason` and `counter`) or as History-Info (RFC 7044:
//! indexed entries; `mp` marks a retarget, e.g. call forwarding, `rc` a
//! registered-contact mapping, and RFC 4458's `cause` URI parameter gives
//! the reason). Both become the same `forwarded` object in the lead.

use crate::sip::message::{NameAddr, Request, split_name_addrs};
use serde::{Deserialize, Serialize};

/// One diversion: who the call was diverting away from, and why. Fields in
/// alphabetical order, as on the wire (see `intake::lead`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hop {
    /// Diversion's `counter` (how many diversions this entry stands for).
    pub counter: Option<u32>,
    /// History-Info's index of the diverting entry.
    pub index: Option<String>,
    pub number: Option<String>,
    /// See [`Forwarded::reason`].
    pub reason: Option<String>,
    pub uri: String,
}

/// Which header told us the call was forwarded: `diversion` or `history-info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardingHeader {
    /// RFC 5806 Diversion.
    Diversion,
    /// RFC 7044 History-Info.
    HistoryInfo,
}

/// Fields in alphabetical order, as on the wire (see `intake::lead`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Forwarded {
    /// Every diversion, oldest first.
    #[serde(default)]
    pub chain: Vec<Hop>,
    /// How many times the call was diverted.
    #[serde(default)]
    pub counter: u32,
    /// The number the call was last forwarded from (the owner's line).
    pub from_number: Option<String>,
    /// The number the caller first dialled.
    pub original_called_number: Option<String>,
    /// `no-answer`, `user-busy`, `unconditional`, `unavailable`, `deflection`,
    /// or the raw value: an open set the network chooses, so a string.
    pub reason: Option<String>,
    /// Which header said so.
    pub source: ForwardingHeader,
}

/// Map a cause code (RFC 4458) to the reason names Diversion uses.
fn cause_reason(cause: &str) -> String {
    match cause {
        "302" => "unconditional",
        "486" | "600" => "user-busy",
        "408" => "no-answer",
        "480" | "487" => "deflection",
        "503" | "404" => "unavailable",
        other => other,
    }
    .to_string()
}

/// A header parameter (after the name-addr), case-insensitive.
fn param(entry: &str, name: &str) -> Option<String> {
    let after = match entry.rfind('>') {
        Some(i) => &entry[i + 1..],
        None => entry.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    after.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A parameter inside the URI (between < and >, before any `?headers`).
fn uri_param(entry: &str, name: &str) -> Option<String> {
    let start = entry.find('<')? + 1;
    let end = entry[start..].find('>')? + start;
    let uri = entry[start..end].split('?').next().unwrap_or("");
    uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The cause in an escaped `?Reason=SIP%3Bcause%3D408` URI header (RFC 7044 §4.2).
fn reason_header_cause(entry: &str) -> Option<String> {
    let start = entry.find('<')? + 1;
    let end = entry[start..].find('>')? + start;
    let headers = entry[start..end].split_once('?')?.1;
    let decoded = headers.replace("%3B", ";").replace("%3b", ";").replace("%3D", "=").replace("%3d", "=");
    let i = decoded.to_ascii_lowercase().find("cause=")? + 6;
    Some(decoded[i..].chars().take_while(|c| c.is_ascii_digit()).collect()).filter(|c: &String| !c.is_empty())
}

fn number(entry: &str) -> (Option<String>, String) {
    match NameAddr::parse(entry) {
        Some(n) => (crate::intake::lead::number_of(&n), n.uri.to_string()),
        None => (None, entry.to_string()),
    }
}

pub fn forwarded(invite: &Request) -> Option<Forwarded> {
    let diversions: Vec<String> = invite.frame.get_all("Diversion").flat_map(split_name_addrs).collect();
    if !diversions.is_empty() {
        // Topmost = latest; the chain is reported oldest first.
        let chain: Vec<Hop> = diversions
            .iter()
            .rev()
            .map(|e| {
                let (number, uri) = number(e);
                let counter = param(e, "counter").and_then(|c| c.parse().ok());
                Hop { number, uri, reason: param(e, "reason"), counter, index: None }
            })
            .collect();
        let last = chain.last().expect("non-empty");
        return Some(Forwarded {
            from_number: last.number.clone(),
            original_called_number: chain[0].number.clone(),
            reason: last.reason.clone(),
            counter: chain.iter().map(|h| h.counter.unwrap_or(1)).sum(),
            source: ForwardingHeader::Diversion,
            chain,
        });
    }
    let entries: Vec<String> = invite.frame.get_all("History-Info").flat_map(split_name_addrs).collect();
    if entries.is_empty() {
        return None;
    }
    let index_of = |e: &String| param(e, "index").unwrap_or_default();
    // A hop is a retarget: an entry with `mp` (the index it was retargeted from) or a `cause`.
    let mut chain = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mp = param(e, "mp");
        let cause = uri_param(e, "cause");
        if mp.is_none() && cause.is_none() {
            continue;
        }
        let from = match &mp {
            Some(idx) => entries.iter().find(|x| &index_of(x) == idx),
            None => i.checked_sub(1).map(|p| &entries[p]),
        };
        let Some(from) = from else { continue };
        let cause = cause.or_else(|| reason_header_cause(from));
        let (number, uri) = number(from);
        chain.push(Hop {
            number,
            uri,
            reason: cause.map(|c| cause_reason(&c)),
            counter: None,
            index: Some(index_of(from)),
        });
    }
    if chain.is_empty() {
        if entries.len() < 2 {
            return None;
        }
        // History without retarget markers: the first entry is where it started.
        let (number, uri) = number(&entries[0]);
        chain.push(Hop { number, uri, reason: None, counter: None, index: Some(index_of(&entries[0])) });
    }
    let last = chain.last().expect("non-empty");
    Some(Forwarded {
        from_number: last.number.clone(),
        original_called_number: number(&entries[0]).0,
        reason: last.reason.clone(),
        counter: chain.len() as u32,
        source: ForwardingHeader::HistoryInfo,
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::testing;

    fn invite(extra: &str) -> Request {
        testing::invite().headers(extra).read()
    }

    #[test]
    fn no_history_means_not_forwarded() {
        assert_eq!(forwarded(&invite("")), None);
        assert_eq!(forwarded(&invite("History-Info: <sip:+15559870000@pbx.example>;index=1\r\n")), None);
    }

    #[test]
    fn a_single_diversion() {
        let f = forwarded(&invite("Diversion: <sip:+15557654321@pbx.example>;reason=no-answer;counter=1\r\n")).unwrap();
        assert_eq!(f.from_number.as_deref(), Some("+15557654321"));
        assert_eq!(f.original_called_number.as_deref(), Some("+15557654321"));
        assert_eq!(
            (f.reason.as_deref(), f.counter, f.source, f.chain.len()),
            (Some("no-answer"), 1, ForwardingHeader::Diversion, 1)
        );
    }

    #[test]
    fn a_diversion_chain_is_reported_oldest_first() {
        // Main line 555-0100 forwards unconditionally to the owner's mobile, which does not answer.
        let f = forwarded(&invite(
            "Diversion: <tel:+15550000200>;reason=no-answer;counter=1\r\n\
             Diversion: \"Main\" <sip:+15550000100@pbx.example;user=phone>;reason=unconditional;counter=2;privacy=off\r\n",
        ))
        .unwrap();
        assert_eq!(f.original_called_number.as_deref(), Some("+15550000100"));
        assert_eq!(f.from_number.as_deref(), Some("+15550000200"));
        assert_eq!(f.reason.as_deref(), Some("no-answer"));
        assert_eq!(f.counter, 3);
        assert_eq!(f.chain[0].reason.as_deref(), Some("unconditional"));
        assert_eq!(f.chain[0].counter, Some(2));
    }

    #[test]
    fn history_info_with_mp_rc_and_cause() {
        // RFC 7044 style: bob's AOR (1) mapped to his registered contact (1.1, rc), which
        // timed out; retargeted (1.2, mp=1) to the overflow with cause 408.
        let f = forwarded(&invite(
            "History-Info: <sip:+15559870000@pbx.example>;index=1, <sip:bob@192.0.2.4?Reason=SIP%3Bcause%3D408>;index=1.1;rc=1\r\n\
             History-Info: <sip:overflow@127.0.0.1;cause=408>;index=1.2;mp=1\r\n",
        ))
        .unwrap();
        assert_eq!(f.source, ForwardingHeader::HistoryInfo);
        assert_eq!(f.from_number.as_deref(), Some("+15559870000"));
        assert_eq!(f.original_called_number.as_deref(), Some("+15559870000"));
        assert_eq!(f.reason.as_deref(), Some("no-answer"));
        assert_eq!(f.counter, 1);
        assert_eq!(f.chain[0].index.as_deref(), Some("1"));
    }

    #[test]
    fn history_info_two_retargets_and_a_reason_header_only_cause() {
        let f = forwarded(&invite(
            "History-Info: <sip:+15550000100@pbx.example?Reason=SIP%3Bcause%3D302>;index=1,\
             <sip:+15550000200@pbx.example?Reason=SIP%3Bcause%3D486>;index=1.1;mp=1,\
             <sip:overflow@127.0.0.1>;index=1.1.1;mp=1.1\r\n",
        ))
        .unwrap();
        assert_eq!(f.counter, 2);
        assert_eq!(
            f.chain.iter().map(|h| h.reason.clone().unwrap()).collect::<Vec<_>>(),
            ["unconditional", "user-busy"]
        );
        assert_eq!(f.from_number.as_deref(), Some("+15550000200"));
        assert_eq!(f.original_called_number.as_deref(), Some("+15550000100"));
        assert_eq!(f.reason.as_deref(), Some("user-busy"));
    }
}
