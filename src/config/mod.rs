//! The TOML configuration, typed once: every setting has a default, so an
//! empty file (or none) is a working config; addresses, durations, URIs and
//! kinds are read into their types as the file is read ([`value`]), and the
//! checks that span keys run after ([`validate`]). Every problem names the
//! file, the key and its line, found from toml's spans ([`locate`]).
//! `config/backstop.toml` is the commented manual.

mod callback;
mod delivery;
mod http;
mod locate;
mod routing;
mod sip;
mod store;
mod text_back;
mod transcribe;
mod validate;
mod value;

use backstop_core::intake::program::{Program, StepConfig};
use backstop_core::media::recorder::RecordingFormat;
use backstop_core::route::junk::JunkConfig;
use backstop_core::route::schedule::ScheduleConfig;
pub use callback::CallbackConfig;
pub use delivery::{LeadsFileConfig, OutboxConfig, WebhookConfig};
pub use http::{HttpConfig, TokenConfig, TokenScope};
pub use routing::{LineConfig, LinePlan, compile_schedule};
use serde::Deserialize;
pub use sip::{CallConfig, RegisterConfig, RtpConfig, SecurityConfig, SipConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use store::{RecordingsStore, SharedStore, StoreConfig};
pub use text_back::TextBackConfig;
pub use transcribe::{EngineKind, TranscribeConfig};
pub use value::{HttpUrl, SipTarget, TargetTransport, ValueError};

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
    pub step: Vec<StepConfig>,
    /// Business hours of the default line, and of lines without their own.
    pub schedule: ScheduleConfig,
    /// Junk rules of the default line, and of lines without their own.
    pub junk: JunkConfig,
    /// The lines this agent answers for, tried in order.
    pub line: Vec<LineConfig>,
    /// Transcripts of the voice answers; absent: none.
    pub transcribe: Option<TranscribeConfig>,
    /// The HTTP face (inbox, API, recording links); absent: off.
    pub http: Option<HttpConfig>,
    /// The callback clock.
    pub callback: CallbackConfig,
    /// Instant text-backs to missed callers, for every line without its own.
    pub text_back: Vec<TextBackConfig>,
    /// Prometheus metrics and health checks, when there is no `[http]` face.
    pub metrics: MetricsConfig,
    /// PostgreSQL as a cluster's shared store; absent: this agent's SQLite alone.
    pub store: StoreConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/healthz` and `/readyz` here (like
    /// "127.0.0.1:9464"). With `[http]` configured they are served there
    /// as well; without either, nowhere.
    pub listen: Option<std::net::SocketAddr>,
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
    /// `text` (one readable line per event) or `json` (one JSON object per
    /// line, for log shippers).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A secret or password that could not be read from where the config says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("{0}: {1}")]
    File(PathBuf, String),
    #[error("needs password, password_env or password_file")]
    None,
    #[error("give only one of password, password_env, password_file")]
    Several,
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
    pub format: RecordingFormat,
    /// Also record the caller's side of the whole call (`<lead id>-call.wav`).
    pub whole_call: bool,
    /// The whole-call recording stops growing after this long.
    #[serde(rename = "max_call_secs", with = "value::secs")]
    pub max_call: Duration,
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
            schedule: Default::default(),
            junk: Default::default(),
            line: Vec::new(),
            transcribe: None,
            http: None,
            callback: Default::default(),
            text_back: Vec::new(),
            metrics: MetricsConfig::default(),
            store: StoreConfig::default(),
        }
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
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig { vad: VadKind::Earshot }
    }
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        RecordingsConfig { format: Default::default(), whole_call: false, max_call: Duration::from_secs(600) }
    }
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

/// Every problem found in a config file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError { file: Some(path.into()), key: "-".into(), line: None, message: e.to_string() }]
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parse and validate config text: every problem, each with its key and line.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
        validate::parse(text, file)
    }

    /// The file a prompt name refers to.
    pub fn prompt_path(&self, name: &str) -> PathBuf {
        Config::prompt_path_in(&self.prompts.dir, name)
    }

    /// The file a prompt name refers to in a prompts directory: `name.wav`,
    /// or the name itself when it has an extension.
    pub fn prompt_path_in(dir: &Path, name: &str) -> PathBuf {
        let p = Path::new(name);
        let p = if p.extension().is_some() { p.to_path_buf() } else { p.with_extension("wav") };
        if p.is_absolute() { p } else { dir.join(p) }
    }

    /// The default line's intake script, compiled (validated by `parse`, so this cannot fail after it).
    pub fn program(&self) -> Result<Program, Vec<(String, String)>> {
        Program::compile(&self.step)
    }

    pub fn leads_path(&self) -> PathBuf {
        self.data.dir.join("leads.jsonl")
    }

    /// INVITEs are checked against trusted sources when accounts or a list exist.
    pub fn trust_enforced(&self) -> bool {
        !self.register.is_empty() || !self.sip.trusted_sources.is_empty()
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

/// A config text's problems as `key: message` lines (none when it reads
/// clean): what the sections' tests check against.
#[cfg(test)]
pub(crate) fn test_problems(text: &str) -> Vec<String> {
    match Config::parse(text, None) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| format!("{}: {}", e.key, e.message)).collect(),
    }
}
