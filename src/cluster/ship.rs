//! Shipping: the `postgres` sink's delivery. An event the node committed to
//! its outbox goes into the shared `events` table once (its id is unique),
//! with a pending delivery for each shared sink that takes it, in one
//! transaction. A second shipment of the same event (a retry after a lost
//! reply, a reminder two nodes both published) adds nothing.

use super::{Cluster, ClusterError};
use crate::sink::delivery::LiveSinks;
use crate::sink::event::Event;
use crate::sink::outbox::SinkSpec;

/// Commit `event` (committed locally at `created_ms`) to the shared store,
/// with deliveries for the sinks in `shared` that take it. True when it was
/// new there.
/// With `recordings`, the recordings the event names are uploaded from
/// that directory in the same transaction (`cluster::recordings`).
pub async fn ship(
    cluster: &Cluster,
    event: &Event,
    created_ms: i64,
    shared: &[SinkSpec],
    recordings: Option<&std::path::Path>,
) -> Result<bool, ClusterError> {
    let body = serde_json::to_string(event)?;
    let mut client = cluster.client().await?;
    let tx = client.transaction().await?;
    if let Some(dir) = recordings {
        super::recordings::upload(&tx, cluster, dir, event).await?;
    }
    let row = tx
        .query_opt(
            "INSERT INTO events (id, kind, call_id, lead_id, node, created_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO NOTHING RETURNING seq",
            &[&event.id, &event.kind.as_str(), &event.call_id(), &event.lead.id, &cluster.node, &created_ms, &body],
        )
        .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(false);
    };
    let seq: i64 = row.get(0);
    for spec in shared.iter().filter(|s| s.takes(event)) {
        tx.execute(
            "INSERT INTO deliveries (seq, sink, call_id, state, next_ms) VALUES ($1, $2, $3, 'pending', backstop_now_ms())",
            &[&seq, &spec.name, &event.call_id()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The `postgres` sink's target: the shared store, and the live sinks
/// (which of them are shared, and their workers to wake).
pub struct Shipper {
    pub cluster: std::sync::Arc<Cluster>,
    pub sinks: LiveSinks,
    /// The recordings directory, when recordings go to the database.
    pub recordings: Option<std::path::PathBuf>,
}

impl Shipper {
    /// Ship one event; the shared workers are woken when it was new.
    pub async fn deliver(&self, event: &Event, created_ms: i64) -> Result<(), ClusterError> {
        let set = self.sinks.current();
        if ship(&self.cluster, event, created_ms, set.shared_specs(), self.recordings.as_deref()).await? {
            set.wake_shared();
        }
        Ok(())
    }
}
