//! The callback clock's task: publishes `lead.callback_overdue` for leads
//! past due, from the store, so it survives restarts.
//!
//! Each open, non-junk lead with a clock has `next_reminder_ms` in the
//! store: its `due_at` at first, then the next repeat (`[callback]
//! repeat_minutes`, up to `max_reminders`), or nothing when no reminder is
//! left. The task reads the leads whose time has come, and for each commits
//! the event and the advanced reminder count in one transaction: after a
//! crash either both are there or neither, so a restart neither loses a
//! reminder nor sends one twice (the event's id is also made from the
//! reminder's number, so a repeat would be the same event). It sleeps until
//! the next reminder in the store, a second at most, so leads that came in
//! meanwhile are seen in time.

use super::{Abort, COLUMNS, Change, Row, StoreError, apply, delivery_aborted, ms_time, read, time_ms, unreadable};
use crate::sink::delivery::{Publisher, now_ms};
use crate::sink::event::{Event, EventType};
use backstop_core::callback::{CallbackPolicy, reminder_at};
use backstop_core::intake::lead::rfc3339;
use rusqlite::{Connection, params};
use std::time::Duration;
use tokio::sync::watch;

/// How long the task sleeps at most between looks at the store.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Leads handled in one round at most (the rest in the next, at once).
const BATCH: usize = 100;

/// Run until `shutdown` flips.
pub async fn run(publisher: Publisher, policy: CallbackPolicy, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        let wait = match tick(&publisher, &policy, now).await {
            Ok(Some(next)) => Duration::from_millis((next - now).clamp(0, MAX_SLEEP.as_millis() as i64) as u64),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::warn!(error = %e, "callback clock: the lead store could not be read; trying again");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// One round at `now`: send the reminders that are due; when the next one is due.
pub async fn tick(publisher: &Publisher, policy: &CallbackPolicy, now: i64) -> Result<Option<i64>, StoreError> {
    let due = read(publisher, move |c| due_rows(c, now, BATCH)).await?;
    let full = due.len() == BATCH;
    let mut sent = 0;
    for row in due {
        let id = row.id.clone();
        let Some(change) = reminder(row, policy, now)? else { continue };
        let Change { event, was, now: after, .. } = change;
        match publisher.publish_with(event, move |c| apply(c, &was, &after)).await {
            Ok(()) => {
                sent += 1;
                tracing::info!(lead = %id, "lead.callback_overdue: not called back by its due time")
            }
            // Handled, or changed, meanwhile: the next round sees it as it is.
            Err(e) if delivery_aborted(&e) == Some(Abort::Changed) => {}
            Err(e) => tracing::warn!(lead = %id, error = %e, "callback clock: the reminder was not committed"),
        }
    }
    if full && sent > 0 {
        return Ok(Some(now));
    }
    read(publisher, move |c| next_after(c, now)).await
}

/// Open, non-junk, clocked leads whose next reminder is due at `now`.
fn due_rows(conn: &Connection, now: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM leads
         WHERE next_reminder_ms IS NOT NULL AND next_reminder_ms <= ?1 AND status = 'new' AND junk = 0 AND clock = 1
         ORDER BY next_reminder_ms LIMIT ?2"
    ))?;
    stmt.query_map(params![now, limit as i64], Row::read)?.collect()
}

/// When the next reminder after `now` is due.
fn next_after(conn: &Connection, now: i64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT MIN(next_reminder_ms) FROM leads
         WHERE next_reminder_ms > ?1 AND status = 'new' AND junk = 0 AND clock = 1",
        params![now],
        |r| r.get(0),
    )
}

/// The reminder a due row gets, and what its row becomes; `None` when the
/// policy allows no more (it changed since the row's time was set: the
/// row is left, and looked at again only after a restart with another policy).
fn reminder(was: Row, policy: &CallbackPolicy, now: i64) -> Result<Option<Change>, StoreError> {
    let Some(due) = was.due_ms else { return Ok(None) };
    let sent = was.reminders;
    if reminder_at(policy, ms_time(due), sent).is_none() {
        tracing::debug!(lead = %was.id, sent, "callback clock: no more reminders allowed by [callback]");
        return Ok(None);
    }
    let mut after = was.clone();
    after.reminders = sent + 1;
    // The next one by the policy; after a long stop, not sooner than one
    // interval from now (no burst of the reminders missed meanwhile).
    after.next_reminder_ms = reminder_at(policy, ms_time(due), sent + 1).map(|t| {
        let every = policy.repeat_every.map(|e| e.as_millis() as i64).unwrap_or(0);
        time_ms(t).max(now + every)
    });
    let stored = after.stored(now).map_err(unreadable)?;
    let event = Event::keyed(
        EventType::LeadCallbackOverdue,
        &format!("overdue {}", sent + 1),
        rfc3339(ms_time(now)),
        &stored.lead,
    );
    Ok(Some(Change { event, stored, was, now: after }))
}
