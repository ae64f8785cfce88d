//! The callback clock's task: publishes `lead.callback_overdue` for leads
//! past due, from the store, so it survives restarts. (Stub.)

use crate::sink::delivery::Publisher;
use tokio::sync::watch;

/// Run until `shutdown` flips.
pub async fn run(
    publisher: Publisher,
    policy: backstop_core::callback::CallbackPolicy,
    shutdown: watch::Receiver<bool>,
) {
    let _ = (publisher, policy);
    let mut shutdown = shutdown;
    let _ = shutdown.changed().await;
}
