//! Prometheus metrics and health: one registry of typed counters, gauges
//! and histograms (`prometheus-client`), labelled only by what has few
//! values (line, outcome, transport, sink, account, source, step, code),
//! never by a caller or a Call-ID; and the readiness `/readyz` reports.
//!
//! The runtime holds one [`Metrics`] and counts at its edges; the cores
//! stay free of it (a call reports [`Tally`](backstop_core::call::Tally)
//! events, and its RTP totals once, at its end). What lives elsewhere is
//! read when scraped (`scrape`): the outbox's pending and dead deliveries,
//! the overdue leads and the time to callback from the lead store, the
//! transcription queue, the pacer's late packets, and the process itself
//! (`process`). `/metrics`, `/healthz` and `/readyz` are served on the HTTP
//! face and on `[metrics] listen` ([`serve`]).
//!
//! Every name is in `deploy/grafana/backstop.json`'s vocabulary, and
//! `tests/metrics.rs` checks the dashboard against a real scrape.

mod health;
mod labels;
mod process;
mod scrape;
mod serve;

pub use health::{Health, Readiness};
pub use labels::sink_label;
pub use serve::{healthz, metrics_text, readiness, readyz, readyz_brief, routes, serve};

use crate::pacer::PacerStats;
use crate::sink::delivery::Publisher;
use backstop_core::intake::answer::AnswerStatus;
use backstop_core::intake::lead::{Lead, Outcome};
use backstop_core::media::dtmf::DtmfSource;
use backstop_core::media::rtp::MediaStats;
use backstop_core::route::line::Lines;
use backstop_core::sip::Transport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabel {
    pub line: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub line: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub line: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

impl SinkLabel {
    /// A sink's label, as [`crate::sink::delivery::Sink::label`] gives it (never a webhook's URL).
    pub fn new(label: &str) -> SinkLabel {
        SinkLabel { sink: label.to_string() }
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// INVITE→200: the agent answers in milliseconds unless `answer_after` says otherwise.
fn answer_buckets() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

fn duration_buckets() -> Histogram {
    Histogram::new([1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0])
}

fn delivery_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0])
}

fn transcription_buckets() -> Histogram {
    Histogram::new([0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

/// Time to callback: minutes to days.
fn callback_buckets() -> Histogram {
    Histogram::new([60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0])
}

/// Every metric the agent exports, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    pub health: Arc<Health>,
    /// Read at scrape time: the outbox, the store, the pacer, the queue.
    sources: Arc<scrape::Sources>,
    calls: Family<TransportLabel, Counter>,
    answered: Counter,
    ended: Family<OutcomeLabels, Counter>,
    refused: Family<CodeLabel, Counter>,
    junk: Family<LineLabel, Counter>,
    in_progress: Gauge,
    answer_latency: Histogram,
    duration: Histograms<LineLabel>,
    step_reached: Family<StepLabels, Counter>,
    step_answered: Family<StepLabels, Counter>,
    step_no_input: Family<StepLabels, Counter>,
    dtmf: Family<SourceLabel, Counter>,
    registered: Family<AccountLabel, Gauge>,
    registration_failures: Family<AccountLabel, Counter>,
    rtp_in: Counter,
    rtp_out: Counter,
    underruns: Counter,
    delivery_latency: Histograms<SinkLabel>,
    delivery_failures: Family<SinkLabel, Counter>,
    recordings: Counter,
    recording_bytes: Counter,
    transcription_latency: Histogram,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::default();
        let health = Arc::new(Health::default());
        let sources = Arc::new(scrape::Sources::default());
        let m = Metrics {
            calls: Family::default(),
            answered: Counter::default(),
            ended: Family::default(),
            refused: Family::default(),
            junk: Family::default(),
            in_progress: Gauge::default(),
            answer_latency: answer_buckets(),
            duration: Family::new_with_constructor(duration_buckets),
            step_reached: Family::default(),
            step_answered: Family::default(),
            step_no_input: Family::default(),
            dtmf: Family::default(),
            registered: Family::default(),
            registration_failures: Family::default(),
            rtp_in: Counter::default(),
            rtp_out: Counter::default(),
            underruns: Counter::default(),
            delivery_latency: Family::new_with_constructor(delivery_buckets),
            delivery_failures: Family::default(),
            recordings: Counter::default(),
            recording_bytes: Counter::default(),
            transcription_latency: transcription_buckets(),
            health: health.clone(),
            sources: sources.clone(),
            registry: Registry::default(),
        };
        r.register("backstop_calls", "Calls received (INVITEs that started a call), by transport", m.calls.clone());
        r.register("backstop_calls_answered", "Calls answered (200 OK sent)", m.answered.clone());
        r.register("backstop_calls_ended", "Calls ended, by line and lead outcome", m.ended.clone());
        r.register(
            "backstop_invites_refused",
            "INVITEs refused with a stateless answer, by SIP code (403 untrusted, 503 draining or full); \
             each request counts, a retransmission too. 488 and 603 are in calls_ended (rejected, declined)",
            m.refused.clone(),
        );
        r.register("backstop_calls_junk", "Calls whose lead is junk, by line", m.junk.clone());
        r.register("backstop_calls_in_progress", "Calls in progress", m.in_progress.clone());
        r.register("backstop_answer_latency_seconds", "INVITE received to 200 OK sent", m.answer_latency.clone());
        r.register("backstop_call_duration_seconds", "Call duration, INVITE to end, by line", m.duration.clone());
        r.register(
            "backstop_intake_step_reached",
            "Intake steps reached, by line and step: those answered, and the one the call ended in",
            m.step_reached.clone(),
        );
        r.register("backstop_intake_step_answered", "Intake steps answered, by line and step", m.step_answered.clone());
        r.register(
            "backstop_intake_step_no_input",
            "Intake steps with no answer after the retries, by line and step",
            m.step_no_input.clone(),
        );
        r.register("backstop_dtmf_digits", "Key presses, by the way they came", m.dtmf.clone());
        r.register("backstop_registration_up", "1 while the [[register]] account is registered", m.registered.clone());
        r.register(
            "backstop_registration_failures",
            "Failed registrations, by account",
            m.registration_failures.clone(),
        );
        r.register(
            "backstop_rtp_packets_received",
            "RTP packets received (counted at each call's end)",
            m.rtp_in.clone(),
        );
        r.register("backstop_rtp_packets_sent", "RTP packets sent (counted at each call's end)", m.rtp_out.clone());
        r.register(
            "backstop_rtp_underruns",
            "RTP frames sent a frame or more late, or skipped (counted at each call's end)",
            m.underruns.clone(),
        );
        r.register(
            "backstop_delivery_latency_seconds",
            "Event committed to delivered, by sink",
            m.delivery_latency.clone(),
        );
        r.register("backstop_delivery_failures", "Failed delivery attempts, by sink", m.delivery_failures.clone());
        r.register("backstop_recordings", "Recordings written", m.recordings.clone());
        r.register("backstop_recording_bytes", "Bytes of recordings written", m.recording_bytes.clone());
        r.register(
            "backstop_transcription_latency_seconds",
            "Voice answer queued to its transcript (when [transcribe] is on)",
            m.transcription_latency.clone(),
        );
        // Series whose labels are known now exist from the start, so a rate over them
        // counts the first event after a restart (the lines', accounts' and sinks' as they are set).
        for code in [403, 503] {
            let _ = m.refused.get_or_create(&CodeLabel { code });
        }
        for t in labels::TRANSPORTS {
            let _ = m.calls.get_or_create(&TransportLabel { transport: labels::transport(t) });
        }
        for s in labels::DTMF_SOURCES {
            let _ = m.dtmf.get_or_create(&SourceLabel { source: labels::dtmf_source(s) });
        }
        r.register_collector(Box::new(scrape::ScrapeCollector { sources, health }));
        r.register_collector(Box::new(process::ProcessCollector));
        Arc::new(Metrics { registry: r, ..m })
    }

    /// The exposition in OpenMetrics text (what Prometheus asks for).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a collector's error leaves what was written.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the Prometheus text format 0.0.4 (`curl`, `promtool check metrics`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Read the outbox (pending, dead, writable), and the lead store in it, at each scrape.
    pub fn attach_outbox(&self, publisher: Publisher) {
        self.sources.set_outbox(publisher);
    }

    /// As [`Metrics::attach_outbox`], without the refresher thread: the
    /// outbox is read now and then only at each `sources.refresh()`, so a
    /// test's readings are its own.
    #[cfg(test)]
    pub(crate) fn attach_outbox_unrefreshed(&self, publisher: Publisher) {
        self.sources.set_outbox_once(publisher);
    }

    /// Read the pacer's late packets at each scrape.
    pub fn attach_pacer(&self, stats: Arc<PacerStats>) {
        self.sources.set_pacer(stats);
    }

    // --- calls -------------------------------------------------------------

    /// A call task started; the returned guard counts it in progress until dropped.
    pub fn call_started(self: &Arc<Self>, transport: Transport) -> InProgress {
        self.calls.get_or_create(&TransportLabel { transport: labels::transport(transport) }).inc();
        self.in_progress.inc();
        InProgress(self.clone())
    }

    /// Calls in progress now.
    pub fn calls_in_progress(&self) -> u64 {
        self.in_progress.get().max(0) as u64
    }

    /// The 200 OK went out `latency` after the INVITE arrived.
    pub fn call_answered(&self, latency: Duration) {
        self.answered.inc();
        self.answer_latency.observe(latency.as_secs_f64());
    }

    /// An INVITE refused without a dialog (403, 503).
    pub fn invite_refused(&self, code: u16) {
        self.refused.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn digit(&self, source: DtmfSource) {
        self.dtmf.get_or_create(&SourceLabel { source: labels::dtmf_source(source) }).inc();
    }

    /// The lines calls run now: each one's junk, duration, end and step
    /// series exist from here on (at 0), so the first event of each counts.
    pub fn lines_configured(&self, lines: &Lines) {
        // Every end but `ringing` (a lead still in progress) and `interrupted` (closed by a later start).
        let fixed = [
            Outcome::NotAnswered,
            Outcome::HungUpWhileRinging,
            Outcome::Rejected,
            Outcome::NoAck,
            Outcome::Completed,
            Outcome::Transferred,
            Outcome::Declined,
            Outcome::Silent,
        ];
        for line in lines.all() {
            let name = line.name.clone();
            let _ = self.junk.get_or_create(&LineLabel { line: name.clone() });
            let _ = self.duration.get_or_create(&LineLabel { line: name.clone() });
            let steps = line.program.steps.iter().map(|s| Outcome::HungUpDuring(s.name.clone()));
            for outcome in fixed.iter().cloned().chain(steps) {
                let _ = self.ended.get_or_create(&OutcomeLabels { line: name.clone(), outcome: outcome.to_string() });
            }
            for step in &line.program.steps {
                let labels = StepLabels { line: name.clone(), step: step.name.clone() };
                let _ = self.step_reached.get_or_create(&labels);
                let _ = self.step_answered.get_or_create(&labels);
                let _ = self.step_no_input.get_or_create(&labels);
            }
        }
    }

    /// The finished lead of a call, and its RTP totals: counted once, at the end.
    pub fn call_ended(&self, lead: &Lead, media: Option<&MediaStats>) {
        let line = lead.line.clone();
        self.ended.get_or_create(&OutcomeLabels { line: line.clone(), outcome: lead.outcome.to_string() }).inc();
        // Touched for every call, so that each line's series exists (at 0) from its first call.
        self.junk.get_or_create(&LineLabel { line: line.clone() }).inc_by(lead.junk.is_junk as u64);
        if let Some(ms) = lead.duration_ms {
            self.duration.get_or_create(&LineLabel { line: line.clone() }).observe(ms as f64 / 1000.0);
        }
        // Reached: each step answered, and the one the call ended in (a caller who
        // hangs up in silence while a question waits leaves no answer there).
        for step in lead.steps_reached() {
            let labels = StepLabels { line: line.clone(), step: step.to_string() };
            self.step_reached.get_or_create(&labels).inc();
            let status = lead.answers.get(step).map(|a| a.status);
            self.step_answered.get_or_create(&labels).inc_by((status == Some(AnswerStatus::Answered)) as u64);
            self.step_no_input.get_or_create(&labels).inc_by((status == Some(AnswerStatus::NoInput)) as u64);
        }
        if let Some(s) = media {
            self.rtp_in.inc_by(s.packets_received);
            self.rtp_out.inc_by(s.packets_sent);
            self.underruns.inc_by(s.underruns);
        }
    }

    // --- registration, delivery, recordings, transcription -------------------

    /// A `[[register]]` account is expected to register (readiness waits for it).
    pub fn account_configured(&self, account: &str) {
        let label = AccountLabel { account: account.to_string() };
        self.registered.get_or_create(&label).set(0);
        let _ = self.registration_failures.get_or_create(&label);
        self.health.account_configured(account);
    }

    pub fn registration(&self, account: &str, up: bool) {
        self.registered.get_or_create(&AccountLabel { account: account.to_string() }).set(up as i64);
        self.health.set_registered(account, up);
    }

    pub fn registration_failed(&self, account: &str) {
        self.registration_failures.get_or_create(&AccountLabel { account: account.to_string() }).inc();
        self.registration(account, false);
    }

    /// A sink's worker started: its failures and latency count from 0.
    /// `label`: the sink's [`crate::sink::delivery::Sink::label`], never its name.
    pub fn sink_started(&self, label: &str) {
        let _ = self.delivery_failures.get_or_create(&SinkLabel::new(label));
        let _ = self.delivery_latency.get_or_create(&SinkLabel::new(label));
    }

    pub fn delivered(&self, label: &str, latency: Duration) {
        self.delivery_latency.get_or_create(&SinkLabel::new(label)).observe(latency.as_secs_f64());
    }

    pub fn delivery_failed(&self, label: &str) {
        self.delivery_failures.get_or_create(&SinkLabel::new(label)).inc();
    }

    pub fn recording_written(&self, bytes: u64) {
        self.recordings.inc();
        self.recording_bytes.inc_by(bytes);
    }

    pub fn transcribed(&self, latency: Duration) {
        self.transcription_latency.observe(latency.as_secs_f64());
    }
}

/// A call in progress, counted until dropped (however the call task ends).
pub struct InProgress(Arc<Metrics>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.dec();
    }
}

#[cfg(test)]
mod tests;
