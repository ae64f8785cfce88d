//! The durable outbox: every event is committed to SQLite (WAL,
//! `synchronous=FULL`) before the agent counts it as produced, with one
//! delivery row per sink that wants it. A sink's worker takes due rows,
//! delivers, and records the result, so after `kill -9` at any instant the
//! restarted agent delivers exactly what no sink has acknowledged yet.
//!
//! Delivery is ordered per call (a call's `lead.completed` never overtakes
//! its `call.missed` at a sink) and parallel across calls. Times are Unix
//! milliseconds passed in by the caller, so the logic is testable.

use crate::sink::event::{Event, EventType};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// A sink as the outbox knows it: a stable name and the events it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    pub name: String,
    pub events: Vec<EventType>,
    /// Which lines' events it takes.
    pub lines: LineFilter,
}

/// The lines a sink serves: a line's own webhooks take only its events, and
/// the top-level ones every other line's, so one business's leads never
/// reach another's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LineFilter {
    #[default]
    All,
    Only(String),
    Except(Vec<String>),
}

impl LineFilter {
    pub fn admits(&self, line: &str) -> bool {
        match self {
            LineFilter::All => true,
            LineFilter::Only(l) => l == line,
            LineFilter::Except(ls) => !ls.iter().any(|l| l == line),
        }
    }
}

impl SinkSpec {
    /// Whether this sink delivers `event`. A junk call's `call.missed` goes
    /// to no sink: it is kept only as the record that the call began (a
    /// restart closes the lead from it), so nothing texts a blocklisted or
    /// spoofed number back.
    pub fn takes(&self, event: &Event) -> bool {
        // Shipping to the shared store takes every event: the other nodes
        // follow it, and a junk call's `call.missed` is how a survivor knows
        // the call was open.
        if self.name == crate::cluster::SHIP_SINK {
            return true;
        }
        let junk_missed = event.kind == EventType::CallMissed && event.lead.junk.is_junk;
        self.events.contains(&event.kind) && self.lines.admits(event.line()) && !junk_missed
    }
}

/// One delivery that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub seq: i64,
    pub event: Event,
    pub attempts: u32,
    /// When the event was committed (Unix ms).
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStatus {
    pub sink: String,
    pub pending: u64,
    pub dead: u64,
    pub delivered: u64,
    /// Age of the oldest pending event, ms.
    pub oldest_pending_ms: Option<i64>,
}

pub struct Outbox {
    conn: Connection,
}

/// A connection to the outbox file as every user of it opens one: its
/// directory made, WAL, `synchronous=FULL`, and a 5 s wait on a busy lock
/// (the text-back and `backstop leads` open their own beside the agent's).
/// How long a write waits for another connection's write lock.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn open_wal(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

impl Outbox {
    pub fn open(path: &Path) -> rusqlite::Result<Outbox> {
        let conn = open_wal(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                call_id TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                body TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS deliveries (
                seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
                sink TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_ms INTEGER NOT NULL,
                done_ms INTEGER,
                last_error TEXT,
                PRIMARY KEY (seq, sink)
            );
            CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (sink, state, next_ms);
            CREATE INDEX IF NOT EXISTS events_call ON events (call_id, seq);",
        )?;
        // `remote`: another node's event (`apply_remote`), never shipped
        // back nor taken for a call of this node's. Added to older files.
        let has_remote: bool = conn
            .query_row("SELECT 1 FROM pragma_table_info('events') WHERE name = 'remote'", [], |_| Ok(()))
            .optional()?
            .is_some();
        if !has_remote {
            conn.execute_batch("ALTER TABLE events ADD COLUMN remote INTEGER NOT NULL DEFAULT 0")?;
        }
        // The transcription queue lives beside the events: one file, one fsync story.
        conn.execute_batch(crate::transcribe::queue::SCHEMA)?;
        // The lead store and the text-back's own tables, in the same file.
        conn.execute_batch(crate::store::SCHEMA)?;
        conn.execute_batch(crate::textback::SCHEMA)?;
        Ok(Outbox { conn })
    }

    /// Cap the database at `pages` pages (`None`: SQLite's default), so that
    /// writes fail with SQLITE_FULL exactly as on a full disk. For fault tests.
    pub fn limit_pages(&self, pages: Option<u64>) -> rusqlite::Result<()> {
        let n = pages.unwrap_or(0xFFFF_FFFE);
        self.conn.pragma_update(None, "max_page_count", n as i64)
    }

    pub fn page_count(&self) -> rusqlite::Result<u64> {
        self.conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
    }

    /// The database, for the transcription queue that shares it (`transcribe::queue`).
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Commit an event and a pending delivery for every sink that takes its
    /// type. An event whose id is already in the outbox is not added again:
    /// events published after a restart carry ids made from what they are
    /// about (`Event::keyed`), so publishing one twice sends it once.
    pub fn append(&mut self, event: &Event, sinks: &[SinkSpec], now_ms: i64) -> rusqlite::Result<()> {
        self.append_then(event, sinks, now_ms, |_| Ok(()))
    }

    /// [`Outbox::append`], and `then` in the same transaction: the event and
    /// what `then` records of it are committed together or not at all.
    ///
    /// The lead store records the event first (`store::record`), in the same
    /// transaction, and the body committed is the event as the store gives
    /// it back: a lead's own events carry its `callback` and `text_back` as
    /// stored, and a transfer that handled the lead adds its `lead.handled`
    /// right after it. An event whose id is in the outbox already records
    /// nothing and adds nothing (`then` still runs).
    pub fn append_then(
        &mut self,
        event: &Event,
        sinks: &[SinkSpec],
        now_ms: i64,
        then: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        // IMMEDIATE: it reads, then writes, and other connections write to
        // this file (the text-back's, `backstop leads done`); a deferred
        // transaction could not take the write lock after one of theirs.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        then(&tx)?;
        let known = tx.query_row("SELECT 1 FROM events WHERE id = ?1", params![event.id], |_| Ok(())).optional()?;
        if known.is_some() {
            return tx.commit();
        }
        // The lead store follows the committed events, in the same transaction.
        let recorded = crate::store::record(&tx, event, now_ms)?;
        insert(&tx, &recorded.event, sinks, now_ms)?;
        if let Some(handled) = &recorded.handled {
            insert(&tx, handled, sinks, now_ms)?;
        }
        tx.commit()
    }

    /// An event another node of the cluster committed (`cluster::replica`):
    /// into the lead store and the events, marked remote and without
    /// deliveries (its own node delivers it, and this node never ships it
    /// back). The store follows what only the event says: a lead handled
    /// or reopened there (`store::follow`). True when it was new here.
    pub fn apply_remote(&mut self, event: &Event, now_ms: i64) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known = tx.query_row("SELECT 1 FROM events WHERE id = ?1", params![event.id], |_| Ok(())).optional()?;
        if known.is_some() {
            tx.commit()?;
            return Ok(false);
        }
        // A survivor's `interrupted` for a call this node saw end (it was
        // taken for dead while it ran): kept as an event, the lead left as it ended.
        let ended_here = event.kind == EventType::LeadCompleted
            && event.lead.outcome == backstop_core::intake::lead::Outcome::Interrupted
            && tx
                .query_row(
                    "SELECT 1 FROM events WHERE kind = 'lead.completed' AND remote = 0 AND call_id = ?1
                       AND json_extract(body, '$.lead.id') = ?2",
                    params![event.call_id(), event.lead.id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
        if ended_here {
            insert_remote(&tx, event, now_ms)?;
            tx.commit()?;
            return Ok(true);
        }
        let recorded = crate::store::record(&tx, event, now_ms)?;
        crate::store::follow(&tx, event)?;
        insert_remote(&tx, event, now_ms)?;
        if let Some(handled) = &recorded.handled {
            insert_remote(&tx, handled, now_ms)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// How far this node has followed the shared store's events, and in
    /// which database (its `cluster_meta` id): (cursor, database).
    pub fn replica_cursor(&self) -> rusqlite::Result<(i64, Option<String>)> {
        let get = |key: &str| -> rusqlite::Result<Option<String>> {
            self.conn.query_row("SELECT value FROM store_meta WHERE key = ?1", params![key], |r| r.get(0)).optional()
        };
        let at = get("replica_cursor")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((at, get("replica_database")?))
    }

    pub fn set_replica_cursor(&self, at: i64, database: &str) -> rusqlite::Result<()> {
        for (key, value) in [("replica_cursor", at.to_string()), ("replica_database", database.to_string())] {
            self.conn.execute(
                "INSERT INTO store_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
        }
        Ok(())
    }

    /// Due deliveries for `sink`: for each call, only its oldest pending event,
    /// and only when that one is due.
    pub fn due(&self, sink: &str, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Due>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.seq, e.body, d.attempts, e.created_ms FROM deliveries d JOIN events e ON e.seq = d.seq
             WHERE d.sink = ?1 AND d.state = 'pending' AND d.next_ms <= ?2
               AND NOT EXISTS (
                 SELECT 1 FROM deliveries d2 JOIN events e2 ON e2.seq = d2.seq
                 WHERE d2.sink = d.sink AND d2.state = 'pending' AND e2.call_id = e.call_id AND e2.seq < e.seq)
             ORDER BY e.seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![sink, now_ms, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for row in rows {
            let (seq, body, attempts, created_ms) = row?;
            match serde_json::from_str::<Event>(&body) {
                Ok(event) => out.push(Due { seq, event, attempts, created_ms }),
                Err(e) => unreadable.push((seq, e)),
            }
        }
        // Left pending, it would be read and skipped on every poll, and hold
        // back its call's later events: dead-letter it, with why (after an
        // upgrade that reads it, `outbox retry --dead` sends it).
        for (seq, e) in unreadable {
            tracing::error!(seq, sink = %crate::metrics::sink_label(sink), error = %e, "unreadable event in the outbox; dead-lettered");
            self.mark_dead(sink, seq, &format!("unreadable by this version: {e}"))?;
        }
        Ok(out)
    }

    /// When the next pending delivery for `sink` falls due, if any.
    pub fn next_due_ms(&self, sink: &str) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MIN(next_ms) FROM deliveries WHERE sink = ?1 AND state = 'pending'",
                params![sink],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
    }

    pub fn mark_done(&self, sink: &str, seq: i64, now_ms: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET state = 'done', done_ms = ?3, attempts = attempts + 1, last_error = NULL
             WHERE seq = ?1 AND sink = ?2",
            params![seq, sink, now_ms],
        )?;
        Ok(())
    }

    pub fn mark_retry(&self, sink: &str, seq: i64, next_ms: i64, error: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_ms = ?3, last_error = ?4 WHERE seq = ?1 AND sink = ?2",
            params![seq, sink, next_ms, error],
        )?;
        Ok(())
    }

    pub fn mark_dead(&self, sink: &str, seq: i64, error: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = ?3 WHERE seq = ?1 AND sink = ?2",
            params![seq, sink, error],
        )?;
        Ok(())
    }

    /// Make pending deliveries due now (after a restart), and with `dead` also dead ones.
    pub fn retry_now(&self, sink: Option<&str>, dead: bool, now_ms: i64) -> rusqlite::Result<usize> {
        let states = if dead { "('pending', 'dead')" } else { "('pending')" };
        let sql = format!(
            "UPDATE deliveries SET state = 'pending', next_ms = ?1 WHERE state IN {states} AND (?2 IS NULL OR sink = ?2)"
        );
        self.conn.execute(&sql, params![now_ms, sink])
    }

    pub fn status(&self, now_ms: i64) -> rusqlite::Result<Vec<SinkStatus>> {
        let mut stmt = self.conn.prepare(
            "SELECT d.sink,
                    SUM(d.state = 'pending'), SUM(d.state = 'dead'), SUM(d.state = 'done'),
                    MIN(CASE WHEN d.state = 'pending' THEN e.created_ms END)
             FROM deliveries d JOIN events e ON e.seq = d.seq GROUP BY d.sink ORDER BY d.sink",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SinkStatus {
                sink: r.get(0)?,
                pending: r.get::<_, i64>(1)? as u64,
                dead: r.get::<_, i64>(2)? as u64,
                delivered: r.get::<_, i64>(3)? as u64,
                oldest_pending_ms: r.get::<_, Option<i64>>(4)?.map(|c| now_ms - c),
            })
        })?;
        rows.collect()
    }

    /// Each sink's pending and dead deliveries (for the metrics, every 2 s):
    /// from the `deliveries_due` index alone, without `status`'s join.
    pub fn pending_dead_by_sink(&self) -> rusqlite::Result<Vec<(String, u64, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sink, SUM(state = 'pending'), SUM(state = 'dead') FROM deliveries GROUP BY sink ORDER BY sink",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)))?;
        rows.collect()
    }

    /// Pending deliveries across all sinks (for the size warning).
    pub fn pending_total(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    }

    /// Calls that have a `call.missed` but no `lead.completed`: the agent died
    /// while they were in progress. Returns their `call.missed` events, whose
    /// leads say who called; one that cannot be read back is logged and left out.
    /// A call whose lead waits for its transcripts (`transcribe::queue`) ended:
    /// its lead goes out from there. Another node's calls (`remote`) are
    /// its own to close, or a survivor's (`cluster::nodes`).
    pub fn unfinished_calls(&self) -> rusqlite::Result<Vec<Event>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, body FROM events m WHERE m.kind = 'call.missed' AND m.remote = 0 AND NOT EXISTS (
                SELECT 1 FROM events c WHERE c.call_id = m.call_id AND c.kind = 'lead.completed' AND c.seq > m.seq)
               AND NOT EXISTS (SELECT 1 FROM transcribe_leads t WHERE t.call_id = m.call_id)
             ORDER BY m.seq",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            match serde_json::from_str::<Event>(&body) {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable call.missed in the outbox; its call is not closed")
                }
            }
        }
        Ok(out)
    }

    /// Forget events every sink is finished with (delivered or dead) for longer than `keep_ms`.
    pub fn prune(&self, now_ms: i64, keep_ms: i64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM deliveries WHERE seq IN (
                SELECT e.seq FROM events e WHERE e.created_ms < ?1 AND NOT EXISTS (
                    SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.state = 'pending'))",
            params![now_ms - keep_ms],
        )?;
        self.conn.execute(
            "DELETE FROM events WHERE created_ms < ?1 AND kind != 'call.missed'
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = events.seq)",
            params![now_ms - keep_ms],
        )?;
        // A call.missed is kept until its call's lead.completed is gone too, so a
        // restart never mistakes an old finished call for an interrupted one.
        self.conn.execute(
            "DELETE FROM events WHERE created_ms < ?1 AND kind = 'call.missed'
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = events.seq)
               AND NOT EXISTS (SELECT 1 FROM events c WHERE c.call_id = events.call_id AND c.kind = 'lead.completed')",
            params![now_ms - keep_ms],
        )
    }
}

/// Add another node's `event` (unless its id is there), with no delivery.
fn insert_remote(conn: &Connection, event: &Event, now_ms: i64) -> rusqlite::Result<()> {
    let body = serde_json::to_string(event).expect("events serialise");
    conn.execute(
        "INSERT INTO events (id, kind, call_id, created_ms, body, remote) VALUES (?1, ?2, ?3, ?4, ?5, 1)
         ON CONFLICT (id) DO NOTHING",
        params![event.id, event.kind.as_str(), event.call_id(), now_ms, body],
    )?;
    Ok(())
}

/// Add `event` (unless its id is there) with a pending delivery for every sink that takes it.
fn insert(conn: &Connection, event: &Event, sinks: &[SinkSpec], now_ms: i64) -> rusqlite::Result<()> {
    let body = serde_json::to_string(event).expect("events serialise");
    let added = conn.execute(
        "INSERT INTO events (id, kind, call_id, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO NOTHING",
        params![event.id, event.kind.as_str(), event.call_id(), now_ms, body],
    )?;
    if added == 0 {
        return Ok(());
    }
    let seq = conn.last_insert_rowid();
    for sink in sinks.iter().filter(|s| s.takes(event)) {
        conn.execute(
            "INSERT INTO deliveries (seq, sink, state, next_ms) VALUES (?1, ?2, 'pending', ?3)",
            params![seq, sink.name, now_ms],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::intake::lead::Lead;
    use backstop_core::sip::message::{Incoming, read_message};

    fn lead(call_id: &str) -> Lead {
        let msg = format!(
            "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:1@x>;tag=1\r\n\
             To: <sip:2@y>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let Incoming::Request(r) = read_message(msg.as_bytes(), "127.0.0.1:5060".parse().unwrap()) else { panic!() };
        Lead::from_invite("l".into(), &r, std::time::SystemTime::UNIX_EPOCH, backstop_core::sip::Transport::Udp)
    }

    fn sinks() -> Vec<SinkSpec> {
        vec![
            SinkSpec { name: "file".into(), events: vec![EventType::LeadCompleted], lines: LineFilter::All },
            SinkSpec { name: "hook".into(), events: EventType::ALL.to_vec(), lines: LineFilter::All },
        ]
    }

    fn temp() -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("backstop-outbox-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        p.join("outbox.db")
    }

    #[test]
    fn events_fan_out_to_the_sinks_that_want_them_and_survive_reopening() {
        let path = temp();
        let mut ob = Outbox::open(&path).unwrap();
        ob.append(&Event::new(EventType::CallMissed, "t".into(), &lead("c1")), &sinks(), 1000).unwrap();
        ob.append(&Event::new(EventType::LeadCompleted, "t".into(), &lead("c1")), &sinks(), 1001).unwrap();
        assert_eq!(ob.due("file", 2000, 10).unwrap().len(), 1);
        drop(ob);
        let ob = Outbox::open(&path).unwrap();
        // Ordered per call: the hook sees call.missed first, and lead.completed only after it is done.
        let due = ob.due("hook", 2000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event.kind, EventType::CallMissed);
        ob.mark_done("hook", due[0].seq, 2000).unwrap();
        let by_sink = ob.pending_dead_by_sink().unwrap();
        let plan: String = ob
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT sink, SUM(state = 'pending'), SUM(state = 'dead') FROM deliveries GROUP BY sink",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("COVERING INDEX deliveries_due"), "{plan}");
        assert_eq!(by_sink, [("file".to_string(), 1, 0), ("hook".to_string(), 1, 0)], "done is neither");
        let due = ob.due("hook", 2000, 10).unwrap();
        assert_eq!(due[0].event.kind, EventType::LeadCompleted);
        assert!(ob.unfinished_calls().unwrap().is_empty());
    }

    #[test]
    fn parallel_across_calls_and_retry_times_are_honoured() {
        let mut ob = Outbox::open(&temp()).unwrap();
        for c in ["a", "b", "c"] {
            ob.append(&Event::new(EventType::CallMissed, "t".into(), &lead(c)), &sinks(), 0).unwrap();
        }
        let due = ob.due("hook", 0, 10).unwrap();
        assert_eq!(due.len(), 3);
        ob.mark_retry("hook", due[0].seq, 5000, "500").unwrap();
        ob.mark_dead("hook", due[1].seq, "410").unwrap();
        ob.mark_done("hook", due[2].seq, 0).unwrap();
        assert!(ob.due("hook", 4999, 10).unwrap().is_empty());
        let again = ob.due("hook", 5000, 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        assert_eq!(ob.next_due_ms("hook").unwrap(), Some(5000));
        let st = ob.status(6000).unwrap();
        let hook = st.iter().find(|s| s.sink == "hook").unwrap();
        assert_eq!((hook.pending, hook.dead, hook.delivered, hook.oldest_pending_ms), (1, 1, 1, Some(6000)));
        assert_eq!(ob.retry_now(Some("hook"), true, 6000).unwrap(), 2);
        assert_eq!(ob.due("hook", 6000, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_junk_calls_missed_event_is_kept_for_recovery_but_delivered_nowhere() {
        let mut ob = Outbox::open(&temp()).unwrap();
        let mut junk = lead("junk");
        junk.junk.is_junk = true;
        ob.append(&Event::new(EventType::CallMissed, "t".into(), &junk), &sinks(), 0).unwrap();
        ob.append(&Event::new(EventType::CallMissed, "t".into(), &lead("clean")), &sinks(), 0).unwrap();
        let due: Vec<String> = ob.due("hook", 0, 10).unwrap().iter().map(|d| d.event.call_id().to_string()).collect();
        assert_eq!(due, ["clean"]);
        // Cut off mid-call, it is still closed at the next start.
        let cut: Vec<String> = ob.unfinished_calls().unwrap().iter().map(|e| e.call_id().to_string()).collect();
        assert_eq!(cut, ["junk", "clean"]);
    }

    #[test]
    fn unfinished_calls_are_found_and_pruning_keeps_pending_work() {
        let mut ob = Outbox::open(&temp()).unwrap();
        ob.append(&Event::new(EventType::CallMissed, "t".into(), &lead("done")), &sinks(), 0).unwrap();
        ob.append(&Event::new(EventType::LeadCompleted, "t".into(), &lead("done")), &sinks(), 0).unwrap();
        ob.append(&Event::new(EventType::CallMissed, "t".into(), &lead("cut")), &sinks(), 0).unwrap();
        let cut = ob.unfinished_calls().unwrap();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].call_id(), "cut");
        // Nothing is delivered yet, so nothing may be pruned.
        ob.prune(1_000_000, 10).unwrap();
        assert_eq!(ob.pending_total().unwrap(), 4, "one lead.completed to the file, three events to the hook");
        for s in ["file", "hook"] {
            while let Some(d) = ob.due(s, 0, 1).unwrap().pop() {
                ob.mark_done(s, d.seq, 0).unwrap();
            }
        }
        ob.prune(1_000_000, 10).unwrap();
        assert_eq!(ob.status(0).unwrap().iter().map(|s| s.delivered).sum::<u64>(), 0);
        // The interrupted call's call.missed is gone only once delivered; "done" left no trace to revive.
        assert!(ob.unfinished_calls().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_event_is_dead_lettered_and_does_not_hold_back_its_call() {
        let mut ob = Outbox::open(&temp()).unwrap();
        ob.append(&Event::new(EventType::CallMissed, "t".into(), &lead("c1")), &sinks(), 1000).unwrap();
        ob.append(&Event::new(EventType::LeadCompleted, "t".into(), &lead("c1")), &sinks(), 1001).unwrap();
        // The first event's body as a later version might have written it.
        ob.conn
            .execute("UPDATE events SET body = '{\"id\":\"x\",\"type\":\"call.missed\"}' WHERE seq = 1", [])
            .unwrap();
        assert!(ob.due("hook", 2000, 10).unwrap().is_empty(), "the unreadable one is not handed out");
        let due = ob.due("hook", 2000, 10).unwrap();
        assert_eq!(due.len(), 1, "the call's next event is no longer held back");
        assert_eq!(due[0].event.kind, EventType::LeadCompleted);
        let status = ob.status(2000).unwrap();
        let hook = status.iter().find(|r| r.sink == "hook").unwrap();
        assert_eq!(hook.dead, 1);
    }
}
