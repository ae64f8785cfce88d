//! One task per `[[register]]` account: resolves the registrar (retrying
//! while DNS is down), tells the dispatcher its address (a trusted source
//! from then on), and drives the core's [`Registration`] (REGISTER, digest
//! auth, refresh, keepalive, retry) until the shutdown asks it to
//! unregister.

use super::Shared;
use super::dispatch::Notice;
use crate::config::RegisterConfig;
use crate::metrics::Metrics;
use backstop_core::sip::auth::Credentials;
use backstop_core::sip::message::Response;
use backstop_core::sip::register::{AccountSetup, RegEvent, RegState, Registration};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

pub(super) struct RegistrationTask {
    pub shared: Arc<Shared>,
    pub account: RegisterConfig,
    /// Fixes the registration's Call-ID, which the dispatcher routes here.
    pub seed: u64,
    pub udp: Arc<UdpSocket>,
    pub inbox: mpsc::UnboundedReceiver<Box<Response>>,
    pub notices: mpsc::UnboundedSender<Notice>,
    /// True once the accounts must unregister.
    pub shutdown: watch::Receiver<bool>,
}

impl RegistrationTask {
    /// Keep the account registered until shutdown, then unregister.
    pub(super) async fn run(self) {
        let RegistrationTask { shared, account, seed, udp, mut inbox, notices, mut shutdown } = self;
        let (host, port) = (account.next_hop().host.clone(), account.next_hop().port);
        let retry = account.retry_interval;
        // Resolve the registrar; DNS may be down at start, so keep trying.
        let dest = loop {
            match tokio::net::lookup_host((host.as_str(), port)).await.map(|mut a| a.next()) {
                Ok(Some(addr)) => break addr,
                other => tracing::error!(host = %host, result = ?other.err(), "cannot resolve the registrar; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.changed() => return,
            }
        };
        let _ = notices.send(Notice::Registrar(dest.ip()));
        let password = match account.resolved_password() {
            Ok(p) => p,
            Err(e) => return tracing::error!("no password: {e}"),
        };
        let name = account.account_name();
        let setup = AccountSetup {
            name: name.clone(),
            username: account.username.clone(),
            domain: account.domain(),
            credentials: Credentials {
                username: account.auth_username.clone().unwrap_or_else(|| account.username.clone()),
                password,
            },
            expires: account.expires,
            dest,
            local: SocketAddr::new(shared.local_ip_for(dest), shared.local_sip.port()),
            t1: shared.cfg.sip.t1,
            t2: shared.cfg.sip.t2,
            retry_base: retry,
            retry_max: account.max_retry_interval,
            keepalive: account.keepalive,
            seed,
        };
        let mut reg = Registration::new(setup);
        tracing::info!(registrar = %dest, "registering");
        reg.start(Instant::now());
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut stopping = *shutdown.borrow();
        if stopping {
            reg.stop(Instant::now());
        }
        loop {
            while let Some(t) = reg.poll_transmit() {
                if let Err(e) = udp.send_to(&t.bytes, t.dest).await {
                    tracing::warn!(dest = %t.dest, error = %e, "REGISTER send failed");
                }
            }
            while let Some(ev) = reg.poll_event() {
                count_event(&shared.metrics, &name, &ev);
                log_event(ev);
            }
            if reg.state() == RegState::Stopped {
                return;
            }
            let deadline = reg.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                Some(resp) = inbox.recv() => reg.handle_response(Instant::now(), &resp),
                _ = &mut timer => reg.handle_timeout(Instant::now()),
                _ = shutdown.changed(), if !stopping => {
                    if *shutdown.borrow() {
                        stopping = true;
                        reg.stop(Instant::now());
                    }
                }
            }
        }
    }
}

/// The account's state (`backstop_registration_up`, readiness) and its failures.
fn count_event(metrics: &Metrics, account: &str, ev: &RegEvent) {
    match ev {
        RegEvent::Registered { .. } => metrics.registration(account, true),
        RegEvent::Failed { .. } => metrics.registration_failed(account),
        RegEvent::Unregistered => metrics.registration(account, false),
        // Registered still; the new contact is registered next.
        RegEvent::ContactMoved { .. } => {}
    }
}

fn log_event(ev: RegEvent) {
    match ev {
        RegEvent::Registered { expires, contact } => tracing::info!(expires, %contact, "registered"),
        RegEvent::Failed { why, retry_in } => {
            tracing::error!(retry_in_ms = retry_in.as_millis() as u64, "registration failed: {why}")
        }
        RegEvent::Unregistered => tracing::info!("unregistered"),
        RegEvent::ContactMoved { from, to } => {
            tracing::info!(%from, %to, "registrar sees us at another address; re-registering that contact")
        }
    }
}
