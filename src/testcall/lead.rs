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
        let mut w = LeadWatch { store, file, before: HashSet::new() };
        w.before = w.all().into_iter().filter_map(|(l, _)| id(&l)).collect();
        w
    }

    pub fn describe(&self) -> String {
        format!("{} or {}", self.store.display(), self.file.display())
    }

    /// Wait up to `limit` for the lead of `call_id` (or, when `by_caller`,
    /// a new lead from `from_user`) with a final outcome; polled every 100 ms.
    pub fn wait(&self, call_id: &str, from_user: &str, by_caller: bool, limit: Duration) -> Option<FoundLead> {
        let start = Instant::now();
        let deadline = start + limit;
        loop {
            let found = self.all().into_iter().rev().find(|(lead, _)| {
                let ours = lead["call_id"].as_str() == Some(call_id)
                    || (by_caller
                        && id(lead).is_some_and(|i| !self.before.contains(&i))
                        && lead["caller"]["uri"].as_str().is_some_and(|u| u.contains(&format!(":{from_user}@"))));
                ours && lead["outcome"].as_str().is_some_and(|o| o != "ringing")
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

    /// Every lead in the store and the file (a lead may be in both; the store's first).
    fn all(&self) -> Vec<(Value, &'static str)> {
        let mut out: Vec<(Value, &'static str)> =
            leads_file(&self.file).into_iter().map(|l| (l, "leads.jsonl")).collect();
        out.extend(lead_store(&self.store).into_iter().map(|l| (l, "outbox.db")));
        out
    }
}

fn id(lead: &Value) -> Option<String> {
    lead["id"].as_str().map(str::to_string)
}

/// The leads in the store's `leads` table; none when there is no store (yet).
fn lead_store(path: &Path) -> Vec<Value> {
    if !path.exists() {
        return Vec::new();
    }
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else { return Vec::new() };
    let _ = conn.busy_timeout(Duration::from_millis(500));
    let Ok(mut stmt) = conn.prepare("SELECT lead FROM leads ORDER BY received_ms") else { return Vec::new() };
    let rows = stmt.query_map([], |r| r.get::<_, String>(0));
    rows.map(|rows| rows.flatten().filter_map(|t| serde_json::from_str(&t).ok()).collect()).unwrap_or_default()
}

/// The leads in `leads.jsonl` (a line being written is skipped).
fn leads_file(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
