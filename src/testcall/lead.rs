//! Finding the test call's lead where the agent keeps its leads: the lead
//! store (`outbox.db`, table `leads`) and the leads file (`leads.jsonl`),
//! read only. A lead counts once its outcome is final (not `ringing`).
//!
//! Matched by Call-ID; through a PBX, which gives the agent's leg a Call-ID
//! of its own, by our From user among the leads that were not there before
//! the call.

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

/// Where to look, and what was there before the call.
pub struct LeadWatch {
    store: PathBuf,
    file: PathBuf,
    before: HashSet<String>,
}

/// The lead found, and where.
pub struct FoundLead {
    pub lead: Value,
    pub source: &'static str,
    pub after: Duration,
}

impl LeadWatch {
    /// Note the leads already in `data_dir` (so that a PBX-forwarded call's lead is told from older ones).
    pub fn new(store: PathBuf, file: PathBuf) -> LeadWatch {
        let mut before: HashSet<String> = store_ids(&store);
        if let Ok(read) = crate::sink::file::read_latest_file(&file) {
            before.extend(read.leads.iter().filter_map(|l| id(&l.value)));
        }
        LeadWatch { store, file, before }
    }

    pub fn describe(&self) -> String {
        format!("{} or {}", self.store.display(), self.file.display())
    }

    /// Wait up to `limit` for the lead of `call_id` (or, when `by_caller`,
    /// a new lead from `from_user`) with a final outcome; polled every 100 ms.
    /// The store is asked by its `call_id` column (and, by caller, only for
    /// rows that were not there before), not read whole each time.
    pub fn wait(&self, call_id: &str, from_user: &str, by_caller: bool, limit: Duration) -> Option<FoundLead> {
        let start = Instant::now();
        let deadline = start + limit;
        let caller = format!(":{from_user}@");
        let ours = |lead: &Value| {
            let matched = lead["call_id"].as_str() == Some(call_id)
                || (by_caller
                    && id(lead).is_some_and(|i| !self.before.contains(&i))
                    && lead["caller"]["uri"].as_str().is_some_and(|u| u.contains(&caller)));
            matched && lead["outcome"].as_str().is_some_and(|o| o != "ringing")
        };
        loop {
            let from_store = self.store_candidates(call_id, by_caller).into_iter().rev().find(|l| ours(l));
            let found = from_store.map(|l| (l, "outbox.db")).or_else(|| {
                let read = crate::sink::file::read_latest_file(&self.file).ok()?;
                read.leads.into_iter().rev().map(|l| l.value).find(|l| ours(l)).map(|l| (l, "leads.jsonl"))
            });
            if let Some((lead, source)) = found {
                return Some(FoundLead { lead, source, after: start.elapsed() });
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The store's leads of `call_id`, and with `by_caller` those that came in since the watch began.
    fn store_candidates(&self, call_id: &str, by_caller: bool) -> Vec<Value> {
        let Some(conn) = open(&self.store) else { return Vec::new() };
        let sql = "SELECT id, lead FROM leads WHERE call_id = ?1 OR ?2 ORDER BY received_ms";
        let Ok(mut stmt) = conn.prepare(sql) else { return Vec::new() };
        let rows = stmt
            .query_map(rusqlite::params![call_id, by_caller], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)));
        let Ok(rows) = rows else { return Vec::new() };
        rows.flatten()
            // Our call's lead is new; older leads are never parsed again.
            .filter(|(id, _)| !self.before.contains(id))
            .filter_map(|(_, lead)| serde_json::from_str(&lead).ok())
            .collect()
    }
}

fn id(lead: &Value) -> Option<String> {
    lead["id"].as_str().map(str::to_string)
}

/// The store, read-only; none when there is no store (yet).
fn open(path: &Path) -> Option<Connection> {
    if !path.exists() {
        return None;
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.busy_timeout(Duration::from_millis(500)).ok()?;
    Some(conn)
}

/// The ids of the leads in the store.
fn store_ids(path: &Path) -> HashSet<String> {
    let Some(conn) = open(path) else { return HashSet::new() };
    let Ok(mut stmt) = conn.prepare("SELECT id FROM leads") else { return HashSet::new() };
    let ids = stmt.query_map([], |r| r.get::<_, String>(0)).map(|rows| rows.flatten().collect());
    ids.unwrap_or_default()
}
