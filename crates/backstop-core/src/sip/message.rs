//! SIP wire messages: framing, our validation, and building responses.
//!
//! rsipstack's parser is lenient (it accepts a Content-Length larger than the
//! body, a CSeq whose method differs from the request's, and a wrong SIP
//! version), and it cannot represent an unknown method at all, so a 501 could
//! not be built from it. So the first pass is ours: split the start line and
//! the (unfolded) header fields, keep every field as text, and check what
//! RFC 3261 requires before anything acts on the request. The URIs and
//! name-addrs inside are then parsed with rsipstack's typed parsers, and the
//! responses we send are serialised with rsipstack's `Response`.

use crate::sip::via::Via;
use rsipstack::sip::{
    Headers, Method as SipMethod, Response as SipResponse, StatusCode, Uri, Version, headers::make_header, typed,
};
use std::net::SocketAddr;
use std::str::FromStr;

/// Largest message we accept, in bytes (UDP datagrams are smaller anyway).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// One header field as it arrived, with its name in canonical long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String, version: String },
    Response { code: u16, reason: String },
}

/// A framed message: start line, header fields in order, and the body.
#[derive(Debug, Clone)]
pub struct Frame {
    pub start: StartLine,
    /// The start line exactly as received, for the strict request-line check.
    pub start_raw: String,
    pub fields: Vec<Field>,
    pub body: Vec<u8>,
    /// Problems found while framing that make the message invalid (400).
    pub defects: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("empty message")]
    Empty,
    #[error("no blank line after the headers")]
    NoHeaderEnd,
    #[error("message exceeds {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("unreadable start line")]
    BadStartLine,
}

fn canonical_name(name: &str) -> String {
    let long = match name.to_ascii_lowercase().as_str() {
        "v" | "via" => "Via",
        "f" | "from" => "From",
        "t" | "to" => "To",
        "i" | "call-id" => "Call-ID",
        "m" | "contact" => "Contact",
        "l" | "content-length" => "Content-Length",
        "c" | "content-type" => "Content-Type",
        "k" | "supported" => "Supported",
        "s" | "subject" => "Subject",
        "e" | "content-encoding" => "Content-Encoding",
        "o" | "event" => "Event",
        "r" | "refer-to" => "Refer-To",
        "b" | "referred-by" => "Referred-By",
        "u" | "allow-events" => "Allow-Events",
        "x" | "session-expires" => "Session-Expires",
        "cseq" => "CSeq",
        "max-forwards" => "Max-Forwards",
        "require" => "Require",
        "accept" => "Accept",
        "allow" => "Allow",
        _ => return name.to_string(),
    };
    long.to_string()
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Where the header section ends: the index of the blank line's CRLFCRLF.
fn header_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

impl Frame {
    /// Frame one message. On a datagram, bytes beyond Content-Length are
    /// ignored (RFC 3261 §18.3); a Content-Length beyond the datagram is a defect.
    pub fn parse(data: &[u8]) -> Result<Frame, FrameError> {
        if data.len() > MAX_MESSAGE {
            return Err(FrameError::TooLarge);
        }
        // Leading CRLFs are keep-alives or stream padding (RFC 3261 §7.5).
        let skip = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        let data = &data[skip..];
        if data.is_empty() {
            return Err(FrameError::Empty);
        }
        let end = header_end(data).ok_or(FrameError::NoHeaderEnd)?;
        let head = String::from_utf8_lossy(&data[..end]);
        let mut lines = head.split("\r\n");
        let start_raw = lines.next().ok_or(FrameError::BadStartLine)?.to_string();
        let start = parse_start_line(&start_raw).ok_or(FrameError::BadStartLine)?;
        let mut defects = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                match fields.last_mut() {
                    Some(f) => {
                        f.value.push(' ');
                        f.value.push_str(line.trim());
                    }
                    None => defects.push("continuation line before any header".into()),
                }
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) => {
                    let name = name.trim_end_matches([' ', '\t']);
                    if !is_token(name) {
                        defects.push(format!("bad header name {name:?}"));
                        continue;
                    }
                    fields.push(Field { name: canonical_name(name), value: value.trim().to_string() });
                }
                None => defects.push(format!("header line without a colon: {line:?}")),
            }
        }
        for f in fields.iter_mut() {
            f.value = f.value.trim().to_string();
        }
        let body_start = end + 4;
        let available = data.len() - body_start;
        let lengths: Vec<&Field> = fields.iter().filter(|f| f.name == "Content-Length").collect();
        let mut body_len = available;
        if lengths.len() > 1 {
            defects.push("more than one Content-Length".into());
        } else if let Some(cl) = lengths.first() {
            match cl.value.parse::<usize>() {
                Ok(n) if cl.value.bytes().all(|b| b.is_ascii_digit()) => {
                    if n > available {
                        defects.push(format!("Content-Length {n} exceeds the {available} body bytes received"));
                    } else {
                        body_len = n;
                    }
                }
                _ => defects.push(format!("invalid Content-Length {:?}", cl.value)),
            }
        }
        let body = data[body_start..body_start + body_len].to_vec();
        Ok(Frame { start, start_raw, fields, body, defects })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.as_str())
    }

    fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    pub fn is_response(&self) -> bool {
        matches!(self.start, StartLine::Response { .. })
    }
}

fn parse_start_line(line: &str) -> Option<StartLine> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line: SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = rest.splitn(3, ' ');
        let version = parts.next()?;
        if version != "2.0" {
            return None;
        }
        let code = parts.next()?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u16 = code.parse().ok()?;
        if !(100..=699).contains(&code) {
            return None;
        }
        return Some(StartLine::Response { code, reason: parts.next().unwrap_or("").to_string() });
    }
    let mut parts = line.splitn(3, ' ');
    let method = parts.next()?.to_string();
    let uri = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("").to_string();
    Some(StartLine::Request { method, uri, version })
}

/// How stream transports (TCP) find where one message ends: the header block
/// plus Content-Length (missing means 0). Returns the message length once the
/// whole message is in `buf`, `Ok(None)` when more bytes are needed, and an
/// error when the stream cannot be framed (the connection must be closed).
pub fn stream_message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    let data = &buf[skip..];
    let Some(end) = header_end(data) else {
        return if data.len() > MAX_MESSAGE { Err(FrameError::TooLarge) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&data[..end]);
    let mut len = 0usize;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                len = value.trim().parse().map_err(|_| FrameError::BadStartLine)?;
            }
        }
    }
    let total = skip + end + 4 + len;
    if total > MAX_MESSAGE + skip {
        return Err(FrameError::TooLarge);
    }
    Ok(if buf.len() >= total { Some(total) } else { None })
}

/// Request methods Backstop acts on. Everything else is answered 405 or 501.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    /// A method SIP defines that we do not implement (REGISTER, MESSAGE, ...): 405.
    NotAllowed(String),
}

/// Methods we list in Allow.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO";
/// Extensions we support (Require/Supported); none yet.
pub const SUPPORTED: &str = "";

/// A name-addr header (From, To, Contact, P-Asserted-Identity) parsed by rsipstack.
#[derive(Debug, Clone)]
pub struct NameAddr {
    pub raw: String,
    pub display_name: Option<String>,
    pub uri: Uri,
    pub tag: Option<String>,
}

impl NameAddr {
    pub fn parse(raw: &str) -> Option<NameAddr> {
        let parsed = typed::From::parse(raw).ok()?;
        let tag = parsed.tag().map(|t| t.to_string());
        Some(NameAddr {
            raw: raw.to_string(),
            display_name: parsed.display_name.filter(|d| !d.is_empty()),
            uri: parsed.uri,
            tag,
        })
    }

    /// The user part, which is the phone number on PSTN-facing calls.
    pub fn user(&self) -> Option<String> {
        self.uri.auth.as_ref().map(|a| a.user.clone())
    }
}

/// A request that passed validation, with the fields we act on parsed.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub frame: Frame,
    pub via: Via,
    /// The top Via as we echo it in responses, with received/rport filled in.
    pub via_reply: String,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: u32,
    pub contact: Option<NameAddr>,
    pub source: SocketAddr,
}

/// What to do with a request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Send this response (already built) back.
    Respond { code: u16, why: String, bytes: Vec<u8>, dest: SocketAddr, call_id: Option<String> },
    /// Nothing can be sent back (no usable Via): log and drop.
    Drop { why: String },
}

/// A response we received (to a request we sent).
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub frame: Frame,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub branch: Option<String>,
}

/// The result of reading one message from the network.
#[derive(Debug)]
pub enum Incoming {
    Request(Box<Request>),
    Response(Box<Response>),
    Rejected(Rejection),
}

/// Frame and validate one message received from `source`.
pub fn read_message(data: &[u8], source: SocketAddr) -> Incoming {
    let frame = match Frame::parse(data) {
        Ok(f) => f,
        Err(e) => return Incoming::Rejected(Rejection::Drop { why: e.to_string() }),
    };
    if let StartLine::Response { code, .. } = frame.start {
        return match read_response(frame, code) {
            Some(r) => Incoming::Response(Box::new(r)),
            None => Incoming::Rejected(Rejection::Drop { why: "malformed response".into() }),
        };
    }
    match validate_request(frame, source) {
        Ok(r) => Incoming::Request(Box::new(r)),
        Err(rej) => Incoming::Rejected(rej),
    }
}

fn read_response(frame: Frame, code: u16) -> Option<Response> {
    if !frame.defects.is_empty() {
        return None;
    }
    let (cseq, method) = parse_cseq(frame.get("CSeq")?)?;
    let call_id = frame.get("Call-ID")?.to_string();
    let via = Via::parse(frame.get("Via")?).ok()?;
    Some(Response { code, call_id, cseq, cseq_method: method, branch: via.branch.clone(), frame })
}

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
fn validate_request(frame: Frame, source: SocketAddr) -> Result<Request, Rejection> {
    let StartLine::Request { method, uri, version } = frame.start.clone() else { unreachable!() };
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
    if !name_addr_well_formed(frame.get("From").unwrap_or_default())
        || !name_addr_well_formed(frame.get("To").unwrap_or_default())
    {
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
        let parsed = if name_addr_well_formed(value) { NameAddr::parse(value) } else { None };
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

/// Whether every quoted-string is closed, honouring backslash escapes.
fn quotes_balanced(value: &str) -> bool {
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// rsipstack's name-addr parser accepts some invalid forms; reject the ones
/// RFC 4475 tests: empty parameters, a bare addr-spec carrying `?headers`,
/// spaces inside <>, an unquoted display name with special characters, and an
/// unbalanced quote.
fn name_addr_well_formed(value: &str) -> bool {
    let value = value.trim();
    if !quotes_balanced(value) {
        return false;
    }
    let (display, rest) = match value.find('<') {
        Some(i) => {
            let Some(close) = value[i..].find('>') else { return false };
            let inner = &value[i + 1..i + close];
            if inner.trim() != inner || inner.is_empty() {
                return false;
            }
            (&value[..i], &value[i + close + 1..])
        }
        None => {
            if value.contains('?') {
                return false;
            }
            ("", value.split_once(';').map(|(_, p)| p).unwrap_or(""))
        }
    };
    let display = display.trim();
    if !display.starts_with('"') && display.contains([',', ';', ':', '?', '@']) {
        return false;
    }
    let params = rest.trim().trim_start_matches(';');
    if rest.trim().starts_with(';') || value.find('<').is_none() {
        if !params.is_empty() && params.split(';').any(|p| p.trim().is_empty()) {
            return false;
        }
    } else if !rest.trim().is_empty() {
        return false;
    }
    true
}

/// Split a header value holding a comma-separated list of name-addrs
/// (commas inside <> or quotes do not split).
pub fn split_name_addrs(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted) = (0i32, false);
    let mut cur = String::new();
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

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
        let mut to = to.to_string();
        if let Some(tag) = to_tag
            && NameAddr::parse(&to).is_some_and(|t| t.tag.is_none())
        {
            to.push_str(";tag=");
            to.push_str(tag);
        }
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
    if server {
        headers.push(make_header("Server", crate::USER_AGENT.to_string()));
    }
    let body_bytes = match body {
        Some((ct, b)) => {
            headers.push(make_header("Content-Type", ct.to_string()));
            b.to_vec()
        }
        None => Vec::new(),
    };
    headers.push(make_header("Content-Length", body_bytes.len().to_string()));
    let response = SipResponse {
        status_code: StatusCode::from(code),
        wire_reason: None,
        version: Version::V2,
        headers,
        body: body_bytes,
    };
    response.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stream_framing_waits_for_the_whole_body() {
        let msg = "INVITE sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\nabcdNEXT";
        assert_eq!(stream_message_len(&msg.as_bytes()[..20]), Ok(None));
        assert_eq!(stream_message_len(&msg.as_bytes()[..45]), Ok(None));
        assert_eq!(stream_message_len(msg.as_bytes()), Ok(Some(msg.len() - 4)));
        assert_eq!(stream_message_len(b"\r\n\r\nX"), Ok(None));
    }

    #[test]
    fn response_copies_the_dialog_headers_and_adds_a_tag() {
        let Incoming::Request(r) = read_message(OPTIONS.as_bytes(), src()) else { panic!() };
        let bytes = build_response(&r.frame, &r.via_reply, 200, Some("abc"), &[("Allow", ALLOW.into())], None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("To: <sip:a@y>;tag=abc\r\n"), "{text}");
        assert!(text.contains("CSeq: 1 OPTIONS\r\n"));
        assert!(text.contains("Content-Length: 0\r\n\r\n"));
    }
}
