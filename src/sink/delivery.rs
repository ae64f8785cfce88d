//! Delivery: the tokio side of the outbox. [`Publisher::publish`] commits an
//! event (on the blocking pool: SQLite fsyncs) and wakes the sink workers
//! (`sink::worker`); [`Delivery`] sets the sinks up, closes the leads of
//! calls a restart cut off, starts the workers and, at shutdown, waits for
//! the files to catch up. The SQLite connection sits behind a mutex: it is
//! touched a few times per call, never from the media path.

use crate::sink::event::{Event, EventType};
use crate::sink::outbox::{Outbox, SinkSpec};
use crate::sink::webhook::Webhook;
use crate::sink::worker::{housekeeping, retry_held, worker};
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
    /// `leads.jsonl`: the lead of each `lead.completed` and `lead.updated`, one line each.
    LeadsFile(PathBuf),
    /// `events.jsonl`: every event, one line each.
    EventsFile(PathBuf),
    Webhook(Webhook),
    /// An instant text-back to the caller (`[[text_back]]`).
    TextBack(Arc<crate::textback::Sender>),
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
    pub(super) db: Arc<Mutex<Outbox>>,
    pub(super) specs: Arc<Vec<SinkSpec>>,
    pub(super) wake: Arc<Vec<Arc<Notify>>>,
    pub(super) held: Held,
    /// Signs the recording links events carry (`[http] public_url`).
    pub(super) links: Option<Arc<crate::http::links::Links>>,
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
pub(super) fn flush_held(
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
    /// Run `f` on the outbox's connection, on the blocking pool: the lead
    /// store reads there (it lives in the same file).
    pub async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T, DeliveryError> {
        let db = self.db.clone();
        Ok(tokio::task::spawn_blocking(move || f(db.lock().unwrap_or_else(|p| p.into_inner()).conn())).await?)
    }

    /// Add the signed recording links, when the config asks for them.
    fn decorate(&self, event: &mut Event) {
        if let Some(links) = &self.links {
            links.decorate(event, now_ms() / 1000);
        }
    }

    /// Commit the event durably (after any held before it), then wake the
    /// workers. When the outbox cannot take it (disk full, say), the event is
    /// held in memory and committed later by the retry task; the error says so.
    pub async fn publish(&self, mut event: Event) -> Result<(), DeliveryError> {
        self.decorate(&mut event);
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

impl Publisher {
    /// Commit the event and `then` in one transaction, then wake the
    /// workers. For events whose source is already durable (the
    /// transcription queue): no holding in memory; on failure nothing is
    /// committed and the caller tries again later.
    pub async fn publish_with(
        &self,
        mut event: Event,
        then: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<(), DeliveryError> {
        self.decorate(&mut event);
        let (db, specs, held) = (self.db.clone(), self.specs.clone(), self.held.clone());
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            // Events held in memory (a full disk) go first, so that a call's
            // events stay in order; while some are still held, this waits too.
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            flush_held(&mut db, &specs, &mut held)
                .map_err(|source| DeliveryError::Held { source, held: held.len() })?;
            db.append_then(&event, &specs, now_ms(), then).map_err(DeliveryError::Outbox)
        })
        .await??;
        for w in self.wake.iter() {
            w.notify_one();
        }
        Ok(())
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
    links: Option<Arc<crate::http::links::Links>>,
    metrics: Arc<crate::metrics::Metrics>,
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
            links: None,
            metrics: crate::metrics::Metrics::new(),
        }
    }

    /// Count deliveries in `metrics` (a fresh, unexported set until this is called).
    pub fn set_metrics(&mut self, metrics: Arc<crate::metrics::Metrics>) {
        self.metrics = metrics;
    }

    /// Sign recording links into every event published from now on.
    pub fn set_links(&mut self, links: Option<crate::http::links::Links>) {
        self.links = links.map(Arc::new);
    }

    /// The outbox database, shared with the transcription queue.
    pub fn outbox(&self) -> Arc<Mutex<Outbox>> {
        self.db.clone()
    }

    pub fn publisher(&self) -> Publisher {
        Publisher {
            db: self.db.clone(),
            specs: Arc::new(self.sinks.iter().map(|s| s.spec.clone()).collect()),
            wake: Arc::new(self.wake.clone()),
            held: self.held.clone(),
            links: self.links.clone(),
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
            tasks.push(tokio::spawn(worker(self.db.clone(), sink, wake, shutdown.clone(), self.metrics.clone())));
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
        for sink in self.sinks.iter().filter(|s| matches!(s.target, Target::LeadsFile(_) | Target::EventsFile(_))) {
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
            spec: SinkSpec {
                name: "file:leads.jsonl".into(),
                events: vec![EventType::LeadCompleted],
                lines: Default::default(),
            },
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
