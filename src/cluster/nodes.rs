//! Heartbeats, and what happens when a node stops sending them. Each node
//! writes `seen_ms` every `heartbeat`, on connections of its own (a pool
//! busy with deliveries never delays it). A node silent past `dead_after`
//! is reaped in one transaction, which exactly one survivor wins (its
//! `UPDATE` takes the row): the row marked, and a `lead.completed`
//! (`interrupted`, ended by `error`) put in the shared store, with its
//! deliveries, for every call the dead node had open (a `call.missed` with
//! no `lead.completed`). Both or neither: a survivor that dies mid-way
//! leaves the node to be reaped again. The events carry the dead node's
//! name and keyed ids, as its own restart makes them, so that restart sends
//! nothing twice, and every node (the survivor too) follows them.
//!
//! A node reaps only after its own heartbeats have gone through for
//! `dead_after`: after a database outage every node is silent for a while,
//! and the first one back must not take the others for dead.
//!
//! Beside it, `housekeeping` prunes old events (one node at a time, in
//! batches), reads the shared sinks' figures for the metrics, and takes
//! this node's SMS opt-outs into the shared store.

use super::{Cluster, ClusterError};
use crate::sink::delivery::{Publisher, interrupted, now_ms};
use crate::sink::event::Event;
use crate::sink::outbox::SinkSpec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often old events are removed from the shared store.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// How often the shared sinks' figures are read for the metrics.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

/// Calls removed per statement when pruning.
const PRUNE_BATCH: i64 = 2000;

/// Say this node is alive. Returns the node that reaped it since its last
/// heartbeat, if one did (itself, after a clean stop).
pub async fn beat(cluster: &Cluster) -> Result<Option<String>, ClusterError> {
    // Single statements, no transaction held: a node frozen mid-heartbeat
    // holds no lock a survivor's reaping would wait on. `SET` reads the row
    // as it is when updated, so `last_reaped_by` is the mark being cleared.
    let client = cluster.control().await?;
    let row = client
        .query_opt(
            "UPDATE nodes SET seen_ms = backstop_now_ms(), last_reaped_by = reaped_by, reaped_ms = NULL, reaped_by = NULL
             WHERE node = $1 RETURNING last_reaped_by",
            &[&cluster.node],
        )
        .await?;
    if let Some(row) = row {
        return Ok(row.get::<_, Option<String>>(0));
    }
    client
        .execute(
            "INSERT INTO nodes (node, started_ms, seen_ms) VALUES ($1, backstop_now_ms(), backstop_now_ms())
             ON CONFLICT (node) DO UPDATE SET seen_ms = backstop_now_ms()",
            &[&cluster.node],
        )
        .await?;
    Ok(None)
}

/// Reap the nodes silent past `dead_after` and close their open calls, in
/// one transaction; each dead node with how many calls it had open.
pub async fn reap(cluster: &Cluster, shared: &[SinkSpec]) -> Result<Vec<(String, usize)>, ClusterError> {
    let dead_ms = cluster.settings.dead_after.as_millis() as i64;
    let mut client = cluster.control().await?;
    let tx = client.transaction().await?;
    let dead: Vec<String> = tx
        .query(
            "UPDATE nodes SET reaped_ms = backstop_now_ms(), reaped_by = $1
             WHERE node <> $1 AND reaped_ms IS NULL AND seen_ms < backstop_now_ms() - $2
             RETURNING node",
            &[&cluster.node, &dead_ms],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for node in dead {
        // Its claims stay its own until their lease ends: a node only
        // frozen (not dead) may still finish them, and handing them on now
        // would deliver them twice.
        let open = open_calls(&tx, &node).await?;
        let n = open.len();
        for missed in open {
            super::ship::insert(&tx, &interrupted(missed), &node, now_ms(), shared).await?;
        }
        out.push((node, n));
    }
    tx.commit().await?;
    Ok(out)
}

/// The `call.missed` of each call `node` had open.
async fn open_calls(tx: &tokio_postgres::Transaction<'_>, node: &str) -> Result<Vec<Event>, ClusterError> {
    let rows = tx
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

/// A clean stop: this node has no call open and nothing left to ship, so
/// it marks itself gone (reaped by itself) and no survivor looks for its
/// calls. Its next heartbeat takes it back.
pub async fn leave(cluster: &Cluster) -> Result<(), ClusterError> {
    let client = cluster.control().await?;
    client
        .execute("UPDATE nodes SET reaped_ms = backstop_now_ms(), reaped_by = $1 WHERE node = $1", &[&cluster.node])
        .await?;
    Ok(())
}

/// At a stop: the deliveries this node claimed and did not finish are the
/// others' at once, not after the lease.
pub async fn release_leases(cluster: &Cluster) -> Result<u64, ClusterError> {
    let client = cluster.control().await?;
    Ok(client
        .execute(
            "UPDATE deliveries SET lease_until_ms = NULL, leased_by = NULL WHERE leased_by = $1 AND state = 'pending'",
            &[&cluster.node],
        )
        .await?)
}

/// Remove the calls whose every event is older than `keep` and delivered
/// (or dead) everywhere, a batch at a time, one node at a time. A call goes
/// whole, so a `call.missed` never outlives its `lead.completed` and looks
/// open. Returns how many events went (0 when another node is pruning).
pub async fn prune(cluster: &Cluster, keep: Duration) -> Result<u64, ClusterError> {
    let mut client = cluster.client().await?;
    let mut total = 0;
    loop {
        let tx = client.transaction().await?;
        let mine: bool =
            tx.query_one("SELECT pg_try_advisory_xact_lock(hashtext('backstop prune'))", &[]).await?.get(0);
        if !mine {
            return Ok(total);
        }
        let n = tx
            .execute(
                "WITH horizon AS MATERIALIZED (SELECT backstop_now_ms() - $1 AS ms),
                      old AS (
                        SELECT DISTINCT e.call_id FROM events e, horizon h
                        WHERE e.inserted_ms < h.ms
                          AND NOT EXISTS (SELECT 1 FROM events x WHERE x.call_id = e.call_id AND x.inserted_ms >= h.ms)
                          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.call_id = e.call_id AND d.state = 'pending')
                        LIMIT $2)
                 DELETE FROM events WHERE call_id IN (SELECT call_id FROM old)",
                &[&(keep.as_millis() as i64), &PRUNE_BATCH],
            )
            .await?;
        tx.commit().await?;
        total += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Heartbeats and reaping until `shutdown` flips.
pub async fn run(cluster: Arc<Cluster>, publisher: Publisher, mut shutdown: watch::Receiver<bool>) {
    let every = cluster.settings.heartbeat;
    // The reaping runs beside the heartbeat, never in its way.
    let (up_tx, up_rx) = watch::channel(None);
    let reaper = tokio::spawn(reaping(cluster.clone(), publisher.clone(), up_rx, shutdown.clone()));
    let _stop_reaper = AbortOnDrop(reaper);
    // Since when every heartbeat went through.
    let mut up_since: Option<Instant> = None;
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
                let by_other = reaped_by.filter(|by| *by != cluster.node);
                if up_since.is_none() {
                    tracing::info!(node = %cluster.node, "shared store: heartbeats going through");
                    up_since = Some(Instant::now());
                }
                match by_other {
                    Some(by) if first => {
                        tracing::info!(node = %cluster.node, %by, "shared store: while this node was down, another closed its open calls")
                    }
                    Some(by) => {
                        tracing::error!(node = %cluster.node, %by, "shared store: this node was taken for dead (no heartbeat for [store] dead_after_secs); the calls it had open then were closed as interrupted by the other node")
                    }
                    None => {}
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
        let _ = up_tx.send(up_since);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// This node's opt-outs changed after `since` into the shared store
/// (`textback::shared::upload_opt_outs`): a node joining a cluster brings
/// the STOPs it was sent, and a STOP taken while the database was away
/// follows when it is back. Returns the new watermark.
async fn upload_opt_outs(cluster: &Cluster, publisher: &Publisher, since: i64) -> i64 {
    let rows = match publisher.with_db(move |c| crate::textback::db::opt_outs_since(c, since)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "shared store: this node's opt-outs could not be read");
            return since;
        }
        Err(e) => {
            tracing::warn!(error = %e, "shared store: this node's opt-outs could not be read");
            return since;
        }
    };
    let Some(newest) = rows.iter().map(|r| r.5).max() else { return since };
    match crate::textback::shared::upload_opt_outs(cluster, &rows).await {
        Ok(n) => {
            tracing::info!(rows = rows.len(), changed = n, "shared store: this node's SMS opt-outs taken in");
            newest
        }
        Err(e) => {
            tracing::warn!(error = %e, "shared store: this node's SMS opt-outs could not be taken in yet");
            since
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reap dead nodes every heartbeat, once this node's own heartbeats have
/// gone through for `dead_after` (`up`: since when they have). A reaping
/// that takes longer than `TRANSACTION_TIMEOUT` is abandoned (rolled back).
async fn reaping(
    cluster: Arc<Cluster>,
    publisher: Publisher,
    up: watch::Receiver<Option<Instant>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (every, dead_after) = (cluster.settings.heartbeat, cluster.settings.dead_after);
    loop {
        let up_since = *up.borrow();
        if up_since.is_some_and(|t| t.elapsed() >= dead_after) {
            let shared = publisher.shared_specs();
            match tokio::time::timeout(super::TRANSACTION_TIMEOUT, reap(&cluster, &shared)).await {
                Ok(Ok(dead)) => {
                    for (node, calls) in dead {
                        if calls == 0 {
                            tracing::info!(%node, "shared store: node silent past dead_after_secs, with no call open");
                        } else {
                            tracing::warn!(%node, calls, "shared store: node silent past dead_after_secs; its open calls are closed as interrupted");
                        }
                    }
                    publisher.wake_shared();
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "shared store: looking for dead nodes failed; trying again"),
                Err(_) => tracing::warn!("shared store: looking for dead nodes took too long; abandoned, trying again"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// Pruning and the metrics' figures until `shutdown` flips: slow
/// statements, kept away from the heartbeat.
pub async fn housekeeping(
    cluster: Arc<Cluster>,
    publisher: Publisher,
    keep: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_prune = Instant::now();
    let mut opt_outs_upto = i64::MIN;
    loop {
        opt_outs_upto = upload_opt_outs(&cluster, &publisher, opt_outs_upto).await;
        if let Err(e) = cluster.read_figures().await {
            tracing::debug!(error = %e, "shared store: the delivery figures could not be read");
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match prune(&cluster, keep).await {
                Ok(n) if n > 0 => tracing::debug!(events = n, "shared store: old events removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "shared store: pruning failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(FIGURES_EVERY) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}
