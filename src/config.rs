//! The TOML configuration: every setting with a default, so an empty file
//! (or none) is a working config, and validation that names the offending
//! key and line. `config/backstop.toml` is the commented manual.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub call: CallConfig,
    pub data: DataConfig,
    pub prompts: PromptsConfig,
    pub log: LogConfig,
    pub outbox: OutboxConfig,
    pub leads_file: LeadsFileConfig,
    pub webhook: Vec<WebhookConfig>,
    pub register: Vec<RegisterConfig>,
    pub intake: IntakeConfig,
    pub recordings: RecordingsConfig,
    pub security: SecurityConfig,
    /// The intake script, in order. Absent: the shipped default script.
    pub step: Vec<backstop_core::intake::program::StepConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeConfig {
    /// Voice activity detector: `earshot` (default) or `webrtc` (libfvad).
    pub vad: VadKind,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum VadKind {
    Webrtc,
    #[default]
    Earshot,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingsConfig {
    /// `pcm16` (8 kHz 16-bit) or `ulaw` (8 kHz G.711 μ-law, half the size).
    pub format: backstop_core::media::recorder::RecordingFormat,
    /// Also record the caller's side of the whole call (`<lead id>-call.wav`).
    pub whole_call: bool,
    /// The whole-call recording stops growing after this many seconds.
    pub max_call_secs: u64,
}

/// Limits and defences against hostile traffic (`[security]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Requests whose User-Agent contains one of these (case-insensitive) are dropped unanswered.
    pub scanner_user_agents: Vec<String>,
    /// Out-of-dialog requests other than new calls (OPTIONS, REGISTER,
    /// SUBSCRIBE...) per second per source address, with this burst; beyond
    /// it they are dropped. Registrars and `[sip] trusted_sources` are
    /// exempt. 0 = no limit.
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// New calls (INVITEs without a To-tag) per second per source address,
    /// with this burst: an allowance of their own, so that a flood of
    /// OPTIONS or REGISTERs from an address never starves its calls, while
    /// an INVITE scanner is still held back. Same exemptions. 0 = no limit.
    pub invites_per_second: f64,
    pub invite_burst: f64,
    /// Larger SIP messages (UDP or TCP) are dropped.
    pub max_message_bytes: usize,
    pub max_headers: usize,
    pub max_header_line_bytes: usize,
    /// Concurrent TCP connections; more are closed at once.
    pub max_tcp_connections: usize,
    /// Addresses that cannot be spoofed here (loopback, by default): treated as
    /// verified, like registrars, `trusted_sources`, TCP peers and any address
    /// that has acknowledged one of our answers. To the others nothing bigger
    /// than what they sent is sent: no 100/180, bare stateless answers.
    pub verified_sources: Vec<String>,
    /// A TCP connection with nothing received for this long is closed. Keep it
    /// above `[call] max_duration_secs`: a call's connection is quiet while the caller talks.
    pub tcp_idle_secs: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            scanner_user_agents: backstop_core::sip::guard::default_scanner_user_agents(),
            requests_per_second: 20.0,
            request_burst: 40.0,
            invites_per_second: 10.0,
            invite_burst: 40.0,
            max_message_bytes: 16384,
            max_headers: 100,
            max_header_line_bytes: 4096,
            max_tcp_connections: 256,
            tcp_idle_secs: 900,
            verified_sources: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

impl SecurityConfig {
    pub fn guard(&self) -> backstop_core::sip::guard::GuardConfig {
        backstop_core::sip::guard::GuardConfig {
            max_message_bytes: self.max_message_bytes,
            max_headers: self.max_headers,
            max_header_line_bytes: self.max_header_line_bytes,
            requests_per_second: self.requests_per_second,
            request_burst: self.request_burst,
            invites_per_second: self.invites_per_second,
            invite_burst: self.invite_burst,
            scanner_user_agents: self.scanner_user_agents.iter().map(|s| s.to_ascii_lowercase()).collect(),
        }
    }
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig { vad: VadKind::Earshot }
    }
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        RecordingsConfig { format: Default::default(), whole_call: false, max_call_secs: 600 }
    }
}

/// One account to register with a PBX or carrier (`[[register]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Where REGISTER goes: `sip:host[:port]`.
    pub registrar: String,
    /// The AOR user: the AOR is sip:username@domain.
    pub username: String,
    /// Default: the registrar's host.
    pub domain: Option<String>,
    /// Default: username.
    pub auth_username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// Send REGISTERs here instead of to the registrar.
    pub outbound_proxy: Option<String>,
    /// First wait after a failure; it doubles up to max_retry_interval_s.
    #[serde(default = "default_retry_interval_s")]
    pub retry_interval_s: u64,
    #[serde(default = "default_max_registration_retry_s")]
    pub max_retry_interval_s: u64,
    /// CRLF keep-alive to the registrar every N seconds while registered; 0 = off.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
}

fn default_expires() -> u32 {
    3600
}
fn default_retry_interval_s() -> u64 {
    5
}
fn default_max_registration_retry_s() -> u64 {
    300
}
fn default_keepalive_s() -> u64 {
    30
}

/// host, port and transport of a `sip:` URI given in the config.
pub fn sip_target(uri: &str) -> Result<(String, u16, String), String> {
    let parsed: rsipstack::sip::Uri = uri.parse().map_err(|e| format!("{uri:?} is not a SIP URI: {e}"))?;
    if !matches!(parsed.scheme, Some(rsipstack::sip::Scheme::Sip) | None) {
        return Err(format!("{uri:?}: only sip: URIs are supported"));
    }
    let host = parsed.host_with_port.host.to_string();
    let port = parsed.host_with_port.port.as_ref().map(|p| p.value()).unwrap_or(5060);
    let transport = parsed
        .params
        .iter()
        .find_map(|p| match p {
            rsipstack::sip::Param::Transport(t) => Some(t.to_string().to_ascii_lowercase()),
            _ => None,
        })
        .unwrap_or_else(|| "udp".into());
    Ok((host.trim_matches(['[', ']']).to_string(), port, transport))
}

impl RegisterConfig {
    pub fn resolved_password(&self) -> Result<String, String> {
        match (&self.password, &self.password_env, &self.password_file) {
            (Some(p), None, None) => Ok(p.clone()),
            (None, Some(var), None) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
            (None, None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("{}: {e}", f.display())),
            (None, None, None) => Err("needs password, password_env or password_file".into()),
            _ => Err("give only one of password, password_env, password_file".into()),
        }
    }

    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| sip_target(&self.registrar).map(|t| t.0).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Delivered events are kept this long (for `outbox status` and re-delivery), then removed.
    pub keep_delivered_hours: u64,
    /// A warning is logged when pending deliveries pass 80 % of this.
    pub max_pending: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { keep_delivered_hours: 24, max_pending: 100_000 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LeadsFileConfig {
    /// Append each finished lead to DATA_DIR/leads.jsonl.
    pub enabled: bool,
    /// Also append every event (call.missed, lead.completed) to DATA_DIR/events.jsonl.
    pub events: bool,
}

impl Default for LeadsFileConfig {
    fn default() -> Self {
        LeadsFileConfig { enabled: true, events: false }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Standard Webhooks signing secret, `whsec_<base64>`; or read it from `secret_env`.
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    /// Event types to send; default all.
    pub events: Option<Vec<String>>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_max_retry_interval_s")]
    pub max_retry_interval_s: u64,
    #[serde(default = "default_max_age_hours")]
    pub max_age_hours: u64,
    /// Sent as `Authorization: Bearer ...`.
    pub bearer_token: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_max_retry_interval_s() -> u64 {
    60
}
fn default_max_age_hours() -> u64 {
    72
}

impl WebhookConfig {
    /// The signing secret, from `secret` or the `secret_env` variable.
    pub fn resolved_secret(&self) -> Result<Option<String>, String> {
        match (&self.secret, &self.secret_env) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(var)) => {
                std::env::var(var).map(Some).map_err(|_| format!("environment variable {var} is not set"))
            }
            (None, None) => Ok(None),
        }
    }

    pub fn event_types(&self) -> Vec<crate::sink::event::EventType> {
        match &self.events {
            None => crate::sink::event::EventType::ALL.to_vec(),
            Some(list) => list.iter().filter_map(|e| crate::sink::event::EventType::parse(e)).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address for SIP over UDP and TCP (same port).
    pub listen: String,
    /// Address to put in Via, Contact and SDP instead of the local one (e.g. a public IP).
    pub advertise: Option<String>,
    /// How long the call rings before we answer.
    pub answer_after_ms: u64,
    /// RFC 3261 T1 and T2.
    pub t1_ms: u64,
    pub t2_ms: u64,
    /// Calls in progress at once; more get 503.
    pub max_calls: usize,
    /// Addresses (CIDR or single IPs) whose INVITEs are answered, besides the
    /// registrars of `[[register]]` accounts. With neither, everyone is answered.
    pub trusted_sources: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    /// RTP ports are taken from this inclusive range (even ports).
    pub port_min: u16,
    pub port_max: u16,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CallConfig {
    /// Hard limit on a call's length; we hang up after it.
    pub max_duration_secs: u64,
    /// On SIGTERM/SIGINT, calls in progress may run this long before we end
    /// them with BYE (new calls get 503 meanwhile). A second signal ends them at once.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Leads go to DIR/leads.jsonl, recordings under DIR/recordings/.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PromptsConfig {
    /// Where prompts live. A step's `prompt = "name"` plays DIR/name.wav;
    /// a name with an extension (`name.ulaw`, `sub/x.wav`) is a file under DIR.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "backstop=debug". RUST_LOG overrides it.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sip: Default::default(),
            rtp: Default::default(),
            call: Default::default(),
            data: Default::default(),
            prompts: Default::default(),
            log: Default::default(),
            outbox: Default::default(),
            leads_file: Default::default(),
            webhook: Vec::new(),
            register: Vec::new(),
            intake: Default::default(),
            recordings: Default::default(),
            security: Default::default(),
            step: backstop_core::intake::program::default_steps(),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: "0.0.0.0:5060".into(),
            advertise: None,
            answer_after_ms: 1000,
            t1_ms: 500,
            t2_ms: 4000,
            max_calls: 1000,
            trusted_sources: Vec::new(),
        }
    }
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig { port_min: 20000, port_max: 29999 }
    }
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig { max_duration_secs: 600, shutdown_grace_secs: 60 }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { dir: "data".into() }
    }
}

impl Default for PromptsConfig {
    fn default() -> Self {
        PromptsConfig { dir: "prompts".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

fn nets(list: &[String]) -> Vec<ipnet::IpNet> {
    list.iter()
        .filter_map(|t| t.parse::<ipnet::IpNet>().ok().or_else(|| t.parse::<IpAddr>().ok().map(ipnet::IpNet::from)))
        .collect()
}

/// A config problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<defaults>".into());
        match self.line {
            Some(l) => write!(f, "{file}:{l}: {}: {}", self.key, self.message),
            None => write!(f, "{file}: {}: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError { file: Some(path.into()), key: "-".into(), line: None, message: e.to_string() }]
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parse and validate config text.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().to_string();
            let key = key_at(text, e.span().map(|s| s.start)).unwrap_or_else(|| "-".into());
            vec![ConfigError { file: file.map(Into::into), key, line, message }]
        })?;
        let errors: Vec<ConfigError> = cfg
            .problems()
            .into_iter()
            .map(|(key, message)| ConfigError { file: file.map(Into::into), line: line_of(text, &key), key, message })
            .collect();
        if errors.is_empty() { Ok(cfg) } else { Err(errors) }
    }

    /// Semantic checks: (dotted key, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.sip.listen.parse::<SocketAddr>().is_err() {
            p.push(("sip.listen".into(), format!("{:?} is not an address like 0.0.0.0:5060", self.sip.listen)));
        }
        if let Some(a) = &self.sip.advertise
            && a.parse::<IpAddr>().is_err()
        {
            p.push(("sip.advertise".into(), format!("{a:?} is not an IP address")));
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            p.push(("sip.t2_ms".into(), "T1 must be > 0 and T2 >= T1".into()));
        }
        if self.sip.answer_after_ms > 60_000 {
            p.push(("sip.answer_after_ms".into(), "must be at most 60000 (a minute of ringing)".into()));
        }
        if self.sip.max_calls == 0 {
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
        if !(1024..=backstop_core::sip::message::MAX_MESSAGE).contains(&sec.max_message_bytes) {
            p.push((
                "security.max_message_bytes".into(),
                format!("between 1024 and {}", backstop_core::sip::message::MAX_MESSAGE),
            ));
        }
        if sec.max_headers < 10 || sec.max_header_line_bytes < 256 {
            p.push(("security.max_headers".into(), "max_headers >= 10 and max_header_line_bytes >= 256".into()));
        }
        for t in &sec.verified_sources {
            if t.parse::<ipnet::IpNet>().is_err() && t.parse::<IpAddr>().is_err() {
                p.push(("security.verified_sources".into(), format!("{t:?} is not an address or CIDR range")));
            }
        }
        if sec.max_tcp_connections == 0 || sec.tcp_idle_secs == 0 {
            p.push(("security.max_tcp_connections".into(), "max_tcp_connections and tcp_idle_secs must be > 0".into()));
        }
        if self.call.shutdown_grace_secs > 3600 {
            p.push(("call.shutdown_grace_secs".into(), "at most 3600".into()));
        }
        if self.call.max_duration_secs == 0 {
            p.push(("call.max_duration_secs".into(), "must be at least 1".into()));
        }
        for (i, w) in self.webhook.iter().enumerate() {
            let key = |k: &str| format!("webhook[{i}].{k}");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                || w.url.parse::<reqwest::Url>().is_err()
            {
                p.push((key("url"), format!("{:?} is not an http(s) URL", w.url)));
            }
            if let Some(events) = &w.events {
                for e in events {
                    if crate::sink::event::EventType::parse(e).is_none() {
                        p.push((
                            key("events"),
                            format!("unknown event {e:?} (call.missed, lead.updated, lead.completed)"),
                        ));
                    }
                }
            }
            match w.resolved_secret() {
                Ok(Some(s)) => {
                    if let Err(e) = crate::sink::webhook::decode_secret(&s) {
                        p.push((key("secret"), e.to_string()));
                    }
                }
                Ok(None) => {}
                Err(e) => p.push((key("secret_env"), e)),
            }
            if w.timeout_ms == 0 || w.max_retry_interval_s == 0 || w.max_age_hours == 0 {
                p.push((key("timeout_ms"), "timeouts, max_retry_interval_s and max_age_hours must be > 0".into()));
            }
            if self.webhook[..i].iter().any(|o| o.url == w.url) {
                p.push((key("url"), format!("{} is configured twice", w.url)));
            }
        }
        for t in &self.sip.trusted_sources {
            if t.parse::<ipnet::IpNet>().is_err() && t.parse::<IpAddr>().is_err() {
                p.push(("sip.trusted_sources".into(), format!("{t:?} is not an address or CIDR range")));
            }
        }
        for (i, r) in self.register.iter().enumerate() {
            let key = |k: &str| format!("register[{i}].{k}");
            match sip_target(&r.registrar) {
                Ok((_, _, t)) if t != "udp" => p.push((
                    key("registrar"),
                    format!("transport={t} is not supported for registration yet (UDP only)"),
                )),
                Ok(_) => {}
                Err(e) => p.push((key("registrar"), e)),
            }
            if let Some(proxy) = &r.outbound_proxy
                && let Err(e) = sip_target(proxy)
            {
                p.push((key("outbound_proxy"), e));
            }
            if r.username.is_empty() || r.username.contains(['@', ' ', ':']) {
                p.push((key("username"), format!("{:?} is not a SIP user name", r.username)));
            }
            if let Err(e) = r.resolved_password() {
                p.push((key("password"), e));
            }
            if r.expires < 10 {
                p.push((key("expires"), "must be at least 10 seconds".into()));
            }
            if r.retry_interval_s == 0 || r.max_retry_interval_s < r.retry_interval_s {
                p.push((key("retry_interval_s"), "must be > 0 and <= max_retry_interval_s".into()));
            }
        }
        if let Err(errs) = self.program() {
            p.extend(errs);
        }
        if self.recordings.max_call_secs == 0 || self.recordings.max_call_secs > 4 * 3600 {
            p.push(("recordings.max_call_secs".into(), "must be between 1 and 14400".into()));
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            p.push(("log.level".into(), format!("{:?} is not a tracing filter", self.log.level)));
        }
        p
    }

    pub fn listen(&self) -> SocketAddr {
        self.sip.listen.parse().expect("validated")
    }

    pub fn advertise(&self) -> Option<IpAddr> {
        self.sip.advertise.as_ref().and_then(|a| a.parse().ok())
    }

    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.sip.t1_ms)
    }

    pub fn t2(&self) -> Duration {
        Duration::from_millis(self.sip.t2_ms)
    }

    /// The file a prompt name refers to.
    pub fn prompt_path(&self, name: &str) -> PathBuf {
        let p = Path::new(name);
        let p = if p.extension().is_some() { p.to_path_buf() } else { p.with_extension("wav") };
        if p.is_absolute() { p } else { self.prompts.dir.join(p) }
    }

    /// The intake script, compiled (validated by `parse`, so this cannot fail after it).
    pub fn program(&self) -> Result<backstop_core::intake::program::Program, Vec<(String, String)>> {
        backstop_core::intake::program::Program::compile(&self.step)
    }

    pub fn leads_path(&self) -> PathBuf {
        self.data.dir.join("leads.jsonl")
    }

    /// INVITEs are checked against trusted sources when accounts or a list exist.
    pub fn trust_enforced(&self) -> bool {
        !self.register.is_empty() || !self.sip.trusted_sources.is_empty()
    }

    pub fn trusted_nets(&self) -> Vec<ipnet::IpNet> {
        nets(&self.sip.trusted_sources)
    }

    pub fn verified_nets(&self) -> Vec<ipnet::IpNet> {
        nets(&self.security.verified_sources)
    }

    pub fn outbox_path(&self) -> PathBuf {
        self.data.dir.join("outbox.db")
    }

    pub fn events_path(&self) -> PathBuf {
        self.data.dir.join("events.jsonl")
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.data.dir.join("recordings")
    }
}

/// The line of `key` (dotted: "table.key", or "table[i].key" for the i-th
/// `[[table]]`) in the TOML text, if written there.
fn line_of(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let (table, index) = match table.split_once('[') {
        Some((t, i)) => (t, i.trim_end_matches(']').parse::<usize>().ok()),
        None => (table, None),
    };
    let mut current = String::new();
    let mut seen: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            current = name.trim().to_string();
            if current == table {
                seen = Some(seen.map_or(0, |n| n + 1));
            }
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_string();
            continue;
        }
        let here = current == table && (index.is_none() || index == seen);
        if let Some((k, _)) = t.split_once('=').filter(|_| here)
            && k.trim() == key
        {
            return Some(i + 1);
        }
    }
    None
}

/// The dotted key written on the line containing byte `offset`.
fn key_at(text: &str, offset: Option<usize>) -> Option<String> {
    let offset = offset?.min(text.len());
    let mut table = String::new();
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    for line in text[..line_start].lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_string();
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string())?;
    Some(if table.is_empty() { key } else { format!("{table}.{key}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(Config::parse("", None).unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_is_valid_and_matches_defaults() {
        let text = include_str!("../config/backstop.toml");
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
        assert_eq!(keys, [("webhook[1].url", Some(5)), ("webhook[1].events", Some(7)), ("webhook[1].secret", Some(6))]);
        let ok = Config::parse("[[webhook]]\nurl = \"https://crm.example.com/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"call.missed\"]\n", None).unwrap();
        assert_eq!(ok.webhook[0].event_types(), [crate::sink::event::EventType::CallMissed]);
        assert_eq!(ok.webhook[0].max_retry_interval_s, 60);
    }

    #[test]
    fn register_accounts_and_trusted_sources() {
        let text = "[sip]\ntrusted_sources = [\"203.0.113.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]\n\n[[register]]\nregistrar = \"sip:pbx.example.net:5070\"\nusername = \"overflow\"\npassword = \"secret\"\n";
        let cfg = Config::parse(text, None).unwrap();
        assert_eq!(cfg.register[0].domain(), "pbx.example.net");
        assert_eq!(cfg.register[0].expires, 3600);
        assert!(cfg.trust_enforced());
        assert_eq!(cfg.trusted_nets().len(), 3);
        assert!(cfg.trusted_nets()[2].contains(&"198.51.100.7".parse::<IpAddr>().unwrap()));
        assert_eq!(sip_target("sip:10.0.0.1;transport=tcp").unwrap(), ("10.0.0.1".into(), 5060, "tcp".into()));
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
}
