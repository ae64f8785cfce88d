//! Where the report's leads come from: the lead store (the `leads` table of
//! `DATA_DIR/outbox.db`), opened read-only so that it can run beside the
//! agent (WAL), or a `leads.jsonl` file (`--leads FILE`, or when there is
//! no store yet).
//!
//! The store holds each lead once, as it stands now (status, callback
//! clock). The file holds a line per version of a lead (a lead updated
//! after its call, once transcribed, appears again): its last line per lead
//! id is taken. A line that is not a lead is skipped and counted, never
//! fatal.

use super::ReportLead;
use backstop_core::intake::lead::Lead;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

/// What was read, and from where.
#[derive(Debug)]
pub struct Loaded {
    pub leads: Vec<ReportLead>,
    /// `store` or `leads_file`.
    pub kind: &'static str,
    pub path: PathBuf,
    /// Lines of the file (or rows of the store) that could not be read as a lead.
    pub skipped: u64,
}

/// Every lead in the store at `store`, if it has been filled (the agent
/// imports `leads.jsonl` at its first start with the store); `None` when
/// there is no store, or one from before the lead store.
pub fn from_store(store: &Path, now_ms: i64) -> anyhow::Result<Option<Loaded>> {
    use anyhow::Context;
    if !store.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening the lead store {} read-only", store.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let ready: Option<String> = conn
        .query_row("SELECT value FROM store_meta WHERE key = 'imported_leads_jsonl'", [], |r| r.get(0))
        .optional()
        .or_else(|e| match e {
            // No store_meta: an outbox.db from before the lead store.
            rusqlite::Error::SqliteFailure(_, Some(m)) if m.starts_with("no such table") => Ok(None),
            e => Err(e),
        })
        .with_context(|| format!("reading {}", store.display()))?;
    if ready.is_none() {
        return Ok(None);
    }
    // The count and the list in one read transaction, so that a lead the
    // agent adds in between is in both or neither (WAL: a snapshot).
    let tx = conn.unchecked_transaction()?;
    let total: i64 = tx.query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0))?;
    let q = crate::store::Query { view: crate::store::View::All, line: None, limit: u32::MAX, offset: 0 };
    let stored = crate::store::list(&tx, &q, now_ms).with_context(|| format!("reading {}", store.display()))?;
    tx.finish()?;
    let skipped = (total as u64).saturating_sub(stored.len() as u64);
    let leads =
        stored.into_iter().map(|s| ReportLead { urgent: s.urgent, status: Some(s.status), lead: s.lead }).collect();
    Ok(Some(Loaded { leads, kind: "store", path: store.to_path_buf(), skipped }))
}

/// Every lead of a `leads.jsonl` file, its last line per lead id
/// ([`crate::sink::file::read_latest`]); a latest line that is not a lead counts as skipped.
pub fn from_file(path: &Path) -> anyhow::Result<Loaded> {
    use anyhow::Context;
    let read = crate::sink::file::read_latest_file(path)
        .with_context(|| format!("opening the leads file {}", path.display()))?;
    let mut skipped = read.skipped;
    let leads = read
        .leads
        .into_iter()
        .filter_map(|l| serde_json::from_value::<Lead>(l.value).inspect_err(|_| skipped += 1).ok())
        .map(ReportLead::from_file)
        .collect();
    Ok(Loaded { leads, kind: "leads_file", path: path.to_path_buf(), skipped })
}
