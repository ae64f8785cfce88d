//! Where leads and events go: the outbox (`[outbox]`), the JSON-lines
//! files (`[leads_file]`) and signed webhooks (`[[webhook]]`).

use super::SecretError;
use super::value::{self, HttpUrl};
use crate::sink::event::EventType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Delivered events are kept this long (for `outbox status` and re-delivery), then removed.
    #[serde(rename = "keep_delivered_hours", with = "value::hours")]
    pub keep_delivered: Duration,
    /// A warning is logged when pending deliveries pass 80 % of this.
    pub max_pending: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LeadsFileConfig {
    /// Append each finished lead to DATA_DIR/leads.jsonl.
    pub enabled: bool,
    /// Also append every event (call.missed, lead.completed) to DATA_DIR/events.jsonl.
    pub events: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: HttpUrl,
    /// What the metrics and the logs call it (`webhook:<name>`, a line's
    /// `webhook:<line>:<name>`): up to 32 of `A-Z a-z 0-9 _ . -`. Without
    /// it, `webhook#<hash>`: never the URL, which may hold a secret. The
    /// outbox keys deliveries by the URL, not by this name.
    pub name: Option<String>,
    /// Standard Webhooks signing secret, `whsec_<base64>`; or read it from `secret_env`.
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    /// Event types to send; default all.
    pub events: Option<Vec<EventType>>,
    #[serde(rename = "timeout_ms", with = "value::millis", default = "default_timeout")]
    pub timeout: Duration,
    #[serde(rename = "connect_timeout_ms", with = "value::millis", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    #[serde(rename = "max_retry_interval_s", with = "value::secs", default = "default_webhook_max_retry")]
    pub max_retry_interval: Duration,
    #[serde(rename = "max_age_hours", with = "value::hours", default = "default_max_age")]
    pub max_age: Duration,
    /// Sent as `Authorization: Bearer ...`.
    pub bearer_token: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_webhook_max_retry() -> Duration {
    Duration::from_secs(60)
}
fn default_max_age() -> Duration {
    Duration::from_secs(72 * 3600)
}

impl WebhookConfig {
    /// The longest `name`.
    pub const MAX_NAME: usize = 32;

    /// Whether `name` may be a webhook's name (a label value and a log field as it is).
    pub fn valid_name(name: &str) -> bool {
        (1..=Self::MAX_NAME).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    }

    /// The label of this webhook, on `line` for a line's own: `webhook:<name>`
    /// or `webhook:<line>:<name>`; `None` without a name.
    pub fn label(&self, line: Option<&str>) -> Option<String> {
        let name = self.name.as_deref()?;
        Some(match line {
            Some(line) => format!("webhook:{line}:{name}"),
            None => format!("webhook:{name}"),
        })
    }
    /// The signing secret, from `secret` or the `secret_env` variable.
    pub fn resolved_secret(&self) -> Result<Option<String>, SecretError> {
        match (&self.secret, &self.secret_env) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| SecretError::MissingEnv(var.clone())),
            (None, None) => Ok(None),
        }
    }

    pub fn event_types(&self) -> Vec<EventType> {
        self.events.clone().unwrap_or_else(|| EventType::ALL.to_vec())
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { keep_delivered: Duration::from_secs(24 * 3600), max_pending: 100_000 }
    }
}

impl Default for LeadsFileConfig {
    fn default() -> Self {
        LeadsFileConfig { enabled: true, events: false }
    }
}
