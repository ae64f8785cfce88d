//! The label values the metrics export, each spelled in one place. A sink's
//! label is not its name: a webhook's name holds its URL (the outbox keys
//! deliveries by it, so it must not change), and a URL often carries a
//! secret (a Slack or Zapier hook's path, `?token=`, `user:pass@`, and for
//! some endpoints the host itself: `https://<id>.m.pipedream.net`). The
//! label keeps only a short hash of the whole name, which tells two hooks
//! apart and names no part of the URL. Logs name sinks by the same label.

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

/// The exported label of the sink named `name`: `webhook#<hash>` or
/// `webhook:<line>#<hash>` for a webhook (the hash: the first 8 hex digits
/// of SHA-256 of the name; no host, which can be the secret); any other
/// sink's name as it is (`file:…`, `text_back:…` hold no secret).
///
/// ```
/// # use backstop::metrics::sink_label;
/// let label = sink_label("webhook:sales:https://bob:pw@hooks.example/T0/B1?token=x");
/// assert!(label.starts_with("webhook:sales#"), "{label}");
/// assert_eq!(sink_label("file:leads.jsonl"), "file:leads.jsonl");
/// ```
pub fn sink_label(name: &str) -> String {
    let Some(rest) = name.strip_prefix("webhook:") else { return name.to_string() };
    let hash: String = Sha256::digest(name.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect();
    // `webhook:{url}` or `webhook:{line}:{url}`: the URL's scheme ends just before "://".
    match rest.find("://").and_then(|i| rest[..i].rfind(':')) {
        Some(colon) => format!("webhook:{}#{hash}", &rest[..colon]),
        None => format!("webhook#{hash}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_label_names_no_part_of_its_url() {
        let name = "webhook:https://alice:s3cret@hooks.slack.example/services/T0/B1/XyZsecret?token=tok123";
        let label = sink_label(name);
        assert_eq!(label, format!("webhook#{}", label_hash(name)));
        for secret in ["alice", "s3cret", "XyZsecret", "tok123", "services", "slack"] {
            assert!(!label.contains(secret), "{label}");
        }
        // The host can be the secret (a Pipedream endpoint's id).
        let pipedream = sink_label("webhook:https://eo1a2b3c4d5e6f.m.pipedream.net");
        assert!(!pipedream.contains("eo1a2b3c") && !pipedream.contains("pipedream"), "{pipedream}");
        let per_line = "webhook:sales:http://127.0.0.1:8080/hook?k=v";
        assert_eq!(sink_label(per_line), format!("webhook:sales#{}", label_hash(per_line)));
        // Two hooks on one host stay apart; the same name is always the same label.
        assert_ne!(sink_label("webhook:https://h.example/a"), sink_label("webhook:https://h.example/b"));
        assert_eq!(sink_label(name), label);
        assert_eq!(sink_label("text_back:+15550100"), "text_back:+15550100");
    }

    fn label_hash(name: &str) -> String {
        Sha256::digest(name.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}
