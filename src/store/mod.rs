//! The lead store: every lead with its inbox status, callback clock and
//! text-back, in the outbox's SQLite file. It is written in the same
//! transaction as each event the outbox commits (`record`), so it holds
//! exactly the leads whose events are durable; the inbox, the API and
//! `backstop leads` read it. (Stub: the interface the HTTP face and the
//! text-back build on; the lead-store work fills it in.)

pub mod clock;
pub mod import;

use crate::sink::delivery::{DeliveryError, Publisher};
use crate::sink::event::Event;
use backstop_core::callback::LeadStatus;
use backstop_core::intake::lead::Lead;
use backstop_core::textback::TextBack;
use rusqlite::Connection;

/// The store's tables, created with the outbox's (`Outbox::open`).
pub const SCHEMA: &str = "";

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

/// Take an event into the store, inside the outbox's transaction that commits it.
pub(crate) fn record(conn: &Connection, event: &Event, now_ms: i64) -> rusqlite::Result<()> {
    let _ = (conn, event, now_ms);
    Ok(())
}

/// A page of leads, newest first, overdue ones before the rest in the open views.
pub fn list(conn: &Connection, q: &Query, now_ms: i64) -> rusqlite::Result<Vec<StoredLead>> {
    let _ = (conn, q, now_ms);
    Ok(Vec::new())
}

/// How many leads the query's view holds (for paging).
pub fn count(conn: &Connection, q: &Query, now_ms: i64) -> rusqlite::Result<u64> {
    let _ = (conn, q, now_ms);
    Ok(0)
}

/// One lead by its id.
pub fn get(conn: &Connection, id: &str, now_ms: i64) -> rusqlite::Result<Option<StoredLead>> {
    let _ = (conn, id, now_ms);
    Ok(None)
}

/// The events published about a lead, oldest first (those still in the outbox).
pub fn events(conn: &Connection, id: &str) -> rusqlite::Result<Vec<Event>> {
    let _ = (conn, id);
    Ok(Vec::new())
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
    let _ = (publisher, by, note);
    Err(StoreError::NotFound(id.into()))
}

/// Open a handled lead again (its clock does not restart).
pub async fn reopen(publisher: &Publisher, id: &str, by: &str) -> Result<StoredLead, StoreError> {
    let _ = (publisher, by);
    Err(StoreError::NotFound(id.into()))
}

/// Record what the text-back did for a lead.
pub fn set_text_back(conn: &Connection, lead_id: &str, text_back: &TextBack) -> rusqlite::Result<()> {
    let _ = (conn, lead_id, text_back);
    Ok(())
}
