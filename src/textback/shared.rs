//! The text-back's tables in the cluster's shared store (`[store]`): the
//! same decisions as `db`, on PostgreSQL, so that a caller is texted once
//! whichever node delivers the `call.missed`, and a STOP that reached any
//! node is honoured by all. Claims for one caller and sending number are
//! serialised by an advisory lock on the pair, as SQLite's write lock
//! serialises them on one node.

use super::db::{ANY_SENDER, Claim, Key, Request};
use crate::cluster::{Cluster, ClusterError, text_value};
use backstop_core::textback::{Decision, decide};

/// [`super::db::claim`], on the shared store. What the lead should show
/// (skipped, or the outcome of an earlier attempt) is the caller's to record.
/// `local`: this node's own opt-out rows for the caller ([`super::db::opt_out_rows`]):
/// for each sender key the newer of its row and the shared one decides.
pub async fn claim(
    cluster: &Cluster,
    r: &Request<'_>,
    local: &[(String, bool, i64)],
    now_ms: i64,
) -> Result<Claim, ClusterError> {
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
        // Per sender key (ours, and every sender), the newer row of this
        // node's table and the shared one: a STOP taken here before the
        // store had it counts, and a START anywhere after it lifts it.
        let shared: Vec<(String, bool, i64)> = tx
            .query(
                "SELECT sender, opted_out, updated_ms FROM sms_opt_outs WHERE number = $1 AND sender IN ($2, $3)",
                &[n, &r.sender, &ANY_SENDER],
            )
            .await?
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        facts.opted_out = [r.sender, ANY_SENDER].iter().any(|key| {
            let newest = shared.iter().chain(local.iter()).filter(|(s, _, _)| s == key).max_by_key(|(_, _, at)| *at);
            newest.is_some_and(|(_, out, _)| *out)
        });
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
    let client = cluster.client().await?;
    let mut n = 0;
    for (number, sender, opted_out, keyword, account_sid, updated_ms) in rows {
        let (number, sender, keyword) = (text_value(number), text_value(sender), text_value(keyword));
        let account_sid = account_sid.as_deref().map(text_value);
        // One row at a time: a row the store refuses for what it holds is skipped, not a wall for the rest.
        let r = client
            .execute(
                "INSERT INTO sms_opt_outs (number, sender, opted_out, keyword, account_sid, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (number, sender) DO UPDATE SET opted_out = excluded.opted_out, keyword = excluded.keyword,
                     account_sid = excluded.account_sid, updated_ms = excluded.updated_ms
                 WHERE excluded.updated_ms > sms_opt_outs.updated_ms",
                &[&number, &sender, opted_out, &keyword, &account_sid, updated_ms],
            )
            .await
            .map_err(ClusterError::from);
        match r {
            Ok(k) => n += k,
            Err(e) if e.is_permanent() => {
                tracing::error!(error = %e, "shared store: an SMS opt-out it refuses; kept on this node only")
            }
            Err(e) => return Err(e),
        }
    }
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
