//! Leads written to `leads.jsonl` before the store existed, taken in once.
//!
//! At the first start with the store, every lead of `leads.jsonl` (its last
//! line per lead id: a lead updated after its call appears again) that the
//! store does not hold becomes a row: open (`new`) unless it was
//! transferred, junk if it was judged junk, and without a clock: no
//! `lead.callback_overdue` is ever sent for a lead from before the upgrade.
//! A line that cannot be read is skipped with a warning. The import is
//! recorded in `store_meta` in the same transaction as the rows, so it
//! happens once, and a crash in the middle leaves it to be done again whole.

use super::{Arrival, upsert};
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
    let tx = conn.transaction()?;
    let mut taken = 0;
    for lead in &leads {
        if upsert(&tx, lead, now_ms, Arrival::Import, true)? {
            taken += 1;
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO store_meta (key, value) VALUES (?1, ?2)",
        params![IMPORTED, format!("{now_ms} {taken} of {}", leads.len())],
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
