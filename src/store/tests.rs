//! The lead store against a real SQLite outbox in a temporary directory.

use super::*;
use crate::sink::delivery::{Delivery, Sink, Target};
use crate::sink::outbox::LineFilter;
use backstop_core::callback::CallbackPolicy;
use backstop_core::textback::TextBackStatus;
use std::path::PathBuf;

/// 2026-11-29T12:00:00Z
const T0: i64 = 1_795_953_600_000;
const MIN: i64 = 60_000;

/// A scratch folder for one test, removed when dropped (the metrics' tests use it too).
pub(crate) struct Dir(pub PathBuf);

impl Dir {
    pub(crate) fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("backstop-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub(crate) fn db(&self) -> PathBuf {
        self.0.join("outbox.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The golden call's lead (an emergency, from +15551234567), as `n`, received at `at`, due `due_min` later.
fn lead(n: u32, at: i64, due_min: Option<i64>) -> Lead {
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
    let mut lead: Lead = serde_json::from_value(event["lead"].clone()).unwrap();
    lead.id = format!("lead-{n}");
    lead.call_id = format!("call-{n}");
    lead.received_at = ms_rfc3339(at);
    lead.ended_at = Some(ms_rfc3339(at + 30_000));
    lead.callback = due_min.map(|d| CallbackState::due(ms_rfc3339(at + d * MIN)));
    lead
}

/// A plain lead: no emergency, no urgent word.
fn calm(mut l: Lead) -> Lead {
    l.answers.remove("urgency");
    l.urgent_words.clear();
    l
}

fn ev(kind: EventType, lead: &Lead) -> Event {
    Event::new(kind, lead.received_at.clone(), lead)
}

fn hook() -> SinkSpec {
    SinkSpec { name: "hook".into(), events: EventType::ALL.to_vec(), lines: LineFilter::All }
}

fn put(ob: &mut Outbox, kind: EventType, lead: &Lead, now: i64) {
    ob.append(&ev(kind, lead), &[hook()], now).unwrap();
}

fn ids(leads: &[StoredLead]) -> Vec<String> {
    leads.iter().map(|l| l.lead.id.clone()).collect()
}

fn q(view: View) -> Query {
    Query { view, ..Default::default() }
}

/// The event kinds in the outbox, oldest first.
fn kinds(ob: &mut Outbox) -> Vec<String> {
    let mut stmt = ob.conn().prepare("SELECT kind FROM events ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn the_schema_is_idempotent_and_an_older_outbox_gains_the_tables() {
    let dir = Dir::new("schema");
    // An outbox.db from before the store: its own tables only.
    {
        let c = Connection::open(dir.db()).unwrap();
        c.execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, call_id TEXT NOT NULL, created_ms INTEGER NOT NULL, body TEXT NOT NULL);").unwrap();
    }
    let mut ob = Outbox::open(&dir.db()).unwrap();
    put(&mut ob, EventType::CallMissed, &lead(1, T0, Some(15)), T0);
    drop(ob);
    let mut ob = Outbox::open(&dir.db()).unwrap();
    assert_eq!(count(ob.conn(), &q(View::All), T0).unwrap(), 1, "reopening keeps the rows");
}

#[test]
fn events_upsert_the_lead_and_the_stores_own_events_do_not_clobber_it() {
    let dir = Dir::new("upsert");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let mut l = lead(1, T0, Some(15));
    let mut ringing = l.clone();
    ringing.outcome = Outcome::Ringing;
    ringing.answers.clear();
    put(&mut ob, EventType::CallMissed, &ringing, T0);
    let got = get(ob.conn(), "lead-1", T0).unwrap().unwrap();
    assert_eq!(got.lead.outcome, Outcome::Ringing);
    assert!(!got.urgent, "no answer yet");
    assert_eq!(got.lead.callback.as_ref().unwrap().due_at, "2026-11-29T12:15:00.000Z");

    put(&mut ob, EventType::LeadCompleted, &l, T0 + 30_000);
    let got = get(ob.conn(), "lead-1", T0 + 60_000).unwrap().unwrap();
    assert_eq!(got.lead.outcome, Outcome::Completed);
    assert!(got.urgent, "the caller chose the emergency");
    assert_eq!(got.status, LeadStatus::New);

    // A late call.missed (a replay) does not take the lead back to ringing.
    put(&mut ob, EventType::CallMissed, &ringing, T0 + 40_000);
    // The store's own events carry a lead, but what they announce is the store's.
    let mut stale = l.clone();
    stale.summary = "stale".into();
    put(&mut ob, EventType::LeadCallbackOverdue, &stale, T0 + 41_000);
    put(&mut ob, EventType::LeadHandled, &stale, T0 + 42_000);
    let got = get(ob.conn(), "lead-1", T0 + 60_000).unwrap().unwrap();
    assert_eq!(got.lead.outcome, Outcome::Completed);
    assert_ne!(got.lead.summary, "stale");
    assert_eq!(got.status, LeadStatus::New, "a lead.handled event alone handles nothing");

    // Transcripts later: the body is replaced, urgent words count.
    l = calm(l);
    l.urgent_words = vec!["flood".into()];
    l.summary = "with transcripts".into();
    put(&mut ob, EventType::LeadUpdated, &l, T0 + 50_000);
    let got = get(ob.conn(), "lead-1", T0 + 60_000).unwrap().unwrap();
    assert_eq!(got.lead.summary, "with transcripts");
    assert!(got.urgent, "an urgent word");
    // Past due it is overdue, computed when asked.
    let late = get(ob.conn(), "lead-1", T0 + 15 * MIN).unwrap().unwrap();
    assert_eq!(late.status, LeadStatus::Overdue);
    assert_eq!(late.lead.callback.unwrap().status, LeadStatus::Overdue);
    assert!(get(ob.conn(), "nope", T0).unwrap().is_none());
}

#[test]
fn views_order_filter_and_page() {
    let dir = Dir::new("views");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let now = T0 + 60 * MIN;
    // 1: old, overdue. 2: newer, overdue, urgent. 3: not yet due. 4: newest, no clock.
    let l1 = calm(lead(1, T0, Some(15)));
    let l2 = lead(2, T0 + 10 * MIN, Some(15));
    let mut l3 = calm(lead(3, T0 + 20 * MIN, Some(120)));
    l3.line = "plumbing".into();
    let l4 = calm(lead(4, T0 + 30 * MIN, None));
    let mut junk = calm(lead(5, T0 + 40 * MIN, None));
    junk.junk.is_junk = true;
    let mut transferred = calm(lead(6, T0 + 50 * MIN, Some(15)));
    transferred.outcome = Outcome::Transferred;
    for l in [&l1, &l2, &l3, &l4, &junk, &transferred] {
        put(&mut ob, EventType::CallMissed, l, T0);
        put(&mut ob, EventType::LeadCompleted, l, T0);
    }
    let c = ob.conn();
    // Open: overdue first (newest first among them), then the rest newest first.
    assert_eq!(ids(&list(c, &q(View::Open), now).unwrap()), ["lead-2", "lead-1", "lead-4", "lead-3"]);
    assert_eq!(count(c, &q(View::Open), now).unwrap(), 4);
    assert_eq!(ids(&list(c, &q(View::Overdue), now).unwrap()), ["lead-2", "lead-1"]);
    assert_eq!(ids(&list(c, &q(View::Urgent), now).unwrap()), ["lead-2"]);
    assert_eq!(ids(&list(c, &q(View::Junk), now).unwrap()), ["lead-5"]);
    assert_eq!(ids(&list(c, &q(View::Handled), now).unwrap()), ["lead-6"], "a transfer handles the lead");
    assert_eq!(count(c, &q(View::All), now).unwrap(), 6);
    assert_eq!(
        ids(&list(c, &q(View::All), now).unwrap()),
        ["lead-6", "lead-5", "lead-4", "lead-3", "lead-2", "lead-1"]
    );
    // Before anything is due, the open view is newest first.
    assert_eq!(ids(&list(c, &q(View::Open), T0 + 14 * MIN).unwrap()), ["lead-4", "lead-3", "lead-2", "lead-1"]);
    // A line's leads only.
    let plumbing = Query { line: Some("plumbing".into()), ..q(View::Open) };
    assert_eq!(ids(&list(c, &plumbing, now).unwrap()), ["lead-3"]);
    assert_eq!(count(c, &plumbing, now).unwrap(), 1);
    // Pages.
    let page = |offset| ids(&list(c, &Query { limit: 3, offset, ..q(View::All) }, now).unwrap());
    assert_eq!(page(0), ["lead-6", "lead-5", "lead-4"]);
    assert_eq!(page(3), ["lead-3", "lead-2", "lead-1"]);
    assert!(page(6).is_empty());

    // Junk has no clock; a transferred lead is handled by the transfer, at the lead's end.
    let j = get(c, "lead-5", now).unwrap().unwrap();
    assert_eq!((j.status, j.lead.callback.is_none()), (LeadStatus::New, true));
    let t = get(c, "lead-6", now).unwrap().unwrap();
    let cb = t.lead.callback.unwrap();
    assert_eq!(t.status, LeadStatus::Handled);
    assert_eq!(cb.handled_by.as_deref(), Some("transfer"));
    assert_eq!(cb.handled_at.as_deref(), Some(ms_rfc3339(T0 + 50 * MIN + 30_000).as_str()));
    assert_eq!(cb.time_to_callback_secs, Some(30));
    // No clock: no callback shown and never overdue.
    let four = get(c, "lead-4", now + 1000 * MIN).unwrap().unwrap();
    assert_eq!((four.status, four.lead.callback), (LeadStatus::New, None));

    // The metrics' reads: overdue by line, and each handling once as the window moves.
    assert_eq!(overdue_by_line(c, now).unwrap(), [(l1.line.clone(), 2)]);
    assert_eq!(overdue_by_line(c, T0 + 14 * MIN).unwrap(), []);
    // Read every 2 s by the metrics: through the open leads' index, not a scan of every lead.
    let (filter, _) = view_sql(View::Overdue);
    let sql = format!("EXPLAIN QUERY PLAN SELECT line, COUNT(*) FROM leads WHERE {filter} GROUP BY line");
    let plan: String = c.query_row(&sql, [now], |r| r.get(3)).unwrap();
    assert!(plan.contains("leads_open_due"), "{plan}");
    // The transfer's lead.handled, in commit order, read once.
    let (took, last) = handled_after_seq(c, 0).unwrap();
    assert_eq!(took, [30]);
    assert_eq!(last, last_event_seq(c).unwrap(), "on from the newest event, a handling or not");
    assert_eq!(handled_after_seq(c, last).unwrap(), (vec![], last), "read once");
    // The range is a search of the primary key, not a scan of the events.
    let sql = format!("EXPLAIN QUERY PLAN {HANDLED_AFTER_SQL}");
    let plan: String = c.query_row(&sql, params![last, last, 1000], |r| r.get(3)).unwrap();
    assert!(plan.contains("INTEGER PRIMARY KEY (rowid>? AND rowid<?)"), "{plan}");
    // Events with no handling among them move the window on too: the next read starts after them.
    put(&mut ob, EventType::CallMissed, &calm(lead(7, T0 + 60 * MIN, Some(15))), T0);
    let c = ob.conn();
    let newest = last_event_seq(c).unwrap();
    assert!(newest > last);
    assert_eq!(handled_after_seq(c, last).unwrap(), (vec![], newest));
}

#[test]
fn the_events_of_a_lead_are_its_own_oldest_first() {
    let dir = Dir::new("events");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let a = lead(1, T0, Some(15));
    let b = lead(2, T0, Some(15));
    put(&mut ob, EventType::CallMissed, &a, T0);
    put(&mut ob, EventType::CallMissed, &b, T0);
    put(&mut ob, EventType::LeadCompleted, &a, T0 + 1);
    // Another call that reused the Call-ID.
    let mut reuse = lead(3, T0, Some(15));
    reuse.call_id = a.call_id.clone();
    put(&mut ob, EventType::CallMissed, &reuse, T0 + 2);
    let evs = events(ob.conn(), "lead-1").unwrap();
    let kinds: Vec<EventType> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::CallMissed, EventType::LeadCompleted]);
    assert!(evs.iter().all(|e| e.lead.id == "lead-1"));
    assert!(events(ob.conn(), "nope").unwrap().is_empty());
}

#[test]
fn text_back_is_overlaid_on_the_lead() {
    let dir = Dir::new("textback");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let l = lead(1, T0, Some(15));
    put(&mut ob, EventType::CallMissed, &l, T0);
    let tb = TextBack { reason: None, sid: Some("SM123".into()), status: TextBackStatus::Sent };
    set_text_back(ob.conn(), "lead-1", &tb).unwrap();
    // A later lead body without it does not lose it.
    put(&mut ob, EventType::LeadCompleted, &l, T0 + 1);
    assert_eq!(get(ob.conn(), "lead-1", T0).unwrap().unwrap().lead.text_back, Some(tb));
    set_text_back(ob.conn(), "unknown", &TextBack { reason: None, sid: None, status: TextBackStatus::Failed }).unwrap();
}

#[test]
fn import_takes_the_last_line_per_lead_once_skipping_bad_lines() {
    let dir = Dir::new("import");
    let jsonl = dir.0.join("leads.jsonl");
    let mut old = calm(lead(1, T0, None));
    let first = serde_json::to_string(&old).unwrap();
    old.summary = "updated".into();
    let second = serde_json::to_string(&old).unwrap();
    let other = serde_json::to_string(&calm(lead(2, T0 + MIN, None))).unwrap();
    std::fs::write(&jsonl, format!("{first}\nnot json at all\n{{\"id\":\"x\"}}\n\n{other}\n{second}\n")).unwrap();
    let mut ob = Outbox::open(&dir.db()).unwrap();
    // Events an older version left in the outbox (not recorded in the store):
    // lead 1's newest version, and lead 7 that no file has yet.
    let mut newest = old.clone();
    newest.summary = "newest".into();
    let seven = calm(lead(7, T0 + 2 * MIN, Some(15)));
    for (i, (kind, l)) in
        [(EventType::LeadCompleted, &old), (EventType::CallMissed, &seven), (EventType::LeadUpdated, &newest)]
            .into_iter()
            .enumerate()
    {
        let e = ev(kind, l);
        ob.conn()
            .execute(
                "INSERT INTO events (id, kind, call_id, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.id, kind.as_str(), l.call_id, T0 + i as i64, serde_json::to_string(&e).unwrap()],
            )
            .unwrap();
    }
    // One lead already in the store (it came in through an event): kept as it is.
    let mut live = lead(2, T0 + MIN, Some(15));
    live.summary = "live".into();
    put(&mut ob, EventType::CallMissed, &live, T0);
    assert_eq!(import::import_once(&mut ob, &jsonl).unwrap(), 2);
    let got = get(ob.conn(), "lead-1", T0 + 1000 * MIN).unwrap().unwrap();
    assert_eq!(got.lead.summary, "newest", "the newest event of a lead wins over the file");
    let seven = get(ob.conn(), "lead-7", T0 + 1000 * MIN).unwrap().unwrap();
    assert_eq!(seven.status, LeadStatus::Overdue, "its due time came with it");
    let next: Option<i64> =
        ob.conn().query_row("SELECT next_reminder_ms FROM leads WHERE id = 'lead-7'", [], |r| r.get(0)).unwrap();
    assert_eq!(next, None, "but never a reminder");
    assert_eq!((got.status, got.lead.callback), (LeadStatus::New, None), "no clock for imported leads");
    assert_eq!(get(ob.conn(), "lead-2", T0).unwrap().unwrap().lead.summary, "live");
    let next: Option<i64> =
        ob.conn().query_row("SELECT next_reminder_ms FROM leads WHERE id = 'lead-1'", [], |r| r.get(0)).unwrap();
    assert_eq!(next, None, "never a reminder");
    // Once: more lines later, or the store emptied, import nothing again.
    std::fs::write(&jsonl, serde_json::to_string(&calm(lead(3, T0, None))).unwrap() + "\n").unwrap();
    assert_eq!(import::import_once(&mut ob, &jsonl).unwrap(), 0);
    assert!(get(ob.conn(), "lead-3", T0).unwrap().is_none());
    // No file at all is not an error (a fresh install), and counts as done.
    let dir2 = Dir::new("import-none");
    let mut ob2 = Outbox::open(&dir2.db()).unwrap();
    assert_eq!(import::import_once(&mut ob2, &dir2.0.join("leads.jsonl")).unwrap(), 0);
}

#[test]
fn handling_from_the_cli_commits_the_change_and_its_event_together() {
    let dir = Dir::new("cli");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    put(&mut ob, EventType::CallMissed, &lead(1, T0, Some(15)), T0);
    let at = T0 + 5 * MIN + 30_000;
    let (got, published) =
        mark_handled_in(&mut ob, &[hook()], "lead-1", "cli", Some("left a message".into()), at).unwrap();
    assert!(published);
    assert_eq!(got.status, LeadStatus::Handled);
    let cb = got.lead.callback.clone().unwrap();
    assert_eq!(cb.time_to_callback_secs, Some(330));
    assert_eq!((cb.handled_by.as_deref(), cb.note.as_deref()), (Some("cli"), Some("left a message")));
    // The event, with a delivery for the sink, carrying the handled lead.
    let evs = events(ob.conn(), "lead-1").unwrap();
    assert_eq!(evs.last().unwrap().kind, EventType::LeadHandled);
    assert_eq!(evs.last().unwrap().lead.callback.as_ref().unwrap().handled_at, cb.handled_at);
    let pending: i64 =
        ob.conn().query_row("SELECT COUNT(*) FROM deliveries WHERE sink = 'hook'", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, 2);
    // Again: nothing changes and nothing is published.
    let (again, published) = mark_handled_in(&mut ob, &[hook()], "lead-1", "bob", None, at + MIN).unwrap();
    assert!(!published);
    assert_eq!(again.lead.callback.unwrap().handled_by.as_deref(), Some("cli"));
    assert_eq!(kinds(&mut ob), ["call.missed", "lead.handled"]);
    assert!(matches!(mark_handled_in(&mut ob, &[hook()], "nope", "cli", None, at), Err(StoreError::NotFound(_))));
}

fn delivery(ob: Outbox, dir: &Dir) -> Delivery {
    let sink = Sink {
        spec: hook(),
        target: Target::EventsFile(dir.0.join("events.jsonl")),
        max_interval: Duration::from_secs(1),
        max_age: Duration::from_secs(3600),
    };
    Delivery::new(ob, vec![sink], 1000, Duration::from_secs(3600))
}

fn with_db<T>(d: &Delivery, f: impl FnOnce(&mut Outbox) -> T) -> T {
    let db = d.outbox();
    let mut db = db.lock().unwrap();
    f(&mut db)
}

#[tokio::test]
async fn mark_handled_and_reopen_through_the_publisher() {
    let dir = Dir::new("handle");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let now = crate::sink::delivery::now_ms();
    put(&mut ob, EventType::CallMissed, &lead(1, now - 90_000, Some(15)), now);
    let d = delivery(ob, &dir);
    let p = d.publisher();
    let got = mark_handled(&p, "lead-1", "alice", Some("fixed".into())).await.unwrap();
    assert_eq!(got.status, LeadStatus::Handled);
    let cb = got.lead.callback.clone().unwrap();
    assert!((90..=95).contains(&cb.time_to_callback_secs.unwrap()), "{cb:?}");
    assert_eq!(cb.handled_by.as_deref(), Some("alice"));
    // The read the store made through the publisher committed nothing.
    assert_eq!(with_db(&d, kinds), ["call.missed", "lead.handled"]);
    // Idempotent.
    let again = mark_handled(&p, "lead-1", "bob", None).await.unwrap();
    assert_eq!(again.lead.callback.unwrap().handled_by.as_deref(), Some("alice"));
    assert_eq!(with_db(&d, kinds), ["call.missed", "lead.handled"]);
    assert!(matches!(mark_handled(&p, "nope", "bob", None).await, Err(StoreError::NotFound(_))));
    assert!(matches!(reopen(&p, "nope", "bob").await, Err(StoreError::NotFound(_))));

    // Reopen: open again, overdue as before (the clock does not restart), announced by lead.updated.
    let open = reopen(&p, "lead-1", "alice").await.unwrap();
    assert_eq!(open.status, LeadStatus::New);
    let cb = open.lead.callback.clone().unwrap();
    assert_eq!((cb.handled_at, cb.handled_by, cb.note), (None, None, None));
    assert_eq!(with_db(&d, kinds), ["call.missed", "lead.handled", "lead.updated"]);
    let stored = with_db(&d, |ob| get(ob.conn(), "lead-1", now).unwrap().unwrap());
    assert_eq!(stored.status, LeadStatus::New);
    // Reopening an open lead does nothing.
    reopen(&p, "lead-1", "alice").await.unwrap();
    assert_eq!(with_db(&d, kinds).len(), 3);
    // And it can be handled again.
    mark_handled(&p, "lead-1", "bob", None).await.unwrap();
    assert_eq!(with_db(&d, kinds), ["call.missed", "lead.handled", "lead.updated", "lead.handled"]);
}

#[tokio::test]
async fn the_clock_reminds_once_per_due_time_from_the_database() {
    let dir = Dir::new("clock");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let a = calm(lead(1, T0, Some(15)));
    let b = calm(lead(2, T0, Some(15)));
    let mut junk = calm(lead(3, T0, Some(15)));
    junk.junk.is_junk = true;
    for l in [&a, &b, &junk] {
        put(&mut ob, EventType::CallMissed, l, T0);
    }
    let policy = CallbackPolicy {
        due_open: Duration::from_secs(15 * 60),
        due_closed: Duration::from_secs(15 * 60),
        repeat_every: Some(Duration::from_secs(10 * 60)),
        max_reminders: 1,
    };
    let d = delivery(ob, &dir);
    let p = d.publisher();
    let overdue = |d: &Delivery| -> Vec<(String, u32)> {
        with_db(d, |ob| {
            let mut stmt =
                ob.conn().prepare("SELECT body FROM events WHERE kind = 'lead.callback_overdue' ORDER BY seq").unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|b| serde_json::from_str::<Event>(&b.unwrap()).unwrap())
                .map(|e| (e.lead.id.clone(), e.lead.callback.unwrap().reminders))
                .collect()
        })
    };
    // Before due: nothing, and the next look is at the due time.
    assert_eq!(clock::tick(&p, &policy, T0 + 14 * MIN).await.unwrap(), Some(T0 + 15 * MIN));
    assert!(overdue(&d).is_empty());
    // Lead 2 is handled before due: it never fires.
    mark_handled(&p, "lead-2", "alice", None).await.unwrap();
    // At due: one reminder for lead 1 (junk has no clock); the next ten minutes on.
    assert_eq!(clock::tick(&p, &policy, T0 + 15 * MIN).await.unwrap(), Some(T0 + 25 * MIN));
    assert_eq!(overdue(&d), [("lead-1".to_string(), 1)]);
    let got = with_db(&d, |ob| get(ob.conn(), "lead-1", T0 + 16 * MIN).unwrap().unwrap());
    assert_eq!((got.status, got.lead.callback.unwrap().reminders), (LeadStatus::Overdue, 1));
    // Looking again changes nothing, nor does a "restart" (a new delivery on the same file).
    clock::tick(&p, &policy, T0 + 16 * MIN).await.unwrap();
    drop(p);
    drop(d);
    let d = delivery(Outbox::open(&dir.db()).unwrap(), &dir);
    let p = d.publisher();
    assert_eq!(clock::tick(&p, &policy, T0 + 20 * MIN).await.unwrap(), Some(T0 + 25 * MIN));
    assert_eq!(overdue(&d).len(), 1);
    // The repeat, then no more (max_reminders = 1).
    assert_eq!(clock::tick(&p, &policy, T0 + 25 * MIN).await.unwrap(), None);
    assert_eq!(overdue(&d), [("lead-1".to_string(), 1), ("lead-1".to_string(), 2)]);
    clock::tick(&p, &policy, T0 + 300 * MIN).await.unwrap();
    assert_eq!(overdue(&d).len(), 2);
    // The events are keyed by the reminder's number: published again, they are the same events.
    let ids: Vec<String> = with_db(&d, |ob| {
        let mut stmt = ob.conn().prepare("SELECT id FROM events WHERE kind = 'lead.callback_overdue'").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    });
    let stored = with_db(&d, |ob| get(ob.conn(), "lead-1", T0).unwrap().unwrap());
    assert_eq!(ids[0], Event::keyed(EventType::LeadCallbackOverdue, "overdue 1", String::new(), &stored.lead).id);
}

#[tokio::test]
async fn after_a_long_stop_the_missed_repeats_do_not_come_in_a_burst() {
    let dir = Dir::new("clock-burst");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    put(&mut ob, EventType::CallMissed, &calm(lead(1, T0, Some(15))), T0);
    let policy = CallbackPolicy {
        due_open: Duration::from_secs(15 * 60),
        due_closed: Duration::from_secs(15 * 60),
        repeat_every: Some(Duration::from_secs(10 * 60)),
        max_reminders: 5,
    };
    let d = delivery(ob, &dir);
    let p = d.publisher();
    // Down for two hours past due: one reminder now, the next one interval later.
    let now = T0 + 135 * MIN;
    assert_eq!(clock::tick(&p, &policy, now).await.unwrap(), Some(now + 10 * MIN));
    assert_eq!(clock::tick(&p, &policy, now + MIN).await.unwrap(), Some(now + 10 * MIN));
    let n: i64 = with_db(&d, |ob| {
        ob.conn()
            .query_row("SELECT COUNT(*) FROM events WHERE kind = 'lead.callback_overdue'", [], |r| r.get(0))
            .unwrap()
    });
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_lead_reopened_before_its_first_reminder_still_gets_it_and_the_task_stops_on_shutdown() {
    let dir = Dir::new("clock-reopen");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let now = crate::sink::delivery::now_ms();
    // Due a second ago.
    let mut l = calm(lead(1, now - 60_000, None));
    l.callback = lead(1, now - 1000, Some(0)).callback;
    put(&mut ob, EventType::CallMissed, &l, now);
    let d = delivery(ob, &dir);
    let p = d.publisher();
    mark_handled(&p, "lead-1", "alice", None).await.unwrap();
    reopen(&p, "lead-1", "alice").await.unwrap();
    // The task itself: it sends the reminder within its one-second rounds, then stops when told.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(clock::run(p.clone(), CallbackPolicy::default(), stopped));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let overdue = || {
        with_db(&d, |ob| -> i64 {
            ob.conn()
                .query_row("SELECT COUNT(*) FROM events WHERE kind = 'lead.callback_overdue'", [], |r| r.get(0))
                .unwrap()
        })
    };
    while overdue() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(overdue(), 1);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("the clock stops on shutdown").unwrap();
    // Reopened again after that reminder: no second one (the clock does not restart).
    mark_handled(&p, "lead-1", "alice", None).await.unwrap();
    reopen(&p, "lead-1", "alice").await.unwrap();
    assert_eq!(clock::tick(&p, &CallbackPolicy::default(), now + 3_600_000).await.unwrap(), None);
    assert_eq!(overdue(), 1);
}

/// The events of a lead in the outbox, as committed, oldest first.
fn committed(ob: &mut Outbox, id: &str) -> Vec<Event> {
    events(ob.conn(), id).unwrap()
}

#[test]
fn later_events_carry_the_stores_callback_and_text_back_and_a_duplicate_records_nothing() {
    let dir = Dir::new("overlay");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    // The call task stamps `callback: {status: new}` on every lead of the call.
    let stale = lead(1, T0, Some(15));
    put(&mut ob, EventType::CallMissed, &stale, T0);
    let tb = TextBack { reason: None, sid: Some("SM1".into()), status: TextBackStatus::Sent };
    set_text_back(ob.conn(), "lead-1", &tb).unwrap();
    // The owner calls back; then the transcripts land and the lead goes out.
    mark_handled_in(&mut ob, &[hook()], "lead-1", "alice", Some("booked".into()), T0 + 5 * MIN).unwrap();
    put(&mut ob, EventType::LeadCompleted, &stale, T0 + 6 * MIN);
    let mut transcribed = stale.clone();
    transcribed.summary = "with transcripts".into();
    let update = ev(EventType::LeadUpdated, &transcribed);
    ob.append(&update, &[hook()], T0 + 7 * MIN).unwrap();
    let evs = committed(&mut ob, "lead-1");
    let kinds: Vec<EventType> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventType::CallMissed, EventType::LeadHandled, EventType::LeadCompleted, EventType::LeadUpdated]
    );
    for e in &evs[2..] {
        let cb = e.lead.callback.clone().unwrap();
        assert_eq!(cb.status, LeadStatus::Handled, "{:?} carries the store's callback", e.kind);
        assert_eq!((cb.handled_by.as_deref(), cb.note.as_deref()), (Some("alice"), Some("booked")));
        assert_eq!(cb.handled_at.as_deref(), Some(ms_rfc3339(T0 + 5 * MIN).as_str()));
        assert_eq!(cb.time_to_callback_secs, Some(300));
        assert_eq!(e.lead.text_back.as_ref(), Some(&tb), "and its text-back");
    }
    // The store keeps the lead's body and its own state as before.
    let got = get(ob.conn(), "lead-1", T0 + 8 * MIN).unwrap().unwrap();
    assert_eq!((got.status, got.lead.summary.as_str()), (LeadStatus::Handled, "with transcripts"));
    // Not handled: the store's status at the time (overdue, its reminders).
    let other = calm(lead(2, T0, Some(15)));
    put(&mut ob, EventType::CallMissed, &other, T0);
    ob.conn().execute("UPDATE leads SET reminders = 1 WHERE id = 'lead-2'", []).unwrap();
    put(&mut ob, EventType::LeadCompleted, &other, T0 + 20 * MIN);
    let cb = committed(&mut ob, "lead-2").pop().unwrap().lead.callback.unwrap();
    assert_eq!((cb.status, cb.reminders, cb.handled_at), (LeadStatus::Overdue, 1, None));
    // Junk shows no clock, as the store has it.
    let mut junk = calm(lead(3, T0, Some(15)));
    junk.junk.is_junk = true;
    put(&mut ob, EventType::LeadCompleted, &junk, T0);
    assert_eq!(committed(&mut ob, "lead-3").pop().unwrap().lead.callback, None);

    // The same event again (a replay with its id): nothing is recorded, nothing added.
    let mut later = transcribed.clone();
    later.summary = "later".into();
    put(&mut ob, EventType::LeadUpdated, &later, T0 + 9 * MIN);
    let before = kinds_len(&mut ob);
    ob.append(&update, &[hook()], T0 + 10 * MIN).unwrap();
    assert_eq!(kinds_len(&mut ob), before);
    assert_eq!(get(ob.conn(), "lead-1", T0).unwrap().unwrap().lead.summary, "later", "not re-recorded");
}

fn kinds_len(ob: &mut Outbox) -> usize {
    kinds(ob).len()
}

#[tokio::test]
async fn a_reopen_shows_as_an_open_lead_updated_and_later_updates_say_so_too() {
    let dir = Dir::new("overlay-reopen");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let now = crate::sink::delivery::now_ms();
    let stale = lead(1, now - 60_000, Some(15));
    put(&mut ob, EventType::CallMissed, &stale, now);
    let d = delivery(ob, &dir);
    let p = d.publisher();
    mark_handled(&p, "lead-1", "alice", None).await.unwrap();
    // A transcript update of the handled lead: handled, by alice.
    p.publish(ev(EventType::LeadUpdated, &stale)).await.unwrap();
    reopen(&p, "lead-1", "alice").await.unwrap();
    // Another update after the reopen: open, like the reopen's own.
    p.publish(ev(EventType::LeadUpdated, &stale)).await.unwrap();
    let evs = with_db(&d, |ob| committed(ob, "lead-1"));
    let seen: Vec<(EventType, LeadStatus, Option<String>)> = evs
        .iter()
        .map(|e| {
            let cb = e.lead.callback.clone().unwrap();
            (e.kind, cb.status, cb.handled_by)
        })
        .collect();
    let alice = Some("alice".to_string());
    assert_eq!(
        seen,
        [
            (EventType::CallMissed, LeadStatus::New, None),
            (EventType::LeadHandled, LeadStatus::Handled, alice.clone()),
            (EventType::LeadUpdated, LeadStatus::Handled, alice),
            (EventType::LeadUpdated, LeadStatus::New, None),
            (EventType::LeadUpdated, LeadStatus::New, None),
        ]
    );
}

#[test]
fn a_transfer_publishes_lead_handled_once_in_the_same_transaction() {
    let dir = Dir::new("transfer-handled");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    let mut l = calm(lead(1, T0, Some(15)));
    put(&mut ob, EventType::CallMissed, &l, T0);
    l.outcome = Outcome::Transferred;
    l.ended_at = None;
    // Transferred 40 s after the call came in.
    let transferred = ev(EventType::CallTransferred, &l);
    ob.append(&transferred, &[hook()], T0 + 40_000).unwrap();
    // A replay of it, then the call's lead.completed: no second lead.handled.
    ob.append(&transferred, &[hook()], T0 + 41_000).unwrap();
    l.ended_at = Some(ms_rfc3339(T0 + 45_000));
    put(&mut ob, EventType::LeadCompleted, &l, T0 + 45_000);
    assert_eq!(kinds(&mut ob), ["call.missed", "call.transferred", "lead.handled", "lead.completed"]);
    let evs = committed(&mut ob, "lead-1");
    let handled = &evs[2];
    assert_eq!(handled.id, Event::keyed(EventType::LeadHandled, "transferred", String::new(), &l).id);
    let cb = handled.lead.callback.clone().unwrap();
    assert_eq!((cb.status, cb.handled_by.as_deref()), (LeadStatus::Handled, Some("transfer")));
    assert_eq!(cb.time_to_callback_secs, Some(40));
    assert_eq!(cb.handled_at.as_deref(), Some(ms_rfc3339(T0 + 40_000).as_str()));
    // call.transferred itself and lead.completed carry the handled lead too.
    for e in [&evs[1], &evs[3]] {
        assert_eq!(e.lead.callback.as_ref().unwrap().handled_by.as_deref(), Some("transfer"));
    }
    // Every event has its delivery to the hook.
    let n: i64 = ob.conn().query_row("SELECT COUNT(*) FROM deliveries WHERE sink = 'hook'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 4);

    // Reopened between call.transferred and lead.completed: it stays open.
    let mut m = calm(lead(2, T0, Some(15)));
    m.outcome = Outcome::Transferred;
    put(&mut ob, EventType::CallTransferred, &m, T0 + 30_000);
    let (open, published) = change_in(&mut ob, &[hook()], "lead-2", T0 + MIN, reopening).unwrap();
    assert!(published);
    assert_eq!(open.status, LeadStatus::New);
    put(&mut ob, EventType::LeadCompleted, &m, T0 + 2 * MIN);
    assert_eq!(get(ob.conn(), "lead-2", T0 + 2 * MIN).unwrap().unwrap().status, LeadStatus::New);
    let kinds2: Vec<EventType> = committed(&mut ob, "lead-2").iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds2,
        [EventType::CallTransferred, EventType::LeadHandled, EventType::LeadUpdated, EventType::LeadCompleted]
    );

    // The same when the outbox no longer has the transfer's lead.handled
    // (delivered and pruned before a late lead.completed): the row remembers.
    let mut k = calm(lead(3, T0, Some(15)));
    k.outcome = Outcome::Transferred;
    put(&mut ob, EventType::CallTransferred, &k, T0 + 30_000);
    ob.conn().execute("DELETE FROM events WHERE kind = 'lead.handled' AND call_id = ?1", [&k.call_id]).unwrap();
    change_in(&mut ob, &[hook()], "lead-3", T0 + MIN, reopening).unwrap();
    put(&mut ob, EventType::LeadCompleted, &k, T0 + 2 * MIN);
    assert_eq!(get(ob.conn(), "lead-3", T0 + 2 * MIN).unwrap().unwrap().status, LeadStatus::New);
    let handled = committed(&mut ob, "lead-3").iter().filter(|e| e.kind == EventType::LeadHandled).count();
    assert_eq!(handled, 0, "only the pruned one");
}

#[tokio::test]
async fn leads_past_their_last_allowed_reminder_or_unreadable_do_not_starve_the_clock() {
    let dir = Dir::new("clock-starve");
    let mut ob = Outbox::open(&dir.db()).unwrap();
    // 150 leads that had their first reminder under a policy with repeats,
    // their next one due at T0 + 25 min.
    for n in 0..150 {
        put(&mut ob, EventType::CallMissed, &calm(lead(n, T0, Some(15))), T0);
    }
    ob.conn().execute("UPDATE leads SET reminders = 1, next_reminder_ms = ?1", params![T0 + 25 * MIN]).unwrap();
    // One whose JSON cannot be read, due before them.
    put(&mut ob, EventType::CallMissed, &calm(lead(998, T0, Some(10))), T0);
    ob.conn().execute("UPDATE leads SET lead = 'not json' WHERE id = 'lead-998'", []).unwrap();
    // A new lead, due after them all.
    put(&mut ob, EventType::CallMissed, &calm(lead(999, T0 + 20 * MIN, Some(10))), T0 + 20 * MIN);
    let d = delivery(ob, &dir);
    let p = d.publisher();
    // Now [callback] allows no repeats.
    let policy = CallbackPolicy::default();
    let now = T0 + 31 * MIN;
    // The next look: the unreadable one's, an hour on.
    assert_eq!(clock::tick(&p, &policy, now).await.unwrap(), Some(now + 60 * MIN));
    let overdue: Vec<String> = with_db(&d, |ob| {
        let mut stmt = ob.conn().prepare("SELECT body FROM events WHERE kind = 'lead.callback_overdue'").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|b| serde_json::from_str::<Event>(&b.unwrap()).unwrap().lead.id)
            .collect()
    });
    assert_eq!(overdue, ["lead-999"], "the new lead got its reminder in this round");
    let (cleared, parked): (i64, Option<i64>) = with_db(&d, |ob| {
        let c = ob.conn();
        let cleared = c
            .query_row(
                "SELECT COUNT(*) FROM leads WHERE reminders = 1 AND next_reminder_ms IS NULL AND id != 'lead-999'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let parked = c.query_row("SELECT next_reminder_ms FROM leads WHERE id = 'lead-998'", [], |r| r.get(0)).unwrap();
        (cleared, parked)
    });
    assert_eq!(cleared, 150, "no more allowed: their times are cleared, without an event");
    assert_eq!(parked, Some(now + 60 * MIN));
    // Nothing more to do now.
    assert_eq!(clock::tick(&p, &policy, now + MIN).await.unwrap(), Some(now + 60 * MIN));
}

/// A cluster node's store follows another node's events (`Outbox::apply_remote`):
/// the lead, its handling and its reopening, without deliveries, and never
/// taken for a call of its own.
#[test]
fn another_nodes_events_are_followed_without_deliveries_or_calls_of_our_own() {
    let (da, db) = (Dir::new("node-a"), Dir::new("node-b"));
    let (mut a, mut b) = (Outbox::open(&da.db()).unwrap(), Outbox::open(&db.db()).unwrap());
    let l = lead(1, T0, Some(15));
    put(&mut a, EventType::CallMissed, &l, T0);
    // The call is in progress on node a: node b follows it but never closes it as its own.
    for e in committed(&mut a, "lead-1") {
        assert!(b.apply_remote(&e, T0).unwrap());
    }
    assert!(b.unfinished_calls().unwrap().is_empty(), "another node's open call is not ours to close");
    assert_eq!(a.unfinished_calls().unwrap().len(), 1);
    put(&mut a, EventType::LeadCompleted, &l, T0 + MIN);
    mark_handled_in(&mut a, &[hook()], "lead-1", "ann", Some("booked".into()), T0 + 5 * MIN).unwrap();
    let seen = committed(&mut a, "lead-1");
    for e in &seen {
        b.apply_remote(e, T0 + 5 * MIN).unwrap();
    }
    // Applied once: again, nothing.
    assert!(!b.apply_remote(&seen[1], T0 + 6 * MIN).unwrap());
    let got = get(b.conn(), "lead-1", T0 + 6 * MIN).unwrap().unwrap();
    assert_eq!(got.status, LeadStatus::Handled);
    let cb = got.lead.callback.unwrap();
    assert_eq!((cb.handled_by.as_deref(), cb.note.as_deref()), (Some("ann"), Some("booked")));
    assert_eq!(cb.time_to_callback_secs, Some(300));
    assert_eq!(kinds(&mut b), ["call.missed", "lead.completed", "lead.handled"]);
    let (deliveries, remote): (i64, i64) = b
        .conn()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM deliveries), (SELECT COUNT(*) FROM events WHERE remote = 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((deliveries, remote), (0, 3), "its own node delivers it; node b only follows");
    // The handling is counted by the node that made it, not again by the followers.
    assert_eq!(handled_after_seq(b.conn(), 0).unwrap().0, Vec::<u64>::new());
    assert_eq!(handled_after_seq(a.conn(), 0).unwrap().0, vec![300]);

    // Reopened on node a: open on node b too, its reminder back.
    let (reopened, published) = change_in(&mut a, &[hook()], "lead-1", T0 + 7 * MIN, reopening).unwrap();
    assert!(published && reopened.status == LeadStatus::New);
    let last = committed(&mut a, "lead-1").pop().unwrap();
    assert_eq!(last.kind, EventType::LeadUpdated);
    assert!(b.apply_remote(&last, T0 + 7 * MIN).unwrap());
    let got = get(b.conn(), "lead-1", T0 + 7 * MIN).unwrap().unwrap();
    assert_eq!(got.status, LeadStatus::New);
    assert!(got.lead.callback.unwrap().handled_by.is_none());
    // A transcript's lead.updated is not a reopen: a handled lead stays handled.
    mark_handled_in(&mut a, &[hook()], "lead-1", "ann", None, T0 + 8 * MIN).unwrap();
    for e in committed(&mut a, "lead-1") {
        b.apply_remote(&e, T0 + 8 * MIN).unwrap();
    }
    let update = Event::keyed(EventType::LeadUpdated, "update 1", ms_rfc3339(T0 + 9 * MIN), &l);
    assert!(b.apply_remote(&update, T0 + 9 * MIN).unwrap());
    assert_eq!(get(b.conn(), "lead-1", T0 + 9 * MIN).unwrap().unwrap().status, LeadStatus::Handled);
}
