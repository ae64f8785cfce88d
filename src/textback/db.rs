//! The text-back's tables, in the outbox's SQLite file: what was done for
//! each `call.missed` (`text_backs`, one row per event and sink) and who
//! opted out of texts from which of our numbers (`sms_opt_outs_v2`, one row
//! per caller and sending number). Plain functions of a connection and
//! times passed in.

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
///
/// `sms_opt_outs_v2`: the latest STOP (`opted_out` 1) or START (0) of a
/// caller (`number`, E.164 where it is a number) to one of our numbers
/// (`sender`, E.164, or [`ANY_SENDER`]). It replaces `sms_opt_outs`, keyed
/// by the caller alone, whose rows `open` moves over ([`migrate`]).
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
CREATE TABLE IF NOT EXISTS sms_opt_outs_v2 (
    number TEXT NOT NULL,
    sender TEXT NOT NULL,
    opted_out INTEGER NOT NULL,
    keyword TEXT NOT NULL,
    account_sid TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (number, sender)
);
";

/// The `sender` of an opt-out whose sending number is not known (a keyword
/// to a `To` that is no phone number, or a row of the old table without
/// one): it counts for every sender, until a START to one of them.
pub const ANY_SENDER: &str = "*";

/// Move the rows of `sms_opt_outs`, the table of this development cycle
/// that kept one flag per caller for every sender, into `sms_opt_outs_v2`,
/// and drop it. Each row was the caller's latest keyword, and its
/// `to_number` the number it was sent to (or, for an API 21610, our
/// sender), so it is kept for that sender; without one, for every sender
/// (`ANY_SENDER`): an opt-out is never lost. Where both tables have a row,
/// the newer wins. Does nothing when the old table is absent.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let old: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sms_opt_outs')",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    /// number, opted_out, keyword, account_sid, to_number, updated_ms.
    type OldRow = (String, bool, String, Option<String>, Option<String>, i64);
    let rows: Vec<OldRow> = {
        let mut st =
            tx.prepare("SELECT number, opted_out, keyword, account_sid, to_number, updated_ms FROM sms_opt_outs")?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (number, opted_out, keyword, account_sid, to_number, updated_ms) in rows {
        let sender = sender_of(to_number.as_deref());
        tx.execute(
            "INSERT INTO sms_opt_outs_v2 (number, sender, opted_out, keyword, account_sid, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (number, sender) DO UPDATE SET opted_out = excluded.opted_out, keyword = excluded.keyword,
                 account_sid = excluded.account_sid, updated_ms = excluded.updated_ms
             WHERE excluded.updated_ms > sms_opt_outs_v2.updated_ms",
            params![number, sender, opted_out, keyword, account_sid, updated_ms],
        )?;
    }
    tx.execute_batch("DROP TABLE sms_opt_outs")?;
    tx.commit()
}

/// The key an opt-out is kept under for a message to `to` (the inbound
/// webhook's `To`, or our `from`): its E.164 form, or [`ANY_SENDER`].
pub fn sender_of(to: Option<&str>) -> String {
    to.and_then(backstop_core::textback::textable).unwrap_or_else(|| ANY_SENDER.to_string())
}

/// A connection of the text-back's own to the outbox file.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = crate::sink::outbox::open_wal(path)?;
    conn.execute_batch(SCHEMA)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Why a send claimed before and never recorded is not tried again.
pub(super) const IN_FLIGHT: &str = "outcome unknown: an earlier attempt got no answer (the agent stopped, or it timed out); \
                                    not sent again, so the caller is never texted twice";

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
            set_status(&tx, r.event_id, r.sink, "unknown", Some(IN_FLIGHT), None, now_ms)?;
            show(&tx, r.lead_id, &TextBack::failed(IN_FLIGHT));
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
        facts.opted_out = opted_out(&tx, n, r.sender)?;
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
pub(super) fn show(conn: &Connection, lead_id: &str, t: &TextBack) {
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
    if let Some(t) = shown(status, reason, sid) {
        show(&tx, key.lead_id, &t);
    }
    tx.commit()
}

/// What the lead shows of a send that ended `status` (nothing while it will be retried).
pub(super) fn shown(status: &str, reason: Option<&str>, sid: Option<&str>) -> Option<TextBack> {
    match status {
        "sent" => Some(TextBack::sent(sid.map(str::to_string))),
        "retry" => None,
        _ => Some(TextBack::failed(reason.unwrap_or(status))),
    }
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

/// Whether `number` opted out of texts from `sender`: its row for `sender`
/// says so, or its row for [`ANY_SENDER`] does. The [`ANY_SENDER`] row only
/// ever adds an opt-out: a START sent to something that is no phone number
/// (a short code, a WhatsApp sender) never lifts a STOP sent to one of ours.
pub fn opted_out(conn: &Connection, number: &str, sender: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT COALESCE(MAX(opted_out), 0) FROM sms_opt_outs_v2 WHERE number = ?1 AND sender IN (?2, ?3)",
            params![number, sender, ANY_SENDER],
            |r| r.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false))
}

/// An opt-out row: number, sender, opted out, keyword, account, when.
pub type OptOut = (String, String, bool, String, Option<String>, i64);

/// The opt-out rows changed after `since_ms`, oldest first (a cluster node
/// takes them into the shared store, `shared::upload_opt_outs`).
pub fn opt_outs_since(conn: &Connection, since_ms: i64) -> rusqlite::Result<Vec<OptOut>> {
    let mut st = conn.prepare(
        "SELECT number, sender, opted_out, keyword, account_sid, updated_ms FROM sms_opt_outs_v2
         WHERE updated_ms > ?1 ORDER BY updated_ms",
    )?;
    st.query_map(params![since_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect()
}

/// This node's opt-out rows for `number` from `sender` and from every
/// sender: (sender, opted out, when).
pub fn opt_out_rows(conn: &Connection, number: &str, sender: &str) -> rusqlite::Result<Vec<(String, bool, i64)>> {
    let mut st = conn.prepare(
        "SELECT sender, opted_out, updated_ms FROM sms_opt_outs_v2 WHERE number = ?1 AND sender IN (?2, ?3)",
    )?;
    st.query_map(params![number, sender, ANY_SENDER], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
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

/// Record a STOP (`opted_out`) or START from `number` to `sender` (our
/// number it wrote to, E.164, or [`ANY_SENDER`]).
pub fn set_opt_out(
    conn: &Connection,
    number: &str,
    sender: &str,
    opted_out: bool,
    keyword: &str,
    account_sid: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sms_opt_outs_v2 (number, sender, opted_out, keyword, account_sid, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (number, sender) DO UPDATE SET opted_out = excluded.opted_out, keyword = excluded.keyword,
             account_sid = excluded.account_sid, updated_ms = excluded.updated_ms",
        params![number, sender, opted_out, keyword, account_sid, now_ms],
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
        set_opt_out(&c, "+15551230001", "+15005550006", true, "STOP", Some("ACx"), 10).unwrap();
        assert_eq!(claim(&mut c, &req("evt_1", "+15551230001"), 1000).unwrap(), Claim::Skipped(SkipReason::OptedOut));
        set_opt_out(&c, "+15551230001", "+15005550006", false, "START", None, 20).unwrap();
        assert!(matches!(claim(&mut c, &req("evt_2", "+15551230001"), 1000).unwrap(), Claim::Send { .. }));
        assert!(!opted_out(&c, "+15550000000", "+15005550006").unwrap());
    }

    /// A STOP is to one of our numbers: texts from another still go, and a
    /// START to that other one does not undo it.
    #[test]
    fn an_opt_out_is_per_sending_number() {
        let mut c = mem();
        let (a, b) = ("+15005550006", "+15005550007");
        let from_b =
            |event_id| Request { sink: "text_back:north:+15005550007", sender: b, ..req(event_id, "+15551230001") };
        set_opt_out(&c, "+15551230001", a, true, "STOP", Some("ACx"), 10).unwrap();
        assert_eq!(claim(&mut c, &req("evt_1", "+15551230001"), 1000).unwrap(), Claim::Skipped(SkipReason::OptedOut));
        assert_eq!(claim(&mut c, &from_b("evt_1"), 1000).unwrap(), Claim::Send { to: "+15551230001".into() });
        set_opt_out(&c, "+15551230001", b, false, "START", Some("ACx"), 20).unwrap();
        assert!(opted_out(&c, "+15551230001", a).unwrap(), "a START to B leaves the STOP to A");
        assert!(!opted_out(&c, "+15551230001", b).unwrap());
        assert_eq!(claim(&mut c, &req("evt_2", "+15551230001"), 2000).unwrap(), Claim::Skipped(SkipReason::OptedOut));

        // An opt-out to no known number counts for every sender; a START to
        // one of ours does not lift it (only a START to no known number does).
        set_opt_out(&c, "+15551230002", ANY_SENDER, true, "STOP", None, 30).unwrap();
        assert!(opted_out(&c, "+15551230002", a).unwrap() && opted_out(&c, "+15551230002", b).unwrap());
        set_opt_out(&c, "+15551230002", b, false, "START", None, 40).unwrap();
        assert!(opted_out(&c, "+15551230002", a).unwrap() && opted_out(&c, "+15551230002", b).unwrap());
        set_opt_out(&c, "+15551230002", ANY_SENDER, false, "START", None, 45).unwrap();
        assert!(!opted_out(&c, "+15551230002", a).unwrap() && !opted_out(&c, "+15551230002", b).unwrap());
        // A START to no known number (a short code, say) never lifts a STOP to one of ours.
        set_opt_out(&c, "+15551230004", a, true, "STOP", None, 60).unwrap();
        set_opt_out(&c, "+15551230004", ANY_SENDER, false, "YES", None, 70).unwrap();
        assert!(opted_out(&c, "+15551230004", a).unwrap() && !opted_out(&c, "+15551230004", b).unwrap());
        // On a tie, the opt-out.
        set_opt_out(&c, "+15551230003", a, false, "START", None, 50).unwrap();
        set_opt_out(&c, "+15551230003", ANY_SENDER, true, "STOP", None, 50).unwrap();
        assert!(opted_out(&c, "+15551230003", a).unwrap());
        assert_eq!(sender_of(Some("+1 500 555 0006")), a);
        assert_eq!(sender_of(Some("")), ANY_SENDER);
        assert_eq!(sender_of(None), ANY_SENDER);
    }

    /// The one-flag-per-caller table of this development cycle is moved to
    /// the per-sender one on open, once, and no opt-out is lost.
    #[test]
    fn the_old_table_is_migrated_on_open() {
        let path = std::env::temp_dir().join(format!("backstop-optout-migrate-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE sms_opt_outs (number TEXT PRIMARY KEY, opted_out INTEGER NOT NULL, keyword TEXT NOT NULL,
                     account_sid TEXT, to_number TEXT, updated_ms INTEGER NOT NULL);
                 INSERT INTO sms_opt_outs VALUES ('+15551230001', 1, 'STOP', 'ACx', '+15005550006', 10);
                 INSERT INTO sms_opt_outs VALUES ('+15551230002', 1, 'STOP', 'ACx', '', 11);
                 INSERT INTO sms_opt_outs VALUES ('+15551230003', 0, 'START', 'ACx', '+15005550007', 12);",
            )
            .unwrap();
        }
        let c = open(&path).unwrap();
        let (a, b) = ("+15005550006", "+15005550007");
        assert!(opted_out(&c, "+15551230001", a).unwrap() && !opted_out(&c, "+15551230001", b).unwrap());
        assert!(opted_out(&c, "+15551230002", a).unwrap() && opted_out(&c, "+15551230002", b).unwrap());
        assert!(!opted_out(&c, "+15551230003", a).unwrap() && !opted_out(&c, "+15551230003", b).unwrap());
        let old: i64 =
            c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sms_opt_outs'", [], |r| r.get(0)).unwrap();
        assert_eq!(old, 0, "the old table is dropped");
        drop(c);
        // Opening again changes nothing.
        let c = open(&path).unwrap();
        let n: i64 = c.query_row("SELECT COUNT(*) FROM sms_opt_outs_v2", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
        drop(c);
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
    }
}
