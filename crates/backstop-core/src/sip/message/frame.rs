//! Framing: where a SIP message starts and ends, and its header fields as
//! text. A datagram is one message (bytes past Content-Length ignored,
//! RFC 3261 §18.3); a stream (TCP) is cut at the blank line plus
//! Content-Length (§18.3 too), by [`stream_message_len`].
//!
//! Ours rather than rsipstack's, which is lenient (it accepts a
//! Content-Length larger than the body) and cannot represent an unknown
//! method at all. Framing never rejects a message for its content: what is
//! wrong with it goes into [`Frame::defects`], for validation to answer 400.

use super::MAX_MESSAGE;

/// One header field as it arrived, with its name in canonical long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// The first line of a message: a Request-Line or a Status-Line.
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
    #[error("unreadable Content-Length")]
    BadContentLength,
}

/// A header name in its long form (`i` and `call-id` are both `Call-ID`).
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

/// RFC 3261 `token`: header names and methods.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// How many leading CRLFs to skip: keep-alives or stream padding (RFC 3261 §7.5).
fn leading_crlfs(data: &[u8]) -> usize {
    data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count()
}

/// Where the header section ends: the index of the blank line's CRLFCRLF.
fn header_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A Content-Length value: digits only, and small enough to be a length
/// at all (a value from the wire must not overflow what it is added to).
fn content_length(value: &str) -> Result<usize, FrameError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::BadContentLength);
    }
    // All digits: the only way left to fail is being too large.
    value.parse().map_err(|_| FrameError::TooLarge)
}

impl Frame {
    /// Frame one message. On a datagram, bytes beyond Content-Length are
    /// ignored (RFC 3261 §18.3); a Content-Length beyond the datagram is a defect.
    pub fn parse(data: &[u8]) -> Result<Frame, FrameError> {
        if data.len() > MAX_MESSAGE {
            return Err(FrameError::TooLarge);
        }
        let data = &data[leading_crlfs(data)..];
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
            match content_length(&cl.value) {
                Ok(n) if n <= available => body_len = n,
                Ok(_) | Err(FrameError::TooLarge) => {
                    defects.push(format!("Content-Length {} exceeds the {available} body bytes received", cl.value))
                }
                Err(_) => defects.push(format!("invalid Content-Length {:?}", cl.value)),
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

    pub(super) fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
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
/// error when the stream cannot be framed (the connection must be closed):
/// a message over [`MAX_MESSAGE`], whatever Content-Length claims, is
/// [`FrameError::TooLarge`].
pub fn stream_message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let skip = leading_crlfs(buf);
    let data = &buf[skip..];
    let Some(end) = header_end(data) else {
        return if data.len() > MAX_MESSAGE { Err(FrameError::TooLarge) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&data[..end]);
    let mut len = 0usize;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && canonical_name(name.trim()) == "Content-Length"
        {
            len = content_length(value.trim())?;
        }
    }
    let message = (end + 4).checked_add(len).filter(|n| *n <= MAX_MESSAGE).ok_or(FrameError::TooLarge)?;
    let total = skip + message;
    Ok(if buf.len() >= total { Some(total) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_and_compact_headers_are_unfolded_and_named_in_long_form() {
        let msg = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1\r\n\
            f: <sip:b@x>\r\n ;tag=1\r\nCSeq: 1\r\n\tOPTIONS\r\nl: 0\r\n\r\n";
        let f = Frame::parse(msg.as_bytes()).unwrap();
        assert_eq!(f.get("From"), Some("<sip:b@x> ;tag=1"));
        assert_eq!(f.get("cseq"), Some("1 OPTIONS"));
        assert_eq!(f.get("Content-Length"), Some("0"));
        assert!(f.defects.is_empty());
    }

    #[test]
    fn content_length_problems_are_defects_not_errors() {
        let head = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: ";
        for (value, defect) in [
            ("10", "exceeds"),
            ("-1", "invalid"),
            ("+0", "invalid"),
            ("18446744073709551615", "exceeds"),
            ("123456789012345678901234567890", "exceeds"),
        ] {
            let f = Frame::parse(format!("{head}{value}\r\n\r\n").as_bytes()).unwrap();
            assert!(f.defects.len() == 1 && f.defects[0].contains(defect), "{value}: {:?}", f.defects);
        }
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
    fn stream_framing_counts_leading_crlfs_and_reads_the_compact_form() {
        let msg = "\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nok";
        assert_eq!(stream_message_len(msg.as_bytes()), Ok(Some(msg.len())));
    }

    #[test]
    fn a_huge_content_length_on_a_stream_is_too_large_not_an_overflow() {
        for value in [
            "18446744073709551615".to_string(),
            (usize::MAX - 3).to_string(),
            "123456789012345678901234567890".to_string(),
            (MAX_MESSAGE).to_string(),
        ] {
            let msg = format!("INVITE sip:a@b SIP/2.0\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(stream_message_len(msg.as_bytes()), Err(FrameError::TooLarge), "{value}");
        }
        let msg = "INVITE sip:a@b SIP/2.0\r\nContent-Length: 4x\r\n\r\n";
        assert_eq!(stream_message_len(msg.as_bytes()), Err(FrameError::BadContentLength));
    }
}
