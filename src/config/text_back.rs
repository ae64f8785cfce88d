//! `[[text_back]]` (and `[[line.text_back]]`): the instant text message to a
//! missed caller, through the Twilio Messages API (or SignalWire's
//! compatible one, by `base_url`). The top-level ones serve every line
//! without its own; the policy that decides whether a caller is texted is
//! `backstop_core::textback`.

use super::SecretError;
use super::value::{self, HttpUrl};
use serde::Deserialize;
use std::time::Duration;

/// The placeholders a body may use.
pub const PLACEHOLDERS: [&str; 2] = ["business", "line"];

/// Who sends the text.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// The Twilio Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`),
    /// or a compatible one at `base_url` (SignalWire's `.../api/laml`).
    #[default]
    Twilio,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextBackConfig {
    #[serde(default)]
    pub provider: Provider,
    /// The account (Twilio `AC...`, SignalWire project id).
    pub account_sid: String,
    /// The API password (Twilio auth token); or read it from `auth_token_env`.
    /// It also checks the signature of the inbound-message webhook.
    pub auth_token: Option<String>,
    pub auth_token_env: Option<String>,
    /// The sending number, E.164.
    pub from: String,
    /// The message; `{business}` and `{line}` are filled in.
    #[serde(default = "default_body")]
    pub body: String,
    /// The name `{business}` stands for; default the line's name.
    pub business: Option<String>,
    /// The API's address: `https://api.twilio.com`, or
    /// `https://<space>.signalwire.com/api/laml` for SignalWire.
    #[serde(default = "default_base_url")]
    pub base_url: HttpUrl,
    /// A number is texted at most once in this many hours (per sending number).
    #[serde(default = "default_once_per_hours")]
    pub once_per_hours: u64,
    #[serde(rename = "timeout_ms", with = "value::millis", default = "default_timeout")]
    pub timeout: Duration,
    #[serde(rename = "connect_timeout_ms", with = "value::millis", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Retries of an unreachable API stop after this long: a late text is no instant text.
    #[serde(rename = "max_age_minutes", with = "minutes", default = "default_max_age")]
    pub max_age: Duration,
}

mod minutes {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let n = u64::deserialize(d)?;
        n.checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is too long a duration")))
    }
}

pub const DEFAULT_BODY: &str =
    "Sorry we missed your call to {business}. We'll call you back shortly. Reply STOP to opt out.";

fn default_body() -> String {
    DEFAULT_BODY.to_string()
}
fn default_base_url() -> HttpUrl {
    "https://api.twilio.com".parse().expect("literal")
}
fn default_once_per_hours() -> u64 {
    24
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

impl TextBackConfig {
    /// The auth token, from `auth_token` or the `auth_token_env` variable.
    pub fn resolved_auth_token(&self) -> Result<String, SecretError> {
        match (&self.auth_token, &self.auth_token_env) {
            (Some(_), Some(_)) => Err(SecretError::Several),
            (Some(t), None) => Ok(t.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| SecretError::MissingEnv(var.clone())),
            (None, None) => Err(SecretError::None),
        }
    }

    /// The message for a call on `line`.
    pub fn render(&self, line: &str) -> String {
        let business = self.business.as_deref().unwrap_or(line);
        self.body.replace("{business}", business).replace("{line}", line)
    }

    /// The once-per window in milliseconds.
    pub fn once_per_ms(&self) -> i64 {
        (self.once_per_hours as i64).saturating_mul(3_600_000)
    }

    /// Problems that span keys, as `(key, message)`, under `key` (`text_back[0]`, `line[1].text_back[0]`).
    pub(super) fn problems(&self, key: &str) -> Vec<(String, String)> {
        let k = |name: &str| format!("{key}.{name}");
        let mut p = Vec::new();
        if backstop_core::textback::textable(&self.from).as_deref() != Some(self.from.as_str()) {
            p.push((k("from"), format!("{:?} is not an E.164 number (+ and the digits, as +15551230000)", self.from)));
        }
        if self.account_sid.is_empty() || !self.account_sid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            p.push((k("account_sid"), format!("{:?} is not an account id", self.account_sid)));
        } else if self.base_url.url.host_str() == Some("api.twilio.com") && !is_twilio_account_sid(&self.account_sid) {
            p.push((
                k("account_sid"),
                format!("{:?} is not a Twilio account SID (AC and 32 hex digits)", self.account_sid),
            ));
        }
        match self.resolved_auth_token() {
            Ok(t) if t.is_empty() => p.push((k("auth_token"), "is empty".into())),
            Ok(_) => {}
            Err(SecretError::None) => p.push((k("auth_token"), "needs auth_token or auth_token_env".into())),
            Err(SecretError::Several) => {
                p.push((k("auth_token"), "give only one of auth_token, auth_token_env".into()))
            }
            Err(e) => p.push((k("auth_token_env"), e.to_string())),
        }
        if self.body.trim().is_empty() {
            p.push((k("body"), "is empty".into()));
        }
        for name in placeholders(&self.body) {
            if !PLACEHOLDERS.contains(&name) {
                p.push((k("body"), format!("unknown placeholder {{{name}}} (known: {{business}}, {{line}})")));
            }
        }
        if self.body.chars().count() > 1600 {
            p.push((k("body"), "longer than 1600 characters, the API's limit".into()));
        }
        if self.business.as_deref().is_some_and(|b| b.trim().is_empty()) {
            p.push((k("business"), "is empty".into()));
        }
        if !self.base_url.is_http() {
            p.push((k("base_url"), value::ValueError::NotHttpUrl(self.base_url.to_string()).to_string()));
        } else if self.base_url.url.query().is_some() {
            p.push((k("base_url"), "must not have a query".into()));
        }
        if self.once_per_hours == 0 || self.once_per_hours > 24 * 366 {
            p.push((k("once_per_hours"), "must be between 1 and 8784 (a year)".into()));
        }
        let minute = Duration::from_secs(60);
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            p.push((k("timeout_ms"), "timeouts must be > 0".into()));
        }
        if self.timeout > minute * 10 || self.connect_timeout > minute * 10 {
            p.push((k("timeout_ms"), "timeouts must be at most 600000 (ten minutes)".into()));
        }
        if self.max_age.is_zero() || self.max_age > minute * 60 * 72 {
            p.push((k("max_age_minutes"), "must be between 1 and 4320 (three days)".into()));
        }
        p
    }
}

/// `AC` and 32 hex digits.
fn is_twilio_account_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("AC") && s[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// The `{name}`s in a body (a `{` with no `}` after it is text).
fn placeholders(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find(['}', '{']) {
            Some(close) if after.as_bytes()[close] == b'}' => {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            Some(close) => rest = &after[close..],
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn parse(extra: &str) -> TextBackConfig {
        toml::from_str(&format!("account_sid = \"{SID}\"\nauth_token = \"t\"\nfrom = \"+15005550006\"\n{extra}"))
            .unwrap()
    }

    #[test]
    fn defaults() {
        let t = parse("");
        assert_eq!(t.provider, Provider::Twilio);
        assert_eq!(t.base_url.to_string(), "https://api.twilio.com");
        assert_eq!(t.once_per_hours, 24);
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(t.max_age, Duration::from_secs(3600));
        assert_eq!(t.body, DEFAULT_BODY);
        assert!(t.problems("text_back[0]").is_empty(), "{:?}", t.problems("text_back[0]"));
        assert_eq!(
            t.render("Acme Plumbing"),
            "Sorry we missed your call to Acme Plumbing. We'll call you back shortly. Reply STOP to opt out."
        );
        let t = parse("business = \"Acme\"\nbody = \"{business} ({line}) will call\"");
        assert_eq!(t.render("north"), "Acme (north) will call");
    }

    #[test]
    fn problems() {
        let keys = |t: &TextBackConfig| t.problems("text_back[0]").into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(&parse("")), Vec::<String>::new());
        let mut t = parse("");
        t.from = "5551230000".into();
        assert_eq!(keys(&t), ["text_back[0].from"]);
        t.from = "+1 555 123 0000".into();
        assert_eq!(keys(&t), ["text_back[0].from"], "E.164 as written, no separators");
        let t = parse("body = \"Hi {name}, {business} here {\"");
        let p = t.problems("text_back[0]");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("{name}"), "{p:?}");
        assert_eq!(keys(&parse("body = \"  \"")), ["text_back[0].body"]);
        assert_eq!(keys(&parse("base_url = \"ftp://x\"")), ["text_back[0].base_url"]);
        assert_eq!(keys(&parse("once_per_hours = 0")), ["text_back[0].once_per_hours"]);
        assert_eq!(keys(&parse("timeout_ms = 0")), ["text_back[0].timeout_ms"]);
        assert_eq!(keys(&parse("max_age_minutes = 0")), ["text_back[0].max_age_minutes"]);
        let mut t = parse("");
        t.account_sid = "AC123".into();
        assert_eq!(keys(&t), ["text_back[0].account_sid"], "a Twilio SID at api.twilio.com");
        // SignalWire's project ids are UUIDs.
        let mut t = parse("base_url = \"https://example.signalwire.com/api/laml\"");
        t.account_sid = "b7ff2f9f-5a2d-4c3e-9f5a-0c6b7b9d8e11".into();
        assert_eq!(keys(&t), Vec::<String>::new());
        t.account_sid = "../x".into();
        assert_eq!(keys(&t), ["text_back[0].account_sid"]);
        let mut t = parse("");
        t.auth_token = None;
        assert_eq!(keys(&t), ["text_back[0].auth_token"]);
        t.auth_token_env = Some("BACKSTOP_TEST_NO_SUCH_VAR".into());
        assert_eq!(keys(&t), ["text_back[0].auth_token_env"]);
        t.auth_token = Some("x".into());
        assert_eq!(keys(&t), ["text_back[0].auth_token"], "both given");
        assert!(
            toml::from_str::<TextBackConfig>("from = \"+15005550006\"\naccount_sid = \"x\"\nprovider = \"nexmo\"")
                .is_err()
        );
    }

    #[test]
    fn placeholders_are_found() {
        assert_eq!(placeholders("a {business} b {line}{x} {"), ["business", "line", "x"]);
        assert_eq!(placeholders("{{business}"), ["business"]);
        assert_eq!(placeholders("no braces"), Vec::<&str>::new());
    }
}
