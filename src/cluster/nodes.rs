//! Heartbeats, and what happens when a node stops sending them. Each node
//! writes `seen_ms` every `heartbeat`. A node silent past `dead_after` is
//! reaped by one UPDATE, which exactly one survivor wins; that survivor
//! publishes `lead.completed` (`interrupted`, ended by `error`) for every
//! call the dead node had open: a `call.missed` in the shared store with no
//! `lead.completed`. The ids are keyed, as a restart's are, so the dead
//! node coming back and closing the same calls sends nothing twice.
//!
//! A node reaps only after its own heartbeats have gone through for
//! `dead_after`: after a database outage every node is silent for a while,
//! and the first one back must not take the others for dead.

use super::{Cluster, ClusterError};
use crate::sink::delivery::{Publisher, interrupted};
use crate::sink::event::Event;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the shared sinks' figures are read for the metrics.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

/// How often old events are removed from the shared store.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Say this node is alive. Returns the node that reaped it, when one did
/// since its last heartbeat (it was taken for dead while it lived).
pub async fn beat(cluster: &Cluster) -> Result<Option<String>, ClusterError> {
    let client = cluster.client().await?;
    let was = client.query_opt("SELECT reaped_by FROM nodes WHERE node = $1", &[&cluster.node]).await?;
    client
        .execute(
            "INSERT INTO nodes (node, started_ms, seen_ms) VALUES ($1, backstop_now_ms(), backstop_now_ms())
             ON CONFLICT (node) DO UPDATE SET seen_ms = backstop_now_ms(), reaped_ms = NULL, reaped_by = NULL",
            &[&cluster.node],
        )
        .await?;
    Ok(was.and_then(|r| r.get::<_, Option<String>>(0)))
}

/// Claim the nodes silent past `dead_after`: each is returned to one caller only.
pub async fn reap(cluster: &Cluster) -> Result<Vec<String>, ClusterError> {
    let dead_ms = cluster.settings.dead_after.as_millis() as i64;
    let client = cluster.client().await?;
    let rows = client
        .query(
            "UPDATE nodes SET reaped_ms = backstop_now_ms(), reaped_by = $1
             WHERE node <> $1 AND reaped_ms IS NULL AND seen_ms < backstop_now_ms() - $2
             RETURNING node",
            &[&cluster.node, &dead_ms],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// A clean stop: this node has no call open and nothing left to ship, so
/// it marks itself gone (reaped by itself) and no survivor looks for its
/// calls. It is taken back by its next heartbeat.
pub async fn leave(cluster: &Cluster) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    client
        .execute("UPDATE nodes SET reaped_ms = backstop_now_ms(), reaped_by = $1 WHERE node = $1", &[&cluster.node])
        .await?;
    Ok(())
}

/// Give a reaped node back (its calls could not be closed): the next round reaps it again.
async fn unreap(cluster: &Cluster, node: &str) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    client
        .execute(
            "UPDATE nodes SET reaped_ms = NULL, reaped_by = NULL WHERE node = $1 AND reaped_by = $2",
            &[&node, &cluster.node],
        )
        .await?;
    Ok(())
}

/// The `call.missed` of each call `node` had open.
pub async fn open_calls(cluster: &Cluster, node: &str) -> Result<Vec<Event>, ClusterError> {
    let client = cluster.client().await?;
    let rows = client
        .query(
            "SELECT m.body FROM events m
             WHERE m.node = $1 AND m.kind = 'call.missed' AND NOT EXISTS (
                SELECT 1 FROM events c WHERE c.call_id = m.call_id AND c.kind = 'lead.completed')
             ORDER BY m.seq",
            &[&node],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        match serde_json::from_str::<Event>(row.get(0)) {
            Ok(e) => out.push(e),
            Err(e) => {
                tracing::error!(%node, error = %e, "shared store: unreadable call.missed; its call is not closed")
            }
        }
    }
    Ok(out)
}

/// Remove the calls whose every event is older than `keep` and delivered
/// (or dead) everywhere. A call goes whole, so a `call.missed` never
/// outlives its `lead.completed` and looks open.
pub async fn prune(cluster: &Cluster, keep: Duration) -> Result<u64, ClusterError> {
    let client = cluster.client().await?;
    let n = client
        .execute(
            "DELETE FROM events e
             WHERE e.inserted_ms < backstop_now_ms() - $1
               AND NOT EXISTS (SELECT 1 FROM events x WHERE x.call_id = e.call_id
                                 AND x.inserted_ms >= backstop_now_ms() - $1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.call_id = e.call_id AND d.state = 'pending')",
            &[&(keep.as_millis() as i64)],
        )
        .await?;
    Ok(n)
}

/// Close a dead node's open calls from this node; how many.
async fn close_calls(cluster: &Cluster, publisher: &Publisher, node: &str) -> Result<usize, ClusterError> {
    let open = open_calls(cluster, node).await?;
    let n = open.len();
    for missed in open {
        let call_id = missed.call_id().to_string();
        if let Err(e) = publisher.publish(interrupted(missed)).await {
            // Held in memory and committed later: it is not lost.
            tracing::warn!(%node, %call_id, error = %e, "shared store: the interrupted lead is held");
        }
    }
    Ok(n)
}

/// Heartbeats, reaping and pruning until `shutdown` flips.
pub async fn run(cluster: Arc<Cluster>, publisher: Publisher, keep: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = cluster.settings.heartbeat;
    let dead_after = cluster.settings.dead_after;
    // Since when every heartbeat went through.
    let mut up_since: Option<Instant> = None;
    let mut last_prune = Instant::now();
    let mut last_figures: Option<Instant> = None;
    let mut never_beat = true;
    let mut warned = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match beat(&cluster).await {
            Ok(reaped_by) => {
                // The first heartbeat of this process: a reaping found then happened while it was down.
                let first = std::mem::replace(&mut never_beat, false);
                if let Some(by) = reaped_by.as_ref().filter(|by| first && **by != cluster.node) {
                    tracing::info!(node = %cluster.node, %by, "shared store: while this node was down, another closed its open calls");
                }
                if up_since.is_none() {
                    tracing::info!(node = %cluster.node, "shared store: heartbeats going through");
                    up_since = Some(Instant::now());
                }
                if let Some(by) = reaped_by.filter(|by| !first && *by != cluster.node) {
                    tracing::error!(node = %cluster.node, %by, "shared store: this node was taken for dead (no heartbeat for [store] dead_after_secs); the calls it had open then were closed as interrupted by the other node");
                }
            }
            Err(e) => {
                if never_beat && !std::mem::replace(&mut warned, true) {
                    tracing::warn!(error = %e, "shared store: no heartbeat yet; events wait in the outbox until the database is reachable");
                }
                if up_since.take().is_some() {
                    tracing::warn!(error = %e, "shared store: heartbeat failed; events wait in the outbox until the database is back");
                }
            }
        }
        if up_since.is_some_and(|t| t.elapsed() >= dead_after) {
            match reap(&cluster).await {
                Ok(dead) => {
                    for node in dead {
                        match close_calls(&cluster, &publisher, &node).await {
                            Ok(0) => {
                                tracing::info!(%node, "shared store: node silent past dead_after_secs, with no call open")
                            }
                            Ok(n) => {
                                tracing::warn!(%node, calls = n, "shared store: node silent past dead_after_secs; its open calls are closed as interrupted")
                            }
                            Err(e) => {
                                tracing::warn!(%node, error = %e, "shared store: the dead node's open calls could not be read; trying again");
                                if let Err(e) = unreap(&cluster, &node).await {
                                    tracing::error!(%node, error = %e, "shared store: the dead node's open calls wait for its restart");
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "shared store: looking for dead nodes failed"),
            }
        }
        if up_since.is_some() && last_figures.is_none_or(|t| t.elapsed() >= FIGURES_EVERY) {
            last_figures = Some(Instant::now());
            if let Err(e) = cluster.read_figures().await {
                tracing::debug!(error = %e, "shared store: the delivery figures could not be read");
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match prune(&cluster, keep).await {
                Ok(n) if n > 0 => tracing::debug!(events = n, "shared store: old events removed"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "shared store: pruning failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}
