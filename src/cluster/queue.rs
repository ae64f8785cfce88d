//! The shared deliveries: what a webhook or text-back worker does on a
//! cluster. A claim takes due rows with `FOR UPDATE SKIP LOCKED`, so two
//! nodes never take one row at once, and leases them to this node for
//! `lease`: a node that dies mid-delivery leaves them to the others once
//! the lease runs out. Only a call's oldest pending event is due, as in the
//! node's own outbox, so a call's events reach a sink in order.

use super::{Cluster, ClusterError};
use crate::sink::event::Event;
use crate::sink::outbox::Due;
use std::time::Duration;

/// Claim up to `limit` due deliveries for `sink`.
pub async fn claim(cluster: &Cluster, sink: &str, limit: i64) -> Result<Vec<Due>, ClusterError> {
    let lease_ms = cluster.settings.lease.as_millis() as i64;
    let client = cluster.client().await?;
    let rows = client
        .query(
            "WITH now AS MATERIALIZED (SELECT backstop_now_ms() AS ms),
             due AS (
                SELECT d.seq FROM deliveries d, now
                WHERE d.sink = $1 AND d.state = 'pending' AND d.next_ms <= now.ms
                  AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= now.ms)
                  AND NOT EXISTS (
                    SELECT 1 FROM deliveries p
                    WHERE p.sink = d.sink AND p.state = 'pending' AND p.call_id = d.call_id AND p.seq < d.seq)
                ORDER BY d.seq LIMIT $2
                FOR UPDATE OF d SKIP LOCKED)
             UPDATE deliveries d SET lease_until_ms = (SELECT ms FROM now) + $3, leased_by = $4
             FROM due, events e
             WHERE d.sink = $1 AND d.seq = due.seq AND e.seq = d.seq
             RETURNING d.seq, d.attempts, e.body, e.created_ms",
            &[&sink, &limit, &lease_ms, &cluster.node],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.get(0);
        let body: String = row.get(2);
        match serde_json::from_str::<Event>(&body) {
            Ok(event) => out.push(Due { seq, event, attempts: row.get::<_, i32>(1) as u32, created_ms: row.get(3) }),
            // Likely a newer node's: left leased, for another node (or this
            // one, upgraded) to take when the lease ends, never dead-lettered here.
            Err(e) => {
                tracing::warn!(seq, sink = %crate::metrics::sink_label(sink), error = %e, "an event in the shared store this version cannot read; left for a node that can")
            }
        }
    }
    Ok(out)
}

/// How long until `sink` may have something due (bounded by the caller).
pub async fn next_due_in(cluster: &Cluster, sink: &str) -> Result<Option<Duration>, ClusterError> {
    let client = cluster.client().await?;
    let row = client
        .query_one(
            "SELECT MIN(GREATEST(next_ms, COALESCE(lease_until_ms, 0))) - backstop_now_ms()
             FROM deliveries WHERE sink = $1 AND state = 'pending'",
            &[&sink],
        )
        .await?;
    Ok(row.get::<_, Option<i64>>(0).map(|ms| Duration::from_millis(ms.max(0) as u64)))
}

pub async fn mark_done(cluster: &Cluster, sink: &str, seq: i64) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    client
        .execute(
            "UPDATE deliveries SET state = 'done', done_ms = backstop_now_ms(), attempts = attempts + 1,
                last_error = NULL, lease_until_ms = NULL
             WHERE seq = $1 AND sink = $2",
            &[&seq, &sink],
        )
        .await?;
    Ok(())
}

/// Try again in `wait`; only while this node still holds the lease (another
/// node that took it over after the lease ran out decides from then on).
pub async fn mark_retry(
    cluster: &Cluster,
    sink: &str,
    seq: i64,
    wait: Duration,
    error: &str,
) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    client
        .execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_ms = backstop_now_ms() + $3, last_error = $4,
                lease_until_ms = NULL
             WHERE seq = $1 AND sink = $2 AND state = 'pending' AND leased_by = $5",
            &[&seq, &sink, &(wait.as_millis() as i64), &error, &cluster.node],
        )
        .await?;
    Ok(())
}

pub async fn mark_dead(cluster: &Cluster, sink: &str, seq: i64, error: &str) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    client
        .execute(
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = $3, lease_until_ms = NULL
             WHERE seq = $1 AND sink = $2 AND state = 'pending'",
            &[&seq, &sink, &error],
        )
        .await?;
    Ok(())
}
