//! Building the responses we send: they mirror the request's dialog
//! headers (§8.2.6), and are serialised with rsipstack.

use super::frame::Frame;
use super::name_addr::with_tag;
use rsipstack::sip::{Headers, Response as SipResponse, StatusCode, Version, headers::make_header};

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

/// The headers a response ends with: our product name (as `Server`; `None`
/// for none), the body's Content-Type, and Content-Length. Returns the body.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{ALLOW, Incoming, read_message};

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
}
