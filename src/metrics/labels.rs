//! The label values the metrics export, each spelled in one place. A sink's
//! label is not its name: a webhook's name holds its URL (the outbox keys
//! deliveries by it, so it must not change), and a URL often carries a
//! secret (a Slack or Zapier hook's path, `?token=`, `user:pass@`). The
//! label keeps the host and a short hash of the whole name instead, which
//! tells two hooks on one host apart and names no secret.

use backstop_core::media::dtmf::DtmfSource;
use backstop_core::sip::Transport;
use sha2::{Digest, Sha256};

/// Every transport a call can come over (for series made at start).
pub const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// Every way a key press can come.
pub const DTMF_SOURCES: [DtmfSource; 3] = [DtmfSource::Rfc4733, DtmfSource::SipInfo, DtmfSource::InBand];

pub fn transport(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

pub fn dtmf_source(s: DtmfSource) -> &'static str {
    match s {
        DtmfSource::Rfc4733 => "rfc4733",
        DtmfSource::SipInfo => "sip_info",
        DtmfSource::InBand => "in_band",
    }
}

/// The exported label of the sink named `name`: `webhook:<host>#<hash>` or
/// `webhook:<line>:<host>#<hash>` for a webhook (the hash: the first 8 hex
/// digits of SHA-256 of the name); any other sink's name as it is (`file:…`,
/// `text_back:…` hold no secret).
///
/// ```
/// # use backstop::metrics::sink_label;
/// let label = sink_label("webhook:sales:https://bob:pw@hooks.example/T0/B1?token=x");
/// assert!(label.starts_with("webhook:sales:hooks.example#"), "{label}");
/// assert_eq!(sink_label("file:leads.jsonl"), "file:leads.jsonl");
/// ```
pub fn sink_label(name: &str) -> String {
    let Some(rest) = name.strip_prefix("webhook:") else { return name.to_string() };
    let hash: String = Sha256::digest(name.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect();
    // `webhook:{url}` or `webhook:{line}:{url}`: the URL's scheme ends just before "://".
    let (line, url) = match rest.find("://").and_then(|i| rest[..i].rfind(':')) {
        Some(colon) => (Some(&rest[..colon]), &rest[colon + 1..]),
        None => (None, rest),
    };
    let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string));
    let host = host.unwrap_or_else(|| "unknown".into());
    match line {
        Some(line) => format!("webhook:{line}:{host}#{hash}"),
        None => format!("webhook:{host}#{hash}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_label_names_its_host_and_no_secret() {
        let name = "webhook:https://alice:s3cret@hooks.slack.example/services/T0/B1/XyZsecret?token=tok123";
        let label = sink_label(name);
        assert!(label.starts_with("webhook:hooks.slack.example#"), "{label}");
        assert_eq!(label.len(), "webhook:hooks.slack.example#".len() + 8);
        for secret in ["alice", "s3cret", "XyZsecret", "tok123", "services"] {
            assert!(!label.contains(secret), "{label}");
        }
        let per_line = sink_label("webhook:sales:http://127.0.0.1:8080/hook?k=v");
        assert!(per_line.starts_with("webhook:sales:127.0.0.1#"), "{per_line}");
        // Two hooks on one host stay apart; the same name is always the same label.
        assert_ne!(sink_label("webhook:https://h.example/a"), sink_label("webhook:https://h.example/b"));
        assert_eq!(sink_label(name), label);
        assert_eq!(sink_label("webhook:not a url"), format!("webhook:unknown#{}", &label_hash("webhook:not a url")));
        assert_eq!(sink_label("text_back:+15550100"), "text_back:+15550100");
    }

    fn label_hash(name: &str) -> String {
        Sha256::digest(name.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}
