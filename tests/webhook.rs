//! Lead delivery to a real HTTP receiver (tiny_http on loopback): failures,
//! outages, slow answers and permanent refusals, with calls placed by SIPp.

mod common;

use common::receiver::{Receiver, Reply, SECRET, key};
use common::scenario::*;
use common::*;
use std::time::Duration;

fn agent_with_webhook(name: &str, port: u16, extra: &str) -> AgentProc {
    AgentProc::start(
        name,
        &format!(
            "[sip]\nanswer_after_ms = 50\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\nmax_retry_interval_s = 2\n{extra}"
        ),
    )
}

/// One short call: answered, 300 ms of greeting, caller hangs up.
fn place_call(agent: &AgentProc, name: &str) -> SippRun {
    let dir = scratch_dir(name);
    let sc = scenario(name, &[&invite("", OFFER), ANSWERED, &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40020".into())]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    run
}

fn both_events(seen: &[common::receiver::Seen]) -> bool {
    let ok = |k: &str| seen.iter().any(|s| s.kind() == k && (200..300).contains(&s.status));
    ok("call.missed") && ok("lead.completed")
}

#[test]
fn server_errors_are_retried_with_backoff_then_delivered_once() {
    let port = free_port();
    let rx = Receiver::start(port, key(), vec![Reply::status(500), Reply::status(503), Reply::status(500)]);
    let agent = agent_with_webhook("wh-500", port, "");
    place_call(&agent, "wh-500-call");
    let seen = rx.wait_for(Duration::from_secs(20), "both events delivered", both_events);
    assert!(seen.iter().all(|s| s.signature_ok), "every request carries a valid Standard Webhooks signature");
    // call.missed went first: three failures, then success, all with one webhook-id.
    let missed: Vec<_> = seen.iter().filter(|s| s.kind() == "call.missed").collect();
    assert_eq!(missed.iter().map(|s| s.status).collect::<Vec<_>>(), [500, 503, 500, 200]);
    assert!(missed.iter().all(|s| s.webhook_id == missed[0].webhook_id));
    // Backoff: about 1 s, 2 s, 2 s (doubling from 1 s, capped at max_retry_interval_s = 2, ±20 % jitter).
    let gaps: Vec<f64> = missed.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect();
    for (gap, base) in gaps.iter().zip([1.0, 2.0, 2.0]) {
        assert!(*gap >= base * 0.8 - 0.05 && *gap <= base * 1.2 + 0.5, "gaps {gaps:?}");
    }
    // lead.completed only after call.missed was delivered: ordered per call.
    let first_completed = seen.iter().position(|s| s.kind() == "lead.completed").unwrap();
    let missed_ok = seen.iter().position(|s| s.kind() == "call.missed" && s.status == 200).unwrap();
    assert!(first_completed > missed_ok);
    let unique = rx.accepted_unique();
    assert_eq!(unique.len(), 2, "exactly once at an idempotent receiver");
    assert_eq!(unique[1].event["lead"]["ended_by"], "caller");
    assert_eq!(unique[0].event["lead"]["call_id"], unique[1].event["lead"]["call_id"]);
}

#[test]
fn bearer_token_extra_headers_and_event_filter_are_applied() {
    let port = free_port();
    let rx = Receiver::start(port, key(), vec![]);
    let agent = agent_with_webhook(
        "wh-headers",
        port,
        "events = [\"lead.completed\"]\nbearer_token = \"tok-123\"\nheaders = { \"X-Tenant\" = \"acme-plumbing\" }\n",
    );
    place_call(&agent, "wh-headers-call");
    rx.wait_for(Duration::from_secs(10), "the lead", |s| s.iter().any(|x| x.kind() == "lead.completed"));
    // Give a call.missed, had it not been filtered, time to arrive too.
    std::thread::sleep(Duration::from_millis(500));
    let seen = rx.seen();
    assert!(seen.iter().all(|s| s.kind() == "lead.completed"), "call.missed was filtered out");
    let h = |name: &str| seen[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(h("authorization").as_deref(), Some("Bearer tok-123"));
    assert_eq!(h("x-tenant").as_deref(), Some("acme-plumbing"));
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    assert_eq!(h("webhook-id").as_deref(), Some(seen[0].event["id"].as_str().unwrap()));
}

#[test]
fn a_receiver_that_is_down_gets_everything_when_it_comes_up() {
    let port = free_port();
    let agent = agent_with_webhook("wh-down", port, "");
    place_call(&agent, "wh-down-call");
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.log().contains("connection failed"), "deliveries were attempted while the receiver was down");
    let rx = Receiver::start(port, key(), vec![]);
    // Retries are capped at 2 s apart, so both arrive soon after it comes up.
    rx.wait_for(Duration::from_secs(8), "both events after the outage", both_events);
    assert_eq!(rx.accepted_unique().len(), 2);
    // And the leads file never depended on the webhook.
    assert_eq!(agent.leads().len(), 1);
}

#[test]
fn a_slow_receiver_times_out_and_the_retry_keeps_the_webhook_id() {
    let port = free_port();
    let slow = Reply { status: 200, delay: Duration::from_millis(1500) };
    let rx = Receiver::start(port, key(), vec![slow]);
    let agent = agent_with_webhook("wh-slow", port, "timeout_ms = 500\n");
    place_call(&agent, "wh-slow-call");
    let seen = rx.wait_for(Duration::from_secs(15), "both events", |s| both_events(s) && s.len() >= 3);
    let missed: Vec<_> = seen.iter().filter(|s| s.kind() == "call.missed").collect();
    assert!(missed.len() >= 2, "the timed-out attempt was retried");
    assert!(missed.iter().all(|s| s.webhook_id == missed[0].webhook_id), "same webhook-id on the retry");
    assert_eq!(rx.accepted_unique().len(), 2, "de-duplicated by webhook-id, each event once");
    assert!(agent.log().contains("timeout"), "{}", agent.log());
}

#[test]
fn gone_is_permanent_and_dead_lettered() {
    let port = free_port();
    let rx = Receiver::start(port, key(), vec![]);
    rx.set_default(Reply::status(410));
    let agent = agent_with_webhook("wh-410", port, "");
    place_call(&agent, "wh-410-call");
    rx.wait_for(Duration::from_secs(10), "both events refused", |s| s.iter().filter(|x| x.status == 410).count() >= 2);
    std::thread::sleep(Duration::from_secs(3));
    // Tried once each, never again.
    assert_eq!(rx.seen().len(), 2, "{:?}", rx.seen().iter().map(|s| s.kind().to_string()).collect::<Vec<_>>());
    assert!(agent.log().contains("dead-lettered"));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["outbox", "status", "--data-dir"])
        .arg(agent.dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text.lines().find(|l| l.starts_with("webhook:")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("pending      0") && line.contains("dead      2"), "{text}");
    // `retry --dead` revives them.
    rx.set_default(Reply::status(200));
    let retry = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["outbox", "retry", "--dead", "--data-dir"])
        .arg(agent.dir.join("data"))
        .output()
        .unwrap();
    assert!(retry.status.success());
    rx.wait_for(Duration::from_secs(10), "revived events delivered", both_events);
}
