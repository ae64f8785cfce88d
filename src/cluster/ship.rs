//! Shipping: the `postgres` sink's delivery. An event the node committed to
//! its outbox goes into the shared `events` table once (its id is unique),
//! with a pending delivery for each shared sink that takes it, in one
//! transaction. A second shipment of the same event (a retry after a lost
//! reply, a reminder two nodes both published) adds nothing.
//!
//! Two events are taken in with care, because their node may have been
//! behind the cluster when it made them:
//! - a `lead.completed` for a call that already has one from another node
//!   (a survivor closed the call as `interrupted` while this one was cut
//!   off) goes in as a `lead.updated`: the receiver learns the real end
//!   without a second `lead.completed`; an `interrupted` one for a call that
//!   ended meanwhile is dropped. A call's `lead.completed`s are taken one at
//!   a time (an advisory lock on the call), so neither misses the other;
//! - a `lead.callback_overdue` for a lead already handled (and not reopened
//!   since) is kept, without deliveries: nobody is reminded of a lead that
//!   was called back.

use super::{Cluster, ClusterError};
use crate::sink::delivery::LiveSinks;
use crate::sink::event::{Event, EventType};
use crate::sink::outbox::SinkSpec;
use backstop_core::intake::lead::Outcome;

/// Insert `event` as shipped by `node` (committed there at `created_ms`),
/// with deliveries for the sinks in `shared` that take it, inside `tx`.
/// True when it was new.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    event: &Event,
    node: &str,
    created_ms: i64,
    shared: &[SinkSpec],
) -> Result<bool, ClusterError> {
    let known = tx.query_opt("SELECT 1 FROM events WHERE id = $1", &[&event.id]).await?.is_some();
    if known {
        return Ok(false);
    }
    let mut event = event.clone();
    if event.kind == EventType::LeadCompleted {
        // One call's ends one at a time (a survivor closing it, its own node
        // shipping its real end): the second waits, then sees the first.
        // By Call-ID: an INVITE a front failed over leaves a lead on each
        // node it met, and the caller's call still ends once.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('call ' || $1, 0))",
            &[&super::text_value(event.call_id())],
        )
        .await?;
        let closed = tx
            .query_opt(
                "SELECT 1 FROM events WHERE call_id = $1 AND kind = 'lead.completed' AND id <> $2 LIMIT 1",
                &[&super::text_value(event.call_id()), &event.id],
            )
            .await?
            .is_some();
        if closed && event.lead.outcome == Outcome::Interrupted {
            // A survivor's close of a call that ended meanwhile: nothing to say.
            return Ok(false);
        }
        if closed {
            tracing::warn!(call_id = %event.call_id(), event = %event.id, "shared store: this call was closed by another node meanwhile; its lead goes out as lead.updated");
            event.kind = EventType::LeadUpdated;
        }
    }
    let mut deliver = true;
    if event.kind == EventType::LeadCallbackOverdue {
        // Handled after the last reopen (a reopen is a lead.updated; a
        // transcript's lead.updated after a handling lets the reminder
        // through, as it would have gone before the store was shared).
        let handled = tx
            .query_one(
                "SELECT COALESCE(MAX(seq) FILTER (WHERE kind = 'lead.handled'), 0)
                      > COALESCE(MAX(seq) FILTER (WHERE kind = 'lead.updated'), 0)
                 FROM events WHERE lead_id = $1",
                &[&super::text_value(&event.lead.id)],
            )
            .await?
            .get::<_, bool>(0);
        if handled {
            tracing::info!(lead = %event.lead.id, event = %event.id, "shared store: a reminder for a lead handled meanwhile; not delivered");
            deliver = false;
        }
    }
    let body = serde_json::to_string(&event)?;
    let (call_id, lead_id) = (super::text_value(event.call_id()), super::text_value(&event.lead.id));
    let row = tx
        .query_opt(
            "INSERT INTO events (id, kind, call_id, lead_id, node, created_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO NOTHING RETURNING seq",
            &[&event.id, &event.kind.as_str(), &call_id, &lead_id, &node, &created_ms, &body],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let seq: i64 = row.get(0);
    for spec in shared.iter().filter(|s| deliver && s.takes(&event)) {
        tx.execute(
            "INSERT INTO deliveries (seq, sink, call_id, state, next_ms) VALUES ($1, $2, $3, 'pending', backstop_now_ms())",
            &[&seq, &spec.name, &call_id],
        )
        .await?;
    }
    Ok(true)
}

/// Commit `event` (committed locally at `created_ms`) to the shared store,
/// with deliveries for the sinks in `shared` that take it. True when it was
/// new there. With `recordings`, the recordings the event names are
/// uploaded from that directory in the same transaction
/// (`cluster::recordings`).
pub async fn ship(
    cluster: &Cluster,
    event: &Event,
    created_ms: i64,
    shared: &[SinkSpec],
    recordings: Option<&std::path::Path>,
) -> Result<bool, ClusterError> {
    // The whole transaction is bounded (a statement timeout bounds each
    // statement only): abandoned, it rolls back, and the event ships again.
    tokio::time::timeout(super::TRANSACTION_TIMEOUT, async {
        let mut client = cluster.client().await?;
        let tx = client.transaction().await?;
        if let Some(dir) = recordings {
            super::recordings::upload(&tx, cluster, dir, event).await?;
        }
        let new = insert(&tx, event, &cluster.node, created_ms, shared).await?;
        tx.commit().await?;
        Ok(new)
    })
    .await
    .unwrap_or(Err(ClusterError::TooLong))
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
