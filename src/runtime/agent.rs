//! The agent: binds SIP on UDP and TCP, starts the transports and one task
//! per `[[register]]` account, and runs the dispatch loop until the shutdown
//! begins; then [`WindDown`] finishes the calls and the registrations.

use super::LiveLines;
use super::Shared;
use super::dispatch::{Dispatcher, Notice};
use super::phases::PhaseSlots;
use super::registration::RegistrationTask;
use super::shutdown::{Shutdown, WindDown};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pacer::Pacer;
use crate::sink::delivery::Publisher;
use crate::transcribe::service::Transcriber;
use crate::transport::{Inbound, TcpLimits, serve_tcp, serve_udp};
use backstop_core::sip::admission::{Admission, AdmissionConfig};
use backstop_core::sip::register::Registration;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Bound sockets, ready to run.
pub struct Agent {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    shared: Arc<Shared>,
}

impl Agent {
    /// Bind SIP on UDP and TCP at the configured address (same port); every
    /// call runs what its line in `lines` says, as they are at its INVITE.
    pub async fn bind(
        cfg: Config,
        lines: Arc<LiveLines>,
        events: Publisher,
        transcriber: Option<Transcriber>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Agent> {
        use anyhow::Context;
        let listen = cfg.sip.listen;
        let udp = UdpSocket::bind(listen).await.with_context(|| format!("binding SIP UDP on {listen}"))?;
        let local_sip = udp.local_addr()?;
        let tcp = TcpListener::bind(local_sip).await.with_context(|| format!("binding SIP TCP on {local_sip}"))?;
        let pacer = Pacer::start().context("starting the RTP pacer thread")?;
        metrics.health.set_sip_bound(local_sip);
        metrics.lines_configured(&lines.current());
        metrics.attach_pacer(pacer.stats.clone());
        // Not ready until each account has registered.
        for account in &cfg.register {
            metrics.account_configured(&account.account_name());
        }
        let shared = Shared { cfg, lines, events, transcriber, local_sip, phases: PhaseSlots::new(), pacer, metrics };
        Ok(Agent { udp: Arc::new(udp), tcp, shared: Arc::new(shared) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_sip
    }

    /// Serve until `shutdown` leaves `Running`. While `Draining`, new calls
    /// get 503 and calls in progress go on; at `Now` they are hung up (BYE)
    /// and given 5 s to finish. Then accounts unregister and this returns.
    pub async fn run(self, mut shutdown: watch::Receiver<Shutdown>) -> anyhow::Result<()> {
        let cfg = &self.shared.cfg;
        let (in_tx, mut inbound) = mpsc::channel::<Inbound>(1024);
        let udp_task = tokio::spawn(serve_udp(self.udp.clone(), in_tx.clone()));
        let tcp_limits = TcpLimits { max_connections: cfg.security.max_tcp_connections, idle: cfg.security.tcp_idle };
        let tcp_task = tokio::spawn(serve_tcp(self.tcp, in_tx, tcp_limits));
        let trim_task = tokio::spawn(super::trim::run(self.shared.metrics.clone()));
        let (notice_tx, mut notices) = mpsc::unbounded_channel::<Notice>();
        let admission = Admission::new(admission_config(cfg));
        let mut dispatcher = Dispatcher::new(self.shared.clone(), admission, notice_tx.clone(), shutdown.clone());
        let mut registrations = Vec::new();
        let (unregister_tx, unregister_rx) = watch::channel(false);
        for account in cfg.register.clone() {
            let seed = rand::random::<u64>();
            let (tx, rx) = mpsc::unbounded_channel();
            dispatcher.add_registration(Registration::call_id_for(seed), tx);
            let span = tracing::info_span!("account", name = %account.account_name());
            let task = RegistrationTask {
                shared: self.shared.clone(),
                account,
                seed,
                udp: self.udp.clone(),
                inbox: rx,
                notices: notice_tx.clone(),
                shutdown: unregister_rx.clone(),
            };
            registrations.push(tokio::spawn(task.run().instrument(span)));
        }
        if !cfg.trust_enforced() {
            tracing::warn!("trunk mode with no [sip] trusted_sources: INVITEs from any address are answered");
        }
        tracing::info!(listen = %self.shared.local_sip, accounts = registrations.len(), "backstop listening for SIP on UDP and TCP");
        loop {
            tokio::select! {
                // What the tasks say first (a registrar's address, a call ended), and the shutdown,
                // so that a flood of messages cannot keep them waiting.
                biased;
                Some(n) = notices.recv() => dispatcher.notice(n),
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() != Shutdown::Running { break; }
                }
                Some(msg) = inbound.recv() => dispatcher.dispatch(msg).await,
            }
        }
        let wind_down = WindDown {
            dispatcher: &mut dispatcher,
            inbound: &mut inbound,
            notices: &mut notices,
            shutdown: &mut shutdown,
        };
        wind_down.run(registrations, unregister_tx).await;
        udp_task.abort();
        tcp_task.abort();
        trim_task.abort();
        let p = &self.shared.pacer.stats;
        tracing::info!(
            sent = p.sent.load(Ordering::Relaxed),
            late = p.late.load(Ordering::Relaxed),
            failed = p.failed.load(Ordering::Relaxed),
            "RTP pacer totals"
        );
        Ok(())
    }
}

/// The admission policy from the config: limits, trust, verified sources.
fn admission_config(cfg: &Config) -> AdmissionConfig {
    AdmissionConfig {
        guard: cfg.security.guard(),
        trust_enforced: cfg.trust_enforced(),
        trusted: cfg.sip.trusted_sources.clone(),
        verified: cfg.security.verified_sources.clone(),
        max_calls: cfg.sip.max_calls,
    }
}
