//! What is read from the outbox rather than counted as it happens: the
//! outbox's pending and dead deliveries per sink, the lead store's overdue
//! leads, the transcription queue's depth (0 with `[transcribe]` off), the
//! time to callback of each lead handled, and whether the outbox takes
//! writes (for `/readyz`); and the pacer's late packets (atomics the pacer
//! thread bumps, read at each scrape, so the media path takes no lock).
//!
//! The outbox is read by one refresher thread every [`EVERY`], never by a
//! request: `/metrics` and `/readyz` only read what it stored, so neither
//! can queue work on the database, however often they are asked. The
//! refresher waits at most [`LOCK_WAIT`] for the outbox's mutex and
//! SQLite's write lock. A failed or late reading is not shown as zeros: the
//! outbox's series are left out of the scrape (and
//! `backstop_scrape_errors_total` counts the failure), and readiness says
//! the outbox is not writable once the last good check is older than [`STALE`].
//!
//! The outbox's filesystem is checked too: below [`DISK_FLOOR`] free the
//! agent is not ready (`disk: N MiB free under <dir>`), since the rolled-back
//! write of the check never reaches the disk and cannot see a full one; the
//! free bytes are exported as `backstop_outbox_disk_free_bytes`.
//!
//! The time to callback is observed from the outbox's committed
//! `lead.handled` events, in commit order (their `seq`): from the last one
//! there at start, each refresh reads those after the last it saw. So every
//! way of handling a lead counts (the inbox, the API, a transfer, and
//! `backstop leads done` from another process), and each handling is
//! observed once, a lead reopened and handled again once more.

use super::Health;
use crate::pacer::PacerStats;
use crate::sink::delivery::{Publisher, now_ms};
use crate::sink::outbox::Outbox;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the refresher reads the outbox.
pub(super) const EVERY: Duration = Duration::from_secs(2);
/// The longest it waits for the outbox's mutex, and for SQLite's write lock.
const LOCK_WAIT: Duration = Duration::from_millis(500);
/// A reading older than this is not shown, and the outbox is not called writable.
pub(super) const STALE: Duration = Duration::from_secs(10);
/// Below this much free space (for the outbox's user) on the outbox's
/// filesystem the agent is not ready: room for some thousands of events
/// and the WAL's checkpoint, whatever the disk's size (a percentage would
/// be gigabytes on a large disk and nothing on a small one).
pub(super) const DISK_FLOOR: u64 = 64 * 1024 * 1024;

/// Where the figures come from, and the last reading of the outbox.
#[derive(Debug)]
pub(super) struct Sources {
    outbox: OnceLock<PublisherRef>,
    pacer: OnceLock<Arc<PacerStats>>,
    /// The last `lead.handled` event observed (its `seq`).
    handled_seq: AtomicI64,
    time_to_callback: Histogram,
    /// [`DISK_FLOOR`], or a test's.
    disk_floor: AtomicU64,
    /// Refreshes that could not read the outbox.
    errors: Counter,
    last: Mutex<Option<Reading>>,
}

/// The publisher, which is not `Debug`.
struct PublisherRef(Publisher);

impl std::fmt::Debug for PublisherRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

/// One refresh: when, whether the outbox takes writes, and its figures.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    /// Why the outbox cannot take events, if it cannot (with details).
    problem: Option<String>,
    /// `None` when the outbox could not be read.
    figures: Option<Figures>,
    /// Free bytes on the outbox's filesystem; `None` when unknown.
    disk_free: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Figures {
    /// Each sink's label (not its name), pending and dead.
    sinks: Vec<(String, u64, u64)>,
    overdue: Vec<(String, u64)>,
    queued: u64,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            outbox: OnceLock::new(),
            pacer: OnceLock::new(),
            handled_seq: AtomicI64::new(i64::MAX),
            time_to_callback: super::callback_buckets(),
            disk_floor: AtomicU64::new(DISK_FLOOR),
            errors: Counter::default(),
            last: Mutex::new(None),
        }
    }
}

impl Sources {
    /// Read `publisher`'s outbox now (blocking), then every [`EVERY`] on a
    /// thread of its own, which ends when the metrics are dropped.
    pub(super) fn set_outbox(self: &Arc<Self>, publisher: Publisher) {
        if self.set_outbox_once(publisher) {
            self.start_refresher();
        }
    }

    /// Read `publisher`'s outbox now, with no refresher: further readings
    /// only when [`Sources::refresh`] is called (the tests' deterministic
    /// readings). False if an outbox was already set.
    pub(super) fn set_outbox_once(&self, publisher: Publisher) -> bool {
        if self.outbox.set(PublisherRef(publisher)).is_err() {
            return false;
        }
        self.refresh();
        true
    }

    /// The thread that refreshes every [`EVERY`] until the metrics are dropped.
    fn start_refresher(self: &Arc<Self>) {
        let weak: Weak<Sources> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("metrics-refresh".into()).spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                match weak.upgrade() {
                    Some(sources) => sources.refresh(),
                    None => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "metrics: could not start the outbox refresher; /readyz will say so");
        }
    }

    pub(super) fn set_pacer(&self, stats: Arc<PacerStats>) {
        let _ = self.pacer.set(stats);
    }

    /// Read the outbox once and store what was read. Blocking, bounded by [`LOCK_WAIT`] (twice).
    pub(super) fn refresh(&self) {
        let Some(PublisherRef(publisher)) = self.outbox.get() else { return };
        let reading = match lock_within(&publisher.outbox(), LOCK_WAIT) {
            None => Reading {
                at: Instant::now(),
                problem: Some(format!("outbox: busy for over {} ms", LOCK_WAIT.as_millis())),
                figures: None,
                disk_free: None,
            },
            Some(mut db) => {
                let held = publisher.held_events();
                let dir = db.conn().path().map(Path::new).and_then(Path::parent).map(Path::to_path_buf);
                let disk_free = dir.as_deref().and_then(|d| match free_bytes(d) {
                    Ok(free) => Some(free),
                    Err(e) => {
                        tracing::warn!(dir = %d.display(), error = %e, "metrics: could not read the free space");
                        None
                    }
                });
                let floor = self.disk_floor.load(Ordering::Relaxed);
                let problem = if held > 0 {
                    Some(format!("outbox: {held} event(s) held in memory, the outbox cannot take them"))
                } else if let (Some(free), Some(dir)) = (disk_free.filter(|&f| f < floor), &dir) {
                    Some(format!("disk: {} MiB free under {}", free / (1024 * 1024), dir.display()))
                } else {
                    writable(&mut db).err().map(|e| format!("outbox: not writable: {e}"))
                };
                let figures = match self.read(&mut db) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: could not read the outbox");
                        None
                    }
                };
                Reading { at: Instant::now(), problem, figures, disk_free }
            }
        };
        if reading.figures.is_none() {
            self.errors.inc();
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(reading);
    }

    fn read(&self, db: &mut Outbox) -> rusqlite::Result<Figures> {
        let now = now_ms();
        let label = |name: &str| match self.outbox.get() {
            Some(PublisherRef(p)) => p.sink_label(name),
            None => super::sink_label(name),
        };
        let mut sinks: Vec<(String, u64, u64)> =
            db.pending_dead_by_sink()?.into_iter().map(|(name, p, d)| (label(&name), p, d)).collect();
        // On a cluster the shared sinks' deliveries are in PostgreSQL: the
        // cluster's figures, the same on every node.
        if let Some(PublisherRef(p)) = self.outbox.get() {
            for (name, pending, dead) in p.shared_figures().unwrap_or_default() {
                sinks.push((label(&name), pending, dead));
            }
        }
        let conn = db.conn();
        let overdue = crate::store::overdue_by_line(conn, now)?;
        let after = self.handled_seq.load(Ordering::Relaxed);
        if after == i64::MAX {
            // The first reading: handlings from before this start were the last process's.
            self.handled_seq.store(crate::store::last_event_seq(conn)?, Ordering::Relaxed);
        } else {
            let (took, last) = crate::store::handled_after_seq(conn, after)?;
            for secs in took {
                self.time_to_callback.observe(secs as f64);
            }
            self.handled_seq.store(last, Ordering::Relaxed);
        }
        // The queue's table is there with or without `[transcribe]`: 0 when it is off.
        let queued = crate::transcribe::queue::queued(conn)?;
        Ok(Figures { sinks, overdue, queued })
    }

    /// Why the outbox cannot take events now, if it cannot, from the last reading.
    pub(super) fn outbox_problem(&self) -> Option<String> {
        if self.outbox.get().is_none() {
            return Some("outbox: not open yet".into());
        }
        match &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Some("outbox: not checked yet".into()),
            Some(r) if r.at.elapsed() > STALE => {
                Some(format!("outbox: not checked for {} s", r.at.elapsed().as_secs()))
            }
            Some(r) => r.problem.clone(),
        }
    }

    /// Let a test say how much free space is too little.
    #[cfg(test)]
    pub(super) fn set_disk_floor(&self, bytes: u64) {
        self.disk_floor.store(bytes, Ordering::Relaxed);
    }

    /// The last reading's free bytes on the outbox's filesystem, unless stale or unknown.
    fn disk_free(&self) -> Option<u64> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|r| r.at.elapsed() <= STALE).and_then(|r| r.disk_free)
    }

    /// The last figures, unless they are missing or stale.
    fn figures(&self) -> Option<Figures> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|r| r.at.elapsed() <= STALE).and_then(|r| r.figures.clone())
    }
}

/// The outbox's mutex, if it comes free within `wait`.
fn lock_within(db: &Mutex<Outbox>, wait: Duration) -> Option<MutexGuard<'_, Outbox>> {
    let until = Instant::now() + wait;
    loop {
        match db.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// The bytes free for an unprivileged user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `st` is writable memory for one statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are u32 on some targets, u64 here.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// A write that is rolled back: takes SQLite's write lock (waiting at most
/// [`LOCK_WAIT`]) and dirties a page, writes nothing.
fn writable(db: &mut Outbox) -> rusqlite::Result<()> {
    let conn = db.conn();
    conn.busy_timeout(LOCK_WAIT)?;
    let check = conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        conn.execute_batch(&format!("PRAGMA user_version = {v}; ROLLBACK"))
    });
    if check.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    // The outbox's own writers wait as long as they always have.
    conn.busy_timeout(crate::sink::outbox::BUSY_TIMEOUT)?;
    check
}

/// One gauge family from labelled values.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (label, n) in values {
        ConstGauge::new(n as i64).encode(family.encode_family(&label)?)?;
    }
    Ok(())
}

/// The metrics read at scrape time: from memory only.
#[derive(Debug)]
pub(super) struct ScrapeCollector {
    pub sources: Arc<Sources>,
    pub health: Arc<Health>,
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ready = ConstGauge::new(self.health.problems().is_empty() as i64);
        ready.encode(encoder.encode_descriptor(
            "backstop_up_ready",
            "1 while SIP is bound, accounts are registered and the agent is not draining (the outbox is /readyz's)",
            None,
            ready.metric_type(),
        )?)?;
        if let Some(p) = self.sources.pacer.get() {
            let late = ConstCounter::new(p.late.load(Ordering::Relaxed));
            late.encode(encoder.encode_descriptor(
                "backstop_rtp_late_packets",
                "RTP packets handed to the pacer after their send instant (each a gap on the wire)",
                None,
                late.metric_type(),
            )?)?;
            let failed = ConstCounter::new(p.failed.load(Ordering::Relaxed));
            failed.encode(encoder.encode_descriptor(
                "backstop_rtp_send_failures",
                "RTP packets the socket refused",
                None,
                failed.metric_type(),
            )?)?;
        }
        if self.sources.outbox.get().is_none() {
            return Ok(());
        }
        self.sources.errors.encode(encoder.encode_descriptor(
            "backstop_scrape_errors",
            "Readings of the outbox (every 2 s) that failed or timed out; meanwhile its series are left out",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)?;
        self.sources.time_to_callback.encode(encoder.encode_descriptor(
            "backstop_time_to_callback_seconds",
            "A lead received to handled (called back), observed once per lead.handled event committed",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?)?;
        // Missing or stale: left out, not shown as zeros.
        if let Some(free) = self.sources.disk_free() {
            let g = ConstGauge::new(free as i64);
            g.encode(encoder.encode_descriptor(
                "backstop_outbox_disk_free_bytes",
                "Bytes free on the outbox's filesystem (below 64 MiB /readyz says not ready)",
                None,
                g.metric_type(),
            )?)?;
        }
        let Some(reading) = self.sources.figures() else { return Ok(()) };
        let by_sink = |pick: fn(&(String, u64, u64)) -> u64| {
            reading.sinks.iter().map(move |s| (super::SinkLabel::new(&s.0), pick(s)))
        };
        gauges(&mut encoder, "backstop_outbox_pending", "Deliveries waiting in the outbox, by sink", by_sink(|s| s.1))?;
        gauges(
            &mut encoder,
            "backstop_outbox_dead",
            "Deliveries given up on (backstop outbox retry --dead), by sink",
            by_sink(|s| s.2),
        )?;
        let overdue = reading.overdue.iter().map(|(line, n)| (super::LineLabel { line: line.clone() }, *n));
        gauges(&mut encoder, "backstop_leads_overdue", "Open leads past their callback time, by line", overdue)?;
        let g = ConstGauge::new(reading.queued as i64);
        g.encode(encoder.encode_descriptor(
            "backstop_transcription_queue_depth",
            "Voice answers waiting for or being transcribed (0 with [transcribe] off)",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}
