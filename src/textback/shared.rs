//! The text-back's tables in the cluster's shared store (`[store]`): the
//! same decisions as `db`, on PostgreSQL, so that a caller is texted once
//! whichever node delivers the `call.missed`, and a STOP that reached any
//! node is honoured by all. Claims for one caller and sending number are
//! serialised by an advisory lock on the pair, as SQLite's write lock
//! serialises them on one node.

use super::db::{ANY_SENDER, Claim, Key, Request};
use crate::cluster::{Cluster, ClusterError};
use backstop_core::textback::{Decision, decide};

/// [`super::db::claim`], on the shared store. What the lead should show
/// (skipped, or the outcome of an earlier attempt) is the caller's to record.
pub async fn claim(cluster: &Cluster, r: &Request<'_>, now_ms: i64) -> Result<Claim, ClusterError> {
    let mut client = cluster.client().await?;
    let tx = client.transaction().await?;
    let number = r.facts.caller.as_deref().and_then(backstop_core::textback::textable);
    // One claim at a time per caller and sender (or per event, without a number).
    let lock_key = match &number {
        Some(n) => format!("text_back {n} {}", r.sender),
        None => format!("text_back event {} {}", r.event_id, r.sink),
    };
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock_key]).await?;
    let prior: Option<String> = tx
        .query_opt("SELECT status FROM text_backs WHERE event_id = $1 AND sink = $2", &[&r.event_id, &r.sink])
        .await?
        .map(|row| row.get(0));
    match prior.as_deref() {
        Some("sending") => {
            set_status(&tx, r.event_id, r.sink, "unknown", Some(super::db::IN_FLIGHT), None, now_ms).await?;
            tx.commit().await?;
            return Ok(Claim::WasInFlight);
        }
        Some(s @ ("sent" | "skipped" | "unknown")) => return Ok(Claim::Done { status: s.to_string() }),
        _ => {}
    }
    let mut facts = r.facts.clone();
    if let Some(n) = &number {
        // Opted out here (`r.facts`, this node's own table) or anywhere in the cluster.
        facts.opted_out |= tx
            .query_one(
                "SELECT COALESCE(bool_or(opted_out), false) FROM sms_opt_outs WHERE number = $1 AND sender IN ($2, $3)",
                &[n, &r.sender, &ANY_SENDER],
            )
            .await?
            .get::<_, bool>(0);
        facts.last_sent_ms = tx
            .query_one(
                "SELECT MAX(sent_ms) FROM text_backs
                 WHERE number = $1 AND sender = $2 AND status IN ('sending', 'sent', 'unknown')",
                &[n, &r.sender],
            )
            .await?
            .get(0);
    }
    let claim = match decide(&facts, now_ms, r.once_per_ms) {
        Decision::Skip(reason) => {
            upsert(&tx, r, number.as_deref(), "skipped", Some(reason.as_str()), None, now_ms).await?;
            Claim::Skipped(reason)
        }
        Decision::Send { to } => {
            upsert(&tx, r, Some(&to), "sending", None, Some(now_ms), now_ms).await?;
            Claim::Send { to }
        }
    };
    tx.commit().await?;
    Ok(claim)
}

async fn upsert(
    tx: &tokio_postgres::Transaction<'_>,
    r: &Request<'_>,
    number: Option<&str>,
    status: &str,
    reason: Option<&str>,
    sent_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), ClusterError> {
    tx.execute(
        "INSERT INTO text_backs (event_id, sink, lead_id, number, sender, status, reason, sent_ms, created_ms, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (event_id, sink) DO UPDATE SET number = excluded.number, status = excluded.status,
             reason = excluded.reason, sent_ms = excluded.sent_ms, updated_ms = excluded.updated_ms",
        &[&r.event_id, &r.sink, &r.lead_id, &number, &r.sender, &status, &reason, &sent_ms, &now_ms],
    )
    .await?;
    Ok(())
}

async fn set_status(
    tx: &tokio_postgres::Transaction<'_>,
    event_id: &str,
    sink: &str,
    status: &str,
    reason: Option<&str>,
    sid: Option<&str>,
    now_ms: i64,
) -> Result<(), ClusterError> {
    tx.execute(
        "UPDATE text_backs SET status = $3, reason = $4, sid = COALESCE($5, sid), updated_ms = $6
         WHERE event_id = $1 AND sink = $2",
        &[&event_id, &sink, &status, &reason, &sid, &now_ms],
    )
    .await?;
    Ok(())
}

/// [`super::db::finish`]'s record of how a claimed send ended, on the shared store.
pub async fn finish(
    cluster: &Cluster,
    key: &Key<'_>,
    status: &str,
    reason: Option<&str>,
    sid: Option<&str>,
    now_ms: i64,
) -> Result<(), ClusterError> {
    let mut client = cluster.client().await?;
    let tx = client.transaction().await?;
    set_status(&tx, key.event_id, key.sink, status, reason, sid, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// [`super::db::set_opt_out`], on the shared store.
pub async fn set_opt_out(
    cluster: &Cluster,
    number: &str,
    sender: &str,
    opted_out: bool,
    keyword: &str,
    account_sid: Option<&str>,
    now_ms: i64,
) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    client
        .execute(
            "INSERT INTO sms_opt_outs (number, sender, opted_out, keyword, account_sid, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (number, sender) DO UPDATE SET opted_out = excluded.opted_out, keyword = excluded.keyword,
                 account_sid = excluded.account_sid, updated_ms = excluded.updated_ms",
            &[&number, &sender, &opted_out, &keyword, &account_sid, &now_ms],
        )
        .await?;
    Ok(())
}

/// Take this node's opt-outs into the shared store, the newer row winning:
/// a node that joins a cluster brings the STOPs it was sent. Returns how
/// many rows changed there.
pub async fn upload_opt_outs(cluster: &Cluster, rows: &[super::db::OptOut]) -> Result<u64, ClusterError> {
    let mut client = cluster.client().await?;
    let tx = client.transaction().await?;
    let mut n = 0;
    for (number, sender, opted_out, keyword, account_sid, updated_ms) in rows {
        n += tx
            .execute(
                "INSERT INTO sms_opt_outs (number, sender, opted_out, keyword, account_sid, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (number, sender) DO UPDATE SET opted_out = excluded.opted_out, keyword = excluded.keyword,
                     account_sid = excluded.account_sid, updated_ms = excluded.updated_ms
                 WHERE excluded.updated_ms > sms_opt_outs.updated_ms",
                &[number, sender, opted_out, keyword, account_sid, updated_ms],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Whether `number` opted out of texts from `sender` (or from every sender), cluster-wide.
pub async fn opted_out(cluster: &Cluster, number: &str, sender: &str) -> Result<bool, ClusterError> {
    let client = cluster.client().await?;
    Ok(client
        .query_one(
            "SELECT COALESCE(bool_or(opted_out), false) FROM sms_opt_outs WHERE number = $1 AND sender IN ($2, $3)",
            &[&number, &sender, &ANY_SENDER],
        )
        .await?
        .get(0))
}
