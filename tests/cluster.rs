//! Three agents behind Kamailio's dispatcher, with the shipped
//! `deploy/kamailio/kamailio.cfg` and a `dispatcher.list` naming them; SIPp
//! places the calls through Kamailio. Spread: every node takes a share and
//! every call makes exactly one lead on exactly one node. Drain: SIGTERM one
//! node under load loses no call, its calls in progress finish, and new calls
//! stop reaching it within a probe interval. Rolling restart: each node in
//! turn drained, restarted on its port and data directory and taken back by
//! the probe, under load, loses no call. Crash: kill -9 of a node loses only
//! its calls in progress, new calls fail over, and its restart closes the
//! cut-off leads as `interrupted`. Ringing: a node still ringing after the
//! dispatch's 10 s timer loses the call to the next node. Untrusted: a source
//! outside TRUSTED_SOURCES gets 403 and reaches no agent. Run with
//! `--nocapture` for the figures.

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
        Cluster::start_answering(name, [50, 50, 50])
    }

    /// As `start`, node `i` answering after `answer_after_ms[i]`.
    fn start_answering(name: &str, answer_after_ms: [u64; 3]) -> Cluster {
        let nodes: Vec<AgentProc> = (0..3)
            .map(|i| {
                AgentProc::start(
                    &format!("{name}-node{i}"),
                    &format!(
                        "[sip]\nanswer_after_ms = {}\ntrusted_sources = [\"127.0.0.1\"]\n[call]\nshutdown_grace_secs = 20\n",
                        answer_after_ms[i]
                    ),
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
/// interval, the log to stderr (the helper's log file), and the trusted
/// sources: 127.0.0.1 only (SIPp as the PBX), so 127.0.0.2 is a stranger.
fn deploy_config(list: &Path) -> String {
    let shipped = std::fs::read_to_string(manifest_dir().join("deploy/kamailio/kamailio.cfg")).unwrap();
    let mut cfg = shipped.clone();
    for (from, to) in [
        ("listen=udp:0.0.0.0:5060", "listen=udp:127.0.0.1:@PORT@".to_string()),
        ("\"/etc/kamailio/dispatcher.list\"", format!("\"{}\"", list.display())),
        ("\"ds_ping_interval\", 5)", format!("\"ds_ping_interval\", {PING_SECS})")),
        ("log_stderror=no", "log_stderror=yes".to_string()),
        ("!TRUSTED_SOURCES!192.0.2.10/32!g", "!TRUSTED_SOURCES!127.0.0.1/32!g".to_string()),
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
    place_calls_from("127.0.0.1", dir, scenario, target, calls, rate)
}

/// As `place_calls`, SIPp bound to the local address `ip`.
fn place_calls_from(ip: &str, dir: &Path, scenario: &str, target: std::net::SocketAddr, calls: u32, rate: u32) -> Load {
    let sf = dir.join("scenario.xml");
    std::fs::write(&sf, scenario).unwrap();
    let (port, media) = (free_port(), free_media_port());
    let out = Command::new("sipp")
        .arg(target.to_string())
        .arg("-sf")
        .arg(&sf)
        .args(["-m", &calls.to_string(), "-r", &rate.to_string(), "-l", "200", "-i", ip, "-nostdin"])
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

/// A stranger (SIPp on 127.0.0.2, outside the trusted 127.0.0.1/32) asks the
/// front for OPTIONS, answered 200 (a keep-alive, whatever the user part),
/// then sends an INVITE: 403 from the front, and no agent sees it.
#[test]
fn an_untrusted_source_gets_403_and_reaches_no_agent() {
    const CALLS: u32 = 4;
    let cluster = Cluster::start("cluster-untrusted");
    let dir = scratch_dir("cluster-untrusted-sipp");
    let options = r#"
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:overflow@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[call_number]-opt;rport
      From: <sip:scanner@[local_ip]:[local_port]>;tag=[call_number]o
      To: <sip:overflow@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#;
    let refused = r#"
  <recv response="100" optional="true"/>
  <recv response="403"/>
"#;
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let sc = scenario("untrusted", &[options, &invite("", &offer), refused, ACK_NON_2XX]);
    // 4 calls at 2/s: 12 requests, under the front's flood limit (16 in 2 s).
    let load = place_calls_from("127.0.0.2", &dir, &sc, cluster.kamailio.addr(), CALLS, 2);
    let kamailio_log = cluster.kamailio.log();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{kamailio_log}", load.errors);
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0), "OPTIONS 200 and INVITE 403 each time");
    assert_eq!(kamailio_log.matches("INVITE from untrusted 127.0.0.2").count(), CALLS as usize, "{kamailio_log}");
    for (i, node) in cluster.nodes.iter().enumerate() {
        let log = node.log();
        assert!(!log.contains("}: INVITE from="), "node {i} saw an untrusted INVITE:\n{log}");
    }
    // The same INVITE from the trusted address goes through (the test above
    // is not a front that refuses everything).
    let ok_dir = scratch_dir("cluster-untrusted-ok-sipp");
    let load = place_calls(&ok_dir, &call(200), cluster.kamailio.addr(), 1, 1);
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (1, 0));
    eprintln!("untrusted: {CALLS} INVITEs from 127.0.0.2 refused 403 by the front, none reached an agent");
}

/// A node still ringing after the dispatch's 10 s ringing timer is taken as
/// dead mid-ring: Kamailio cancels it, marks it inactive and gives the call to
/// the next node; the caller is answered there, ringing throughout. Node 0
/// answers after 15 s, the others after 50 ms; 3 calls, one of them dealt to
/// node 0 by round-robin.
#[test]
fn a_node_ringing_past_the_timer_fails_over() {
    const CALLS: u32 = 3;
    let cluster = Cluster::start_answering("cluster-ringing", [15_000, 50, 50]);
    let dir = scratch_dir("cluster-ringing-sipp");
    let started = Instant::now();
    let load = place_calls(&dir, &call(200), cluster.kamailio.addr(), CALLS, 1);
    let took = started.elapsed();
    let kamailio_log = cluster.kamailio.log();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{kamailio_log}", load.errors);
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0));
    let slow = cluster.nodes[0].log();
    assert_eq!(log_times(&slow, "}: INVITE from=").len(), 1, "node 0 got one call:\n{slow}");
    assert_eq!(kamailio_log.matches("timed out, marked inactive").count(), 1, "{kamailio_log}");
    assert!(took >= Duration::from_secs(10), "the slow node's call rang 10 s first: {took:?}");
    let fast: Vec<&AgentProc> = cluster.nodes[1..].iter().collect();
    let per_node = wait_finished_leads(&fast, CALLS as usize, Duration::from_secs(10));
    let answered: BTreeSet<String> = per_node
        .iter()
        .flatten()
        .filter(|l| l["ended_by"] == "caller")
        .map(|l| l["call_id"].as_str().expect("call_id").to_string())
        .collect();
    eprintln!(
        "ringing: {CALLS} calls, node 0 answering after 15 s: all answered in {took:?}, {} on nodes 1 and 2",
        answered.len()
    );
    assert_eq!(answered.len(), CALLS as usize, "every call answered by a fast node: {per_node:?}");
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

/// The lead's `received_at` (RFC 3339).
fn received_at(lead: &serde_json::Value) -> jiff::Timestamp {
    lead["received_at"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("received_at: {lead}"))
}

/// Wait (bounded) until a new INVITE reaches `node` past byte `from` of its
/// log: Kamailio sends calls only to nodes its OPTIONS probe found alive
/// (two good probes in a row after a failed one), so this is the probe
/// bringing the node back. Returns when that INVITE was logged.
fn wait_taken_back(node: &AgentProc, from: usize, limit: Duration) -> jiff::Timestamp {
    let deadline = Instant::now() + limit;
    loop {
        let log = node.log();
        if let Some(t) = log.get(from..).and_then(|new| log_times(new, "}: INVITE from=").into_iter().next()) {
            return t;
        }
        assert!(Instant::now() < deadline, "node on port {} never got a call back; log:\n{log}", node.port);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A rolling restart under load: each node in turn is SIGTERMed, drains (its
/// calls in progress finish), exits, starts again on the same port and data
/// directory, and is taken back by Kamailio's probe before the next one goes.
/// No call fails, every call has exactly one lead (a restarted node's
/// `leads.jsonl` keeps the earlier ones), none `interrupted`, and every node
/// takes calls again after its restart.
#[test]
fn a_rolling_restart_under_load_loses_no_call() {
    // 30 s of load: the three restarts take about 12 s here, so a machine
    // twice as slow still finishes them (each needs a call to come back)
    // while calls are coming in.
    const CALLS: u32 = 300;
    let mut cluster = Cluster::start("cluster-rolling");
    let dir = scratch_dir("cluster-rolling-sipp");
    let target = cluster.kamailio.addr();
    let started = Instant::now();
    let load = std::thread::spawn(move || place_calls(&dir, &call(2000), target, CALLS, 10));

    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.nodes[0].log().matches("ACK received").count() < 2 {
        assert!(Instant::now() < deadline, "node 0 never got calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Per node: (SIGTERM at, up again at, first call after it at).
    let mut restarts = Vec::new();
    for i in 0..3 {
        let node = &mut cluster.nodes[i];
        let sigterm = jiff::Timestamp::now();
        node.sigterm();
        assert!(node.wait_exit(Duration::from_secs(25)), "node {i} exits cleanly once drained\n{}", node.log());
        let exited = jiff::Timestamp::now();
        let from = node.log().len();
        node.restart();
        let up = jiff::Timestamp::now();
        let back = wait_taken_back(node, from, Duration::from_secs(10));
        eprintln!(
            "rolling: node {i} drained and exited {:?} after SIGTERM, up again {:?} later, \
             its first call back {:?} after that ({:?} into the load)",
            exited.duration_since(sigterm),
            up.duration_since(exited),
            back.duration_since(up),
            started.elapsed()
        );
        restarts.push((sigterm, up, back));
    }
    let restarted_in = started.elapsed();

    let load = load.join().unwrap();
    let took = started.elapsed();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0), "0 failed calls");

    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_finished_leads(&nodes, CALLS as usize, Duration::from_secs(10));
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    assert_eq!(shares.iter().sum::<usize>(), CALLS as usize, "one lead per call: {shares:?}");
    assert_eq!(one_lead_per_call(&per_node).len(), CALLS as usize);
    for lead in per_node.iter().flatten() {
        assert_ne!(lead["outcome"], "interrupted", "{lead}");
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
    // Each node's calls before its SIGTERM (kept across the restart) and after it came back.
    let split: Vec<(usize, usize)> = per_node
        .iter()
        .zip(&restarts)
        .map(|(leads, (sigterm, up, _))| {
            let before = leads.iter().filter(|l| received_at(l) < *sigterm).count();
            let after = leads.iter().filter(|l| received_at(l) >= *up).count();
            (before, after)
        })
        .collect();
    eprintln!(
        "rolling: {CALLS} calls at 10/s, 2 s each, in {took:?} (three restarts done in {restarted_in:?}): \
         SIPp {} ok, {} failed; leads per node {shares:?}; (before SIGTERM, after restart) per node {split:?}",
        load.successful, load.failed
    );
    for (i, (before, after)) in split.iter().enumerate() {
        assert!(*before > 0, "node {i} took calls before its restart: {split:?}");
        assert!(*after > 0, "node {i} took calls after its restart: {split:?}");
    }
}

/// The Call-IDs of the calls `node` took (its log's `INVITE received`; the
/// `call.missed` event is committed then) that have no lead yet (a lead is
/// written when its call ends).
fn open_calls(node: &AgentProc) -> BTreeSet<String> {
    let taken: BTreeSet<String> = node
        .log()
        .lines()
        .filter(|l| l.contains("}: INVITE received on line"))
        .filter_map(|l| Some(l.split_once("call{call_id=")?.1.split_once('}')?.0.to_string()))
        .collect();
    let ended: BTreeSet<String> =
        final_leads(node).iter().filter_map(|l| Some(l["call_id"].as_str()?.to_string())).collect();
    taken.difference(&ended).cloned().collect()
}

/// kill -9 of a node under load. New calls fail over to the others (an INVITE
/// that meets the dead node gets no answer: the failure route moves it on at
/// `fr_timer`, and the probe marks the node inactive). Calls in progress on
/// it are lost at the SIP level (SIPp counts them failed: their BYE has
/// nowhere to go); every other call, those placed after the kill among them,
/// succeeds. Started again on its data directory, the node's recovery closes
/// each cut-off call's lead as `interrupted`, exactly once.
///
/// Not built yet: the shared-store takeover, where a survivor closes the dead
/// node's open calls without waiting for it to come back (issue 17's
/// PostgreSQL store); here the leads stay on the dead node's disk until it
/// restarts.
#[test]
fn a_killed_node_loses_only_its_calls_in_progress() {
    const CALLS: u32 = 90;
    let mut cluster = Cluster::start("cluster-crash");
    let dir = scratch_dir("cluster-crash-sipp");
    let target = cluster.kamailio.addr();
    let started = Instant::now();
    let sipp_dir = dir.clone();
    let load = std::thread::spawn(move || place_calls(&sipp_dir, &call(3000), target, CALLS, 10));

    // Kill node 0 right after one of its calls is ACKed, with a few up: the
    // next INVITE for it is then a round-robin turn away, so no call is
    // caught between its 100 Trying and its 200 OK (that one would ring on
    // to the dispatch's ringing timer, 10 s, before going to the next node:
    // not measured here).
    let acks = |n: &AgentProc| n.log().matches("ACK received").count();
    let deadline = Instant::now() + Duration::from_secs(15);
    while acks(&cluster.nodes[0]) < 4 {
        assert!(Instant::now() < deadline, "node 0 never got calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = acks(&cluster.nodes[0]);
    while acks(&cluster.nodes[0]) == seen {
        assert!(Instant::now() < deadline, "node 0 got no more calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = jiff::Timestamp::now();
    cluster.nodes[0].kill9();
    let killed_after = started.elapsed();
    let up = open_calls(&cluster.nodes[0]);
    assert!(!up.is_empty(), "node 0 had calls up at the kill");

    let load = load.join().unwrap();
    let took = started.elapsed();
    let kamailio_log = cluster.kamailio.log();
    assert_eq!(load.successful + load.failed, CALLS as u64, "{}", load.errors);
    assert!(load.failed > 0, "the killed node's calls in progress fail at the SIP level");
    assert!(
        load.failed as usize <= up.len(),
        "{} failed, only {} were up on the killed node: {}\nkamailio:\n{kamailio_log}",
        load.failed,
        up.len(),
        load.errors
    );

    // The survivors took every call placed after the kill, each ended by the caller.
    let others: Vec<&AgentProc> = cluster.nodes[1..].iter().collect();
    let ended_before = final_leads(&cluster.nodes[0]).len();
    let expected = CALLS as usize - ended_before - up.len();
    let survivors = wait_finished_leads(&others, expected, Duration::from_secs(10));
    let survived: usize = survivors.iter().map(Vec::len).sum();
    assert_eq!(
        survived,
        expected,
        "every call is ended before the kill on node 0 ({ended_before}), cut off on it ({}), or taken by nodes 1 and 2",
        up.len()
    );
    let after_kill = survivors.iter().flatten().filter(|l| received_at(l) > killed).count();
    assert!(after_kill > 0, "calls were placed after the kill");
    for lead in survivors.iter().flatten() {
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
    let failovers = kamailio_log.matches(": retry on ").count();

    // Restart node 0 on its data directory: its recovery closes the cut-off calls.
    let restart = Instant::now();
    cluster.nodes[0].restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let versions = cluster.nodes[0].leads();
        let closed: Vec<String> = versions
            .iter()
            .filter(|l| l["outcome"] == "interrupted")
            .map(|l| l["call_id"].as_str().expect("call_id").to_string())
            .collect();
        if closed.len() >= up.len() || Instant::now() > deadline {
            break closed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let recovered_in = restart.elapsed();
    // Give a second closing (a defect) the time to show up before counting.
    std::thread::sleep(Duration::from_millis(500));
    let closed_final: Vec<_> =
        cluster.nodes[0].leads().iter().filter(|l| l["outcome"] == "interrupted").cloned().collect();
    assert_eq!(closed_final.len(), closed.len(), "each cut-off call is closed once: {closed_final:?}");
    let closed_set: BTreeSet<String> = closed.iter().cloned().collect();
    assert_eq!(closed.len(), closed_set.len(), "no lead closed twice: {closed:?}");
    assert_eq!(closed_set, up, "exactly the calls up at the kill are closed as interrupted");
    for lead in &closed_final {
        assert_eq!(lead["ended_by"], "error", "{lead}");
    }

    let mut all = vec![final_leads(&cluster.nodes[0])];
    all.extend(survivors);
    let shares: Vec<usize> = all.iter().map(Vec::len).collect();
    assert_eq!(one_lead_per_call(&all).len(), CALLS as usize, "one lead per call: {shares:?}");
    eprintln!(
        "crash: {CALLS} calls at 10/s, 3 s each, in {took:?}; node 0 killed {killed_after:?} in with {} calls up; \
         SIPp {} ok, {} failed; {} calls after the kill, all on nodes 1 and 2; failovers in Kamailio's log: \
         {failovers}; leads per node {shares:?}; node 0 restarted and closed {} as interrupted in {recovered_in:?}",
        up.len(),
        load.successful,
        load.failed,
        after_kill,
        closed.len()
    );
}
