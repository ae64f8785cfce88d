//! Reading a config and checking it: the file is deserialized into the
//! typed [`Config`]; a value that does not fit its key is reported at its
//! key and line, dropped, and the rest read again (bounded), so that one
//! run reports every problem. Then the checks that relate keys to each
//! other (ranges, a registrar's transport, secrets, the script) run on the
//! typed values.

use super::locate::Document;
use super::{Config, ConfigError, TargetTransport, ValueError};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// At most this many values are dropped and the file read again.
const MAX_TYPE_ERRORS: usize = 32;

/// Upper bounds on durations: far beyond any sensible setting, and far below
/// what would overflow a deadline computed from them.
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

pub(super) fn parse(text: &str, file: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let error = |key: Option<String>, line: Option<usize>, message: String| ConfigError {
        file: file.map(Into::into),
        key: key.unwrap_or_else(|| "-".into()),
        line,
        message,
    };
    let mut doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err((e, partial)) => {
            let at = e.span().map(|s| s.start);
            return Err(vec![error(
                at.and_then(|o| partial.key_at(o)),
                at.map(|o| partial.line_at(o)),
                e.message().to_string(),
            )]);
        }
    };
    let mut errors = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut renumber = Renumber::default();
    let cfg = loop {
        match Config::deserialize(toml::de::Deserializer::from(doc.root())) {
            Ok(cfg) => break cfg,
            Err(e) => {
                let at = e.span().map(|s| s.start);
                let key = at.and_then(|o| doc.key_at(o));
                // A required value dropped below makes its table incomplete:
                // that is the same problem, already reported; drop the table.
                let follows_a_drop =
                    key.as_ref().is_some_and(|k| dropped.iter().any(|d| d.starts_with(&format!("{k}."))))
                        && e.message().starts_with("missing field");
                if !follows_a_drop {
                    let named = key.as_deref().map(|k| renumber.original(k));
                    errors.push(error(named, at.map(|o| doc.line_at(o)), e.message().to_string()));
                }
                // Read the rest without the value, to report its problems too.
                match key {
                    Some(k) if errors.len() < MAX_TYPE_ERRORS && doc.remove(&k) => {
                        renumber.dropped(&k);
                        dropped.push(k)
                    }
                    _ => return Err(errors),
                }
            }
        }
    };
    errors.extend(cfg.problems().into_iter().map(|(key, message)| {
        let line = doc.line_of(&key);
        error(Some(renumber.original(&key)), line, message)
    }));
    // As a reader meets them: down the file, then what is not written in it.
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    if errors.is_empty() { Ok(cfg) } else { Err(errors) }
}

/// The entries of `[[tables]]` dropped for a bad required value: the later
/// ones move up in what is read, so a key is named by its entry's place in
/// the file, as the user wrote it.
#[derive(Default)]
struct Renumber {
    /// (array, original index of each entry dropped from it).
    dropped: Vec<(String, usize)>,
}

impl Renumber {
    /// `key` (as read now) was an entry of an array of tables, and is gone.
    fn dropped(&mut self, key: &str) {
        if let Some((array, index)) = split_entry(key) {
            let original = self.original_index(array, index);
            self.dropped.push((array.to_string(), original));
        }
    }

    fn original_index(&self, array: &str, now: usize) -> usize {
        let mut gone: Vec<usize> = self.dropped.iter().filter(|(a, _)| a == array).map(|(_, i)| *i).collect();
        gone.sort_unstable();
        let mut original = now;
        for g in gone {
            if g <= original {
                original += 1;
            }
        }
        original
    }

    /// A key as read now, named as the file writes it.
    fn original(&self, key: &str) -> String {
        let (head, rest) = key.split_once('.').map_or((key, None), |(h, r)| (h, Some(r)));
        match split_entry(head) {
            Some((array, now)) => {
                let named = format!("{array}[{}]", self.original_index(array, now));
                rest.map_or(named.clone(), |r| format!("{named}.{r}"))
            }
            None => key.to_string(),
        }
    }
}

/// `webhook[2]` → ("webhook", 2).
fn split_entry(key: &str) -> Option<(&str, usize)> {
    let (array, index) = key.strip_suffix(']')?.split_once('[')?;
    Some((array, index.parse().ok()?))
}

impl Config {
    /// Checks across keys, on the typed values: (dotted key, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let sip = &self.sip;
        if sip.t1.is_zero() || sip.t2 < sip.t1 || sip.t2 > MINUTE {
            p.push(("sip.t2_ms".into(), "T1 must be > 0 and T1 <= T2 <= 60000".into()));
        }
        if sip.answer_after > Duration::from_secs(60) {
            p.push(("sip.answer_after_ms".into(), "must be at most 60000 (a minute of ringing)".into()));
        }
        if sip.max_calls == 0 {
            p.push(("sip.max_calls".into(), "must be at least 1".into()));
        }
        if self.rtp.port_min < 1024 || self.rtp.port_min >= self.rtp.port_max {
            p.push((
                "rtp.port_min".into(),
                format!(
                    "range {}-{} is invalid: need 1024 <= port_min < port_max",
                    self.rtp.port_min, self.rtp.port_max
                ),
            ));
        }
        let sec = &self.security;
        if !(sec.requests_per_second >= 0.0 && sec.request_burst >= 1.0) {
            p.push(("security.request_burst".into(), "requests_per_second >= 0 and request_burst >= 1".into()));
        }
        if !(sec.invites_per_second >= 0.0 && sec.invite_burst >= 1.0) {
            p.push(("security.invite_burst".into(), "invites_per_second >= 0 and invite_burst >= 1".into()));
        }
        let max = backstop_core::sip::message::MAX_MESSAGE;
        if !(1024..=max).contains(&sec.max_message_bytes) {
            p.push(("security.max_message_bytes".into(), format!("between 1024 and {max}")));
        }
        if sec.max_headers < 10 || sec.max_header_line_bytes < 256 {
            p.push(("security.max_headers".into(), "max_headers >= 10 and max_header_line_bytes >= 256".into()));
        }
        if sec.max_tcp_connections == 0 || sec.tcp_idle.is_zero() {
            p.push(("security.max_tcp_connections".into(), "max_tcp_connections and tcp_idle_secs must be > 0".into()));
        }
        if self.call.shutdown_grace > Duration::from_secs(3600) {
            p.push(("call.shutdown_grace_secs".into(), "at most 3600".into()));
        }
        if self.call.max_duration.is_zero() || self.call.max_duration > DAY {
            p.push(("call.max_duration_secs".into(), "must be between 1 and 86400".into()));
        }
        if sec.tcp_idle > WEEK {
            p.push(("security.tcp_idle_secs".into(), "at most 604800 (a week)".into()));
        }
        if self.outbox.keep_delivered > YEAR {
            p.push(("outbox.keep_delivered_hours".into(), "at most 8760 (a year)".into()));
        }
        p.extend(webhook_problems("webhook", &self.webhook));
        for (i, l) in self.line.iter().enumerate() {
            p.extend(webhook_problems(&format!("line[{i}].webhook"), &l.webhook));
        }
        for (i, r) in self.register.iter().enumerate() {
            let key = |k: &str| format!("register[{i}].{k}");
            // REGISTERs go to the outbound proxy when there is one.
            let (hop_key, hop) =
                if r.outbound_proxy.is_some() { ("outbound_proxy", r.next_hop()) } else { ("registrar", &r.registrar) };
            if hop.transport != TargetTransport::Udp {
                p.push((
                    key(hop_key),
                    format!("transport={} is not supported for registration yet (UDP only)", hop.transport),
                ));
            }
            if r.username.is_empty() || r.username.contains(['@', ' ', ':']) {
                p.push((key("username"), format!("{:?} is not a SIP user name", r.username)));
            }
            if let Err(e) = r.resolved_password() {
                p.push((key("password"), e.to_string()));
            }
            if r.expires < 10 {
                p.push((key("expires"), "must be at least 10 seconds".into()));
            }
            if r.retry_interval.is_zero() || r.max_retry_interval < r.retry_interval {
                p.push((key("retry_interval_s"), "must be > 0 and <= max_retry_interval_s".into()));
            }
            if r.max_retry_interval > DAY {
                p.push((key("max_retry_interval_s"), "at most 86400 (a day)".into()));
            }
            if r.keepalive.is_some_and(|k| k > DAY) {
                p.push((key("keepalive_s"), "at most 86400 (a day)".into()));
            }
        }
        p.extend(self.routing_problems());
        p.extend(self.transcribe.iter().flat_map(|t| t.problems()));
        p.extend(self.http.iter().flat_map(|h| h.problems()));
        p.extend(self.callback.problems());
        p.extend(self.store.problems());
        for (i, t) in self.text_back.iter().enumerate() {
            p.extend(t.problems(&format!("text_back[{i}]")));
        }
        for (l, line) in self.line.iter().enumerate() {
            for (i, t) in line.text_back.iter().enumerate() {
                p.extend(t.problems(&format!("line[{l}].text_back[{i}]")));
            }
        }
        if self.recordings.max_call.is_zero() || self.recordings.max_call > Duration::from_secs(4 * 3600) {
            p.push(("recordings.max_call_secs".into(), "must be between 1 and 14400".into()));
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            p.push(("log.level".into(), format!("{:?} is not a tracing filter", self.log.level)));
        }
        p
    }
}

/// The checks of one list of `[[webhook]]`s (top level, or a line's).
fn webhook_problems(array: &str, hooks: &[super::WebhookConfig]) -> Vec<(String, String)> {
    let mut p = Vec::new();
    for (i, w) in hooks.iter().enumerate() {
        let key = |k: &str| format!("{array}[{i}].{k}");
        if !w.url.is_http() {
            p.push((key("url"), ValueError::NotHttpUrl(w.url.to_string()).to_string()));
        }
        match w.resolved_secret() {
            Ok(Some(s)) => {
                if let Err(e) = crate::sink::webhook::decode_secret(&s) {
                    p.push((key("secret"), e.to_string()));
                }
            }
            Ok(None) => {}
            Err(e) => p.push((key("secret_env"), e.to_string())),
        }
        if w.timeout.is_zero() || w.connect_timeout.is_zero() || w.max_retry_interval.is_zero() || w.max_age.is_zero() {
            p.push((key("timeout_ms"), "timeouts, max_retry_interval_s and max_age_hours must be > 0".into()));
        }
        if w.timeout > MINUTE * 10 || w.connect_timeout > MINUTE * 10 {
            p.push((key("timeout_ms"), "timeouts must be at most 600000 (ten minutes)".into()));
        }
        if w.max_retry_interval > DAY {
            p.push((key("max_retry_interval_s"), "at most 86400 (a day)".into()));
        }
        if w.max_age > YEAR {
            p.push((key("max_age_hours"), "at most 8760 (a year)".into()));
        }
        if hooks[..i].iter().any(|o| o.url == w.url) {
            p.push((key("url"), format!("{} is configured twice", w.url)));
        }
        if let Some(name) = &w.name {
            if !super::WebhookConfig::valid_name(name) {
                let max = super::WebhookConfig::MAX_NAME;
                p.push((key("name"), format!("{name:?}: 1 to {max} of A-Z a-z 0-9 _ . -")));
            } else if hooks[..i].iter().any(|o| o.name.as_deref() == Some(name)) {
                p.push((key("name"), format!("{name:?} names two webhooks")));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::event::EventType;
    use std::net::IpAddr;

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(Config::parse("", None).unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_is_valid_and_matches_defaults() {
        let text = include_str!("../../config/backstop.toml");
        assert_eq!(Config::parse(text, None).unwrap(), Config::default());
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let text = "[sip]\nanswer_after_ms = 10\nlisten = \"nonsense\"\n";
        let errs = Config::parse(text, None).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key, "sip.listen");
        assert_eq!(errs[0].line, Some(3));
    }

    #[test]
    fn type_errors_and_unknown_keys_are_located() {
        let errs = Config::parse("[rtp]\nport_min = \"x\"\n", None).unwrap_err();
        assert_eq!((errs[0].key.as_str(), errs[0].line), ("rtp.port_min", Some(2)));
        let errs = Config::parse("[sip]\n\nlisen = \"1.2.3.4:5\"\n", None).unwrap_err();
        assert_eq!(errs[0].line, Some(3));
        assert!(errs[0].message.contains("lisen"), "{}", errs[0].message);
    }

    #[test]
    fn webhook_problems_name_the_entry() {
        let text = "[[webhook]]\nurl = \"http://127.0.0.1:1/ok\"\n\n[[webhook]]\nurl = \"ftp://x\"\nsecret = \"whsec_!!\"\nevents = [\"call.missed\", \"nope\"]\n";
        let errs = Config::parse(text, None).unwrap_err();
        let keys: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("webhook[1].url", Some(5)), ("webhook[1].secret", Some(6)), ("webhook[1].events", Some(7))]);
        let ok = Config::parse("[[webhook]]\nurl = \"https://crm.example.com/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"call.missed\"]\n", None).unwrap();
        assert_eq!(ok.webhook[0].event_types(), [EventType::CallMissed]);
        assert_eq!(ok.webhook[0].max_retry_interval, Duration::from_secs(60));
        assert_eq!(ok.webhook[0].label(None), None);
    }

    #[test]
    fn a_webhook_name_is_short_and_plain_and_names_one_webhook() {
        let hook =
            |name: &str, path: &str| format!("[[webhook]]\nurl = \"https://h.example/{path}\"\nname = \"{name}\"\n");
        let ok = Config::parse(&format!("{}{}", hook("crm", "a"), hook("slack.ops-2_b", "b")), None).unwrap();
        assert_eq!(ok.webhook[0].label(None).as_deref(), Some("webhook:crm"));
        assert_eq!(ok.webhook[1].label(Some("sales")).as_deref(), Some("webhook:sales:slack.ops-2_b"));
        for bad in ["", "has space", "tok=en", "a/b", &"x".repeat(33)] {
            let errs = Config::parse(&hook(bad, "a"), None).unwrap_err();
            assert_eq!((errs[0].key.as_str(), errs[0].line), ("webhook[0].name", Some(3)), "{bad:?}: {errs:?}");
        }
        let errs = Config::parse(&format!("{}{}", hook("crm", "a"), hook("crm", "b")), None).unwrap_err();
        assert_eq!(errs[0].key, "webhook[1].name");
        assert!(errs[0].message.contains("names two webhooks"), "{}", errs[0].message);
    }

    #[test]
    fn register_accounts_and_trusted_sources() {
        let text = "[sip]\ntrusted_sources = [\"203.0.113.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]\n\n[[register]]\nregistrar = \"sip:pbx.example.net:5070\"\nusername = \"overflow\"\npassword = \"secret\"\n";
        let cfg = Config::parse(text, None).unwrap();
        assert_eq!(cfg.register[0].domain(), "pbx.example.net");
        assert_eq!(cfg.register[0].expires, 3600);
        assert!(cfg.trust_enforced());
        assert_eq!(cfg.sip.trusted_sources.len(), 3);
        assert!(cfg.sip.trusted_sources[2].contains(&"198.51.100.7".parse::<IpAddr>().unwrap()));
        let bad = "[sip]\ntrusted_sources = [\"nope\"]\n[[register]]\nregistrar = \"sip:x;transport=tcp\"\nusername = \"a@b\"\n";
        let errs = Config::parse(bad, None).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["sip.trusted_sources", "register[0].registrar", "register[0].username", "register[0].password"]
        );
        assert_eq!(errs[1].line, Some(4));
    }

    #[test]
    fn range_check() {
        let errs = Config::parse("[rtp]\nport_min = 30000\nport_max = 20000\n", None).unwrap_err();
        assert_eq!((errs[0].key.as_str(), errs[0].line), ("rtp.port_min", Some(2)));
    }

    /// Values arrive typed: durations in their key's unit, 0 keep-alive as off,
    /// and every type problem of a file in one report, each at its line.
    #[test]
    fn values_are_typed_once_and_every_type_error_is_reported() {
        let text = "[sip]\nanswer_after_ms = 250\n[call]\nshutdown_grace_secs = 5\n[[register]]\nregistrar = \"sip:pbx\"\nusername = \"u\"\npassword = \"p\"\nkeepalive_s = 0\n";
        let cfg = Config::parse(text, None).unwrap();
        assert_eq!(cfg.sip.answer_after, Duration::from_millis(250));
        assert_eq!(cfg.call.shutdown_grace, Duration::from_secs(5));
        assert_eq!(cfg.register[0].keepalive, None);
        assert_eq!(cfg.register[0].next_hop().port, 5060);
        let text = "[sip]\nlisten = \"x\"\nadvertise = \"not-an-ip\"\nt1_ms = -1\n[security]\nverified_sources = [\"10.0.0.0/8\", \"bad\"]\n";
        let errs = Config::parse(text, None).unwrap_err();
        let keys: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            [
                ("sip.listen", Some(2)),
                ("sip.advertise", Some(3)),
                ("sip.t1_ms", Some(4)),
                ("security.verified_sources", Some(6))
            ]
        );
        assert!(errs[3].message.contains("\"bad\""), "{}", errs[3].message);
    }

    #[test]
    fn a_syntax_error_is_located() {
        let errs = Config::parse("[sip]\nmax_calls = 10\nlisten = \"0.0.0.0:5060\n", None).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
    }

    /// A required value that does not fit is reported once, and the rest of
    /// the file is still checked.
    #[test]
    fn a_bad_required_value_is_reported_once() {
        let text = "[[register]]\nregistrar = \"mailto:x\"\nusername = \"u\"\npassword = \"p\"\n[rtp]\nport_min = 30000\nport_max = 20000\n";
        let errs = Config::parse(text, None).unwrap_err();
        let keys: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("register[0].registrar", Some(2)), ("rtp.port_min", Some(6))]);
    }

    /// An entry dropped for a bad required value does not shift the names of
    /// the entries after it.
    #[test]
    fn entries_after_a_dropped_one_keep_their_names() {
        let text = "[[register]]\nregistrar = \"mailto:x\"\nusername = \"u\"\npassword = \"p\"\n\n\
                    [[register]]\nregistrar = \"sip:pbx\"\nusername = \"a@b\"\npassword = \"p\"\n";
        let errs = Config::parse(text, None).unwrap_err();
        let keys: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("register[0].registrar", Some(2)), ("register[1].username", Some(8))]);
        let mut r = Renumber::default();
        r.dropped("step[1]");
        r.dropped("step[1]");
        assert_eq!(r.original("step[1].name"), "step[3].name", "two dropped, later ones named as written");
        assert_eq!(r.original("step[0]"), "step[0]");
        assert_eq!(r.original("sip.listen"), "sip.listen");
    }

    #[test]
    fn durations_beyond_reason_are_refused() {
        let text = "[call]\nmax_duration_secs = 18446744073709551615\n[[register]]\nregistrar = \"sip:pbx\"\n\
                    outbound_proxy = \"sip:proxy;transport=tcp\"\nusername = \"u\"\npassword = \"p\"\nmax_retry_interval_s = 9999999\n";
        let errs = Config::parse(text, None).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["call.max_duration_secs", "register[0].outbound_proxy", "register[0].max_retry_interval_s"]);
    }
}
