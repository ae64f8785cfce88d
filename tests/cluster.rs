//! Three agents behind Kamailio's dispatcher, with the shipped
//! `deploy/kamailio/kamailio.cfg` and a `dispatcher.list` naming them; SIPp
//! places the calls through Kamailio. Spread: every node takes a share and
//! every call makes exactly one lead on exactly one node. Drain: SIGTERM one
//! node under load loses no call, its calls in progress finish, and new calls
//! stop reaching it within a probe interval. Run with `--nocapture` for the
//! figures.

mod common;

use common::kamailio::Kamailio;
use common::scenario::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The probe interval the test runs Kamailio with (the shipped file says 5 s).
const PING_SECS: u64 = 1;

/// Three agents and the Kamailio in front of them.
struct Cluster {
    nodes: Vec<AgentProc>,
    kamailio: Kamailio,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let nodes: Vec<AgentProc> = (0..3)
            .map(|i| {
                AgentProc::start(
                    &format!("{name}-node{i}"),
                    "[sip]\nanswer_after_ms = 50\ntrusted_sources = [\"127.0.0.1\"]\n[call]\nshutdown_grace_secs = 20\n",
                )
            })
            .collect();
        let dir = scratch_dir(&format!("{name}-kamailio"));
        let list: String = nodes.iter().map(|n| format!("1 sip:127.0.0.1:{} 0 0\n", n.port)).collect();
        std::fs::write(dir.join("dispatcher.list"), list).unwrap();
        let kamailio = Kamailio::start(&dir, &deploy_config(&dir.join("dispatcher.list")));
        let cluster = Cluster { nodes, kamailio };
        cluster.wait_all_probed();
        cluster
    }

    /// Kamailio's first round of OPTIONS probes is done one interval after
    /// its start; calls placed before may go to a node not yet probed.
    fn wait_all_probed(&self) {
        std::thread::sleep(Duration::from_millis(PING_SECS * 1000 + 300));
    }
}

/// The shipped config with its documented defaults replaced for loopback: the
/// listen address (the helper fills in `@PORT@`), the list file, the probe
/// interval, and the log to stderr (the helper's log file).
fn deploy_config(list: &Path) -> String {
    let shipped = std::fs::read_to_string(manifest_dir().join("deploy/kamailio/kamailio.cfg")).unwrap();
    let mut cfg = shipped.clone();
    for (from, to) in [
        ("listen=udp:0.0.0.0:5060", "listen=udp:127.0.0.1:@PORT@".to_string()),
        ("\"/etc/kamailio/dispatcher.list\"", format!("\"{}\"", list.display())),
        ("\"ds_ping_interval\", 5)", format!("\"ds_ping_interval\", {PING_SECS})")),
        ("log_stderror=no", "log_stderror=yes".to_string()),
    ] {
        assert!(cfg.contains(from), "the shipped kamailio.cfg no longer has {from:?}");
        cfg = cfg.replace(from, &to);
    }
    cfg
}

/// A caller who is answered, ACKs, holds for `hold_ms` and hangs up; its ACK
/// and BYE carry the route set (Kamailio's Record-Route).
fn call(hold_ms: u64) -> String {
    let routed = |s: &str| s.replace("      Call-ID: [call_id]\n", "      Call-ID: [call_id]\n      [routes]\n");
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    scenario("cluster", &[&invite("", &offer), ANSWERED, &routed(&ack(1)), &pause(hold_ms), &routed(CALLER_BYE)])
}

/// SIPp's figures for one run.
struct Load {
    success: bool,
    successful: u64,
    failed: u64,
    errors: String,
}

/// `calls` calls of `scenario` at `rate` per second through `target`.
fn place_calls(dir: &Path, scenario: &str, target: std::net::SocketAddr, calls: u32, rate: u32) -> Load {
    let sf = dir.join("scenario.xml");
    std::fs::write(&sf, scenario).unwrap();
    let (port, media) = (free_port(), free_media_port());
    let out = Command::new("sipp")
        .arg(target.to_string())
        .arg("-sf")
        .arg(&sf)
        .args(["-m", &calls.to_string(), "-r", &rate.to_string(), "-l", "200", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(["-timeout", "45s", "-timeout_error", "-trace_err", "-trace_stat", "-stf", "stat.csv"])
        .arg("-error_file")
        .arg(dir.join("errors.log"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("sipp must be installed");
    let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
    let (successful, failed) = final_counts(&stat);
    Load {
        success: out.status.success(),
        successful,
        failed,
        errors: format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
        ),
    }
}

/// SuccessfulCall(C) and FailedCall(C) from the last line of SIPp's statistics file.
fn final_counts(csv: &str) -> (u64, u64) {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return (0, 0) };
    let Some(last) = lines.rfind(|l| !l.trim().is_empty()) else { return (0, 0) };
    let cols: Vec<&str> = header.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter().position(|c| *c == name).and_then(|i| vals.get(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// Each lead's last version (the file holds every version, one line each).
fn final_leads(node: &AgentProc) -> Vec<serde_json::Value> {
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for lead in node.leads() {
        by_id.insert(lead["id"].as_str().expect("lead id").to_string(), lead);
    }
    by_id.into_values().collect()
}

/// Wait (bounded) until the nodes hold `n` leads in all, each finished (not `ringing`).
fn wait_finished_leads(nodes: &[&AgentProc], n: usize, limit: Duration) -> Vec<Vec<serde_json::Value>> {
    let deadline = Instant::now() + limit;
    loop {
        let per_node: Vec<_> = nodes.iter().map(|a| final_leads(a)).collect();
        let total: usize = per_node.iter().map(Vec::len).sum();
        let done = per_node.iter().flatten().all(|l| l["ended_at"].is_string());
        if (total >= n && done) || Instant::now() > deadline {
            return per_node;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every Call-ID has exactly one lead, on exactly one node; returns them all.
fn one_lead_per_call(per_node: &[Vec<serde_json::Value>]) -> BTreeSet<String> {
    let mut seen = BTreeMap::<String, usize>::new();
    for lead in per_node.iter().flatten() {
        *seen.entry(lead["call_id"].as_str().expect("call_id").to_string()).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "Call-IDs with more than one lead: {dup:?}");
    seen.into_keys().collect()
}

#[test]
fn calls_spread_over_three_nodes_with_one_lead_each() {
    const CALLS: u32 = 60;
    let cluster = Cluster::start("cluster-spread");
    let dir = scratch_dir("cluster-spread-sipp");
    let started = Instant::now();
    let load = place_calls(&dir, &call(1000), cluster.kamailio.addr(), CALLS, 20);
    let took = started.elapsed();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0));

    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_finished_leads(&nodes, CALLS as usize, Duration::from_secs(10));
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    eprintln!(
        "spread: {CALLS} calls at 20/s in {took:?}: SIPp {} ok, {} failed; leads per node {shares:?}",
        load.successful, load.failed
    );
    assert!(shares.iter().all(|n| *n > 0), "every node takes a share: {shares:?}");
    assert_eq!(shares.iter().sum::<usize>(), CALLS as usize, "one lead per call: {shares:?}");
    assert_eq!(one_lead_per_call(&per_node).len(), CALLS as usize);
    for lead in per_node.iter().flatten() {
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
}

/// The timestamps (the first word, RFC 3339) of the agent log's lines saying `what`.
fn log_times(log: &str, what: &str) -> Vec<jiff::Timestamp> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .collect()
}

#[test]
fn a_draining_node_loses_no_call_and_gets_no_new_ones() {
    const CALLS: u32 = 80;
    let mut cluster = Cluster::start("cluster-drain");
    let dir = scratch_dir("cluster-drain-sipp");
    let target = cluster.kamailio.addr();
    let load = std::thread::spawn(move || place_calls(&dir, &call(3000), target, CALLS, 10));

    // Once node 0 has calls in progress (answered, ACKed), SIGTERM it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.nodes[0].log().matches("ACK received").count() < 4 {
        assert!(Instant::now() < deadline, "node 0 never got calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let in_progress = cluster.nodes[0].log().matches("ACK received").count();
    let sigterm = jiff::Timestamp::now();
    cluster.nodes[0].sigterm();
    let exited = cluster.nodes[0].wait_exit(Duration::from_secs(25));
    let drained_after = jiff::Timestamp::now().duration_since(sigterm);

    let load = load.join().unwrap();
    let kamailio_log = cluster.kamailio.log();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{kamailio_log}", load.errors);
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0), "0 failed calls");
    assert!(exited, "node 0 exits cleanly once its calls are done");

    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_finished_leads(&nodes, CALLS as usize, Duration::from_secs(10));
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    assert_eq!(shares.iter().sum::<usize>(), CALLS as usize, "one lead per call: {shares:?}");
    assert_eq!(one_lead_per_call(&per_node).len(), CALLS as usize);
    // The drained node's calls (those in progress at SIGTERM among them)
    // were ended by the caller, none interrupted.
    assert!(per_node[0].len() >= in_progress, "{} leads on node 0, {in_progress} calls were up", per_node[0].len());
    for lead in per_node.iter().flatten() {
        assert_eq!(lead["ended_by"], "caller", "{lead}");
        assert_ne!(lead["outcome"], "interrupted", "{lead}");
    }
    // No new call reached node 0 after one probe interval (and slack) past
    // its SIGTERM: neither a taken call nor a refused INVITE.
    let limit = sigterm + jiff::SignedDuration::from_millis((PING_SECS * 1000 + 1000) as i64);
    let log = cluster.nodes[0].log();
    let invites = log_times(&log, "}: INVITE from=");
    let refused = log_times(&log, "new call refused (503)");
    assert!(!invites.is_empty(), "the agent log's timestamps must parse:\n{log}");
    let late: Vec<_> = invites.iter().chain(&refused).filter(|t| **t > limit).collect();
    let last_refused = refused.iter().max().map(|t| t.duration_since(sigterm));
    eprintln!(
        "drain: {CALLS} calls at 10/s, 3 s each: SIPp {} ok, {} failed; leads per node {shares:?}; \
         node 0 had {in_progress} calls up at SIGTERM, exited after {drained_after:?}; \
         INVITEs refused by it while draining: {}, the last {last_refused:?} after SIGTERM",
        load.successful,
        load.failed,
        refused.len()
    );
    assert!(late.is_empty(), "INVITEs reached node 0 after {limit}: {late:?}");
}

#[test]
fn the_probe_alone_takes_a_draining_node_out() {
    let mut cluster = Cluster::start("cluster-probe");
    // A call straight to node 0 keeps it draining (not gone) for 6 s.
    let direct_dir = scratch_dir("cluster-probe-direct");
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let long = scenario("direct", &[&invite("", &offer), ANSWERED, &ack(1), &pause(6000), CALLER_BYE]);
    let node0 = cluster.nodes[0].addr();
    let direct = std::thread::spawn(move || run_sipp(&direct_dir, &long, node0, false, &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.nodes[0].log().contains("ACK received") {
        assert!(Instant::now() < deadline, "the direct call never came up\n{}", cluster.nodes[0].log());
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.nodes[0].sigterm();
    // One probe interval and slack: the OPTIONS probe gets 503 and marks it inactive.
    std::thread::sleep(Duration::from_millis(PING_SECS * 1000 + 1000));

    let dir = scratch_dir("cluster-probe-sipp");
    let load = place_calls(&dir, &call(500), cluster.kamailio.addr(), 9, 10);
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (9, 0));
    // No INVITE reached node 0 (only the direct call's), none failed over.
    let log = cluster.nodes[0].log();
    assert_eq!(log_times(&log, "}: INVITE from=").len(), 1, "{log}");
    assert!(log_times(&log, "new call refused (503)").is_empty(), "{log}");
    assert!(!cluster.kamailio.log().contains("marked inactive"), "{}", cluster.kamailio.log());
    let others: Vec<&AgentProc> = cluster.nodes[1..].iter().collect();
    let shares: Vec<usize> = wait_finished_leads(&others, 9, Duration::from_secs(10)).iter().map(Vec::len).collect();
    assert_eq!(shares.iter().sum::<usize>(), 9, "{shares:?}");
    eprintln!(
        "probe: node 0 draining for {} s before 9 calls: nodes 1 and 2 took {shares:?}, node 0 none",
        PING_SECS + 1
    );

    let direct = direct.join().unwrap();
    assert!(direct.success, "the draining node's call completes: {}", direct.errors);
    assert!(cluster.nodes[0].wait_exit(Duration::from_secs(10)), "node 0 exits cleanly");
    let lead = final_leads(&cluster.nodes[0]);
    assert_eq!(lead.len(), 1);
    assert_eq!(lead[0]["ended_by"], "caller", "{}", lead[0]);
}
