//! The transcription service at run time: the worker threads that decode
//! queued answers, and the task that sends each held lead out when its
//! transcripts are in (or its wait is over) and its later transcripts as
//! `lead.updated`.
//!
//! The workers are plain threads at the lowest CPU priority (`SCHED_IDLE`,
//! or nice 19 where that is refused): never tokio's workers, never the
//! pacer. Calls only add rows to the queue and never wait on it; with more
//! answers than the workers keep up with, transcripts come later, and each
//! says how late (`delay_ms`). The queue's state is in the outbox database,
//! so memory stays flat however long it grows, and a restart picks it up.

use super::audio::{read_recording, to_engine_rate};
use super::engine::{Model, TranscribeError};
use super::queue::{self, Job, Publish, Ready};
use crate::sink::delivery::{Publisher, now_ms};
use crate::sink::event::{Event, EventType};
use crate::sink::outbox::Outbox;
use backstop_core::intake::lead::{Lead, rfc3339};
use backstop_core::intake::summary::{UrgentWords, summary};
use backstop_core::intake::transcript::Transcript;
use backstop_core::route::line::Lines;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// What a call needs of the service: queue an answer, hold a lead.
#[derive(Clone)]
pub struct Transcriber {
    db: Arc<Mutex<Outbox>>,
    jobs: Arc<JobSignal>,
    held: Arc<Notify>,
    wait: Duration,
}

/// Wakes idle workers when a job is queued (they also look every second).
#[derive(Default)]
struct JobSignal {
    queued: Mutex<bool>,
    cv: Condvar,
}

impl JobSignal {
    fn signal(&self) {
        *self.queued.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self, limit: Duration) {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        if !*queued {
            queued = self.cv.wait_timeout(queued, limit).unwrap_or_else(|p| p.into_inner()).0;
        }
        *queued = false;
    }
}

impl Transcriber {
    /// Queue a voice answer whose recording is on disk. Blocking (SQLite):
    /// call it where the recording was written, off the call's task.
    pub fn enqueue_blocking(&self, lead_id: &str, step: &str, file: &str) {
        let r = {
            let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            queue::enqueue(db.conn(), lead_id, step, file, now_ms())
        };
        match r {
            Ok(()) => self.jobs.signal(),
            // The lead still names the recording; `hold` queues it again at the call's end.
            Err(e) => tracing::error!(lead_id, step, error = %e, "could not queue an answer for transcription"),
        }
    }

    /// Hold a finished lead until its transcripts are in. False when it has
    /// none to wait for, or the queue cannot take it: publish it as it is.
    pub async fn hold(&self, lead: &Lead) -> bool {
        if !queue::wants_transcripts(lead) {
            return false;
        }
        let (db, lead_owned, wait) = (self.db.clone(), lead.clone(), self.wait);
        let r = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            queue::hold(db.conn(), &lead_owned, now + wait.as_millis() as i64, now)
        })
        .await;
        match r {
            Ok(Ok(())) => {
                self.jobs.signal();
                self.held.notify_one();
                true
            }
            Ok(Err(e)) => {
                tracing::error!(lead = %lead.id, error = %e, "could not hold the lead for its transcripts; it goes out without them");
                false
            }
            Err(e) => {
                tracing::error!(lead = %lead.id, error = %e, "could not hold the lead for its transcripts; it goes out without them");
                false
            }
        }
    }
}

/// The running service: its handle for calls, and what stops it.
pub struct Service {
    pub transcriber: Transcriber,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Tells the sending task to send what is held and end.
    flush: watch::Sender<bool>,
    sender: tokio::task::JoinHandle<()>,
}

/// What the sender task needs to finish a lead: its line's script (for the
/// summary) and the urgent words.
pub struct LeadFinish {
    pub lines: Arc<Lines>,
    pub urgent: UrgentWords,
}

impl LeadFinish {
    fn apply(&self, lead: &mut Lead) {
        lead.urgent_words = self.urgent.find(lead);
        lead.summary = summary(lead, &self.lines.named(&lead.line).program);
    }
}

impl Service {
    /// Recover the queue after a restart and start `threads` workers, each
    /// with its own decoder of `model`, and the task that sends leads out.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        model: Arc<dyn Model>,
        threads: u32,
        wait: Duration,
        db: Arc<Mutex<Outbox>>,
        recordings: PathBuf,
        events: Publisher,
        finish: LeadFinish,
    ) -> Result<Service, TranscribeError> {
        {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            let recovered = queue::recover(db.conn()).and_then(|r| Ok((r, queue::queued(db.conn())?)));
            match recovered {
                Ok(((requeued, dropped), queued)) if queued + dropped as u64 > 0 => {
                    tracing::info!(queued, requeued, dropped, "transcription queue recovered after a restart")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "could not recover the transcription queue"),
            }
        }
        let transcriber =
            Transcriber { db: db.clone(), jobs: Arc::new(JobSignal::default()), held: Arc::new(Notify::new()), wait };
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..threads {
            // Each thread's decoder is made up front: a model that cannot decode fails the start.
            let decoder = model.decoder()?;
            let w = Worker {
                decoder,
                engine: model.engine(),
                model: model.name().to_string(),
                db: db.clone(),
                jobs: transcriber.jobs.clone(),
                held: transcriber.held.clone(),
                stop: stop.clone(),
                recordings: recordings.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("transcribe-{i}"))
                .spawn(move || w.run())
                .map_err(|e| TranscribeError::Engine(format!("starting a transcription thread: {e}")))?;
            workers.push(handle);
        }
        let (flush, flush_rx) = watch::channel(false);
        let sender = tokio::spawn(send_leads(db, transcriber.held.clone(), events, finish, flush_rx));
        transcriber.jobs.signal();
        Ok(Service { transcriber, stop, workers, flush, sender })
    }

    /// At shutdown: the workers stop after their current answer, and what
    /// they have not done stays queued for the next start; every held lead
    /// goes out now, with the transcripts it has (and `transcripts_pending`),
    /// so no lead waits for a restart; the rest come as `lead.updated` then.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.transcriber.jobs.signal();
        // Not joined: a decoding in progress is not waited for.
        drop(self.workers);
        let _ = self.flush.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.sender).await.is_err() {
            tracing::warn!("held leads not all sent at shutdown; they go out at the next start");
        }
    }
}

/// Without `[transcribe]`: leads held by an earlier run that had it go out
/// now, with what transcripts they have, and nothing more is decoded.
pub async fn release_held(db: Arc<Mutex<Outbox>>, events: Publisher, finish: LeadFinish) {
    let ready = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            let conn = db.conn();
            conn.execute("UPDATE transcribe_jobs SET state = 'failed', error = 'transcription is off' WHERE state IN ('queued', 'running')", [])?;
            queue::ready(conn, i64::MAX)
        }
    })
    .await;
    match ready {
        Ok(Ok((ready, _))) => {
            if !ready.is_empty() {
                tracing::warn!(leads = ready.len(), "transcription is off: leads held for transcripts go out without the rest");
            }
            for r in ready {
                send(&db, &events, &finish, r).await;
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "could not read the transcription queue"),
        Err(e) => tracing::error!(error = %e, "could not read the transcription queue"),
    }
}

/// Send each held lead when it is ready; woken by workers and holds, and by
/// the next lead's wait running out. On `flush`, send every held lead as it
/// is, and end.
async fn send_leads(
    db: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    events: Publisher,
    finish: LeadFinish,
    mut flush: watch::Receiver<bool>,
) {
    let mut last_round = false;
    loop {
        // The last round counts every wait as over.
        let now = if last_round { i64::MAX } else { now_ms() };
        let found = tokio::task::spawn_blocking({
            let db = db.clone();
            move || {
                let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
                queue::ready(db.conn(), now)
            }
        })
        .await;
        let mut next = Duration::from_secs(60);
        match found {
            Ok(Ok((ready, next_due))) => {
                for r in ready {
                    if !send(&db, &events, &finish, r).await {
                        next = next.min(Duration::from_secs(2));
                    }
                }
                if let Some(due) = next_due {
                    next = next.min(Duration::from_millis((due - now_ms()).max(0) as u64));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not read the transcription queue; trying again in 2 s");
                next = Duration::from_secs(2);
            }
            Err(e) => {
                tracing::error!(error = %e, "the transcription queue task failed; trying again in 2 s");
                next = Duration::from_secs(2);
            }
        }
        if last_round {
            return;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
            r = flush.changed() => last_round = r.is_err() || *flush.borrow(),
        }
    }
}

/// Publish one ready lead and record that it went out; false if it could
/// not be (it is looked at again). Its event id comes from the lead and the
/// batch, so a second publication after a crash is the same event.
async fn send(db: &Arc<Mutex<Outbox>>, events: &Publisher, finish: &LeadFinish, mut ready: Ready) -> bool {
    finish.apply(&mut ready.lead);
    let now = rfc3339(SystemTime::now());
    let event = match ready.publish {
        Publish::Completed => Event::keyed(EventType::LeadCompleted, "completed", now, &ready.lead),
        Publish::Updated(n) => Event::keyed(EventType::LeadUpdated, &format!("update {n}"), now, &ready.lead),
    };
    let kind = event.kind.as_str();
    if let Err(e) = events.publish(event).await {
        tracing::error!(kind, lead = %ready.lead.id, error = %e, "could not commit the lead");
        return false;
    }
    tracing::info!(kind, lead = %ready.lead.id, pending = ready.lead.transcripts_pending, summary = %ready.lead.summary, "lead sent with its transcripts");
    let db = db.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
        queue::published(db.conn(), &ready)
    })
    .await;
    // Not recorded: it is sent again, and the outbox keeps the one event.
    matches!(r, Ok(Ok(())))
}

/// One transcription thread.
struct Worker {
    decoder: Box<dyn super::engine::Engine>,
    engine: &'static str,
    model: String,
    db: Arc<Mutex<Outbox>>,
    jobs: Arc<JobSignal>,
    held: Arc<Notify>,
    stop: Arc<AtomicBool>,
    recordings: PathBuf,
}

impl Worker {
    fn run(mut self) {
        lower_priority();
        while !self.stop.load(Ordering::Relaxed) {
            let claimed = {
                let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
                queue::claim(db.conn())
            };
            match claimed {
                Ok(Some(job)) => self.work(job),
                Ok(None) => self.jobs.wait(Duration::from_secs(1)),
                Err(e) => {
                    tracing::error!(error = %e, "could not read the transcription queue");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn work(&mut self, job: Job) {
        let started = Instant::now();
        let heard = read_recording(&self.recordings.join(&job.file))
            .map_err(|e| (e, true))
            .and_then(|pcm| self.decoder.transcribe(&to_engine_rate(&pcm)).map_err(|e| (e, false)));
        let ms = started.elapsed().as_millis() as u64;
        let result = heard.map(|h| Transcript {
            confidence: h.confidence,
            delay_ms: (now_ms() - job.queued_ms).max(0) as u64,
            engine: self.engine.to_string(),
            model: self.model.clone(),
            ms,
            text: h.text,
        });
        match &result {
            Ok(t) => tracing::info!(lead = %job.lead_id, step = %job.step, ms, delay_ms = t.delay_ms, text = %t.text, "transcribed"),
            Err((e, permanent)) => tracing::warn!(lead = %job.lead_id, step = %job.step, attempt = job.attempts, permanent, error = %e, "transcription failed"),
        }
        let r = {
            let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
                Ok(t) => queue::finish(db.conn(), &job, Ok(t)),
                Err((e, permanent)) => queue::finish(db.conn(), &job, Err((&e.to_string(), *permanent))),
            }
        };
        if let Err(e) = r {
            tracing::error!(lead = %job.lead_id, error = %e, "could not record a transcript; it is decoded again");
        }
        self.held.notify_one();
    }
}

/// This thread runs only when nothing else wants the CPU: `SCHED_IDLE`
/// (Linux applies it to the calling thread), else nice 19.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread, with a valid parameter.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::gettid() as libc::id_t;
            if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
                tracing::warn!("could not lower the transcription thread's priority");
            }
        }
    }
}
