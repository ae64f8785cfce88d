//! The sink workers: one per sink takes due events from the outbox,
//! delivers them concurrently (one per call at a time, so a call's events
//! stay in order) and records each result (delivered, retry after a
//! backoff, or dead-lettered). Beside them, the events held in memory while
//! the outbox could not take them are committed every 2 s, and housekeeping
//! prunes delivered events and warns when the outbox fills up.

use crate::sink::delivery::{Publisher, Sink, Target, flush_held, now_ms};
use crate::sink::file::LeadFile;
use crate::sink::outbox::{Due, Outbox};
use crate::sink::retry::{Attempt, Verdict, backoff, classify};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

impl Publisher {
    /// The outbox it commits to (for the scrape and `/readyz`).
    pub fn outbox(&self) -> Arc<Mutex<Outbox>> {
        self.db.clone()
    }

    /// Events held in memory because the outbox could not take them (a full disk).
    pub fn held_events(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The shared store, on a cluster.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The shared sinks of the live set (on a cluster).
    pub fn shared_specs(&self) -> Vec<crate::sink::outbox::SinkSpec> {
        self.sinks.current().shared_specs().to_vec()
    }

    /// Wake the shared sinks' workers.
    pub fn wake_shared(&self) {
        self.sinks.current().wake_shared();
    }

    /// On a cluster, the shared sinks' pending and dead deliveries across
    /// it, as last read (`cluster::Cluster::shared_figures`).
    pub fn shared_figures(&self) -> Option<Vec<(String, u64, u64)>> {
        self.cluster.as_ref().and_then(|c| c.shared_figures())
    }

    /// The label the metrics give the sink named `name` ([`crate::sink::delivery::LiveSinks::label_of`]).
    pub fn sink_label(&self, name: &str) -> String {
        self.sinks.label_of(name)
    }
}

async fn blocking<T: Send + 'static>(db: &Arc<Mutex<Outbox>>, f: impl FnOnce(&Outbox) -> T + Send + 'static) -> T {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db.lock().unwrap_or_else(|p| p.into_inner()))).await.expect("outbox task")
}

/// Where a worker takes its deliveries from: this node's outbox, or on a
/// cluster the shared store (webhooks and text-backs, `cluster::queue`).
#[derive(Clone)]
pub(super) enum Queue {
    Local(Arc<Mutex<Outbox>>),
    Shared(Arc<crate::cluster::Cluster>),
}

/// What became of one delivery.
enum Mark {
    Done,
    Retry { wait: Duration, why: String },
    Dead { why: String },
}

/// How often an idle worker on the shared store looks for work that
/// another node shipped (nothing wakes it from there).
const SHARED_POLL: Duration = Duration::from_millis(250);

impl Queue {
    async fn due(&self, sink: &str) -> Result<Vec<Due>, String> {
        match self {
            Queue::Local(db) => {
                let n = sink.to_string();
                blocking(db, move |o| o.due(&n, now_ms(), 64)).await.map_err(|e| e.to_string())
            }
            Queue::Shared(c) => crate::cluster::queue::claim(c, sink, 64).await.map_err(|e| e.to_string()),
        }
    }

    /// How long to sleep when nothing is due.
    async fn idle(&self, sink: &str) -> Duration {
        match self {
            Queue::Local(db) => {
                let n = sink.to_string();
                let next = blocking(db, move |o| o.next_due_ms(&n)).await.ok().flatten();
                next.map(|t| Duration::from_millis((t - now_ms()).clamp(0, 5_000) as u64))
                    .unwrap_or(Duration::from_secs(5))
            }
            Queue::Shared(c) => match crate::cluster::queue::next_due_in(c, sink).await {
                Ok(Some(d)) => d.min(SHARED_POLL),
                Ok(None) => SHARED_POLL,
                Err(_) => Duration::from_secs(1),
            },
        }
    }

    async fn mark(&self, sink: &str, seq: i64, mark: &Mark) -> Result<(), String> {
        match self {
            Queue::Local(db) => {
                let (n, now) = (sink.to_string(), now_ms());
                let r = match mark {
                    Mark::Done => blocking(db, move |o| o.mark_done(&n, seq, now)).await,
                    Mark::Retry { wait, why } => {
                        let (next, why) = (now + wait.as_millis() as i64, why.clone());
                        blocking(db, move |o| o.mark_retry(&n, seq, next, &why)).await
                    }
                    Mark::Dead { why } => {
                        let why = why.clone();
                        blocking(db, move |o| o.mark_dead(&n, seq, &why)).await
                    }
                };
                r.map_err(|e| e.to_string())
            }
            Queue::Shared(c) => {
                use crate::cluster::queue::{mark_dead, mark_done, mark_retry};
                let r = match mark {
                    Mark::Done => mark_done(c, sink, seq).await,
                    Mark::Retry { wait, why } => mark_retry(c, sink, seq, *wait, why).await,
                    Mark::Dead { why } => mark_dead(c, sink, seq, why).await,
                };
                r.map_err(|e| e.to_string())
            }
        }
    }

    /// Record `mark`. On the shared store a result that cannot be recorded
    /// (the database went away mid-delivery) is tried again for as long as
    /// this node's lease lasts: another node would deliver it again after.
    async fn record(&self, sink: &str, seq: i64, mark: Mark, shutdown: &watch::Receiver<bool>) -> Result<(), String> {
        let deadline = match self {
            Queue::Shared(c) => tokio::time::Instant::now() + c.settings.lease,
            Queue::Local(_) => tokio::time::Instant::now(),
        };
        loop {
            match self.mark(sink, seq, &mark).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline || *shutdown.borrow() => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

pub(super) async fn worker(
    queue: Queue,
    sink: Sink,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let name = sink.spec.name.clone();
    // Logs name the sink by its metrics label: a webhook's name holds its URL, often a secret.
    let label = sink.label();
    tracing::info!(sink = %label, "delivery worker started");
    metrics.sink_started(&label);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due = match queue.due(&name).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(sink = %label, error = %e, "outbox read failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        if due.is_empty() {
            let wait = queue.idle(&name).await;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut set = tokio::task::JoinSet::new();
        for d in due {
            let (queue, sink, metrics, shutdown) = (queue.clone(), sink.clone(), metrics.clone(), shutdown.clone());
            // Each result recorded as it comes, side by side: one that waits
            // for the shared store to come back holds up no other.
            set.spawn(async move {
                let attempt = deliver(&sink.target, &d).await;
                record(&queue, &sink, d, attempt, &metrics, &shutdown).await;
            });
        }
        while set.join_next().await.is_some() {}
    }
}

async fn deliver(target: &Target, d: &Due) -> Attempt {
    match target {
        Target::Webhook(w) => {
            let body = serde_json::to_vec(&d.event).expect("events serialise");
            w.deliver(&d.event.id, &body, now_ms() / 1000).await
        }
        Target::TextBack(sender) => sender.deliver(&d.event).await,
        Target::Ship(shipper) => match shipper.deliver(&d.event, d.created_ms).await {
            Ok(()) => Attempt::Status { code: 200, retry_after: None },
            // Refused for what it holds: dead-lettered (`outbox retry --dead`), not retried forever.
            Err(e) if e.is_permanent() => {
                tracing::error!(event = %d.event.id, error = %e, "the shared store refuses this event");
                Attempt::Status { code: 422, retry_after: None }
            }
            Err(e) => Attempt::Transport(e.to_string()),
        },
        Target::LeadsFile(path) | Target::EventsFile(path) => {
            let (path, event) = (path.clone(), d.event.clone());
            let leads = matches!(target, Target::LeadsFile(_));
            let r = tokio::task::spawn_blocking(move || {
                let mut file = LeadFile::open(&path)?;
                if leads { file.append_line_once(&event.lead) } else { file.append_once(&event.id, &event.file_line()) }
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
        Target::TextBack(s) => s.name(),
        Target::Ship(_) => crate::cluster::SHIP_SINK.into(),
    }
}

async fn record(
    queue: &Queue,
    sink: &Sink,
    d: Due,
    attempt: Attempt,
    metrics: &crate::metrics::Metrics,
    shutdown: &watch::Receiver<bool>,
) {
    let name = sink.spec.name.clone();
    let label = sink.label();
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
            metrics.delivered(&label, Duration::from_millis((now - d.created_ms).max(0) as u64));
            tracing::info!(sink = %label, event = %id, kind, call_id = %call_id, attempts = d.attempts + 1, latency_ms = now - d.created_ms, "delivered");
            queue.record(&name, seq, Mark::Done, shutdown).await
        }
        Verdict::Retry { after, why } => {
            metrics.delivery_failed(&label);
            let wait = backoff(d.attempts + 1, sink.max_interval, after, rand::random::<f64>());
            tracing::warn!(sink = %label, event = %id, kind, call_id = %call_id, attempt = d.attempts + 1, retry_in_ms = wait.as_millis() as u64, why, "delivery failed; will retry");
            queue.record(&name, seq, Mark::Retry { wait, why }, shutdown).await
        }
        Verdict::Dead { why } => {
            metrics.delivery_failed(&label);
            tracing::error!(sink = %label, event = %id, kind, call_id = %call_id, why, "delivery failed permanently: event dead-lettered (backstop outbox retry --dead)");
            queue.record(&name, seq, Mark::Dead { why }, shutdown).await
        }
    };
    if let Err(e) = result {
        tracing::error!(sink = %label, event = %d.event.id, error = %e, "could not record the delivery result; it will be retried");
    }
}

/// Every 2 s, commit the events held in memory; at shutdown, one last try,
/// and whatever still cannot be committed is written whole to the log.
pub(super) async fn retry_held(publisher: Publisher, mut shutdown: watch::Receiver<bool>) {
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
            let r = flush_held(&mut db, &p.sinks, &mut held);
            (r, if stop { held.drain(..).collect() } else { Vec::new() })
        })
        .await
        .unwrap_or((Ok(()), Vec::new()));
        match result {
            Ok(()) => {
                for w in publisher.sinks.iter() {
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

pub(super) async fn housekeeping(
    db: Arc<Mutex<Outbox>>,
    max_pending: u64,
    keep: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
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
