//! Delivery: the tokio side of the outbox. [`Publisher::publish`] commits an
//! event (on the blocking pool: SQLite fsyncs) and wakes the sink workers
//! (`sink::worker`); [`Delivery`] sets the sinks up, closes the leads of
//! calls a restart cut off, starts the workers and, at shutdown, waits for
//! the files to catch up. The SQLite connection sits behind a mutex: it is
//! touched a few times per call, never from the media path.

use crate::sink::event::{Event, EventType};
use crate::sink::outbox::{Outbox, SinkSpec};
use crate::sink::webhook::Webhook;
use crate::sink::worker::{Queue, housekeeping, retry_held, worker};
use backstop_core::intake::lead::{Outcome, rfc3339};
use backstop_core::sip::dialog::EndedBy;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
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
    /// The cluster's shared store (`[store]`): every event ships there.
    Ship(Arc<crate::cluster::ship::Shipper>),
}

impl Target {
    /// On a cluster, delivered from the shared store by any node rather than
    /// from this node's outbox: what reaches the outside world once.
    fn shared(&self) -> bool {
        matches!(self, Target::Webhook(_) | Target::TextBack(_))
    }
}

/// A configured sink: what it takes, where it delivers, how it retries.
#[derive(Clone)]
pub struct Sink {
    pub spec: SinkSpec,
    pub target: Target,
    pub max_interval: Duration,
    pub max_age: Duration,
}

impl Sink {
    /// What the metrics and the logs call it, never its name when that holds
    /// a URL: a named webhook's `webhook:<name>`, else
    /// [`crate::metrics::sink_label`] of its name.
    pub fn label(&self) -> String {
        match &self.target {
            Target::Webhook(w) if w.label.is_some() => w.label.clone().unwrap_or_default(),
            _ => crate::metrics::sink_label(&self.spec.name),
        }
    }
}

/// A sink as the config gives it, with `settings`: what the config said
/// about it, in any stable form. A reload keeps the worker of a sink whose
/// name and settings are both unchanged; a changed one is restarted.
pub struct ConfiguredSink {
    pub sink: Sink,
    pub settings: String,
}

/// The sinks events are committed for, and the workers' wake-ups, as one
/// snapshot: what a publish reads once.
pub struct SinkSet {
    /// The sinks an event is committed for in this node's outbox.
    specs: Vec<SinkSpec>,
    /// On a cluster, the shared sinks (`Target::shared`): their deliveries
    /// are made in the shared store when an event ships.
    shared: Vec<SinkSpec>,
    wake: Vec<Arc<Notify>>,
    /// The shared sinks' workers' wake-ups.
    shared_wake: Vec<Arc<Notify>>,
    /// Every sink's name and [`Sink::label`].
    labels: Vec<(String, String)>,
}

impl SinkSet {
    /// The shared sinks, for shipping.
    pub(crate) fn shared_specs(&self) -> &[SinkSpec] {
        &self.shared
    }

    /// Wake the shared sinks' workers (an event shipped).
    pub(crate) fn wake_shared(&self) {
        for w in &self.shared_wake {
            w.notify_one();
        }
    }
}

/// The current [`SinkSet`], shared by every [`Publisher`] clone and replaced
/// whole on reload: a publish after the replacement commits for the new set.
#[derive(Clone)]
pub struct LiveSinks(Arc<RwLock<Arc<SinkSet>>>);

impl LiveSinks {
    fn new(set: SinkSet) -> LiveSinks {
        LiveSinks(Arc::new(RwLock::new(Arc::new(set))))
    }

    pub(crate) fn current(&self) -> Arc<SinkSet> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The label of the sink named `name`: its [`Sink::label`] while it is
    /// live, else (a removed sink's deliveries left in the outbox)
    /// [`crate::metrics::sink_label`] of the name.
    pub fn label_of(&self, name: &str) -> String {
        let set = self.current();
        match set.labels.iter().find(|(n, _)| n == name) {
            Some((_, label)) => label.clone(),
            None => crate::metrics::sink_label(name),
        }
    }

    fn replace(&self, set: SinkSet) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    /// The current workers' wake-ups.
    pub(super) fn iter(&self) -> std::vec::IntoIter<Arc<Notify>> {
        self.current().wake.clone().into_iter()
    }
}

/// Where [`flush_held`] finds the sinks to commit for: a snapshot, or the live set.
pub(super) trait SinkSpecs {
    fn snapshot(&self) -> Arc<SinkSet>;
}

impl SinkSpecs for LiveSinks {
    fn snapshot(&self) -> Arc<SinkSet> {
        self.current()
    }
}

impl SinkSpecs for Arc<SinkSet> {
    fn snapshot(&self) -> Arc<SinkSet> {
        self.clone()
    }
}

/// Shared handle for committing events.
#[derive(Clone)]
pub struct Publisher {
    pub(super) db: Arc<Mutex<Outbox>>,
    /// The live sinks: what to commit for, and whose workers to wake.
    pub(super) sinks: LiveSinks,
    pub(super) held: Held,
    /// Signs the recording links events carry (`[http] public_url`).
    pub(super) links: Option<Arc<crate::http::links::Links>>,
    /// The shared store, on a cluster.
    pub(super) cluster: Option<Arc<crate::cluster::Cluster>>,
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
    specs: &impl SinkSpecs,
    held: &mut std::collections::VecDeque<Event>,
) -> rusqlite::Result<()> {
    let set = specs.snapshot();
    while let Some(ev) = held.front() {
        db.append(ev, &set.specs, now_ms())?;
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
        // One snapshot of the sinks for the commit and the wake-ups.
        let set = self.sinks.current();
        let specs = set.clone();
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
        for w in set.wake.iter() {
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
        let set = self.sinks.current();
        let (db, specs, held) = (self.db.clone(), set.clone(), self.held.clone());
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            // Events held in memory (a full disk) go first, so that a call's
            // events stay in order; while some are still held, this waits too.
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            flush_held(&mut db, &specs, &mut held)
                .map_err(|source| DeliveryError::Held { source, held: held.len() })?;
            db.append_then(&event, &specs.specs, now_ms(), then).map_err(DeliveryError::Outbox)
        })
        .await??;
        for w in set.wake.iter() {
            w.notify_one();
        }
        Ok(())
    }
}

/// One sink and its worker.
struct Running {
    sink: Sink,
    /// What the config said about it (see [`ConfiguredSink`]); `None` for
    /// sinks given to [`Delivery::new`], which any reload restarts.
    settings: Option<String>,
    wake: Arc<Notify>,
    /// Stops this worker alone (a reload that drops or changes the sink).
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The sinks and their workers, as a reload changes them.
struct Workers {
    running: Vec<Running>,
    /// Set by [`Delivery::spawn`]: from then on a sink added runs a worker.
    shutdown: Option<watch::Receiver<bool>>,
    /// The whole delivery is stopping: no worker is started any more.
    stopping: bool,
}

/// What [`Delivery::replace_sinks`] did, sink names each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SinkChanges {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// How long a reload waits for a dropped or changed sink's worker to finish
/// the deliveries it has started, before ending it (they are retried).
/// Shorter in unit tests, which wait it out on purpose.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(if cfg!(test) { 2 } else { 15 });

/// The outbox and its sink workers.
pub struct Delivery {
    db: Arc<Mutex<Outbox>>,
    live: LiveSinks,
    workers: Arc<Mutex<Workers>>,
    max_pending: u64,
    keep_delivered: Duration,
    held: Held,
    links: Option<Arc<crate::http::links::Links>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The shared store, on a cluster (`set_cluster`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

fn running(sink: Sink, settings: Option<String>, wake: Arc<Notify>) -> Running {
    Running { sink, settings, wake, stop: watch::channel(false).0, task: None }
}

impl Delivery {
    pub fn new(outbox: Outbox, sinks: Vec<Sink>, max_pending: u64, keep_delivered: Duration) -> Delivery {
        let running: Vec<Running> = sinks.into_iter().map(|s| running(s, None, Arc::new(Notify::new()))).collect();
        let live = LiveSinks::new(set_of(&running, false));
        Delivery {
            db: Arc::new(Mutex::new(outbox)),
            live,
            workers: Arc::new(Mutex::new(Workers { running, shutdown: None, stopping: false })),
            max_pending,
            keep_delivered,
            held: Default::default(),
            links: None,
            metrics: crate::metrics::Metrics::new(),
            cluster: None,
        }
    }

    /// Run as a node of a cluster (`[store] url`): ship every event to the
    /// shared store, deliver webhooks and text-backs from there, follow the
    /// other nodes, heartbeat. Before [`Delivery::spawn`] and the sinks.
    /// With `recordings`, the recordings events name go to the database too.
    pub fn set_cluster(&mut self, cluster: Arc<crate::cluster::Cluster>, recordings: Option<PathBuf>) {
        let shipper = crate::cluster::ship::Shipper { cluster: cluster.clone(), sinks: self.live.clone(), recordings };
        let ship = Sink {
            spec: SinkSpec {
                name: crate::cluster::SHIP_SINK.into(),
                events: EventType::ALL.to_vec(),
                lines: Default::default(),
            },
            target: Target::Ship(Arc::new(shipper)),
            // The database back within seconds of its return; never given up.
            max_interval: Duration::from_secs(2),
            max_age: Duration::from_secs(100 * 365 * 24 * 3600),
        };
        self.cluster = Some(cluster);
        let mut w = self.workers();
        w.running.push(running(ship, Some(SHIP_SETTINGS.into()), Arc::new(Notify::new())));
        self.live.replace(set_of(&w.running, true));
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

    /// The label the metrics and the logs give the sink named `name` ([`LiveSinks::label_of`]).
    pub fn sink_label(&self, name: &str) -> String {
        self.live.label_of(name)
    }

    pub fn publisher(&self) -> Publisher {
        Publisher {
            db: self.db.clone(),
            sinks: self.live.clone(),
            held: self.held.clone(),
            links: self.links.clone(),
            cluster: self.cluster.clone(),
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, Workers> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sinks as they are now.
    pub fn sinks(&self) -> Vec<Sink> {
        self.workers().running.iter().map(|r| r.sink.clone()).collect()
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
            tracing::warn!(
                call_id = %missed.call_id(),
                "call was cut off by a restart; its lead is closed as interrupted"
            );
            publisher.publish(interrupted(missed)).await?;
        }
        Ok(n)
    }

    /// Start one worker per sink, plus housekeeping. Workers stop when
    /// `shutdown` flips; the returned tasks end once they all have (a sink a
    /// reload adds later is waited for too).
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        {
            let mut w = self.workers();
            w.shutdown = Some(shutdown.clone());
            for r in w.running.iter_mut() {
                r.task = Some(self.start_worker(r));
            }
        }
        tasks.push(tokio::spawn(stop_all_on(self.workers.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(housekeeping(
            self.db.clone(),
            self.max_pending,
            self.keep_delivered,
            shutdown.clone(),
        )));
        if let Some(cluster) = &self.cluster {
            tasks.push(tokio::spawn(crate::cluster::replica::run(cluster.clone(), self.db.clone(), shutdown.clone())));
            tasks.push(tokio::spawn(crate::cluster::nodes::run(cluster.clone(), self.publisher(), shutdown.clone())));
            tasks.push(tokio::spawn(crate::cluster::nodes::housekeeping(
                cluster.clone(),
                self.publisher(),
                self.keep_delivered,
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(retry_held(self.publisher(), shutdown)));
        tasks
    }

    fn start_worker(&self, r: &mut Running) -> tokio::task::JoinHandle<()> {
        let (stop, rx) = watch::channel(false);
        r.stop = stop;
        if let (Some(cluster), Target::TextBack(sender)) = (&self.cluster, &r.sink.target) {
            sender.use_cluster(cluster.clone());
        }
        let queue = match &self.cluster {
            Some(cluster) if r.sink.target.shared() => Queue::Shared(cluster.clone()),
            _ => Queue::Local(self.db.clone()),
        };
        tokio::spawn(worker(queue, r.sink.clone(), r.wake.clone(), rx, self.metrics.clone()))
    }

    /// Deliver to `new` from now on (a config reload). Events published after
    /// this returns are committed for the new sinks; a sink whose name and
    /// settings are unchanged keeps its worker and its pending deliveries; a
    /// changed one's worker finishes what it has started and a new one takes
    /// over its pending deliveries; a removed one's worker stops (its pending
    /// deliveries stay in the outbox, for `outbox status`, and go on if the
    /// sink comes back). Before [`Delivery::spawn`] only the list changes.
    pub async fn replace_sinks(&self, new: Vec<ConfiguredSink>) -> SinkChanges {
        let kept = |r: &Running| {
            new.iter()
                .any(|c| c.sink.spec.name == r.sink.spec.name && r.settings.as_deref() == Some(c.settings.as_str()))
        };
        // First the workers of changed and removed sinks stop, all at once,
        // while the old settings are still live: an old worker's delivery in
        // flight must not take an event committed under the new settings
        // (the old secret, the old file). What is published meanwhile is
        // durable and waits for the new worker.
        let stopping: Vec<tokio::task::JoinHandle<()>> = {
            let mut w = self.workers();
            w.running
                .iter_mut()
                .filter(|r| !kept(r))
                .filter_map(|r| {
                    let _ = r.stop.send(true);
                    r.task.take()
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + WORKER_STOP_WAIT;
        for mut task in stopping {
            // One deadline for all: they stop together, so N slow endpoints wait once, not N times.
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let mut changes = SinkChanges::default();
        let mut to_start = Vec::new();
        let mut w = self.workers();
        let mut old: Vec<Running> = std::mem::take(&mut w.running);
        for c in new {
            let name = c.sink.spec.name.clone();
            match old.iter().position(|r| r.sink.spec.name == name) {
                Some(i) if old[i].settings.as_deref() == Some(c.settings.as_str()) => {
                    changes.kept.push(name);
                    w.running.push(old.remove(i));
                }
                Some(i) => {
                    // Same outbox key: the new worker takes over its pending
                    // deliveries (and the wake-ups of publishes that read the old set).
                    let prev = old.remove(i);
                    changes.changed.push(name);
                    to_start.push(w.running.len());
                    w.running.push(running(c.sink, Some(c.settings), prev.wake));
                }
                None => {
                    changes.added.push(name);
                    to_start.push(w.running.len());
                    w.running.push(running(c.sink, Some(c.settings), Arc::new(Notify::new())));
                }
            }
        }
        // The shipping sink is no config's: it stays, worker and all.
        if let Some(i) = old.iter().position(|r| r.sink.spec.name == crate::cluster::SHIP_SINK) {
            w.running.push(old.remove(i));
        }
        changes.removed = old.into_iter().map(|r| r.sink.spec.name).collect();
        self.live.replace(set_of(&w.running, self.cluster.is_some()));
        if w.shutdown.is_some() && !w.stopping {
            for i in to_start {
                let task = self.start_worker(&mut w.running[i]);
                w.running[i].task = Some(task);
            }
        }
        changes
    }

    /// Wait (bounded) until the file sinks have nothing due: used at shutdown
    /// so that the last leads are on disk in `leads.jsonl` before exit. On
    /// a cluster, also the shipping: a drained node leaves nothing behind.
    pub async fn drain_files(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let files: Vec<Sink> = self
            .sinks()
            .into_iter()
            .filter(|s| matches!(s.target, Target::LeadsFile(_) | Target::EventsFile(_) | Target::Ship(_)))
            .collect();
        for sink in files {
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

/// The settings of the shipping sink (kept by every reload).
const SHIP_SETTINGS: &str = "ship";

/// The sinks as a publish reads them. On a cluster the shared ones get
/// their deliveries in the shared store, not in this node's outbox.
impl Delivery {
    /// At a stop on a cluster, once the workers and the heartbeat have
    /// stopped: hand back the deliveries this node claimed, and when
    /// everything has shipped, tell the others this node left
    /// (`cluster::nodes::leave`), so none takes it for dead. With events
    /// still to ship, it says nothing: a survivor closes whatever calls the
    /// shared store shows open, and the rest ships at the next start.
    pub async fn leave_cluster(&self) {
        let Some(cluster) = &self.cluster else { return };
        match crate::cluster::nodes::release_leases(cluster).await {
            Ok(n) if n > 0 => tracing::info!(deliveries = n, "handed claimed deliveries back to the cluster"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not hand claimed deliveries back; the others take them when their lease ends")
            }
        }
        let pending = {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            db.due(crate::cluster::SHIP_SINK, i64::MAX, 1).map(|d| d.len()).unwrap_or(1)
        };
        if pending > 0 {
            tracing::warn!("stopping with events not shipped to the shared store yet; they ship at the next start");
            return;
        }
        match crate::cluster::nodes::leave(cluster).await {
            Ok(()) => tracing::info!(node = %cluster.node, "left the cluster"),
            Err(e) => tracing::warn!(error = %e, "could not tell the shared store this node left"),
        }
    }
}

fn set_of(running: &[Running], cluster: bool) -> SinkSet {
    let (shared, local): (Vec<&Running>, Vec<&Running>) =
        running.iter().partition(|r| cluster && r.sink.target.shared());
    SinkSet {
        specs: local.iter().map(|r| r.sink.spec.clone()).collect(),
        shared: shared.iter().map(|r| r.sink.spec.clone()).collect(),
        wake: local.iter().map(|r| r.wake.clone()).collect(),
        shared_wake: shared.iter().map(|r| r.wake.clone()).collect(),
        labels: running.iter().map(|r| (r.sink.spec.name.clone(), r.sink.label())).collect(),
    }
}

/// The `lead.completed` that closes a call cut off mid-way (its node
/// restarted, or died and a survivor closes it), from its `call.missed`:
/// outcome `interrupted`, ended by `error`. Its id is keyed to the lead, so
/// the node's restart and a survivor closing the same call send one event.
pub fn interrupted(missed: Event) -> Event {
    let mut lead = missed.lead;
    lead.outcome = Outcome::Interrupted;
    lead.ended_by = Some(EndedBy::Error);
    Event::keyed(EventType::LeadCompleted, "interrupted", rfc3339(SystemTime::now()), &lead)
}

/// When `shutdown` flips (or its sender is gone), stop every worker and
/// wait for them all.
async fn stop_all_on(workers: Arc<Mutex<Workers>>, mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
    let tasks: Vec<_> = {
        let mut w = workers.lock().unwrap_or_else(|p| p.into_inner());
        w.stopping = true;
        w.running
            .iter_mut()
            .filter_map(|r| {
                let _ = r.stop.send(true);
                r.task.take()
            })
            .collect()
    };
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::intake::lead::Lead;

    pub(super) fn lead(call_id: &str) -> Lead {
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

#[cfg(test)]
mod reload_tests {
    use super::tests::lead;
    use super::*;

    fn file_sink(name: &str, path: PathBuf, settings: &str) -> ConfiguredSink {
        ConfiguredSink {
            sink: Sink {
                spec: SinkSpec { name: name.into(), events: vec![EventType::LeadCompleted], lines: Default::default() },
                target: Target::LeadsFile(path),
                max_interval: Duration::from_secs(1),
                max_age: Duration::from_secs(3600),
            },
            settings: settings.into(),
        }
    }

    fn call_ids(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["call_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait (bounded) until `path` holds `want`, then check nothing else came.
    async fn expect(path: &std::path::Path, want: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while call_ids(path).len() < want.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything extra would arrive within a worker's wake-up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(call_ids(path), want, "{}", path.display());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_adds_keeps_changes_and_removes_sinks_for_every_publisher() {
        let dir = std::env::temp_dir().join(format!("backstop-sink-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, b2) = (dir.join("a.jsonl"), dir.join("b.jsonl"), dir.join("b2.jsonl"));
        let delivery =
            Delivery::new(Outbox::open(&dir.join("outbox.db")).unwrap(), vec![], 1000, Duration::from_secs(3600));
        // Before spawn: only the list changes.
        let first = delivery.replace_sinks(vec![file_sink("a", a.clone(), "a1")]).await;
        assert_eq!(first.added, ["a"]);
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = delivery.spawn(stop_rx);
        // Taken before any reload: publishers follow the live set.
        let publisher = delivery.publisher();
        let publish = |id: &str| publisher.publish(Event::new(EventType::LeadCompleted, "t".into(), &lead(id)));
        publish("c1").await.unwrap();
        expect(&a, &["c1"]).await;

        let changes =
            delivery.replace_sinks(vec![file_sink("a", a.clone(), "a1"), file_sink("b", b.clone(), "b1")]).await;
        assert_eq!(changes, SinkChanges { kept: vec!["a".into()], added: vec!["b".into()], ..Default::default() });
        publish("c2").await.unwrap();
        expect(&a, &["c1", "c2"]).await;
        // A new sink takes the events committed from then on only.
        expect(&b, &["c2"]).await;

        // b's settings change (a new file): its new worker delivers; a is removed and gets nothing more.
        let changes = delivery.replace_sinks(vec![file_sink("b", b2.clone(), "b2")]).await;
        assert_eq!(changes, SinkChanges { changed: vec!["b".into()], removed: vec!["a".into()], ..Default::default() });
        publish("c3").await.unwrap();
        expect(&b2, &["c3"]).await;
        expect(&b, &["c2"]).await;
        expect(&a, &["c1", "c2"]).await;
        assert_eq!(delivery.sinks().iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>(), ["b"]);

        // Every worker, the reloaded ones too, stops with the shutdown.
        let _ = stop_tx.send(true);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(3), t).await.expect("delivery tasks stop").unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A webhook sink to `port`, waiting up to `timeout` for an answer.
    fn webhook_sink(name: &str, port: u16, timeout: Duration) -> ConfiguredSink {
        let url = format!("http://127.0.0.1:{port}/hook");
        let hook = Webhook::new(url, None, vec![], None, Duration::from_secs(1), timeout).unwrap();
        ConfiguredSink {
            sink: Sink {
                spec: SinkSpec { name: name.into(), events: vec![EventType::LeadCompleted], lines: Default::default() },
                target: Target::Webhook(hook),
                max_interval: Duration::from_secs(1),
                max_age: Duration::from_secs(3600),
            },
            settings: name.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_waits_for_stuck_workers_together_not_one_after_another() {
        let dir = std::env::temp_dir().join(format!("backstop-sink-stuck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Two endpoints that take the request and never answer.
        let listeners = [
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ];
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        let (took_tx, mut took) = tokio::sync::mpsc::unbounded_channel();
        for l in listeners {
            let took_tx = took_tx.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((conn, _)) = l.accept().await {
                    held.push(conn);
                    let _ = took_tx.send(());
                }
            });
        }
        let delivery =
            Delivery::new(Outbox::open(&dir.join("outbox.db")).unwrap(), vec![], 1000, Duration::from_secs(3600));
        let slow = Duration::from_secs(30);
        delivery.replace_sinks(vec![webhook_sink("w1", ports[0], slow), webhook_sink("w2", ports[1], slow)]).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = delivery.spawn(stop_rx);
        delivery.publisher().publish(Event::new(EventType::LeadCompleted, "t".into(), &lead("c1"))).await.unwrap();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), took.recv()).await.expect("both webhooks called").unwrap();
        }
        // Both workers are stuck in a delivery: removing both waits once
        // (WORKER_STOP_WAIT), not once per sink.
        let started = tokio::time::Instant::now();
        let changes = delivery.replace_sinks(vec![]).await;
        let took = started.elapsed();
        assert_eq!(changes.removed, ["w1", "w2"]);
        assert!(
            took >= WORKER_STOP_WAIT - Duration::from_millis(100),
            "the stuck workers were not waited for: {took:?}"
        );
        assert!(took < WORKER_STOP_WAIT + WORKER_STOP_WAIT / 2, "waited one after the other: {took:?}");
        let _ = stop_tx.send(true);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(3), t).await.expect("delivery tasks stop").unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
