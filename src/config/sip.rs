//! The telephony side of the config: SIP (`[sip]`), RTP ports (`[rtp]`),
//! calls (`[call]`), the defences of an open port (`[security]`) and the
//! accounts to register (`[[register]]`).

use super::SecretError;
use super::value::{self, SipTarget};
use backstop_core::sip::guard::GuardConfig;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address for SIP over UDP and TCP (same port).
    pub listen: SocketAddr,
    /// Address to put in Via, Contact and SDP instead of the local one (e.g. a public IP).
    pub advertise: Option<IpAddr>,
    /// How long the call rings before we answer.
    #[serde(rename = "answer_after_ms", with = "value::millis")]
    pub answer_after: Duration,
    /// RFC 3261 T1 and T2.
    #[serde(rename = "t1_ms", with = "value::millis")]
    pub t1: Duration,
    #[serde(rename = "t2_ms", with = "value::millis")]
    pub t2: Duration,
    /// Calls in progress at once; more get 503.
    pub max_calls: usize,
    /// Addresses (CIDR or single IPs) whose INVITEs are answered, besides the
    /// registrars of `[[register]]` accounts. With neither, everyone is answered.
    #[serde(with = "value::nets")]
    pub trusted_sources: Vec<IpNet>,
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
    #[serde(rename = "max_duration_secs", with = "value::secs")]
    pub max_duration: Duration,
    /// On SIGTERM/SIGINT, calls in progress may run this long before we end
    /// them with BYE (new calls get 503 meanwhile). A second signal ends them at once.
    #[serde(rename = "shutdown_grace_secs", with = "value::secs")]
    pub shutdown_grace: Duration,
}

/// One account to register with a PBX or carrier (`[[register]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Where REGISTER goes: `sip:host[:port]`.
    pub registrar: SipTarget,
    /// The AOR user: the AOR is sip:username@domain.
    pub username: String,
    /// Default: the registrar's host.
    pub domain: Option<String>,
    /// Default: username.
    pub auth_username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Seconds asked for in the REGISTER's Expires.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// Send REGISTERs here instead of to the registrar.
    pub outbound_proxy: Option<SipTarget>,
    /// First wait after a failure; it doubles up to max_retry_interval_s.
    #[serde(rename = "retry_interval_s", with = "value::secs", default = "default_retry_interval")]
    pub retry_interval: Duration,
    #[serde(rename = "max_retry_interval_s", with = "value::secs", default = "default_max_registration_retry")]
    pub max_retry_interval: Duration,
    /// CRLF keep-alive to the registrar this often while registered; 0 (None) = off.
    #[serde(rename = "keepalive_s", with = "value::secs_or_off", default = "default_keepalive")]
    pub keepalive: Option<Duration>,
}

fn default_expires() -> u32 {
    3600
}
fn default_retry_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_max_registration_retry() -> Duration {
    Duration::from_secs(300)
}
fn default_keepalive() -> Option<Duration> {
    Some(Duration::from_secs(30))
}

impl RegisterConfig {
    pub fn resolved_password(&self) -> Result<String, SecretError> {
        match (&self.password, &self.password_env, &self.password_file) {
            (Some(p), None, None) => Ok(p.clone()),
            (None, Some(var), None) => std::env::var(var).map_err(|_| SecretError::MissingEnv(var.clone())),
            (None, None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| SecretError::File(f.clone(), e.to_string())),
            (None, None, None) => Err(SecretError::None),
            _ => Err(SecretError::Several),
        }
    }

    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| self.registrar.host.clone())
    }

    /// `username@domain`: how logs, metrics and readiness name the account.
    pub fn account_name(&self) -> String {
        format!("{}@{}", self.username, self.domain())
    }

    /// Where REGISTERs are sent: the outbound proxy, or the registrar.
    pub fn next_hop(&self) -> &SipTarget {
        self.outbound_proxy.as_ref().unwrap_or(&self.registrar)
    }
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
    #[serde(with = "value::nets")]
    pub verified_sources: Vec<IpNet>,
    /// A TCP connection with nothing received for this long is closed. Keep it
    /// above `[call] max_duration_secs`: a call's connection is quiet while the caller talks.
    #[serde(rename = "tcp_idle_secs", with = "value::secs")]
    pub tcp_idle: Duration,
}

impl SecurityConfig {
    pub fn guard(&self) -> GuardConfig {
        GuardConfig {
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

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            advertise: None,
            answer_after: Duration::from_millis(1000),
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
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
        CallConfig { max_duration: Duration::from_secs(600), shutdown_grace: Duration::from_secs(60) }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            scanner_user_agents: backstop_core::sip::guard::default_scanner_user_agents(),
            requests_per_second: 20.0,
            request_burst: 40.0,
            invites_per_second: 20.0,
            invite_burst: 40.0,
            max_message_bytes: 16384,
            max_headers: 100,
            max_header_line_bytes: 4096,
            max_tcp_connections: 256,
            tcp_idle: Duration::from_secs(900),
            verified_sources: vec!["127.0.0.0/8".parse().expect("a literal"), "::1/128".parse().expect("a literal")],
        }
    }
}
