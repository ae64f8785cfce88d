//! The registry's names and values, and readiness against a real outbox.

use super::*;
use crate::sink::delivery::Delivery;
use crate::sink::outbox::Outbox;
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
    m.call_rejected(503);
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_calls_in_progress"), Some(0.0), "the guard counted the call out");
    assert_eq!(sample(&text, "backstop_calls_total{transport=\"udp\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_calls_answered_total"), Some(1.0));
    assert_eq!(sample(&text, "backstop_calls_ended_total{line=\"default\",outcome=\"completed\"}"), Some(1.0));
    assert_eq!(sample(&text, "backstop_calls_rejected_total{code=\"503\"}"), Some(1.0));
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

#[tokio::test]
async fn readiness_checks_the_outbox_too() {
    let m = Metrics::new();
    m.health.set_sip_bound("127.0.0.1:5060".parse().unwrap());
    assert_eq!(readiness(&m).await.problems, ["outbox: not open yet"]);
    let dir = std::env::temp_dir().join(format!("backstop-metrics-ready-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let outbox = Outbox::open(&dir.join("outbox.db")).unwrap();
    let delivery = Delivery::new(outbox, Vec::new(), 1000, Duration::from_secs(60));
    m.attach_outbox(delivery.publisher());
    assert!(readiness(&m).await.is_ready(), "{:?}", readiness(&m).await);
    // The outbox's write lock held elsewhere: not writable now, said so.
    let other = rusqlite::Connection::open(dir.join("outbox.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let r = readiness(&m).await;
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(r.problems[0].starts_with("outbox: "), "{r:?}");
    other.execute_batch("ROLLBACK").unwrap();
    assert!(readiness(&m).await.is_ready());
    m.account_configured("100@pbx.example");
    assert_eq!(readiness(&m).await.problems, ["register: account 100@pbx.example is not registered"]);
    m.registration("100@pbx.example", true);
    assert!(readiness(&m).await.is_ready());
    m.registration_failed("100@pbx.example");
    assert!(!readiness(&m).await.is_ready());
    let text = m.encode();
    assert_eq!(sample(&text, "backstop_registration_up{account=\"100@pbx.example\"}"), Some(0.0));
    assert_eq!(sample(&text, "backstop_registration_failures_total{account=\"100@pbx.example\"}"), Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_scrape_reads_the_outbox_and_each_handling_once() {
    use crate::sink::delivery::{Sink, Target};
    use crate::sink::event::{Event, EventType};
    use crate::sink::outbox::{LineFilter, SinkSpec};
    use backstop_core::callback::CallbackState;
    use backstop_core::intake::lead::rfc3339;
    use std::time::SystemTime;

    let dir = std::env::temp_dir().join(format!("backstop-metrics-scrape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sink = Sink {
        spec: SinkSpec { name: "hook".into(), events: EventType::ALL.to_vec(), lines: LineFilter::All },
        target: Target::EventsFile(dir.join("events.jsonl")),
        max_interval: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
    };
    let delivery =
        Delivery::new(Outbox::open(&dir.join("outbox.db")).unwrap(), vec![sink], 1000, Duration::from_secs(60));
    let publisher = delivery.publisher();
    let m = Metrics::new();
    m.attach_outbox(publisher.clone());
    // A lead that came in an hour ago and was due for a callback 45 minutes ago.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let mut lead = a_lead();
    lead.received_at = rfc3339(hour_ago);
    lead.junk.is_junk = false;
    lead.callback = Some(CallbackState::due(rfc3339(hour_ago + Duration::from_secs(900))));
    for kind in [EventType::CallMissed, EventType::LeadCompleted] {
        publisher.publish(Event::new(kind, rfc3339(SystemTime::now()), &lead)).await.unwrap();
    }
    let scrape = || {
        let m = m.clone();
        async move { tokio::task::spawn_blocking(move || m.encode()).await.unwrap() }
    };
    let text = scrape().await;
    assert_eq!(sample(&text, "backstop_outbox_pending{sink=\"hook\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "backstop_outbox_dead{sink=\"hook\"}"), Some(0.0));
    assert_eq!(sample(&text, &format!("backstop_leads_overdue{{line=\"{}\"}}", lead.line)), Some(1.0), "{text}");
    assert_eq!(sample(&text, "backstop_time_to_callback_seconds_count"), Some(0.0));

    crate::store::mark_handled(&publisher, &lead.id, "owner", None).await.unwrap();
    // Read once the handling has settled (2 s), and only once.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let text = scrape().await;
    assert_eq!(sample(&text, "backstop_time_to_callback_seconds_count"), Some(1.0), "{text}");
    let took = sample(&text, "backstop_time_to_callback_seconds_sum").unwrap();
    assert!((3600.0..3700.0).contains(&took), "time to callback {took} s");
    let bucket = |le: &str| {
        let series =
            text.lines().find(|l| l.starts_with(&format!("backstop_time_to_callback_seconds_bucket{{le=\"{le}")));
        series.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(bucket("3600"), Some(0.0), "{text}");
    assert_eq!(bucket("7200"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "backstop_outbox_pending{sink=\"hook\"}"), Some(3.0), "lead.handled is pending too");
    assert!(!text.contains("backstop_leads_overdue{"), "no lead is overdue now: {text}");
    let text = scrape().await;
    assert_eq!(sample(&text, "backstop_time_to_callback_seconds_count"), Some(1.0), "not observed twice");
    let _ = std::fs::remove_dir_all(&dir);
}
