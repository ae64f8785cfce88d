//! The HTTP face: the lead inbox, its JSON API under `/api/`, recordings by
//! signed link, and the inbound-SMS webhook (`sms`). Off unless `[http]`
//! is configured. (Stub: filled in with the HTTP face.)

pub mod links;
pub mod sms;

use crate::config::Config;
use crate::sink::delivery::Publisher;
use crate::sink::outbox::Outbox;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the HTTP face reads and writes through.
pub struct Context {
    pub cfg: Config,
    /// The outbox database, which holds the lead store.
    pub db: Arc<Mutex<Outbox>>,
    /// Commits `lead.handled` and the like.
    pub publisher: Publisher,
}

/// The running HTTP face.
pub struct HttpFace {}

impl HttpFace {
    /// Bind `[http] listen` and serve until `shutdown` flips.
    pub async fn start(ctx: Context, shutdown: watch::Receiver<bool>) -> anyhow::Result<HttpFace> {
        let _ = (ctx, shutdown);
        Ok(HttpFace {})
    }

    /// Take the users and API tokens of a re-read config (SIGHUP).
    pub fn reload(&self, cfg: &Config) {
        let _ = cfg;
    }

    /// Wait for the server to stop (after `shutdown`).
    pub async fn stopped(self) {}
}
