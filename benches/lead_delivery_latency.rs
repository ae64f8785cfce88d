//! lead_delivery_latency: from the moment a call ends (the lead's `ended_at`)
//! to the moment a webhook receiver on loopback has the `lead.completed`,
//! with the receiver up. Also the `call.missed` latency from the call's
//! `received_at`. Run: `cargo bench --bench lead_delivery_latency`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::receiver::Receiver;
use common::scenario::*;
use common::*;
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CALLS: u32 = 50;

fn main() {
    let port = free_port();
    let rx = Receiver::start(port, backstop::sink::webhook::decode_secret(SECRET).unwrap(), vec![]);
    let agent = AgentProc::start(
        "latency",
        &format!(
            "[sip]\nanswer_after_ms = 50\n[[webhook]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\n"
        ),
    );
    let dir = scratch_dir("latency-calls");
    let sc = scenario("short", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(200), CALLER_BYE]);
    let run = run_sipp_calls(&dir, &sc, agent.addr(), false, &[("rtp_port", "40040".into())], CALLS);
    assert!(run.success, "{}", run.errors);
    let seen = rx.wait_for(Duration::from_secs(30), "all events", |s| s.len() >= 2 * CALLS as usize);
    let since = |s: &common::receiver::Seen, field: &str| -> f64 {
        let at = humantime::parse_rfc3339(s.event["lead"][field].as_str().unwrap()).unwrap();
        s.wall.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0
    };
    for (kind, field) in [("lead.completed", "ended_at"), ("call.missed", "received_at")] {
        let mut ms: Vec<f64> = seen.iter().filter(|s| s.kind() == kind).map(|s| since(s, field)).collect();
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "{kind}: {} events; latency from {field} ms p50 {:.1} p99 {:.1} max {:.1}",
            ms.len(),
            p(0.5),
            p(0.99),
            ms[ms.len() - 1]
        );
    }
}
