//! Validation: the checks RFC 3261 asks of a UAS before it acts on a
//! request (§8.2, in its order), each failure answered with its own code,
//! and the fields a response to one of our requests must have. A request
//! that passes comes out as a [`Request`] with what we act on parsed.

use super::build::build_bare_response;
use super::frame::{Frame, StartLine, is_token};
use super::name_addr::{NameAddr, well_formed};
use super::{ALLOW, Method, Rejection, Request, Response, SUPPORTED};
use crate::sip::via::Via;
use rsipstack::sip::{Method as SipMethod, Uri};
use std::net::SocketAddr;
use std::str::FromStr;

/// A response to one of our requests, or `None` if it lacks what matching it needs.
pub(super) fn read_response(frame: Frame, code: u16) -> Option<Response> {
    if !frame.defects.is_empty() {
        return None;
    }
    let (cseq, method) = parse_cseq(frame.get("CSeq")?)?;
    let call_id = frame.get("Call-ID")?.to_string();
    let via = Via::parse(frame.get("Via")?).ok()?;
    Some(Response { code, call_id, cseq, cseq_method: method, branch: via.branch.clone(), frame })
}

/// `CSeq: <number below 2^31> <method>`.
fn parse_cseq(value: &str) -> Option<(u32, String)> {
    let mut it = value.split([' ', '\t']).filter(|s| !s.is_empty());
    let num = it.next()?;
    let method = it.next()?;
    if it.next().is_some() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = num.parse().ok()?;
    if n >= 1 << 31 {
        return None;
    }
    Some((n, method.to_string()))
}

/// The checks RFC 3261 asks of a UAS before it acts on a request, in order.
pub(super) fn validate_request(frame: Frame, source: SocketAddr) -> Result<Request, Rejection> {
    let StartLine::Request { method, uri, version } = frame.start.clone() else {
        unreachable!("responses are read by read_response")
    };
    // Without a readable Via there is nowhere to send a response.
    let Some(via_raw) = frame.get("Via") else {
        return Err(Rejection::Drop { why: "no Via".into() });
    };
    let via = match Via::parse(via_raw) {
        Ok(v) => v,
        Err(e) => return Err(Rejection::Drop { why: format!("unreadable top Via: {e}") }),
    };
    let via_reply = via.reply_value(via_raw, source);
    let dest = via.response_addr(source);
    let call_id_seen = frame.get("Call-ID").map(str::to_string);
    let reject = |code: u16, why: String, extra: Vec<(&str, String)>| -> Rejection {
        // No Server header: a rejection may go to a stranger, and must stay small.
        let bytes = build_bare_response(&frame, &via_reply, code, None, &extra);
        Rejection::Respond { code, why, bytes, dest, call_id: call_id_seen.clone() }
    };

    // Request-Line: exactly "Method SP Request-URI SP SIP-Version", one space each.
    let version_ok = version.len() > 4
        && version.starts_with("SIP/")
        && version[4..].split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
    if !is_token(&method) || uri.is_empty() || !version_ok || uri.contains([' ', '\t']) {
        return Err(reject(400, format!("malformed Request-Line {:?}", frame.start_raw), vec![]));
    }
    if version != "SIP/2.0" {
        return Err(reject(505, format!("unsupported version {version}"), vec![]));
    }
    if let Some(d) = frame.defects.first() {
        return Err(reject(400, d.clone(), vec![]));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if frame.get(name).is_none() {
            return Err(reject(400, format!("missing {name}"), vec![]));
        }
    }
    for name in ["From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type"] {
        if frame.count(name) > 1 {
            return Err(reject(400, format!("more than one {name}"), vec![]));
        }
    }
    let Some((cseq, cseq_method)) = parse_cseq(frame.get("CSeq").unwrap_or_default()) else {
        return Err(reject(400, "malformed CSeq".into(), vec![]));
    };
    if cseq_method != method {
        return Err(reject(400, format!("CSeq method {cseq_method} differs from {method}"), vec![]));
    }
    if let Some(mf) = frame.get("Max-Forwards")
        && (mf.is_empty() || !mf.bytes().all(|b| b.is_ascii_digit()) || mf.parse::<u32>().map_or(true, |v| v > 255))
    {
        return Err(reject(400, format!("malformed Max-Forwards {mf:?}"), vec![]));
    }
    let Some(from) = NameAddr::parse(frame.get("From").unwrap_or_default()) else {
        return Err(reject(400, "malformed From".into(), vec![]));
    };
    let Some(to) = NameAddr::parse(frame.get("To").unwrap_or_default()) else {
        return Err(reject(400, "malformed To".into(), vec![]));
    };
    if !well_formed(frame.get("From").unwrap_or_default()) || !well_formed(frame.get("To").unwrap_or_default()) {
        return Err(reject(400, "malformed From/To".into(), vec![]));
    }
    let call_id = frame.get("Call-ID").unwrap_or_default().to_string();
    if call_id.is_empty() || call_id.contains([' ', '\t']) {
        return Err(reject(400, "malformed Call-ID".into(), vec![]));
    }
    let mut contact = None;
    for value in frame.get_all("Contact") {
        if value == "*" {
            continue;
        }
        // An addr-spec outside <> cannot carry URI headers or be followed by empty params.
        let parsed = if well_formed(value) { NameAddr::parse(value) } else { None };
        match parsed {
            Some(c) => {
                if contact.is_none() {
                    contact = Some(c);
                }
            }
            None => return Err(reject(400, format!("malformed Contact {value:?}"), vec![])),
        }
    }
    // An unknown method is 501 whatever its Request-URI looks like.
    let method = match method.as_str() {
        "INVITE" => Method::Invite,
        "ACK" => Method::Ack,
        "BYE" => Method::Bye,
        "CANCEL" => Method::Cancel,
        "OPTIONS" => Method::Options,
        "INFO" => Method::Info,
        "REFER" => Method::Refer,
        "NOTIFY" => Method::Notify,
        other => match SipMethod::from_str(other) {
            Ok(_) => Method::NotAllowed(other.to_string()),
            Err(_) => return Err(reject(501, format!("unknown method {other}"), vec![("Allow", ALLOW.into())])),
        },
    };
    // Request-URI scheme, then its syntax.
    let scheme = uri.split(':').next().unwrap_or("").to_ascii_lowercase();
    if uri.starts_with('<') {
        return Err(reject(400, "Request-URI in angle brackets".into(), vec![]));
    }
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel") || !uri.contains(':') {
        return Err(reject(416, format!("unsupported URI scheme {scheme:?}"), vec![]));
    }
    // `?` may appear in the user part; after the host it starts URI headers.
    let host_part = uri.rsplit_once('@').map(|(_, h)| h).unwrap_or(&uri);
    if host_part.contains('?') {
        return Err(reject(400, "Request-URI carries headers".into(), vec![]));
    }
    let parsed_uri = match Uri::from_str(&uri) {
        Ok(u) => u,
        Err(e) => return Err(reject(400, format!("malformed Request-URI: {e}"), vec![])),
    };
    if !matches!(method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<&str> = frame
            .get_all("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty() && !SUPPORTED.split(", ").any(|s| s.eq_ignore_ascii_case(o)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return Err(reject(420, format!("unsupported extension {list}"), vec![("Unsupported", list.clone())]));
        }
    }
    if !frame.body.is_empty() && matches!(method, Method::Invite | Method::Ack) {
        let ct = frame.get("Content-Type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/sdp") {
            return Err(reject(
                415,
                format!("unsupported body type {mime:?}"),
                vec![("Accept", "application/sdp".into())],
            ));
        }
    }
    Ok(Request { method, uri: parsed_uri, via, via_reply, from, to, call_id, cseq, contact, source, frame })
}

#[cfg(test)]
mod tests {
    use crate::sip::message::{Incoming, Method, Rejection, read_message};
    use std::net::SocketAddr;

    fn src() -> SocketAddr {
        "127.0.0.1:5099".parse().unwrap()
    }

    const OPTIONS: &str = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1;rport\r\n\
        From: <sip:b@x>;tag=1\r\nTo: <sip:a@y>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    fn code_of(msg: &str) -> Option<u16> {
        match read_message(msg.as_bytes(), src()) {
            Incoming::Request(_) => Some(200),
            Incoming::Response(_) => None,
            Incoming::Rejected(Rejection::Respond { code, .. }) => Some(code),
            Incoming::Rejected(Rejection::Drop { .. }) => None,
        }
    }

    #[test]
    fn a_good_request_passes() {
        let Incoming::Request(r) = read_message(OPTIONS.as_bytes(), src()) else { panic!() };
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.call_id, "c1");
        assert_eq!(r.from.tag.as_deref(), Some("1"));
        assert!(r.via_reply.contains("rport=5099"));
        assert!(r.via_reply.contains("received=127.0.0.1"));
    }

    #[test]
    fn folded_and_compact_headers_are_read() {
        let msg = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1\r\n\
            f: <sip:b@x>\r\n ;tag=1\r\nt: <sip:a@y>\r\ni: c1\r\nCSeq: 1\r\n\tOPTIONS\r\nl: 0\r\n\r\n";
        let Incoming::Request(r) = read_message(msg.as_bytes(), src()) else { panic!() };
        assert_eq!(r.from.tag.as_deref(), Some("1"));
        assert_eq!(r.cseq, 1);
    }

    #[test]
    fn checks_reject_with_the_right_code() {
        assert_eq!(code_of(&OPTIONS.replace("1 OPTIONS", "1 INVITE")), Some(400));
        assert_eq!(code_of(&OPTIONS.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")), Some(505));
        assert_eq!(code_of(&OPTIONS.replace("Content-Length: 0", "Content-Length: 10")), Some(400));
        assert_eq!(code_of(&OPTIONS.replace("Content-Length: 0", "Content-Length: -1")), Some(400));
        assert_eq!(code_of(&OPTIONS.replace("Call-ID: c1\r\n", "")), Some(400));
        assert_eq!(code_of(&OPTIONS.replace("OPTIONS sip", "FOO sip").replace("1 OPTIONS", "1 FOO")), Some(501));
        assert_eq!(
            code_of(&OPTIONS.replace("OPTIONS sip", "REGISTER sip").replace("1 OPTIONS", "1 REGISTER")),
            Some(200)
        );
        assert_eq!(code_of(&OPTIONS.replace("sip:a@127.0.0.1 SIP", "mailto:a@b SIP")), Some(416));
        assert_eq!(code_of(&OPTIONS.replace("Max-Forwards: 70", "Require: foo")), Some(420));
        assert_eq!(code_of(&OPTIONS.replace("OPTIONS sip:a@127.0.0.1 ", "OPTIONS  sip:a@127.0.0.1 ")), Some(400));
        assert_eq!(code_of(&OPTIONS.replace("Via: ", "X: ")), None);
    }

    #[test]
    fn datagram_bytes_past_content_length_are_ignored() {
        let msg = format!("{OPTIONS}garbage after the message");
        let Incoming::Request(r) = read_message(msg.as_bytes(), src()) else { panic!() };
        assert!(r.frame.body.is_empty());
    }

    #[test]
    fn responses_and_garbage() {
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:c@d>;tag=2\r\nCall-ID: c9\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let Incoming::Response(r) = read_message(resp.as_bytes(), src()) else { panic!() };
        assert_eq!((r.code, r.cseq, r.cseq_method.as_str()), (200, 2, "BYE"));
        assert!(matches!(
            read_message(b"SIP/2.0 4294967301 x\r\n\r\n", src()),
            Incoming::Rejected(Rejection::Drop { .. })
        ));
        assert!(matches!(read_message(b"\r\n\r\n", src()), Incoming::Rejected(Rejection::Drop { .. })));
        assert!(matches!(read_message(&[0xff; 100], src()), Incoming::Rejected(Rejection::Drop { .. })));
    }
}
