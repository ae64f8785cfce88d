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
use std::io::BufRead;
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
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM leads", [], |r| r.get(0))?;
    let q = crate::store::Query { view: crate::store::View::All, line: None, limit: u32::MAX, offset: 0 };
    let stored = crate::store::list(&conn, &q, now_ms).with_context(|| format!("reading {}", store.display()))?;
    let skipped = (total as u64).saturating_sub(stored.len() as u64);
    let leads =
        stored.into_iter().map(|s| ReportLead { urgent: s.urgent, status: Some(s.status), lead: s.lead }).collect();
    Ok(Some(Loaded { leads, kind: "store", path: store.to_path_buf(), skipped }))
}

/// Every lead of a `leads.jsonl` file, its last line per lead id.
pub fn from_file(path: &Path) -> anyhow::Result<Loaded> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| format!("opening the leads file {}", path.display()))?;
    let (leads, skipped) = read_jsonl(std::io::BufReader::new(file));
    Ok(Loaded {
        leads: leads.into_iter().map(ReportLead::from_file).collect(),
        kind: "leads_file",
        path: path.to_path_buf(),
        skipped,
    })
}

/// The last version of each lead in a JSON-lines stream, in the order they
/// first appear, and how many non-blank lines were not leads (a line that
/// is not UTF-8 or not JSON is one such line; reading goes on after it).
pub fn read_jsonl(reader: impl BufRead) -> (Vec<Lead>, u64) {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: std::collections::HashMap<String, Lead> = Default::default();
    let mut skipped = 0;
    for line in reader.split(b'\n') {
        let Ok(line) = line else {
            // The file itself could not be read on: what came before stands.
            skipped += 1;
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Lead>(&line) {
            Ok(lead) => {
                if !by_id.contains_key(&lead.id) {
                    order.push(lead.id.clone());
                }
                by_id.insert(lead.id.clone(), lead);
            }
            Err(_) => skipped += 1,
        }
    }
    (order.into_iter().filter_map(|id| by_id.remove(&id)).collect(), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_counted_and_the_last_version_of_a_lead_wins() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
        let mut a = golden["lead"].clone();
        a["id"] = "a".into();
        let mut a2 = a.clone();
        a2["summary"] = "updated".into();
        let mut b = golden["lead"].clone();
        b["id"] = "b".into();
        let text = format!("{a}\nnot json\n\n{b}\n\u{0}\u{ff}\n{{\"id\":\"x\"}}\n{a2}\n{{\"trunc");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&[b'\n', 0xff, 0xfe, b'\n']);
        let (leads, skipped) = read_jsonl(&bytes[..]);
        assert_eq!(leads.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(leads[0].summary, "updated");
        assert_eq!(skipped, 5);
    }
}
