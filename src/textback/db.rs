//! The text-back's tables, in the outbox's SQLite file: what was done for
//! each `call.missed` (`text_backs`, one row per event and sink) and who
//! opted out (`sms_opt_outs`). Plain functions of a connection and times
//! passed in.

use backstop_core::textback::{Decision, Facts, SkipReason, TextBack, decide};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;

/// Created with the outbox's tables (`Outbox::open`) and again by every
/// connection of the text-back's own (`open`).
///
/// `text_backs.status`: `sending` (claimed, the request may be under way),
/// `sent`, `skipped` (by policy, `reason` says which rule), `failed` (the
/// provider refused it, or retries gave up: it was not sent), `retry` (not
/// sent, will be tried again) or `unknown` (the request may have gone out
/// but no answer came: never sent again). `sent_ms` is when the send was
/// claimed; the once-per window counts rows `sending`, `sent` and `unknown`.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS text_backs (
    event_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    number TEXT,
    sender TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'skipped', 'failed', 'retry', 'unknown')),
    reason TEXT,
    sid TEXT,
    sent_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (event_id, sink)
);
CREATE INDEX IF NOT EXISTS text_backs_number ON text_backs (number, sender, sent_ms);
CREATE TABLE IF NOT EXISTS sms_opt_outs (
    number TEXT PRIMARY KEY,
    opted_out INTEGER NOT NULL,
    keyword TEXT NOT NULL,
    account_sid TEXT,
    to_number TEXT,
    updated_ms INTEGER NOT NULL
);
";

/// A connection of the text-back's own to the outbox file.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// What the call's event needs from the table.
pub struct Request<'a> {
    pub event_id: &'a str,
    pub sink: &'a str,
    pub lead_id: &'a str,
    /// The sending number.
    pub sender: &'a str,
    pub facts: Facts,
    pub once_per_ms: i64,
}

/// What `claim` found or decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Decided before (sent, skipped, or unknown): nothing more to do.
    Done {
        status: String,
    },
    /// A `sending` row from an attempt that never recorded its answer (a
    /// crash, or a timeout): it may have gone out, so it is not sent again.
    WasInFlight,
    Skipped(SkipReason),
    /// Claimed: send to this number now.
    Send {
        to: String,
    },
}

/// Decide for one event and claim the send, in one transaction: so that two
/// calls from one number at once text it once, and an event already decided
/// is never sent again.
pub fn claim(conn: &mut Connection, r: &Request<'_>, now_ms: i64) -> rusqlite::Result<Claim> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let prior: Option<String> = tx
        .query_row(
            "SELECT status FROM text_backs WHERE event_id = ?1 AND sink = ?2",
            params![r.event_id, r.sink],
            |row| row.get(0),
        )
        .optional()?;
    match prior.as_deref() {
        Some("sending") => {
            let reason = "outcome unknown: an earlier attempt got no answer (the agent stopped, or it timed out); \
                          not sent again, so the caller is never texted twice";
            set_status(&tx, r.event_id, r.sink, "unknown", Some(reason), None, now_ms)?;
            show(&tx, r.lead_id, &TextBack::failed(reason));
            tx.commit()?;
            return Ok(Claim::WasInFlight);
        }
        Some(s @ ("sent" | "skipped" | "unknown")) => return Ok(Claim::Done { status: s.to_string() }),
        // Not sent (`failed`: refused; `retry`: not reached): decide again.
        _ => {}
    }
    let number = r.facts.caller.as_deref().and_then(backstop_core::textback::textable);
    let mut facts = r.facts.clone();
    if let Some(n) = &number {
        facts.opted_out = opted_out(&tx, n)?;
        facts.last_sent_ms = last_sent_ms(&tx, n, r.sender)?;
    }
    let claim = match decide(&facts, now_ms, r.once_per_ms) {
        Decision::Skip(reason) => {
            upsert(&tx, r, number.as_deref(), "skipped", Some(reason.as_str()), None, now_ms)?;
            show(&tx, r.lead_id, &TextBack::skipped(reason));
            Claim::Skipped(reason)
        }
        Decision::Send { to } => {
            upsert(&tx, r, Some(&to), "sending", None, Some(now_ms), now_ms)?;
            Claim::Send { to }
        }
    };
    tx.commit()?;
    Ok(claim)
}

/// Put the outcome on the lead in the store. A failure there is logged and
/// does not undo the decision: the row here is what keeps a text from
/// going out twice, and must not be held up by the inbox's table.
fn show(conn: &Connection, lead_id: &str, t: &TextBack) {
    if let Err(e) = crate::store::set_text_back(conn, lead_id, t) {
        tracing::warn!(lead = lead_id, error = %e, "could not record the text-back on the lead");
    }
}

fn upsert(
    conn: &Connection,
    r: &Request<'_>,
    number: Option<&str>,
    status: &str,
    reason: Option<&str>,
    sent_ms: Option<i64>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO text_backs (event_id, sink, lead_id, number, sender, status, reason, sent_ms, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (event_id, sink) DO UPDATE SET number = excluded.number, status = excluded.status,
             reason = excluded.reason, sent_ms = excluded.sent_ms, updated_ms = excluded.updated_ms",
        params![r.event_id, r.sink, r.lead_id, number, r.sender, status, reason, sent_ms, now_ms],
    )?;
    Ok(())
}

/// Which row: an event at a sink, and its lead.
pub struct Key<'a> {
    pub event_id: &'a str,
    pub sink: &'a str,
    pub lead_id: &'a str,
}

/// Record how a claimed send ended (`sent`, `failed`, `retry`, `unknown`),
/// and, unless it will be retried, what the lead shows.
pub fn finish(
    conn: &mut Connection,
    key: &Key<'_>,
    status: &str,
    reason: Option<&str>,
    sid: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    set_status(&tx, key.event_id, key.sink, status, reason, sid, now_ms)?;
    let shown = match status {
        "sent" => Some(TextBack::sent(sid.map(str::to_string))),
        "retry" => None,
        _ => Some(TextBack::failed(reason.unwrap_or(status))),
    };
    if let Some(t) = shown {
        show(&tx, key.lead_id, &t);
    }
    tx.commit()
}

fn set_status(
    conn: &Connection,
    event_id: &str,
    sink: &str,
    status: &str,
    reason: Option<&str>,
    sid: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE text_backs SET status = ?3, reason = ?4, sid = COALESCE(?5, sid), updated_ms = ?6
         WHERE event_id = ?1 AND sink = ?2",
        params![event_id, sink, status, reason, sid, now_ms],
    )?;
    Ok(())
}

pub fn opted_out(conn: &Connection, number: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row("SELECT opted_out FROM sms_opt_outs WHERE number = ?1", [number], |r| r.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

/// When `number` was last texted (or a text to it claimed) from `sender`.
pub fn last_sent_ms(conn: &Connection, number: &str, sender: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT MAX(sent_ms) FROM text_backs
         WHERE number = ?1 AND sender = ?2 AND status IN ('sending', 'sent', 'unknown')",
        params![number, sender],
        |r| r.get(0),
    )
}

/// Record a STOP (`opted_out`) or START for `number`.
pub fn set_opt_out(
    conn: &Connection,
    number: &str,
    opted_out: bool,
    keyword: &str,
    account_sid: Option<&str>,
    to_number: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sms_opt_outs (number, opted_out, keyword, account_sid, to_number, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (number) DO UPDATE SET opted_out = excluded.opted_out, keyword = excluded.keyword,
             account_sid = excluded.account_sid, to_number = excluded.to_number, updated_ms = excluded.updated_ms",
        params![number, opted_out, keyword, account_sid, to_number, now_ms],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(caller: &str) -> Facts {
        Facts { caller: Some(caller.into()), source_verified: true, junk: false, opted_out: false, last_sent_ms: None }
    }

    fn req<'a>(event_id: &'a str, caller: &str) -> Request<'a> {
        Request {
            event_id,
            sink: "text_back:*:+15005550006",
            lead_id: "lead-1",
            sender: "+15005550006",
            facts: facts(caller),
            once_per_ms: 3_600_000,
        }
    }

    fn mem() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::store::SCHEMA).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    #[test]
    fn an_event_is_claimed_once_and_a_number_texted_once_per_window() {
        let mut c = mem();
        let r = req("evt_1", "+15551230001");
        assert_eq!(claim(&mut c, &r, 1000).unwrap(), Claim::Send { to: "+15551230001".into() });
        finish(&mut c, &Key { event_id: "evt_1", sink: r.sink, lead_id: "lead-1" }, "sent", None, Some("SM1"), 1100)
            .unwrap();
        // The same event again: done, nothing sent.
        assert_eq!(claim(&mut c, &r, 2000).unwrap(), Claim::Done { status: "sent".into() });
        // Another call from the number inside the window.
        assert_eq!(
            claim(&mut c, &req("evt_2", "5551230001"), 3000).unwrap(),
            Claim::Skipped(SkipReason::RecentlyTexted)
        );
        assert_eq!(claim(&mut c, &req("evt_2", "5551230001"), 3001).unwrap(), Claim::Done { status: "skipped".into() });
        // After it, texted again.
        assert_eq!(
            claim(&mut c, &req("evt_3", "+15551230001"), 1000 + 3_600_000).unwrap(),
            Claim::Send { to: "+15551230001".into() }
        );
    }

    #[test]
    fn an_attempt_without_an_answer_is_never_sent_again() {
        let mut c = mem();
        let r = req("evt_1", "+15551230001");
        assert!(matches!(claim(&mut c, &r, 1000).unwrap(), Claim::Send { .. }));
        // No finish: the agent died mid-request. The retry does not send.
        assert_eq!(claim(&mut c, &r, 5000).unwrap(), Claim::WasInFlight);
        assert_eq!(claim(&mut c, &r, 6000).unwrap(), Claim::Done { status: "unknown".into() });
        // And the number counts as texted.
        assert_eq!(
            claim(&mut c, &req("evt_2", "+15551230001"), 7000).unwrap(),
            Claim::Skipped(SkipReason::RecentlyTexted)
        );
    }

    #[test]
    fn a_refused_or_unreached_send_is_decided_again() {
        let mut c = mem();
        let r = req("evt_1", "+15551230001");
        assert!(matches!(claim(&mut c, &r, 1000).unwrap(), Claim::Send { .. }));
        finish(
            &mut c,
            &Key { event_id: "evt_1", sink: r.sink, lead_id: "lead-1" },
            "retry",
            Some("HTTP 503"),
            None,
            1100,
        )
        .unwrap();
        // Not sent, so it does not count for the window, and the retry sends.
        assert!(matches!(claim(&mut c, &r, 2000).unwrap(), Claim::Send { .. }));
        finish(
            &mut c,
            &Key { event_id: "evt_1", sink: r.sink, lead_id: "lead-1" },
            "failed",
            Some("HTTP 400"),
            None,
            2100,
        )
        .unwrap();
        assert_eq!(last_sent_ms(&c, "+15551230001", "+15005550006").unwrap(), None);
        assert!(matches!(claim(&mut c, &r, 3000).unwrap(), Claim::Send { .. }), "outbox retry --dead sends it");
    }

    #[test]
    fn opt_outs() {
        let mut c = mem();
        set_opt_out(&c, "+15551230001", true, "STOP", Some("ACx"), Some("+15005550006"), 10).unwrap();
        assert_eq!(claim(&mut c, &req("evt_1", "+15551230001"), 1000).unwrap(), Claim::Skipped(SkipReason::OptedOut));
        set_opt_out(&c, "+15551230001", false, "START", None, None, 20).unwrap();
        assert!(matches!(claim(&mut c, &req("evt_2", "+15551230001"), 1000).unwrap(), Claim::Send { .. }));
        assert!(!opted_out(&c, "+15550000000").unwrap());
    }
}
