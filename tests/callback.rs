//! The callback clock end to end: the real agent, real SIPp calls, a real
//! webhook receiver, and `backstop leads` run as the binary, with
//! `[callback] due_minutes_open` set to seconds. A lead not handled by its
//! due time gets one `lead.callback_overdue`; a lead handled before (with
//! `backstop leads done`) gets `lead.handled` with its time to callback and
//! no reminder; and an agent killed and restarted between a call and its
//! due time still sends the reminder, once.

mod common;

use common::receiver::{Receiver, SECRET, Seen, key};
use common::scenario::*;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Due six seconds after the call came in.
const DUE: Duration = Duration::from_secs(6);

/// One short call: answered, 300 ms of greeting, the caller hangs up.
fn place_call(agent: &AgentProc, name: &str) {
    let dir = scratch_dir(name);
    let sc = scenario(name, &[&invite("", OFFER), ANSWERED, &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40030".into())]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
}

/// The webhook's events about a lead, unique by webhook-id, accepted only.
fn about<'a>(seen: &'a [Seen], lead: &str, kind: &str) -> Vec<&'a Seen> {
    let mut ids = BTreeSet::new();
    seen.iter()
        .filter(|s| (200..300).contains(&s.status) && s.kind() == kind && s.event["lead"]["id"] == lead)
        .filter(|s| ids.insert(s.webhook_id.clone()))
        .collect()
}

/// Place a call and return its lead as the `lead.completed` the receiver got.
fn call_and_lead(agent: &AgentProc, rx: &Receiver, name: &str) -> serde_json::Value {
    let before: BTreeSet<String> =
        rx.seen().iter().filter(|s| s.kind() == "lead.completed").map(|s| s.call_id().to_string()).collect();
    place_call(agent, name);
    let seen = rx.wait_for(Duration::from_secs(10), "the call's lead.completed", |s| {
        s.iter().any(|x| x.kind() == "lead.completed" && !before.contains(x.call_id()))
    });
    seen.iter().find(|x| x.kind() == "lead.completed" && !before.contains(x.call_id())).unwrap().event["lead"].clone()
}

fn backstop(agent: &AgentProc, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .arg("--config")
        .arg(agent.dir.join("backstop.toml"))
        .arg("--data-dir")
        .arg(agent.dir.join("data"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run backstop")
}

fn received(lead: &serde_json::Value) -> SystemTime {
    let s = lead["received_at"].as_str().unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_millis(s.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64)
}

#[test]
fn overdue_once_handled_never_and_a_restart_neither_loses_nor_repeats() {
    let port = free_port();
    let rx = Receiver::start(port, key(), vec![]);
    let mut agent = AgentProc::start(
        "callback-e2e",
        &format!(
            "[sip]\nanswer_after_ms = 50\n[callback]\ndue_minutes_open = 0.1\n\
             [[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\nmax_retry_interval_s = 1\n"
        ),
    );

    // (1) Not handled: overdue at its due time.
    let a = call_and_lead(&agent, &rx, "callback-a");
    let a_id = a["id"].as_str().unwrap().to_string();
    // Every lead carries its due time: received_at plus due_minutes_open.
    let due_at = a["callback"]["due_at"].as_str().expect("lead.completed carries callback.due_at");
    let due = SystemTime::UNIX_EPOCH
        + Duration::from_millis(due_at.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64);
    assert_eq!(due.duration_since(received(&a)).unwrap(), DUE);
    assert_eq!(a["callback"]["status"], "new");

    // (2) Handled before due, from the command line.
    let b = call_and_lead(&agent, &rx, "callback-b");
    let b_id = b["id"].as_str().unwrap().to_string();
    let out = backstop(&agent, &["leads", "done", &b_id, "--note", "called, booked Tuesday"]);
    assert!(
        out.status.success(),
        "leads done: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(SystemTime::now() < received(&b) + DUE, "handled before due (the call took too long to test this)");
    // Unknown ids are an error.
    let out = backstop(&agent, &["leads", "done", "no-such-lead"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lead no-such-lead"), "{out:?}");

    // (3) A call, then the agent killed and started again before its due time.
    let c = call_and_lead(&agent, &rx, "callback-c");
    let c_id = c["id"].as_str().unwrap().to_string();
    agent.kill9();
    assert!(SystemTime::now() < received(&c) + DUE, "killed before due (the call took too long to test this)");
    agent.restart();

    // lead.handled for B reaches the webhook (the running agent's workers poll the outbox).
    let seen =
        rx.wait_for(Duration::from_secs(15), "lead.handled for B", |s| !about(s, &b_id, "lead.handled").is_empty());
    let handled = &about(&seen, &b_id, "lead.handled")[0].event["lead"]["callback"];
    assert_eq!(handled["status"], "handled");
    assert_eq!(handled["handled_by"], "cli");
    assert_eq!(handled["note"], "called, booked Tuesday");
    let ttc = handled["time_to_callback_secs"].as_u64().expect("time_to_callback_secs");
    assert!(ttc < DUE.as_secs(), "handled {ttc} s after the call");

    // A and C get their reminder once their due time has passed.
    let seen = rx.wait_for(Duration::from_secs(20), "lead.callback_overdue for A and C", |s| {
        !about(s, &a_id, "lead.callback_overdue").is_empty() && !about(s, &c_id, "lead.callback_overdue").is_empty()
    });
    for (id, lead) in [(&a_id, &a), (&c_id, &c)] {
        let ev = &about(&seen, id, "lead.callback_overdue")[0];
        assert!(ev.wall >= received(lead) + DUE, "not before its due time");
        assert_eq!(ev.event["lead"]["callback"]["status"], "overdue");
        assert_eq!(ev.event["lead"]["callback"]["reminders"], 1);
    }
    let list = backstop(&agent, &["leads", "list", "--overdue"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains(&a_id) && list.contains(&c_id) && !list.contains(&b_id), "{list}");
    assert!(list.contains("1 reminder(s) sent"), "{list}");

    // Well past every due time: still exactly one reminder each, and none for B.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = rx.seen();
    assert_eq!(about(&seen, &a_id, "lead.callback_overdue").len(), 1);
    assert_eq!(about(&seen, &c_id, "lead.callback_overdue").len(), 1, "the restart neither lost nor repeated it");
    assert!(about(&seen, &b_id, "lead.callback_overdue").is_empty(), "handled before due: no reminder");
    assert_eq!(about(&seen, &b_id, "lead.handled").len(), 1);
    let all = backstop(&agent, &["leads", "list"]);
    assert!(String::from_utf8_lossy(&all.stdout).contains("handled"), "{all:?}");
}
