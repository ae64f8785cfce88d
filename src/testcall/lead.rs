//! Finding the test call's lead where the agent keeps its leads: the lead
//! store (`outbox.db`, table `leads`) and the leads file (`leads.jsonl`),
//! read only. A lead counts once its outcome is final (not `ringing`).
//!
//! Matched by Call-ID; through a PBX, which gives the agent's leg a Call-ID
//! of its own, by our From user among the leads that were not there before
//! the call. The store is asked two bounded questions, never read whole:
//! its leads of our Call-ID (the `leads_call` index), and, by caller, the
//! rows added since the watch began (a rowid range, at most
//! [`NEW_ROWS_LIMIT`] of them).

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

/// The leads of one Call-ID: by the `leads_call` index.
const BY_CALL_ID: &str = "SELECT lead FROM leads WHERE call_id = ?1 ORDER BY received_ms";
/// The leads added since the watch began: a range of the table's own rowid b-tree.
const NEW_ROWS: &str = "SELECT lead FROM leads WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";
/// The most new rows read per poll when matching by caller: a test call
/// comes in within seconds, so its lead is among the first new ones.
pub const NEW_ROWS_LIMIT: i64 = 500;

/// Where to look, and what was there before the call.
pub struct LeadWatch {
    store: PathBuf,
    file: PathBuf,
    /// The store's highest rowid when the watch began (0: no store, or empty).
    store_rowid: i64,
    /// The ids of the leads already in the leads file.
    before: HashSet<String>,
}

/// The lead found, and where.
pub struct FoundLead {
    pub lead: Value,
    pub source: &'static str,
    pub after: Duration,
}

impl LeadWatch {
    /// Note where the store's rows end and the leads already in the file
    /// (so that a PBX-forwarded call's lead is told from older ones).
    pub fn new(store: PathBuf, file: PathBuf) -> LeadWatch {
        let store_rowid = open(&store).and_then(|c| last_rowid(&c).ok()).unwrap_or(0);
        let mut before = HashSet::new();
        if let Ok(read) = crate::sink::file::read_latest_file(&file) {
            before.extend(read.leads.iter().filter_map(|l| id(&l.value)));
        }
        LeadWatch { store, file, store_rowid, before }
    }

    pub fn describe(&self) -> String {
        format!("{} or {}", self.store.display(), self.file.display())
    }

    /// Wait up to `limit` for the lead of `call_id` (or, when `by_caller`,
    /// a new lead from `from_user`) with a final outcome; polled every 100 ms.
    pub fn wait(&self, call_id: &str, from_user: &str, by_caller: bool, limit: Duration) -> Option<FoundLead> {
        let start = Instant::now();
        let deadline = start + limit;
        let caller = format!(":{from_user}@");
        let final_outcome = |lead: &Value| lead["outcome"].as_str().is_some_and(|o| o != "ringing");
        let from_caller = |lead: &Value| lead["caller"]["uri"].as_str().is_some_and(|u| u.contains(&caller));
        loop {
            let from_store = self.store_lead(call_id, by_caller.then_some(&from_caller as &dyn Fn(&Value) -> bool));
            let found = from_store.map(|l| (l, "outbox.db")).or_else(|| {
                let read = crate::sink::file::read_latest_file(&self.file).ok()?;
                let ours = |lead: &Value| {
                    let matched = lead["call_id"].as_str() == Some(call_id)
                        || (by_caller && id(lead).is_some_and(|i| !self.before.contains(&i)) && from_caller(lead));
                    matched && final_outcome(lead)
                };
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

    /// The store's final lead of `call_id`, else (with `by_caller`) the
    /// latest final lead among the rows added since the watch began that
    /// `by_caller` accepts.
    fn store_lead(&self, call_id: &str, by_caller: Option<&dyn Fn(&Value) -> bool>) -> Option<Value> {
        let conn = open(&self.store)?;
        let final_outcome = |lead: &Value| lead["outcome"].as_str().is_some_and(|o| o != "ringing");
        let by_id = leads(&conn, BY_CALL_ID, rusqlite::params![call_id]);
        if let Some(lead) = by_id.into_iter().rev().find(final_outcome) {
            return Some(lead);
        }
        let matches = by_caller?;
        let new = leads(&conn, NEW_ROWS, rusqlite::params![self.store_rowid, NEW_ROWS_LIMIT]);
        new.into_iter().rev().find(|l| matches(l) && final_outcome(l))
    }
}

/// The leads a query returns, parsed (unreadable rows skipped; any SQLite error: none).
fn leads(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<Value> {
    let Ok(mut stmt) = conn.prepare(sql) else { return Vec::new() };
    let Ok(rows) = stmt.query_map(params, |r| r.get::<_, String>(0)) else { return Vec::new() };
    rows.flatten().filter_map(|lead| serde_json::from_str(&lead).ok()).collect()
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

/// The highest rowid in the store's leads (the end of the rowid b-tree, not a scan).
fn last_rowid(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(rowid), 0) FROM leads", [], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn put(conn: &Connection, id: &str, call_id: &str, caller: &str, outcome: &str, ms: i64) {
        let lead = serde_json::json!({
            "id": id, "call_id": call_id, "outcome": outcome,
            "caller": { "uri": format!("sip:{caller}@192.0.2.1") },
        });
        conn.execute(
            "INSERT INTO leads (id, call_id, line, received_ms, lead, updated_ms) VALUES (?1, ?2, 'default', ?3, ?4, ?3)
             ON CONFLICT(id) DO UPDATE SET lead = excluded.lead",
            rusqlite::params![id, call_id, ms, lead.to_string()],
        )
        .unwrap();
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let params: Vec<i64> = (0..stmt.parameter_count() as i64).collect();
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3)).unwrap();
        rows.flatten().collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn the_store_is_asked_by_call_id_and_by_the_rows_since_the_watch_began_never_whole() {
        let dir = Scratch(std::env::temp_dir().join(format!("backstop-leadwatch-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let db = dir.0.join("outbox.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(crate::store::SCHEMA).unwrap();
        // An older lead from the same caller: never ours.
        put(&conn, "old", "c-old", "test-call", "completed", 1_000);
        for i in 0..50 {
            put(&conn, &format!("other-{i}"), &format!("c-{i}"), "+15550000000", "completed", 2_000 + i);
        }
        let watch = LeadWatch::new(db.clone(), dir.0.join("leads.jsonl"));
        assert_eq!(watch.store_rowid, 51);

        // SQLite's plans: the Call-ID by its index, the new rows by a rowid range.
        let by_id = plan(&conn, BY_CALL_ID);
        assert!(by_id.contains("USING INDEX leads_call"), "{by_id}");
        let new = plan(&conn, NEW_ROWS);
        assert!(new.contains("USING INTEGER PRIMARY KEY (rowid>?)"), "{new}");
        assert!(!by_id.starts_with("SCAN") && !new.starts_with("SCAN"), "{by_id} / {new}");

        let quick = Duration::from_millis(1);
        assert!(watch.wait("c-ours", "test-call", true, quick).is_none(), "the older lead of the caller is not ours");
        // Through a PBX: another Call-ID, our From user, still ringing, then final.
        put(&conn, "new", "pbx-leg", "test-call", "ringing", 9_000);
        assert!(watch.wait("c-ours", "test-call", true, quick).is_none(), "a ringing lead is not final");
        put(&conn, "new", "pbx-leg", "test-call", "completed", 9_000);
        let found = watch.wait("c-ours", "test-call", true, quick).expect("the new lead by caller");
        assert_eq!(found.lead["id"], "new");
        assert!(watch.wait("c-ours", "test-call", false, quick).is_none(), "not by caller: Call-ID only");
        // By Call-ID, even a lead that was there before.
        let found = watch.wait("c-old", "nobody", false, quick).expect("by call id");
        assert_eq!((found.lead["id"].as_str(), found.source), (Some("old"), "outbox.db"));
    }
}
