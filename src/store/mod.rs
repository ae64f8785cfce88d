//! The lead store: every lead with its inbox status, callback clock and
//! text-back, in the outbox's SQLite file. It is written in the same
//! transaction as each event the outbox commits (`record`), so it holds
//! exactly the leads whose events are durable; the inbox, the API and
//! `backstop leads` read it.
//!
//! One row per lead (`leads`): the latest lead its events carried (the
//! lead's JSON, as `call.missed`, `call.transferred`, `lead.completed` and
//! `lead.updated` brought it), and beside it what the store itself knows:
//! status (`new` or `handled`; `overdue` is `new` past `due_ms`, computed
//! when asked), the callback clock (`due_ms`, reminders sent, when the next
//! one is due), who handled it and when, and the text-back's outcome. A
//! read overlays those on the lead (`lead.callback`, `lead.text_back`), so
//! the lead as the store returns it is the lead as it stands now.
//!
//! The events the store produces itself (`lead.handled`,
//! `lead.callback_overdue`, and `lead.updated` on a reopen) are committed in
//! the same transaction as the change they announce, through the outbox:
//! a change without its event, or an event without its change, never
//! happens, and a crash between the two is impossible.
//!
//! The lead's own events (`call.transferred`, `lead.completed`,
//! `lead.updated`) are recorded first and then committed carrying the
//! store's `callback` and `text_back` (`record`): what the call task
//! stamped when the call began (`status: new`) never goes out for a lead
//! that was handled since. A transfer handles the lead (`handled_by:
//! "transfer"`, at the end of our leg, or when the event is recorded) and
//! publishes `lead.handled` for it right after the event that brought it,
//! in the same transaction, with an id keyed to the lead (`Event::keyed`,
//! "transferred"): once per lead, and a lead reopened before the call's
//! `lead.completed` stays open.
//!
//! Writes that come with an event check, in that transaction, that the
//! lead is still as it was read (`lead` text, status, reminders); when it
//! is not (the agent and `backstop leads done` both at it), nothing is
//! committed and the operation reads again.

pub mod clock;
pub mod import;

use crate::sink::delivery::{DeliveryError, Publisher};
use crate::sink::event::{Event, EventType};
use crate::sink::outbox::{Outbox, SinkSpec};
use backstop_core::callback::{CallbackState, LeadStatus};
use backstop_core::intake::lead::{Lead, Outcome, rfc3339};
use backstop_core::textback::TextBack;
use rusqlite::{Connection, OptionalExtension, params};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The store's tables, created with the outbox's (`Outbox::open`). Every
/// statement is idempotent: it runs at every open, on a new file and on an
/// outbox.db from before the store (which gains the tables, empty; the
/// import fills them from `leads.jsonl`).
///
/// `clock` is 0 for leads imported from before the store: they never get
/// reminders. `next_reminder_ms` is set only while a reminder is still to
/// come (open, not junk, clocked).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    line TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    caller_number TEXT,
    junk INTEGER NOT NULL DEFAULT 0,
    urgent INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'handled')),
    clock INTEGER NOT NULL DEFAULT 1,
    due_ms INTEGER,
    reminders INTEGER NOT NULL DEFAULT 0,
    next_reminder_ms INTEGER,
    handled_ms INTEGER,
    handled_by TEXT,
    note TEXT,
    text_back TEXT,
    lead TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    -- A transfer handled this lead once already (a reopen after it stays open).
    transfer_settled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS leads_received ON leads (received_ms);
CREATE INDEX IF NOT EXISTS leads_call ON leads (call_id);
CREATE INDEX IF NOT EXISTS leads_reminder ON leads (next_reminder_ms) WHERE next_reminder_ms IS NOT NULL;
-- The overdue leads, which the metrics read every 2 s: the open ones only, not every lead ever.
CREATE INDEX IF NOT EXISTS leads_open_due ON leads (due_ms) WHERE status = 'new' AND junk = 0 AND due_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema', '1');
";

/// Which leads a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Not handled and not junk (new and overdue), overdue first.
    #[default]
    Open,
    /// Not handled and past due.
    Overdue,
    Handled,
    Junk,
    /// Open leads the caller called an emergency (menu label or urgent words).
    Urgent,
    All,
}

/// A page of leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub view: View,
    /// Only this line's leads.
    pub line: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

impl Default for Query {
    fn default() -> Self {
        Query { view: View::Open, line: None, limit: 50, offset: 0 }
    }
}

/// A lead as the store has it: the latest lead its events carried, with
/// `callback` and `text_back` as the store knows them now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLead {
    pub lead: Lead,
    /// `new`, `overdue` (computed at the time asked) or `handled`.
    pub status: LeadStatus,
    /// The caller chose an emergency, or a transcript has an urgent word.
    pub urgent: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no lead {0}")]
    NotFound(String),
    #[error("the lead store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Unix milliseconds of an RFC 3339 instant.
pub(crate) fn parse_ms(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// The RFC 3339 form (UTC, milliseconds) of Unix milliseconds.
pub(crate) fn ms_rfc3339(ms: i64) -> String {
    rfc3339(ms_time(ms))
}

pub(crate) fn ms_time(ms: i64) -> SystemTime {
    if ms >= 0 { UNIX_EPOCH + Duration::from_millis(ms as u64) } else { UNIX_EPOCH }
}

pub(crate) fn time_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The caller chose an emergency on a menu, or a transcript had an urgent word.
pub fn is_urgent(lead: &Lead) -> bool {
    let emergency =
        lead.answers.values().any(|a| a.label.as_deref().is_some_and(|l| l.eq_ignore_ascii_case("emergency")));
    emergency || !lead.urgent_words.is_empty()
}

/// How a lead comes into the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// `call.missed`: creates the row, never replaces a lead already there.
    First,
    /// A later event about the call: creates or replaces the lead's body.
    Update,
    /// From `leads.jsonl`, before the store: created if absent, without a clock.
    Import,
}

/// The key of the `lead.handled` a transfer publishes (`Event::keyed`).
const TRANSFERRED: &str = "transferred";

/// What [`upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upserted {
    /// A row was inserted.
    pub inserted: bool,
    /// The transfer handled the lead (it was open).
    pub settled: bool,
}

/// Insert or update a lead's row.
fn upsert(
    conn: &Connection,
    lead: &Lead,
    now_ms: i64,
    arrival: Arrival,
    settle_transfer: bool,
) -> rusqlite::Result<Upserted> {
    let body = serde_json::to_string(lead).expect("a lead always serialises");
    let received_ms = parse_ms(&lead.received_at).unwrap_or(now_ms);
    let due_ms = lead.callback.as_ref().and_then(|c| parse_ms(&c.due_at));
    let junk = lead.junk.is_junk;
    let clock = arrival != Arrival::Import;
    let existed: bool =
        conn.query_row("SELECT 1 FROM leads WHERE id = ?1", params![lead.id], |_| Ok(())).optional()?.is_some();
    if !existed {
        conn.execute(
            "INSERT INTO leads (id, call_id, line, received_ms, caller_number, junk, urgent, clock, due_ms,
                                next_reminder_ms, lead, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, CASE WHEN ?6 OR NOT ?8 THEN NULL ELSE ?9 END, ?10, ?11)",
            params![
                lead.id,
                lead.call_id,
                lead.line,
                received_ms,
                lead.caller.number,
                junk,
                is_urgent(lead),
                clock,
                due_ms,
                body,
                now_ms
            ],
        )?;
    } else if arrival == Arrival::Update {
        conn.execute(
            "UPDATE leads SET call_id = ?2, line = ?3, received_ms = ?4, caller_number = ?5, junk = ?6, urgent = ?7,
                due_ms = COALESCE(?8, due_ms),
                next_reminder_ms = CASE
                    WHEN ?6 OR status = 'handled' OR clock = 0 THEN NULL
                    WHEN reminders = 0 THEN COALESCE(?8, due_ms)
                    ELSE next_reminder_ms END,
                lead = ?9, updated_ms = ?10
             WHERE id = ?1",
            params![
                lead.id,
                lead.call_id,
                lead.line,
                received_ms,
                lead.caller.number,
                junk,
                is_urgent(lead),
                due_ms,
                body,
                now_ms
            ],
        )?;
    }
    // A transferred caller reached a person: the lead is handled, by the
    // transfer, when the call ended (our leg ends as the transfer succeeds).
    // A person's handling is kept; a `lead.updated` (transcripts, a
    // reopen) settles nothing, and a transfer settles a lead once, as the
    // row records: a lead reopened after it (say between `call.transferred`
    // and `lead.completed`) stays open, however long the outbox keeps events.
    let mut settled = false;
    if lead.outcome == Outcome::Transferred && settle_transfer {
        let at = lead.ended_at.as_deref().and_then(parse_ms).unwrap_or(now_ms);
        settled = conn.execute(
            "UPDATE leads SET status = 'handled', handled_ms = ?2, handled_by = 'transfer', next_reminder_ms = NULL,
                transfer_settled = 1
             WHERE id = ?1 AND status = 'new' AND transfer_settled = 0",
            params![lead.id, at],
        )? > 0;
    }
    Ok(Upserted { inserted: !existed, settled })
}

/// What the store made of an event it recorded.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The event to commit. A `call.transferred`, `lead.completed` or
    /// `lead.updated` carries its lead with `callback` and `text_back` as
    /// the store has them after it (a lead handled in the inbox goes out
    /// handled, whatever the call task stamped on it when the call began).
    pub event: Event,
    /// `lead.handled` for a lead the transfer just handled, to commit after it.
    pub handled: Option<Event>,
}

/// Take an event into the store, inside the outbox's transaction that
/// commits it (only for an event not in the outbox yet: a duplicate
/// records nothing).
pub(crate) fn record(conn: &Connection, event: &Event, now_ms: i64) -> rusqlite::Result<Recorded> {
    let arrival = match event.kind {
        EventType::CallMissed => Arrival::First,
        EventType::LeadCompleted | EventType::LeadUpdated | EventType::CallTransferred => Arrival::Update,
        // The store's own events: the change they announce is made with them.
        EventType::LeadCallbackOverdue | EventType::LeadHandled => {
            return Ok(Recorded { event: event.clone(), handled: None });
        }
    };
    let settle_transfer = matches!(event.kind, EventType::CallTransferred | EventType::LeadCompleted);
    let done = upsert(conn, &event.lead, now_ms, arrival, settle_transfer)?;
    let mut event = event.clone();
    if arrival == Arrival::Update {
        overlay(conn, &mut event.lead, now_ms)?;
    }
    let handled = done.settled.then(|| {
        // Only a lead's own events settle a transfer, so the lead is overlaid.
        Event::keyed(EventType::LeadHandled, TRANSFERRED, rfc3339(ms_time(now_ms)), &event.lead)
    });
    Ok(Recorded { event, handled })
}

/// Follow what another node's event says of a lead beyond its JSON
/// (`Outbox::apply_remote`): a `lead.handled` handles it here too, and a
/// reopen (the `lead.updated` [`reopening`] makes, recognised by its keyed
/// id) opens it. A reminder needs nothing: this node's clock commits the
/// same keyed `lead.callback_overdue` with its own change, and the shared
/// store keeps one.
pub(crate) fn follow(conn: &Connection, event: &Event) -> rusqlite::Result<()> {
    let at = parse_ms(&event.created_at);
    match event.kind {
        EventType::LeadHandled => {
            let cb = event.lead.callback.as_ref();
            let handled_ms = cb.and_then(|c| c.handled_at.as_deref()).and_then(parse_ms).or(at);
            conn.execute(
                "UPDATE leads SET status = 'handled', handled_ms = ?2, handled_by = ?3, note = ?4, next_reminder_ms = NULL
                 WHERE id = ?1 AND status = 'new'",
                params![
                    event.lead.id,
                    handled_ms,
                    cb.and_then(|c| c.handled_by.clone()),
                    cb.and_then(|c| c.note.clone())
                ],
            )?;
        }
        EventType::LeadUpdated => {
            let reopen = at.is_some_and(|ms| {
                Event::keyed(EventType::LeadUpdated, &format!("reopened {ms}"), event.created_at.clone(), &event.lead)
                    .id
                    == event.id
            });
            if reopen {
                conn.execute(
                    "UPDATE leads SET status = 'new', handled_ms = NULL, handled_by = NULL, note = NULL,
                        next_reminder_ms = CASE WHEN clock = 1 AND junk = 0 AND reminders = 0 THEN due_ms END
                     WHERE id = ?1 AND status = 'handled'",
                    params![event.lead.id],
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Put the store's `callback` and `text_back` of the lead on `lead`, as
/// [`StoredLead`] shows them at `now_ms` (nothing when it is not stored).
fn overlay(conn: &Connection, lead: &mut Lead, now_ms: i64) -> rusqlite::Result<()> {
    if let Some(r) = row(conn, &lead.id)? {
        lead.callback = r.callback(now_ms);
        if let Some(tb) = r.text_back() {
            lead.text_back = Some(tb);
        }
    }
    Ok(())
}

/// A lead's row as stored.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    received_ms: i64,
    junk: bool,
    urgent: bool,
    handled: bool,
    clock: bool,
    due_ms: Option<i64>,
    reminders: u32,
    next_reminder_ms: Option<i64>,
    handled_ms: Option<i64>,
    handled_by: Option<String>,
    note: Option<String>,
    text_back: Option<String>,
    /// The lead's JSON as its last event carried it.
    lead: String,
}

const COLUMNS: &str = "id, received_ms, junk, urgent, status, clock, due_ms, reminders, next_reminder_ms, \
                       handled_ms, handled_by, note, text_back, lead";

impl Row {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            received_ms: r.get(1)?,
            junk: r.get(2)?,
            urgent: r.get(3)?,
            handled: r.get::<_, String>(4)? == "handled",
            clock: r.get(5)?,
            due_ms: r.get(6)?,
            reminders: r.get(7)?,
            next_reminder_ms: r.get(8)?,
            handled_ms: r.get(9)?,
            handled_by: r.get(10)?,
            note: r.get(11)?,
            text_back: r.get(12)?,
            lead: r.get(13)?,
        })
    }

    fn status(&self, now_ms: i64) -> LeadStatus {
        if self.handled {
            LeadStatus::Handled
        } else if !self.junk && self.due_ms.is_some_and(|d| now_ms >= d) {
            LeadStatus::Overdue
        } else {
            LeadStatus::New
        }
    }

    /// The lead's `callback` as the store has it at `now_ms`.
    fn callback(&self, now_ms: i64) -> Option<CallbackState> {
        if self.junk && !self.handled {
            // Junk has no clock.
            return None;
        }
        match (self.due_ms, self.handled) {
            (None, false) => None,
            // A lead from before the clock, handled since: due when it came in.
            (due, _) => Some(CallbackState {
                due_at: ms_rfc3339(due.unwrap_or(self.received_ms)),
                handled_at: self.handled_ms.map(ms_rfc3339),
                handled_by: self.handled_by.clone(),
                note: self.note.clone(),
                reminders: self.reminders,
                status: self.status(now_ms),
                time_to_callback_secs: self.handled_ms.map(|h| ((h - self.received_ms).max(0) / 1000) as u64),
            }),
        }
    }

    /// The text-back's outcome, when there is one (and it can be read).
    fn text_back(&self) -> Option<TextBack> {
        let tb = self.text_back.as_deref()?;
        serde_json::from_str::<TextBack>(tb)
            .inspect_err(|e| tracing::warn!(lead = %self.id, error = %e, "unreadable text_back in the lead store"))
            .ok()
    }

    /// The lead as it stands at `now_ms`: its JSON with the store's callback and text-back.
    fn stored(&self, now_ms: i64) -> Result<StoredLead, serde_json::Error> {
        let mut lead: Lead = serde_json::from_str(&self.lead)?;
        lead.callback = self.callback(now_ms);
        if let Some(tb) = self.text_back() {
            lead.text_back = Some(tb);
        }
        Ok(StoredLead { lead, status: self.status(now_ms), urgent: self.urgent })
    }
}

fn unreadable(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(13, rusqlite::types::Type::Text, Box::new(e))
}

fn row(conn: &Connection, id: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM leads WHERE id = ?1"), params![id], Row::read).optional()
}

fn view_sql(view: View) -> (&'static str, &'static str) {
    const OVERDUE_FIRST: &str = "(due_ms IS NOT NULL AND due_ms <= ?1) DESC, received_ms DESC, id";
    const NEWEST: &str = "received_ms DESC, id";
    match view {
        View::Open => ("status = 'new' AND junk = 0", OVERDUE_FIRST),
        View::Overdue => ("status = 'new' AND junk = 0 AND due_ms IS NOT NULL AND due_ms <= ?1", NEWEST),
        View::Handled => ("status = 'handled' AND junk = 0", "handled_ms DESC, received_ms DESC, id"),
        View::Junk => ("junk = 1", NEWEST),
        View::Urgent => ("status = 'new' AND junk = 0 AND urgent = 1", OVERDUE_FIRST),
        View::All => ("1", NEWEST),
    }
}

/// A page of leads, newest first, overdue ones before the rest in the open views.
pub fn list(conn: &Connection, q: &Query, now_ms: i64) -> rusqlite::Result<Vec<StoredLead>> {
    let (filter, order) = view_sql(q.view);
    // `?1 IS NOT NULL` keeps the parameters numbered alike in every view.
    let sql = format!(
        "SELECT {COLUMNS} FROM leads WHERE ?1 IS NOT NULL AND (?2 IS NULL OR line = ?2) AND {filter}
         ORDER BY {order} LIMIT ?3 OFFSET ?4"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![now_ms, q.line, q.limit, q.offset], Row::read)?;
    let mut out = Vec::new();
    for r in rows {
        let r = r?;
        match r.stored(now_ms) {
            Ok(s) => out.push(s),
            // One bad row must not hide the inbox.
            Err(e) => tracing::error!(lead = %r.id, error = %e, "unreadable lead in the lead store; not listed"),
        }
    }
    Ok(out)
}

/// How many leads the query's view holds (for paging).
pub fn count(conn: &Connection, q: &Query, now_ms: i64) -> rusqlite::Result<u64> {
    let (filter, _) = view_sql(q.view);
    let sql = format!("SELECT COUNT(*) FROM leads WHERE ?1 IS NOT NULL AND (?2 IS NULL OR line = ?2) AND {filter}");
    conn.query_row(&sql, params![now_ms, q.line], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

/// Open leads past due, by line (the metrics' `backstop_leads_overdue`).
pub fn overdue_by_line(conn: &Connection, now_ms: i64) -> rusqlite::Result<Vec<(String, u64)>> {
    let (filter, _) = view_sql(View::Overdue);
    let sql = format!("SELECT line, COUNT(*) FROM leads WHERE {filter} GROUP BY line ORDER BY line");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![now_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// The last event's sequence number in the outbox (0 when there is none).
pub fn last_event_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
}

/// The time to callback, in seconds, of each `lead.handled` event committed
/// after the event `after_seq` (commit order: SQLite writes one at a time),
/// of a lead that is not junk and has a clock; and the sequence to go on
/// from: the last event of any kind read in the same snapshot (so the next
/// call starts after it, and a busy outbox with no handling is not read
/// again every time), or the last handling read when 1000 were found. For
/// the metrics, which read each handling once as they move on. The range is
/// a search of the events' primary key ([`HANDLED_AFTER_SQL`]).
pub fn handled_after_seq(conn: &Connection, after_seq: i64) -> rusqlite::Result<(Vec<u64>, i64)> {
    const LIMIT: usize = 1000;
    // One read snapshot: MAX(seq) and the handlings up to it.
    let snapshot = conn.unchecked_transaction()?;
    let newest = last_event_seq(&snapshot)?;
    let mut stmt = snapshot.prepare_cached(HANDLED_AFTER_SQL)?;
    let rows = stmt
        .query_map(params![after_seq, newest, LIMIT as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let (mut took, mut read, mut last) = (Vec::new(), 0, after_seq);
    for row in rows {
        let (seq, body) = row?;
        read += 1;
        last = seq;
        // An event this version cannot read is skipped (the outbox dead-letters it).
        let Ok(event) = serde_json::from_str::<Event>(&body) else { continue };
        if event.lead.junk.is_junk {
            continue;
        }
        if let Some(secs) = event.lead.callback.as_ref().and_then(|c| c.time_to_callback_secs) {
            took.push(secs);
        }
    }
    drop(stmt);
    snapshot.finish()?;
    // All of them read: on from the newest event (never back: pruning may have removed the newest).
    if read < LIMIT {
        last = last.max(newest).max(after_seq);
    }
    Ok((took, last))
}

/// The handlings in a range of sequences, oldest first, at most ?3.
/// Only this node's handlings (`remote = 0`): on a cluster each is counted
/// by the node that committed it, so a sum across the nodes counts it once.
pub(crate) const HANDLED_AFTER_SQL: &str = "SELECT seq, body FROM events \
     WHERE seq > ?1 AND seq <= ?2 AND kind = 'lead.handled' AND remote = 0 ORDER BY seq LIMIT ?3";

/// One lead by its id.
pub fn get(conn: &Connection, id: &str, now_ms: i64) -> rusqlite::Result<Option<StoredLead>> {
    match row(conn, id)? {
        Some(r) => r.stored(now_ms).map(Some).map_err(unreadable),
        None => Ok(None),
    }
}

/// The events published about a lead, oldest first (those still in the outbox).
pub fn events(conn: &Connection, id: &str) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, body FROM events WHERE call_id IN (SELECT call_id FROM leads WHERE id = ?1) ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (seq, body) = r?;
        match serde_json::from_str::<Event>(&body) {
            // A Call-ID is the caller's: another call may have used it.
            Ok(e) if e.lead.id == id => out.push(e),
            Ok(_) => {}
            Err(e) => tracing::warn!(seq, error = %e, "unreadable event in the outbox; not listed"),
        }
    }
    Ok(out)
}

/// Why a write that comes with an event committed nothing (carried through
/// the outbox's transaction as an error, so that it rolls back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Abort {
    /// The lead changed since it was read: read again.
    #[error("the lead changed meanwhile")]
    Changed,
}

/// Carried as a conversion failure: the one rusqlite error that holds any
/// error of ours without an optional feature.
fn abort(a: Abort) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(a))
}

fn aborted(e: &rusqlite::Error) -> Option<Abort> {
    match e {
        rusqlite::Error::ToSqlConversionFailure(b) => b.downcast_ref::<Abort>().copied(),
        _ => None,
    }
}

fn delivery_aborted(e: &DeliveryError) -> Option<Abort> {
    match e {
        DeliveryError::Outbox(e) => aborted(e),
        _ => None,
    }
}

/// Run `f` on the outbox's connection behind `publisher`, on the blocking pool.
pub(crate) async fn read<T: Send + 'static>(
    publisher: &Publisher,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    Ok(publisher.with_db(f).await??)
}

/// A change to one lead, read at `row`, and the event announcing it.
struct Change {
    event: Event,
    stored: StoredLead,
    /// The row as it was read, for the check at commit.
    was: Row,
    /// The row after the change.
    now: Row,
}

/// What `lead.handled` carries and what the row becomes, or `None` when it is handled already.
fn handling(was: Row, by: &str, note: Option<String>, now_ms: i64) -> Result<Option<Change>, StoreError> {
    if was.handled {
        return Ok(None);
    }
    let mut now = was.clone();
    now.handled = true;
    now.handled_ms = Some(now_ms);
    now.handled_by = Some(by.to_string());
    now.note = note.filter(|n| !n.trim().is_empty());
    now.next_reminder_ms = None;
    let stored = now.stored(now_ms).map_err(unreadable)?;
    let event =
        Event::keyed(EventType::LeadHandled, &format!("handled {now_ms}"), rfc3339(ms_time(now_ms)), &stored.lead);
    Ok(Some(Change { event, stored, was, now }))
}

/// What a reopen's `lead.updated` carries, or `None` when the lead is open.
/// The clock does not restart: a lead whose first reminder went out gets no more.
fn reopening(was: Row, now_ms: i64) -> Result<Option<Change>, StoreError> {
    if !was.handled {
        return Ok(None);
    }
    let mut now = was.clone();
    now.handled = false;
    now.handled_ms = None;
    now.handled_by = None;
    now.note = None;
    now.next_reminder_ms = if now.clock && !now.junk && now.reminders == 0 { now.due_ms } else { None };
    let stored = now.stored(now_ms).map_err(unreadable)?;
    let event =
        Event::keyed(EventType::LeadUpdated, &format!("reopened {now_ms}"), rfc3339(ms_time(now_ms)), &stored.lead);
    Ok(Some(Change { event, stored, was, now }))
}

/// Write the change, inside the event's transaction, if the row is still as read.
fn apply(conn: &Connection, was: &Row, now: &Row) -> rusqlite::Result<()> {
    let n = conn.execute(
        "UPDATE leads SET status = ?2, handled_ms = ?3, handled_by = ?4, note = ?5, reminders = ?6, next_reminder_ms = ?7
         WHERE id = ?1 AND lead = ?8 AND status = ?9 AND reminders = ?10 AND next_reminder_ms IS ?11",
        params![
            now.id,
            if now.handled { "handled" } else { "new" },
            now.handled_ms,
            now.handled_by,
            now.note,
            now.reminders,
            now.next_reminder_ms,
            was.lead,
            if was.handled { "handled" } else { "new" },
            was.reminders,
            was.next_reminder_ms,
        ],
    )?;
    if n == 0 { Err(abort(Abort::Changed)) } else { Ok(()) }
}

/// How often a change is tried again when the lead keeps changing under it.
const ATTEMPTS: usize = 5;

/// Make a change to a lead through the publisher: read, decide, commit the
/// change and its event together; again if the lead changed in between.
async fn change(
    publisher: &Publisher,
    id: &str,
    decide: impl Fn(Row, i64) -> Result<Option<Change>, StoreError>,
) -> Result<StoredLead, StoreError> {
    for _ in 0..ATTEMPTS {
        let now_ms = crate::sink::delivery::now_ms();
        let key = id.to_string();
        let Some(was) = read(publisher, move |c| row(c, &key)).await? else {
            return Err(StoreError::NotFound(id.into()));
        };
        let Some(Change { event, stored, was, now }) = decide(was.clone(), now_ms)? else {
            return was.stored(now_ms).map_err(|e| StoreError::Db(unreadable(e)));
        };
        match publisher.publish_with(event, move |c| apply(c, &was, &now)).await {
            Ok(()) => return Ok(stored),
            Err(e) if delivery_aborted(&e) == Some(Abort::Changed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Db(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(format!("lead {id} kept changing; try again")),
    )))
}

/// The same, on an outbox opened directly (the CLI): one transaction with
/// the event, `specs` deciding which sinks get it. Returns the lead and
/// whether an event was committed.
fn change_in(
    outbox: &mut Outbox,
    specs: &[SinkSpec],
    id: &str,
    now_ms: i64,
    decide: impl Fn(Row, i64) -> Result<Option<Change>, StoreError>,
) -> Result<(StoredLead, bool), StoreError> {
    for _ in 0..ATTEMPTS {
        let Some(was) = row(outbox.conn(), id)? else { return Err(StoreError::NotFound(id.into())) };
        let Some(Change { event, stored, was, now }) = decide(was.clone(), now_ms)? else {
            return Ok((was.stored(now_ms).map_err(unreadable)?, false));
        };
        match outbox.append_then(&event, specs, now_ms, |c| apply(c, &was, &now)) {
            Ok(()) => return Ok((stored, true)),
            Err(e) if aborted(&e) == Some(Abort::Changed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::NotFound(format!("{id} (it kept changing; try again)")))
}

/// Mark a lead handled by `by` (an inbox user, an API token's name, `cli`),
/// with an optional note, and publish `lead.handled` in the same
/// transaction. Handling a handled lead changes nothing and publishes nothing.
pub async fn mark_handled(
    publisher: &Publisher,
    id: &str,
    by: &str,
    note: Option<String>,
) -> Result<StoredLead, StoreError> {
    change(publisher, id, |was, now_ms| handling(was, by, note.clone(), now_ms)).await
}

/// [`mark_handled`] on an outbox opened directly (`backstop leads done`):
/// the lead and whether `lead.handled` was committed (false: it was handled already).
pub fn mark_handled_in(
    outbox: &mut Outbox,
    specs: &[SinkSpec],
    id: &str,
    by: &str,
    note: Option<String>,
    now_ms: i64,
) -> Result<(StoredLead, bool), StoreError> {
    change_in(outbox, specs, id, now_ms, |was, now_ms| handling(was, by, note.clone(), now_ms))
}

/// Open a handled lead again (its clock does not restart). It publishes a
/// `lead.updated` carrying the lead reopened: `callback.status` is `new`
/// (or `overdue`), with no `handled_at`, `handled_by` or `note`. A lead
/// that is open changes nothing and publishes nothing.
///
/// What integrators see: every `lead.updated` (and `lead.completed`,
/// `call.transferred`) carries `callback` as the store has it when the
/// event is committed, so a transcript update of a handled lead says
/// `handled`, with who and when. A `lead.updated` whose `callback.status`
/// is not `handled`, for a lead whose `lead.handled` came before it, is
/// the reopen (no other event takes a handled lead back to open).
pub async fn reopen(publisher: &Publisher, id: &str, by: &str) -> Result<StoredLead, StoreError> {
    let out = change(publisher, id, reopening).await?;
    tracing::info!(lead = %id, by, "lead reopened");
    Ok(out)
}

/// Record what the text-back did for a lead.
pub fn set_text_back(conn: &Connection, lead_id: &str, text_back: &TextBack) -> rusqlite::Result<()> {
    let json = serde_json::to_string(text_back).expect("a text-back always serialises");
    conn.execute("UPDATE leads SET text_back = ?2 WHERE id = ?1", params![lead_id, json])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
