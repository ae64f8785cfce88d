//! SDP offer/answer (RFC 3264) for the one thing Backstop does: a single
//! G.711 audio stream with optional RFC 4733 telephone-event. A small parser
//! for that subset: the session and media connection lines, the first audio
//! `m=` line, its `rtpmap`s and its direction. Everything else is ignored.

use crate::media::g711::Law;
use std::net::{IpAddr, SocketAddr};

/// Media direction attribute, from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }
    /// The direction we answer with.
    pub fn reversed(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            d => d,
        }
    }
    /// Whether the side holding this direction may send media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
}

/// One payload format from an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub payload_type: u8,
    /// Encoding name from `rtpmap`, or the static name for well-known types.
    pub encoding: String,
    pub clock_rate: u32,
}

/// What we need from a remote session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where to send RTP; `None` when the address is 0.0.0.0 (old-style hold) or the port is 0.
    pub rtp_addr: Option<SocketAddr>,
    pub formats: Vec<Format>,
    pub direction: Direction,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP has no audio m= line")]
    NoAudio,
    #[error("SDP has no usable connection address")]
    NoConnection,
    #[error("SDP line is malformed: {0}")]
    Malformed(String),
}

/// The codec choice that an offer/answer exchange settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub law: Law,
    /// The peer's payload type for telephone-event, if both sides have it.
    pub telephone_event: Option<u8>,
}

impl RemoteMedia {
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut session_conn: Option<IpAddr> = None;
        let mut session_dir = Direction::SendRecv;
        let mut media_conn: Option<IpAddr> = None;
        let mut media_dir: Option<Direction> = None;
        let mut port: Option<u16> = None;
        let mut formats: Vec<Format> = Vec::new();
        // 0 = session level, 1 = in first audio m=, 2 = in a later m= section.
        let mut section = 0u8;
        for line in text.lines() {
            let line = line.trim_end();
            let Some((kind, value)) = line.split_once('=') else { continue };
            match (kind, section) {
                ("m", _) => {
                    if section == 0 && value.starts_with("audio ") {
                        section = 1;
                        let mut parts = value.split_whitespace().skip(1);
                        let p = parts.next().ok_or_else(|| SdpError::Malformed(line.into()))?;
                        let p = p.split('/').next().unwrap_or(p);
                        port = Some(p.parse().map_err(|_| SdpError::Malformed(line.into()))?);
                        let _proto = parts.next();
                        for pt in parts {
                            let Ok(pt) = pt.parse::<u8>() else { continue };
                            if pt > 127 {
                                continue;
                            }
                            let (encoding, clock_rate) = static_format(pt);
                            formats.push(Format { payload_type: pt, encoding: encoding.into(), clock_rate });
                        }
                    } else {
                        section = 2;
                    }
                }
                ("c", 0) => session_conn = parse_connection(value),
                ("c", 1) => media_conn = parse_connection(value),
                ("a", 0) => {
                    if let Some(d) = Direction::parse(value) {
                        session_dir = d;
                    }
                }
                ("a", 1) => {
                    if let Some(d) = Direction::parse(value) {
                        media_dir = Some(d);
                    } else if let Some(map) = value.strip_prefix("rtpmap:") {
                        let mut it = map.splitn(2, ' ');
                        let pt = it.next().and_then(|p| p.trim().parse::<u8>().ok());
                        let enc = it.next().unwrap_or("");
                        let mut enc_parts = enc.split('/');
                        let name = enc_parts.next().unwrap_or("").trim();
                        let rate = enc_parts.next().and_then(|r| r.trim().parse::<u32>().ok());
                        if let Some(fmt) = pt.and_then(|pt| formats.iter_mut().find(|f| f.payload_type == pt)) {
                            fmt.encoding = name.to_string();
                            fmt.clock_rate = rate.unwrap_or(fmt.clock_rate);
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(port) = port else { return Err(SdpError::NoAudio) };
        let addr = media_conn.or(session_conn).ok_or(SdpError::NoConnection)?;
        let rtp_addr = if addr.is_unspecified() || port == 0 { None } else { Some(SocketAddr::new(addr, port)) };
        let direction = media_dir.unwrap_or(session_dir);
        Ok(RemoteMedia { rtp_addr, formats, direction })
    }

    /// Choose the codec for our answer to this offer: the first of PCMU/PCMA in
    /// the offer's order, and telephone-event at the payload type offered.
    pub fn choose(&self) -> Option<Negotiated> {
        let law = self.formats.iter().find_map(law_of)?;
        Some(Negotiated { law, telephone_event: self.telephone_event_pt() })
    }

    /// Read the peer's answer to our late offer: the first of our codecs it
    /// kept, by the same rule as [`RemoteMedia::choose`].
    pub fn accept_answer(&self) -> Option<Negotiated> {
        self.choose()
    }

    fn telephone_event_pt(&self) -> Option<u8> {
        self.formats
            .iter()
            .find(|f| f.encoding.eq_ignore_ascii_case("telephone-event") && f.clock_rate == 8000)
            .map(|f| f.payload_type)
    }
}

fn law_of(f: &Format) -> Option<Law> {
    if f.clock_rate != 8000 {
        return None;
    }
    if f.encoding.eq_ignore_ascii_case("PCMU") {
        Some(Law::Pcmu)
    } else if f.encoding.eq_ignore_ascii_case("PCMA") {
        Some(Law::Pcma)
    } else {
        None
    }
}

fn static_format(pt: u8) -> (&'static str, u32) {
    match pt {
        0 => ("PCMU", 8000),
        8 => ("PCMA", 8000),
        3 => ("GSM", 8000),
        9 => ("G722", 8000),
        18 => ("G729", 8000),
        _ => ("", 0),
    }
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut it = value.split_whitespace();
    let _net = it.next()?;
    let _kind = it.next()?;
    let addr = it.next()?;
    let addr = addr.split('/').next()?;
    addr.parse().ok()
}

/// Payload type we offer for telephone-event on a late-offer call.
const OFFER_TELEPHONE_EVENT_PT: u8 = 101;

/// Our side of the session: where we receive RTP, and the `o=` version.
#[derive(Debug, Clone)]
pub struct LocalSession {
    pub session_id: u64,
    pub version: u64,
    pub rtp_addr: SocketAddr,
}

impl LocalSession {
    fn header(&self) -> String {
        let (net, ip) = addr_kind(self.rtp_addr.ip());
        format!(
            "v=0\r\no=backstop {} {} IN {net} {ip}\r\ns=backstop\r\nc=IN {net} {ip}\r\nt=0 0\r\n",
            self.session_id, self.version
        )
    }

    /// An answer carrying the negotiated codec (and telephone-event when offered).
    pub fn answer(&self, neg: &Negotiated, direction: Direction) -> String {
        let pt = neg.law.payload_type();
        let mut s = self.header();
        match neg.telephone_event {
            Some(te) => s.push_str(&format!("m=audio {} RTP/AVP {pt} {te}\r\n", self.rtp_addr.port())),
            None => s.push_str(&format!("m=audio {} RTP/AVP {pt}\r\n", self.rtp_addr.port())),
        }
        s.push_str(&format!("a=rtpmap:{pt} {}/8000\r\n", neg.law.encoding_name()));
        if let Some(te) = neg.telephone_event {
            s.push_str(&format!("a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"));
        }
        s.push_str("a=ptime:20\r\n");
        s.push_str(&format!("a={}\r\n", direction.as_str()));
        s
    }

    /// An offer for a late-offer INVITE: PCMU, PCMA and telephone-event.
    pub fn offer(&self) -> String {
        let te = OFFER_TELEPHONE_EVENT_PT;
        let mut s = self.header();
        s.push_str(&format!("m=audio {} RTP/AVP 0 8 {te}\r\n", self.rtp_addr.port()));
        s.push_str("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n");
        s.push_str(&format!("a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"));
        s.push_str("a=ptime:20\r\na=sendrecv\r\n");
        s
    }
}

fn addr_kind(ip: IpAddr) -> (&'static str, String) {
    match ip {
        IpAddr::V4(v4) => ("IP4", v4.to_string()),
        IpAddr::V6(v6) => ("IP6", v6.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 18 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n\
        m=video 5000 RTP/AVP 31\r\na=rtpmap:31 LPC\r\nc=IN IP4 10.9.9.9\r\n";

    #[test]
    fn picks_first_g711_in_offer_order_and_echoes_event_pt() {
        let m = RemoteMedia::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(m.rtp_addr, Some("10.0.0.1:4000".parse().unwrap()));
        let n = m.choose().unwrap();
        assert_eq!(n.law, Law::Pcma);
        assert_eq!(n.telephone_event, Some(96));
        assert_eq!(m.direction, Direction::SendRecv);
    }

    #[test]
    fn no_common_codec_gives_none() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 9\r\n";
        assert_eq!(RemoteMedia::parse(sdp.as_bytes()).unwrap().choose(), None);
    }

    #[test]
    fn rtpmap_can_rename_a_dynamic_g711() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 99\r\na=rtpmap:99 PCMU/8000\r\n";
        let n = RemoteMedia::parse(sdp.as_bytes()).unwrap().choose().unwrap();
        assert_eq!(n.law, Law::Pcmu);
    }

    #[test]
    fn hold_forms() {
        let sdp = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(RemoteMedia::parse(sdp.as_bytes()).unwrap().rtp_addr, None);
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n";
        let m = RemoteMedia::parse(sdp.as_bytes()).unwrap();
        assert_eq!(m.direction, Direction::SendOnly);
        assert!(!m.direction.reversed().sends());
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n";
        assert_eq!(RemoteMedia::parse(sdp.as_bytes()).unwrap().direction, Direction::Inactive);
    }

    #[test]
    fn missing_audio_or_connection_is_an_error() {
        assert_eq!(RemoteMedia::parse(b"v=0\r\nc=IN IP4 1.2.3.4\r\n"), Err(SdpError::NoAudio));
        assert_eq!(RemoteMedia::parse(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"), Err(SdpError::NoConnection));
        assert!(RemoteMedia::parse(b"m=audio x RTP/AVP 0\r\n").is_err());
    }

    #[test]
    fn answer_and_offer_round_trip_through_our_parser() {
        let local = LocalSession { session_id: 7, version: 1, rtp_addr: "127.0.0.1:20000".parse().unwrap() };
        let neg = Negotiated { law: Law::Pcmu, telephone_event: Some(101) };
        let ans = RemoteMedia::parse(local.answer(&neg, Direction::SendRecv).as_bytes()).unwrap();
        assert_eq!(ans.rtp_addr, Some(local.rtp_addr));
        assert_eq!(ans.choose(), Some(neg));
        let off = RemoteMedia::parse(local.offer().as_bytes()).unwrap();
        assert_eq!(off.formats.len(), 3);
        assert_eq!(off.accept_answer().unwrap().telephone_event, Some(101));
    }
}
