//! Crash and outage: calls placed with SIPp while the webhook receiver is
//! down, then `kill -9` of the agent in the middle of a call and of a
//! delivery, a restart, and the receiver back up. Every call that reached the
//! agent must arrive as `call.missed` and `lead.completed`; duplicates only
//! ever carry the same `webhook-id`. Run with `--nocapture` for the figures.

mod common;

use common::receiver::{Receiver, Reply, SECRET, key};
use common::scenario::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[test]
fn kill_9_mid_call_and_mid_delivery_loses_no_lead() {
    let key = key();
    let port = free_port();
    let mut agent = AgentProc::start(
        "crash",
        &format!(
            "[sip]\nanswer_after_ms = 50\ntrusted_sources = [\"127.0.0.1\"]\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\nmax_retry_interval_s = 1\n"
        ),
    );

    // 1. Three complete calls while the receiver is down.
    let dir = scratch_dir("crash-calls");
    let short = scenario("short", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp_calls(&dir, &short, agent.addr(), false, &[("rtp_port", "40030".into())], 3);
    assert!(run.success, "{}", run.errors);
    agent.wait_leads(3, Duration::from_secs(5));

    // 2. The receiver comes up but answers slowly, so deliveries are in flight;
    //    a fourth call is in its greeting. Then the agent is killed outright.
    let rx = Receiver::start(port, key, vec![]);
    rx.set_default(Reply { status: 200, delay: Duration::from_secs(3) });
    let addr = agent.addr();
    let long_dir = scratch_dir("crash-long");
    // Its BYE, after the kill, reaches the restarted agent and gets a 481: SIPp then ends.
    // (127.0.0.1 is listed above: to an unlisted source a 481 bigger than the BYE is withheld.)
    let long = scenario("long", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(2500), CALLER_BYE]);
    let fourth = std::thread::spawn(move || run_sipp(&long_dir, &long, addr, false, &[("rtp_port", "40032".into())]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.log().matches("ACK received").count() < 4 || rx.seen().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the fourth call or a delivery never started\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let in_flight = rx.seen().len();
    agent.kill9();

    // 3. Restart; the receiver is fast again.
    rx.set_default(Reply::status(200));
    agent.restart();
    let complete = |seen: &[common::receiver::Seen]| {
        let mut per_call: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in seen.iter().filter(|s| (200..300).contains(&s.status)) {
            per_call.entry(s.call_id().to_string()).or_default().insert(s.kind().to_string());
        }
        per_call.len() == 4 && per_call.values().all(|k| k.contains("call.missed") && k.contains("lead.completed"))
    };
    let seen = rx.wait_for(Duration::from_secs(30), "all four calls' events", complete);

    // Every event exactly once by webhook-id; no event under two ids.
    let accepted: Vec<_> = seen.iter().filter(|s| (200..300).contains(&s.status)).collect();
    let ids: BTreeSet<&str> = accepted.iter().map(|s| s.webhook_id.as_str()).collect();
    let mut per_event: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for s in &accepted {
        per_event.entry((s.call_id().to_string(), s.kind().to_string())).or_default().insert(s.webhook_id.clone());
    }
    assert!(per_event.values().all(|ids| ids.len() == 1), "an event was sent under two ids: {per_event:?}");
    assert_eq!(ids.len(), 8, "4 calls × (call.missed, lead.completed)");
    assert!(seen.iter().all(|s| s.signature_ok));
    let interrupted: Vec<_> = accepted
        .iter()
        .filter(|s| s.kind() == "lead.completed" && s.event["lead"]["outcome"] == "interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "the call killed mid-way is closed as interrupted");

    let _ = fourth.join();

    // The leads file has all four, once each.
    let leads = agent.wait_leads(4, Duration::from_secs(5));
    let lead_ids: BTreeSet<&str> = leads.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!((leads.len(), lead_ids.len()), (4, 4), "{leads:?}");

    println!(
        "crash test: calls placed 4, events expected 8, requests seen {}, accepted {}, unique webhook-ids {}, duplicates (same id) {}, in flight at kill {}",
        seen.len(),
        accepted.len(),
        ids.len(),
        accepted.len() - ids.len(),
        in_flight
    );
}

/// A full disk under the leads file (simulated with /dev/full: every write
/// fails with ENOSPC): the call still completes, the lead waits in the
/// outbox, and it lands in leads.jsonl once the disk is writable again.
#[test]
fn a_full_disk_delays_the_leads_file_but_loses_nothing() {
    let agent = AgentProc::start("diskfull", "[sip]\nanswer_after_ms = 50\n");
    let leads = agent.dir.join("data/leads.jsonl");
    let _ = std::fs::remove_file(&leads);
    std::os::unix::fs::symlink("/dev/full", &leads).unwrap();
    let dir = scratch_dir("diskfull-call");
    let sc = scenario("short", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40060".into())]);
    assert!(run.success, "the call must complete whatever the disk does: {}", run.errors);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("No space left on device") {
        assert!(std::time::Instant::now() < deadline, "no write failure logged:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The disk is fixed: the pending lead is written on the next retry (file sinks retry within 5 s).
    std::fs::remove_file(&leads).unwrap();
    let written = agent.wait_leads(1, Duration::from_secs(10));
    assert_eq!(written.len(), 1);
    assert_eq!(written[0]["ended_by"], "caller");
}
