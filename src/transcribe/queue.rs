//! The transcription queue, in the outbox database, so that a restart loses
//! nothing: one row per voice answer to transcribe (`transcribe_jobs`), and
//! one per finished lead that waits for its transcripts (`transcribe_leads`).
//!
//! A job is queued as soon as its recording is on disk, during the call. A
//! worker claims the oldest queued job, and records the transcript or the
//! failure. When the call ends, its lead is held here instead of going out;
//! [`ready`] says when it should: `lead.completed` once every transcript of
//! it is in or its wait is over, then a `lead.updated` for each later batch.
//! While a lead is held, the outbox's restart recovery leaves its call alone
//! (`Outbox::unfinished_calls`). Every statement here is plain SQLite on the
//! caller's connection; times are Unix milliseconds passed in.

use backstop_core::intake::answer::AnswerKind;
use backstop_core::intake::lead::Lead;
use backstop_core::intake::transcript::Transcript;
use rusqlite::{Connection, OptionalExtension, params};

/// The tables, created with the outbox's own.
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS transcribe_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lead_id TEXT NOT NULL,
        step TEXT NOT NULL,
        file TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        queued_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT,
        published INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 0,
        UNIQUE (lead_id, step)
    );
    CREATE INDEX IF NOT EXISTS transcribe_jobs_queued ON transcribe_jobs (state, id);
    CREATE TABLE IF NOT EXISTS transcribe_leads (
        lead_id TEXT PRIMARY KEY,
        call_id TEXT NOT NULL,
        body TEXT NOT NULL,
        due_ms INTEGER NOT NULL,
        completed INTEGER NOT NULL DEFAULT 0 CHECK (completed IN (0, 1, 2, 3)),
        updates INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS transcribe_leads_call ON transcribe_leads (call_id);";

/// `transcribe_leads.completed`: waiting for `lead.completed`, or sent; or
/// either of those, set aside because this version cannot read the lead
/// back (kept, not deleted: each start tries it again, so a version that
/// can read it takes it up where it was; its call is never taken for
/// interrupted meanwhile).
const WAITING: i64 = 0;
const SENT: i64 = 1;
const SET_ASIDE: i64 = 2;

/// How often a job may fail before it is given up on.
pub const MAX_ATTEMPTS: u32 = 3;

/// One voice answer to transcribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub lead_id: String,
    pub step: String,
    /// Under the recordings directory.
    pub file: String,
    pub queued_ms: i64,
    pub attempts: u32,
    /// Bumped each time the step is queued again: a result for an older
    /// recording is not taken (`finish`).
    pub generation: i64,
}

/// Queue an answer's recording, once it is on disk. A step answered again
/// (a script that loops back) has its newer recording transcribed instead.
pub fn enqueue(conn: &Connection, lead_id: &str, step: &str, file: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO transcribe_jobs (lead_id, step, file, state, queued_ms) VALUES (?1, ?2, ?3, 'queued', ?4)
         ON CONFLICT (lead_id, step) DO UPDATE SET file = excluded.file, state = 'queued',
             queued_ms = excluded.queued_ms, attempts = 0, result = NULL, error = NULL, published = 0,
             generation = transcribe_jobs.generation + 1",
        params![lead_id, step, file, now_ms],
    )?;
    Ok(())
}

/// The voice answers of a lead that have a recording: what it waits for.
fn voice_answers(lead: &Lead) -> impl Iterator<Item = (&String, &String)> {
    lead.answers
        .iter()
        .filter(|(_, a)| a.kind == AnswerKind::Voice)
        .filter_map(|(s, a)| Some((s, a.recording.as_ref()?)))
}

/// Whether a lead has anything to transcribe.
pub fn wants_transcripts(lead: &Lead) -> bool {
    voice_answers(lead).next().is_some()
}

/// Hold a finished lead until its transcripts are in, or until `due_ms`.
/// Its answers' jobs are queued here too if the call did not manage to.
pub fn hold(conn: &mut Connection, lead: &Lead, due_ms: i64, now_ms: i64) -> rusqlite::Result<()> {
    // IMMEDIATE: it reads, then writes, beside other writers of the file.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // A step whose last answer has no recording (answered again without
    // speech, or its file could not be written) has nothing to wait for.
    let steps: Vec<String> = {
        let mut stmt = tx.prepare("SELECT step, file FROM transcribe_jobs WHERE lead_id = ?1")?;
        let rows = stmt.query_map(params![lead.id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let jobs: Vec<(String, String)> = rows.filter_map(Result::ok).collect();
        jobs.into_iter()
            .filter(|(step, file)| lead.answers.get(step).and_then(|a| a.recording.as_ref()) != Some(file))
            .map(|(step, _)| step)
            .collect()
    };
    for step in steps {
        tx.execute("DELETE FROM transcribe_jobs WHERE lead_id = ?1 AND step = ?2", params![lead.id, step])?;
    }
    for (step, file) in voice_answers(lead) {
        tx.execute(
            "INSERT INTO transcribe_jobs (lead_id, step, file, state, queued_ms) VALUES (?1, ?2, ?3, 'queued', ?4)
             ON CONFLICT (lead_id, step) DO NOTHING",
            params![lead.id, step, file, now_ms],
        )?;
    }
    let body = serde_json::to_string(lead).expect("a lead always serialises");
    tx.execute(
        "INSERT INTO transcribe_leads (lead_id, call_id, body, due_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (lead_id) DO NOTHING",
        params![lead.id, lead.call_id, body, due_ms],
    )?;
    tx.commit()
}

/// Take the oldest queued job.
pub fn claim(conn: &Connection) -> rusqlite::Result<Option<Job>> {
    conn.query_row(
        "UPDATE transcribe_jobs SET state = 'running', attempts = attempts + 1
         WHERE id = (SELECT id FROM transcribe_jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
         RETURNING id, lead_id, step, file, queued_ms, attempts, generation",
        [],
        |r| {
            Ok(Job {
                id: r.get(0)?,
                lead_id: r.get(1)?,
                step: r.get(2)?,
                file: r.get(3)?,
                queued_ms: r.get(4)?,
                attempts: r.get(5)?,
                generation: r.get(6)?,
            })
        },
    )
    .optional()
}

/// Record a job's transcript, or its failure: retried until [`MAX_ATTEMPTS`]
/// unless `permanent`. A job that was queued again meanwhile (a newer
/// recording: a new generation) is left as it is.
pub fn finish(conn: &Connection, job: &Job, result: Result<&Transcript, (&str, bool)>) -> rusqlite::Result<()> {
    match result {
        Ok(t) => conn.execute(
            "UPDATE transcribe_jobs SET state = 'done', result = ?2, error = NULL
             WHERE id = ?1 AND state = 'running' AND generation = ?3",
            params![job.id, serde_json::to_string(t).expect("a transcript always serialises"), job.generation],
        )?,
        Err((error, permanent)) => {
            let state = if permanent || job.attempts >= MAX_ATTEMPTS { "failed" } else { "queued" };
            conn.execute(
                "UPDATE transcribe_jobs SET state = ?2, error = ?3 WHERE id = ?1 AND state = 'running' AND generation = ?4",
                params![job.id, state, error, job.generation],
            )?
        }
    };
    Ok(())
}

/// After a restart: jobs that were being decoded are queued again (unless
/// tried [`MAX_ATTEMPTS`] times), leads set aside are tried again, and jobs
/// whose call never ended (the agent died mid-call; the outbox closes such a
/// lead from its `call.missed`) are dropped: nothing would carry them.
pub fn recover(conn: &Connection) -> rusqlite::Result<(usize, usize)> {
    // A recording that took the process down with it (an abort in the
    // engine) as often as a job may fail is not tried again.
    conn.execute(
        &format!(
            "UPDATE transcribe_jobs SET state = 'failed', error = 'the agent stopped while decoding it, {MAX_ATTEMPTS} times'
             WHERE state = 'running' AND attempts >= {MAX_ATTEMPTS}"
        ),
        [],
    )?;
    let requeued = conn.execute("UPDATE transcribe_jobs SET state = 'queued' WHERE state = 'running'", [])?;
    // Leads set aside as unreadable get another try with this version.
    conn.execute(
        &format!("UPDATE transcribe_leads SET completed = completed - {SET_ASIDE} WHERE completed >= {SET_ASIDE}"),
        [],
    )?;
    let orphans =
        conn.execute("DELETE FROM transcribe_jobs WHERE lead_id NOT IN (SELECT lead_id FROM transcribe_leads)", [])?;
    Ok((requeued, orphans))
}

/// Jobs waiting or being decoded, across all leads.
pub fn queued(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM transcribe_jobs WHERE state IN ('queued', 'running')", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
}

/// What a held lead is ready for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// Its `lead.completed`: every transcript is in, or the wait is over.
    Completed,
    /// Its `n`th `lead.updated`: transcripts came after `lead.completed`.
    Updated(u32),
}

/// A held lead, with the transcripts it has so far, that should go out now.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub publish: Publish,
    /// The lead with every transcript so far and `transcripts_pending` set.
    pub lead: Lead,
    /// The jobs this event carries for the first time.
    pub jobs: Vec<i64>,
}

/// The held leads that should go out now, and when the next one falls due.
/// Only those are read: with many calls held, a look costs little.
pub fn ready(conn: &Connection, now_ms: i64) -> rusqlite::Result<(Vec<Ready>, Option<i64>)> {
    // Leads sent with everything they waited for, and their jobs: done with.
    let outstanding = "SELECT 1 FROM transcribe_jobs j WHERE j.lead_id = l.lead_id
           AND (j.state IN ('queued', 'running') OR (j.state IN ('done', 'failed') AND j.published = 0))";
    conn.execute(
        &format!(
            "DELETE FROM transcribe_jobs WHERE lead_id IN
               (SELECT lead_id FROM transcribe_leads l WHERE l.completed = {SENT} AND NOT EXISTS ({outstanding}))"
        ),
        [],
    )?;
    conn.execute(
        &format!(
            "DELETE FROM transcribe_leads WHERE completed = {SENT}
               AND NOT EXISTS (SELECT 1 FROM transcribe_jobs j WHERE j.lead_id = transcribe_leads.lead_id)"
        ),
        [],
    )?;
    let mut leads = conn.prepare_cached(&format!(
        "SELECT l.lead_id, l.body, l.completed, l.updates FROM transcribe_leads l
         WHERE (l.completed = {WAITING} AND (l.due_ms <= ?1 OR NOT EXISTS (SELECT 1 FROM transcribe_jobs j
                  WHERE j.lead_id = l.lead_id AND j.state IN ('queued', 'running'))))
            OR (l.completed = {SENT} AND EXISTS (SELECT 1 FROM transcribe_jobs j
                  WHERE j.lead_id = l.lead_id AND j.state IN ('done', 'failed') AND j.published = 0))"
    ))?;
    let mut jobs =
        conn.prepare_cached("SELECT id, step, file, state, result, published FROM transcribe_jobs WHERE lead_id = ?1")?;
    // A row this version cannot read is skipped, not allowed to stop the rest.
    let due: Vec<(String, String, i64, u32)> = leads
        .query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .filter_map(|row| row.map_err(|e| tracing::error!(error = %e, "unreadable held lead row; skipped")).ok())
        .collect();
    let mut out = Vec::new();
    for (lead_id, body, completed, updates) in due {
        let mut lead: Lead = match serde_json::from_str(&body) {
            Ok(l) => l,
            Err(e) => {
                // Kept for a version that can read it; its call is not taken for interrupted.
                tracing::error!(lead_id, error = %e, "held lead unreadable by this version; set aside in the queue");
                conn.execute(
                    &format!("UPDATE transcribe_leads SET completed = completed + {SET_ASIDE} WHERE lead_id = ?1"),
                    params![lead_id],
                )?;
                continue;
            }
        };
        let rows: Vec<(i64, String, String, String, Option<String>, bool)> = jobs
            .query_map(params![lead_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
            .filter_map(|row| row.map_err(|e| tracing::error!(lead_id, error = %e, "unreadable job row; skipped")).ok())
            .collect();
        let mut pending = 0;
        let mut news = Vec::new();
        for (id, step, file, state, result, published) in rows {
            match state.as_str() {
                "queued" | "running" => pending += 1,
                "done" => {
                    // Only onto the answer whose recording it heard.
                    let answer = lead.answers.get_mut(&step).filter(|a| a.recording.as_deref() == Some(file.as_str()));
                    match (answer, result.as_deref().map(serde_json::from_str::<Transcript>)) {
                        (Some(answer), Some(Ok(t))) => answer.transcript = Some(t),
                        (Some(_), _) => tracing::error!(lead_id, step, "unreadable transcript; left out"),
                        (None, _) => {}
                    }
                }
                _ => {}
            }
            // A transcript, or a failure (one fewer pending), is news once.
            if matches!(state.as_str(), "done" | "failed") && !published {
                news.push(id);
            }
        }
        lead.transcripts_pending = pending;
        let publish = if completed == SENT { Publish::Updated(updates + 1) } else { Publish::Completed };
        out.push(Ready { publish, lead, jobs: news });
    }
    let next_due = conn.query_row(
        &format!("SELECT MIN(due_ms) FROM transcribe_leads WHERE completed = {WAITING} AND due_ms > ?1"),
        params![now_ms],
        |r| r.get(0),
    )?;
    Ok((out, next_due))
}

/// Record that `ready` went out. Run it in the transaction that commits
/// its event (`Publisher::publish_with`), so that the event and this
/// record are one: a crash leaves both or neither.
pub fn published(conn: &Connection, ready: &Ready) -> rusqlite::Result<()> {
    match ready.publish {
        Publish::Completed => conn.execute(
            &format!("UPDATE transcribe_leads SET completed = {SENT} WHERE lead_id = ?1"),
            params![ready.lead.id],
        )?,
        Publish::Updated(n) => {
            conn.execute("UPDATE transcribe_leads SET updates = ?2 WHERE lead_id = ?1", params![ready.lead.id, n])?
        }
    };
    for id in &ready.jobs {
        conn.execute("UPDATE transcribe_jobs SET published = 1 WHERE id = ?1", params![id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::intake::answer::{Answer, AnswerStatus};

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    fn lead(id: &str, steps: &[&str]) -> Lead {
        let text = "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:1@x>;tag=1\r\n\
                    To: <sip:2@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let backstop_core::sip::message::Incoming::Request(invite) =
            backstop_core::sip::message::read_message(text.as_bytes(), "127.0.0.1:5060".parse().unwrap())
        else {
            panic!("test INVITE rejected")
        };
        let mut l = Lead::from_invite(
            id.into(),
            &invite,
            std::time::SystemTime::UNIX_EPOCH,
            backstop_core::sip::Transport::Udp,
        );
        for s in steps {
            let mut a: Answer = serde_json::from_value(serde_json::json!({
                "attempts": 1, "kind": "voice", "status": "answered", "value": null
            }))
            .unwrap();
            a.recording = Some(format!("{id}-{s}.wav"));
            a.status = AnswerStatus::Answered;
            l.answers.insert(s.to_string(), a);
        }
        l
    }

    fn transcript(text: &str) -> Transcript {
        Transcript {
            confidence: Some(0.9),
            delay_ms: 5,
            engine: "e".into(),
            model: "m".into(),
            ms: 3,
            text: text.into(),
        }
    }

    fn work(conn: &Connection, text: &str) -> Job {
        let job = claim(conn).unwrap().expect("a queued job");
        finish(conn, &job, Ok(&transcript(text))).unwrap();
        job
    }

    #[test]
    fn a_lead_goes_out_once_its_transcripts_are_in() {
        let mut conn = db();
        enqueue(&conn, "L", "name", "L-name.wav", 0).unwrap();
        let l = lead("L", &["name", "need"]);
        hold(&mut conn, &l, 20_000, 100).unwrap();
        // The need's job was queued by `hold`, the name's by the call.
        assert_eq!(queued(&conn).unwrap(), 2);
        let (r, due) = ready(&conn, 1000).unwrap();
        assert!(r.is_empty());
        assert_eq!(due, Some(20_000));
        assert_eq!(work(&conn, "Maria").step, "name", "oldest first");
        assert!(ready(&conn, 1000).unwrap().0.is_empty(), "one still to come");
        work(&conn, "the basement is flooding");
        let (r, _) = ready(&conn, 1000).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].publish, Publish::Completed);
        assert_eq!(r[0].lead.answers["name"].transcript.as_ref().unwrap().text, "Maria");
        assert_eq!(r[0].lead.transcripts_pending, 0);
        published(&conn, &r[0]).unwrap();
        // Nothing more to say: the next look forgets it.
        assert!(ready(&conn, 1000).unwrap().0.is_empty());
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM transcribe_leads", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn after_the_wait_the_lead_goes_out_and_late_transcripts_follow_as_updates() {
        let mut conn = db();
        hold(&mut conn, &lead("L", &["name", "need"]), 20_000, 0).unwrap();
        work(&conn, "Maria");
        let (r, _) = ready(&conn, 20_000).unwrap();
        assert_eq!((r[0].publish.clone(), r[0].lead.transcripts_pending), (Publish::Completed, 1));
        published(&conn, &r[0]).unwrap();
        assert!(ready(&conn, 20_001).unwrap().0.is_empty(), "the name went out with lead.completed");
        work(&conn, "no heat");
        let (r, _) = ready(&conn, 30_000).unwrap();
        assert_eq!(r[0].publish, Publish::Updated(1));
        assert_eq!(r[0].lead.answers["need"].transcript.as_ref().unwrap().text, "no heat");
        assert_eq!(r[0].lead.answers["name"].transcript.as_ref().unwrap().text, "Maria", "the whole lead");
        published(&conn, &r[0]).unwrap();
        assert!(ready(&conn, 30_000).unwrap().0.is_empty());
    }

    #[test]
    fn failures_are_retried_then_given_up_and_the_lead_does_not_wait_for_them() {
        let mut conn = db();
        hold(&mut conn, &lead("L", &["name"]), 20_000, 0).unwrap();
        for attempt in 1..=MAX_ATTEMPTS {
            let job = claim(&conn).unwrap().unwrap();
            assert_eq!(job.attempts, attempt);
            finish(&conn, &job, Err(("engine said no", false))).unwrap();
        }
        assert!(claim(&conn).unwrap().is_none());
        let (r, _) = ready(&conn, 0).unwrap();
        assert_eq!(r[0].publish, Publish::Completed);
        assert!(r[0].lead.answers["name"].transcript.is_none());
    }

    #[test]
    fn a_restart_requeues_what_was_running_and_drops_jobs_of_calls_that_never_ended() {
        let mut conn = db();
        hold(&mut conn, &lead("L", &["name"]), 20_000, 0).unwrap();
        enqueue(&conn, "cut-off", "name", "cut-off-name.wav", 0).unwrap();
        let running = claim(&conn).unwrap().unwrap();
        assert_eq!(recover(&conn).unwrap(), (1, 1));
        let again = claim(&conn).unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (running.id, 2));
        assert!(claim(&conn).unwrap().is_none(), "the cut-off call's job is gone");
        // A result for the job as it ran before the restart is not taken over the new run's.
        finish(&conn, &again, Ok(&transcript("x"))).unwrap();
        finish(&conn, &running, Err(("stale", true))).unwrap();
        let state: String = conn.query_row("SELECT state FROM transcribe_jobs", [], |r| r.get(0)).unwrap();
        assert_eq!(state, "done");
    }

    #[test]
    fn a_result_for_an_older_recording_of_the_step_is_not_taken() {
        let conn = db();
        enqueue(&conn, "L", "name", "L-name.wav", 0).unwrap();
        let old = claim(&conn).unwrap().unwrap();
        // Answered again while the first recording was being decoded; a second worker takes it.
        enqueue(&conn, "L", "name", "L-name.wav", 1).unwrap();
        let new = claim(&conn).unwrap().unwrap();
        assert_eq!((new.id, new.generation), (old.id, old.generation + 1));
        finish(&conn, &old, Ok(&transcript("what was said first"))).unwrap();
        finish(&conn, &new, Ok(&transcript("what was said last"))).unwrap();
        let text: String = conn.query_row("SELECT result FROM transcribe_jobs", [], |r| r.get(0)).unwrap();
        assert!(text.contains("what was said last"), "{text}");
    }

    #[test]
    fn a_transcript_that_fails_after_the_lead_went_out_is_news_too() {
        let mut conn = db();
        hold(&mut conn, &lead("L", &["name"]), 0, 0).unwrap();
        let (r, _) = ready(&conn, 0).unwrap();
        assert_eq!(r[0].lead.transcripts_pending, 1);
        published(&conn, &r[0]).unwrap();
        let job = claim(&conn).unwrap().unwrap();
        finish(&conn, &job, Err(("unreadable recording", true))).unwrap();
        let (r, _) = ready(&conn, 0).unwrap();
        assert_eq!((r[0].publish.clone(), r[0].lead.transcripts_pending), (Publish::Updated(1), 0));
        published(&conn, &r[0]).unwrap();
        assert!(ready(&conn, 0).unwrap().0.is_empty());
    }

    #[test]
    fn a_step_whose_last_answer_has_no_recording_waits_for_nothing() {
        let mut conn = db();
        enqueue(&conn, "L", "name", "L-name.wav", 0).unwrap();
        let mut l = lead("L", &["name"]);
        // Answered again, with no speech this time (or its file could not be written).
        l.answers.get_mut("name").unwrap().recording = None;
        hold(&mut conn, &l, 20_000, 0).unwrap();
        assert_eq!(queued(&conn).unwrap(), 0);
        let (r, _) = ready(&conn, 0).unwrap();
        assert_eq!((r[0].publish.clone(), r[0].lead.transcripts_pending), (Publish::Completed, 0));
    }

    #[test]
    fn a_second_answer_the_call_could_not_queue_is_queued_at_the_end_not_taken_for_the_first() {
        let mut conn = db();
        enqueue(&conn, "L", "name", "L-name.wav", 0).unwrap();
        work(&conn, "what was said first");
        // Answered again into L-name-2.wav, whose queueing failed during the call.
        let mut l = lead("L", &["name"]);
        l.answers.get_mut("name").unwrap().recording = Some("L-name-2.wav".into());
        hold(&mut conn, &l, 20_000, 0).unwrap();
        let job = claim(&conn).unwrap().expect("the second recording is queued");
        assert_eq!(job.file, "L-name-2.wav");
        finish(&conn, &job, Ok(&transcript("what was said last"))).unwrap();
        let (r, _) = ready(&conn, 0).unwrap();
        assert_eq!(r[0].lead.answers["name"].transcript.as_ref().unwrap().text, "what was said last");
    }

    #[test]
    fn a_held_lead_this_version_cannot_read_is_set_aside_not_deleted() {
        let mut conn = db();
        hold(&mut conn, &lead("L", &["name"]), 0, 0).unwrap();
        conn.execute("UPDATE transcribe_leads SET body = '{\"outcome\":\"from_the_future\"}'", []).unwrap();
        assert!(ready(&conn, 0).unwrap().0.is_empty());
        assert!(ready(&conn, 0).unwrap().0.is_empty(), "and it does not come back each look");
        let kept: i64 = conn.query_row("SELECT completed FROM transcribe_leads", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, SET_ASIDE + WAITING);
        // The next start tries it again, where it was.
        recover(&conn).unwrap();
        let state: i64 = conn.query_row("SELECT completed FROM transcribe_leads", [], |r| r.get(0)).unwrap();
        assert_eq!(state, WAITING);
    }

    #[test]
    fn a_recording_that_keeps_stopping_the_agent_is_given_up_after_max_attempts() {
        let mut conn = db();
        hold(&mut conn, &lead("L", &["name"]), 20_000, 0).unwrap();
        for _ in 0..MAX_ATTEMPTS {
            claim(&conn).unwrap().unwrap();
            recover(&conn).unwrap(); // the agent died mid-decoding; the next start
        }
        assert!(claim(&conn).unwrap().is_none(), "not tried a fourth time");
        let (r, _) = ready(&conn, 0).unwrap();
        assert_eq!((r[0].publish.clone(), r[0].lead.transcripts_pending), (Publish::Completed, 0));
    }

    #[test]
    fn a_step_answered_again_is_transcribed_again() {
        let conn = db();
        enqueue(&conn, "L", "name", "a.wav", 0).unwrap();
        work(&conn, "first");
        enqueue(&conn, "L", "name", "a.wav", 1).unwrap();
        let again = claim(&conn).unwrap().unwrap();
        assert_eq!((again.file.as_str(), again.attempts), ("a.wav", 1));
        assert!(claim(&conn).unwrap().is_none(), "one job per step");
    }
}
