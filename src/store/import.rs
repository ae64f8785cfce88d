//! Leads written to `leads.jsonl` before the store existed, taken in once.
//!
//! At the first start with the store, every lead that the store does not
//! hold becomes a row: first the leads of the events still in the outbox
//! (the newest event per lead: an older version may have left some that
//! no file has yet), then those of `leads.jsonl` (its last line per lead
//! id: a lead updated after its call appears again). Each is open (`new`)
//! unless it was transferred, junk if it was judged junk, and without a
//! clock: no
//! `lead.callback_overdue` is ever sent for a lead from before the upgrade.
//! A line that cannot be read is skipped with a warning. The import is
//! recorded in `store_meta` in the same transaction as the rows, so it
//! happens once, and a crash in the middle leaves it to be done again whole.

use super::{Arrival, upsert};
use crate::sink::event::{Event, EventType};
use crate::sink::outbox::Outbox;
use backstop_core::intake::lead::Lead;
use rusqlite::{OptionalExtension, params};
use std::io::BufRead;
use std::path::Path;

/// The `store_meta` key that says the import was done.
const IMPORTED: &str = "imported_leads_jsonl";

/// Import `leads.jsonl` into the store unless that was done before; how many leads were taken.
pub fn import_once(outbox: &mut Outbox, leads_jsonl: &Path) -> rusqlite::Result<usize> {
    let now_ms = crate::sink::delivery::now_ms();
    let conn = outbox.conn();
    let done = conn
        .query_row("SELECT value FROM store_meta WHERE key = ?1", params![IMPORTED], |r| r.get::<_, String>(0))
        .optional()?;
    if done.is_some() {
        return Ok(0);
    }
    let leads = match std::fs::File::open(leads_jsonl) {
        Ok(f) => latest(std::io::BufReader::new(f), leads_jsonl),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            // Not marked done: the next start tries again.
            tracing::error!(path = %leads_jsonl.display(), error = %e, "cannot read the leads file to import it into the lead store");
            return Ok(0);
        }
    };
    // IMMEDIATE: it reads, then writes, beside other writers of the file.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut taken = 0;
    // The outbox's events, newest first: the first one seen of a lead is its latest.
    let outboxed: Vec<Lead> = {
        let mut stmt = tx.prepare("SELECT seq, body FROM events ORDER BY seq DESC")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            match serde_json::from_str::<Event>(&body) {
                Ok(e) if !matches!(e.kind, EventType::LeadCallbackOverdue | EventType::LeadHandled) => out.push(e.lead),
                Ok(_) => {}
                Err(e) => tracing::warn!(seq, error = %e, "unreadable event in the outbox; not imported"),
            }
        }
        out
    };
    for lead in outboxed.iter().chain(&leads) {
        if upsert(&tx, lead, now_ms, Arrival::Import, true)?.inserted {
            taken += 1;
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO store_meta (key, value) VALUES (?1, ?2)",
        params![IMPORTED, format!("{now_ms}: {taken} leads")],
    )?;
    tx.commit()?;
    Ok(taken)
}

/// Each lead's last line, in the order the leads first appear; unreadable lines skipped with a warning.
fn latest(reader: impl BufRead, path: &Path) -> Vec<Lead> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: std::collections::HashMap<String, Lead> = Default::default();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "leads file unreadable from here; importing what came before");
                break;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Lead>(&line) {
            Ok(lead) => {
                if by_id.insert(lead.id.clone(), lead.clone()).is_none() {
                    order.push(lead.id);
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "not a lead; skipped in the import")
            }
        }
    }
    order.into_iter().filter_map(|id| by_id.remove(&id)).collect()
}
