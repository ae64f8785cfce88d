//! load: many concurrent answered calls from SIPp, against the agent (release
//! build) and, in the same run, against SIPp's own UAS playing a pcap (the
//! peer). Run it with `scripts/load` (see there for the options).
//!
//! Each call: SIPp's UAC sends an INVITE, ACKs the 200 and replays caller
//! speech (with pauses) from a pcap; it hangs up once every call has been up
//! together for `--hold` seconds, or accepts the far end's BYE as a normal end.
//! The agent runs an ask step in a loop: it plays a question, listens with
//! the VAD (also during the question, for barge-in), records the answer to a
//! WAV, and asks again. The peer answers and plays a prompt pcap.
//!
//! Measured for each target, all on loopback:
//! - CPU (user+sys from /proc/PID/stat, all threads) over the window where
//!   every call is up and before the RTP capture (tcpdump's tap is charged to
//!   the sender), as % of one core per call; RSS and open fds each second;
//! - INVITE → 200 OK per call, from a capture of the target's SIP port;
//! - RTP pacing at the receiver: tcpdump on `lo` for `--capture` seconds in the
//!   end of the hold, |gap − 20 ms| between consecutive packets per stream;
//! - failed calls (SIPp's count) and, for the agent, RTP send underruns.
//!
//! Every wait is bounded; SIPp runs with `-m`, `-l` and `-timeout`.

#[path = "../tests/common/mod.rs"]
mod common;

use backstop_core::media::g711::Law;
use common::pcap::{CallerAudio, read_udp_ports};
use common::scenario::*;
use common::*;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The memory target per held call (issue 18), KiB; `--check` fails at twice it.
const MEMORY_TARGET_KIB: f64 = 32.0;
const MEMORY_LIMIT_KIB: f64 = 2.0 * MEMORY_TARGET_KIB;
/// `--check` fails when the agent's CPU per call is over this many times the peer's.
const CPU_RATIO_LIMIT: f64 = 2.0;

#[derive(Clone, Debug)]
struct Opts {
    calls: u64,
    rate: u64,
    hold: u64,
    capture: u64,
    peer: bool,
    agent: bool,
    /// The caller's audio: SIPp's `rtp_stream` (a few threads for all calls;
    /// per-call ports and SSRCs) or `play_pcap_audio` (a thread per call).
    pcap_caller: bool,
    /// Churn instead: this many calls in all, at `rate`, each `hold` s long,
    /// against the agent only, for memory and descriptors over many calls.
    churn: Option<u64>,
    /// Also capture the callers' RTP (SIPp's), as a pacing reference. It
    /// doubles tcpdump's work, which itself delays packets on 2 cores.
    caller_pacing: bool,
    /// Fail (exit 1) unless the run is sound: every call succeeded, one lead
    /// each, fds back to baseline, RTP both ways (see `main`).
    check: bool,
    /// Line noise under the caller's whole audio (speech and pauses), RMS in
    /// dBFS; `None` for digital silence in the pauses (the old, kinder load).
    noise_dbfs: Option<f64>,
    /// Transcribe every answer with this model (`[transcribe]`, `wait_secs = 0`),
    /// to see that transcription takes nothing from the media, and how late
    /// transcripts come. Needs a build with `--features whisper`.
    transcribe: Option<PathBuf>,
}

fn opts() -> Opts {
    let mut o = Opts {
        calls: 1000,
        rate: 100,
        hold: 60,
        capture: 10,
        peer: true,
        agent: true,
        pcap_caller: false,
        churn: None,
        caller_pacing: false,
        check: false,
        noise_dbfs: Some(-50.0),
        transcribe: None,
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--calls" => o.calls = num("--calls"),
            "--rate" => o.rate = num("--rate"),
            "--hold" => o.hold = num("--hold"),
            "--capture" => o.capture = num("--capture"),
            "--no-peer" => o.peer = false,
            "--peer-only" => o.agent = false,
            "--check" => o.check = true,
            "--churn" => o.churn = Some(num("--churn")),
            "--caller-pacing" => o.caller_pacing = true,
            "--transcribe" => o.transcribe = Some(it.next().expect("--transcribe needs a model file").into()),
            "--noise" => {
                o.noise_dbfs = match it.next().map(String::as_str) {
                    Some("off") => None,
                    Some(v) => Some(
                        v.parse()
                            .ok()
                            .filter(|d: &f64| (-90.0..=-10.0).contains(d))
                            .unwrap_or_else(|| panic!("--noise is off or a level in dBFS from -90 to -10, e.g. -50")),
                    ),
                    None => panic!("--noise needs off or a level in dBFS"),
                }
            }
            "--caller" => match it.next().map(String::as_str) {
                Some("pcap") => o.pcap_caller = true,
                Some("stream") => o.pcap_caller = false,
                _ => panic!("--caller is pcap or stream"),
            },
            other => panic!("unknown option {other}; see scripts/load"),
        }
    }
    assert!((1..=2000).contains(&o.calls), "--calls must be 1..=2000");
    assert!(o.churn.is_none_or(|n| (1..=20_000).contains(&n)), "--churn must be 1..=20000");
    assert!((1..=200).contains(&o.rate), "--rate must be 1..=200");
    assert!((2..=600).contains(&o.hold), "--hold must be 2..=600 s");
    o.capture = o.capture.clamp(1, o.hold.saturating_sub(4).max(1));
    o
}

/// One second's reading of a process.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: f64,
    cpu_ticks: u64,
    rss_kb: u64,
    fds: usize,
}

fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

fn sample(pid: u32, at: f64) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    Some(Sample { at, cpu_ticks, rss_kb, fds })
}

/// tcpdump on loopback into a file, stopped with SIGINT; reports kernel drops.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(file: PathBuf, filter: &str, snaplen: u32, limit_secs: u64) -> Capture {
        let child = start_tcpdump(&file, filter, snaplen, limit_secs);
        Capture { child, file }
    }

    /// Stop; (packets with their source ports, packets the kernel dropped).
    fn finish(mut self) -> (Vec<(Duration, (u16, u16), Vec<u8>)>, u64) {
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        let dropped = err
            .lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let packets = read_udp_ports(&std::fs::read(&self.file).unwrap_or_default());
        let _ = std::fs::remove_file(&self.file);
        (packets, dropped)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

#[derive(Debug, Default)]
struct Pacing {
    streams: usize,
    gaps: usize,
    /// |gap − 20 ms| over all gaps, ms.
    p50: f64,
    p99: f64,
    max: f64,
    /// Per stream p99 of |gap − 20 ms|: the median stream's and the worst stream's, ms.
    stream_p99_median: f64,
    stream_p99_worst: f64,
    streams_within_2ms: usize,
    /// Sequence numbers missing from the capture between packets of a stream.
    missing: u64,
    dropped_by_kernel: u64,
    /// Packets per second over the capture (first to last packet).
    rate: f64,
    /// SIPp sends every call's pcap from one port with one SSRC: its streams cannot be told apart.
    separable: bool,
}

/// Pacing per stream; a stream is the packets with the same `key` (a port).
fn pacing(packets: &[(Duration, u16, Vec<u8>)], dropped_by_kernel: u64, separable: bool) -> Pacing {
    let rate = match (packets.first(), packets.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => packets.len() as f64 / (b.0 - a.0).as_secs_f64(),
        _ => f64::NAN,
    };
    if !separable {
        return Pacing { rate, dropped_by_kernel, ..Default::default() };
    }
    let mut by_ssrc: HashMap<u16, Vec<(Duration, u16)>> = HashMap::new();
    for (t, key, p) in packets {
        if p.len() >= 12 && p[0] >> 6 == 2 {
            by_ssrc.entry(*key).or_default().push((*t, u16::from_be_bytes([p[2], p[3]])));
        }
    }
    let mut all = Vec::new();
    let mut per_stream = Vec::new();
    let mut missing = 0u64;
    for pkts in by_ssrc.values() {
        let mut devs = Vec::new();
        for w in pkts.windows(2) {
            let step = w[1].1.wrapping_sub(w[0].1);
            if step == 1 {
                let gap = w[1].0.as_secs_f64() * 1e3 - w[0].0.as_secs_f64() * 1e3;
                devs.push((gap - 20.0).abs());
            } else if step < 1000 {
                missing += step as u64 - 1;
            }
        }
        if devs.len() >= 10 {
            let d = sorted(devs);
            per_stream.push(percentile(&d, 0.99));
            all.extend(d);
        }
    }
    let all = sorted(all);
    let per_stream = sorted(per_stream);
    Pacing {
        streams: per_stream.len(),
        gaps: all.len(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or(f64::NAN),
        stream_p99_median: percentile(&per_stream, 0.5),
        stream_p99_worst: per_stream.last().copied().unwrap_or(f64::NAN),
        streams_within_2ms: per_stream.iter().filter(|v| **v <= 2.0).count(),
        missing,
        dropped_by_kernel,
        rate,
        separable,
    }
}

/// INVITE → first 200 OK (CSeq INVITE) per Call-ID, ms, from a capture of the SIP port.
fn answer_times(packets: &[(Duration, Vec<u8>)]) -> Vec<f64> {
    let mut invites: HashMap<String, Duration> = HashMap::new();
    let mut answered: HashMap<String, Duration> = HashMap::new();
    for (t, p) in packets {
        let text = String::from_utf8_lossy(p);
        let Some(call_id) = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim().to_ascii_lowercase().as_str(), "call-id" | "i").then(|| v.trim().to_string())
        }) else {
            continue;
        };
        let cseq_invite = text.lines().any(|l| l.to_ascii_lowercase().starts_with("cseq:") && l.contains("INVITE"));
        if text.starts_with("INVITE ") {
            invites.entry(call_id).or_insert(*t);
        } else if text.starts_with("SIP/2.0 200") && cseq_invite {
            answered.entry(call_id).or_insert(*t);
        }
    }
    let v =
        answered.iter().filter_map(|(id, t)| Some((t.checked_sub(*invites.get(id)?)?).as_secs_f64() * 1e3)).collect();
    sorted(v)
}

#[derive(Debug, Default)]
struct Outcome {
    name: &'static str,
    calls: u64,
    successful: u64,
    failed: u64,
    sipp_exit: i32,
    cpu_window_s: f64,
    /// % of one core, whole process, over the window.
    cpu_pct: f64,
    uac_cpu_pct: f64,
    rss_base_kb: u64,
    rss_hold_kb: u64,
    rss_after_kb: u64,
    fds_base: usize,
    fds_hold: usize,
    fds_after: usize,
    answer_ms: Vec<f64>,
    pacing: Pacing,
    leads: Option<usize>,
    rtp_totals: Option<(u64, u64)>,
    pacer_failed: Option<u64>,
    /// (built late or skipped by the media clock, handed to the pacer late).
    underruns: Option<(u64, u64)>,
    /// The callers' streams (SIPp's rtp_stream) in the same capture.
    caller_pacing: Option<Pacing>,
    /// With `--transcribe`: answers transcribed, their delay (queued to ready,
    /// ms: sorted), and how many were still queued when the agent stopped.
    transcripts: Option<(Vec<f64>, i64)>,
    clean_exit: Option<bool>,
}

/// The caller: `audio` is a pcap (played with `play_pcap_audio`) or a raw
/// μ-law file (streamed in a loop with `rtp_stream`).
fn uac_scenario(audio: &Path, pcap: bool, hold_ms: u64) -> String {
    let (offer, play) = if pcap {
        (OFFER.replace("[rtp_port]", "[media_port]"), format!("play_pcap_audio=\"{}\"", audio.display()))
    } else {
        (OFFER.replace("[rtp_port]", "[rtpstream_audio_port]"), format!("rtp_stream=\"{},-1,0\"", audio.display()))
    };
    // The far end may hang up first (a normal end), else the caller does.
    let wait = format!(
        "  <nop><action><exec {play}/></action></nop>\n  <recv request=\"BYE\" timeout=\"{hold_ms}\" ontimeout=\"hangup\"/>\n{}  <label id=\"hangup\"/>\n",
        OK_TO_LAST.replace("<send>", "<send next=\"end\">")
    );
    scenario("load-uac", &[&invite("", &offer), ANSWERED, &ack(1), &wait, CALLER_BYE, "  <label id=\"end\"/>\n"])
}

fn uas_scenario(pcap: &Path) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="load-peer-uas">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]peer[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:peer@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=peer 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
    ]]>
  </send>
  <recv request="ACK"/>
  <nop><action><exec play_pcap_audio="{}"/></action></nop>
  <recv request="BYE"/>
{}</scenario>
"#,
        pcap.display(),
        OK_TO_LAST
    )
}

/// At least `secs` of 8 kHz audio made of `parts` in turn, each followed by `gap_ms`
/// of silence, with line noise at `noise_dbfs` under all of it.
fn timeline_pcm(parts: &[Vec<i16>], gap_ms: u64, secs: u64, noise_dbfs: Option<f64>) -> Vec<i16> {
    let mut pcm = Vec::new();
    let mut i = 0;
    // At least one round of every part; `secs = 0` is exactly one round.
    while i < parts.len() || (pcm.len() as u64) < secs * 8000 {
        pcm.extend_from_slice(&parts[i % parts.len()]);
        pcm.extend(std::iter::repeat_n(0i16, (gap_ms * 8) as usize));
        i += 1;
    }
    if let Some(db) = noise_dbfs {
        add_line_noise(&mut pcm, db, 0x5eed_0001);
    }
    pcm
}

/// Mix in line noise of RMS `dbfs`: Gaussian (a sum of four uniforms) and
/// gently low-passed, like the hiss of a mobile or an analogue line.
/// Deterministic from `seed`.
fn add_line_noise(pcm: &mut [i16], dbfs: f64, seed: u32) {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f64 / (1u32 << 24) as f64 - 0.5
    };
    let mut lp = 0.0;
    let raw: Vec<f64> = (0..pcm.len())
        .map(|_| {
            let g = uniform() + uniform() + uniform() + uniform();
            lp = 0.6 * lp + 0.4 * g;
            lp
        })
        .collect();
    let rms = (raw.iter().map(|x| x * x).sum::<f64>() / raw.len().max(1) as f64).sqrt();
    let gain = 32768.0 * 10f64.powf(dbfs / 20.0) / rms.max(1e-12);
    for (s, n) in pcm.iter_mut().zip(raw) {
        *s = (*s as f64 + n * gain).round().clamp(-32768.0, 32767.0) as i16;
    }
}

/// The same as a pcap for `play_pcap_audio`, μ-law frames.
fn timeline(parts: &[Vec<i16>], gap_ms: u64, secs: u64, noise_dbfs: Option<f64>) -> CallerAudio {
    let mut a = CallerAudio::new(101);
    a.audio(&timeline_pcm(parts, gap_ms, secs, noise_dbfs));
    a
}

fn speech(dir: &str, name: &str) -> Vec<i16> {
    backstop::media_files::load_prompt(name, &manifest_dir().join(dir).join(format!("{name}.wav"))).unwrap().pcm
}

enum Target {
    Agent(AgentProc),
    /// SIPp's UAS, its SIP port and media port.
    Peer(Child, u16, u16),
}

impl Target {
    fn pid(&self) -> u32 {
        match self {
            Target::Agent(a) => a.pid(),
            Target::Peer(c, ..) => c.id(),
        }
    }
    fn sip_port(&self) -> u16 {
        match self {
            Target::Agent(a) => a.port,
            Target::Peer(_, p, _) => *p,
        }
    }
}

/// The agent's RTP ports: 40000 up, two per call and some spare.
fn agent_rtp_ports(o: &Opts) -> (u16, u16) {
    (40000, 40000 + (o.calls as u16) * 2 + 200)
}

/// SIPp's `-mp`. Its `rtp_stream` binds `-mp` + 2 per call, so the caller's
/// ports must start above the agent's range, or its streams would be taken
/// for the agent's in the capture.
fn caller_media_port(o: &Opts) -> u16 {
    let from = agent_rtp_ports(o).1 + 1000;
    (from..64000)
        .step_by(2)
        .find(|p| (*p..p + 4).all(|q| std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok()))
        .expect("a free media port for SIPp")
}

fn start_agent(o: &Opts) -> Target {
    let rtp = agent_rtp_ports(o);
    let config = format!(
        r#"[prompts]
dir = "{prompts}"
[rtp]
port_min = {lo}
port_max = {hi}
[log]
level = "info"
[sip]
answer_after_ms = 0
max_calls = {max}
[security]
requests_per_second = 0
invites_per_second = 0

# Ask, record, ask again: the VAD listens during the question (barge-in) and after it.
[[step]]
name = "need"
kind = "ask"
prompt = "need"
next = "need"
{transcribe}"#,
        prompts = manifest_dir().join("prompts").display(),
        lo = rtp.0,
        hi = rtp.1,
        max = o.calls + 50,
        transcribe = o
            .transcribe
            .as_ref()
            .map(|m| format!("[transcribe]\nmodel = \"{}\"\nwait_secs = 0\n", m.display()))
            .unwrap_or_default(),
    );
    Target::Agent(AgentProc::start_config("load", &config, rtp))
}

fn start_peer(dir: &Path, o: &Opts, call_secs: u64) -> Target {
    let prompts: Vec<Vec<i16>> = ["greeting", "need", "name"].iter().map(|n| speech("prompts", n)).collect();
    let pcap = dir.join("peer-prompt.pcap");
    timeline(&prompts, 300, call_secs + 5, None).write(&pcap);
    let sf = dir.join("peer-uas.xml");
    std::fs::write(&sf, uas_scenario(&pcap)).unwrap();
    let port = free_port();
    let mp = free_media_port();
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(&sf)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-mp", &mp.to_string(), "-nostdin"])
        .args(["-m", &o.calls.to_string(), "-timeout", &format!("{}s", call_secs * 2 + 120)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp must be installed");
    std::thread::sleep(Duration::from_millis(500));
    Target::Peer(child, port, mp)
}

/// SIPp's last statistics line: (successful, failed) calls.
fn sipp_counts(stats: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(stats).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else { return (0, 0) };
    let Some(last) = text.lines().filter(|l| !l.trim().is_empty()).last() else { return (0, 0) };
    let cols: Vec<&str> = header.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter().position(|c| *c == name).and_then(|i| vals.get(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// SIPp as the callers: `total` calls at `rate`/s, at most `concurrent` up
/// at once, statistics to `stats`; bounded by `timeout_secs`.
#[allow(clippy::too_many_arguments)]
fn start_uac(
    target: SocketAddr,
    scenario: &Path,
    media_port: u16,
    total: u64,
    concurrent: u64,
    rate: u64,
    timeout_secs: u64,
    stats: &Path,
) -> Child {
    Command::new("sipp")
        .arg(target.to_string())
        .arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string(), "-mp", &media_port.to_string(), "-nostdin"])
        .args(["-m", &total.to_string(), "-l", &concurrent.to_string(), "-r", &rate.to_string()])
        .args(["-timeout", &format!("{timeout_secs}s"), "-timeout_error", "-trace_stat", "-fd", "1", "-stf"])
        .arg(stats)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp must be installed")
}

/// Wait for SIPp to exit (killed at `deadline`), calling `tick` once a
/// second, on whole seconds from `t0`; SIPp's exit status, or -2 if it had
/// to be killed.
fn wait_uac(uac: &mut Child, t0: Instant, deadline: Instant, mut tick: impl FnMut()) -> i32 {
    loop {
        if let Ok(Some(s)) = uac.try_wait() {
            return s.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = uac.kill();
            return -2;
        }
        std::thread::sleep(Duration::from_millis(1000 - (t0.elapsed().as_millis() % 1000) as u64));
        tick();
    }
}

fn run(name: &'static str, o: &Opts, dir: &Path, caller_audio: &Path, call_secs: u64) -> Outcome {
    let target = if name == "agent" { start_agent(o) } else { start_peer(dir, o, call_secs) };
    let pid = target.pid();
    let tck = clk_tck();
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let now = || t0.elapsed().as_secs_f64();
    let base = sample(pid, now()).expect("target process");

    let sip_cap = Capture::start(
        dir.join(format!("{name}-sip.pcap")),
        &format!("udp and port {}", target.sip_port()),
        1500,
        call_secs * 2 + 180,
    );
    let sf = dir.join("uac.xml");
    std::fs::write(&sf, uac_scenario(caller_audio, o.pcap_caller, call_secs * 1000)).unwrap();
    let stats = dir.join(format!("{name}-uac-stats.csv"));
    let _ = std::fs::remove_file(&stats);
    let uac_mp = caller_media_port(o);
    let target_addr = SocketAddr::from(([127, 0, 0, 1], target.sip_port()));
    let mut uac = start_uac(target_addr, &sf, uac_mp, o.calls, o.calls, o.rate, call_secs * 2 + 120, &stats);
    let uac_pid = uac.id();

    let ramp = o.calls as f64 / o.rate as f64;
    // Every call is up from `ramp` (plus setup) until the first ends at `call_secs`.
    let window = (ramp + 2.0, call_secs as f64 - 1.0);
    // The capture goes last: tcpdump's tap is charged to the sending process,
    // so CPU is measured over the hold before it starts.
    let capture_at = window.1 - o.capture as f64 - 1.0;
    let cpu_window = (window.0, capture_at - 0.5);
    let mut series = Vec::new();
    let mut uac_series = Vec::new();
    let mut rtp_cap = None;
    let mut rtp_packets = None;
    let deadline = Instant::now() + Duration::from_secs(call_secs * 2 + 150);
    let status = wait_uac(&mut uac, t0, deadline, || {
        if let Some(s) = sample(pid, now()) {
            series.push(s);
        }
        if let Some(s) = sample(uac_pid, now()) {
            uac_series.push(s);
        }
        let t = now();
        if rtp_cap.is_none() && rtp_packets.is_none() && t >= capture_at {
            // The target's RTP; with --caller-pacing also the callers' (SIPp's
            // rtp_stream sends every call from its -mp port), as a reference.
            let callers = if o.caller_pacing { format!(" or src port {uac_mp}") } else { String::new() };
            let filter = match &target {
                Target::Agent(a) => format!(
                    "udp and src host 127.0.0.1 and (src portrange {}-{}{callers})",
                    a.rtp_ports.0, a.rtp_ports.1
                ),
                Target::Peer(_, _, mp) => format!("udp and src host 127.0.0.1 and (src port {mp}{callers})"),
            };
            rtp_cap = Some((Capture::start(dir.join(format!("{name}-rtp.pcap")), &filter, 64, o.capture + 30), t));
        }
        if let Some((_, started)) = &rtp_cap
            && t >= started + o.capture as f64
        {
            let (cap, _) = rtp_cap.take().unwrap();
            rtp_packets = Some(cap.finish());
        }
    });
    if let Some((cap, _)) = rtp_cap.take() {
        rtp_packets = Some(cap.finish());
    }
    // Drain: the target tears calls down and writes leads, then fds should be back.
    let mut after = sample(pid, now()).unwrap_or_default();
    let settle = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
        after = sample(pid, now()).unwrap_or(after);
        if after.fds <= base.fds {
            break;
        }
    }
    let (sip_packets, _) = sip_cap.finish();
    let sip_packets: Vec<(Duration, Vec<u8>)> = sip_packets.into_iter().map(|(t, _, p)| (t, p)).collect();
    let (successful, failed) = sipp_counts(&stats);

    let in_window = |s: &&Sample| s.at >= window.0 && s.at <= window.1;
    let cpu = |series: &[Sample]| {
        let w: Vec<&Sample> = series.iter().filter(|s| s.at >= cpu_window.0 && s.at <= cpu_window.1).collect();
        match (w.first(), w.last()) {
            (Some(a), Some(b)) if b.at > a.at => {
                ((b.cpu_ticks - a.cpu_ticks) as f64 / tck / (b.at - a.at) * 100.0, b.at - a.at)
            }
            _ => (f64::NAN, 0.0),
        }
    };
    let (cpu_pct, cpu_window_s) = cpu(&series);
    let hold: Vec<&Sample> = series.iter().filter(in_window).collect();
    let rss_hold_kb = hold.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let fds_hold = hold.iter().map(|s| s.fds).max().unwrap_or(0);
    let (packets, dropped) = rtp_packets.unwrap_or_default();
    // Our calls each send from their own port; SIPp's callers all send from
    // one port (with one SSRC), each to the agent's port for its call.
    let (callers, packets): (Vec<_>, Vec<_>) = packets.into_iter().partition(|(_, (src, _), _)| *src == uac_mp);
    let callers: Vec<_> = callers.into_iter().map(|(t, (_, dst), p)| (t, dst, p)).collect();
    let packets: Vec<_> = packets.into_iter().map(|(t, (src, _), p)| (t, src, p)).collect();
    let mut out = Outcome {
        name,
        calls: o.calls,
        successful,
        failed,
        sipp_exit: status,
        cpu_window_s,
        cpu_pct,
        uac_cpu_pct: cpu(&uac_series).0,
        rss_base_kb: base.rss_kb,
        rss_hold_kb,
        rss_after_kb: after.rss_kb,
        fds_base: base.fds,
        fds_hold,
        fds_after: after.fds,
        answer_ms: answer_times(&sip_packets),
        pacing: pacing(&packets, dropped, matches!(target, Target::Agent(_))),
        caller_pacing: (o.caller_pacing && !o.pcap_caller).then(|| pacing(&callers, 0, true)),
        ..Default::default()
    };
    match target {
        Target::Agent(mut agent) => {
            let settle = Instant::now() + Duration::from_secs(20);
            // An updated lead (a transcript after lead.completed) is a line of its own: count leads by id.
            let leads = |agent: &AgentProc| {
                agent.leads().iter().map(|l| l["id"].to_string()).collect::<std::collections::HashSet<_>>().len()
            };
            while leads(&agent) < o.calls as usize && Instant::now() < settle {
                std::thread::sleep(Duration::from_millis(200));
            }
            out.leads = Some(leads(&agent));
            // It logs its pacer's totals as it exits.
            out.clean_exit = Some(agent.terminate());
            let log = agent.log();
            let total = |what: &str, key: &str| -> u64 {
                log.lines()
                    .filter(|l| l.contains(what))
                    .filter_map(|l| l.split(key).nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
                    .sum()
            };
            if o.transcribe.is_some() {
                out.transcripts = Some(transcripts(&log, &agent.dir.join("data/outbox.db")));
            }
            // Late at the media clock (a frame built 20 ms or more late) or at the pacer (handed over after its slot).
            out.underruns = Some((total("RTP totals", " underruns="), total("RTP pacer totals", " late=")));
            out.rtp_totals = Some((total("RTP totals", " sent="), total("RTP totals", " received=")));
            out.pacer_failed = Some(total("RTP pacer totals", " failed="));
            let panicked = log.contains("panicked");
            assert!(!panicked, "the agent panicked under load; log in {}", agent.dir.display());
        }
        Target::Peer(mut child, ..) => {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    out
}

fn f(v: f64, digits: usize) -> String {
    if v.is_nan() { "—".into() } else { format!("{v:.digits$}") }
}

fn report(o: &Opts, results: &[Outcome]) {
    println!();
    println!(
        "load: {} calls at {} calls/s, held together {} s; RTP pacing captured for the last {} s of the hold; callers' line noise {}",
        o.calls,
        o.rate,
        o.hold,
        o.capture,
        o.noise_dbfs.map_or("off (digital silence in pauses)".to_string(), |d| format!("{d} dBFS"))
    );
    let mut head = "| |".to_string();
    let mut sep = "|---|".to_string();
    for r in results {
        head += &format!(" {} |", r.name);
        sep += "---|";
    }
    println!("{head}\n{sep}");
    let row = |label: &str, cell: &dyn Fn(&Outcome) -> String| {
        let mut line = format!("| {label} |");
        for r in results {
            line += &format!(" {} |", cell(r));
        }
        println!("{line}");
    };
    row("calls successful / failed (SIPp exit)", &|r| format!("{} / {} ({})", r.successful, r.failed, r.sipp_exit));
    row("CPU, % of one core (window s)", &|r| format!("{} ({:.0} s)", f(r.cpu_pct, 1), r.cpu_window_s));
    row("CPU per call, % of one core", &|r| f(r.cpu_pct / r.calls as f64, 4));
    row("SIPp UAC CPU, % of one core", &|r| f(r.uac_cpu_pct, 1));
    row("RSS base → held → after, MiB", &|r| {
        format!(
            "{:.1} → {:.1} → {:.1}",
            r.rss_base_kb as f64 / 1024.0,
            r.rss_hold_kb as f64 / 1024.0,
            r.rss_after_kb as f64 / 1024.0
        )
    });
    row("RSS per held call, KiB", &|r| f((r.rss_hold_kb as f64 - r.rss_base_kb as f64) / r.calls as f64, 1));
    row("fds base → held → after", &|r| format!("{} → {} → {}", r.fds_base, r.fds_hold, r.fds_after));
    row("INVITE→200 p50 / p99 / max, ms (n)", &|r| {
        let a = &r.answer_ms;
        format!(
            "{} / {} / {} ({})",
            f(percentile(a, 0.5), 2),
            f(percentile(a, 0.99), 2),
            f(a.last().copied().unwrap_or(f64::NAN), 2),
            a.len()
        )
    });
    row("RTP packets/s sent, captured (50 per call expected)", &|r| f(r.pacing.rate, 0));
    row("RTP packets sent / received, agent's count", &|r| {
        r.rtp_totals.map(|(s, rx)| format!("{s} / {rx}")).unwrap_or("—".into())
    });
    fn paced(cell: impl Fn(&Pacing) -> String) -> impl Fn(&Outcome) -> String {
        move |r| if r.pacing.separable { cell(&r.pacing) } else { "n/a (one port and SSRC for all calls)".to_string() }
    }
    row("RTP streams / gaps captured", &paced(|p: &Pacing| format!("{} / {}", p.streams, p.gaps)));
    row(
        "abs(gap − 20 ms) p50 / p99 / max, ms",
        &paced(|p: &Pacing| format!("{} / {} / {}", f(p.p50, 3), f(p.p99, 3), f(p.max, 3))),
    );
    row(
        "per-stream p99: median / worst, ms",
        &paced(|p: &Pacing| format!("{} / {}", f(p.stream_p99_median, 3), f(p.stream_p99_worst, 3))),
    );
    row("streams with p99 ≤ 2 ms", &paced(|p: &Pacing| format!("{} of {}", p.streams_within_2ms, p.streams)));
    row("seq gaps in capture", &paced(|p: &Pacing| p.missing.to_string()));
    row("SIPp callers' RTP (rtp_stream), same capture: p50 / p99 / per-stream p99 median, ms", &|r| {
        r.caller_pacing
            .as_ref()
            .map(|p| format!("{} / {} / {}", f(p.p50, 3), f(p.p99, 3), f(p.stream_p99_median, 3)))
            .unwrap_or("—".into())
    });
    row("tcpdump drops", &|r| r.pacing.dropped_by_kernel.to_string());
    row("RTP send underruns (media clock late + pacer late)", &|r| {
        r.underruns.map(|(m, p)| format!("{} ({m} + {p})", m + p)).unwrap_or("—".into())
    });
    row("RTP sends refused by the socket", &|r| r.pacer_failed.map(|u| u.to_string()).unwrap_or("—".into()));
    row("leads written", &|r| r.leads.map(|u| u.to_string()).unwrap_or("—".into()));
    if o.transcribe.is_some() {
        row("transcripts done / still queued at exit", &|r| {
            r.transcripts.as_ref().map(|(d, q)| format!("{} / {q}", d.len())).unwrap_or("—".into())
        });
        row("transcript delay, queued to ready: p50 / p90 / max, s", &|r| {
            r.transcripts
                .as_ref()
                .map(|(d, _)| {
                    format!(
                        "{} / {} / {}",
                        f(percentile(d, 0.5) / 1e3, 1),
                        f(percentile(d, 0.9) / 1e3, 1),
                        f(percentile(d, 1.0) / 1e3, 1)
                    )
                })
                .unwrap_or("—".into())
        });
    }
    row("clean exit on SIGTERM", &|r| r.clean_exit.map(|u| u.to_string()).unwrap_or("—".into()));
    if let [a, p] = results {
        println!(
            "\nagent CPU per call / peer CPU per call = {} (peer: SIPp's UAS answering and playing a pcap, no decoding, VAD or recording)",
            f(a.cpu_pct / p.cpu_pct, 2)
        );
    }
}

/// Many short calls: RSS and descriptors as calls complete, to show memory
/// stays flat. Prints its own table; returns whether the run was sound.
fn churn(o: &Opts, total: u64, dir: &Path, caller_audio: &Path) -> bool {
    let concurrent = o.rate * o.hold + o.rate;
    let mut agent_opts = o.clone();
    agent_opts.calls = concurrent;
    let Target::Agent(mut agent) = start_agent(&agent_opts) else { unreachable!() };
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let base = sample(pid, 0.0).expect("agent process");
    let sf = dir.join("churn.xml");
    std::fs::write(&sf, uac_scenario(caller_audio, o.pcap_caller, o.hold * 1000)).unwrap();
    let stats = dir.join("churn-stats.csv");
    let secs = total.div_ceil(o.rate) + o.hold;
    let mut uac =
        start_uac(agent.addr(), &sf, caller_media_port(&agent_opts), total, concurrent, o.rate, secs + 120, &stats);
    let mut series = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs + 150);
    let status = wait_uac(&mut uac, t0, deadline, || {
        if let Some(s) = sample(pid, t0.elapsed().as_secs_f64()) {
            series.push(s);
        }
    });
    let settle = Instant::now() + Duration::from_secs(30);
    while agent.leads().len() < total as usize && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = sample(pid, t0.elapsed().as_secs_f64()).unwrap_or_default();
    let (ok, failed) = sipp_counts(&stats);
    let leads = agent.leads().len();
    let clean = agent.terminate();
    // Completed calls by time t: calls start at `rate`/s and last `hold` s.
    let done_at = |t: f64| ((t - o.hold as f64) * o.rate as f64).clamp(0.0, total as f64) as u64;
    println!(
        "\nchurn: {total} calls at {} calls/s, {} s each (~{} up at once), against the agent",
        o.rate,
        o.hold,
        o.rate * o.hold
    );
    println!("| t (s) | calls completed (approx.) | RSS (MiB) | open fds |\n|---|---|---|---|");
    println!("| base | 0 | {:.1} | {} |", base.rss_kb as f64 / 1024.0, base.fds);
    let step = (series.len() / 12).max(1);
    for s in series.iter().step_by(step) {
        println!("| {:.0} | {} | {:.1} | {} |", s.at, done_at(s.at), s.rss_kb as f64 / 1024.0, s.fds);
    }
    println!("| after drain | {total} | {:.1} | {} |", after.rss_kb as f64 / 1024.0, after.fds);
    // Flatness: RSS once 10% of calls are done (steady state) against RSS at the end of the load.
    let steady = series.iter().find(|s| done_at(s.at) >= total / 10).map(|s| s.rss_kb);
    let end = series.iter().rev().find(|s| s.at <= secs as f64 - 1.0).map(|s| s.rss_kb);
    if let (Some(a), Some(b)) = (steady, end) {
        println!(
            "RSS at {} calls completed {:.1} MiB, at {} completed {:.1} MiB: {:+.1}%",
            total / 10,
            a as f64 / 1024.0,
            done_at(secs as f64 - 1.0),
            b as f64 / 1024.0,
            (b as f64 / a as f64 - 1.0) * 100.0
        );
    }
    println!("calls successful / failed {ok} / {failed} (SIPp exit {status}); leads {leads}; clean exit {clean}");
    status == 0 && failed == 0 && leads as u64 == total && after.fds <= base.fds && clean
}

/// The transcripts the agent logged (their `delay_ms`, sorted), and the
/// answers still queued in its outbox database after it stopped.
fn transcripts(log: &str, outbox: &Path) -> (Vec<f64>, i64) {
    let delays = log
        .lines()
        .filter(|l| l.contains("transcribed"))
        .filter_map(|l| l.split(" delay_ms=").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .collect();
    let queued = rusqlite::Connection::open(outbox)
        .and_then(|db| {
            db.query_row("SELECT COUNT(*) FROM transcribe_jobs WHERE state IN ('queued', 'running')", [], |r| r.get(0))
        })
        .unwrap_or(-1);
    (sorted(delays), queued)
}

fn main() {
    let o = opts();
    let dir = scratch_dir("load");
    let ramp = o.calls.div_ceil(o.rate);
    let call_secs = ramp + o.hold + 2;
    // The caller: the two test answers with pauses, for the whole call.
    let answers: Vec<Vec<i16>> = ["name", "need"].iter().map(|n| speech("tests/fixtures/speech", n)).collect();
    let caller = if o.pcap_caller {
        let f = dir.join("caller.pcap");
        timeline(&answers, 2500, call_secs + 5, o.noise_dbfs).write(&f);
        f
    } else {
        // One round of the answers and pauses (noise included), looped by rtp_stream.
        let f = dir.join("caller.ulaw");
        let raw: Vec<u8> = timeline_pcm(&answers, 2500, 0, o.noise_dbfs).iter().map(|s| Law::Pcmu.encode(*s)).collect();
        std::fs::write(&f, raw).unwrap();
        f
    };
    if let Some(total) = o.churn {
        let sound = churn(&o, total, &dir, &caller);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(if sound || !o.check { 0 } else { 1 });
    }
    eprintln!("load: {} calls, {} calls/s, each {} s; scratch in {}", o.calls, o.rate, call_secs, dir.display());
    let mut results = Vec::new();
    if o.agent {
        results.push(run("agent", &o, &dir, &caller, call_secs));
    }
    if o.peer {
        results.push(run("peer", &o, &dir, &caller, call_secs));
    }
    report(&o, &results);
    if o.check {
        let mut bad = Vec::new();
        for r in &results {
            if r.failed > 0 || r.successful != r.calls || r.sipp_exit != 0 {
                bad.push(format!(
                    "{}: {} of {} calls succeeded, SIPp exit {}",
                    r.name, r.successful, r.calls, r.sipp_exit
                ));
            }
            if r.fds_after > r.fds_base {
                bad.push(format!("{}: fds {} after the run, {} before", r.name, r.fds_after, r.fds_base));
            }
            // Media must flow both ways. Underruns are timing and are reported,
            // not asserted, unless so many that the media path is broken.
            if let Some((sent, received)) = r.rtp_totals {
                if sent == 0 || (received as f64) < 0.9 * sent as f64 {
                    bad.push(format!("{}: RTP sent {sent}, received {received}", r.name));
                }
                let underruns = r.underruns.map_or(0, |(m, p)| m + p);
                if underruns as f64 > 0.01 * sent as f64 {
                    bad.push(format!("{}: {underruns} RTP send underruns of {sent} packets", r.name));
                }
            }
            if r.clean_exit == Some(false) || r.pacer_failed.unwrap_or(0) > 0 {
                bad.push(format!("{}: exit clean {:?}, RTP sends refused {:?}", r.name, r.clean_exit, r.pacer_failed));
            }
            if r.leads.is_some_and(|l| l as u64 != r.calls) {
                bad.push(format!("{}: {} leads for {} calls", r.name, r.leads.unwrap(), r.calls));
            }
            if r.pacing.rate.is_nan() || r.pacing.rate <= 0.0 || (r.pacing.separable && r.pacing.streams == 0) {
                bad.push(format!("{}: no RTP captured", r.name));
            }
            // Gross regressions in memory: per held call, against twice the target.
            let per_call_kib = (r.rss_hold_kb as f64 - r.rss_base_kb as f64) / r.calls as f64;
            if r.leads.is_some() && per_call_kib > MEMORY_LIMIT_KIB {
                bad.push(format!(
                    "{}: {per_call_kib:.1} KiB RSS per held call, over {MEMORY_LIMIT_KIB} (twice the {MEMORY_TARGET_KIB} KiB target)",
                    r.name
                ));
            }
        }
        // Gross regressions in CPU: as a ratio to the peer in the same run, so a slow or busy machine does not fail it.
        if let [a, p] = &results[..] {
            let ratio = (a.cpu_pct / a.calls as f64) / (p.cpu_pct / p.calls as f64);
            if ratio.is_nan() || ratio > CPU_RATIO_LIMIT {
                bad.push(format!(
                    "agent: CPU per call {ratio:.2}× the peer's (SIPp's UAS) in the same run, over {CPU_RATIO_LIMIT}×"
                ));
            }
        }
        if !bad.is_empty() {
            eprintln!("load check failed:\n  {}", bad.join("\n  "));
            std::process::exit(1);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
