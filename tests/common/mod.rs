//! Test helpers that start real processes: the agent (our binary, with a
//! temporary config and data directory) and SIPp. Everything runs on
//! loopback, every wait is bounded, and dropping a helper kills its process.
#![allow(dead_code)]

pub mod kamailio;
pub mod pcap;
pub mod postgres;
pub mod receiver;
pub mod scenario;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// Ports handed out by this process, so parallel tests never pick the same one.
static PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("backstop-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The agents' RTP ranges ([`AgentProc::start_default_script`] gives each
/// its own slice): ports handed to SIPp, captures and receivers stay out of
/// them, or an agent's call could take one between our check and its bind.
const AGENT_RTP_PORTS: std::ops::Range<u16> = 30000..39000;

/// A loopback port free on both UDP and TCP (and the next port too, for SIPp's media).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if port > 65000 || port % 2 == 1 || AGENT_RTP_PORTS.contains(&port) {
            continue;
        }
        let ok = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        let mut used = PORTS.lock().unwrap();
        if ok && !used.contains(&port) {
            used.push(port);
            used.push(port + 1);
            return port;
        }
    }
    panic!("no free port");
}

/// A port for SIPp's `-mp`: SIPp binds it and the next three (audio and video
/// RTP/RTCP), so all four are checked free and reserved in this process.
pub fn free_media_port() -> u16 {
    for _ in 0..200 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        drop(udp);
        if port > 65000 || port % 2 == 1 || AGENT_RTP_PORTS.contains(&port) {
            continue;
        }
        let ok = (port..port + 4).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        let mut used = PORTS.lock().unwrap();
        if ok && !(port..port + 4).any(|p| used.contains(&p)) {
            used.extend(port..port + 4);
            return port;
        }
    }
    panic!("no free media port");
}

/// Greeting, goodbye, hang up: the script the SIP-level tests run.
pub const SKELETON_SCRIPT: &str = "[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n\
    [[step]]\nname = \"goodbye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n";

/// The agent, running as a real process.
pub struct AgentProc {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// The agent's RTP port range (its own, so captures can filter on it).
    pub rtp_ports: (u16, u16),
}

impl AgentProc {
    /// Start with `extra` TOML appended to a test base config. Unless `extra`
    /// has its own `[[step]]`s, the script is the walking skeleton's
    /// (greeting, goodbye, hang up), which most SIP tests assume; see
    /// [`AgentProc::start_default_script`] for the shipped intake script.
    pub fn start(name: &str, extra: &str) -> AgentProc {
        if extra.contains("[[step]]") {
            Self::start_default_script(name, extra)
        } else {
            Self::start_default_script(name, &format!("{extra}\n{SKELETON_SCRIPT}"))
        }
    }

    /// Start with `extra` appended and no script of the test's own: the shipped default script runs.
    pub fn start_default_script(name: &str, extra: &str) -> AgentProc {
        let dir = scratch_dir(name);
        let port = free_port();
        let prompts = format!("[prompts]\ndir = \"{}\"\n", manifest_dir().join("prompts").display());
        // Each agent its own RTP range, so that a test's stray RTP never reaches another test's call.
        let slot = (COUNTER.fetch_add(1, Ordering::SeqCst) % 45) as u16;
        let rtp_ports = (30000 + slot * 200, 30000 + slot * 200 + 198);
        let rtp = format!("[rtp]\nport_min = {}\nport_max = {}\n", rtp_ports.0, rtp_ports.1);
        let config = if extra.contains("[prompts]\n") {
            format!("{rtp}[log]\nlevel = \"debug\"\n{}", extra.replace("[prompts]\n", &prompts))
        } else {
            format!("{prompts}{rtp}[log]\nlevel = \"debug\"\n{extra}")
        };
        let cfg_path = dir.join("backstop.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let child = Self::spawn(&dir, port);
        let agent = AgentProc { child, port, dir, rtp_ports };
        agent.wait_ready();
        agent
    }

    /// Start with exactly `config` (no test base added): the load tool's way,
    /// with its own RTP range `rtp_ports` and log level.
    pub fn start_config(name: &str, config: &str, rtp_ports: (u16, u16)) -> AgentProc {
        let dir = scratch_dir(name);
        let port = free_port();
        std::fs::write(dir.join("backstop.toml"), config).unwrap();
        let child = Self::spawn(&dir, port);
        let agent = AgentProc { child, port, dir, rtp_ports };
        agent.wait_ready();
        agent
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .arg("run")
            .arg("--config")
            .arg(dir.join("backstop.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start backstop")
    }

    /// SIGKILL: no chance to clean up, as in a crash or power cut.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same port, config and data directory.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, self.port);
        self.wait_ready();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_ready(&self) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let me = sock.local_addr().unwrap();
            let msg = options_request(me, "ready-check");
            let _ = sock.send_to(msg.as_bytes(), self.addr());
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && buf[..n].starts_with(b"SIP/2.0 ")
            {
                return;
            }
        }
        panic!("agent did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Every line of `leads.jsonl` (each version of a lead: an update is a
    /// new line), but a last line still being written (no newline yet).
    /// A complete line that is not JSON is a defect and panics.
    pub fn leads(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("data/leads.jsonl")).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad lead line {l:?}: {e}")))
            .collect()
    }

    /// Wait (bounded) until `n` leads have been written.
    pub fn wait_leads(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let leads = self.leads();
            if leads.len() >= n || Instant::now() > deadline {
                assert!(leads.len() >= n, "expected {n} leads, got {}: {leads:?}\nlog:\n{}", leads.len(), self.log());
                return leads;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop with SIGTERM (graceful), bounded; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.sigterm();
        self.wait_exit(Duration::from_secs(10))
    }

    /// Send SIGTERM and return at once.
    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Wait up to `limit` for the process to exit; true if it exited with status 0.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("agent files kept in {}", self.dir.display());
        }
    }
}

pub fn options_request(me: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:backstop@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:backstop@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The result of one SIPp run.
pub struct SippRun {
    pub success: bool,
    pub code: Option<i32>,
    /// SIPp's -trace_msg log: every SIP message sent and received.
    pub messages: String,
    pub errors: String,
}

impl SippRun {
    /// How many received messages start with `start_line` and carry `cseq` (e.g. "1 INVITE").
    pub fn received_count(&self, start_line: &str, cseq: &str) -> usize {
        self.messages
            .split("received [")
            .skip(1)
            .filter(|m| {
                let body = m.split_once('\n').map(|(_, b)| b).unwrap_or("");
                let body = body.trim_start();
                body.starts_with(start_line) && body.contains(&format!("CSeq: {cseq}"))
            })
            .count()
    }
}

/// Run one SIPp call with `scenario` (XML) against the agent.
pub fn run_sipp(dir: &Path, scenario: &str, agent: SocketAddr, tcp: bool, keys: &[(&str, String)]) -> SippRun {
    run_sipp_calls(dir, scenario, agent, tcp, keys, 1)
}

/// Run `calls` SIPp calls, one at a time, with `scenario` against the agent.
pub fn run_sipp_calls(
    dir: &Path,
    scenario: &str,
    agent: SocketAddr,
    tcp: bool,
    keys: &[(&str, String)],
    calls: u32,
) -> SippRun {
    let sf = dir.join("scenario.xml");
    std::fs::write(&sf, scenario).unwrap();
    let port = free_port();
    let media = free_media_port();
    let mut cmd = Command::new("sipp");
    cmd.arg(agent.to_string())
        .arg("-sf")
        .arg(&sf)
        .args(["-m", &calls.to_string(), "-l", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string(), "-mp", &media.to_string()])
        .args(["-timeout", "60s", "-timeout_error", "-trace_msg", "-trace_err"])
        .arg("-message_file")
        .arg(dir.join("messages.log"))
        .arg("-error_file")
        .arg(dir.join("errors.log"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if tcp {
        cmd.args(["-t", "t1"]);
    }
    for (k, v) in keys {
        cmd.arg("-key").arg(k).arg(v);
    }
    let out = cmd.output().expect("sipp must be installed (the README's test command installs sip-tester)");
    SippRun {
        success: out.status.success(),
        code: out.status.code(),
        messages: std::fs::read_to_string(dir.join("messages.log")).unwrap_or_default(),
        errors: format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
        ),
    }
}

/// One captured datagram: when it arrived, from where, and its bytes.
pub type Captured = (Instant, SocketAddr, Vec<u8>);

/// A UDP socket standing in for the caller's RTP port, recording what arrives.
pub struct RtpCapture {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Captured>>>,
}

impl RtpCapture {
    pub fn start() -> RtpCapture {
        // A port checked free can be taken before we bind it (another test's bind to
        // port 0 gets the one just released): take the next one then.
        let (port, sock) = (0..20)
            .find_map(|_| {
                let port = free_port();
                UdpSocket::bind(("127.0.0.1", port)).ok().map(|s| (port, s))
            })
            .expect("a free port for the RTP capture");
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: at most 10 minutes of capture.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    got.push((Instant::now(), from, buf[..n].to_vec()));
                }
            }
            got
        });
        RtpCapture { port, stop, thread: Some(thread) }
    }

    pub fn finish(mut self) -> Vec<Captured> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// RTP header fields and payload of a captured packet.
pub struct Rtp {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

pub fn parse_rtp(b: &[u8]) -> Rtp {
    assert!(b.len() >= 12 && b[0] >> 6 == 2, "not RTP: {b:?}");
    Rtp {
        pt: b[1] & 0x7f,
        marker: b[1] & 0x80 != 0,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b[12..].to_vec(),
    }
}

/// tcpdump on `lo` writing `file` (packet-buffered, a 64 MiB kernel buffer,
/// killed after `limit_secs` at the latest); returns once it listens. Its
/// stderr stays piped: it reports the kernel's drops there when it stops.
pub fn start_tcpdump(file: &Path, filter: &str, snaplen: u32, limit_secs: u64) -> Child {
    let mut child = Command::new("timeout")
        .args([
            &limit_secs.to_string(),
            "tcpdump",
            "-i",
            "lo",
            "-U",
            "-n",
            "-B",
            "65536",
            "-s",
            &snaplen.to_string(),
            "-w",
        ])
        .arg(file)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump must be installed (scripts/test.sh installs it)");
    // tcpdump says "listening on" once the capture runs.
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    use std::io::Read;
    while !seen.contains("listening on") && Instant::now() < deadline {
        match err.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(seen.contains("listening on"), "tcpdump did not start: {seen}");
    child.stderr = Some(err);
    child
}

/// tcpdump on loopback, for what the agent sends where no socket of ours can
/// listen (e.g. its RTP to SIPp's media port). Needs root and tcpdump.
pub struct Sniffer {
    child: Child,
    file: PathBuf,
}

impl Sniffer {
    /// Capture UDP from 127.0.0.1 with a source port in `ports`; returns once tcpdump listens.
    pub fn start(dir: &Path, ports: (u16, u16)) -> Sniffer {
        let file = dir.join("sniff.pcap");
        let filter = format!("udp and src host 127.0.0.1 and src portrange {}-{}", ports.0, ports.1);
        let mut child = start_tcpdump(&file, &filter, 512, 300);
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Sniffer { child, file }
    }

    /// Stop and return (capture time, UDP payload) per packet.
    pub fn finish(mut self) -> Vec<(Duration, Vec<u8>)> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        pcap::read_udp(&std::fs::read(&self.file).unwrap_or_default())
    }
}
