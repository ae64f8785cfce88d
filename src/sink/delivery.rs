//! Delivery: the tokio side of the outbox. [`Publisher::publish`] commits an
//! event (on the blocking pool: SQLite fsyncs) and wakes the sink workers;
//! one worker per sink takes due events, delivers them concurrently (one per
//! call at a time, so a call's events stay in order) and records each
//! result. The SQLite connection sits behind a mutex: it is touched a few
//! times per call, never from the media path.

use crate::sink::event::{Event, EventType};
use crate::sink::file::LeadFile;
use crate::sink::outbox::{Due, Outbox, SinkSpec};
use crate::sink::retry::{Attempt, Verdict, backoff, classify};
use crate::sink::webhook::Webhook;
use backstop_core::intake::lead::{Outcome, rfc3339};
use backstop_core::sip::dialog::EndedBy;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where a sink puts events.
#[derive(Clone)]
pub enum Target {
    /// `leads.jsonl`: the lead of each `lead.completed`, one line each.
    LeadsFile(PathBuf),
    /// `events.jsonl`: every event, one line each.
    EventsFile(PathBuf),
    Webhook(Webhook),
}

/// A configured sink: what it takes, where it delivers, how it retries.
#[derive(Clone)]
pub struct Sink {
    pub spec: SinkSpec,
    pub target: Target,
    pub max_interval: Duration,
    pub max_age: Duration,
}

/// Shared handle for committing events.
#[derive(Clone)]
pub struct Publisher {
    db: Arc<Mutex<Outbox>>,
    specs: Arc<Vec<SinkSpec>>,
    wake: Arc<Vec<Arc<Notify>>>,
    held: Held,
}

/// Events the outbox could not take (disk full): kept in memory, in order,
/// and committed as soon as it can take them again.
type Held = Arc<Mutex<std::collections::VecDeque<Event>>>;

/// Events held in memory at most; beyond it the oldest is logged whole and let go.
const MAX_HELD: usize = 10_000;

/// Why an event could not be committed, or the outbox not recovered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The outbox refused the event (a full disk, say). It is held in memory,
    /// after any held before it, and the retry task commits them in order.
    #[error("{source}; {held} event(s) held in memory, retried every 2 s")]
    Held { source: rusqlite::Error, held: usize },
    #[error("the outbox: {0}")]
    Outbox(#[from] rusqlite::Error),
    /// The blocking task that touches the outbox did not finish (it panicked).
    #[error("the outbox task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Commit held events in order, stopping at the first that fails.
fn flush_held(
    db: &mut Outbox,
    specs: &[SinkSpec],
    held: &mut std::collections::VecDeque<Event>,
) -> rusqlite::Result<()> {
    while let Some(ev) = held.front() {
        db.append(ev, specs, now_ms())?;
        held.pop_front();
    }
    Ok(())
}

impl Publisher {
    /// Commit the event durably (after any held before it), then wake the
    /// workers. When the outbox cannot take it (disk full, say), the event is
    /// held in memory and committed later by the retry task; the error says so.
    pub async fn publish(&self, event: Event) -> Result<(), DeliveryError> {
        let db = self.db.clone();
        let specs = self.specs.clone();
        let held = self.held.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            held.push_back(event);
            if held.len() > MAX_HELD
                && let Some(lost) = held.pop_front()
            {
                tracing::error!(event = %serde_json::to_string(&lost).unwrap_or_default(), "too many events held in memory; this one is only in the log");
            }
            flush_held(&mut db, &specs, &mut held).map_err(|source| DeliveryError::Held { source, held: held.len() })
        })
        .await?;
        for w in self.wake.iter() {
            w.notify_one();
        }
        result
    }
}

/// The outbox and its sink workers.
pub struct Delivery {
    db: Arc<Mutex<Outbox>>,
    sinks: Vec<Sink>,
    wake: Vec<Arc<Notify>>,
    max_pending: u64,
    keep_delivered: Duration,
    held: Held,
}

impl Delivery {
    pub fn new(outbox: Outbox, sinks: Vec<Sink>, max_pending: u64, keep_delivered: Duration) -> Delivery {
        let wake = sinks.iter().map(|_| Arc::new(Notify::new())).collect();
        Delivery {
            db: Arc::new(Mutex::new(outbox)),
            sinks,
            wake,
            max_pending,
            keep_delivered,
            held: Default::default(),
        }
    }

    pub fn publisher(&self) -> Publisher {
        Publisher {
            db: self.db.clone(),
            specs: Arc::new(self.sinks.iter().map(|s| s.spec.clone()).collect()),
            wake: Arc::new(self.wake.clone()),
            held: self.held.clone(),
        }
    }

    /// After a restart: make pending deliveries due now, and close the leads of
    /// calls the previous process died in the middle of (outcome `interrupted`,
    /// ended by `error`), from the lead their `call.missed` carried.
    pub async fn recover(&self) -> Result<usize, DeliveryError> {
        let cut = {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            db.retry_now(None, false, now_ms())?;
            db.unfinished_calls()?
        };
        let publisher = self.publisher();
        let n = cut.len();
        for missed in cut {
            let mut lead = missed.lead;
            lead.outcome = Outcome::Interrupted;
            lead.ended_by = Some(EndedBy::Error);
            tracing::warn!(
                call_id = %lead.call_id,
                "call was cut off by a restart; its lead is closed as interrupted"
            );
            publisher.publish(Event::new(EventType::LeadCompleted, rfc3339(SystemTime::now()), &lead)).await?;
        }
        Ok(n)
    }

    /// Start one worker per sink, plus housekeeping. Workers stop when `shutdown` flips.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (sink, wake) in self.sinks.iter().cloned().zip(self.wake.iter().cloned()) {
            tasks.push(tokio::spawn(worker(self.db.clone(), sink, wake, shutdown.clone())));
        }
        tasks.push(tokio::spawn(housekeeping(
            self.db.clone(),
            self.max_pending,
            self.keep_delivered,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(retry_held(self.publisher(), shutdown)));
        tasks
    }

    /// Wait (bounded) until the file sinks have nothing due: used at shutdown
    /// so that the last leads are on disk in `leads.jsonl` before exit.
    pub async fn drain_files(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        for sink in self.sinks.iter().filter(|s| !matches!(s.target, Target::Webhook(_))) {
            loop {
                let due = {
                    let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
                    db.due(&sink.spec.name, now_ms(), 1).map(|d| d.len()).unwrap_or(0)
                };
                if due == 0 || tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn blocking<T: Send + 'static>(db: &Arc<Mutex<Outbox>>, f: impl FnOnce(&Outbox) -> T + Send + 'static) -> T {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db.lock().unwrap_or_else(|p| p.into_inner()))).await.expect("outbox task")
}

async fn worker(db: Arc<Mutex<Outbox>>, sink: Sink, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let name = sink.spec.name.clone();
    tracing::info!(sink = %name, "delivery worker started");
    loop {
        if *shutdown.borrow() {
            return;
        }
        let n = name.clone();
        let due = match blocking(&db, move |o| o.due(&n, now_ms(), 64)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "outbox read failed");
                Vec::new()
            }
        };
        if due.is_empty() {
            let n = name.clone();
            let next = blocking(&db, move |o| o.next_due_ms(&n)).await.ok().flatten();
            let wait = next
                .map(|t| Duration::from_millis((t - now_ms()).clamp(0, 5_000) as u64))
                .unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut set = tokio::task::JoinSet::new();
        for d in due {
            let target = sink.target.clone();
            set.spawn(async move {
                let attempt = deliver(&target, &d).await;
                (d, attempt)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((d, attempt)) = joined else { continue };
            record(&db, &sink, d, attempt).await;
        }
    }
}

async fn deliver(target: &Target, d: &Due) -> Attempt {
    match target {
        Target::Webhook(w) => {
            let body = serde_json::to_vec(&d.event).expect("events serialise");
            w.deliver(&d.event.id, &body, now_ms() / 1000).await
        }
        Target::LeadsFile(path) | Target::EventsFile(path) => {
            let (path, event) = (path.clone(), d.event.clone());
            let leads = matches!(target, Target::LeadsFile(_));
            let r = tokio::task::spawn_blocking(move || {
                let mut file = LeadFile::open(&path)?;
                if leads { file.append_once(&event.lead.id, &event.lead) } else { file.append_once(&event.id, &event) }
            })
            .await;
            match r {
                Ok(Ok(())) => Attempt::Status { code: 200, retry_after: None },
                Ok(Err(e)) => Attempt::Transport(format!("writing {}: {e}", target_name(target))),
                Err(e) => Attempt::Transport(e.to_string()),
            }
        }
    }
}

fn target_name(t: &Target) -> String {
    match t {
        Target::LeadsFile(p) | Target::EventsFile(p) => p.display().to_string(),
        Target::Webhook(w) => w.url.clone(),
    }
}

async fn record(db: &Arc<Mutex<Outbox>>, sink: &Sink, d: Due, attempt: Attempt) {
    let name = sink.spec.name.clone();
    let now = now_ms();
    let (seq, id, call_id, kind) = (d.seq, d.event.id.clone(), d.event.call_id().to_string(), d.event.kind.as_str());
    let verdict = match classify(&attempt) {
        Verdict::Retry { why, .. } if now - d.created_ms > sink.max_age.as_millis() as i64 => {
            Verdict::Dead { why: format!("{why}; gave up after {} h", sink.max_age.as_secs() / 3600) }
        }
        v => v,
    };
    let result = match verdict {
        Verdict::Delivered => {
            tracing::info!(sink = %name, event = %id, kind, call_id = %call_id, attempts = d.attempts + 1, latency_ms = now - d.created_ms, "delivered");
            blocking(db, move |o| o.mark_done(&name, seq, now)).await
        }
        Verdict::Retry { after, why } => {
            let wait = backoff(d.attempts + 1, sink.max_interval, after, rand::random::<f64>());
            tracing::warn!(sink = %name, event = %id, kind, call_id = %call_id, attempt = d.attempts + 1, retry_in_ms = wait.as_millis() as u64, why, "delivery failed; will retry");
            blocking(db, move |o| o.mark_retry(&name, seq, now + wait.as_millis() as i64, &why)).await
        }
        Verdict::Dead { why } => {
            tracing::error!(sink = %name, event = %id, kind, call_id = %call_id, why, "delivery failed permanently: event dead-lettered (backstop outbox retry --dead)");
            blocking(db, move |o| o.mark_dead(&name, seq, &why)).await
        }
    };
    if let Err(e) = result {
        tracing::error!(sink = %sink.spec.name, event = %d.event.id, error = %e, "could not record the delivery result; it will be retried");
    }
}

/// Every 2 s, commit the events held in memory; at shutdown, one last try,
/// and whatever still cannot be committed is written whole to the log.
async fn retry_held(publisher: Publisher, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            _ = shutdown.changed() => true,
        };
        let p = publisher.clone();
        let (result, left) = tokio::task::spawn_blocking(move || {
            // Same lock order as `publish`: the outbox, then the held events.
            let mut db = p.db.lock().unwrap_or_else(|e| e.into_inner());
            let mut held = p.held.lock().unwrap_or_else(|e| e.into_inner());
            if held.is_empty() {
                return (Ok(()), Vec::new());
            }
            let r = flush_held(&mut db, &p.specs, &mut held);
            (r, if stop { held.drain(..).collect() } else { Vec::new() })
        })
        .await
        .unwrap_or((Ok(()), Vec::new()));
        match result {
            Ok(()) => {
                for w in publisher.wake.iter() {
                    w.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "the outbox still cannot take the held events"),
        }
        for ev in left {
            tracing::error!(event = %serde_json::to_string(&ev).unwrap_or_default(), "shutting down with an event the outbox could not take; it is only in this log");
        }
        if stop || *shutdown.borrow() {
            return;
        }
    }
}

async fn housekeeping(db: Arc<Mutex<Outbox>>, max_pending: u64, keep: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        let keep_ms = keep.as_millis() as i64;
        let (pending, pruned) = blocking(&db, move |o| (o.pending_total(), o.prune(now_ms(), keep_ms))).await;
        if let Ok(p) = pending
            && p * 10 >= max_pending * 8
        {
            tracing::warn!(
                pending = p,
                max_pending,
                "the outbox is filling up: deliveries are failing (see backstop outbox status)"
            );
        }
        if let Ok(n) = pruned
            && n > 0
        {
            tracing::debug!(pruned = n, "old delivered events removed from the outbox");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::intake::lead::Lead;

    fn lead(call_id: &str) -> Lead {
        let text = format!(
            "INVITE sip:o@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
             From: <sip:+15551230001@127.0.0.1>;tag=a\r\nTo: <sip:o@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:c@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        );
        let backstop_core::sip::message::Incoming::Request(r) =
            backstop_core::sip::message::read_message(text.as_bytes(), "127.0.0.1:5070".parse().unwrap())
        else {
            panic!("test INVITE rejected")
        };
        Lead::from_invite(format!("lead-{call_id}"), &r, SystemTime::now(), backstop_core::sip::Transport::Udp)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_outbox_holds_events_in_memory_and_commits_them_when_it_can() {
        let dir = std::env::temp_dir().join(format!("backstop-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let leads = dir.join("leads.jsonl");
        let outbox = Outbox::open(&dir.join("outbox.db")).unwrap();
        let sink = Sink {
            spec: SinkSpec { name: "file:leads.jsonl".into(), events: vec![EventType::LeadCompleted] },
            target: Target::LeadsFile(leads.clone()),
            max_interval: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
        };
        let delivery = Delivery::new(outbox, vec![sink], 1000, Duration::from_secs(3600));
        {
            // Exactly as full as a full disk: SQLite answers SQLITE_FULL.
            let db = delivery.db.lock().unwrap();
            let pages = db.page_count().unwrap();
            db.limit_pages(Some(pages)).unwrap();
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = delivery.spawn(stop_rx);
        let publisher = delivery.publisher();
        // Publish until the outbox is full (a fresh page may take a few first).
        let mut published = Vec::new();
        let mut err = None;
        for i in 0..200 {
            let call_id = format!("c{i}");
            let r = publisher.publish(Event::new(EventType::LeadCompleted, "t".into(), &lead(&call_id))).await;
            published.push(call_id);
            if let Err(e) = r {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(DeliveryError::Held { held: 1, .. })), "the outbox never filled: {err:?}");
        assert!(err.unwrap().to_string().contains("1 event(s) held in memory"));
        let r = publisher.publish(Event::new(EventType::LeadCompleted, "t".into(), &lead("last"))).await;
        assert!(matches!(r, Err(DeliveryError::Held { held: 2, .. })), "{r:?}");
        published.push("last".into());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // Space again: the retry task commits the held ones, in order, and the file sink writes them all.
        delivery.db.lock().unwrap().limit_pages(None).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        let ids = || -> Vec<String> {
            std::fs::read_to_string(&leads)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["call_id"].as_str().unwrap().to_string())
                .collect()
        };
        while tokio::time::Instant::now() < deadline && ids().len() < published.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every lead exactly once (calls are delivered in parallel, so not in order).
        let (mut got, mut want) = (ids(), published.clone());
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
