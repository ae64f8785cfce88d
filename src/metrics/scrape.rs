//! What is read when Prometheus scrapes, not counted as it happens: the
//! outbox's pending and dead deliveries per sink, the lead store's overdue
//! leads and the time to callback of leads handled since the last scrape,
//! the transcription queue's depth (0 with `[transcribe]` off), and the pacer's late packets (atomics
//! the pacer thread bumps; read here, so the media path takes no lock).
//!
//! The time to callback is read from the store rather than hooked where a
//! lead is marked handled, so that every way of handling one counts: the
//! inbox, the API, a transfer, and `backstop leads done` from another
//! process. Each scrape reads the handlings in a window that ends
//! [`SETTLE_MS`] ago (a handling's time is taken just before it commits)
//! and begins where the last one ended, so each is observed once.
//!
//! The scrape runs on a blocking thread (`serve`), so the outbox's mutex
//! and SQLite are fine here.

use super::Health;
use crate::pacer::PacerStats;
use crate::sink::delivery::{Publisher, now_ms};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

/// How far behind now the time-to-callback window ends.
const SETTLE_MS: i64 = 2_000;

/// Where the scrape reads from, attached once the runtime has them.
#[derive(Debug)]
pub(super) struct Sources {
    outbox: OnceLock<PublisherRef>,
    pacer: OnceLock<Arc<PacerStats>>,
    /// The time to callback window's start (Unix ms): handlings before it were observed.
    handled_after: AtomicI64,
    time_to_callback: Histogram,
}

/// The publisher, which is not `Debug`.
struct PublisherRef(Publisher);

impl std::fmt::Debug for PublisherRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            outbox: OnceLock::new(),
            pacer: OnceLock::new(),
            // Handlings from before this start were counted by the process that saw them.
            handled_after: AtomicI64::new(now_ms() - SETTLE_MS),
            time_to_callback: super::callback_buckets(),
        }
    }
}

impl Sources {
    pub(super) fn set_outbox(&self, publisher: Publisher) {
        let _ = self.outbox.set(PublisherRef(publisher));
    }

    pub(super) fn set_pacer(&self, stats: Arc<PacerStats>) {
        let _ = self.pacer.set(stats);
    }

    /// Why the outbox cannot take events now, if it cannot: events held in
    /// memory (a full disk), or a write that fails. Blocking.
    pub(super) fn outbox_problem(&self) -> Option<String> {
        let Some(PublisherRef(publisher)) = self.outbox.get() else {
            return Some("outbox: not open yet".into());
        };
        let held = publisher.held_events();
        if held > 0 {
            return Some(format!("outbox: {held} event(s) held in memory, the outbox cannot take them"));
        }
        let db = publisher.outbox();
        let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
        // A write that is rolled back: takes the write lock and dirties a page, writes nothing.
        let conn = db.conn();
        let check = conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            conn.execute_batch(&format!("PRAGMA user_version = {v}; ROLLBACK"))
        });
        match check {
            Ok(()) => None,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(format!("outbox: not writable: {e}"))
            }
        }
    }
}

/// The metrics read at scrape time.
#[derive(Debug)]
pub(super) struct ScrapeCollector {
    pub sources: Arc<Sources>,
    pub health: Arc<Health>,
}

#[derive(Default)]
struct OutboxReading {
    sinks: Vec<(String, u64, u64)>,
    overdue: Vec<(String, u64)>,
    queued: u64,
}

impl ScrapeCollector {
    fn read_outbox(&self, publisher: &Publisher) -> rusqlite::Result<OutboxReading> {
        let now = now_ms();
        let db = publisher.outbox();
        let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
        let sinks = db.status(now)?.into_iter().map(|s| (s.sink, s.pending, s.dead)).collect();
        let conn = db.conn();
        let overdue = crate::store::overdue_by_line(conn, now)?;
        let after = self.sources.handled_after.load(Ordering::Relaxed);
        let until = (now - SETTLE_MS).max(after);
        for ms in crate::store::handled_between(conn, after, until)? {
            self.sources.time_to_callback.observe(ms.max(0) as f64 / 1000.0);
        }
        self.sources.handled_after.store(until, Ordering::Relaxed);
        // The queue's table is there with or without `[transcribe]`: 0 when it is off.
        let queued = crate::transcribe::queue::queued(conn)?;
        Ok(OutboxReading { sinks, overdue, queued })
    }
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
        let Some(PublisherRef(publisher)) = self.sources.outbox.get() else { return Ok(()) };
        let reading = match self.read_outbox(publisher) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not read the outbox");
                OutboxReading::default()
            }
        };
        let mut pending = encoder.encode_descriptor(
            "backstop_outbox_pending",
            "Deliveries waiting in the outbox, by sink",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (sink, n, _) in &reading.sinks {
            ConstGauge::new(*n as i64).encode(pending.encode_family(&super::SinkLabel { sink: sink.clone() })?)?;
        }
        let mut dead = encoder.encode_descriptor(
            "backstop_outbox_dead",
            "Deliveries given up on (backstop outbox retry --dead), by sink",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (sink, _, n) in &reading.sinks {
            ConstGauge::new(*n as i64).encode(dead.encode_family(&super::SinkLabel { sink: sink.clone() })?)?;
        }
        let mut overdue = encoder.encode_descriptor(
            "backstop_leads_overdue",
            "Open leads past their callback time, by line",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (line, n) in &reading.overdue {
            ConstGauge::new(*n as i64).encode(overdue.encode_family(&super::LineLabel { line: line.clone() })?)?;
        }
        self.sources.time_to_callback.encode(encoder.encode_descriptor(
            "backstop_time_to_callback_seconds",
            "A lead received to handled (called back), observed as leads are handled",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?)?;
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
