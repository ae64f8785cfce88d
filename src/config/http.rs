//! `[http]`: the HTTP face (the lead inbox, its JSON API, signed recording
//! links, the inbound-SMS webhook). Off unless the section is present.
//! (Stub: filled in with the HTTP face.)

use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the HTTP face listens.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:8080".parse().expect("literal") }
    }
}

impl HttpConfig {
    /// Problems that span keys, as `(key, message)`.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
