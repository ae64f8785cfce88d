//! soak: a steady SIPp load against the agent (release build) for
//! `SOAK_SECS` (default 600) seconds, sampling the agent's open file
//! descriptors and resident memory every 10 s, then again after the load
//! has drained. Prints the series; fails if descriptors do not return to
//! their baseline or memory keeps growing through the second half.
//! Run: `cargo bench --bench soak` (SOAK_SECS=60 for a quick look).

#[path = "../tests/common/mod.rs"]
mod common;

use common::scenario::*;
use common::*;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RATE: u64 = 10; // calls per second
const HOLD_MS: u64 = 3000; // each call lasts about this long

fn sample(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    (fds, rss_kb)
}

fn main() {
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let agent = AgentProc::start(
        "soak",
        "[sip]\nanswer_after_ms = 100\n[security]\nrequests_per_second = 0\ninvites_per_second = 0\n",
    );
    let dir = scratch_dir("soak");
    // Where the agent's RTP goes: read and discard, counting.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let rtp_port = sink.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let packets = Arc::new(AtomicU64::new(0));
    let (s2, p2) = (stop.clone(), packets.clone());
    let rtp = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !s2.load(Ordering::Relaxed) {
            if sink.recv_from(&mut buf).is_ok() {
                p2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(2));
    let baseline = sample(pid);
    println!("soak: {secs} s at {RATE} calls/s, {HOLD_MS} ms each (~{} concurrent)", RATE * HOLD_MS / 1000);
    println!("| t (s) | open fds | RSS (MB) | RTP packets received |");
    println!("|---|---|---|---|");
    println!("| baseline | {} | {:.1} | 0 |", baseline.0, baseline.1 as f64 / 1024.0);

    let sf = dir.join("soak.xml");
    let bye = CALLER_BYE;
    std::fs::write(&sf, scenario("soak", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(HOLD_MS), bye])).unwrap();
    let calls = RATE * secs;
    let mut sipp = Command::new("sipp")
        .arg(agent.addr().to_string())
        .arg("-sf")
        .arg(&sf)
        .args(["-m", &calls.to_string(), "-r", &RATE.to_string(), "-l", "500", "-i", "127.0.0.1"])
        .args(["-p", &free_port().to_string(), "-nostdin", "-timeout", &format!("{}s", secs + 120)])
        .args(["-key", "rtp_port", &rtp_port.to_string(), "-trace_stat", "-stf"])
        .arg(dir.join("stats.csv"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut series = Vec::new();
    let status = loop {
        std::thread::sleep(Duration::from_secs(10));
        let (fds, rss) = sample(pid);
        let t = start.elapsed().as_secs();
        series.push((t, fds, rss));
        println!("| {t} | {fds} | {:.1} | {} |", rss as f64 / 1024.0, packets.load(Ordering::Relaxed));
        if let Some(st) = sipp.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(secs + 180) {
            let _ = sipp.kill();
            break sipp.wait().unwrap();
        }
    };
    std::thread::sleep(Duration::from_secs(15));
    let after = sample(pid);
    println!(
        "| after +15 s idle | {} | {:.1} | {} |",
        after.0,
        after.1 as f64 / 1024.0,
        packets.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    rtp.join().unwrap();
    let stats = std::fs::read_to_string(dir.join("stats.csv")).unwrap_or_default();
    let header: Vec<&str> = stats.lines().next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = stats.lines().last().unwrap_or("").split(';').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).and_then(|i| last.get(i).map(|s| s.to_string()));
    let leads = agent.leads().len();
    println!(
        "\nSIPp exit {:?}: {} successful, {} failed calls; {leads} leads written",
        status.code(),
        col("SuccessfulCall(C)").unwrap_or_default(),
        col("FailedCall(C)").unwrap_or_default()
    );
    assert!(status.success(), "SIPp reported failed calls");
    assert_eq!(leads as u64, calls, "one lead per call");
    assert!(after.0 <= baseline.0 + 2, "descriptors did not return to baseline: {} vs {}", after.0, baseline.0);
    // Memory: the second half of the run must not keep growing (allocator caches may keep the peak).
    let half: Vec<u64> = series.iter().filter(|(t, _, _)| *t * 2 >= secs && *t <= secs).map(|s| s.2).collect();
    if let (Some(first), Some(max)) = (half.first(), half.iter().max()) {
        assert!(*max as f64 <= *first as f64 * 1.10 + 2048.0, "RSS grew through the second half: {half:?} kB");
    }
}
