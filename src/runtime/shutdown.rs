//! Shutdown in two steps, driven by one `watch` channel from the signal
//! handler: `Draining` refuses new calls (503) and lets the calls in
//! progress run on; `Now` hangs them up (BYE) and gives them
//! [`HANGUP_WAIT`] to finish. Then the accounts unregister, while the
//! dispatcher keeps routing their responses, also bounded.

use super::dispatch::{Dispatcher, Notice};
use crate::transport::Inbound;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Where a shutdown stands (a `watch` channel from the signal handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Running,
    /// New calls get 503; calls in progress go on.
    Draining,
    /// Calls in progress are ended now (BYE).
    Now,
}

/// How long hung-up calls, and unregistering accounts, get to finish.
pub(super) const HANGUP_WAIT: Duration = Duration::from_secs(5);

/// What the dispatch loop hands over once the shutdown has begun.
pub(super) struct WindDown<'a> {
    pub dispatcher: &'a mut Dispatcher,
    pub inbound: &'a mut mpsc::Receiver<Inbound>,
    pub notices: &'a mut mpsc::UnboundedReceiver<Notice>,
    pub shutdown: &'a mut watch::Receiver<Shutdown>,
}

impl WindDown<'_> {
    /// Let the calls finish (hung up at `Now`, bounded), then unregister the accounts (bounded).
    pub(super) async fn run(self, registrations: Vec<JoinHandle<()>>, unregister: watch::Sender<bool>) {
        let WindDown { dispatcher, inbound, notices, shutdown } = self;
        tracing::info!(calls = dispatcher.calls(), "shutting down: new calls get 503; calls in progress may finish");
        // Set once the calls are being hung up: they get this long to send their BYEs and leads.
        let mut hangup_deadline =
            (*shutdown.borrow() == Shutdown::Now).then(|| tokio::time::Instant::now() + HANGUP_WAIT);
        while dispatcher.calls() > 0 {
            tokio::select! {
                Some(n) = notices.recv() => dispatcher.notice(n),
                // Keep routing in-dialog requests and responses (and refusing new calls).
                Some(msg) = inbound.recv() => dispatcher.dispatch(msg).await,
                r = shutdown.changed(), if hangup_deadline.is_none() => {
                    if r.is_err() || *shutdown.borrow() == Shutdown::Now {
                        tracing::info!(calls = dispatcher.calls(), "ending the calls still in progress");
                        hangup_deadline = Some(tokio::time::Instant::now() + HANGUP_WAIT);
                    }
                }
                _ = tokio::time::sleep_until(hangup_deadline.unwrap_or_else(tokio::time::Instant::now)), if hangup_deadline.is_some() => {
                    tracing::warn!(calls = dispatcher.calls(), "calls still open at the shutdown deadline");
                    break;
                }
            }
        }
        let _ = unregister.send(true);
        let deadline = tokio::time::Instant::now() + HANGUP_WAIT;
        while registrations.iter().any(|r| !r.is_finished()) {
            tokio::select! {
                // Keep routing the REGISTER responses while accounts unregister.
                Some(msg) = inbound.recv() => dispatcher.dispatch(msg).await,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("accounts still unregistering at the shutdown deadline");
                    break;
                }
            }
        }
    }
}
