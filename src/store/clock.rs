//! The callback clock's task: publishes `lead.callback_overdue` for leads
//! past due, from the store, so it survives restarts.
//!
//! Each open, non-junk lead with a clock has `next_reminder_ms` in the
//! store: its `due_at` at first, then the next repeat (`[callback]
//! repeat_minutes`, up to `max_reminders`), or nothing when no reminder is
//! left (also when `[callback]` changed so that the one it was set for is
//! no longer allowed: the time is cleared then, without an event). The task reads the leads whose time has come, and for each commits
//! the event and the advanced reminder count in one transaction: after a
//! crash either both are there or neither, so a restart neither loses a
//! reminder nor sends one twice (the event's id is also made from the
//! reminder's number, so a repeat would be the same event). It sleeps until
//! the next reminder in the store, a second at most, so leads that came in
//! meanwhile are seen in time.

use super::{Abort, COLUMNS, Change, Row, StoreError, apply, delivery_aborted, ms_time, read, time_ms};
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

/// How long a lead whose JSON cannot be read waits before the clock looks
/// at it again (and logs it again).
const PARK: i64 = 3_600_000;

/// One round at `now`: send the reminders that are due; when the next one is due.
/// Every due lead is looked at, a batch at a time: each either gets its
/// reminder, or leaves the due ones (no more reminders allowed: its time is
/// cleared; unreadable: parked for [`PARK`]), so no lead can hold back others.
pub async fn tick(publisher: &Publisher, policy: &CallbackPolicy, now: i64) -> Result<Option<i64>, StoreError> {
    loop {
        let due = read(publisher, move |c| due_rows(c, now, BATCH)).await?;
        let full = due.len() == BATCH;
        let mut moved = 0;
        for row in due {
            let id = row.id.clone();
            let (next, sent) = (row.next_reminder_ms, row.reminders);
            let change = match reminder(row, policy, now) {
                Reminder::Send(change) => change,
                Reminder::NoMore => {
                    tracing::debug!(lead = %id, sent, "callback clock: no more reminders allowed by [callback]");
                    moved += reschedule(publisher, &id, next, sent, None).await;
                    continue;
                }
                Reminder::Unreadable(e) => {
                    tracing::error!(lead = %id, error = %e, "callback clock: unreadable lead in the lead store; looked at again in an hour");
                    moved += reschedule(publisher, &id, next, sent, Some(now + PARK)).await;
                    continue;
                }
            };
            let Change { event, was, now: after, .. } = *change;
            match publisher.publish_with(event, move |c| apply(c, &was, &after)).await {
                Ok(()) => {
                    moved += 1;
                    tracing::info!(lead = %id, "lead.callback_overdue: not called back by its due time")
                }
                // Handled, or changed, meanwhile: the next round sees it as it is.
                Err(e) if delivery_aborted(&e) == Some(Abort::Changed) => {}
                Err(e) => tracing::warn!(lead = %id, error = %e, "callback clock: the reminder was not committed"),
            }
        }
        // A whole batch that none of could be moved on (the store failing,
        // leads changing under it) is left to the next round.
        if !full || moved == 0 {
            break;
        }
    }
    read(publisher, move |c| next_after(c, now)).await
}

/// Set a due lead's next reminder time to `to`, if it is still as read
/// (open, `next`, `sent`); 1 when it was set.
async fn reschedule(publisher: &Publisher, id: &str, next: Option<i64>, sent: u32, to: Option<i64>) -> usize {
    let key = id.to_string();
    let set = read(publisher, move |c| {
        c.execute(
            "UPDATE leads SET next_reminder_ms = ?4
             WHERE id = ?1 AND next_reminder_ms IS ?2 AND reminders = ?3 AND status = 'new'",
            params![key, next, sent, to],
        )
    })
    .await;
    match set {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(lead = %id, error = %e, "callback clock: the lead's next reminder time was not updated");
            0
        }
    }
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

/// What the clock does with a due lead.
enum Reminder {
    /// Send it: the event and the row's change.
    Send(Box<Change>),
    /// The policy allows no more (it changed since the row's time was set,
    /// or the lead has no due time): its time is cleared, without an event.
    /// A later `[callback]` that allows more does not bring it back.
    NoMore,
    /// The lead's JSON cannot be read: no event can carry it.
    Unreadable(serde_json::Error),
}

/// The reminder a due row gets, and what its row becomes.
fn reminder(was: Row, policy: &CallbackPolicy, now: i64) -> Reminder {
    let Some(due) = was.due_ms else { return Reminder::NoMore };
    let sent = was.reminders;
    if reminder_at(policy, ms_time(due), sent).is_none() {
        return Reminder::NoMore;
    }
    let mut after = was.clone();
    after.reminders = sent + 1;
    // The next one by the policy; after a long stop, not sooner than one
    // interval from now (no burst of the reminders missed meanwhile).
    after.next_reminder_ms = reminder_at(policy, ms_time(due), sent + 1).map(|t| {
        let every = policy.repeat_every.map(|e| e.as_millis() as i64).unwrap_or(0);
        time_ms(t).max(now + every)
    });
    let stored = match after.stored(now) {
        Ok(s) => s,
        Err(e) => return Reminder::Unreadable(e),
    };
    let event = Event::keyed(
        EventType::LeadCallbackOverdue,
        &format!("overdue {}", sent + 1),
        rfc3339(ms_time(now)),
        &stored.lead,
    );
    Reminder::Send(Box::new(Change { event, stored, was, now: after }))
}
