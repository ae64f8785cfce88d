//! `[http]`: the HTTP face (the lead inbox, its JSON API, signed recording
//! links, the inbound-SMS webhook). Off unless the section is present.
//!
//! Who may read what: inbox users (`[[http.user]]`, argon2 PHC hashes that
//! `backstop passwd` prints) log in to the pages; integrators use the API
//! with bearer tokens (`[[http.token]]`); recordings are fetched by signed,
//! expiring links only. Users and tokens are read again on SIGHUP.

use super::value::{self, HttpUrl};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// The shortest bearer token or link secret taken: 32 characters (a token
/// of `openssl rand -hex 16` or more).
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the HTTP face listens.
    pub listen: SocketAddr,
    /// The address the inbox is reached at from outside (a TLS proxy's
    /// `https://leads.example.com`). When set, events carry a signed
    /// `recording_url` per recording.
    pub public_url: Option<HttpUrl>,
    /// Inbox users.
    pub user: Vec<UserConfig>,
    /// API bearer tokens.
    pub token: Vec<TokenConfig>,
    /// The HMAC key of recording links; or read from `link_secret_env`.
    /// Neither: a random key kept in DATA_DIR/http-link.key.
    pub link_secret: Option<String>,
    pub link_secret_env: Option<String>,
    /// How long a recording link in an event stays valid.
    #[serde(rename = "link_ttl_hours", with = "value::hours")]
    pub link_ttl: Duration,
    /// How long an inbox login lasts.
    #[serde(rename = "session_hours", with = "value::hours")]
    pub session: Duration,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Default:
    /// on, except when the face listens on loopback and `public_url` is
    /// absent or plain http (a browser on the same machine).
    pub secure_cookies: Option<bool>,
    /// Reverse proxies (CIDR ranges or single addresses, e.g.
    /// `["127.0.0.1/32", "::1"]`) whose `X-Forwarded-For` is believed. When
    /// the peer is one of them, the client address (what the login limiter
    /// counts failures by, and the audit log names) is the right-most
    /// `X-Forwarded-For` address that is not itself a trusted proxy. Empty
    /// (the default): the peer's address, always; behind a proxy every client
    /// then shares the proxy's, and five wrong passwords from anyone lock
    /// every client out of logging in for 15 minutes. List only proxies that
    /// set or append `X-Forwarded-For` themselves: a listed address that
    /// passes on a client's header unchanged lets that client pick its
    /// address. Read at start (not on SIGHUP).
    #[serde(with = "value::nets")]
    pub trusted_proxies: Vec<IpNet>,
}

/// `[[http.user]]`: someone who may log in to the inbox.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$...`), as `backstop passwd` prints it.
    pub password_hash: String,
}

/// `[[http.token]]`: an API bearer token. Exactly one of `token`,
/// `token_env` (the variable holding it) or `token_sha256` (the hex SHA-256
/// of it, so the config need not hold the token itself).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who uses it: the audit log and `handled_by` name it.
    pub name: String,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_sha256: Option<String>,
    /// What it may do: `api` (the default: the leads API and `/metrics`)
    /// or `metrics` (only scrape `/metrics`; it cannot read a lead).
    #[serde(default)]
    pub scope: TokenScope,
}

/// What a `[[http.token]]` may do.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Everything a token can: read and change leads, and scrape.
    #[default]
    Api,
    /// Only `GET /metrics`: for a Prometheus, which need not see callers.
    Metrics,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("literal"),
            public_url: None,
            user: Vec::new(),
            token: Vec::new(),
            link_secret: None,
            link_secret_env: None,
            link_ttl: Duration::from_secs(168 * 3600),
            session: Duration::from_secs(12 * 3600),
            secure_cookies: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl TokenConfig {
    /// The SHA-256 of the token, from whichever key gives it.
    pub fn digest(&self) -> Result<[u8; 32], String> {
        use sha2::{Digest, Sha256};
        let plain = match (&self.token, &self.token_env, &self.token_sha256) {
            (Some(t), None, None) => t.clone(),
            (None, Some(var), None) => {
                std::env::var(var).map_err(|_| format!("the environment variable {var} is not set"))?
            }
            (None, None, Some(hex)) => return parse_hex32(hex).ok_or("token_sha256 must be 64 hex digits".into()),
            (None, None, None) => return Err("needs token, token_env or token_sha256".into()),
            _ => return Err("give only one of token, token_env, token_sha256".into()),
        };
        if plain.chars().count() < MIN_SECRET_LEN {
            return Err(format!("a token must be at least {MIN_SECRET_LEN} characters"));
        }
        Ok(Sha256::digest(plain.as_bytes()).into())
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl HttpConfig {
    /// The `Secure` cookie flag, with the default worked out.
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies.unwrap_or_else(|| !self.plain_http_ok())
    }

    /// Plain HTTP is what the browser uses: loopback only, no https public URL.
    fn plain_http_ok(&self) -> bool {
        self.listen.ip().is_loopback() && self.public_url.as_ref().is_none_or(|u| u.url.scheme() == "http")
    }

    /// `public_url` without its trailing slash.
    pub fn public_base(&self) -> Option<String> {
        self.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_string())
    }

    /// The link key from `link_secret` or `link_secret_env`; `None`: use the key file.
    pub fn resolved_link_secret(&self) -> Result<Option<String>, String> {
        match (&self.link_secret, &self.link_secret_env) {
            (Some(_), Some(_)) => Err("give only one of link_secret, link_secret_env".into()),
            (Some(s), None) => Ok(Some(s.clone())),
            (None, Some(var)) => {
                std::env::var(var).map(Some).map_err(|_| format!("the environment variable {var} is not set"))
            }
            (None, None) => Ok(None),
        }
    }

    /// Problems that span keys, as `(key, message)`.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if let Some(u) = &self.public_url {
            if !u.is_http() {
                p.push(("http.public_url".into(), format!("{u} is not an http(s) URL with a host")));
            } else if u.url.query().is_some() || u.url.fragment().is_some() {
                p.push(("http.public_url".into(), "takes no query or fragment".into()));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.user.iter().enumerate() {
            let key = |k: &str| format!("http.user[{i}].{k}");
            if u.name.trim().is_empty() || u.name.len() > 64 || u.name.chars().any(char::is_control) {
                p.push((key("name"), "must be 1 to 64 printable characters".into()));
            } else if !names.insert(u.name.clone()) {
                p.push((key("name"), format!("{:?} is given twice", u.name)));
            }
            if let Err(e) = check_phc(&u.password_hash) {
                p.push((key("password_hash"), e));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.token.iter().enumerate() {
            let key = |k: &str| format!("http.token[{i}].{k}");
            if t.name.trim().is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
                p.push((key("name"), "must be 1 to 64 printable characters".into()));
            } else if !names.insert(t.name.clone()) {
                p.push((key("name"), format!("{:?} is given twice", t.name)));
            }
            if let Err(e) = t.digest() {
                p.push((key("token"), e));
            }
        }
        match self.resolved_link_secret() {
            Ok(Some(s)) if s.chars().count() < MIN_SECRET_LEN => {
                p.push(("http.link_secret".into(), format!("must be at least {MIN_SECRET_LEN} characters")));
            }
            Ok(_) => {}
            Err(e) => p.push(("http.link_secret".into(), e)),
        }
        if self.link_ttl.is_zero() || self.link_ttl > Duration::from_secs(8760 * 3600) {
            p.push(("http.link_ttl_hours".into(), "must be between 1 and 8760 (a year)".into()));
        }
        if self.session.is_zero() || self.session > Duration::from_secs(720 * 3600) {
            p.push(("http.session_hours".into(), "must be between 1 and 720 (30 days)".into()));
        }
        if self.secure_cookies.is_none() && !self.listen.ip().is_loopback() && !self.plain_http_ok() {
            let https = self.public_url.as_ref().is_some_and(|u| u.url.scheme() == "https");
            if !https {
                p.push((
                    "http.secure_cookies".into(),
                    format!(
                        "listen {} is not loopback: set public_url to the https address the inbox is reached at \
                         (a TLS proxy in front), or secure_cookies = false to log in over plain HTTP",
                        self.listen
                    ),
                ));
            }
        }
        p
    }
}

/// An argon2 PHC string that parses.
fn check_phc(hash: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::phc::PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC string ({e}): `backstop passwd` prints one"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("{} is not an argon2 hash: `backstop passwd` prints one", parsed.algorithm));
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("argon2 parameters: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_problems as problems;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2hp1f0ViJ8wBS8rcE2jpgdyzHhkOXPWz1Lv7AP9mBGM";

    #[test]
    fn defaults_and_off_unless_configured() {
        assert!(Config::parse("", None).unwrap().http.is_none());
        let h = Config::parse("[http]\n", None).unwrap().http.unwrap();
        assert_eq!(h.listen.to_string(), "127.0.0.1:8080");
        assert_eq!((h.link_ttl.as_secs(), h.session.as_secs()), (168 * 3600, 12 * 3600));
        assert!(!h.secure_cookies(), "loopback without public_url: plain http on this machine");
        let h = Config::parse("[http]\npublic_url = \"https://leads.example.com/\"\n", None).unwrap().http.unwrap();
        assert!(h.secure_cookies());
        assert_eq!(h.public_base().as_deref(), Some("https://leads.example.com"));
        let h = Config::parse("[http]\nlisten = \"0.0.0.0:8080\"\npublic_url = \"https://x.example\"\n", None)
            .unwrap()
            .http
            .unwrap();
        assert!(h.secure_cookies());
        let h =
            Config::parse("[http]\nlisten = \"0.0.0.0:8080\"\nsecure_cookies = false\n", None).unwrap().http.unwrap();
        assert!(!h.secure_cookies());
        assert!(h.trusted_proxies.is_empty());
        let h = Config::parse("[http]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1\", \"10.0.0.0/8\"]\n", None)
            .unwrap()
            .http
            .unwrap();
        let nets: Vec<String> = h.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
        assert!(
            problems("[http]\ntrusted_proxies = [\"proxy.local\"]\n").iter().any(|e| e.contains("trusted_proxies"))
        );
    }

    #[test]
    fn users_tokens_and_secrets_are_checked() {
        let ok = format!(
            "[http]\n[[http.user]]\nname = \"ann\"\npassword_hash = \"{HASH}\"\n\
             [[http.token]]\nname = \"crm\"\ntoken = \"0123456789abcdef0123456789abcdef\"\n\
             [[http.token]]\nname = \"zap\"\ntoken_sha256 = \"{}\"\n\
             [[http.token]]\nname = \"prom\"\nscope = \"metrics\"\ntoken = \"0123456789abcdef0123456789abcdeg\"\n",
            "ab".repeat(32)
        );
        assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
        let bad = "[http]\nlink_secret = \"short\"\nlink_ttl_hours = 0\nsession_hours = 0\n\
             public_url = \"ftp://x\"\n\
             [[http.user]]\nname = \"ann\"\npassword_hash = \"hunter2\"\n\
             [[http.user]]\nname = \"ann\"\npassword_hash = \"$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA\"\n\
             [[http.token]]\nname = \"crm\"\ntoken = \"short\"\n\
             [[http.token]]\nname = \"two\"\ntoken = \"0123456789abcdef0123456789abcdef\"\ntoken_sha256 = \"00\"\n\
             [[http.token]]\nname = \"env\"\ntoken_env = \"BACKSTOP_TEST_NO_SUCH_VAR\"\n\
             [[http.token]]\nname = \"hex\"\ntoken_sha256 = \"zz\"\n";
        let p = problems(bad);
        for key in [
            "http.link_secret",
            "http.link_ttl_hours",
            "http.session_hours",
            "http.public_url",
            "http.user[0].password_hash",
            "http.user[1].name",
            "http.user[1].password_hash",
            "http.token[0].token",
            "http.token[1].token",
            "http.token[2].token",
            "http.token[3].token",
        ] {
            assert!(p.iter().any(|e| e.starts_with(key)), "{key}: {p:?}");
        }
        let p = problems("[http]\nlisten = \"0.0.0.0:8080\"\n");
        assert!(p.iter().any(|e| e.starts_with("http.secure_cookies")), "{p:?}");
        assert!(problems("[http]\nbogus = 1\n").iter().any(|e| e.contains("bogus")));
        // A scope is `api` or `metrics`, and `api` when not given.
        let scoped = |scope: &str| {
            format!("[http]\n[[http.token]]\nname = \"p\"\n{scope}token = \"0123456789abcdef0123456789abcdef\"\n")
        };
        let p = problems(&scoped("scope = \"admin\"\n"));
        assert!(p.iter().any(|e| e.contains("scope") || e.contains("admin")), "{p:?}");
        let cfg: crate::config::Config = toml::from_str(&scoped("")).unwrap();
        assert_eq!(cfg.http.unwrap().token[0].scope, super::TokenScope::Api);
    }
}
