//! The config's value types, each checked once as it is read: durations in
//! the unit their key names (`_ms`, `_secs`, `_s`, `_hours`), address lists
//! that take a single IP or a CIDR range, `sip:` targets, http(s) URLs. A
//! value that does not fit is a deserialization error located at its key;
//! nothing downstream parses these again.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `serde(with = ...)` modules reading a whole number of a unit into a [`Duration`].
macro_rules! duration_unit {
    ($name:ident, $doc:literal, $to:expr) => {
        #[doc = $doc]
        pub mod $name {
            use serde::{Deserialize, Deserializer};
            use std::time::Duration;

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
                let n = u64::deserialize(d)?;
                let to: fn(u64) -> Option<Duration> = $to;
                to(n).ok_or_else(|| serde::de::Error::custom(format!("{n} is too long a duration")))
            }
        }
    };
}

duration_unit!(millis, "Milliseconds.", |n| Some(Duration::from_millis(n)));
duration_unit!(secs, "Seconds.", |n| Some(Duration::from_secs(n)));
duration_unit!(hours, "Hours.", |n| n.checked_mul(3600).map(Duration::from_secs));

/// Seconds, where 0 means off (`None`).
pub mod secs_or_off {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let n = u64::deserialize(d)?;
        Ok((n > 0).then(|| Duration::from_secs(n)))
    }
}

/// A list of networks, each written as a CIDR range or a single address.
pub mod nets {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter().map(|t| parse_net(t).map_err(serde::de::Error::custom)).collect()
    }
}

/// A CIDR range, or a single address as a /32 or /128.
fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR range"))
}

/// Transports a `sip:` target may name with `;transport=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTransport {
    Udp,
    Tcp,
    Tls,
}

impl fmt::Display for TargetTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetTransport::Udp => "udp",
            TargetTransport::Tcp => "tcp",
            TargetTransport::Tls => "tls",
        })
    }
}

/// Why a value in the config is not what its key needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not a SIP URI: {1}")]
    NotSipUri(String, String),
    #[error("{0:?}: only sip: URIs are supported")]
    NotSipScheme(String),
    #[error("{0:?}: unknown transport {1:?} (udp, tcp, tls)")]
    UnknownTransport(String, String),
    #[error("{0:?} is not an http(s) URL")]
    NotHttpUrl(String),
}

/// Where a SIP request goes: host, port and transport of a `sip:` URI
/// (`sip:pbx.example.net:5070;transport=udp`). The host is resolved when
/// it is used (DNS may be down at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTarget {
    pub host: String,
    pub port: u16,
    pub transport: TargetTransport,
    /// As written in the config.
    pub uri: String,
}

impl FromStr for SipTarget {
    type Err = ValueError;

    fn from_str(uri: &str) -> Result<SipTarget, ValueError> {
        let parsed: rsipstack::sip::Uri =
            uri.parse().map_err(|e| ValueError::NotSipUri(uri.to_string(), format!("{e}")))?;
        if !matches!(parsed.scheme, Some(rsipstack::sip::Scheme::Sip) | None) {
            return Err(ValueError::NotSipScheme(uri.to_string()));
        }
        let host = parsed.host_with_port.host.to_string();
        let port = parsed.host_with_port.port.as_ref().map(|p| p.value()).unwrap_or(5060);
        let named = parsed.params.iter().find_map(|p| match p {
            rsipstack::sip::Param::Transport(t) => Some(t.to_string().to_ascii_lowercase()),
            _ => None,
        });
        let transport = match named.as_deref() {
            None | Some("udp") => TargetTransport::Udp,
            Some("tcp") => TargetTransport::Tcp,
            Some("tls") => TargetTransport::Tls,
            Some(other) => return Err(ValueError::UnknownTransport(uri.to_string(), other.to_string())),
        };
        Ok(SipTarget { host: host.trim_matches(['[', ']']).to_string(), port, transport, uri: uri.to_string() })
    }
}

impl<'de> Deserialize<'de> for SipTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SipTarget, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SipTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// A webhook's URL, parsed, and kept as written too: the outbox names a
/// webhook's deliveries by it, so it must not change by normalisation.
/// That it is http or https is checked with the rest of the webhook, so
/// that one run reports the webhook's other problems as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub url: reqwest::Url,
    raw: String,
}

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// http or https, with a host: something a webhook can be delivered to.
    pub fn is_http(&self) -> bool {
        matches!(self.url.scheme(), "http" | "https") && self.url.host().is_some()
    }
}

impl FromStr for HttpUrl {
    type Err = ValueError;

    fn from_str(raw: &str) -> Result<HttpUrl, ValueError> {
        let url = raw.parse::<reqwest::Url>().map_err(|_| ValueError::NotHttpUrl(raw.to_string()))?;
        Ok(HttpUrl { url, raw: raw.to_string() })
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HttpUrl, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_targets() {
        let t: SipTarget = "sip:10.0.0.1;transport=tcp".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port, t.transport), ("10.0.0.1", 5060, TargetTransport::Tcp));
        let t: SipTarget = "sip:[2001:db8::1]:5070".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port, t.transport), ("2001:db8::1", 5070, TargetTransport::Udp));
        assert_eq!(t.to_string(), "sip:[2001:db8::1]:5070");
        assert!(matches!("sips:pbx.example".parse::<SipTarget>(), Err(ValueError::NotSipScheme(_))));
        assert!(matches!("sip:pbx;transport=sctp".parse::<SipTarget>(), Err(ValueError::UnknownTransport(..))));
    }

    #[test]
    fn nets_take_a_single_address_or_a_range() {
        assert_eq!(parse_net("198.51.100.7").unwrap().to_string(), "198.51.100.7/32");
        assert_eq!(parse_net("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert!(parse_net("nope").unwrap_err().contains("\"nope\""));
    }

    #[test]
    fn http_urls_keep_their_spelling() {
        let u: HttpUrl = "http://127.0.0.1:9".parse().unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:9", "not normalised to a trailing slash");
        assert_eq!(u.url.as_str(), "http://127.0.0.1:9/");
        assert!(!"ftp://x".parse::<HttpUrl>().unwrap().is_http());
        assert!("https://".parse::<HttpUrl>().is_err());
        assert!("not a url".parse::<HttpUrl>().is_err());
    }
}
