//! The registry's names and values, and readiness against a real outbox.

use super::*;
use crate::sink::delivery::Delivery;
use crate::sink::outbox::Outbox;
use crate::store::tests::Dir;
use backstop_core::intake::lead::Outcome;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn a_lead() -> Lead {
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
    serde_json::from_value(event["lead"].clone()).unwrap()
}

#[test]
fn a_call_is_counted_under_the_conventional_names() {
    let m = Metrics::new();
    {
        let _call = m.call_started(Transport::Udp);
        assert_eq!(sample(&m.encode(), "backstop_calls_in_progress"), Some(1.0));
        m.call_answered(Duration::from_millis(3));
        m.digit(DtmfSource::SipInfo);
        let mut lead = a_lead();
        lead.line = "default".into();
        lead.outcome = Outcome::Completed;
        lead.duration_ms = Some(42_000);
        let stats = MediaStats { packets_sent: 100, packets_received: 90, packets_ignored: 0, underruns: 2 };
        m.call_ended(&lead, Some(&stats));
    }
    m.invite_refused(503);
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_calls_in_progress"), Some(0.0), "the guard counted the call out");
    assert_eq!(sample(&text, "backstop_calls_total{transport=\"udp\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_calls_answered_total"), Some(1.0));
    assert_eq!(sample(&text, "backstop_calls_ended_total{line=\"default\",outcome=\"completed\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_invites_refused_total{code=\"503\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_answer_latency_seconds_count"), Some(1.0));
    assert_eq!(sample(&text, "backstop_answer_latency_seconds_bucket{le=\"0.0025\"}"), Some(0.0));
    assert_eq!(sample(&text, "backstop_answer_latency_seconds_bucket{le=\"0.005\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_call_duration_seconds_sum{line=\"default\"}"), Some(42.0));
    assert_eq!(sample(&text, "backstop_dtmf_digits_total{source=\"sip_info\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_rtp_packets_sent_total"), Some(100.0));
    assert_eq!(sample(&text, "backstop_rtp_packets_received_total"), Some(90.0));
    assert_eq!(sample(&text, "backstop_rtp_underruns_total"), Some(2.0));
    // The golden lead's answers: each step reached once.
    let reached: f64 = text
        .lines()
        .filter(|l| l.starts_with("backstop_intake_step_reached_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(reached, a_lead().answers.len() as f64);
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    // Nothing names a caller.
    assert!(!text.contains("+1555"), "{text}");
}

#[test]
fn a_caller_who_hangs_up_in_silence_reached_the_step() {
    let m = Metrics::new();
    let mut lead = a_lead();
    lead.line = "default".into();
    lead.answers.clear();
    lead.outcome = Outcome::HungUpDuring("name".into());
    m.call_ended(&lead, None);
    let text = m.encode();
    let labels = "{line=\"default\",step=\"name\"}";
    assert_eq!(sample(&text, &format!("backstop_intake_step_reached_total{labels}")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!("backstop_intake_step_answered_total{labels}")), Some(0.0));
    assert_eq!(sample(&text, &format!("backstop_intake_step_no_input_total{labels}")), Some(0.0));
}

#[test]
fn the_series_whose_labels_are_known_exist_from_the_start() {
    let mut cfg = crate::config::Config::default();
    cfg.prompts.dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let lines = crate::cli::load_lines(&cfg).unwrap();
    let m = Metrics::new();
    m.lines_configured(&lines);
    m.account_configured("100@pbx.example");
    m.sink_started(&sink_label("webhook:https://hooks.example/x"));
    let text = m.encode();
    for series in [
        "backstop_calls_total{transport=\"udp\"}",
        "backstop_calls_total{transport=\"tcp\"}",
        "backstop_dtmf_digits_total{source=\"rfc4733\"}",
        "backstop_dtmf_digits_total{source=\"sip_info\"}",
        "backstop_dtmf_digits_total{source=\"in_band\"}",
        "backstop_invites_refused_total{code=\"403\"}",
        "backstop_calls_junk_total{line=\"default\"}",
        "backstop_calls_ended_total{line=\"default\",outcome=\"completed\"}",
        "backstop_calls_ended_total{line=\"default\",outcome=\"hung_up_while_ringing\"}",
        "backstop_registration_up{account=\"100@pbx.example\"}",
        "backstop_registration_failures_total{account=\"100@pbx.example\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in {text}");
    }
    let steps = &lines.default_line().program.steps;
    assert!(!steps.is_empty());
    for step in steps {
        let name = &step.name;
        let ended = format!("backstop_calls_ended_total{{line=\"default\",outcome=\"hung_up_during_{name}\"}}");
        assert_eq!(sample(&text, &ended), Some(0.0), "{ended}");
        for counter in ["reached", "answered", "no_input"] {
            let series = format!("backstop_intake_step_{counter}_total{{line=\"default\",step=\"{name}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }
    let hook = sink_label("webhook:https://hooks.example/x");
    assert_eq!(sample(&text, &format!("backstop_delivery_failures_total{{sink=\"{hook}\"}}")), Some(0.0));
    assert_eq!(sample(&text, &format!("backstop_delivery_latency_seconds_count{{sink=\"{hook}\"}}")), Some(0.0));
}

#[test]
fn readiness_reads_the_last_outbox_check_and_a_failed_one_is_not_zeros() {
    let m = Metrics::new();
    m.health.set_sip_bound("127.0.0.1:5060".parse().unwrap());
    assert_eq!(readiness(&m).problems, ["outbox: not open yet"]);
    let dir = Dir::new("metrics-ready");
    let outbox = Outbox::open(&dir.db()).unwrap();
    let delivery = Delivery::new(outbox, Vec::new(), 1000, Duration::from_secs(60));
    let publisher = delivery.publisher();
    m.attach_outbox_unrefreshed(publisher.clone());
    assert!(readiness(&m).is_ready(), "{:?}", readiness(&m));
    assert!(m.encode().contains("backstop_transcription_queue_depth 0"));
    // SQLite's write lock held elsewhere: the next check finds it not writable, and says so.
    let other = rusqlite::Connection::open(dir.db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let took = std::time::Instant::now();
    m.sources.refresh();
    assert!(took.elapsed() < Duration::from_secs(3), "bounded: {:?}", took.elapsed());
    let r = readiness(&m);
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(r.problems[0].starts_with("outbox: not writable"), "{r:?}");
    assert_eq!(r.brief_body(), "outbox: not ready\n");
    other.execute_batch("ROLLBACK").unwrap();
    m.sources.refresh();
    assert!(readiness(&m).is_ready());
    // The outbox's mutex held past the wait: no figures (not zeros), an error counted, not ready.
    let db = publisher.outbox();
    let held = db.lock().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| m.sources.refresh());
    });
    drop(held);
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_scrape_errors_total"), Some(1.0), "{text}");
    assert!(!text.contains("backstop_transcription_queue_depth"), "{text}");
    assert!(readiness(&m).problems[0].starts_with("outbox: busy"), "{:?}", readiness(&m));
    m.sources.refresh();
    assert!(readiness(&m).is_ready());
    m.account_configured("100@pbx.example");
    assert_eq!(readiness(&m).problems, ["register: account 100@pbx.example is not registered"]);
    m.registration("100@pbx.example", true);
    assert!(readiness(&m).is_ready());
    // The disk: its free space exported, and below the floor not ready (a full disk fails no rolled-back write).
    let free = sample(&m.encode(), "backstop_outbox_disk_free_bytes").expect("free space exported");
    assert!(free > 0.0);
    m.sources.set_disk_floor(u64::MAX);
    m.sources.refresh();
    let r = readiness(&m);
    let dir = dir.db().parent().unwrap().display().to_string();
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(r.problems[0].starts_with("disk: ") && r.problems[0].ends_with(&format!(" MiB free under {dir}")), "{r:?}");
    assert_eq!(r.brief_body(), "disk: not ready\n");
    m.sources.set_disk_floor(1);
    m.sources.refresh();
    assert!(readiness(&m).is_ready());
    m.registration_failed("100@pbx.example");
    assert!(!readiness(&m).is_ready());
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_registration_up{account=\"100@pbx.example\"}"), Some(0.0));
    assert_eq!(sample(&text, "backstop_registration_failures_total{account=\"100@pbx.example\"}"), Some(1.0));
}

#[tokio::test]
async fn the_scrape_shows_the_outbox_and_each_handling_once_never_a_webhook_url() {
    use crate::sink::delivery::{Sink, Target};
    use crate::sink::event::{Event, EventType};
    use crate::sink::outbox::{LineFilter, SinkSpec};
    use backstop_core::callback::CallbackState;
    use backstop_core::intake::lead::rfc3339;
    use std::time::SystemTime;

    let dir = Dir::new("metrics-scrape");
    // Named like a webhook with secrets in its URL (the outbox keys deliveries by the name).
    let name = "webhook:https://bob:pa55@hooks.example/services/SECRETPATH?token=tok999";
    let sink = Sink {
        spec: SinkSpec { name: name.into(), events: EventType::ALL.to_vec(), lines: LineFilter::All },
        target: Target::EventsFile(dir.0.join("events.jsonl")),
        max_interval: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
    };
    let delivery = Delivery::new(Outbox::open(&dir.db()).unwrap(), vec![sink], 1000, Duration::from_secs(60));
    let publisher = delivery.publisher();
    // A lead that came in 90 minutes ago and was due for a callback 75 minutes ago.
    let hour_ago = SystemTime::now() - Duration::from_secs(5400);
    let mut lead = a_lead();
    lead.received_at = rfc3339(hour_ago);
    lead.junk.is_junk = false;
    lead.callback = Some(CallbackState::due(rfc3339(hour_ago + Duration::from_secs(900))));
    for kind in [EventType::CallMissed, EventType::LeadCompleted] {
        publisher.publish(Event::new(kind, rfc3339(SystemTime::now()), &lead)).await.unwrap();
    }
    // A handling committed before this start was the last process's to observe.
    crate::store::mark_handled(&publisher, &lead.id, "owner", None).await.unwrap();
    crate::store::reopen(&publisher, &lead.id, "owner").await.unwrap();
    let m = Metrics::new();
    m.attach_outbox_unrefreshed(publisher.clone());
    let label = sink_label(name);
    m.sink_started(&label);
    let text = m.encode();
    assert_eq!(sample(&text, &format!("backstop_outbox_pending{{sink=\"{label}\"}}")), Some(4.0), "{text}");
    assert_eq!(sample(&text, &format!("backstop_outbox_dead{{sink=\"{label}\"}}")), Some(0.0));
    assert_eq!(sample(&text, &format!("backstop_leads_overdue{{line=\"{}\"}}", lead.line)), Some(1.0), "{text}");
    assert_eq!(sample(&text, "backstop_time_to_callback_seconds_count"), Some(0.0));

    // Handled, reopened and handled again: two handlings, each observed once.
    crate::store::mark_handled(&publisher, &lead.id, "owner", None).await.unwrap();
    m.sources.refresh();
    crate::store::reopen(&publisher, &lead.id, "owner").await.unwrap();
    crate::store::mark_handled(&publisher, &lead.id, "owner", None).await.unwrap();
    m.sources.refresh();
    m.sources.refresh();
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_time_to_callback_seconds_count"), Some(2.0), "{text}");
    let took = sample(&text, "backstop_time_to_callback_seconds_sum").unwrap();
    assert!((10800.0..11000.0).contains(&took), "time to callback {took} s (two of 90 minutes)");
    let bucket = |le: &str| {
        let series =
            text.lines().find(|l| l.starts_with(&format!("backstop_time_to_callback_seconds_bucket{{le=\"{le}")));
        series.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(bucket("3600"), Some(0.0), "{text}");
    assert_eq!(bucket("7200"), Some(2.0), "{text}");
    assert!(!text.contains("backstop_leads_overdue{"), "no lead is overdue now: {text}");
    for secret in ["bob", "pa55", "SECRETPATH", "tok999", "services"] {
        assert!(!text.contains(secret), "{secret} in {text}");
        assert!(!m.encode_openmetrics().contains(secret));
    }
}

#[tokio::test]
async fn a_named_webhook_is_scraped_under_its_name() {
    use crate::sink::delivery::{Sink, Target};
    use crate::sink::event::{Event, EventType};
    use crate::sink::outbox::{LineFilter, SinkSpec};
    use crate::sink::webhook::Webhook;
    use backstop_core::intake::lead::rfc3339;
    use std::time::SystemTime;

    let dir = Dir::new("metrics-named");
    let url = "https://eo1a2b3c.m.pipedream.net/";
    let mut hook =
        Webhook::new(url.into(), None, vec![], None, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
    hook.label = Some("webhook:crm".into());
    let name = format!("webhook:{url}");
    let sink = Sink {
        spec: SinkSpec { name: name.clone(), events: EventType::ALL.to_vec(), lines: LineFilter::All },
        target: Target::Webhook(hook),
        max_interval: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
    };
    // Not spawned: the event stays pending for the webhook.
    let delivery = Delivery::new(Outbox::open(&dir.db()).unwrap(), vec![sink], 1000, Duration::from_secs(60));
    let publisher = delivery.publisher();
    assert_eq!(publisher.sink_label(&name), "webhook:crm");
    assert_eq!(publisher.sink_label("webhook:https://gone.example/"), sink_label("webhook:https://gone.example/"));
    let lead = a_lead();
    publisher.publish(Event::new(EventType::CallMissed, rfc3339(SystemTime::now()), &lead)).await.unwrap();
    let m = Metrics::new();
    m.attach_outbox_unrefreshed(publisher.clone());
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_outbox_pending{sink=\"webhook:crm\"}"), Some(1.0), "{text}");
    assert!(!text.contains("eo1a2b3c"), "{text}");
}
