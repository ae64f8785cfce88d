//! `[store]`: PostgreSQL as the shared store of a cluster. Absent, each agent
//! keeps everything in its own SQLite file (the default, with no config).
//!
//! With it, every agent of the cluster points at the same database: events
//! ship there from each node's outbox, webhooks and text-backs are delivered
//! from there by any live node, and each node's lead store follows every
//! other node's events (`crate::cluster`). All of it needs a restart.

use serde::Deserialize;
use std::time::Duration;

use super::value;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: Option<String>,
    /// The name of an environment variable holding the URL (its password
    /// then stays out of the file).
    pub url_env: Option<String>,
    /// This node's name, stable across restarts and unique in the cluster
    /// (default: the host name).
    pub node: Option<String>,
    /// How often the node says it is alive.
    #[serde(rename = "heartbeat_ms", with = "value::millis")]
    pub heartbeat: Duration,
    /// A node silent this long is dead: one survivor closes its open calls.
    #[serde(rename = "dead_after_secs", with = "value::secs")]
    pub dead_after: Duration,
    /// A delivery a node claimed is anyone's again after this (the node died
    /// mid-delivery). Longer than any webhook timeout.
    #[serde(rename = "lease_secs", with = "value::secs")]
    pub lease: Duration,
    /// Where the nodes find each other's recordings: `database` (uploaded
    /// with the lead's event), or `local` (each node its own
    /// DATA_DIR/recordings; a directory the nodes share, mounted there).
    pub recordings: RecordingsStore,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingsStore {
    #[default]
    Database,
    Local,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            url_env: None,
            node: None,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            recordings: RecordingsStore::Database,
        }
    }
}

/// What `[store]` resolves to when it names a database.
#[derive(Clone)]
pub struct SharedStore {
    pub url: String,
    pub node: String,
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub lease: Duration,
    /// Recordings go to the database with the events naming them.
    pub recordings_in_database: bool,
}

impl std::fmt::Debug for SharedStore {
    /// Never the URL: it holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore").field("node", &self.node).finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// The shared store, when the config names one; an error says what is wrong.
    pub fn shared(&self) -> Result<Option<SharedStore>, String> {
        let url = match (&self.url, &self.url_env) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err("give only one of url, url_env".into()),
            (Some(u), None) => u.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("url_env: ${var} is not set"))?,
        };
        check_url(&url)?;
        let node = match &self.node {
            Some(n) => n.clone(),
            None => host_name().ok_or("node: no host name to default to; set node")?,
        };
        check_node(&node)?;
        Ok(Some(SharedStore {
            url,
            node,
            heartbeat: self.heartbeat,
            dead_after: self.dead_after,
            lease: self.lease,
            recordings_in_database: self.recordings == RecordingsStore::Database,
        }))
    }

    /// Problems as `(key, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if let Err(e) = self.shared() {
            let key = e.split(':').next().filter(|k| ["url_env", "node"].contains(k)).unwrap_or("url");
            p.push((format!("store.{key}"), e));
        }
        if self.heartbeat < Duration::from_millis(100) || self.heartbeat > Duration::from_secs(60) {
            p.push(("store.heartbeat_ms".into(), "must be 100 to 60000".into()));
        }
        if self.dead_after < self.heartbeat * 3 {
            p.push(("store.dead_after_secs".into(), "must be at least three heartbeats".into()));
        }
        if self.lease < Duration::from_secs(5) {
            p.push(("store.lease_secs".into(), "must be at least 5".into()));
        }
        p
    }
}

/// A URL tokio-postgres takes, said without its password when it does not.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("url: must start with postgres:// (or postgresql://)".into());
    }
    url.parse::<tokio_postgres::Config>().map(|_| ()).map_err(|e| format!("url: not a PostgreSQL URL: {e}"))
}

fn check_node(node: &str) -> Result<(), String> {
    let ok = !node.is_empty()
        && node.len() <= 64
        && node.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(format!("node: {node:?} must be 1 to 64 of A-Z a-z 0-9 - _ .")) }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_needs_a_postgres_url_and_a_plain_node_name() {
        let none = StoreConfig::default();
        assert!(none.shared().unwrap().is_none());
        assert!(none.problems().is_empty());
        let good = StoreConfig {
            url: Some("postgres://u:p@127.0.0.1:5432/db".into()),
            node: Some("node-1".into()),
            ..StoreConfig::default()
        };
        let s = good.shared().unwrap().unwrap();
        assert_eq!(s.node, "node-1");
        assert!(!format!("{s:?}").contains("u:p"), "Debug never shows the URL");
        let bad = StoreConfig { url: Some("mysql://x".into()), node: Some("a b".into()), ..good.clone() };
        assert_eq!(bad.problems()[0].0, "store.url");
        let bad_node = StoreConfig { node: Some("a b".into()), ..good.clone() };
        assert_eq!(bad_node.problems()[0].0, "store.node");
        let both = StoreConfig { url_env: Some("X".into()), ..good.clone() };
        assert!(both.shared().is_err());
        let fast = StoreConfig { dead_after: Duration::from_secs(1), ..good };
        assert_eq!(fast.problems()[0].0, "store.dead_after_secs");
    }
}
