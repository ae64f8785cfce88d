//! Following the cluster: every other node's events, in the order
//! PostgreSQL took them, applied to this node's lead store
//! (`Outbox::apply_remote`), so its inbox, API, report and callback clock
//! see every lead. A quarter of a second behind at most while the database
//! is up; while it is down, the node's own leads go on as before.
//!
//! Sequence numbers are taken when a row is inserted, not when it commits,
//! so a row may appear after one with a higher number. The cursor (kept in
//! the store, across restarts) moves only over numbers seen; the rows seen
//! beyond a hole are remembered, and a hole older than [`HOLE_WAIT`] is a
//! rolled-back insert and skipped.

use super::{Cluster, ClusterError};
use crate::sink::delivery::now_ms;
use crate::sink::event::Event;
use crate::sink::outbox::Outbox;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the shared events are read when there is nothing new.
const POLL: Duration = Duration::from_millis(250);

/// Rows read at a time.
const BATCH: i64 = 500;

/// A hole in the sequence this old is a transaction that rolled back.
const HOLE_WAIT: Duration = Duration::from_secs(30);

/// Where the follower is: every number up to `cursor` is applied, and
/// `seen` holds the ones beyond it, with when they were first read.
#[derive(Debug, Default)]
pub struct Cursor {
    pub at: i64,
    seen: BTreeMap<i64, Instant>,
    /// Failed tries of the event that holds the follower up.
    tries: std::collections::HashMap<i64, u32>,
}

impl Cursor {
    pub fn new(at: i64) -> Cursor {
        Cursor { at, seen: BTreeMap::new(), tries: Default::default() }
    }

    /// The numbers beyond the cursor already read.
    fn seen(&self) -> Vec<i64> {
        self.seen.keys().copied().collect()
    }

    /// Record `seq` as applied (or not ours to apply) at `now`.
    pub fn saw(&mut self, seq: i64, now: Instant) {
        if seq > self.at {
            self.seen.entry(seq).or_insert(now);
        }
    }

    /// Move over every number seen in a row, and over holes older than
    /// [`HOLE_WAIT`]. True when it moved.
    pub fn advance(&mut self, now: Instant) -> bool {
        let from = self.at;
        while let Some((&first, &when)) = self.seen.first_key_value() {
            if first == self.at + 1 || now.duration_since(when) >= HOLE_WAIT {
                if first != self.at + 1 {
                    tracing::debug!(from = self.at, to = first, "shared store: skipping a hole in the event sequence");
                }
                self.at = first;
                self.seen.remove(&first);
            } else {
                break;
            }
        }
        self.at != from
    }
}

/// The next rows beyond `cursor` not yet seen: (seq, node, body).
async fn read(cluster: &Cluster, cursor: &Cursor) -> Result<Vec<(i64, String, String)>, ClusterError> {
    let client = cluster.client().await?;
    let rows = client
        .query(
            "SELECT seq, node, body FROM events WHERE seq > $1 AND NOT (seq = ANY($2)) ORDER BY seq LIMIT $3",
            &[&cursor.at, &cursor.seen(), &BATCH],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// How often an event that cannot be applied here is tried before it is skipped.
const MAX_TRIES: u32 = 20;

/// An error of the store as a whole, not of the event.
fn store_wide(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(DiskFull | SystemIoFailure | DatabaseBusy | DatabaseLocked | CannotOpen | OutOfMemory | ReadOnly)
    )
}

/// Apply what is new; how many rows were read. Every row is applied, this
/// node's own too: those are in its store already (`apply_remote` skips a
/// known id), except what a survivor wrote in its name while it was taken
/// for dead.
pub async fn round(cluster: &Cluster, db: &Arc<Mutex<Outbox>>, cursor: &mut Cursor) -> Result<usize, ClusterError> {
    let rows = read(cluster, cursor).await?;
    let n = rows.len();
    let parsed: Vec<(i64, Result<Event, serde_json::Error>)> =
        rows.into_iter().map(|(seq, _node, body)| (seq, serde_json::from_str::<Event>(&body))).collect();
    let db = db.clone();
    let tries = std::mem::take(&mut cursor.tries);
    let (applied, tries) = tokio::task::spawn_blocking(move || {
        let mut tries = tries;
        let mut done = Vec::new();
        for (seq, event) in parsed {
            match event {
                // One event per hold of the lock: the node's own publishes go in between.
                Ok(event) => match db.lock().unwrap_or_else(|p| p.into_inner()).apply_remote(&event, now_ms()) {
                    Ok(_) => done.push(seq),
                    Err(e) => {
                        let n = tries.entry(seq).or_insert(0);
                        *n += 1;
                        // The store itself failing (full, busy, I/O) is waited out, never skipped over.
                        if *n >= MAX_TRIES && !store_wide(&e) {
                            tracing::error!(seq, event = %event.id, error = %e, "shared store: another node's event cannot be applied here; skipped after {MAX_TRIES} tries");
                            done.push(seq);
                            continue;
                        }
                        // The store cannot take it now (a full disk): the rest waits, in order.
                        tracing::warn!(seq, error = %e, "shared store: another node's event could not be applied here; trying again");
                        break;
                    }
                },
                Err(e) => {
                    tracing::error!(seq, error = %e, "shared store: an event this version cannot read; skipped");
                    done.push(seq);
                }
            }
        }
        for seq in &done {
            tries.remove(seq);
        }
        (done, tries)
    })
    .await
    .unwrap_or_default();
    cursor.tries = tries;
    let now = Instant::now();
    for seq in applied {
        cursor.saw(seq, now);
    }
    Ok(n)
}

/// The shared database's identity (`cluster_meta`).
async fn database_id(cluster: &Cluster) -> Result<String, ClusterError> {
    let client = cluster.client().await?;
    Ok(client.query_one("SELECT id::text FROM cluster_meta LIMIT 1", &[]).await?.get(0))
}

/// Where to start: the saved cursor, when it was saved for this database;
/// else (a new node, or a database restored or recreated) its beginning.
async fn start(cluster: &Cluster, db: &Arc<Mutex<Outbox>>) -> Result<(Cursor, String), ClusterError> {
    let id = database_id(cluster).await?;
    let db = db.clone();
    let saved = tokio::task::spawn_blocking(move || db.lock().unwrap_or_else(|p| p.into_inner()).replica_cursor())
        .await
        .ok()
        .and_then(Result::ok);
    let at = match saved {
        Some((at, Some(was))) if was == id => at,
        Some((at, Some(_))) if at > 0 => {
            tracing::warn!(
                "shared store: another database than the one this node followed; following it from its beginning"
            );
            0
        }
        _ => 0,
    };
    Ok((Cursor::new(at), id))
}

/// Follow the shared events until `shutdown` flips.
pub async fn run(cluster: Arc<Cluster>, db: Arc<Mutex<Outbox>>, mut shutdown: watch::Receiver<bool>) {
    let mut state: Option<(Cursor, String)> = None;
    let mut failing = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if state.is_none() {
            state = match start(&cluster, &db).await {
                Ok(s) => Some(s),
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "shared store: cannot start following the other nodes; trying again");
                        failing = true;
                    }
                    None
                }
            };
        }
        let wait = match &mut state {
            None => Duration::from_secs(1),
            Some((cursor, _)) => match round(&cluster, &db, cursor).await {
                Ok(n) => {
                    if failing {
                        tracing::info!("shared store: following the other nodes again");
                        failing = false;
                    }
                    // A full batch read and applied: on at once. One stopped short: a pause.
                    if n as i64 == BATCH && cursor.tries.is_empty() { Duration::ZERO } else { POLL }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "shared store: cannot read the other nodes' events; this node's own calls go on");
                        failing = true;
                    }
                    Duration::from_secs(1)
                }
            },
        };
        if let Some((cursor, id)) = &mut state
            && cursor.advance(Instant::now())
        {
            let (db, at, id) = (db.clone(), cursor.at, id.clone());
            let saved = tokio::task::spawn_blocking(move || {
                db.lock().unwrap_or_else(|p| p.into_inner()).set_replica_cursor(at, &id)
            })
            .await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(error = %e, "shared store: the follower's position was not saved");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_moves_over_what_was_seen_and_over_old_holes_only() {
        let t0 = Instant::now();
        let mut c = Cursor::new(10);
        c.saw(11, t0);
        c.saw(13, t0);
        assert!(c.advance(t0));
        assert_eq!(c.at, 11, "12 is a hole: not passed yet");
        assert_eq!(c.seen(), vec![13]);
        c.saw(12, t0);
        c.advance(t0);
        assert_eq!(c.at, 13);
        c.saw(20, t0);
        assert!(!c.advance(t0 + Duration::from_secs(5)));
        assert!(c.advance(t0 + HOLE_WAIT), "a hole older than HOLE_WAIT is a rollback");
        assert_eq!(c.at, 20);
        c.saw(5, t0);
        assert!(c.seen().is_empty(), "numbers behind the cursor are not kept");
    }
}
