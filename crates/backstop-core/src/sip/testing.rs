//! Requests and responses for tests, written as a caller would send them
//! and read through [`read_message`] like anything from the network, so a
//! test drives the code with what validation really hands on.
//!
//! ```text
//! let invite = testing::invite().sdp(OFFER).read();
//! let bye = testing::request("BYE", 2).to_tag(Some("local")).read();
//! ```

use crate::sip::message::{Incoming, Request, Response, read_message};

/// Where test requests come from: the caller's UDP address.
pub(crate) const CALLER: &str = "127.0.0.1:5070";

/// A request from [`CALLER`], its parts set one by one; [`RequestText::read`] validates it.
#[derive(Debug, Clone)]
pub(crate) struct RequestText {
    method: String,
    branch: String,
    cseq: u32,
    from: String,
    to: String,
    to_tag: Option<String>,
    call_id: String,
    headers: String,
    body: Option<(String, String)>,
}

/// A request from the caller to `sip:owner@127.0.0.1`: `+15551230001` calling `+15559990000`
/// (From tag `caller`, no To tag), Call-ID `c1`, Contact at [`CALLER`], and a
/// branch made of the method and CSeq.
pub(crate) fn request(method: &str, cseq: u32) -> RequestText {
    RequestText {
        method: method.into(),
        branch: format!("z9hG4bK{method}{cseq}"),
        cseq,
        from: "<sip:+15551230001@127.0.0.1>;tag=caller".into(),
        to: "<sip:+15559990000@127.0.0.1>".into(),
        to_tag: None,
        call_id: "c1".into(),
        headers: format!("Contact: <sip:caller@{CALLER}>\r\nMax-Forwards: 70\r\n"),
        body: None,
    }
}

/// The caller's initial INVITE: CSeq 1, no body until one is given.
pub(crate) fn invite() -> RequestText {
    request("INVITE", 1)
}

impl RequestText {
    pub(crate) fn branch(mut self, branch: &str) -> Self {
        self.branch = branch.into();
        self
    }

    /// The whole From value, tag included.
    pub(crate) fn from(mut self, from: &str) -> Self {
        self.from = from.into();
        self
    }

    /// The To value without its tag (see [`RequestText::to_tag`]).
    pub(crate) fn to(mut self, to: &str) -> Self {
        self.to = to.into();
        self
    }

    /// The To tag: ours for a request inside the dialog, `None` outside it.
    /// (A builder step named after the header, not a conversion.)
    #[allow(clippy::wrong_self_convention)]
    pub(crate) fn to_tag(mut self, tag: Option<&str>) -> Self {
        self.to_tag = tag.map(str::to_string);
        self
    }

    /// More header lines, each ending in CRLF.
    pub(crate) fn headers(mut self, lines: &str) -> Self {
        self.headers.push_str(lines);
        self
    }

    /// A body of `content_type`; an empty one is no body.
    pub(crate) fn body(mut self, content_type: &str, body: &str) -> Self {
        self.body = (!body.is_empty()).then(|| (content_type.to_string(), body.to_string()));
        self
    }

    /// An SDP body; an empty one is no body.
    pub(crate) fn sdp(self, body: &str) -> Self {
        self.body("application/sdp", body)
    }

    /// The request as it goes on the wire.
    pub(crate) fn text(&self) -> String {
        let RequestText { method, branch, cseq, from, to, call_id, headers, .. } = self;
        let to_tag = self.to_tag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        let (content_type, body) = match &self.body {
            Some((ct, body)) => (format!("Content-Type: {ct}\r\n"), body.as_str()),
            None => (String::new(), ""),
        };
        format!(
            "{method} sip:owner@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\nFrom: {from}\r\nTo: {to}{to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{headers}{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// The request as validation hands it on; panics if it is refused.
    pub(crate) fn read(&self) -> Request {
        match read_message(self.text().as_bytes(), CALLER.parse().expect("literal")) {
            Incoming::Request(r) => *r,
            other => panic!("{other:?}"),
        }
    }
}

/// A response from [`CALLER`], as validation hands it on; panics if it is refused.
pub(crate) fn response(text: &str) -> Response {
    match read_message(text.as_bytes(), CALLER.parse().expect("literal")) {
        Incoming::Response(r) => *r,
        other => panic!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Method;

    #[test]
    fn the_default_request_is_a_valid_invite_from_the_caller() {
        let r = invite().sdp("v=0\r\n").read();
        assert_eq!((r.method, r.cseq, r.call_id.as_str()), (Method::Invite, 1, "c1"));
        assert_eq!(r.via.branch.as_deref(), Some("z9hG4bKINVITE1"));
        assert_eq!((r.from.tag.as_deref(), r.to.tag), (Some("caller"), None));
        assert_eq!(r.frame.get("Content-Type"), Some("application/sdp"));
        assert_eq!(r.frame.body, b"v=0\r\n");
        assert_eq!(r.source, CALLER.parse().unwrap());
    }

    #[test]
    fn parts_can_be_replaced() {
        let r = request("INFO", 3)
            .branch("z9hG4bKb")
            .from("\"Jane\" <sip:jane@x>;tag=9")
            .to("<sip:owner@127.0.0.1>")
            .to_tag(Some("local"))
            .headers("Subject: hi\r\n")
            .body("application/dtmf-relay", "Signal=4\r\n")
            .read();
        assert_eq!((r.method, r.cseq), (Method::Info, 3));
        assert_eq!(r.uri.to_string(), "sip:owner@127.0.0.1");
        assert_eq!(r.via.branch.as_deref(), Some("z9hG4bKb"));
        assert_eq!(r.from.display_name.as_deref(), Some("Jane"));
        assert_eq!(r.to.tag.as_deref(), Some("local"));
        assert_eq!(r.frame.get("Subject"), Some("hi"));
        assert_eq!(r.frame.get("Content-Type"), Some("application/dtmf-relay"));
    }
}
