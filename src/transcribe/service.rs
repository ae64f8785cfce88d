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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
/// Signalling never blocks: it must not wait on a lock an idle-priority
/// worker holds while no CPU is free for it.
struct JobSignal {
    tx: std::sync::mpsc::SyncSender<()>,
    /// Shared by the workers only.
    rx: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Default for JobSignal {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        JobSignal { tx, rx: Mutex::new(rx) }
    }
}

impl JobSignal {
    fn signal(&self) {
        // Full: a wake-up is pending already.
        let _ = self.tx.try_send(());
    }

    fn wait(&self, limit: Duration) {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        let _ = rx.recv_timeout(limit);
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
            // The lead still names the recording; `hold` queues it at the call's end.
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
    /// The lines as they are now (a SIGHUP may have replaced them).
    pub lines: Arc<crate::runtime::LiveLines>,
    pub urgent: UrgentWords,
    /// Counts the transcription latency and reads the queue's depth.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl LeadFinish {
    fn apply(&self, lead: &mut Lead) {
        lead.urgent_words = self.urgent.find(lead);
        lead.summary = summary(lead, &self.lines.current().named(&lead.line).program);
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
                runtime: tokio::runtime::Handle::current(),
                decoder,
                engine: model.engine(),
                model: model.name().to_string(),
                db: db.clone(),
                jobs: transcriber.jobs.clone(),
                held: transcriber.held.clone(),
                stop: stop.clone(),
                recordings: recordings.clone(),
                metrics: finish.metrics.clone(),
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
/// now, with what transcripts they have, and nothing more is decoded. In
/// the background, tried again every 2 s until every one is out.
pub fn release_held(db: Arc<Mutex<Outbox>>, events: Publisher, finish: LeadFinish) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let recover = first;
            let ready = tokio::task::spawn_blocking({
                let db = db.clone();
                move || {
                    let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
                    let conn = db.conn();
                    if recover {
                        queue::recover(conn)?;
                    }
                    conn.execute(
                        "UPDATE transcribe_jobs SET state = 'failed', error = 'transcription is off' WHERE state = 'queued'",
                        [],
                    )?;
                    queue::ready(conn, i64::MAX)
                }
            })
            .await;
            first = false;
            let mut all_out = true;
            match ready {
                Ok(Ok((ready, _))) => {
                    if !ready.is_empty() {
                        tracing::warn!(
                            leads = ready.len(),
                            "transcription is off: leads held for transcripts go out without the rest"
                        );
                    }
                    for r in ready {
                        all_out &= send(&events, &finish, r).await;
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not read the transcription queue; trying again in 2 s");
                    all_out = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not read the transcription queue; trying again in 2 s");
                    all_out = false;
                }
            }
            if all_out {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
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
                    if !send(&events, &finish, r).await {
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

/// Publish one ready lead and record that it went out, in one
/// transaction; false if it could not be (it is looked at again, and is the
/// same event then: its id comes from the lead and the batch).
async fn send(events: &Publisher, finish: &LeadFinish, mut ready: Ready) -> bool {
    finish.apply(&mut ready.lead);
    let now = rfc3339(SystemTime::now());
    let event = match ready.publish {
        Publish::Completed => Event::keyed(EventType::LeadCompleted, "completed", now, &ready.lead),
        Publish::Updated(n) => Event::keyed(EventType::LeadUpdated, &format!("update {n}"), now, &ready.lead),
    };
    let (kind, lead, pending, summary) =
        (event.kind.as_str(), ready.lead.id.clone(), ready.lead.transcripts_pending, ready.lead.summary.clone());
    match events.publish_with(event, move |conn| queue::published(conn, &ready)).await {
        Ok(()) => {
            tracing::info!(kind, lead, pending, summary, "lead sent with its transcripts");
            true
        }
        Err(e) => {
            tracing::error!(kind, lead, error = %e, "could not commit the lead; trying again");
            false
        }
    }
}

/// One transcription thread.
struct Worker {
    /// The queue's SQLite work runs on the runtime's blocking threads, at
    /// normal priority: this thread runs at the lowest, and must never hold
    /// the outbox (which calls publish through) while it waits for a CPU.
    runtime: tokio::runtime::Handle,
    decoder: Box<dyn super::engine::Engine>,
    engine: &'static str,
    model: String,
    db: Arc<Mutex<Outbox>>,
    jobs: Arc<JobSignal>,
    held: Arc<Notify>,
    stop: Arc<AtomicBool>,
    recordings: PathBuf,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Worker {
    /// `f` on the outbox database, from a blocking thread of the runtime.
    fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let db = self.db.clone();
        // Handed to the blocking pool from a runtime thread: a pool thread
        // this starts inherits that thread's priority, not this one's idle.
        let task = self.runtime.spawn(async move {
            tokio::task::spawn_blocking(move || {
                let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
                f(db.conn())
            })
            .await
        });
        match self.runtime.block_on(task) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
            Err(e) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
        }
    }

    fn run(mut self) {
        lower_priority();
        while !self.stop.load(Ordering::Relaxed) {
            match self.with_db(queue::claim) {
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
        let path = self.recordings.join(&job.file);
        let decoder = &mut self.decoder;
        // A panic in the engine costs this answer, not the worker.
        let heard = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_recording(&path)
                .map_err(|e| (e, true))
                .and_then(|pcm| decoder.transcribe(&to_engine_rate(&pcm)).map_err(|e| (e, false)))
        }))
        .unwrap_or_else(|_| Err((TranscribeError::Engine("the engine panicked".into()), true)));
        let ms = started.elapsed().as_millis() as u64;
        let result = heard.map(|h| Transcript {
            confidence: h.confidence,
            delay_ms: (now_ms() - job.queued_ms).max(0) as u64,
            engine: self.engine.to_string(),
            model: self.model.clone(),
            ms,
            text: h.text,
        });
        if let Ok(t) = &result {
            self.metrics.transcribed(Duration::from_millis(t.delay_ms));
        }
        // Logged, and recorded, from a normal-priority thread: this one must
        // not hold the log's lock while it waits for a CPU.
        let job = Arc::new(job);
        let result = Arc::new(result);
        let mut tries = 0;
        loop {
            let (this_job, result) = (job.clone(), result.clone());
            let logged = tries > 0;
            let r = self.with_db(move |conn| {
                if !logged {
                    match &*result {
                        Ok(t) => tracing::info!(lead = %this_job.lead_id, step = %this_job.step, ms, delay_ms = t.delay_ms, text = %t.text, "transcribed"),
                        Err((e, permanent)) => tracing::warn!(lead = %this_job.lead_id, step = %this_job.step, attempt = this_job.attempts, permanent, error = %e, "transcription failed"),
                    }
                }
                match &*result {
                    Ok(t) => queue::finish(conn, &this_job, Ok(t)),
                    Err((e, permanent)) => queue::finish(conn, &this_job, Err((&e.to_string(), *permanent))),
                }
            });
            tries += 1;
            match r {
                Ok(()) => break,
                Err(e) if tries < 10 && !self.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(lead = %job.lead_id, error = %e, "could not record a transcript; trying again in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::error!(lead = %job.lead_id, error = %e, "could not record a transcript; it is decoded again at the next start");
                    break;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::delivery::{Delivery, Sink, Target};
    use crate::sink::outbox::SinkSpec;
    use crate::transcribe::engine::{Engine, Heard};
    use backstop_core::intake::program::{Program, default_steps};
    use backstop_core::media::recorder::{Audio, RecordingFormat};
    use backstop_core::route::junk::JunkRules;
    use backstop_core::route::line::{Line, LineMatch};

    /// An engine that hears what it is told to, after `delay`: the service's
    /// plumbing, without a model. (whisper.cpp itself is tested in
    /// `transcribe::whisper` and end to end in tests/transcribe.rs.)
    struct Fixed {
        text: &'static str,
        delay: Duration,
    }

    impl Model for Fixed {
        fn engine(&self) -> &'static str {
            "fixed"
        }
        fn name(&self) -> &str {
            "test"
        }
        fn decoder(&self) -> Result<Box<dyn Engine>, TranscribeError> {
            Ok(Box::new(Fixed { text: self.text, delay: self.delay }))
        }
    }

    impl Engine for Fixed {
        fn transcribe(&mut self, samples: &[f32]) -> Result<Heard, TranscribeError> {
            assert!(!samples.is_empty());
            std::thread::sleep(self.delay);
            Ok(Heard { text: self.text.into(), confidence: Some(0.5) })
        }
    }

    struct Rig {
        dir: PathBuf,
        delivery: Delivery,
        lines: Arc<crate::runtime::LiveLines>,
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("backstop-svc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        let outbox = Outbox::open(&dir.join("outbox.db")).unwrap();
        let sink = Sink {
            spec: SinkSpec {
                name: "file:leads.jsonl".into(),
                events: vec![EventType::LeadCompleted, EventType::LeadUpdated],
                lines: Default::default(),
            },
            target: Target::LeadsFile(dir.join("leads.jsonl")),
            max_interval: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
        };
        let delivery = Delivery::new(outbox, vec![sink], 1000, Duration::from_secs(3600));
        let line = Line {
            name: "default".into(),
            matcher: LineMatch::default(),
            program: Arc::new(Program::compile(&default_steps()).unwrap()),
            prompts: Default::default(),
            schedule: None,
            junk: Arc::new(JunkRules::compile(&Default::default()).unwrap()),
        };
        Rig {
            dir,
            delivery,
            lines: crate::runtime::LiveLines::new(backstop_core::route::line::Lines::new(Vec::new(), line)),
        }
    }

    impl Rig {
        fn finish(&self) -> LeadFinish {
            LeadFinish {
                lines: self.lines.clone(),
                urgent: UrgentWords::new(["flood"]),
                metrics: crate::metrics::Metrics::new(),
            }
        }

        fn start(&self, text: &'static str, delay: Duration, wait: Duration) -> Service {
            Service::start(
                Arc::new(Fixed { text, delay }),
                1,
                wait,
                self.delivery.outbox(),
                self.dir.join("recordings"),
                self.delivery.publisher(),
                self.finish(),
            )
            .unwrap()
        }

        /// A finished lead with a voice answer whose recording is on disk.
        fn lead(&self) -> Lead {
            let text = "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
                        From: <sip:+15553217788@x>;tag=1\r\nTo: <sip:2@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
                        Content-Length: 0\r\n\r\n";
            let backstop_core::sip::message::Incoming::Request(invite) =
                backstop_core::sip::message::read_message(text.as_bytes(), "127.0.0.1:5060".parse().unwrap())
            else {
                panic!("test INVITE rejected")
            };
            let mut lead =
                Lead::from_invite("L1".into(), &invite, SystemTime::UNIX_EPOCH, backstop_core::sip::Transport::Udp);
            let answer = serde_json::json!({"attempts": 1, "kind": "voice", "status": "answered", "value": null,
                                            "recording": "L1-need.wav"});
            lead.answers.insert("need".into(), serde_json::from_value(answer).unwrap());
            let audio = Audio::from_pcm(None, &vec![1000i16; 8000]);
            crate::media_files::write_recording(
                &self.dir.join("recordings/L1-need.wav"),
                &audio,
                RecordingFormat::Pcm16,
            )
            .unwrap();
            lead
        }

        async fn lines(&self, n: usize) -> Vec<Lead> {
            let path = self.dir.join("leads.jsonl");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let leads: Vec<Lead> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                if leads.len() >= n || tokio::time::Instant::now() > deadline {
                    return leads;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lead_goes_out_with_its_transcript_summary_and_urgent_words() {
        let rig = rig("held");
        let (_stop, rx) = watch::channel(false);
        let _workers = rig.delivery.spawn(rx);
        let service = rig.start("The basement is flooding.", Duration::ZERO, Duration::from_secs(30));
        assert!(service.transcriber.hold(&rig.lead()).await);
        let leads = rig.lines(1).await;
        assert_eq!(leads.len(), 1);
        let t = leads[0].answers["need"].transcript.as_ref().expect("the transcript");
        assert_eq!(
            (t.text.as_str(), t.engine.as_str(), t.model.as_str()),
            ("The basement is flooding.", "fixed", "test")
        );
        assert_eq!(leads[0].urgent_words, ["flood"]);
        assert_eq!(leads[0].summary, "The basement is flooding · URGENT: flood · call back +1 555-321-7788");
        assert_eq!(leads[0].transcripts_pending, 0);
        service.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_shutdown_a_held_lead_goes_out_as_it_is_and_its_transcript_follows_the_restart() {
        let rig = rig("flush");
        let (_stop, rx) = watch::channel(false);
        let _workers = rig.delivery.spawn(rx);
        // A slow engine: the transcript is still being decoded at shutdown.
        let service = rig.start("no heat", Duration::from_millis(1500), Duration::from_secs(30));
        assert!(service.transcriber.hold(&rig.lead()).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        service.stop().await;
        let leads = rig.lines(1).await;
        assert_eq!(leads.len(), 1, "the lead did not wait for the next start");
        assert_eq!((leads[0].transcripts_pending, leads[0].answers["need"].transcript.is_none()), (1, true));
        // The next start decodes it again and sends the whole lead as an update.
        let service = rig.start("no heat", Duration::ZERO, Duration::from_secs(30));
        let leads = rig.lines(2).await;
        assert_eq!(leads.len(), 2);
        assert_eq!(leads[1].id, leads[0].id);
        assert_eq!(leads[1].answers["need"].transcript.as_ref().unwrap().text, "no heat");
        assert_eq!(leads[1].transcripts_pending, 0);
        service.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = std::fs::read_to_string(rig.dir.join("leads.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2, "nothing more to send");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_transcription_turned_off_held_leads_go_out_at_the_start() {
        let rig = rig("off");
        {
            let db = rig.delivery.outbox();
            let mut db = db.lock().unwrap();
            queue::hold(db.conn(), &rig.lead(), i64::MAX, 0).unwrap();
        }
        let (_stop, rx) = watch::channel(false);
        let _workers = rig.delivery.spawn(rx);
        release_held(rig.delivery.outbox(), rig.delivery.publisher(), rig.finish()).await.unwrap();
        let leads = rig.lines(1).await;
        assert_eq!(leads.len(), 1);
        assert_eq!(leads[0].transcripts_pending, 0, "nothing will come: none is pending");
        assert!(leads[0].answers["need"].transcript.is_none());
    }
}
