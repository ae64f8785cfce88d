//! Building what we send: responses, which mirror the request's dialog
//! headers (§8.2.6), and the requests we originate ([`OutgoingRequest`]:
//! REGISTER, and BYE and REFER in a call's dialog, all the same shape).
//! Both are serialised with rsipstack, and both end the same way: our
//! product name, then the body's type and length.

use super::frame::Frame;
use super::name_addr::with_tag;
use crate::sip::{Transport, host_port};
use rsipstack::sip::{
    Headers, Method as SipMethod, Request as SipRequest, Response as SipResponse, StatusCode, Uri, Version,
    headers::make_header,
};
use std::net::SocketAddr;

/// Build a response to a request frame, copying Via (top one replaced by
/// `via_reply`), From, To (with `to_tag` added if it has none), Call-ID and CSeq.
pub fn build_response(
    req: &Frame,
    via_reply: &str,
    code: u16,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    build(req, via_reply, code, to_tag, extra, body, true)
}

/// A response with only the mirrored headers, `extra` and Content-Length (no
/// Server). For sources we cannot verify, whose requests may be spoofed: the
/// answer must not be bigger than the question.
pub fn build_bare_response(
    req: &Frame,
    via_reply: &str,
    code: u16,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
) -> Vec<u8> {
    build(req, via_reply, code, to_tag, extra, None, false)
}

fn build(
    req: &Frame,
    via_reply: &str,
    code: u16,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
    server: bool,
) -> Vec<u8> {
    let mut headers = Headers::default();
    let mut first = true;
    for via in req.get_all("Via") {
        let v = if first { via_reply.to_string() } else { via.to_string() };
        first = false;
        headers.push(make_header("Via", v));
    }
    if let Some(from) = req.get("From") {
        headers.push(make_header("From", from.to_string()));
    }
    if let Some(to) = req.get("To") {
        let to = match to_tag {
            Some(tag) => with_tag(to, tag),
            None => to.to_string(),
        };
        headers.push(make_header("To", to));
    }
    for name in ["Call-ID", "CSeq"] {
        if let Some(v) = req.get(name) {
            headers.push(make_header(name, v.to_string()));
        }
    }
    for (name, value) in extra {
        headers.push(make_header(name, value.clone()));
    }
    let product = server.then_some("Server");
    let body = finish(&mut headers, product, body);
    let response =
        SipResponse { status_code: StatusCode::from(code), wire_reason: None, version: Version::V2, headers, body };
    response.to_bytes()
}

/// The headers every message we send ends with: our product name (as
/// `Server` or `User-Agent`; `None` for none), the body's Content-Type, and
/// Content-Length. Returns the body.
fn finish(headers: &mut Headers, product: Option<&str>, body: Option<(&str, &[u8])>) -> Vec<u8> {
    if let Some(name) = product {
        headers.push(make_header(name, crate::USER_AGENT.to_string()));
    }
    let body = match body {
        Some((content_type, bytes)) => {
            headers.push(make_header("Content-Type", content_type.to_string()));
            bytes.to_vec()
        }
        None => Vec::new(),
    };
    headers.push(make_header("Content-Length", body.len().to_string()));
    body
}

/// The Via branch of a request we originate: the magic cookie, then
/// something unique to its sender (`seed`) and its CSeq.
pub(crate) fn branch(seed: u64, cseq: u32) -> String {
    format!("z9hG4bK{seed:x}{cseq}")
}

/// A request we originate, whole: REGISTER, and the in-dialog BYE and
/// REFER (Route set, Contact, extra headers; a body if any). Written as
///
/// ```text
/// METHOD uri SIP/2.0
/// Via: SIP/2.0/<transport> <sent_by>;branch=<branch>;rport
/// Max-Forwards: 70
/// From, To, Call-ID, CSeq: <cseq> <METHOD>
/// Route (each of `route`), Contact, `headers` in order
/// User-Agent, Content-Type (with a body), Content-Length
/// ```
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: SipMethod,
    /// The Request-URI: the remote target in a dialog, the domain for REGISTER.
    pub uri: Uri,
    /// The transport and address we send from, for our Via.
    pub transport: Transport,
    pub sent_by: SocketAddr,
    /// Names the transaction (see [`branch`]); the response echoes it.
    pub branch: String,
    /// Our side, with our tag.
    pub from: String,
    /// The peer's side, with its tag in a dialog.
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    /// Route headers in order: a dialog's route set (its Record-Route).
    pub route: Vec<String>,
    pub contact: Option<String>,
    /// Further headers, in order: Expires, Authorization, Event, Refer-To...
    pub headers: Vec<(&'static str, String)>,
    /// Content-Type and body.
    pub body: Option<(String, Vec<u8>)>,
}

impl OutgoingRequest {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut headers = Headers::default();
        let via =
            format!("SIP/2.0/{} {};branch={};rport", self.transport.via_name(), host_port(self.sent_by), self.branch);
        headers.push(make_header("Via", via));
        headers.push(make_header("Max-Forwards", "70".into()));
        headers.push(make_header("From", self.from.clone()));
        headers.push(make_header("To", self.to.clone()));
        headers.push(make_header("Call-ID", self.call_id.clone()));
        headers.push(make_header("CSeq", format!("{} {}", self.cseq, self.method)));
        for route in &self.route {
            headers.push(make_header("Route", route.clone()));
        }
        if let Some(contact) = &self.contact {
            headers.push(make_header("Contact", contact.clone()));
        }
        for (name, value) in &self.headers {
            headers.push(make_header(name, value.clone()));
        }
        let body = self.body.as_ref().map(|(ct, b)| (ct.as_str(), b.as_slice()));
        let body = finish(&mut headers, Some("User-Agent"), body);
        SipRequest { method: self.method, uri: self.uri.clone(), version: Version::V2, headers, body }.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{ALLOW, Incoming, read_message};
    use std::str::FromStr;

    const OPTIONS: &str = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1;rport\r\n\
        From: <sip:b@x>;tag=1\r\nTo: <sip:a@y>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn response_copies_the_dialog_headers_and_adds_a_tag() {
        let Incoming::Request(r) = read_message(OPTIONS.as_bytes(), "127.0.0.1:5099".parse().unwrap()) else {
            panic!()
        };
        let bytes = build_response(&r.frame, &r.via_reply, 200, Some("abc"), &[("Allow", ALLOW.into())], None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("To: <sip:a@y>;tag=abc\r\n"), "{text}");
        assert!(text.contains("CSeq: 1 OPTIONS\r\n"));
        assert!(text.contains("Content-Length: 0\r\n\r\n"));
    }

    fn refer() -> OutgoingRequest {
        OutgoingRequest {
            method: SipMethod::Refer,
            uri: Uri::from_str("sip:caller@10.0.0.9:5070").unwrap(),
            transport: Transport::Tcp,
            sent_by: "[2001:db8::1]:5060".parse().unwrap(),
            branch: branch(0xab, 7),
            from: "<sip:owner@pbx>;tag=ours".into(),
            to: "<sip:+15551230001@pbx>;tag=theirs".into(),
            call_id: "d1".into(),
            cseq: 7,
            route: vec!["<sip:p1@10.0.0.1;lr>".into(), "<sip:p2@10.0.0.2;lr>".into()],
            contact: Some("<sip:backstop@[2001:db8::1]:5060;transport=tcp>".into()),
            headers: vec![("Refer-To", "<sip:desk@pbx>".into()), ("Referred-By", "<sip:owner@pbx>".into())],
            body: None,
        }
    }

    #[test]
    fn an_in_dialog_request_is_written_whole_and_in_order() {
        let text = String::from_utf8(refer().to_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "REFER sip:caller@10.0.0.9:5070 SIP/2.0\r\n\
                 Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKab7;rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:owner@pbx>;tag=ours\r\n\
                 To: <sip:+15551230001@pbx>;tag=theirs\r\n\
                 Call-ID: d1\r\n\
                 CSeq: 7 REFER\r\n\
                 Route: <sip:p1@10.0.0.1;lr>\r\n\
                 Route: <sip:p2@10.0.0.2;lr>\r\n\
                 Contact: <sip:backstop@[2001:db8::1]:5060;transport=tcp>\r\n\
                 Refer-To: <sip:desk@pbx>\r\n\
                 Referred-By: <sip:owner@pbx>\r\n\
                 User-Agent: {}\r\n\
                 Content-Length: 0\r\n\r\n",
                crate::USER_AGENT
            )
        );
    }

    #[test]
    fn a_body_gets_its_type_and_length_and_the_request_reads_back() {
        let sipfrag = b"SIP/2.0 200 OK\r\n".to_vec();
        let notify = OutgoingRequest {
            method: SipMethod::Notify,
            transport: Transport::Udp,
            sent_by: "127.0.0.1:5060".parse().unwrap(),
            route: vec![],
            contact: None,
            headers: vec![("Event", "refer".into()), ("Subscription-State", "terminated;reason=noresource".into())],
            body: Some(("message/sipfrag;version=2.0".into(), sipfrag.clone())),
            ..refer()
        };
        let bytes = notify.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("CSeq: 7 NOTIFY\r\n"), "{text}");
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKab7;rport\r\n"), "{text}");
        assert!(
            text.ends_with("Content-Type: message/sipfrag;version=2.0\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n"),
            "{text}"
        );
        // What we send passes our own validation, as the NOTIFY it is.
        let Incoming::Request(r) = read_message(&bytes, "127.0.0.1:5060".parse().unwrap()) else { panic!("{text}") };
        assert_eq!(r.method, crate::sip::message::Method::Notify);
        assert_eq!((r.cseq, r.call_id.as_str(), r.frame.body.as_slice()), (7, "d1", sipfrag.as_slice()));
        assert_eq!(r.via.branch.as_deref(), Some("z9hG4bKab7"));
        assert_eq!(r.to.tag.as_deref(), Some("theirs"));
    }
}
