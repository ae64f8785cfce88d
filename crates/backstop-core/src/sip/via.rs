//! The top Via header: where responses go (RFC 3261 §18.2.2) and the
//! `received`/`rport` parameters (RFC 3581) that let a caller behind NAT get
//! them. rsipstack's Via parser rejects transports it does not know (the
//! RFC 4475 `transports` message), so this small one reads only what we need.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    /// `Some(None)` for a bare `;rport`, `Some(Some(p))` when it has a value.
    pub rport: Option<Option<u16>>,
    pub received: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed Via: {0}")]
pub struct ViaError(String);

impl Via {
    /// Parse the first via-parm of a Via header value.
    pub fn parse(value: &str) -> Result<Via, ViaError> {
        let err = |m: &str| ViaError(m.to_string());
        let first = value.split(',').next().unwrap_or("").trim();
        // sent-protocol: "SIP" / "2.0" / transport, with optional LWS around the slashes.
        let mut rest = first;
        let mut proto = Vec::new();
        for _ in 0..2 {
            let (p, r) = rest.split_once('/').ok_or_else(|| err("sent-protocol"))?;
            proto.push(p.trim());
            rest = r.trim_start();
        }
        // Any SIP version is read here, so that a request can still get its 505.
        let version_ok = proto[1].split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
        if !proto[0].eq_ignore_ascii_case("SIP") || !version_ok {
            return Err(err("protocol is not SIP"));
        }
        let split = rest.find([' ', '\t']).ok_or_else(|| err("no sent-by"))?;
        let transport = rest[..split].to_ascii_uppercase();
        let rest = rest[split..].trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), Some(&rest[i + 1..])),
            None => (rest.trim(), None),
        };
        let (host, port) = split_host_port(sent_by).ok_or_else(|| err("sent-by"))?;
        let mut via = Via { transport, host, port, branch: None, rport: None, received: None };
        if let Some(params) = params {
            for p in params.split(';') {
                let p = p.trim();
                if p.is_empty() {
                    return Err(err("empty parameter"));
                }
                let (name, val) = match p.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (p, None),
                };
                if name.is_empty() || name.contains([' ', '\t', '"']) {
                    return Err(err("bad parameter name"));
                }
                match name.to_ascii_lowercase().as_str() {
                    "branch" => via.branch = val.map(str::to_string),
                    "received" => via.received = val.map(str::to_string),
                    "rport" => {
                        via.rport = Some(match val {
                            Some(v) => Some(v.parse().map_err(|_| err("rport"))?),
                            None => None,
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(via)
    }

    /// The Via value to echo in a response: `received` added when the sent-by
    /// host is not the packet's source address, `rport` filled in when asked.
    pub fn reply_value(&self, raw: &str, source: SocketAddr) -> String {
        let first = raw.split(',').next().unwrap_or(raw).trim();
        let ip = source.ip().to_string();
        let host_is_source = self.host.trim_matches(['[', ']']).parse::<IpAddr>().ok() == Some(source.ip());
        let mut out = String::with_capacity(first.len() + 40);
        for (i, part) in first.split(';').enumerate() {
            let name = part.split('=').next().unwrap_or("").trim();
            if i > 0 && (name.eq_ignore_ascii_case("rport") || name.eq_ignore_ascii_case("received")) {
                continue;
            }
            if i > 0 {
                out.push(';');
            }
            out.push_str(part);
        }
        if self.rport.is_some() || !host_is_source {
            out.push_str(";received=");
            out.push_str(&ip);
        }
        if self.rport.is_some() {
            out.push_str(&format!(";rport={}", source.port()));
        }
        out
    }

    /// Where a response to an unreliable-transport request goes (RFC 3261
    /// §18.2.2 with RFC 3581): the source address when rport was asked for,
    /// otherwise the source IP and the sent-by port.
    pub fn response_addr(&self, source: SocketAddr) -> SocketAddr {
        if self.rport.is_some() {
            return source;
        }
        let default = if self.transport == "TLS" { 5061 } else { 5060 };
        SocketAddr::new(source.ip(), self.port.unwrap_or(default))
    }
}

fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.trim().is_empty() => None,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h.trim(), Some(p.trim().parse().ok()?)),
        None => (s, None),
    };
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sent_by_and_params() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport, SIP/2.0/TCP x").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch.as_deref(), Some("z9hG4bK1"));
        assert_eq!(v.rport, Some(None));
        let v = Via::parse("SIP / 2.0 / TCP [::1];branch=x").unwrap();
        assert_eq!((v.host.as_str(), v.port), ("[::1]", None));
    }

    #[test]
    fn rejects_empty_params_and_junk() {
        assert!(Via::parse("SIP/2.0/UDP 127.0.2.15;;,;,,").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("HTTP/1.1/UDP a").is_err());
        assert!(Via::parse("SIP/2.0/UDP a:b").is_err());
    }

    #[test]
    fn rport_and_received_follow_rfc3581() {
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let raw = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport";
        let v = Via::parse(raw).unwrap();
        assert_eq!(
            v.reply_value(raw, src),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=203.0.113.9;rport=40000"
        );
        assert_eq!(v.response_addr(src), src);
        let raw = "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1";
        let v = Via::parse(raw).unwrap();
        assert_eq!(v.reply_value(raw, src), format!("{raw};received=203.0.113.9"));
        assert_eq!(v.response_addr(src), "203.0.113.9:5062".parse().unwrap());
        let raw = "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK1";
        let v = Via::parse(raw).unwrap();
        assert_eq!(v.reply_value(raw, src), raw);
        assert_eq!(v.response_addr(src), "203.0.113.9:5060".parse().unwrap());
    }
}
