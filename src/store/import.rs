//! Leads written to `leads.jsonl` before the store existed, taken in once. (Stub.)

use crate::sink::outbox::Outbox;
use std::path::Path;

/// Import `leads.jsonl` into the store unless that was done before; how many leads were taken.
pub fn import_once(outbox: &mut Outbox, leads_jsonl: &Path) -> rusqlite::Result<usize> {
    let _ = (outbox, leads_jsonl);
    Ok(0)
}
