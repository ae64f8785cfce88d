//! Three agents behind Kamailio's dispatcher (the shipped
//! `deploy/kamailio/kamailio.cfg`) sharing one PostgreSQL database
//! (`[store]`, Debian's PostgreSQL 15 started by `common::postgres`), SIPp as
//! the load and a real webhook receiver configured on every node (issue 17):
//!
//! 1. spread: 300 calls at 20/s, every node takes a share, every call one
//!    lead and exactly one `lead.completed` at the receiver;
//! 2. drain: SIGTERM one node under load, 0 failed calls, one
//!    `lead.completed` each, none interrupted;
//! 3. crash: kill -9 one node under load, a survivor sends each of its calls
//!    in progress one `lead.completed`, `interrupted`, while it stays dead;
//!    its pending webhook events are delivered by the others;
//! 4. database outage: PostgreSQL stopped for 10 s under load, then started:
//!    0 failed calls, 0 leads lost, no duplicate by event id;
//! 5. callback: the node holding a lead dies before its callback is due;
//!    exactly one `lead.callback_overdue` arrives;
//! 6. any node: one node's API and inbox list another node's lead, and its
//!    signed recording link is served by another node (recordings in the
//!    database, and in a shared directory);
//! 7. frozen: a node stopped (SIGSTOP) past `dead_after_secs` with calls
//!    up is reaped (one `interrupted` each), and once thawed the real end of
//!    those calls goes out as `lead.updated`, not a second `lead.completed`;
//! 8. the same with the reaping transaction slowed (a trigger sleeps in it)
//!    while the thawed node ships its own ends: still one `lead.completed`.
//!
//! Run with `--nocapture` for the figures. The pieces of `tests/cluster.rs`
//! used here (the Kamailio config, the SIPp load and its figures) are
//! duplicated rather than shared, so that file stays as it is.

mod common;
mod web;

use common::kamailio::Kamailio;
use common::postgres::Postgres;
use common::receiver::{Receiver, Reply, SECRET, Seen, key};
use common::scenario::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The probe interval the test runs Kamailio with (the shipped file says 5 s).
const PING_SECS: u64 = 1;

/// The server is shared by the tests of this binary: the outage test stops
/// it, so it runs alone (write), the others together (read).
static DB_GATE: RwLock<()> = RwLock::new(());

fn db_shared() -> RwLockReadGuard<'static, ()> {
    DB_GATE.read().unwrap_or_else(|e| e.into_inner())
}

fn db_alone() -> RwLockWriteGuard<'static, ()> {
    DB_GATE.write().unwrap_or_else(|e| e.into_inner())
}

/// What the crash test needs of `[store]`: a silent node dead after 3 s,
/// its claims anyone's again after 5 s. The other tests keep the defaults
/// (15 s, 60 s), as a deployment would.
const FAST_FAILOVER: &str = "dead_after_secs = 3\nlease_secs = 5\n";

/// A node's config: SIP behind the front, the shared store (with
/// `store_extra` in its section), the receiver as its webhook, and `extra`.
fn node_config(i: usize, url: &str, store_extra: &str, hook_port: u16, extra: &str) -> String {
    format!(
        "[sip]\nanswer_after_ms = 50\ntrusted_sources = [\"127.0.0.1\"]\n[call]\nshutdown_grace_secs = 20\n\
         [store]\nurl = \"{url}\"\nnode = \"node{i}\"\nheartbeat_ms = 500\n{store_extra}\
         [[webhook]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"{SECRET}\"\nmax_retry_interval_s = 1\n\
         {extra}"
    )
}

/// `n` agents on the store `url`; node `i` gets `extra(i)` appended.
fn start_nodes(
    name: &str,
    n: usize,
    url: &str,
    store_extra: &str,
    hook_port: u16,
    extra: impl Fn(usize) -> String,
) -> Vec<AgentProc> {
    (0..n)
        .map(|i| AgentProc::start(&format!("{name}-node{i}"), &node_config(i, url, store_extra, hook_port, &extra(i))))
        .collect()
}

/// Scratch directories removed when dropped, unless the test is failing
/// (then they stay, as the agents' do).
struct Scratch(Vec<std::path::PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            for d in &self.0 {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

/// Three agents on one store and the Kamailio in front of them (its
/// directory removed after it stopped: fields drop in order).
struct Cluster {
    nodes: Vec<AgentProc>,
    kamailio: Kamailio,
    _dir: Scratch,
}

impl Cluster {
    fn start(name: &str, url: &str, store_extra: &str, hook_port: u16) -> Cluster {
        let nodes = start_nodes(name, 3, url, store_extra, hook_port, |_| String::new());
        let dir = scratch_dir(&format!("{name}-kamailio"));
        let list: String = nodes.iter().map(|n| format!("1 sip:127.0.0.1:{} 0 0\n", n.port)).collect();
        std::fs::write(dir.join("dispatcher.list"), list).unwrap();
        let kamailio = Kamailio::start(&dir, &deploy_config(&dir.join("dispatcher.list")));
        // Kamailio's first round of OPTIONS probes is done one interval after its start.
        std::thread::sleep(Duration::from_millis(PING_SECS * 1000 + 300));
        Cluster { nodes, kamailio, _dir: Scratch(vec![dir]) }
    }

    fn logs(&self) -> String {
        let nodes: Vec<&AgentProc> = self.nodes.iter().collect();
        logs(&nodes)
    }
}

/// The nodes' logs without their DEBUG lines (each keeps its whole log in its kept directory).
fn logs(nodes: &[&AgentProc]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push_str(&format!("=== {}/agent.log, INFO and up:\n", n.dir.display()));
        for line in n.log().lines() {
            let level = line.split_whitespace().nth(1).unwrap_or("");
            if ["INFO", "WARN", "ERROR"].contains(&level) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The shipped config with its documented defaults replaced for loopback (as tests/cluster.rs does).
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

/// One call straight to an agent (no front): answered, held `hold_ms`, the caller hangs up.
fn direct_call(agent: &AgentProc, name: &str, hold_ms: u64) {
    let dir = scratch_dir(name);
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let sc = scenario(name, &[&invite("", &offer), ANSWERED, &ack(1), &pause(hold_ms), CALLER_BYE]);
    let _dir = Scratch(vec![dir.clone()]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
}

/// As [`direct_call`], the caller sending `ms` of line noise as RTP (from
/// a pcap, SIPp's `play_pcap_audio`), so a whole-call recording has audio.
fn direct_call_with_audio(agent: &AgentProc, name: &str, ms: u64) {
    let dir = scratch_dir(name);
    let mut audio = common::pcap::CallerAudio::new(101).with_line_noise(7);
    audio.silence_until(ms);
    let pcap = dir.join("caller.pcap");
    audio.write(&pcap);
    let play = format!("  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", pcap.display());
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let sc = scenario(name, &[&invite("", &offer), ANSWERED, &ack(1), &play, &pause(ms + 300), CALLER_BYE]);
    let _dir = Scratch(vec![dir.clone()]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
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
        .args(["-timeout", "60s", "-timeout_error", "-trace_err", "-trace_stat", "-stf", "stat.csv"])
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

/// Each lead's last version in a node's `leads.jsonl` (its own calls).
fn final_leads(node: &AgentProc) -> Vec<serde_json::Value> {
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for lead in node.leads() {
        by_id.insert(lead["id"].as_str().expect("lead id").to_string(), lead);
    }
    by_id.into_values().collect()
}

fn call_ids(leads: &[serde_json::Value]) -> BTreeSet<String> {
    leads.iter().filter_map(|l| Some(l["call_id"].as_str()?.to_string())).collect()
}

/// The lead's `received_at` (RFC 3339).
fn received_at(lead: &serde_json::Value) -> jiff::Timestamp {
    lead["received_at"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("received_at: {lead}"))
}

/// The Call-IDs of the calls `node` took (its log's `INVITE received`) that
/// have no lead in its `leads.jsonl` (written when the call ends).
fn open_calls(node: &AgentProc) -> BTreeSet<String> {
    let taken: BTreeSet<String> = node
        .log()
        .lines()
        .filter(|l| l.contains("}: INVITE received on line"))
        .filter_map(|l| Some(l.split_once("call{call_id=")?.1.split_once('}')?.0.to_string()))
        .collect();
    taken.difference(&call_ids(&final_leads(node))).cloned().collect()
}

/// The events a (dead) node committed to its SQLite outbox and had not
/// shipped to PostgreSQL: (kind, Call-ID, committed at in Unix ms).
fn unshipped(node: &AgentProc) -> Vec<(String, String, i64)> {
    let db = rusqlite::Connection::open_with_flags(
        node.dir.join("data/outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the node's outbox");
    let mut q = db
        .prepare(
            "SELECT e.kind, e.call_id, e.created_ms FROM events e JOIN deliveries d ON d.seq = e.seq \
             WHERE d.sink = 'postgres' AND d.state = 'pending' ORDER BY e.seq",
        )
        .expect("the outbox's tables");
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

/// The timestamps (the first word, RFC 3339) of the agent log's lines saying `what`.
fn log_times(log: &str, what: &str) -> Vec<jiff::Timestamp> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .collect()
}

/// What the receiver got, counted.
struct Delivered {
    /// Requests answered 2xx.
    accepted: usize,
    /// Distinct webhook-ids (event ids) among them.
    unique: usize,
    /// Event ids delivered more than once, with their count.
    duplicate_ids: BTreeMap<String, usize>,
    /// Requests whose signature did not verify.
    bad_signatures: usize,
    /// Per Call-ID, the distinct `lead.completed` events (id, the event).
    completed: BTreeMap<String, BTreeMap<String, Seen>>,
    /// Per event type, distinct event ids.
    by_kind: BTreeMap<String, usize>,
}

impl Delivered {
    fn of(seen: &[Seen]) -> Delivered {
        let ok: Vec<&Seen> = seen.iter().filter(|s| (200..300).contains(&s.status)).collect();
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let mut completed: BTreeMap<String, BTreeMap<String, Seen>> = BTreeMap::new();
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for s in &ok {
            let n = count.entry(s.webhook_id.clone()).or_default();
            *n += 1;
            if *n == 1 {
                *by_kind.entry(s.kind().to_string()).or_default() += 1;
            }
            if s.kind() == "lead.completed" {
                completed.entry(s.call_id().to_string()).or_default().insert(s.webhook_id.clone(), (*s).clone());
            }
        }
        Delivered {
            accepted: ok.len(),
            unique: count.len(),
            duplicate_ids: count.iter().filter(|(_, n)| **n > 1).map(|(k, n)| (k.clone(), *n)).collect(),
            bad_signatures: seen.iter().filter(|s| !s.signature_ok).count(),
            completed,
            by_kind,
        }
    }

    /// Call-IDs with more than one distinct `lead.completed`.
    fn calls_completed_twice(&self) -> Vec<(&String, Vec<&String>)> {
        self.completed.iter().filter(|(_, e)| e.len() > 1).map(|(c, e)| (c, e.keys().collect())).collect()
    }

    fn figures(&self) -> String {
        format!(
            "events delivered {} (distinct ids {}, by type {:?}), duplicate deliveries {}, lead.completed for {} calls, \
             calls with two lead.completed {}",
            self.accepted,
            self.unique,
            self.by_kind,
            self.accepted - self.unique,
            self.completed.len(),
            self.calls_completed_twice().len()
        )
    }
}

/// Wait (bounded) until the receiver holds a `lead.completed` for each of `calls`.
fn wait_completed(rx: &Receiver, calls: &BTreeSet<String>, limit: Duration) -> Delivered {
    let deadline = Instant::now() + limit;
    loop {
        let d = Delivered::of(&rx.seen());
        if calls.iter().all(|c| d.completed.contains_key(c)) || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (bounded) until the nodes' `leads.jsonl` hold `n` finished leads in all.
fn wait_leads(nodes: &[&AgentProc], n: usize, limit: Duration) -> Vec<Vec<serde_json::Value>> {
    let deadline = Instant::now() + limit;
    loop {
        let per_node: Vec<_> = nodes.iter().map(|a| final_leads(a)).collect();
        let total: usize = per_node.iter().map(Vec::len).sum();
        // Finished: ended, or closed as interrupted by a survivor.
        let done = per_node.iter().flatten().all(|l| l["ended_at"].is_string() || l["outcome"] == "interrupted");
        if (total >= n && done) || Instant::now() > deadline {
            return per_node;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Call-IDs of the nodes' leads, and those with more than one lead
/// (on one node or across nodes).
fn lead_calls(per_node: &[Vec<serde_json::Value>]) -> (BTreeSet<String>, Vec<String>) {
    let mut seen = BTreeMap::<String, Vec<String>>::new();
    for (i, leads) in per_node.iter().enumerate() {
        for lead in leads {
            let call = lead["call_id"].as_str().expect("call_id").to_string();
            seen.entry(call).or_default().push(format!("{} on node{i}", lead["outcome"]));
        }
    }
    let dup = seen.iter().filter(|(_, l)| l.len() > 1).map(|(c, l)| format!("{c}: {}", l.join(", "))).collect();
    (seen.into_keys().collect(), dup)
}

/// The shared store's count of `sql` (one number).
fn count(pg: &Postgres, db: &str, sql: &str) -> u64 {
    pg.psql(db, sql).trim().parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The harness alone: a database reached with the role's password over
/// TCP, the server stopped (the port closes) and started again on the same
/// data (the rows are still there).
#[test]
fn the_postgres_harness_starts_stops_and_starts_again() {
    let _alone = db_alone();
    let pg = Postgres::shared();
    let url = pg.fresh_database("harness");
    let out = psql_url(&url, "CREATE TABLE t (n INT); INSERT INTO t VALUES (42); SELECT current_user");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().last(), Some("backstop"));
    let wrong = psql_url(&url.replace(common::postgres::PASSWORD, "wrong"), "SELECT 1");
    assert!(!wrong.status.success(), "a wrong password is refused");
    let started = Instant::now();
    pg.stop();
    let stopped_in = started.elapsed();
    assert!(!pg.try_psql("harness", "SELECT 1").status.success(), "stopped");
    assert!(std::net::TcpStream::connect(pg.addr()).is_err(), "its port is closed");
    let started = Instant::now();
    pg.start();
    let up_in = started.elapsed();
    assert_eq!(pg.psql("harness", "SELECT n FROM t"), "42");
    println!("postgres harness: port {}, stopped in {stopped_in:?}, up again in {up_in:?}", pg.port);
}

/// psql as a client of `url` (TCP, the password in the URL).
fn psql_url(url: &str, sql: &str) -> std::process::Output {
    Command::new("/usr/bin/psql")
        .arg(url)
        .args(["-At", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// 1. 300 calls at 20/s through the front: every node takes a share, every
///    call makes one lead, and the receiver gets exactly one `lead.completed`
///    per call (by event id and by Call-ID), whichever node delivers it.
#[test]
fn calls_spread_over_three_nodes_with_one_lead_completed_each() {
    const CALLS: u32 = 300;
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database("spread");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    let cluster = Cluster::start("store-spread", &url, "", hook_port);
    let dir = scratch_dir("store-spread-sipp");
    let _sipp = Scratch(vec![dir.clone()]);
    let started = Instant::now();
    let load = place_calls(&dir, &call(1000), cluster.kamailio.addr(), CALLS, 20);
    let took = started.elapsed();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0));

    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_leads(&nodes, CALLS as usize, Duration::from_secs(15));
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    let (calls, dup_leads) = lead_calls(&per_node);
    let d = wait_completed(&rx, &calls, Duration::from_secs(30));
    let delivered_in = started.elapsed();
    let shipped = count(pg, "spread", "SELECT count(*) FROM events WHERE kind = 'lead.completed'");
    let undelivered = count(pg, "spread", "SELECT count(*) FROM deliveries WHERE state <> 'done'");
    println!(
        "store spread: {CALLS} calls at 20/s, 1 s each, SIPp done in {took:?}: {} ok, {} failed; leads per node \
         {shares:?} ({} in all); {}; all delivered {delivered_in:?} after the first call; lead.completed in \
         PostgreSQL {shipped}, deliveries not done {undelivered}",
        load.successful,
        load.failed,
        calls.len(),
        d.figures()
    );
    assert!(shares.iter().all(|n| *n > 0), "every node takes a share: {shares:?}");
    assert!(dup_leads.is_empty(), "Call-IDs with more than one lead: {dup_leads:?}");
    assert_eq!(calls.len(), CALLS as usize, "one lead per call: {shares:?}");
    assert_eq!(d.bad_signatures, 0);
    let missing: Vec<_> = calls.iter().filter(|c| !d.completed.contains_key(*c)).collect();
    assert!(missing.is_empty(), "calls without lead.completed at the receiver: {missing:?}\n{}", cluster.logs());
    assert!(d.calls_completed_twice().is_empty(), "calls with two lead.completed: {:?}", d.calls_completed_twice());
    assert_eq!(d.completed.len(), CALLS as usize, "lead.completed only for the calls placed");
    assert!(d.duplicate_ids.is_empty(), "event ids delivered twice: {:?}", d.duplicate_ids);
    assert_eq!(shipped, CALLS as u64);
    for lead in per_node.iter().flatten() {
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
}

/// 2. SIGTERM one node under load: no call fails, its calls in progress
///    finish, and every call still gets exactly one `lead.completed`, none
///    interrupted (it left nothing for a survivor to close).
#[test]
fn a_draining_node_loses_no_call_and_no_event() {
    const CALLS: u32 = 80;
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database("drain");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    let mut cluster = Cluster::start("store-drain", &url, "", hook_port);
    let dir = scratch_dir("store-drain-sipp");
    let _sipp = Scratch(vec![dir.clone()]);
    let target = cluster.kamailio.addr();
    let load = std::thread::spawn(move || place_calls(&dir, &call(3000), target, CALLS, 10));

    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.nodes[0].log().matches("ACK received").count() < 4 {
        assert!(Instant::now() < deadline, "node 0 never got calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let in_progress = open_calls(&cluster.nodes[0]);
    let sigterm = jiff::Timestamp::now();
    cluster.nodes[0].sigterm();
    let exited = cluster.nodes[0].wait_exit(Duration::from_secs(30));
    let drained_after = jiff::Timestamp::now().duration_since(sigterm);

    let load = load.join().unwrap();
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0), "0 failed calls");
    assert!(exited, "node 0 exits cleanly once its calls are done\n{}", logs(&[&cluster.nodes[0]]));

    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_leads(&nodes, CALLS as usize, Duration::from_secs(15));
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    let (calls, dup_leads) = lead_calls(&per_node);
    let d = wait_completed(&rx, &calls, Duration::from_secs(30));
    let node0_calls = call_ids(&per_node[0]);
    let late = log_times(&cluster.nodes[0].log(), "}: INVITE from=")
        .into_iter()
        .filter(|t| *t > sigterm + jiff::SignedDuration::from_millis((PING_SECS * 1000 + 1000) as i64))
        .count();
    let gone = pg.psql("drain", "SELECT coalesce(reaped_by, '-') FROM nodes WHERE node = 'node0'");
    println!(
        "store drain: {CALLS} calls at 10/s, 3 s each: SIPp {} ok, {} failed; node 0 had {} calls up at SIGTERM, \
         exited after {drained_after:?}; leads per node {shares:?} ({} in all); {}; INVITEs on node 0 past a probe \
         interval after SIGTERM: {late}; node0's row reaped_by: {gone}",
        load.successful,
        load.failed,
        in_progress.len(),
        calls.len(),
        d.figures()
    );
    assert!(dup_leads.is_empty(), "Call-IDs with more than one lead: {dup_leads:?}");
    assert_eq!(calls.len(), CALLS as usize, "one lead per call: {shares:?}");
    assert!(!in_progress.is_empty(), "node 0 had calls up at SIGTERM");
    assert!(in_progress.is_subset(&node0_calls), "its calls in progress finished on it: {in_progress:?}");
    let missing: Vec<_> = calls.iter().filter(|c| !d.completed.contains_key(*c)).collect();
    assert!(missing.is_empty(), "calls without lead.completed at the receiver: {missing:?}\n{}", cluster.logs());
    assert!(d.calls_completed_twice().is_empty(), "calls with two lead.completed: {:?}", d.calls_completed_twice());
    assert!(d.duplicate_ids.is_empty(), "event ids delivered twice: {:?}", d.duplicate_ids);
    for (call, events) in &d.completed {
        for ev in events.values() {
            assert_ne!(ev.event["lead"]["outcome"], "interrupted", "{call}: {}", ev.event);
        }
    }
    for lead in per_node.iter().flatten() {
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
    assert_eq!(late, 0, "no new call reached node 0 after a probe interval");
    assert_eq!(gone, "node0", "a drained node marks itself gone: no survivor reaps it");
}

/// 3. kill -9 of one node under load (calls holding 3 s, so some are up on
///    it). While it stays dead, a survivor sends each of its calls in
///    progress exactly one `lead.completed`, outcome `interrupted`; the events
///    it had shipped and not yet delivered (the receiver answers 503 until
///    the kill, so there are some) reach the receiver through the others; new
///    calls fail over; no event id twice, no call with two `lead.completed`.
#[test]
fn a_killed_nodes_calls_are_closed_by_a_survivor_while_it_stays_dead() {
    const CALLS: u32 = 90;
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database("crash");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    rx.set_default(Reply::status(503));
    let mut cluster = Cluster::start("store-crash", &url, FAST_FAILOVER, hook_port);
    let dir = scratch_dir("store-crash-sipp");
    let _sipp = Scratch(vec![dir.clone()]);
    let target = cluster.kamailio.addr();
    let started = Instant::now();
    let load = std::thread::spawn(move || place_calls(&dir, &call(3000), target, CALLS, 10));

    // Once node 0 has ended calls (their lead.completed waiting for the
    // receiver too), right after one of its calls is ACKed (as
    // tests/cluster.rs does: no call of it is then caught between its 100
    // and its 200).
    let acks = |n: &AgentProc| n.log().matches("ACK received").count();
    let deadline = Instant::now() + Duration::from_secs(15);
    while final_leads(&cluster.nodes[0]).len() < 2 {
        assert!(Instant::now() < deadline, "node 0 never ended calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = acks(&cluster.nodes[0]);
    while acks(&cluster.nodes[0]) == seen {
        assert!(Instant::now() < deadline, "node 0 got no more calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    // A node's last events, committed and not shipped yet, wait on its disk
    // until it restarts (the README says so): the kill comes when nothing is
    // waiting to ship if that happens within 2 s, and what was left anyway is
    // counted below.
    let ship_deadline = Instant::now() + Duration::from_secs(2);
    while !unshipped(&cluster.nodes[0]).is_empty() && Instant::now() < ship_deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = jiff::Timestamp::now();
    let killed_at = Instant::now();
    cluster.nodes[0].kill9();
    let killed_after = started.elapsed();
    // What node 0 had shipped and was not delivered yet, and what it held a live claim on.
    let pending: BTreeSet<String> = pg
        .psql(
            "crash",
            "SELECT e.id FROM events e JOIN deliveries d ON d.seq = e.seq WHERE e.node = 'node0' AND d.state = 'pending'",
        )
        .lines()
        .map(str::to_string)
        .collect();
    let leased = count(
        pg,
        "crash",
        "SELECT count(*) FROM deliveries WHERE state = 'pending' AND leased_by = 'node0' \
         AND lease_until_ms > backstop_now_ms()",
    );
    // The receiver takes deliveries again.
    rx.set_default(Reply::status(200));
    let up_at_kill = open_calls(&cluster.nodes[0]);
    let ended_before = call_ids(&final_leads(&cluster.nodes[0]));
    // What it had committed and not shipped (its survivors cannot know of these).
    let left = unshipped(&cluster.nodes[0]);
    let killed_ms = killed.as_millisecond();
    let left_ages: Vec<String> =
        left.iter().map(|(kind, call, at)| format!("{kind} {call} {} ms before", killed_ms - at)).collect();
    assert!(!up_at_kill.is_empty(), "node 0 had calls up at the kill");

    // Its calls up whose call.missed had not shipped: no survivor can know of them.
    let unknown_at_kill: BTreeSet<String> = left
        .iter()
        .filter(|(kind, call, _)| kind == "call.missed" && up_at_kill.contains(call))
        .map(|(_, c, _)| c.clone())
        .collect();
    let known_at_kill: BTreeSet<String> = up_at_kill.difference(&unknown_at_kill).cloned().collect();
    // While node 0 stays dead: a survivor closes each of the others.
    let closed = wait_completed(&rx, &known_at_kill, Duration::from_secs(30));
    let closed_in = killed_at.elapsed();
    let reaped_by = pg.psql("crash", "SELECT coalesce(reaped_by, '-') FROM nodes WHERE node = 'node0'");

    let load = load.join().unwrap();
    let took = started.elapsed();
    let kamailio_log = cluster.kamailio.log();
    assert_eq!(load.successful + load.failed, CALLS as u64, "{}", load.errors);
    // An INVITE node 0 had taken but not answered in time was failed over
    // by Kamailio: that call was not in progress on it (the next node has it).
    let failed_over: BTreeSet<String> = kamailio_log
        .lines()
        .filter(|l| l.contains(": retry on "))
        .filter_map(|l| Some(l.split_once(": call ")?.1.split_once(':')?.0.to_string()))
        .collect();
    let up: BTreeSet<String> = up_at_kill.difference(&failed_over).cloned().collect();
    let unknown: BTreeSet<String> = unknown_at_kill.intersection(&up).cloned().collect();
    let known: BTreeSet<String> = known_at_kill.intersection(&up).cloned().collect();

    // The survivors' own calls (their leads.jsonl also holds the interrupted
    // leads the reaper wrote for node 0's calls).
    let others: Vec<&AgentProc> = cluster.nodes[1..].iter().collect();
    let expected = CALLS as usize - ended_before.len() - up.len();
    let survivors = wait_leads(&others, expected + up.len(), Duration::from_secs(15));
    let (reaped, taken): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        survivors.iter().flatten().partition(|l| up.contains(l["call_id"].as_str().unwrap_or("")));
    let reaped_in_file: Vec<usize> = survivors
        .iter()
        .map(|l| l.iter().filter(|l| up.contains(l["call_id"].as_str().unwrap_or(""))).count())
        .collect();
    let after_kill = taken.iter().filter(|l| received_at(l) > killed).count();
    let all_calls: BTreeSet<String> = ended_before
        .iter()
        .chain(&up)
        .cloned()
        .chain(taken.iter().filter_map(|l| Some(l["call_id"].as_str()?.to_string())))
        .collect();
    let closable: BTreeSet<String> = all_calls.difference(&unknown).cloned().collect();
    let d = wait_completed(&rx, &closable, Duration::from_secs(30));
    let ids: BTreeSet<String> =
        rx.seen().iter().filter(|s| (200..300).contains(&s.status)).map(|s| s.webhook_id.clone()).collect();
    let pending_delivered = pending.iter().filter(|id| ids.contains(*id)).count();
    let quoted: Vec<String> = pending.iter().map(|id| format!("'{}'", id.replace('\'', "''"))).collect();
    let delivered_by = if quoted.is_empty() {
        String::new()
    } else {
        pg.psql(
            "crash",
            &format!(
                "SELECT d.state || ' by ' || coalesce(d.leased_by, '-') || ': ' || count(*) FROM deliveries d \
                 JOIN events e ON e.seq = d.seq WHERE e.id IN ({}) GROUP BY d.state, d.leased_by ORDER BY 1",
                quoted.join(",")
            ),
        )
    };
    let closers = pg.psql(
        "crash",
        "SELECT node || ':' || count(*) FROM events WHERE kind = 'lead.completed' AND body LIKE '%\"interrupted\"%' \
         GROUP BY node ORDER BY node",
    );
    println!(
        "store crash: {CALLS} calls at 10/s, 3 s each, in {took:?}; node 0 killed {killed_after:?} in with {} calls \
         up ({} more it had taken were failed over by Kamailio), {} of its events shipped and not delivered (the receiver answering 503 until then; {leased} under its \
         live claim); SIPp {} ok, {} failed; {} calls on nodes 1 and 2, {after_kill} of them after the kill; node 0's \
         calls up closed as interrupted at the receiver {closed_in:?} after the kill ({} of {}; any other's \
         call.missed had not shipped), reaped by {reaped_by}, interrupted lead.completed in PostgreSQL in the name \
         of [{}], in nodes 1 and 2's leads.jsonl {reaped_in_file:?}; left unshipped in its outbox: {left_ages:?}; its \
         undelivered events delivered by the others: {pending_delivered}/{} ([{}]); {}",
        up.len(),
        up_at_kill.len() - up.len(),
        pending.len(),
        load.successful,
        load.failed,
        taken.len(),
        known.len(),
        up.len(),
        closers.replace('\n', ", "),
        pending.len(),
        delivered_by.replace('\n', ", "),
        d.figures()
    );
    let not_closed: Vec<_> = known.iter().filter(|c| !closed.completed.contains_key(*c)).collect();
    assert!(
        not_closed.is_empty(),
        "calls up on the killed node without lead.completed (node 0 still dead): {not_closed:?}; \
         node 0's events committed and not shipped at the kill: {left_ages:?}\n{}",
        cluster.logs()
    );
    for c in &known {
        let events = &d.completed[c];
        assert_eq!(events.len(), 1, "{c}: one lead.completed: {:?}", events.keys());
        let ev = events.values().next().unwrap();
        assert_eq!(ev.event["lead"]["outcome"], "interrupted", "{c}: {}", ev.event);
    }
    for lead in &reaped {
        assert_eq!(lead["outcome"], "interrupted", "{lead}");
    }
    assert!(!reaped_by.is_empty() && reaped_by != "-" && reaped_by != "node0", "reaped by a survivor: {reaped_by}");
    for c in &unknown {
        assert!(!d.completed.contains_key(c), "{c}: closed, though its call.missed never shipped");
    }
    for (kind, call, at) in &left {
        assert!(killed_ms - at < 1000, "{kind} of {call} unshipped {} ms before the kill", killed_ms - at);
    }
    assert!(!pending.is_empty(), "node 0 had undelivered events at the kill");
    assert_eq!(pending_delivered, pending.len(), "the dead node's undelivered events reach the receiver");
    assert!(!delivered_by.contains("node0"), "delivered by the others: {delivered_by}");
    assert!(
        load.failed as usize <= up.len(),
        "{} failed, {} were up: {}\n{kamailio_log}",
        load.failed,
        up.len(),
        load.errors
    );
    assert_eq!(taken.len(), expected, "every call not on node 0 at the kill was taken by nodes 1 and 2");
    assert!(after_kill > 0, "calls were placed after the kill");
    for lead in &taken {
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
    let missing: Vec<_> = closable.iter().filter(|c| !d.completed.contains_key(*c)).collect();
    assert!(missing.is_empty(), "calls without lead.completed: {missing:?}");
    assert_eq!(all_calls.len(), CALLS as usize);
    assert!(d.calls_completed_twice().is_empty(), "calls with two lead.completed: {:?}", d.calls_completed_twice());
    assert!(d.duplicate_ids.is_empty(), "event ids delivered twice: {:?}", d.duplicate_ids);
}

/// The outage test's `[store]`: a node silent 5 s is dead, so that the
/// reaping is live within the test (the default 15 s would outlast it) and a
/// node taken for dead for having been cut off with the others shows.
const OUTAGE_STORE: &str = "dead_after_secs = 5\n";

/// 4. PostgreSQL stopped for 10 s under load, then started: calls go on
///    (0 failed), every call answered has exactly one `lead.completed` at
///    the receiver once it is back, and no event id arrives twice.
#[test]
fn a_database_outage_under_load_loses_no_lead() {
    const CALLS: u32 = 200;
    let _alone = db_alone();
    let pg = Postgres::shared();
    let url = pg.fresh_database("outage");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    let cluster = Cluster::start("store-outage", &url, OUTAGE_STORE, hook_port);
    let dir = scratch_dir("store-outage-sipp");
    let _sipp = Scratch(vec![dir.clone()]);
    let target = cluster.kamailio.addr();
    let started = Instant::now();
    let load = std::thread::spawn(move || place_calls(&dir, &call(2000), target, CALLS, 10));

    // Once events flow (10 calls' lead.completed delivered), stop the server for 10 s.
    rx.wait_for(Duration::from_secs(15), "10 lead.completed", |s| {
        s.iter().filter(|x| x.kind() == "lead.completed").count() >= 10
    });
    let before = Delivered::of(&rx.seen());
    let stop_at = started.elapsed();
    pg.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let during = Delivered::of(&rx.seen());
    let down_for = stopped.elapsed();
    pg.start();
    let back_at = started.elapsed();

    let load = load.join().unwrap();
    let took = started.elapsed();
    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_leads(&nodes, CALLS as usize, Duration::from_secs(15));
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    let (calls, dup_leads) = lead_calls(&per_node);
    let d = wait_completed(&rx, &calls, Duration::from_secs(40));
    let all_in = started.elapsed();
    let shipped = count(pg, "outage", "SELECT count(*) FROM events WHERE kind = 'lead.completed'");
    // A node taken for dead says so at its next heartbeat (its row is then cleared).
    let taken_for_dead: Vec<String> = cluster
        .nodes
        .iter()
        .flat_map(|n| {
            n.log()
                .lines()
                .filter(|l| l.contains("this node was taken for dead"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let failovers = cluster.kamailio.log().matches(": retry on ").count();
    let interrupted: Vec<_> = d
        .completed
        .values()
        .flat_map(|e| e.values())
        .filter(|e| e.event["lead"]["outcome"] == "interrupted")
        .map(|e| e.call_id().to_string())
        .collect();
    println!(
        "store outage: {CALLS} calls at 10/s, 2 s each, in {took:?}; PostgreSQL stopped {stop_at:?} in for \
         {down_for:?} (back {back_at:?} in); SIPp {} ok, {} failed; leads per node {shares:?} ({} in all); \
         lead.completed at the receiver before the stop {}, during it {}, all in at {all_in:?}; {}; lead.completed \
         in PostgreSQL {shipped}; interrupted {}; nodes taken for dead {}: {taken_for_dead:?}; INVITEs failed over \
         by Kamailio {failovers}; Call-IDs with two leads {}: {dup_leads:?}",
        load.successful,
        load.failed,
        calls.len(),
        before.completed.len(),
        during.completed.len(),
        d.figures(),
        interrupted.len(),
        taken_for_dead.len(),
        dup_leads.len()
    );
    assert!(load.success, "SIPp failed: {}\nkamailio:\n{}", load.errors, cluster.kamailio.log());
    assert_eq!((load.successful, load.failed), (CALLS as u64, 0), "0 failed calls");
    assert!(taken_for_dead.is_empty(), "no node taken for dead for the outage: {taken_for_dead:?}");
    assert!(interrupted.is_empty(), "no call closed as interrupted for the outage: {interrupted:?}");
    assert!(
        dup_leads.is_empty(),
        "Call-IDs with more than one lead (Kamailio failed over {failovers} INVITEs): {dup_leads:?}"
    );
    assert_eq!(calls.len(), CALLS as usize, "one lead per call: {shares:?}");
    let missing: Vec<_> = calls.iter().filter(|c| !d.completed.contains_key(*c)).collect();
    assert!(
        missing.is_empty(),
        "leads lost: {} calls without lead.completed: {missing:?}\n{}",
        missing.len(),
        cluster.logs()
    );
    assert!(d.calls_completed_twice().is_empty(), "calls with two lead.completed: {:?}", d.calls_completed_twice());
    assert!(d.duplicate_ids.is_empty(), "event ids delivered twice: {:?}", d.duplicate_ids);
    assert_eq!(shipped, CALLS as u64);
}

/// Freeze node 0 (SIGSTOP) right after one of its calls is ACKed (its third
/// or later), once nothing waits to ship there (2 s at most); when it froze.
fn freeze_node0_after_an_ack(cluster: &Cluster) -> Instant {
    let acks = |n: &AgentProc| n.log().matches("ACK received").count();
    let deadline = Instant::now() + Duration::from_secs(15);
    while acks(&cluster.nodes[0]) < 3 {
        assert!(Instant::now() < deadline, "node 0 never got calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = acks(&cluster.nodes[0]);
    while acks(&cluster.nodes[0]) == seen {
        assert!(Instant::now() < deadline, "node 0 got no more calls\n{}", cluster.kamailio.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let ship_deadline = Instant::now() + Duration::from_secs(2);
    while !unshipped(&cluster.nodes[0]).is_empty() && Instant::now() < ship_deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = cluster.nodes[0].pid() as libc::pid_t;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    Instant::now()
}

/// 7. A node frozen (SIGSTOP) past `dead_after_secs` with calls up, then
///    thawed (SIGCONT): the README's "node cut off alone". While it is
///    frozen a survivor closes each of its calls up with one
///    `lead.completed`, `interrupted`; once it runs again, the real end of
///    those calls goes out as `lead.updated`, so no call gets two
///    `lead.completed`. INVITEs that met the frozen node were failed over by
///    Kamailio (counted apart: the frozen node still sees them, cancelled).
#[test]
fn a_frozen_nodes_calls_are_closed_once_and_its_late_ends_are_updates() {
    const CALLS: u32 = 60;
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database("frozen");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    let mut cluster = Cluster::start("store-frozen", &url, FAST_FAILOVER, hook_port);
    let dir = scratch_dir("store-frozen-sipp");
    let _sipp = Scratch(vec![dir.clone()]);
    let target = cluster.kamailio.addr();
    let load = std::thread::spawn(move || place_calls(&dir, &call(2000), target, CALLS, 10));

    let frozen_at = freeze_node0_after_an_ack(&cluster);
    let pid = cluster.nodes[0].pid() as libc::pid_t;
    let up = open_calls(&cluster.nodes[0]);
    let left: BTreeSet<String> = unshipped(&cluster.nodes[0]).into_iter().map(|(_, c, _)| c).collect();
    let known: BTreeSet<String> = up.difference(&left).cloned().collect();
    // Frozen: a survivor closes them (dead after 3 s, bounded 15 s).
    let closed = wait_completed(&rx, &known, Duration::from_secs(15));
    let closed_in = frozen_at.elapsed();
    let reaped_by = pg.psql("frozen", "SELECT coalesce(reaped_by, '-') FROM nodes WHERE node = 'node0'");
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let frozen_for = frozen_at.elapsed();

    let load = load.join().unwrap();
    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_leads(&nodes, CALLS as usize, Duration::from_secs(15));
    let (calls, dup_leads) = lead_calls(&per_node);
    // The frozen node's calls up: their real end, as lead.updated.
    let deadline = Instant::now() + Duration::from_secs(20);
    let updated = loop {
        let updated: BTreeSet<String> = rx
            .seen()
            .iter()
            .filter(|s| s.kind() == "lead.updated" && known.contains(s.call_id()))
            .map(|s| s.call_id().to_string())
            .collect();
        if updated.len() >= known.len() || Instant::now() > deadline {
            break updated;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let d = wait_completed(&rx, &calls, Duration::from_secs(20));
    let failed_over: BTreeSet<String> = cluster
        .kamailio
        .log()
        .lines()
        .filter(|l| l.contains(": retry on "))
        .filter_map(|l| Some(l.split_once(": call ")?.1.split_once(':')?.0.to_string()))
        .collect();
    let twice: Vec<_> = d.calls_completed_twice().into_iter().map(|(c, _)| c.clone()).collect();
    let (twice_failed_over, twice_else): (Vec<String>, Vec<String>) =
        twice.into_iter().partition(|c| failed_over.contains(c));
    let taken_for_dead = cluster.nodes[0].log().contains("this node was taken for dead");
    println!(
        "store frozen: {CALLS} calls at 10/s, 2 s each; node 0 frozen {frozen_for:?} with {} calls up ({} of their \
         call.missed shipped); closed as interrupted at the receiver {closed_in:?} after the freeze, {} of {}, reaped \
         by {reaped_by}; SIPp {} ok, {} failed; leads {} calls; their real end as lead.updated after the thaw: {} of \
         {}; node 0 logged it was taken for dead: {taken_for_dead}; INVITEs failed over by Kamailio {} (calls with \
         two lead.completed among them: {}); other calls with two lead.completed {}: {twice_else:?}; {}",
        up.len(),
        known.len(),
        known.iter().filter(|c| closed.completed.contains_key(*c)).count(),
        known.len(),
        load.successful,
        load.failed,
        calls.len(),
        updated.len(),
        known.len(),
        failed_over.len(),
        twice_failed_over.len(),
        twice_else.len(),
        d.figures()
    );
    assert!(!known.is_empty(), "node 0 had calls up at the freeze");
    for c in &known {
        let events =
            closed.completed.get(c).unwrap_or_else(|| panic!("{c}: no lead.completed while node 0 was frozen"));
        let ev = events.values().next().unwrap();
        assert_eq!(ev.event["lead"]["outcome"], "interrupted", "{c}: {}", ev.event);
    }
    assert!(!reaped_by.is_empty() && reaped_by != "-" && reaped_by != "node0", "reaped by a survivor: {reaped_by}");
    assert!(twice_else.is_empty(), "calls with two lead.completed: {twice_else:?}");
    assert_eq!(updated, known, "the real end of each call closed meanwhile goes out as lead.updated");
    assert!(taken_for_dead, "node 0 says it was taken for dead");
    assert!(d.duplicate_ids.is_empty(), "event ids delivered twice: {:?}", d.duplicate_ids);
    let _ = dup_leads;
    cluster.nodes[0].kill9();
}

/// 8. The race behind test 7: a survivor's reaping transaction is slow (a
///    trigger sleeps 4 s in it after its first `interrupted` row, as a
///    survivor starved of CPU would be) and the frozen node thaws meanwhile
///    and ships the real end of its calls. The shipper's check for another
///    `lead.completed` of the call cannot see the reaper's uncommitted one,
///    so both must not go out as `lead.completed`: a call gets exactly one.
#[test]
fn a_slow_reaping_racing_the_thawed_nodes_own_ends_still_gives_one_lead_completed() {
    const CALLS: u32 = 30;
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database("race");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    let cluster = Cluster::start("store-race", &url, FAST_FAILOVER, hook_port);
    // Fault injection: the first interrupted lead.completed of a transaction sleeps 4 s in it.
    pg.psql(
        "race",
        "CREATE FUNCTION slow_reap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.kind = 'lead.completed' AND NEW.body LIKE '%\"interrupted\"%' \
              AND current_setting('backstop_test.slept', true) IS DISTINCT FROM 'yes' THEN \
             PERFORM set_config('backstop_test.slept', 'yes', true); PERFORM pg_sleep(4); \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER slow_reap AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow_reap();",
    );
    let dir = scratch_dir("store-race-sipp");
    let _sipp = Scratch(vec![dir.clone()]);
    let target = cluster.kamailio.addr();
    let load = std::thread::spawn(move || place_calls(&dir, &call(2000), target, CALLS, 10));

    let frozen_at = freeze_node0_after_an_ack(&cluster);
    let pid = cluster.nodes[0].pid() as libc::pid_t;
    let up = open_calls(&cluster.nodes[0]);
    // Thaw it once the reaper sleeps in its transaction.
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(pg, "race", "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") == 0 {
        if Instant::now() > deadline {
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
            panic!("no reaping began within 15 s of the freeze\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let reaping_after = frozen_at.elapsed();
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }

    let load = load.join().unwrap();
    let nodes: Vec<&AgentProc> = cluster.nodes.iter().collect();
    let per_node = wait_leads(&nodes, CALLS as usize, Duration::from_secs(15));
    let (calls, _) = lead_calls(&per_node);
    let d = wait_completed(&rx, &calls, Duration::from_secs(20));
    // Let any late one arrive.
    std::thread::sleep(Duration::from_secs(2));
    let d2 = Delivered::of(&rx.seen());
    let twice: Vec<_> = d2.calls_completed_twice().into_iter().map(|(c, e)| format!("{c}: {e:?}")).collect();
    let up_twice = up.iter().filter(|c| d2.completed.get(*c).is_some_and(|e| e.len() > 1)).count();
    let in_pg = pg.psql(
        "race",
        "SELECT call_id || ': ' || string_agg(node || '/' || (body LIKE '%\"interrupted\"%')::text, ', ' ORDER BY seq) \
         FROM events WHERE kind = 'lead.completed' GROUP BY call_id HAVING count(*) > 1",
    );
    println!(
        "store race: {CALLS} calls; node 0 frozen with {} calls up, the reaping began {reaping_after:?} later and \
         slept 4 s in its transaction while node 0 ran again; SIPp {} ok, {} failed; lead.completed for {} calls; \
         calls with two lead.completed {} ({up_twice} of node 0's calls up); in PostgreSQL [{}]; {}",
        up.len(),
        load.successful,
        load.failed,
        d.completed.len(),
        twice.len(),
        in_pg.replace('\n', "; "),
        d2.figures()
    );
    assert!(twice.is_empty(), "calls with two lead.completed: {twice:?}");
}

/// 5. The node holding a lead dies (kill -9) after the call, before the
///    lead's callback is due: while it stays dead, exactly one
///    `lead.callback_overdue` for that lead arrives (the others' clocks both
///    see it; the keyed id keeps one).
#[test]
fn a_dead_nodes_lead_gets_one_callback_reminder() {
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database("callback");
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    // Due 6 s after the call came in. Short leases: node 0 may die between
    // a webhook's 200 and recording it, and its call's next event (the
    // reminder) waits in order behind that claim until the lease runs out.
    let mut nodes = start_nodes("store-callback", 3, &url, FAST_FAILOVER, hook_port, |_| {
        "[callback]\ndue_minutes_open = 0.1\n".into()
    });
    direct_call(&nodes[0], "store-callback-call", 500);
    let seen = rx.wait_for(Duration::from_secs(15), "the call's lead.completed", |s| {
        s.iter().any(|x| x.kind() == "lead.completed")
    });
    let lead = seen.iter().find(|x| x.kind() == "lead.completed").unwrap().event["lead"].clone();
    let lead_id = lead["id"].as_str().expect("lead id").to_string();
    let due: jiff::Timestamp = lead["callback"]["due_at"].as_str().expect("callback.due_at").parse().unwrap();
    nodes[0].kill9();
    let killed = jiff::Timestamp::now();
    assert!(killed < due, "killed before due (the call took too long to test this): {killed} vs {due}");

    let overdue = |s: &[Seen]| -> Vec<Seen> {
        s.iter()
            .filter(|x| x.kind() == "lead.callback_overdue" && x.event["lead"]["id"] == lead_id.as_str())
            .cloned()
            .collect()
    };
    let seen = rx.wait_for(Duration::from_secs(30), "lead.callback_overdue", |s| !overdue(s).is_empty());
    let first = overdue(&seen)[0].clone();
    let first_at = jiff::Timestamp::try_from(first.wall).unwrap();
    // Three seconds past the first: no second one.
    std::thread::sleep(Duration::from_secs(3));
    let all = overdue(&rx.seen());
    let ids: BTreeSet<&String> = all.iter().map(|s| &s.webhook_id).collect();
    let in_db = count(
        pg,
        "callback",
        &format!("SELECT count(*) FROM events WHERE kind = 'lead.callback_overdue' AND lead_id = '{lead_id}'"),
    );
    let completed_deliveries = rx.seen().iter().filter(|s| s.kind() == "lead.completed").count();
    let shipped_by = pg.psql(
        "callback",
        &format!("SELECT node FROM events WHERE kind = 'lead.callback_overdue' AND lead_id = '{lead_id}'"),
    );
    println!(
        "store callback: lead {lead_id} taken by node0, killed {:?} before due; lead.callback_overdue at the \
         receiver {:?} after due: {} delivery(ies), {} distinct id(s), {in_db} in PostgreSQL (shipped by {shipped_by}), \
         node0 dead throughout; the call's lead.completed delivered {completed_deliveries} time(s) (twice when \
         node 0 died before recording its delivery)",
        due.duration_since(killed),
        first_at.duration_since(due),
        all.len(),
        ids.len()
    );
    assert!(first_at >= due, "not before its due time");
    assert_eq!(first.event["lead"]["callback"]["status"], "overdue");
    assert_eq!(ids.len(), 1, "exactly one lead.callback_overdue: {ids:?}");
    assert_eq!(all.len(), 1, "delivered once: {ids:?}");
    assert_eq!(in_db, 1);
    assert_ne!(shipped_by, "node0");
}

/// 6a. Recordings in the database (the default): node 1's API and inbox
///     list the lead node 0 took, and the signed link of its recording,
///     made on node 0, is served by node 1 (fetched from PostgreSQL).
#[test]
fn any_node_lists_another_nodes_lead_and_serves_its_recording() {
    any_node_serves("anynode-db", "")
}

/// 6b. Recordings in a directory the nodes share (`recordings = "local"`).
#[test]
fn a_shared_recordings_dir_serves_links_from_any_node() {
    any_node_serves("anynode-dir", "recordings = \"local\"\n")
}

fn any_node_serves(name: &str, store_extra: &str) {
    const CRM: &str = "crm-token-0123456789abcdef0123456789";
    let _db = db_shared();
    let pg = Postgres::shared();
    let url = pg.fresh_database(&name.replace('-', "_"));
    let hook_port = free_port();
    let rx = Receiver::start(hook_port, key(), vec![]);
    let http_ports = [web::http_port(), web::http_port()];
    let nodes: Vec<AgentProc> = (0..2)
        .map(|i| {
            let config = node_config(i, &url, store_extra, hook_port, "[recordings]\nwhole_call = true\n");
            AgentProc::start(
                &format!("store-{name}-node{i}"),
                &format!("{config}{}", web::http_config(http_ports[i], &[("crm", CRM)])),
            )
        })
        .collect();
    let shared = scratch_dir(&format!("store-{name}-recordings"));
    let _shared = Scratch(vec![shared.clone()]);
    if !store_extra.is_empty() {
        // One directory for both, mounted (here: linked) at each DATA_DIR/recordings.
        for n in &nodes {
            let rec = n.dir.join("data/recordings");
            let _ = std::fs::remove_dir(&rec);
            assert!(!rec.exists(), "{} is not empty", rec.display());
            std::os::unix::fs::symlink(&shared, &rec).unwrap();
        }
    }
    direct_call_with_audio(&nodes[0], &format!("store-{name}-call"), 1500);
    let seen =
        rx.wait_for(Duration::from_secs(15), "lead.completed", |s| s.iter().any(|x| x.kind() == "lead.completed"));
    let lead_id =
        seen.iter().find(|x| x.kind() == "lead.completed").unwrap().event["lead"]["id"].as_str().unwrap().to_string();
    let a = std::net::SocketAddr::from(([127, 0, 0, 1], http_ports[0]));
    let b = std::net::SocketAddr::from(([127, 0, 0, 1], http_ports[1]));
    let auth = format!("Bearer {CRM}");
    let auth = [("Authorization", auth.as_str())];

    // Node 1's API lists it, finished (its replica follows node 0's events: the lead.completed too).
    let deadline = Instant::now() + Duration::from_secs(10);
    let lead = loop {
        let r = web::get(b, "/api/leads?view=all", &auth);
        assert_eq!(r.status, 200, "{}", r.text());
        if let Some(l) =
            r.json()["leads"].as_array().and_then(|l| l.iter().find(|x| x["id"] == lead_id.as_str()).cloned())
            && l["ended_at"].is_string()
        {
            break l;
        }
        assert!(Instant::now() < deadline, "node 1's API never listed {lead_id} finished\n{}", logs(&[&nodes[1]]));
        std::thread::sleep(Duration::from_millis(100));
    };
    let one = web::get(b, &format!("/api/leads/{lead_id}"), &auth);
    assert_eq!(one.status, 200, "{}", one.text());
    let (session, _) = web::login(b);
    let page = web::get(b, "/", &[("Cookie", session.as_str())]).text();
    assert!(page.contains(&lead_id), "node 1's inbox lists node 0's lead:\n{page}");

    // The recording: made on node 0, its link signed by node 0, served by node 1.
    let from_a = web::get(a, &format!("/api/leads/{lead_id}"), &auth).json();
    let link =
        from_a["recording_url"].as_str().unwrap_or_else(|| panic!("recording_url on node 0: {from_a}")).to_string();
    let path = link[link.find("/recordings/").expect("a /recordings/ link")..].to_string();
    let file = path["/recordings/".len()..path.find('?').unwrap()].to_string();
    let on_a = std::fs::read(nodes[0].dir.join("data/recordings").join(&file)).expect("the recording on node 0");
    let on_b = nodes[1].dir.join("data/recordings").join(&file);
    let had = on_b.exists();
    if store_extra.is_empty() {
        assert!(!had, "node 1 has not got node 0's recording before it is asked for it");
    }
    let r = web::get(b, &path, &[]);
    assert_eq!(r.status, 200, "node 1 serves node 0's link {path}\n{}", logs(&[&nodes[1]]));
    if store_extra.is_empty() {
        assert_eq!(std::fs::read(&on_b).ok(), Some(on_a.clone()), "node 1 fetched it from PostgreSQL into its own dir");
    }
    assert_eq!(r.body, on_a, "the same bytes");
    let r = web::get(b, &path, &[("Range", "bytes=44-143")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &on_a[44..144.min(on_a.len())]));
    // Node 1's own API names the recording too, and its link (signed by node 1) plays there.
    let own = lead["recording_url"].as_str().unwrap_or_else(|| panic!("recording_url in node 1's API: {lead}"));
    let own_path = &own[own.find("/recordings/").expect("a /recordings/ link")..];
    let r = web::get(b, own_path, &[]);
    assert_eq!((r.status, r.body == on_a), (200, true), "node 1's own link {own_path}");
    // Tampered: refused on node 1 as on node 0.
    let sig_at = path.find("sig=").unwrap() + 4;
    let mut bad = path.clone();
    bad.replace_range(sig_at..sig_at + 1, if &path[sig_at..sig_at + 1] == "0" { "1" } else { "0" });
    assert_eq!(web::get(b, &bad, &[]).status, 403);
    println!(
        "store any node ({}): node 1's API and inbox list node 0's lead {lead_id}; node 0's signed link to {file} \
         ({} bytes) served by node 1, and node 1's own link",
        if store_extra.is_empty() { "recordings in the database" } else { "a shared recordings directory" },
        on_a.len()
    );
}
